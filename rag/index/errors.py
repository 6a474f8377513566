"""Index errors, and the one-line message every front end gives for what a database or its disk raised.

:class:`StoreError` and its subclasses carry messages meant for users; :func:`describe_store_error` turns SQLite's,
PostgreSQL's and the operating system's errors into one of them, so the ``rag`` command, the web page and the API
say the same thing for the same cause.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path


class StoreError(RuntimeError):
    """Base class for index problems; the message is meant for users."""


class IndexFormatError(StoreError):
    """The index was written by another format version or is corrupted."""


class EmbedderMismatchError(StoreError):
    """Vectors from two different embedders would be mixed."""


class IndexBusyError(StoreError):
    """Another process is writing to the index."""


class IndexDamagedError(IndexFormatError):
    """SQLite found the index damaged (a corrupted page, a broken full-text index)."""

    def __init__(self, message: str, finding: str = "") -> None:
        super().__init__(message)
        self.finding = finding or message  # what SQLite said, without the advice: what ``rag check`` reports


class IndexReadOnlyError(StoreError):
    """A change was asked of an index that can only be read here."""


class DiskFullError(StoreError):
    """The disk holding the index (or the database server's) has no room left: nothing is damaged."""


def damaged(directory: Path, exc: BaseException | str) -> IndexDamagedError:
    """The one-line error for a damaged index: what SQLite said, and what to do."""
    return IndexDamagedError(
        f"the index at {directory} is damaged ({exc}); `rag check --index {directory}` shows what is wrong. "
        "Restore it from a copy made by `rag backup`, or re-ingest into a new --index folder (the embedding cache "
        "keeps that cheap)", str(exc))


# SQLite's primary result codes for a database that cannot be used as it is (the others: busy, full, read-only,
# I/O errors ... say nothing about the file's state).
_SQLITE_DAMAGE = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_POSTGRES_DISK_FULL = "53100"  # SQLSTATE disk_full


def describe_store_error(directory: Path, exc: BaseException) -> StoreError:
    """The one-line :class:`StoreError` to show for what the index's database or its disk raised: every front end
    (the ``rag`` command, the web page, the API) says the same thing for the same cause.

    A full disk (SQLite's "database or disk is full", the system's "No space left on device" or a used-up quota,
    PostgreSQL's disk_full) is :class:`DiskFullError`, with no advice to restore anything: each batch is one
    transaction, so the index keeps what was written before. A busy or read-only database says so; another
    system error names the file and the reason. What SQLite says otherwise (a corrupted page, "file is not a
    database", an error it does not classify) is :func:`damaged`; another database's error just names itself. A
    :class:`StoreError` is returned as it is.
    """
    if isinstance(exc, StoreError):
        return exc
    if is_disk_full(exc) or (_sqlite_code(exc) == sqlite3.SQLITE_IOERR and _no_room(directory)):
        where = getattr(exc, "filename", None) or f"the index at {directory}"
        return DiskFullError(f"the disk is full: {where} could not be written ({_first_line(exc)}). The index keeps "
                             "everything written before; free some space and run the command again")
    primary = _sqlite_code(exc)
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return IndexBusyError(f"the index at {directory} is busy ({exc}); try again in a moment")
    if primary == sqlite3.SQLITE_READONLY:
        return IndexReadOnlyError(f"the index at {directory} cannot be written here ({exc})")
    if primary in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN):
        return StoreError(f"the index at {directory} cannot be read or written ({exc}); check the disk and the "
                          "folder's permissions, then run `rag check`")
    if isinstance(exc, OSError):
        where = exc.filename or directory
        return StoreError(f"cannot read or write {where} ({exc.strerror or exc})")
    if isinstance(exc, sqlite3.DatabaseError):
        return damaged(directory, _first_line(exc))
    return StoreError(f"the index at {directory} cannot be used ({type(exc).__name__}: {_first_line(exc)})")


def _sqlite_code(exc: BaseException) -> int | None:
    """SQLite's primary result code of ``exc`` (its extended code carries the primary one in its low byte)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _no_room(directory: Path) -> bool:
    """Whether the file system holding ``directory`` is (all but) full: SQLite reports some failed writes as a
    plain I/O error."""
    try:
        return shutil.disk_usage(directory).free < 1_000_000
    except OSError:
        return False


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says that the disk (or the user's quota, or the database server's disk) is full."""
    if isinstance(exc, OSError):
        return exc.errno in _DISK_FULL_ERRNOS
    code = _sqlite_code(exc)
    if code is not None:
        return code == sqlite3.SQLITE_FULL
    if getattr(exc, "sqlstate", None) == _POSTGRES_DISK_FULL:
        return True
    return "database or disk is full" in str(exc)  # an error raised without its code (a test, another driver)


def is_damage(exc: BaseException) -> bool:
    """Whether a database error says that the index file itself is damaged (corrupted, or not a database)."""
    code = _sqlite_code(exc)
    if code is not None:
        return code in _SQLITE_DAMAGE
    text = str(exc)
    return "malformed" in text or "not a database" in text


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__

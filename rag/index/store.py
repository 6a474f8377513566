"""The on-disk index: SQLite for documents, chunks, vectors and BM25 (FTS5); a vector backend for search.

SQLite is the source of truth and every change is one transaction, so an interrupted ingest leaves the
previous state (plus any whole batches it committed). The vector backend (FAISS files in the folder, or a
Milvus collection: :mod:`rag.index.vectors`) is derived from the vectors stored in SQLite and brought up to date from
them whenever it is missing, behind or damaged.

:class:`IndexStore` is written in SQL that PostgreSQL shares; the few places where SQLite differs (row ids, FTS5,
the lock file, integrity checks) are methods that :class:`rag.index.postgres.PostgresStore` overrides for libraries
kept in a database (``index_store = "postgresql"``). :meth:`IndexStore.open` picks the store a folder belongs to.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from .lexical import document_terms, fts_match_expression
from .vectors import FAISS_NAME, FAISS_STAMP, LOG_START, VectorBackend, VectorBackendError, open_backend

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

# 2: removed_chunks (the log vector backends replay) and the vector_store setting.
# 3: every document's source is an absolute path (or an upload's origin), indexed: ingest refuses an id that
#    another source holds.
# 4: chunks an editor excluded from search (excluded_chunks), and a document's own chunk settings
#    (documents.chunk_size, chunk_overlap; NULL: the index's settings). A release that reads only formats up to 3
#    refuses a format 4 index rather than searching the excluded chunks.
# 5: chunks searchable by BM25 before they have a vector (pending_vectors; the vector column holds zero bytes
#    until then) and the log of vectors filled in later (filled_vectors), which vector backends replay.
# Formats 1 to 4 are upgraded in place when opened writable, and read as they are.
FORMAT_VERSION = 5
READABLE_FORMATS = {"1", "2", "3", "4", "5"}
DB_NAME = "index.sqlite"
# In the folder of a library kept in a database (rag.index.postgres): which store and which schema, never the
# database's address or password (those come from the settings).
STORE_FILE = "store.json"
LOCK_NAME = ".write.lock"
_REMOVED_TABLE = "CREATE TABLE IF NOT EXISTS removed_chunks (chunk_id INTEGER PRIMARY KEY, generation INTEGER NOT NULL);"
# An excluded chunk keeps its row, BM25 terms and vector (so every check and vector backend stays as it is); the
# store's search methods leave it out, and its document's whole-text BM25 terms are recomputed without it.
_EXCLUDED_TABLE = ("CREATE TABLE IF NOT EXISTS excluded_chunks "
                   "(chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE);")

# A chunk whose vector is still to be computed: found by BM25, not yet by dense search.
_PENDING_TABLE = ("CREATE TABLE IF NOT EXISTS pending_vectors "
                  "(chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE);")
_FILLED_TABLE = "CREATE TABLE IF NOT EXISTS filled_vectors (chunk_id INTEGER PRIMARY KEY, generation INTEGER NOT NULL);"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (
    doc_id TEXT PRIMARY KEY,
    root TEXT NOT NULL,
    source TEXT NOT NULL,
    title TEXT,
    date TEXT,
    publisher TEXT,
    content_hash TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    ingested_at REAL NOT NULL,
    chunk_size INTEGER,
    chunk_overlap INTEGER
);
CREATE INDEX documents_root ON documents(root);
CREATE INDEX documents_source ON documents(source);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    text TEXT NOT NULL,
    index_text TEXT NOT NULL,
    vector BLOB NOT NULL,
    location TEXT
);
CREATE INDEX chunks_doc ON chunks(doc_id);
CREATE VIRTUAL TABLE chunk_terms USING fts5(terms, tokenize = 'unicode61 remove_diacritics 0');
CREATE VIRTUAL TABLE doc_terms USING fts5(terms, tokenize = 'unicode61 remove_diacritics 0');
""" + _REMOVED_TABLE + _EXCLUDED_TABLE + _PENDING_TABLE + _FILLED_TABLE


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


@dataclass
class Origin:
    """Where a stored document came from, its content hash, and the chunk settings it was given of its own (by
    ``rechunk_document``): what ingest compares a new version against."""

    source: str
    content_hash: str
    chunking: tuple[int, int] | None = None  # (chunk_size, chunk_overlap); None: the index's settings


@dataclass
class CheckReport:
    """What ``rag check`` found: problems (the index is damaged) and notes (repaired on the next open)."""

    index: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems


@dataclass
class DocumentRecord:
    """A cleaned document ready to be stored."""

    doc_id: str
    root: str
    source: str
    text: str
    content_hash: str
    title: str | None = None
    date: str | None = None
    publisher: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    terms: list[str] = field(default_factory=list)  # BM25 words of the whole document
    # Chunk settings of this document's own (``rechunk_document``); None: whatever the index is ingested with.
    chunk_size: int | None = None
    chunk_overlap: int | None = None


@dataclass
class ChunkRecord:
    """A chunk ready to be stored: display span and text, the text it was indexed under, its terms."""

    ordinal: int
    start: int
    end: int
    text: str
    index_text: str
    terms: list[str]
    location: str | None = None  # page, slide, sheet and row (rag.ingestion.locations)


@dataclass
class StoredChunk:
    """A chunk as read back from the index."""

    chunk_id: int
    doc_id: str
    ordinal: int
    start: int
    end: int
    text: str
    index_text: str
    title: str | None
    location: str | None = None


@dataclass
class ChunkView:
    """A chunk as an editor sees it: where it lies in its document's cleaned text (``text ==
    document_text[start:end]``) and whether it is excluded from search."""

    chunk_id: int
    doc_id: str
    ordinal: int  # position in the document, from 0
    start: int
    end: int
    text: str
    excluded: bool
    location: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class StoredDocument:
    """A document as a store holds it, whole: what :meth:`IndexStore.copy_from` writes into another store."""

    record: DocumentRecord
    chunks: list[ChunkRecord]
    vectors: np.ndarray | None  # one row per chunk; None while any of its chunks waits for a vector
    excluded: list[int] = field(default_factory=list)  # ordinals of the chunks excluded from search


class IndexStore:
    """One index directory. Open with :meth:`open`; use as a context manager to close it."""

    def __init__(self, directory: Path, db: sqlite3.Connection, settings: Settings | None = None, *,
                 read_only: bool = False) -> None:
        self.directory = directory
        self.read_only = read_only
        self._db = db
        self._settings = settings
        self._vectors: VectorBackend | None = None
        self._dirty = False
        self._checked_for_writing = False
        self._format = FORMAT_VERSION  # what this connection's tables are (older only when read where read-only)
        self._lock_owner: int | None = None  # the thread holding the write lock through this store

    # -- opening -----------------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, create: bool = False,
             settings: Settings | None = None, read_only: bool = False) -> IndexStore:
        """Open the index in ``directory`` (creating it when ``create``); raises :class:`StoreError` subclasses.

        An index this process cannot write (a read-only mount, another user's folder) opens read-only: it answers,
        and a change raises :class:`IndexReadOnlyError`. ``settings`` choose the vector backend of a new index
        (``vector_store``, ``milvus_*``) and tune FAISS (``vector_index``, ``ann_min_vectors``, ``hnsw_*``); an
        existing index keeps the backend it was made with.
        """
        directory = Path(directory)
        kind = stored_kind(directory) or (settings.index_store if settings is not None else "sqlite")
        if kind != "sqlite":
            from .postgres import STORES  # psycopg is an extra: imported only where a library lives in a database

            if kind not in STORES:
                raise StoreError(f"unknown index_store {kind!r} (use sqlite or postgresql)")
            return STORES[kind].open(directory, create=create, settings=settings)
        db_path = directory / DB_NAME
        if not db_path.exists():
            if not create:
                raise StoreError(f"no index at {directory} (run `rag ingest PATH --index {directory}` first)")
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the index folder {directory} ({exc.strerror or exc})") from None
        db, read_only = _connect(db_path, read_only)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables and create and not read_only:
                tables = _create_schema(db, settings)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise describe_store_error(directory, exc) from None
        if not tables:
            db.close()
            raise IndexFormatError(f"{db_path} is empty; re-ingest to rebuild it")
        store = cls(directory, db, settings, read_only=read_only)
        try:
            store._check_format()
        except Exception:
            db.close()
            raise
        return store

    def _check_format(self) -> None:
        try:
            version = self._meta("format_version")
        except sqlite3.DatabaseError as exc:
            raise describe_store_error(self.directory, exc) from None
        if version is None:
            raise IndexFormatError(f"{self.directory} has no format version: not an index of this tool")
        if version not in READABLE_FORMATS:
            raise IndexFormatError(
                f"{self.directory} uses index format {version}, this version reads formats "
                f"{', '.join(sorted(READABLE_FORMATS))}; re-ingest into a new --index folder (the embedding cache "
                "keeps that cheap)")
        try:
            self._db.execute("SELECT count(*) FROM chunk_terms").fetchone()
            self._db.execute("SELECT count(*) FROM doc_terms").fetchone()
        except sqlite3.DatabaseError as exc:
            raise describe_store_error(self.directory, exc) from None
        self._format = int(version)
        if version != str(FORMAT_VERSION) and not self.read_only:
            try:
                self._upgrade()
            except sqlite3.DatabaseError as exc:  # a full disk too: the upgrade is one transaction, undone whole
                raise describe_store_error(self.directory, exc) from None

    def _upgrade(self) -> None:
        """Bring a format 1 to 4 index to the current format, in one transaction (DDL included, so an upgrade
        that fails half-way leaves the old format whole)."""
        with self._db:
            # The write lock of SQLite first: another process opening the same old index waits, then finds it done.
            self._db.execute("BEGIN IMMEDIATE")
            version = int(self._meta("format_version") or FORMAT_VERSION)
            if version == FORMAT_VERSION:
                self._format = version
                return
            if version < 2:  # format 1 lacks only the removal log, which starts empty
                self._db.execute(_REMOVED_TABLE)
            if version < 3:
                # Sources become absolute paths (older releases stored them as given on the command line).
                rows = self._db.execute("SELECT DISTINCT source, root FROM documents").fetchall()
                for source, root in rows:
                    absolute = _absolute_source(source, root)
                    if absolute != source:
                        self._db.execute("UPDATE documents SET source = ? WHERE source = ? AND root = ?",
                                         (absolute, source, root))
                self._db.execute("CREATE INDEX IF NOT EXISTS documents_source ON documents(source)")
            if version < 4:
                # No chunk is excluded and every document follows the index's chunk settings: nothing to fill in.
                self._db.execute(_EXCLUDED_TABLE)
                columns = {r[1] for r in self._db.execute("PRAGMA table_info(documents)")}
                for column in ("chunk_size", "chunk_overlap"):
                    if column not in columns:
                        self._db.execute(f"ALTER TABLE documents ADD COLUMN {column} INTEGER")
                # Where each chunk lies (page, slide, sheet and row): none for the formats older releases read.
                if "location" not in {r[1] for r in self._db.execute("PRAGMA table_info(chunks)")}:
                    self._db.execute("ALTER TABLE chunks ADD COLUMN location TEXT")
            if version < 5:  # every chunk of an older index has its vector
                self._db.execute(_PENDING_TABLE)
                self._db.execute(_FILLED_TABLE)
                # Older releases trimmed the removal log without saying how far: only a snapshot is safe to start from.
                self._put_meta(LOG_START, str(self.generation()))
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION),))
        self._format = FORMAT_VERSION
        log.info("upgraded %s from index format %d to %d", self.directory, version, FORMAT_VERSION)

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        """Save pending vector changes and close the database."""
        self.flush()
        if self._vectors is not None:
            self._vectors.close()
        self._db.close()

    def __enter__(self) -> IndexStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the index's single-writer lock (another writer gets :class:`IndexBusyError`).

        The first time a store is written, SQLite's quick check runs, so nothing is written into a damaged index.
        The thread holding the lock may take it again through the same store (a method that locks, such as
        :meth:`set_excluded`, called inside a longer edit); any other thread or store is refused.
        """
        if self.read_only:
            raise IndexReadOnlyError(f"{self.directory} is read-only here: it can be searched and asked, not changed")
        if self._lock_owner == threading.get_ident():
            yield
            return
        with self._writer_lock():
            if not self._checked_for_writing:
                self.ensure_intact()
                self._checked_for_writing = True
            self._lock_owner = threading.get_ident()
            try:
                yield
            finally:
                self._lock_owner = None

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        """The lock only one writer of this index holds at a time: a lock file in the index folder."""
        try:
            fh = open(self.directory / LOCK_NAME, "w")  # noqa: SIM115 (held across the yield)
        except OSError as exc:
            raise IndexReadOnlyError(f"cannot write to {self.directory} ({exc.strerror or exc})") from None
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IndexBusyError(f"another process is writing to {self.directory}; try again when it ends") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def quick_check(self) -> list[str]:
        """SQLite's ``quick_check`` (every page and row readable; no index-to-table cross-check): problems found."""
        try:
            rows = [r[0] for r in self._db.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:
            error = describe_store_error(self.directory, exc)
            if not isinstance(error, IndexDamagedError):
                raise error from None  # busy, a full disk, an I/O error: not a finding about the file
            return [str(exc)]
        return [] if rows == ["ok"] else rows

    def ensure_intact(self) -> None:
        """Raise :class:`IndexDamagedError` (one line: the damage and what to do) when the quick check finds any."""
        problems = self.quick_check()
        if problems:
            raise damaged(self.directory, problems[0])

    @property
    def embedder(self) -> tuple[str, int] | None:
        """``(name, dim)`` of the embedder this index was built with, or ``None`` while it is empty."""
        name, dim = self._meta("embedder"), self._meta("dim")
        return (name, int(dim)) if name and dim else None

    def bind_embedder(self, name: str, dim: int) -> None:
        """Record the embedder on first use; refuse another one later."""
        current = self.embedder
        if current is None:
            with self._db:
                self._put_meta("embedder", name)
                self._put_meta("dim", str(dim))
            self._vectors = None  # a backend opened so far had no dimension to go by
        elif current != (name, dim):
            raise EmbedderMismatchError(
                f"{self.directory} holds vectors from {current[0]} ({current[1]}-d); refusing to mix in "
                f"{name} ({dim}-d). Use another --index folder, or the same embedder.")

    def origins(self, doc_ids: Sequence[str]) -> dict[str, Origin]:
        """Where each of ``doc_ids`` that is in the index came from (the ids missing from it are left out)."""
        out: dict[str, Origin] = {}
        chunking = "chunk_size, chunk_overlap" if self._format >= 4 else "NULL, NULL"
        for part in _batches(doc_ids):
            for doc_id, source, content_hash, size, overlap in self._db.execute(
                    f"SELECT doc_id, source, content_hash, {chunking} FROM documents WHERE doc_id IN ({_marks(part)})",
                    part):
                out[doc_id] = Origin(source, content_hash, (size, overlap) if size is not None else None)
        return out

    def file_documents(self, doc_id: str) -> list[str]:
        """``doc_id`` when it is a document here, else the parts a long spreadsheet of that id was read as
        (``doc_id#1``, ``doc_id#2`` …), so that a file is removed by the id users know it by."""
        if self._db.execute("SELECT 1 FROM documents WHERE doc_id = ?", (doc_id,)).fetchone():
            return [doc_id]
        prefix = doc_id + "#"
        rows = self._db.execute("SELECT doc_id FROM documents WHERE substr(doc_id, 1, ?) = ?", (len(prefix), prefix))
        return sorted((r[0] for r in rows if r[0][len(prefix):].isdigit()), key=lambda d: int(d[len(prefix):]))

    def doc_ids_from_source(self, source: str) -> list[str]:
        """Documents ingested from ``source`` (a file's absolute path, or an upload's origin)."""
        return [r[0] for r in self._db.execute("SELECT doc_id FROM documents WHERE source = ?", (source,))]

    def doc_ids_under(self, root: str) -> list[str]:
        """Documents that were ingested from the folder or file ``root``."""
        return [r[0] for r in self._db.execute("SELECT doc_id FROM documents WHERE root = ?", (root,))]

    def write_documents(self, docs: Sequence[DocumentRecord], chunks: Sequence[Sequence[ChunkRecord]],
                        vectors: Sequence[np.ndarray | None], also_remove: Sequence[str] = ()) -> None:
        """Insert or replace ``docs`` with their chunks and chunk vectors, and remove the documents
        ``also_remove``, in one transaction.

        A document whose vectors are ``None`` is searchable by BM25 at once; its chunks wait in
        :meth:`pending_chunks` until :meth:`set_vectors` gives them theirs.
        """
        backend = self._backend()
        added_ids: list[int] = []
        added_vecs: list[np.ndarray] = []
        with self._db:
            removed_ids = self._delete_documents([d.doc_id for d in docs] + list(also_remove))
            now = time.time()
            pending: list[int] = []
            for doc, doc_chunks, doc_vecs in zip(docs, chunks, vectors):
                self._db.execute(
                    "INSERT INTO documents (doc_id, root, source, title, date, publisher, content_hash, text, metadata, "
                    "ingested_at, chunk_size, chunk_overlap) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (doc.doc_id, doc.root, doc.source, doc.title, doc.date, doc.publisher, doc.content_hash,
                     doc.text, json.dumps(doc.metadata, ensure_ascii=False, default=str), now, doc.chunk_size,
                     doc.chunk_overlap))
                self._set_document_terms(doc.doc_id, doc.terms)
                if doc_vecs is None:
                    pending += [self._insert_chunk(doc.doc_id, chunk, None) for chunk in doc_chunks]
                    continue
                for chunk, vec in zip(doc_chunks, doc_vecs):
                    vec = np.asarray(vec, dtype=np.float32)
                    chunk_id = self._insert_chunk(doc.doc_id, chunk, vec)
                    added_ids.append(chunk_id)
                    added_vecs.append(vec)
            self._db.executemany("INSERT INTO pending_vectors (chunk_id) VALUES (?)", [(i,) for i in pending])
            self._bump_generation(removed_ids)
        self._apply(backend, removed_ids, added_ids, added_vecs)

    def set_vectors(self, chunk_ids: Sequence[int], vectors: np.ndarray) -> int:
        """Give pending chunks their vectors (row ``i`` of ``vectors`` is chunk ``chunk_ids[i]``'s), in one
        transaction; chunks removed or given vectors meanwhile are skipped. Returns how many were filled."""
        backend = self._backend()
        rows = {int(i): np.asarray(v, dtype=np.float32) for i, v in zip(chunk_ids, vectors)}
        with self._db:
            still: list[int] = []
            for part in _batches(sorted(rows)):
                still += [int(r[0]) for r in self._db.execute(
                    f"SELECT chunk_id FROM pending_vectors WHERE chunk_id IN ({_marks(part)})", part)]
            still.sort()
            self._db.executemany("UPDATE chunks SET vector = ? WHERE id = ?", [(rows[i].tobytes(), i) for i in still])
            for part in _batches(still):
                self._db.execute(f"DELETE FROM pending_vectors WHERE chunk_id IN ({_marks(part)})", part)
            self._bump_generation([])
            generation = self.generation()
            # Backends in other processes replay these (their snapshots may predate the chunk's vector).
            self._db.executemany("INSERT INTO filled_vectors (chunk_id, generation) VALUES (?, ?)",
                                 [(i, generation) for i in still])
        self._apply(backend, [], still, [rows[i] for i in still])
        return len(still)

    def pending_chunks(self, limit: int = 1_000) -> list[tuple[int, str]]:
        """``(chunk id, the text it is embedded from)`` of up to ``limit`` chunks still without a vector, by id."""
        if self._format < 5:
            return []
        return [(int(i), t) for i, t in self._db.execute(
            "SELECT c.id, c.index_text FROM chunks c JOIN pending_vectors p ON p.chunk_id = c.id ORDER BY c.id LIMIT ?",
            (limit,))]

    def pending_count(self) -> int:
        """How many chunks are searchable by BM25 only, their vectors still to come."""
        if self._format < 5:
            return 0
        return int(self._db.execute("SELECT count(*) FROM pending_vectors").fetchone()[0])

    def remove_documents(self, doc_ids: Sequence[str]) -> int:
        """Delete documents with their chunks, vectors and BM25 terms; returns how many existed."""
        backend = self._backend()
        with self._db:
            existing = len(self.origins(doc_ids))
            removed_ids = self._delete_documents(doc_ids)
            self._bump_generation(removed_ids)
        self._apply(backend, removed_ids, [], [])
        return existing

    def _delete_documents(self, doc_ids: Sequence[str]) -> list[int]:
        removed: list[int] = []
        for part in _batches(doc_ids):
            marks = _marks(part)
            ids = [r[0] for r in self._db.execute(f"SELECT id FROM chunks WHERE doc_id IN ({marks})", part)]
            for sub in _batches(ids):
                self._delete_terms(sub)
                self._db.execute(f"DELETE FROM excluded_chunks WHERE chunk_id IN ({_marks(sub)})", sub)
                if self._format >= 5:
                    self._db.execute(f"DELETE FROM pending_vectors WHERE chunk_id IN ({_marks(sub)})", sub)
            self._delete_document_terms(part)
            self._db.execute(f"DELETE FROM chunks WHERE doc_id IN ({marks})", part)
            self._db.execute(f"DELETE FROM documents WHERE doc_id IN ({marks})", part)
            removed.extend(ids)
        return removed

    def set_excluded(self, chunk_ids: Sequence[int | str], excluded: bool) -> int:
        """Exclude chunks from search (``excluded``) or include them again; returns how many chunks changed.

        Ids may be given as numbers or as strings of digits (a web form's); ids not in the index, and chunks
        already in the state asked for, are left alone. An excluded chunk is never returned by any search of this
        store (dense, chunk BM25, the whole-document BM25 signal, hence no phrase score nor source either), and
        its words no longer make its document match; :meth:`chunks_of` still shows it. The flag is stored in the
        index; it lasts until the chunk is included again or its document is re-chunked or replaced (the new
        chunks start included). Takes the write lock (see :meth:`write_lock`).
        """
        ids = sorted({_chunk_id(i) for i in chunk_ids})
        with self.write_lock():
            backend = self._backend()
            changed = 0
            with self._db:
                for part in _batches(ids):
                    if excluded:
                        cur = self._db.execute(
                            f"INSERT INTO excluded_chunks (chunk_id) SELECT id FROM chunks WHERE id IN ({_marks(part)}) "
                            "AND id NOT IN (SELECT chunk_id FROM excluded_chunks)", part)
                    else:
                        cur = self._db.execute(f"DELETE FROM excluded_chunks WHERE chunk_id IN ({_marks(part)})", part)
                    changed += max(cur.rowcount, 0)
                if changed:
                    docs = set()
                    for part in _batches(ids):
                        docs.update(r[0] for r in self._db.execute(
                            f"SELECT DISTINCT doc_id FROM chunks WHERE id IN ({_marks(part)})", part))
                    self._refresh_document_terms(sorted(docs))
                    self._bump_generation([])
            if changed:
                # The vectors stay where they are (searches filter them); this only keeps the backend's record of
                # the generation in step, so neither this process nor Milvus reconciles needlessly.
                self._apply(backend, [], [], [])
                self.flush()
        log.info("%s %d chunk(s) in %s", "excluded" if excluded else "included", changed, self.directory)
        return changed

    def _refresh_document_terms(self, doc_ids: Sequence[str]) -> None:
        """Recompute the whole-document BM25 terms of ``doc_ids`` from their chunks still searchable (all of the
        text when none is excluded, exactly what ingest wrote)."""
        for doc_id in doc_ids:
            row = self._db.execute("SELECT title, text FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
            if row is None:
                continue
            title, text = row
            spans = self._db.execute(
                "SELECT start, \"end\", id IN (SELECT chunk_id FROM excluded_chunks) FROM chunks WHERE doc_id = ?",
                (doc_id,)).fetchall()
            keep = None if not any(x for _, _, x in spans) else [(a, b) for a, b, x in spans if not x]
            self._set_document_terms(doc_id, document_terms(text, title, keep))

    # -- where the SQL of the two stores differs: row ids and the BM25 index (FTS5 here) -------------------------
    def _insert_chunk(self, doc_id: str, chunk: ChunkRecord, vector: np.ndarray | None) -> int:
        """Insert one chunk with its BM25 terms (and zero bytes for a vector still to come); returns its new id."""
        cur = self._db.execute(
            'INSERT INTO chunks (doc_id, ordinal, start, "end", text, index_text, vector, location) '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (doc_id, chunk.ordinal, chunk.start, chunk.end, chunk.text, chunk.index_text,
             b"" if vector is None else vector.tobytes(), chunk.location))
        chunk_id = int(cur.lastrowid)
        self._db.execute("INSERT INTO chunk_terms (rowid, terms) VALUES (?, ?)", (chunk_id, " ".join(chunk.terms)))
        return chunk_id

    def _delete_terms(self, chunk_ids: Sequence[int]) -> None:
        """Forget the BM25 terms of ``chunk_ids`` (at most 500)."""
        self._db.execute(f"DELETE FROM chunk_terms WHERE rowid IN ({_marks(chunk_ids)})", chunk_ids)

    def _set_document_terms(self, doc_id: str, terms: Sequence[str]) -> None:
        """Give stored document ``doc_id`` these whole-document BM25 terms (FTS5 rows share the document's rowid)."""
        self._delete_document_terms([doc_id])
        self._db.execute("INSERT INTO doc_terms (rowid, terms) SELECT rowid, ? FROM documents WHERE doc_id = ?",
                         (" ".join(terms), doc_id))

    def _delete_document_terms(self, doc_ids: Sequence[str]) -> None:
        """Forget the whole-document BM25 terms of ``doc_ids`` (at most 500), before their rows go."""
        self._db.execute(f"DELETE FROM doc_terms WHERE rowid IN (SELECT rowid FROM documents WHERE doc_id IN "
                         f"({_marks(doc_ids)}))", doc_ids)

    def _bump_generation(self, removed_ids: Sequence[int]) -> None:
        self._db.execute("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'generation'")
        if removed_ids:
            generation = self.generation()
            # A chunk id is never given out twice, so it is removed (and logged) at most once.
            self._db.executemany("INSERT INTO removed_chunks VALUES (?, ?)", [(i, generation) for i in removed_ids])

    def generation(self) -> int:
        """Write counter: bumped by every committed change."""
        return int(self._meta("generation") or 0)

    # -- the vector backend --------------------------------------------------------------------------------
    def _backend(self) -> VectorBackend | None:
        """The vector backend, up to date with the database; ``None`` while no embedder is bound."""
        info = self.embedder
        if info is None:
            return None
        if self._vectors is None:
            kind = self._meta("vector_store") or "faiss"
            options: dict[str, Any] = {}
            if self._settings is not None:
                options = {k: getattr(self._settings, k) for k in ("vector_index", "ann_min_vectors", "hnsw_m",
                                                                   "hnsw_ef_search", "milvus_token")}
            options["milvus_uri"] = self._meta("milvus_uri") or ""
            options["milvus_collection"] = self._meta("milvus_collection") or ""
            try:
                self._vectors = open_backend(kind, self.directory, info[1], options)
            except VectorBackendError as exc:
                raise StoreError(str(exc)) from None
        self._vectors.sync(self)
        return self._vectors

    def _apply(self, backend: VectorBackend | None, removed: list[int], added: list[int],
               vectors: list[np.ndarray]) -> None:
        if backend is None:  # no embedder bound yet, so no vectors to mirror (removing from an empty index)
            assert not added, "bind_embedder() comes before adding chunks"
            return
        matrix = np.vstack(vectors).astype(np.float32) if vectors else np.zeros((0, 0), dtype=np.float32)
        backend.apply(self, removed, added, matrix)
        self._dirty = True

    def flush(self) -> None:
        """Persist the vector backend's state if this process changed the index (writers, under the write lock)."""
        if self._dirty and self._vectors is not None:
            self._vectors.save(self)
        self._dirty = False

    @property
    def vector_backend(self) -> VectorBackend | None:
        """The backend serving dense search (for status and benchmarks)."""
        return self._backend()

    # The methods below let backends read what they mirror (see rag.index.vectors.VectorSource).
    def iter_vectors(self, after_id: int = 0, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(chunk ids, vectors)`` in id order, for chunks with an id above ``after_id``."""
        dim = self.embedder[1] if self.embedder else 0
        last = after_id
        while True:
            rows = self._db.execute("SELECT id, vector FROM chunks WHERE id > ? ORDER BY id LIMIT ?",
                                    (last, batch)).fetchall()
            if not rows:
                return
            last = int(rows[-1][0])
            rows = [r for r in rows if len(r[1])]  # a pending chunk has no vector yet
            if rows:
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                yield ids, np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)

    def removed_since(self, generation: int) -> list[int]:
        """Chunk ids removed by writes after ``generation``."""
        try:
            rows = self._db.execute("SELECT chunk_id FROM removed_chunks WHERE generation > ?", (generation,))
        except sqlite3.OperationalError:
            if not self.read_only:
                raise
            return []  # a format 1 index read where it cannot be upgraded: no removal was logged
        return [r[0] for r in rows]

    def filled_since(self, generation: int) -> list[int]:
        """Chunk ids (existing before) whose vectors were filled in by writes after ``generation``."""
        if self._format < 5:
            return []
        return [r[0] for r in self._db.execute("SELECT chunk_id FROM filled_vectors WHERE generation > ?",
                                               (generation,))]

    def forget_removed(self, up_to_generation: int) -> None:
        """Drop removal (and filled-vector) records no snapshot newer than ``up_to_generation`` needs."""
        with self._db:
            self._db.execute("DELETE FROM removed_chunks WHERE generation <= ?", (up_to_generation,))
            if self._format >= 5:
                self._db.execute("DELETE FROM filled_vectors WHERE generation <= ?", (up_to_generation,))
            self._put_meta(LOG_START, str(up_to_generation))

    def chunk_id_set(self) -> set[int]:
        """Every chunk id that has its vector (what a vector backend should hold)."""
        return {r[0] for r in self._db.execute("SELECT id FROM chunks WHERE length(vector) > 0")}

    def max_chunk_id(self) -> int:
        """The highest chunk id ever given out (ids are never reused)."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunks'").fetchone()
        return int(row[0]) if row else 0

    def get_meta(self, key: str) -> str | None:
        """A value from the index's key-value metadata."""
        return self._meta(key)

    def set_meta(self, key: str, value: str) -> None:
        """Store a value in the index's key-value metadata (nothing, in a read-only index)."""
        if self.read_only:
            return
        with self._db:
            self._put_meta(key, value)

    def _put_meta(self, key: str, value: str) -> None:
        """Set ``key`` inside the caller's transaction (an update, else an insert: SQL every store's database has)."""
        if self._db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key)).rowcount == 0:
            self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- reading -------------------------------------------------------------------------------------------
    def search_dense(self, query_vectors: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """Top ``k`` ``(chunk_id, cosine)`` per query row."""
        backend = self._backend()
        if backend is None:
            return [[] for _ in range(len(query_vectors))]
        info = self.embedder
        if info and query_vectors.shape[1] != info[1]:
            raise EmbedderMismatchError(
                f"query vectors are {query_vectors.shape[1]}-d but {self.directory} holds {info[1]}-d vectors "
                f"from {info[0]}")
        excluded = self.excluded_count()
        if not excluded:
            return backend.search(query_vectors, k)
        # Excluded chunks keep their vectors (a backend replays only new chunk ids, so one taken out could not come
        # back): ask for as many more results as there are excluded chunks, then drop those.
        hits = backend.search(query_vectors, k + excluded)
        drop = self._excluded_among({cid for row in hits for cid, _ in row})
        return [[(cid, score) for cid, score in row if cid not in drop][:k] for row in hits]

    def search_bm25(self, terms: list[str], k: int) -> list[tuple[int, float]]:
        """Top ``k`` ``(chunk_id, bm25)`` for the OR of ``terms`` (higher is better)."""
        expression = fts_match_expression(terms)
        if not expression:
            return []
        rows = self._db.execute(
            "SELECT rowid, bm25(chunk_terms) AS s FROM chunk_terms WHERE chunk_terms MATCH ? "
            f"{self._unless_excluded('rowid')} ORDER BY s LIMIT ?", (expression, k))
        return [(int(r), -float(s)) for r, s in rows]

    def search_bm25_documents(self, terms: list[str], k: int) -> list[tuple[str, float]]:
        """Top ``k`` ``(doc_id, bm25)`` over whole documents (higher is better)."""
        expression = fts_match_expression(terms)
        if not expression:
            return []
        rows = self._db.execute(
            "SELECT d.doc_id, bm25(doc_terms) AS s FROM doc_terms JOIN documents d ON d.rowid = doc_terms.rowid "
            "WHERE doc_terms MATCH ? ORDER BY s LIMIT ?", (expression, k))
        return [(doc_id, -float(score)) for doc_id, score in rows]

    def chunk_ids_of(self, doc_ids: Sequence[str]) -> dict[str, list[int]]:
        """Ids of each document's searchable chunks (excluded ones left out), in document order."""
        out: dict[str, list[int]] = {d: [] for d in doc_ids}
        for part in _batches(doc_ids):
            for doc_id, chunk_id in self._db.execute(
                    f"SELECT doc_id, id FROM chunks WHERE doc_id IN ({_marks(part)}) {self._unless_excluded('id')} "
                    "ORDER BY doc_id, ordinal", part):
                out[doc_id].append(chunk_id)
        return out

    def chunks_of(self, doc_id: str) -> list[ChunkView] | None:
        """Every chunk of ``doc_id``, excluded ones included and marked, in document order; ``None`` when the
        index holds no such document. Each chunk's ``text`` is ``document(doc_id)["text"][start:end]``."""
        if self._db.execute("SELECT 1 FROM documents WHERE doc_id = ?", (doc_id,)).fetchone() is None:
            return None
        flag = "c.id IN (SELECT chunk_id FROM excluded_chunks)" if self._format >= 4 else "0"
        rows = self._db.execute(
            f'SELECT c.id, c.doc_id, c.ordinal, c.start, c."end", c.text, {flag}, {self._location("c")} FROM chunks c '
            "WHERE c.doc_id = ? ORDER BY c.ordinal", (doc_id,))
        return [ChunkView(*row[:6], excluded=bool(row[6]), location=row[7]) for row in rows]

    def _location(self, table: str) -> str:
        """The chunk location column (an older index read as it is has none)."""
        return f"{table}.location" if self._format >= 4 else "NULL"

    def excluded_count(self) -> int:
        """How many chunks are excluded from search."""
        if self._format < 4:
            return 0
        return int(self._db.execute("SELECT count(*) FROM excluded_chunks").fetchone()[0])

    def _excluded_among(self, chunk_ids: Iterable[int]) -> set[int]:
        found: set[int] = set()
        for part in _batches(list(chunk_ids)):
            found.update(r[0] for r in self._db.execute(
                f"SELECT chunk_id FROM excluded_chunks WHERE chunk_id IN ({_marks(part)})", part))
        return found

    def _unless_excluded(self, column: str) -> str:
        """A SQL ``AND`` clause leaving out excluded chunks (nothing for an older index read as it is)."""
        return f"AND {column} NOT IN (SELECT chunk_id FROM excluded_chunks)" if self._format >= 4 else ""

    def term_doc_freqs(self, terms: Sequence[str]) -> dict[str, int]:
        """How many chunks contain each term (for IDF weights); absent terms are left out."""
        self._db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunk_vocab USING fts5vocab(main, chunk_terms, row)")
        terms = list(dict.fromkeys(terms))
        if not terms:
            return {}
        rows = self._db.execute(f"SELECT term, doc FROM temp.chunk_vocab WHERE term IN ({_marks(terms)})", terms)
        return {t: int(d) for t, d in rows}

    def chunk_count(self) -> int:
        """Number of chunks in the index."""
        return int(self._db.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def get_vectors(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of ``chunk_ids``, one row each, in the order given (zeros for ids no longer there)."""
        dim = self.embedder[1] if self.embedder else 0
        found: dict[int, bytes] = {}
        for part in _batches(dict.fromkeys(chunk_ids)):
            found.update(self._db.execute(f"SELECT id, vector FROM chunks WHERE id IN ({_marks(part)}) "
                                          "AND length(vector) > 0", part))
        missing = bytes(4 * dim)
        rows = b"".join(found.get(i, missing) for i in chunk_ids)
        return np.frombuffer(rows, dtype=np.float32).reshape(len(chunk_ids), dim)

    def get_chunks(self, chunk_ids: Iterable[int]) -> dict[int, StoredChunk]:
        """Searchable chunks by id (ids no longer in the index, or excluded from search, are left out: a search
        that found a chunk just before an editor excluded it still does not show it)."""
        out: dict[int, StoredChunk] = {}
        for part in _batches(dict.fromkeys(chunk_ids)):
            rows = self._db.execute(
                'SELECT c.id, c.doc_id, c.ordinal, c.start, c."end", c.text, c.index_text, d.title, '
                f"{self._location('c')} "
                f"FROM chunks c JOIN documents d USING (doc_id) WHERE c.id IN ({_marks(part)}) "
                f"{self._unless_excluded('c.id')}", part)
            for row in rows:
                out[row[0]] = StoredChunk(*row)
        return out

    def index_texts(self, chunk_ids: Iterable[int]) -> dict[int, str]:
        """The normalised text of searchable chunks by id (``get_chunks(...)[id].index_text`` without the rest of
        the row): hybrid search scores its ~150 candidates on it but shows only a few."""
        out: dict[int, str] = {}
        for part in _batches(dict.fromkeys(chunk_ids)):
            out.update(self._db.execute(
                f"SELECT id, index_text FROM chunks WHERE id IN ({_marks(part)}) {self._unless_excluded('id')}", part))
        return out

    def document(self, doc_id: str) -> dict[str, Any] | None:
        """One document's stored fields (display text included), or ``None``."""
        row = self._db.execute(
            "SELECT doc_id, root, source, title, date, publisher, content_hash, text, metadata, ingested_at "
            "FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        if row is None:
            return None
        keys = ["doc_id", "root", "source", "title", "date", "publisher", "content_hash", "text", "metadata",
                "ingested_at"]
        doc = dict(zip(keys, row))
        doc["metadata"] = json.loads(doc["metadata"])
        return doc

    def iter_stored(self) -> Iterator[StoredDocument]:
        """Every document with its chunks, BM25 terms, vectors and exclusions, ordered by id."""
        chunking = "chunk_size, chunk_overlap" if self._format >= 4 else "NULL, NULL"
        ids = [r[0] for r in self._db.execute("SELECT doc_id FROM documents ORDER BY doc_id").fetchall()]
        for doc_id in ids:
            row = self._db.execute(
                "SELECT doc_id, root, source, text, content_hash, title, date, publisher, metadata, "
                f"{chunking} FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
            if row is None:
                continue  # removed by a writer meanwhile
            record = DocumentRecord(*row[:8], metadata=json.loads(row[8]), terms=self._document_terms(doc_id),
                                    chunk_size=row[9], chunk_overlap=row[10])
            rows = self._db.execute(
                f'SELECT c.id, c.ordinal, c.start, c."end", c.text, c.index_text, c.vector, {self._location("c")} '
                "FROM chunks c WHERE c.doc_id = ? ORDER BY c.ordinal", (doc_id,)).fetchall()
            terms = self._chunk_terms([r[0] for r in rows])
            chunks = [ChunkRecord(r[1], r[2], r[3], r[4], r[5], terms.get(r[0], []), r[7]) for r in rows]
            excluded = self._excluded_among(r[0] for r in rows) if self._format >= 4 else set()
            vectors = None
            if rows and all(len(r[6]) for r in rows):
                vectors = np.frombuffer(b"".join(r[6] for r in rows), dtype=np.float32).reshape(len(rows), -1)
            yield StoredDocument(record, chunks, vectors, [r[1] for r in rows if r[0] in excluded])

    def _chunk_terms(self, chunk_ids: Sequence[int]) -> dict[int, list[str]]:
        """The BM25 terms each chunk was indexed under."""
        out: dict[int, list[str]] = {}
        for part in _batches(chunk_ids):
            out.update((int(i), t.split()) for i, t in self._db.execute(
                f"SELECT rowid, terms FROM chunk_terms WHERE rowid IN ({_marks(part)})", part))
        return out

    def _document_terms(self, doc_id: str) -> list[str]:
        """The whole-document BM25 terms of ``doc_id``."""
        row = self._db.execute("SELECT terms FROM doc_terms WHERE rowid = (SELECT rowid FROM documents WHERE doc_id = ?)",
                               (doc_id,)).fetchone()
        return row[0].split() if row else []

    def copy_from(self, source: IndexStore, progress: bool = False) -> dict[str, int]:
        """Copy every document of ``source`` (another index, in any store) into this one, vectors and all, so
        nothing is embedded again: how a library moves from SQLite to PostgreSQL, or a PostgreSQL library is
        backed up into a folder. A document this index already holds with the same content and chunking is left
        as it is, so an interrupted copy resumes; one with other content is replaced.
        """
        info = source.embedder
        counts = {"copied": 0, "unchanged": 0}
        if info is None:
            return counts
        self.bind_embedder(*info)
        with self.write_lock():
            batch: list[StoredDocument] = []
            for doc in tqdm(source.iter_stored(), total=len(source.list_documents()), desc="copying documents",
                            unit="doc", disable=not progress):
                have = self.origins([doc.record.doc_id]).get(doc.record.doc_id)
                chunking = (doc.record.chunk_size, doc.record.chunk_overlap) if doc.record.chunk_size else None
                if have is not None and have.content_hash == doc.record.content_hash and have.chunking == chunking:
                    # The same, exclusions included (a copy killed between a document and its exclusions redoes it).
                    here = [c.ordinal for c in self.chunks_of(doc.record.doc_id) or [] if c.excluded]
                    if here == doc.excluded:
                        counts["unchanged"] += 1
                        continue
                batch.append(doc)
                if len(batch) >= 64:
                    counts["copied"] += self._write_stored(batch)
                    batch = []
            counts["copied"] += self._write_stored(batch)
            self.flush()
        return counts

    def _write_stored(self, docs: list[StoredDocument]) -> int:
        """Write whole stored documents (one transaction) and exclude again the chunks that were excluded."""
        if not docs:
            return 0
        self.write_documents([d.record for d in docs], [d.chunks for d in docs], [d.vectors for d in docs])
        excluded = [c.chunk_id for d in docs if d.excluded for c in self.chunks_of(d.record.doc_id) or []
                    if c.ordinal in set(d.excluded)]
        if excluded:
            self.set_excluded(excluded, True)
        return len(docs)

    def iter_texts(self) -> Iterator[tuple[str, str | None, str]]:
        """``(doc_id, title, cleaned text)`` of every document, ordered by id."""
        yield from self._db.execute("SELECT doc_id, title, text FROM documents ORDER BY doc_id").fetchall()

    def list_documents(self) -> list[dict[str, Any]]:
        """Every document with its chunk count (``excluded``: how many of them are excluded from search) and
        length, ordered by id."""
        excluded = "count(x.chunk_id)" if self._format >= 4 else "0"
        joined = "LEFT JOIN excluded_chunks x ON x.chunk_id = c.id " if self._format >= 4 else ""
        rows = self._db.execute(
            f"SELECT d.doc_id, d.title, d.source, length(d.text), count(c.id), {excluded} FROM documents d "
            f"LEFT JOIN chunks c USING (doc_id) {joined}GROUP BY d.doc_id ORDER BY d.doc_id")
        return [{"doc_id": r[0], "title": r[1], "source": r[2], "chars": r[3], "chunks": r[4], "excluded": r[5]}
                for r in rows]

    def stats(self) -> dict[str, Any]:
        """Counts and sizes for ``rag status``."""
        docs = self._db.execute("SELECT count(*) FROM documents").fetchone()[0]
        chunks = self._db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        info = self.embedder
        size = self._size_bytes()
        backend = self._backend()
        return {"index": str(self.directory), "format_version": int(self._meta("format_version") or 0),
                "documents": docs, "chunks": chunks, "excluded_chunks": self.excluded_count(),
                "pending_vectors": self.pending_count(),
                "embedder": info[0] if info else None,
                "dim": info[1] if info else None, "vector_store": self._meta("vector_store") or "faiss",
                "vector_index": backend.kind if backend is not None else None,
                "generation": self.generation(), "size_bytes": size, "read_only": self.read_only}

    def _size_bytes(self) -> int:
        """What the index takes on disk."""
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

    # -- checking and copying ------------------------------------------------------------------------------
    _database_errors: tuple[type[Exception], ...] = (sqlite3.DatabaseError,)

    def _check_integrity(self, report: CheckReport, run: Any) -> None:
        """SQLite's integrity check and FTS5's own check of each full-text index."""
        rows = [r[0] for r in run("SQLite integrity", "PRAGMA integrity_check")]
        report.problems += [f"SQLite integrity: {r}" for r in rows if r != "ok"]
        for table in ("chunk_terms", "doc_terms"):
            if self.read_only:
                report.notes.append(f"{table}: the full-text integrity check writes, so it was left out (read-only)")
                continue
            report.checked.append(f"full-text index {table}")
            try:
                with self._db:
                    self._db.execute(f"INSERT INTO {table}({table}) VALUES ('integrity-check')")
            except sqlite3.DatabaseError as exc:
                report.problems.append(f"full-text index {table}: {exc}")

    def _term_checks(self) -> list[tuple[str, str]]:
        """``(problem, SQL counting it)`` for the BM25 index against the tables it indexes."""
        return [("chunks without BM25 terms", "SELECT count(*) FROM chunks WHERE id NOT IN (SELECT rowid FROM chunk_terms)"),
                ("BM25 terms without their chunk", "SELECT count(*) FROM chunk_terms WHERE rowid NOT IN "
                                                   "(SELECT id FROM chunks)"),
                ("documents without BM25 terms", "SELECT count(*) FROM documents WHERE rowid NOT IN "
                                                 "(SELECT rowid FROM doc_terms)")]

    def check(self) -> CheckReport:
        """Everything ``rag check`` looks at: the database's own integrity checks, the tables against each other,
        and the vector backend against the vectors stored in the database."""
        report = CheckReport(str(self.directory))

        def run(what: str, query: str, *params: Any) -> list[Any]:
            report.checked.append(what)
            try:
                return self._db.execute(query, params).fetchall()
            except self._database_errors as exc:
                report.problems.append(f"{what}: {exc}")
                return []

        self._check_integrity(report, run)
        for what, query in (
                ("chunks without their document", "SELECT count(*) FROM chunks c LEFT JOIN documents d USING (doc_id) "
                                                  "WHERE d.doc_id IS NULL"),
                *self._term_checks(),
                *([("exclusions of chunks not in the index", "SELECT count(*) FROM excluded_chunks WHERE chunk_id "
                                                             "NOT IN (SELECT id FROM chunks)")]
                  if self._format >= 4 else []),
                *([("chunks without a vector that none is coming for", "SELECT count(*) FROM chunks WHERE "
                   "length(vector) = 0 AND id NOT IN (SELECT chunk_id FROM pending_vectors)")]
                  if self._format >= 5 else [])):
            found = run(what, query)
            if found and found[0][0]:
                report.problems.append(f"{found[0][0]} {what}")
        info = self.embedder
        if info is not None:
            found = run("vector sizes", "SELECT count(*) FROM chunks WHERE length(vector) NOT IN (0, ?)", 4 * info[1])
            if found and found[0][0]:
                report.problems.append(f"{found[0][0]} chunk vectors are not {info[1]}-d")
        if report.problems:
            return report  # the vector backend is derived from the tables: comparing it with damaged ones says nothing
        report.checked.append("vector backend")
        try:
            backend = self._backend()
        except (StoreError, *self._database_errors) as exc:
            report.problems.append(f"vector backend: {exc}")
            return report
        if backend is None:
            return report
        report.notes += backend.notes
        live, held = self.chunk_id_set(), backend.ids()
        if live != held:
            report.problems.append(f"vector backend ({backend.kind}) holds {len(held - live)} vectors of removed "
                                   f"chunks and lacks {len(live - held)} chunks' vectors")
            return report
        # The same ids may hold other vectors (a snapshot written wrong, rows mixed up): dense search would then
        # return the wrong passages. Compare the vectors themselves with those stored here.
        report.checked.append("vectors against the database")
        differing, compared = backend.compare_vectors(self)
        if differing:
            sample = f" (of {compared} compared)" if compared < len(live) else ""
            report.problems.append(f"vector backend ({backend.kind}): {differing} of the vectors it holds differ from "
                                   f"those stored in the database{sample}")
        return report

    def backup(self, destination: str | os.PathLike[str]) -> dict[str, Any]:
        """A consistent copy of the index in the new folder ``destination`` (SQLite's online backup, plus the FAISS
        snapshot), taken under the write lock so no ingest changes it half-way; the copy is an index of its own."""
        destination = Path(destination)
        if (destination / DB_NAME).exists() or (destination.is_dir() and any(destination.iterdir())):
            raise StoreError(f"{destination} is not empty; back up into a new folder")
        destination.mkdir(parents=True, exist_ok=True)
        lock = contextlib.nullcontext() if self.read_only else self._writer_lock()
        with lock:
            target = sqlite3.connect(destination / DB_NAME)
            try:
                self._db.backup(target)
                with target:
                    # A Milvus collection is not copied: the copy reconciles its collection from these rows.
                    target.execute("DELETE FROM meta WHERE key LIKE 'milvus_generation:%'")
                    target.execute("PRAGMA journal_mode=WAL")
            finally:
                target.close()
            for name in (FAISS_NAME, FAISS_STAMP):
                if (self.directory / name).is_file():
                    shutil.copy2(self.directory / name, destination / name)
        size = sum(p.stat().st_size for p in destination.iterdir() if p.is_file())
        data = self.stats()
        return {"backup": str(destination), "documents": data["documents"], "chunks": data["chunks"],
                "generation": data["generation"], "size_bytes": size}


def stored_kind(directory: Path) -> str | None:
    """The store an index folder belongs to: ``"sqlite"``, another kind its :data:`STORE_FILE` names, or ``None``
    when the folder holds no index yet."""
    if (directory / DB_NAME).exists():
        return "sqlite"
    try:
        return str(json.loads((directory / STORE_FILE).read_text(encoding="utf-8"))["store"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexFormatError(f"{directory / STORE_FILE} cannot be read ({exc}); delete it to open the library "
                               "from the settings' database again") from None


def _batches(items: Sequence[Any], size: int = 500) -> Iterator[list[Any]]:
    """``items`` in lists of at most ``size`` (SQLite limits the number of bound parameters)."""
    items = list(items)
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _marks(part: Sequence[Any]) -> str:
    return ",".join("?" * len(part))


def _chunk_id(value: int | str) -> int:
    """A chunk id given as a number or a string of digits; :class:`ValueError` for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"not a chunk id: {value!r}")
    if isinstance(value, str) and not value.strip().isdecimal():
        raise ValueError(f"not a chunk id: {value!r}")
    return int(value)



def _connect(db_path: Path, read_only: bool = False) -> tuple[sqlite3.Connection, bool]:
    """A connection to ``db_path`` and whether it is read-only.

    Read-write (WAL) when this process may write the file and its folder (unless ``read_only``: a source that is
    only read, and so not upgraded either); otherwise read-only, which for a WAL
    database in a folder we cannot write needs SQLite's ``immutable`` mode, safe only when no change is waiting
    in the ``-wal`` file.
    """
    folder = db_path.parent
    if not read_only and os.access(folder, os.W_OK) and (not db_path.exists() or os.access(db_path, os.W_OK)):
        try:
            db = sqlite3.connect(db_path, timeout=30, check_same_thread=False)
        except sqlite3.Error as exc:
            raise IndexFormatError(f"{db_path} cannot be opened ({exc})") from None
        try:
            _use_wal(db)
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            db.close()
            raise describe_store_error(folder, exc) from None
        return db, False
    uri = "file:" + urllib.parse.quote(str(db_path.resolve())) + "?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db, True
    except sqlite3.OperationalError:
        pass  # a WAL database whose folder we cannot write (no -shm file can be made)
    wal = db_path.with_name(db_path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise StoreError(f"{folder} is read-only here and changes are still waiting in {wal.name}; open it "
                         "once where it can be written (or copy the folder) to fold them in")
    try:
        db = sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise IndexFormatError(f"{db_path} cannot be read ({exc})") from None
    return db, True


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch a database to WAL (persistent, so usually already done). The switch can report "locked" at once,
    without waiting, while another process creates the same new index; so wait here."""
    for attempt in range(200):
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 199:
                raise
            time.sleep(0.05)


def _create_schema(db: sqlite3.Connection, settings: Settings | None) -> set[str]:
    """Create a new index's tables unless another process just did; returns the tables there now.

    ``BEGIN IMMEDIATE`` takes SQLite's write lock before the tables are looked at again, so two processes
    creating the same new index one moment apart cannot both try.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            meta = [("format_version", str(FORMAT_VERSION)), ("generation", "0"), (LOG_START, "0"),
                    ("vector_store", settings.vector_store if settings else "faiss")]
            if settings is not None and settings.vector_store == "milvus":
                meta += [("milvus_uri", settings.milvus_uri), ("milvus_collection", settings.milvus_collection)]
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.executemany("INSERT INTO meta VALUES (?, ?)", meta)
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return tables


def _absolute_source(source: str, root: str) -> str:
    """An older index's source (a path as typed, relative to wherever ``rag ingest`` ran) made absolute with the
    root it was ingested under, which was always stored absolute."""
    if not source or os.path.isabs(source) or not os.path.isabs(root):
        return source
    parts = Path(source).parts
    if Path(root).name == parts[-1]:
        return root  # the root was the file itself
    for i in range(len(parts)):
        candidate = Path(root, *parts[i:])
        if candidate.exists():
            return str(candidate)
    return str(Path(root, parts[-1]))

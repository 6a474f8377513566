"""Several named document libraries in one installation, each an index folder of its own.

The library called ``default`` is ``Settings.index_dir`` (so an index made before libraries existed opens as one
library, unchanged); every other library ``NAME`` lives in ``Settings.library_root / NAME``. Deleting a library
moves its folder to ``library_dir/.trash`` rather than erasing it: a library holds staff's documents, and an
administrator's slip must be recoverable.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Settings
from ..index.postgres import SchemaCatalogue, folder_schema, library_schema
from ..index.store import IndexStore

log = logging.getLogger(__name__)

DEFAULT_LIBRARY = "default"
# Letters (Chinese included), digits, "_" and "-": a name that is also a safe folder name everywhere. It may not
# start with "." or "_" (the catalogue's own folders, such as .trash).
_NAME = re.compile(r"[^\W_][\w-]{0,63}")
_TRASH = ".trash"


class LibraryError(ValueError):
    """A library name or operation that cannot be used; the message is meant for users."""


@dataclass(frozen=True)
class Library:
    """A library's name, the index folder that holds it, and what it is whatever its name (:meth:`Libraries.identity`)."""

    name: str
    path: Path
    identity: tuple[Any, ...] | None = None


def check_name(name: str) -> str:
    """``name`` when it can name a library; raises :class:`LibraryError` otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise LibraryError(f"library name {name!r}: use 1–64 letters, digits, '-' or '_' (not first)")
    return name


class Libraries:
    """The catalogue of libraries: list, create, rename and delete them, and the settings that open one.

    It keeps no state of its own beyond the folders, so two processes (the server and ``rag library``) always
    agree on what exists.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.library_root
        # Libraries kept in PostgreSQL are listed by the database (every machine sees the same ones); their
        # folders here only cache vectors.
        self._database = None
        if settings.index_store == "postgresql":
            self._database = SchemaCatalogue(settings)

    def path(self, name: str) -> Path:
        """Where library ``name`` lives (whether it exists or not)."""
        if name == DEFAULT_LIBRARY:
            return Path(self.settings.index_dir)
        return self.root / check_name(name)

    def exists(self, name: str) -> bool:
        """Whether library ``name`` has been created."""
        try:
            path = self.path(name)
        except LibraryError:
            return False
        if (path / "index.sqlite").is_file():
            return True
        return self._database is not None and self._database.exists(self._schema(name), named=name != DEFAULT_LIBRARY)

    def _schema(self, name: str) -> str:
        """The database schema of library ``name`` in PostgreSQL."""
        if name == DEFAULT_LIBRARY:
            return self.settings.database_schema or folder_schema(Path(self.settings.index_dir))
        return library_schema(name)

    def identity(self, name: str) -> tuple[Any, ...] | None:
        """What library ``name`` is now, whatever it is called: the device and inode of its ``index.sqlite`` (kept
        by a rename, new for a library made again under an old name), or its PostgreSQL schema; ``None`` when there
        is no such library."""
        try:
            path = self.path(name)
        except LibraryError:
            return None
        try:
            stat = (path / "index.sqlite").stat()
            return ("sqlite", stat.st_dev, stat.st_ino)
        except FileNotFoundError:
            pass
        if self._database is not None and self.exists(name):
            return ("postgresql", self._schema(name))
        return None

    def get(self, name: str) -> Library:
        """Library ``name``; raises :class:`LibraryError` when there is none."""
        identity = self.identity(name)
        if identity is None and name == DEFAULT_LIBRARY:  # no server path: the page and the API show this message
            raise LibraryError("no index in the default library yet (run `rag ingest PATH` first, with --index DIR "
                               "for another folder)")
        if identity is None:
            raise LibraryError(f"没有名为 {name!r} 的文档库 (no library {name!r})")
        return Library(name, self.path(name), identity)

    def names(self) -> list[str]:
        """Every library, ``default`` first (when it exists), then by name."""
        found = [DEFAULT_LIBRARY] if self.exists(DEFAULT_LIBRARY) else []
        named: set[str] = set()
        if self.root.is_dir():
            named.update(p.name for p in self.root.iterdir()
                         if _NAME.fullmatch(p.name) and p.name != DEFAULT_LIBRARY and (p / "index.sqlite").is_file())
        if self._database is not None:
            named.update(n for n in self._database.names() if _NAME.fullmatch(n) and n != DEFAULT_LIBRARY)
        return found + sorted(named)

    def settings_for(self, name: str) -> Settings:
        """The settings that open library ``name`` (the installation's folders stay where they are)."""
        schema = self._schema(name) if self._database is not None else None
        return self.settings.replace(index_dir=self.path(name), library_dir=self.root,
                                     state_dir=self.settings.state_root, database_schema=schema)

    def create_default(self) -> Library:
        """Make the default library (``index_dir``, or its database schema) unless it exists; several processes
        may do so at once (the store lets one make it and the others find it made)."""
        path = self.path(DEFAULT_LIBRARY)
        IndexStore.open(path, create=True, settings=self.settings).close()
        return Library(DEFAULT_LIBRARY, path)

    def create(self, name: str) -> Library:
        """A new, empty library; raises :class:`LibraryError` when the name is taken."""
        path = self.path(check_name(name))
        # A folder with files is someone's (in PostgreSQL it only caches vectors, and a half-made library's is kept).
        if self.exists(name) or (self._database is None and path.exists() and any(path.iterdir())):
            raise LibraryError(f"文档库 {name!r} 已存在")
        path.mkdir(parents=True, exist_ok=True)
        IndexStore.open(path, create=True, settings=self.settings_for(name)).close()
        if self._database is not None:
            self._database.name(self._schema(name), name)
        log.info("created library %s at %s", name, path)
        return Library(name, path)

    def check_rename(self, old: str, new: str) -> None:
        """Raise :class:`LibraryError` when library ``old`` cannot be renamed ``new``."""
        if DEFAULT_LIBRARY in (old, new):
            raise LibraryError("默认文档库（default）不能改名，也不能用作新名字")
        self.get(old)
        if self.path(check_name(new)).exists() or self.exists(new):
            raise LibraryError(f"文档库 {new!r} 已存在")

    def rename(self, old: str, new: str) -> Library:
        """Give library ``old`` the name ``new`` (its folder is moved; ``default`` keeps its name)."""
        self.check_rename(old, new)
        source, target = self.get(old).path, self.path(new)
        if self._database is not None and not (source / "index.sqlite").is_file():
            self._database.rename(self._schema(old), self._schema(new), new)
            if not source.exists():
                return Library(new, target)
        os.rename(source, target)  # same parent folder: atomic, and open readers keep their files
        log.info("renamed library %s to %s", old, new)
        return Library(new, target)

    def delete(self, name: str) -> str:
        """Move library ``name`` to the trash folder (in PostgreSQL: a ``rag_trash_…`` schema) and return where it
        went (restore it by moving it back)."""
        if name == DEFAULT_LIBRARY:
            raise LibraryError("默认文档库（default）不能删除；请用 rag remove 删除其中的文档")
        source = self.get(name).path
        if self._database is not None and not (source / "index.sqlite").is_file():
            schema = self._database.trash(self._schema(name), time.strftime("%Y%m%d%H%M%S"))
            log.info("deleted library %s (its schema is now %s)", name, schema)
            shutil.rmtree(source, ignore_errors=True)  # only this machine's cache of it
            return f"schema {schema}"
        trash = self.root / _TRASH
        trash.mkdir(parents=True, exist_ok=True)
        target = trash / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        while target.exists():
            target = target.with_name(target.name + "_")
        os.rename(source, target)
        log.info("deleted library %s (moved to %s)", name, target)
        return str(target)

"""The SQLite store: an index folder holding ``index.sqlite`` (:mod:`rag.index.schema`), searched by BM25 through
SQLite's FTS5 full-text tables, with one writer at a time through a lock file in the folder."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import schema
from .errors import (
    IndexBusyError,
    IndexDamagedError,
    IndexFormatError,
    IndexReadOnlyError,
    StoreError,
    describe_store_error,
)
from .lexical import fts_match_expression
from .records import CheckReport, ChunkRecord
from .schema import DB_NAME, FORMAT_VERSION, LOCK_NAME, READABLE_FORMATS, read_meta
from .sql_store import SqlStore, batches, marks
from .vectors import FAISS_NAME, FAISS_STAMP

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)


class SqliteStore(SqlStore):
    """An index in ``index.sqlite`` in its folder (with the FAISS files, or a Milvus Lite file, beside it)."""

    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, create: bool = False,
             settings: Settings | None = None, read_only: bool = False) -> SqliteStore:
        """Open the index in ``directory`` (creating it when ``create``); raises :class:`StoreError` subclasses.

        An index this process cannot write (a read-only mount, another user's folder) opens read-only: it answers,
        and a change raises :class:`IndexReadOnlyError`; ``read_only`` asks for that anyway (a source that is only
        read, and so not upgraded either). ``settings`` choose the vector backend of a new index (``vector_store``,
        ``milvus_*``) and tune FAISS (``vector_index``, ``ann_min_vectors``, ``hnsw_*``); an existing index keeps
        the backend it was made with.
        """
        directory = Path(directory)
        db_path = directory / DB_NAME
        if not db_path.exists():
            if not create:
                raise StoreError(f"no index at {directory} (run `rag ingest PATH --index {directory}` first)")
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the index folder {directory} ({exc.strerror or exc})") from None
        db, read_only = schema.connect(db_path, read_only)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables and create and not read_only:
                tables = schema.create_schema(db, settings)
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
            version = read_meta(self._db, "format_version")
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
                self._format = schema.upgrade(self._db, self.directory)
            except sqlite3.DatabaseError as exc:  # a full disk too: the upgrade is one transaction, undone whole
                raise describe_store_error(self.directory, exc) from None

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
        self._db.execute(f"DELETE FROM chunk_terms WHERE rowid IN ({marks(chunk_ids)})", chunk_ids)

    def _set_document_terms(self, doc_id: str, terms: Sequence[str]) -> None:
        """Give stored document ``doc_id`` these whole-document BM25 terms (FTS5 rows share the document's rowid)."""
        self._delete_document_terms([doc_id])
        self._db.execute("INSERT INTO doc_terms (rowid, terms) SELECT rowid, ? FROM documents WHERE doc_id = ?",
                         (" ".join(terms), doc_id))

    def _delete_document_terms(self, doc_ids: Sequence[str]) -> None:
        """Forget the whole-document BM25 terms of ``doc_ids`` (at most 500), before their rows go."""
        self._db.execute(f"DELETE FROM doc_terms WHERE rowid IN (SELECT rowid FROM documents WHERE doc_id IN "
                         f"({marks(doc_ids)}))", doc_ids)

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

    def term_doc_freqs(self, terms: Sequence[str]) -> dict[str, int]:
        """How many chunks contain each term (for IDF weights); absent terms are left out."""
        self._db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunk_vocab USING fts5vocab(main, chunk_terms, row)")
        terms = list(dict.fromkeys(terms))
        if not terms:
            return {}
        rows = self._db.execute(f"SELECT term, doc FROM temp.chunk_vocab WHERE term IN ({marks(terms)})", terms)
        return {t: int(d) for t, d in rows}

    def _chunk_terms(self, chunk_ids: Sequence[int]) -> dict[int, list[str]]:
        """The BM25 terms each chunk was indexed under."""
        out: dict[int, list[str]] = {}
        for part in batches(chunk_ids):
            out.update((int(i), t.split()) for i, t in self._db.execute(
                f"SELECT rowid, terms FROM chunk_terms WHERE rowid IN ({marks(part)})", part))
        return out

    def _document_terms(self, doc_id: str) -> list[str]:
        """The whole-document BM25 terms of ``doc_id``."""
        row = self._db.execute("SELECT terms FROM doc_terms WHERE rowid = (SELECT rowid FROM documents WHERE doc_id = ?)",
                               (doc_id,)).fetchone()
        return row[0].split() if row else []

    def max_chunk_id(self) -> int:
        """The highest chunk id ever given out (ids are never reused)."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunks'").fetchone()
        return int(row[0]) if row else 0

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


"""The on-disk index: SQLite for documents, chunks, vectors and BM25 (FTS5); FAISS for vector search.

SQLite is the source of truth and every change is one transaction, so an interrupted ingest leaves the
previous state (plus any whole batches it committed). The FAISS file is derived from the vectors stored in
SQLite: it is saved atomically with the generation it reflects and rebuilt whenever it is missing, stale
or unreadable, which takes seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .lexical import fts_match_expression

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DB_NAME = "index.sqlite"
FAISS_NAME = "vectors.faiss"
FAISS_STAMP = "vectors.json"
LOCK_NAME = ".write.lock"

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
    ingested_at REAL NOT NULL
);
CREATE INDEX documents_root ON documents(root);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    text TEXT NOT NULL,
    index_text TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX chunks_doc ON chunks(doc_id);
CREATE VIRTUAL TABLE chunk_terms USING fts5(terms, tokenize = 'unicode61 remove_diacritics 0');
CREATE VIRTUAL TABLE doc_terms USING fts5(terms, tokenize = 'unicode61 remove_diacritics 0');
"""


class StoreError(RuntimeError):
    """Base class for index problems; the message is meant for users."""


class IndexFormatError(StoreError):
    """The index was written by another format version or is corrupted."""


class EmbedderMismatchError(StoreError):
    """Vectors from two different embedders would be mixed."""


class IndexBusyError(StoreError):
    """Another process is writing to the index."""


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


@dataclass
class ChunkRecord:
    """A chunk ready to be stored: display span and text, the text it was indexed under, its terms."""

    ordinal: int
    start: int
    end: int
    text: str
    index_text: str
    terms: list[str]


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


class IndexStore:
    """One index directory. Open with :meth:`open`; use as a context manager to close it."""

    def __init__(self, directory: Path, db: sqlite3.Connection) -> None:
        self.directory = directory
        self._db = db
        self._faiss: faiss.IndexIDMap2 | None = None
        self._faiss_generation = -1
        self._dirty = False

    # -- opening -----------------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, create: bool = False) -> "IndexStore":
        """Open the index in ``directory`` (creating it when ``create``); raises :class:`StoreError` subclasses."""
        directory = Path(directory)
        db_path = directory / DB_NAME
        if not db_path.exists():
            if not create:
                raise StoreError(f"no index at {directory} (run `rag ingest PATH --index {directory}` first)")
            directory.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(db_path, timeout=30, check_same_thread=False)
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA journal_mode=WAL")
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise IndexFormatError(f"{db_path} is not a readable index ({exc}); move it away and re-ingest") from None
        if not tables:
            if not create:
                raise IndexFormatError(f"{db_path} is empty; re-ingest to rebuild it")
            with db:
                db.executescript(_SCHEMA)
                db.executemany("INSERT INTO meta VALUES (?, ?)",
                               [("format_version", str(FORMAT_VERSION)), ("generation", "0")])
        store = cls(directory, db)
        store._check_format()
        return store

    def _check_format(self) -> None:
        try:
            version = self._meta("format_version")
        except sqlite3.DatabaseError as exc:
            raise IndexFormatError(f"{self.directory} is not an index of this tool or is damaged ({exc})") from None
        if version is None:
            raise IndexFormatError(f"{self.directory} has no format version: not an index of this tool")
        if not version.isdigit() or int(version) != FORMAT_VERSION:
            raise IndexFormatError(
                f"{self.directory} uses index format {version}, this version reads format {FORMAT_VERSION}; "
                f"re-ingest into a new --index folder (the embedding cache keeps that cheap)")
        try:
            self._db.execute("SELECT count(*) FROM chunk_terms").fetchone()
            self._db.execute("SELECT count(*) FROM doc_terms").fetchone()
        except sqlite3.DatabaseError as exc:
            raise IndexFormatError(f"{self.directory}: damaged index ({exc}); re-ingest into a new folder") from None

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        """Save pending vector changes and close the database."""
        self.flush()
        self._db.close()

    def __enter__(self) -> "IndexStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the index's single-writer lock (another writer gets :class:`IndexBusyError`)."""
        with open(self.directory / LOCK_NAME, "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IndexBusyError(f"another process is writing to {self.directory}; try again when it ends") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

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
                self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [("embedder", name), ("dim", str(dim))])
            self._faiss = None  # any vector index built so far had no dimension to go by
        elif current != (name, dim):
            raise EmbedderMismatchError(
                f"{self.directory} holds vectors from {current[0]} ({current[1]}-d); refusing to mix in "
                f"{name} ({dim}-d). Use another --index folder, or the same embedder.")

    def content_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """Stored content hash of each of ``doc_ids`` that is in the index."""
        out: dict[str, str] = {}
        for part in _batches(doc_ids):
            out.update(self._db.execute(
                f"SELECT doc_id, content_hash FROM documents WHERE doc_id IN ({_marks(part)})", part))
        return out

    def doc_ids_under(self, root: str) -> list[str]:
        """Documents that were ingested from the folder or file ``root``."""
        return [r[0] for r in self._db.execute("SELECT doc_id FROM documents WHERE root = ?", (root,))]

    def write_documents(self, docs: Sequence[DocumentRecord], chunks: Sequence[Sequence[ChunkRecord]],
                        vectors: Sequence[np.ndarray]) -> None:
        """Insert or replace ``docs`` with their chunks and chunk vectors, in one transaction."""
        self._load_faiss()
        added_ids: list[int] = []
        added_vecs: list[np.ndarray] = []
        with self._db:
            removed_ids = self._delete_documents([d.doc_id for d in docs])
            now = time.time()
            for doc, doc_chunks, doc_vecs in zip(docs, chunks, vectors):
                cur = self._db.execute(
                    "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (doc.doc_id, doc.root, doc.source, doc.title, doc.date, doc.publisher, doc.content_hash,
                     doc.text, json.dumps(doc.metadata, ensure_ascii=False, default=str), now))
                self._db.execute("INSERT INTO doc_terms (rowid, terms) VALUES (?, ?)", (cur.lastrowid, " ".join(doc.terms)))
                for chunk, vec in zip(doc_chunks, doc_vecs):
                    vec = np.asarray(vec, dtype=np.float32)
                    cur = self._db.execute(
                        "INSERT INTO chunks (doc_id, ordinal, start, end, text, index_text, vector) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (doc.doc_id, chunk.ordinal, chunk.start, chunk.end, chunk.text, chunk.index_text,
                         vec.tobytes()))
                    chunk_id = int(cur.lastrowid)
                    self._db.execute("INSERT INTO chunk_terms (rowid, terms) VALUES (?, ?)",
                                     (chunk_id, " ".join(chunk.terms)))
                    added_ids.append(chunk_id)
                    added_vecs.append(vec)
            self._bump_generation()
        self._apply_to_faiss(removed_ids, added_ids, added_vecs)

    def remove_documents(self, doc_ids: Sequence[str]) -> int:
        """Delete documents with their chunks, vectors and BM25 terms; returns how many existed."""
        self._load_faiss()
        with self._db:
            existing = len(self.content_hashes(doc_ids))
            removed_ids = self._delete_documents(doc_ids)
            self._bump_generation()
        self._apply_to_faiss(removed_ids, [], [])
        return existing

    def _delete_documents(self, doc_ids: Sequence[str]) -> list[int]:
        removed: list[int] = []
        for part in _batches(doc_ids):
            marks = _marks(part)
            ids = [r[0] for r in self._db.execute(f"SELECT id FROM chunks WHERE doc_id IN ({marks})", part)]
            for sub in _batches(ids):
                self._db.execute(f"DELETE FROM chunk_terms WHERE rowid IN ({_marks(sub)})", sub)
            self._db.execute(f"DELETE FROM doc_terms WHERE rowid IN (SELECT rowid FROM documents WHERE doc_id IN ({marks}))",
                             part)
            self._db.execute(f"DELETE FROM chunks WHERE doc_id IN ({marks})", part)
            self._db.execute(f"DELETE FROM documents WHERE doc_id IN ({marks})", part)
            removed.extend(ids)
        return removed

    def _bump_generation(self) -> None:
        self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    def _generation(self) -> int:
        return int(self._meta("generation") or 0)

    # -- FAISS ---------------------------------------------------------------------------------------------
    def _apply_to_faiss(self, removed: list[int], added: list[int], vectors: list[np.ndarray]) -> None:
        assert self._faiss is not None
        if removed:
            self._faiss.remove_ids(np.asarray(removed, dtype=np.int64))
        if added:
            self._faiss.add_with_ids(np.vstack(vectors).astype(np.float32), np.asarray(added, dtype=np.int64))
        self._faiss_generation = self._generation()
        self._dirty = True

    def _load_faiss(self) -> faiss.IndexIDMap2:
        """The FAISS index matching the database's current generation (loaded, or rebuilt from SQLite)."""
        generation = self._generation()
        if self._faiss is not None and self._faiss_generation == generation:
            return self._faiss
        index = self._read_faiss_file(generation)
        if index is None:
            # Kept in memory only: the vector file is written by writers, under the write lock.
            index = self._rebuild_faiss()
        self._faiss, self._faiss_generation = index, generation
        return index

    def _read_faiss_file(self, generation: int) -> faiss.IndexIDMap2 | None:
        stamp_path, faiss_path = self.directory / FAISS_STAMP, self.directory / FAISS_NAME
        try:
            stamp = json.loads(stamp_path.read_text())
            if stamp.get("generation") != generation:
                log.info("vector file is behind the database (interrupted write?); rebuilding it")
                return None
            index = faiss.read_index(str(faiss_path))
            if index.ntotal != stamp.get("count"):
                return None
            return index
        except FileNotFoundError:
            return None
        except (ValueError, RuntimeError, OSError) as exc:
            log.warning("vector file unreadable (%s); rebuilding it from the database", exc)
            return None

    def _rebuild_faiss(self) -> faiss.IndexIDMap2:
        info = self.embedder
        dim = info[1] if info else 1
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        batch_ids: list[int] = []
        batch_vecs: list[bytes] = []
        for chunk_id, blob in self._db.execute("SELECT id, vector FROM chunks ORDER BY id"):
            batch_ids.append(chunk_id)
            batch_vecs.append(blob)
            if len(batch_ids) >= 10_000:
                _add_blobs(index, batch_ids, batch_vecs, dim)
                batch_ids, batch_vecs = [], []
        if batch_ids:
            _add_blobs(index, batch_ids, batch_vecs, dim)
        return index

    def flush(self) -> None:
        """Write the FAISS file (atomically, with its generation stamp) if this process changed the index."""
        if not self._dirty or self._faiss is None:
            return
        faiss_tmp = self.directory / (FAISS_NAME + ".tmp")
        stamp_tmp = self.directory / (FAISS_STAMP + ".tmp")
        faiss.write_index(self._faiss, str(faiss_tmp))
        stamp_tmp.write_text(json.dumps({"generation": self._faiss_generation, "count": int(self._faiss.ntotal)}))
        # Stamp last: a crash between the two renames leaves a stamp that does not match, so we rebuild.
        os.replace(faiss_tmp, self.directory / FAISS_NAME)
        os.replace(stamp_tmp, self.directory / FAISS_STAMP)
        self._dirty = False

    # -- reading -------------------------------------------------------------------------------------------
    def search_dense(self, query_vectors: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """Top ``k`` ``(chunk_id, cosine)`` per query row."""
        index = self._load_faiss()
        if index.ntotal == 0:
            return [[] for _ in range(len(query_vectors))]
        info = self.embedder
        if info and query_vectors.shape[1] != info[1]:
            raise EmbedderMismatchError(
                f"query vectors are {query_vectors.shape[1]}-d but {self.directory} holds {info[1]}-d vectors "
                f"from {info[0]}")
        scores, ids = index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), min(k, index.ntotal))
        return [[(int(i), float(s)) for i, s in zip(row_ids, row_scores) if i >= 0]
                for row_ids, row_scores in zip(ids, scores)]

    def search_bm25(self, terms: list[str], k: int) -> list[tuple[int, float]]:
        """Top ``k`` ``(chunk_id, bm25)`` for the OR of ``terms`` (higher is better)."""
        expression = fts_match_expression(terms)
        if not expression:
            return []
        rows = self._db.execute(
            "SELECT rowid, bm25(chunk_terms) AS s FROM chunk_terms WHERE chunk_terms MATCH ? ORDER BY s LIMIT ?",
            (expression, k))
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
        """Chunk ids of each document, in document order."""
        out: dict[str, list[int]] = {d: [] for d in doc_ids}
        for part in _batches(doc_ids):
            for doc_id, chunk_id in self._db.execute(
                    f"SELECT doc_id, id FROM chunks WHERE doc_id IN ({_marks(part)}) ORDER BY doc_id, ordinal", part):
                out[doc_id].append(chunk_id)
        return out

    def chunk_docs(self, chunk_ids: Sequence[int]) -> dict[int, str]:
        """Document id of each chunk id."""
        out: dict[int, str] = {}
        for part in _batches(chunk_ids):
            out.update(self._db.execute(f"SELECT id, doc_id FROM chunks WHERE id IN ({_marks(part)})", part))
        return out

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

    def get_chunks(self, chunk_ids: Iterable[int]) -> dict[int, StoredChunk]:
        """Chunks by id (ids no longer in the index are left out)."""
        out: dict[int, StoredChunk] = {}
        for part in _batches(dict.fromkeys(chunk_ids)):
            rows = self._db.execute(
                "SELECT c.id, c.doc_id, c.ordinal, c.start, c.end, c.text, c.index_text, d.title "
                f"FROM chunks c JOIN documents d USING (doc_id) WHERE c.id IN ({_marks(part)})", part)
            for row in rows:
                out[row[0]] = StoredChunk(*row)
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

    def iter_texts(self) -> Iterator[tuple[str, str | None, str]]:
        """``(doc_id, title, cleaned text)`` of every document, ordered by id."""
        yield from self._db.execute("SELECT doc_id, title, text FROM documents ORDER BY doc_id").fetchall()

    def list_documents(self) -> list[dict[str, Any]]:
        """Every document with its chunk count and length, ordered by id."""
        rows = self._db.execute(
            "SELECT d.doc_id, d.title, d.source, length(d.text), count(c.id) FROM documents d "
            "LEFT JOIN chunks c USING (doc_id) GROUP BY d.doc_id ORDER BY d.doc_id")
        return [{"doc_id": r[0], "title": r[1], "source": r[2], "chars": r[3], "chunks": r[4]} for r in rows]

    def stats(self) -> dict[str, Any]:
        """Counts and sizes for ``rag status``."""
        docs = self._db.execute("SELECT count(*) FROM documents").fetchone()[0]
        chunks = self._db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        info = self.embedder
        size = sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())
        return {"index": str(self.directory), "format_version": FORMAT_VERSION, "documents": docs, "chunks": chunks,
                "embedder": info[0] if info else None, "dim": info[1] if info else None,
                "generation": self._generation(), "size_bytes": size}


def _batches(items: Sequence[Any], size: int = 500) -> Iterator[list[Any]]:
    """``items`` in lists of at most ``size`` (SQLite limits the number of bound parameters)."""
    items = list(items)
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _marks(part: Sequence[Any]) -> str:
    return ",".join("?" * len(part))


def _add_blobs(index: faiss.IndexIDMap2, ids: list[int], blobs: list[bytes], dim: int) -> None:
    vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), dim)
    index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))

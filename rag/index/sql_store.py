"""Documents and chunks in the SQL that SQLite and PostgreSQL share: :class:`SqlStore`, the body of both stores.

Every change is one transaction, and SQLite (or the database) is the source of truth: the vector backend (FAISS
files in the folder, or a Milvus collection: :mod:`rag.index.vectors`) is derived from the vectors stored here and
brought up to date from them whenever it is missing, behind or damaged. Where the two databases differ (row ids,
the BM25 index, the writers' lock, integrity checks, backups) a store implements the hooks at the end of the class:
:class:`rag.index.sqlite_store.SqliteStore` with FTS5 and a lock file, :class:`rag.index.postgres.PostgresStore`
with term tables and an advisory lock. Checks, backups and copies are in :mod:`rag.index.maintenance`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import EmbedderMismatchError, IndexReadOnlyError, StoreError, damaged
from .lexical import document_terms
from .maintenance import StoreMaintenance
from .records import ChunkRecord, ChunkView, DocumentRecord, Origin, StoredChunk
from .schema import FORMAT_VERSION, put_meta, read_meta
from .vectors import LOG_START, VectorBackend, VectorBackendError, open_backend

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)


class SqlStore(StoreMaintenance):
    """One index: its documents, chunks, BM25 terms and vectors in a database, and the vector backend derived from
    them. Open one with :meth:`rag.index.store.IndexStore.open`; use it as a context manager to close it."""

    def __init__(self, directory: Path, db: Any, settings: Settings | None = None, *, read_only: bool = False) -> None:
        self.directory = directory
        self.read_only = read_only
        self._db = db
        self._settings = settings
        self._vectors: VectorBackend | None = None
        self._dirty = False
        self._checked_for_writing = False
        self._format = FORMAT_VERSION  # what this connection's tables are (older only when read where read-only)
        self._lock_owner: int | None = None  # the thread holding the write lock through this store

    def close(self) -> None:
        """Save pending vector changes and close the database."""
        self.flush()
        if self._vectors is not None:
            self._vectors.close()
        self._db.close()

    def __enter__(self) -> SqlStore:
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

    def ensure_intact(self) -> None:
        """Raise :class:`IndexDamagedError` (one line: the damage and what to do) when the quick check finds any."""
        problems = self.quick_check()
        if problems:
            raise damaged(self.directory, problems[0])

    @property
    def embedder(self) -> tuple[str, int] | None:
        """``(name, dim)`` of the embedder this index was built with, or ``None`` while it is empty."""
        name, dim = read_meta(self._db, "embedder"), read_meta(self._db, "dim")
        return (name, int(dim)) if name and dim else None

    def bind_embedder(self, name: str, dim: int) -> None:
        """Record the embedder on first use; refuse another one later."""
        current = self.embedder
        if current is None:
            with self._db:
                put_meta(self._db, "embedder", name)
                put_meta(self._db, "dim", str(dim))
            self._vectors = None  # a backend opened so far had no dimension to go by
        elif current != (name, dim):
            raise EmbedderMismatchError(
                f"{self.directory} holds vectors from {current[0]} ({current[1]}-d); refusing to mix in "
                f"{name} ({dim}-d). Use another --index folder, or the same embedder.")

    def origins(self, doc_ids: Sequence[str]) -> dict[str, Origin]:
        """Where each of ``doc_ids`` that is in the index came from (the ids missing from it are left out)."""
        out: dict[str, Origin] = {}
        chunking = "chunk_size, chunk_overlap" if self._format >= 4 else "NULL, NULL"
        for part in batches(doc_ids):
            for doc_id, source, content_hash, size, overlap in self._db.execute(
                    f"SELECT doc_id, source, content_hash, {chunking} FROM documents WHERE doc_id IN ({marks(part)})",
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
            for part in batches(sorted(rows)):
                still += [int(r[0]) for r in self._db.execute(
                    f"SELECT chunk_id FROM pending_vectors WHERE chunk_id IN ({marks(part)})", part)]
            still.sort()
            self._db.executemany("UPDATE chunks SET vector = ? WHERE id = ?", [(rows[i].tobytes(), i) for i in still])
            for part in batches(still):
                self._db.execute(f"DELETE FROM pending_vectors WHERE chunk_id IN ({marks(part)})", part)
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
        for part in batches(doc_ids):
            holes = marks(part)
            ids = [r[0] for r in self._db.execute(f"SELECT id FROM chunks WHERE doc_id IN ({holes})", part)]
            for sub in batches(ids):
                self._delete_terms(sub)
                self._db.execute(f"DELETE FROM excluded_chunks WHERE chunk_id IN ({marks(sub)})", sub)
                if self._format >= 5:
                    self._db.execute(f"DELETE FROM pending_vectors WHERE chunk_id IN ({marks(sub)})", sub)
            self._delete_document_terms(part)
            self._db.execute(f"DELETE FROM chunks WHERE doc_id IN ({holes})", part)
            self._db.execute(f"DELETE FROM documents WHERE doc_id IN ({holes})", part)
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
                for part in batches(ids):
                    if excluded:
                        cur = self._db.execute(
                            f"INSERT INTO excluded_chunks (chunk_id) SELECT id FROM chunks WHERE id IN ({marks(part)}) "
                            "AND id NOT IN (SELECT chunk_id FROM excluded_chunks)", part)
                    else:
                        cur = self._db.execute(f"DELETE FROM excluded_chunks WHERE chunk_id IN ({marks(part)})", part)
                    changed += max(cur.rowcount, 0)
                if changed:
                    docs = set()
                    for part in batches(ids):
                        docs.update(r[0] for r in self._db.execute(
                            f"SELECT DISTINCT doc_id FROM chunks WHERE id IN ({marks(part)})", part))
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

    def _bump_generation(self, removed_ids: Sequence[int]) -> None:
        self._db.execute("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'generation'")
        if removed_ids:
            generation = self.generation()
            # A chunk id is never given out twice, so it is removed (and logged) at most once.
            self._db.executemany("INSERT INTO removed_chunks VALUES (?, ?)", [(i, generation) for i in removed_ids])

    def generation(self) -> int:
        """Write counter: bumped by every committed change."""
        return int(read_meta(self._db, "generation") or 0)

    # -- the vector backend --------------------------------------------------------------------------------
    def _backend(self) -> VectorBackend | None:
        """The vector backend, up to date with the database; ``None`` while no embedder is bound."""
        info = self.embedder
        if info is None:
            return None
        if self._vectors is None:
            kind = read_meta(self._db, "vector_store") or "faiss"
            options: dict[str, Any] = {}
            if self._settings is not None:
                options = {k: getattr(self._settings, k) for k in ("vector_index", "ann_min_vectors", "hnsw_m",
                                                                   "hnsw_ef_search", "milvus_token")}
            options["milvus_uri"] = read_meta(self._db, "milvus_uri") or ""
            options["milvus_collection"] = read_meta(self._db, "milvus_collection") or ""
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
            put_meta(self._db, LOG_START, str(up_to_generation))

    def chunk_id_set(self) -> set[int]:
        """Every chunk id that has its vector (what a vector backend should hold)."""
        return {r[0] for r in self._db.execute("SELECT id FROM chunks WHERE length(vector) > 0")}

    def get_meta(self, key: str) -> str | None:
        """A value from the index's key-value metadata."""
        return read_meta(self._db, key)

    def set_meta(self, key: str, value: str) -> None:
        """Store a value in the index's key-value metadata (nothing, in a read-only index)."""
        if self.read_only:
            return
        with self._db:
            put_meta(self._db, key, value)

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

    def chunk_ids_of(self, doc_ids: Sequence[str]) -> dict[str, list[int]]:
        """Ids of each document's searchable chunks (excluded ones left out), in document order."""
        out: dict[str, list[int]] = {d: [] for d in doc_ids}
        for part in batches(doc_ids):
            for doc_id, chunk_id in self._db.execute(
                    f"SELECT doc_id, id FROM chunks WHERE doc_id IN ({marks(part)}) {self._unless_excluded('id')} "
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
        for part in batches(list(chunk_ids)):
            found.update(r[0] for r in self._db.execute(
                f"SELECT chunk_id FROM excluded_chunks WHERE chunk_id IN ({marks(part)})", part))
        return found

    def _unless_excluded(self, column: str) -> str:
        """A SQL ``AND`` clause leaving out excluded chunks (nothing for an older index read as it is)."""
        return f"AND {column} NOT IN (SELECT chunk_id FROM excluded_chunks)" if self._format >= 4 else ""

    def chunk_count(self) -> int:
        """Number of chunks in the index."""
        return int(self._db.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def get_vectors(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of ``chunk_ids``, one row each, in the order given (zeros for ids no longer there)."""
        dim = self.embedder[1] if self.embedder else 0
        found: dict[int, bytes] = {}
        for part in batches(dict.fromkeys(chunk_ids)):
            found.update(self._db.execute(f"SELECT id, vector FROM chunks WHERE id IN ({marks(part)}) "
                                          "AND length(vector) > 0", part))
        missing = bytes(4 * dim)
        rows = b"".join(found.get(i, missing) for i in chunk_ids)
        return np.frombuffer(rows, dtype=np.float32).reshape(len(chunk_ids), dim)

    def get_chunks(self, chunk_ids: Iterable[int]) -> dict[int, StoredChunk]:
        """Searchable chunks by id (ids no longer in the index, or excluded from search, are left out: a search
        that found a chunk just before an editor excluded it still does not show it)."""
        out: dict[int, StoredChunk] = {}
        for part in batches(dict.fromkeys(chunk_ids)):
            rows = self._db.execute(
                'SELECT c.id, c.doc_id, c.ordinal, c.start, c."end", c.text, c.index_text, d.title, '
                f"{self._location('c')} "
                f"FROM chunks c JOIN documents d USING (doc_id) WHERE c.id IN ({marks(part)}) "
                f"{self._unless_excluded('c.id')}", part)
            for row in rows:
                out[row[0]] = StoredChunk(*row)
        return out

    def index_texts(self, chunk_ids: Iterable[int]) -> dict[int, str]:
        """The normalised text of searchable chunks by id (``get_chunks(...)[id].index_text`` without the rest of
        the row): hybrid search scores its ~150 candidates on it but shows only a few."""
        out: dict[int, str] = {}
        for part in batches(dict.fromkeys(chunk_ids)):
            out.update(self._db.execute(
                f"SELECT id, index_text FROM chunks WHERE id IN ({marks(part)}) {self._unless_excluded('id')}", part))
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
        return {"index": str(self.directory), "format_version": int(read_meta(self._db, "format_version") or 0),
                "documents": docs, "chunks": chunks, "excluded_chunks": self.excluded_count(),
                "pending_vectors": self.pending_count(),
                "embedder": info[0] if info else None,
                "dim": info[1] if info else None, "vector_store": read_meta(self._db, "vector_store") or "faiss",
                "vector_index": backend.kind if backend is not None else None,
                "generation": self.generation(), "size_bytes": size, "read_only": self.read_only}

    def _size_bytes(self) -> int:
        """What the index takes on disk."""
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

    # -- where the two databases differ: each store implements these ----------------------------------------------
    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        """The lock only one writer of this index holds at a time (across processes, or machines)."""
        raise NotImplementedError
        yield

    def quick_check(self) -> list[str]:
        """The database's quick integrity check: the problems it finds."""
        raise NotImplementedError

    def _insert_chunk(self, doc_id: str, chunk: ChunkRecord, vector: np.ndarray | None) -> int:
        """Insert one chunk with its BM25 terms (and zero bytes for a vector still to come); returns its new id."""
        raise NotImplementedError

    def _delete_terms(self, chunk_ids: Sequence[int]) -> None:
        """Forget the BM25 terms of ``chunk_ids`` (at most 500)."""
        raise NotImplementedError

    def _set_document_terms(self, doc_id: str, terms: Sequence[str]) -> None:
        """Give stored document ``doc_id`` these whole-document BM25 terms."""
        raise NotImplementedError

    def _delete_document_terms(self, doc_ids: Sequence[str]) -> None:
        """Forget the whole-document BM25 terms of ``doc_ids`` (at most 500), before their rows go."""
        raise NotImplementedError

    def search_bm25(self, terms: list[str], k: int) -> list[tuple[int, float]]:
        """Top ``k`` ``(chunk_id, bm25)`` for the OR of ``terms`` (higher is better)."""
        raise NotImplementedError

    def search_bm25_documents(self, terms: list[str], k: int) -> list[tuple[str, float]]:
        """Top ``k`` ``(doc_id, bm25)`` over whole documents (higher is better)."""
        raise NotImplementedError

    def term_doc_freqs(self, terms: Sequence[str]) -> dict[str, int]:
        """How many chunks contain each term (for IDF weights); absent terms are left out."""
        raise NotImplementedError

    def max_chunk_id(self) -> int:
        """The highest chunk id ever given out (ids are never reused)."""
        raise NotImplementedError


def batches(items: Sequence[Any], size: int = 500) -> Iterator[list[Any]]:
    """``items`` in lists of at most ``size`` (SQLite limits the number of bound parameters)."""
    items = list(items)
    for i in range(0, len(items), size):
        yield items[i : i + size]


def marks(part: Sequence[Any]) -> str:
    return ",".join("?" * len(part))


def _chunk_id(value: int | str) -> int:
    """A chunk id given as a number or a string of digits; :class:`ValueError` for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"not a chunk id: {value!r}")
    if isinstance(value, str) and not value.strip().isdecimal():
        raise ValueError(f"not a chunk id: {value!r}")
    return int(value)

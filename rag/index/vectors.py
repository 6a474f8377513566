"""Vector search backends: FAISS files in the index folder, or a Milvus collection.

The index's database (:mod:`rag.index.sql_store`) keeps every chunk vector and a generation number that each write
bumps. A backend is a search structure derived from those vectors: it is told about each committed change
(:meth:`apply`) and, when it finds itself behind the database's generation (another process wrote), brings itself up
to date from the database (:meth:`sync`). Losing or damaging a backend's files therefore loses nothing.

- :class:`FaissVectors`: exact inner-product search, or HNSW once the index holds ``ann_min_vectors``
  vectors. Saved as a snapshot file plus the changes made since it (read back from SQLite), so a small write
  does not rewrite the whole file.
- :class:`MilvusVectors`: a Milvus collection, either a Milvus Lite file or a Milvus server or cluster URI.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

log = logging.getLogger(__name__)

FAISS_NAME = "vectors.faiss"
FAISS_STAMP = "vectors.json"
# The metadata key holding the generation from which the database's removal and filled-vector logs are whole
# (what :meth:`VectorSource.forget_removed` dropped came before it).
LOG_START = "log_start"
MILVUS_LITE_NAME = "milvus.db"
# A vector the backend holds counts as the database's when no component differs by more than this (FAISS and Milvus
# keep the same float32 values; a wrong vector differs by far more).
VECTOR_TOLERANCE = 1e-5
# Milvus is compared on this many vectors at most (spread over the ids): reading a whole collection back over the
# network costs more than `rag check` should; FAISS, in memory, is compared whole.
MILVUS_CHECK_SAMPLE = 5_000
Hits = list[list[tuple[int, float]]]


class VectorBackendError(RuntimeError):
    """A vector backend cannot be opened or used; the message is meant for users."""


class VectorSource(Protocol):
    """What a backend reads from the database (implemented by :class:`rag.index.sql_store.SqlStore`)."""

    def generation(self) -> int: ...

    def iter_vectors(self, after_id: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def removed_since(self, generation: int) -> list[int]: ...

    def filled_since(self, generation: int) -> list[int]: ...

    def get_vectors(self, chunk_ids: Sequence[int]) -> np.ndarray: ...

    def forget_removed(self, up_to_generation: int) -> None: ...

    def chunk_id_set(self) -> set[int]: ...

    def max_chunk_id(self) -> int: ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...


class VectorBackend(Protocol):
    """A searchable copy of the chunk vectors, kept in step with the database."""

    kind: str
    notes: list[str]  # what was repaired when the backend was opened (an unreadable file rebuilt ...)

    def sync(self, source: VectorSource) -> None:
        """Catch up with the database's current generation."""

    def apply(self, source: VectorSource, removed: Sequence[int], ids: Sequence[int], vectors: np.ndarray) -> None:
        """Apply one committed write (``removed`` chunk ids out, ``ids`` with ``vectors`` in)."""

    def search(self, queries: np.ndarray, k: int) -> Hits:
        """Top ``k`` ``(chunk_id, inner product)`` per query row."""

    def count(self) -> int:
        """Vectors searchable now."""

    def ids(self) -> set[int]:
        """The chunk ids searchable now (for ``rag check``)."""

    def compare_vectors(self, source: VectorSource) -> tuple[int, int]:
        """``(differing, compared)``: how many of the vectors held under the database's chunk ids differ from the
        database's, of how many compared (for ``rag check``, once the ids agree)."""

    def save(self, source: VectorSource) -> None:
        """Persist what needs persisting (called by writers, under the write lock)."""

    def close(self) -> None:
        """Release connections."""


# -- FAISS ---------------------------------------------------------------------------------------------------
class FaissVectors:
    """FAISS in the index folder: exact search, HNSW past ``ann_min_vectors``.

    HNSW cannot delete, so removed ids are kept as tombstones and filtered out of results until the next
    snapshot rebuilds the graph without them.
    """

    def __init__(self, directory: Path, dim: int, *, index_type: str = "auto", ann_min_vectors: int = 200_000,
                 hnsw_m: int = 32, hnsw_ef_construction: int = 200, hnsw_ef_search: int = 256) -> None:
        if index_type not in ("auto", "flat", "hnsw"):
            raise VectorBackendError(f"unknown vector_index {index_type!r} (use auto, flat or hnsw)")
        self.directory = directory
        self.dim = dim
        self.index_type = index_type
        self.ann_min_vectors = ann_min_vectors
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self.hnsw_ef_search = hnsw_ef_search
        self._index: faiss.IndexIDMap2 | None = None
        self._labels: np.ndarray | None = None  # chunk id of each position in the inner index, read when needed
        self.kind = "flat"
        self._tombstones: set[int] = set()
        self._generation = -1
        self._max_id = 0  # the highest chunk id the index has seen: later ones are new
        # What the snapshot file on disk holds, so a writer knows how far the database has moved past it.
        self._snapshot_generation = -1
        self._changed_since_snapshot = 0
        self.notes: list[str] = []

    def wanted_kind(self, n: int) -> str:
        """The index type for ``n`` vectors under the configured policy."""
        if self.index_type != "auto":
            return self.index_type
        return "hnsw" if n >= self.ann_min_vectors else "flat"

    def _empty(self, kind: str) -> faiss.IndexIDMap2:
        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.hnsw_ef_construction
        else:
            inner = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(inner)

    # -- keeping in step ------------------------------------------------------------------------------------
    def sync(self, source: VectorSource) -> None:
        generation = source.generation()
        if self._index is not None and self._generation == generation:
            return
        if self._index is not None and self._generation <= generation and self._log_reaches(source):
            # Behind by a few writes (of another process): replay them in memory, without reading a snapshot
            # again; for a library in PostgreSQL on another machine, without rebuilding from the database.
            self._replay(source, self._generation, self._max_id)
            if self._log_reaches(source):
                self._generation = generation
                return
            # A writer trimmed the logs while they were read: what was replayed may have gaps.
        if not self._load_snapshot(source):
            self._rebuild(source)
        self._generation = generation

    def _log_reaches(self, source: VectorSource) -> bool:
        """Whether the database still logs every removal and filled vector since this index's generation (an
        index older than format 5, whose release trimmed the log without saying how far, never does)."""
        start = source.get_meta(LOG_START)
        return start is not None and self._generation >= int(start)

    def _load_snapshot(self, source: VectorSource) -> bool:
        """Read the snapshot file and replay the changes made after it; ``False`` if it is missing or unusable."""
        stamp_path, faiss_path = self.directory / FAISS_STAMP, self.directory / FAISS_NAME
        try:
            stamp = json.loads(stamp_path.read_text())
            index = faiss.read_index(str(faiss_path))
        except FileNotFoundError:
            return False
        except (ValueError, RuntimeError, OSError) as exc:
            log.warning("vector file unreadable (%s); rebuilding it from the database", exc)
            self.notes.append(f"{FAISS_NAME} was unreadable; rebuilt from the database (the next write saves it)")
            return False
        try:
            generation, max_id = int(stamp["generation"]), int(stamp["max_chunk_id"])
            tombstones = {int(i) for i in stamp.get("tombstones", [])}
            usable = (index.ntotal == stamp["count"] and index.d == self.dim and stamp.get("kind") in ("flat", "hnsw")
                      and generation <= source.generation())
        except (KeyError, TypeError, ValueError):
            usable = False  # a stamp from an older version of this tool
        if not usable:
            log.info("vector file does not match the database; rebuilding it")
            self.notes.append(f"{FAISS_NAME} did not match the database; rebuilt from it (the next write saves it)")
            return False
        self._index, self.kind, self._tombstones = index, stamp["kind"], tombstones
        self._labels = None
        self._set_ef_search()
        self._snapshot_generation = generation
        self._changed_since_snapshot = 0
        self._max_id = max_id
        self._replay(source, generation, max_id)
        return True

    def _replay(self, source: VectorSource, generation: int, max_id: int) -> None:
        """Apply what was written after ``generation``: removals, chunks above ``max_id``, and vectors filled in
        for older chunks (ingested BM25-first). A write committed while this runs is seen again next time, so
        each step must be harmless twice."""
        removed = source.removed_since(generation)
        added_ids, added_vecs = _collect(source.iter_vectors(after_id=max_id))
        gone = set(removed)
        filled = [i for i in source.filled_since(generation) if i <= max_id and i not in gone]
        if filled:
            present = self.ids()
            filled = sorted(i for i in filled if i not in present)
        if filled:
            added_ids = np.concatenate([added_ids, np.asarray(filled, dtype=np.int64)])
            added_vecs = np.vstack([added_vecs.reshape(-1, self.dim), source.get_vectors(filled)])
        self._apply(removed, added_ids, added_vecs)

    def _rebuild(self, source: VectorSource) -> None:
        ids, vecs = _collect(source.iter_vectors())
        self.kind = self.wanted_kind(len(ids))
        self._index = self._empty(self.kind)
        self._labels = None
        self._set_ef_search()
        self._tombstones = set()
        if len(ids):
            self._index.add_with_ids(vecs, ids)
        self._snapshot_generation = -1  # nothing on disk matches yet
        self._changed_since_snapshot = len(ids)
        self._max_id = int(ids.max()) if len(ids) else 0

    def _set_ef_search(self) -> None:
        if self.kind == "hnsw" and self._index is not None:
            faiss.downcast_index(self._index.index).hnsw.efSearch = self.hnsw_ef_search

    def apply(self, source: VectorSource, removed: Sequence[int], ids: Sequence[int], vectors: np.ndarray) -> None:
        self._apply(removed, np.asarray(ids, dtype=np.int64), vectors)
        self._generation = source.generation()

    def _apply(self, removed: Sequence[int], ids: np.ndarray, vectors: np.ndarray) -> None:
        assert self._index is not None
        self._labels = None
        if len(removed):
            if self.kind == "hnsw":
                self._tombstones.update(int(i) for i in removed)
            else:
                self._index.remove_ids(np.asarray(removed, dtype=np.int64))
        if len(ids):
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
            self._max_id = max(self._max_id, int(np.max(ids)))
        self._changed_since_snapshot += len(removed) + len(ids)

    # -- searching ------------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> Hits:
        assert self._index is not None
        live = self.count()
        if live == 0:
            return [[] for _ in range(len(queries))]
        # Tombstoned ids still sit in an HNSW graph: ask for enough extra results to drop them.
        depth = min(k + len(self._tombstones), self._index.ntotal)
        # The inner index, then our own position → id lookup: IndexIDMap2.search maps ids in an OpenMP loop even
        # for one query, and waking faiss's OpenMP threads right after the embedder's (another OpenMP runtime)
        # took 13 ms a search on a busy 2-core machine, more than the search itself.
        scores, positions = self._index.index.search(np.ascontiguousarray(queries, dtype=np.float32), depth)
        if self._labels is None:
            self._labels = faiss.vector_to_array(self._index.id_map)
        ids = np.where(positions >= 0, self._labels[positions], -1)
        out = []
        for row_ids, row_scores in zip(ids.tolist(), scores.tolist()):
            hits = [(i, s) for i, s in zip(row_ids, row_scores) if i >= 0 and i not in self._tombstones]
            out.append(hits[:k])
        return out

    def count(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal) - len(self._tombstones)

    def ids(self) -> set[int]:
        if self._index is None:
            return set()
        return set(faiss.vector_to_array(self._index.id_map).tolist()) - self._tombstones

    def compare_vectors(self, source: VectorSource) -> tuple[int, int]:
        """Every vector, read back from the index (flat and HNSW keep them whole) by its chunk id's position and
        compared with the database's, a batch at a time: 60,000 384-d vectors take about a second."""
        if self._index is None:
            return 0, 0
        labels = faiss.vector_to_array(self._index.id_map)
        order = np.argsort(labels, kind="stable")
        by_id = labels[order]
        differing = compared = 0
        for ids, vectors in source.iter_vectors():
            at = np.minimum(np.searchsorted(by_id, ids), max(len(by_id) - 1, 0))
            held = np.isin(ids, by_id)  # ids without a vector here are what the id check reports
            if not held.any():
                continue
            found = self._index.index.reconstruct_batch(np.ascontiguousarray(order[at[held]], dtype=np.int64))
            differing += int(np.count_nonzero(np.abs(found - vectors[held]).max(axis=1) > VECTOR_TOLERANCE))
            compared += int(held.sum())
        return differing, compared

    # -- saving ---------------------------------------------------------------------------------------------
    def save(self, source: VectorSource) -> None:
        """Write a new snapshot when the replay log grew large, the policy wants another index type, or none exists.

        A small change (one document added, changed or removed) is left in the database for readers to replay,
        so it costs a few rows, not a rewrite of the whole file.
        """
        if self._index is None:
            return
        n = self.count()
        wanted = self.wanted_kind(n)
        no_snapshot = self._snapshot_generation < 0 or not (self.directory / FAISS_STAMP).exists()
        large_delta = self._changed_since_snapshot > max(1_000, n // 10)
        too_many_tombstones = len(self._tombstones) > max(100, n // 20)
        if not (no_snapshot or large_delta or wanted != self.kind or too_many_tombstones):
            return
        if wanted != self.kind or self._tombstones:
            self._rebuild(source)  # a fresh graph, or a change of index type, from the database
        generation = source.generation()
        previous = self._snapshot_generation
        stamp = {"generation": generation, "max_chunk_id": source.max_chunk_id(), "count": int(self._index.ntotal),
                 "kind": self.kind, "dim": self.dim, "tombstones": sorted(self._tombstones)}
        faiss_tmp = self.directory / (FAISS_NAME + ".tmp")
        stamp_tmp = self.directory / (FAISS_STAMP + ".tmp")
        try:
            # Written through Python's file: a full disk raises OSError (ENOSPC) that says so, where faiss's own
            # writer raises a RuntimeError with the reason inside its message.
            with open(faiss_tmp, "wb") as fh:
                faiss.write_index(self._index, faiss.PyCallbackIOWriter(fh.write))
            stamp_tmp.write_text(json.dumps(stamp))
        except BaseException:
            for tmp in (faiss_tmp, stamp_tmp):  # a half-written snapshot only takes room; the database has it all
                tmp.unlink(missing_ok=True)
            raise
        # Stamp last: a crash between the renames leaves a stamp that does not match the file, so we rebuild.
        os.replace(faiss_tmp, self.directory / FAISS_NAME)
        os.replace(stamp_tmp, self.directory / FAISS_STAMP)
        self._snapshot_generation = generation
        self._changed_since_snapshot = 0
        self._generation = generation
        if previous >= 0:
            # Keep the removals after the previous snapshot: a reader may still be loading that one.
            source.forget_removed(previous)
        log.info("saved %s vector index: %d vectors", self.kind, stamp["count"])

    def close(self) -> None:
        self._index = None
        self._labels = None


def _collect(batches: Iterator[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    id_parts, vec_parts = [], []
    for ids, vecs in batches:
        id_parts.append(ids)
        vec_parts.append(vecs)
    if not id_parts:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(id_parts), np.vstack(vec_parts)


# -- Milvus ----------------------------------------------------------------------------------------------------
class MilvusVectors:
    """A Milvus collection keyed by chunk id (inner-product metric).

    ``uri`` is a Milvus Lite file (``…/milvus.db``, one process at a time) or a server such as
    ``http://milvus.example.org:19530``. The generation last applied to the collection is recorded in the
    database, so after a crash between the SQLite commit and the Milvus write the next open reconciles the two.
    """

    kind = "milvus"

    def __init__(self, uri: str, collection: str, dim: int, token: str = "") -> None:
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:
            raise VectorBackendError("the Milvus backend needs pymilvus (pip install 'rag-zh[milvus]')") from exc
        try:
            self._client = MilvusClient(uri=uri, token=token)
            if not self._client.has_collection(collection):
                self._client.create_collection(collection, dimension=dim, metric_type="IP", auto_id=False,
                                               consistency_level="Strong")
        except Exception as exc:  # connection refused, bad token, Lite file locked by another process...
            raise VectorBackendError(f"cannot open Milvus collection {collection!r} at {uri}: {exc}") from exc
        self.uri, self.collection, self.dim = uri, collection, dim
        self.notes: list[str] = []
        self._meta_key = f"milvus_generation:{collection}"

    def sync(self, source: VectorSource) -> None:
        generation = source.generation()
        if source.get_meta(self._meta_key) == str(generation):
            return
        log.info("Milvus collection %s is behind the database; reconciling", self.collection)
        live = source.chunk_id_set()
        present = self._ids()
        stale = sorted(present - live)
        if stale:
            self._client.delete(self.collection, ids=stale)
        missing = live - present
        for ids, vecs in source.iter_vectors():
            keep = [i for i, chunk_id in enumerate(ids) if int(chunk_id) in missing]
            if keep:
                self._upsert(ids[keep], vecs[keep])
        source.set_meta(self._meta_key, str(generation))

    def _ids(self) -> set[int]:
        found: set[int] = set()
        iterator = self._client.query_iterator(self.collection, batch_size=5_000, output_fields=["id"])
        try:
            while batch := iterator.next():
                found.update(int(row["id"]) for row in batch)
        finally:
            iterator.close()
        return found

    def _upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        rows = [{"id": int(i), "vector": v.tolist()} for i, v in zip(ids, np.asarray(vectors, dtype=np.float32))]
        for start in range(0, len(rows), 2_000):
            # Upsert, not insert: Milvus does not refuse a second row with the same primary key.
            self._client.upsert(self.collection, rows[start : start + 2_000])

    def apply(self, source: VectorSource, removed: Sequence[int], ids: Sequence[int], vectors: np.ndarray) -> None:
        if len(removed):
            self._client.delete(self.collection, ids=[int(i) for i in removed])
        if len(ids):
            self._upsert(np.asarray(ids), vectors)
        source.set_meta(self._meta_key, str(source.generation()))

    def search(self, queries: np.ndarray, k: int) -> Hits:
        if len(queries) == 0:
            return []
        results = self._client.search(self.collection, data=np.asarray(queries, dtype=np.float32).tolist(),
                                      limit=k, output_fields=["id"])
        return [[(int(hit["id"]), float(hit["distance"])) for hit in row] for row in results]

    def count(self) -> int:
        return int(self._client.get_collection_stats(self.collection)["row_count"])

    def ids(self) -> set[int]:
        return self._ids()

    def compare_vectors(self, source: VectorSource) -> tuple[int, int]:
        """Up to :data:`MILVUS_CHECK_SAMPLE` vectors, spread evenly over the chunk ids, fetched from Milvus and
        compared with the database's."""
        live = sorted(source.chunk_id_set())
        if not live:
            return 0, 0
        step = max(1, -(-len(live) // MILVUS_CHECK_SAMPLE))
        sample = live[::step]
        differing = 0
        for start in range(0, len(sample), 1_000):
            part = sample[start : start + 1_000]
            rows = self._client.get(self.collection, ids=part, output_fields=["vector"])
            held = {int(row["id"]): np.asarray(row["vector"], dtype=np.float32) for row in rows}
            for chunk_id, vector in zip(part, source.get_vectors(part)):
                found = held.get(chunk_id)
                differing += found is None or float(np.abs(found - vector).max()) > VECTOR_TOLERANCE
        return differing, len(sample)

    def save(self, source: VectorSource) -> None:
        """Nothing to do: each write went to Milvus when it was committed."""

    def close(self) -> None:
        self._client.close()


def open_backend(kind: str, directory: Path, dim: int, options: dict[str, str | int]) -> VectorBackend:
    """The backend an index is configured with (``kind`` is ``"faiss"`` or ``"milvus"``)."""
    if kind == "faiss":
        return FaissVectors(directory, dim, index_type=str(options.get("vector_index", "auto")),
                            ann_min_vectors=int(options.get("ann_min_vectors", 200_000)),
                            hnsw_m=int(options.get("hnsw_m", 32)),
                            hnsw_ef_search=int(options.get("hnsw_ef_search", 256)))
    if kind == "milvus":
        uri = str(options.get("milvus_uri") or "") or str(directory / MILVUS_LITE_NAME)
        return MilvusVectors(uri, str(options.get("milvus_collection") or "rag_chunks"), dim,
                             str(options.get("milvus_token") or ""))
    raise VectorBackendError(f"unknown vector_store {kind!r} (use faiss or milvus)")

"""What an index store does (:class:`IndexStore`), and which store opens a folder (:data:`STORES`).

An index keeps documents, chunks with their vectors, BM25 terms and exclusions, and derives its vector search from
them. Two stores implement it, both over the SQL in :mod:`rag.index.sql_store`:

- ``sqlite`` (:class:`rag.index.sqlite_store.SqliteStore`): ``index.sqlite`` in the index folder, BM25 by FTS5;
- ``postgresql`` (:class:`rag.index.postgres.PostgresStore`): one schema per library in a database shared by
  several machines, the folder only caching the vector index.

:meth:`IndexStore.open` picks the one a folder belongs to (:func:`rag.index.schema.stored_kind`), or for a new index
the one ``Settings.index_store`` names. Ingestion, retrieval, the vector backends and the service see only this
protocol.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .errors import StoreError
from .postgres import PostgresStore
from .records import CheckReport, ChunkRecord, ChunkView, DocumentRecord, Origin, StoredChunk, StoredDocument
from .schema import stored_kind
from .sqlite_store import SqliteStore
from .vectors import VectorBackend

if TYPE_CHECKING:
    from ..config import Settings


class IndexStore(Protocol):
    """One open index. Open it with :meth:`open`; use it as a context manager to close it."""

    directory: Path
    read_only: bool

    @staticmethod
    def open(directory: str | os.PathLike[str], *, create: bool = False, settings: Settings | None = None,
             read_only: bool = False) -> IndexStore:
        """Open the index in ``directory`` with the store it was made with; a new one (``create``) with the store
        ``settings.index_store`` names. Raises :class:`~rag.index.errors.StoreError` subclasses (no index there,
        another format, damaged, busy …)."""
        directory = Path(directory)
        kind = stored_kind(directory) or (settings.index_store if settings is not None else "sqlite")
        if kind not in STORES:
            raise StoreError(f"unknown index_store {kind!r} (use {' or '.join(STORES)})")
        return STORES[kind].open(directory, create=create, settings=settings, read_only=read_only)

    def close(self) -> None:
        """Save pending vector changes and close the database."""

    def __enter__(self) -> IndexStore: ...

    def __exit__(self, *exc: object) -> None: ...

    # -- writing (under the write lock) --------------------------------------------------------------------
    def write_lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the index's single-writer lock (another writer gets ``IndexBusyError``)."""

    def quick_check(self) -> list[str]:
        """The database's quick integrity check: the problems it finds."""

    def ensure_intact(self) -> None:
        """Raise ``IndexDamagedError`` when the quick check finds damage."""

    @property
    def embedder(self) -> tuple[str, int] | None:
        """``(name, dim)`` of the embedder the index was built with, or ``None`` while it is empty."""

    def bind_embedder(self, name: str, dim: int) -> None:
        """Record the embedder on first use; refuse another one later."""

    def write_documents(self, docs: Sequence[DocumentRecord], chunks: Sequence[Sequence[ChunkRecord]],
                        vectors: Sequence[np.ndarray | None], also_remove: Sequence[str] = ()) -> None:
        """Insert or replace documents with their chunks (and vectors, or ``None``: pending), in one transaction."""

    def set_vectors(self, chunk_ids: Sequence[int], vectors: np.ndarray) -> int:
        """Give pending chunks their vectors; how many were filled."""

    def remove_documents(self, doc_ids: Sequence[str]) -> int:
        """Delete documents with their chunks, vectors and terms; how many existed."""

    def set_excluded(self, chunk_ids: Sequence[int | str], excluded: bool) -> int:
        """Exclude chunks from search, or include them again; how many changed."""

    def flush(self) -> None:
        """Persist the vector backend's state if this process changed the index."""

    def copy_from(self, source: IndexStore, progress: bool = False) -> dict[str, int]:
        """Copy every document of another index into this one, vectors included."""

    # -- what ingest compares against ------------------------------------------------------------------------
    def origins(self, doc_ids: Sequence[str]) -> dict[str, Origin]:
        """Where each of ``doc_ids`` that is in the index came from."""

    def file_documents(self, doc_id: str) -> list[str]:
        """``doc_id``, or the parts a long spreadsheet of that id was read as."""

    def doc_ids_from_source(self, source: str) -> list[str]:
        """Documents ingested from ``source``."""

    def doc_ids_under(self, root: str) -> list[str]:
        """Documents ingested from the folder or file ``root``."""

    def pending_chunks(self, limit: int = 1_000) -> list[tuple[int, str]]:
        """``(chunk id, text)`` of chunks still without a vector."""

    def pending_count(self) -> int:
        """How many chunks wait for their vectors."""

    # -- searching -------------------------------------------------------------------------------------------
    def search_dense(self, query_vectors: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """Top ``k`` ``(chunk_id, cosine)`` per query row."""

    def search_bm25(self, terms: list[str], k: int) -> list[tuple[int, float]]:
        """Top ``k`` ``(chunk_id, bm25)`` for the OR of ``terms``."""

    def search_bm25_documents(self, terms: list[str], k: int) -> list[tuple[str, float]]:
        """Top ``k`` ``(doc_id, bm25)`` over whole documents."""

    def term_doc_freqs(self, terms: Sequence[str]) -> dict[str, int]:
        """How many chunks contain each term."""

    def chunk_count(self) -> int:
        """Number of chunks."""

    def chunk_ids_of(self, doc_ids: Sequence[str]) -> dict[str, list[int]]:
        """Ids of each document's searchable chunks, in document order."""

    def get_chunks(self, chunk_ids: Iterable[int]) -> dict[int, StoredChunk]:
        """Searchable chunks by id."""

    def get_vectors(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of ``chunk_ids``, in the order given."""

    def index_texts(self, chunk_ids: Iterable[int]) -> dict[int, str]:
        """The normalised text of searchable chunks by id."""

    # -- reading -----------------------------------------------------------------------------------------------
    def document(self, doc_id: str) -> dict[str, Any] | None:
        """One document's stored fields (display text included), or ``None``."""

    def chunks_of(self, doc_id: str) -> list[ChunkView] | None:
        """Every chunk of ``doc_id`` as an editor sees it; ``None`` when there is no such document."""

    def iter_texts(self) -> Iterator[tuple[str, str | None, str]]:
        """``(doc_id, title, cleaned text)`` of every document, by id."""

    def iter_stored(self) -> Iterator[StoredDocument]:
        """Every document whole: chunks, terms, vectors, exclusions."""

    def list_documents(self) -> list[dict[str, Any]]:
        """Every document with its chunk count and length."""

    def stats(self) -> dict[str, Any]:
        """Counts and sizes for ``rag status``."""

    def generation(self) -> int:
        """Write counter: bumped by every committed change."""

    @property
    def vector_backend(self) -> VectorBackend | None:
        """The backend serving dense search."""

    # -- looking after it -----------------------------------------------------------------------------------
    def check(self) -> CheckReport:
        """Everything ``rag check`` looks at."""

    def backup(self, destination: str | os.PathLike[str]) -> dict[str, Any]:
        """A consistent copy in the new folder ``destination``, an index of its own."""


# The stores an index can live in, by the name ``index_store`` and a folder's store file use.
STORES: dict[str, type[SqliteStore] | type[PostgresStore]] = {"sqlite": SqliteStore, "postgresql": PostgresStore}

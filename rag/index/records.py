"""The typed records that pass between ingestion, the stores and their readers: documents and chunks to write,
chunks as read back, and what ``rag check`` reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


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

"""Ingestion: files → cleaned documents → chunks → vectors and BM25 terms → the index.

Unchanged documents (same content hash) are skipped; changed ones are replaced whole; batches are
committed one transaction at a time, so a run that is killed keeps what it finished and the next run
picks up where it stopped.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .chunking import chunk_text
from .cleaning import clean_text
from .config import Settings
from .embeddings import Embedder, EmbeddingCache, embed_with_cache, text_hash
from .lexical import tokenize, tokenize_spans
from .loaders import RawDocument, Skipped, html_to_text, iter_documents
from .normalize import normalize
from .store import ChunkRecord, DocumentRecord, IndexStore

log = logging.getLogger(__name__)

# Bump when cleaning or chunking changes what a document turns into, so re-ingesting refreshes it.
PIPELINE_VERSION = 2
BATCH_DOCUMENTS = 64


@dataclass
class IngestReport:
    """What an ingest run did, for the command line (``--json``) and the demo."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    chunks_written: int = 0
    chunks_embedded: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"load_clean": 0.0, "chunk": 0.0, "embed": 0.0,
                                                               "store": 0.0, "total": 0.0})

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class PreparedDocument:
    """A document cleaned and chunked, waiting for its vectors."""

    record: DocumentRecord
    chunks: list[ChunkRecord]
    is_new: bool


def prepare_document(raw: RawDocument, settings: Settings) -> DocumentRecord | None:
    """Clean a raw document; ``None`` when nothing is left of it."""
    text, title, meta = raw.text, raw.title, dict(raw.metadata)
    if raw.is_html:
        text, html_title, html_meta = html_to_text(text)
        title = title or html_title
        meta.update(html_meta)
    cleaned = clean_text(text)
    if not cleaned.text.strip():
        return None
    title = title or cleaned.title
    key = f"{PIPELINE_VERSION}|{settings.chunk_size}|{settings.chunk_overlap}|{title or ''}|{cleaned.text}"
    return DocumentRecord(doc_id=raw.doc_id, root=raw.root, source=raw.source, text=cleaned.text,
                          content_hash=text_hash(key), title=title, date=cleaned.date or meta.get("date"),
                          publisher=cleaned.source, metadata=meta)


def index_text_for(chunk_text_: str, title: str | None) -> str:
    """The normalised text a chunk is embedded and BM25-indexed under: its title (for context) and itself."""
    if title and title not in chunk_text_:
        return normalize(f"{title}\n{chunk_text_}")
    return normalize(chunk_text_)


def make_chunks(doc: DocumentRecord, settings: Settings) -> list[ChunkRecord]:
    """Chunk a cleaned document and compute each chunk's index text and BM25 terms (and the document's).

    The text is segmented once: a chunk's terms are the document's words that lie inside it (plus the title's,
    when the chunk is indexed under its title), so overlapping chunks cost no second pass of jieba.
    """
    title_terms = tokenize(doc.title) if doc.title else []
    normalized = normalize(doc.text)
    spans = sorted(tokenize_spans(normalized), key=lambda s: s[1]) if len(normalized) == len(doc.text) else None
    starts = [a for _, a, _ in spans] if spans is not None else []
    doc.terms = title_terms + ([w for w, _, _ in spans] if spans is not None else tokenize(normalized, normalized=True))
    out = []
    for c in chunk_text(doc.text, settings.chunk_size, settings.chunk_overlap):
        index_text = index_text_for(c.text, doc.title)
        if spans is None:
            terms = tokenize(index_text, normalized=True)
        else:
            first = bisect.bisect_left(starts, c.start)
            inside = [w for w, _, b in spans[first : bisect.bisect_left(starts, c.end)] if b <= c.end]
            terms = (title_terms if doc.title and doc.title not in c.text else []) + inside
        out.append(ChunkRecord(c.ordinal, c.start, c.end, c.text, index_text, terms))
    return out


def ingest(paths: Sequence[str | Path], store: IndexStore, embedder: Embedder, settings: Settings, *,
           cache: EmbeddingCache | None = None, sync: bool = False, progress: bool = True,
           batch_documents: int = BATCH_DOCUMENTS, on_item: Callable[[str], None] | None = None) -> IngestReport:
    """Ingest files and folders into ``store``; see the module docstring. Never raises for a bad file.

    ``on_item(source)`` is told about each file or JSONL line as it is read (for progress in front ends).
    """
    report = IngestReport()
    started = time.perf_counter()
    store.bind_embedder(embedder.name, embedder.dim)
    seen_by_root: dict[str, set[str]] = {}
    pending: list[PreparedDocument] = []
    bar = tqdm(desc="ingest", unit="doc", disable=not progress or None, dynamic_ncols=True)

    def flush_batch() -> None:
        if pending:
            _write_batch(pending, store, embedder, settings, cache, report, bar)
            pending.clear()

    with store.write_lock():
        try:
            source_iter = iter(iter_documents([str(p) for p in paths], settings.max_file_mb,
                                              settings.max_document_chars))
            while True:
                t0 = time.perf_counter()
                item = next(source_iter, None)
                if item is None:
                    break
                if on_item is not None:
                    on_item(item.source)
                if isinstance(item, Skipped):
                    if item.doc_id is not None and item.root is not None:
                        # A file that is there but unreadable now keeps its indexed version, even with --sync.
                        seen_by_root.setdefault(item.root, set()).add(item.doc_id)
                    report.skipped.append({"source": item.source, "reason": item.reason})
                    log.warning("skipped %s: %s", item.source, item.reason)
                    bar.update(1)
                    continue
                seen_by_root.setdefault(item.root, set()).add(item.doc_id)
                record = prepare_document(item, settings)
                report.seconds["load_clean"] += time.perf_counter() - t0
                if record is None:
                    where = item.source if Path(item.source).name == item.doc_id.split("/")[-1] else \
                        f"{item.source} ({item.doc_id})"
                    report.skipped.append({"source": where, "reason": "no text left after cleaning"})
                    bar.update(1)
                    continue
                # Ids seen twice in one run (a JSONL with duplicate ids): the last one wins.
                pending[:] = [p for p in pending if p.record.doc_id != record.doc_id]
                stored = store.content_hashes([record.doc_id]).get(record.doc_id)
                if stored == record.content_hash:
                    report.unchanged += 1
                    bar.update(1)
                    continue
                t1 = time.perf_counter()
                pending.append(PreparedDocument(record, make_chunks(record, settings), stored is None))
                report.seconds["chunk"] += time.perf_counter() - t1
                if len(pending) >= batch_documents:
                    flush_batch()
            flush_batch()
            if sync:
                for root, seen in seen_by_root.items():
                    gone = sorted(set(store.doc_ids_under(root)) - seen)
                    if gone:
                        store.remove_documents(gone)
                        report.removed.extend(gone)
                        log.info("removed %d documents no longer under %s", len(gone), root)
        finally:
            bar.close()
            t2 = time.perf_counter()
            store.flush()
            report.seconds["store"] += time.perf_counter() - t2
    report.seconds["total"] = time.perf_counter() - started
    return report


def _write_batch(batch: list[PreparedDocument], store: IndexStore, embedder: Embedder, settings: Settings,
                 cache: EmbeddingCache | None, report: IngestReport, bar: tqdm) -> None:
    texts = [c.index_text for p in batch for c in p.chunks]
    t0 = time.perf_counter()
    vectors, embedded = embed_with_cache(embedder, cache, texts, settings.embed_batch_size)
    report.seconds["embed"] += time.perf_counter() - t0
    report.chunks_embedded += embedded
    t1 = time.perf_counter()
    per_doc: list[np.ndarray] = []
    row = 0
    for p in batch:
        per_doc.append(vectors[row : row + len(p.chunks)])
        row += len(p.chunks)
    store.write_documents([p.record for p in batch], [p.chunks for p in batch], per_doc)
    report.seconds["store"] += time.perf_counter() - t1
    report.chunks_written += len(texts)
    for p in batch:
        (report.added if p.is_new else report.updated).append(p.record.doc_id)
    bar.update(len(batch))

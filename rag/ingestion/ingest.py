"""Ingestion: files → cleaned documents → chunks → vectors and BM25 terms → the index.

Unchanged documents (same content hash) are skipped; changed ones are replaced whole; batches are
committed one transaction at a time, so a run that is killed keeps what it finished and the next run
picks up where it stopped. Documents are searchable by BM25 as soon as they are cleaned and chunked: their
vectors are computed afterwards (:func:`embed_pending`, at the end of the same run, or by ``rag embed`` later),
batch by batch, while other processes already search them. A spreadsheet too long for one document is several
(its parts, runs of whole rows): each is compared and replaced like a document of its own, and those the file no
longer has are removed.
:func:`rechunk_document` re-chunks one stored document with chunk settings of its own, which later ingests of its
file keep.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..config import Settings
from ..index.embeddings import Embedder, EmbeddingCache, embed_with_cache, text_hash
from ..index.errors import StoreError
from ..index.lexical import document_terms, tokenize, word_spans
from ..index.records import ChunkRecord, DocumentRecord
from ..index.store import IndexStore
from ..normalize import normalize
from .archives import ZipLimits
from .chunking import check_chunk_settings, chunk_text
from .cleaning import clean_text
from .loaders import _walk, display_path, html_to_text, iter_documents
from .locations import Locator
from .reading import NamedFile, RawDocument, Skipped

log = logging.getLogger(__name__)

# Bump when cleaning or chunking changes what a document turns into, so re-ingesting refreshes it.
PIPELINE_VERSION = 2
BATCH_DOCUMENTS = 64
# A batch is written early once its documents hold this many characters, so that a long spreadsheet's parts (each
# up to max_document_chars) are held one at a time with their chunks and terms, not all together.
BATCH_CHARS = 1_000_000


@dataclass
class IngestReport:
    """What an ingest run did, for the command line (``--json``) and the demo."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)  # old id → new id of a file indexed before
    skipped: list[dict[str, str]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # ids refused because another source holds them
    missing: list[str] = field(default_factory=list)  # paths given that do not exist
    chunks_written: int = 0
    chunks_embedded: int = 0
    vectors_pending: int = 0  # chunks still without a vector when the run ended (``rag embed`` fills them in)
    searchable_s: float = 0.0  # seconds until every document of the run could be found by BM25
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
    replaces: list[str] = field(default_factory=list)  # other ids of the same file, removed when this is written


def content_hash(text: str, title: str | None, chunk_size: int, chunk_overlap: int) -> str:
    """What a document's stored version is compared by: its cleaned text and title, the chunk settings it is cut
    with, and the pipeline version; any change means it is chunked and embedded again."""
    return text_hash(f"{PIPELINE_VERSION}|{chunk_size}|{chunk_overlap}|{title or ''}|{text}")


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
    return DocumentRecord(doc_id=raw.doc_id, root=raw.root, source=raw.source, text=cleaned.text,
                          content_hash=content_hash(cleaned.text, title, settings.chunk_size, settings.chunk_overlap),
                          title=title, date=cleaned.date or meta.get("date"), publisher=cleaned.source, metadata=meta)


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
    spans = word_spans(doc.text)
    starts = [a for _, a, _ in spans] if spans is not None else []
    doc.terms = document_terms(doc.text, doc.title, spans=spans)
    locator = Locator(doc.text)
    out = []
    for c in chunk_text(doc.text, settings.chunk_size, settings.chunk_overlap):
        index_text = index_text_for(c.text, doc.title)
        if spans is None:
            terms = tokenize(index_text, normalized=True)
        else:
            first = bisect.bisect_left(starts, c.start)
            inside = [w for w, _, b in spans[first : bisect.bisect_left(starts, c.end)] if b <= c.end]
            terms = (title_terms if doc.title and doc.title not in c.text else []) + inside
        out.append(ChunkRecord(c.ordinal, c.start, c.end, c.text, index_text, terms, locator.locate(c.start, c.end)))
    return out


@dataclass(frozen=True)
class FileToRead:
    """One input that can be read by itself, in any process: a path given that is not a folder (a file, or one
    that does not exist) or an upload, read as :func:`iter_documents` reads it; or a file inside a folder given,
    named as that folder's file (``root``: the folder, which its documents record)."""

    given: str | NamedFile
    root: str | None = None


# Reads files on workers elsewhere (rag.distributed): each input's documents, in input order.
FileReader = Callable[[Iterable[FileToRead | Skipped]], Iterator[list[RawDocument | Skipped]]]


def files_to_read(paths: Sequence[str | Path | NamedFile]) -> Iterator[FileToRead | Skipped]:
    """The inputs of ``iter_documents(paths)`` file by file, in its order, for readers that share them out: read
    with :func:`read_file_documents`, they give the documents and skips it gives."""
    for given in paths:
        if isinstance(given, NamedFile):
            yield FileToRead(given)
            continue
        if not Path(given).exists():
            yield from iter_documents([given])  # its Skipped, named as the user wrote it
            continue
        if not Path(given).is_dir():
            yield FileToRead(str(Path(given).resolve()))  # absolute: a worker elsewhere has another directory
            continue
        base = Path(given).resolve()
        for path in _walk(base):
            if isinstance(path, Skipped):
                yield path
                continue
            doc_id = display_path(path.relative_to(base).as_posix())
            yield FileToRead(NamedFile(path, doc_id, display_path(path)), display_path(base))


def read_file_documents(item: FileToRead | Skipped, settings: Settings) -> list[RawDocument | Skipped]:
    """The documents (or the reasons for skipping) of one input of :func:`files_to_read`, OCR included."""
    if isinstance(item, Skipped):
        return [item]
    found = list(iter_documents([item.given], settings.max_file_mb, settings.max_document_chars, settings.cache_dir,
                                zip_limits=ZipLimits.from_settings(settings)))
    if item.root is not None:
        for doc in found:
            if doc.root is not None:  # a bad JSONL line records no root, as iter_documents gives it
                doc.root = item.root
    return found


def read_documents(paths: Sequence[str | Path | NamedFile], settings: Settings, progress: bool = False,
                   read_files: FileReader | None = None) -> Iterator[RawDocument | Skipped]:
    """What ``paths`` hold, document by document: read here (:func:`iter_documents`), or by ``read_files`` (each
    file on a worker of a cluster, :class:`rag.distributed.WorkerPool`), in the same order either way."""
    if read_files is None:
        return iter_documents(list(paths), settings.max_file_mb, settings.max_document_chars, settings.cache_dir,
                              progress, ZipLimits.from_settings(settings))
    return itertools.chain.from_iterable(read_files(files_to_read(paths)))


def ingest(paths: Sequence[str | Path | NamedFile], store: IndexStore, embedder: Embedder, settings: Settings, *,
           cache: EmbeddingCache | None = None, sync: bool = False, replace: bool = False, progress: bool = True,
           batch_documents: int = BATCH_DOCUMENTS, on_item: Callable[[str], None] | None = None,
           read_files: FileReader | None = None, embed: bool = True) -> IngestReport:
    """Ingest files and folders into ``store``; see the module docstring. Never raises for a bad input.

    A document whose id already belongs to another source (another folder's file of the same relative path, a
    JSONL line reusing a file's id, an upload of an existing name) is refused and reported unless ``replace``.
    ``on_item(source)`` is told about each file or JSONL line as it is read (for progress in front ends).
    ``read_files`` reads the files elsewhere (:func:`read_documents`); this process still decides what changed
    and is the only one that writes to ``store``. Documents are written without vectors first (BM25 finds them at
    once); then the vectors of every chunk still lacking one are computed, unless ``embed`` is false.

    The files are read as they are written, batch by batch, under the store's write lock. To parse them without
    holding any lock (a service serving other libraries meanwhile), read them first with :func:`read_documents`
    and give what it yields to :func:`ingest_documents`, which this calls.
    """
    return ingest_documents(read_documents(paths, settings, progress, read_files), store, embedder, settings,
                            cache=cache, sync=sync, replace=replace, progress=progress,
                            batch_documents=batch_documents, on_item=on_item, embed=embed)


def ingest_documents(items: Iterable[RawDocument | Skipped], store: IndexStore, embedder: Embedder,
                     settings: Settings, *, cache: EmbeddingCache | None = None, sync: bool = False,
                     replace: bool = False, progress: bool = True, batch_documents: int = BATCH_DOCUMENTS,
                     on_item: Callable[[str], None] | None = None, embed: bool = True) -> IngestReport:
    """Write documents already read (what :func:`read_documents` or :func:`read_file_documents` yield, skips
    included, in their order) into ``store``, as :func:`ingest` does; reading happens wherever ``items`` is
    iterated: a list read beforehand holds no lock while its files are parsed."""
    report = IngestReport()
    started = time.perf_counter()
    seen_by_root: dict[str, set[str]] = {}
    taken: dict[str, str] = {}  # id → source, for the documents read in this run
    pending: list[PreparedDocument] = []
    bar = tqdm(desc="ingest", unit="doc", disable=not progress or None, dynamic_ncols=True)

    def skip(source: str, reason: str) -> None:
        report.skipped.append({"source": source, "reason": reason})
        log.warning("skipped %s: %s", source, reason)
        bar.update(1)

    def flush_batch() -> None:
        if pending:
            _write_batch(pending, store, report, bar)
            pending.clear()

    with store.write_lock():
        store.bind_embedder(embedder.name, embedder.dim)
        try:
            for item in _timed(iter(items), report.seconds):
                if on_item is not None:
                    on_item(item.source)
                if isinstance(item, Skipped):
                    if item.missing:
                        report.missing.append(item.source)
                    if item.doc_id is not None and item.root is not None:
                        # A file that is there but unreadable now keeps its indexed version, even with --sync: all
                        # of it (a spreadsheet read in parts that fails half-way keeps the parts it did not reach).
                        seen = seen_by_root.setdefault(item.root, set())
                        seen.add(item.doc_id)
                        if sync:
                            seen.update(store.doc_ids_from_source(item.source))
                    skip(item.source, item.reason)
                    continue
                where = item.source if item.whole_file else f"{item.source} ({item.doc_id})"
                seen_by_root.setdefault(item.root, set()).add(item.doc_id)
                if item.file_parts:
                    # The last part of a file read in parts: the file's documents that are none of its parts now (an
                    # earlier version's last parts, the file as one document) are gone, with or without --sync.
                    stale = sorted(set(store.doc_ids_from_source(item.source)) - set(item.file_parts))
                    if stale:
                        flush_batch()  # the new parts first, so that a search never misses the file's rows
                        store.remove_documents(stale)
                        report.removed.extend(stale)
                try:
                    prepared = _prepare(item, store, settings, taken, replace, report.seconds)
                except Exception as exc:  # one document that breaks cleaning or chunking must not stop the run
                    log.exception("preparing %s failed", where)
                    prepared = NotWritten(f"could not be processed ({type(exc).__name__}: {exc})")
                if prepared is UNCHANGED:
                    report.unchanged += 1
                    bar.update(1)
                    continue
                if isinstance(prepared, NotWritten):
                    if prepared.conflict:
                        report.conflicts.append(item.doc_id)
                    skip(where, prepared.reason)
                    continue
                pending.append(prepared)
                if len(pending) >= batch_documents or sum(len(p.record.text) for p in pending) >= BATCH_CHARS:
                    flush_batch()
            flush_batch()
            if sync:
                for root, seen in seen_by_root.items():
                    gone = sorted(set(store.doc_ids_under(root)) - seen)
                    if gone:
                        store.remove_documents(gone)
                        report.removed.extend(gone)
                        log.info("removed %d documents no longer under %s", len(gone), root)
            report.searchable_s = time.perf_counter() - started
            bar.close()
            if embed:
                t0 = time.perf_counter()
                report.chunks_embedded += embed_pending(store, embedder, settings, cache=cache, progress=progress)
                report.seconds["embed"] += time.perf_counter() - t0
            report.vectors_pending = store.pending_count()
        finally:
            bar.close()
            t2 = time.perf_counter()
            store.flush()
            report.seconds["store"] += time.perf_counter() - t2
    report.seconds["total"] = time.perf_counter() - started
    return report


def embed_pending(store: IndexStore, embedder: Embedder, settings: Settings, *, cache: EmbeddingCache | None = None,
                  progress: bool = True, batch_chunks: int = 256) -> int:
    """Compute the vectors of every chunk still without one (ingested BM25-first), ``batch_chunks`` per transaction,
    so a killed run keeps what it finished; returns how many texts were embedded (the rest came from ``cache``).

    A batch the embedder fails on is tried chunk by chunk; a chunk that still fails keeps BM25 only, with a
    warning, and is tried again by the next run.
    """
    embedded = 0
    with store.write_lock():
        store.bind_embedder(embedder.name, embedder.dim)
        total = store.pending_count()
        failed: set[int] = set()
        with tqdm(total=total, desc="vectors", unit="chunk", disable=not progress or not total or None,
                  dynamic_ncols=True) as bar:
            while batch := [c for c in store.pending_chunks(batch_chunks + len(failed)) if c[0] not in failed]:
                done = _embed_chunks(batch[:batch_chunks], store, embedder, settings, cache, failed)
                embedded += done
                if getattr(embedder, "engine", None):  # which engine the chunks/s figure is for
                    bar.set_postfix_str(embedder.engine, refresh=False)
                bar.update(min(batch_chunks, len(batch)))
        store.flush()
    if failed:
        log.warning("%d chunk(s) could not be embedded and are found by BM25 only; `rag embed` tries again", len(failed))
    return embedded


def _embed_chunks(batch: list[tuple[int, str]], store: IndexStore, embedder: Embedder, settings: Settings,
                  cache: EmbeddingCache | None, failed: set[int]) -> int:
    """Embed and store one batch of pending chunks; on an embedder error, chunk by chunk (failures go to
    ``failed``). Returns how many texts were embedded."""
    try:
        vectors, embedded = embed_with_cache(embedder, cache, [t for _, t in batch], settings.embed_batch_size)
    except (sqlite3.Error, OSError, StoreError):
        raise
    except Exception as exc:
        if len(batch) == 1:
            log.warning("could not embed chunk %d: %s", batch[0][0], exc)
            failed.add(batch[0][0])
            return 0
        return sum(_embed_chunks([item], store, embedder, settings, cache, failed) for item in batch)
    store.set_vectors([i for i, _ in batch], vectors)
    return embedded


@dataclass
class RechunkReport:
    """What :func:`rechunk_document` did."""

    doc_id: str
    chunk_size: int
    chunk_overlap: int
    chunks_before: int
    chunks_after: int
    chunks_embedded: int  # the others' vectors came from the embedding cache
    exclusions_dropped: int  # old chunks that were excluded from search; the new chunks all start included

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def rechunk_document(store: IndexStore, doc_id: str, embedder: Embedder, settings: Settings, chunk_size: int,
                     chunk_overlap: int, cache: EmbeddingCache | None = None) -> RechunkReport:
    """Cut one stored document again with ``chunk_size`` and ``chunk_overlap``, from its stored cleaned text.

    Its chunks, their BM25 terms and vectors are replaced in one transaction under the write lock (searches see
    the old chunks or the new, never neither), and the vector backend is brought up to date before the lock is
    released. The document keeps its id, source, root, title, date, publisher, metadata and text; its
    ``ingested_at`` becomes now. Chunk ids are never reused, so the new chunks have new ids, and **exclusions of
    the old chunks are dropped**: every new chunk is searchable (the report counts what was dropped).

    The settings are recorded with the document: ``rag ingest`` (``--sync`` included) of its unchanged file leaves
    it as it is, a changed file from the same source is cut with these settings too, and only a replacement from
    another source (``--replace``) or :meth:`IndexStore.remove_documents` forgets them. They are recorded even when
    they equal ``settings``', so a later change of the index-wide settings does not re-cut this document.

    ``settings`` give the embedding batch size; ``cache`` saves embedding unchanged chunk texts again. Raises
    :class:`ValueError` for unusable chunk settings, :class:`StoreError` for a document not in the index (and
    the store's errors: read-only, busy, another embedder).
    """
    check_chunk_settings(chunk_size, chunk_overlap)
    with store.write_lock():
        store.bind_embedder(embedder.name, embedder.dim)
        doc = store.document(doc_id)
        before = store.chunks_of(doc_id)
        if doc is None or before is None:
            raise StoreError(f"no document {doc_id!r} in {store.directory}")
        record = DocumentRecord(
            doc_id=doc["doc_id"], root=doc["root"], source=doc["source"], text=doc["text"],
            content_hash=content_hash(doc["text"], doc["title"], chunk_size, chunk_overlap), title=doc["title"],
            date=doc["date"], publisher=doc["publisher"], metadata=doc["metadata"], chunk_size=chunk_size,
            chunk_overlap=chunk_overlap)
        chunks = make_chunks(record, settings.replace(chunk_size=chunk_size, chunk_overlap=chunk_overlap))
        vectors, embedded = embed_with_cache(embedder, cache, [c.index_text for c in chunks], settings.embed_batch_size)
        store.write_documents([record], [chunks], [vectors])
        store.flush()
    report = RechunkReport(doc_id, chunk_size, chunk_overlap, len(before), len(chunks), embedded,
                           sum(c.excluded for c in before))
    log.info("re-chunked %s: %d → %d chunks (size %d, overlap %d)", doc_id, report.chunks_before, report.chunks_after,
             chunk_size, chunk_overlap)
    return report


@dataclass(frozen=True)
class NotWritten:
    """Why a document read in this run is not written."""

    reason: str
    conflict: bool = False  # its id belongs to another source


UNCHANGED = NotWritten("unchanged since it was indexed")


def _timed(items: Iterator[RawDocument | Skipped], seconds: dict[str, float]) -> Iterator[RawDocument | Skipped]:
    """``items``, adding the time spent reading each (files are read as they are asked for) to ``load_clean``."""
    while True:
        t0 = time.perf_counter()
        item = next(items, None)
        seconds["load_clean"] += time.perf_counter() - t0
        if item is None:
            return
        yield item


def _prepare(item: RawDocument, store: IndexStore, settings: Settings, taken: dict[str, str], replace: bool,
             seconds: dict[str, float]) -> PreparedDocument | NotWritten:
    """The document cleaned and chunked, ready for its vectors; or why it is not written.

    A document given chunk settings of its own (:func:`rechunk_document`) keeps them while it comes from the same
    source, so its unchanged file stays unchanged and a changed one is cut the same way; a replacement from
    another source (``replace``) is cut with ``settings``.
    """
    stored = store.origins([item.doc_id]).get(item.doc_id)
    own = stored.chunking if stored is not None and stored.source == item.source else None
    if own is not None:
        settings = settings.replace(chunk_size=own[0], chunk_overlap=own[1])
    t0 = time.perf_counter()
    record = prepare_document(item, settings)
    seconds["load_clean"] += time.perf_counter() - t0
    if record is None:
        return NotWritten("no text left after cleaning")
    if record.doc_id in taken:
        return NotWritten(f"the id {record.doc_id!r} was already read from {taken[record.doc_id]} in this run; "
                          "this one is not used", conflict=True)
    taken[record.doc_id] = record.source
    if own is not None:
        record.chunk_size, record.chunk_overlap = own
    if stored is not None and stored.source != record.source and not replace:
        return NotWritten(f"the id {record.doc_id!r} already belongs to {stored.source}; not replaced (ask for "
                          "--replace to overwrite it, or ingest the file under another name)", conflict=True)
    if stored is not None and stored.content_hash == record.content_hash and stored.source == record.source:
        return UNCHANGED
    t1 = time.perf_counter()
    chunks = make_chunks(record, settings)
    seconds["chunk"] += time.perf_counter() - t1
    # One file is one document: ids it was indexed under before (an older release named single files by their
    # bare name) give way to this one.
    renamed = [d for d in store.doc_ids_from_source(record.source) if d != record.doc_id] if item.whole_file else []
    return PreparedDocument(record, chunks, stored is None, renamed)


def _write_batch(batch: list[PreparedDocument], store: IndexStore, report: IngestReport, bar: tqdm) -> None:
    """Store a batch in one transaction (its vectors to come); when that fails for a reason other than the index
    or the disk, each document is tried alone so that one bad document costs only itself."""
    try:
        _write_documents(batch, store, report)
    except (sqlite3.Error, OSError, StoreError):
        raise
    except Exception as exc:
        if len(batch) == 1:
            where = batch[0].record.source
            report.skipped.append({"source": where, "reason": f"could not be indexed ({type(exc).__name__}: {exc})"})
            log.warning("could not index %s: %s", where, exc)
        else:
            for prepared in batch:
                _write_batch([prepared], store, report, bar)
            return
    bar.update(len(batch))


def _write_documents(batch: list[PreparedDocument], store: IndexStore, report: IngestReport) -> None:
    t1 = time.perf_counter()
    replaced = [old for p in batch for old in p.replaces]
    store.write_documents([p.record for p in batch], [p.chunks for p in batch], [None] * len(batch),
                          also_remove=replaced)
    report.seconds["store"] += time.perf_counter() - t1
    report.chunks_written += sum(len(p.chunks) for p in batch)
    for p in batch:
        (report.added if p.is_new else report.updated).append(p.record.doc_id)
        report.renamed.update(dict.fromkeys(p.replaces, p.record.doc_id))

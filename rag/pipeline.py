"""The pipeline over one index, and the one place it is put together: the library's Python API.

:meth:`Pipeline.open` builds an index's store, embedder, retriever, answerer and summariser from
:class:`~rag.config.Settings` (the composition root); the pipeline's methods are everything done with an index::

    from rag import Pipeline, Settings

    with Pipeline.open(Settings(index_dir="index", generator="extractive"), create=True) as pipeline:
        pipeline.ingest(["data/sample"])
        pipeline.search("拉萨召开的会议").hits[0].doc_id
        answer = pipeline.ask("精河縣婦女兒童工作會議由誰主持？")      # answer.answer, answer.sources
        pipeline.summarize(answer.sources[0].doc_id).summary

Every front end is a thin user of it: the ``rag`` command (:mod:`rag.cli`), and through
:class:`rag.app.service.RagService` (one pipeline per library, rights, the audit log) the web page and its HTTP API
(:mod:`rag.web`, :mod:`rag.app.api`); ``bench/`` and ``eval/`` open pipelines too. A question from the page::

    rag.web  →  RagService.ask_stream (rights, library)  →  Pipeline.answerer  →  Retriever.search_many
    →  Answerer.extract (sentences; the answer span: rules or a trained reader)  →  generator (llama.cpp …)
    →  grounding guard  →  Answer
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .answering.answer import Answer, Answerer
from .answering.generate import Generator, load_generator
from .answering.reader import Reader, load_reader
from .config import Settings
from .evaluation.evaluate import GoldItem, evaluate_qa, evaluate_retrieval, evaluate_summaries, load_gold
from .index.embeddings import Embedder, EmbeddingCache, LazyEmbedder, SharedEmbedder, embedder_for_index
from .index.records import CheckReport, ChunkView
from .index.store import IndexStore
from .ingestion.ingest import (
    FileReader,
    IngestReport,
    RechunkReport,
    embed_pending,
    ingest,
    ingest_documents,
    read_documents,
    rechunk_document,
)
from .ingestion.reading import NamedFile, RawDocument, Skipped
from .retrieval.rerank import load_reranker
from .retrieval.retrieve import Retriever, SearchResult
from .summaries.summarize import Summarizer, Summary, summarize_batch


class _Load:
    """Marker: load the model the settings name (rather than share one, or use none)."""

    def __repr__(self) -> str:
        return "LOAD"


LOAD: Any = _Load()


@dataclass
class Models:
    """The models a process loads once and every pipeline it opens shares (a service's libraries): the chat model,
    the span reader, and the embedders by the identity each index records (or one ``embedder`` for all)."""

    generator: Generator | None = None
    reader: Reader | None = None
    embedder: Embedder | None = None
    embedders: dict[Any, Embedder] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: Settings, *, generator: Generator | None = LOAD, reader: Reader | None = LOAD,
             embedder: Embedder | None = None) -> Models:
        """The models ``settings`` name (``LOAD``), or those given (``None``: none)."""
        return cls(load_generator(settings) if generator is LOAD else generator,
                   load_reader(settings) if reader is LOAD else reader, embedder)


@dataclass
class Removal:
    """What :meth:`Pipeline.remove` did: each id asked for that was found, with the documents removed under it (a
    spreadsheet read in parts: all of them), and the ids that were not there."""

    removed: dict[str, list[str]]
    not_found: list[str]

    @property
    def documents(self) -> list[str]:
        """Every document removed, by id."""
        return sorted({doc for parts in self.removed.values() for doc in parts})


@dataclass
class Pipeline:
    """An open index and everything that reads it: retrieval, answers, summaries."""

    settings: Settings
    store: IndexStore
    embedder: Embedder
    retriever: Retriever
    answerer: Answerer
    summarizer: Summarizer
    generator: Generator | None

    @classmethod
    def open(cls, settings: Settings, *, index_dir: str | Path | None = None, create: bool = False,
             generator: Generator | None = LOAD, reader: Reader | None = LOAD, reranker: Any = LOAD,
             embedder: Embedder | None = None, embedders: dict[Any, Embedder] | None = None) -> Pipeline:
        """The pipeline over ``index_dir`` (default ``settings.index_dir``; ``create``: make the index when there is
        none, else :class:`~rag.index.errors.StoreError` says so).

        ``generator``: ``LOAD`` loads the one the settings name (``generator = "auto"``: the best offline model
        installed), ``None`` answers extractively, or pass one already loaded (a server shares one model among
        its libraries). Summaries use it only when ``settings.summarize_with_model`` is set. ``reader`` and
        ``reranker``: the same for the span finder (``settings.reader_model``; ``None``: the hand-written rules)
        and the second stage of retrieval (``settings.reranker_model``). The embedder is the one the index was
        built with (:func:`rag.index.embeddings.embedder_for_index`), or for a new index the one the settings
        name, loaded when a text is first embedded (:meth:`load_models` loads it now); ``embedder`` replaces it (``rag ingest``'s own, which an index built with another refuses, or a
        cluster's workers), and ``embedders`` shares loaded ones among pipelines (taken from it, or added to it).
        """
        store = IndexStore.open(index_dir or settings.index_dir, create=create, settings=settings)
        try:
            if embedder is None:  # the index's own, loaded when a text is first embedded
                recorded = store.embedder
                embedder = LazyEmbedder(recorded, lambda: embedder_for_index(recorded, settings) if embedders is None
                                        else _shared_embedder(recorded, settings, embedders))
            reranker = load_reranker(settings) if reranker is LOAD else reranker
            generator = load_generator(settings) if generator is LOAD else generator
            reader = load_reader(settings) if reader is LOAD else reader
        except BaseException:
            store.close()
            raise
        retriever = Retriever(store, embedder, settings, reranker)
        summarizer = Summarizer(settings, generator if settings.summarize_with_model else None)
        return cls(settings, store, embedder, retriever, Answerer(retriever, settings, generator, reader), summarizer,
                   generator)

    def load_models(self) -> None:
        """Load now what is otherwise loaded at its first use (the embedder): a server should find a model it
        cannot load when it starts, not on a user's first question."""
        if isinstance(self.embedder, LazyEmbedder):
            self.embedder.loaded()

    def close(self) -> None:
        """Save and close the index (the models are left to whoever shares them)."""
        self.store.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- documents ------------------------------------------------------------------------------------------------
    def ingest(self, paths: Sequence[str | Path | NamedFile], *, sync: bool = False, replace: bool = False,
               embed: bool = True, progress: bool = False, on_item: Callable[[str], None] | None = None,
               read_files: FileReader | None = None, cache: EmbeddingCache | None = None) -> IngestReport:
        """Add or update files and folders (:func:`rag.ingestion.ingest.ingest`: unchanged documents are skipped,
        ``sync`` also removes those whose files left the folders given, ``replace`` overwrites a document whose id
        another source holds). ``read_files`` reads the files elsewhere (a cluster's workers); ``cache``: an
        embedding cache to share (default: the settings' ``cache_dir``, opened for this call)."""
        with self._cache(cache) as shared:
            return ingest(paths, self.store, self.embedder, self.settings, cache=shared, sync=sync, replace=replace,
                          progress=progress, on_item=on_item, read_files=read_files, embed=embed)

    def read(self, paths: Sequence[str | Path | NamedFile],
             read_files: FileReader | None = None) -> Iterator[RawDocument | Skipped]:
        """What ``paths`` hold, document by document, read with this index's limits (nothing is written): give it
        to :meth:`ingest_read` once read, so that parsing holds no lock."""
        return read_documents(paths, self.settings, read_files=read_files)

    def ingest_read(self, documents: Iterable[RawDocument | Skipped], *, replace: bool = False,
                    on_item: Callable[[str], None] | None = None,
                    cache: EmbeddingCache | None = None) -> IngestReport:
        """Write documents :meth:`read` gave, as :meth:`ingest` does."""
        with self._cache(cache) as shared:
            return ingest_documents(documents, self.store, self.embedder, self.settings, cache=shared,
                                    replace=replace, progress=False, on_item=on_item)

    def embed_pending(self, *, progress: bool = False, cache: EmbeddingCache | None = None) -> dict[str, Any]:
        """Compute the vectors of the chunks still without one (``rag embed``): how many waited, were embedded
        (the rest came from the cache), still wait, and the seconds it took."""
        pending = self.store.pending_count()
        started = time.perf_counter()
        with self._cache(cache) as shared:
            embedded = embed_pending(self.store, self.embedder, self.settings, cache=shared, progress=progress)
        return {"pending_before": pending, "embedded": embedded, "pending": self.store.pending_count(),
                "seconds": round(time.perf_counter() - started, 1)}

    def remove(self, doc_ids: Sequence[str]) -> Removal:
        """Remove documents by id (a spreadsheet read in parts: all of them), in one transaction."""
        with self.store.write_lock():
            found = {doc_id: self.store.file_documents(doc_id) for doc_id in doc_ids}
            removed = {doc_id: parts for doc_id, parts in found.items() if parts}
            self.store.remove_documents(sorted({doc for parts in removed.values() for doc in parts}))
            self.store.flush()  # while holding the write lock
        return Removal(removed, [doc_id for doc_id, parts in found.items() if not parts])

    def rechunk(self, doc_id: str, chunk_size: int, chunk_overlap: int,
                cache: EmbeddingCache | None = None) -> RechunkReport:
        """Cut one document again with other chunk settings (:func:`rag.ingestion.ingest.rechunk_document`)."""
        with self._cache(cache) as shared:
            return rechunk_document(self.store, doc_id, self.embedder, self.settings, chunk_size, chunk_overlap,
                                    cache=shared)

    def set_excluded(self, chunk_ids: Sequence[int | str], excluded: bool) -> int:
        """Exclude chunks from search (or include them again); how many changed."""
        return self.store.set_excluded(chunk_ids, excluded)

    def copy_from(self, source: str | Path, *, progress: bool = False) -> dict[str, int]:
        """Copy every document of the SQLite index folder ``source`` into this index, vectors included (``rag
        copy``: how a library moves into PostgreSQL); counts of documents copied and already here."""
        settings = self.settings.replace(index_store="sqlite", database_schema="")
        with IndexStore.open(source, settings=settings, read_only=True) as found:
            return self.store.copy_from(found, progress=progress)

    def document(self, doc_id: str) -> dict[str, Any] | None:
        """One document's cleaned text and fields, or ``None``."""
        return self.store.document(doc_id)

    def documents(self) -> list[dict[str, Any]]:
        """Every document with its chunk count and length, by id."""
        return self.store.list_documents()

    def chunks(self, doc_id: str) -> list[ChunkView] | None:
        """A document's chunks as indexed (offsets into its cleaned text, excluded or not); ``None`` when there is
        no such document."""
        return self.store.chunks_of(doc_id)

    def stats(self) -> dict[str, Any]:
        """Counts and sizes (``rag status``)."""
        return self.store.stats()

    def check(self) -> CheckReport:
        """Everything ``rag check`` looks at."""
        return self.store.check()

    def backup(self, destination: str | Path) -> dict[str, Any]:
        """A consistent copy of the index in the new folder ``destination``, an index of its own."""
        return self.store.backup(destination)

    # -- questions ------------------------------------------------------------------------------------------------
    def search(self, query: str, k: int | None = None, retriever: str | None = None) -> SearchResult:
        """The passages that best match ``query`` (``retriever``: hybrid, dense or bm25)."""
        return self.retriever.search(query, k, retriever)

    def search_many(self, queries: Sequence[str], k: int | None = None,
                    retriever: str | None = None) -> list[SearchResult]:
        """:meth:`search` for several queries at once, in order."""
        return self.retriever.search_many(queries, k, retriever)

    def ask(self, question: str) -> Answer:
        """The checked answer with its sources, or an abstention."""
        return self.answerer.ask(question)

    def ask_stream(self, question: str) -> Iterator[str | Answer]:
        """The model's answer as it is written (text pieces), then the checked :class:`Answer`."""
        return self.answerer.ask_stream(question)

    def ask_many(self, questions: Sequence[str]) -> list[Answer]:
        """Answers to several questions, in order (retrieval batched)."""
        return self.answerer.ask_many(questions)

    # -- summaries ------------------------------------------------------------------------------------------------
    def summarize(self, doc_id: str, length: str = "medium", script: str | None = None) -> Summary:
        """The summary of document ``doc_id`` (``length``: short, medium or long; ``script``: simplified or
        traditional, default as written); :class:`KeyError` when there is no such document."""
        doc = self.store.document(doc_id)
        if doc is None:
            raise KeyError(doc_id)
        return self.summarizer.summarize(doc["text"], doc["doc_id"], doc["title"], length, script)

    def summarize_topic(self, topic: str, k: int = 8, bullets: int = 5, script: str | None = None) -> Summary:
        """Bullets about ``topic`` across the documents search finds, each citing its sources."""
        return self.summarizer.summarize_topic(topic, self.retriever, k=k, bullets=bullets, script=script)

    def summarize_all(self, out: str | Path, length: str = "medium", script: str | None = None,
                      progress: bool = False) -> dict[str, int]:
        """Every document's summary into the JSONL file ``out`` (and ``out`` with ``.md``), resumable."""
        items = list(self.store.iter_texts())
        return summarize_batch(iter(items), self.summarizer, Path(out), length, script, total=len(items),
                               progress=progress)

    # -- evaluation -----------------------------------------------------------------------------------------------
    def evaluate_qa(self, gold: str | Path | Sequence[GoldItem], *, fold_script: bool = False,
                    progress: bool = False) -> dict[str, Any]:
        """Answer every question of a gold file (or items of :func:`rag.evaluation.evaluate.load_gold`) and score
        the answers (:func:`rag.evaluation.evaluate.evaluate_qa`: the CMRC 2018 official F1/EM, abstention,
        citations, faithfulness, latency)."""
        items = load_gold(gold) if isinstance(gold, str | Path) else gold
        return evaluate_qa(items, self.answerer, progress=progress, fold_script=fold_script)

    def evaluate_retrieval(self, gold: str | Path | Sequence[GoldItem],
                           modes: Sequence[str] = ("bm25", "dense", "hybrid"), depth: int = 30) -> dict[str, Any]:
        """Recall@k, MRR@10 and nDCG@10 of each retriever in ``modes`` against a gold file's ``doc_ids``."""
        items = load_gold(gold) if isinstance(gold, str | Path) else gold
        return evaluate_retrieval(items, self.retriever, modes, depth=depth)

    def evaluate_summaries(self, items: Sequence[dict[str, Any]], length: str = "medium") -> dict[str, Any]:
        """ROUGE, key-fact coverage, boilerplate and faithfulness of the summaries of ``items`` (``{"doc_id",
        "reference", "key_facts"}``), their documents read from this index."""
        documents = {item["doc_id"]: self.store.document(item["doc_id"]) for item in items}
        found = {doc_id: doc for doc_id, doc in documents.items() if doc is not None}
        return evaluate_summaries(items, found, self.summarizer, length)

    def _cache(self, cache: EmbeddingCache | None) -> contextlib.AbstractContextManager[EmbeddingCache]:
        """``cache`` as it is (its owner closes it), or this pipeline's embedder's cache in ``settings.cache_dir``,
        open for one call."""
        if cache is not None:
            return contextlib.nullcontext(cache)
        return contextlib.closing(EmbeddingCache(self.settings.cache_dir, self.embedder.name, self.embedder.dim))


def load_summarizer(settings: Settings) -> Summarizer:
    """A summariser without an index (files, folders, a cluster's workers): with the model the settings name when
    ``summarize_with_model`` is set, else extractive."""
    return Summarizer(settings, load_generator(settings) if settings.summarize_with_model else None)


def _shared_embedder(recorded: tuple[str, int] | None, settings: Settings, loaded: dict[Any, Embedder]) -> Embedder:
    """The embedder of an index that records ``recorded`` (``None``: a new index, the configured one)."""
    key = recorded or "configured"
    if key not in loaded:
        embedder = SharedEmbedder(embedder_for_index(recorded, settings))
        loaded[key] = loaded.setdefault((embedder.name, embedder.dim), embedder)
    return loaded[key]

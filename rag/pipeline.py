"""The composition root: the one place that builds the question-answering pipeline over an index.

Every front end (the ``rag`` command line, the web page and its HTTP API through :class:`rag.app.service.RagService`,
``bench/`` and ``eval/``) gets its index, embedder, retriever, answerer and summariser from :meth:`Pipeline.open`,
so a setting means the same thing everywhere. Reading a question from the page to its answer::

    demo.py / rag.app.api  →  RagService.ask (rights, library)  →  Pipeline.answerer  →  Retriever.search_many
    →  Answerer.extract (sentences; the answer span: rules or a trained reader)  →  generator (llama.cpp …)
    →  grounding guard  →  Answer
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .answering.answer import Answerer
from .answering.generate import Generator, load_generator
from .answering.reader import Reader, load_reader
from .config import Settings
from .index.embeddings import Embedder, SharedEmbedder, embedder_for_index
from .index.store import IndexStore
from .retrieval.rerank import load_reranker
from .retrieval.retrieve import Retriever
from .summaries.summarize import Summarizer


class _Load:
    """Marker: load the model the settings name (rather than share one, or use none)."""

    def __repr__(self) -> str:
        return "LOAD"


LOAD: Any = _Load()


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
    def open(cls, settings: Settings, *, index_dir: Path | None = None, create: bool = False,
             generator: Generator | None = LOAD, reader: Reader | None = LOAD,
             embedders: dict[Any, Embedder] | None = None,
             reranker: Any = LOAD) -> Pipeline:
        """The pipeline over ``index_dir`` (default ``settings.index_dir``).

        ``generator``: ``LOAD`` loads the one the settings name (``generator = "auto"``: the best offline model
        installed), ``None`` answers extractively, or pass one already loaded (a server shares one model among
        its libraries). Summaries use it only when ``settings.summarize_with_model`` is set. ``reader``: the same
        for the span finder (``settings.reader_model``; ``None``: the hand-written rules). ``embedders`` shares
        loaded embedders among pipelines: the index's own (:func:`rag.index.embeddings.embedder_for_index`) is taken
        from it, or loaded and added to it.
        """
        store = IndexStore.open(index_dir or settings.index_dir, create=create, settings=settings)
        try:
            embedder = (embedder_for_index(store.embedder, settings) if embedders is None
                        else _shared_embedder(store.embedder, settings, embedders))
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

    def close(self) -> None:
        """Save and close the index (the models are left to whoever shares them)."""
        self.store.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shared_embedder(recorded: tuple[str, int] | None, settings: Settings, loaded: dict[Any, Embedder]) -> Embedder:
    """The embedder of an index that records ``recorded`` (``None``: a new index, the configured one)."""
    key = recorded or "configured"
    if key not in loaded:
        embedder = SharedEmbedder(embedder_for_index(recorded, settings))
        loaded[key] = loaded.setdefault((embedder.name, embedder.dim), embedder)
    return loaded[key]

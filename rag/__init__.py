"""rag-zh: question answering and summarisation over Chinese documents.

The package is laid out by role; a question flows through them in this order:

- :mod:`rag.ingestion`: files (:mod:`~rag.ingestion.loaders`) → the article alone (:mod:`~rag.ingestion.cleaning`)
  → chunks with offsets (:mod:`~rag.ingestion.chunking`), written by :mod:`~rag.ingestion.ingest`;
- :mod:`rag.index`: the SQLite index (:mod:`~rag.index.store`), its vector search (:mod:`~rag.index.vectors`), BM25
  terms (:mod:`~rag.index.lexical`) and the embedders (:mod:`~rag.index.embeddings`);
- :mod:`rag.retrieval`: hybrid search (:mod:`~rag.retrieval.retrieve`) and the optional reranker;
- :mod:`rag.answering`: extractive spans, the chat models and their runtime, the grounding guard, follow-ups;
- :mod:`rag.summaries`: document and topic summaries;
- :mod:`rag.evaluation`: metrics, evaluation runs, answer feedback as gold drafts;
- :mod:`rag.app`: the service every front end calls (rights, libraries, audit), the HTTP API, uploads.

:mod:`rag.pipeline` builds the pipeline (the one composition root), :mod:`rag.config` holds the settings and
:mod:`rag.cli` is the ``rag`` command. The modules' earlier flat names (``rag.store``, ``rag.answer`` …) still
import: they name the same module objects.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

__version__ = "0.1.0"

# Where each module of the flat layout lives now.
_MOVED = {
    "loaders": "ingestion", "cleaning": "ingestion", "chunking": "ingestion", "ingest": "ingestion",
    "store": "index", "vectors": "index", "embeddings": "index", "lexical": "index",
    "retrieve": "retrieval", "rerank": "retrieval",
    "answer": "answering", "extractive": "answering", "generate": "answering", "llamacpp": "answering",
    "models": "answering", "conversation": "answering",
    "summarize": "summaries",
    "evaluate": "evaluation", "metrics": "evaluation", "feedback": "evaluation",
    "service": "app", "api": "app", "access": "app", "uploads": "app", "libraries": "app", "audit": "app",
}


class _FlatNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``rag.store`` as the module ``rag.index.store`` itself (not a copy), so code written against the
    flat layout, ``monkeypatch.setattr("rag.store.…")`` included, keeps working."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        package, _, name = fullname.partition(".")
        if package == __name__ and name in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        name = spec.name.partition(".")[2]
        return importlib.import_module(f"{__name__}.{_MOVED[name]}.{name}")

    def exec_module(self, module: ModuleType) -> None:
        pass  # the module it names has run already


sys.meta_path.insert(0, _FlatNames())

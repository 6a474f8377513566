"""rag-zh: question answering and summarisation over Chinese documents, offline.

The library's API is :class:`Pipeline`, over one index, with :class:`Settings` and the results it returns::

    from rag import Pipeline, Settings

    with Pipeline.open(Settings(index_dir="index"), create=True) as pipeline:
        pipeline.ingest(["data/sample"])                          # IngestReport
        pipeline.search("拉萨召开的会议")                          # SearchResult of Hit
        pipeline.ask("精河縣婦女兒童工作會議由誰主持？")             # Answer with its Source passages
        pipeline.summarize("002_bc44dab522e6d896.txt")            # Summary
        pipeline.evaluate_qa("eval/data/sample_qa.jsonl")         # the QA report (see load_gold)

The package is laid out by role; a question flows through them in this order:

- :mod:`rag.ingestion`: files (:mod:`~rag.ingestion.loaders`) → the article alone (:mod:`~rag.ingestion.cleaning`)
  → chunks with offsets (:mod:`~rag.ingestion.chunking`), written by :mod:`~rag.ingestion.ingest`;
- :mod:`rag.index`: the stores (:mod:`~rag.index.store`: SQLite or PostgreSQL), their vector search
  (:mod:`~rag.index.vectors`), BM25 terms (:mod:`~rag.index.lexical`) and the embedders
  (:mod:`~rag.index.embeddings`);
- :mod:`rag.retrieval`: hybrid search (:mod:`~rag.retrieval.retrieve`) and the optional reranker;
- :mod:`rag.answering`: extractive spans, the chat models and their runtime, the grounding guard, follow-ups;
- :mod:`rag.summaries`: document and topic summaries;
- :mod:`rag.evaluation`: metrics, evaluation runs, answer feedback as gold drafts;
- :mod:`rag.pipeline`: the pipeline above, put together in one place (the composition root);
- :mod:`rag.app`: the service every front end calls (libraries, rights, audit), the HTTP API, uploads;
- :mod:`rag.web`: the page and the server; :mod:`rag.cli`: the ``rag`` command.

:mod:`rag.config` holds the settings; :mod:`rag.prompts` the chat models' prompt templates. Each layer imports only
the layers below it (``[tool.importlinter]`` in ``pyproject.toml``, checked by ``make test``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The public API, by the module that defines each name. Imported on first use: `import rag.config`, or a model
# worker process running `python -m rag.answering.llm_worker`, does not load the whole pipeline.
_API = {
    "Pipeline": "rag.pipeline",
    "Removal": "rag.pipeline",
    "Settings": "rag.config",
    "load_settings": "rag.config",
    "IngestReport": "rag.ingestion.ingest",
    "SearchResult": "rag.retrieval.retrieve",
    "Hit": "rag.retrieval.retrieve",
    "Answer": "rag.answering.answer",
    "Source": "rag.answering.answer",
    "Summary": "rag.summaries.summarize",
    "SummarySource": "rag.summaries.summarize",
    "GoldItem": "rag.evaluation.evaluate",
    "load_gold": "rag.evaluation.evaluate",
    "evaluate_qa": "rag.evaluation.evaluate",
    "evaluate_retrieval": "rag.evaluation.evaluate",
    "evaluate_summaries": "rag.evaluation.evaluate",
    "write_report": "rag.evaluation.evaluate",
}
__all__ = [
    "Answer", "GoldItem", "Hit", "IngestReport", "Pipeline", "Removal", "SearchResult", "Settings", "Source", "Summary",
    "SummarySource", "evaluate_qa", "evaluate_retrieval", "evaluate_summaries", "load_gold", "load_settings",
    "write_report",
]

if TYPE_CHECKING:
    from .answering.answer import Answer, Source
    from .config import Settings, load_settings
    from .evaluation.evaluate import (
        GoldItem,
        evaluate_qa,
        evaluate_retrieval,
        evaluate_summaries,
        load_gold,
        write_report,
    )
    from .ingestion.ingest import IngestReport
    from .pipeline import Pipeline, Removal
    from .retrieval.retrieve import Hit, SearchResult
    from .summaries.summarize import Summary, SummarySource


def __getattr__(name: str) -> Any:
    """``rag.Pipeline`` and the rest of :data:`__all__`, imported from their modules when first asked for."""
    if name not in _API:
        raise AttributeError(f"module 'rag' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # asked for once: the next lookup finds it here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})

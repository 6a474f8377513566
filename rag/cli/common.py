"""What the commands share: errors shown as one line, who acts, the service and pipelines they go through, batch
files in and out, Ray workers, and the flags several commands take."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..answering.generate import GENERATORS
from ..answering.models import OFFLINE_MODELS
from ..app.access import User
from ..app.libraries import DEFAULT_LIBRARY
from ..app.service import RagService
from ..config import Settings
from ..distributed import LOCAL, RemoteEmbedder, WorkerPool
from ..index.embeddings import Embedder, EmbedderError, load_embedder
from ..index.errors import StoreError
from ..jsonl import DatasetError
from ..normalize import clean_text_field, has_unusable
from ..pipeline import Pipeline
from ..retrieval.rerank import RerankerError
from ..retrieval.retrieve import QueryError

log = logging.getLogger("rag")


class UsageError(Exception):
    """Bad command-line input; the message is shown to the user."""


def print_json(obj: Any) -> None:
    """``obj`` as indented JSON on stdout (Chinese as itself)."""
    print(json.dumps(obj, ensure_ascii=False, indent=2))


def me() -> User:
    """Who acts in the service from this command line: the account running it, with every right (it can read
    the index files anyway), named in the audit log as ``NAME@cli``."""
    return User(f"{getpass.getuser()}@cli", "admin")


def library_of(args: argparse.Namespace) -> str:
    """The library a command works on: ``--library NAME``, else the default one (``--index DIR`` or index_dir)."""
    return getattr(args, "library", None) or DEFAULT_LIBRARY


def open_service(settings: Settings, *, generator: Any = None, reader: Any = None, embedder: Embedder | None = None,
                 create: bool = False) -> RagService:
    """The service the page uses, for the person at this machine (:func:`me`): commands that change documents,
    answer, or manage the installation go through it, so the command line and the page cannot differ. No model
    unless asked for (``LOAD``); ``create``: make the index when there is none (``rag ingest``, ``rag copy``)."""
    return RagService(settings, generator=generator, reader=reader, embedder=embedder, create=create)


def open_pipeline(settings: Settings, *, generator: Any = None, reader: Any = None, reranker: Any = None,
                  embedder: Embedder | None = None) -> Pipeline:
    """The pipeline over the index, for what reads or looks after one index (search, status, checks, summaries,
    evaluation); no model unless asked for (``LOAD``)."""
    return Pipeline.open(settings, generator=generator, reader=reader, reranker=reranker, embedder=embedder)


def decode_argument(text: str) -> str:
    """A command-line argument as the user meant it: Python decodes argv as UTF-8 and keeps bytes that are not
    as lone surrogates; a terminal set to GBK/GB18030 sends exactly such bytes, so they are read as GB18030, and
    what nothing decodes is left for :func:`rag.normalize.clean_text_field` to replace."""
    if not has_unusable(text):
        return text
    raw = text.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("gb18030")
    except UnicodeDecodeError:
        return text


# -- batch files ------------------------------------------------------------------------------------------------
def read_questions(path: str) -> list[dict[str, str]]:
    """``{"id", "question"}`` items of a JSONL file; a line that is not one becomes ``{"id", "error"}`` (the
    batch answers the others)."""
    items: list[dict[str, str]] = []
    try:
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if raw.strip():
                    items.append(_question_line(raw, lineno))
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    return items


def _question_line(raw: bytes, lineno: int) -> dict[str, str]:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return {"id": str(lineno), "error": f"line {lineno} is not valid UTF-8"}
    except json.JSONDecodeError as exc:
        return {"id": str(lineno), "error": f"line {lineno} is not JSON ({exc.msg})"}
    if not isinstance(obj, dict):
        return {"id": str(lineno), "error": f"line {lineno} is not a JSON object"}
    item_id = clean_text_field(str(obj.get("id", lineno)))
    if not isinstance(obj.get("question"), str):
        return {"id": item_id, "error": f'line {lineno} needs a string "question" field'}
    return {"id": item_id, "question": obj["question"]}


def run_batch(items: list[dict[str, str]], out: str, handle: Callable[[list[dict[str, str]]], list[dict]],
              batch_size: int = 16) -> None:
    """Write ``handle``'s output for ``items`` in input order, one JSON line each, with a progress bar.

    An item that cannot be answered (a bad line, an empty question, a question the pipeline fails on) gets an
    ``{"id", "error"}`` line instead of stopping the batch.
    """
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    errors = 0
    with open(tmp, "w", encoding="utf-8") as fh, tqdm(total=len(items), desc="batch", unit="q") as bar:
        for i in range(0, len(items), batch_size):
            part = items[i : i + batch_size]
            good = [q for q in part if "error" not in q and q["question"].strip()]
            results = iter(_handle_each(handle, good))
            for q in part:
                if "error" in q:
                    line = q
                elif not q["question"].strip():
                    line = {"id": q["id"], "error": "the question is empty"}
                else:
                    line = next(results)
                errors += "error" in line
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            bar.update(len(part))
    tmp.replace(out_path)
    log.info("wrote %d lines to %s", len(items), out_path)
    if errors:
        log.warning("%d of %d lines could not be answered; their lines hold an \"error\"", errors, len(items))


def _handle_each(handle: Callable[[list[dict[str, str]]], list[dict]], items: list[dict[str, str]]) -> list[dict]:
    """``handle(items)``; when it fails, each item alone, so one bad question costs only its own line."""
    if not items:
        return []
    try:
        return handle(items)
    except (KeyboardInterrupt, StoreError, sqlite3.DatabaseError, EmbedderError, RerankerError):
        raise  # the index or a model, not the question: every other line would fail the same way
    except Exception as exc:
        if len(items) == 1:
            reason = str(exc) if isinstance(exc, QueryError) else f"could not be answered ({type(exc).__name__})"
            log.warning("question %s: %s", items[0]["id"], exc)
            return [{"id": items[0]["id"], "error": reason}]
        return [line for item in items for line in _handle_each(handle, [item])]


# -- Ray ----------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def worker_pool(args: argparse.Namespace, settings: Settings) -> Iterator[WorkerPool | None]:
    """The Ray workers ``--ray [ADDRESS]`` asks for, built from ``settings`` and stopped afterwards; ``None``
    without ``--ray``: the work is done in this process."""
    address = getattr(args, "ray", None)
    if address is None:
        yield None
        return
    if address not in (LOCAL, "auto") and ":" not in address:
        raise UsageError(f"--ray takes auto, HOST:PORT or ray://HOST:PORT, not {address!r} (give --ray after the "
                         "paths, or write --ray=ADDRESS)")
    with WorkerPool(settings, address) as pool:
        yield pool


def passage_embedder(pool: WorkerPool | None, settings: Settings) -> tuple[Embedder, Settings]:
    """``(embedder, settings)`` for the passages ``rag ingest`` and ``rag embed`` write: the embedder the command
    line or config names (an index built with another refuses it, rather than being extended with a model the
    user did not name), or the pool's workers, each call of the embedding loop then handing every worker several
    batches."""
    if pool is None:
        return load_embedder(settings), settings
    embedder = RemoteEmbedder(pool, settings.embed_batch_size)
    return embedder, settings.replace(embed_batch_size=embedder.texts_per_call)


# -- flags several commands take ------------------------------------------------------------------------------------
def common_flags() -> argparse.ArgumentParser:
    """The parent parser of every command that works on an index or library."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--index", metavar="DIR", help="index folder (default: index/ or $RAG_INDEX_DIR)")
    common.add_argument("--library", metavar="NAME", help="a library of this installation (see `rag library list`; "
                        "default: the index folder, called default)")
    common.add_argument("--config", metavar="FILE", help="TOML config file (default: ./rag.toml or $RAG_CONFIG)")
    common.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    return common


def generator_flags(p: argparse.ArgumentParser) -> None:
    """--generator and --generator-model."""
    p.add_argument("--generator", choices=["auto", "extractive", *GENERATORS],
                   help="answer/summary generator (default from config: auto = the best offline model installed, "
                   "else extractive)")
    p.add_argument("--generator-model", metavar="NAME_OR_PATH",
                   help=f"an offline model ({', '.join(OFFLINE_MODELS)}), a .gguf file, a hub name or a directory")


def reader_flag(p: argparse.ArgumentParser) -> None:
    """--reader."""
    p.add_argument("--reader", metavar="none|builtin|DIR",
                   help="what finds answer spans: none = the hand-written rules (default), builtin = the reader "
                   "trained by train/train_reader.py, or a reader directory (ONNX, or a transformers "
                   "question-answering model)")


def ray_flag(p: argparse.ArgumentParser, work: str) -> None:
    """--ray [ADDRESS]."""
    p.add_argument("--ray", nargs="?", const=LOCAL, metavar="ADDRESS",
                   help=f"spread {work} over the workers of a Ray cluster (pip install 'rag-zh[ray]'), one per "
                   "CPU, this process writing the results: no ADDRESS starts a Ray of this machine's cores; auto, "
                   "HOST:PORT or ray://HOST:PORT joins a running one (files, index and cache folder at the same "
                   "paths on every node)")


def dataset_flags(p: argparse.ArgumentParser, what: str) -> None:
    """--dataset and --out of an evaluation."""
    p.add_argument("--dataset", required=True, metavar="FILE", help=what)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.json, report.md and plots")


def wants_summary_model(args: argparse.Namespace, settings: Settings) -> bool:
    """Whether a model writes the summaries: --generator or --generator-model names one, or summarize_with_model
    is set (the answers' model); else they are extracted."""
    asked = getattr(args, "generator", None) is not None or getattr(args, "generator_model", None) is not None
    return asked or settings.summarize_with_model




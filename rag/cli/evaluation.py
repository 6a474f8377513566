"""``rag eval``: retrieval, answers and summaries scored against gold files, and two runs compared."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..config import Settings
from ..distributed import RemoteAnswerer
from ..evaluation.evaluate import (
    compare_reports,
    evaluate_qa,
    export_official,
    load_gold,
    plot_qa,
    plot_recall_curves,
    plot_summary,
    qa_markdown,
    retrieval_markdown,
    summary_markdown,
    write_report,
)
from ..jsonl import DatasetError, read_jsonl
from ..pipeline import LOAD
from ..retrieval.retrieve import RETRIEVERS
from .common import (
    UsageError,
    dataset_flags,
    generator_flags,
    open_pipeline,
    ray_flag,
    reader_flag,
    wants_summary_model,
    worker_pool,
)


def cmd_eval_retrieval(args: argparse.Namespace, settings: Settings) -> int:
    items = load_gold(args.dataset, args.limit)
    modes = [m.strip() for m in args.retrievers.split(",") if m.strip()]
    for mode in modes:
        if mode not in RETRIEVERS:
            raise UsageError(f"unknown retriever {mode!r} in --retrievers")
    with open_pipeline(settings, reranker=LOAD) as pipeline:
        report = pipeline.evaluate_retrieval(items, modes, depth=args.depth)
    _publish(args, report, *write_report(report, Path(args.out), retrieval_markdown,
                                         {"recall_at_k": plot_recall_curves}, **_context(args, settings)))
    return 0


def cmd_eval_qa(args: argparse.Namespace, settings: Settings) -> int:
    items = load_gold(args.dataset, args.limit, args.sample, args.seed)
    with worker_pool(args, settings) as pool:
        if pool is None:
            with open_pipeline(settings, generator=LOAD, reader=LOAD, reranker=LOAD) as pipeline:
                report = pipeline.evaluate_qa(items, fold_script=args.fold_script, progress=True)
            generator = pipeline.generator.name if pipeline.generator else "extractive"
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
    items = [obj for _, obj in read_jsonl(args.dataset)]
    if any("doc_id" not in obj or "reference" not in obj for obj in items):
        raise DatasetError(f'{args.dataset}: every line needs "doc_id" and "reference"')
    settings = settings.replace(summarize_with_model=wants_summary_model(args, settings))
    with open_pipeline(settings, generator=LOAD if settings.summarize_with_model else None) as pipeline:
        report = pipeline.evaluate_summaries(items, args.length)
    _publish(args, report, *write_report(report, Path(args.out), summary_markdown, plot_summary,
                                         **_context(args, settings)))
    return 0


def cmd_eval_compare(args: argparse.Namespace, settings: Settings) -> int:
    text, data = compare_reports(Path(args.run_a), Path(args.run_b))
    print(json.dumps(data, ensure_ascii=False, indent=2) if args.json else text)
    return 0


def _context(args: argparse.Namespace, settings: Settings) -> dict[str, str]:
    return {"dataset": str(args.dataset), "index": str(settings.index_dir)}


def _publish(args: argparse.Namespace, report: dict[str, Any], markdown: str, paths: list[Path]) -> None:
    """Print an evaluation: its Markdown, or with ``--json`` the files written and the metrics."""
    print(markdown if not args.json else json.dumps({"out": [str(p) for p in paths], **report["modes"]},
                                                     ensure_ascii=False, indent=2))


# -- parsers ----------------------------------------------------------------------------------------------------------
def add_eval(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
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

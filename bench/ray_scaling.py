"""Batch work on Ray: 1 worker against 2 (or any counts), for ``rag ingest`` and ``rag summarize --batch``.

    python bench/ray_scaling.py --out runs/ray-scaling [--docs 200] [--workers 1,2] [--summary-docs 200]
                                [--summary-generator llamacpp --summary-docs 8]

The first ``--docs`` documents of CRUD (``../shared/bench/crud/docs.jsonl``) are ingested cold (each run with an
empty embedding cache, so every chunk is embedded) by the ``rag`` command itself: once without Ray (this process,
every core) and once per worker count on a local Ray cluster of that many CPUs (one worker per CPU). Then the
first ``--summary-docs`` of them are summarised in batch the same ways (extracted summaries by default; a model
with ``--summary-generator``). Each run is timed as the command (workers started, models loaded, work done,
workers stopped; the cluster itself is started before) and as the work alone (what the command reports). The
machine's load average is recorded with each run: other jobs on it slow the runs down unevenly.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reporting import write_report  # noqa: E402  (bench/, the script's own folder)

from rag.cli import main as rag  # noqa: E402
from rag.evaluation.evaluate import run_info  # noqa: E402

log = logging.getLogger("bench")


def first_documents(source: Path, count: int, path: Path) -> Path:
    """The first ``count`` lines of a JSONL corpus, written to ``path``."""
    with open(source, encoding="utf-8") as fh, open(path, "w", encoding="utf-8") as out:
        for _, line in zip(range(count), fh):
            out.write(line)
    return path


def timed(args: list[str], cache: Path) -> dict[str, Any]:
    """Run ``rag ARGS --json`` with the embedding cache in ``cache``: its JSON output, the command's seconds and
    the load average before it."""
    load = os.getloadavg()[0]
    out = io.StringIO()
    os.environ["RAG_CACHE_DIR"] = str(cache)
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        status = rag([*args, "--json"])
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"rag {' '.join(args)} exited with {status}")
    return {"command_s": round(seconds, 2), "load_before": round(load, 2), "output": json.loads(out.getvalue())}


def ingest_run(corpus: Path, work: Path, name: str, ray: bool) -> dict[str, Any]:
    """A cold ingest of ``corpus`` into a new index."""
    flags = ["--ray"] if ray else []
    result = timed(["ingest", str(corpus), "--index", str(work / f"index-{name}"), "--quiet", *flags],
                   work / f"cache-{name}")
    report = result.pop("output")
    seconds = report["seconds"]
    return {**result, "documents": len(report["added"]), "chunks": report["chunks_written"],
            "embedded": report["chunks_embedded"], "work_s": round(seconds["total"], 2),
            "embed_s": round(seconds["embed"], 2), "chunks_per_s": round(report["chunks_written"] / seconds["total"], 2)}


def summary_run(source: Path, work: Path, name: str, ray: bool, generator: str | None) -> dict[str, Any]:
    """A batch of summaries of ``source`` into a new file (nothing to reuse)."""
    flags = (["--ray"] if ray else []) + (["--generator", generator] if generator else [])
    result = timed(["summarize", "--batch", str(source), "--out", str(work / f"summaries-{name}.jsonl"), *flags],
                   work / "cache-summaries")
    counts = result.pop("output")
    if counts["failed"]:
        raise SystemExit(f"{counts['failed']} summaries failed in the run {name}")
    return {**result, "documents": counts["summarised"], "work_s": counts["seconds"],
            "docs_per_s": round(counts["summarised"] / counts["seconds"], 2)}


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import ray

    corpus = first_documents(args.bench_dir / "crud" / "docs.jsonl", args.docs, work / "docs.jsonl")
    summary_source = first_documents(corpus, args.summary_docs, work / "summary-docs.jsonl")
    runs: dict[str, list[dict[str, Any]]] = {"ingest": [], "summaries": []}
    plans: list[tuple[str, int | None]] = [("without Ray", None)] + [(f"Ray, {n} worker{'s' * (n > 1)}", n)
                                                                    for n in args.workers]
    for label, workers in plans:
        name = "here" if workers is None else f"ray{workers}"
        if workers is not None:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        try:
            log.info("%s: ingest", label)
            runs["ingest"].append({"run": label, "workers": workers, **ingest_run(corpus, work, name, workers is not None)})
            log.info("%s: summaries", label)
            runs["summaries"].append({"run": label, "workers": workers, **summary_run(
                summary_source, work, name, workers is not None, args.summary_generator)})
        finally:
            if workers is not None:
                ray.shutdown()
    for rows in runs.values():
        one = next((r for r in rows if r["workers"] == 1), None)
        for row in rows:
            row["speedup_vs_1_worker"] = round(one["work_s"] / row["work_s"], 2) if one else None
    return {"corpus": str(args.bench_dir / "crud" / "docs.jsonl"), "docs": args.docs,
            "summary_docs": args.summary_docs, "summary_generator": args.summary_generator or "extractive",
            "runs": runs, "run_info": run_info(), "ray": ray.__version__}


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    info = report["run_info"]
    lines = [f"# Batch work on Ray: 1 worker against 2 ({info['time']}, commit `{info['commit']}`, "
             f"{info['cpus']} CPUs, Ray {report['ray']})", "",
             f"Corpus: the first {report['docs']} documents of `{report['corpus']}`, ingested cold (empty embedding "
             "cache). *work s*: what the command reports for the work itself; *command s*: the whole command with "
             "the workers started, their models loaded and stopped (the local cluster is started before it). "
             "*load*: the machine's 1-minute load average before the run (other jobs share these cores).", "",
             "## `rag ingest` (reading, chunking, embedding, writing)", "",
             "| run | documents | chunks | work s | embed s | command s | chunks/s | speed-up vs 1 worker | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]["ingest"]:
        lines.append(f"| {r['run']} | {r['documents']} | {r['chunks']} | {r['work_s']} | {r['embed_s']} | "
                     f"{r['command_s']} | {r['chunks_per_s']} | {r['speedup_vs_1_worker'] or '—'} | "
                     f"{r['load_before']} |")
    lines += ["", f"## `rag summarize --batch` ({report['summary_docs']} documents, {report['summary_generator']})",
              "", "| run | documents | work s | command s | documents/s | speed-up vs 1 worker | load |",
              "|---|---|---|---|---|---|---|"]
    for r in report["runs"]["summaries"]:
        lines.append(f"| {r['run']} | {r['documents']} | {r['work_s']} | {r['command_s']} | {r['docs_per_s']} | "
                     f"{r['speedup_vs_1_worker'] or '—'} | {r['load_before']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="report folder (report.json, report.md)")
    parser.add_argument("--bench-dir", type=Path, default=ROOT.parent / "shared" / "bench")
    parser.add_argument("--docs", type=int, default=200, help="documents ingested (default 200)")
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated (default 1,2)")
    parser.add_argument("--summary-docs", type=int, default=200, help="documents summarised (default 200)")
    parser.add_argument("--summary-generator", help="a model for the summaries (e.g. llamacpp); default extracted")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    args.workers = [int(n) for n in args.workers.split(",")]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="ray-scaling-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        report = measure(args, work)
    print(write_report(args.out, report, markdown))


if __name__ == "__main__":
    main()

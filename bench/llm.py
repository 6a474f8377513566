"""Model speed, side by side in one run: llama.cpp (each offline model) against the transformers path.

    python bench/llm.py --out runs/bench-llm [--index DIR] [-n 30] [--models M1,M2,...] [--threads 1,2]
        [--summaries]

For each model: load time; over ``-n`` answerable sample questions, answered as the product answers them
(retrieval, the sentences chosen for the model, the model, the guard): answer latency p50/p95, time to the first
streamed piece (from the question, retrieval included) p50/p95, prompt and generation tokens per second as llama.cpp
reports them, and the prompt size; ``--threads`` repeats the llama.cpp runs with each thread count;
``--summaries``: the model summary of each sample document with its length and time. Models: the names of
rag.answering.models (``qwen2.5-coder-1.5b``, ``qwen2.5-coder-0.5b``) run by llama.cpp, or ``transformers:NAME`` for the same
file de-quantised and run by transformers (the path before llama.cpp; needs ``pip install -e '.[transformers]'``).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reporting import percentiles, write_report  # noqa: E402  (bench/, the script's own folder)

from rag.answering.answer import Answer  # noqa: E402
from rag.config import Settings, load_settings  # noqa: E402
from rag.evaluation.evaluate import load_gold, run_info  # noqa: E402
from rag.index.embeddings import EmbeddingCache, load_embedder  # noqa: E402
from rag.index.store import IndexStore  # noqa: E402
from rag.ingestion.ingest import ingest  # noqa: E402
from rag.pipeline import Pipeline  # noqa: E402
from rag.summaries.summarize import Summarizer  # noqa: E402

log = logging.getLogger("bench.llm")
SAMPLE = ROOT / "data" / "sample"
GOLD = ROOT / "eval" / "data" / "sample_qa.jsonl"


def sample_index(settings: Settings) -> Path:
    """The sample corpus indexed in a temporary folder (the embedding cache keeps this quick)."""
    index = Path(tempfile.mkdtemp(prefix="bench-llm-")) / "index"
    embedder = load_embedder(settings)
    cache = EmbeddingCache(settings.cache_dir, embedder.name, embedder.dim)
    with IndexStore.open(index, create=True, settings=settings) as store:
        ingest([SAMPLE], store, embedder, settings, cache=cache, progress=False)
    cache.close()
    return index


def run_model(spec: str, threads: int, settings: Settings, index: Path, questions: list[str],
              summaries: bool) -> dict[str, Any]:
    """One model at one thread count: load time, answers, tokens per second, optionally summaries."""
    kind, _, name = spec.rpartition(":")
    generator_kind = "causal" if kind == "transformers" else "llamacpp"
    model_settings = settings.replace(generator=generator_kind, generator_model=name, llm_threads=threads,
                                      threads=threads)
    started = time.perf_counter()
    with Pipeline.open(model_settings, index_dir=index, reranker=None) as pipeline:
        load_s = time.perf_counter() - started
        return _run_model(spec, generator_kind, threads, load_s, pipeline, questions, summaries)


def _run_model(spec: str, generator_kind: str, threads: int, load_s: float, pipeline: Pipeline,
               questions: list[str], summaries: bool) -> dict[str, Any]:
    generator, answerer, retriever = pipeline.generator, pipeline.answerer, pipeline.retriever
    row: dict[str, Any] = {"model": spec, "runtime": generator_kind, "threads": threads, "load_s": round(load_s, 2)}
    answerer.ask(questions[0])  # warm: the first request also fills the prompt cache with the system message
    latency, first, prompt_tps, gen_tps, prompt_n, cached, from_model = [], [], [], [], [], [], 0
    for question in questions:
        prepared = answerer.prepare_many([question])[0]
        began = time.perf_counter()
        first_at = None
        answer: Answer | None = None
        for item in answerer.finish_stream(prepared):
            if first_at is None:
                first_at = time.perf_counter() - began
            if isinstance(item, Answer):
                answer = item
        total = prepared.seconds + time.perf_counter() - began
        latency.append(total)
        first.append(prepared.seconds + (first_at or 0.0))
        from_model += bool(answer and not answer.generator.startswith(("extractive", "资料")))
        timings = getattr(generator, "last_timings", {}) or {}
        if timings.get("prompt_per_second"):
            prompt_tps.append(timings["prompt_per_second"])
            prompt_n.append(timings.get("prompt_n", 0) + timings.get("cache_n", 0))
            cached.append(timings.get("cache_n", 0))
        if timings.get("predicted_per_second"):
            gen_tps.append(timings["predicted_per_second"])
    row.update({"answer": percentiles(latency), "first_piece": percentiles(first),
                "prompt_tokens_per_s": round(statistics.median(prompt_tps), 1) if prompt_tps else None,
                "generation_tokens_per_s": round(statistics.median(gen_tps), 1) if gen_tps else None,
                "prompt_tokens_median": statistics.median(prompt_n) if prompt_n else None,
                "cached_tokens_median": statistics.median(cached) if cached else None,
                "answers_from_model": from_model, "questions": len(questions)})
    if summaries:
        summarizer = Summarizer(pipeline.settings, generator)
        docs = []
        for path in sorted(SAMPLE.glob("*.txt")):
            doc = retriever.store.document(path.name)
            t = time.perf_counter()
            summary = summarizer.summarize(doc["text"], doc["doc_id"], doc["title"], "medium")
            docs.append({"doc_id": doc["doc_id"], "chars": len(doc["text"]), "generator": summary.generator,
                         "seconds": round(time.perf_counter() - t, 1), "summary_chars": len(summary.summary)})
        row["summaries"] = docs
    return row


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table."""
    lines = [f"# Model speed ({report['run']['time']}, commit {report['run']['commit']}, {report['run']['cpus']} CPUs)",
             "", f"{report['questions']} answerable sample questions; latency from the question (retrieval "
             "included) to the checked answer; first piece: to the first streamed text.", "",
             "| model | runtime | threads | load s | answer p50 | answer p95 | first piece p50 | first piece p95 | "
             "prompt tok/s | gen tok/s | prompt tokens | cached | answers by the model |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['model']} | {r['runtime']} | {r['threads']} | {r['load_s']} | {r['answer'].get('p50_s')} | "
                     f"{r['answer'].get('p95_s')} | {r['first_piece'].get('p50_s')} | {r['first_piece'].get('p95_s')} | "
                     f"{r['prompt_tokens_per_s']} | {r['generation_tokens_per_s']} | {r['prompt_tokens_median']} | "
                     f"{r['cached_tokens_median']} | {r['answers_from_model']}/{r['questions']} |")
    for r in report["rows"]:
        if r.get("summaries"):
            lines += ["", f"## Summaries: {r['model']}, {r['threads']} threads", "",
                      "| document | characters | seconds | generator | summary characters |", "|---|---|---|---|---|"]
            lines += [f"| {d['doc_id']} | {d['chars']} | {d['seconds']} | {d['generator']} | {d['summary_chars']} |"
                      for d in r["summaries"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write report.json and report.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--index", type=Path, help="index of the sample corpus (default: built in a temporary folder)")
    parser.add_argument("-n", type=int, default=30, help="answerable sample questions (default 30)")
    parser.add_argument("--models", default="qwen2.5-coder-1.5b,qwen2.5-coder-0.5b,transformers:qwen2.5-coder-0.5b")
    parser.add_argument("--threads", default="2", help="comma-separated llama.cpp thread counts (default 2)")
    parser.add_argument("--summaries", action="store_true", help="also time a summary of each sample document")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    index = args.index or sample_index(settings)
    questions = [g.question for g in load_gold(GOLD) if g.answers][: args.n]
    rows = []
    for spec in args.models.split(","):
        counts = [int(t) for t in args.threads.split(",")] if not spec.startswith("transformers:") else [2]
        for threads in counts:
            log.info("%s with %d threads", spec, threads)
            rows.append(run_model(spec, threads, settings, index, questions, args.summaries))
    report = {"run": run_info(), "questions": len(questions), "rows": rows,
              "settings": {"generator_context_chars": settings.generator_context_chars,
                           "generator_sources": settings.generator_sources, "llm_context": settings.llm_context}}
    print(write_report(args.out, report, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())

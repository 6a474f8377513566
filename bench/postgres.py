"""A library in PostgreSQL against the same library in SQLite: moving it over, search latency, and how soon a
document written through one process is found by another.

    python bench/postgres.py --index /tmp/cmrc --database postgresql://rag@/postgres?host=/tmp/pgtest \\
        --dataset ../shared/bench/cmrc2018/qa_dev.jsonl --out runs/bench-postgres [--questions 300]

``--index`` is an existing SQLite index; it is copied (vectors included, nothing embedded) into the schema
``--schema`` of ``--database`` unless that already holds it. Search latency: the first ``--questions`` questions of
``--dataset``, each asked of both stores in turn (so load from other processes hits both alike), warm, one at a
time, for each retriever. Visibility: one store writes a new document, a second store (another process's view,
with its own cache folder) searches until it finds it; the median over ``--writes`` documents.
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

from rag.config import load_settings  # noqa: E402
from rag.evaluation.evaluate import load_gold  # noqa: E402
from rag.index.embeddings import embedder_for_index  # noqa: E402
from rag.index.store import IndexStore  # noqa: E402
from rag.ingestion.ingest import ingest  # noqa: E402
from rag.ingestion.reading import NamedFile  # noqa: E402
from rag.retrieval.retrieve import RETRIEVERS, Retriever  # noqa: E402

log = logging.getLogger("bench.postgres")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True, help="an existing SQLite index folder")
    parser.add_argument("--database", required=True, help="postgresql://… URL")
    parser.add_argument("--schema", default="rag_bench", help="the schema the copy goes into (default rag_bench)")
    parser.add_argument("--dataset", required=True, help="gold questions (JSONL) for the latency runs")
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--writes", type=int, default=5)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    base = load_settings()
    pg = base.replace(index_store="postgresql", database_url=args.database, database_schema=args.schema)
    work = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    report: dict[str, Any] = {"index": args.index, "schema": args.schema}
    questions = [g.question for g in load_gold(args.dataset)][: args.questions]
    with IndexStore.open(args.index, settings=base) as sqlite, \
            IndexStore.open(work / "one", create=True, settings=pg) as postgres:
        started = time.perf_counter()
        report["copy"] = {**postgres.copy_from(sqlite, progress=True), "s": round(time.perf_counter() - started, 1),
                          "chunks": postgres.stats()["chunks"]}
        embedder = embedder_for_index(sqlite.embedder, base)
        stores = {"sqlite": Retriever(sqlite, embedder, base), "postgresql": Retriever(postgres, embedder, pg)}
        report["search_ms"] = {}
        for mode in RETRIEVERS:
            times: dict[str, list[float]] = {name: [] for name in stores}
            for question in questions:
                for name, retriever in stores.items():
                    t = time.perf_counter()
                    retriever.search(question, base.top_k, mode)
                    times[name].append(time.perf_counter() - t)
            # In milliseconds: percentiles() rounds seconds to the millisecond.
            report["search_ms"][mode] = {name: percentiles([v * 1000 for v in values[5:]])
                                         for name, values in times.items()}
        report["visible_s"] = visibility(postgres, work / "two", pg, embedder, args.writes, work)
    text = write_report(Path(args.out), report, markdown)
    print(text)


def visibility(writer: IndexStore, folder: Path, settings: Any, embedder: Any, writes: int, work: Path) -> dict:
    """Seconds from the start of one store's ingest of a new document until a second store finds it."""
    found_after = []
    with IndexStore.open(folder, settings=settings) as reader:
        retriever = Retriever(reader, embedder, settings)
        retriever.search("预热", 5)
        for i in range(writes):
            path = work / f"new{i}.txt"
            marker = f"编号{i}的测试文件写入青稞镇第{i}次家庭教育讲座纪要"
            path.write_text(f"{marker}。镇妇联组织家长参加讲座，介绍家庭教育促进法。", encoding="utf-8")
            started = time.perf_counter()
            ingest([NamedFile(path, f"bench-new-{i}.txt", str(path))], writer, embedder, settings, progress=False)
            while f"bench-new-{i}.txt" not in {h.doc_id for h in retriever.search(marker, 5, "bm25").hits}:
                time.sleep(0.01)
            found_after.append(time.perf_counter() - started)
        writer.remove_documents([f"bench-new-{i}.txt" for i in range(writes)])
    return {"median": round(statistics.median(found_after), 3), "max": round(max(found_after), 3), "n": writes}


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown."""
    copy = report["copy"]
    lines = [f"# PostgreSQL against SQLite: {report['index']}", "",
             f"Copied into schema `{report['schema']}`: {copy['copied']} documents ({copy['unchanged']} already "
             f"there), {copy['chunks']} chunks, in {copy['s']} s, nothing embedded.", "",
             "| retriever | SQLite p50 / p95 | PostgreSQL p50 / p95 |", "|---|---|---|"]
    for mode, by_store in report["search_ms"].items():
        cells = [f"{by_store[s]['p50_s']:.1f} / {by_store[s]['p95_s']:.1f} ms" for s in ("sqlite", "postgresql")]
        lines.append(f"| {mode} | {cells[0]} | {cells[1]} |")
    visible = report["visible_s"]
    lines += ["", f"A document ingested through one store is found by BM25 in another after {visible['median']} s "
                  f"(median of {visible['n']}, max {visible['max']} s), embedding included.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Evaluation runs: score the pipeline on a gold JSONL file and write ``report.json``, ``report.md`` and plots.

Gold lines: ``{"id", "question", "answers": [...], "doc_ids": [...]}``; empty ``doc_ids`` marks a question
the corpus cannot answer (left out of retrieval metrics).
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .metrics import mrr_at_k, ndcg_at_k, recall_at_k, unique_in_order
from .retrieve import Retriever

log = logging.getLogger(__name__)

RECALL_KS = (1, 3, 5, 10)


class DatasetError(ValueError):
    """A gold file that cannot be read; the message names the line."""


@dataclass
class GoldItem:
    """One gold question."""

    id: str
    question: str
    answers: list[str] = field(default_factory=list)
    doc_ids: list[str] = field(default_factory=list)
    kind: str | None = None  # question type, when the gold file says


def load_gold(path: str | Path, limit: int | None = None) -> list[GoldItem]:
    """Read a gold JSONL file (first ``limit`` lines when given)."""
    items: list[GoldItem] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    items.append(GoldItem(id=str(obj["id"]), question=str(obj["question"]),
                                          answers=[str(a) for a in obj.get("answers", [])],
                                          doc_ids=[str(d) for d in obj.get("doc_ids", [])], kind=obj.get("type")))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise DatasetError(f"{path}:{lineno}: not a gold line ({exc})") from None
                if limit and len(items) >= limit:
                    break
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from None
    return items


def run_info() -> dict[str, Any]:
    """Machine and commit, recorded with every report."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": commit, "python": platform.python_version(),
            "machine": platform.machine(), "cpus": __import__("os").cpu_count()}


def evaluate_retrieval(items: Sequence[GoldItem], retriever: Retriever, modes: Sequence[str] = ("bm25", "dense", "hybrid"),
                       depth: int = 30, batch_size: int = 32, progress: bool = True) -> dict[str, Any]:
    """Document-level Recall@1/3/5/10, MRR@10 and nDCG@10 of each retriever mode over the answerable items."""
    answerable = [it for it in items if it.doc_ids]
    report: dict[str, Any] = {"kind": "retrieval", "questions": len(answerable), "depth": depth, "modes": {},
                              "per_question": {}, "settings": {"chunk_size": retriever.settings.chunk_size,
                                                               "chunk_overlap": retriever.settings.chunk_overlap,
                                                               "candidates": retriever.settings.candidates,
                                                               "rrf_k": retriever.settings.rrf_k,
                                                               "embedder": retriever.embedder.name}}
    for mode in modes:
        ranked: list[list[str]] = []
        latencies: list[float] = []
        with tqdm(total=len(answerable), desc=f"retrieval/{mode}", unit="q", disable=not progress or None) as bar:
            for i in range(0, len(answerable), batch_size):
                part = answerable[i : i + batch_size]
                t0 = time.perf_counter()
                results = retriever.search_many([it.question for it in part], depth, mode)
                latencies.extend([(time.perf_counter() - t0) / len(part)] * len(part))
                ranked.extend(unique_in_order(h.doc_id for h in r.hits) for r in results)
                bar.update(len(part))
        metrics = {f"recall@{k}": _mean(recall_at_k(r, it.doc_ids, k) for r, it in zip(ranked, answerable))
                   for k in RECALL_KS}
        metrics["mrr@10"] = _mean(mrr_at_k(r, it.doc_ids, 10) for r, it in zip(ranked, answerable))
        metrics["ndcg@10"] = _mean(ndcg_at_k(r, it.doc_ids, 10) for r, it in zip(ranked, answerable))
        metrics["latency_ms_mean"] = 1000 * _mean(latencies)
        report["modes"][mode] = metrics
        for it, r in zip(answerable, ranked):
            report["per_question"].setdefault(it.id, {"question": it.question, "gold": it.doc_ids})[mode] = {
                "rank": next((n for n, d in enumerate(r, 1) if d in set(it.doc_ids)), None), "top": r[:5]}
    return report


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def retrieval_markdown(report: dict[str, Any]) -> str:
    """The Markdown table of a retrieval report."""
    cols = [f"recall@{k}" for k in RECALL_KS] + ["mrr@10", "ndcg@10", "latency_ms_mean"]
    lines = [f"# Retrieval evaluation: {report.get('dataset', '')}", "",
             f"{report['questions']} answerable questions; document level; index `{report.get('index', '')}`; "
             f"embedder `{report['settings']['embedder']}`; commit `{report['run'].get('commit')}`.", "",
             "| retriever | " + " | ".join(c.replace("latency_ms_mean", "ms/query") for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for mode, metrics in report["modes"].items():
        lines.append(f"| {mode} | " + " | ".join(f"{metrics[c]:.3f}" if c != "latency_ms_mean" else f"{metrics[c]:.1f}"
                                                for c in cols) + " |")
    return "\n".join(lines) + "\n"


def plot_recall_curves(report: dict[str, Any], path: Path) -> None:
    """Recall@k curves, one line per retriever."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for mode, metrics in report["modes"].items():
        ax.plot(RECALL_KS, [metrics[f"recall@{k}"] for k in RECALL_KS], marker="o", label=mode)
    ax.set_xlabel("k (documents)")
    ax.set_ylabel("recall@k")
    ax.set_xticks(RECALL_KS)
    ax.set_title(f"Recall@k — {Path(str(report.get('dataset', ''))).parent.name or 'gold set'}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: Path, markdown: str, plots: dict[str, Any]) -> list[Path]:
    """Write ``report.json``, ``report.md`` and each ``plots[name](report, path)`` PNG into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.json", out_dir / "report.md"]
    written[0].write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    written[1].write_text(markdown, encoding="utf-8")
    for name, plot in plots.items():
        path = out_dir / f"{name}.png"
        plot(report, path)
        written.append(path)
    return written


def compare_reports(run_a: Path, run_b: Path) -> tuple[str, dict[str, Any]]:
    """Per-metric deltas (B − A) and the questions whose outcome changed, as Markdown and as data."""
    try:
        a = json.loads((run_a / "report.json").read_text(encoding="utf-8"))
        b = json.loads((run_b / "report.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read a report: {exc}") from None
    if a.get("kind") != b.get("kind"):
        raise DatasetError(f"cannot compare a {a.get('kind')} run with a {b.get('kind')} run")
    deltas: dict[str, dict[str, float]] = {}
    lines = [f"# {run_a} → {run_b}", "", "| group | metric | A | B | Δ |", "|---|---|---|---|---|"]
    for group in sorted(set(a["modes"]) & set(b["modes"])):
        for metric, value_a in a["modes"][group].items():
            value_b = b["modes"][group].get(metric)
            if isinstance(value_a, (int, float)) and isinstance(value_b, (int, float)):
                deltas.setdefault(group, {})[metric] = value_b - value_a
                lines.append(f"| {group} | {metric} | {value_a:.3f} | {value_b:.3f} | {value_b - value_a:+.3f} |")
    changed = []
    for qid, qa in a.get("per_question", {}).items():
        qb = b.get("per_question", {}).get(qid)
        if qb is None:
            continue
        for group in deltas:
            if group in qa and group in qb and qa[group].get("rank") != qb[group].get("rank"):
                changed.append({"id": qid, "question": qa.get("question"), "group": group,
                                "a": qa[group].get("rank"), "b": qb[group].get("rank")})
    lines += ["", f"{len(changed)} question outcomes changed (rank of the first gold document; None = not found):", ""]
    lines += [f"- {c['id']} [{c['group']}] {c['a']} → {c['b']}: {c['question']}" for c in changed[:50]]
    return "\n".join(lines) + "\n", {"deltas": deltas, "changed": changed}

"""Evaluation runs: score the pipeline on a gold JSONL file and write ``report.json``, ``report.md`` and plots.

Gold lines: ``{"id", "question", "answers": [...], "doc_ids": [...]}``; empty ``doc_ids`` marks a question
the corpus cannot answer (left out of retrieval metrics).
"""

from __future__ import annotations

import json
import logging
import platform
import random
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..jsonl import DatasetError, read_jsonl
from ..normalize import is_traditional, normalize
from ..retrieval.retrieve import Retriever
from . import cmrc_scorer
from .metrics import (
    abstention_scores,
    char_f1,
    contains_answer,
    faithfulness,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    rouge_chars,
    rouge_words,
    unique_in_order,
)

log = logging.getLogger(__name__)

RECALL_KS = (1, 3, 5, 10)
SCORER_NAME = "CMRC 2018 official scorer (cmrc2018_evaluate.py v5)"  # what rag eval qa's F1 and EM are


@dataclass
class GoldItem:
    """One gold question."""

    id: str
    question: str
    answers: list[str] = field(default_factory=list)
    doc_ids: list[str] = field(default_factory=list)
    kind: str | None = None  # question type, when the gold file says


def load_gold(path: str | Path, limit: int | None = None, sample: int | None = None,
              seed: int = 0) -> list[GoldItem]:
    """Read a gold JSONL file: the first ``limit`` lines, or ``sample`` lines drawn at random with ``seed``
    (the same lines, in file order, for the same file and seed). Lines marked ``"needs_review": true`` are
    drafts and are skipped, with one warning."""
    if sample:
        items = load_gold(path)
        keep = set(random.Random(seed).sample(range(len(items)), min(sample, len(items))))
        return [item for i, item in enumerate(items) if i in keep]
    items: list[GoldItem] = []
    drafts = 0
    for lineno, obj in read_jsonl(path):
        if obj.get("needs_review"):  # a draft (e.g. from rated answers) that no person has checked: not gold yet
            drafts += 1
            continue
        try:
            items.append(GoldItem(id=str(obj["id"]), question=str(obj["question"]),
                                  answers=[str(a) for a in obj.get("answers", [])],
                                  doc_ids=[str(d) for d in obj.get("doc_ids", [])], kind=obj.get("type")))
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"{path}:{lineno}: not a gold line (missing {exc})") from None
        if limit and len(items) >= limit:
            break
    if drafts:
        log.warning("%s: skipped %d item%s marked needs_review (drafts, not gold)", path, drafts,
                    "" if drafts == 1 else "s")
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
    """Document-level Recall@1/3/5/10, MRR@10 and nDCG@10 of each retriever mode over the answerable items;
    ``answer@1``/``answer@5``: the share whose first 1 or 5 chunks hold a gold answer string, from any document
    (news reports the same event many times: the passage the answer step needs may come from another copy); and
    ``answer_doc@1``: the share whose first document holds one. Each question's entry records the first documents,
    the gold document's rank and whether the first document holds a gold answer."""
    answerable = [it for it in items if it.doc_ids]
    report: dict[str, Any] = {"kind": "retrieval", "questions": len(answerable), "depth": depth, "modes": {},
                              "per_question": {}, "settings": {"chunk_size": retriever.settings.chunk_size,
                                                               "chunk_overlap": retriever.settings.chunk_overlap,
                                                               "candidates": retriever.settings.candidates,
                                                               "rrf_k": retriever.settings.rrf_k,
                                                               "embedder": retriever.embedder.name}}
    doc_texts: dict[str, str] = {}  # first documents recur across modes: read each once

    def document_text(doc_id: str) -> str:
        if doc_id not in doc_texts:
            doc = retriever.store.document(doc_id)
            doc_texts[doc_id] = doc["text"] if doc else ""
        return doc_texts[doc_id]

    for mode in modes:
        ranked: list[list[str]] = []
        texts: list[list[str]] = []
        latencies: list[float] = []
        with tqdm(total=len(answerable), desc=f"retrieval/{mode}", unit="q", disable=not progress or None) as bar:
            for i in range(0, len(answerable), batch_size):
                part = answerable[i : i + batch_size]
                t0 = time.perf_counter()
                results = retriever.search_many([it.question for it in part], depth, mode)
                latencies.extend([(time.perf_counter() - t0) / len(part)] * len(part))
                ranked.extend(unique_in_order(h.doc_id for h in r.hits) for r in results)
                texts.extend([h.text for h in r.hits] for r in results)
                bar.update(len(part))
        metrics = {f"recall@{k}": _mean(recall_at_k(r, it.doc_ids, k) for r, it in zip(ranked, answerable))
                   for k in RECALL_KS}
        metrics["mrr@10"] = _mean(mrr_at_k(r, it.doc_ids, 10) for r, it in zip(ranked, answerable))
        metrics["ndcg@10"] = _mean(ndcg_at_k(r, it.doc_ids, 10) for r, it in zip(ranked, answerable))
        for k in (1, 5):
            metrics[f"answer@{k}"] = _mean(any(contains_answer(t, it.answers) for t in chunks[:k])
                                           for chunks, it in zip(texts, answerable))
        first_holds = [bool(r) and contains_answer(document_text(r[0]), it.answers)
                       for r, it in zip(ranked, answerable)]
        metrics["answer_doc@1"] = _mean(first_holds)
        metrics["latency_ms_mean"] = 1000 * _mean(latencies)
        report["modes"][mode] = metrics
        for it, r, holds in zip(answerable, ranked, first_holds):
            report["per_question"].setdefault(it.id, {"question": it.question, "gold": it.doc_ids})[mode] = {
                "rank": next((n for n, d in enumerate(r, 1) if d in set(it.doc_ids)), None), "top": r[:5],
                "first_holds_answer": holds}
    return report


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def retrieval_markdown(report: dict[str, Any], max_misses: int = 30) -> str:
    """The Markdown table of a retrieval report, then the questions the last retriever did not rank a gold
    document first for (at most ``max_misses``)."""
    cols = [f"recall@{k}" for k in RECALL_KS] + ["mrr@10", "ndcg@10", "answer@1", "answer@5", "answer_doc@1",
                                                 "latency_ms_mean"]
    lines = [f"# Retrieval evaluation: {report.get('dataset', '')}", "",
             f"{report['questions']} answerable questions; document level; index `{report.get('index', '')}`; "
             f"embedder `{report['settings']['embedder']}`; commit `{report['run'].get('commit')}`. "
             "answer@k: a gold answer string is in the first k chunks (any document); answer_doc@1: in the first "
             "document.", "",
             "| retriever | " + " | ".join(c.replace("latency_ms_mean", "ms/query") for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for mode, metrics in report["modes"].items():
        lines.append(f"| {mode} | " + " | ".join(f"{metrics[c]:.3f}" if c != "latency_ms_mean" else f"{metrics[c]:.1f}"
                                                for c in cols) + " |")
    if report["modes"]:
        mode = list(report["modes"])[-1]
        misses = [(qid, q, q[mode]) for qid, q in report["per_question"].items() if q[mode]["rank"] != 1]
        holding = sum(m["first_holds_answer"] for _, _, m in misses)
        plural = "" if len(misses) == 1 else "s"
        lines += ["", f"## {mode}: {len(misses)} question{plural} without a gold document first", "",
                  f"In {holding} of them the first document holds a gold answer too (often another report of the "
                  "same event).", "", "| id | question | gold rank | first document | holds answer |",
                  "|---|---|---|---|---|"]
        lines += [f"| {qid} | {q['question'][:60].replace('|', '｜')} | {m['rank'] or '—'} | "
                  f"{m['top'][0] if m['top'] else '—'} | {'yes' if m['first_holds_answer'] else 'no'} |"
                  for qid, q, m in misses[:max_misses]]
        if len(misses) > max_misses:
            lines.append(f"\n… and {len(misses) - max_misses} more in report.json (`per_question`).")
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


def write_report(report: dict[str, Any], out_dir: Path, render: Callable[[dict[str, Any]], str],
                 plots: dict[str, Any], **context: Any) -> tuple[str, list[Path]]:
    """Stamp ``report`` with ``context`` and the run (machine, commit), then write ``report.json``, ``report.md``
    (``render(report)``) and each ``plots[name](report, path)`` PNG into ``out_dir``. Returns the Markdown and
    the paths written."""
    report.update(context, run=run_info())
    markdown = render(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.json", out_dir / "report.md"]
    written[0].write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    written[1].write_text(markdown, encoding="utf-8")
    for name, plot in plots.items():
        path = out_dir / f"{name}.png"
        plot(report, path)
        written.append(path)
    return markdown, written


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


def _answers_by_batch(answerer, batches: list[list[str]]) -> Iterator[list[Any]]:
    """Each batch's answers, in order: an :class:`~rag.answering.answer.Answerer` answers one batch after another;
    a :class:`rag.distributed.RemoteAnswerer` (``ask_batches``) several at once on a cluster's workers."""
    ask_batches = getattr(answerer, "ask_batches", None)
    return ask_batches(batches) if ask_batches is not None else map(answerer.ask_many, batches)


def evaluate_qa(items: Sequence[GoldItem], answerer, batch_size: int = 8, progress: bool = True,
                fold_script: bool = False) -> dict[str, Any]:
    """Answer every gold question and score answers, abstention, citations and faithfulness.

    ``f1`` and ``em`` are the CMRC 2018 official scorer's (:mod:`rag.evaluation.cmrc_scorer`), in percent over the
    answerable questions, an abstention scoring as the empty answer; ``char_f1`` is the character-bag F1 of
    :func:`~rag.evaluation.metrics.char_f1`, kept as a secondary figure. ``fold_script`` folds Traditional and
    full-width letters and digits in answers and gold answers before the official scoring (not official; off by
    default), for gold sets whose questions are asked in both scripts; the report's ``scorer`` says which."""
    rows: list[dict[str, Any]] = []
    parts = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    answered = _answers_by_batch(answerer, [[it.question for it in part] for part in parts])
    with tqdm(total=len(items), desc="qa", unit="q", disable=not progress or None) as bar:
        for part, answers in zip(parts, answered):
            for item, ans in zip(part, answers):
                answerable = bool(item.answers)
                cited = [s for s in ans.sources if s.marker in ans.citations]
                row = {"id": item.id, "question": item.question, "type": item.kind or "", "answerable": answerable,
                       "script": "traditional" if is_traditional(item.question) else "simplified",
                       "answer": ans.answer, "abstained": ans.abstained, "generator": ans.generator,
                       "gold": item.answers, "seconds": ans.seconds, "confidence": ans.confidence,
                       "evidence": ans.evidence, "unmatched": ans.unmatched,
                       "retrieved_gold_doc": any(s.doc_id in set(item.doc_ids) for s in ans.sources)}
                if answerable:
                    shown = "" if ans.abstained else ans.answer
                    scored, golds = _as_scored(shown, item.answers, fold_script)
                    row.update(em=cmrc_scorer.em_score(scored, golds), f1=cmrc_scorer.f1_score(scored, golds),
                               char_f1=char_f1(shown, item.answers), contains=contains_answer(shown, item.answers))
                    if cited:
                        row["citation_precision"] = _mean(contains_answer(s.text, item.answers) for s in cited)
                if not ans.abstained and cited:
                    faith = faithfulness(ans.answer, [s.text for s in cited])
                    row["supported_share"] = faith["supported_share"]
                    row["unsupported_numbers"] = faith["unsupported_numbers"]
                rows.append(row)
            bar.update(len(part))
    answerable_rows = [r for r in rows if r["answerable"]]
    unanswerable_rows = [r for r in rows if not r["answerable"]]
    secs = sorted(r["seconds"] for r in rows)

    def summary(group: list[dict[str, Any]]) -> dict[str, float]:
        ans = [r for r in group if r["answerable"]]
        out = {"questions": len(group)}
        if ans:
            out.update(em=100 * _mean(r["em"] for r in ans), f1=100 * _mean(r["f1"] for r in ans),
                       char_f1=100 * _mean(r["char_f1"] for r in ans), contains=_mean(r["contains"] for r in ans),
                       abstain_rate_answerable=_mean(r["abstained"] for r in ans))
        return out

    overall = summary(rows)
    overall.update(abstention_scores([r["abstained"] for r in rows], [r["answerable"] for r in rows]))
    if unanswerable_rows:
        overall["abstain_rate_unanswerable"] = _mean(r["abstained"] for r in unanswerable_rows)
    cited_rows = [r for r in answerable_rows if "citation_precision" in r]
    overall["citation_precision"] = _mean(r["citation_precision"] for r in cited_rows)
    faith_rows = [r for r in rows if "supported_share" in r]
    overall["supported_share"] = _mean(r["supported_share"] for r in faith_rows)
    overall["answers_with_unsupported_numbers"] = sum(bool(r["unsupported_numbers"]) for r in faith_rows)
    # Answers shown as uncertain (their passage never names a name of the question), and how many of those were
    # wrong or answered an unanswerable question: whether the mark is worth a user's attention.
    uncertain = [r for r in rows if r["unmatched"] and not r["abstained"]]
    overall["uncertain_answers"] = len(uncertain)
    overall["uncertain_and_wrong"] = sum(not r["answerable"] or r["f1"] < 0.5 for r in uncertain)
    overall["latency_p50_s"] = secs[len(secs) // 2] if secs else 0.0
    overall["latency_p95_s"] = secs[min(len(secs) - 1, int(0.95 * len(secs)))] if secs else 0.0
    groups = {"all": overall}
    for key in ("type", "script"):
        for value in sorted({r[key] for r in rows if r[key]}):
            groups[f"{key}={value}"] = summary([r for r in rows if r[key] == value])
    return {"kind": "qa", "modes": groups, "per_question": {r["id"]: r for r in rows},
            "generators": sorted({r["generator"] for r in rows}),
            "scorer": {"f1_em": SCORER_NAME, "fold_script": fold_script, "char_f1": "character-bag F1 (secondary)"}}


def _as_scored(answer: str, golds: Sequence[str], fold: bool) -> tuple[str, list[str]]:
    """An answer and its gold answers as the official scorer sees them: folded when ``fold``, else unchanged."""
    if fold:
        return cmrc_scorer.fold_script(answer), [cmrc_scorer.fold_script(g) for g in golds]
    return answer, list(golds)


def export_official(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write a QA report's answerable questions as the official scorer's input files, ``ground_truth.json``
    (SQuAD-style) and ``predictions.json`` (``{id: answer}``), with the texts exactly as they were scored (folded
    when the run folded scripts; an abstention as the empty answer), so that
    ``python cmrc2018_evaluate.py ground_truth.json predictions.json`` re-checks the report's F1 and EM."""
    fold = report.get("scorer", {}).get("fold_script", False)
    questions, predictions = [], {}
    for row in report["per_question"].values():
        if row["answerable"]:
            answer, golds = _as_scored("" if row["abstained"] else row["answer"], row["gold"], fold)
            questions.append((row["id"], row["question"], golds))
            predictions[row["id"]] = answer
    return cmrc_scorer.write_official_files(out_dir, questions, predictions)


def qa_markdown(report: dict[str, Any]) -> str:
    """Markdown tables of a QA report: overall, then per question type and script."""
    overall = report["modes"]["all"]
    scorer = report.get("scorer", {})
    folding = "on (Traditional and full-width folded first: not the official figure)" if scorer.get(
        "fold_script") else "off"
    lines = [f"# QA evaluation: {report.get('dataset', '')}", "",
             f"Generators: {', '.join(report['generators'])}; index `{report.get('index', '')}`; "
             f"commit `{report['run'].get('commit')}`.", "",
             f"EM and F1: {scorer.get('f1_em', SCORER_NAME)}, script folding {folding}; char_f1: the character-bag "
             "F1 (any shared characters, all punctuation dropped, scripts folded), secondary.", "",
             "| metric | value |", "|---|---|"]
    for key, value in overall.items():
        lines.append(f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |")
    lines += ["", "| group | questions | EM | F1 | char F1 | contains | abstained (answerable) |",
              "|---|---|---|---|---|---|---|"]
    for group, m in report["modes"].items():
        if group == "all" or "f1" not in m:
            continue
        lines.append(f"| {group} | {m['questions']} | {m['em']:.1f} | {m['f1']:.1f} | {m['char_f1']:.1f} | "
                     f"{m['contains']:.3f} | {m['abstain_rate_answerable']:.3f} |")
    wrong = [r for r in report["per_question"].values()
             if (r["answerable"] and not r.get("contains")) or (not r["answerable"] and not r["abstained"])]
    lines += ["", f"## Misses ({len(wrong)})", ""]
    lines += [f"- {r['id']}: {r['question']} → {r['answer'][:60]} (gold: {'; '.join(r['gold'][:2]) or '—'})"
              for r in wrong[:40]]
    return "\n".join(lines) + "\n"


def _plot_f1_by_group(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(g, m) for g, m in report["modes"].items() if "f1" in m]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(groups)), 4), dpi=110)
    ax.bar(range(len(groups)), [m["f1"] for _, m in groups], color="#4C72B0", label="F1 (CMRC 2018 official)")
    ax.plot(range(len(groups)), [100 * m["contains"] for _, m in groups], "o", color="#DD8452",
            label="contains (%)")
    ax.set_xticks(range(len(groups)), [g.replace("type=", "").replace("script=", "") for g, _ in groups],
                  rotation=30, ha="right")
    ax.set_ylim(0, 105)
    ax.set_title("F1 and answer-contains by group", pad=24)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_latency(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = [r["seconds"] for r in report["per_question"].values()]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.hist(seconds, bins=30, color="#55A868")
    ax.set_xlabel("seconds per question (retrieval and answer)")
    ax.set_ylabel("questions")
    ax.set_title("Answer latency")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


plot_qa = {"f1_by_group": _plot_f1_by_group, "latency": _plot_latency}


BOILERPLATE_MARKERS = ("网站地图", "版权声明", "版权所有", "本文地址", "上一篇", "下一篇", "相关文章", "ICP备", ".jpg", ".png",
                       "评论0", "[详细]", "点击量")


def evaluate_summaries(items: Sequence[dict[str, Any]], documents: dict[str, dict[str, Any]], summarizer,
                       length: str = "medium") -> dict[str, Any]:
    """ROUGE (characters and words) against reference summaries, key-fact coverage, boilerplate leakage and
    faithfulness of each document's summary. ``items``: ``{"doc_id", "reference", "key_facts"}``."""
    rows = []
    for item in items:
        doc = documents.get(item["doc_id"])
        if doc is None:
            rows.append({"doc_id": item["doc_id"], "error": "not in the index"})
            continue
        started = time.perf_counter()
        summary = summarizer.summarize(doc["text"], doc["doc_id"], doc["title"], length)
        seconds = time.perf_counter() - started
        text = normalize(summary.summary)
        facts = item.get("key_facts", [])
        pinyin = re.search(r"\([a-zāáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜ]+\)", summary.summary)
        faith = faithfulness(summary.summary, [doc["text"]])
        rows.append({"doc_id": item["doc_id"], "summary": summary.summary, "generator": summary.generator,
                     "chars": len(summary.summary), "seconds": seconds,
                     **{f"char_{k}": v for k, v in rouge_chars(summary.summary, item["reference"]).items()},
                     **{f"word_{k}": v for k, v in rouge_words(summary.summary, item["reference"]).items()},
                     "key_fact_coverage": _mean(normalize(f) in text for f in facts) if facts else None,
                     "missing_facts": [f for f in facts if normalize(f) not in text],
                     "boilerplate": [m for m in BOILERPLATE_MARKERS if normalize(m) in text] + (
                         [pinyin.group()] if pinyin else []),
                     "supported_share": faith["supported_share"],
                     "unsupported_numbers": faith["unsupported_numbers"], "dropped": summary.dropped})
    scored = [r for r in rows if "error" not in r]
    keys = ["char_rouge1", "char_rouge2", "char_rougeL", "word_rouge1", "word_rouge2", "word_rougeL",
            "key_fact_coverage", "supported_share", "chars", "seconds"]
    overall = {k: _mean(r[k] for r in scored if r[k] is not None) for k in keys}
    overall["summaries_with_boilerplate"] = sum(bool(r["boilerplate"]) for r in scored)
    overall["summaries_with_unsupported_numbers"] = sum(bool(r["unsupported_numbers"]) for r in scored)
    overall["documents"] = len(scored)
    return {"kind": "summary", "modes": {"all": overall}, "per_question": {r["doc_id"]: r for r in rows},
            "length": length}


def summary_markdown(report: dict[str, Any]) -> str:
    """Markdown of a summary evaluation."""
    overall = report["modes"]["all"]
    lines = [f"# Summary evaluation: {report.get('dataset', '')}", "",
             f"Length `{report['length']}`; commit `{report['run'].get('commit')}`.", "", "| metric | value |",
             "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in overall.items()]
    lines += ["", "| document | R-1 (char) | R-L (char) | key facts | missing | boilerplate |", "|---|---|---|---|---|---|"]
    for doc_id, r in report["per_question"].items():
        if "error" in r:
            lines.append(f"| {doc_id} | — | — | — | {r['error']} | — |")
            continue
        lines.append(f"| {doc_id} | {r['char_rouge1']:.3f} | {r['char_rougeL']:.3f} | {r['key_fact_coverage']:.2f} | "
                     f"{'、'.join(r['missing_facts']) or '—'} | {'、'.join(r['boilerplate']) or '—'} |")
    return "\n".join(lines) + "\n"


def _plot_rouge(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(d, r) for d, r in report["per_question"].items() if "error" not in r]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows)), 4), dpi=110)
    width = 0.25
    for offset, key in enumerate(("char_rouge1", "char_rougeL", "key_fact_coverage")):
        ax.bar([i + offset * width for i in range(len(rows))], [r[key] or 0 for _, r in rows], width, label=key)
    ax.set_xticks([i + width for i in range(len(rows))], [d[:12] for d, _ in rows], rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title("Summaries: ROUGE (characters) and key-fact coverage")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


plot_summary = {"rouge": _plot_rouge}

"""Choose the abstention thresholds (``abstain_threshold``, ``min_coverage``) on dev data.

For every question of the dev sets the extractive answerer's evidence confidence and coverage are computed
once; the pair picked abstains on the most unanswerable questions while abstaining on at most ``--max-false``
of the answerable ones of every set. Writes JSON and Markdown.

    python eval/calibrate_abstention.py --set eval/data/sample_qa.jsonl=index \\
        --set ../shared/bench/cmrc2018/qa_dev.jsonl=/tmp/cmrc --limit 400 --out runs/calibration
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rag.config import load_settings
from rag.evaluation.evaluate import load_gold, run_info
from rag.pipeline import Pipeline


def confidences(dataset: str, index: str, limit: int | None) -> list[tuple[bool, float, float]]:
    """``(answerable, confidence, coverage)`` for each question of ``dataset`` answered over ``index``."""
    settings = load_settings().replace(index_dir=Path(index))
    with Pipeline.open(settings, generator=None) as pipeline:
        retriever, answerer = pipeline.retriever, pipeline.answerer
        items = load_gold(dataset, limit)
        out = []
        for item, result in zip(items, retriever.search_many([i.question for i in items], settings.answer_sources)):
            found = answerer.extract(result.query, result.hits).extraction
            out.append((bool(item.answers), found.confidence if found else 0.0, found.coverage if found else 0.0))
    return out


def abstain_rate(rows: list[tuple[float, float]], threshold: float, min_coverage: float) -> float:
    """Share of ``(confidence, coverage)`` rows the answerer would abstain on with these thresholds."""
    return sum(c < threshold or v < min_coverage for c, v in rows) / max(1, len(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", required=True, metavar="GOLD=INDEX",
                        help="a gold JSONL file and the index to answer it from (repeatable)")
    parser.add_argument("--limit", type=int, help="questions per set")
    parser.add_argument("--max-false", type=float, default=0.05, help="allowed abstention on answerable questions")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    rows: list[tuple[bool, float, float]] = []
    per_set = {}
    for spec in args.set:
        dataset, index = spec.split("=", 1)
        per_set[dataset] = confidences(dataset, index, args.limit)
        rows += per_set[dataset]
    answerable = [(c, v) for a, c, v in rows if a]
    unanswerable = [(c, v) for a, c, v in rows if not a]
    table = []
    for step in range(0, 101, 5):
        for cov_step in range(0, 55, 5):
            t, m = step / 100, cov_step / 100
            table.append({"threshold": t, "min_coverage": m, "abstain_answerable": abstain_rate(answerable, t, m),
                          "abstain_unanswerable": abstain_rate(unanswerable, t, m)})

    def worst_set(t: float, m: float) -> float:
        return max(abstain_rate([(c, v) for a, c, v in got if a], t, m) for got in per_set.values())

    allowed = [r for r in table if worst_set(r["threshold"], r["min_coverage"]) <= args.max_false]
    best = max(allowed, key=lambda r: (r["abstain_unanswerable"], -r["abstain_answerable"], -r["threshold"]))
    report = {"run": run_info(), "chosen": best, "max_false": args.max_false, "sets": list(per_set),
              "answerable": len(answerable), "unanswerable": len(unanswerable), "table": table}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    lines = ["# Abstention calibration", "", f"Sets: {', '.join(per_set)}; {len(answerable)} answerable, "
             f"{len(unanswerable)} unanswerable questions.", "",
             f"Chosen abstain_threshold **{best['threshold']:.2f}**, min_coverage **{best['min_coverage']:.2f}**: "
             f"abstains on {best['abstain_unanswerable']:.1%} of "
             f"unanswerable and {best['abstain_answerable']:.1%} of answerable questions "
             f"(at most {args.max_false:.0%} of any set's answerable ones).", "",
             "| threshold | min_coverage | answerable abstained | unanswerable abstained |", "|---|---|---|---|"]
    lines += [f"| {r['threshold']:.2f} | {r['min_coverage']:.2f} | {r['abstain_answerable']:.3f} | "
              f"{r['abstain_unanswerable']:.3f} |" for r in table if r["min_coverage"] in (0.0, best["min_coverage"])]
    (out / "calibration.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[:6]))


if __name__ == "__main__":
    main()

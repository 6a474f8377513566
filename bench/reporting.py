"""What the benchmark scripts share: latency percentiles and the report files they write."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any


def percentiles(values: list[float]) -> dict[str, float]:
    """Count, p50 / p95 / mean in seconds (nearest rank); empty for no values."""
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]  # noqa: E731
    return {"n": len(values), "p50_s": round(pick(0.5), 3), "p95_s": round(pick(0.95), 3),
            "mean_s": round(statistics.fmean(values), 3)}


def write_report(out: Path, report: dict[str, Any], markdown: Callable[[dict[str, Any]], str]) -> str:
    """``report.json`` and ``report.md`` in ``out`` (made if missing); the Markdown, for printing."""
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    (out / "report.md").write_text(text, encoding="utf-8")
    return text

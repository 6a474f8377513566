"""Metrics checked against examples computed by hand."""

from __future__ import annotations

import math

import pytest

from rag.evaluation.metrics import (
    abstention_scores,
    answer_chars,
    char_f1,
    contains_answer,
    exact_match,
    faithfulness,
    mrr_at_k,
    ndcg_at_k,
    ngram_support,
    recall_at_k,
    rouge,
    rouge_chars,
    unsupported_numbers,
)


def test_retrieval_metrics_collapse_chunks_to_documents() -> None:
    ranked = ["d3", "d3", "d1", "d2", "d1"]  # chunk hits: distinct documents are d3, d1, d2
    assert recall_at_k(ranked, ["d1"], 1) == 0.0
    assert recall_at_k(ranked, ["d1"], 2) == 1.0
    assert recall_at_k(ranked, ["d1", "d2"], 2) == 0.5
    assert mrr_at_k(ranked, ["d2"], 10) == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, ["d9"], 10) == 0.0
    # Binary nDCG: gold d1 and d2 at document ranks 2 and 3; ideal ranks 1 and 2.
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    ideal = 1 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(ranked, ["d1", "d2"], 10) == pytest.approx(dcg / ideal)


def test_character_f1_counts_characters_not_whitespace_tokens() -> None:
    # pred 拉萨市 (3 chars), gold 拉萨 (2): common 2 → P 2/3, R 1 → F1 0.8.
    assert char_f1("拉萨市", ["拉萨"]) == pytest.approx(0.8)
    # Punctuation and script are ignored; the best gold wins.
    assert char_f1("“拉薩”。", ["成都", "拉萨"]) == 1.0
    assert exact_match("拉薩！", ["拉萨"]) == 1.0 and exact_match("拉萨市", ["拉萨"]) == 0.0
    # Whitespace-token F1 would give 0 here; characters give 2·(2/4·2/3)/(2/4+2/3).
    assert char_f1("区委 会议", ["区委501"]) == pytest.approx(2 * (2 / 4) * (2 / 5) / (2 / 4 + 2 / 5))
    assert char_f1("", ["拉萨"]) == 0.0
    assert answer_chars("Ａ，１。b") == ["a", "1", "b"]


def test_contains_and_abstention() -> None:
    assert contains_answer("会议在拉薩召开", ["拉萨"]) and not contains_answer("会议在成都召开", ["拉萨"])
    scores = abstention_scores([True, True, False, False], [False, True, True, False])
    assert scores == {"abstain_precision": 0.5, "abstain_recall": 0.5}


def test_faithfulness_by_character_ngrams() -> None:
    source = ["甘孜州建成63个巾帼脱贫示范基地。"]
    assert ngram_support("甘孜州建成63个巾帼脱贫示范基地", source) == 1.0
    # 7 trigrams of 甘孜州建成9个基地 … only those inside the source count.
    claim = "甘孜州建成九个基地"
    chars = "".join(answer_chars(claim))
    grams = {chars[i : i + 3] for i in range(len(chars) - 2)}
    assert ngram_support(claim, source) == pytest.approx(len({"甘孜州", "孜州建", "州建成"}) / len(grams))
    assert unsupported_numbers("建成63个，投入9000万元", source) == ["9000"]
    result = faithfulness("甘孜州建成63个巾帼脱贫示范基地。投入资金九千万元用于购买设备。", source)
    assert result["supported_share"] == 0.5 and result["unsupported_numbers"] == []


def test_rouge_by_hand() -> None:
    # candidate a b c d, reference a b d: unigram overlap 3 → P 3/4 R 1 → F 6/7; bigram overlap 1 (ab) → P 1/3
    # R 1/2 → F 0.4; LCS a b d = 3 → 6/7.
    scores = rouge(list("abcd"), list("abd"))
    assert scores["rouge1"] == pytest.approx(6 / 7)
    assert scores["rouge2"] == pytest.approx(0.4)
    assert scores["rougeL"] == pytest.approx(6 / 7)
    # Characters, not bytes or whitespace tokens: rouge_score would drop all of this text.
    assert rouge_chars("妇女儿童工作会议", "妇女儿童会议")["rouge1"] == pytest.approx(2 * 6 / (8 + 6))

"""Metrics checked against examples computed by hand."""

from __future__ import annotations

import math

import pytest

from rag.evaluation.cmrc_scorer import (
    PUNCTUATION,
    em_score,
    f1_score,
    fold_script,
    longest_common_run,
    mixed_segmentation,
    score,
)
from rag.evaluation.metrics import (
    abstention_scores,
    char_f1,
    contains_answer,
    exact_match,
    faithfulness,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    rouge,
    rouge_chars,
)
from rag.overlap import answer_chars, ngram_support, unsupported_numbers


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


def test_rouge_equals_the_rouge_score_package() -> None:
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    from rouge_score.tokenizers import Tokenizer

    class Given(Tokenizer):
        """The tokens as given (space-joined), since rouge-score's own tokenizer drops Chinese."""

        def tokenize(self, text: str) -> list[str]:
            return text.split(" ")

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=Given())
    pairs = [("区党委副书记严金海出席会议并讲话，会议要求做好妇女儿童工作，妇女儿童工作会议在拉萨召开。",
              "第五次全区妇女儿童工作会议在拉萨召开，区党委副书记、自治区主席严金海出席并讲话。"),
             ("会议会议会议", "会议召开"), ("甘孜州", "精河县")]
    for candidate, reference in pairs:
        for cand, ref in [(answer_chars(candidate), answer_chars(reference)), (list(candidate), list(reference))]:
            ours = rouge(cand, ref)
            theirs = scorer.score(" ".join(ref), " ".join(cand))  # rouge-score takes (target, prediction)
            for key in ("rouge1", "rouge2", "rougeL"):
                assert ours[key] == pytest.approx(theirs[key].fmeasure, abs=1e-12), (candidate, key)


# (answer, gold answers, official F1, official EM). The numbers are what the official CMRC 2018 scorer
# (ymcui/cmrc2018 squad-style-data/cmrc2018_evaluate.py, run under Python 2.7 with nltk 3.4.5 and
# word_tokenize(preserve_line=True)) printed for these pairs; the first seven are issue 29's.
OFFICIAL_CASES = [
    ("3", ["L3"], 0.0, 0),  # "l3" is one token: no digit is shared on its own
    ("40", ["40km"], 0.0, 0),
    ("70.99", ["70.99平方公里"], 1 / 3, 0),  # 70.99 | 平 方 公 里: 1 of 5 tokens
    ("1621年", ["天命六年(1621年)"], 0.4, 0),  # ASCII brackets stay tokens: 2 of 8
    ("2020年", ["2010年"], 0.5, 0),
    ("1980年代由东华实业", ["东华实业"], 2 / 3, 0),
    ("1861年", ["19世纪60年代"], 0.25, 0),
    # Latin words and digits: lower-cased, one token per word; a thousands comma stays inside the number.
    ("NBA总冠军", ["nba总冠军"], 1.0, 1),
    ("New York City", ["new york"], 0.8, 0),
    ("iPhone 6s Plus", ["iphone 6s"], 0.8, 0),
    ("1,000万", ["1000万"], 0.5, 0),
    ("39.61%", ["39.61"], 2 / 3, 0),  # % is not on the list: it is a token of its own
    # Full-width letters and digits and Traditional characters are not folded by the official scorer.
    ("ＮＢＡ", ["NBA"], 0.0, 0),
    ("第１２届", ["第12届"], 1 / 3, 0),
    ("拉薩", ["拉萨"], 0.5, 0),
    # Punctuation: the listed marks go (（ ） 《 》 - ), the others stay (( ) 【 】 …), and a dropped mark does
    # not split a Latin run.
    ("（1621年）", ["1621年"], 1.0, 1),
    ("(1621年)", ["1621年"], 2 / 3, 0),
    ("《红楼梦》", ["红楼梦"], 1.0, 1),
    ("【红楼梦】", ["红楼梦"], 0.75, 0),
    ("拉萨…", ["拉萨"], 0.8, 0),
    ("a-b", ["ab"], 1.0, 1),
    # Whitespace separates tokens only; EM compares the whole string, inner spaces included.
    ("拉萨 市", ["拉萨市"], 1.0, 0),
    # The longest contiguous run counts, not shared characters in any order.
    ("华东", ["东华"], 0.5, 0),
    # An empty answer (an abstention), and the best of several gold answers.
    ("", ["拉萨"], 0.0, 0),
    ("自治区主席", ["区党委副书记、自治区主席", "自治区主席"], 1.0, 1),
    ("自治区主席", ["区党委副书记、自治区主席"], 0.625, 0),
]


@pytest.mark.parametrize(("answer", "golds", "f1", "em"), OFFICIAL_CASES)
def test_official_cmrc_scorer_cases(answer: str, golds: list[str], f1: float, em: int) -> None:
    assert f1_score(answer, golds) == pytest.approx(f1)
    assert em_score(answer, golds) == em


def test_official_segmentation_and_longest_run() -> None:
    assert mixed_segmentation("天命六年(1621年)", drop_punctuation=True) == ["天", "命", "六", "年", "(", "1621", "年", ")"]
    assert mixed_segmentation("70.99平方公里") == ["70.99", "平", "方", "公", "里"]
    # Kept, the listed marks are tokens of their own and end a Latin run; dropped, they do not end it.
    assert mixed_segmentation("a-b") == ["a", "-", "b"] and mixed_segmentation("a-b", drop_punctuation=True) == ["ab"]
    assert len(PUNCTUATION) == 33 and "……" in PUNCTUATION
    assert longest_common_run(list("abcxabcd"), list("zabcdz")) == 4
    assert longest_common_run([], ["a"]) == 0


def test_script_folding_is_an_option() -> None:
    # Folding maps Traditional to Simplified and full-width letters and digits to half-width, and keeps
    # full-width punctuation so that the official list still drops it.
    assert fold_script("拉薩（ＮＢＡ１２）") == "拉萨（NBA12）"
    for answer, gold in [("拉薩", "拉萨"), ("ＮＢＡ", "NBA"), ("第１２届", "第12届")]:
        assert f1_score(answer, [gold]) < 1.0
        assert f1_score(fold_script(answer), [fold_script(gold)]) == 1.0
        assert em_score(fold_script(answer), [fold_script(gold)]) == 1.0


def test_official_averages_count_missing_predictions_as_zero() -> None:
    ground_truth = {"data": [{"paragraphs": [{"qas": [
        {"id": " q1 ", "question": "?", "answers": [{"text": "拉萨"}]},  # ids are stripped, as the script does
        {"id": "q2", "question": "?", "answers": [{"text": "40km"}, {"text": "40公里"}]},
        {"id": "q3", "question": "?", "answers": [{"text": "拉萨"}]},
    ]}]}]}
    result = score(ground_truth, {"q1": "拉萨", "q2": "40公里以上"})
    # q1: F1 1, EM 1; q2: 40 公 里 of 40 公 里 以 上 → P 3/5, R 1 → F1 0.75; q3 has no prediction: 0, skipped.
    assert result.total == 3 and result.skipped == 1
    assert result.f1 == pytest.approx(100 * (1 + 0.75) / 3) and result.em == pytest.approx(100 / 3)
    assert result.line("p.json") == {"AVERAGE": "45.833", "F1": "58.333", "EM": "33.333", "TOTAL": 3, "SKIP": 1,
                                     "FILE": "p.json"}
    assert score(ground_truth, {"q1": "拉薩", "q2": "", "q3": "拉萨"}, fold=True).em == pytest.approx(200 / 3)


def test_official_cases_are_not_the_character_bag_metric() -> None:
    # The character-bag F1 (char_f1, kept as a secondary figure) scores shared characters in any order.
    assert char_f1("40", ["40km"]) == pytest.approx(2 / 3) and f1_score("40", ["40km"]) == 0.0
    assert char_f1("华东", ["东华"]) == 1.0 and f1_score("华东", ["东华"]) == 0.5

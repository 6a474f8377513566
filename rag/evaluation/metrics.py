"""Metrics that count Chinese correctly: characters, not whitespace tokens.

Retrieval metrics are document-level: a ranked list of chunk hits is collapsed to the distinct documents
in order of first appearance, and a document is relevant when it is one of the gold ``doc_ids``.
The answer metrics here are the character-bag ones: :func:`char_f1` counts the characters an answer shares with
a gold answer in any order, after all punctuation and whitespace are dropped and full-width and Traditional
characters folded (the maximum over the gold answers). They are *not* the CMRC 2018 official scorer, which
``rag eval qa`` reports as its F1 and EM (:mod:`rag.evaluation.cmrc_scorer`: Han characters and nltk words as
tokens, the longest contiguous common run, its own list of 33 marks, no folding); ``char_f1`` stays in reports as
a secondary figure, usually a little higher ("40" against "40km": 0.667 here, 0 there).

ROUGE (:func:`rouge`) computes ROUGE-1, ROUGE-2 and ROUGE-L F1 as Google's ``rouge-score`` package does
(``rouge1``, ``rouge2``, ``rougeL``: clipped n-gram counts, one LCS over the whole text, not ``rougeLsum``) on the
tokens it is given; tests/test_metrics.py checks that. ``rouge-score`` itself would drop every Chinese character
(its tokenizer keeps ``[a-z0-9]``), hence the character and jieba-word tokens here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from ..index.lexical import words

# The character counting lives in rag.overlap: the answering guard checks a model's sentences with it too.
from ..overlap import answer_chars, ngram_support, split_claims, unsupported_numbers


def unique_in_order(items: Iterable[str]) -> list[str]:
    """Items with later repeats removed."""
    return list(dict.fromkeys(items))


# -- retrieval ------------------------------------------------------------------------------------------------
def recall_at_k(ranked_docs: Sequence[str], gold: Iterable[str], k: int) -> float:
    """Share of gold documents among the first ``k`` distinct ranked documents."""
    gold_set = set(gold)
    if not gold_set:
        return 0.0
    return len(gold_set & set(unique_in_order(ranked_docs)[:k])) / len(gold_set)


def mrr_at_k(ranked_docs: Sequence[str], gold: Iterable[str], k: int = 10) -> float:
    """1 / rank of the first gold document within the first ``k`` distinct documents (0 if absent)."""
    gold_set = set(gold)
    for rank, doc in enumerate(unique_in_order(ranked_docs)[:k], 1):
        if doc in gold_set:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked_docs: Sequence[str], gold: Iterable[str], k: int = 10) -> float:
    """Binary-relevance nDCG over the first ``k`` distinct documents."""
    gold_set = set(gold)
    if not gold_set:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 1)
              for rank, doc in enumerate(unique_in_order(ranked_docs)[:k], 1) if doc in gold_set)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(gold_set), k) + 1))
    return dcg / ideal


# -- answers --------------------------------------------------------------------------------------------------
def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the prediction equals any gold answer after :func:`answer_chars`."""
    pred = answer_chars(prediction)
    return float(any(pred == answer_chars(g) for g in golds)) if golds else 0.0


def char_f1(prediction: str, golds: Sequence[str]) -> float:
    """Character-bag F1 (shared characters in any order, of :func:`answer_chars`), the maximum over gold answers.
    Not the CMRC 2018 official F1 (see :mod:`rag.evaluation.cmrc_scorer`)."""
    pred = answer_chars(prediction)
    best = 0.0
    for gold in golds:
        ref = answer_chars(gold)
        common = sum((Counter(pred) & Counter(ref)).values())
        if common == 0:
            continue
        precision, recall = common / len(pred), common / len(ref)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains_answer(text: str, golds: Sequence[str]) -> bool:
    """True when any gold answer occurs in ``text`` (both compared as :func:`answer_chars`)."""
    hay = "".join(answer_chars(text))
    return any("".join(answer_chars(g)) in hay for g in golds if answer_chars(g))


def abstention_scores(abstained: Sequence[bool], answerable: Sequence[bool]) -> dict[str, float]:
    """Precision and recall of abstaining, where abstaining is right exactly for unanswerable questions."""
    tp = sum(a and not ans for a, ans in zip(abstained, answerable))
    predicted = sum(abstained)
    actual = sum(not ans for ans in answerable)
    return {"abstain_precision": tp / predicted if predicted else 0.0,
            "abstain_recall": tp / actual if actual else 0.0}


# -- faithfulness ---------------------------------------------------------------------------------------------
def faithfulness(text: str, sources: Sequence[str], threshold: float = 0.6) -> dict[str, float | list[str]]:
    """Share of sentences whose n-grams are mostly in the sources, and the numbers the sources lack."""
    claims = split_claims(text)
    supported = sum(ngram_support(c, sources) >= threshold for c in claims)
    return {"supported_share": supported / len(claims) if claims else 1.0,
            "unsupported_numbers": unsupported_numbers(text, sources)}


# -- summaries ------------------------------------------------------------------------------------------------
def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap: int, candidate: int, reference: int) -> float:
    if not overlap:
        return 0.0
    p, r = overlap / candidate, overlap / reference
    return 2 * p * r / (p + r)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge(candidate: Sequence[str], reference: Sequence[str]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 over token sequences (characters or words), equal to ``rouge-score``'s
    ``rouge1``/``rouge2``/``rougeL`` F-measures on the same tokens. ``rouge-chinese`` by default counts each
    distinct n-gram once (``exclusive=True``), which raises ROUGE-1 on repetitive text (sample summaries: 0.497
    against 0.443 on characters); with ``exclusive=False`` it agrees with this one."""
    out = {}
    for n in (1, 2):
        c, r = _ngrams(candidate, n), _ngrams(reference, n)
        out[f"rouge{n}"] = _f1(sum((c & r).values()), sum(c.values()), sum(r.values()))
    out["rougeL"] = _f1(_lcs(candidate, reference), len(candidate), len(reference))
    return out


def rouge_chars(candidate: str, reference: str) -> dict[str, float]:
    """ROUGE on characters (punctuation dropped, scripts normalised)."""
    return rouge(answer_chars(candidate), answer_chars(reference))


def rouge_words(candidate: str, reference: str) -> dict[str, float]:
    """ROUGE on jieba words (punctuation dropped, scripts normalised)."""
    return rouge(words(candidate), words(reference))

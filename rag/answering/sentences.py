"""The sentences of retrieved passages, ranked by how much of a question they cover: what the extractor looks for
an answer in, what a model is shown, and what an answer rests on. A sentence that tries to steer a model
(:data:`INJECTION`) is never among them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..index.lexical import query_terms
from ..ingestion.chunking import split_sentences
from ..normalize import normalize

# Text in a document that tries to steer a model is never used as evidence.
INJECTION = re.compile(r"忽略(以上|上述|之前|前面|所有)|无视(以上|上述|之前)|ignore (all|the|previous|above)|"
                       r"(系统|system)\s*(提示|prompt)|你现在是|请改为回答|disregard", re.IGNORECASE)


def without_instructions(text: str) -> str:
    """``text`` with each sentence that tries to steer a model (:data:`INJECTION`) replaced by "……": what a model
    reads of a passage, and what its answer is checked against, so such a sentence can neither steer the answer
    nor support it."""
    parts, last = [], 0
    for sent in split_sentences(text):
        if INJECTION.search(normalize(text[sent.start : sent.end])):
            parts += [text[last : sent.start], "……"]
            last = sent.end
    return "".join(parts) + text[last:] if parts else text



@dataclass
class PassageText:
    """A retrieved passage as the extractor sees it."""

    index: int  # position in the sources list (0-based)
    text: str  # original script
    title: str | None = None  # the document's title: context for every sentence



def _coverage(terms: Sequence[str], weights: Sequence[float], text: str, context: str, passage: str) -> float:
    """IDF-weighted share of question words in the sentence (1), its neighbours and title (0.5), its passage (0.3)."""
    total = sum(weights) or 1.0
    got = 0.0
    for term, weight in zip(terms, weights):
        if term in text:
            got += weight
        elif term in context:
            got += 0.5 * weight
        elif term in passage:
            got += 0.3 * weight
    return got / total


@dataclass
class ScoredSentence:
    """A sentence of a passage with how much of the question it covers (see :func:`rank_sentences`)."""

    coverage: float
    rank: int  # the passage's position in the list given
    start: int  # span in the passage's text
    end: int
    text: str


def rank_sentences(question: str, passages: Sequence[PassageText], idf: Callable[[str], float]) -> list[ScoredSentence]:
    """The sentences of ``passages`` (best-ranked first), best coverage of the question first.

    Coverage is the IDF-weighted share of the question's words in the sentence (1), its previous sentence or the
    title (0.5), or elsewhere in its passage (0.3), less 0.01 per passage rank. A sentence that is a question or
    an instruction to the reader states no fact and is left out.
    """
    terms = query_terms(question)
    if not terms:
        return []
    # Single characters are weak evidence however rare they are as separate words.
    weights = [idf(t) * (0.3 if len(t) == 1 else 1.0) for t in terms]
    scored: list[ScoredSentence] = []
    for rank, passage in enumerate(passages):
        title = normalize(passage.title or "")
        whole = normalize(passage.text)
        previous = ""
        for sent in split_sentences(passage.text):
            text = passage.text[sent.start : sent.end]
            norm = normalize(text)
            if INJECTION.search(norm) or norm.rstrip().endswith("?"):
                continue
            coverage = _coverage(terms, weights, norm, previous + "\n" + title, whole) - 0.01 * rank
            scored.append(ScoredSentence(coverage, rank, sent.start, sent.end, text))
            previous = norm
    scored.sort(key=lambda x: -x.coverage)
    return scored

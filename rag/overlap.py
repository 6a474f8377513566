"""How much of a text other texts hold, counted on characters (scripts and widths folded, punctuation dropped):
what the answering guard checks a model's sentence against its sources with, and what evaluation reports as
faithfulness (:mod:`rag.evaluation.metrics`). Shared by both, so neither layer imports the other.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence

from .normalize import normalize

_CJK_PUNCT = "，。！？；：、“”‘’（）《》〈〉【】『』「」…—～·．,.!?;:'\"()[]{}<>-_/\\|@#$%^&*+=`~"
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;\n])")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*%?")


def answer_chars(text: str) -> list[str]:
    """Characters an answer is scored on: normalised script and width, no punctuation or whitespace."""
    out = []
    for ch in normalize(text):
        if ch.isspace() or ch in _CJK_PUNCT or ch in string.punctuation or unicodedata.category(ch).startswith("P"):
            continue
        out.append(ch)
    return out


def split_claims(text: str) -> list[str]:
    """Sentences of an answer or summary (on Chinese and Latin terminators), blanks dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def ngram_support(claim: str, sources: Sequence[str], n: int = 3) -> float:
    """Share of the claim's character n-grams found in any source (scripts normalised)."""
    chars = "".join(answer_chars(claim))
    if len(chars) < n:
        return 1.0 if chars and any(chars in "".join(answer_chars(s)) for s in sources) else 0.0
    grams = {chars[i : i + n] for i in range(len(chars) - n + 1)}
    source_grams: set[str] = set()
    for s in sources:
        sc = "".join(answer_chars(s))
        source_grams.update(sc[i : i + n] for i in range(len(sc) - n + 1))
    return len(grams & source_grams) / len(grams)


def unsupported_numbers(text: str, sources: Sequence[str]) -> list[str]:
    """Numbers in ``text`` that appear in none of the sources."""
    haystack = normalize(" ".join(sources))
    return [num for num in _NUMBER.findall(normalize(text)) if num not in haystack]


def is_supported(text: str, sources: Sequence[str], min_support: float = 0.6) -> bool:
    """Most of ``text``'s character trigrams occur in ``sources``, and every number in it does."""
    return ngram_support(text, sources) >= min_support and not unsupported_numbers(text, sources)

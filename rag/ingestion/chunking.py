"""Sentence splitting on Chinese punctuation and packing sentences into overlapping chunks.

Every span is a pair of character offsets into the document's display text, so a citation can point at
exactly what users are shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .locations import marker_kind

# A sentence runs to its terminator (。！？!?；;… and line breaks); closing quotes and brackets stay with it.
_SENTENCE = re.compile(r"[^。！？!?；;…\n]*(?:(?:[。！？!?；;]|…+)+[”’\"'」』）)】》]*|\n|$)")
# Where an over-long sentence may be cut, best first.
_SOFT_BREAKS = ("，", ",", "、", "：", ":", " ")


@dataclass(frozen=True)
class Span:
    """A half-open character range ``[start, end)`` of a text."""

    start: int
    end: int


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: its position in the document's display text and that text."""

    ordinal: int
    start: int
    end: int
    text: str


def split_sentences(text: str) -> list[Span]:
    """Sentence spans of ``text``, whitespace trimmed; empty sentences are left out."""
    spans = []
    for m in _SENTENCE.finditer(text):
        start, end = m.start(), m.end()
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append(Span(start, end))
    return spans


def _cut_long(text: str, span: Span, size: int) -> list[Span]:
    """Cut one sentence longer than ``size`` at soft breaks (commas), hard-cutting only as a last resort."""
    pieces = []
    start = span.start
    while span.end - start > size:
        window = text[start : start + size]
        cut = -1
        for mark in _SOFT_BREAKS:
            pos = window.rfind(mark)
            if pos >= size // 2:
                cut = pos + 1
                break
        end = start + (cut if cut > 0 else size)
        pieces.append(Span(start, end))
        start = end
    pieces.append(Span(start, span.end))
    return pieces


def check_chunk_settings(size: int, overlap: int) -> None:
    """Raise :class:`ValueError` (the message is meant for users) unless ``size`` and ``overlap`` can cut a text."""
    if size <= 0:
        raise ValueError("chunk size must be positive")
    if not 0 <= overlap < size:
        raise ValueError("chunk overlap must be at least 0 and smaller than the chunk size")


def chunk_text(text: str, size: int = 300, overlap: int = 60) -> list[Chunk]:
    """Pack sentences into chunks of at most ``size`` characters.

    Consecutive chunks share whole trailing sentences worth at most ``overlap`` characters. A sentence is
    only cut when it alone is longer than ``size``. A page or slide marker (:mod:`rag.ingestion.locations`) always
    starts a chunk, with no overlap, so that each passage is cited by the one page or slide it comes from (rows of
    a table, short, are packed together).
    """
    check_chunk_settings(size, overlap)
    units: list[Span] = []
    for sentence in split_sentences(text):
        units.extend(_cut_long(text, sentence, size) if sentence.end - sentence.start > size else [sentence])
    breaks = [marker_kind(text[u.start : u.end]) in ("page", "slide") for u in units]

    chunks: list[Chunk] = []
    i = 0
    while i < len(units):
        j = i + 1
        while j < len(units) and units[j].end - units[i].start <= size and not breaks[j]:
            j += 1
        start, end = units[i].start, units[j - 1].end
        chunks.append(Chunk(len(chunks), start, end, text[start:end]))
        if j >= len(units):
            break
        # Step back over trailing sentences that fit in the overlap, but always move forward.
        k = j
        while k - 1 > i and end - units[k - 1].start <= overlap and not breaks[k]:
            k -= 1
        i = k
    return chunks

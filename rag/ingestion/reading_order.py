"""Reading order of things laid out on a page: the text boxes OCR finds on a scan, the shapes of a slide.

Both come as boxes in no useful order. People read rows top to bottom and, within a row, left to right; a row
is the boxes that share most of their height (a line of text, or two columns side by side).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

T = TypeVar("T")

# Two boxes are on one row when they overlap vertically by at least this share of the lower one's height: a
# line's punctuation box or a slightly skewed scan stays on its line, the next line (gap of half a height) not.
_ROW_OVERLAP = 0.5


class Box(NamedTuple):
    """An axis-aligned box, ``top < bottom`` and ``left < right`` in any one unit (pixels, EMU)."""

    left: float
    top: float
    right: float
    bottom: float


def reading_rows(items: Sequence[T], box: Callable[[T], Box]) -> list[list[T]]:
    """``items`` grouped into rows, rows top to bottom and each row's items left to right."""
    placed = sorted(((box(item), i) for i, item in enumerate(items)), key=lambda p: (p[0].top, p[0].left, p[1]))
    rows: list[tuple[float, float, list[tuple[Box, int]]]] = []  # (top, bottom, members)
    for b, i in placed:
        if rows:
            top, bottom, members = rows[-1]
            overlap = min(bottom, b.bottom) - max(top, b.top)
            height = min(bottom - top, b.bottom - b.top)
            if height > 0 and overlap >= _ROW_OVERLAP * height:
                members.append((b, i))
                rows[-1] = (min(top, b.top), max(bottom, b.bottom), members)
                continue
        rows.append((b.top, b.bottom, [(b, i)]))
    return [[items[i] for b, i in sorted(members, key=lambda m: (m[0].left, m[0].top, m[1]))]
            for _, _, members in rows]

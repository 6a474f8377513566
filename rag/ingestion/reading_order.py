"""Reading order of things laid out on a page: the text boxes OCR finds on a scan, the shapes of a slide.

Both come as boxes in no useful order. People read rows top to bottom and, within a row, left to right; a row
is the boxes that share most of their height (a line of text, or two columns side by side) (:func:`reading_rows`).

A scanned page set in columns is read a column at a time (:func:`reading_blocks`): the left column top to
bottom, then the next. Two columns are found by their gutter, an x-range that no box of the body crosses, with
lines of text on both sides; a box that crosses it (a title over both columns, a page header or footer, a
paragraph across the page) stands where it is, between the column sections above and below it. Either side may
itself be columns split the same way, so three or more columns are read in turn. A table (short cells, several
to a row) and a page in one column keep the order of :func:`reading_rows`.
"""

from __future__ import annotations

import bisect
import itertools
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")

# Two boxes are on one row when they overlap vertically by at least this share of the lower one's height: a
# line's punctuation box or a slightly skewed scan stays on its line, the next line (gap of half a height) not.
_ROW_OVERLAP = 0.5
# A gutter lies in the middle of the page: its centre between these shares of the page's width.
_GUTTER_ZONE = (0.25, 0.75)
_GUTTER_MIN_WIDTH = 0.5  # in line heights: narrower gaps are the spaces between words or table cells
_COLUMN_MIN_LINES = 3  # on each side of a gutter
# The lines of a text column: most of them alone on their row, most of them filling the column's width (a
# paragraph's last line and a heading do not), and most of them longer than table cells are.
_COLUMN_SINGLE_SHARE = 0.8
_COLUMN_FULL_WIDTH = 0.75
_COLUMN_FULL_SHARE = 0.5
_COLUMN_MIN_LINE_WIDTH = 5.0  # median line width, in line heights (characters, roughly)


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
            if _same_row(top, bottom, b.top, b.bottom):
                members.append((b, i))
                rows[-1] = (min(top, b.top), max(bottom, b.bottom), members)
                continue
        rows.append((b.top, b.bottom, [(b, i)]))
    return [[items[i] for b, i in sorted(members, key=lambda m: (m[0].left, m[0].top, m[1]))]
            for _, _, members in rows]


def _same_row(top: float, bottom: float, other_top: float, other_bottom: float) -> bool:
    overlap = min(bottom, other_bottom) - max(top, other_top)
    height = min(bottom - top, other_bottom - other_top)
    return height > 0 and overlap >= _ROW_OVERLAP * height


@dataclass(frozen=True)
class Block(Generic[T]):
    """Rows read one after another, and the horizontal extent they are set in: a column's, or the page's."""

    rows: list[list[T]]
    left: float
    right: float


def reading_blocks(items: Sequence[T], box: Callable[[T], Box]) -> list[Block[T]]:
    """``items`` as blocks read one after another, each block's rows as :func:`reading_rows` orders them.

    A page in columns gives, top to bottom, each full-width stretch (title, header, a paragraph across the
    page) as a block and each column section as the blocks of its left side then those of its right, a side in
    columns of its own read the same way; any other page is one block.
    """
    if not items:
        return []
    return _blocks(items, box, _columns([box(item) for item in items]))


@dataclass(frozen=True)
class _Split:
    """Boxes split in two at a gutter, and how each side is laid out: one column (``None``) or split again.
    Found once on the whole page, so that a short section between two full-width lines is split the same way
    and its lines are measured against their whole column's margins."""

    start: float
    end: float
    sides: tuple[_Split | None, _Split | None]
    extents: tuple[tuple[float, float], tuple[float, float]]  # each side's left and right, over the whole page


def _blocks(items: Sequence[T], box: Callable[[T], Box], split: _Split | None,
            extent: tuple[float, float] | None = None) -> list[Block[T]]:
    """:func:`reading_blocks` with the layout already found; ``extent``: the margins of a single column."""
    boxes = [box(item) for item in items]
    page = (min(b.left for b in boxes), max(b.right for b in boxes))
    if split is None:
        return [Block(reading_rows(items, box), *(extent or page))]
    left = [i for i, b in enumerate(boxes) if b.right <= split.start]
    right = [i for i, b in enumerate(boxes) if b.left >= split.end]
    across = [i for i, b in enumerate(boxes) if b.right > split.start and b.left < split.end]
    # Column lines belong to the section between the full-width boxes above and below them.
    centres = sorted(((boxes[i].top + boxes[i].bottom) / 2, i) for i in across)
    sections: list[tuple[list[int], list[int]]] = [([], []) for _ in range(len(across) + 1)]
    for side, members in ((0, left), (1, right)):
        for i in members:
            sections[bisect.bisect_left(centres, ((boxes[i].top + boxes[i].bottom) / 2, -1))][side].append(i)
    blocks: list[Block[T]] = []
    band: list[int] = []  # full-width boxes with no column line between them: one block
    for n, section in enumerate(sections):
        if any(section):
            if band:
                blocks.append(Block(reading_rows([items[i] for i in band], box), *page))
            for side, members in enumerate(section):
                if members:
                    blocks.extend(_blocks([items[i] for i in members], box, split.sides[side], split.extents[side]))
            band = []
        if n < len(centres):
            band.append(centres[n][1])
    if band:
        blocks.append(Block(reading_rows([items[i] for i in band], box), *page))
    return blocks


def _columns(boxes: list[Box]) -> _Split | None:
    """How ``boxes`` split in columns at a gutter, each side a column of text or split again; ``None`` when the
    page is not in columns (see the module docstring)."""
    if len(boxes) < 2 * _COLUMN_MIN_LINES:
        return None
    height = statistics.median(b.bottom - b.top for b in boxes)
    gutter = _gutter(boxes, height)
    if gutter is None:
        return None
    start, end = gutter
    left = [b for b in boxes if b.right <= start]
    right = [b for b in boxes if b.left >= end]
    across = [b for b in boxes if b.right > start and b.left < end]
    if len(left) + len(right) < len(across):  # the columns are not the body of the page
        return None
    # A box across the gutter beside a column line is not a full-width stretch: the gap is inside a column.
    if any(_same_row(a.top, a.bottom, b.top, b.bottom) for a in across for b in left + right):
        return None
    sides = []
    for side in (left, right):
        if _text_column(side, height):
            sides.append(None)
        elif (inner := _columns(side)) is not None:
            sides.append(inner)
        else:
            return None
    extents = tuple((min(b.left for b in side), max(b.right for b in side)) for side in (left, right))
    return _Split(start, end, (sides[0], sides[1]), (extents[0], extents[1]))


def _gutter(boxes: list[Box], height: float) -> tuple[float, float] | None:
    """The widest x-range in the middle of the page crossed by the fewest boxes, if it is wide enough."""
    page_left, width = min(b.left for b in boxes), max(b.right for b in boxes) - min(b.left for b in boxes)
    zone = (page_left + _GUTTER_ZONE[0] * width, page_left + _GUTTER_ZONE[1] * width)
    lefts, rights = sorted(b.left for b in boxes), sorted(b.right for b in boxes)
    edges = sorted(set(lefts + rights))
    best: tuple[int, float, float, float] | None = None  # (boxes crossing, -width, start, end)
    run: tuple[int, float, float] | None = None  # the current stretch crossed by one number of boxes
    for start, end in itertools.pairwise(edges):
        # The boxes crossing (start, end): begun at or before its start and not ended by then.
        count = bisect.bisect_right(lefts, start) - bisect.bisect_right(rights, start)
        run = (count, run[1], end) if run is not None and run[0] == count else (count, start, end)
        if zone[0] <= (run[1] + run[2]) / 2 <= zone[1]:
            candidate = (run[0], run[1] - run[2], run[1], run[2])
            if best is None or candidate < best:
                best = candidate
    if best is None or best[3] - best[2] < _GUTTER_MIN_WIDTH * height:
        return None
    return best[2], best[3]


def _text_column(boxes: list[Box], height: float) -> bool:
    """Whether ``boxes`` are the lines of a column of text, not the cells of a table."""
    if len(boxes) < _COLUMN_MIN_LINES:
        return False
    rows = reading_rows(boxes, lambda b: b)
    if sum(len(row) == 1 for row in rows) < _COLUMN_SINGLE_SHARE * len(rows):
        return False
    extent = max(b.right for b in boxes) - min(b.left for b in boxes)
    widths = [b.right - b.left for b in boxes]
    if statistics.median(widths) < _COLUMN_MIN_LINE_WIDTH * height:
        return False
    return sum(w >= _COLUMN_FULL_WIDTH * extent for w in widths) >= _COLUMN_FULL_SHARE * len(boxes)

"""Where a passage lies in its file, in the words users look for: page, slide, sheet and row.

Readers of paged and tabular formats write a marker line into the document's text where each page or slide
begins ("〔第3页〕", "〔幻灯片 2〕"), and start each spreadsheet row with its sheet and row ("〔表：2023年统计 第5行〕
县：精河县 | 妇女之家：120个"). The markers stay in the text, so a question about a row finds it with its sheet
name and headers, and a reader sees them in the passage too. :func:`locate` turns the markers around a chunk into
its citation ("第3–4页", "幻灯片 2", "表“2023年统计”第5–9行"), which ingestion stores with the chunk.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

_PAGE = re.compile(r"〔第(\d+)页〕")
_SLIDE = re.compile(r"〔幻灯片 (\d+)〕")
_ROW = re.compile(r"〔表：([^〔〕\n]{0,80}) 第(\d+)行〕")
_ANY = re.compile(f"{_PAGE.pattern}|{_SLIDE.pattern}|{_ROW.pattern}")


def page_marker(number: int) -> str:
    """The line that starts page ``number`` (from 1)."""
    return f"〔第{number}页〕"


def slide_marker(number: int) -> str:
    """The line that starts slide ``number`` (from 1)."""
    return f"〔幻灯片 {number}〕"


def row_marker(sheet: str, number: int) -> str:
    """The start of row ``number`` (as the spreadsheet numbers it) of ``sheet``."""
    sheet = re.sub(r"[〔〕\n]", " ", sheet).strip()[:80]
    return f"〔表：{sheet} 第{number}行〕"


def marker_kind(line: str) -> str | None:
    """The kind of marker a line starts with ("page", "slide" or "row"), or ``None``: cleaning keeps such lines."""
    m = _ANY.match(line)
    if m is None:
        return None
    return "page" if m.group(1) else "slide" if m.group(2) else "row"


@dataclass(frozen=True)
class _Mark:
    start: int
    kind: str  # page | slide | row
    number: int
    sheet: str = ""


class Locator:
    """The markers of one document's text, to locate its chunks (built once per document)."""

    def __init__(self, text: str) -> None:
        self.marks: list[_Mark] = []
        for m in _ANY.finditer(text):
            if m.group(1):
                self.marks.append(_Mark(m.start(), "page", int(m.group(1))))
            elif m.group(2):
                self.marks.append(_Mark(m.start(), "slide", int(m.group(2))))
            else:
                self.marks.append(_Mark(m.start(), "row", int(m.group(4)), m.group(3)))
        self._starts = [mark.start for mark in self.marks]

    def locate(self, start: int, end: int) -> str | None:
        """The citation of the text ``[start, end)``: the marks in force at its start and up to its end."""
        if not self.marks:
            return None
        first = bisect.bisect_right(self._starts, start) - 1
        last = bisect.bisect_left(self._starts, end) - 1
        if last < 0:
            return None
        return _label(self.marks[max(first, 0)], self.marks[last])


def locate(text: str, start: int, end: int) -> str | None:
    """:meth:`Locator.locate` for one span."""
    return Locator(text).locate(start, end)


def _label(first: _Mark, last: _Mark) -> str:
    if first.kind != last.kind or (first.kind == "row" and first.sheet != last.sheet):
        first = last  # a span across two kinds of place (or sheets) is cited where it ends
    span = str(first.number) if first.number == last.number else f"{first.number}–{last.number}"
    if first.kind == "page":
        return f"第{span}页"
    if first.kind == "slide":
        return f"幻灯片 {span}"
    return f"表“{first.sheet}”第{span}行"

"""Tables as text: one line per data row, each value under its column's header.

A row becomes ``〔表：2023年统计 第5行〕 县：精河县 | 妇女之家：120个`` (:func:`rag.ingestion.locations.row_marker`,
numbered as the spreadsheet numbers it), so a passage cut from the middle of a sheet still says which county a
number belongs to, and answers cite the sheet and row. The header is the first non-empty row; a title row above it
(one value across the width, such as a merged cell) becomes a caption line, and a header row with merged cells
takes the row below it as a second header row ("2023年/女性"). Values read as a spreadsheet shows them: numbers
without float noise, percentages as percentages, dates as ISO dates.

A table's lines are one text, or, when longer than a document may be, parts of whole rows (:func:`split_parts`).
The spreadsheet readers (:mod:`rag.ingestion.spreadsheets`) give their sheets' rows to :func:`table_lines`; tables
inside Word documents and web pages go through :func:`docx_table_lines` and :func:`replace_html_tables`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
import logging
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from lxml import html as lxml_html

from .locations import marker_kind, row_marker
from .reading import LoadError, ReadOptions

log = logging.getLogger(__name__)

_HEADER_ROWS_MAX = 3
_LOOKAHEAD = 8  # non-empty rows read ahead to find the caption and the header rows
_NUMERIC = re.compile(r"[-+]?(\d[\d,]*)?\.?\d+%?|\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?")



@dataclass
class TableRow:
    """One row of a table: its number as the file numbers it, and its cells' text by column.

    A cell that spans several columns (a merged cell, a ``colspan``) holds its value in its first column only, and
    ``spans`` maps that column to the last one it covers; a cell spanning rows is repeated in each of them.
    """

    number: int
    cells: list[str]
    spans: dict[int, int] = field(default_factory=dict)

    def expanded(self) -> list[str]:
        """The cells with each spanning cell's value in every column it covers (for header rows)."""
        out = list(self.cells)
        for first, last in self.spans.items():
            if last >= len(out):
                out.extend([""] * (last + 1 - len(out)))
            out[first + 1 : last + 1] = [out[first]] * (last - first)
        return out


def one_line(text: str) -> str:
    """A cell's text on one line, whitespace runs collapsed."""
    return " ".join(text.split())


def table_lines(name: str, rows: Iterable[TableRow], *, header_rows: int | None = None) -> Iterator[str]:
    """The lines of one table named ``name``: a caption line when it has a title row, then one line per data row.

    ``header_rows`` says how many leading rows are headers when the file says so (HTML ``<th>`` rows); otherwise
    the first non-empty row is the header (unless every value in it is a number, or it is the table's only row)
    and a header row with a merged cell takes the next row with it. Empty rows and repeats of the header row (a
    printed sheet's page headers) are left out.
    """
    filled = (row for row in rows if any(row.cells))
    head = list(itertools.islice(filled, _LOOKAHEAD))
    while len(head) >= 2 and _is_title(head[0], head[1]):
        yield next(value for value in head.pop(0).cells if value)
        if header_rows:
            header_rows -= 1
    if header_rows is None:
        header_rows = _guess_header_rows(head)
    header_rows = min(header_rows, len(head))
    headers = _join_headers([row.expanded() for row in head[:header_rows]])
    repeated = [row.cells for row in head[:header_rows]]
    for row in itertools.chain(head[header_rows:], filled):
        if row.cells in repeated:
            continue
        parts = []
        for column, value in enumerate(row.cells):
            if value:
                header = headers[column] if column < len(headers) else ""
                parts.append(f"{header}：{value}" if header else value)
        yield f"{row_marker(name, row.number)} {' | '.join(parts)}"


def _is_title(row: TableRow, below: TableRow) -> bool:
    """Whether ``row`` is a table's title: one value alone above a row of several values."""
    return len({v for v in row.cells if v}) == 1 and len({v for v in below.expanded() if v}) >= 2


def _guess_header_rows(head: list[TableRow]) -> int:
    if len(head) < 2 or _all_numeric(head[0]):
        return 0
    count = 1
    while count < min(_HEADER_ROWS_MAX, len(head) - 1) and head[count - 1].spans and not _all_numeric(head[count]):
        count += 1
    return count


def _all_numeric(row: TableRow) -> bool:
    return all(_NUMERIC.fullmatch(v) for v in row.cells if v)


def _join_headers(rows: list[list[str]]) -> list[str]:
    """One header per column from header rows: "2023年/女性"; a value repeated down (a merged cell) once."""
    width = max((len(r) for r in rows), default=0)
    headers = []
    for column in range(width):
        parts: list[str] = []
        for row in rows:
            value = row[column] if column < len(row) else ""
            if value and (not parts or parts[-1] != value):
                parts.append(value)
        headers.append("/".join(parts))
    return headers


def with_merges(rows: Iterable[TableRow], merges: Iterable[tuple[int, int, int, int]]) -> Iterator[TableRow]:
    """``rows`` with merged ranges ``(min_row, min_col, max_row, max_col)`` (1-based, inclusive) applied.

    A range's value stands in each row it covers (rows with nothing of their own stay empty), and a range wider
    than one column is recorded in its rows' ``spans``. Ranges are held only while rows inside them stream by.
    """
    starting: dict[int, list[tuple[int, int, int, int]]] = {}
    for merge in merges:
        starting.setdefault(merge[0], []).append(merge)
    if not starting:
        yield from rows
        return
    active: list[tuple[int, int, int, str]] = []  # (last row, first column, last column, value), 0-based columns
    for row in rows:
        active = [a for a in active if a[0] >= row.number]
        own = any(row.cells)
        for first_row, first_col, last_row, last_col in starting.pop(row.number, ()):
            column = first_col - 1
            value = row.cells[column] if column < len(row.cells) else ""
            if last_col > first_col:
                row.spans[column] = last_col - 1
            if last_row > first_row and value:
                active.append((last_row, column, last_col - 1, value))
        if own:
            for _, column, last_col, value in active:
                if column >= len(row.cells):
                    row.cells.extend([""] * (column + 1 - len(row.cells)))
                if not row.cells[column]:
                    row.cells[column] = value
                if last_col > column:
                    row.spans[column] = last_col
        yield row


def format_number(value: float | int, number_format: str = "General") -> str:
    """A number as a spreadsheet shows it, without float noise: 120.0 → "120", 0.125 as "0.0%" → "12.5%"."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    decimals = _percent_decimals(number_format)
    if decimals is not None:
        try:
            percent = Decimal(format(value, ".15g")) * 100
            return f"{percent.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)}%"
        except InvalidOperation:  # inf, nan
            return str(value)
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".15g")


@functools.lru_cache(maxsize=256)
def _percent_decimals(number_format: str) -> int | None:
    """How many decimals a percentage format shows ("0.0%" → 1), or ``None`` when it is not one."""
    if "%" not in re.sub(r'"[^"]*"|\\.', "", number_format):  # a quoted or escaped % is a literal
        return None
    return len(m.group(1)) if (m := re.search(r"\.(0+)", number_format)) else 0


def format_date(value: dt.datetime | dt.date | dt.time | dt.timedelta) -> str:
    """A date as an ISO date, with its time of day only when it has one."""
    if isinstance(value, dt.datetime):
        if value.time() == dt.time():
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds" if value.second else "minutes")
    if isinstance(value, dt.time):
        return value.isoformat(timespec="seconds" if value.second else "minutes")
    return str(value)  # a date, or a duration


def cell_text(value: Any, number_format: str | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return one_line(value)
    if isinstance(value, bool | int | float):
        return format_number(value, number_format or "General")
    if isinstance(value, dt.date | dt.time | dt.timedelta):
        return format_date(value)
    return one_line(str(value))


# A spreadsheet's lines as they are read: (its sheet's number from 1, the sheet's name, the line).
SheetLine = tuple[int, str, str]


@dataclass(frozen=True)
class TablePart:
    """A spreadsheet's text as one document (``number`` is ``None``), or one part of a spreadsheet too long for one.

    A part holds whole rows of one sheet, after that sheet's caption lines (repeated in each of its parts).
    """

    text: str
    number: int | None = None  # the part's number, from 1, in the order of the file
    sheet: str | None = None  # the name of the sheet whose rows a part holds
    last: bool = True  # no part follows


def split_parts(lines: Iterable[SheetLine], max_chars: int, what: str) -> Iterator[TablePart]:
    """The lines as one text when they fit in ``max_chars`` characters (a line break counted after each line);
    otherwise as parts, each at most ``max_chars`` characters unless one row alone is longer.

    Parts end at a sheet's end and before a row that would not fit; they never cut a row. At most ``max_chars``
    characters are held before the first part is yielded (to know whether the whole fits), then one part at a
    time, so a sheet of any length is read with bounded memory. Raises :class:`LoadError` when there are no lines.
    """
    stream = iter(lines)
    held: deque[SheetLine] = deque()
    size = 0
    for item in stream:
        held.append(item)
        size += len(item[2]) + 1
        if size > max_chars:
            break
    else:
        if not held:
            raise LoadError(f"no text found in the {what}")
        yield TablePart("\n".join(line for _, _, line in held))
        return
    yield from _pack(itertools.chain(_drain(held), stream), max_chars)


def _drain(held: deque[SheetLine]) -> Iterator[SheetLine]:
    """The held lines, each let go as it is taken."""
    while held:
        yield held.popleft()


def _pack(lines: Iterable[SheetLine], max_chars: int) -> Iterator[TablePart]:
    """The parts of :func:`split_parts`, numbered from 1."""
    number = 0
    sheet, name = 0, ""
    caption: list[str] = []  # the sheet's lines before its first row: its title, which each of its parts repeats
    part: list[str] = []
    size = 0
    for ordinal, sheet_name, line in lines:
        is_row = marker_kind(line) == "row"
        if ordinal != sheet:
            if part:
                number += 1
                yield TablePart("\n".join(part), number, name, last=False)
            sheet, name, caption, part, size = ordinal, sheet_name, [], [], 0
        elif is_row and len(part) > len(caption) and size + len(line) + 1 > max_chars:
            number += 1
            yield TablePart("\n".join(part), number, name, last=False)
            part, size = list(caption), sum(len(c) + 1 for c in caption)
        if not is_row and len(part) == len(caption):  # no row of this sheet yet
            caption.append(line)
        part.append(line)
        size += len(line) + 1
    yield TablePart("\n".join(part), number + 1, name)


def one_text(parts: Iterator[TablePart], options: ReadOptions) -> str:
    """The text of a spreadsheet that fits in one document; :class:`LoadError` for one that would be several."""
    with contextlib.closing(parts):
        first = next(parts)
        if first.number is not None:
            raise LoadError(f"too long (more than {options.max_chars} characters)")
        return first.text


# --- Word and HTML tables -------------------------------------------------------------------------------------


def docx_table_lines(table: Any, name: str) -> list[str]:
    """The lines of a python-docx table: a data table's rows under their headers, named ``name``; a layout table
    (one row or one column) as its cells' text, without markers. Merged cells are read from the grid: a cell
    spanning columns comes once per row, one spanning rows stands in each."""
    rows = []
    texts: list[str] = []  # each cell's own text, paragraphs kept, for a layout table
    width = 0
    for number, row in enumerate(table.rows, 1):
        cells: list[str] = [""] * getattr(row, "grid_cols_before", 0)
        spans: dict[int, int] = {}
        previous, start = None, 0
        for cell in row.cells:
            if cell._tc is previous:  # python-docx gives a cell merged across columns once per column
                spans[start] = len(cells)
                cells.append("")
                continue
            previous, start = cell._tc, len(cells)
            cells.append(one_line(cell.text))
            texts.append(cell.text)
        width = max(width, len(cells))
        rows.append(TableRow(number, cells, spans))
    if len(rows) < 2 or width < 2:
        return [text for text in texts if text.strip()]
    return list(table_lines(name, rows))


_BLOCKS = ("p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6")


def replace_html_tables(html: str) -> tuple[str, dict[str, list[str]]]:
    """``html`` with each data table replaced by a placeholder paragraph, and the table lines for each placeholder.

    Main-text extraction then decides whether a table belongs to the article like any paragraph, and
    :func:`restore_html_tables` puts the rows back. Data tables: no nested tables, at least two rows and two
    columns, no cell longer than a paragraph, and not mostly links (layout and menu tables stay as they are).
    Tables are named by their ``<caption>``, else 表1, 表2 … in page order.
    """
    try:
        # Bytes with their encoding named: lxml refuses a str that carries an XML encoding declaration (XHTML).
        tree = lxml_html.fromstring(html.encode("utf-8"), parser=lxml_html.HTMLParser(encoding="utf-8"))
    except Exception as exc:  # markup lxml cannot parse: the page is read without this step
        log.debug("tables not extracted: %s", exc)
        return html, {}
    found: dict[str, list[str]] = {}
    number = 0
    for table in list(tree.iter("table")):
        rows = html_rows(table)
        if rows is None:
            continue
        number += 1
        caption = table.find("caption")
        name = one_line(caption.text_content()) if caption is not None else ""
        body, header_rows = rows
        lines = list(table_lines(name or f"表{number}", body, header_rows=header_rows or None))
        if not lines:
            continue
        placeholder = f"RAGTABLE{number}PLACEHOLDER"
        found[placeholder] = lines
        paragraph = lxml_html.Element("p")
        paragraph.text = placeholder
        paragraph.tail = table.tail
        table.getparent().replace(table, paragraph)
    if not found:
        return html, {}
    return lxml_html.tostring(tree, encoding="unicode"), found


def restore_html_tables(text: str, tables: dict[str, list[str]]) -> str:
    """``text`` with each placeholder of :func:`replace_html_tables` replaced by its table's lines."""
    for placeholder, lines in tables.items():
        text = text.replace(placeholder, "\n" + "\n".join(lines) + "\n")
    return text


def html_rows(table: Any) -> tuple[list[TableRow], int] | None:
    """A data table's rows (``colspan`` and ``rowspan`` laid out on a grid) and how many lead as header rows;
    ``None`` for a layout table."""
    if table.find(".//table") is not None or table.get("role") == "presentation":
        return None
    trs = table.xpath("./tr|./thead/tr|./tbody/tr|./tfoot/tr")
    grid_rows = [tr.xpath("./td|./th") for tr in trs]
    if len([cells for cells in grid_rows if cells]) < 2 or max(len(cells) for cells in grid_rows) < 2:
        return None
    text = "".join(table.itertext())
    links = sum(len("".join(a.itertext()).strip()) for a in table.iter("a"))
    if links * 2 > len("".join(text.split())):
        return None
    for element in table.iter(*_BLOCKS):
        element.tail = " " + (element.tail or "")  # "精河县<br>博乐市" is two words in a cell, not one
    rows: list[TableRow] = []
    carried: dict[int, list[Any]] = {}  # column → [rows left, value, last column] of a cell spanning rows
    header_rows = 0
    leading = True
    for number, (tr, cells) in enumerate(zip(trs, grid_rows), 1):
        row = TableRow(number, [])
        column = 0
        for cell in cells:
            column = _place_carried(row, carried, column)
            value = one_line(cell.text_content())
            if len(value) > 500:
                return None
            colspan = _span_attr(cell, "colspan", 100)
            rowspan = _span_attr(cell, "rowspan", len(trs) - number + 1)
            row.cells.extend([""] * (column - len(row.cells)))
            row.cells.append(value)
            row.cells.extend([""] * (colspan - 1))
            if colspan > 1:
                row.spans[column] = column + colspan - 1
            if rowspan > 1:
                carried[column] = [rowspan - 1, value, column + colspan - 1]
            column += colspan
        _place_carried(row, carried, column, to_end=True)
        is_header = bool(cells) and (tr.getparent().tag == "thead" or all(c.tag == "th" for c in cells))
        leading = leading and is_header
        header_rows += leading
        rows.append(row)
    return rows, header_rows


def _place_carried(row: TableRow, carried: dict[int, list[Any]], column: int, to_end: bool = False) -> int:
    """Put the cells spanning rows from above into ``row`` at ``column`` (or at every column left, ``to_end``);
    returns the next free column."""
    while column in carried or (to_end and any(c >= column for c in carried)):
        if column not in carried:
            column += 1
            continue
        left, value, last = carried[column]
        row.cells.extend([""] * (column - len(row.cells)))
        row.cells.append(value)
        row.cells.extend([""] * (last - column))
        if last > column:
            row.spans[column] = last
        if left <= 1:
            del carried[column]
        else:
            carried[column][0] = left - 1
        column = last + 1
    return column


def _span_attr(cell: Any, name: str, limit: int) -> int:
    try:
        value = int(str(cell.get(name, "1")).strip() or 1)
    except ValueError:
        return 1
    return max(1, min(value, limit))

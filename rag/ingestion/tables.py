"""Spreadsheets and tables as text: one line per data row, each value under its column's header.

A row becomes ``〔表：2023年统计 第5行〕 县：精河县 | 妇女之家：120个`` (:func:`rag.ingestion.locations.row_marker`,
numbered as the spreadsheet numbers it), so a passage cut from the middle of a sheet still says which county a
number belongs to, and answers cite the sheet and row. The header is the first non-empty row; a title row above it
(one value across the width, such as a merged cell) becomes a caption line, and a header row with merged cells
takes the row below it as a second header row ("2023年/女性"). Values read as a spreadsheet shows them: numbers
without float noise, percentages as percentages, dates as ISO dates.

Readers: :func:`xlsx_parts` (openpyxl, streamed in read-only mode), :func:`xls_parts` (xlrd) and :func:`csv_parts`
(streamed, encoding detected) give a spreadsheet's text as one document, or, when it is longer than a document may
be, as parts of whole rows (:func:`split_parts`); :func:`read_xlsx`, :func:`read_xls` and :func:`read_csv` give the
text of one that fits. Each raises :class:`~rag.ingestion.loaders.LoadError` with the reason a file cannot be used.
Tables inside Word documents and web pages go through :func:`docx_table_lines` and :func:`replace_html_tables`.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import functools
import itertools
import logging
import re
import zipfile
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

from .loaders import LoadError, ReadOptions, decode_bytes
from .locations import marker_kind, row_marker

log = logging.getLogger(__name__)

ENCRYPTED = "the spreadsheet is password-protected or encrypted"

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # OLE compound file: .xls, and encrypted .xlsx/.docx
# An encrypted Office Open XML file is a compound file holding this stream (its name is stored as UTF-16LE).
_ENCRYPTED_STREAM = "EncryptedPackage".encode("utf-16-le")
_HEADER_ROWS_MAX = 3
_LOOKAHEAD = 8  # non-empty rows read ahead to find the caption and the header rows
_CSV_SAMPLE_BYTES = 256_000
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


def _cell_text(value: Any, number_format: str | None = None) -> str:
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


def _one_text(parts: Iterator[TablePart], options: ReadOptions) -> str:
    """The text of a spreadsheet that fits in one document; :class:`LoadError` for one that would be several."""
    with contextlib.closing(parts):
        first = next(parts)
        if first.number is not None:
            raise LoadError(f"too long (more than {options.max_chars} characters)")
        return first.text


# --- file kinds -----------------------------------------------------------------------------------------------


def _kind(path: Path) -> str:
    """What a spreadsheet file really holds, whatever its suffix says: zip, cfb, html, text or other.

    Files are often renamed (an .xls saved as .xlsx), and systems that "export to Excel" often write an HTML table
    or CSV text under an .xls name.
    """
    with open(path, "rb") as fh:
        head = fh.read(2048)
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head.startswith(_CFB_MAGIC):
        return "cfb"
    text = head.lstrip(codecs.BOM_UTF8).lstrip().lower()
    if text.startswith(b"<") and any(tag in text for tag in (b"<html", b"<table", b"<!doctype html")):
        return "html"
    if b"\0" not in head and any(sep in head.split(b"\n", 1)[0] for sep in (b",", b"\t")):
        return "text"
    return "other"


def is_encrypted_office_file(path: Path) -> bool:
    """Whether ``path`` is a password-protected Office Open XML file (a compound file with an encrypted package)."""
    with open(path, "rb") as fh:
        if fh.read(8) != _CFB_MAGIC:
            return False
        fh.seek(0)
        tail = b""
        while chunk := fh.read(1 << 20):
            if _ENCRYPTED_STREAM in tail + chunk:
                return True
            tail = chunk[-len(_ENCRYPTED_STREAM) :]
    return False


# --- .xlsx ----------------------------------------------------------------------------------------------------


def xlsx_parts(path: Path, options: ReadOptions) -> Iterator[TablePart]:
    """Every worksheet's data rows (:func:`table_lines`) as one text or in parts (:func:`split_parts`), read in
    openpyxl's read-only mode: memory stays bounded by a part, not by the sheet. Raises :class:`LoadError` for an
    encrypted, damaged or empty workbook."""
    kind = _kind(path)
    if kind == "cfb":
        if is_encrypted_office_file(path):
            raise LoadError(ENCRYPTED)
        return _biff_parts(path, options)  # an .xls under another name
    if kind == "html":
        return _html_export_parts(path, options)
    if kind != "zip":
        raise LoadError(f"not a readable {path.suffix} spreadsheet (not a zip file: damaged, or another format)")
    return _ooxml_parts(path, options)


def read_xlsx(path: Path, options: ReadOptions) -> str:
    """The text of :func:`xlsx_parts` for a workbook that fits in one document (:class:`LoadError` otherwise)."""
    return _one_text(xlsx_parts(path, options), options)


def _ooxml_parts(path: Path, options: ReadOptions) -> Iterator[TablePart]:
    try:
        import openpyxl
    except ImportError:
        raise LoadError("reading .xlsx files needs openpyxl (pip install openpyxl)") from None
    try:
        with open(path, "rb") as fh:
            # A file object: openpyxl checks a file name's suffix, and an .xlsx may come here as an .xls.
            workbook = openpyxl.load_workbook(fh, read_only=True, data_only=True)
            try:
                yield from split_parts(_workbook_lines(workbook), options.max_chars, "spreadsheet")
            finally:
                workbook.close()
    except (LoadError, OSError):
        raise
    except Exception as exc:  # zipfile, zlib and XML errors, missing parts: all mean a damaged file
        raise LoadError(f"not a readable {path.suffix} spreadsheet ({type(exc).__name__}: {exc})") from None


def _workbook_lines(workbook: Any) -> Iterator[SheetLine]:
    archive = getattr(workbook, "_archive", None)
    for ordinal, sheet in enumerate(workbook.worksheets, 1):
        sheet_path = getattr(sheet, "_worksheet_path", None)
        merges = _merged_ranges(archive, sheet_path) if archive is not None and sheet_path else []
        sheet.reset_dimensions()  # the stored dimension may be wrong, and iteration stops at it
        rows = (TableRow(number, [_xlsx_cell(cell) for cell in cells])
                for number, cells in enumerate(sheet.iter_rows(), 1))
        for line in table_lines(sheet.title, with_merges(rows, merges)):
            yield ordinal, sheet.title, line


def _xlsx_cell(cell: Any) -> str:
    value = cell.value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format_number(value, cell.number_format or "General")
    return _cell_text(value)


_MERGE_CELL = re.compile(rb'<(?:\w+:)?mergeCell\s[^>]*?\bref="([A-Za-z]{1,3}[0-9]+:[A-Za-z]{1,3}[0-9]+)"')


def _merged_ranges(archive: zipfile.ZipFile, member: str) -> list[tuple[int, int, int, int]]:
    """The merged ranges ``(min_row, min_col, max_row, max_col)`` of one sheet, found in its XML by a byte scan.

    Read-only mode does not report merged cells, and they come after the sheet's data; scanning the decompressed
    XML costs a fraction of parsing it and holds one block at a time.
    """
    from openpyxl.utils.cell import range_boundaries

    found: list[bytes] = []
    tail = b""
    with archive.open(member) as fh:
        while chunk := fh.read(1 << 20):
            data = tail + chunk
            keep = max(len(data) - 512, 0)  # a tag cut at the block's end is found in the next round
            if b"mergeCell" in data:
                found.extend(m.group(1) for m in _MERGE_CELL.finditer(data) if m.start() < keep)
            tail = data[keep:]
    found.extend(m.group(1) for m in _MERGE_CELL.finditer(tail))
    out = []
    for ref in found:
        min_col, min_row, max_col, max_row = range_boundaries(ref.decode("ascii"))
        out.append((min_row, min_col, max_row, max_col))
    return out


# --- .xls -----------------------------------------------------------------------------------------------------


def xls_parts(path: Path, options: ReadOptions) -> Iterator[TablePart]:
    """Every sheet of an Excel 97–2003 workbook (xlrd), with merged cells, as one text or in parts
    (:func:`split_parts`); an .xls that is really an .xlsx, an HTML table or CSV text (what many systems export)
    is read as what it is."""
    kind = _kind(path)
    if kind == "zip":
        return _ooxml_parts(path, options)
    if kind == "html":
        return _html_export_parts(path, options)
    if kind == "text":
        return csv_parts(path, options)
    return _biff_parts(path, options)


def read_xls(path: Path, options: ReadOptions) -> str:
    """The text of :func:`xls_parts` for a workbook that fits in one document (:class:`LoadError` otherwise)."""
    return _one_text(xls_parts(path, options), options)


class _XlrdLog:
    """xlrd writes its warnings to a file (stdout by default, which carries results); send them to the log."""

    def write(self, text: str) -> None:
        if text.strip():
            log.debug("xlrd: %s", text.strip())

    def flush(self) -> None:
        pass


def _biff_parts(path: Path, options: ReadOptions) -> Iterator[TablePart]:
    try:
        import xlrd
    except ImportError:
        raise LoadError("reading .xls files needs xlrd (pip install xlrd)") from None
    try:
        book = xlrd.open_workbook(str(path), formatting_info=True, on_demand=True, ragged_rows=True,
                                   logfile=_XlrdLog())
    except xlrd.XLRDError as exc:
        if "encrypted" in str(exc).lower() or is_encrypted_office_file(path):
            raise LoadError(ENCRYPTED) from None
        raise LoadError(f"not a readable .xls spreadsheet ({exc})") from None
    except OSError:
        raise
    except Exception as exc:  # xlrd fails on damaged files with assertion, struct and index errors
        raise LoadError(f"not a readable .xls spreadsheet ({type(exc).__name__}: {exc})") from None
    try:
        yield from split_parts(_biff_lines(book), options.max_chars, "spreadsheet")
    except LoadError:
        raise
    except Exception as exc:
        raise LoadError(f"not a readable .xls spreadsheet ({type(exc).__name__}: {exc})") from None
    finally:
        book.release_resources()


def _biff_lines(book: Any) -> Iterator[SheetLine]:
    for index in range(book.nsheets):
        sheet = book.sheet_by_index(index)
        merges = [(rlo + 1, clo + 1, rhi, chi) for rlo, rhi, clo, chi in sheet.merged_cells]
        rows = (TableRow(r + 1, [_xls_cell(book, sheet, r, c) for c in range(sheet.row_len(r))])
                for r in range(sheet.nrows))
        for line in table_lines(sheet.name, with_merges(rows, merges)):
            yield index + 1, sheet.name, line
        book.unload_sheet(index)


def _xls_cell(book: Any, sheet: Any, row: int, column: int) -> str:
    import xlrd

    cell = sheet.cell(row, column)
    if cell.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK):
        return ""
    if cell.ctype == xlrd.XL_CELL_TEXT:
        return one_line(cell.value)
    if cell.ctype == xlrd.XL_CELL_BOOLEAN:
        return "TRUE" if cell.value else "FALSE"
    if cell.ctype == xlrd.XL_CELL_ERROR:
        return xlrd.error_text_from_code.get(cell.value, "#ERROR")
    if cell.ctype == xlrd.XL_CELL_DATE:
        try:
            when = xlrd.xldate.xldate_as_datetime(cell.value, book.datemode)
        except (xlrd.xldate.XLDateError, ValueError, OverflowError):
            return format_number(cell.value)
        return format_date(when.time() if cell.value < 1 else when)
    return format_number(cell.value, _xls_number_format(book, sheet, row, column))


def _xls_number_format(book: Any, sheet: Any, row: int, column: int) -> str:
    try:
        xf = book.xf_list[sheet.cell_xf_index(row, column)]
        return book.format_map[xf.format_key].format_str
    except (IndexError, KeyError, AttributeError):  # a file without formatting records
        return "General"


# --- CSV ------------------------------------------------------------------------------------------------------


def csv_parts(path: Path, options: ReadOptions) -> Iterator[TablePart]:
    """A CSV (or tab-separated) file's data rows, its sheet named by the file's stem, as one text or in parts
    (:func:`split_parts`); streamed line by line in the encoding detected from its start (UTF-8 with or without
    BOM, UTF-16, GB18030, Big5). A line longer than a document may be is refused before it is split into fields
    (:func:`_bounded_lines`)."""
    encoding, fallback = _csv_encoding(path)
    try:
        with open(path, encoding=encoding, newline="") as fh:
            sample = fh.read(64_000)
            fh.seek(0)
            reader = csv.reader(_bounded_lines(fh, options.max_chars),
                                delimiter=_delimiter(sample, complete=len(sample) < 64_000))
            rows = (TableRow(number, [one_line(v) for v in values]) for number, values in enumerate(reader, 1))
            lines = ((1, path.stem, line) for line in table_lines(path.stem, rows))
            yield from split_parts(lines, options.max_chars, "CSV file")
    except csv.Error as exc:
        raise LoadError(f"not a readable CSV file ({exc})") from None
    except UnicodeDecodeError as exc:
        if fallback:
            raise LoadError(f"unknown encoding (not UTF-8 or GB18030: {exc.reason} at byte {exc.start})") from None
        raise LoadError(f"does not decode as {encoding} throughout ({exc.reason} at byte {exc.start})") from None


def _bounded_lines(fh: TextIO, limit: int) -> Iterator[str]:
    """The lines of the text file ``fh``, each read with at most ``limit`` + 1 characters; :class:`LoadError` for a
    longer one. Split into fields, one line of 32 MB of commas took 1.1 GB and 13 s, for a row that is then refused
    as longer than a document may be anyway."""
    number = 0
    while line := fh.readline(limit + 1):
        number += 1
        if len(line) > limit and not line.endswith(("\n", "\r")):
            raise LoadError(f"line {number} is longer than a document may be ({limit} characters): not a table")
        yield line


def read_csv(path: Path, options: ReadOptions) -> str:
    """The text of :func:`csv_parts` for a file that fits in one document (:class:`LoadError` otherwise)."""
    return _one_text(csv_parts(path, options), options)


def _csv_encoding(path: Path) -> tuple[str, bool]:
    """The encoding of a text file from its first bytes, and whether it is GB18030 for want of UTF-8 (the first
    bytes were ASCII, and UTF-8 fails further on)."""
    with open(path, "rb") as fh:
        sample = fh.read(_CSV_SAMPLE_BYTES)
        complete = not fh.read(1)
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=complete)
    except UnicodeDecodeError:
        pass
    else:
        if complete or not sample.isascii() or _is_utf8(path):
            return "utf-8", False
        # Plain ASCII first and not UTF-8 further on: what Chinese Windows programs write. This is settled before
        # reading, as a long file's first parts may be indexed before its end is read.
        return "gb18030", True
    # Cut at a line end so that no character is cut in two (0x0A is never part of a GB18030 or Big5 character).
    cut = sample if complete or b"\n" not in sample else sample[: sample.rindex(b"\n") + 1]
    _, encoding = decode_bytes(cut)
    return encoding, False


def _is_utf8(path: Path) -> bool:
    """Whether the whole file decodes as UTF-8 (read a block at a time)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _delimiter(sample: str, complete: bool) -> str:
    """Comma, tab or semicolon: whichever splits the first lines into the most rows of one width (over one)."""
    lines = sample.splitlines()[:50]
    if not complete and len(lines) > 1:
        lines = lines[:-1]  # cut off mid-line
    best, best_score = ",", 0
    for delimiter in ",\t;":
        widths = [len(r) for r in csv.reader(lines, delimiter=delimiter) if any(r)]
        common = max(set(widths), key=widths.count, default=1)
        score = widths.count(common) if common > 1 else 0
        if score > best_score:
            best, best_score = delimiter, score
    return best


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
    from lxml import html as lxml_html

    try:
        # Bytes with their encoding named: lxml refuses a str that carries an XML encoding declaration (XHTML).
        tree = lxml_html.fromstring(html.encode("utf-8"), parser=lxml_html.HTMLParser(encoding="utf-8"))
    except Exception as exc:  # markup lxml cannot parse: the page is read without this step
        log.debug("tables not extracted: %s", exc)
        return html, {}
    found: dict[str, list[str]] = {}
    number = 0
    for table in list(tree.iter("table")):
        rows = _html_rows(table)
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


def _html_rows(table: Any) -> tuple[list[TableRow], int] | None:
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


def _html_export_parts(path: Path, options: ReadOptions) -> Iterator[TablePart]:
    """A spreadsheet file that is an HTML page of tables (what many systems save as .xls): every table's rows, the
    first named by the file's stem, as one text or in parts (:func:`split_parts`)."""
    from lxml import html as lxml_html

    text, _ = decode_bytes(path.read_bytes())
    try:
        tree = lxml_html.fromstring(text.encode("utf-8"), parser=lxml_html.HTMLParser(encoding="utf-8"))
    except Exception as exc:
        raise LoadError(f"not a readable {path.suffix} spreadsheet (HTML: {exc})") from None
    return split_parts(_html_export_lines(tree, path.stem), options.max_chars, "spreadsheet")


def _html_export_lines(tree: Any, stem: str) -> Iterator[SheetLine]:
    for number, table in enumerate(tree.iter("table"), 1):
        rows = _html_rows(table)
        if rows is not None:
            body, header_rows = rows
            name = stem if number == 1 else f"{stem} 表{number}"
            for line in table_lines(name, body, header_rows=header_rows or None):
                yield number, name, line

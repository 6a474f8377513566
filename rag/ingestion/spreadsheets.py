"""Spreadsheet files as text: ``.xlsx``/``.xlsm`` (openpyxl, streamed in read-only mode), ``.xls`` (xlrd) and
``.csv`` (streamed, encoding detected), whatever a file really holds (an .xls saved as .xlsx, an HTML table or CSV
text under an .xls name: :func:`_kind`).

:func:`xlsx_parts`, :func:`xls_parts` and :func:`csv_parts` give a spreadsheet's text as one document, or, when it is
longer than a document may be, as parts of whole rows (:func:`rag.ingestion.tables.split_parts`); :func:`read_xlsx`,
:func:`read_xls` and :func:`read_csv` give the text of one that fits. Each raises
:class:`~rag.ingestion.reading.LoadError` with the reason a file cannot be used. The rows become lines through
:func:`rag.ingestion.tables.table_lines`.
"""

from __future__ import annotations

import codecs
import csv
import logging
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from lxml import html as lxml_html

from .reading import LoadError, ReadOptions, decode_bytes
from .tables import (
    SheetLine,
    TablePart,
    TableRow,
    cell_text,
    format_date,
    format_number,
    html_rows,
    one_line,
    one_text,
    split_parts,
    table_lines,
    with_merges,
)

log = logging.getLogger(__name__)

ENCRYPTED = "the spreadsheet is password-protected or encrypted"

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # OLE compound file: .xls, and encrypted .xlsx/.docx
# An encrypted Office Open XML file is a compound file holding this stream (its name is stored as UTF-16LE).
_ENCRYPTED_STREAM = "EncryptedPackage".encode("utf-16-le")
_CSV_SAMPLE_BYTES = 256_000




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
    return one_text(xlsx_parts(path, options), options)


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
    return cell_text(value)


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
    return one_text(xls_parts(path, options), options)


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
    return one_text(csv_parts(path, options), options)


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


def _html_export_parts(path: Path, options: ReadOptions) -> Iterator[TablePart]:
    """A spreadsheet file that is an HTML page of tables (what many systems save as .xls): every table's rows, the
    first named by the file's stem, as one text or in parts (:func:`split_parts`)."""
    text, _ = decode_bytes(path.read_bytes())
    try:
        tree = lxml_html.fromstring(text.encode("utf-8"), parser=lxml_html.HTMLParser(encoding="utf-8"))
    except Exception as exc:
        raise LoadError(f"not a readable {path.suffix} spreadsheet (HTML: {exc})") from None
    return split_parts(_html_export_lines(tree, path.stem), options.max_chars, "spreadsheet")


def _html_export_lines(tree: Any, stem: str) -> Iterator[SheetLine]:
    for number, table in enumerate(tree.iter("table"), 1):
        rows = html_rows(table)
        if rows is not None:
            body, header_rows = rows
            name = stem if number == 1 else f"{stem} 表{number}"
            for line in table_lines(name, body, header_rows=header_rows or None):
                yield number, name, line

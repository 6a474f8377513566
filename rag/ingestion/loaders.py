"""Read files into raw documents: encodings, formats, and a reason for every file we skip.

Supported: ``.txt .md .html .htm .docx .pdf .jsonl``, spreadsheets (``.xlsx .xls .csv``), slides (``.pptx``)
and, with the OCR extra, images and scanned PDF pages; each format that is not plain text has a reader in
:data:`READERS`. Paged and tabular formats mark pages, slides, sheets and rows in the text
(:mod:`rag.ingestion.locations`) so that answers cite them. A spreadsheet longer than a document may be becomes
several documents, each a run of whole rows (:data:`PART_READERS`). Document ids keep where a document came from
(see :func:`iter_documents`), and every document records its ``source``: the absolute path of its file, or the
origin an upload was given.
"""


from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lxml import html as lxml_html

from ..normalize import clean_text_field
from .archives import ArchiveRefused, ZipLimits, check_archive
from .locations import marker_kind, page_marker
from .ocr import ocr_pdf_pages, read_image
from .reading import (
    OCR_EXTRA,
    LoadError,
    NamedFile,
    OcrUnavailableError,
    PartlyRead,
    RawDocument,
    ReadOptions,
    Skipped,
    decode_bytes,
)
from .slides import read_pptx
from .spreadsheets import csv_parts, is_encrypted_office_file, read_csv, read_xls, read_xlsx, xls_parts, xlsx_parts
from .tables import TablePart, docx_table_lines, replace_html_tables, restore_html_tables

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".text"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


def html_to_text(html: str) -> tuple[str, str | None, dict[str, Any]]:
    """Main text of an HTML page (trafilatura), falling back to all visible text; returns (text, title, metadata).

    A data table in the main text comes out one line per row, each value under its column's header and the row
    marked as a row of the table's caption or 表1, 表2 … (:func:`rag.ingestion.tables.replace_html_tables`).
    """
    tables: dict[str, list[str]] = {}
    if "<table" in html.lower():
        html, tables = replace_html_tables(html)
    text, title, meta = _page_text(html)
    if tables:
        text = restore_html_tables(text, tables)
    return text, title, meta


def _page_text(html: str) -> tuple[str, str | None, dict[str, Any]]:
    meta: dict[str, Any] = {}
    title: str | None = None
    try:
        import trafilatura  # 0.3 s to import: only once a web page is read

        doc = trafilatura.bare_extraction(html, include_comments=False, include_tables=True, favor_recall=True,
                                          with_metadata=True)
        if doc is not None:
            data = doc.as_dict() if hasattr(doc, "as_dict") else dict(doc)
            title = data.get("title") or None
            for key in ("date", "author", "sitename"):
                if data.get(key):
                    meta[key] = data[key]
            text = data.get("text") or ""
            if len(text.strip()) >= 20:
                return text, title, meta
    except Exception as exc:  # trafilatura raises many kinds on odd markup; the fallback still works
        log.debug("trafilatura failed (%s); using the plain-text fallback", exc)
    try:
        tree = lxml_html.fromstring(html)
    except Exception as exc:
        raise LoadError(f"unreadable HTML ({exc})") from None
    for bad in tree.xpath("//script|//style|//noscript|//template"):
        bad.drop_tree()
    if title is None:
        found = tree.findtext(".//title")
        title = found.strip() if found and found.strip() else None
    for block in tree.xpath("//p|//div|//br|//li|//h1|//h2|//h3|//h4|//h5|//h6|//tr|//section|//article"):
        block.tail = "\n" + (block.tail or "")
    return tree.text_content(), title, meta


def _read_docx(path: Path, options: ReadOptions) -> str:
    """Paragraphs and tables in document order; a data table's rows keep their column headers and are marked as
    rows of 表1, 表2 … (:func:`rag.ingestion.tables.docx_table_lines`)."""
    import docx  # python-docx and pypdf are imported once a file of theirs is read
    from docx.table import Table

    if is_encrypted_office_file(path):
        raise LoadError("the document is password-protected or encrypted")
    try:
        document = docx.Document(str(path))
    except Exception as exc:
        raise LoadError(f"not a readable .docx ({type(exc).__name__})") from None
    parts: list[str] = []
    tables = 0
    for block in document.iter_inner_content():
        if not isinstance(block, Table):
            parts.append(block.text)
            continue
        lines = docx_table_lines(block, f"表{tables + 1}")
        tables += any(marker_kind(line) == "row" for line in lines)
        parts.extend(lines)
    return "\n".join(parts)


def _read_pdf(path: Path, options: ReadOptions) -> str | PartlyRead:
    """The PDF's pages, each after its page marker; pages without a text layer are read by OCR when the OCR extra
    is installed. Without it, a PDF with no text layer at all raises :class:`LoadError` saying how to get it read,
    and the other pages of one with some are read (:class:`PartlyRead`, naming the pages left out)."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoadError("the PDF is password-protected")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, OSError, NotImplementedError) as exc:
        raise LoadError(f"not a readable PDF ({exc})") from None
    scanned = [n for n, text in enumerate(pages, 1) if not text.strip()]
    missing = ""
    if scanned:
        try:
            for number, text in ocr_pdf_pages(path, scanned, options).items():
                pages[number - 1] = text
        except OcrUnavailableError as exc:
            missing = exc.missing
        except ImportError as exc:  # a package OCR needs cannot be imported
            missing = exc.name or str(exc)
    if missing and len(scanned) == len(pages):
        raise LoadError(f"PDF has no text layer: scanned pages need the OCR extra ({OCR_EXTRA}; {missing} is not "
                        "installed)")
    if not any(text.strip() for text in pages):
        raise LoadError("no text found in the PDF")
    text = "\n".join(f"{page_marker(n)}\n{text}" for n, text in enumerate(pages, 1) if text.strip())
    if not missing:
        return text
    numbers = ", ".join(map(str, scanned))
    return PartlyRead(text, f"page{'s' if len(scanned) > 1 else ''} {numbers}",
                      f"no text layer: read by OCR with the OCR extra ({OCR_EXTRA}; {missing} is not installed), "
                      "then ingest the file again; the other pages were ingested")


Reader = Callable[[Path, ReadOptions], str | PartlyRead]
PartReader = Callable[[Path, ReadOptions], Iterator[TablePart]]


# Readers of the formats that are not plain text, by suffix: the file's text, with its pages, slides, sheets and
# rows marked (rag.ingestion.locations).
READERS: dict[str, Reader] = {
    ".docx": _read_docx,
    ".pdf": _read_pdf,
    ".xlsx": read_xlsx,
    ".xlsm": read_xlsx,
    ".xls": read_xls,
    ".csv": read_csv,
    ".pptx": read_pptx,
    **dict.fromkeys(IMAGE_SUFFIXES, read_image),
}
# Readers of the formats whose file may be several documents: a spreadsheet whose text is longer than a document
# may be (ReadOptions.max_chars) is read as runs of whole rows (rag.ingestion.tables.split_parts). READERS gives
# the text of one that fits.
PART_READERS: dict[str, PartReader] = {
    ".xlsx": xlsx_parts,
    ".xlsm": xlsx_parts,
    ".xls": xls_parts,
    ".csv": csv_parts,
}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | set(READERS) | {".jsonl"}
# The formats whose readers open zip packages (an .xls may be an .xlsx renamed): checked before they are parsed.
ZIP_SUFFIXES = {".docx", ".xlsx", ".xlsm", ".xls", ".pptx"}


def read_file(path: Path, options: ReadOptions) -> tuple[str, bool]:
    """Text of one non-JSONL file and whether it is HTML; raises :class:`LoadError` with the reason (for a
    spreadsheet too long for one document too: :func:`iter_documents` reads that in parts). Of a file read only in
    part (:class:`PartlyRead`), the text read: :func:`iter_documents` reports what is left out."""
    text, is_html = _read_text(path, options)
    return (text.text if isinstance(text, PartlyRead) else text), is_html


def _read_text(path: Path, options: ReadOptions) -> tuple[str | PartlyRead, bool]:
    suffix = path.suffix.lower()
    _check_size(path, options)
    if suffix in READERS:
        return READERS[suffix](path, options), False
    text, _ = decode_bytes(path.read_bytes())
    is_html = suffix in HTML_SUFFIXES or (suffix in TEXT_SUFFIXES and _is_markup(text))
    return text, is_html


def _check_size(path: Path, options: ReadOptions) -> None:
    """Raise :class:`LoadError` for an empty file, one over the size limit, or a zip-based file that would unpack
    past :attr:`ReadOptions.zip_limits` (checked here, before any parser opens it)."""
    size = path.stat().st_size
    if size == 0:
        raise LoadError("empty file")
    if size > options.max_bytes:
        raise LoadError(f"file too large ({size / 1e6:.1f} MB > {options.max_bytes / 1e6:.0f} MB limit)")
    if path.suffix.lower() in ZIP_SUFFIXES:
        try:
            check_archive(path, options.zip_limits)
        except ArchiveRefused as exc:
            raise LoadError(str(exc)) from None


def _is_markup(text: str) -> bool:
    head = text[:2048].lower()
    return "<html" in head or "<!doctype html" in head or len(re.findall(r"</(p|div|span|a|li)>", head)) >= 5


def iter_jsonl(path: Path, root: str, max_chars: int, source: str | None = None) -> Iterator[RawDocument | Skipped]:
    """One document per JSON line: ``{"id", "text", ...}``; other fields become metadata.

    ``source`` is the origin recorded for every line (default: the file's path). A file that cannot be opened or
    read half-way is one :class:`Skipped`, after the lines already read.
    """
    source = source or display_path(path)
    lineno = 0
    try:
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if raw.strip():
                    yield _jsonl_line(raw, f"{source}:{lineno}", source, root, max_chars)
    except OSError as exc:
        where = f"{source}:{lineno}" if lineno else source
        yield Skipped(where, f"cannot read ({exc.strerror or exc})")


def _jsonl_line(raw: bytes, where: str, source: str, root: str, max_chars: int) -> RawDocument | Skipped:
    try:
        line, _ = decode_bytes(raw)
        obj = json.loads(line)
    except (LoadError, json.JSONDecodeError) as exc:
        return Skipped(where, f"not a JSON object ({exc})")
    if not isinstance(obj, dict) or "text" not in obj or not isinstance(obj["text"], str):
        return Skipped(where, 'line lacks a string "text" field')
    raw_id = obj.get("id")
    doc_id = clean_text_field(str(raw_id)).strip() if raw_id not in (None, "") else ""
    doc_id = doc_id or where.rsplit("/", 1)[-1]  # a line without an id is named by its file and line: "news.jsonl:12"
    text = clean_text_field(obj.pop("text"))
    if not text.strip():
        return Skipped(where, f"document {doc_id} has empty text")
    if len(text) > max_chars:
        return Skipped(where, f"document {doc_id} too long ({len(text)} > {max_chars} characters)")
    obj.pop("id", None)
    title = clean_text_field(obj["title"]) if isinstance(obj.get("title"), str) else None
    return RawDocument(doc_id=doc_id, text=text, source=source, root=root, title=title, is_html=_is_markup(text),
                       metadata=obj, whole_file=False)


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as text that can be shown and stored: a file name in GBK/GB18030 or Big5 bytes (common on disks
    from Chinese Windows machines) is decoded as such, and bytes nothing decodes become U+FFFD."""
    raw = os.fsencode(path)
    for encoding in ("utf-8", "gb18030", "big5"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", errors="replace")


def iter_documents(paths: Sequence[str | os.PathLike[str] | NamedFile], max_file_mb: float = 64.0,
                   max_document_chars: int = 2_000_000, cache_dir: Path | None = None,
                   progress: bool = False, zip_limits: ZipLimits | None = None) -> Iterator[RawDocument | Skipped]:
    """Walk files and folders, yielding a :class:`RawDocument` or a :class:`Skipped` for each input; never raises
    for one bad input (whatever a file's reader raises costs that file only; ``KeyboardInterrupt`` still stops).
    A zip-based file is checked against ``zip_limits`` (default :class:`ZipLimits`) before it is parsed. A file
    read only in part (a PDF whose scanned pages need the OCR extra) is its document followed by a
    :class:`Skipped` naming what was left out (``scan.pdf (pages 2, 5)``).

    Ids (what answers cite and ``rag show`` takes): a file in a folder given is its path relative to that folder;
    a file given by itself is its absolute path; a :class:`NamedFile` (an upload) takes the id it was given; a
    JSONL line takes its ``id`` field. A spreadsheet too long for one document is several, named by the file's id
    and their number: ``统计.xlsx#1``, ``统计.xlsx#2`` …
    """
    options = ReadOptions(int(max_file_mb * 1e6), cache_dir, progress, max_chars=max_document_chars,
                          zip_limits=zip_limits or ZipLimits())
    for given in paths:
        if isinstance(given, NamedFile):
            yield from _read_one(given.path, given.doc_id, given.source, given.source, options, max_document_chars)
            continue
        given_path = Path(given)
        if not given_path.exists():
            yield Skipped(display_path(given), "no such file or folder", missing=True)
            continue
        base = given_path.resolve()
        root = display_path(base)
        if not given_path.is_dir():
            yield from _read_one(base, root, root, root, options, max_document_chars)
            continue
        for path in _walk(base):
            if isinstance(path, Skipped):
                yield path
                continue
            doc_id = display_path(path.relative_to(base).as_posix())
            yield from _read_one(path, doc_id, display_path(path), root, options, max_document_chars)


def _walk(folder: Path) -> Iterator[Path | Skipped]:
    """Files under ``folder`` in sorted order, hidden ones left out; a subfolder that cannot be listed is a
    :class:`Skipped` (its files keep their indexed versions)."""
    problems: list[OSError] = []
    found: list[Path] = []
    for top, dirs, files in os.walk(folder, onerror=problems.append):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(top) / f for f in files if not f.startswith("."))
    for exc in problems:
        yield Skipped(display_path(exc.filename or folder), f"cannot list folder ({exc.strerror or exc})")
    yield from sorted(p for p in found if p.is_file())


def _read_one(path: Path, doc_id: str, source: str, root: str, options: ReadOptions,
              max_chars: int) -> Iterator[RawDocument | Skipped]:
    """The document(s) of one file: one per file, or one per line of a ``.jsonl``."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        yield Skipped(source, f"unsupported file type {suffix or '(none)'}", doc_id, root)
        return
    if suffix == ".jsonl":
        try:
            yield from iter_jsonl(path, root, max_chars, source)
        except Exception as exc:
            yield _failed(source, exc, doc_id, root)
        return
    if suffix in PART_READERS:
        yield from _read_parts(path, PART_READERS[suffix], doc_id, source, root, options)
        return
    try:
        text, is_html = _read_text(path, options)
    except LoadError as exc:
        yield Skipped(source, str(exc), doc_id, root)
        return
    except OSError as exc:
        yield Skipped(source, f"cannot read ({exc.strerror or exc})", doc_id, root)
        return
    except Exception as exc:
        yield _failed(source, exc, doc_id, root)
        return
    partly = text if isinstance(text, PartlyRead) else None
    text = clean_text_field(partly.text if partly else text)
    if len(text) > max_chars:
        yield Skipped(source, f"too long ({len(text)} > {max_chars} characters)", doc_id, root)
        return
    yield RawDocument(doc_id=doc_id, text=text, source=source, root=root, is_html=is_html)
    if partly:
        # No doc_id or root: the file's document is there, so --sync has nothing to keep for this entry.
        yield Skipped(f"{source} ({partly.left_out})", partly.reason)


def _failed(source: str, exc: Exception, doc_id: str, root: str) -> Skipped:
    """The :class:`Skipped` for a file whose reader failed in a way no reader expects (a third-party parser's own
    error, an ImportError, MemoryError or RecursionError): the batch goes on. The reason is reported with the
    other skipped files; the traceback is logged at DEBUG level, for whoever looks into it, not shown to users."""
    log.debug("reading %s failed", source, exc_info=exc)
    detail = " ".join(str(exc).split())[:200]
    return Skipped(source, f"could not be read ({type(exc).__name__}{': ' + detail if detail else ''})", doc_id, root)


def _read_parts(path: Path, reader: PartReader, doc_id: str, source: str, root: str,
                options: ReadOptions) -> Iterator[RawDocument | Skipped]:
    """A spreadsheet as one document named ``doc_id``, or, when its text is longer than a document may be, as one
    document per part (``doc_id#1``, ``doc_id#2`` …, in the order of the file), each recording its part's number
    and sheet in its metadata; the last lists them all (:attr:`RawDocument.file_parts`).

    A file that fails half-way is a :class:`Skipped` after the parts already read; a part longer than a document
    may be (one very long row) is a :class:`Skipped` named by its part's id, and the other parts are read.
    """
    ids: list[str] = []
    try:
        _check_size(path, options)
        for part in reader(path, options):
            text = clean_text_field(part.text)
            if part.number is None:  # the whole file, the reader's only part
                yield RawDocument(doc_id=doc_id, text=text, source=source, root=root)
                continue
            part_id = f"{doc_id}#{part.number}"
            ids.append(part_id)
            if len(text) > options.max_chars:
                yield Skipped(source, f"{part_id} too long ({len(text)} > {options.max_chars} characters: a row longer "
                                      "than a document may be)", part_id, root)
                continue
            yield RawDocument(doc_id=part_id, text=text, source=source, root=root,
                              metadata={"part": part.number, "sheet": part.sheet}, whole_file=False,
                              file_parts=tuple(ids) if part.last else ())
    except LoadError as exc:
        reason = f"{exc} (in part {len(ids) + 1}; the parts before it were read)" if ids else str(exc)
        yield Skipped(source, reason, doc_id, root)
    except OSError as exc:
        yield Skipped(source, f"cannot read ({exc.strerror or exc})", doc_id, root)
    except Exception as exc:
        skipped = _failed(source, exc, doc_id, root)
        if ids:
            skipped.reason += f" (in part {len(ids) + 1}; the parts before it were read)"
        yield skipped

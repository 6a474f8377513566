"""What every reader of a file takes and gives, in one small module that the readers and the loader share.

Readers (:mod:`rag.ingestion.loaders` for text, Word and PDF; :mod:`~rag.ingestion.spreadsheets`,
:mod:`~rag.ingestion.slides`, :mod:`~rag.ingestion.ocr`) take :class:`ReadOptions` and return a file's text, or
:class:`PartlyRead`; they raise :class:`LoadError` with the reason a file cannot be used. The loader turns files into
:class:`RawDocument` or :class:`Skipped`; a :class:`NamedFile` is a file whose id and origin the caller chooses.
:func:`decode_bytes` reads text in the encodings Chinese documents come in.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charset_normalizer import from_bytes

from .archives import ZipLimits

OCR_EXTRA = "pip install -e '.[ocr]'"


@dataclass
class RawDocument:
    """One document as read from disk, before cleaning."""

    doc_id: str
    text: str
    source: str  # the file it came from (absolute path), or an upload's origin
    root: str  # the folder (or file) the user named; ``--sync`` works per root
    title: str | None = None
    is_html: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    whole_file: bool = True  # the file is this one document (not a line of a JSONL file, not a part of a file)
    # On the last part of a file read as several documents (a long spreadsheet): the ids of all its parts. The
    # file's other documents (an earlier version's parts, the file as one document) go when it is ingested.
    file_parts: tuple[str, ...] = ()


@dataclass
class Skipped:
    """A file (or JSONL line) we could not use, and why."""

    source: str
    reason: str
    doc_id: str | None = None  # the id the file would have had: ``--sync`` keeps its indexed version
    root: str | None = None
    missing: bool = False  # the path the user gave does not exist


@dataclass(frozen=True)
class NamedFile:
    """A file whose document id and recorded origin the caller chooses (an upload: its user's file name)."""

    path: Path
    doc_id: str
    source: str


class LoadError(Exception):
    """A file cannot be turned into text; the message is the user-facing reason."""


class OcrUnavailableError(LoadError):
    """OCR cannot run here: a package of the OCR extra (``missing``) is not installed."""

    def __init__(self, reason: str, missing: str) -> None:
        super().__init__(reason)
        self.missing = missing


@dataclass(frozen=True)
class PartlyRead:
    """What a reader gives for a file it could read only in part: the text it read, which part of the file is
    left out (``"pages 2, 5"``), and why. The file is ingested, and the part left out is reported as skipped."""

    text: str
    left_out: str
    reason: str



@dataclass(frozen=True)
class ReadOptions:
    """What some readers need beyond the file itself."""

    max_bytes: int = 64_000_000
    cache_dir: Path | None = None  # where OCR keeps each page it has read, so a killed scan resumes
    progress: bool = False  # a progress bar for long reads (OCR pages)
    max_chars: int = 2_000_000  # a document's most characters; a longer spreadsheet is read in parts of at most this
    zip_limits: ZipLimits = field(default_factory=ZipLimits)  # how far a zip-based file (.docx, .xlsx) may unpack


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode ``data`` and return ``(text, encoding)``; raises :class:`LoadError` for binary or unknown data.

    BOMs decide first, then strict UTF-8, then a UTF-16 guess from NUL bytes, then charset-normalizer
    restricted to the encodings Chinese documents come in (GB18030 covers GBK and GB2312; Big5).
    """
    for bom, enc in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
                     (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32")):
        if data.startswith(bom) and not (enc == "utf-16" and data.startswith(codecs.BOM_UTF32_LE)):
            try:
                return data.decode(enc), enc
            except UnicodeDecodeError as exc:
                raise LoadError(f"declares {enc} but does not decode as it ({exc.reason})") from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if len(data) % 2 == 0:
        # BOM-less UTF-16 Chinese has few NULs; accept it when nearly every code unit is Han, CJK punctuation or ASCII.
        found = _decode_first(data, ("utf-16-le", "utf-16-be"), _mostly_chinese)
        if found:
            return found
    sample = data[:4096]
    if sample and sample.count(0) / len(sample) > 0.2:
        # BOM-less UTF-16: ASCII and CJK text alike put NULs on one side of each code unit.
        order = ("utf-16-le", "utf-16-be") if sample[1::2].count(0) >= sample[0::2].count(0) else ("utf-16-be", "utf-16-le")
        found = _decode_first(data, order, _looks_like_text)
        if found:
            return found
        raise LoadError("binary file (NUL bytes, not UTF-16 text)")
    best = from_bytes(data, cp_isolation=["gb18030", "big5", "utf_16", "utf_32"]).best()
    if best is not None:
        text = str(best)
        if _looks_like_text(text):
            return text, best.encoding
    raise LoadError("unknown encoding or binary content (not UTF-8, UTF-16, GB18030 or Big5)")


def _decode_first(data: bytes, encodings: Sequence[str], accept: Callable[[str], bool]) -> tuple[str, str] | None:
    """``(text, encoding)`` for the first encoding that decodes ``data`` into text ``accept`` likes."""
    for enc in encodings:
        try:
            text = data.decode(enc)
        except UnicodeDecodeError:
            continue
        if accept(text):
            return text, enc
    return None


def _mostly_chinese(text: str) -> bool:
    sample = text[:2048]
    if not sample:
        return False
    good = sum(1 for ch in sample if "\u4e00" <= ch <= "\u9fff" or "\u3000" <= ch <= "\u303f"
               or "\uff00" <= ch <= "\uffef" or " " <= ch <= "~" or ch in "\n\r\t“”‘’…—·")
    return good / len(sample) > 0.95


def _looks_like_text(text: str) -> bool:
    if not text.strip():
        return True
    bad = sum(1 for ch in text[:4096] if (ord(ch) < 32 and ch not in "\t\n\r\f") or 0xE000 <= ord(ch) <= 0xF8FF)
    return bad / min(len(text), 4096) < 0.01

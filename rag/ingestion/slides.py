"""PowerPoint decks (``.pptx``) as text: each slide after its marker, its shapes in reading order, then its notes.

A slide reads as people read it: the title, then text boxes, tables and grouped shapes top to bottom and left
to right (:mod:`rag.ingestion.reading_order`), a table row as "header：value | header：value" like a spreadsheet
row, and the speaker notes last as "备注：…". Pictures, charts and SmartArt carry no text python-pptx can read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .locations import slide_marker
from .reading import LoadError, ReadOptions
from .reading_order import Box, reading_rows

# Office files saved with a password are not ZIP packages but an OLE compound file holding the encrypted one.
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTION_STREAM = "EncryptionInfo".encode("utf-16-le")


def read_pptx(path: Path, options: ReadOptions) -> str:
    """The deck's text, each slide after its :func:`~rag.ingestion.locations.slide_marker` line; raises
    :class:`~rag.ingestion.reading.LoadError` for a password-protected, old-format or damaged file, or a deck
    without text."""
    from pptx import Presentation

    with open(path, "rb") as fh:
        head = fh.read(len(_OLE_MAGIC))
    if head == _OLE_MAGIC:
        if _ENCRYPTION_STREAM in path.read_bytes():
            raise LoadError("the presentation is password-protected (save it without a password to ingest it)")
        raise LoadError("an old binary PowerPoint file (.ppt) named .pptx: save it as .pptx")
    try:
        deck = Presentation(str(path))
        slides = ["\n".join(_slide_lines(slide, n)) for n, slide in enumerate(deck.slides, 1)]
    except Exception as exc:  # a damaged package fails in python-pptx, zipfile or lxml, in many ways
        raise LoadError(f"not a readable .pptx ({type(exc).__name__}: {exc})") from None
    if not any(text.count("\n") for text in slides):  # every slide is its marker alone
        raise LoadError("no text found in the slides")
    return "\n".join(slides)


def _slide_lines(slide: Any, number: int) -> Iterator[str]:
    """The marker, title, shapes in reading order and notes of one slide."""
    yield slide_marker(number)
    title = slide.shapes.title
    if title is not None:
        yield from _text_lines(title.text_frame.text)
    others = [shape for shape in slide.shapes if title is None or shape.shape_id != title.shape_id]
    yield from _shapes_lines(others)
    if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
        notes = list(_text_lines(slide.notes_slide.notes_text_frame.text))
        if notes:
            yield f"备注：{notes[0]}"
            yield from notes[1:]


def _shapes_lines(shapes: Iterable[Any]) -> Iterator[str]:
    for row in reading_rows(list(shapes), _box):
        for shape in row:
            yield from _shape_lines(shape)


def _shape_lines(shape: Any) -> Iterator[str]:
    if shape.has_text_frame:
        yield from _text_lines(shape.text_frame.text)
    elif shape.has_table:
        yield from _table_lines(shape.table)
    elif hasattr(shape, "shapes"):  # a group: its members have their own layout inside it
        yield from _shapes_lines(shape.shapes)


def _box(shape: Any) -> Box:
    # A placeholder without its own position inherits its layout's; a shape with neither counts as top left.
    left, top = shape.left or 0, shape.top or 0
    return Box(left, top, left + (shape.width or 0), top + (shape.height or 0))


def _text_lines(text: str) -> Iterator[str]:
    # python-pptx gives a line break inside a paragraph as a vertical tab.
    for line in text.replace("\v", "\n").split("\n"):
        if line.strip():
            yield line.strip()


def _table_lines(table: Any) -> Iterator[str]:
    """A table's rows under its first row's headers; a one-row table is its cells."""
    rows = [[" ".join(_text_lines(cell.text)) for cell in row.cells] for row in table.rows]
    if not rows:
        return
    header = list(rows[0])
    for i, cell in enumerate(table.rows[0].cells):
        if cell.is_spanned and i:  # a header merged across columns names each of them
            header[i] = header[i - 1]
    if len(rows) == 1:
        line = " | ".join(cell for cell in header if cell)
        if line:
            yield line
        return
    for row in rows[1:]:
        line = " | ".join(f"{name}：{value}" if name else value for name, value in zip(header, row) if value)
        if line:
            yield line

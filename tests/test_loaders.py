"""Loaders: formats, encodings, document ids, and a reason for every file that is skipped."""

from __future__ import annotations

import json
import os
import random
import struct
import time
import zipfile
from pathlib import Path

import pytest

from rag.ingestion.loaders import iter_documents
from rag.ingestion.reading import LoadError, RawDocument, Skipped, decode_bytes
from tests.conftest import DOC_000, SAMPLE

TRAD = "第五次全區婦女兒童工作會議在拉薩召開，區黨委副書記、自治區主席嚴金海出席並講話。"
SIMP = "精河县召开妇女儿童工作会议暨“两规划”中期评估推进会，副县长吴开华出席会议并讲话。"


def load(*paths, **kw):
    items = list(iter_documents([str(p) for p in paths], **kw))
    return [i for i in items if isinstance(i, RawDocument)], [i for i in items if isinstance(i, Skipped)]


@pytest.mark.parametrize("text,encoding", [(SIMP, "gb18030"), (SIMP, "gbk"), (TRAD, "big5"), (TRAD, "utf-16"),
                                           (SIMP, "utf-16-le"), (SIMP, "utf-8-sig"), (TRAD, "utf-8")])
def test_decode_chinese_encodings(text: str, encoding: str) -> None:
    decoded, _ = decode_bytes((text * 3).encode(encoding))
    assert decoded.lstrip("\ufeff") == text * 3


def test_binary_and_undecodable_bytes_are_refused() -> None:
    with pytest.raises(LoadError, match="binary"):
        decode_bytes(bytes(range(256)) * 20)
    with pytest.raises(LoadError):
        decode_bytes(b"\x00\x01\x02\x03\xff\xfe\xfd" * 300)


def test_folder_ids_are_relative_paths_and_file_ids_are_full_paths(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text(SIMP, encoding="utf-8")
    (tmp_path / "b.md").write_text(TRAD, encoding="utf-8")
    docs, skipped = load(tmp_path)
    assert sorted(d.doc_id for d in docs) == ["b.md", "sub/a.txt"]
    assert {d.source for d in docs} == {str(tmp_path / "b.md"), str(tmp_path / "sub" / "a.txt")}
    assert not skipped
    # deptA/report.txt and deptB/report.txt given alone are two documents, not one name.
    docs, _ = load(SAMPLE / DOC_000)
    assert [d.doc_id for d in docs] == [str((SAMPLE / DOC_000).resolve())]


def test_file_names_in_gbk_bytes_are_read_and_named(tmp_path: Path) -> None:
    folder = os.fsencode(tmp_path / "gbk")
    os.mkdir(folder)
    with open(os.path.join(folder, "精河县报告.txt".encode("gbk")), "w", encoding="utf-8") as fh:
        fh.write(SIMP)
    with open(os.path.join(folder, b"bad-\xff\xfe.txt"), "w", encoding="utf-8") as fh:
        fh.write(TRAD)
    docs, skipped = load(tmp_path / "gbk")
    assert not skipped
    assert sorted(d.doc_id for d in docs) == sorted(["精河县报告.txt", "bad-\ufffd\ufffd.txt"])
    for doc in docs:
        doc.doc_id.encode("utf-8")  # storable and printable
        doc.source.encode("utf-8")


def test_an_unreadable_jsonl_or_folder_is_skipped_and_the_rest_is_read(tmp_path: Path, monkeypatch) -> None:
    import builtins

    (tmp_path / "good.txt").write_text(SIMP, encoding="utf-8")
    locked = tmp_path / "locked.jsonl"
    locked.write_text(json.dumps({"id": "x1", "text": TRAD}, ensure_ascii=False) + "\n", encoding="utf-8")
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):  # what a mode-600 file of another user does
        if str(file) == str(locked):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    docs, skipped = load(tmp_path)
    assert [d.doc_id for d in docs] == ["good.txt"]
    assert skipped[0].source == str(locked) and "Permission denied" in skipped[0].reason


def test_bad_files_are_skipped_with_reasons_and_do_not_stop_the_batch(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text(SIMP, encoding="utf-8")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 40)
    (tmp_path / "huge.txt").write_text(SIMP * 2000, encoding="utf-8")
    (tmp_path / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    (tmp_path / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    docs, skipped = load(tmp_path, max_file_mb=0.1)
    assert [d.doc_id for d in docs] == ["good.txt"]
    reasons = {Path(s.source).name: s.reason for s in skipped}
    assert reasons["empty.txt"] == "empty file"
    assert "binary" in reasons["binary.txt"]
    assert "too large" in reasons["huge.txt"]
    # A damaged image, with the OCR extra or without it.
    assert reasons["picture.png"].startswith(("not a readable image", "reading .png files needs a package"))
    assert reasons["clip.mp4"] == "unsupported file type .mp4"
    assert "docx" in reasons["broken.docx"]
    assert "PDF" in reasons["broken.pdf"]


def test_missing_path_is_reported(tmp_path: Path) -> None:
    _, skipped = load(tmp_path / "nope")
    assert skipped[0].reason == "no such file or folder"


def test_jsonl_lines_become_documents_with_metadata(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    lines = [json.dumps({"id": "n1", "text": SIMP, "date": "2023-08-16", "title": "精河"}, ensure_ascii=False),
             "{not json",
             json.dumps({"id": "n2"}),
             json.dumps({"id": "n3", "text": "   "}),
             json.dumps({"id": "n4", "text": TRAD}, ensure_ascii=False)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    docs, skipped = load(path)
    assert [d.doc_id for d in docs] == ["n1", "n4"]
    assert docs[0].metadata == {"date": "2023-08-16", "title": "精河"} and docs[0].title == "精河"
    assert len(skipped) == 3
    assert all(s.source.startswith(str(path) + ":") for s in skipped)


def test_html_main_text_is_extracted(tmp_path: Path) -> None:
    body = "".join(f"<p>{SIMP}第{i}段。</p>" for i in range(6))
    html = (f"<html><head><title>精河县妇女儿童工作会议</title></head><body><nav><a href='/'>首页</a>"
            f"<a href='/x'>网站地图</a></nav><article>{body}</article><footer>版权所有 新ICP备05001072号</footer>"
            "</body></html>")
    (tmp_path / "page.html").write_text(html, encoding="gb18030")
    docs, skipped = load(tmp_path / "page.html")
    assert not skipped and docs[0].is_html
    from rag.config import Settings
    from rag.ingestion.ingest import prepare_document

    record = prepare_document(docs[0], Settings())
    assert "吴开华" in record.text and "网站地图" not in record.text and "ICP" not in record.text
    assert record.title == "精河县妇女儿童工作会议"


def test_docx_paragraphs_are_read(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_paragraph(TRAD)
    document.add_paragraph(SIMP)
    document.save(tmp_path / "report.docx")
    docs, skipped = load(tmp_path / "report.docx")
    assert not skipped
    assert docs[0].text.split("\n")[:2] == [TRAD, SIMP]


def _pdf_with_text(text: str | None) -> bytes:
    """A one-page PDF; with ``text`` it has a text layer in Helvetica, without it the page is blank."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode() if text else b""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_pdf_text_layer_is_read_and_scans_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_bytes(_pdf_with_text("Annual report 2023: 762 organisations"))
    (tmp_path / "scan.pdf").write_bytes(_pdf_with_text(None))
    docs, skipped = load(tmp_path)
    assert [d.doc_id for d in docs] == ["report.pdf"]
    assert "762 organisations" in docs[0].text
    # Without the OCR extra the scan cannot be read; with it, OCR finds nothing on the blank page.
    assert skipped[0].reason.startswith(("PDF has no text layer", "no text found in the PDF"))


# -- zip bombs (issue 28, item 4) ---------------------------------------------------------------------------------
def make_docx(path: Path, text: str = SIMP, padding: int = 0) -> Path:
    """A Word document of ``text``; ``padding`` blanks inside its body, so that document.xml unpacks that much
    larger while the file hardly grows (what a zip bomb is)."""
    import docx

    document = docx.Document()
    document.add_paragraph(text)
    document.save(path)
    if padding:
        _rewrite_member(path, "word/document.xml",
                        lambda xml: xml.replace(b"<w:body>", b"<w:body>" + b" " * padding, 1))
    return path


def make_pptx(path: Path, text: str = TRAD, zeros: int = 0) -> Path:
    """A one-slide deck saying ``text``, with a member of ``zeros`` zero bytes added when asked."""
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[6])
    slide.shapes.add_textbox(Inches(1), Inches(1), Inches(6), Inches(1)).text_frame.text = text
    deck.save(path)
    if zeros:
        with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("ppt/media/zeros.bin", bytes(zeros))
    return path


def _rewrite_member(path: Path, name: str, change, compression: int = zipfile.ZIP_DEFLATED) -> None:
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members:
            archive.writestr(member, change(data) if member == name else data,
                             compression if member == name else zipfile.ZIP_DEFLATED)


def _declare_size(path: Path, name: str, size: int) -> None:
    """Make the central directory say that ``name`` unpacks to ``size`` bytes (what a crafted file can claim)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")  # the first central directory entry
    while data[at + 46 : at + 46 + len(name)] != name.encode():
        at = data.index(b"PK\x01\x02", at + 4)
    struct.pack_into("<I", data, at + 24, size)
    path.write_bytes(bytes(data))


def test_zip_bombs_are_refused_before_any_parser_opens_them(tmp_path: Path, monkeypatch) -> None:
    import docx
    import pptx

    make_docx(tmp_path / "bomb.docx", padding=30_000_000)  # 30 MB of blanks in a file of 60 kB
    make_pptx(tmp_path / "zeros.pptx", zeros=40_000_000)  # 40 MB of zeros
    make_docx(tmp_path / "good.docx")
    make_pptx(tmp_path / "good.pptx")
    (tmp_path / "good.txt").write_text(SIMP, encoding="utf-8")
    opened: list[str] = []
    for module, name in ((docx, "Document"), (pptx, "Presentation")):
        monkeypatch.setattr(module, name, lambda path, real=getattr(module, name): opened.append(Path(path).name)
                            or real(path))
    docs, skipped = load(tmp_path)
    assert sorted(d.doc_id for d in docs) == ["good.docx", "good.pptx", "good.txt"]
    reasons = {Path(s.source).name: s.reason for s in skipped}
    assert set(reasons) == {"bomb.docx", "zeros.pptx"}
    assert reasons["bomb.docx"].startswith("refused: word/document.xml in the .docx archive would unpack to 30 MB")
    assert "max_zip_ratio" in reasons["bomb.docx"]
    assert reasons["zeros.pptx"].startswith("refused: ppt/media/zeros.bin in the .pptx archive would unpack to 40 MB")
    assert sorted(opened) == ["good.docx", "good.pptx"]  # the bombs never reached a parser


def test_zip_limits_are_settings(tmp_path: Path) -> None:
    from rag.config import Settings
    from rag.ingestion.ingest import read_documents

    words = random.Random(0).choices(SIMP + TRAD, k=900_000)  # 3.6 MB of XML, packed as ordinary text is
    make_docx(tmp_path / "long.docx", "".join(words))
    make_pptx(tmp_path / "deck.pptx")
    settings = Settings(max_unzipped_mb=1.0, max_zip_members=20)
    found = list(read_documents([tmp_path / "long.docx", tmp_path / "deck.pptx"], settings))
    reasons = {Path(s.source).name: s.reason for s in found if isinstance(s, Skipped)}
    assert reasons["long.docx"].startswith("refused: the .docx archive would unpack to 4 MB, more than the 1 MB "
                                           "allowed (max_unzipped_mb)")
    assert reasons["deck.pptx"].startswith("refused: the .pptx archive holds ") and "max_zip_members" in reasons[
        "deck.pptx"]
    assert [d.doc_id for d in read_documents([tmp_path / "long.docx"], Settings()) if isinstance(d, RawDocument)]


def test_a_zip_that_holds_more_than_it_declares_is_refused(tmp_path: Path) -> None:
    bomb = make_docx(tmp_path / "liar.docx", padding=30_000_000)
    _declare_size(bomb, "word/document.xml", 3_000)  # looks like a page of text
    with zipfile.ZipFile(bomb) as archive:
        assert archive.getinfo("word/document.xml").file_size == 3_000
    packed = make_docx(tmp_path / "bzip2.docx")
    _rewrite_member(packed, "word/document.xml", lambda xml: xml, zipfile.ZIP_BZIP2)
    _, skipped = load(tmp_path)
    reasons = {Path(s.source).name: s.reason for s in skipped}
    assert reasons["liar.docx"] == ("refused: word/document.xml in the .docx archive holds more than the 3000 bytes "
                                    "it declares (a damaged or crafted file)")
    assert reasons["bzip2.docx"].startswith("refused: word/document.xml in the .docx archive is packed with "
                                            "compression method 12")


def test_a_sparse_xls_is_read_cell_by_cell_not_as_a_full_grid(tmp_path: Path) -> None:
    from tests.test_tables import biff8, compound_file

    # Two cells at opposite corners of a 65,536 × 256 sheet: xlrd's padded rows made 16.7 million cells of them.
    cells = {(0, 0): "县", (0, 1): "妇女之家", (1, 0): "精河县", (1, 1): 120.0, (65535, 255): "末"}
    (tmp_path / "sparse.xls").write_bytes(compound_file({"Workbook": biff8("表", cells)}))
    started = time.perf_counter()
    docs, skipped = load(tmp_path / "sparse.xls")
    assert time.perf_counter() - started < 10
    assert not skipped and "县：精河县 | 妇女之家：120" in docs[0].text


def test_a_csv_line_longer_than_a_document_is_refused_before_it_is_split(tmp_path: Path) -> None:
    import tracemalloc

    (tmp_path / "wide.csv").write_bytes(b"a," * 1_000_000 + b"\n1,2\n")
    tracemalloc.start()
    try:
        _, skipped = load(tmp_path / "wide.csv", max_document_chars=100_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert skipped[0].reason == "line 1 is longer than a document may be (100000 characters): not a table"
    assert peak < 5_000_000  # split into a million fields, the line took 70 MB


# -- without the OCR extra (issue 28, item 5) ---------------------------------------------------------------------
def blank_pdf(path: Path, text_pages: tuple[str, ...] = (), blank_pages: int = 1) -> Path:
    """A PDF of pages with a text layer (``text_pages``) followed by ``blank_pages`` pages without one."""
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for text in text_pages:
        writer.add_page(PdfReader(io.BytesIO(_pdf_with_text(text))).pages[0])
    for _ in range(blank_pages):
        writer.add_blank_page(612, 792)
    with open(path, "wb") as fh:
        writer.write(fh)
    return path


@pytest.fixture
def without_ocr(monkeypatch) -> None:
    """The base install: neither the renderer nor the OCR engine of the OCR extra can be imported."""
    import sys

    for module in ("pypdfium2", "rapidocr_onnxruntime"):
        monkeypatch.setitem(sys.modules, module, None)  # `import` then raises ModuleNotFoundError


def test_without_the_ocr_extra_scans_are_skipped_with_how_to_read_them(tmp_path: Path, without_ocr) -> None:
    (tmp_path / "good.txt").write_text(SIMP, encoding="utf-8")
    blank_pdf(tmp_path / "blank.pdf")
    blank_pdf(tmp_path / "mixed.pdf", ("Annual report 2023: 762 organisations", "Page three: 12 courses"), 1)
    (tmp_path / "photo.png").write_bytes(_png())
    docs, skipped = load(tmp_path)
    assert [d.doc_id for d in docs] == ["good.txt", "mixed.pdf"]
    assert "762 organisations" in docs[1].text and "12 courses" in docs[1].text
    reasons = {Path(s.source).name: s.reason for s in skipped}
    assert reasons["blank.pdf"] == ("PDF has no text layer: scanned pages need the OCR extra (pip install -e "
                                    "'.[ocr]'; pypdfium2 is not installed)")
    assert reasons["mixed.pdf (page 3)"] == ("no text layer: read by OCR with the OCR extra (pip install -e "
                                             "'.[ocr]'; pypdfium2 is not installed), then ingest the file again; "
                                             "the other pages were ingested")
    assert reasons["photo.png"] == ("reading .png files needs a package that is not installed "
                                    "(rapidocr_onnxruntime): the OCR extra, pip install -e '.[ocr]'")


def _png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (64, 32), 255).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("error", [RuntimeError("parser bug"), ImportError("no module named lxml.foo"),
                                   RecursionError("maximum recursion depth exceeded"), MemoryError()])
def test_whatever_a_reader_raises_costs_only_its_file(tmp_path: Path, monkeypatch, error: Exception) -> None:
    from rag.ingestion import loaders

    def failing(path, options):
        raise error

    def failing_parts(path, options):
        yield from ()
        raise error

    monkeypatch.setitem(loaders.READERS, ".docx", failing)
    monkeypatch.setitem(loaders.PART_READERS, ".csv", failing_parts)
    make_docx(tmp_path / "a.docx")
    (tmp_path / "b.csv").write_text("县,妇女之家\n精河县,120\n", encoding="utf-8")
    (tmp_path / "c.txt").write_text(SIMP, encoding="utf-8")
    docs, skipped = load(tmp_path)
    assert [d.doc_id for d in docs] == ["c.txt"]
    name = type(error).__name__
    assert {Path(s.source).name: s.reason.split(":")[0].rstrip(")") for s in skipped} == {
        "a.docx": f"could not be read ({name}", "b.csv": f"could not be read ({name}"}

    monkeypatch.setitem(loaders.READERS, ".docx", lambda path, options: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        load(tmp_path)

"""Loaders: formats, encodings, document ids, and a reason for every file that is skipped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rag.ingestion.loaders import LoadError, RawDocument, Skipped, decode_bytes, iter_documents
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

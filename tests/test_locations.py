"""Page, slide, sheet and row markers, and the citations chunks get from them."""

from __future__ import annotations

from rag.config import Settings
from rag.index.records import DocumentRecord
from rag.ingestion.ingest import make_chunks
from rag.ingestion.locations import Locator, locate, page_marker, row_marker, slide_marker


def test_a_span_is_cited_by_the_markers_around_it() -> None:
    text = f"封面\n{page_marker(1)}\n第一页的正文。\n{page_marker(2)}\n第二页的正文。\n{page_marker(3)}\n第三页。"
    on_two = text.index("第二页")
    assert locate(text, on_two, on_two + 3) == "第2页"
    assert locate(text, text.index("第一页"), on_two) == "第1–2页"
    assert locate(text, 0, 2) is None  # before the first page marker there is no page
    assert locate("没有标记的文字", 0, 3) is None
    slides = f"{slide_marker(1)}\n标题\n{slide_marker(2)}\n要点"
    assert locate(slides, slides.index("要点"), len(slides)) == "幻灯片 2"


def test_rows_are_cited_with_their_sheet() -> None:
    rows = "\n".join(f"{row_marker('2023年统计', n)} 县：县{n} | 妇女之家：{n}个" for n in range(2, 9))
    locator = Locator(rows)
    third = rows.index("县4 |")
    assert locator.locate(third, third + 5) == "表“2023年统计”第4行"
    assert locator.locate(rows.index("县3 |"), rows.index("县6 |")) == "表“2023年统计”第3–6行"
    other = rows + "\n" + row_marker("2024年", 2) + " 县：精河县"
    assert locate(other, other.index("精河县"), len(other)) == "表“2024年”第2行"
    assert row_marker("a〔b〕\nc", 1) == "〔表：a b  c 第1行〕"  # a sheet name cannot break the marker


def test_chunks_carry_their_location() -> None:
    pages = "\n".join(f"{page_marker(n)}\n" + f"第{n}页讲的是第{n}件事。" * 20 for n in range(1, 4))
    doc = DocumentRecord(doc_id="scan.pdf", root="/x", source="/x/scan.pdf", title=None, text=pages,
                         content_hash="h", metadata={})
    chunks = make_chunks(doc, Settings(chunk_size=120, chunk_overlap=20))
    assert chunks[0].location == "第1页" and chunks[-1].location == "第3页"
    assert all(c.location and c.location.startswith("第") for c in chunks)


def test_markers_survive_cleaning() -> None:
    from rag.ingestion.ingest import prepare_document
    from rag.ingestion.reading import RawDocument

    text = "\n".join(f"{page_marker(n)}\n" + f"这是第{n}页的内容，会议在拉萨召开。" * 3 for n in range(1, 4))
    record = prepare_document(RawDocument(doc_id="a.pdf", text=text, source="/a.pdf", root="/"), Settings())
    assert [record.text.count(page_marker(n)) for n in (1, 2, 3)] == [1, 1, 1]

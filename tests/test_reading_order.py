"""Reading order of OCR boxes: two-column pages a column at a time, titles and full-width lines where they stand,
single-column pages and tables row by row."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from rag.ingestion.ocr import layout_text
from rag.ingestion.reading import ReadOptions
from rag.ingestion.reading_order import Block, Box, reading_blocks, reading_rows
from tests.test_ocr_slides import FONT, needs_ocr

LINE = 26  # a line's height in pixels, lines 40 px apart
LEFT, RIGHT = (40, 470), (530, 960)  # the two columns of a page 1000 px wide, a 60 px gutter between them


def found(left: float, top: float, right: float, text: str) -> list:
    """One box as the OCR engine gives it: corner points, text, score."""
    bottom = top + LINE
    return [[[left, top], [right, top], [right, bottom], [left, bottom]], text, 0.99]


def column(side: tuple[int, int], top: int, texts: list[str]) -> list[list]:
    """A column's lines from ``top`` down: each fills the column but the last (a paragraph's end)."""
    return [found(side[0], top + 40 * n, side[1] if n < len(texts) - 1 else side[0] + 200, text)
            for n, text in enumerate(texts)]


def texts(items: list[list]) -> list[str]:
    """The items' texts in the order :func:`reading_blocks` reads them."""
    return [item[1] for block in reading_blocks(items, _box) for row in block.rows for item in row]


def _box(item: list) -> Box:
    (left, top), _, (right, bottom), _ = item[0]
    return Box(left, top, right, bottom)


def shuffled(items: list[list]) -> list[list]:
    return items[1::2][::-1] + items[::2]  # the engine's boxes come in no useful order


def test_two_columns_are_read_left_then_right() -> None:
    left = column(LEFT, 100, ["左栏第一行讲到妇女之家的建设，", "左栏第二行讲到全县共建成", "一百二十个妇女之家。"])
    right = column(RIGHT, 100, ["右栏第一行讲到儿童之家的建设，", "右栏第二行讲到全县共建成", "四十五个儿童之家。"])
    assert texts(shuffled(left + right)) == [item[1] for item in left + right]
    # Each column's wrapped lines join into its paragraph, against the column's own margins.
    assert layout_text(shuffled(left + right)) == ("左栏第一行讲到妇女之家的建设，左栏第二行讲到全县共建成一百二十个妇女之家。\n"
                                                   "右栏第一行讲到儿童之家的建设，右栏第二行讲到全县共建成四十五个儿童之家。")


def test_three_columns_are_read_in_turn_under_a_title() -> None:
    sides = [(40, 320), (360, 640), (680, 960)]  # a newsletter page, 40 px gutters
    title = [found(300, 40, 700, "妇女儿童工作简报")]
    columns = [column(side, 100, [f"第{n}栏第一行写满了这一栏，", f"第{n}栏第二行也写满这一栏，", f"第{n}栏完。"])
               for n, side in enumerate(sides, 1)]
    footer = [found(40, 300, 960, "本期简报由县妇联办公室编印，发至各乡镇妇联和县直各单位，请各单位认真阅读并抓好落实。")]
    items = title + [line for lines in columns for line in lines] + footer
    assert texts(shuffled(items)) == [item[1] for item in items]
    blocks = reading_blocks(shuffled(items), _box)
    assert [(b.left, b.right) for b in blocks] == [(40, 960), (40, 320), (360, 640), (680, 960), (40, 960)]


def test_a_short_section_of_three_columns_is_split_like_the_page() -> None:
    sides = [(40, 320), (360, 640), (680, 960)]
    upper = [line for n, side in enumerate(sides, 1)
             for line in column(side, 100, [f"第{n}栏上半第一行写满这一栏，", f"第{n}栏上半第二行写满，", f"第{n}栏上半完。"])]
    rule = [found(40, 240, 960, "以下为下期预告，请各单位留意，并及时报送相关材料和工作信息。")]
    # Below the rule, two lines a column: too few to find columns in, so the page's own split is used.
    lower = [line for n, side in enumerate(sides, 1)
             for line in column(side, 300, [f"第{n}栏下半写满这一栏的一行，", f"第{n}栏下半完。"])]
    assert layout_text(shuffled(upper + rule + lower)).splitlines()[-3:] == [
        f"第{n}栏下半写满这一栏的一行，第{n}栏下半完。" for n in (1, 2, 3)]


def test_a_short_line_is_measured_against_its_whole_column() -> None:
    top = (column(LEFT, 100, ["左栏第一行讲到妇女之家的建设，", "左栏第二行讲到全县共建成", "一百二十个妇女之家。"])
           + column(RIGHT, 100, ["右栏第一行讲到儿童之家的建设，", "右栏第二行讲到全县共建成", "四十五个儿童之家。"]))
    rule = [found(40, 240, 960, "本期要点到此为止。")]
    # Below the full-width line, the left column holds only a heading: it does not fill its column, so it is
    # not run on into the right column's text.
    bottom = [found(LEFT[0], 300, LEFT[0] + 150, "二、工作安排"), *column(RIGHT, 300, ["右栏下半部分第一行写满这一栏，", "完。"])]
    assert layout_text(shuffled(top + rule + bottom)).splitlines()[3:] == ["二、工作安排", "右栏下半部分第一行写满这一栏，完。"]


def test_a_paragraph_runs_on_from_one_column_into_the_next() -> None:
    left = [found(LEFT[0], 100 + 40 * n, LEFT[1], f"左栏第{n + 1}行没有写完的句子") for n in range(4)]
    right = column(RIGHT, 100, ["接着写完这一句，", "然后开始新的一段，", "到这里结束。"])
    assert layout_text(shuffled(left + right)) == "".join(item[1] for item in left + right)


def test_full_width_lines_stand_between_column_sections() -> None:
    title = found(300, 20, 700, "精河县妇联工作简报")  # centred over both columns
    first = column(LEFT, 100, ["第一部分左栏一", "第一部分左栏二", "第一部分左栏三。"])
    first_right = column(RIGHT, 100, ["第一部分右栏一", "第一部分右栏二", "第一部分右栏三。"])
    across = found(LEFT[0], 240, RIGHT[1], "这一段横跨两栏，是两部分之间的说明文字。")
    second = column(LEFT, 300, ["第二部分左栏一", "第二部分左栏二", "第二部分左栏三。"])
    second_right = column(RIGHT, 300, ["第二部分右栏一", "第二部分右栏二", "第二部分右栏三。"])
    footer = found(470, 440, 530, "- 3 -")
    page = [title, *first, *first_right, across, *second, *second_right, footer]
    assert texts(shuffled(page)) == [item[1] for item in page]
    blocks = reading_blocks(shuffled(page), _box)
    assert [(block.left, block.right) for block in blocks] == [
        (40, 960), LEFT, RIGHT, (40, 960), LEFT, RIGHT, (40, 960)]


def test_a_single_column_page_keeps_its_order() -> None:
    page = [found(300, 20, 700, "会议纪要"),
            *column((40, 960), 100, ["第一段第一行写到右边缘，", "第一段第二行写到右边缘，", "第一段完。"]),
            found(40, 220, 300, "一、会议议程"),  # short lines on the left: a list, not a column
            found(40, 260, 340, "二、会议决定"),
            found(40, 300, 380, "三、下一步工作"),
            *column((40, 960), 340, ["第二段第一行写到右边缘，", "第二段完。"])]
    items = shuffled(page)
    assert reading_blocks(items, _box) == [Block(reading_rows(items, _box), 40, 960)]
    assert texts(items) == [item[1] for item in page]


def test_tables_are_read_row_by_row() -> None:
    counties = ["博乐市", "精河县", "温泉县", "伊宁县", "阿拉山口市"]
    grid = [found(40 + 240 * c, 100 + 40 * r, 40 + 240 * c + 120, f"{county}{c}")
            for r, county in enumerate(counties) for c in range(4)]
    assert texts(shuffled(grid)) == [item[1] for item in grid]
    # Two columns of short cells (a name and a number) are a table too, not two columns of text.
    pairs = [cell for r, county in enumerate(counties)
             for cell in (found(40, 100 + 40 * r, 40 + 28 * len(county), county),
                          found(600, 100 + 40 * r, 680, f"{(r + 1) * 30}个"))]
    assert texts(shuffled(pairs)) == [item[1] for item in pairs]
    assert layout_text(shuffled(pairs)).splitlines()[1] == "精河县 60个"


@pytest.mark.slow
@needs_ocr
def test_a_scanned_two_column_page_is_read_a_column_at_a_time(tmp_path: Path) -> None:
    from rag.ingestion.ocr import read_image

    image = Image.new("L", (1000, 420), 255)
    pen = ImageDraw.Draw(image)
    pen.text((330, 30), "精河县妇联工作简报", font=ImageFont.truetype(str(FONT), 36), fill=0)
    font = ImageFont.truetype(str(FONT), 28)
    left = ["全县已建成妇女之家一百", "二十个，覆盖所有乡镇和", "大部分行政村。"]
    right = ["全县已建成儿童之家四十", "五个，每周开放五天，暑", "期每天开放。"]
    for n, (left_line, right_line) in enumerate(zip(left, right)):
        pen.text((40, 120 + 48 * n), left_line, font=font, fill=0)
        pen.text((540, 120 + 48 * n), right_line, font=font, fill=0)
    image.save(tmp_path / "简报.png")
    assert read_image(tmp_path / "简报.png", ReadOptions()).splitlines() == [
        "精河县妇联工作简报", "".join(left), "".join(right)]


@pytest.mark.slow
@needs_ocr
def test_a_scanned_three_column_page_is_read_a_column_at_a_time(tmp_path: Path) -> None:
    from rag.ingestion.ocr import read_image

    image = Image.new("L", (1200, 300), 255)
    pen = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(FONT), 28)
    columns = [["妇女之家一百二十", "个，覆盖所有乡镇", "和行政村。"], ["儿童之家四十五个", "，每周开放五天，", "暑期每天开放。"],
               ["家长学校三十所，", "每年举办讲座百场", "以上。"]]
    for x, lines in zip((40, 440, 840), columns):
        for n, line in enumerate(lines):
            pen.text((x, 60 + 48 * n), line, font=font, fill=0)
    image.save(tmp_path / "三栏.png")
    assert read_image(tmp_path / "三栏.png", ReadOptions()).splitlines() == ["".join(lines) for lines in columns]

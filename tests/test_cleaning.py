"""Cleaning pinned on the five sample pages: which lines survive, which go."""

from __future__ import annotations

import re

import pytest

from rag.ingestion.cleaning import clean_text, strip_annotations
from tests.conftest import DOC_000, DOC_001, DOC_002, DOC_003, DOC_004, SAMPLE


def cleaned(name: str):
    return clean_text((SAMPLE / name).read_text(encoding="utf-8"))


BOILERPLATE = ["网站地图", "網站地圖", "版权", "版權", "ICP", "公网安备", "本文地址", "上一篇", "下一篇", "[詳細]",
               "[详细]", "相關文章", "相关文章", "评论0", ".jpg", "当前位置", "您所在的位置", "小編為您", "相關推薦"]


@pytest.mark.parametrize("name", [DOC_000, DOC_001, DOC_002, DOC_003, DOC_004])
def test_no_boilerplate_or_pinyin_survives(name: str) -> None:
    text = cleaned(name).text
    for marker in BOILERPLATE:
        assert marker not in text, (name, marker)
    # No pinyin annotation, intact or broken, and no converter debris.
    assert not re.search(r"\([a-zāáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜü]+\)", text)
    assert not re.search(r"\?[a-zāáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜü]+\)", text)
    assert not re.search(r"[a-zāáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜü]+\)", text)
    lines = text.split("\n")
    assert len(lines) == len(set(lines)), "a paragraph is repeated"


def test_000_lhasa_meeting() -> None:
    doc = cleaned(DOC_000)
    lines = doc.text.split("\n")
    assert doc.title == "嚴金海在第五次全區婦女兒童工作會議上強調"
    assert lines[0] == doc.title
    assert lines[1].startswith("近日,第五次全區婦女兒童工作會議在拉薩召開,傳達學習第七次全國婦女兒童工作會議精神")
    assert "王峻、卓嘎出席,羅梅主持。" in lines
    assert lines[-1] == "有關市地和部門作交流發言。"
    # The related-news teasers after the copyright line are gone with it.
    assert "昌都市中級人民法院" not in doc.text
    assert "拉薩市婦聯強化組織保障" not in doc.text


def test_001_summaries_keep_all_three_parts_once() -> None:
    doc = cleaned(DOC_001)
    text = doc.text
    assert doc.title == "全區婦女兒童工作會議總結"
    for part in ("全區婦女兒童工作會議總結一", "全區婦女兒童工作會議總結二", "全區婦女兒童工作會議總結三"):
        assert part in text.split("\n")
    # The verbatim repeated award paragraph appears once.
    assert text.count("平安鎮婦聯、區財政局等14個先進集體和陳慧卿、張曉靜等30名先進個人進行了頒獎") == 1
    # Broken annotations are repaired, not just deleted: 推動(dòng)?jì)D女 → 推動婦女, 表?yè)P(yáng) → 表揚.
    assert "推動婦女兒童工作取得實實在在的成效" in text
    assert "通報表揚" in text
    # Anti-scraping debris between characters is gone.
    assert "婦女兒童事業的發展" in text and "表彰的先進集體" in text
    assert text.split("\n")[-1].startswith("會上,區婦兒工委辦主任、婦聯主席楊丹總結了過去五年")
    assert "全區經濟工作會議書記講話范文" not in text


def test_002_jinghe_keeps_header_drops_menus() -> None:
    doc = cleaned(DOC_002)
    lines = doc.text.split("\n")
    assert lines[:3] == ["精河县召开妇女儿童工作会议暨“两规划”中期评估推进会", "日期:2023-07-07 10:19", "来源:精河零距离"]
    assert doc.date == "2023-07-07 10:19"
    assert doc.source == "精河零距离"
    assert lines[-1] == "会后,县妇儿工委办还开展了“两规划”和儿童友好城市(社区)建设业务培训。"
    for menu in ("简体 繁体", "注册", "登录", "进入适老版", "点击量:", "分享:", "人力资源和社会保障部", "乌鲁木齐市",
                 "博尔塔拉新闻网", "政府网站标识码"):
        assert menu not in lines
    assert "新ICP备" not in doc.text
    assert "吴开华" in doc.text and "李红霞" in doc.text


def test_003_speech_keeps_body_drops_comment_counter() -> None:
    doc = cleaned(DOC_003)
    lines = doc.text.split("\n")
    assert lines[0] == "同志们:"
    assert doc.title is None  # a speech opening is not a headline
    assert lines[-1].startswith("推进强国建设、民族复兴伟业,妇女是重要力量")
    assert len(lines) == 6


def test_004_garze_drops_images_captions_and_page_links() -> None:
    doc = cleaned(DOC_004)
    lines = doc.text.split("\n")
    assert doc.title == "一路芬芳一路歌——甘孜州婦女兒童事業發展成就綜述"
    assert lines[1] == "甘孜日報 2022年06月20日"
    assert doc.date == "2022年06月20日" and doc.source == "甘孜日報"
    for gone in ("州婦聯開展.jpg", "州婦聯開展關愛兒童活動。", "州婦聯開展慈善拍賣。", "州婦聯第十二屆第十次執委會合影。",
                 "◎州婦聯 文/圖"):
        assert gone not in lines
    # Section headings stay.
    assert "綱要統籌 “婦兒”發展更健康" in lines and "以人為本 巾幗維權更溫暖" in lines
    assert lines[-1].startswith("浩渺行無極,揚帆但信風。")
    assert "女性公務員比例達到39.61%" in doc.text


def test_dropped_lines_are_reported_with_reasons() -> None:
    reasons = {reason for reason, _ in cleaned(DOC_004).dropped}
    assert {"image", "caption", "breadcrumb", "related"} <= reasons


def test_strip_annotations_examples() -> None:
    assert strip_annotations("會(huì)議在區(qū)委召開") == "會議在區委召開"
    # A legitimate parenthesis is not pinyin and stays.
    assert strip_annotations("城市(社区)建设") == "城市(社区)建设"
    assert strip_annotations("规模(km)不变") == "规模(km)不变"
    assert strip_annotations("事業(yè)的.發(fā)展") == "事業的發展"


def test_single_line_news_keeps_its_text() -> None:
    # News bodies often arrive as one long line; rules for short furniture lines must not drop them.
    body = ("大众网记者 李文静 青岛报道近日，崂山区中韩街道红色电影节活动启幕仪式顺利举办。" * 4 +
            "广告 >>进入直播间与主播亲密互动 ×全体党员共同观看了红色影片《申纪兰》。")
    assert clean_text(body).text == body
    notice = "暑期如何科学防控青少年近视，六大“锦囊”请收好。【责任编辑：刘世昕】 版权声明：凡本网文章下标注有来源的均为转载。"
    assert clean_text(notice).text == "暑期如何科学防控青少年近视，六大“锦囊”请收好。【责任编辑：刘世昕】"

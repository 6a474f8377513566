"""Turn scraped page text into the article alone.

Web pages reach us with converter-site pinyin annotations (``會(huì)議``), menus, link lists, copyright
and ICP lines, "related articles" lists, image file names and repeated paragraphs. :func:`clean_text`
removes those and keeps the title, date and source lines the page states. Rules are matched on the
normalised (Simplified, half-width) form of each line, so they work for both scripts; the kept lines
are returned in their original script. Lines that start with a page, slide or table-row marker
(:mod:`rag.ingestion.locations`) are content a reader wrote, never furniture: they are always kept.
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass, field

from ..index.lexical import word_freq
from ..normalize import normalize, to_simplified
from .locations import marker_kind

_HAN = r"\u3400-\u4dbf\u4e00-\u9fff"
_PINYIN = "a-zāáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜüńňǹḿ"
_TONED = "āáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜńňǹḿ"

# 會(huì)議: a Han character followed by its pinyin in parentheses (tone mark required).
_ANNOTATION = re.compile(rf"(?<=[{_HAN}])\([{_PINYIN}]*[{_TONED}][{_PINYIN}]*\)")
# Toneless annotations (neutral tone) are only stripped from pages that clearly went through a converter.
_ANNOTATION_TONELESS = re.compile(rf"(?<=[{_HAN}])\([a-zü]{{1,6}}\)")
# 推動?jì)D女: the converter lost a character's GBK lead byte; "?pinyin)" is left, then the trail byte.
_BROKEN = re.compile(rf"\?[{_PINYIN}]+\)([\x40-\x7e\ue000-\uf8ff]?)")
# Anti-scraping noise: a lone ' or . wedged between two Han characters.
_WEDGED = re.compile(rf"(?<=[{_HAN}])['.](?=[{_HAN}])")

_SENTENCE_PUNCT = re.compile(r"[，。！？；、：,!?;:“”]")

# Lines that are page furniture wherever they stand (matched on the normalised line), each up to a length:
# a long line is article text even if it mentions "版权" or contains ">>".
_FURNITURE: list[tuple[str, re.Pattern[str], int]] = [
    ("menu", re.compile(r"^(简体|繁体|网站地图|注册|登录|网站无障碍|进入适老版|进入关怀版|关闭|关闭窗口|打印|打印本页|收藏|"
                        r"返回顶部|返回首页|首页|无障碍浏览|手机版|English)(\s+(简体|繁体))?$"), 30),
    ("menu", re.compile(r"^(分享|点击量|点击数|浏览次数|阅读量|阅读数|字号|责任编辑|编辑|审核|校对|打印|扫一扫)\s*[:：].{0,16}$"), 30),
    ("breadcrumb", re.compile(r"(当前位置|您所在的位置|所在位置|现在位置|您的位置)\s*[:：]|>>|»"), 80),
    ("copyright", re.compile(r"版权(声明|所有)|copyright|©|all rights reserved|icp备|icp证|公网安备|网站标识码|备案序号|"
                             r"主办单位[:：]|承办单位[:：]|技术支持[:：]"), 200),
    ("teaser", re.compile(r"\[(详细|更多|详情|全文)\]\s*-?$"), 300),
    ("related", re.compile(r"^[-•·\s]*(上一篇|下一篇|本文地址|相关文章|相关推荐|相关阅读|延伸阅读|热点推荐|推荐阅读|"
                           r"热门文章|猜你喜欢)"), 120),
    ("related", re.compile(r"相关文章\s*[:：]?$"), 80),
    ("comments", re.compile(r"^(评论|留言)\s*[:：]?\s*\d*$"), 20),
    ("seo", re.compile(r"小编为您|希望对您有(所)?帮助|本文由.{0,12}整理"), 200),
    ("image", re.compile(r"\.(jpe?g|png|gif|bmp|webp)$"), 80),
    ("image", re.compile(r"^◎.{0,20}(文|图)\s*/\s*(文|图)"), 40),
    ("separator", re.compile(r"^[-—_=*·•|~\s]+$"), 80),
]
_IMAGE_FILE = _FURNITURE[-3][1]
# Lines from which the rest of the page is furniture, once the article is well under way.
_TAIL_MARKER = re.compile(r"^(版权(声明|所有)|相关文章|相关推荐|相关阅读|上一篇|下一篇|本文地址|网站链接|关闭|关闭窗口|"
                          r"评论\s*\d+$|【.{1,40}】相关文章)|相关文章\s*[:：]?$")
_TAIL_MIN_FRACTION = 0.3
# Runs of at least this many short, unpunctuated lines are menus or link lists.
_LINK_RUN = 5
_LINK_LINE_MAX = 25
_CAPTION_MAX = 40

_DATE = re.compile(r"(\d{4}\s*[-/.年]\s*\d{1,2}\s*[-/.月]\s*\d{1,2}(?:\s*日)?(\s+\d{1,2}:\d{2}(:\d{2})?)?)")
_SOURCE = re.compile(r"(?:来源|来自|稿源|出处)\s*[:：]\s*([^\s|]+)")
_DATE_LABEL = re.compile(r"^(日期|时间|发布时间|发布日期|发表时间)\s*[:：]")


@dataclass
class CleanedText:
    """The article alone, in its original script, with what the page says about itself."""

    text: str
    title: str | None = None
    date: str | None = None
    source: str | None = None
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (reason, original line)


@functools.cache
def _gbk_candidates(trail: int) -> list[str]:
    out = []
    for lead in range(0x81, 0xFF):
        with contextlib.suppress(UnicodeDecodeError):
            out.append(bytes([lead, trail]).decode("gbk"))
    return out


def _recover_broken(text: str) -> str:
    """Repair ``?pinyin)X`` converter damage, guessing the lost character from the surviving trail byte.

    The candidate that forms the most frequent word with its neighbour (jieba's dictionary) wins; when no
    candidate forms a known word, or the trail byte is lost too, the damage is removed.
    """

    def repl(m: re.Match[str]) -> str:
        trail = m.group(1)
        if not trail or not ("\x40" <= trail <= "\x7e"):
            return ""
        prev = text[m.start() - 1] if m.start() > 0 else ""
        nxt = text[m.end()] if m.end() < len(text) else ""
        freq = word_freq()
        best, best_score = "", 0
        for cand in _gbk_candidates(ord(trail)):
            score = max(freq.get(to_simplified(prev + cand), 0), freq.get(to_simplified(cand + nxt), 0))
            if score > best_score:
                best, best_score = cand, score
        return best

    return _BROKEN.sub(repl, text)


def strip_annotations(text: str) -> str:
    """Remove converter pinyin annotations (intact and broken) and wedged anti-scraping characters."""
    toned = len(_ANNOTATION.findall(text))
    text = _ANNOTATION.sub("", text)
    if "?" in text:
        text = _ANNOTATION.sub("", _recover_broken(text))
    if toned >= 5:
        text = _ANNOTATION_TONELESS.sub("", text)
    return _WEDGED.sub("", text)


def _furniture(norm: str) -> tuple[str | None, re.Match[str] | None]:
    """Why ``norm`` is page furniture, and where the rule matched (``(None, None)`` for article text)."""
    for reason, pattern, max_len in _FURNITURE:
        if len(norm) <= max_len and (m := pattern.search(norm)):
            return reason, m
    return None, None


def _is_listy(norm: str) -> bool:
    return len(norm) <= _LINK_LINE_MAX and not _SENTENCE_PUNCT.search(norm)


def _drop_link_runs(lines: list[str], norms: list[str], marked: list[str | None],
                    dropped: list[tuple[str, str]]) -> list[int]:
    """Indexes of the lines outside runs of short unpunctuated lines (menus, link lists); marker lines end a run."""
    out: list[int] = []
    i = 0
    while i < len(lines):
        j = i
        while j < len(lines) and not marked[j] and _is_listy(norms[j]):
            j += 1
        if j - i >= _LINK_RUN:
            dropped.extend(("link-list", lines[k]) for k in range(i, j))
            i = j
            continue
        out.append(i)
        i += 1
    return out


def _find_title(lines: list[str]) -> str | None:
    for line in lines[:3]:
        kind = marker_kind(line)
        if kind == "row":
            break  # a table row is not a title
        if kind is not None:
            continue  # "〔第1页〕": the title may stand on the page's first line
        norm = normalize(line)
        if _DATE_LABEL.search(norm) or _SOURCE.search(norm):
            continue
        if 4 <= len(line) <= 60 and not re.search(r"[。！？!?:：;；,，]$", line):
            return line
        break
    return None


def clean_text(raw: str) -> CleanedText:
    """Clean one scraped page (any script); see the module docstring for what goes."""
    text = strip_annotations(raw.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [re.sub(r"[ \t\u3000\xa0]{2,}", " ", ln).strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    norms = [normalize(ln) for ln in lines]
    marked = [marker_kind(ln) for ln in lines]
    dropped: list[tuple[str, str]] = []

    # Cut the tail at the first end-of-article marker that comes after the article has begun.
    total = sum(map(len, lines)) or 1
    seen = 0
    for i, norm in enumerate(norms):
        if (not marked[i] and seen / total >= _TAIL_MIN_FRACTION and len(norm) <= 200
                and _TAIL_MARKER.search(norm)):
            dropped.extend(("tail", ln) for ln in lines[i:])
            lines, norms, marked = lines[:i], norms[:i], marked[:i]
            break
        seen += len(lines[i])

    kept = _drop_link_runs(lines, norms, marked, dropped)

    result: list[str] = []
    seen_paragraphs: set[str] = set()
    after_image = False
    previous_headline: int | None = None
    for i in kept:
        line, norm = lines[i], norms[i]
        if marked[i]:
            # A table row may hold "主办单位：…" or a file name, and a page marker is short: both are content.
            result.append(line)
            after_image, previous_headline = False, None
            continue
        reason, cut = _furniture(norm)
        # "……正文。【责任编辑：某】 版权声明：……" on one line: keep the text before the notice.
        if reason == "copyright" and len(norm) == len(line) and cut.start() >= 20:
            dropped.append(("copyright", line[cut.start() :]))
            line, norm, reason = line[: cut.start()].rstrip(), norm[: cut.start()].rstrip(), None
        if reason is None and after_image and len(line) <= _CAPTION_MAX:
            reason = "caption"
        if reason is None and len(norm) >= 8 and norm in seen_paragraphs:
            reason = "duplicate"
        after_image = reason == "image" and _IMAGE_FILE.search(norm) is not None
        if reason == "teaser" and previous_headline is not None:
            # A teaser's headline stands on the line before it.
            dropped.append(("teaser", result.pop(previous_headline)))
        if reason is not None:
            dropped.append((reason, line))
            previous_headline = None
            continue
        previous_headline = len(result) if _is_listy(norm) else None
        seen_paragraphs.add(norm)
        result.append(line)

    title = _find_title(result)
    date = source = None
    for line in result[:8]:
        if marker_kind(line) == "row":
            continue  # a date or source in a table's cell is data, not the document's own
        norm = normalize(line)
        dated = _DATE.search(line)
        if date is None and dated:
            date = dated.group(1).strip()
        if source is None and (m := _SOURCE.search(line)):
            source = m.group(1).strip()
        elif source is None and dated and 2 <= dated.start() <= 20:
            # "甘孜日報 2022年06月20日": a masthead before the date.
            candidate = line[: dated.start()].strip()
            if candidate and not _SENTENCE_PUNCT.search(candidate) and not _DATE_LABEL.search(norm):
                source = candidate
    return CleanedText(text="\n".join(result), title=title, date=date, source=source, dropped=dropped)

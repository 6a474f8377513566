"""Model-free answer extraction: pick the best sentence, then the span the question asks for.

The sentences come ranked by :func:`rag.answering.sentences.rank_sentences` (IDF-weighted coverage of the
question's content words).
In the best sentences the question is aligned around its question word (谁/多少/哪里/何时/什么 ...): the
text between the words before and after it is the answer, narrowed by the question type (a number with
its unit, a person, a date, a place, a country, a work's title, a reason, a phrase or a list). All matching runs on normalised text; spans are
returned as offsets into the original-script passage.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..index.lexical import tokenize_spans, word_freq, word_tag
from ..normalize import normalize
from .sentences import PassageText, ScoredSentence, rank_sentences

# Question words, most specific first, with the answer type each asks for.
_WH = [
    # "称为什么", "作为什么", "为什么服务" ask what, not why.
    ("reason", r"(?<![称作成改视译列名定选评封类误转认变当立奉誉赞命任因是])为(?:什么|何|啥)(?!服务|而|所|人)|何故|什么原因|原因是什么"),
    ("title", r"什么职务|什么职位|哪个职务|何职|职务是什么|职位是什么|什么头衔|什么官职"),
    ("date", r"什么时候|何时|哪一天|哪天|哪一年|哪几年|哪些年|哪年|几月几日|几月几号|几号|哪个月|几月|什么时间|哪一日|日期是"),
    ("list", r"哪些|哪[一二两三四五六七八九十几\d]+[个项条种方面点类]"),
    ("number", r"百分之几|多少|几|多大|多高|多长|多久|多重|多远|比例"),
    ("person", r"哪一位|哪位|谁|什么人"),
    ("country", r"哪一?个?国(?:家)?(?![际内外])|什么国籍|国籍是什么"),
    ("place", r"在哪里|在哪儿|在哪|哪里|哪儿|何地|什么地方|何处|哪个城市|哪座城市|哪个省|哪个县|哪个国家|哪个地方|哪个地区"),
    # A titled work: answered by a 《…》 or 「…」 title when the sentence has one.
    ("work", r"(?:哪一?[部本首篇句张出套款]|什么)[^，。？的]{0,3}?(?:小说|作品|电影|影片|剧|书|歌|曲|诗|文章|专辑|节目|漫画|"
             r"动画|游戏|俗语|名言|口号|著作|杂志|报纸|单曲|戏|词)(?!化)|代表作(?:是|有)?(?:什么|哪)"),
    ("thing", r"什么|哪个|哪一个|哪座|哪份|哪种|哪部|哪所|哪家|哪款|哪项|哪条|哪首|哪本|哪支|哪名|哪一|啥|何种|怎样|如何|哪"),
]
_WH_RE = [(kind, re.compile(pattern)) for kind, pattern in _WH]
_TRAILING = re.compile(r"[？?。！!，,\s]*(吗|呢|呀|啊)?[？?。！!，,\s]*$")
_DELIMS = "，。；！？,;!?\n"
_CLAUSE_DELIMS = _DELIMS + "、"

_CN_NUM = "零〇一二两三四五六七八九十百千万亿"
_UNIT = (r"(?:万元|亿元|万人次|万户|万份|万名|万人|人次|场次|余名|余人|余户|余场|余个|余次|余所|余篇|个|名|位|人|户|份|座|场|期|次|"
         r"轮|点|项|元|年|岁|支|所|家|篇|条|天|届|倍|趟|公里|千米|米|吨|亩|平方米|小时|分钟|%|％)")
_NUMBER = re.compile(rf"(?:\d+(?:[.,]\d+)*|[{_CN_NUM}]+)(?:余|多)?(?:万|亿)?(?:余|多)?{_UNIT}?")
_DATE_RANGE = r"\d{4}\s*[-—–~至到]\s*\d{4}\s*年?"
_FULL_DATE = r"\d{4}\s*年\s*\d{1,2}\s*月\s*\d{1,2}\s*[日号](?:上午|下午|晚上)?|\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"
_DAY = _FULL_DATE + r"|\d{1,2}\s*月\s*\d{1,2}\s*[日号](?:上午|下午|晚上)?"
_DATE = re.compile(rf"{_DATE_RANGE}|{_DAY}|\d{{4}}\s*年(?:\s*\d{{1,2}}\s*月)?|\d{{1,2}}\s*月(?:上旬|中旬|下旬)?")
_DAY_DATE = re.compile(_DAY)
# Question words that ask for a day, or for a year, rather than any date.
_ASKS_DAY = re.compile(r"哪一天|哪天|几月几日|几月几号|几号|哪一日|日期")
_ASKS_YEAR = re.compile(r"哪一年|哪年|哪几年|哪些年")
_YEAR_DATE = re.compile(rf"{_DATE_RANGE}|\d{{4}}\s*年(?:\s*\d{{1,2}}\s*月(?:\s*\d{{1,2}}\s*[日号])?)?|\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{1,2}}")
_DATE_BY_HINT = {"day": _DAY_DATE, "year": _YEAR_DATE, "": _DATE}
# Questions about money: the number must be an amount in 元 (not "14个").
_ASKS_MONEY = re.compile(r"金额|奖金|资金|经费|多少钱|投资|收入|营收|利润|价格|费用|工资|补贴|补助|预算|总额")
_ASKS_RATE = re.compile(r"指数|增长|上涨|下降|下跌|同比|环比|比例|比重|率|百分")
# Parts of a question that pin down which event, period or level it means ("第七次", "2025年", "全国"): evidence
# about another meeting, year or level (a county's) would make the answer a guess (see missing_qualifiers).
# "第一次" is left out: in questions it mostly means "for the first time".
_QUALIFIER = re.compile(rf"第(?!一次)[{_CN_NUM}\d]+[次届期轮批]|(?:19|20)\d\d\s*年|全[国省区市州县](?![场域面长])")
_TITLE_WORDS = (r"书记|主席|县长|区长|市长|省长|州长|镇长|乡长|旗长|专员|部长|局长|厅长|主任|委员|常委|秘书长|院长|"
                r"校长|董事长|经理|总裁|组长|队长|处长|科长|会长|理事长|政委|司令|总监|专家|教授|记者|代表|主持人")
_TITLE = re.compile(rf".*(?:{_TITLE_WORDS})")
_TITLE_WORD = re.compile(_TITLE_WORDS)
_TITLE_PREFIX = set("副总正常务首席执行代理名誉")
# Common single-character surnames (and compound ones): a person answer starts with one.
_SURNAMES = set("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
                "姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤常温康施"
                "文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷"
                "盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷"
                "晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝封鞠")
_COMPOUND_SURNAMES = ("欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒", "夏侯")
# Characters that end a name: the verb or preposition that follows it in a report.
_NAME_STOP = set("出主讲宣参表指强要介说等向在和与及作担任为是代带陪总致发同以对从将把被率提会分到于就并也都已的")
@dataclass
class Extraction:
    """The extracted answer and where it came from (offsets into the passage's text)."""

    answer: str
    evidence: str
    passage: int
    answer_start: int
    answer_end: int
    evidence_start: int
    evidence_end: int
    kind: str  # question type
    coverage: float  # IDF-weighted share of the question's words in the evidence (0 to 1)
    alignment: float  # share of the question's context around its question word found in the evidence
    typed: bool  # a span was found around the question word (of the asked type, where it has one)
    margin: float | None = None  # a trained reader's score over its "no answer" score (rag.answering.reader)

    @property
    def confidence(self) -> float:
        """How well the evidence answers the question: what abstention thresholds are calibrated on (for a
        trained reader's span, its margin over "no answer")."""
        if self.margin is not None:
            return self.margin
        if self.kind in _TYPED and not self.typed:
            return 0.5 * self.coverage  # asked for a number, date or person and found none
        return self.coverage + 0.4 * self.alignment + (0.15 if self.typed else 0.0)


def question_type(question: str) -> tuple[str, re.Match[str] | None]:
    """The answer type a question asks for and its question-word match (on the normalised question)."""
    q = normalize(question)
    for kind, pattern in _WH_RE:
        m = pattern.search(q)
        if m:
            return kind, m
    return "thing", None


def _best_left_anchor(text: str, context: str, min_len: int = 2) -> tuple[int, int] | None:
    """Where the words just before the question word appear in ``text``: the longest ending of ``context`` found
    there, else the longest piece of it anywhere (the words next to the question word say most about where the
    answer sits: "…基数的上限为33891元，下限为6326元")."""
    n = len(context)
    for start in range(n - min_len + 1):
        pos = text.find(context[start:])
        if pos >= 0:
            return pos, pos + n - start
    for size in range(n - 1, min_len - 1, -1):
        for start in range(n - size):
            pos = text.find(context[start : start + size])
            if pos >= 0:
                return pos, pos + size
    return None


def _longest_prefix_in(text: str, context: str, start: int, min_len: int = 2) -> tuple[int, int] | None:
    for size in range(min(len(context), 12), min_len - 1, -1):
        piece = context[:size]
        pos = text.find(piece, start)
        if pos >= 0:
            return pos, pos + size
    return None


def _to_delim(text: str, start: int, delims: str, limit: int = 40) -> int:
    end = start
    while end < len(text) and end - start < limit and text[end] not in delims:
        end += 1
    return end


def _from_delim(text: str, end: int, delims: str, limit: int = 40) -> int:
    start = end
    while start > 0 and end - start < limit and text[start - 1] not in delims:
        start -= 1
    return start


_LEAD = "是为了在有达到于将把对由共计约近超过的 ：:，,、；;"
_TRAIL_WORDS = re.compile(r"(分别|均|都|也|还|共|先后|已|等)$")
_PAIRS = {"《": "》", "“": "”", "（": "）", "(": ")", "「": "」", "【": "】", "‘": "’"}


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Trim connecting words and punctuation around a span; close a bracket or quote it opened."""
    while start < end and text[start] in _LEAD:
        start += 1
    while end > start:
        if text[end - 1] in "，,。；;：:、 的了":
            end -= 1
        elif m := _TRAIL_WORDS.search(text, start, end):
            end = m.start()
        else:
            break
    for opening, closing in _PAIRS.items():
        if text.count(opening, start, end) > text.count(closing, start, end):
            close = text.find(closing, end)
            if 0 <= close - end <= 30:
                end = close + 1
    return start, end


def _typed_span(kind: str, s: str, start: int, end: int, unit_hint: str,
                near_end: bool = False) -> tuple[int, int] | None:
    """Narrow ``s[start:end]`` to the answer type; ``None`` when the type is not there."""
    window = s[start:end]
    if kind == "number":
        matches = [m for m in _NUMBER.finditer(window) if _is_quantity(m, window)]
        if unit_hint:
            # "多少个" asks for a count of 个: a number with another unit is not the answer.
            matches = [m for m in matches if unit_hint in m.group()]
        if not matches:
            return None
        digits = [m for m in matches if re.search(r"\d", m.group())] or matches
        m = digits[-1] if near_end else digits[0]  # the number next to the anchor
        return start + m.start(), start + m.end()
    if kind == "date":
        m = _DATE_BY_HINT[unit_hint].search(window)
        return (start + m.start(), start + m.end()) if m else None
    if kind == "person":
        title = _TITLE.match(window)
        return (_name_at(s, start + (title.end() if title else 0), end, after_title=title is not None)
                or _name_before_title(s, start, end))
    return (start, end) if end > start else None


def _name_before_title(s: str, start: int, end: int) -> tuple[int, int] | None:
    """A name written before its title in ``s[start:end]`` ("倪虹部长召开……"), the last one if several."""
    found = None
    for m in _TITLE_WORD.finditer(s, start, end):
        title_start = m.start()
        while title_start > start and s[title_start - 1] in _TITLE_PREFIX:
            title_start -= 1  # "副主席", "常务副县长"
        for size in (3, 2):
            a = title_start - size
            if a >= start and _name_at(s, a, title_start) == (a, title_start):
                found = (a, title_start)
                break
    return found


def _common_word(text: str) -> bool:
    """A frequent dictionary word that is not tagged as a person's name."""
    return word_freq().get(text, 0) >= 300 and not word_tag(text).startswith("nr")


def _is_quantity(m: re.Match[str], text: str) -> bool:
    """A count or amount, not a numeral inside a name ("两规划") or an identifier ("501会议室")."""
    value = m.group()
    if re.fullmatch(r"(19|20)\d\d年", value):
        return False  # a year is a date, not an amount
    has_unit = bool(re.search(_UNIT + "$", value))
    if re.search(r"\d", value):
        before, following = text[max(0, m.start() - 2) : m.start()], text[m.end() : m.end() + 2]
        if re.fullmatch(r"\d[-/:]", before) or re.fullmatch(r"[-/:]\d", following):
            return False  # part of a date, time or code ("2023-07-07")
        return has_unit or not ("\u4e00" <= following[:1] <= "\u9fff")
    return has_unit and bool(re.search(r"[一二两三四五六七八九十百千万]", value))


def _name_at(s: str, a: int, end: int, after_title: bool = False) -> tuple[int, int] | None:
    """The person's name starting at ``a``, if any.

    A name is a common surname and one or two more characters; right after a title ("副专员阿依古丽") any
    2 to 4 characters up to the next verb count, since many names (Uyghur, Tibetan ...) have no such surname.
    """
    if "·" in s[a:end]:
        # Transliterated names ("木合塔尔·马合苏提") run to the anchor.
        b = a
        while b < end and (s[b] == "·" or "\u4e00" <= s[b] <= "\u9fff"):
            b += 1
        return (a, b) if b - a >= 3 else None
    surname = 2 if s[a : a + 2] in _COMPOUND_SURNAMES else 1 if a < len(s) and s[a] in _SURNAMES else 0
    if not surname and after_title:
        b = a
        while b < min(end, len(s), a + 4) and "\u4e00" <= s[b] <= "\u9fff" and s[b] not in _NAME_STOP:
            b += 1
        # "部长召开" is a title and a verb, not a title and a name.
        return (a, b) if b - a >= 2 and not _common_word(s[a:b]) else None
    if not surname:
        return None
    b = a + surname
    for _ in range(2):
        if b < min(end, len(s)) and "\u4e00" <= s[b] <= "\u9fff" and s[b] not in _NAME_STOP:
            b += 1
        else:
            break
    if b - a < 2 or _common_word(s[a:b]):
        return None  # "万物" starts with a surname but is a word
    return a, b


_UNIT_HINT = re.compile(r"^(?:个|名|位|人次|人|户|份|座|场次|场|期|次|轮|点|项|元|万元|年|岁|支|所|家|篇|条|天|届|倍|代)")


def _align_right(s: str, right: str, start: int) -> tuple[int, int, int] | None:
    """Where the words after the question word appear in ``s``; skips up to 3 leading characters (a head noun
    the sentence does not repeat). Returns ``(start, end, skipped)``."""
    for skip in range(min(4, len(right))):
        found = _longest_prefix_in(s, right[skip:], start, min_len=min(2, len(right) - skip))
        if found:
            return found[0], found[1], skip
    return None


_TYPED = ("number", "date", "person", "title")
_WORK_TITLE = re.compile(r"[《「〈『]([^》」〉』]{1,40})[》」〉』]")
_MORE_TITLES = re.compile(r"[^，。；、和与及《「〈『]{0,4}[和与及、][《「〈『][^》」〉』]{1,40}[》」〉』]")
_HEAD_SUFFIX = set("寺县市省区镇乡村局部会院馆校报厅委社站所街路山河湖岛港湾州国")
_LEFT_FILLER = re.compile(r"[是为的由被在有对向把将给从]+$")


@dataclass(frozen=True)
class _Question:
    """A question split around its question word, parsed once and aligned against many sentences."""

    kind: str
    left: str  # the words before the question word (trailing fillers such as 是/由 removed)
    right: str  # the words after it ("" when too short to align)
    unit_hint: str  # 个/名 … for numbers, day/year for dates
    ordinal: bool  # "第几"


def _parse_question(question: str) -> _Question | None:
    kind, wh = question_type(question)
    if wh is None:
        return None
    q = _TRAILING.sub("", normalize(question))
    left, right = _LEFT_FILLER.sub("", q[: wh.start()]), q[wh.end() :]
    unit_hint = ""
    if kind == "date":
        unit_hint = "day" if _ASKS_DAY.search(wh.group()) else "year" if _ASKS_YEAR.search(wh.group()) else ""
    if kind == "number" and (m := _UNIT_HINT.match(right)):
        unit_hint, right = m.group(), right[m.end() :]
    elif kind == "number" and _ASKS_MONEY.search(q) and not _ASKS_RATE.search(q):
        unit_hint = "元"
    if kind == "title":
        left = re.sub(r"(被|册封|任命|授予|封|担任|出任|现任|升任|任|为|是|的|了|相当于)+$", "", left)
    if kind == "thing" and not left and re.match(r"是|指", right):
        left, right = right[1:], ""  # "什么是月代" asks what "月代是……" says
    right = right.lstrip("的是")
    if len(right) < 2:
        right = ""  # one character ("哪些人") aligns anywhere
    return _Question(kind, left, right, unit_hint, kind == "number" and q[: wh.start()].endswith("第"))


def extract_from_sentence(question: str, sentence: str) -> tuple[str, int, int, float] | None:
    """``(kind, start, end, alignment)`` of the answer inside ``sentence``, or ``None``.

    ``alignment`` is the share of the question's context (the words around its question word) found in
    the sentence. ``sentence`` and its normalised form must have the same length (true for OpenCC t2s).
    """
    parsed = _parse_question(question)
    return _extract(parsed, sentence) if parsed else None


def _extract(question: _Question, sentence: str) -> tuple[str, int, int, float] | None:
    s = normalize(sentence)
    if len(s) != len(sentence):
        return None
    kind, left, right, unit_hint, ordinal = (question.kind, question.left, question.right, question.unit_hint,
                                            question.ordinal)
    if kind == "title" and (span := _title_span(s, left)):
        return span
    if kind == "reason":
        if span := _reason_span(s, right):
            return "reason", *span, 0.5  # a word of reason, not the question's own words: half an alignment
        kind = "thing"  # no word of reason here: the words around the question word may still point at it
    if kind == "country":
        return _country_span(question, sentence, s)
    if kind == "work":
        return _work_span(question, sentence, s)
    # Lists and chains of titles ("副县长、妇儿工委副主任吴开华") run across 、.
    delims = _DELIMS if kind in ("list", "person") else _CLAUSE_DELIMS
    lmatch = _best_left_anchor(s, left) if left else None
    rmatch = None
    if right:
        rmatch = (lmatch and _align_right(s, right, lmatch[1])) or _align_right(s, right, 0)
    l_value = (lmatch[1] - lmatch[0] + (2 if left.endswith(s[lmatch[0] : lmatch[1]]) else 0)) if lmatch else 0
    r_value = (rmatch[1] - rmatch[0] + (2 if rmatch[2] == 0 else 0)) if rmatch else 0
    # Windows to try, the most constrained first: between the anchors, then after the left one or before the
    # right one (the stronger anchor first).
    windows: list[tuple[int, int, bool, bool]] = []
    if lmatch and rmatch and 0 < rmatch[0] - lmatch[1] <= 60:
        windows.append((_skip_aside(s, lmatch[1], rmatch[0]), rmatch[0], True, True))
    one_sided = []
    if lmatch:
        after = _skip_aside(s, lmatch[1])
        one_sided.append((l_value, (after, _to_delim(s, after, delims), True, False)))
    if rmatch:
        one_sided.append((r_value, (_from_delim(s, rmatch[0], delims), rmatch[0], False, True)))
    windows += [w for _, w in sorted(one_sided, key=lambda x: -x[0])]
    if not windows and kind == "date" and (m := _DATE_BY_HINT[unit_hint].search(s)):
        windows.append((m.start(), m.end(), False, False))  # a dateline next to a matching title
    for start, end, used_left, used_right in windows:
        span = _span_in_window(kind, s, start, end, rmatch if used_right else None, right, unit_hint, ordinal)
        if span is None:
            continue
        matched = (l_value if used_left else 0) + (r_value if used_right else 0)
        alignment = min(1.0, matched / max(1, len(left) + len(right) + 2))
        if kind == "title":
            alignment *= 0.3  # no title next to the name: a phrase near the question's words, weak evidence
        return kind, span[0], span[1], alignment
    return None


def _country_span(question: _Question, sentence: str, s: str) -> tuple[str, int, int, float] | None:
    """For "哪国人" / "哪个国家": the place name (jieba's ns) inside the span the question's words point at, else
    the nearest one; a short aligned span without one is kept ("斯洛文尼亚" is a name jieba lacks)."""
    found = _extract(dataclasses.replace(question, kind="place"), sentence)
    names = [(a, b) for word, a, b in tokenize_spans(s, mode="default")
             if word_tag(word) == "ns" and word not in question.left + question.right]
    if found and (inside := [n for n in names if found[1] <= n[0] and n[1] <= found[2]]):
        names = inside
    elif not names or (found and found[2] - found[1] <= 8):
        return found
    at = found[1] if found else 0
    a, b = min(names, key=lambda span: abs(span[0] - at))
    return "country", a, b, found[3] if found else 0.0


def _work_span(question: _Question, sentence: str, s: str) -> tuple[str, int, int, float] | None:
    """For "哪部小说" / "什么节目": the 《》/「」 title nearest the span the question's words point at (the first one
    when they point nowhere), with the titles joined to it by 和/、 ("《行为科学》杂志和《一般系统年鉴》")."""
    found = _extract(dataclasses.replace(question, kind="thing"), sentence)
    titles = [m for m in _WORK_TITLE.finditer(s) if m.group(1) not in question.left + question.right]
    if not titles:
        return found
    at = found[1] if found else 0
    m = min(titles, key=lambda m: abs(m.start() - at))
    end = m.end()
    while more := _MORE_TITLES.match(s, end):
        end = more.end()
    return "work", m.start(), end, found[3] if found else 0.0


def _skip_aside(s: str, at: int, limit: int | None = None) -> int:
    """``at``, or just past a bracketed aside that starts there ("矢井田瞳（、）是日本歌手", "张三（右）表示")."""
    if at < len(s) and s[at] in "（(":
        close = s.find("）" if s[at] == "（" else ")", at)
        if 0 <= close < (limit if limit is not None else at + 40) - 1:
            return close + 1
    return at


# A reason follows 因为/由于/因 and runs to 所以/因此/而…; without such a word it is the clause before 所以/因此.
_REASON_START = re.compile(r"原因是|原因在于|因为|由于|(?<![原基病诱起成主内外近远死])因(?![此而素特子])|缘于|源于|出于")
_REASON_END = re.compile(r"所以|因此|因而|从而|故而|，故|以致|使得|才|而(?![且言是])")
_RESULT = re.compile(r"所以|因此|因而|故此|以致|于是")


def _reason_span(s: str, right: str) -> tuple[int, int] | None:
    """The reason a sentence gives ("由于庙宇三面环山，……，所以如要循陆路进入" → "庙宇三面环山，……"); it ends
    where the question's own words after its question word (``right``) begin."""
    if m := _REASON_START.search(s):
        start = m.start() if m.group() == "因" else m.end()  # "因伤" reads as a reason, "伤" does not
        stop = _REASON_END.search(s, start)
        end = min(stop.start() if stop else len(s), _to_delim(s, start, "。！？；!?;", 80))
        if right and (echo := _longest_prefix_in(s, right, start)) and echo[0] < end:
            end = echo[0]
    elif (m := _RESULT.search(s, 1)) and (start := max(s.rfind(c, 0, m.start()) for c in "。！？；!?;") + 1) < m.start():
        end = m.start()
    else:
        return None
    start, end = _strip_span(s, start, end)
    return (start, end) if end > start else None


_APPOINTED = re.compile(r"[^，。；,;]{0,12}?(?:担任|出任|升任|转任|改任|任命为|册封为|封为|任|为)")


def _title_span(s: str, subject: str) -> tuple[str, int, int, float] | None:
    """The titles of ``subject``: written just before the name ("区党委副书记、自治区主席严金海"), or after a verb
    of appointment ("任命张裔为巴郡太守")."""
    # The question may say more than the sentence ("刘备进入益州后，张裔…"): use its longest ending found here.
    subject = next((subject[i:] for i in range(len(subject) - 1) if subject[i:] in s), "")
    if len(subject) < 2:
        return None
    at = s.find(subject)
    while at >= 0:
        start, end = _strip_span(s, _from_delim(s, at, "，。；！？,;!?\n“”：:（(", 40), at)
        if end > start and _TITLE.fullmatch(s[start:end]):
            return "title", start, end, 1.0
        after = at + len(subject)
        if m := _APPOINTED.match(s, after):
            start, end = _strip_span(s, m.end(), _to_delim(s, m.end(), _CLAUSE_DELIMS, 15))
            if end > start:
                return "title", start, end, 1.0
        at = s.find(subject, after)
    return None


def _span_in_window(kind: str, s: str, start: int, end: int, rmatch: tuple[int, int, int] | None, right: str,
                    unit_hint: str, ordinal: bool) -> tuple[int, int] | None:
    """The answer span of type ``kind`` in the window ``s[start:end]`` found by the anchors."""
    if rmatch and rmatch[2] == 0 and kind in ("thing", "list", "place") and end == rmatch[0]:
        if len(right) <= 4 and kind != "place":
            end = rmatch[1]  # "开展了什么培训" → the answer ends with its head noun: "……业务培训"
            if kind == "list":
                # "哪三个到位" → "领导责任到位、保障投入到位、督查落实到位": items share the head noun.
                clause_end = _to_delim(s, end, _DELIMS, 120)
                last = s.rfind(right, end, clause_end)
                end = last + len(right) if last >= 0 else end
        elif end < len(s) and s[end] in _HEAD_SUFFIX:
            end += 1  # "在哪座寺开展……" → "郎扎觉姆寺"
    if kind in _TYPED:
        span = _typed_span(kind, s, *_strip_span(s, start, end), unit_hint, near_end=rmatch is not None)
        if span is None and kind != "person":
            # The typed answer may sit just outside the aligned window, within its clause.
            span = _typed_span(kind, s, _from_delim(s, start, _DELIMS, 80), _to_delim(s, end, _DELIMS, 80), unit_hint)
        if span is None and kind == "date":
            span = _typed_span(kind, s, 0, len(s), unit_hint)  # "3月27日,……会召开": one date per sentence
        if span is None:
            return None
        start, end = span
        if ordinal and start > 0 and s[start - 1] == "第":
            start -= 1
        return start, end
    if kind == "place" and end - start > 15 and (at := s.rfind("在", start, end)) >= 0:
        start = at + 1  # "……表彰大会在区委501会议室召开" → the place follows 在
    start, end = _strip_span(s, start, end)
    if end <= start or (kind == "place" and end - start > 15):
        return None
    return start, end


def extract_answer(question: str, passages: Sequence[PassageText], idf: Callable[[str], float],
                   candidates: int = 30, ranked: Sequence[ScoredSentence] | None = None) -> Extraction | None:
    """The best answer span over ``passages`` (best-ranked first), or ``None`` when nothing matches.

    Candidate sentences are ranked by coverage (``ranked``, when the caller has ranked them already); among the
    best ``candidates`` the winner maximises coverage + 0.4·alignment + 0.15 when a span of the asked type was found.
    """
    parsed = _parse_question(question)
    kind = parsed.kind if parsed else "thing"
    best: Extraction | None = None
    best_value = -1.0
    ranked = rank_sentences(question, passages, idf) if ranked is None else ranked
    for sentence in ranked[:candidates]:
        coverage, text = sentence.coverage, sentence.text
        found = _extract(parsed, text) if parsed else None
        # For ranking, a sentence without the asked number/date/person is pushed well down.
        value = coverage + (0.4 * found[3] + 0.15 if found else (-0.3 if kind in _TYPED else 0.0))
        if value <= best_value:
            continue
        a, b = (found[1], found[2]) if found else (0, len(text))
        if found and found[0] == "number":
            b = _end_with_unit(normalize(text), a, b)  # "全长多少公里" is answered "364.6公里", not "364.6"
        if echoes_question(text[a:b], question):
            continue  # a passage that repeats the question ("…召开了什么会议？答：…") answers nothing
        best_value = value
        best = Extraction(answer=text[a:b], evidence=text, passage=passages[sentence.rank].index,
                          answer_start=sentence.start + a, answer_end=sentence.start + b,
                          evidence_start=sentence.start, evidence_end=sentence.end, kind=kind,
                          coverage=max(0.0, coverage), alignment=found[3] if found else 0.0, typed=found is not None)
    return best


def _arabic(numeral: str) -> str:
    """"七" → "7", "十二" → "12" (numerals up to 99); other text unchanged."""
    digits = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"〇": 0, "两": 2}
    if not numeral or any(c not in digits and c != "十" for c in numeral):
        return numeral
    if "十" in numeral:
        tens, _, ones = numeral.partition("十")
        return str((digits[tens] if tens else 1) * 10 + (digits[ones] if ones else 0))
    return "".join(str(digits[c]) for c in numeral)


def missing_qualifiers(question: str, context: str, answer_clause: str = "") -> list[str]:
    """Ordinals, years and levels of the question ("第七次", "2025年", "全国") that the evidence does not support.

    An ordinal or a level is unsupported when ``context`` does not mention it (either way written: 第七次 = 第7次).
    An ordinal or a year is unsupported when the clause holding the answer names another one of its kind: "第五次…
    会议在拉萨召开，传达学习第七次…会议精神" says where the fifth meeting was held, not the seventh. A year missing
    from the context alone is no reason (news reports leave the current year unsaid), nor is another level in the
    clause (a region's meeting studies the national one's spirit).
    """

    def canonical(text: str) -> str:
        text = re.sub(r"\s+", "", normalize(text))
        return re.sub(rf"第([{_CN_NUM}]+)(?=[次届期轮批])", lambda m: f"第{_arabic(m.group(1))}", text)

    def kind(word: str) -> str:
        return word[0] if word[0] in "第全" else "year"

    text, clause = canonical(context), canonical(answer_clause)
    in_clause = {canonical(m.group()) for m in _QUALIFIER.finditer(clause)}
    missing = []
    for m in _QUALIFIER.finditer(normalize(question)):
        word = canonical(m.group())
        same_kind = {q for q in in_clause if kind(q) == kind(word) != "全"}
        if (kind(word) != "year" and word not in text) or (same_kind and word not in same_kind):
            missing.append(m.group())
    return missing


def _content(text: str) -> str:
    return re.sub(r"[^\w]", "", normalize(text))


def echoed_share(answer: str, question: str) -> float:
    """Share of ``answer``'s characters (punctuation aside) inside pieces of two or more characters that
    ``question`` also holds."""
    answer, question = _content(answer), _content(question)
    covered = [False] * len(answer)
    for i in range(len(answer) - 1):
        j = i + 2
        while j <= len(answer) and answer[i:j] in question:
            j += 1
        if j - 1 - i >= 2:
            covered[i : j - 1] = [True] * (j - 1 - i)
    return sum(covered) / len(answer) if answer else 1.0


def echoes_question(answer: str, question: str) -> bool:
    """Whether ``answer`` only repeats the question's own words (an "A还是B" question is answered with them)."""
    return "还是" not in question and echoed_share(answer, question) >= 0.8


def _end_with_unit(text: str, start: int, end: int) -> int:
    """Where the number ``text[start:end]`` ends once the unit written after it is included (normalised text).

    ``end`` itself when no unit follows, or when the number is the tail of a longer one or an ordinal's ("第七次"
    is not "七次").
    """
    if start and re.match(rf"[\d.{_CN_NUM}第]", text[start - 1]):
        return end
    full = _NUMBER.match(text, start)
    return full.end() if full and full.end() > end else end


def with_unit(answer: str, passages: Sequence[str]) -> str:
    """A bare number completed with the unit that follows it in a passage: "364.6" → "364.6公里"."""
    number = answer.strip()
    if not re.fullmatch(rf"[\d.,{_CN_NUM}]+", number):
        return answer
    for passage in passages:
        text = normalize(passage)  # same length as the passage (t2s and width folding map one to one)
        for m in re.finditer(re.escape(normalize(number)), text):
            end = _end_with_unit(text, m.start(), m.end())
            if end > m.end():
                return number + passage[m.end() : end]
    return answer


def implausible_answer(answer: str, question: str, passages: Sequence[str]) -> str | None:
    """Why ``answer`` (from a model) cannot answer ``question``, or ``None`` when it can.

    Small models echo the question ("前燕是怎么灭亡的？" → "前燕灭亡"), answer a count without a count ("几位妻子" →
    "1") or return bare punctuation. Such answers are grounded, so the guard passes them; they are still no answer.
    """
    a = _content(answer)
    if not a:
        return "has no words"
    if echoes_question(answer, question):
        return "repeats the question"
    parsed = _parse_question(question)
    if parsed is None:
        return None
    if parsed.kind == "number":
        if not re.search(rf"[\d{_CN_NUM}]", a):
            return "has no number"
        unit = parsed.unit_hint
        if unit and unit not in a and not any(a + unit in normalize(p) for p in passages):
            return f"counts no {unit}"
    if parsed.kind == "date" and parsed.unit_hint == "year" and not re.search(rf"\d|[{_CN_NUM}]年", a):
        return "has no year"
    if parsed.kind == "date" and parsed.unit_hint == "day" and not _DAY_DATE.search(normalize(answer)):
        return "has no day"
    return None


def answer_clause(extraction: Extraction) -> str:
    """The clause of the evidence sentence around the answer span, the span itself blanked out (an answer
    "第七次" is not a qualifier of its own clause)."""
    return clause_around(extraction.evidence, extraction.answer_start - extraction.evidence_start,
                         extraction.answer_end - extraction.evidence_start)


def clause_around(sentence: str, start: int, end: int) -> str:
    """The clause of ``sentence`` around ``sentence[start:end]``, that span blanked out."""
    a, b = max(0, start), min(len(sentence), end)
    return sentence[_from_delim(sentence, a, _DELIMS, 200) : a] + "□" + sentence[b : _to_delim(sentence, b, _DELIMS, 200)]

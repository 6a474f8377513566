"""Word segmentation for BM25: jieba over the normalised (Simplified, half-width) text.

The BM25 index itself is SQLite FTS5 (see :mod:`rag.index.sqlite_store`), so it lives in the same database file and the
same transactions as the documents and chunks it scores.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterator, Sequence

from ..normalize import normalize

_WORD = re.compile(r"[\w\u3400-\u4dbf\u4e00-\u9fff]", re.UNICODE)

# Function words and question words: they carry no topic, and answers never contain the question words.
QUERY_STOPWORDS = frozenset(
    ["的", "了", "是", "在", "和", "与", "及", "或", "有", "也", "就", "都", "而", "被", "把", "对", "为", "以", "于", "从", "到", "向", "由", "给", "让", "这", "那", "其", "之", "个", "吗", "呢", "吧", "啊", "呀", "么", "什么", "哪", "哪个", "哪些", "哪里", "哪儿", "哪位", "哪年", "哪天", "哪一", "谁", "多少", "几", "几个", "怎么", "怎样", "如何", "为什么", "为何", "何时", "何地", "是否", "是不是", "请问", "请", "一下", "时候", "可以", "能", "会", "要", "还", "又", "中", "上", "下", "等"]
)


@functools.cache
def _jieba():
    import jieba

    jieba.setLogLevel(60)
    jieba.initialize()
    return jieba


def word_freq() -> dict[str, int]:
    """jieba's dictionary: word → frequency."""
    return _jieba().dt.FREQ


def word_tag(word: str) -> str:
    """jieba's part-of-speech tag of a dictionary word ("ns" a place, "nr" a person's name), or ""."""
    _jieba()
    import jieba.posseg

    return jieba.posseg.dt.word_tag_tab.get(word, "")


def tokenize(text: str, *, normalized: bool = False) -> list[str]:
    """Search-mode jieba words of ``text`` (normalised first unless ``normalized``), punctuation dropped."""
    if not normalized:
        text = normalize(text)
    return [w for w in _jieba().cut_for_search(text) if _WORD.search(w)]


def tokenize_spans(text: str, mode: str = "search") -> list[tuple[str, int, int]]:
    """jieba words of already normalised ``text`` with their character offsets, punctuation dropped; ``mode``
    "search" adds the shorter words inside long ones, "default" cuts each stretch of text once."""
    return [(w, a, b) for w, a, b in _jieba().tokenize(text, mode=mode) if _WORD.search(w)]


def word_spans(text: str) -> list[tuple[str, int, int]] | None:
    """Search-mode words of ``text``'s normalised form with their offsets, in text order; ``None`` when normalising
    changes the text's length, since the offsets would then not fit ``text``."""
    normalized = normalize(text)
    if len(normalized) != len(text):
        return None
    return sorted(tokenize_spans(normalized), key=lambda s: s[1])


def document_terms(text: str, title: str | None, keep: Sequence[tuple[int, int]] | None = None,
                   spans: list[tuple[str, int, int]] | None = None) -> list[str]:
    """The BM25 words of a whole document: its title's, then its text's.

    With ``keep`` (``[start, end)`` ranges of ``text``: the chunks still searchable), only the words inside those
    ranges count, and the title's only when some range is kept; so text excluded from search does not make its
    document match. ``spans`` are :func:`word_spans` of ``text`` when the caller has them already.
    """
    if keep is not None and not keep:
        return []
    title_terms = tokenize(title) if title else []
    if spans is None:
        spans = word_spans(text)
    if keep is None:
        if spans is None:
            return title_terms + tokenize(text)
        return title_terms + [w for w, _, _ in spans]
    regions = _merged(keep)
    if spans is None:
        return title_terms + [w for a, b in regions for w in tokenize(text[a:b])]
    starts = [a for a, _ in regions]
    kept = []
    for w, a, b in spans:
        i = bisect.bisect_right(starts, a) - 1
        if i >= 0 and b <= regions[i][1]:
            kept.append(w)
    return title_terms + kept


def _merged(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching ``[start, end)`` ranges joined, in order."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def words(text: str) -> list[str]:
    """Plain jieba words of the normalised text, punctuation dropped (for metrics such as ROUGE)."""
    return [w for w in _jieba().lcut(normalize(text)) if _WORD.search(w)]


# Question words (哪座, 第几次, 多少钱 ...) and words about the document itself (这篇新闻, 讲话) never occur in answers.
_QUESTION_WORD = re.compile(r"哪|几|谁|什么|多少|怎么|如何|为何|啥")
META_WORDS = frozenset(["这次", "这篇", "本次", "本文", "文章", "新闻", "报道", "讲话", "发言", "资料", "文中", "文件中", "请问", "提到", "提及"])


def _is_query_content(word: str) -> bool:
    """Neither a stopword, a question word nor a word about the text itself."""
    return word not in QUERY_STOPWORDS and word not in META_WORDS and not _QUESTION_WORD.search(word)


def query_terms(text: str, *, normalized: bool = False) -> list[str]:
    """Distinct content words of a question, in order: no stopwords, question words or words about the text."""
    return list(dict.fromkeys(t for t in tokenize(text, normalized=normalized) if _is_query_content(t)))


def query_bigrams(normalized_query: str) -> set[str]:
    """Character bigrams of a normalised question's runs of content words (stopwords and question words split
    the runs, so "会议在哪里召开" gives 会议 and 召开 but not 里召)."""
    return _content_bigrams(_jieba().lcut(normalized_query))


def query_words(normalized_query: str) -> tuple[list[str], set[str]]:
    """:func:`query_terms` and :func:`query_bigrams` of a normalised question from one jieba segmentation.

    jieba's search mode is its default cut plus the dictionary words inside each long word, so both come from
    the one cut a search pays for.
    """
    cut = _jieba().lcut(normalized_query)
    terms = (w for w in _search_mode(cut) if _WORD.search(w) and _is_query_content(w))
    return list(dict.fromkeys(terms)), _content_bigrams(cut)


def _search_mode(cut: list[str]) -> Iterator[str]:
    """The words ``jieba.cut_for_search`` gives for a text whose default cut is ``cut``: before each word longer
    than two characters, its two-character dictionary words, and, past three, its three-character ones."""
    freq = word_freq()
    for w in cut:
        if len(w) > 2:
            yield from (w[i : i + 2] for i in range(len(w) - 1) if freq.get(w[i : i + 2]))
        if len(w) > 3:
            yield from (w[i : i + 3] for i in range(len(w) - 2) if freq.get(w[i : i + 3]))
        yield w


def _content_bigrams(cut: list[str]) -> set[str]:
    """Character bigrams of the runs of content words in a question's default jieba cut."""
    pieces, run = [], []
    for w in cut:
        if _WORD.search(w) and _is_query_content(w):
            run.append(w)
        else:
            pieces.append("".join(run))
            run = []
    pieces.append("".join(run))
    return {p[i : i + 2] for p in pieces for i in range(len(p) - 1)}


def phrase_coverage(bigrams: set[str], normalized_text: str) -> float:
    """Share of a question's bigrams (:func:`query_bigrams`) found in ``normalized_text``.

    Word BM25 and embeddings both ignore word order; a passage that repeats the question's wording gets credit here.
    """
    return sum(b in normalized_text for b in bigrams) / len(bigrams) if bigrams else 0.0


def fts_match_expression(terms: list[str]) -> str:
    """An FTS5 ``MATCH`` expression that ORs the quoted terms (empty when there are none)."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)

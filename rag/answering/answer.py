"""Answering: retrieve, generate (or extract), check the answer against its sources, or abstain.

``Answerer.ask`` is the whole path of a question: :class:`~rag.retrieval.retrieve.Retriever` finds passages; a model
generator (if configured) writes an answer with ``[n]`` citations, and the grounding guard drops what the
cited passages do not support; the extractive answerer is the default and the fallback. When the best
evidence covers too little of the question the answer is "资料中未找到答案", with the closest passages.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

from ..config import Settings
from ..index.lexical import query_terms, word_freq, word_tag
from ..normalize import clean_text_field, match_script, normalize
from ..overlap import is_supported, ngram_support, split_claims
from ..retrieval.retrieve import Hit, Retriever, SearchResult
from .extractive import (
    Extraction,
    answer_clause,
    clause_around,
    echoed_share,
    extract_answer,
    extract_from_sentence,
    implausible_answer,
    missing_qualifiers,
    with_unit,
)
from .reader import Reader, read_extraction
from .sentences import INJECTION, PassageText, ScoredSentence, rank_sentences, without_instructions

log = logging.getLogger(__name__)

NOT_FOUND = "资料中未找到答案"


@dataclass
class Source:
    """A passage an answer may cite, numbered as in the answer's ``[n]`` markers."""

    marker: int
    doc_id: str
    chunk_id: int
    score: float
    text: str  # original script
    start: int  # span of ``text`` in the document
    end: int
    title: str | None = None
    support: list[int] | None = None  # [start, end) in ``text`` of what supports the answer
    warning: str | None = None
    library: str | None = None  # the library it came from, when a question spans several
    location: str | None = None  # page, slide, sheet and row in its file

    @classmethod
    def from_hit(cls, marker: int, hit: Hit) -> Source:
        """A retrieved chunk as source ``[marker]``, warned about when it holds text that tries to steer a model."""
        warning = "此段落含有类似指令的文字，已作为资料内容处理" if INJECTION.search(normalize(hit.text)) else None
        return cls(marker, hit.doc_id, hit.chunk_id, hit.score, hit.text, hit.start, hit.end, hit.title,
                   warning=warning, library=hit.library, location=hit.location)


@dataclass
class Answer:
    """An answer with everything needed to check it."""

    question: str
    answer: str
    abstained: bool
    generator: str
    evidence: str = ""
    citations: list[int] = field(default_factory=list)  # markers of the sources the answer rests on
    sources: list[Source] = field(default_factory=list)
    confidence: float = 0.0
    note: str | None = None
    dropped: list[str] = field(default_factory=list)  # generated sentences the guard refused
    seconds: float = 0.0  # retrieval (its share of a batch) plus answering
    # Why a model's answer is not the one shown (it failed, found nothing, or did not pass the checks): the answer
    # is then the extractive one, and ``generator`` says so too ("extractive (fallback: …)").
    fallback_reason: str | None = None
    # Names in the question that the passage the answer rests on never mentions: the answer may be about
    # something else ("拉萨市妇联主席…" answered from a passage about the region's 主席): shown as uncertain.
    unmatched: list[str] = field(default_factory=list)

    def caution(self) -> str | None:
        """What a reader should be told when the answer's passage never names some of the question's names (see
        :attr:`unmatched`), in the question's script; ``None`` otherwise."""
        if self.abstained or not self.unmatched:
            return None
        names = "、".join(self.unmatched)
        return match_script(f"不确定：答案所依据的段落没有提到问题中的“{names}”，请核对出处。", self.question)

    def to_dict(self) -> dict:
        """JSON-ready form; ``sources`` entries start with ``doc_id, chunk_id, score, text``."""
        data = asdict(self)
        data["sources"] = [{k: v for k, v in s.items() if k != "marker"} | {"marker": s["marker"]}
                           for s in data["sources"]]
        return data


@dataclass
class Evidence:
    """What retrieval gave one question: the numbered sources, their sentences ranked against the question, and
    the span the extractor would answer with."""

    sources: list[Source]
    extraction: Extraction | None
    ranked: list[ScoredSentence]


@dataclass
class Prepared:
    """A question retrieved and extracted, ready for the model (see :meth:`Answerer.prepare_many`)."""

    question: str  # as asked, cleaned
    query: str  # as searched (bounded in length)
    evidence: Evidence
    fallback: Answer  # the extractive answer (or abstention): what is shown when the model's is not
    seconds: float  # spent so far


@dataclass
class GuardResult:
    """What the grounding guard kept of a generated answer."""

    text: str
    kept: list[str]
    dropped: list[str]
    citations: list[int]


_MARKER = re.compile(r"\[(\d{1,2})\]")
# A word linking a restated subject to the answer: "徐晓飞[是]足球运动员", "圣体主教座堂[位于]底特律……".
_LINK = r"(?:现在|目前|曾经|主要)?(?:是|为|位于|属于|隶属于|效力于|由|于|在|的|：|:)"


def drop_restated_subject(answer: str, question: str) -> str:
    """Cut the question's own words that a model repeats before its answer, and the final full stop.

    "徐晓飞是足球运动员。" for "徐晓飞是做什么的？" becomes "足球运动员". Only a start that the question contains and that
    a linking word ends (or follows) is cut, so the answer itself is never shortened.
    """
    a, q = normalize(answer), normalize(question)
    n = next((size for size in range(min(len(a), len(q)), 1, -1) if a[:size] in q), 0)
    if n and (re.search(_LINK + "$", a[:n]) or re.match(_LINK, a[n:])):
        rest = re.sub(f"^(?:{_LINK})+", "", answer[n:])
        answer = rest or answer
    return answer.rstrip("。.！!") or answer


def focus_on_answer(answer: str, question: str, min_alignment: float = 0.4) -> str:
    """The part of a model's answer sentence that answers ``question`` when the sentence restates it.

    "楼曾瑞接受《明报》访问时表达了不满……的现象" for "楼曾瑞在接受《明报》访问时表达了什么观点？" becomes "不满……的现象":
    the question's words around its question word are aligned with the sentence, as for a retrieved one.
    """
    if echoed_share(answer, question) < 0.25 or re.search(r"[，,；;。]", answer.rstrip("。")):
        return answer  # an answer of several clauses is kept whole: the alignment would keep one
    found = extract_from_sentence(question, answer)
    if found is None or found[3] < min_alignment or found[2] - found[1] < 2:
        return answer
    return answer[found[1] : found[2]]


def grounding_guard(text: str, sources: Sequence[Source], min_support: float = 0.6) -> GuardResult:
    """Keep the generated sentences whose cited passages (or all passages, when none is cited) support them.

    A sentence is supported when most of its character trigrams occur in those passages and every number in
    it occurs there too. Citation markers pointing at no source are removed.
    """
    by_marker = {s.marker: s for s in sources}
    kept, dropped, cited = [], [], []
    for sentence in split_claims(text):
        markers = [int(m) for m in _MARKER.findall(sentence) if int(m) in by_marker]
        bare = _MARKER.sub("", sentence).strip()
        if not bare:
            continue
        evidence = [by_marker[m].text for m in markers] or [s.text for s in sources]
        ok = is_supported(bare, evidence, min_support)
        if ok and markers:
            cited.extend(markers)
        elif ok:
            # Uncited but supported: cite the passages that support it best.
            best = max(sources, key=lambda s: ngram_support(bare, [s.text]))
            cited.append(best.marker)
            sentence = bare + f"[{best.marker}]"
        (kept if ok else dropped).append(_MARKER.sub(lambda m: m.group() if int(m.group(1)) in by_marker else "",
                                                     sentence) if ok else bare)
    return GuardResult("".join(kept), kept, dropped, list(dict.fromkeys(cited)))


class Answerer:
    """Answers questions over one index. ``generator`` is ``None`` for no model; ``reader`` (a trained reader)
    finds the answer span, else the hand-written extractor does."""

    def __init__(self, retriever: Retriever, settings: Settings, generator=None, reader: Reader | None = None) -> None:
        self.retriever = retriever
        self.settings = settings
        self.generator = generator
        self.reader = reader
        self.extractor_name = "reader" if reader is not None else "extractive"

    def extract(self, question: str, hits: Sequence[Hit]) -> Evidence:
        """Number the hits as sources, rank their sentences and find the best answer span (no abstention)."""
        sources = [Source.from_hit(n, hit) for n, hit in enumerate(hits, 1)]
        idf = self.retriever.term_weights(query_terms(question))
        passages = [PassageText(i, s.text, s.title) for i, s in enumerate(sources)]
        ranked = rank_sentences(question, passages, idf)
        if self.reader is not None:
            return Evidence(sources, read_extraction(self.reader, question, passages, ranked), ranked)
        return Evidence(sources, extract_answer(question, passages, idf, ranked=ranked), ranked)

    def ask(self, question: str) -> Answer:
        """Answer one question."""
        return self.ask_many([question])[0]

    def ask_many(self, questions: Sequence[str]) -> list[Answer]:
        """Answer questions in order; retrieval is batched, models stay loaded."""
        return [self.finish(p) for p in self.prepare_many(questions)]

    def ask_stream(self, question: str) -> Iterator[str | Answer]:
        """Answer one question as a model writes it: see :meth:`finish_stream`."""
        return self.finish_stream(self.prepare_many([question])[0])

    def prepare_many(self, questions: Sequence[str]) -> list[Prepared]:
        """Retrieval, sentence ranking and the extractive answer of each question: all the work that reads the
        index (so a service can hold its index lock for this part only)."""
        started = time.perf_counter()
        results = self.retriever.search_many(questions, self.settings.answer_sources)
        retrieval = (time.perf_counter() - started) / max(1, len(questions))  # each question's share of the batch
        return [self.prepare_result(question, result, retrieval) for question, result in zip(questions, results)]

    def prepare_result(self, question: str, result: SearchResult, seconds: float = 0.0) -> Prepared:
        """:meth:`prepare_many` for a question already searched (a search across several libraries)."""
        began = time.perf_counter()
        question = clean_text_field(question)  # as searched: nothing that cannot be encoded reaches the answer
        evidence = self.extract(result.query, result.hits)  # the query as searched (length-bounded)
        fallback = self._extractive(question, evidence.extraction, evidence.sources, result.note)
        return Prepared(question, result.query, evidence, fallback, seconds + time.perf_counter() - began)

    def finish(self, prepared: Prepared) -> Answer:
        """The answer to a prepared question: the model's once it passes the checks, else the extractive one."""
        started = time.perf_counter()
        answer = prepared.fallback
        if self._asks_model(prepared):
            shown = self._model_input(prepared.evidence)
            try:
                raw: str | Exception = self.generator.answer(prepared.query, shown)
            except Exception as exc:  # a model failing on one question must not fail the batch
                raw = exc
            answer = self._checked(prepared, shown, raw)
        answer.seconds = prepared.seconds + time.perf_counter() - started
        return answer

    def finish_stream(self, prepared: Prepared) -> Iterator[str | Answer]:
        """The model's text piece by piece as it is written (unchecked: for display while it is written), then the
        checked :class:`Answer`, always last. Without a model that streams, just the Answer."""
        stream = getattr(self.generator, "stream_answer", None)
        if stream is None or not self._asks_model(prepared):
            yield self.finish(prepared)
            return
        started = time.perf_counter()
        shown = self._model_input(prepared.evidence)
        pieces: list[str] = []
        try:
            for piece in stream(prepared.query, shown):
                pieces.append(piece)
                yield piece
            raw: str | Exception = "".join(pieces)
        except Exception as exc:  # shown as the fallback's reason, like a failed call that does not stream
            raw = exc
        answer = self._checked(prepared, shown, raw)
        answer.seconds = prepared.seconds + time.perf_counter() - started
        yield answer

    def _asks_model(self, prepared: Prepared) -> bool:
        """Whether the model is asked: when there is one and the extractive answerer found an answer. Its
        abstention is the gate: asked past it, the 1.5B answers unanswerable questions with confident wrong names
        (eval/RESULTS.md)."""
        return self.generator is not None and not prepared.fallback.abstained

    def _supported(self, question: str, extraction: Extraction | None, sources: list[Source]) -> bool:
        if extraction is None:
            return False
        threshold = self.settings.abstain_threshold if self.reader is None else self.reader.settings.threshold
        if extraction.confidence < threshold or extraction.coverage < self.settings.min_coverage:
            return False
        source = sources[extraction.passage]
        return not missing_qualifiers(question, f"{source.title or ''}\n{source.text}", answer_clause(extraction))

    def _extractive(self, question: str, extraction: Extraction | None, sources: list[Source],
                    note: str | None) -> Answer:
        if not self._supported(question, extraction, sources):
            return Answer(question, match_script(NOT_FOUND, question), True, self.extractor_name, sources=sources,
                          confidence=extraction.confidence if extraction else 0.0, note=note)
        assert extraction is not None
        source = sources[extraction.passage]
        source.support = [extraction.answer_start, extraction.answer_end]
        return Answer(question, match_script(extraction.answer, question), False, self.extractor_name,
                      evidence=extraction.evidence, citations=[source.marker], sources=sources,
                      confidence=extraction.confidence, note=note, unmatched=unmatched_names(question, [source]))

    def _model_input(self, evidence: Evidence) -> list[Source]:
        """What the model reads: the best sources (at most ``generator_sources``, none scoring below
        ``generator_min_score`` of the best), cut to their sentences that bear on the question
        (:func:`select_sentences`) when ``generator_context_chars`` is set."""
        top = evidence.sources[: self.settings.generator_sources]
        best = top[0].score if top else 0.0
        # The share cut-off needs positive scores (fusion's are; a reranker's logits may not be).
        shown = top[:1] + [source for source in top[1:]
                           if best <= 0 or source.score >= self.settings.generator_min_score * best]
        if self.settings.generator_context_chars <= 0:
            return [dataclasses.replace(s, text=without_instructions(s.text)) for s in shown]
        return select_sentences(shown, evidence.ranked, self.settings.generator_context_chars)

    def _checked(self, prepared: Prepared, shown: list[Source], raw: str | Exception) -> Answer:
        """The model's answer once the guard and the plausibility checks pass it; else the extractive answer,
        saying why."""
        name = self.generator.name
        question, query, fallback = prepared.question, prepared.query, prepared.fallback
        extraction, sources = prepared.evidence.extraction, prepared.evidence.sources

        def fall_back(reason: str, dropped: list[str] | None = None) -> Answer:
            fallback.generator = f"{self.extractor_name} (fallback: {reason})"
            fallback.fallback_reason = reason
            if dropped is not None:
                fallback.dropped = dropped
            return fallback

        if isinstance(raw, Exception):
            log.warning("%s failed (%s); using the %s answer", name, raw, self.extractor_name)
            return fall_back(f"{name} failed: {raw}")
        shown_texts = [source.text for source in shown]
        if NOT_FOUND in normalize(raw):
            return fall_back(f"{name} found no answer")
        guarded = grounding_guard(raw, shown, self.settings.guard_min_support)
        if not guarded.kept:
            return fall_back(f"guard refused {name}", guarded.dropped)
        answer_text = _MARKER.sub("", guarded.text).strip()
        if extraction is not None:
            span, said = normalize(extraction.answer), normalize(answer_text)
            if span and span in said and len(span) < len(said):
                # The model's sentence contains the extracted span: keep the concise span it confirms.
                answer_text, name = extraction.answer, f"{name}+span"
            elif (extraction.typed and said and said in span
                  and len(said) < len(span) <= max(2 * len(said), len(said) + 12)):
                # The model clipped the span it confirms ("十三次" of "第十三次", "业务培训" of "……建设业务培训").
                answer_text, name = extraction.answer, f"{name}+span"
            else:
                answer_text = focus_on_answer(drop_restated_subject(answer_text, query), query)
                answer_text = with_unit(answer_text, shown_texts)
        # What is shown is checked again: cutting a supported sentence can leave just its unsupported words.
        cited = [source.text for source in shown if source.marker in guarded.citations]
        if not is_supported(answer_text, cited, self.settings.guard_min_support):
            return fall_back(f"guard refused {name}", [answer_text])
        problem = implausible_answer(answer_text, query, shown_texts)
        if problem:
            return fall_back(f"{name} answer {problem}", [answer_text])
        # What the answer rests on (its 依据): the cited sentence that holds it. Its clause must not name another
        # ordinal, year or level than the question's ("第五次…会议在拉萨召开，传达学习第七次…" does not say where the
        # seventh was held), as for an extracted answer.
        held = holding_sentence(answer_text, prepared.evidence.ranked, guarded.citations)
        if held is not None:
            source = sources[held.rank]
            at = find_answer(answer_text, held.text)
            clause = clause_around(held.text, at, at + len(answer_text))
            missing = missing_qualifiers(query, f"{source.title or ''}\n{source.text}", clause)
            if missing:
                return fall_back(f"{name} answer's sentence is not about {'、'.join(missing)}", [answer_text])
        for source in sources:
            # Highlight the answer where a cited passage contains it (t2s keeps lengths, so offsets carry over).
            pos = find_answer(answer_text, source.text) if source.marker in guarded.citations else -1
            source.support = [pos, pos + len(answer_text)] if pos >= 0 else None
        resting = [sources[held.rank]] if held else [s for s in sources if s.marker in guarded.citations]
        return Answer(question, match_script(answer_text, question), False, name,
                      evidence=held.text.strip() if held else "", citations=guarded.citations,
                      sources=sources, confidence=fallback.confidence, note=fallback.note, dropped=guarded.dropped,
                      unmatched=unmatched_names(query, resting))


# jieba's tags of names: places, people, organisations, other proper nouns, abbreviations (妇联). Common words
# carry such tags too (城市 ns, 中国 ns); only rarer ones (jieba frequency below NAME_MAX_FREQ) count as names.
NAME_TAGS = frozenset({"ns", "nr", "nrt", "nrfg", "nt", "nz", "j"})
NAME_MAX_FREQ = 5000


# A place named with its level (拉萨市) is mentioned by its bare name too (拉萨).
PLACE_LEVELS = "省市县区州盟旗镇乡村"


def unmatched_names(question: str, sources: Sequence[Source]) -> list[str]:
    """The names of ``question`` (jieba words tagged as names, not common) that none of ``sources`` (title and
    text, scripts folded) mentions, by the name or, for a place, its bare name."""
    text = normalize("\n".join(f"{s.title or ''}\n{s.text}" for s in sources))
    freq = word_freq()

    def mentioned(name: str) -> bool:
        bare = name[:-1] if len(name) >= 3 and name[-1] in PLACE_LEVELS else name
        return bare in text

    return [t for t in query_terms(question) if len(t) >= 2 and word_tag(t) in NAME_TAGS
            and freq.get(t, 0) < NAME_MAX_FREQ and not mentioned(t)]


def holding_sentence(answer: str, ranked: Sequence[ScoredSentence], markers: Sequence[int]) -> ScoredSentence | None:
    """The sentence of the passages ``markers`` names that holds ``answer`` and covers the question best: what the
    answer rests on (its 依据). ``None`` when no sentence holds it whole (a model's answer joining two). A number
    is held only as a whole number ("5" is not in "2015")."""
    return next((s for s in ranked if s.rank + 1 in markers and find_answer(answer, s.text) >= 0), None)


def find_answer(answer: str, text: str) -> int:
    """Where ``answer`` is in ``text`` (scripts folded; t2s keeps lengths, so the offset is one into ``text``), a
    number only as a whole number; -1 when it is not."""
    target = normalize(answer)
    if not target:
        return -1
    whole = re.compile((r"(?<![0-9])" if target[0].isdigit() else "") + re.escape(target)
                       + (r"(?![0-9])" if target[-1].isdigit() else ""))
    found = whole.search(normalize(text))
    return found.start() if found else -1


def select_sentences(shown: Sequence[Source], ranked: Sequence[ScoredSentence], budget: int) -> list[Source]:
    """``shown`` cut to the sentences that cover the question best, within ``budget`` characters in all.

    Sentences are taken best first (the best one always); each passage keeps its chosen sentences in their
    order, with "……" where text was left out, under its own marker, so the model's ``[n]`` still names the
    passage a user sees. A passage none of whose sentences is chosen is not shown.
    """
    by_marker = {source.marker: source for source in shown}
    chosen: dict[int, list[ScoredSentence]] = {}
    used = 0
    for sentence in ranked:
        marker = sentence.rank + 1  # sources are numbered from 1 in retrieval order
        if marker not in by_marker or sentence.coverage <= 0:
            continue
        if used and used + len(sentence.text) > budget:
            continue
        chosen.setdefault(marker, []).append(sentence)
        used += len(sentence.text)
    out = []
    for source in shown:
        sentences = sorted(chosen.get(source.marker, []), key=lambda x: x.start)
        if not sentences:
            continue
        parts, end = [], 0
        for sentence in sentences:
            parts.append(("" if sentence.start <= end or not parts else "……") + sentence.text.strip())
            end = sentence.end
        out.append(dataclasses.replace(source, text="".join(parts), support=None))
    return out or list(shown[:1])

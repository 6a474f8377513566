"""Summaries of documents, of a topic across documents, and of whole libraries in batch.

The extractive summariser ranks sentences with TextRank over character-bigram similarity of the normalised
text, adds a lead bias (reports and news put the essentials first), picks with MMR so that no two sentences say
the same thing, and returns the picked sentences in document order, in the document's own script. A model
summary (seq2seq or causal generator, map-reduce over the model's input budget) is checked sentence by sentence
against the document: sentences that are not supported, or that carry a number the document lacks, are
dropped and reported; when nothing survives the extractive summary is used.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..answering.answer import Source, grounding_guard
from ..config import Settings
from ..index.embeddings import text_hash
from ..ingestion.chunking import chunk_text, split_sentences
from ..normalize import match_script, normalize, to_simplified, to_traditional
from ..overlap import is_supported, split_claims

log = logging.getLogger(__name__)

LENGTHS = {"short": 100, "medium": 220, "long": 450}  # target characters
_MIN_SENTENCE = 8


@dataclass
class SummarySource:
    """A sentence (or passage) a summary rests on."""

    doc_id: str
    start: int
    end: int
    text: str


@dataclass
class Summary:
    """A summary with its provenance."""

    doc_id: str | None
    title: str | None
    summary: str
    generator: str
    sources: list[SummarySource] = field(default_factory=list)
    bullets: list[dict[str, Any]] = field(default_factory=list)  # topic summaries: {"text", "sources": [...]}
    dropped: list[str] = field(default_factory=list)  # model sentences the faithfulness check refused

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _bigrams(text: str) -> Counter:
    chars = [c for c in normalize(text) if not c.isspace()]
    return Counter(a + b for a, b in itertools.pairwise(chars))


def _cosine(a: Counter, b: Counter) -> float:
    if not a or not b:
        return 0.0
    dot = sum(v * b.get(k, 0) for k, v in a.items())
    return dot / math.sqrt(sum(v * v for v in a.values()) * sum(v * v for v in b.values()))


def _similarity(grams: Sequence[Counter]) -> np.ndarray:
    n = len(grams)
    sim = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            sim[i, j] = sim[j, i] = _cosine(grams[i], grams[j])
    return sim


def _textrank(sim: np.ndarray, lead_bias: float, damping: float) -> np.ndarray:
    n = len(sim)
    if n == 0:
        return np.zeros(0)
    rows = sim.sum(axis=1)
    transition = np.divide(sim, rows[:, None], out=np.full((n, n), 1.0 / n), where=rows[:, None] > 0)
    scores = np.full(n, 1.0 / n)
    for _ in range(50):
        updated = (1 - damping) / n + damping * transition.T @ scores
        if np.abs(updated - scores).sum() < 1e-6:
            scores = updated
            break
        scores = updated
    position = np.arange(n) / max(n - 1, 1)
    return scores * (1 + lead_bias * (1 - position))


def rank_sentences(sentences: Sequence[str], lead_bias: float = 1.0, damping: float = 0.85) -> np.ndarray:
    """TextRank scores (similarity = bigram cosine), multiplied by a lead bias that favours early sentences."""
    return _textrank(_similarity([_bigrams(s) for s in sentences]), lead_bias, damping)


_TERMINATED = ("。", "！", "？", "!", "?", "；", ";", "…", "”", "」", "』")


def extractive_summary(text: str, max_chars: int, title: str | None = None,
                       mmr_lambda: float = 0.7) -> list[tuple[int, int]]:
    """Character spans of the sentences chosen for a summary of at most about ``max_chars``, in text order.

    Only whole sentences are candidates (headings, datelines and the title line are not); sentences that share
    words with the title, which names what the text is about, rank higher.
    """
    all_spans = split_sentences(text)
    spans = [s for s in all_spans if s.end - s.start >= _MIN_SENTENCE and text[s.start : s.end].endswith(_TERMINATED)
             and text[s.start : s.end] != title]
    if not spans:
        spans = all_spans[:1]
    grams = [_bigrams(text[s.start : s.end]) for s in spans]
    sim = _similarity(grams)
    scores = _textrank(sim, lead_bias=1.0, damping=0.85)
    if title:
        topic = _bigrams(title)
        scores = scores * (1 + np.array([_cosine(topic, g) for g in grams]))
    if len(scores):
        scores = scores / scores.max()
    chosen: list[int] = []
    used = 0
    candidates = set(range(len(spans)))
    while candidates:
        best = max(candidates, key=lambda i: mmr_lambda * scores[i]
                   - (1 - mmr_lambda) * max((sim[i, j] for j in chosen), default=0.0))
        candidates.discard(best)
        length = spans[best].end - spans[best].start
        if chosen and used + length > max_chars:
            continue
        chosen.append(best)
        used += length
        if used >= max_chars:
            break
    return [(spans[i].start, spans[i].end) for i in sorted(chosen)]


def convert_script(text: str, script: str | None) -> str:
    """``text`` in the requested script (``None`` keeps it)."""
    if script == "simplified":
        return to_simplified(text)
    if script == "traditional":
        return to_traditional(text)
    return text


def _within(sentences: list[str], max_chars: int) -> list[str]:
    """Leading sentences up to about ``max_chars`` (always at least one)."""
    out: list[str] = []
    used = 0
    for sentence in sentences:
        if out and used + len(sentence) > max_chars * 1.2:
            break
        out.append(sentence)
        used += len(sentence)
    return out


def check_summary(summary: str, source_text: str, min_support: float = 0.6) -> tuple[list[str], list[str]]:
    """Split a model summary into sentences the source supports and sentences it does not."""
    kept, dropped = [], []
    for sentence in split_claims(summary):
        (kept if is_supported(sentence, [source_text], min_support) else dropped).append(sentence)
    return kept, dropped


class Summarizer:
    """Summaries with the extractive method, or a generator model checked against the document."""

    def __init__(self, settings: Settings, generator: Any = None) -> None:
        self.settings = settings
        self.generator = generator

    @property
    def name(self) -> str:
        """What writes the summaries: the model's name, or ``extractive``."""
        return self.generator.name if self.generator else "extractive"

    def summary_rows(self, jobs: Iterable[SummaryJob]) -> Iterator[dict[str, Any]]:
        """The batch lines of ``jobs``, in order, each made when it is asked for (:func:`summarize_batch`;
        :class:`rag.distributed.RemoteSummarizer` makes them on a cluster's workers)."""
        return (summary_row(self, job) for job in jobs)

    def summarize(self, text: str, doc_id: str | None = None, title: str | None = None, length: str = "medium",
                  script: str | None = None) -> Summary:
        """Summary of one document's cleaned (display) text."""
        if length not in LENGTHS:
            raise ValueError(f"length must be one of {', '.join(LENGTHS)}")
        max_chars = LENGTHS[length]
        spans = extractive_summary(text, max_chars, title)
        sources = [SummarySource(doc_id or "", a, b, text[a:b]) for a, b in spans]
        extractive = Summary(doc_id, title, convert_script("".join(s.text for s in sources), script), "extractive",
                             sources)
        if self.generator is None:
            return extractive
        reading = self.settings.summary_input_chars
        if reading and len(text) > reading:
            # What the model reads is its time on a CPU: the document's key sentences, in order, not all of it.
            text_for_model = "".join(text[a:b] for a, b in extractive_summary(text, reading, title))
        else:
            text_for_model = text
        try:
            draft = self._map_reduce(text_for_model, max_chars)
        except Exception as exc:  # a model failing on one document must not fail a batch
            log.warning("%s failed on %s (%s); extractive summary used", self.generator.name, doc_id, exc)
            extractive.generator = f"extractive (fallback: {self.generator.name} failed)"
            return extractive
        kept, dropped = check_summary(draft, text, self.settings.guard_min_support)
        kept = _within(list(dict.fromkeys(kept)), max_chars)
        if not kept:
            extractive.generator = f"extractive (fallback: check refused {self.generator.name})"
            extractive.dropped = dropped
            return extractive
        # Small models mix scripts; the summary keeps the document's unless another one was asked for.
        body = "".join(kept)
        body = convert_script(body, script) if script else match_script(body, text)
        return Summary(doc_id, title, body, self.generator.name, sources, dropped=dropped)

    def _map_reduce(self, text: str, max_chars: int, rounds: int = 3) -> str:
        """Summaries of budget-sized pieces, then summaries of those, until one call covers everything."""
        generator = self.generator
        budget = max(200, generator.max_input - 160)
        for _ in range(rounds):
            if generator.count_tokens(text) <= budget:
                return generator.summarize(text, max_chars)
            pieces = self._pieces(text, budget)
            text = "\n".join(dict.fromkeys(generator.summarize(p, max(60, max_chars // 2)) for p in pieces))
        return text

    def _pieces(self, text: str, budget: int) -> list[str]:
        # Token counts of Chinese text are close to character counts: cut by characters, check with tokens.
        size = budget
        while True:
            pieces = [c.text for c in chunk_text(text, size, 0)]
            if all(self.generator.count_tokens(p) <= budget for p in pieces) or size < 100:
                return pieces
            size = int(size * 0.8)

    def summarize_topic(self, query: str, retriever: Any, k: int = 8, bullets: int = 5,
                        script: str | None = None) -> Summary:
        """Bullets across the documents retrieval finds for ``query``, each with the passage it came from.

        A model that writes topic summaries (``summarize_sources``) writes them from the passages, each bullet
        citing its passage; a bullet its cited passage does not support is dropped (the grounding guard of
        answers), and without one left the bullets are extracted as without a model.
        """
        hits = retriever.search(query, k).hits
        if hits and hasattr(self.generator, "summarize_sources"):
            summary = self._model_topic(query, hits, bullets, script)
            if summary.bullets:
                return summary
            dropped = summary.dropped
        else:
            dropped = []
        picked: list[dict[str, Any]] = []
        seen: list[Counter] = []
        for hit in hits:
            spans = extractive_summary(hit.text, 80, query)
            if not spans:
                continue
            a, b = spans[0]
            sentence = hit.text[a:b]
            grams = _bigrams(sentence)
            if any(_cosine(grams, other) > 0.6 for other in seen):
                continue
            seen.append(grams)
            picked.append({"text": convert_script(sentence, script),
                           "sources": [{"doc_id": hit.doc_id, "chunk_id": hit.chunk_id, "start": hit.start + a,
                                        "end": hit.start + b, "score": hit.score}]})
            if len(picked) >= bullets:
                break
        body = "\n".join(f"- {p['text']}" for p in picked)
        generator = f"extractive (fallback: check refused {self.generator.name})" if dropped else "extractive"
        return Summary(None, query, body, generator, bullets=picked, dropped=dropped)

    def _model_topic(self, query: str, hits: Sequence[Any], bullets: int, script: str | None) -> Summary:
        sources = [Source.from_hit(n, hit) for n, hit in enumerate(hits[:6], 1)]
        try:
            draft = self.generator.summarize_sources(query, sources, bullets)
        except Exception as exc:  # the extractive bullets stand in
            log.warning("%s failed on the topic %r (%s)", self.generator.name, query, exc)
            return Summary(None, query, "", self.generator.name)
        picked: list[dict[str, Any]] = []
        dropped: list[str] = []
        for line in draft.splitlines():
            line = re.sub(r"^\s*(?:[-•*·]|\d+[.、)）])\s*", "", line).strip()
            if not line:
                continue
            guarded = grounding_guard(line, sources, self.settings.guard_min_support)
            dropped += guarded.dropped
            for sentence in guarded.kept:
                cited = [s for s in sources if f"[{s.marker}]" in sentence]
                text = re.sub(r"\[\d{1,2}\]", "", sentence).strip()
                if text and cited and len(picked) < bullets:
                    picked.append({"text": convert_script(text, script) if script else match_script(text, query),
                                   "sources": [{"doc_id": s.doc_id, "chunk_id": s.chunk_id, "start": s.start,
                                                "end": s.end, "score": s.score} for s in cited]})
        body = "\n".join(f"- {p['text']}" for p in picked)
        return Summary(None, query, body, self.generator.name, bullets=picked, dropped=dropped)


@dataclass(frozen=True)
class SummaryJob:
    """One document of a batch to summarise, with the hash its line is kept under."""

    doc_id: str
    title: str | None
    text: str
    length: str
    script: str | None
    digest: str


def summary_row(summarizer: Summarizer, job: SummaryJob) -> dict[str, Any]:
    """The batch line of one document: its summary with its sources, or ``{"doc_id", "title", "error", "hash"}``
    when summarising it fails (the batch goes on)."""
    try:
        summary = summarizer.summarize(job.text, job.doc_id, job.title, job.length, job.script)
    except Exception as exc:
        return {"doc_id": job.doc_id, "title": job.title, "error": f"{type(exc).__name__}: {exc}", "hash": job.digest}
    return {"doc_id": job.doc_id, "title": job.title, "summary": summary.summary, "generator": summary.generator,
            "sources": [asdict(s) for s in summary.sources], "dropped": summary.dropped, "hash": job.digest}


def summarize_batch(documents: Iterator[tuple[str, str | None, str]], summarizer: Summarizer, out: Path,
                    length: str = "medium", script: str | None = None, total: int | None = None,
                    progress: bool = True) -> dict[str, int]:
    """Summarise ``(doc_id, title, text)`` items into JSONL at ``out`` (plus ``out`` with ``.md``).

    Resumable: documents already in ``out`` with the same text hash and settings are kept, not redone, and so are
    those a killed run had written to ``out`` + ``.tmp`` (each line is flushed as it is written). A failure is
    written as that document's line (with ``"error"``) and the batch goes on. The summaries are made by
    ``summarizer.summary_rows``: here one after another, or on a cluster's workers
    (:class:`rag.distributed.RemoteSummarizer`); either way this function alone writes, in input order.
    """
    key = f"{length}|{script}|{summarizer.name}"
    tmp = out.with_name(out.name + ".tmp")
    done: dict[str, dict[str, Any]] = {}
    for previous_run in (out, tmp):
        if not previous_run.exists():
            continue
        for line in previous_run.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line a killed run was writing
            if isinstance(row, dict) and "error" not in row and "doc_id" in row:
                done[row["doc_id"]] = row
    counts = {"summarised": 0, "reused": 0, "failed": 0}
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    # Lines in input order; None stands for a summary still being made. A kept line is written as soon as every
    # line before it is, so that a killed run loses no line it could keep.
    waiting: deque[dict[str, Any] | None] = deque()
    with open(tmp, "w", encoding="utf-8") as fh, tqdm(total=total, desc="summarize", unit="doc",
                                                      disable=not progress or None) as bar:

        def write_ready() -> None:
            while waiting and waiting[0] is not None:
                row = waiting.popleft()
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                fh.flush()
                rows.append(row)
                bar.update(1)

        def jobs() -> Iterator[SummaryJob]:
            for doc_id, title, text in documents:
                digest = text_hash(key + "|" + text)
                previous = done.get(doc_id)
                if previous is not None and previous.get("hash") == digest:
                    counts["reused"] += 1
                    waiting.append(previous)
                    write_ready()
                else:
                    waiting.append(None)
                    yield SummaryJob(doc_id, title, text, length, script, digest)

        for row in summarizer.summary_rows(jobs()):
            if "error" in row:
                log.warning("summary of %s failed: %s", row["doc_id"], row["error"])
                counts["failed"] += 1
            else:
                counts["summarised"] += 1
            waiting[0] = row
            write_ready()
    tmp.replace(out)
    digest_md = ["# 摘要汇编", ""]
    for row in rows:
        digest_md += [f"## {row.get('title') or row['doc_id']}", "", f"<small>{row['doc_id']}</small>", "",
                      row.get("summary") or f"（失败：{row.get('error')}）", ""]
    out.with_suffix(".md").write_text("\n".join(digest_md), encoding="utf-8")
    counts["seconds"] = round(time.perf_counter() - started, 2)
    return counts

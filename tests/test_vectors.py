"""Vector backends: the same behaviour from FAISS (exact and HNSW) and Milvus (Milvus Lite, a real engine).

Each test drives the real pipeline (ingest, store, retriever) and checks what dense search returns after
adding, changing and removing documents, and after a restart.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import faiss
import numpy as np
import pytest

from rag.config import Settings
from rag.index.embeddings import EmbeddingCache
from rag.index.schema import FORMAT_VERSION
from rag.index.store import IndexStore
from rag.index.vectors import FAISS_NAME, FAISS_STAMP, FaissVectors
from rag.ingestion.ingest import ingest
from rag.retrieval.retrieve import Retriever
from tests.conftest import DOC_000, DOC_002, DOC_004, SAMPLE, HashEmbedder

BACKENDS = {
    "faiss": {"vector_store": "faiss"},
    "faiss-hnsw": {"vector_store": "faiss", "vector_index": "hnsw"},
    "milvus-lite": {"vector_store": "milvus"},
}


@pytest.fixture(params=list(BACKENDS))
def backend_settings(request, tmp_path: Path) -> Settings:
    if request.param == "milvus-lite":
        pytest.importorskip("milvus_lite", reason="pip install 'rag-zh[milvus]'")
    return Settings(index_dir=tmp_path / "index", cache_dir=tmp_path / "cache", **BACKENDS[request.param])


def run_ingest(settings: Settings, paths, **kw):
    embedder = HashEmbedder()
    with IndexStore.open(settings.index_dir, create=True, settings=settings) as store:
        cache = EmbeddingCache(settings.cache_dir, embedder.name, embedder.dim)
        try:
            return ingest(paths, store, embedder, settings, cache=cache, progress=False, **kw)
        finally:
            cache.close()


def dense_doc_ids(settings: Settings, query: str, k: int = 50) -> list[str]:
    with IndexStore.open(settings.index_dir, settings=settings) as store:
        return [h.doc_id for h in Retriever(store, HashEmbedder(), settings).search(query, k, "dense").hits]


def test_add_change_remove_search_and_restart(tmp_path, backend_settings) -> None:
    settings = backend_settings
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in (DOC_000, DOC_002):
        (corpus / name).write_bytes((SAMPLE / name).read_bytes())
    run_ingest(settings, [corpus])
    with IndexStore.open(settings.index_dir, settings=settings) as store:
        chunks = store.stats()["chunks"]
        assert store.vector_backend.count() == chunks
        assert store.stats()["vector_store"] == settings.vector_store
    assert dense_doc_ids(settings, "嚴金海 拉薩 婦女兒童")[0] == DOC_000

    # Add: a third document becomes searchable.
    (corpus / DOC_004).write_bytes((SAMPLE / DOC_004).read_bytes())
    run_ingest(settings, [corpus])
    assert DOC_004 in dense_doc_ids(settings, "甘孜州 婦女兒童")

    # Change: the old chunks leave the vector index, the new text is found.
    (corpus / DOC_002).write_text("精河县召开儿童友好城市建设推进会，部署托育服务和校园安全工作。", encoding="utf-8")
    run_ingest(settings, [corpus])
    with IndexStore.open(settings.index_dir, settings=settings) as store:
        live = store.chunk_id_set()
        assert store.vector_backend.count() == len(live)
        hits = store.search_dense(HashEmbedder().embed_queries(["精河县 儿童友好城市 托育服务"]), 100)[0]
        assert {cid for cid, _ in hits} <= live
        assert store.get_chunks([hits[0][0]])[hits[0][0]].doc_id == DOC_002

    # Remove (with --sync): no dense hit comes from the removed document any more, after a restart too.
    (corpus / DOC_000).unlink()
    report = run_ingest(settings, [corpus], sync=True)
    assert report.removed == [DOC_000]
    assert DOC_000 not in dense_doc_ids(settings, "嚴金海 拉薩 婦女兒童")
    with IndexStore.open(settings.index_dir, settings=settings) as store:
        assert store.vector_backend.count() == store.stats()["chunks"]


def test_an_existing_index_keeps_its_backend(tmp_path, backend_settings) -> None:
    run_ingest(backend_settings, [SAMPLE / DOC_000])
    # Opened later with default settings, the index still searches through the backend it was made with.
    with IndexStore.open(backend_settings.index_dir, settings=Settings()) as store:
        assert store.stats()["vector_store"] == backend_settings.vector_store
        assert store.vector_backend.count() == store.stats()["chunks"]


def test_small_writes_do_not_rewrite_the_faiss_file_and_readers_replay_them(tmp_path, settings) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in (DOC_000, DOC_002):
        (corpus / name).write_bytes((SAMPLE / name).read_bytes())
    run_ingest(settings, [corpus])
    snapshot = (settings.index_dir / FAISS_NAME).stat()

    (corpus / DOC_004).write_bytes((SAMPLE / DOC_004).read_bytes())
    run_ingest(settings, [corpus])
    (corpus / DOC_000).unlink()
    run_ingest(settings, [corpus], sync=True)
    after = (settings.index_dir / FAISS_NAME).stat()
    assert (after.st_ino, after.st_mtime_ns) == (snapshot.st_ino, snapshot.st_mtime_ns)

    # A new reader loads the old snapshot and replays the add and the removal from the database.
    assert DOC_004 in dense_doc_ids(settings, "甘孜州 婦女兒童")
    assert DOC_000 not in dense_doc_ids(settings, "嚴金海 拉薩 婦女兒童")
    with IndexStore.open(settings.index_dir, settings=settings) as store:
        assert store.vector_backend.count() == store.stats()["chunks"]


def test_auto_switches_to_hnsw_past_the_threshold_and_finds_the_same_neighbours(tmp_path) -> None:
    settings = Settings(index_dir=tmp_path / "index", cache_dir=tmp_path / "cache", ann_min_vectors=40)
    run_ingest(settings, [SAMPLE / DOC_000])  # fewer than 40 chunks
    with IndexStore.open(settings.index_dir, settings=settings) as store:
        assert store.vector_backend.kind == "flat"
    run_ingest(settings, [SAMPLE])  # the whole sample: past 40 chunks
    queries = HashEmbedder().embed_queries(["婦女兒童發展規劃", "精河县妇联", "甘孜州", "儿童友好", "家庭教育"])
    with IndexStore.open(settings.index_dir, settings=settings) as store:
        assert store.stats()["chunks"] >= 40
        assert store.vector_backend.kind == "hnsw"
        approximate = store.search_dense(queries, 10)
    exact = Settings(index_dir=settings.index_dir, cache_dir=settings.cache_dir, vector_index="flat")
    (settings.index_dir / FAISS_STAMP).unlink()  # rebuild from the database with the forced type
    with IndexStore.open(exact.index_dir, settings=exact) as store:
        assert store.vector_backend.kind == "flat"
        reference = store.search_dense(queries, 10)
    recall = np.mean([len({c for c, _ in a} & {c for c, _ in r}) / len(r) for a, r in zip(approximate, reference)])
    assert recall >= 0.9


def test_hnsw_tombstones_hide_removed_chunks_until_the_next_snapshot(tmp_path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    class Source:  # the database side, reduced to what a backend reads
        def __init__(self) -> None:
            self.gen, self.ids, self.removed = 1, np.arange(1, 201), []

        def generation(self): return self.gen
        def iter_vectors(self, after_id=0):
            keep = [i for i, cid in enumerate(self.ids) if cid > after_id]
            yield self.ids[keep], vectors[np.asarray(keep, dtype=int)]
        def removed_since(self, generation): return list(self.removed)
        def forget_removed(self, up_to_generation): pass
        def max_chunk_id(self): return int(self.ids.max())

    source = Source()
    backend = FaissVectors(tmp_path, 16, index_type="hnsw")
    backend.sync(source)
    top = backend.search(vectors[:1], 1)[0][0][0]
    assert top == 1
    source.gen, source.removed = 2, [1]
    source.ids = source.ids[1:]
    backend.apply(source, [1], [], np.zeros((0, 16), dtype=np.float32))
    assert all(cid != 1 for cid, _ in backend.search(vectors[:1], 5)[0])
    assert backend.count() == 199
    backend.save(source)  # the first snapshot rebuilds the graph without the tombstone
    assert backend.count() == 199 and not backend._tombstones


def test_damaged_milvus_collection_is_reconciled_from_the_database(tmp_path) -> None:
    pytest.importorskip("milvus_lite", reason="pip install 'rag-zh[milvus]'")
    settings = Settings(index_dir=tmp_path / "index", cache_dir=tmp_path / "cache", vector_store="milvus")
    run_ingest(settings, [SAMPLE / DOC_000, SAMPLE / DOC_002])
    with IndexStore.open(settings.index_dir, settings=settings) as store:
        backend = store.vector_backend
        some = sorted(store.chunk_id_set())[:3]
        # A crash after the SQLite commit and before the Milvus write: rows missing, generation not recorded.
        backend._client.delete(backend.collection, ids=some)
        store.set_meta(backend._meta_key, "-1")
    with IndexStore.open(settings.index_dir, settings=settings) as store:
        assert store.vector_backend.count() == store.stats()["chunks"]
    assert dense_doc_ids(settings, "嚴金海 拉薩 婦女兒童")[0] == str((SAMPLE / DOC_000).resolve())


def test_a_format_1_index_is_upgraded_in_place(tmp_path, settings) -> None:
    run_ingest(settings, [SAMPLE / DOC_000])
    db = sqlite3.connect(settings.index_dir / "index.sqlite")
    db.execute("DROP TABLE removed_chunks")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    db.execute("DELETE FROM meta WHERE key = 'vector_store'")
    db.commit()
    db.close()
    os.unlink(settings.index_dir / FAISS_STAMP)
    with IndexStore.open(settings.index_dir, settings=settings) as store:
        assert store.stats()["format_version"] == FORMAT_VERSION
        assert store.vector_backend.count() == store.stats()["chunks"]
    assert dense_doc_ids(settings, "嚴金海 拉薩")[0] == str((SAMPLE / DOC_000).resolve())


def test_removing_from_an_empty_index_is_a_no_op(settings) -> None:
    with IndexStore.open(settings.index_dir, create=True, settings=settings) as store:
        assert store.remove_documents(["missing.txt"]) == 0
        assert store.search_dense(np.zeros((1, 8), dtype=np.float32), 3) == [[]]


def _swap_faiss_rows(path: Path, first: int, second: int) -> None:
    """Exchange two stored vectors in a FAISS file, leaving every id where it was (what a damaged or mixed-up
    snapshot holds: the right ids, dense search returning the wrong passages)."""
    index = faiss.read_index(str(path))
    inner = faiss.downcast_index(index.index)
    flat = inner if isinstance(inner, faiss.IndexFlat) else faiss.downcast_index(inner.storage)
    codes = faiss.vector_to_array(flat.codes).reshape(index.ntotal, -1)
    codes[[first, second]] = codes[[second, first]]
    faiss.copy_array_to_vector(codes.ravel(), flat.codes)
    faiss.write_index(index, str(path))


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_check_compares_the_vectors_themselves_not_only_their_ids(tmp_path, capsys, kind) -> None:
    from rag.cli import main

    settings = Settings(index_dir=tmp_path / "index", cache_dir=tmp_path / "cache", vector_index=kind)
    run_ingest(settings, [SAMPLE / DOC_000, SAMPLE / DOC_002])
    assert main(["check", "--index", str(settings.index_dir)]) == 0
    _swap_faiss_rows(settings.index_dir / FAISS_NAME, 0, 3)
    with IndexStore.open(settings.index_dir, settings=settings) as store:
        assert store.vector_backend.ids() == store.chunk_id_set()  # the ids alone say nothing is wrong
    capsys.readouterr()
    assert main(["check", "--index", str(settings.index_dir), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["problems"] == [
        f"vector backend ({kind}): 2 of the vectors it holds differ from those stored in the database"]


def test_check_compares_milvus_vectors_with_the_database(tmp_path) -> None:
    pytest.importorskip("milvus_lite", reason="pip install 'rag-zh[milvus]'")
    settings = Settings(index_dir=tmp_path / "index", cache_dir=tmp_path / "cache", vector_store="milvus")
    run_ingest(settings, [SAMPLE / DOC_000, SAMPLE / DOC_002])
    with IndexStore.open(settings.index_dir, settings=settings) as store:
        assert store.check().ok
        backend = store.vector_backend
        chunk = min(store.chunk_id_set())
        wrong = -store.get_vectors([chunk])[0]
        backend._client.upsert(backend.collection, [{"id": chunk, "vector": wrong.tolist()}])
        assert store.check().problems == [
            "vector backend (milvus): 1 of the vectors it holds differ from those stored in the database"]

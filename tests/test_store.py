"""The index: incremental add/change/remove, --sync, interruption, damage, versions, embedder mixing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from rag.index.embeddings import EmbeddingCache
from rag.index.errors import EmbedderMismatchError, IndexBusyError, IndexFormatError, StoreError
from rag.index.lexical import query_terms
from rag.index.sqlite_store import SqliteStore
from rag.index.store import IndexStore
from rag.index.vectors import FAISS_NAME, FAISS_STAMP
from rag.ingestion.ingest import ingest
from rag.retrieval.retrieve import Retriever
from tests.conftest import DOC_000, DOC_002, SAMPLE, HashEmbedder


def write_corpus(folder: Path, n: int, prefix: str = "doc") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{prefix}{i:02d}.txt").write_text(f"第{i}号文件。本县召开第{i}次妇女儿童工作会议，会议编号{i * 7}。",
                                                 encoding="utf-8")


def run_ingest(settings, embedder, paths, **kw):
    with IndexStore.open(settings.index_dir, create=True) as store:
        cache = EmbeddingCache(settings.cache_dir, embedder.name, embedder.dim)
        try:
            return ingest(paths, store, embedder, settings, cache=cache, progress=False, **kw)
        finally:
            cache.close()


def search_doc_ids(settings, embedder, query, mode="hybrid", k=50):
    with IndexStore.open(settings.index_dir) as store:
        return [h.doc_id for h in Retriever(store, embedder, settings).search(query, k, mode).hits]


def test_reingest_is_free_and_changes_replace_documents(tmp_path, settings, hash_embedder) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 4)
    first = run_ingest(settings, hash_embedder, [corpus])
    assert sorted(first.added) == [f"doc{i:02d}.txt" for i in range(4)] and first.chunks_embedded == 4

    calls = hash_embedder.calls
    second = run_ingest(settings, hash_embedder, [corpus])
    assert second.unchanged == 4 and not second.added and not second.updated
    assert hash_embedder.calls == calls  # no embedding work at all

    (corpus / "doc01.txt").write_text("第1号文件已经修改。新的内容讲述儿童友好城市建设。", encoding="utf-8")
    third = run_ingest(settings, hash_embedder, [corpus])
    assert third.updated == ["doc01.txt"] and third.unchanged == 3
    with IndexStore.open(settings.index_dir) as store:
        assert store.stats()["chunks"] == 4
        assert "儿童友好城市" in store.document("doc01.txt")["text"]
        # The old text is gone from BM25 as well as from the documents table.
        hits = store.search_bm25(query_terms("会议编号7"), 10)
        assert all(store.get_chunks([cid])[cid].doc_id != "doc01.txt" for cid, _ in hits)


def test_fresh_index_reuses_the_embedding_cache(tmp_path, settings, hash_embedder) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 3)
    run_ingest(settings, hash_embedder, [corpus])
    calls = hash_embedder.calls
    other = settings.replace(index_dir=tmp_path / "other-index")
    report = run_ingest(other, hash_embedder, [corpus])
    assert len(report.added) == 3 and report.chunks_embedded == 0 and hash_embedder.calls == calls


def test_removed_documents_are_never_retrieved_by_either_retriever(tmp_path, settings, hash_embedder) -> None:
    run_ingest(settings, hash_embedder, [SAMPLE])
    query = "精河县两规划中期评估推进会"
    assert DOC_002 in search_doc_ids(settings, hash_embedder, query, "bm25")
    assert DOC_002 in search_doc_ids(settings, hash_embedder, query, "dense")
    with IndexStore.open(settings.index_dir) as store:
        assert store.search_bm25_documents(query_terms(query), 1)[0][0] == DOC_002
        assert store.remove_documents([DOC_002, "no-such-doc"]) == 1
        assert DOC_002 not in {d for d, _ in store.search_bm25_documents(query_terms(query), 10)}
    for mode in ("bm25", "dense", "hybrid"):
        assert DOC_002 not in search_doc_ids(settings, hash_embedder, query, mode)
    with IndexStore.open(settings.index_dir) as store:
        assert store.document(DOC_002) is None
        assert store.stats()["documents"] == 4


def test_sync_removes_documents_whose_files_left_the_folder(tmp_path, settings, hash_embedder) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 3)
    other = tmp_path / "other"
    write_corpus(other, 1)
    run_ingest(settings, hash_embedder, [corpus])
    run_ingest(settings, hash_embedder, [other / "doc00.txt"])  # a file given alone is named by its path
    (corpus / "doc02.txt").unlink()
    report = run_ingest(settings, hash_embedder, [corpus])
    assert report.removed == []  # without --sync nothing is removed
    (corpus / "doc01.txt").write_bytes(b"")  # unreadable now, but still there: its indexed version stays
    report = run_ingest(settings, hash_embedder, [corpus], sync=True)
    assert report.removed == ["doc02.txt"]
    with IndexStore.open(settings.index_dir) as store:
        assert sorted(d["doc_id"] for d in store.list_documents()) == sorted(
            ["doc00.txt", "doc01.txt", str((other / "doc00.txt").resolve())])


class FailingEmbedder(HashEmbedder):
    """Dies on its ``fail_at``-th batch, as a killed process would mid-ingest."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.batches = 0
        self.fail_at = fail_at

    def embed_passages(self, texts):
        self.batches += 1
        if self.batches == self.fail_at:
            raise KeyboardInterrupt("killed")
        return self._embed(texts)


def test_interrupted_ingest_keeps_the_index_usable_and_resumes(tmp_path, settings, monkeypatch) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 10)
    write_corpus(tmp_path / "before", 2, prefix="old")
    run_ingest(settings, HashEmbedder(), [tmp_path / "before"])

    # Killed while writing documents, on the third batch; a kill also skips the final save of the vector file.
    monkeypatch.setattr(SqliteStore, "flush", lambda self: None)
    write = SqliteStore.write_documents
    calls = []

    def dies_on_the_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return write(self, *args, **kwargs)

    monkeypatch.setattr(SqliteStore, "write_documents", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_ingest(settings, HashEmbedder(), [corpus], batch_documents=3)
    monkeypatch.undo()
    # The index still opens and answers: the earlier documents and the two committed batches, by BM25 at once.
    with IndexStore.open(settings.index_dir) as store:
        assert store.stats()["documents"] == 2 + 6 and store.pending_count() == 6
    assert search_doc_ids(settings, HashEmbedder(), "第4号文件", "bm25")[0] == "doc04.txt"

    # Killed again while computing the vectors: every document stays searchable by BM25.
    monkeypatch.setattr(SqliteStore, "flush", lambda self: None)
    with pytest.raises(KeyboardInterrupt):
        run_ingest(settings.replace(embed_batch_size=2), FailingEmbedder(fail_at=2), [corpus], batch_documents=3)
    monkeypatch.undo()
    with IndexStore.open(settings.index_dir) as store:
        assert store.stats()["documents"] == 12 and store.pending_count() == 10 and store.check().ok
    assert search_doc_ids(settings, HashEmbedder(), "第9号文件", "bm25")[0] == "doc09.txt"

    report = run_ingest(settings, HashEmbedder(), [corpus], batch_documents=3)
    assert report.unchanged == 10 and not report.added and report.vectors_pending == 0
    with IndexStore.open(settings.index_dir) as store:
        stats = store.stats()
        assert stats["documents"] == 12 and stats["chunks"] == 12 and stats["pending_vectors"] == 0
        assert store.vector_backend.count() == 12
    assert search_doc_ids(settings, HashEmbedder(), "第9号文件", "dense")


def test_missing_or_stale_vector_file_is_rebuilt(settings, hash_embedder) -> None:
    run_ingest(settings, hash_embedder, [SAMPLE])
    with IndexStore.open(settings.index_dir) as store:
        chunks = store.stats()["chunks"]
    (settings.index_dir / FAISS_NAME).write_bytes(b"garbage")
    with IndexStore.open(settings.index_dir) as store:
        assert store.vector_backend.count() == chunks
    (settings.index_dir / FAISS_STAMP).unlink()
    assert DOC_000 in search_doc_ids(settings, hash_embedder, "嚴金海 拉薩", "dense")


def test_corrupted_and_foreign_indexes_get_clear_errors(tmp_path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "index.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(IndexFormatError, match=r"not a readable index|damaged"):
        IndexStore.open(bad)

    old = tmp_path / "old"
    IndexStore.open(old, create=True).close()
    db = sqlite3.connect(old / "index.sqlite")
    db.execute("UPDATE meta SET value = '0' WHERE key = 'format_version'")
    db.commit()
    db.close()
    with pytest.raises(IndexFormatError, match="format 0"):
        IndexStore.open(old)

    with pytest.raises(StoreError, match="no index"):
        IndexStore.open(tmp_path / "missing")


def test_vectors_from_two_embedders_are_never_mixed(settings, hash_embedder) -> None:
    run_ingest(settings, hash_embedder, [SAMPLE / DOC_000])

    class Other(HashEmbedder):
        name = "test/other"

    with pytest.raises(EmbedderMismatchError, match="refusing to mix"):
        run_ingest(settings, Other(), [SAMPLE / DOC_002])
    with IndexStore.open(settings.index_dir) as store, pytest.raises(EmbedderMismatchError):
        store.search_dense(np.zeros((1, 8), dtype=np.float32), 3)


def test_a_second_writer_is_refused(settings, hash_embedder) -> None:
    with IndexStore.open(settings.index_dir, create=True) as store, store.write_lock(), \
            pytest.raises(IndexBusyError):
        run_ingest(settings, hash_embedder, [SAMPLE / DOC_000])


def test_bad_files_are_reported_and_nothing_indexed_is_lost(tmp_path, settings, hash_embedder) -> None:
    run_ingest(settings, hash_embedder, [SAMPLE])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.txt").write_bytes(b"")
    (bad / "binary.txt").write_bytes(bytes(range(256)) * 50)
    (bad / "menu-only.txt").write_text("网站地图\n注册\n登录\n", encoding="utf-8")
    (bad / "ok.txt").write_text("第九次妇女代表大会在成都召开。", encoding="gb18030")
    report = run_ingest(settings, hash_embedder, [bad])
    assert report.added == ["ok.txt"]
    reasons = {Path(s["source"]).name: s["reason"] for s in report.skipped}
    assert reasons == {"binary.txt": reasons["binary.txt"], "empty.txt": "empty file",
                       "menu-only.txt": "no text left after cleaning"}
    with IndexStore.open(settings.index_dir) as store:
        assert store.stats()["documents"] == 6


def test_chunks_are_found_by_bm25_before_their_vectors_come(settings, hash_embedder) -> None:
    """Documents written without vectors are BM25-searchable at once; vectors filled in later reach dense search
    in this process and, through the filled-vector log, in another one whose snapshot predates them."""
    from rag.index.records import ChunkRecord, DocumentRecord
    from rag.ingestion.ingest import make_chunks

    def record(doc_id: str, text: str) -> tuple[DocumentRecord, list[ChunkRecord]]:
        doc = DocumentRecord(doc_id, str(settings.index_dir), doc_id, text, doc_id, title=None)
        return doc, make_chunks(doc, settings)

    docs = [record("甲.txt", "青稞镇妇联今年组织了二十场家庭教育讲座。"),
            record("乙.txt", "精河县召开妇女儿童工作会议，部署儿童友好城市建设。"),
            record("丙.txt", "甘孜州开展妇女创业培训，三百名妇女参加。")]
    vectors = [hash_embedder.embed_passages([c.index_text for c in docs[0][1]]), None, None]
    with IndexStore.open(settings.index_dir, create=True) as writer:
        writer.bind_embedder(hash_embedder.name, hash_embedder.dim)
        with writer.write_lock():
            writer.write_documents([d for d, _ in docs], [c for _, c in docs], vectors)
            writer.flush()  # the first snapshot: 甲's vector only
        assert writer.pending_count() == 2 and writer.stats()["pending_vectors"] == 2
        assert writer.check().ok, writer.check().problems
        retriever = Retriever(writer, hash_embedder, settings)
        assert retriever.search("家庭教育讲座", 5, "dense").hits
        assert "乙.txt" in {h.doc_id for h in retriever.search("儿童友好城市", 5, "bm25").hits}
        assert {h.doc_id for h in retriever.search("儿童友好城市", 5, "dense").hits} == {"甲.txt"}
        pending = writer.pending_chunks()
        with writer.write_lock():
            filled = writer.set_vectors([i for i, _ in pending],
                                        hash_embedder.embed_passages([t for _, t in pending]))
            writer.remove_documents(["丙.txt"])
            writer.flush()  # a small change: no new snapshot, so a reader replays it
        assert filled == 2 and writer.pending_count() == 0
        assert writer.check().ok, writer.check().problems
    with IndexStore.open(settings.index_dir) as reader:
        found = {h.doc_id for h in Retriever(reader, hash_embedder, settings).search("儿童友好城市", 5, "dense").hits}
        assert found == {"甲.txt", "乙.txt"}  # 乙's vector came after the snapshot; 丙 was removed
        assert reader.vector_backend.count() == reader.stats()["chunks"]


def test_store_errors_say_what_happened_full_disk_busy_or_damage(tmp_path) -> None:
    import errno

    from rag.index.errors import DiskFullError, IndexDamagedError, describe_store_error

    db = sqlite3.connect(tmp_path / "full.sqlite")
    db.execute("CREATE TABLE t (x BLOB)")
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(sqlite3.OperationalError) as full:  # SQLite's own SQLITE_FULL, as a full disk gives it
        db.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
    db.close()
    for exc in (full.value, OSError(errno.ENOSPC, "No space left on device")):
        error = describe_store_error(tmp_path, exc)
        assert isinstance(error, DiskFullError) and str(error).startswith("the disk is full: the index at "), exc
        assert "damaged" not in str(error) and "restore" not in str(error).lower()
    written = describe_store_error(tmp_path, OSError(errno.ENOSPC, "No space left on device", "out.jsonl"))
    assert str(written).startswith("the disk is full: out.jsonl could not be written")

    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError) as garbage:
        sqlite3.connect(bad).execute("SELECT * FROM sqlite_master").fetchall()
    error = describe_store_error(tmp_path, garbage.value)
    assert isinstance(error, IndexDamagedError) and error.finding == "file is not a database"
    assert "Restore it from a copy made by `rag backup`" in str(error)

    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
    assert isinstance(describe_store_error(tmp_path, busy), IndexBusyError)


def test_files_are_read_without_the_index_and_written_under_its_lock(tmp_path, settings, hash_embedder) -> None:
    from rag.ingestion.ingest import ingest_documents, read_documents

    corpus = tmp_path / "corpus"
    write_corpus(corpus, 3)
    (corpus / "empty.txt").write_bytes(b"")
    with IndexStore.open(settings.index_dir, create=True) as store, store.write_lock():
        items = list(read_documents([corpus], settings))  # parsing needs no store, and no lock of it
    with IndexStore.open(settings.index_dir) as store:
        report = ingest_documents(items, store, hash_embedder, settings, progress=False)
    assert report.added == ["doc00.txt", "doc01.txt", "doc02.txt"]
    assert report.skipped == [{"source": str(corpus / "empty.txt"), "reason": "empty file"}]
    assert search_doc_ids(settings, hash_embedder, "第1号文件", "bm25")[0] == "doc01.txt"

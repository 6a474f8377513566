"""A GGUF chat model in a process of its own, so that nothing llama.cpp does can take the service down.

llama.cpp is C++: a bad build or a known kernel bug (its AMX path segfaults on this machine kind's CPU) kills the
process it runs in. The model therefore runs in a child process (:class:`ModelWorker`); a request whose child dies
is a failed answer with the reason (:class:`WorkerCrashed`: "the model process stopped: SIGSEGV"), and the next
request starts a new child. The child keeps its KV cache between requests, so the fixed system prompt is read
once.

Runtimes, chosen from :data:`RUNTIMES` by ``Settings.llm_runtime``:

- ``llama-cpp-python``: llama.cpp compiled on this machine for its own CPU (``make setup`` builds it from the
  sdist with AVX-512/VNNI/BF16 and AMX off: see the Makefile); about 1.4× the prompt speed of the prebuilt wheel
  here (bench/RESULTS.md);
- ``xllamacpp``: a prebuilt wheel compiled for AVX2, for machines without a compiler.

``auto`` takes the first that loads and answers a one-token warm-up without dying: a build made for another CPU
(an illegal instruction) or a crashing kernel falls back to the next, with a warning.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 600.0  # a model loads in seconds; a cold disk or a busy machine may take far longer


class WorkerError(RuntimeError):
    """The model process could not load the model or answer; the message says why."""


class WorkerCrashed(WorkerError):
    """The model process died (a signal or an exit) while loading or answering."""


@dataclass(frozen=True)
class WorkerConfig:
    """What the child process needs to load a model (plain values: they cross a process boundary)."""

    runtime: str
    model_path: str
    n_ctx: int
    threads: int


@dataclass
class RuntimeInfo:
    """Which runtime a worker runs and what its llama.cpp was built for (``rag status``)."""

    runtime: str
    system: str = ""  # llama.cpp's system info: "AVX512 = 1 | AVX512_VNNI = 1 | ..."
    features: list[str] = field(default_factory=list)  # the CPU features it uses, from ``system``


class Runtime(Protocol):
    """A loaded model inside the child process."""

    def describe(self) -> RuntimeInfo: ...

    def chat(self, messages: list[dict[str, str]], max_tokens: int, emit: Callable[[str], None],
             stopped: Callable[[], bool]) -> dict[str, Any]:
        """Generate greedily, calling ``emit`` with each piece of text, until done or ``stopped()``; returns
        llama.cpp's timings (``prompt_n``, ``prompt_ms``, ``predicted_n``, ``predicted_ms``, ``cache_n``)."""
        ...


def _features(system: str) -> list[str]:
    """The features llama.cpp's system info (``CPU : SSE3 = 1 | AVX = 1 | ...``) says are on."""
    parts = (part.rsplit(":", 1)[-1] for part in system.split("|"))
    return [part.split("=")[0].strip() for part in parts if part.strip().endswith("= 1")]


# llama.cpp's names of the instruction sets a build uses, as /proc/cpuinfo names them.
_CPUINFO_FLAG = {"SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "F16C": "f16c", "FMA": "fma",
                 "BMI2": "bmi2", "AVX_VNNI": "avx_vnni", "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi",
                 "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16", "AMX_INT8": "amx_int8"}


def cpu_flags() -> set[str]:
    """The instruction sets this machine's CPU has (``/proc/cpuinfo``; empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return next((set(line.split(":", 1)[1].split()) for line in fh if line.startswith("flags")), set())
    except OSError:
        return set()


def missing_features(features: list[str]) -> list[str]:
    """The instruction sets a llama.cpp build uses that this CPU lacks (none known: nothing is missing)."""
    flags = cpu_flags()
    return [f for f in features if flags and f in _CPUINFO_FLAG and _CPUINFO_FLAG[f] not in flags]


class LlamaCppPythonRuntime:
    """llama.cpp through ``llama-cpp-python``, as compiled on this machine."""

    def __init__(self, config: WorkerConfig) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._system = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
        lacking = missing_features(_features(self._system))
        if lacking:  # a build copied from another machine: it would die of an illegal instruction
            raise WorkerError(f"llama-cpp-python was built for a CPU with {', '.join(lacking)}, which this one lacks; "
                              "build it again here with `make setup`")
        self._llm = llama_cpp.Llama(model_path=config.model_path, n_ctx=config.n_ctx, n_threads=config.threads,
                                    n_threads_batch=config.threads, n_batch=512, verbose=False)

    def describe(self) -> RuntimeInfo:
        return RuntimeInfo("llama-cpp-python", self._system, _features(self._system))

    def chat(self, messages: list[dict[str, str]], max_tokens: int, emit: Callable[[str], None],
             stopped: Callable[[], bool]) -> dict[str, Any]:
        ctx = self._llm._ctx.ctx
        self._llama_cpp.llama_perf_context_reset(ctx)
        chunks = self._llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0, top_k=1,
                                                  stream=True)
        for chunk in chunks:
            text = (chunk["choices"][0].get("delta") or {}).get("content")
            if text:
                emit(text)
            if stopped():
                break
        perf = self._llama_cpp.llama_perf_context(ctx)
        return {"prompt_n": perf.n_p_eval, "prompt_ms": perf.t_p_eval_ms, "predicted_n": perf.n_eval,
                "predicted_ms": perf.t_eval_ms, "cache_n": self._llm.n_tokens - perf.n_p_eval - perf.n_eval,
                "prompt_per_second": 1000 * perf.n_p_eval / perf.t_p_eval_ms if perf.t_p_eval_ms else None,
                "predicted_per_second": 1000 * perf.n_eval / perf.t_eval_ms if perf.t_eval_ms else None}


class XLlamaCppRuntime:
    """llama.cpp's own server logic through the prebuilt ``xllamacpp`` wheel (compiled for AVX2)."""

    def __init__(self, config: WorkerConfig) -> None:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = config.model_path
        params.n_ctx = config.n_ctx
        params.cpuparams.n_threads = config.threads
        params.cpuparams_batch.n_threads = config.threads
        params.n_parallel = 1
        params.cache_prompt = True
        params.hostnames = ["127.0.0.1"]
        params.api_keys = [secrets.token_urlsafe(32)]  # its loopback HTTP server answers no one but us
        params.verbosity = -1  # llama.cpp logs every request to stderr otherwise
        self._server = xllamacpp.Server(params)

    def describe(self) -> RuntimeInfo:
        return RuntimeInfo("xllamacpp", "CPU : AVX2 = 1", ["AVX2"])

    def chat(self, messages: list[dict[str, str]], max_tokens: int, emit: Callable[[str], None],
             stopped: Callable[[], bool]) -> dict[str, Any]:
        timings: dict[str, Any] = {}

        def on_chunk(chunk: Any) -> bool:
            if isinstance(chunk, dict):
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        emit(text)
                timings.update(chunk.get("timings") or {})
            return stopped()  # True stops generation

        request = {"messages": messages, "max_tokens": max_tokens, "temperature": 0.0, "top_k": 1,
                   "cache_prompt": True, "stream": True}
        result = self._server.handle_chat_completions(request, on_chunk)
        if isinstance(result, dict) and "error" in result:
            raise WorkerError(f"llama.cpp failed ({result['error']!r:.200})")
        return timings


# The runtimes ``llm_runtime = "auto"`` tries, fastest first, with the module each needs.
RUNTIMES: dict[str, tuple[str, Callable[[WorkerConfig], Runtime]]] = {
    "llama-cpp-python": ("llama_cpp", LlamaCppPythonRuntime),
    "xllamacpp": ("xllamacpp", XLlamaCppRuntime),
}


def installed_runtimes() -> list[str]:
    """The runtimes whose package is installed, in the order ``auto`` tries them."""
    return [name for name, (module, _) in RUNTIMES.items() if importlib.util.find_spec(module) is not None]


def describe_runtimes() -> list[dict[str, Any]]:
    """Each installed runtime with the CPU features its llama.cpp uses and whether this CPU has them, as ``auto``
    would try them (``rag status``). Each is looked at in a child process: a build for another CPU dies there."""
    described = []
    for name in installed_runtimes():
        module = RUNTIMES[name][0]
        probe = (f"import sys, {module}; f = getattr({module}, 'llama_print_system_info', None); "
                 "sys.stdout.write(f().decode() if f else 'CPU : AVX2 = 1')")
        try:
            done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
            system = done.stdout.strip() if done.returncode == 0 else ""
            problem = "" if done.returncode == 0 else f"cannot load (exit status {done.returncode})"
        except subprocess.TimeoutExpired:
            system, problem = "", "did not load in 60 s"
        features = _features(system)
        lacking = missing_features(features)
        described.append({"runtime": name, "features": features,
                          "usable": not problem and not lacking,
                          "problem": problem or (f"built for {', '.join(lacking)}, which this CPU lacks" if lacking
                                                 else "")})
    return described


def _serve(conn: Connection) -> None:
    """The child process: receive the config, load, answer a one-token warm-up, then serve requests until the
    pipe closes. A ``"stop"`` message during a request ends its generation early."""
    config: WorkerConfig = conn.recv()
    os.environ.setdefault("OMP_NUM_THREADS", str(config.threads))

    def stopped() -> bool:
        return conn.poll() and conn.recv() == "stop"

    try:
        runtime = RUNTIMES[config.runtime][1](config)
        runtime.chat([{"role": "user", "content": "你好"}], 1, lambda text: None, lambda: False)
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", runtime.describe()))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        if request == "stop":  # came after its request had finished
            continue
        messages, max_tokens = request
        try:
            timings = runtime.chat(messages, max_tokens, lambda text: conn.send(("piece", text)), stopped)
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            continue
        conn.send(("done", timings))


class ModelWorker:
    """One model in a child process; requests go one at a time (llama.cpp has one slot), from any thread.

    The child is a fresh interpreter running this module (``python -m rag.answering.llm_worker FD``), talking over
    a socket pair: it imports nothing of the process that started it (a web server, a CLI), and a crash there
    leaves this process standing.
    """

    def __init__(self, config: WorkerConfig) -> None:
        """Start the child and wait for the model to load; :class:`WorkerError` (or :class:`WorkerCrashed`) when
        it cannot."""
        self.config = config
        self.info = RuntimeInfo(config.runtime)
        self.last_timings: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._start()

    @property
    def pid(self) -> int | None:
        """The child process's id (``None`` when it is not running)."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self._process = subprocess.Popen([sys.executable, "-m", __name__, str(theirs.fileno())],
                                             pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send(self.config)
        if not self._conn.poll(LOAD_TIMEOUT_S):
            self._kill()
            raise WorkerError(f"{self.config.runtime} did not load {self.config.model_path} in {LOAD_TIMEOUT_S:.0f} s")
        kind, *rest = self._receive("loading the model")
        if kind == "failed":
            self._kill()
            raise WorkerError(f"{self.config.runtime} cannot load {self.config.model_path} ({rest[0]})")
        self.info = rest[0]

    def _receive(self, doing: str) -> tuple[Any, ...]:
        assert self._conn is not None and self._process is not None
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            try:
                code = self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            self._kill()
            how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
            raise WorkerCrashed(f"the model process stopped while {doing} ({how}); the next question starts it "
                                "again") from None

    def _kill(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def _ensure_running(self) -> None:
        if self._process is None or self._process.poll() is not None:
            self._kill()
            log.warning("starting the model process again (%s)", self.config.runtime)
            self._start()

    def chat(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        """The model's whole reply to ``messages``."""
        return "".join(self.stream(messages, max_tokens))

    def stream(self, messages: list[dict[str, str]], max_tokens: int) -> Iterator[str]:
        """The reply piece by piece; closing the iterator early stops generation."""
        with self._lock:
            self._ensure_running()
            assert self._conn is not None
            self._conn.send((messages, max_tokens))
            finished = False
            try:
                while True:
                    kind, *rest = self._receive("answering")
                    if kind == "piece":
                        yield rest[0]
                    elif kind == "error":
                        finished = True
                        raise WorkerError(rest[0])
                    else:
                        finished = True
                        self.last_timings = rest[0]
                        return
            finally:
                if not finished and self._conn is not None:  # the reader went away: stop, and wait for the end
                    with contextlib.suppress(OSError, WorkerError):
                        self._conn.send("stop")
                        while self._receive("stopping")[0] == "piece":
                            pass

    def close(self) -> None:
        """Stop the child process."""
        with self._lock:
            if self._conn is not None and self._process is not None:
                with contextlib.suppress(OSError):
                    self._conn.send(None)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(timeout=10)
            self._kill()


def start_worker(model_path: Path, runtime: str, n_ctx: int, threads: int) -> ModelWorker:
    """A worker for ``model_path`` on ``runtime`` (``auto``: the fastest installed one that loads and answers)."""
    if runtime != "auto":
        if runtime not in RUNTIMES:
            raise WorkerError(f"unknown llm_runtime {runtime!r} (use auto, {', '.join(RUNTIMES)})")
        return ModelWorker(WorkerConfig(runtime, str(model_path), n_ctx, threads))
    candidates = installed_runtimes()
    if not candidates:
        raise WorkerError("no llama.cpp runtime is installed: run `make setup` (it builds llama-cpp-python for "
                          "this CPU), or pip install 'rag-zh[llm]' for the prebuilt one")
    problems = []
    for name in candidates:
        started = time.perf_counter()
        try:
            worker = ModelWorker(WorkerConfig(name, str(model_path), n_ctx, threads))
        except WorkerError as exc:
            problems.append(f"{name}: {exc}")
            log.warning("%s cannot run the model here (%s); trying the next runtime", name, exc)
            continue
        log.info("model loaded by %s in %.1f s (%s)", name, time.perf_counter() - started,
                 ", ".join(worker.info.features) or "CPU")
        return worker
    raise WorkerError("; ".join(problems))


if __name__ == "__main__":  # the child process of a ModelWorker
    # Served by the module under its own name, so that what it sends back unpickles as that module's classes.
    from rag.answering.llm_worker import _serve as serve

    serve(Connection(int(sys.argv[1])))

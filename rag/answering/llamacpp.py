"""GGUF chat models through llama.cpp: the default answerer when a model is installed.

One :class:`LlamaCppGenerator` holds one model, run in a process of its own by the fastest llama.cpp runtime that
works on this machine (:mod:`rag.answering.llm_worker`: llama.cpp compiled here for this CPU, else the prebuilt
AVX2 wheel); every request of the process goes through it, one at a time. Decoding is greedy, the chat template is
the model's own, and the fixed start of every prompt (the system message) stays in the model's KV cache between
requests. A model process that dies (a crash in llama.cpp) is a failed answer, and the next request starts it
again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..config import Settings
from .base import GeneratorError, format_sources, read_prompt
from .llm_worker import ModelWorker, RuntimeInfo, WorkerError, start_worker

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
# A standalone question is short: a follow-up's rewrite needs few tokens, and each prior turn is cut to this many
# characters in the prompt (what a follow-up points at is near the start of a question or answer).
REWRITE_NEW_TOKENS = 48
REWRITE_HISTORY_CHARS = 200


def _chars_as_tokens(text: str) -> int:
    """An upper bound of ``text``'s length in Qwen tokens without a tokenizer: one per character (Chinese runs
    about 1.4 characters a token, Latin text far more)."""
    return len(text)


class LlamaCppGenerator:
    """A chat model in a GGUF file, run by llama.cpp in a process of its own."""

    def __init__(self, model_path: Path, settings: Settings, label: str | None = None) -> None:
        model_path = Path(model_path)
        _check_gguf(model_path)
        threads = settings.llm_threads or os.cpu_count() or 1
        try:
            self._worker: ModelWorker = start_worker(model_path, settings.llm_runtime, settings.llm_context, threads)
        except WorkerError as exc:
            raise GeneratorError(f"llama.cpp cannot run {model_path}: {exc}") from None
        self.name = f"llamacpp:{label or model_path.stem}"
        self.max_input = settings.llm_context - max(settings.max_new_tokens, settings.summary_new_tokens) - 16
        self.max_new_tokens = settings.max_new_tokens
        self.summary_new_tokens = settings.summary_new_tokens
        self.system = read_prompt("answer_system.txt")
        self.template = read_prompt("answer_user.txt")
        self.summary_system = read_prompt("summarize_system.txt")
        self.summary_template = read_prompt("summarize_user.txt")
        self.topic_template = read_prompt("summarize_topic_user.txt")
        self.rewrite_system = read_prompt("rewrite_question_system.txt")
        self.rewrite_template = read_prompt("rewrite_question_user.txt")

    def count_tokens(self, text: str) -> int:
        """An upper bound of ``text``'s length in the model's tokens."""
        return _chars_as_tokens(text)

    def _with_sources(self, system: str, template: str, sources: Sequence[Any], **fields: Any) -> list[dict[str, str]]:
        """The chat messages of ``template`` filled with ``fields`` and the numbered ``sources``, cut to the input
        budget."""
        skeleton = template.format(sources="", **fields)
        budget = max(0, self.max_input - self.count_tokens(system + skeleton))
        user = template.format(sources=format_sources(sources, self.count_tokens, budget), **fields)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    @property
    def runtime(self) -> RuntimeInfo:
        """The llama.cpp runtime the model runs on, and the CPU features it uses."""
        return self._worker.info

    @property
    def last_timings(self) -> dict[str, Any]:
        """llama.cpp's timings of the last request (prompt and generated tokens, milliseconds)."""
        return self._worker.last_timings

    def _complete(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        return "".join(self._stream(messages, max_tokens)).strip()

    def _stream(self, messages: list[dict[str, str]], max_tokens: int) -> Iterator[str]:
        try:
            yield from self._worker.stream(messages, max_tokens)
        except WorkerError as exc:
            raise GeneratorError(f"llama.cpp failed: {exc}") from None

    def close(self) -> None:
        """Stop the model's process."""
        self._worker.close()

    def answer(self, question: str, sources: Sequence[Any]) -> str:
        """The model's answer to ``question`` from the numbered ``sources``."""
        return self._complete(self._with_sources(self.system, self.template, sources, question=question),
                              self.max_new_tokens)

    def stream_answer(self, question: str, sources: Sequence[Any]) -> Iterator[str]:
        """The answer as it is generated, piece by piece (joined, the same text :meth:`answer` gives)."""
        yield from self._stream(self._with_sources(self.system, self.template, sources, question=question),
                                self.max_new_tokens)

    def summarize_sources(self, topic: str, sources: Sequence[Any], bullets: int) -> str:
        """Points about ``topic`` from the numbered ``sources``, one a line, each ending with its ``[n]``."""
        messages = self._with_sources(self.summary_system, self.topic_template, sources, topic=topic, bullets=bullets)
        return self._complete(messages, self.summary_new_tokens)

    def summarize(self, text: str, max_chars: int) -> str:
        """A summary of ``text`` (which the caller has fitted into the input budget)."""
        user = self.summary_template.format(text=text, max_chars=max_chars)
        messages = [{"role": "system", "content": self.summary_system}, {"role": "user", "content": user}]
        return self._complete(messages, self.summary_new_tokens)

    def rewrite_question(self, question: str, history: Sequence[tuple[str, str]]) -> str:
        """``question``, a follow-up in a conversation of (question, answer) ``history`` pairs (oldest first),
        rewritten to stand alone. Unchecked: :func:`rag.answering.conversation.rewrite_followup` checks it."""
        lines = []
        for asked, answered in history:
            lines += [f"问：{asked[:REWRITE_HISTORY_CHARS]}", f"答：{answered[:REWRITE_HISTORY_CHARS] or '（未找到答案）'}"]
        user = self.rewrite_template.format(history="\n".join(lines), question=question[:REWRITE_HISTORY_CHARS])
        messages = [{"role": "system", "content": self.rewrite_system}, {"role": "user", "content": user}]
        text = self._complete(messages, REWRITE_NEW_TOKENS)
        return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _check_gguf(path: Path) -> None:
    """A clear error for a model file that is missing, unreadable or not GGUF (llama.cpp only says "failed")."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except FileNotFoundError:
        raise GeneratorError(f"no model file at {path}") from None
    except OSError as exc:
        raise GeneratorError(f"cannot read the model file {path} ({exc.strerror or exc})") from None
    if magic != GGUF_MAGIC:
        raise GeneratorError(f"{path} is not a GGUF model file (it starts with {magic!r}, not {GGUF_MAGIC!r})")

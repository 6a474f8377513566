"""What every generator shares: the error it raises, the protocol it follows, and how its prompts are built
(templates from ``prompts/``, numbered sources fitted into the model's input budget). Generators themselves live in
:mod:`rag.answering.generate` (the table ``auto`` chooses from) and :mod:`rag.answering.llamacpp`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..prompts import FOLDER as PROMPTS


class GeneratorError(RuntimeError):
    """A generator model cannot be loaded; the message says why and what to do."""


class Generator(Protocol):
    """Writes an answer with ``[n]`` citation markers from numbered sources, and summaries."""

    name: str
    max_input: int

    def answer(self, question: str, sources: Sequence[Any]) -> str: ...

    def summarize(self, text: str, max_chars: int) -> str: ...

    # Generators that can stream also have ``stream_answer(question, sources) -> Iterator[str]``.

    def count_tokens(self, text: str) -> int: ...


def read_prompt(name: str) -> str:
    """A prompt template from ``prompts/``."""
    try:
        return (PROMPTS / name).read_text(encoding="utf-8")
    except OSError as exc:
        raise GeneratorError(f"prompt template {PROMPTS / name} is missing ({exc.strerror})") from None


def format_sources(sources: Sequence[Any], count_tokens: Callable[[str], int], budget: int) -> str:
    """``[n] 《title》 text`` lines, best first, within ``budget`` tokens (the last source cut to fit)."""
    lines: list[str] = []
    used = 0
    for source in sources:
        head = f"[{source.marker}] " + (f"《{source.title}》" if source.title else "")
        line = head + " ".join(source.text.split())
        cost = count_tokens(line + "\n")
        if used + cost <= budget:
            lines.append(line)
            used += cost
            continue
        # Cut the text by characters until it fits (binary search on length).
        lo, hi = 0, len(line)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if used + count_tokens(line[:mid] + "…\n") <= budget:
                lo = mid
            else:
                hi = mid - 1
        if lo > len(head) + 20:
            lines.append(line[:lo] + "…")
        break
    return "\n".join(lines)

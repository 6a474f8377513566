"""The package is grouped by role, and code written against the earlier flat module names keeps working."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import rag


@pytest.mark.parametrize("flat", sorted(rag._MOVED))
def test_flat_names_are_the_moved_modules(flat: str) -> None:
    moved = importlib.import_module(f"rag.{rag._MOVED[flat]}.{flat}")
    assert importlib.import_module(f"rag.{flat}") is moved


def test_flat_imports_in_a_fresh_interpreter() -> None:
    # Before anything else is imported: `from rag.store import …` and `from rag import answer` both work, and a
    # patch through the old name reaches the module that runs.
    code = ("from rag.store import IndexStore; from rag import answer; import rag.index.store as s, rag.answering.answer"
            " as a; assert IndexStore is s.IndexStore and answer is a; import rag.generate as g; g.X = 1;"
            " import rag.answering.generate as h; assert h.X == 1; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr

"""The chat models' prompt templates, by file name (``answer_system.txt``, ``summarize_user.txt`` …).

They are edited in the project's ``prompts/`` folder (its README says what each is for) and ship inside the package
as ``rag/data/prompts``: in a checkout a link to ``prompts/``, in an installed wheel a copy, so that
``pip install .`` has them too. Read them through :func:`read` (or :data:`FOLDER`), never by a path relative to
the source tree.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

FOLDER: Traversable = files("rag") / "data" / "prompts"


def read(name: str) -> str:
    """The template ``name`` as text; :class:`FileNotFoundError` when there is none."""
    return (FOLDER / name).read_text(encoding="utf-8")


def names() -> list[str]:
    """Every template there is."""
    return sorted(entry.name for entry in FOLDER.iterdir() if entry.name.endswith(".txt"))

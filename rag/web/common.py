"""What every tab of the page shares: who is asking, the check on uploaded files, and how a failure is told."""

from __future__ import annotations

import html
import logging
import re
import sqlite3
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from ..answering.conversation import ConversationNotFound
from ..app.access import LOCAL_USER, AccessDenied, User
from ..app.libraries import LibraryError
from ..app.service import RagService
from ..app.signin import SignIn
from ..app.uploads import UploadGate
from ..index.errors import StoreError, describe_store_error, is_damage, is_disk_full
from ..retrieval.retrieve import QueryError

log = logging.getLogger("rag.web")


def error(message: str) -> str:
    """A failure as the page shows it (Markdown)."""
    return f"**出错了**：{html.escape(message)}"


def markdown_text(text: str) -> str:
    """``text`` shown as itself in Markdown: HTML escaped, and the characters Markdown would read as formatting
    backslash-escaped."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|>~])", r"\\\1", html.escape(text))


def explain(exc: Exception, service: RagService, doing: str) -> str:
    """What a user is told when a handler fails: the reason when it is theirs to act on, never a traceback."""
    if isinstance(exc, (AccessDenied, QueryError, StoreError, LibraryError, ConversationNotFound)):
        return error(str(exc))
    if isinstance(exc, (sqlite3.DatabaseError, OSError)) and is_disk_full(exc):
        log.error("%s: %s", doing, describe_store_error(service.settings.index_dir, exc))
        return error("服务器磁盘已满，未能保存；请联系管理员清理磁盘后重试（已有资料未受影响）")
    if isinstance(exc, sqlite3.DatabaseError) and is_damage(exc):
        log.error("%s: %s", doing, describe_store_error(service.settings.index_dir, exc))
        return error("索引已损坏，请联系管理员（rag check 可查明原因，并从 rag backup 的备份恢复）")
    log.exception("%s failed", doing)
    return error(f"{doing}时出现问题（{type(exc).__name__}）")


class Page:
    """The service behind the page and what its handlers need of it. ``signin`` decides per request who is asking:
    the signed-in user, or :data:`rag.app.access.LOCAL_USER` while the server is open (no users, this machine
    only; also without ``signin``). ``gold``: the gold file the evaluation tab runs on when none is uploaded."""

    def __init__(self, service: RagService, signin: SignIn | None, gold: Path | None) -> None:
        self.service = service
        self.signin = signin
        self.gold = gold if gold is not None and gold.is_file() else None
        self.max_bytes = int(service.settings.max_upload_mb * 1e6)
        self.blocks: gr.Blocks | None = None  # the page, once built: its upload route's record of files

    def who(self, request: gr.Request | None) -> User | None:
        """Who asks: the signed-in user, the local user on an open server, or ``None`` (no right to anything)."""
        if self.signin is None:
            return LOCAL_USER
        return self.signin.user(getattr(request, "username", None))

    def gate(self) -> UploadGate:
        """The check for files named in a request: only those Gradio's upload route wrote, each used once."""
        assert self.blocks is not None, "the page is built before it serves requests"
        return UploadGate(get_upload_folder(), self.blocks.upload_file_set)

    def explain(self, exc: Exception, doing: str) -> str:
        """See :func:`explain`."""
        return explain(exc, self.service, doing)

"""管理: libraries (create, rename, delete; administrators) and the audit log."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import gradio as gr

from ...app.access import AccessDenied
from ...app.libraries import LibraryError
from ..common import Page, error

# (picker, "search also") for the libraries a request's user may read: how the page refills its library pickers.
Pickers = Callable[[gr.Request, "str | None"], tuple[gr.Dropdown, gr.Dropdown]]


class AdminTab:
    """The 管理 tab; :meth:`audit_rows` also fills it when the page loads."""

    def __init__(self, page: Page, pickers: Pickers) -> None:
        self.page = page
        self.pickers = pickers

    def manage(self, action: str) -> Callable[..., tuple[str, Any, Any, list]]:
        """The handler of the create, rename or delete button."""
        def run(name: str, new_name: str, library: str, request: gr.Request) -> tuple[str, Any, Any, list]:
            """Create, rename or delete a library (administrators): (message, picker, search-also, audit rows)."""
            service, user = self.page.service, self.page.who(request)
            name, new_name = (name or "").strip(), (new_name or "").strip()
            chosen = library
            try:
                if action == "create":
                    message, chosen = f"已创建文档库 {service.create_library(user, name)}", name
                elif action == "rename":
                    message, chosen = f"已将 {name} 改名为 {service.rename_library(user, name, new_name)}", new_name
                else:
                    service.delete_library(user, name)
                    message = f"已删除文档库 {name}（已移入回收站，可由管理员恢复）"
            except Exception as exc:
                message = error(str(exc)) if isinstance(exc, LibraryError) else self.page.explain(exc, "管理文档库")
            return (message, *self.pickers(request, chosen), self.audit_rows(request))
        return run

    def audit_rows(self, request: gr.Request) -> list[list[Any]]:
        """The newest entries of the audit log, for administrators."""
        try:
            events = self.page.service.audit_log(self.page.who(request), 100)
        except AccessDenied:
            return []
        return [[time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time)), e.user, e.action, e.library or "",
                 json.dumps(e.detail, ensure_ascii=False)[:300]] for e in events]

    def build(self, library: gr.Dropdown, more: gr.Dropdown) -> gr.Dataframe:
        """Lay the tab out (inside ``gr.Tab``); a library change refills ``library`` and ``more``."""
        gr.Markdown("管理文档库（仅管理员）。删除的文档库移入回收站，不会直接抹去。用户与权限用 `rag user` 命令管理。")
        with gr.Row():
            lib_name = gr.Textbox(label="文档库名称", elem_id="lib-name")
            lib_new = gr.Textbox(label="新名称（改名时）", elem_id="lib-new")
        with gr.Row():
            create_button = gr.Button("新建", variant="primary", elem_id="lib-create")
            rename_button = gr.Button("改名", elem_id="lib-rename")
            delete_button = gr.Button("删除", variant="stop", elem_id="lib-delete")
        manage_md = gr.Markdown(elem_id="manage-report")
        gr.Markdown("#### 操作记录")
        audit_table = gr.Dataframe(headers=["时间", "用户", "操作", "文档库", "详情"], interactive=False,
                                   elem_id="audit", wrap=True)
        for button, action in ((create_button, "create"), (rename_button, "rename"), (delete_button, "delete")):
            button.click(self.manage(action), [lib_name, lib_new, library], [manage_md, library, more, audit_table],
                         api_name=f"library_{action}")
        audit_refresh = gr.Button("刷新记录", size="sm")
        audit_refresh.click(self.audit_rows, None, audit_table, api_visibility="private")
        return audit_table

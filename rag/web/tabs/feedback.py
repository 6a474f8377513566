"""反馈: the library's rated answers (editors), exported as a gold-file draft for ``rag eval qa``."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr

from ...app.access import AccessDenied, Permission
from ...app.libraries import LibraryError
from ..common import Page


class FeedbackTab:
    """The 反馈 tab; :meth:`feedback_rows` also fills it when the page loads or the library changes."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def feedback_rows(self, library: str, request: gr.Request) -> list[list[Any]]:
        """The library's rated answers, newest first, for its editors."""
        service = self.page.service
        try:
            service.authorize(self.page.who(request), Permission.EDIT, library)
        except (AccessDenied, LibraryError):
            return []
        return [[time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created or 0)), "👍" if r.rating > 0 else "👎",
                 r.user, r.question, r.answer, r.comment] for r in service.feedback.list(library=library, limit=200)]

    def export_feedback(self, library: str, request: gr.Request) -> tuple[str, list[str]]:
        """The library's rated answers as a gold-file draft: (message, [JSONL path])."""
        out = Path(tempfile.mkdtemp(prefix="rag-feedback-")) / f"feedback-{library}.jsonl"
        try:
            counts = self.page.service.export_feedback(self.page.who(request), out, library)
        except Exception as exc:
            return self.page.explain(exc, "导出反馈"), []
        return (f"已导出 {counts['written']} 题（👍 {counts['positive']}，👎 {counts['negative']}，"
                f"待人工核对 {counts['needs_review']}）：可直接用于 `rag eval qa --dataset`。", [str(out)])

    def build(self, library: gr.Dropdown) -> gr.Dataframe:
        """Lay the tab out (inside ``gr.Tab``); returns the table of ratings."""
        gr.Markdown("用户对回答的 👍/👎 与说明（本文档库；编辑者可见）。导出为金标准草稿后可直接用于评测。")
        feedback_table = gr.Dataframe(headers=["时间", "评价", "用户", "问题", "回答", "说明"], interactive=False,
                                      elem_id="feedback", wrap=True)
        with gr.Row():
            feedback_refresh = gr.Button("刷新", size="sm")
            export_button = gr.Button("导出金标准草稿", variant="primary", elem_id="export-feedback")
        export_md = gr.Markdown(elem_id="export-report")
        export_file = gr.File(label="下载（JSONL）", file_count="multiple", elem_id="export-file")
        feedback_refresh.click(self.feedback_rows, library, feedback_table, api_visibility="private")
        export_button.click(self.export_feedback, library, [export_md, export_file], api_name="export_feedback")
        return feedback_table

"""摘要: summaries of chosen documents or of a topic, and a whole-library batch to download."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from ..common import Page, error
from ..render import render_summary


class SummariesTab:
    """The 摘要 tab."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def summarize(self, doc_ids: list[str] | None, topic: str, length: str, library: str,
                  request: gr.Request) -> str:
        """Summaries of the chosen documents, or of a topic when one is given (Markdown)."""
        service = self.page.service
        try:
            if topic and topic.strip():
                return render_summary(service.summarize_topic(self.page.who(request), topic.strip(), library=library))
            if not doc_ids:
                return error("请选择文档或输入主题")
            summaries = service.summarize(self.page.who(request), doc_ids, length, library=library)
            return "\n\n---\n\n".join(render_summary(s) for s in summaries)
        except Exception as exc:
            return self.page.explain(exc, "生成摘要")

    def summarize_all(self, length: str, library: str, request: gr.Request,
                      progress: gr.Progress = gr.Progress()) -> tuple[str, list[str]]:
        """Summaries of the whole library: (message, [JSONL path, Markdown path]) for download."""
        progress(0.1, desc="正在生成摘要")
        out = Path(tempfile.mkdtemp(prefix="rag-summaries-")) / "summaries.jsonl"
        try:
            counts = self.page.service.summarize_library(self.page.who(request), out, length, library=library)
        except Exception as exc:
            return self.page.explain(exc, "生成摘要"), []
        return (f"完成：{counts['summarised']} 篇，失败 {counts['failed']} 篇，用时 {counts['seconds']} 秒。",
                [str(out), str(out.with_suffix(".md"))])

    def build(self, library: gr.Dropdown) -> gr.Dropdown:
        """Lay the tab out (inside ``gr.Tab``); returns the document picker, which the library tab refills."""
        with gr.Row():
            chosen = gr.Dropdown([], multiselect=True, label="文档", elem_id="summary-docs")
            topic = gr.Textbox(label="或输入主题（跨文档摘要）", elem_id="summary-topic")
            length = gr.Radio(["short", "medium", "long"], value="medium", label="长度")
        summary_button = gr.Button("生成摘要", variant="primary", elem_id="summarize")
        summary_md = gr.Markdown(elem_id="summary")
        summary_button.click(self.summarize, [chosen, topic, length, library], summary_md, api_name="summarize")
        with gr.Row():
            batch_button = gr.Button("为全部文档生成摘要")
            batch_md = gr.Markdown()
        batch_files = gr.File(label="下载（JSONL / Markdown）", file_count="multiple")
        batch_button.click(self.summarize_all, [length, library], [batch_md, batch_files],
                           api_name="summarize_library")
        return chosen

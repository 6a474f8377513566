"""问答: a question, the answer as the model writes it and then checked, its sources, and 👍/👎 on it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import gradio as gr

from ...answering.answer import Answer
from ..common import Page, error
from ..render import render_answer, render_draft, render_sources

EXAMPLES = ["第五次全区妇女儿童工作会议在哪里召开？", "精河縣婦女兒童工作會議由誰主持？", "甘孜州女性公务员比例达到多少？",
            "安州区妇女儿童工作会是哪天召开的？", "讲话要求贯彻落实哪些法律法规？"]


class AskTab:
    """The 问答 tab; :meth:`rating_row` is the 👍/👎 row the 对话 tab has too."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def ask(self, question: str, more: list[str] | None, library: str,
            request: gr.Request) -> Iterator[tuple[str, str, str, Answer | None]]:
        """Answer a question as the model writes it, then the checked answer: (answer Markdown, sources HTML,
        answer JSON, the answer kept for feedback). ``more``: other libraries to search as well."""
        draft = ""
        libraries = list(dict.fromkeys([library, *(more or [])]))
        try:
            for item in self.page.service.ask_stream(self.page.who(request), question or "", libraries):
                if isinstance(item, str):
                    draft += item
                    yield render_draft(draft), "", "{}", None
                else:
                    yield (render_answer(item), render_sources(item), json.dumps(item.to_dict(), ensure_ascii=False),
                           item)
        except Exception as exc:  # shown in the page, never as a stack trace
            yield self.page.explain(exc, "回答"), "", "{}", None

    def rate(self, rating: int) -> Callable[..., str]:
        """The handler of the 👍 (``1``) or 👎 (``-1``) button."""
        def give(answer: Answer | None, comment: str, library: str, request: gr.Request) -> str:
            """Store 👍/👎 and a comment on the answer shown (Markdown message)."""
            if answer is None:
                return error("还没有可评价的回答")
            try:
                self.page.service.give_feedback(self.page.who(request), answer, rating, comment or "", library=library)
            except Exception as exc:
                return self.page.explain(exc, "保存评价")
            return "已记录，谢谢！" + ("（👍）" if rating > 0 else "（👎）")
        return give

    def rating_row(self, answer: gr.State, label: str, ids: tuple[str, str, str, str], library: gr.Dropdown) -> None:
        """A comment box and 👍/👎 buttons that rate the answer ``answer`` holds, then thank (elem ids: comment,
        👍, 👎, thanks)."""
        with gr.Row():
            comment = gr.Textbox(label=label, scale=4, elem_id=ids[0])
            buttons = [(gr.Button("👍 有用", scale=1, elem_id=ids[1]), 1),
                       (gr.Button("👎 有误", scale=1, elem_id=ids[2]), -1)]
        rated = gr.Markdown(elem_id=ids[3])
        for button, rating in buttons:
            button.click(self.rate(rating), [answer, comment, library], rated, api_visibility="private")

    def build(self, library: gr.Dropdown) -> gr.Dropdown:
        """Lay the tab out (inside ``gr.Tab``); returns the "search also" picker, which library changes refill."""
        with gr.Row():
            question = gr.Textbox(label="问题", placeholder="输入问题后按回车", scale=5, elem_id="question")
            ask_button = gr.Button("提问", variant="primary", scale=1, elem_id="ask")
        more = gr.Dropdown([], value=[], multiselect=True, label="同时检索这些文档库（可选）", elem_id="more-libraries",
                           allow_custom_value=True)
        gr.Examples(EXAMPLES, inputs=question, label="示例问题")
        answer_md = gr.Markdown(elem_id="answer")
        shown_answer = gr.State(None)
        self.rating_row(shown_answer, "评价说明（可选）", ("comment", "thumbs-up", "thumbs-down", "rated"), library)
        gr.Markdown("#### 出处")
        sources_html = gr.HTML(elem_id="sources")
        answer_json = gr.Code(label="JSON", language="json", visible=False)
        outputs = [answer_md, sources_html, answer_json, shown_answer]
        ask_button.click(self.ask, [question, more, library], outputs, api_name="ask")
        question.submit(self.ask, [question, more, library], outputs, api_visibility="private")
        return more


"""The page: the library picker at the top and the seven tabs (:mod:`rag.web.tabs`), filled per visitor with what
their rights let them see, and refilled when the library changes."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr

from ..app.libraries import DEFAULT_LIBRARY
from ..app.service import RagService
from ..app.signin import SignIn
from .common import Page
from .tabs.admin import AdminTab
from .tabs.ask import AskTab
from .tabs.chat import ChatTab
from .tabs.evaluation import EvaluationTab
from .tabs.feedback import FeedbackTab
from .tabs.library import LibraryTab
from .tabs.summaries import SummariesTab

CSS = """
.source {border:1px solid #ddd; border-radius:6px; padding:8px 10px; margin:6px 0; background:#fafafa}
.source.cited {border-color:#4c72b0; background:#f3f7ff}
.source .head {font-size:0.85em; color:#555; margin-bottom:4px}
.source mark {background:#ffe58a; padding:0 2px}
.source .warn {color:#b35900; font-size:0.85em}
"""


def build_app(service: RagService, signin: SignIn | None = None, gold: Path | None = None) -> gr.Blocks:
    """The Blocks app around one :class:`RagService`. ``signin`` decides per request who is asking (see
    :class:`rag.web.common.Page`); ``gold``: the gold file the 评测 tab uses when none is uploaded. Every handler
    takes the library chosen at the top of the page as its last input."""
    page = Page(service, signin, gold)

    def readable(request: gr.Request, chosen: str | None = None) -> tuple[list[str], str]:
        """The libraries this user may read, and which of them to show (``chosen`` when it is one)."""
        names = service.library_names(page.who(request))
        fallback = DEFAULT_LIBRARY if DEFAULT_LIBRARY in names or not names else names[0]
        return names, chosen if chosen in names else fallback

    def pickers(request: gr.Request, chosen: str | None = None) -> tuple[gr.Dropdown, gr.Dropdown]:
        """The picker at the top and the "search also" list."""
        names, value = readable(request, chosen)
        return gr.Dropdown(choices=names, value=value), gr.Dropdown(choices=names, value=[])

    ask, chat, summaries = AskTab(page), ChatTab(page), SummariesTab(page)
    documents, feedback, evaluation, admin = LibraryTab(page), FeedbackTab(page), EvaluationTab(page), AdminTab(
        page, pickers)

    def page_view(request: gr.Request) -> tuple[Any, ...]:
        """Everything filled per visitor when the page loads."""
        picker, more = pickers(request)
        library = readable(request)[1]
        user = page.who(request)
        signed_in = f"当前用户：**{html.escape(user.name)}**（{user.role}）" if user else ""
        return (picker, more, documents.documents(library, request), documents.stats(library, request),
                documents.doc_choices(library, request), chat.conversations(library, request), signed_in)

    def switch_library(library: str, request: gr.Request) -> tuple[Any, ...]:
        """Everything that shows one library, for the library just chosen; the chat starts anew."""
        return (documents.documents(library, request), documents.stats(library, request),
                documents.doc_choices(library, request), chat.conversations(library, request), [], None, "",
                feedback.feedback_rows(library, request))

    with gr.Blocks(title="中文资料问答") as app:
        with gr.Row():
            gr.Markdown("# 中文资料问答与评测\n简体、繁体均可提问；答案附带出处，资料不足时如实说明。")
            with gr.Column(scale=0, min_width=260):
                # Any name is accepted from a program (the choices are filled per visitor; the service decides).
                library = gr.Dropdown([DEFAULT_LIBRARY], value=DEFAULT_LIBRARY, label="文档库", elem_id="library-pick",
                                      allow_custom_value=True)
                signed_in = gr.Markdown(elem_id="signed-in")
        with gr.Tab("问答"):
            more = ask.build(library)
        with gr.Tab("对话"):
            conversation = chat.build(library, ask)
        with gr.Tab("摘要"):
            chosen = summaries.build(library)
        with gr.Tab("文档库"):
            shelf = documents.build(library, chosen)
        with gr.Tab("反馈"):
            feedback_table = feedback.build(library)
        with gr.Tab("评测"):
            evaluation.build(library)
        with gr.Tab("管理"):
            audit_table = admin.build(library, more)
        # Filled per visitor, with what their rights let them see; refilled when the library changes.
        app.load(page_view, None, [library, more, shelf.table, shelf.stats, chosen, conversation.past, signed_in],
                 api_visibility="private").then(admin.audit_rows, None, audit_table, api_visibility="private").then(
                 feedback.feedback_rows, library, feedback_table, api_visibility="private")
        library.change(switch_library, library, [shelf.table, shelf.stats, chosen, conversation.past,
                                                 conversation.chatbot, conversation.conversation_id,
                                                 conversation.sources, feedback_table], api_visibility="private")
    page.blocks = app
    return app

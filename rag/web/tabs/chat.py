"""对话: a conversation kept per user and library; a follow-up is understood with the turns before it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr

from ...answering.answer import Answer
from ...app.access import AccessDenied
from ..common import Page
from ..render import render_draft, render_sources, render_turn
from .ask import AskTab


@dataclass
class ChatView:
    """The parts of the 对话 tab a change of library empties or refills."""

    past: gr.Dropdown
    chatbot: gr.Chatbot
    conversation_id: gr.State
    sources: gr.HTML


class ChatTab:
    """The 对话 tab."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def chat(self, message: str, history: list[dict] | None, conversation_id: str | None, library: str,
             request: gr.Request) -> Iterator[tuple[list[dict], str, str | None, Answer | None]]:
        """One turn: (chat messages, the turn's sources HTML, conversation id, the answer kept for feedback)."""
        shown = [*(history or []), {"role": "user", "content": message or ""}]
        draft = ""
        try:
            for item in self.page.service.chat_stream(self.page.who(request), message or "", conversation_id or None,
                                                      library):
                if isinstance(item, str):
                    draft += item
                    yield [*shown, {"role": "assistant", "content": render_draft(draft)}], "", conversation_id, None
                else:
                    yield ([*shown, {"role": "assistant", "content": render_turn(item.turn, item.answer)}],
                           render_sources(item.answer), item.conversation_id, item.answer)
        except Exception as exc:
            yield ([*shown, {"role": "assistant", "content": self.page.explain(exc, "回答")}], "", conversation_id,
                   None)

    def conversations(self, library: str, request: gr.Request) -> gr.Dropdown:
        """The user's conversations in ``library``, to reopen one."""
        try:
            listed = self.page.service.conversation_list(self.page.who(request), library)
        except AccessDenied:
            listed = []
        return gr.Dropdown(choices=[(f"{c.title or c.id}（{c.turns} 问）", c.id) for c in listed], value=None)

    def open_conversation(self, conversation_id: str | None, library: str,
                          request: gr.Request) -> tuple[list[dict], str, str | None]:
        """A stored conversation back in the chat: (messages, sources HTML, conversation id)."""
        if not conversation_id:
            return [], "", None
        try:
            turns = self.page.service.conversation(self.page.who(request), conversation_id, library)
        except Exception as exc:
            return [{"role": "assistant", "content": self.page.explain(exc, "读取对话")}], "", None
        messages = []
        for turn in turns:
            messages += [{"role": "user", "content": turn.question},
                         {"role": "assistant", "content": render_turn(turn)}]
        return messages, "", conversation_id

    def build(self, library: gr.Dropdown, ask: AskTab) -> ChatView:
        """Lay the tab out (inside ``gr.Tab``), with the 👍/👎 row of ``ask``."""
        conversation_id = gr.State(None)
        chat_answer = gr.State(None)
        with gr.Row():
            past = gr.Dropdown([], label="我的对话", scale=4, elem_id="conversations")
            new_chat = gr.Button("新对话", scale=1, elem_id="new-chat")
        chatbot = gr.Chatbot(label="对话（追问会结合上文理解）", height=420, elem_id="chat")
        with gr.Row():
            message = gr.Textbox(label="问题", placeholder="输入问题后按回车；可以追问，如“那甘孜州呢？”", scale=5,
                                 elem_id="chat-input")
            send = gr.Button("发送", variant="primary", scale=1, elem_id="chat-send")
        ask.rating_row(chat_answer, "对最新回答的评价说明（可选）", ("chat-comment", "chat-up", "chat-down", "chat-rated"),
                       library)
        gr.Markdown("#### 最新回答的出处")
        chat_sources = gr.HTML(elem_id="chat-sources")
        chat_outputs = [chatbot, chat_sources, conversation_id, chat_answer]
        asked = gr.State("")
        for trigger in (send.click, message.submit):
            # The box is emptied as the question is taken, not after the answer: what a user types meanwhile is
            # kept. (Programs chat through /v1/chat/completions.)
            trigger(lambda text: ("", text), message, [message, asked], api_visibility="private").then(
                self.chat, [asked, chatbot, conversation_id, library], chat_outputs, api_visibility="private").then(
                self.conversations, library, past, api_visibility="private")
        new_chat.click(lambda: ([], "", None, None), None, chat_outputs, api_visibility="private")
        past.select(self.open_conversation, [past, library], [chatbot, chat_sources, conversation_id],
                    api_visibility="private")
        return ChatView(past, chatbot, conversation_id, chat_sources)

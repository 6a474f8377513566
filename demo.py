"""The office's web page and API in one process: the Gradio page at / (问答, 对话, 摘要, 文档库, 反馈, 评测, 管理) and
the OpenAI-compatible HTTP API at /v1 (rag/api.py), both over one :class:`rag.app.service.RagService`.

    python demo.py                     # index/ (built from data/sample when empty), http://127.0.0.1:7860
    python demo.py --port 8000 --index /data/index --host 0.0.0.0    # needs users: rag user add NAME

Every page handler is also a Gradio endpoint (``gradio_client``), taking the library as its last input. Models and
libraries are loaded once per process.

Safe by default: the page asks for a user name and password whenever it is reachable from another machine (or
users are configured at all), the API wants a user's key, rights are checked per library by the service, and
endpoints that take files read only files uploaded with the request, within ``max_upload_mb``, and delete them
once read.
"""
from __future__ import annotations

import argparse
import html
import ipaddress
import json
import logging
import re
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import uvicorn
from fastapi import FastAPI
from gradio.routes import App as GradioApp
from gradio.utils import get_upload_folder

from rag.answering.answer import Answer
from rag.answering.conversation import ConversationNotFound
from rag.answering.generate import GeneratorError
from rag.app.access import LOCAL_USER, AccessDenied, AccessError, Permission, User, UserStore
from rag.app.api import install_api
from rag.app.http_guard import RequestGuard
from rag.app.libraries import DEFAULT_LIBRARY, LibraryError
from rag.app.service import (
    RagService,
    describe_source,
    render_answer,
    render_draft,
    render_sources,
    render_summary,
    render_turn,
)
from rag.app.signin import SignIn
from rag.app.uploads import UploadGate
from rag.config import Settings, load_settings
from rag.index.embeddings import EmbedderError
from rag.index.store import StoreError, describe_store_error, is_damage, is_disk_full
from rag.retrieval.rerank import RerankerError
from rag.retrieval.retrieve import QueryError

log = logging.getLogger("rag.demo")
HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "data" / "sample"
GOLD = HERE / "eval" / "data" / "sample_qa.jsonl"
EXAMPLES = ["第五次全区妇女儿童工作会议在哪里召开？", "精河縣婦女兒童工作會議由誰主持？", "甘孜州女性公务员比例达到多少？",
            "安州区妇女儿童工作会是哪天召开的？", "讲话要求贯彻落实哪些法律法规？"]
CSS = """
.source {border:1px solid #ddd; border-radius:6px; padding:8px 10px; margin:6px 0; background:#fafafa}
.source.cited {border-color:#4c72b0; background:#f3f7ff}
.source .head {font-size:0.85em; color:#555; margin-bottom:4px}
.source mark {background:#ffe58a; padding:0 2px}
.source .warn {color:#b35900; font-size:0.85em}
"""


def _error(message: str) -> str:
    return f"**出错了**：{html.escape(message)}"


def _markdown_text(text: str) -> str:
    """``text`` shown as itself in Markdown: HTML escaped, and the characters Markdown would read as formatting
    backslash-escaped."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|>~])", r"\\\1", html.escape(text))


def _explain(exc: Exception, service: RagService, doing: str) -> str:
    """What a user is told when a handler fails: the reason when it is theirs to act on, never a traceback."""
    if isinstance(exc, (AccessDenied, QueryError, StoreError, LibraryError, ConversationNotFound)):
        return _error(str(exc))
    if isinstance(exc, (sqlite3.DatabaseError, OSError)) and is_disk_full(exc):
        log.error("%s: %s", doing, describe_store_error(service.settings.index_dir, exc))
        return _error("服务器磁盘已满，未能保存；请联系管理员清理磁盘后重试（已有资料未受影响）")
    if isinstance(exc, sqlite3.DatabaseError) and is_damage(exc):
        log.error("%s: %s", doing, describe_store_error(service.settings.index_dir, exc))
        return _error("索引已损坏，请联系管理员（rag check 可查明原因，并从 rag backup 的备份恢复）")
    log.exception("%s failed", doing)
    return _error(f"{doing}时出现问题（{type(exc).__name__}）")


def build_app(service: RagService, signin: SignIn | None = None) -> gr.Blocks:
    """The Blocks app around one :class:`RagService`. ``signin`` decides per request who is asking: the signed-in
    user, or :data:`rag.app.access.LOCAL_USER` while the server is open (no users, this machine only; also
    without ``signin``). Every handler takes the library chosen at the top of the page as its last input."""
    max_bytes = int(service.settings.max_upload_mb * 1e6)

    def who(request: gr.Request | None) -> User | None:
        if signin is None:
            return LOCAL_USER
        return signin.user(getattr(request, "username", None))

    def gate() -> UploadGate:
        """The check for files named in a request: only those Gradio's upload route wrote, each used once."""
        return UploadGate(get_upload_folder(), app.upload_file_set)

    # -- 问答 -------------------------------------------------------------------------------------------------
    def ask(question: str, more: list[str] | None, library: str,
            request: gr.Request) -> Iterator[tuple[str, str, str, Answer | None]]:
        """Answer a question as the model writes it, then the checked answer: (answer Markdown, sources HTML,
        answer JSON, the answer kept for feedback). ``more``: other libraries to search as well."""
        draft = ""
        libraries = list(dict.fromkeys([library, *(more or [])]))
        try:
            for item in service.ask_stream(who(request), question or "", libraries):
                if isinstance(item, str):
                    draft += item
                    yield render_draft(draft), "", "{}", None
                else:
                    yield (render_answer(item), render_sources(item), json.dumps(item.to_dict(), ensure_ascii=False),
                           item)
        except Exception as exc:  # shown in the page, never as a stack trace
            yield _explain(exc, service, "回答"), "", "{}", None

    def rate(rating: int) -> Any:
        def give(answer: Answer | None, comment: str, library: str, request: gr.Request) -> str:
            """Store 👍/👎 and a comment on the answer shown (Markdown message)."""
            if answer is None:
                return _error("还没有可评价的回答")
            try:
                service.give_feedback(who(request), answer, rating, comment or "", library=library)
            except Exception as exc:
                return _explain(exc, service, "保存评价")
            return "已记录，谢谢！" + ("（👍）" if rating > 0 else "（👎）")
        return give

    def rating_row(answer: gr.State, label: str, ids: tuple[str, str, str, str]) -> None:
        """A comment box and 👍/👎 buttons that rate the answer ``answer`` holds, then thank (elem ids: comment,
        👍, 👎, thanks). Called inside the page's layout, after the library picker exists."""
        with gr.Row():
            comment = gr.Textbox(label=label, scale=4, elem_id=ids[0])
            buttons = [(gr.Button("👍 有用", scale=1, elem_id=ids[1]), 1),
                       (gr.Button("👎 有误", scale=1, elem_id=ids[2]), -1)]
        rated = gr.Markdown(elem_id=ids[3])
        for button, rating in buttons:
            button.click(rate(rating), [answer, comment, library], rated, api_visibility="private")

    # -- 对话 -------------------------------------------------------------------------------------------------
    def chat(message: str, history: list[dict] | None, conversation_id: str | None, library: str,
             request: gr.Request) -> Iterator[tuple[list[dict], str, str | None, Answer | None]]:
        """One turn: (chat messages, the turn's sources HTML, conversation id, the answer kept for feedback)."""
        shown = [*(history or []), {"role": "user", "content": message or ""}]
        draft = ""
        try:
            for item in service.chat_stream(who(request), message or "", conversation_id or None, library):
                if isinstance(item, str):
                    draft += item
                    yield [*shown, {"role": "assistant", "content": render_draft(draft)}], "", conversation_id, None
                else:
                    yield ([*shown, {"role": "assistant", "content": render_turn(item.turn, item.answer)}],
                           render_sources(item.answer), item.conversation_id, item.answer)
        except Exception as exc:
            yield [*shown, {"role": "assistant", "content": _explain(exc, service, "回答")}], "", conversation_id, None

    def conversations(library: str, request: gr.Request) -> gr.Dropdown:
        try:
            listed = service.conversation_list(who(request), library)
        except AccessDenied:
            listed = []
        return gr.Dropdown(choices=[(f"{c.title or c.id}（{c.turns} 问）", c.id) for c in listed], value=None)

    def open_conversation(conversation_id: str | None, library: str,
                          request: gr.Request) -> tuple[list[dict], str, str | None]:
        """A stored conversation back in the chat: (messages, sources HTML, conversation id)."""
        if not conversation_id:
            return [], "", None
        try:
            turns = service.conversation(who(request), conversation_id, library)
        except Exception as exc:
            return [{"role": "assistant", "content": _explain(exc, service, "读取对话")}], "", None
        messages = []
        for turn in turns:
            messages += [{"role": "user", "content": turn.question},
                         {"role": "assistant", "content": render_turn(turn)}]
        return messages, "", conversation_id

    # -- 摘要 -------------------------------------------------------------------------------------------------
    def summarize(doc_ids: list[str] | None, topic: str, length: str, library: str, request: gr.Request) -> str:
        """Summaries of the chosen documents, or of a topic when one is given (Markdown)."""
        try:
            if topic and topic.strip():
                return render_summary(service.summarize_topic(who(request), topic.strip(), library=library))
            if not doc_ids:
                return _error("请选择文档或输入主题")
            summaries = service.summarize(who(request), doc_ids, length, library=library)
            return "\n\n---\n\n".join(render_summary(s) for s in summaries)
        except Exception as exc:
            return _explain(exc, service, "生成摘要")

    def summarize_all(length: str, library: str, request: gr.Request,
                      progress: gr.Progress = gr.Progress()) -> tuple[str, list[str]]:
        """Summaries of the whole library: (message, [JSONL path, Markdown path]) for download."""
        progress(0.1, desc="正在生成摘要")
        out = Path(tempfile.mkdtemp(prefix="rag-summaries-")) / "summaries.jsonl"
        try:
            counts = service.summarize_library(who(request), out, length, library=library)
        except Exception as exc:
            return _explain(exc, service, "生成摘要"), []
        return (f"完成：{counts['summarised']} 篇，失败 {counts['failed']} 篇，用时 {counts['seconds']} 秒。",
                [str(out), str(out.with_suffix(".md"))])

    # -- 文档库 -----------------------------------------------------------------------------------------------
    def documents(library: str, request: gr.Request) -> list[list[Any]]:
        """The library as rows: id, title, chunks, characters."""
        try:
            listed = service.documents(who(request), library)
        except (AccessDenied, LibraryError):
            return []
        return [[d["doc_id"], d["title"] or "", d["chunks"], d["chars"]] for d in listed]

    def stats(library: str, request: gr.Request) -> str:
        """Library statistics as Markdown."""
        try:
            s = service.stats(who(request), library)
        except (AccessDenied, LibraryError) as exc:
            return _error(str(exc))
        read_only = " · **只读**" if s.read_only else ""
        pending = f" · **{s.pending_vectors}** 个段落正在生成向量，暂只按关键词检索" if s.pending_vectors else ""
        return (f"文档库 **{html.escape(library)}** · 文档 **{s.documents}** 篇 · 段落 **{s.chunks}** 个 · "
                f"向量模型 `{s.embedder}` · 索引 {s.size_mb:.1f} MB · 回答方式 `{s.generator}`{read_only}{pending}")

    def doc_choices(library: str, request: gr.Request) -> gr.Dropdown:
        return gr.Dropdown(choices=[row[0] for row in documents(library, request)], value=[])

    def library_view(library: str, request: gr.Request) -> tuple[list[list[Any]], str]:
        """The library rows and statistics."""
        return documents(library, request), stats(library, request)

    def readable(request: gr.Request, chosen: str | None = None) -> tuple[list[str], str]:
        """The libraries this user may read, and which of them to show (``chosen`` when it is one)."""
        names = service.library_names(who(request))
        fallback = DEFAULT_LIBRARY if DEFAULT_LIBRARY in names or not names else names[0]
        return names, chosen if chosen in names else fallback

    def library_choices(request: gr.Request, chosen: str | None = None) -> tuple[gr.Dropdown, gr.Dropdown]:
        """The picker at the top and the "search also" list."""
        names, value = readable(request, chosen)
        return gr.Dropdown(choices=names, value=value), gr.Dropdown(choices=names, value=[])

    def page_view(request: gr.Request) -> tuple[Any, ...]:
        picker, more = library_choices(request)
        library = readable(request)[1]
        user = who(request)
        signed_in = f"当前用户：**{html.escape(user.name)}**（{user.role}）" if user else ""
        return (picker, more, documents(library, request), stats(library, request), doc_choices(library, request),
                conversations(library, request), signed_in)

    def switch_library(library: str, request: gr.Request) -> tuple[Any, ...]:
        """Everything that shows one library, for the library just chosen; the chat starts anew."""
        return (documents(library, request), stats(library, request), doc_choices(library, request),
                conversations(library, request), [], None, "", feedback_rows(library, request))

    def ingest(files: list[Any] | None, replace: bool, library: str, request: gr.Request,
               progress: gr.Progress = gr.Progress()) -> tuple[str, list[list[Any]], str]:
        """Add uploaded files to the library: (report Markdown, library rows, statistics)."""
        paths = [getattr(f, "name", f) for f in (files or [])]
        if not paths:
            return _error("请先选择文件"), documents(library, request), stats(library, request)
        uploaded = gate()
        try:
            uploads, refused = uploaded.accept(paths, max_bytes)
            report = service.ingest_uploads(who(request), uploads, replace=bool(replace), library=library,
                                            progress=lambda frac, msg: progress(frac, desc=f"正在处理 {msg}"))
        except Exception as exc:
            return _explain(exc, service, "导入"), documents(library, request), stats(library, request)
        finally:
            uploaded.discard(paths)
        lines = [f"新增 {len(report.added)} 篇，更新 {len(report.updated)} 篇，未变 {report.unchanged} 篇，"
                 f"跳过 {len(report.skipped) + len(refused)} 个；写入 {report.chunks_written} 个段落。"]
        lines += [f"- 新增：{d}" for d in report.added + report.updated]
        lines += [f"- 拒收 {r.name}：{r.reason}" for r in refused]
        lines += [f"- 跳过 {describe_source(s['source'])}：{s['reason']}" for s in report.skipped]
        if report.conflicts:
            lines.append("\n同名文档已存在且内容不同，未覆盖；如确需覆盖，请勾选“替换同名文档”后重新导入。")
        return "\n".join(lines), documents(library, request), stats(library, request)

    def show_document(doc_id: str, library: str, request: gr.Request) -> str:
        """A document's cleaned text (what answers cite)."""
        try:
            doc = service.document(who(request), (doc_id or "").strip(), library)
        except Exception as exc:
            return _explain(exc, service, "读取文档")
        if doc is None:
            return _error(f"没有文档 {doc_id!r}")
        # Everything shown is the document's text, never markup: a document holding tags shows them as text.
        origin = html.escape(describe_source(doc["source"]))
        head = (f"### {html.escape(doc['title'] or doc['doc_id'])}\n\n<small>{html.escape(doc['doc_id'])} · "
                f"来源 {origin}</small>\n\n")
        return head + _markdown_text(doc["text"]).replace("\n", "\n\n")

    def remove_document(doc_id: str, library: str, request: gr.Request) -> tuple[str, list[list[Any]], str]:
        """Remove a document: (message, library rows, statistics)."""
        doc_id = (doc_id or "").strip()
        try:
            message = f"已删除 {doc_id}" if doc_id and service.remove(who(request), doc_id, library) else \
                _error(f"没有文档 {doc_id!r}")
        except Exception as exc:
            message = _explain(exc, service, "删除文档")
        return message, documents(library, request), stats(library, request)

    def chunk_rows(doc_id: str, library: str, request: gr.Request) -> tuple[list[list[Any]], str]:
        """A document's chunks as indexed: (rows: id, start, end, excluded, text; message)."""
        try:
            chunks = service.chunks(who(request), (doc_id or "").strip(), library)
        except Exception as exc:
            return [], _explain(exc, service, "读取段落")
        if chunks is None:
            return [], _error(f"没有文档 {doc_id!r}")
        excluded = sum(c.excluded for c in chunks)
        return ([[c.chunk_id, c.start, c.end, "已排除" if c.excluded else "", c.text] for c in chunks],
                f"{len(chunks)} 个段落，其中 {excluded} 个已排除在检索之外。")

    def set_excluded(excluded: bool) -> Any:
        def change(doc_id: str, ids: str, library: str, request: gr.Request) -> tuple[list[list[Any]], str]:
            """Exclude chunks from search (or include them again), then show the document's chunks."""
            try:
                chosen = [int(x) for x in re.split(r"[,，\s]+", ids or "") if x]
                changed = service.set_excluded(who(request), chosen, excluded, library)
            except ValueError:
                return chunk_rows(doc_id, library, request)[0], _error("段落编号应为数字，用逗号分隔")
            except Exception as exc:
                return chunk_rows(doc_id, library, request)[0], _explain(exc, service, "修改段落")
            rows, message = chunk_rows(doc_id, library, request)
            return rows, f"{'排除' if excluded else '恢复'}了 {changed} 个段落。{message}"
        return change

    def rechunk(doc_id: str, size: float | None, overlap: float | None, library: str,
                request: gr.Request) -> tuple[list[list[Any]], str]:
        """Cut a document again with other chunk settings, then show its chunks."""
        try:
            report = service.rechunk(who(request), (doc_id or "").strip(), int(size or 0), int(overlap or 0), library)
        except Exception as exc:
            return chunk_rows(doc_id, library, request)[0], _explain(exc, service, "重新切分")
        rows, message = chunk_rows(doc_id, library, request)
        return rows, f"已重新切分：{report.chunks_before} → {report.chunks_after} 个段落。{message}"

    # -- 管理 -------------------------------------------------------------------------------------------------
    def manage(action: str) -> Any:
        def run(name: str, new_name: str, library: str, request: gr.Request) -> tuple[str, Any, Any, list]:
            """Create, rename or delete a library (administrators): (message, picker, search-also, audit rows)."""
            user = who(request)
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
                message = _error(str(exc)) if isinstance(exc, LibraryError) else _explain(exc, service, "管理文档库")
            return (message, *library_choices(request, chosen), audit_rows(request))
        return run

    def audit_rows(request: gr.Request) -> list[list[Any]]:
        try:
            events = service.audit_log(who(request), 100)
        except AccessDenied:
            return []
        return [[time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time)), e.user, e.action, e.library or "",
                 json.dumps(e.detail, ensure_ascii=False)[:300]] for e in events]

    # -- 反馈 -------------------------------------------------------------------------------------------------
    def feedback_rows(library: str, request: gr.Request) -> list[list[Any]]:
        try:
            service.authorize(who(request), Permission.EDIT, library)
        except (AccessDenied, LibraryError):
            return []
        return [[time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created or 0)), "👍" if r.rating > 0 else "👎",
                 r.user, r.question, r.answer, r.comment] for r in service.feedback.list(library=library, limit=200)]

    def export_feedback(library: str, request: gr.Request) -> tuple[str, list[str]]:
        """The library's rated answers as a gold-file draft: (message, [JSONL path])."""
        out = Path(tempfile.mkdtemp(prefix="rag-feedback-")) / f"feedback-{library}.jsonl"
        try:
            counts = service.export_feedback(who(request), out, library)
        except Exception as exc:
            return _explain(exc, service, "导出反馈"), []
        return (f"已导出 {counts['written']} 题（👍 {counts['positive']}，👎 {counts['negative']}，"
                f"待人工核对 {counts['needs_review']}）：可直接用于 `rag eval qa --dataset`。", [str(out)])

    # -- 评测 -------------------------------------------------------------------------------------------------
    def evaluate(gold_file: Any, limit: float | None, library: str, request: gr.Request) -> tuple[str, list[str]]:
        """Run the QA evaluation on an uploaded gold file (or the bundled one): (report Markdown, plot paths)."""
        from rag.evaluation.evaluate import load_gold, plot_qa, qa_markdown, write_report

        given = getattr(gold_file, "name", gold_file)
        uploaded = gate()
        try:
            path, name = GOLD, GOLD.name
            if given:
                accepted, refused = uploaded.accept([given], max_bytes)
                if refused:
                    return _error(f"{refused[0].name}：{refused[0].reason}"), []
                path, name = accepted[0].path, accepted[0].name
            items = load_gold(path, int(limit) if limit else None)
            report = service.evaluate_qa(who(request), items, library)
        except Exception as exc:
            return _explain(exc, service, "评测"), []
        finally:
            if given:
                uploaded.discard([given])
        markdown, written = write_report(report, Path(tempfile.mkdtemp(prefix="rag-eval-")), qa_markdown, plot_qa,
                                         dataset=name, index=library)
        return markdown, [str(p) for p in written if p.suffix == ".png"]

    with gr.Blocks(title="中文资料问答") as app:
        with gr.Row():
            gr.Markdown("# 中文资料问答与评测\n简体、繁体均可提问；答案附带出处，资料不足时如实说明。")
            with gr.Column(scale=0, min_width=260):
                # Any name is accepted from a program (the choices are filled per visitor; the service decides).
                library = gr.Dropdown([DEFAULT_LIBRARY], value=DEFAULT_LIBRARY, label="文档库", elem_id="library-pick",
                                      allow_custom_value=True)
                signed_in = gr.Markdown(elem_id="signed-in")
        with gr.Tab("问答"):
            with gr.Row():
                question = gr.Textbox(label="问题", placeholder="输入问题后按回车", scale=5, elem_id="question")
                ask_button = gr.Button("提问", variant="primary", scale=1, elem_id="ask")
            more = gr.Dropdown([], value=[], multiselect=True, label="同时检索这些文档库（可选）", elem_id="more-libraries",
                               allow_custom_value=True)
            gr.Examples(EXAMPLES, inputs=question, label="示例问题")
            answer_md = gr.Markdown(elem_id="answer")
            shown_answer = gr.State(None)
            rating_row(shown_answer, "评价说明（可选）", ("comment", "thumbs-up", "thumbs-down", "rated"))
            gr.Markdown("#### 出处")
            sources_html = gr.HTML(elem_id="sources")
            answer_json = gr.Code(label="JSON", language="json", visible=False)
            outputs = [answer_md, sources_html, answer_json, shown_answer]
            ask_button.click(ask, [question, more, library], outputs, api_name="ask")
            question.submit(ask, [question, more, library], outputs, api_visibility="private")
        with gr.Tab("对话"):
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
            rating_row(chat_answer, "对最新回答的评价说明（可选）", ("chat-comment", "chat-up", "chat-down", "chat-rated"))
            gr.Markdown("#### 最新回答的出处")
            chat_sources = gr.HTML(elem_id="chat-sources")
            chat_outputs = [chatbot, chat_sources, conversation_id, chat_answer]
            asked = gr.State("")
            for trigger in (send.click, message.submit):
                # The box is emptied as the question is taken, not after the answer: what a user types meanwhile
                # is kept. (Programs chat through /v1/chat/completions.)
                trigger(lambda text: ("", text), message, [message, asked], api_visibility="private").then(
                    chat, [asked, chatbot, conversation_id, library], chat_outputs, api_visibility="private").then(
                    conversations, library, past, api_visibility="private")
            new_chat.click(lambda: ([], "", None, None), None, chat_outputs, api_visibility="private")
            past.select(open_conversation, [past, library], [chatbot, chat_sources, conversation_id],
                        api_visibility="private")
        with gr.Tab("摘要"):
            with gr.Row():
                chosen = gr.Dropdown([], multiselect=True, label="文档", elem_id="summary-docs")
                topic = gr.Textbox(label="或输入主题（跨文档摘要）", elem_id="summary-topic")
                length = gr.Radio(["short", "medium", "long"], value="medium", label="长度")
            summary_button = gr.Button("生成摘要", variant="primary", elem_id="summarize")
            summary_md = gr.Markdown(elem_id="summary")
            summary_button.click(summarize, [chosen, topic, length, library], summary_md, api_name="summarize")
            with gr.Row():
                batch_button = gr.Button("为全部文档生成摘要")
                batch_md = gr.Markdown()
            batch_files = gr.File(label="下载（JSONL / Markdown）", file_count="multiple")
            batch_button.click(summarize_all, [length, library], [batch_md, batch_files], api_name="summarize_library")
        with gr.Tab("文档库"):
            stats_md = gr.Markdown(elem_id="stats")
            with gr.Row():
                uploads = gr.File(label="上传文件（txt、md、html、docx、pdf、jsonl）", file_count="multiple",
                                  file_types=[".txt", ".md", ".html", ".htm", ".docx", ".pdf", ".jsonl"],
                                  elem_id="upload")
                with gr.Column(scale=0, min_width=160):
                    replace = gr.Checkbox(label="替换同名文档", value=False, elem_id="replace")
                    ingest_button = gr.Button("导入", variant="primary", elem_id="ingest")
            ingest_md = gr.Markdown(elem_id="ingest-report")
            table = gr.Dataframe(headers=["文档", "标题", "段落数", "字数"], interactive=False, elem_id="library")
            with gr.Row():
                doc_id = gr.Textbox(label="文档 ID", elem_id="doc-id")
                show_button = gr.Button("查看清洗后的正文")
                chunks_button = gr.Button("查看段落", elem_id="show-chunks")
                remove_button = gr.Button("删除文档", variant="stop")
            remove_md = gr.Markdown()
            doc_md = gr.Markdown(elem_id="document")
            with gr.Accordion("段落（编辑者可排除段落或重新切分）", open=False):
                chunk_md = gr.Markdown(elem_id="chunk-report")
                chunk_table = gr.Dataframe(headers=["段落", "起", "止", "状态", "正文"], interactive=False,
                                           elem_id="chunks", wrap=True)
                with gr.Row():
                    chunk_ids = gr.Textbox(label="段落编号（逗号分隔）", elem_id="chunk-ids")
                    exclude_button = gr.Button("排除出检索", elem_id="exclude")
                    include_button = gr.Button("恢复检索", elem_id="include")
                with gr.Row():
                    size = gr.Number(value=service.settings.chunk_size, label="段落长度（字）", precision=0)
                    overlap = gr.Number(value=service.settings.chunk_overlap, label="重叠（字）", precision=0)
                    rechunk_button = gr.Button("按此设置重新切分", elem_id="rechunk")
            ingest_button.click(ingest, [uploads, replace, library], [ingest_md, table, stats_md],
                                api_name="ingest").then(doc_choices, library, chosen, api_visibility="private")
            show_button.click(show_document, [doc_id, library], doc_md, api_name="show_document")
            remove_button.click(remove_document, [doc_id, library], [remove_md, table, stats_md],
                                api_name="remove_document").then(doc_choices, library, chosen,
                                                                 api_visibility="private")
            chunks_button.click(chunk_rows, [doc_id, library], [chunk_table, chunk_md], api_name="chunks")
            exclude_button.click(set_excluded(True), [doc_id, chunk_ids, library], [chunk_table, chunk_md],
                                 api_name="exclude_chunks")
            include_button.click(set_excluded(False), [doc_id, chunk_ids, library], [chunk_table, chunk_md],
                                 api_name="include_chunks")
            rechunk_button.click(rechunk, [doc_id, size, overlap, library], [chunk_table, chunk_md],
                                 api_name="rechunk")
            refresh = gr.Button("刷新", size="sm")
            refresh.click(library_view, library, [table, stats_md], api_name="documents")
        with gr.Tab("反馈"):
            gr.Markdown("用户对回答的 👍/👎 与说明（本文档库；编辑者可见）。导出为金标准草稿后可直接用于评测。")
            feedback_table = gr.Dataframe(headers=["时间", "评价", "用户", "问题", "回答", "说明"], interactive=False,
                                          elem_id="feedback", wrap=True)
            with gr.Row():
                feedback_refresh = gr.Button("刷新", size="sm")
                export_button = gr.Button("导出金标准草稿", variant="primary", elem_id="export-feedback")
            export_md = gr.Markdown(elem_id="export-report")
            export_file = gr.File(label="下载（JSONL）", file_count="multiple", elem_id="export-file")
            feedback_refresh.click(feedback_rows, library, feedback_table, api_visibility="private")
            export_button.click(export_feedback, library, [export_md, export_file], api_name="export_feedback")
        with gr.Tab("评测"):
            gr.Markdown("上传金标准问题集（JSONL：`id`, `question`, `answers`, `doc_ids`），或直接使用内置的样例问题集。")
            with gr.Row():
                gold = gr.File(label="金标准文件（可选）", file_types=[".jsonl"])
                limit = gr.Number(label="只评前 N 题（可选）", precision=0)
                eval_button = gr.Button("开始评测", variant="primary")
            eval_md = gr.Markdown()
            plots = gr.Gallery(label="图表", columns=2, height=360)
            eval_button.click(evaluate, [gold, limit, library], [eval_md, plots], api_name="evaluate")
        with gr.Tab("管理"):
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
                button.click(manage(action), [lib_name, lib_new, library], [manage_md, library, more, audit_table],
                             api_name=f"library_{action}")
            audit_refresh = gr.Button("刷新记录", size="sm")
            audit_refresh.click(audit_rows, None, audit_table, api_visibility="private")
        # Filled per visitor, with what their rights let them see; refilled when the library changes.
        app.load(page_view, None, [library, more, table, stats_md, chosen, past, signed_in],
                 api_visibility="private").then(audit_rows, None, audit_table, api_visibility="private").then(
                 feedback_rows, library, feedback_table, api_visibility="private")
        library.change(switch_library, library, [table, stats_md, chosen, past, chatbot, conversation_id, chat_sources,
                                                 feedback_table], api_visibility="private")
    return app


def main() -> None:
    """Start the demo: localhost only unless --host says otherwise, and then only with users to sign in."""
    parser = argparse.ArgumentParser(description="中文资料问答 web demo")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--index", help="index folder (default from config: index/)")
    parser.add_argument("--config", help="TOML config file")
    args = parser.parse_args()
    settings = load_settings(args.config)
    if args.index:
        settings = settings.replace(index_dir=Path(args.index))
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        signin = sign_in_policy(settings, args.host)
        service = open_service(settings)
    except (StoreError, EmbedderError, GeneratorError, RerankerError, AccessError, LibraryError) as exc:
        raise SystemExit(f"demo: error: {exc}") from None
    # Open event streams (the page's queue) would hold a graceful shutdown forever: give them 5 s.
    uvicorn.run(serve(service, signin), host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=5)


def serve(service: RagService, signin: SignIn) -> FastAPI:
    """One FastAPI app for a process: the HTTP API under /v1 (:mod:`rag.app.api`) and the page at /, behind
    :class:`rag.app.http_guard.RequestGuard`."""
    app = FastAPI(title="rag-zh", docs_url="/v1/docs", openapi_url="/v1/openapi.json", redoc_url=None)
    install_api(app, service, signin)
    blocks = build_app(service, signin).queue(default_concurrency_limit=4)
    app = gr.mount_gradio_app(app, blocks, path="/", auth=signin.check_password, css=CSS, show_error=False,
                              auth_message="请输入用户名和密码（管理员用 rag user add 创建用户）",
                              max_file_size=int(service.settings.max_upload_mb * 1e6))
    # Gradio checks that a path named in a request is an upload only in an app it launched itself; mounted, the
    # Blocks must be told they run, or any server file a request names is copied into the upload folder.
    blocks.has_launched = True
    page = next(route.app for route in app.routes if isinstance(getattr(route, "app", None), GradioApp))
    app.add_middleware(_PageSignIn, page=page, signin=signin)
    app.add_middleware(RequestGuard, signin=signin, max_request_bytes=int(service.settings.max_request_mb * 1e6))
    return app


class _PageSignIn:
    """Keeps the page's login in step with the users file on every request: Gradio asks for a password when its
    app has an ``auth`` check and lets everyone in when it has none, and it reads that attribute per request."""

    def __init__(self, app: Any, *, page: GradioApp, signin: SignIn) -> None:
        self.app, self.page, self.signin = app, page, signin

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.page.auth = self.signin.check_password if self.signin.required() else None
        await self.app(scope, receive, send)


def is_local(host: str) -> bool:
    """Whether binding to ``host`` keeps the page on this machine (a loopback address or name)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sign_in_policy(settings: Settings, host: str) -> SignIn:
    """Who must sign in, decided per request (:class:`rag.app.signin.SignIn`): on a loopback address the page is
    open while no users are configured; reachable from other machines it always needs users, and with none
    configured it does not start (:class:`AccessError`)."""
    users = UserStore(settings.users_file)
    if not is_local(host) and not users.exists():
        raise AccessError(f"--host {host} makes the page reachable from other machines, "
                          f"so it needs users to sign in, and {settings.users_file} has none: add one with "
                          "`rag user add NAME --role editor`")
    return SignIn(users, open_when_empty=is_local(host))


def open_service(settings: Settings) -> RagService:
    """The service over every library; the default one (``settings.index_dir``) is first filled with the sample
    corpus when it is empty."""
    service = RagService(settings)
    stats = service.stats(LOCAL_USER)
    if stats.documents == 0 and SAMPLE.is_dir() and not stats.read_only:
        log.info("index %s is empty: ingesting the sample corpus %s", settings.index_dir, SAMPLE)
        service.ingest_paths(LOCAL_USER, [SAMPLE])
    return service


if __name__ == "__main__":
    main()

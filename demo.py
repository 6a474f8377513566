"""The Gradio web demo: 问答 (Q&A with sources), 摘要 (summaries), 文档库 (library) and 评测 (evaluation).

    python demo.py                     # index/ (built from data/sample when empty), http://127.0.0.1:7860
    python demo.py --port 8000 --index /data/index --host 0.0.0.0    # needs users: rag user add NAME

Every handler is also an API endpoint (``gradio_client``): /ask, /ingest, /documents, /show_document,
/remove_document, /summarize, /summarize_library, /evaluate. Models and the index are loaded once per process.

Safe by default: the page asks for a user name and password whenever it is reachable from another machine (or
users are configured at all), changing the library needs an editor, and endpoints that take files read only
files uploaded with the request, within ``max_upload_mb``, and delete them once read.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from rag.access import LOCAL_USER, AccessDenied, AccessError, User, UserStore
from rag.config import Settings, load_settings
from rag.embeddings import EmbedderError
from rag.generate import GeneratorError
from rag.rerank import RerankerError
from rag.retrieve import QueryError
from rag.service import RagService, describe_source, render_answer, render_draft, render_sources, render_summary
from rag.store import StoreError, damaged
from rag.uploads import accept_uploads, discard_uploads

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
    return f"**出错了**：{message}"


def _explain(exc: Exception, service: RagService, doing: str) -> str:
    """What a user is told when a handler fails: the reason when it is theirs to act on, never a traceback."""
    if isinstance(exc, (AccessDenied, QueryError, StoreError)):
        return _error(str(exc))
    if isinstance(exc, sqlite3.DatabaseError):
        log.error("%s: %s", doing, damaged(service.settings.index_dir, exc))
        return _error("索引已损坏，请联系管理员（rag check 可查明原因，并从 rag backup 的备份恢复）")
    log.exception("%s failed", doing)
    return _error(f"{doing}时出现问题（{type(exc).__name__}）")


def build_app(service: RagService, users: UserStore | None = None) -> gr.Blocks:
    """The Blocks app around one :class:`RagService`; with ``users`` every request acts as its signed-in user,
    without them as :data:`rag.access.LOCAL_USER` (the page is then reachable from this machine only)."""
    max_bytes = int(service.settings.max_upload_mb * 1e6)

    def who(request: gr.Request | None) -> User | None:
        if users is None:
            return LOCAL_USER
        name = getattr(request, "username", None)
        return users.get(name) if name else None

    def ask(question: str, request: gr.Request) -> Iterator[tuple[str, str, str]]:
        """Answer a question as the model writes it, then the checked answer: (answer Markdown, sources HTML,
        answer JSON)."""
        draft = ""
        try:
            for item in service.ask_stream(who(request), question or ""):
                if isinstance(item, str):
                    draft += item
                    yield render_draft(draft), "", "{}"
                else:
                    yield render_answer(item), render_sources(item), json.dumps(item.to_dict(), ensure_ascii=False)
        except Exception as exc:  # shown in the page, never as a stack trace
            yield _explain(exc, service, "回答"), "", "{}"

    def summarize(doc_ids: list[str] | None, topic: str, length: str, request: gr.Request) -> str:
        """Summaries of the chosen documents, or of a topic when one is given (Markdown)."""
        try:
            if topic and topic.strip():
                return render_summary(service.summarize_topic(who(request), topic.strip()))
            if not doc_ids:
                return _error("请选择文档或输入主题")
            return "\n\n---\n\n".join(render_summary(s) for s in service.summarize(who(request), doc_ids, length))
        except Exception as exc:
            return _explain(exc, service, "生成摘要")

    def summarize_all(length: str, request: gr.Request, progress: gr.Progress = gr.Progress()) -> tuple[str, list[str]]:
        """Summaries of the whole library: (message, [JSONL path, Markdown path]) for download."""
        progress(0.1, desc="正在生成摘要")
        out = Path(tempfile.mkdtemp(prefix="rag-summaries-")) / "summaries.jsonl"
        try:
            counts = service.summarize_library(who(request), out, length)
        except Exception as exc:
            return _explain(exc, service, "生成摘要"), []
        return (f"完成：{counts['summarised']} 篇，失败 {counts['failed']} 篇，用时 {counts['seconds']} 秒。",
                [str(out), str(out.with_suffix(".md"))])

    def documents(request: gr.Request) -> list[list[Any]]:
        """The library as rows: id, title, chunks, characters."""
        try:
            listed = service.documents(who(request))
        except AccessDenied:
            return []
        return [[d["doc_id"], d["title"] or "", d["chunks"], d["chars"]] for d in listed]

    def stats(request: gr.Request) -> str:
        """Index statistics as Markdown."""
        try:
            s = service.stats(who(request))
        except AccessDenied as exc:
            return _error(str(exc))
        read_only = " · **只读**" if s.read_only else ""
        return (f"文档 **{s.documents}** 篇 · 段落 **{s.chunks}** 个 · 向量模型 `{s.embedder}` · "
                f"索引 {s.size_mb:.1f} MB · 回答方式 `{s.generator}`{read_only}")

    def doc_choices(request: gr.Request) -> gr.Dropdown:
        return gr.Dropdown(choices=[row[0] for row in documents(request)])

    def library_view(request: gr.Request) -> tuple[list[list[Any]], str]:
        """The library rows and statistics."""
        return documents(request), stats(request)

    def page_view(request: gr.Request) -> tuple[list[list[Any]], str, gr.Dropdown]:
        return documents(request), stats(request), doc_choices(request)

    def ingest(files: list[Any] | None, replace: bool, request: gr.Request,
               progress: gr.Progress = gr.Progress()) -> tuple[str, list[list[Any]], str]:
        """Add uploaded files to the index: (report Markdown, library rows, statistics)."""
        paths = [getattr(f, "name", f) for f in (files or [])]
        if not paths:
            return _error("请先选择文件"), documents(request), stats(request)
        upload_root = get_upload_folder()
        try:
            uploads, refused = accept_uploads(paths, upload_root, max_bytes)
            report = service.ingest_uploads(who(request), uploads, replace=bool(replace),
                                            progress=lambda frac, msg: progress(frac, desc=f"正在处理 {msg}"))
        except Exception as exc:
            return _explain(exc, service, "导入"), documents(request), stats(request)
        finally:
            discard_uploads(paths, upload_root)
        lines = [f"新增 {len(report.added)} 篇，更新 {len(report.updated)} 篇，未变 {report.unchanged} 篇，"
                 f"跳过 {len(report.skipped) + len(refused)} 个；写入 {report.chunks_written} 个段落。"]
        lines += [f"- 新增：{d}" for d in report.added + report.updated]
        lines += [f"- 拒收 {r.name}：{r.reason}" for r in refused]
        lines += [f"- 跳过 {describe_source(s['source'])}：{s['reason']}" for s in report.skipped]
        if report.conflicts:
            lines.append("\n同名文档已存在且内容不同，未覆盖；如确需覆盖，请勾选“替换同名文档”后重新导入。")
        return "\n".join(lines), documents(request), stats(request)

    def show_document(doc_id: str, request: gr.Request) -> str:
        """A document's cleaned text (what answers cite)."""
        try:
            doc = service.document(who(request), (doc_id or "").strip())
        except Exception as exc:
            return _explain(exc, service, "读取文档")
        if doc is None:
            return _error(f"没有文档 {doc_id!r}")
        origin = describe_source(doc["source"])
        head = f"### {doc['title'] or doc['doc_id']}\n\n<small>{doc['doc_id']} · 来源 {origin}</small>\n\n"
        return head + doc["text"].replace("\n", "\n\n")

    def remove_document(doc_id: str, request: gr.Request) -> tuple[str, list[list[Any]], str]:
        """Remove a document: (message, library rows, statistics)."""
        doc_id = (doc_id or "").strip()
        try:
            message = f"已删除 {doc_id}" if doc_id and service.remove(who(request), doc_id) else \
                _error(f"没有文档 {doc_id!r}")
        except Exception as exc:
            message = _explain(exc, service, "删除文档")
        return message, documents(request), stats(request)

    def evaluate(gold_file: Any, limit: float | None, request: gr.Request) -> tuple[str, list[str]]:
        """Run the QA evaluation on an uploaded gold file (or the bundled one): (report Markdown, plot paths)."""
        from rag.evaluate import load_gold, plot_qa, qa_markdown, write_report

        given = getattr(gold_file, "name", gold_file)
        upload_root = get_upload_folder()
        try:
            path, name = GOLD, GOLD.name
            if given:
                accepted, refused = accept_uploads([given], upload_root, max_bytes)
                if refused:
                    return _error(f"{refused[0].name}：{refused[0].reason}"), []
                path, name = accepted[0].path, accepted[0].name
            items = load_gold(path, int(limit) if limit else None)
            report = service.evaluate_qa(who(request), items)
        except Exception as exc:
            return _explain(exc, service, "评测"), []
        finally:
            if given:
                discard_uploads([given], upload_root)
        markdown, written = write_report(report, Path(tempfile.mkdtemp(prefix="rag-eval-")), qa_markdown, plot_qa,
                                         dataset=name, index=str(service.settings.index_dir))
        return markdown, [str(p) for p in written if p.suffix == ".png"]

    with gr.Blocks(title="中文资料问答") as app:
        gr.Markdown("# 中文资料问答与评测\n简体、繁体均可提问；答案附带出处，资料不足时如实说明。")
        with gr.Tab("问答"):
            with gr.Row():
                question = gr.Textbox(label="问题", placeholder="输入问题后按回车", scale=5, elem_id="question")
                ask_button = gr.Button("提问", variant="primary", scale=1, elem_id="ask")
            gr.Examples(EXAMPLES, inputs=question, label="示例问题")
            answer_md = gr.Markdown(elem_id="answer")
            gr.Markdown("#### 出处")
            sources_html = gr.HTML(elem_id="sources")
            answer_json = gr.Code(label="JSON", language="json", visible=False)
            ask_button.click(ask, question, [answer_md, sources_html, answer_json], api_name="ask")
            question.submit(ask, question, [answer_md, sources_html, answer_json], api_visibility="private")
        with gr.Tab("摘要"):
            with gr.Row():
                chosen = gr.Dropdown([], multiselect=True, label="文档", elem_id="summary-docs")
                topic = gr.Textbox(label="或输入主题（跨文档摘要）", elem_id="summary-topic")
                length = gr.Radio(["short", "medium", "long"], value="medium", label="长度")
            summary_button = gr.Button("生成摘要", variant="primary", elem_id="summarize")
            summary_md = gr.Markdown(elem_id="summary")
            summary_button.click(summarize, [chosen, topic, length], summary_md, api_name="summarize")
            with gr.Row():
                batch_button = gr.Button("为全部文档生成摘要")
                batch_md = gr.Markdown()
            batch_files = gr.File(label="下载（JSONL / Markdown）", file_count="multiple")
            batch_button.click(summarize_all, length, [batch_md, batch_files], api_name="summarize_library")
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
            library = gr.Dataframe(headers=["文档", "标题", "段落数", "字数"], interactive=False, elem_id="library")
            with gr.Row():
                doc_id = gr.Textbox(label="文档 ID", elem_id="doc-id")
                show_button = gr.Button("查看清洗后的正文")
                remove_button = gr.Button("删除文档", variant="stop")
            remove_md = gr.Markdown()
            doc_md = gr.Markdown(elem_id="document")
            ingest_button.click(ingest, [uploads, replace], [ingest_md, library, stats_md], api_name="ingest").then(
                doc_choices, None, chosen, api_visibility="private")
            show_button.click(show_document, doc_id, doc_md, api_name="show_document")
            remove_button.click(remove_document, doc_id, [remove_md, library, stats_md], api_name="remove_document").then(
                doc_choices, None, chosen, api_visibility="private")
            refresh = gr.Button("刷新", size="sm")
            refresh.click(library_view, None, [library, stats_md], api_name="documents")
        with gr.Tab("评测"):
            gr.Markdown("上传金标准问题集（JSONL：`id`, `question`, `answers`, `doc_ids`），或直接使用内置的样例问题集。")
            with gr.Row():
                gold = gr.File(label="金标准文件（可选）", file_types=[".jsonl"])
                limit = gr.Number(label="只评前 N 题（可选）", precision=0)
                eval_button = gr.Button("开始评测", variant="primary")
            eval_md = gr.Markdown()
            plots = gr.Gallery(label="图表", columns=2, height=360)
            eval_button.click(evaluate, [gold, limit], [eval_md, plots], api_name="evaluate")
        # Filled per visitor, with what their rights let them see.
        app.load(page_view, None, [library, stats_md, chosen], api_visibility="private")
    return app


def main() -> None:
    """Start the demo: localhost only unless --host says otherwise, and then only with users to sign in."""
    parser = argparse.ArgumentParser(description="中文资料问答 web demo")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public link (needs internet)")
    parser.add_argument("--index", help="index folder (default from config: index/)")
    parser.add_argument("--config", help="TOML config file")
    args = parser.parse_args()
    settings = load_settings(args.config)
    if args.index:
        settings = settings.replace(index_dir=Path(args.index))
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        users = login_users(settings, args.host, args.share)
        service = open_service(settings)
    except (StoreError, EmbedderError, GeneratorError, RerankerError, AccessError) as exc:
        raise SystemExit(f"demo: error: {exc}") from None
    app = build_app(service, users)
    auth = (lambda name, password: users.authenticate(name, password) is not None) if users else None
    app.queue(default_concurrency_limit=4).launch(
        server_name=args.host, server_port=args.port, share=args.share, css=CSS, show_error=False, auth=auth,
        auth_message="请输入用户名和密码（管理员用 rag user add 创建用户）",
        max_file_size=int(settings.max_upload_mb * 1e6))


def is_local(host: str) -> bool:
    """Whether binding to ``host`` keeps the page on this machine (a loopback address or name)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def login_users(settings: Settings, host: str, share: bool) -> UserStore | None:
    """The users who sign in, or ``None`` when nobody needs to: the page is reachable from this machine only and
    no users are configured. Reachable from elsewhere with no users is refused (:class:`AccessError`)."""
    users = UserStore(settings.users_file)
    if users.exists():
        return users
    if share or not is_local(host):
        raise AccessError(f"--host {host}{' --share' if share else ''} makes the page reachable from other machines, "
                          f"so it needs users to sign in, and {settings.users_file} has none: add one with "
                          "`rag user add NAME --role editor`")
    return None


def open_service(settings: Settings) -> RagService:
    """The service over ``settings.index_dir``, first filled with the sample corpus when it is empty."""
    service = RagService(settings)
    if service.stats(LOCAL_USER).documents == 0 and SAMPLE.is_dir() and not service.store.read_only:
        log.info("index %s is empty: ingesting the sample corpus %s", settings.index_dir, SAMPLE)
        service.ingest_paths(LOCAL_USER, [SAMPLE])
    return service


if __name__ == "__main__":
    main()

"""文档库: upload and ingest with a per-file report, list, read the cleaned text, remove; a document's chunks as
indexed, which an editor can exclude from search, include again, or cut again with other chunk settings."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ...app.access import AccessDenied
from ...app.libraries import LibraryError
from ...app.service import describe_source
from ..common import Page, error, markdown_text

# What the upload box offers (other formats are read too when a program sends them).
UPLOAD_TYPES = [".txt", ".md", ".html", ".htm", ".docx", ".pdf", ".jsonl"]


@dataclass
class LibraryView:
    """The parts of the 文档库 tab a change of library refills."""

    table: gr.Dataframe
    stats: gr.Markdown


class LibraryTab:
    """The 文档库 tab. :meth:`documents`, :meth:`stats` and :meth:`doc_choices` also fill the page when it loads
    or the library changes."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def documents(self, library: str, request: gr.Request) -> list[list[Any]]:
        """The library as rows: id, title, chunks, characters."""
        try:
            listed = self.page.service.documents(self.page.who(request), library)
        except (AccessDenied, LibraryError):
            return []
        return [[d["doc_id"], d["title"] or "", d["chunks"], d["chars"]] for d in listed]

    def stats(self, library: str, request: gr.Request) -> str:
        """Library statistics as Markdown."""
        try:
            s = self.page.service.stats(self.page.who(request), library)
        except (AccessDenied, LibraryError) as exc:
            return error(str(exc))
        read_only = " · **只读**" if s.read_only else ""
        pending = f" · **{s.pending_vectors}** 个段落正在生成向量，暂只按关键词检索" if s.pending_vectors else ""
        return (f"文档库 **{html.escape(library)}** · 文档 **{s.documents}** 篇 · 段落 **{s.chunks}** 个 · "
                f"向量模型 `{s.embedder}` · 索引 {s.size_mb:.1f} MB · 回答方式 `{s.generator}`{read_only}{pending}")

    def doc_choices(self, library: str, request: gr.Request) -> gr.Dropdown:
        """The documents to pick for a summary."""
        return gr.Dropdown(choices=[row[0] for row in self.documents(library, request)], value=[])

    def library_view(self, library: str, request: gr.Request) -> tuple[list[list[Any]], str]:
        """The library rows and statistics."""
        return self.documents(library, request), self.stats(library, request)

    def ingest(self, files: list[Any] | None, replace: bool, library: str, request: gr.Request,
               progress: gr.Progress = gr.Progress()) -> tuple[str, list[list[Any]], str]:
        """Add uploaded files to the library: (report Markdown, library rows, statistics)."""
        paths = [getattr(f, "name", f) for f in (files or [])]
        if not paths:
            return error("请先选择文件"), *self.library_view(library, request)
        uploaded = self.page.gate()
        try:
            uploads, refused = uploaded.accept(paths, self.page.max_bytes)
            report = self.page.service.ingest_uploads(
                self.page.who(request), uploads, replace=bool(replace), library=library,
                progress=lambda frac, msg: progress(frac, desc=f"正在处理 {msg}"))
        except Exception as exc:
            return self.page.explain(exc, "导入"), *self.library_view(library, request)
        finally:
            uploaded.discard(paths)
        lines = [f"新增 {len(report.added)} 篇，更新 {len(report.updated)} 篇，未变 {report.unchanged} 篇，"
                 f"跳过 {len(report.skipped) + len(refused)} 个；写入 {report.chunks_written} 个段落。"]
        lines += [f"- 新增：{d}" for d in report.added + report.updated]
        lines += [f"- 拒收 {r.name}：{r.reason}" for r in refused]
        lines += [f"- 跳过 {describe_source(s['source'])}：{s['reason']}" for s in report.skipped]
        if report.conflicts:
            lines.append("\n同名文档已存在且内容不同，未覆盖；如确需覆盖，请勾选“替换同名文档”后重新导入。")
        return "\n".join(lines), *self.library_view(library, request)

    def show_document(self, doc_id: str, library: str, request: gr.Request) -> str:
        """A document's cleaned text (what answers cite)."""
        try:
            doc = self.page.service.document(self.page.who(request), (doc_id or "").strip(), library)
        except Exception as exc:
            return self.page.explain(exc, "读取文档")
        if doc is None:
            return error(f"没有文档 {doc_id!r}")
        # Everything shown is the document's text, never markup: a document holding tags shows them as text.
        origin = html.escape(describe_source(doc["source"]))
        head = (f"### {html.escape(doc['title'] or doc['doc_id'])}\n\n<small>{html.escape(doc['doc_id'])} · "
                f"来源 {origin}</small>\n\n")
        return head + markdown_text(doc["text"]).replace("\n", "\n\n")

    def remove_document(self, doc_id: str, library: str, request: gr.Request) -> tuple[str, list[list[Any]], str]:
        """Remove a document: (message, library rows, statistics)."""
        doc_id = (doc_id or "").strip()
        try:
            removed = doc_id and self.page.service.remove(self.page.who(request), doc_id, library)
            message = f"已删除 {doc_id}" if removed else error(f"没有文档 {doc_id!r}")
        except Exception as exc:
            message = self.page.explain(exc, "删除文档")
        return message, *self.library_view(library, request)

    def chunk_rows(self, doc_id: str, library: str, request: gr.Request) -> tuple[list[list[Any]], str]:
        """A document's chunks as indexed: (rows: id, start, end, excluded, text; message)."""
        try:
            chunks = self.page.service.chunks(self.page.who(request), (doc_id or "").strip(), library)
        except Exception as exc:
            return [], self.page.explain(exc, "读取段落")
        if chunks is None:
            return [], error(f"没有文档 {doc_id!r}")
        excluded = sum(c.excluded for c in chunks)
        return ([[c.chunk_id, c.start, c.end, "已排除" if c.excluded else "", c.text] for c in chunks],
                f"{len(chunks)} 个段落，其中 {excluded} 个已排除在检索之外。")

    def set_excluded(self, excluded: bool) -> Callable[..., tuple[list[list[Any]], str]]:
        """The handler of the exclude (``True``) or include button."""
        def change(doc_id: str, ids: str, library: str, request: gr.Request) -> tuple[list[list[Any]], str]:
            """Exclude chunks from search (or include them again), then show the document's chunks."""
            try:
                chosen = [int(x) for x in re.split(r"[,，\s]+", ids or "") if x]
                changed = self.page.service.set_excluded(self.page.who(request), chosen, excluded, library)
            except ValueError:
                return self.chunk_rows(doc_id, library, request)[0], error("段落编号应为数字，用逗号分隔")
            except Exception as exc:
                return self.chunk_rows(doc_id, library, request)[0], self.page.explain(exc, "修改段落")
            rows, message = self.chunk_rows(doc_id, library, request)
            return rows, f"{'排除' if excluded else '恢复'}了 {changed} 个段落。{message}"
        return change

    def rechunk(self, doc_id: str, size: float | None, overlap: float | None, library: str,
                request: gr.Request) -> tuple[list[list[Any]], str]:
        """Cut a document again with other chunk settings, then show its chunks."""
        try:
            report = self.page.service.rechunk(self.page.who(request), (doc_id or "").strip(), int(size or 0),
                                               int(overlap or 0), library)
        except Exception as exc:
            return self.chunk_rows(doc_id, library, request)[0], self.page.explain(exc, "重新切分")
        rows, message = self.chunk_rows(doc_id, library, request)
        return rows, f"已重新切分：{report.chunks_before} → {report.chunks_after} 个段落。{message}"

    def build(self, library: gr.Dropdown, chosen: gr.Dropdown) -> LibraryView:
        """Lay the tab out (inside ``gr.Tab``); ``chosen`` (the summary tab's document picker) follows changes."""
        stats_md = gr.Markdown(elem_id="stats")
        with gr.Row():
            uploads = gr.File(label="上传文件（txt、md、html、docx、pdf、jsonl）", file_count="multiple",
                              file_types=UPLOAD_TYPES, elem_id="upload")
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
                size = gr.Number(value=self.page.service.settings.chunk_size, label="段落长度（字）", precision=0)
                overlap = gr.Number(value=self.page.service.settings.chunk_overlap, label="重叠（字）", precision=0)
                rechunk_button = gr.Button("按此设置重新切分", elem_id="rechunk")
        ingest_button.click(self.ingest, [uploads, replace, library], [ingest_md, table, stats_md],
                            api_name="ingest").then(self.doc_choices, library, chosen, api_visibility="private")
        show_button.click(self.show_document, [doc_id, library], doc_md, api_name="show_document")
        remove_button.click(self.remove_document, [doc_id, library], [remove_md, table, stats_md],
                            api_name="remove_document").then(self.doc_choices, library, chosen,
                                                             api_visibility="private")
        chunks_button.click(self.chunk_rows, [doc_id, library], [chunk_table, chunk_md], api_name="chunks")
        exclude_button.click(self.set_excluded(True), [doc_id, chunk_ids, library], [chunk_table, chunk_md],
                             api_name="exclude_chunks")
        include_button.click(self.set_excluded(False), [doc_id, chunk_ids, library], [chunk_table, chunk_md],
                             api_name="include_chunks")
        rechunk_button.click(self.rechunk, [doc_id, size, overlap, library], [chunk_table, chunk_md],
                             api_name="rechunk")
        refresh = gr.Button("刷新", size="sm")
        refresh.click(self.library_view, library, [table, stats_md], api_name="documents")
        return LibraryView(table, stats_md)

"""One long-lived object that the web demo (and any other front end) calls: index, models and answerer
loaded once per process, with a lock so that several users at once never interleave their index work.

Every public method takes the :class:`~rag.access.User` asking and checks their right to it first
(:func:`rag.access.require`), so no front end can forget to.
"""

from __future__ import annotations

import hashlib
import html
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .access import Permission, User, require
from .answer import Answer, Answerer
from .config import Settings
from .embeddings import EmbeddingCache, embedder_for_index
from .generate import load_generator
from .ingest import IngestReport, ingest
from .loaders import NamedFile
from .rerank import load_reranker
from .retrieve import Retriever
from .store import IndexStore, StoreError
from .summarize import Summarizer, Summary, summarize_batch
from .uploads import Upload

log = logging.getLogger(__name__)
UPLOAD_SCHEME = "upload://"


@dataclass
class ServiceStats:
    """What the library tab shows about the index."""

    documents: int
    chunks: int
    embedder: str | None
    size_mb: float
    generator: str
    read_only: bool = False


def upload_source(user: User, upload: Upload) -> str:
    """The origin recorded for an uploaded file: who uploaded it and what it held, so that uploading another
    file under an existing name is a conflict (refused unless replaced), and the same file again is unchanged."""
    with open(upload.path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    return f"{UPLOAD_SCHEME}{user.name}/{digest[:16]}/{upload.name}"


def describe_source(source: str) -> str:
    """A document's origin as the page shows it: an upload's file name and uploader; a server file's name only
    (where files lie on the server is not the web's business)."""
    if source.startswith(UPLOAD_SCHEME):
        user, _, rest = source[len(UPLOAD_SCHEME):].partition("/")
        name = rest.split("/", 1)[-1]
        return f"{name}（{user} 上传）"
    return Path(source).name or source


class RagService:
    """Index + embedder + answerer, opened once; every public method is safe to call from many threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self.store = IndexStore.open(settings.index_dir, create=True, settings=settings)
        try:
            self.store.ensure_intact()  # a server that starts should not fail its users' first questions
        except StoreError:
            self.store.close()
            raise
        self.embedder = embedder_for_index(self.store.embedder, settings)
        self.cache = EmbeddingCache(settings.cache_dir, self.embedder.name, self.embedder.dim)
        self.generator = load_generator(settings)
        self.retriever = Retriever(self.store, self.embedder, settings, load_reranker(settings))
        self.answerer = Answerer(self.retriever, settings, self.generator)
        self.summarizer = Summarizer(settings, self.generator if settings.summarize_with_model else None)

    def close(self) -> None:
        """Save and close the index."""
        with self._lock:
            self.store.close()
            self.cache.close()

    # -- questions --------------------------------------------------------------------------------------------
    def ask(self, user: User | None, question: str) -> Answer:
        """Answer one question (raises ``QueryError`` for an empty one)."""
        require(user, Permission.READ)
        with self._lock:  # the index is read under the lock; the model, which has its own queue, outside it
            prepared = self.answerer.prepare_many([question])[0]
        return self.answerer.finish(prepared)

    def ask_stream(self, user: User | None, question: str) -> Iterator[str | Answer]:
        """Answer one question as the model writes it: text pieces, then the checked :class:`Answer` (see
        :meth:`rag.answer.Answerer.finish_stream`)."""
        require(user, Permission.READ)
        with self._lock:
            prepared = self.answerer.prepare_many([question])[0]
        yield from self.answerer.finish_stream(prepared)

    def evaluate_qa(self, user: User | None, items: Sequence[Any]) -> dict[str, Any]:
        """A QA evaluation run (see :func:`rag.evaluate.evaluate_qa`) over this index."""
        from .evaluate import evaluate_qa

        require(user, Permission.READ)
        with self._lock:
            return evaluate_qa(items, self.answerer, progress=False)

    # -- summaries --------------------------------------------------------------------------------------------
    def summarize(self, user: User | None, doc_ids: Sequence[str], length: str = "medium") -> list[Summary]:
        """Summaries of documents of the index (unknown ids are skipped)."""
        require(user, Permission.READ)
        with self._lock:
            docs = [d for d in (self.store.document(i) for i in doc_ids) if d is not None]
            return [self.summarizer.summarize(d["text"], d["doc_id"], d["title"], length) for d in docs]

    def summarize_topic(self, user: User | None, query: str, bullets: int = 5) -> Summary:
        """Bullets across the documents that search finds for ``query``."""
        require(user, Permission.READ)
        with self._lock:
            return self.summarizer.summarize_topic(query, self.retriever, k=8, bullets=bullets)

    def summarize_library(self, user: User | None, out: Path, length: str = "medium") -> dict[str, int]:
        """Every document's summary into ``out`` (JSONL) and ``out`` with ``.md``."""
        require(user, Permission.READ)
        with self._lock:
            items = list(self.store.iter_texts())
            return summarize_batch(iter(items), self.summarizer, out, length, total=len(items), progress=False)

    # -- library ----------------------------------------------------------------------------------------------
    def ingest_uploads(self, user: User | None, uploads: Sequence[Upload], *, replace: bool = False,
                       progress: Callable[[float, str], None] | None = None) -> IngestReport:
        """Ingest checked uploads (:func:`rag.uploads.accept_uploads`) under the names their users gave them.

        An upload whose name an existing document of other content holds is refused unless ``replace``.
        """
        user = require(user, Permission.EDIT)
        named = [NamedFile(u.path, u.name, upload_source(user, u)) for u in uploads]
        report = self._ingest(named, replace, progress)
        log.info("%s ingested %d uploads: added %s, updated %s, skipped %d", user.name, len(uploads),
                 report.added, report.updated, len(report.skipped))
        return report

    def ingest_paths(self, user: User | None, paths: Sequence[str | Path],
                     progress: Callable[[float, str], None] | None = None) -> IngestReport:
        """Ingest files or folders of this machine (the sample corpus, a folder an administrator names)."""
        require(user, Permission.ADMIN)
        return self._ingest(list(paths), False, progress)

    def _ingest(self, items: Sequence[str | Path | NamedFile], replace: bool,
                progress: Callable[[float, str], None] | None) -> IngestReport:
        seen: list[str] = []

        def tell(source: str) -> None:
            seen.append(source)
            if progress:
                progress(min(len(seen) / max(len(items), 1), 0.99), Path(source).name)

        with self._lock:
            report = ingest(list(items), self.store, self.embedder, self.settings, cache=self.cache, replace=replace,
                            progress=False, on_item=tell)
        if progress:
            progress(1.0, "完成")
        return report

    def documents(self, user: User | None) -> list[dict[str, Any]]:
        """Every document with its chunk count."""
        require(user, Permission.READ)
        with self._lock:
            return self.store.list_documents()

    def document(self, user: User | None, doc_id: str) -> dict[str, Any] | None:
        """One document's cleaned text and fields."""
        require(user, Permission.READ)
        with self._lock:
            return self.store.document(doc_id)

    def remove(self, user: User | None, doc_id: str) -> bool:
        """Remove a document; ``False`` when it was not there."""
        user = require(user, Permission.EDIT)
        with self._lock, self.store.write_lock():
            removed = self.store.remove_documents([doc_id]) > 0
            self.store.flush()
        if removed:
            log.info("%s removed %s", user.name, doc_id)
        return removed

    def stats(self, user: User | None) -> ServiceStats:
        """Counts for the library tab."""
        require(user, Permission.READ)
        with self._lock:
            data = self.store.stats()
        return ServiceStats(data["documents"], data["chunks"], data["embedder"], data["size_bytes"] / 1e6,
                            self.generator.name if self.generator else "extractive", data["read_only"])


def render_answer(answer: Answer) -> str:
    """The answer as Markdown: text with citation markers, evidence, generator."""
    if answer.abstained:
        body = f"### {html.escape(answer.answer)}\n\n资料中没有足以支持回答的内容；下面是最接近的段落。"
    else:
        markers = "".join(f"[{m}]" for m in answer.citations)
        body = f"### {html.escape(answer.answer)} {markers}"
        if answer.evidence:
            body += f"\n\n**依据**：{html.escape(answer.evidence)}"
    if answer.generator.startswith("extractive (fallback"):
        reason = answer.generator.removeprefix("extractive (fallback: ").removesuffix(")")
        body += f"\n\n> 模型的回答未通过资料核对（{html.escape(reason)}），以上是从资料中抽取的答案。"
    if answer.note:
        body += f"\n\n> 注意：{html.escape(answer.note)}"
    if answer.dropped:
        body += "\n\n> 已删除无依据的内容：" + html.escape(" / ".join(answer.dropped))
    return body + f"\n\n<small>生成方式：{html.escape(answer.generator)}</small>"


def render_draft(text: str) -> str:
    """A model's answer while it is being written: shown as unchecked until the checked answer replaces it."""
    return f"### {html.escape(text)} ▌\n\n<small>模型正在作答，核对资料后显示最终答案……</small>"


def render_summary(summary: Summary) -> str:
    """A summary as Markdown with where each part came from."""
    head = f"### {html.escape(summary.title or summary.doc_id or '')}\n\n"
    if summary.bullets:
        body = "\n".join(f"- {html.escape(b['text'])} <small>（{', '.join(s['doc_id'] for s in b['sources'])}）</small>"
                         for b in summary.bullets)
    else:
        body = html.escape(summary.summary)
        body += "\n\n<small>出处：" + "；".join(f"{s.doc_id} 字符 {s.start}–{s.end}" for s in summary.sources) + "</small>"
    if summary.dropped:
        body += "\n\n> 已删除无依据的句子：" + html.escape(" / ".join(summary.dropped))
    return head + body + f"\n\n<small>生成方式：{html.escape(summary.generator)}</small>"


def render_sources(answer: Answer) -> str:
    """Source passages as HTML, original script, the supporting span highlighted."""
    parts = []
    for source in answer.sources:
        text = source.text
        if source.support:
            a, b = source.support
            shown = (html.escape(text[:a]) + f"<mark>{html.escape(text[a:b])}</mark>" + html.escape(text[b:]))
        else:
            shown = html.escape(text)
        cited = " cited" if source.marker in answer.citations else ""
        warning = f'<div class="warn">⚠ {html.escape(source.warning)}</div>' if source.warning else ""
        parts.append(
            f'<div class="source{cited}"><div class="head">[{source.marker}] <b>{html.escape(source.title or source.doc_id)}'
            f"</b> · {html.escape(source.doc_id)} · 相关度 {source.score:.4f} · 字符 {source.start}–{source.end}</div>"
            f'<div class="body">{shown.replace(chr(10), "<br>")}</div>{warning}</div>')
    return "\n".join(parts) or "<p>（没有检索到段落）</p>"

"""One long-lived object that every front end calls (the web page, its HTTP API, the ``rag`` command line):
libraries, models and answerers loaded once per process, with a lock per library so that several users at once
never interleave their index work.

Every public method takes the :class:`~rag.app.access.User` asking (and the library) and checks their right to it
first (:func:`rag.app.access.require`), so no front end can forget to.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..answering.answer import Answer, Prepared
from ..answering.conversation import (
    ConversationInfo,
    ConversationNotFound,
    ConversationStore,
    Turn,
    rewrite_followup,
)
from ..config import Settings
from ..evaluation.feedback import Feedback, FeedbackStore, export_gold
from ..index.embeddings import Embedder, EmbeddingCache
from ..index.errors import StoreError
from ..index.records import ChunkView
from ..ingestion.ingest import FileReader, IngestReport, RechunkReport
from ..ingestion.reading import NamedFile
from ..pipeline import LOAD, Models, Pipeline, Removal
from ..retrieval.retrieve import SearchResult
from ..summaries.summarize import Summary
from .access import LOCAL_USER, AccessError, Permission, User, UserStore, require
from .audit import AuditEvent, AuditLog
from .libraries import DEFAULT_LIBRARY, Libraries, Library, LibraryError
from .uploads import Upload

log = logging.getLogger(__name__)
UPLOAD_SCHEME = "upload://"


@dataclass
class ChatTurn:
    """A conversation's newest turn: the conversation, the stored turn and the full answer."""

    conversation_id: str
    turn: Turn
    answer: Answer


@dataclass
class ServiceStats:
    """What the library tab shows about the index."""

    documents: int
    chunks: int
    embedder: str | None
    size_mb: float
    generator: str
    read_only: bool = False
    pending_vectors: int = 0  # chunks found by keywords only until their vectors are computed


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
    """Every library of an installation behind one object that checks rights; safe to call from many threads.

    Each library's :class:`~rag.pipeline.Pipeline` is opened at its first use and kept; the chat model and the
    embedders are loaded once and shared by all libraries. Work on one library's index holds that library's lock
    (the model, which has its own queue, runs outside it), so users of different libraries never wait on each
    other's index work.
    """

    def __init__(self, settings: Settings, *, generator: Any = LOAD, reader: Any = LOAD,
                 embedder: Embedder | None = None, create: bool = True) -> None:
        """``generator`` and ``reader``: see :meth:`Pipeline.open` (loaded once here, shared by every library);
        ``embedder``: one embedder for every library instead of each index's own (``rag ingest``'s);
        ``create``: make the default library when it does not exist (a server's first start, ``rag ingest``),
        rather than answer that there is none (the other commands)."""
        self.settings = settings
        self.libraries = Libraries(settings)
        self.users = UserStore(settings.users_file)
        self.audit = AuditLog(settings.state_root / "audit.jsonl", default_index=settings.index_dir)
        if create:  # (made, or opened as it is: another process may be making it this moment)
            self.libraries.create_default()
        self.models = Models.load(settings, generator=generator, reader=reader, embedder=embedder)
        self._pipelines: dict[str, tuple[Any, Pipeline]] = {}  # by name, with the identity it was opened as
        self._locks: dict[str, threading.RLock] = {}
        self._opening = threading.Lock()
        self._ingesting = threading.Lock()  # one ingest at a time: they share the embedder and its cache
        self._caches: dict[tuple[str, int], EmbeddingCache] = {}  # one per embedder, shared by its libraries
        self._feedback: FeedbackStore | None = None
        self._conversations: ConversationStore | None = None

    @property
    def generator(self) -> Any:
        """The chat model every library answers with (``None``: extractive answers)."""
        return self.models.generator

    def pipeline(self, library: str) -> Pipeline:
        """Library ``library``'s pipeline, opened (and checked) at first use; no rights are checked here."""
        return self._pipeline(self.libraries.get(library))

    def _pipeline(self, found: Library) -> Pipeline:
        """The open pipeline of the library ``found`` resolved to. One opened for another library under the same
        name (renamed or deleted and made again by another process meanwhile) is closed, never used."""
        with self._opening:
            cached = self._pipelines.get(found.name)
            if cached is not None and cached[0] == found.identity:
                return cached[1]
            lock = self._locks.setdefault(found.name, threading.RLock())
        if cached is not None:
            log.info("library %s changed on disk since it was opened: opening it again", found.name)
            with lock:
                cached[1].close()
        pipeline = Pipeline.open(self.libraries.settings_for(found.name), index_dir=found.path,
                                 generator=self.models.generator, reader=self.models.reader,
                                 embedder=self.models.embedder, embedders=self.models.embedders)
        try:
            pipeline.store.ensure_intact()  # a damaged library should fail here, not on a user's question
        except StoreError:
            pipeline.close()
            raise
        with self._opening:
            if self._pipelines.get(found.name, (None,))[0] == found.identity:  # another thread was quicker
                pipeline.close()
                return self._pipelines[found.name][1]
            self._pipelines[found.name] = (found.identity, pipeline)
            return pipeline

    def _current(self, user: User | None) -> User | None:
        """``user`` as the users file has them now (roles change while a server runs); a user the file does not
        hold (the local user, a program's own) as given."""
        if user is None or user is LOCAL_USER:
            return user
        try:
            return self.users.get(user.name) or user if self.users.exists() else user
        except AccessError:
            return user

    def _library(self, user: User | None, permission: Permission, library: str) -> tuple[User, Pipeline]:
        """The user (when allowed) and the library's pipeline: the rights check every method starts with.

        The library and the rights are resolved together: the name is resolved to a library first, the user's
        roles are read after that, and the name must still resolve to the same library afterwards. A rename
        gives the new name its grants before the folder moves and drops the old name's after
        (:meth:`rename_library`), so whichever name a request uses, the roles it is checked against are that
        library's; a library renamed or deleted by another process is never served under its old name.
        """
        found = self.libraries.get(library)
        user = require(self._current(user), permission, library)
        try:
            pipeline = self._pipeline(found)
        except StoreError as exc:  # which library is damaged, for whoever reads the message
            raise StoreError(f"文档库 {library}：{exc}") from None
        if self.libraries.identity(library) != found.identity:
            raise LibraryError(f"文档库 {library} 刚被改名或删除，请刷新后重试")
        return user, pipeline

    def authorize(self, user: User | None, permission: Permission, library: str = DEFAULT_LIBRARY) -> User:
        """``user`` when they may do ``permission`` in ``library``, which exists; raises :class:`AccessDenied` or
        :class:`LibraryError` otherwise (a cheap check before reading a request's uploads)."""
        return self._library(user, permission, library)[0]

    def close(self) -> None:
        """Save and close every open library, and the conversations."""
        with self._opening:
            for library, (_, pipeline) in self._pipelines.items():
                with self._locks[library]:
                    pipeline.close()
            self._pipelines.clear()
            for cache in self._caches.values():
                cache.close()
            self._caches.clear()
            if self._conversations is not None:
                self._conversations.close()
                self._conversations = None

    # Opened at first use: a command that only answers writes no state files (and works where it cannot).
    @property
    def feedback(self) -> FeedbackStore:
        """The ratings users gave answers (``state_dir/feedback.sqlite``)."""
        with self._opening:
            if self._feedback is None:
                self._feedback = FeedbackStore(self.settings.state_root / "feedback.sqlite")
            return self._feedback

    @property
    def conversations_path(self) -> Path:
        """Where every user's conversations are kept."""
        return self.settings.state_root / "conversations.sqlite"

    @property
    def conversations(self) -> ConversationStore:
        """Every user's conversations (``state_dir/conversations.sqlite``)."""
        with self._opening:
            if self._conversations is None:
                self._conversations = ConversationStore(self.conversations_path)
            return self._conversations

    def __enter__(self) -> RagService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- libraries --------------------------------------------------------------------------------------------
    def library_names(self, user: User | None) -> list[str]:
        """The libraries ``user`` may read."""
        if user is None:
            return []
        return [name for name in self.libraries.names() if user.can(Permission.READ, name)]

    def create_library(self, user: User | None, name: str) -> str:
        """A new, empty library (administrators only)."""
        user = require(self._current(user), Permission.ADMIN)
        self.libraries.create(name)
        self.audit.record(AuditEvent(user.name, "library.create", name))
        return name

    def rename_library(self, user: User | None, old: str, new: str) -> str:
        """Rename a library; users' roles in it and their conversations over it follow it.

        The new name gets the old one's grants before the folder moves, and the old name loses them only after:
        at every moment, each name the library can be found under carries its grants (see :meth:`_library`).
        """
        user = require(self._current(user), Permission.ADMIN)
        self.libraries.check_rename(old, new)
        self.users.copy_grants(old, new)
        self._close_library(old)
        try:
            self.libraries.rename(old, new)
        except Exception:
            self.users.drop_grants(new)
            raise
        self.users.drop_grants(old)
        if self.conversations_path.exists():
            self.conversations.rename_library(old, new)
        self.audit.record(AuditEvent(user.name, "library.rename", new, {"from": old}))
        return new

    def delete_library(self, user: User | None, name: str) -> str:
        """Move a library to the trash folder (administrators only); where it went."""
        user = require(self._current(user), Permission.ADMIN)
        self._close_library(name)
        moved = self.libraries.delete(name)
        self.audit.record(AuditEvent(user.name, "library.delete", name, {"moved_to": moved}))
        return moved

    def _close_library(self, name: str) -> None:
        """Close a library's pipeline (if open) once no one is using its index, before its folder moves."""
        with self._opening:
            cached, lock = self._pipelines.pop(name, None), self._locks.get(name)
        if cached is not None and lock is not None:
            with lock:
                cached[1].close()

    # -- questions --------------------------------------------------------------------------------------------
    def _prepare(self, user: User | None, question: str, library: str | Sequence[str]) -> tuple[Pipeline, Prepared]:
        names = [library] if isinstance(library, str) else list(dict.fromkeys(library))
        if not names:
            raise LibraryError("请至少选择一个文档库")
        pipelines = [self._library(user, Permission.READ, name)[1] for name in names]
        if len(names) == 1:
            with self._locks[names[0]]:  # the index is read under the lock; the model runs outside it
                return pipelines[0], pipelines[0].answerer.prepare_many([question])[0]
        found = self._search_across(question, dict(zip(names, pipelines)))
        with self._locks[names[0]]:  # its index weighs the question's words
            return pipelines[0], pipelines[0].answerer.prepare_result(question, found)

    def _search_across(self, query: str, pipelines: dict[str, Pipeline], k: int | None = None) -> SearchResult:
        """The best hits of several libraries (by name): each library's own, labelled with it, merged by fused
        score."""
        k = k or self.settings.answer_sources
        results = []
        for name, pipeline in pipelines.items():
            with self._locks[name]:
                result = pipeline.retriever.search(query, k)
            for hit in result.hits:
                hit.library = name
            results.append(result)
        hits = sorted((h for r in results for h in r.hits), key=lambda h: -h.score)[:k]
        return SearchResult(results[0].query, hits, results[0].retriever, results[0].note)

    def ask(self, user: User | None, question: str, library: str | Sequence[str] = DEFAULT_LIBRARY) -> Answer:
        """Answer one question from one library or several (raises ``QueryError`` for an empty one)."""
        pipeline, prepared = self._prepare(user, question, library)
        return pipeline.answerer.finish(prepared)

    def ask_stream(self, user: User | None, question: str,
                   library: str | Sequence[str] = DEFAULT_LIBRARY) -> Iterator[str | Answer]:
        """Answer one question as the model writes it: text pieces, then the checked :class:`Answer` (see
        :meth:`rag.answering.answer.Answerer.finish_stream`)."""
        pipeline, prepared = self._prepare(user, question, library)
        yield from pipeline.answerer.finish_stream(prepared)

    # -- conversations ----------------------------------------------------------------------------------------
    def chat_stream(self, user: User | None, question: str, conversation_id: str | None = None,
                    library: str = DEFAULT_LIBRARY) -> Iterator[str | ChatTurn]:
        """One turn of a user's conversation: the follow-up rewritten to stand alone with the turns before it (by
        the chat model when one is loaded, else by rules), answered from ``library`` as the model writes it
        (text pieces), then the :class:`ChatTurn`, stored so that the conversation survives a restart. A new
        conversation is started when ``conversation_id`` is ``None``."""
        user = self.authorize(user, Permission.READ, library)
        if conversation_id is None:
            conversation_id = self.conversations.create(user.name, library, title=question.strip()[:40])
        elif self.conversations.library_of(user.name, conversation_id) != library:  # raises when it is not theirs
            raise ConversationNotFound(f"对话 {conversation_id} 不属于文档库 {library}")
        history = self.conversations.turns(user.name, conversation_id)
        standalone = self.standalone_question(user, question, history, library)
        answer = None
        for item in self.ask_stream(user, standalone, library):
            if isinstance(item, str):
                yield item
            else:
                answer = item
        assert answer is not None
        turn = Turn.from_answer(question, answer)
        self.conversations.append(user.name, conversation_id, turn)
        yield ChatTurn(conversation_id, turn, answer)

    def standalone_question(self, user: User | None, question: str, history: Sequence[Turn],
                            library: str | Sequence[str] = DEFAULT_LIBRARY) -> str:
        """``question`` rewritten to stand alone with the turns before it (``history``, oldest first): by the chat
        model when one is loaded and its rewrite passes the checks, else by rules (see
        :func:`rag.answering.conversation.rewrite_followup`). Rights are checked first: the model's time is
        spent only on questions the user may ask."""
        for name in [library] if isinstance(library, str) else library:
            self.authorize(user, Permission.READ, name)
        return rewrite_followup(question, history, self.generator) if history else question

    def chat(self, user: User | None, question: str, conversation_id: str | None = None,
             library: str = DEFAULT_LIBRARY) -> ChatTurn:
        """:meth:`chat_stream` without the pieces."""
        *_, last = self.chat_stream(user, question, conversation_id, library)
        assert isinstance(last, ChatTurn)
        return last

    def conversation_list(self, user: User | None, library: str | None = None) -> list[ConversationInfo]:
        """The user's own conversations (in ``library``), newest first."""
        user = require(self._current(user), Permission.READ, library)
        return self.conversations.list(user.name, library)

    def conversation(self, user: User | None, conversation_id: str, library: str = DEFAULT_LIBRARY) -> list[Turn]:
        """The turns of one of the user's own conversations in ``library``: the rights checked are those on the
        library the conversation belongs to, which must be ``library``."""
        user = require(self._current(user), Permission.READ, library)
        if self.conversations.library_of(user.name, conversation_id) != library:  # raises when it is not theirs
            raise ConversationNotFound(f"对话 {conversation_id} 不属于文档库 {library}")
        return self.conversations.turns(user.name, conversation_id)

    def ask_many(self, user: User | None, questions: Sequence[str], library: str = DEFAULT_LIBRARY) -> list[Answer]:
        """Answer questions in order from one library (retrieval batched; for ``rag ask --batch``)."""
        _, pipeline = self._library(user, Permission.READ, library)
        with self._locks[library]:
            prepared = pipeline.answerer.prepare_many(questions)
        return [pipeline.answerer.finish(p) for p in prepared]

    def search(self, user: User | None, query: str, library: str | Sequence[str] = DEFAULT_LIBRARY,
               k: int | None = None, retriever: str | None = None) -> SearchResult:
        """The passages search finds for ``query`` in one library or several."""
        names = [library] if isinstance(library, str) else list(dict.fromkeys(library))
        pipelines = {name: self._library(user, Permission.READ, name)[1] for name in names}
        if len(names) == 1:
            with self._locks[names[0]]:
                return pipelines[names[0]].search(query, k or self.settings.top_k, retriever)
        return self._search_across(query, pipelines, k or self.settings.top_k)

    def evaluate_qa(self, user: User | None, items: Sequence[Any], library: str = DEFAULT_LIBRARY) -> dict[str, Any]:
        """A QA evaluation run (see :meth:`Pipeline.evaluate_qa`) over a library."""
        _, pipeline = self._library(user, Permission.READ, library)
        with self._locks[library]:
            return pipeline.evaluate_qa(items)

    # -- summaries --------------------------------------------------------------------------------------------
    def summarize(self, user: User | None, doc_ids: Sequence[str], length: str = "medium",
                  library: str = DEFAULT_LIBRARY) -> list[Summary]:
        """Summaries of documents of a library (unknown ids are skipped)."""
        _, pipeline = self._library(user, Permission.READ, library)
        with self._locks[library]:
            return [pipeline.summarize(doc_id, length) for doc_id in doc_ids if pipeline.document(doc_id) is not None]

    def summarize_topic(self, user: User | None, query: str, bullets: int = 5,
                        library: str = DEFAULT_LIBRARY) -> Summary:
        """Bullets across the documents that search finds for ``query``."""
        _, pipeline = self._library(user, Permission.READ, library)
        with self._locks[library]:
            return pipeline.summarize_topic(query, k=8, bullets=bullets)

    def summarize_library(self, user: User | None, out: Path, length: str = "medium",
                          library: str = DEFAULT_LIBRARY) -> dict[str, int]:
        """Every document's summary into ``out`` (JSONL) and ``out`` with ``.md``."""
        _, pipeline = self._library(user, Permission.READ, library)
        with self._locks[library]:
            return pipeline.summarize_all(out, length)

    # -- documents --------------------------------------------------------------------------------------------
    def ingest_uploads(self, user: User | None, uploads: Sequence[Upload], *, replace: bool = False,
                       progress: Callable[[float, str], None] | None = None,
                       library: str = DEFAULT_LIBRARY) -> IngestReport:
        """Ingest checked uploads (:class:`rag.app.uploads.UploadGate` on the page, the API's own saved files) under
        the names their users gave them.

        An upload whose name an existing document of other content holds is refused unless ``replace``.
        """
        user, pipeline = self._library(user, Permission.EDIT, library)
        named = [NamedFile(u.path, u.name, upload_source(user, u)) for u in uploads]
        report = self._ingest(pipeline, library, named, replace, progress)
        self.audit.record(AuditEvent(user.name, "ingest", library, {
            "files": [u.name for u in uploads], "added": report.added, "updated": report.updated,
            "skipped": [item["source"] for item in report.skipped], "replace": replace}))
        return report

    def ingest_paths(self, user: User | None, paths: Sequence[str | Path],
                     progress: Callable[[float, str], None] | None = None, library: str = DEFAULT_LIBRARY, *,
                     sync: bool = False, replace: bool = False, embed: bool = True, show_progress: bool = False,
                     read_files: FileReader | None = None) -> IngestReport:
        """Ingest files or folders of this machine (administrators: the sample corpus, ``rag ingest``); see
        :meth:`Pipeline.ingest` for ``sync``, ``replace``, ``embed`` and ``read_files``; ``show_progress``: progress
        bars on the terminal."""
        user = require(self._current(user), Permission.ADMIN)
        _, pipeline = self._library(user, Permission.EDIT, library)
        report = self._ingest(pipeline, library, list(paths), replace, progress, sync=sync, embed=embed,
                              show_progress=show_progress, read_files=read_files)
        if report.added or report.updated or report.removed:
            self.audit.record(AuditEvent(user.name, "ingest", library, {
                "paths": [str(p) for p in paths], "added": report.added, "updated": report.updated,
                "removed": report.removed, "replace": replace}))
        return report

    def _ingest(self, pipeline: Pipeline, library: str, items: Sequence[str | Path | NamedFile], replace: bool,
                progress: Callable[[float, str], None] | None, *, sync: bool = False, embed: bool = True,
                show_progress: bool = False, read_files: FileReader | None = None) -> IngestReport:
        seen: list[str] = []

        def tell(source: str) -> None:
            seen.append(source)
            if progress:
                progress(min(len(seen) / max(len(items), 1), 0.99), Path(source).name)

        # Uploads (at most max_upload_mb each) are parsed before any lock is taken, so one slow file never holds up
        # other libraries or their questions; a folder named on the server is read as it is written instead, not
        # held in memory whole.
        if all(isinstance(item, NamedFile) for item in items) and read_files is None and not sync:
            documents = list(pipeline.read(items))
            with self._ingesting, self._locks[library]:
                report = pipeline.ingest_read(documents, replace=replace, on_item=tell, cache=self._cache(pipeline))
        else:
            with self._ingesting, self._locks[library]:
                report = pipeline.ingest(items, sync=sync, replace=replace, embed=embed, progress=show_progress,
                                         on_item=tell, read_files=read_files, cache=self._cache(pipeline))
        if progress:
            progress(1.0, "完成")
        return report

    def _cache(self, pipeline: Pipeline) -> EmbeddingCache:
        """The embedding cache of the pipeline's embedder (one per embedder, shared by its libraries)."""
        key = (pipeline.embedder.name, pipeline.embedder.dim)
        with self._opening:
            if key not in self._caches:
                self._caches[key] = EmbeddingCache(self.settings.cache_dir, *key)
            return self._caches[key]

    def documents(self, user: User | None, library: str = DEFAULT_LIBRARY) -> list[dict[str, Any]]:
        """Every document of a library with its chunk count."""
        _, pipeline = self._library(user, Permission.READ, library)
        with self._locks[library]:
            return pipeline.documents()

    def document(self, user: User | None, doc_id: str, library: str = DEFAULT_LIBRARY) -> dict[str, Any] | None:
        """One document's cleaned text and fields."""
        _, pipeline = self._library(user, Permission.READ, library)
        with self._locks[library]:
            return pipeline.document(doc_id)

    def remove(self, user: User | None, doc_id: str, library: str = DEFAULT_LIBRARY) -> bool:
        """Remove a document (a spreadsheet read in parts: all of them); ``False`` when it was not there."""
        return bool(self.remove_many(user, [doc_id], library).removed)

    def remove_many(self, user: User | None, doc_ids: Sequence[str], library: str = DEFAULT_LIBRARY) -> Removal:
        """Remove documents by id (see :meth:`Pipeline.remove`); each one removed is a line of the audit log."""
        user, pipeline = self._library(user, Permission.EDIT, library)
        with self._locks[library]:
            removal = pipeline.remove(doc_ids)
        for doc_id, parts in removal.removed.items():
            detail = {"doc_id": doc_id} | ({"parts": parts} if parts != [doc_id] else {})
            self.audit.record(AuditEvent(user.name, "remove", library, detail))
        return removal

    def copy_into(self, user: User | None, source: str | Path, library: str = DEFAULT_LIBRARY, *,
                  show_progress: bool = False) -> dict[str, int]:
        """Copy every document of the index folder ``source`` into a library (``rag copy``; see
        :meth:`Pipeline.copy_from`)."""
        user, pipeline = self._library(user, Permission.EDIT, library)
        with self._ingesting, self._locks[library]:
            counts = pipeline.copy_from(source, progress=show_progress)
        if counts["copied"]:
            self.audit.record(AuditEvent(user.name, "copy", library, {"from": str(source), **counts}))
        return counts

    def chunks(self, user: User | None, doc_id: str, library: str = DEFAULT_LIBRARY) -> list[ChunkView] | None:
        """A document's chunks as indexed (offsets into its cleaned text, excluded or not); ``None`` when there is
        no such document."""
        _, pipeline = self._library(user, Permission.READ, library)
        with self._locks[library]:
            return pipeline.chunks(doc_id)

    def set_excluded(self, user: User | None, chunk_ids: Sequence[int], excluded: bool,
                     library: str = DEFAULT_LIBRARY) -> int:
        """Exclude chunks from search (boilerplate, a wrong table) or include them again; how many changed."""
        user, pipeline = self._library(user, Permission.EDIT, library)
        with self._locks[library]:
            changed = pipeline.set_excluded(chunk_ids, excluded)
        if changed:
            self.audit.record(AuditEvent(user.name, "exclude" if excluded else "include", library,
                                         {"chunk_ids": [int(c) for c in chunk_ids], "changed": changed}))
        return changed

    def rechunk(self, user: User | None, doc_id: str, chunk_size: int, chunk_overlap: int,
                library: str = DEFAULT_LIBRARY) -> RechunkReport:
        """Cut one document again with other chunk settings (see :func:`rag.ingestion.ingest.rechunk_document`)."""
        user, pipeline = self._library(user, Permission.EDIT, library)
        with self._ingesting, self._locks[library]:
            report = pipeline.rechunk(doc_id, chunk_size, chunk_overlap, cache=self._cache(pipeline))
        self.audit.record(AuditEvent(user.name, "rechunk", library, report.to_dict()))
        return report

    # -- feedback ---------------------------------------------------------------------------------------------
    def give_feedback(self, user: User | None, answer: Answer, rating: int, comment: str = "", correction: str = "",
                      library: str = DEFAULT_LIBRARY, question: str | None = None) -> int:
        """Store 👍 (1) or 👎 (-1) on an answer given in ``library``; its id."""
        user = self.authorize(user, Permission.READ, library)
        return self.feedback.add(Feedback.from_answer(answer, user=user.name, library=library, rating=rating,
                                                      comment=comment, correction=correction, question=question))

    def export_feedback(self, user: User | None, out: Path, library: str = DEFAULT_LIBRARY) -> dict[str, int]:
        """A library's rated answers as a gold-file draft for ``rag eval qa`` (editors of the library)."""
        self.authorize(user, Permission.EDIT, library)
        return export_gold(self.feedback.list(library=library, limit=None), out)

    def audit_log(self, user: User | None, limit: int = 200, library: str | None = None) -> list[AuditEvent]:
        """The newest changes (administrators only)."""
        require(self._current(user), Permission.ADMIN)
        return self.audit.read(limit, library)

    def stats(self, user: User | None, library: str = DEFAULT_LIBRARY) -> ServiceStats:
        """Counts for the library tab."""
        _, pipeline = self._library(user, Permission.READ, library)
        with self._locks[library]:
            data = pipeline.stats()
        return ServiceStats(data["documents"], data["chunks"], data["embedder"], data["size_bytes"] / 1e6,
                            self.generator.name if self.generator else "reader" if self.models.reader else "extractive",
                            data["read_only"], data.get("pending_vectors", 0))


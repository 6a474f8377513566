"""The HTTP API for other programs, served by the same process as the page: OpenAI-compatible chat plus search,
documents and ingest, all behind the same users (API keys: ``rag user key NAME``) and :class:`RagService` rights.

    GET  /v1/models                      the libraries the key may read, as "models"
    POST /v1/chat/completions            {"model": "LIBRARY" or "A,B", "messages": [...], "stream": false}
    POST /v1/search                      {"query", "model" (libraries), "k"}
    GET  /v1/documents?model=LIBRARY     the library's documents
    POST /v1/documents?model=LIBRARY     multipart "files" (an editor's key), "replace=true" to overwrite
    DELETE /v1/documents/ID?model=LIBRARY  remove a document (an editor's key)

A chat answer is the checked answer of :meth:`RagService.ask`, with ``[n]`` citation markers in its text, and two
fields OpenAI's format does not have: ``sources`` (the numbered passages: library, doc_id, title, span, text)
and ``rag`` (the standalone question a follow-up was rewritten into, whether the answer abstained, which
generator wrote it). Earlier messages of the conversation turn a follow-up ("那甘孜州呢？") into a standalone
question. Streaming sends the checked answer only, in pieces: a model's unchecked draft cannot be taken back
once a program has read it, so it is never sent.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect

from ..answering.answer import NOT_FOUND, Answer
from ..answering.conversation import Turn
from ..index.errors import StoreError, is_disk_full
from ..normalize import clean_text_field
from ..retrieval.retrieve import QueryError
from .access import AccessDenied, Permission, User
from .libraries import DEFAULT_LIBRARY, LibraryError
from .service import RagService, describe_source
from .signin import SignIn
from .uploads import Upload

log = logging.getLogger(__name__)

MAX_MESSAGES = 64
MAX_MESSAGE_CHARS = 8_000
MAX_FILES = 100  # parts of one POST /v1/documents
MAX_NAME_CHARS = 120  # a document name from an upload


class ApiError(Exception):
    """An error returned as OpenAI's ``{"error": {"message", "type", "code"}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class Message(BaseModel):
    """One chat message; ``content`` may be text or OpenAI's list of parts (its text parts are read)."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text, bounded in length."""
        if isinstance(self.content, list):
            raw = "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        else:
            raw = self.content or ""
        return clean_text_field(raw[:MAX_MESSAGE_CHARS])


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat request this API reads (others, such as temperature, are accepted and
    ignored: answers are greedy and checked)."""

    model_config = ConfigDict(extra="allow")
    model: str = DEFAULT_LIBRARY
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False


class SearchRequest(BaseModel):
    """A search over one library or several."""

    query: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    model: str = DEFAULT_LIBRARY
    k: int = Field(default=5, ge=1, le=50)


def libraries_of(model: str) -> list[str]:
    """The libraries a request's ``model`` names: ``"A"`` or ``"A,B"``."""
    names = [name.strip() for name in model.split(",") if name.strip()]
    if not names:
        raise ApiError(400, "model names no library")
    return names


def turns_from_messages(messages: list[tuple[str, str]]) -> list[Turn]:
    """The earlier turns of a chat request: each user message with the assistant message that follows it (the
    client's copy of the conversation is all this API keeps of it)."""
    turns: list[Turn] = []
    for role, text in messages:
        if role == "user":
            turns.append(Turn(text, text, ""))
        elif role == "assistant" and turns and not turns[-1].answer:
            turns[-1].answer = re.sub(r"\[\d{1,2}\]", "", text).strip()
            turns[-1].abstained = NOT_FOUND in turns[-1].answer
    return turns


def sources_of(answer: Answer) -> list[dict[str, Any]]:
    """The answer's numbered passages as the ``sources`` field."""
    return [{"marker": s.marker, "library": s.library, "doc_id": s.doc_id, "title": s.title, "location": s.location,
             "chunk_id": s.chunk_id,
             "start": s.start, "end": s.end, "score": round(s.score, 4), "text": s.text, "support": s.support,
             "cited": s.marker in answer.citations} for s in answer.sources]


def content_of(answer: Answer) -> str:
    """The answer text with its citation markers, as a chat message's content."""
    return answer.answer + "".join(f"[{m}]" for m in answer.citations)


def build_api(service: RagService, signin: SignIn) -> APIRouter:
    """The ``/v1`` routes over ``service``. ``signin`` decides per request whether a key is needed and whose it
    is (while the server is open, requests act as :data:`rag.app.access.LOCAL_USER`, like the page)."""
    router = APIRouter(prefix="/v1")

    def caller(authorization: str | None = Header(default=None)) -> User:
        user = signin.key_user(authorization)
        if user is None:
            raise ApiError(401, "a valid API key is needed (Authorization: Bearer rag-…; see `rag user key`)",
                           "authentication_error")
        return user

    @router.get("/models")
    def models(user: User = Depends(caller)) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "rag-zh"}
                                           for name in service.library_names(user)]}

    @router.post("/chat/completions", response_model=None)
    def chat(body: ChatRequest, user: User = Depends(caller)) -> dict[str, Any] | StreamingResponse:
        libraries = libraries_of(body.model)
        last = max((i for i, m in enumerate(body.messages) if m.role == "user"), default=None)
        question = body.messages[last].text() if last is not None else ""
        if not question.strip():
            raise ApiError(400, "the last user message holds no question")
        history = turns_from_messages([(m.role, m.text()) for m in body.messages[:last]])
        asked = libraries if len(libraries) > 1 else libraries[0]
        standalone = service.standalone_question(user, question, history, asked)
        answer = service.ask(user, standalone, asked)
        answer.question = question
        completion_id = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        extra = {"sources": sources_of(answer), "rag": {
            "question": question, "standalone_question": standalone, "abstained": answer.abstained,
            "generator": answer.generator, "note": answer.note, "libraries": libraries, "evidence": answer.evidence,
            "fallback_reason": answer.fallback_reason, "unmatched": answer.unmatched, "caution": answer.caution()}}
        if not body.stream:
            return {"id": completion_id, "object": "chat.completion", "created": created, "model": body.model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content_of(answer)}}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}, **extra}
        return StreamingResponse(_chunks(completion_id, created, body.model, content_of(answer), extra),
                                 media_type="text/event-stream")

    @router.post("/search")
    def search(body: SearchRequest, user: User = Depends(caller)) -> dict[str, Any]:
        libraries = libraries_of(body.model)
        result = service.search(user, body.query, libraries if len(libraries) > 1 else libraries[0], body.k)
        return result.to_dict()

    @router.get("/documents")
    def documents(model: str = Query(DEFAULT_LIBRARY), user: User = Depends(caller)) -> dict[str, Any]:
        # Where a document's file lies on the server is not the caller's business: sources as the page shows them.
        listed = [d | {"source": describe_source(d["source"])} for d in service.documents(user, model)]
        return {"object": "list", "library": model, "data": listed}

    # The multipart body is read in the handler, after the key and the right to the library are checked (a form
    # parameter would make FastAPI read and spool the whole body first); RequestGuard caps its size.
    @router.post("/documents")
    async def add_documents(request: Request, model: str = Query(DEFAULT_LIBRARY), replace: bool = Query(False),
                            user: User = Depends(caller)) -> dict[str, Any]:
        await run_in_threadpool(service.authorize, user, Permission.EDIT, model)
        folder = Path(tempfile.mkdtemp(prefix="rag-api-"))
        try:
            async with request.form(max_files=MAX_FILES, max_fields=MAX_FILES) as form:
                files = [part for part in form.getlist("files") if isinstance(part, StarletteUpload)]
                if not files:
                    raise ApiError(400, 'no files: send them as multipart parts named "files"')
                uploads = [await run_in_threadpool(_save_upload, f, folder / str(i), service.settings.max_upload_mb)
                           for i, f in enumerate(files)]
            report = await run_in_threadpool(
                lambda: service.ingest_uploads(user, uploads, replace=replace, library=model))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return {"library": model, **report.to_dict()}

    @router.delete("/documents/{doc_id:path}")
    def remove_document(doc_id: str, model: str = Query(DEFAULT_LIBRARY),
                        user: User = Depends(caller)) -> dict[str, Any]:
        if not service.remove(user, doc_id, model):
            raise ApiError(404, f"no document {doc_id!r} in library {model}", "not_found_error")
        return {"library": model, "id": doc_id, "deleted": True}

    return router


def upload_name(filename: str | None) -> str:
    """The document name an upload's ``filename`` gives: its last path part, cleaned, at most
    :data:`MAX_NAME_CHARS` characters (the suffix kept); "upload" when nothing usable is left ("", ".", "..")."""
    name = clean_text_field(re.split(r"[/\\]", filename or "")[-1]).strip()
    if name in ("", ".", ".."):
        return "upload"
    if len(name) > MAX_NAME_CHARS:
        stem, dot, suffix = name.rpartition(".")
        keep = "." + suffix if dot and stem and len(suffix) <= 10 else ""
        name = name[: MAX_NAME_CHARS - len(keep)] + keep
    return name


def _save_upload(upload: StarletteUpload, folder: Path, max_mb: float) -> Upload:
    """An uploaded part written into ``folder``, refused past ``max_mb``. The file on disk is named by its suffix
    only (a user's name is never a path); the name they gave is the document's."""
    name = upload_name(upload.filename)
    folder.mkdir(parents=True)
    path = folder / ("upload" + Path(name).suffix.lower()[:16])
    limit, written = int(max_mb * 1e6), 0
    with open(path, "wb") as out:
        while chunk := upload.file.read(1 << 20):
            written += len(chunk)
            if written > limit:
                raise ApiError(413, f"{name} is larger than {max_mb:g} MB")
            out.write(chunk)
    return Upload(path, name)


def _chunks(completion_id: str, created: int, model: str, content: str, extra: dict[str, Any]) -> Iterator[str]:
    """Server-sent events of OpenAI's ``chat.completion.chunk``: the role, the checked answer in pieces, then a
    last chunk carrying ``finish_reason`` and the sources."""
    def event(delta: dict[str, Any], finish: str | None = None, **more: Any) -> str:
        chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    for i in range(0, len(content), 8):
        yield event({"content": content[i : i + 8]})
    yield event({}, "stop", **extra)
    yield "data: [DONE]\n\n"


def install_api(app: FastAPI, service: RagService, signin: SignIn) -> None:
    """Add the ``/v1`` routes and their error handling to ``app`` (the FastAPI app the page is mounted on)."""
    app.include_router(build_api(service, signin))
    status = {AccessDenied: (403, "permission_error"), LibraryError: (404, "not_found_error"),
              QueryError: (400, "invalid_request_error"), StoreError: (503, "server_error"),
              ClientDisconnect: (400, "invalid_request_error"), MultiPartException: (400, "invalid_request_error")}

    @app.exception_handler(ApiError)
    def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.kind)

    for kind, (code, name) in status.items():
        app.add_exception_handler(kind, lambda request, exc, code=code, name=name: _error(code, str(exc), name))

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), "invalid_request_error")

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return _error(400, problems[:500], "invalid_request_error")

    @app.exception_handler(Exception)
    def failed(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, (sqlite3.DatabaseError, OSError)) and is_disk_full(exc):
            log.error("%s %s: %s", request.method, request.url.path, exc)
            return _error(507, "the server's disk is full: nothing was stored; ask its administrator", "server_error")
        log.exception("%s %s failed", request.method, request.url.path)  # the trace stays in the server's log
        return _error(500, f"the request failed ({type(exc).__name__})", "server_error")


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

"""The office's web page and API in one process: the Gradio page at / (:mod:`rag.web.page`) and the
OpenAI-compatible HTTP API at /v1 (:mod:`rag.app.api`), both over one :class:`rag.app.service.RagService`.

    rag serve                          # index/ (built from data/sample in a checkout when empty), 127.0.0.1:7860
    python -m rag.web --port 8000 --index /data/index --host 0.0.0.0    # needs users: rag user add NAME

Safe by default: the page asks for a user name and password whenever it is reachable from another machine (or
users are configured at all), the API wants a user's key, rights are checked per library by the service, and
endpoints that take files read only files uploaded with the request, within ``max_upload_mb``, and delete them
once read.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import uvicorn
from fastapi import FastAPI
from gradio.routes import App as GradioApp

from ..answering.generate import GeneratorError
from ..app.access import LOCAL_USER, AccessError, UserStore
from ..app.api import install_api
from ..app.http_guard import RequestGuard
from ..app.libraries import DEFAULT_LIBRARY, LibraryError
from ..app.service import RagService
from ..app.signin import SignIn
from ..config import Settings, load_settings
from ..index.embeddings import EmbedderError
from ..index.errors import StoreError
from ..retrieval.rerank import RerankerError
from . import add_server_flags
from .page import CSS, build_app

log = logging.getLogger("rag.web")
# The sample corpus and its gold questions where the package runs from a source checkout (`make demo`): an empty
# default library is filled with the sample, and the 评测 tab runs on the gold file unless another is uploaded. An
# installed wheel has neither: its page starts with an empty library and asks for a gold file.
CHECKOUT = Path(__file__).resolve().parents[2]
IN_CHECKOUT = (CHECKOUT / "pyproject.toml").is_file()  # not site-packages, whatever else lies there
SAMPLE = CHECKOUT / "data" / "sample" if IN_CHECKOUT else None
GOLD = CHECKOUT / "eval" / "data" / "sample_qa.jsonl" if IN_CHECKOUT else None


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    """``python -m rag.web`` (and ``python demo.py``): serve the page, localhost only unless --host says otherwise,
    and then only with users to sign in."""
    parser = argparse.ArgumentParser(prog=prog, description="中文资料问答 web demo")
    add_server_flags(parser)
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    if args.index:
        settings = settings.replace(index_dir=Path(args.index))
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    run(settings, args.host, args.port)


def run(settings: Settings, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the page and the API for ``settings`` until interrupted (``rag serve``, ``python -m rag.web``)."""
    try:
        signin = sign_in_policy(settings, host)
        service = open_service(settings)
    except (StoreError, EmbedderError, GeneratorError, RerankerError, AccessError, LibraryError) as exc:
        raise SystemExit(f"rag serve: error: {exc}") from None
    # Open event streams (the page's queue) would hold a graceful shutdown forever: give them 5 s.
    uvicorn.run(serve(service, signin), host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


def serve(service: RagService, signin: SignIn) -> FastAPI:
    """One FastAPI app for a process: the HTTP API under /v1 (:mod:`rag.app.api`) and the page at /, behind
    :class:`rag.app.http_guard.RequestGuard`."""
    app = FastAPI(title="rag-zh", docs_url="/v1/docs", openapi_url="/v1/openapi.json", redoc_url=None)
    install_api(app, service, signin)
    blocks = build_app(service, signin, GOLD).queue(default_concurrency_limit=4)
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


def open_service(settings: Settings, sample: Path | None = SAMPLE) -> RagService:
    """The service over every library; the default one (``settings.index_dir``) is first filled with the sample
    corpus when it is empty and the sample is there."""
    service = RagService(settings)
    stats = service.stats(LOCAL_USER)
    service.pipeline(DEFAULT_LIBRARY).load_models()  # a model that cannot be loaded stops the start
    if stats.documents == 0 and sample is not None and sample.is_dir() and not stats.read_only:
        log.info("index %s is empty: ingesting the sample corpus %s", settings.index_dir, sample)
        service.ingest_paths(LOCAL_USER, [sample])
    return service

"""Checks every HTTP request passes before the page or the API sees it (an ASGI middleware).

- **Host.** While the server is open (no users, loopback only: see :mod:`rag.app.signin`) a request must name this
  machine in ``Host`` (``localhost``, ``127.x.x.x``, ``::1``): a page on another site that rebinds its own DNS name
  to 127.0.0.1 is refused, so it cannot read libraries through the user's browser.
- **Origin.** A request that changes something (``POST``, ``PUT``, ``PATCH``, ``DELETE``) sent by a browser from
  another site is refused: its ``Origin`` must be this server's own (``Host``, or ``X-Forwarded-Host`` behind a
  proxy), and ``Sec-Fetch-Site: cross-site`` is refused. Programs that send no ``Origin`` (curl, the OpenAI client)
  are not affected.
- **Size.** A request body larger than ``max_request_bytes`` is refused before it is read (``Content-Length``) or as
  soon as it passes the limit (a chunked body), so nothing past it is spooled to disk.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from .signin import SignIn

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def host_name(host: str) -> str:
    """The name or address in a ``Host`` value, without its port or IPv6 brackets, lower-cased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    """Whether a ``Host`` value names this machine (a loopback name or address)."""
    name = host_name(host)
    if name in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class RequestGuard:
    """The checks in the module docstring, around an ASGI ``app``."""

    def __init__(self, app: ASGIApp, *, signin: SignIn, max_request_bytes: int) -> None:
        self.app = app
        self.signin = signin
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, message = refusal
            log.warning("refused %s %s from %s: %s", scope.get("method", "WS"), scope.get("path"),
                        (scope.get("client") or ("?",))[0], message)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await _reply(send, status, message)
            return
        if scope["type"] == "http":
            await self._limited(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if not self.signin.required() and not is_loopback(host):
            return 403, f"this server answers requests for this machine only, not for host {host_name(host)!r}"
        method = scope.get("method", "GET")
        if method in UNSAFE_METHODS or scope["type"] == "websocket":
            if headers.get("sec-fetch-site") == "cross-site":
                return 403, "cross-site requests are refused"
            origin = headers.get("origin")
            if origin is not None:
                own = {host_name(h) + _port(h) for h in (host, headers.get("x-forwarded-host", "")) if h}
                parts = urlsplit(origin)
                if origin == "null" or not parts.hostname or (parts.hostname + _port(parts.netloc)) not in own:
                    return 403, f"requests from another site ({origin}) are refused"
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return 400, "invalid Content-Length"
            if int(length) > self.max_request_bytes:
                return 413, f"the request is larger than {self.max_request_bytes / 1e6:g} MB"
        return None

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a receive that stops a body at the size limit, then answer 413 if it was cut."""
        received = 0
        cut = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, cut
            if cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_request_bytes:
                    cut = True
                    return {"type": "http.disconnect"}  # the app stops reading as if the client had gone
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except Exception:
            if not cut:
                raise
        if cut and not started:
            await _reply(send, 413, f"the request is larger than {self.max_request_bytes / 1e6:g} MB")


def _port(host: str) -> str:
    """``:PORT`` of a ``host[:port]`` value, or ``""``."""
    tail = host.rsplit("]", 1)[-1] if host.startswith("[") else host
    return ":" + tail.rsplit(":", 1)[1] if tail.count(":") == 1 else ""


async def _reply(send: Send, status: int, message: str) -> None:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = json.dumps({"error": {"message": message, "type": kind, "code": status}}, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

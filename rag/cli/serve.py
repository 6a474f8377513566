"""``rag serve``: the web page and the HTTP API (:mod:`rag.web.server`), as ``python -m rag.web`` serves them."""

from __future__ import annotations

import argparse

from ..config import Settings
from ..web import add_server_flags


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    # Gradio and uvicorn take seconds to import: only this command needs them.
    from ..web.server import run

    run(settings, args.host, args.port)
    return 0


def add_serve(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", help="serve the web page and the HTTP API",
                       description="The page at / and the OpenAI-compatible API at /v1 in one process, over every "
                       "library of the installation (python -m rag.web does the same). Localhost only unless --host "
                       "says otherwise, and then only once users exist (rag user add).")
    add_server_flags(p)
    p.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")
    p.set_defaults(func=cmd_serve)

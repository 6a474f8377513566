"""The web page and the HTTP API of an office, served from one process: :mod:`rag.web.server` starts it
(``rag serve``, ``python -m rag.web``), :mod:`rag.web.page` puts the page together from its tabs
(:mod:`rag.web.tabs`), :mod:`rag.web.render` shows answers and summaries, :mod:`rag.web.common` holds what every
tab shares. The API itself is :mod:`rag.app.api`; the service behind both, :class:`rag.app.service.RagService`."""

from __future__ import annotations

import argparse


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of ``rag serve`` and ``python -m rag.web`` (here, not in :mod:`.server`: Gradio takes seconds to
    import, and ``rag --help`` needs only these)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--index", metavar="DIR", help="index folder of the default library (default: index/ or "
                        "$RAG_INDEX_DIR)")
    parser.add_argument("--config", metavar="FILE", help="TOML config file (default: ./rag.toml or $RAG_CONFIG)")

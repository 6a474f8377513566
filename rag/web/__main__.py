"""``python -m rag.web``: serve the page and the API (see :mod:`rag.web.server`)."""

from .server import main

main(prog="python -m rag.web")

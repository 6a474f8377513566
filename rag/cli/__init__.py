"""The ``rag`` command: one sub-command per thing done with documents, each a thin user of the library's API
(:class:`rag.pipeline.Pipeline` for one index, :class:`rag.app.service.RagService` for what changes documents or
manages an installation, as the page does). Results go to stdout (text, or JSON/JSONL with ``--json``); logs and
progress bars to stderr; an error is one ``rag: error: …`` line and exit status 2.

The commands by group: :mod:`.documents` (ingest, embed, copy, status, check, backup, chunks, remove, show),
:mod:`.questions` (search, ask, summarize), :mod:`.office` (user, library, feedback, audit), :mod:`.evaluation`
(eval) and :mod:`.serve` (serve); what they share is in :mod:`.common`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..answering.generate import GeneratorError
from ..app.access import AccessDenied, AccessError
from ..app.libraries import Libraries, LibraryError
from ..config import ConfigError, Settings, load_settings
from ..distributed import ClusterError
from ..index.embeddings import EmbedderError
from ..index.errors import StoreError, describe_store_error
from ..jsonl import DatasetError
from ..retrieval.rerank import RerankerError
from ..retrieval.retrieve import QueryError
from . import documents, evaluation, office, questions, serve
from .common import UsageError, common_flags

# Every command, in the order `rag --help` lists them.
COMMANDS = [documents.add_ingest, documents.add_embed, documents.add_copy, questions.add_search, questions.add_ask,
            questions.add_summarize, documents.add_status, documents.add_check, documents.add_backup, office.add_user,
            office.add_library, documents.add_chunks, office.add_feedback, office.add_audit, documents.add_remove,
            documents.add_show, evaluation.add_eval, serve.add_serve]
# What a command raises for a reason the user can act on: one line, exit status 2.
USER_ERRORS = (ConfigError, StoreError, QueryError, EmbedderError, UsageError, DatasetError, GeneratorError,
               RerankerError, AccessError, AccessDenied, LibraryError, ClusterError)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one sub-parser per command."""
    parser = argparse.ArgumentParser(prog="rag", description="Question answering and summarisation over Chinese "
                                     "documents: ingest files, search them, manage the index.")
    parser.add_argument("--version", action="version", version=f"rag {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_flags()
    for add in COMMANDS:
        add(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rag`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    index_dir = Path(args.index) if getattr(args, "index", None) else None
    try:
        settings = load_settings(args.config)
        overrides = {"index_dir": index_dir,
                     "embedder": getattr(args, "embedder", None),
                     "embedder_model": getattr(args, "embedder_model", None),
                     "generator": getattr(args, "generator", None),
                     "generator_model": getattr(args, "generator_model", None),
                     "reader_model": getattr(args, "reader", None)}
        settings = settings.replace(**overrides, log_level=args.log_level)
        if getattr(args, "library", None):
            settings = _library_settings(args, settings)
        index_dir = settings.index_dir
        logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")
        return args.func(args, settings)
    except USER_ERRORS as exc:
        print(f"rag: error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:
        print(f"rag: error: {describe_store_error(index_dir or Path('index'), exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`rag status | head -1`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a full disk ("the disk is full", nothing to restore), a file that cannot be written
        print(f"rag: error: {describe_store_error(index_dir or Path('index'), exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rag: interrupted; the index keeps every batch that was committed", file=sys.stderr)
        return 130


def _library_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """The settings of the library ``--library`` names (which must exist; ``rag library create`` makes one)."""
    if getattr(args, "index", None):
        raise UsageError("give --index or --library, not both")
    libraries = Libraries(settings)
    if not libraries.exists(args.library):
        raise UsageError(f"no library {args.library!r} (no index at {libraries.path(args.library)}); "
                         "create it with `rag library create NAME`")
    return libraries.settings_for(args.library)

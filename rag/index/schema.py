"""What an index folder holds, the SQLite schema of ``index.sqlite``, and its migrations.

A folder is an index of the SQLite store when it holds :data:`DB_NAME`; a library kept in a database instead holds
:data:`STORE_FILE`, naming the store and schema (:func:`stored_kind`). :func:`create_schema` makes a new
``index.sqlite``, :func:`upgrade` brings an older format to :data:`FORMAT_VERSION` in one transaction, and
:func:`connect` opens it read-write (WAL) or, where this process cannot write, read-only.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import IndexFormatError, StoreError, describe_store_error
from .vectors import LOG_START

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

# 2: removed_chunks (the log vector backends replay) and the vector_store setting.
# 3: every document's source is an absolute path (or an upload's origin), indexed: ingest refuses an id that
#    another source holds.
# 4: chunks an editor excluded from search (excluded_chunks), and a document's own chunk settings
#    (documents.chunk_size, chunk_overlap; NULL: the index's settings). A release that reads only formats up to 3
#    refuses a format 4 index rather than searching the excluded chunks.
# 5: chunks searchable by BM25 before they have a vector (pending_vectors; the vector column holds zero bytes
#    until then) and the log of vectors filled in later (filled_vectors), which vector backends replay.
# Formats 1 to 4 are upgraded in place when opened writable, and read as they are.
FORMAT_VERSION = 5
READABLE_FORMATS = {"1", "2", "3", "4", "5"}
DB_NAME = "index.sqlite"
# In the folder of a library kept in a database (rag.index.postgres): which store and which schema, never the
# database's address or password (those come from the settings).
STORE_FILE = "store.json"
LOCK_NAME = ".write.lock"
_REMOVED_TABLE = "CREATE TABLE IF NOT EXISTS removed_chunks (chunk_id INTEGER PRIMARY KEY, generation INTEGER NOT NULL);"
# An excluded chunk keeps its row, BM25 terms and vector (so every check and vector backend stays as it is); the
# store's search methods leave it out, and its document's whole-text BM25 terms are recomputed without it.
_EXCLUDED_TABLE = ("CREATE TABLE IF NOT EXISTS excluded_chunks "
                   "(chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE);")

# A chunk whose vector is still to be computed: found by BM25, not yet by dense search.
_PENDING_TABLE = ("CREATE TABLE IF NOT EXISTS pending_vectors "
                  "(chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE);")
_FILLED_TABLE = "CREATE TABLE IF NOT EXISTS filled_vectors (chunk_id INTEGER PRIMARY KEY, generation INTEGER NOT NULL);"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (
    doc_id TEXT PRIMARY KEY,
    root TEXT NOT NULL,
    source TEXT NOT NULL,
    title TEXT,
    date TEXT,
    publisher TEXT,
    content_hash TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    ingested_at REAL NOT NULL,
    chunk_size INTEGER,
    chunk_overlap INTEGER
);
CREATE INDEX documents_root ON documents(root);
CREATE INDEX documents_source ON documents(source);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    text TEXT NOT NULL,
    index_text TEXT NOT NULL,
    vector BLOB NOT NULL,
    location TEXT
);
CREATE INDEX chunks_doc ON chunks(doc_id);
CREATE VIRTUAL TABLE chunk_terms USING fts5(terms, tokenize = 'unicode61 remove_diacritics 0');
CREATE VIRTUAL TABLE doc_terms USING fts5(terms, tokenize = 'unicode61 remove_diacritics 0');
""" + _REMOVED_TABLE + _EXCLUDED_TABLE + _PENDING_TABLE + _FILLED_TABLE


def stored_kind(directory: Path) -> str | None:
    """The store an index folder belongs to: ``"sqlite"``, another kind its :data:`STORE_FILE` names, or ``None``
    when the folder holds no index yet."""
    if (directory / DB_NAME).exists():
        return "sqlite"
    try:
        return str(json.loads((directory / STORE_FILE).read_text(encoding="utf-8"))["store"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexFormatError(f"{directory / STORE_FILE} cannot be read ({exc}); delete it to open the library "
                               "from the settings' database again") from None


def read_meta(db: Any, key: str) -> str | None:
    """A value of the index's ``meta`` table (SQL every store's database speaks)."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def put_meta(db: Any, key: str, value: str) -> None:
    """Set ``key`` inside the caller's transaction (an update, else an insert: SQL every store's database has)."""
    if db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key)).rowcount == 0:
        db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))


def upgrade(db: sqlite3.Connection, directory: Path) -> int:
    """Bring a format 1 to 4 index to :data:`FORMAT_VERSION`, in one transaction (DDL included, so an upgrade that
    fails half-way leaves the old format whole); returns the format it is in now."""
    with db:
        # The write lock of SQLite first: another process opening the same old index waits, then finds it done.
        db.execute("BEGIN IMMEDIATE")
        version = int(read_meta(db, "format_version") or FORMAT_VERSION)
        if version == FORMAT_VERSION:
            return version
        if version < 2:  # format 1 lacks only the removal log, which starts empty
            db.execute(_REMOVED_TABLE)
        if version < 3:
            # Sources become absolute paths (older releases stored them as given on the command line).
            rows = db.execute("SELECT DISTINCT source, root FROM documents").fetchall()
            for source, root in rows:
                absolute = _absolute_source(source, root)
                if absolute != source:
                    db.execute("UPDATE documents SET source = ? WHERE source = ? AND root = ?",
                               (absolute, source, root))
            db.execute("CREATE INDEX IF NOT EXISTS documents_source ON documents(source)")
        if version < 4:
            # No chunk is excluded and every document follows the index's chunk settings: nothing to fill in.
            db.execute(_EXCLUDED_TABLE)
            columns = {r[1] for r in db.execute("PRAGMA table_info(documents)")}
            for column in ("chunk_size", "chunk_overlap"):
                if column not in columns:
                    db.execute(f"ALTER TABLE documents ADD COLUMN {column} INTEGER")
            # Where each chunk lies (page, slide, sheet and row): none for the formats older releases read.
            if "location" not in {r[1] for r in db.execute("PRAGMA table_info(chunks)")}:
                db.execute("ALTER TABLE chunks ADD COLUMN location TEXT")
        if version < 5:  # every chunk of an older index has its vector
            db.execute(_PENDING_TABLE)
            db.execute(_FILLED_TABLE)
            # Older releases trimmed the removal log without saying how far: only a snapshot is safe to start from.
            put_meta(db, LOG_START, str(int(read_meta(db, "generation") or 0)))
        db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION),))
    log.info("upgraded %s from index format %d to %d", directory, version, FORMAT_VERSION)
    return FORMAT_VERSION


def connect(db_path: Path, read_only: bool = False) -> tuple[sqlite3.Connection, bool]:
    """A connection to ``db_path`` and whether it is read-only.

    Read-write (WAL) when this process may write the file and its folder (unless ``read_only``: a source that is
    only read, and so not upgraded either); otherwise read-only, which for a WAL
    database in a folder we cannot write needs SQLite's ``immutable`` mode, safe only when no change is waiting
    in the ``-wal`` file.
    """
    folder = db_path.parent
    if not read_only and os.access(folder, os.W_OK) and (not db_path.exists() or os.access(db_path, os.W_OK)):
        try:
            db = sqlite3.connect(db_path, timeout=30, check_same_thread=False)
        except sqlite3.Error as exc:
            raise IndexFormatError(f"{db_path} cannot be opened ({exc})") from None
        try:
            use_wal(db)
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            db.close()
            raise describe_store_error(folder, exc) from None
        return db, False
    uri = "file:" + urllib.parse.quote(str(db_path.resolve())) + "?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db, True
    except sqlite3.OperationalError:
        pass  # a WAL database whose folder we cannot write (no -shm file can be made)
    wal = db_path.with_name(db_path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise StoreError(f"{folder} is read-only here and changes are still waiting in {wal.name}; open it "
                         "once where it can be written (or copy the folder) to fold them in")
    try:
        db = sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise IndexFormatError(f"{db_path} cannot be read ({exc})") from None
    return db, True


def use_wal(db: sqlite3.Connection, attempts: int = 200) -> None:
    """Switch a database to WAL (persistent, so usually already done). The switch can report "locked" at once,
    without waiting, while another process creates the same new file; so retry, every 50 ms, ``attempts`` times."""
    for attempt in range(attempts):
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def create_schema(db: sqlite3.Connection, settings: Settings | None) -> set[str]:
    """Create a new index's tables unless another process just did; returns the tables there now.

    ``BEGIN IMMEDIATE`` takes SQLite's write lock before the tables are looked at again, so two processes
    creating the same new index one moment apart cannot both try.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            meta = [("format_version", str(FORMAT_VERSION)), ("generation", "0"), (LOG_START, "0"),
                    ("vector_store", settings.vector_store if settings else "faiss")]
            if settings is not None and settings.vector_store == "milvus":
                meta += [("milvus_uri", settings.milvus_uri), ("milvus_collection", settings.milvus_collection)]
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.executemany("INSERT INTO meta VALUES (?, ?)", meta)
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return tables


def _absolute_source(source: str, root: str) -> str:
    """An older index's source (a path as typed, relative to wherever ``rag ingest`` ran) made absolute with the
    root it was ingested under, which was always stored absolute."""
    if not source or os.path.isabs(source) or not os.path.isabs(root):
        return source
    parts = Path(source).parts
    if Path(root).name == parts[-1]:
        return root  # the root was the file itself
    for i in range(len(parts)):
        candidate = Path(root, *parts[i:])
        if candidate.exists():
            return str(candidate)
    return str(Path(root, parts[-1]))

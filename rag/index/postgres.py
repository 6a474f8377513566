"""Libraries kept in PostgreSQL: one schema per library, shared by service processes on several machines.

:class:`PostgresStore` is the store of :mod:`rag.index.sql_store` over a database schema instead of ``index.sqlite``:
the same tables (documents, chunks with their vectors, the removal log, exclusions, metadata) and the same write
path, in plain SQL that PostgreSQL and the databases speaking its dialect (openGauss, KingbaseES, PolarDB) share.
What differs:

- **BM25.** SQLite's FTS5 is replaced by term tables filled from the jieba words ingestion already computes
  (split and lower-cased as FTS5's ``unicode61`` tokenizer does) and scored in SQL with FTS5's own formula
  (k1 = 1.2, b = 0.75, the same IDF), so rankings match the embedded store's. (A question word of several
  tokens, ``3.5``, is a phrase to FTS5 and its tokens here.)
- **The vector index** stays a FAISS file, now a cache in the library's local folder on each machine, brought up
  to date from the database's generation counter and removal log exactly as a SQLite library's is. The removal
  log is kept whole: a cache on another machine may still need any part of it.
- **One writer at a time** across all machines: a PostgreSQL advisory lock per schema, not a lock file.

The library's folder holds :data:`rag.index.schema.STORE_FILE` naming the store and schema, never the database's
address or password: those come from ``Settings.database_url`` (``RAG_DATABASE_URL``).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import math
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import IndexBusyError, IndexFormatError, StoreError
from .records import CheckReport, ChunkRecord
from .schema import FORMAT_VERSION, STORE_FILE, read_meta
from .sql_store import SqlStore, batches, marks
from .sqlite_store import SqliteStore
from .vectors import FAISS_NAME, FAISS_STAMP, LOG_START

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

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
    ingested_at DOUBLE PRECISION NOT NULL,
    chunk_size INTEGER,
    chunk_overlap INTEGER
);
CREATE INDEX documents_root ON documents(root);
CREATE INDEX documents_source ON documents(source);
CREATE TABLE chunks (
    id BIGSERIAL PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    text TEXT NOT NULL,
    index_text TEXT NOT NULL,
    vector BYTEA NOT NULL,
    location TEXT
);
CREATE INDEX chunks_doc ON chunks(doc_id);
CREATE TABLE chunk_terms (term TEXT NOT NULL, chunk_id BIGINT NOT NULL, tf INTEGER NOT NULL,
                          PRIMARY KEY (term, chunk_id));
CREATE INDEX chunk_terms_chunk ON chunk_terms(chunk_id);
CREATE TABLE chunk_lengths (chunk_id BIGINT PRIMARY KEY, terms INTEGER NOT NULL);
CREATE TABLE doc_terms (term TEXT NOT NULL, doc_id TEXT NOT NULL, tf INTEGER NOT NULL, PRIMARY KEY (term, doc_id));
CREATE INDEX doc_terms_doc ON doc_terms(doc_id);
CREATE TABLE doc_lengths (doc_id TEXT PRIMARY KEY, terms INTEGER NOT NULL);
CREATE TABLE removed_chunks (chunk_id BIGINT PRIMARY KEY, generation BIGINT NOT NULL);
CREATE INDEX removed_chunks_generation ON removed_chunks(generation);
CREATE TABLE excluded_chunks (chunk_id BIGINT PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE);
CREATE TABLE pending_vectors (chunk_id BIGINT PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE);
CREATE TABLE filled_vectors (chunk_id BIGINT PRIMARY KEY, generation BIGINT NOT NULL);
CREATE INDEX filled_vectors_generation ON filled_vectors(generation)
"""
# FTS5's bm25() constants.
_K1, _B = 1.2, 0.75
# What FTS5's unicode61 tokenizer keeps as one token: runs of letters and digits (CJK included), lower-cased.
_TOKEN = re.compile(r"[^\W_]+")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_MAX_TOKEN = 200


def fts_tokens(terms: Sequence[str]) -> list[str]:
    """The tokens FTS5 would index for these space-joined jieba words (so scores match the SQLite store's)."""
    return [t for term in terms for t in _TOKEN.findall(term.lower())]


def _read_marker(marker: Path) -> dict[str, str]:
    """What a library folder's :data:`STORE_FILE` records (nothing when there is none)."""
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{marker} cannot be read ({exc}); delete it to open the library again") from None
    return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _forget_cache(directory: Path) -> None:
    """Delete a folder's vector cache, built for another library than the one its schema now holds."""
    for name in (FAISS_NAME, FAISS_STAMP):
        (directory / name).unlink(missing_ok=True)


def _lock_key(schema: str) -> int:
    """A 64-bit advisory-lock key for ``schema``."""
    return int.from_bytes(hashlib.sha256(schema.encode()).digest()[:8], "big", signed=True)


class _Database:
    """A psycopg connection behind the part of the ``sqlite3`` interface the store uses: ``?`` parameters, and
    ``with db:`` as one transaction (nested ones become savepoints). A connection the server dropped (a restart,
    a network cut) is made again on the next statement outside a transaction."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._schema: str | None = None
        self._transactions: list[Any] = []
        self._lock = threading.RLock()  # a transaction belongs to the thread that opened it
        self.session_locks = 0  # advisory locks held: they end with the connection, so it is not made again then
        self.conn = self._connect()

    def _connect(self) -> Any:
        import psycopg

        try:
            conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10)
            if self._schema is not None:
                conn.execute(f'SET search_path TO "{self._schema}"')
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the library database ({_first_line(exc)})") from None
        return conn

    def use_schema(self, schema: str) -> None:
        """Make ``schema`` the one unqualified table names mean, on this connection and any made again."""
        self._schema = check_schema_name(schema)
        self.execute(f'SET search_path TO "{schema}"')

    @staticmethod
    def _sql(query: str) -> str:
        return query.replace("%", "%%").replace("?", "%s")

    def execute(self, query: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; returns psycopg's cursor (iterable, ``fetchone``, ``fetchall``, ``rowcount``)."""
        return self._run(lambda conn: conn.execute(self._sql(query), tuple(params)))

    def executemany(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each row of parameters."""
        rows = list(rows)
        if rows:
            self._run(lambda conn: conn.cursor().executemany(self._sql(query), rows))

    def _run(self, statement: Any) -> Any:
        import psycopg

        for attempt in (1, 2):
            self._reconnect_if_dropped()
            try:
                return statement(self.conn)
            except psycopg.OperationalError as exc:
                if not self.conn.closed:
                    raise  # a statement the server refused (a timeout, a limit), not a lost connection
                # Once more on a new connection when the old one died outside a transaction (nothing half-done);
                # not while this connection held the write lock (_reconnect_if_dropped says so).
                if attempt == 2 or self._transactions:
                    raise StoreError(f"the library's database cannot be reached ({_first_line(exc)})") from None
        raise AssertionError("unreachable")

    def _reconnect_if_dropped(self) -> None:
        if not self.conn.closed or self._transactions:
            return
        if self.session_locks:
            raise StoreError("the connection to the library's database dropped while writing, and the write lock "
                             "with it; what was committed is kept: run the command again")
        self.conn = self._connect()

    def __enter__(self) -> _Database:
        self._lock.acquire()
        try:
            self._reconnect_if_dropped()
            transaction = self.conn.transaction()
            transaction.__enter__()
        except BaseException:
            self._lock.release()
            raise
        self._transactions.append(transaction)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._transactions.pop().__exit__(*exc)
        finally:
            self._lock.release()

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def connect(settings: Settings | None) -> _Database:
    """A connection to ``settings.database_url`` (autocommit; :class:`_Database` opens transactions)."""
    url = settings.database_url if settings is not None else ""
    if not url:
        raise StoreError("index_store is postgresql but no database is given: set database_url (or RAG_DATABASE_URL)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise StoreError("libraries in PostgreSQL need psycopg: pip install 'rag-zh[postgres]'") from None
    return _Database(url)


def schema_exists(db: _Database, schema: str) -> bool:
    """Whether ``schema`` holds a library (its ``meta`` table)."""
    row = db.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = ? AND table_name = 'meta'",
                     (schema,)).fetchone()
    return row is not None


def check_schema_name(schema: str) -> str:
    """``schema`` when it is a plain lower-case identifier (it is spliced into ``SET search_path``)."""
    if not _SCHEMA_NAME.fullmatch(schema):
        raise StoreError(f"database_schema {schema!r}: use lower-case letters, digits and '_' (not first)")
    return schema


def folder_schema(directory: Path) -> str:
    """The schema of an ``--index`` folder that names none: ``rag_`` and the folder's name (hashed when it is not a
    plain identifier), so every machine that opens a folder of that name opens the same library."""
    name = directory.resolve().name.lower()
    if re.fullmatch(r"[a-z0-9_]{1,40}", name):
        return "rag_" + name
    return "rag_" + hashlib.sha256(name.encode()).hexdigest()[:16]


class PostgresStore(SqlStore):
    """A library in a PostgreSQL schema; the FAISS cache and :data:`STORE_FILE` in its local folder."""

    _database_errors: tuple[type[Exception], ...] = ()

    def __init__(self, directory: Path, db: _Database, schema: str, settings: Settings | None) -> None:
        super().__init__(directory, db, settings)  # type: ignore[arg-type]
        import psycopg

        self.schema = schema
        self._database_errors = (psycopg.DatabaseError,)
        self._sizes: dict[str, tuple[int, int, float]] = {}  # kind → (generation, rows, average length)
        self._uid: str | None = None  # the library the vector cache was built for

    @classmethod
    def open(cls, directory: str | Any, *, create: bool = False, settings: Settings | None = None,
             read_only: bool = False) -> PostgresStore:
        """Open (``create``: or make) the library of folder ``directory``: its schema is
        ``settings.database_schema`` (a library's, from :class:`rag.app.libraries.Libraries`), else the one the
        folder's :data:`STORE_FILE` names, else one named after the folder. (``read_only`` is for SQLite files; a
        library in a database is read and written through its connection's rights.)"""
        directory = Path(directory)
        if settings is not None and settings.vector_store == "milvus" and not settings.milvus_uri:
            # Milvus Lite is a file of one machine, but the record of how far it is synced would be shared.
            raise StoreError("a library in PostgreSQL keeps its vectors in FAISS or a Milvus server (milvus_uri), "
                             "not Milvus Lite")
        marker = directory / STORE_FILE
        recorded = _read_marker(marker)
        schema = check_schema_name((settings.database_schema if settings is not None else "")
                                   or recorded.get("schema") or folder_schema(directory))
        db = connect(settings)
        try:
            if not schema_exists(db, schema):
                if not create:
                    raise StoreError(f"no library in schema {schema} of the database (run `rag ingest PATH "
                                     f"--index {directory}` or `rag library create` first)")
                _create_schema(db, schema, settings)
            db.use_schema(schema)
            store = cls(directory, db, schema, settings)
            store._check_format()
        except BaseException:
            db.close()
            raise
        uid = read_meta(db, "uid") or ""
        if recorded.get("schema") != schema or recorded.get("uid") != uid:
            # The folder last cached another library (one deleted and made again under this name, say): its vector
            # file must not be mistaken for this library's.
            try:
                directory.mkdir(parents=True, exist_ok=True)
                _forget_cache(directory)
                marker.write_text(json.dumps({"store": "postgresql", "schema": schema, "uid": uid}), encoding="utf-8")
            except OSError as exc:
                db.close()
                raise StoreError(f"cannot use {directory} as the library's local folder ({exc.strerror or exc})") from None
        return store

    def _backend(self) -> Any:
        """The vector cache, dropped first when the schema now holds another library (one deleted and another
        renamed into its name while this store was open): its ids would point at the other library's chunks."""
        uid = read_meta(self._db, "uid")
        if self._vectors is not None and uid != self._uid:
            self._vectors.close()
            self._vectors = None
            _forget_cache(self.directory)
        self._uid = uid
        return super()._backend()

    def flush(self) -> None:
        """Save pending vector changes; a process that only read saves its local cache too (when it has none, or
        much has changed), so that its next start replays from it rather than rebuilding from the database. That
        save takes the writers' lock, so no write slips between the catch-up and the snapshot; it is skipped
        while another process writes."""
        super().flush()
        if self._vectors is None or self._lock_owner is not None or self._db.conn.closed:
            return
        with contextlib.suppress(IndexBusyError), self.write_lock():
            self._vectors.sync(self)
            self._vectors.save(self)

    def _check_format(self) -> None:
        version = read_meta(self._db, "format_version")
        if version != str(FORMAT_VERSION):
            raise IndexFormatError(f"schema {self.schema} holds index format {version}; this version reads format "
                                   f"{FORMAT_VERSION} in PostgreSQL")

    # -- writing ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        """A session advisory lock on the schema: one writer among every process on every machine."""
        key = _lock_key(self.schema)
        if not self._db.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()[0]:
            raise IndexBusyError(f"another process is writing to library schema {self.schema}; try again when it ends")
        self._db.session_locks += 1
        try:
            yield
        finally:
            self._db.session_locks -= 1
            if not self._db.conn.closed:
                self._db.execute("SELECT pg_advisory_unlock(?)", (key,))

    def quick_check(self) -> list[str]:
        """Nothing to check page by page: PostgreSQL keeps its own files whole."""
        return []

    def _insert_chunk(self, doc_id: str, chunk: ChunkRecord, vector: np.ndarray | None) -> int:
        chunk_id = int(self._db.execute(
            'INSERT INTO chunks (doc_id, ordinal, start, "end", text, index_text, vector, location) '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (doc_id, chunk.ordinal, chunk.start, chunk.end, chunk.text, chunk.index_text,
             b"" if vector is None else vector.tobytes(), chunk.location)).fetchone()[0])
        self._write_terms("chunk", chunk_id, chunk.terms)
        return chunk_id

    def _write_terms(self, kind: str, key: int | str, terms: Sequence[str]) -> None:
        # A run of letters and digits longer than a B-tree key may be (base64, hex dumps) matches no question.
        tokens = [t for t in fts_tokens(terms) if len(t) <= _MAX_TOKEN]
        self._db.executemany(f"INSERT INTO {kind}_terms (term, {kind}_id, tf) VALUES (?, ?, ?)",
                             [(t, key, n) for t, n in collections.Counter(tokens).items()])
        self._db.execute(f"INSERT INTO {kind}_lengths ({kind}_id, terms) VALUES (?, ?)", (key, len(tokens)))

    def _delete_terms(self, chunk_ids: Sequence[int]) -> None:
        for table in ("chunk_terms", "chunk_lengths"):
            self._db.execute(f"DELETE FROM {table} WHERE chunk_id IN ({marks(chunk_ids)})", chunk_ids)

    def _set_document_terms(self, doc_id: str, terms: Sequence[str]) -> None:
        self._delete_document_terms([doc_id])
        self._write_terms("doc", doc_id, terms)

    def _chunk_terms(self, chunk_ids: Sequence[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for part in batches(chunk_ids):
            for chunk_id, term, tf in self._db.execute(
                    f"SELECT chunk_id, term, tf FROM chunk_terms WHERE chunk_id IN ({marks(part)})", part):
                out.setdefault(int(chunk_id), []).extend([term] * tf)
        return out

    def _document_terms(self, doc_id: str) -> list[str]:
        return [t for term, tf in self._db.execute("SELECT term, tf FROM doc_terms WHERE doc_id = ?", (doc_id,))
                for t in [term] * tf]

    def _delete_document_terms(self, doc_ids: Sequence[str]) -> None:
        for table in ("doc_terms", "doc_lengths"):
            self._db.execute(f"DELETE FROM {table} WHERE doc_id IN ({marks(doc_ids)})", doc_ids)

    def forget_removed(self, up_to_generation: int) -> None:
        """Keep the removal and filled-vector logs: the vector cache on another machine may be older than this
        one's snapshot."""

    def max_chunk_id(self) -> int:
        """The highest chunk id in the library (the cache replays every chunk above its snapshot's)."""
        return int(self._db.execute("SELECT COALESCE(max(id), 0) FROM chunks").fetchone()[0])

    # -- BM25 ------------------------------------------------------------------------------------------------
    def search_bm25(self, terms: list[str], k: int) -> list[tuple[int, float]]:
        """Top ``k`` ``(chunk_id, bm25)`` for the OR of ``terms`` (higher is better)."""
        return [(int(c), s) for c, s in self._bm25("chunk", terms, k, self._unless_excluded("t.chunk_id"))]

    def search_bm25_documents(self, terms: list[str], k: int) -> list[tuple[str, float]]:
        """Top ``k`` ``(doc_id, bm25)`` over whole documents (higher is better)."""
        return [(str(d), s) for d, s in self._bm25("doc", terms, k, "")]

    def _bm25(self, kind: str, terms: list[str], k: int, where: str) -> list[tuple[Any, float]]:
        """FTS5's ``bm25()`` over the ``kind`` term tables: Σ idf·tf·(k1+1) / (tf + k1·(1 − b + b·len/avglen))."""
        tokens = list(dict.fromkeys(fts_tokens(terms)))
        if not tokens:
            return []
        n, average = self._collection_size(kind)
        if not n:
            return []
        rows = self._db.execute(
            f"SELECT term, count(*) FROM {kind}_terms WHERE term IN ({marks(tokens)}) GROUP BY term", tokens)
        # FTS5 floors a negative IDF (a term in most rows) at a tiny positive weight.
        idf = {t: max(math.log((n - df + 0.5) / (df + 0.5)), 1e-6) for t, df in rows}
        if not idf:
            return []
        weights = " ".join(f"WHEN ? THEN {w!r}" for w in idf.values())
        rows = self._db.execute(
            f"SELECT t.{kind}_id, sum((CASE t.term {weights} END) * t.tf * {_K1 + 1!r} / "
            f"(t.tf + {_K1!r} * ({1 - _B!r} + {_B!r} * l.terms / {average!r}))) AS score "
            f"FROM {kind}_terms t JOIN {kind}_lengths l ON l.{kind}_id = t.{kind}_id "
            f"WHERE t.term IN ({marks(list(idf))}) {where} "
            f"GROUP BY t.{kind}_id ORDER BY score DESC, t.{kind}_id LIMIT ?",
            [*idf, *idf, k])
        return [(key, float(score)) for key, score in rows]

    def _collection_size(self, kind: str) -> tuple[int, float]:
        """How many ``kind`` rows BM25 ranks and their average length in terms, read again only after a write
        (a scan of the lengths table per search would grow with the library)."""
        generation = self.generation()
        cached = self._sizes.get(kind)
        if cached is None or cached[0] != generation:
            n, total = self._db.execute(f"SELECT count(*), COALESCE(sum(terms), 0) FROM {kind}_lengths").fetchone()
            cached = self._sizes[kind] = (generation, int(n), float(total) / n if n else 1.0)
        return cached[1], cached[2] or 1.0

    def term_doc_freqs(self, terms: Sequence[str]) -> dict[str, int]:
        """How many chunks contain each term (for IDF weights); absent terms are left out."""
        terms = list(dict.fromkeys(terms))
        if not terms:
            return {}
        rows = self._db.execute(f"SELECT term, count(*) FROM chunk_terms WHERE term IN ({marks(terms)}) "
                                "GROUP BY term", terms)
        return {t: int(d) for t, d in rows}

    # -- status, checks, copies --------------------------------------------------------------------------------
    def _size_bytes(self) -> int:
        """The schema's tables and indexes, plus the local cache files."""
        row = self._db.execute(
            "SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ? AND c.relkind = 'r'",
            (self.schema,)).fetchone()
        return int(row[0]) + super()._size_bytes()

    def stats(self) -> dict[str, Any]:
        """Counts and sizes for ``rag status``, with the store and schema."""
        return {**super().stats(), "index_store": "postgresql", "schema": self.schema}

    def _check_integrity(self, report: CheckReport, run: Any) -> None:
        run("database reachable", "SELECT 1")

    def _term_checks(self) -> list[tuple[str, str]]:
        return [("chunks without BM25 terms", "SELECT count(*) FROM chunks WHERE id NOT IN "
                                              "(SELECT chunk_id FROM chunk_lengths)"),
                ("BM25 terms without their chunk", "SELECT count(*) FROM chunk_lengths WHERE chunk_id NOT IN "
                                                   "(SELECT id FROM chunks)"),
                ("documents without BM25 terms", "SELECT count(*) FROM documents WHERE doc_id NOT IN "
                                                 "(SELECT doc_id FROM doc_lengths)")]

    def backup(self, destination: str | Path) -> dict[str, Any]:
        """A copy of the library in the new folder ``destination`` as a SQLite index of its own (search it with
        ``--index``, or copy it back with ``rag copy``), taken under the writers' lock so no ingest changes it
        half-way. (``pg_dump --schema=…`` copies the schema itself.)"""
        destination = Path(destination)
        if destination.is_dir() and any(destination.iterdir()):
            raise StoreError(f"{destination} is not empty; back up into a new folder")
        settings = self._settings.replace(index_store="sqlite", vector_store="faiss") if self._settings else None
        with self.write_lock(), SqliteStore.open(destination, create=True, settings=settings) as copy:
            copy.copy_from(self)
            data = copy.stats()
        return {"backup": str(destination), "documents": data["documents"], "chunks": data["chunks"],
                "generation": self.generation(), "size_bytes": data["size_bytes"]}


def _create_schema(db: _Database, schema: str, settings: Settings | None) -> None:
    """Create ``schema`` with a new library's tables, unless another process just did (a transaction-level
    advisory lock makes the look and the creation one step)."""
    with db:
        db.execute("SELECT pg_advisory_xact_lock(?)", (_lock_key(schema),))
        if schema_exists(db, schema):
            return
        db.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        db.execute(f'SET LOCAL search_path TO "{schema}"')
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        meta = [("format_version", str(FORMAT_VERSION)), ("generation", "0"), (LOG_START, "0"), ("uid", uuid.uuid4().hex),
                ("vector_store", settings.vector_store if settings else "faiss")]
        if settings is not None and settings.vector_store == "milvus":
            meta += [("milvus_uri", settings.milvus_uri), ("milvus_collection", settings.milvus_collection)]
        db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta)
    log.info("created library schema %s", schema)



def library_schema(name: str) -> str:
    """The schema of named library ``name`` (``rag_lib_`` and the name, hashed when it is not a plain identifier:
    library names may be Chinese)."""
    if re.fullmatch(r"[a-z0-9_]{1,40}", name):
        return "rag_lib_" + name
    return "rag_lib_" + hashlib.sha256(name.encode()).hexdigest()[:16]


class SchemaCatalogue:
    """The libraries a database holds, for :class:`rag.app.libraries.Libraries`: every process on every machine
    sees the same list, whatever local folders it has."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @contextlib.contextmanager
    def _db(self) -> Iterator[_Database]:
        db = connect(self.settings)
        try:
            yield db
        finally:
            db.close()

    def exists(self, schema: str, named: bool = False) -> bool:
        """Whether ``schema`` holds a library (``named``: one whose name is recorded, as :meth:`names` lists; a
        schema a crash left unnamed is not, and creating the library again names it)."""
        with self._db() as db:
            if not schema_exists(db, schema):
                return False
            return not named or db.execute(f'SELECT 1 FROM "{check_schema_name(schema)}".meta WHERE key = ?',
                                           ("library",)).fetchone() is not None

    def names(self) -> list[str]:
        """The named libraries (``rag_lib_*`` schemas, by the name each records)."""
        with self._db() as db:
            schemas = [r[0] for r in db.execute(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = 'meta' "
                "AND substr(table_schema, 1, 8) = 'rag_lib_'")]
            names = []
            for schema in schemas:
                if not _SCHEMA_NAME.fullmatch(schema):
                    continue  # not one of ours
                row = db.execute(f'SELECT value FROM "{schema}".meta WHERE key = ?', ("library",)).fetchone()
                if row is not None:
                    names.append(str(row[0]))
            return names

    def name(self, schema: str, library: str) -> None:
        """Record the library name ``schema`` holds (what :meth:`names` lists)."""
        with self._db() as db, db:
            db.execute(f'DELETE FROM "{check_schema_name(schema)}".meta WHERE key = ?', ("library",))
            db.execute(f'INSERT INTO "{schema}".meta (key, value) VALUES (?, ?)', ("library", library))

    def rename(self, schema: str, new_schema: str, new_name: str) -> None:
        """Move a library to another schema and name (one transaction: documents are never half-moved)."""
        with self._db() as db, db:
            db.execute(f'ALTER SCHEMA "{check_schema_name(schema)}" RENAME TO "{check_schema_name(new_schema)}"')
            db.execute(f'UPDATE "{new_schema}".meta SET value = ? WHERE key = ?', (new_name, "library"))

    def trash(self, schema: str, stamp: str) -> str:
        """Take a library out of the list without dropping it: its schema is renamed ``rag_trash_…`` (rename it
        back, ``ALTER SCHEMA … RENAME TO rag_lib_…``, to restore it); returns the new schema name."""
        target = check_schema_name(f"rag_trash_{stamp}_{schema[len('rag_lib_'):]}"[:63])
        with self._db() as db, db:
            db.execute(f'ALTER SCHEMA "{check_schema_name(schema)}" RENAME TO "{target}"')
        return target

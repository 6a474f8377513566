"""Looking after an index: ``rag check`` (:meth:`StoreMaintenance.check`), and copying every document of one
store into another, vectors included (:meth:`StoreMaintenance.copy_from`: ``rag copy``, and the backup of a
library kept in PostgreSQL). Backups themselves are the stores' own (``SqliteStore.backup``: SQLite's online
backup; ``PostgresStore.backup``: a copy into a SQLite index).

:class:`StoreMaintenance` is mixed into :class:`rag.index.sql_store.SqlStore`: it reads and writes through the
store's own methods, and each database fills in the hooks at the end (its integrity checks, its BM25 terms).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from .errors import StoreError
from .records import CheckReport, ChunkRecord, DocumentRecord, StoredDocument


class StoreMaintenance:
    """Checking an index against itself and its vector backend, and copying whole documents between stores."""

    # What the database's driver raises: a check reports it as a problem instead of stopping.
    _database_errors: tuple[type[Exception], ...] = (sqlite3.DatabaseError,)

    def check(self) -> CheckReport:
        """Everything ``rag check`` looks at: the database's own integrity checks, the tables against each other,
        and the vector backend against the vectors stored in the database."""
        report = CheckReport(str(self.directory))

        def run(what: str, query: str, *params: Any) -> list[Any]:
            report.checked.append(what)
            try:
                return self._db.execute(query, params).fetchall()
            except self._database_errors as exc:
                report.problems.append(f"{what}: {exc}")
                return []

        self._check_integrity(report, run)
        for what, query in (
                ("chunks without their document", "SELECT count(*) FROM chunks c LEFT JOIN documents d USING (doc_id) "
                                                  "WHERE d.doc_id IS NULL"),
                *self._term_checks(),
                *([("exclusions of chunks not in the index", "SELECT count(*) FROM excluded_chunks WHERE chunk_id "
                                                             "NOT IN (SELECT id FROM chunks)")]
                  if self._format >= 4 else []),
                *([("chunks without a vector that none is coming for", "SELECT count(*) FROM chunks WHERE "
                   "length(vector) = 0 AND id NOT IN (SELECT chunk_id FROM pending_vectors)")]
                  if self._format >= 5 else [])):
            found = run(what, query)
            if found and found[0][0]:
                report.problems.append(f"{found[0][0]} {what}")
        info = self.embedder
        if info is not None:
            found = run("vector sizes", "SELECT count(*) FROM chunks WHERE length(vector) NOT IN (0, ?)", 4 * info[1])
            if found and found[0][0]:
                report.problems.append(f"{found[0][0]} chunk vectors are not {info[1]}-d")
        if report.problems:
            return report  # the vector backend is derived from the tables: comparing it with damaged ones says nothing
        report.checked.append("vector backend")
        try:
            backend = self._backend()
        except (StoreError, *self._database_errors) as exc:
            report.problems.append(f"vector backend: {exc}")
            return report
        if backend is None:
            return report
        report.notes += backend.notes
        live, held = self.chunk_id_set(), backend.ids()
        if live != held:
            report.problems.append(f"vector backend ({backend.kind}) holds {len(held - live)} vectors of removed "
                                   f"chunks and lacks {len(live - held)} chunks' vectors")
            return report
        # The same ids may hold other vectors (a snapshot written wrong, rows mixed up): dense search would then
        # return the wrong passages. Compare the vectors themselves with those stored here.
        report.checked.append("vectors against the database")
        differing, compared = backend.compare_vectors(self)
        if differing:
            sample = f" (of {compared} compared)" if compared < len(live) else ""
            report.problems.append(f"vector backend ({backend.kind}): {differing} of the vectors it holds differ from "
                                   f"those stored in the database{sample}")
        return report

    def iter_stored(self) -> Iterator[StoredDocument]:
        """Every document with its chunks, BM25 terms, vectors and exclusions, ordered by id."""
        chunking = "chunk_size, chunk_overlap" if self._format >= 4 else "NULL, NULL"
        ids = [r[0] for r in self._db.execute("SELECT doc_id FROM documents ORDER BY doc_id").fetchall()]
        for doc_id in ids:
            row = self._db.execute(
                "SELECT doc_id, root, source, text, content_hash, title, date, publisher, metadata, "
                f"{chunking} FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
            if row is None:
                continue  # removed by a writer meanwhile
            record = DocumentRecord(*row[:8], metadata=json.loads(row[8]), terms=self._document_terms(doc_id),
                                    chunk_size=row[9], chunk_overlap=row[10])
            rows = self._db.execute(
                f'SELECT c.id, c.ordinal, c.start, c."end", c.text, c.index_text, c.vector, {self._location("c")} '
                "FROM chunks c WHERE c.doc_id = ? ORDER BY c.ordinal", (doc_id,)).fetchall()
            terms = self._chunk_terms([r[0] for r in rows])
            chunks = [ChunkRecord(r[1], r[2], r[3], r[4], r[5], terms.get(r[0], []), r[7]) for r in rows]
            excluded = self._excluded_among(r[0] for r in rows) if self._format >= 4 else set()
            vectors = None
            if rows and all(len(r[6]) for r in rows):
                vectors = np.frombuffer(b"".join(r[6] for r in rows), dtype=np.float32).reshape(len(rows), -1)
            yield StoredDocument(record, chunks, vectors, [r[1] for r in rows if r[0] in excluded])

    def copy_from(self, source: StoreMaintenance, progress: bool = False) -> dict[str, int]:
        """Copy every document of ``source`` (another index, in any store) into this one, vectors and all, so
        nothing is embedded again: how a library moves from SQLite to PostgreSQL, or a PostgreSQL library is
        backed up into a folder. A document this index already holds with the same content and chunking is left
        as it is, so an interrupted copy resumes; one with other content is replaced.
        """
        info = source.embedder
        counts = {"copied": 0, "unchanged": 0}
        if info is None:
            return counts
        self.bind_embedder(*info)
        with self.write_lock():
            batch: list[StoredDocument] = []
            for doc in tqdm(source.iter_stored(), total=len(source.list_documents()), desc="copying documents",
                            unit="doc", disable=not progress):
                have = self.origins([doc.record.doc_id]).get(doc.record.doc_id)
                chunking = (doc.record.chunk_size, doc.record.chunk_overlap) if doc.record.chunk_size else None
                if have is not None and have.content_hash == doc.record.content_hash and have.chunking == chunking:
                    # The same, exclusions included (a copy killed between a document and its exclusions redoes it).
                    here = [c.ordinal for c in self.chunks_of(doc.record.doc_id) or [] if c.excluded]
                    if here == doc.excluded:
                        counts["unchanged"] += 1
                        continue
                batch.append(doc)
                if len(batch) >= 64:
                    counts["copied"] += self._write_stored(batch)
                    batch = []
            counts["copied"] += self._write_stored(batch)
            self.flush()
        return counts

    def _write_stored(self, docs: list[StoredDocument]) -> int:
        """Write whole stored documents (one transaction) and exclude again the chunks that were excluded."""
        if not docs:
            return 0
        self.write_documents([d.record for d in docs], [d.chunks for d in docs], [d.vectors for d in docs])
        excluded = [c.chunk_id for d in docs if d.excluded for c in self.chunks_of(d.record.doc_id) or []
                    if c.ordinal in set(d.excluded)]
        if excluded:
            self.set_excluded(excluded, True)
        return len(docs)


    # -- what each database fills in ----------------------------------------------------------------------------
    def backup(self, destination: str | os.PathLike[str]) -> dict[str, Any]:
        """A consistent copy of the index in the new folder ``destination``, an index of its own."""
        raise NotImplementedError

    def _check_integrity(self, report: CheckReport, run: Any) -> None:
        """The database's own integrity checks (``run(what, query)`` runs one, recording it)."""
        raise NotImplementedError

    def _term_checks(self) -> list[tuple[str, str]]:
        """``(problem, SQL counting it)`` for the BM25 index against the tables it indexes."""
        raise NotImplementedError

    def _chunk_terms(self, chunk_ids: Sequence[int]) -> dict[int, list[str]]:
        """The BM25 terms each chunk was indexed under."""
        raise NotImplementedError

    def _document_terms(self, doc_id: str) -> list[str]:
        """The whole-document BM25 terms of ``doc_id``."""
        raise NotImplementedError

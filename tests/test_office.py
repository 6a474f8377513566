"""The office service: several libraries, roles per library, the audit log, and `rag library` / `rag user`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.app.access import LOCAL_USER, AccessDenied, AccessError, User, UserStore
from rag.app.libraries import DEFAULT_LIBRARY, Libraries, LibraryError
from rag.app.service import RagService
from rag.app.uploads import Upload
from rag.cli import main
from rag.config import Settings
from tests.conftest import DOC_000, DOC_002, SAMPLE, two_libraries


@pytest.fixture(scope="module")
def office(tmp_path_factory):
    """A service with two libraries: default holds the sample corpus, 新闻 one news item."""
    service = two_libraries(tmp_path_factory.mktemp("office"))
    yield service
    service.close()


def test_library_names_are_checked(tmp_path) -> None:
    libraries = Libraries(Settings(index_dir=tmp_path / "index"))
    for bad in ["", "../x", "a/b", ".trash", "_x", "x" * 65, "a b"]:
        with pytest.raises(LibraryError):
            libraries.create(bad)
    assert libraries.create("财务-2024").path == tmp_path / "libraries" / "财务-2024"
    with pytest.raises(LibraryError):
        libraries.create("财务-2024")
    assert libraries.names() == ["财务-2024"]  # no default index yet


def test_rename_and_delete_keep_the_documents(tmp_path) -> None:
    settings = Settings(index_dir=tmp_path / "index", cache_dir=tmp_path / "cache", users_file=tmp_path / "users.json",
                        generator="extractive")
    service = RagService(settings)
    service.create_library(LOCAL_USER, "甲")
    doc = tmp_path / "a.txt"
    doc.write_text("甲库的文件：会议由张三主持。", encoding="utf-8")
    service.ingest_uploads(LOCAL_USER, [Upload(doc, "a.txt")], library="甲")
    users = UserStore(settings.users_file)
    users.add("carol", "long-password", "viewer")
    users.grant("carol", "甲", "editor")
    service.rename_library(LOCAL_USER, "甲", "乙")
    assert service.libraries.names() == [DEFAULT_LIBRARY, "乙"]
    assert dict(users.get("carol").grants) == {"乙": "editor"}  # the role followed the library
    assert [d["doc_id"] for d in service.documents(LOCAL_USER, "乙")] == ["a.txt"]
    with pytest.raises(LibraryError):
        service.rename_library(LOCAL_USER, DEFAULT_LIBRARY, "丙")
    moved = Path(service.delete_library(LOCAL_USER, "乙"))
    assert service.libraries.names() == [DEFAULT_LIBRARY]
    assert moved.parent.name == ".trash" and (moved / "index.sqlite").is_file()  # recoverable, not erased
    with pytest.raises(LibraryError):
        service.delete_library(LOCAL_USER, DEFAULT_LIBRARY)
    with pytest.raises(AccessDenied):
        service.create_library(User("dave", "editor"), "丁")
    actions = [e.action for e in service.audit_log(LOCAL_USER)]
    assert actions[:4] == ["library.delete", "library.rename", "ingest", "library.create"]
    service.close()


def test_each_library_answers_from_its_own_documents(office) -> None:
    assert office.ask(LOCAL_USER, "喀什地区第三次妇女儿童工作会议由谁主持？", "新闻").answer == "阿依古丽"
    elsewhere = office.ask(LOCAL_USER, "精河縣婦女兒童工作會議由誰主持？", "新闻")
    assert elsewhere.abstained or all(s.doc_id == "喀什.txt" for s in elsewhere.sources)
    answer = office.ask(LOCAL_USER, "精河縣婦女兒童工作會議由誰主持？", [DEFAULT_LIBRARY, "新闻"])
    assert answer.answer == "木合塔爾·馬合蘇提"
    assert {s.library for s in answer.sources} <= {DEFAULT_LIBRARY, "新闻"}
    assert answer.sources[answer.citations[0] - 1].library == DEFAULT_LIBRARY
    assert answer.sources[answer.citations[0] - 1].doc_id == DOC_002


def test_roles_per_library(office) -> None:
    # bob reads everything, edits only 新闻; eve sees only 新闻.
    bob = User("bob", "viewer", (("新闻", "editor"),))
    eve = User("eve", "none", (("新闻", "viewer"),))
    assert office.library_names(bob) == [DEFAULT_LIBRARY, "新闻"]
    assert office.library_names(eve) == ["新闻"]
    with pytest.raises(AccessDenied, match="default"):
        office.ask(eve, "安州区区长是谁？")
    with pytest.raises(AccessDenied):
        office.ask(eve, "安州区区长是谁？", [DEFAULT_LIBRARY, "新闻"])  # one forbidden library refuses the question
    with pytest.raises(AccessDenied):
        office.remove(bob, DOC_000)
    with pytest.raises(AccessDenied):
        office.remove(eve, "喀什.txt", "新闻")
    assert office.document(bob, DOC_000) is not None
    with pytest.raises(LibraryError):
        office.ask(bob, "安州区区长是谁？", "没有这个库")


def test_audit_log_says_who_changed_what(office, tmp_path) -> None:
    bob = User("bob", "viewer", (("新闻", "editor"),))
    note = tmp_path / "和田.txt"
    note.write_text("和田地区妇联召开执委会议。", encoding="utf-8")
    office.ingest_uploads(bob, [Upload(note, "和田.txt")], library="新闻")
    assert office.remove(bob, "和田.txt", "新闻")
    events = office.audit_log(LOCAL_USER, library="新闻")
    assert (events[0].user, events[0].action, events[0].detail["doc_id"]) == ("bob", "remove", "和田.txt")
    assert (events[1].user, events[1].action, events[1].detail["added"]) == ("bob", "ingest", ["和田.txt"])
    with pytest.raises(AccessDenied):
        office.audit_log(bob)


def test_a_change_from_the_command_line_names_its_index_folder(tmp_path, monkeypatch, shared_cache) -> None:
    # Several index folders may share one state folder: an event of the default library says which folder it was.
    monkeypatch.setenv("RAG_CACHE_DIR", str(shared_cache))
    monkeypatch.chdir(tmp_path)
    index = tmp_path / "elsewhere" / "index"
    assert main(["ingest", str(SAMPLE / DOC_002), "--index", str(index), "--quiet"]) == 0
    lines = (tmp_path / "elsewhere" / "state" / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    (event,) = [json.loads(line) for line in lines]
    assert (event["action"], event["library"], event["detail"]["index"]) == ("ingest", DEFAULT_LIBRARY, str(index))


def test_user_store_grants_and_keys(tmp_path) -> None:
    users = UserStore(tmp_path / "users.json")
    users.add("alice", "long-password", "editor")
    users.grant("alice", "财务", "none")
    alice = users.get("alice")
    assert alice.role_in("财务") == "none" and alice.role_in("新闻") == "editor"
    key = users.create_key("alice", "报表程序")
    assert users.authenticate_key(key) == alice
    assert users.authenticate_key(key + "x") is None and users.authenticate_key("") is None
    assert key not in (tmp_path / "users.json").read_text()  # only its hash is stored
    users.set_password("alice", "another-password")  # keeps the grants and keys
    assert users.authenticate_key(key) == users.get("alice") and users.get("alice").role_in("财务") == "none"
    assert users.revoke_keys("alice") == 1 and users.authenticate_key(key) is None
    with pytest.raises(AccessError):
        users.grant("alice", "财务", "superuser")
    with pytest.raises(AccessError):
        users.grant("nobody", "财务", "viewer")


def test_library_commands(tmp_path, monkeypatch, shared_cache, capsys) -> None:
    monkeypatch.setenv("RAG_CACHE_DIR", str(shared_cache))
    monkeypatch.chdir(tmp_path)
    assert main(["library", "create", "新闻"]) == 0
    assert main(["ingest", str(SAMPLE / DOC_002), "--library", "新闻", "--quiet"]) == 0
    assert main(["ask", "精河縣婦女兒童工作會議由誰主持？", "--library", "新闻", "--json"]) == 0
    capsys.readouterr()
    assert main(["ask", "精河縣婦女兒童工作會議由誰主持？", "--library", "新闻", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == "木合塔爾·馬合蘇提"
    assert main(["library", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["documents"]) for r in listed] == [("新闻", 1)]
    assert main(["ask", "谁主持？", "--library", "旧闻"]) == 2
    assert "no library '旧闻'" in capsys.readouterr().err
    assert main(["library", "rename", "新闻", "要闻"]) == 0
    assert main(["library", "delete", "要闻"]) == 0
    capsys.readouterr()
    assert main(["audit", "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert [e["action"] for e in events] == ["library.delete", "library.rename", "ingest", "library.create"]
    assert events[2]["user"].endswith("@cli") and events[2]["library"] == "新闻"
    assert not Path("index").exists()  # nothing was made that was not asked for


def test_chunk_and_feedback_commands(tmp_path, monkeypatch, shared_cache, capsys) -> None:
    monkeypatch.setenv("RAG_CACHE_DIR", str(shared_cache))
    monkeypatch.chdir(tmp_path)
    assert main(["ingest", str(SAMPLE), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["chunks", DOC_002, "--json"]) == 0
    chunks = json.loads(capsys.readouterr().out)
    assert chunks and all(not c["excluded"] for c in chunks)
    holder = next(c for c in chunks if "木合塔尔" in c["text"] or "木合塔爾" in c["text"])
    assert main(["chunks", DOC_002, "--exclude", str(holder["chunk_id"]), "--json"]) == 0
    assert next(c for c in json.loads(capsys.readouterr().out) if c["chunk_id"] == holder["chunk_id"])["excluded"]
    assert main(["search", "精河县妇女儿童工作会议由谁主持", "--json"]) == 0
    assert holder["chunk_id"] not in [h["chunk_id"] for h in json.loads(capsys.readouterr().out)["hits"]]
    assert main(["chunks", DOC_002, "--include", str(holder["chunk_id"])]) == 0
    capsys.readouterr()
    assert main(["audit", "--json"]) == 0
    assert [e["action"] for e in json.loads(capsys.readouterr().out)][:2] == ["include", "exclude"]

    # Feedback given through the service is exported as a gold draft that `rag eval qa` reads.
    service = RagService(Settings(index_dir=tmp_path / "index", cache_dir=shared_cache, generator="extractive"),
                         create=False)
    good = service.ask(LOCAL_USER, "精河縣婦女兒童工作會議由誰主持？")
    bad = service.ask(LOCAL_USER, "安州区区长是谁？")
    service.give_feedback(LOCAL_USER, good, 1, "对")
    service.give_feedback(LOCAL_USER, bad, -1, "应为李昊天")
    service.close()
    assert main(["feedback", "export", "--out", "gold.jsonl", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert (counts["written"], counts["positive"], counts["needs_review"]) == (2, 1, 1)
    assert main(["eval", "qa", "--dataset", "gold.jsonl", "--out", "run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["all"]["questions"] == 1  # the 👎 draft waits for review

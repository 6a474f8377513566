"""Security round 2 (issue #28): the real server attacked as bench/security.py attacks it, and the holes behind
the service that need no server.

Each probe of ``bench/security.py`` is one test here, against ``demo.py`` started on loopback: an office server
with users (the probe's alice, bob, carol, dave) and an open one (no users) that cannot import ``pypdfium2``.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
from pathlib import Path

import pytest

from rag.answering.conversation import ConversationNotFound
from rag.app.access import LOCAL_USER, AccessDenied, AccessError, UserStore
from rag.app.libraries import LibraryError
from rag.app.service import RagService
from rag.app.signin import SignIn
from rag.config import Settings
from rag.web.common import explain, markdown_text
from tests.conftest import two_libraries

ROOT = Path(__file__).resolve().parent.parent


def _probe_module():
    spec = importlib.util.spec_from_file_location("security_probe", ROOT / "bench" / "security.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


probe = _probe_module()


@pytest.fixture(scope="module")
def office(tmp_path_factory, shared_cache):
    with probe.running(tmp_path_factory.mktemp("office"), shared_cache, users=True) as server:
        yield server


@pytest.fixture(scope="module")
def open_server(tmp_path_factory, shared_cache):
    with probe.running(tmp_path_factory.mktemp("open"), shared_cache, users=False,
                       block_modules=("pypdfium2",)) as server:
        yield server


@pytest.mark.parametrize("item", list(probe.OFFICE_PROBES))
def test_office_server_holds(office, item) -> None:
    finding = probe.run_probe(item, probe.OFFICE_PROBES[item], office)
    assert finding.held, finding


@pytest.mark.parametrize("item", list(probe.OPEN_PROBES))
def test_open_server_holds(open_server, item) -> None:
    finding = probe.run_probe(item, probe.OPEN_PROBES[item], open_server)
    assert finding.held, finding


# -- 2, 8: libraries and conversations resolved with their rights ----------------------------------------------
@pytest.fixture
def office_service(tmp_path):
    users = UserStore(tmp_path / "users.json")
    users.add("carol", "carol-password", "viewer")
    service = two_libraries(tmp_path, users_file=tmp_path / "users.json")
    yield service, users
    service.close()


def test_a_library_renamed_by_another_process_is_not_served_under_its_old_name(office_service) -> None:
    service, users = office_service
    users.grant("carol", "新闻", "none")
    carol = users.get("carol")
    assert service.search(LOCAL_USER, "喀什", "新闻").hits  # the service has the library open
    other = RagService(service.settings)  # `rag library rename` in another process
    other.rename_library(LOCAL_USER, "新闻", "新闻2")
    other.close()
    with pytest.raises(LibraryError):
        service.search(carol, "喀什", "新闻")
    with pytest.raises(AccessDenied):  # her role followed the library, though her User was read before the rename
        service.search(carol, "喀什", "新闻2")
    assert dict(users.get("carol").grants) == {"新闻2": "none"}
    # A new library under the old name is another library: served fresh, not from the old one's open index.
    service.create_library(LOCAL_USER, "新闻")
    assert service.search(LOCAL_USER, "喀什", "新闻").hits == []
    RagService(service.settings).delete_library(LOCAL_USER, "新闻2")
    with pytest.raises(LibraryError):
        service.search(LOCAL_USER, "喀什", "新闻2")


def test_a_conversation_opens_only_in_its_own_library_with_its_rights(office_service) -> None:
    service, users = office_service
    carol = users.get("carol")
    turn = service.chat(carol, "喀什地区第三次妇女儿童工作会议由谁主持？", library="新闻")
    assert service.conversation(carol, turn.conversation_id, "新闻")
    users.grant("carol", "新闻", "none")  # her access to the conversation's library is revoked
    with pytest.raises(ConversationNotFound):  # not through a library she may still read
        service.conversation(carol, turn.conversation_id, "default")
    with pytest.raises(ConversationNotFound):
        service.chat(carol, "那和田地区呢？", turn.conversation_id, "default")
    with pytest.raises(AccessDenied):
        service.conversation(carol, turn.conversation_id, "新闻")


# -- 11: the low ones -------------------------------------------------------------------------------------------
def test_failed_sign_ins_are_limited_per_name(tmp_path) -> None:
    users = UserStore(tmp_path / "users.json")
    users.add("erin", "erin-password", "viewer")
    now = [0.0]
    signin = SignIn(users, open_when_empty=True, clock=lambda: now[0])
    assert all(not signin.check_password("erin", f"guess {i}") for i in range(SignIn.max_failures))
    assert not signin.check_password("erin", "erin-password")  # locked out, the right password included
    now[0] += SignIn.window_s + 1
    assert signin.check_password("erin", "erin-password")


def test_the_local_user_name_is_nobody_s_account(tmp_path) -> None:
    users = UserStore(tmp_path / "users.json")
    with pytest.raises(AccessError, match="reserved"):
        users.add(LOCAL_USER.name, "some-password", "admin")
    # Written by hand, such a record is ignored: it never signs in, and never inherits the open page's records.
    users.add("erin", "erin-password", "viewer")
    data = json.loads(users.path.read_text(encoding="utf-8"))
    data["users"][LOCAL_USER.name] = data["users"]["erin"]
    users.path.write_text(json.dumps(data), encoding="utf-8")
    assert users.get(LOCAL_USER.name) is None and users.authenticate(LOCAL_USER.name, "erin-password") is None


def test_rights_are_read_per_request_without_parsing_the_file_each_time(tmp_path, monkeypatch) -> None:
    users = UserStore(tmp_path / "users.json")
    users.add("erin", "erin-password", "viewer")
    parsed = []
    real_loads = json.loads
    monkeypatch.setattr("rag.app.access.json.loads", lambda text: parsed.append(1) or real_loads(text))
    for _ in range(5):
        assert users.get("erin").role == "viewer"
    assert len(parsed) <= 1
    UserStore(tmp_path / "users.json").grant("erin", "新闻", "none")  # another process changes it
    assert dict(users.get("erin").grants) == {"新闻": "none"}


def test_api_upload_names_are_never_paths(tmp_path) -> None:
    from rag.app.api import upload_name

    assert upload_name("..") == "upload" and upload_name(".") == "upload" and upload_name("") == "upload"
    assert upload_name("../../etc/passwd") == "passwd" and upload_name("a\\b\\c.txt") == "c.txt"
    long = upload_name("报告" * 150 + ".docx")
    assert len(long) <= 120 and long.endswith(".docx")


def test_disk_full_is_not_reported_as_damage(tmp_path) -> None:
    service = RagService(Settings(index_dir=tmp_path / "index", cache_dir=tmp_path / "cache", generator="extractive"))
    message = explain(sqlite3.OperationalError("database or disk is full"), service, "导入")
    assert "磁盘已满" in message and "损坏" not in message
    service.close()


def test_the_document_pane_shows_a_document_s_markup_as_text(tmp_path) -> None:
    shown = markdown_text('<img src=x onerror="alert(1)"><b>加粗</b> **星号**')
    assert "<img" not in shown and "<b>" not in shown and "&lt;img" in shown and "\\*\\*" in shown


def test_documents_listed_by_the_api_do_not_show_server_paths(office) -> None:
    with probe.api(office, "bob") as bob:
        listed = bob.get("documents").json()["data"]
    assert len(listed) >= 5 and all("/" not in d["source"] for d in listed), [d["source"] for d in listed]
    assert {d["source"] for d in listed} >= {"000_073935cdbaaa5940.txt"}

"""The HTTP API, through the official `openai` client and plain HTTP, served as `rag serve` serves it (the page and
the API in one process) over the sample corpus and a second library."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from rag.app.access import UserStore
from rag.app.signin import SignIn
from rag.normalize import normalize
from rag.web.server import serve
from tests.conftest import DOC_001, DOC_002, two_libraries

ROOT = Path(__file__).resolve().parent.parent
openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(base url, {user: key}, service)``: alice is an admin, bob a viewer who edits the library 新闻."""
    import uvicorn

    root = tmp_path_factory.mktemp("api")
    users = UserStore(root / "users.json")
    users.add("alice", "alice-password", "admin")
    users.add("bob", "bob-password", "viewer")
    users.grant("bob", "新闻", "editor")
    keys = {name: users.create_key(name) for name in ("alice", "bob")}
    service = two_libraries(root, users_file=root / "users.json")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(serve(service, SignIn(users, open_when_empty=True)), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    for _ in range(100):
        if uv.started:
            break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", keys, service
    uv.should_exit = True
    thread.join(timeout=10)
    service.close()


def client(server, user: str = "alice"):
    url, keys, _ = server
    return openai.OpenAI(base_url=f"{url}/v1", api_key=keys[user], max_retries=0)


def test_models_are_the_libraries_a_key_may_read(server) -> None:
    assert [m.id for m in client(server).models.list().data] == ["default", "新闻"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server[0]}/v1", api_key="rag-not-a-key", max_retries=0).models.list()
    anonymous = httpx.get(f"{server[0]}/v1/models")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "authentication_error"


def test_chat_answer_carries_its_sources(server) -> None:
    reply = client(server, "bob").chat.completions.create(
        model="default", messages=[{"role": "user", "content": "精河縣婦女兒童工作會議由誰主持？"}])
    text = reply.choices[0].message.content
    assert text.startswith("木合塔爾·馬合蘇提") and "[1]" in text  # the asker's script, a numbered citation
    sources = reply.model_extra["sources"]
    cited = [s for s in sources if s["cited"]]
    assert cited[0]["doc_id"] == DOC_002 and cited[0]["marker"] == 1 and "木合塔尔" in cited[0]["text"]
    assert reply.model_extra["rag"]["abstained"] is False
    assert "木合塔尔" in normalize(reply.model_extra["rag"]["evidence"])  # the sentence the answer rests on
    assert reply.model_extra["rag"]["unmatched"] == [] and reply.model_extra["rag"]["caution"] is None


def test_chat_streams_the_checked_answer_then_the_sources(server) -> None:
    stream = client(server).chat.completions.create(
        model="default", messages=[{"role": "user", "content": "甘孜州女性公务员比例达到多少？"}], stream=True)
    pieces, last = [], None
    for chunk in stream:
        pieces.append(chunk.choices[0].delta.content or "")
        last = chunk
    assert "".join(pieces).startswith("39.61%") and len([p for p in pieces if p]) >= 1
    assert last.choices[0].finish_reason == "stop"
    assert any(s["cited"] and "39.61%" in s["text"] for s in last.model_extra["sources"])


def test_a_follow_up_is_rewritten_with_the_conversation(server) -> None:
    api = client(server)
    first = api.chat.completions.create(model="default", messages=[
        {"role": "user", "content": "安州区妇女儿童工作会议由谁主持？"}])
    assert first.choices[0].message.content.startswith("陈琴")
    second = api.chat.completions.create(model="default", messages=[
        {"role": "user", "content": "安州区妇女儿童工作会议由谁主持？"},
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "那精河县呢？"}])
    assert second.model_extra["rag"]["standalone_question"] == "精河县妇女儿童工作会议由谁主持？"
    assert second.choices[0].message.content.startswith("木合塔尔·马合苏提")


def test_libraries_and_rights_through_the_api(server) -> None:
    api = client(server, "bob")
    news = api.chat.completions.create(model="新闻", messages=[
        {"role": "user", "content": "喀什地区第三次妇女儿童工作会议由谁主持？"}])
    assert news.choices[0].message.content.startswith("阿依古丽")
    both = api.chat.completions.create(model="default,新闻", messages=[
        {"role": "user", "content": "安州区区长是谁？"}])
    assert both.choices[0].message.content.startswith("李昊天")
    assert {s["library"] for s in both.model_extra["sources"]} <= {"default", "新闻"}
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="没有这个库", messages=[{"role": "user", "content": "谁主持？"}])

    url, keys, _ = server
    headers = {"Authorization": f"Bearer {keys['bob']}"}
    found = httpx.post(f"{url}/v1/search", json={"query": "安州区区长", "model": "default", "k": 3}, headers=headers)
    assert found.status_code == 200 and found.json()["hits"][0]["doc_id"] == DOC_001
    files = {"files": ("和田.txt", "和田地区妇联召开执委会议，会议由热依拉主持。".encode(), "text/plain")}
    refused = httpx.post(f"{url}/v1/documents", params={"model": "default"}, files=files, headers=headers)
    assert refused.status_code == 403 and "error" in refused.json()  # bob only reads the default library
    added = httpx.post(f"{url}/v1/documents", params={"model": "新闻"}, files=files, headers=headers)
    assert added.status_code == 200 and added.json()["added"] == ["和田.txt"]
    listed = httpx.get(f"{url}/v1/documents", params={"model": "新闻"}, headers=headers).json()["data"]
    assert sorted(d["doc_id"] for d in listed) == ["和田.txt", "喀什.txt"]


def test_bad_requests_get_clear_errors(server) -> None:
    url, keys, _ = server
    headers = {"Authorization": f"Bearer {keys['alice']}"}
    for body in ({"model": "default", "messages": []}, {"model": "default"}, {"messages": "not a list"},
                 {"model": "default", "messages": [{"role": "wizard", "content": "？"}]},
                 {"model": "default", "messages": [{"role": "assistant", "content": "只有回答"}]}):
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers)
        assert reply.status_code == 400, body
        assert reply.json()["error"]["message"] and "Traceback" not in reply.text
    huge = httpx.post(f"{url}/v1/chat/completions", headers=headers, json={
        "model": "default", "messages": [{"role": "user", "content": "妇女" * 50_000 + "？"}]})
    assert huge.status_code == 200 and huge.json()["rag"]["note"]  # cut to a bounded question, and said so
    garbage = httpx.post(f"{url}/v1/chat/completions", content=b"\xff\xfe not json", headers={
        **headers, "Content-Type": "application/json"})
    assert garbage.status_code == 400

"""The web demo: handlers through the service, the Gradio API, and a real headless browser.

The browser test drives Debian's Chromium (/usr/bin/chromium) with Playwright; it is skipped, with the reason,
where that browser or the playwright package is missing (``make test`` installs both).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.app.access import LOCAL_USER, AccessDenied, User
from rag.app.service import RagService
from rag.app.uploads import Upload
from rag.web.render import render_answer, render_sources, render_summary
from tests.conftest import DOC_002, SAMPLE

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    from rag.config import Settings

    svc = RagService(Settings(index_dir=root / "index", cache_dir=root / "cache", generator="extractive"))
    svc.ingest_paths(LOCAL_USER, [SAMPLE])
    yield svc
    svc.close()


def test_service_answers_with_highlighted_sources(service) -> None:
    answer = service.ask(LOCAL_USER, "精河縣婦女兒童工作會議由誰主持？")
    markdown, sources = render_answer(answer), render_sources(answer)
    assert "木合塔爾·馬合蘇提" in markdown and "生成方式：extractive" in markdown
    assert "<mark>木合塔尔·马合苏提</mark>" in sources and DOC_002 in sources


def test_service_abstains_honestly(service) -> None:
    markdown = render_answer(service.ask(LOCAL_USER, "京东方首发的柔性OLED方案为哪款手机独供？"))
    assert "资料中未找到答案" in markdown and "最接近的段落" in markdown


def test_service_library_operations(service, tmp_path) -> None:
    editor, viewer = User("alice", "editor"), User("bob", "viewer")
    before = service.stats(viewer).documents
    new = tmp_path / "新闻.txt"
    new.write_text("喀什地区召开第三次妇女儿童工作会议，会议由副专员阿依古丽主持。", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    uploads = [Upload(new, "新闻.txt"), Upload(tmp_path / "empty.txt", "empty.txt")]
    with pytest.raises(AccessDenied):
        service.ingest_uploads(viewer, uploads)
    with pytest.raises(AccessDenied):
        service.ingest_uploads(None, uploads)
    report = service.ingest_uploads(editor, uploads)
    assert report.added == ["新闻.txt"] and report.skipped[0]["reason"] == "empty file"
    assert service.stats(viewer).documents == before + 1
    assert service.ask(viewer, "喀什地区第三次妇女儿童工作会议由谁主持？").answer == "阿依古丽"
    assert service.document(viewer, "新闻.txt")["source"].startswith("upload://alice/")

    # The same name with other content is refused; nothing is overwritten unless asked.
    other = tmp_path / "again" / "新闻.txt"
    other.parent.mkdir()
    other.write_text("和田地区召开妇女儿童工作会议。", encoding="utf-8")
    report = service.ingest_uploads(editor, [Upload(other, "新闻.txt")])
    assert report.conflicts == ["新闻.txt"] and not report.updated
    assert "阿依古丽" in service.document(viewer, "新闻.txt")["text"]
    assert service.ingest_uploads(editor, [Upload(new, "新闻.txt")]).unchanged == 1  # the same file again
    report = service.ingest_uploads(editor, [Upload(other, "新闻.txt")], replace=True)
    assert report.updated == ["新闻.txt"] and "和田" in service.document(viewer, "新闻.txt")["text"]

    with pytest.raises(AccessDenied):
        service.remove(viewer, "新闻.txt")
    assert service.remove(editor, "新闻.txt") and not service.remove(editor, "新闻.txt")
    assert service.stats(viewer).documents == before


def test_service_summaries(service, tmp_path) -> None:
    summary = service.summarize(LOCAL_USER, ["000_073935cdbaaa5940.txt", "no-such-doc"], "short")
    assert len(summary) == 1 and "拉薩" in render_summary(summary[0]) and "出处" in render_summary(summary[0])
    topic = render_summary(service.summarize_topic(LOCAL_USER, "儿童友好城市建设"))
    assert topic.count("\n- ") >= 2
    counts = service.summarize_library(LOCAL_USER, tmp_path / "all.jsonl", "short")
    assert counts["summarised"] == service.stats(LOCAL_USER).documents and (tmp_path / "all.md").exists()


def test_concurrent_questions_do_not_mix(service) -> None:
    from concurrent.futures import ThreadPoolExecutor

    questions = ["甘孜州女性公务员比例达到多少？", "安州区区长是谁？", "甘孜州妇女之家达到多少个？"] * 4
    expected = {"甘孜州女性公务员比例达到多少？": "39.61%", "安州区区长是谁？": "李昊天", "甘孜州妇女之家达到多少个？": "2563个"}
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda q: service.ask(LOCAL_USER, q), questions))
    assert [a.question for a in answers] == questions
    assert all(a.answer == expected[a.question] for a in answers)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_demo(root: Path, cache: Path, extra_env: dict[str, str] | None = None, *args: str):
    """demo.py in a subprocess on a free localhost port over a fresh index of the sample corpus, with its own
    upload folder: ``(process, url, upload folder, started)``."""
    port = _free_port()
    env = {**os.environ, "RAG_INDEX_DIR": str(root / "index"), "RAG_CACHE_DIR": str(cache),
           "RAG_USERS_FILE": str(root / "users.json"), "GRADIO_TEMP_DIR": str(root / "uploads"),
           "GRADIO_ANALYTICS_ENABLED": "False", **(extra_env or {})}
    log = open(root / "demo.log", "w")  # noqa: SIM115 (the process writes it until the fixture ends)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(ROOT / "demo.py"), "--port", str(port), *args], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    import urllib.request

    for _ in range(240):
        if proc.poll() is not None:
            raise RuntimeError(f"demo exited: {(root / 'demo.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("demo did not start in 120 s")
    return proc, url, root / "uploads", started


def _stop(proc) -> None:
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def local_demo(tmp_path_factory, shared_cache):
    """The demo as `make demo` runs it: localhost, no users, so no login (uploads capped at 0.05 MB here)."""
    proc, url, uploads, _ = _start_demo(tmp_path_factory.mktemp("demo"), shared_cache,
                                              {"RAG_MAX_UPLOAD_MB": "0.05"})
    yield url, uploads
    _stop(proc)


@pytest.fixture(scope="module")
def office_demo(tmp_path_factory, shared_cache):
    """The demo with users: alice (editor) and bob (viewer) must sign in."""
    from rag.app.access import UserStore
    from rag.app.libraries import Libraries
    from rag.config import Settings

    root = tmp_path_factory.mktemp("office-demo")
    users = UserStore(root / "users.json")
    users.add("alice", "alice-password", "editor")
    users.add("bob", "bob-password", "viewer")
    # A second, empty library beside the default one (which the demo fills with the sample corpus).
    Libraries(Settings(index_dir=root / "index")).create("新闻")
    proc, url, uploads, started = _start_demo(root, shared_cache)
    yield url, uploads, started, root
    _stop(proc)


def _call(url: str, api: str, data: list) -> str:
    """A raw request to the API (no client-side upload): what a hostile script sends. Returns the event stream."""
    import urllib.request

    body = json.dumps({"data": data}).encode()
    request = urllib.request.Request(f"{url}gradio_api/call/{api}", body, {"Content-Type": "application/json"})
    event = json.loads(urllib.request.urlopen(request, timeout=30).read())["event_id"]
    return urllib.request.urlopen(f"{url}gradio_api/call/{api}/{event}", timeout=120).read().decode()


def test_gradio_client_calls_the_ask_api(local_demo) -> None:
    gradio_client = pytest.importorskip("gradio_client")
    url, _ = local_demo
    client = gradio_client.Client(url, verbose=False)
    markdown, sources, payload = client.predict("第五次全区妇女儿童工作会议在哪里召开？", api_name="/ask")
    answer = json.loads(payload)
    assert answer["answer"] == "拉萨" and not answer["abstained"] and answer["generator"] == "extractive"
    assert answer["sources"][0]["doc_id"] == "000_073935cdbaaa5940.txt"
    assert "拉萨" in markdown and "<mark>" in sources


def test_file_endpoints_read_only_what_was_uploaded(local_demo, tmp_path) -> None:
    gradio_client = pytest.importorskip("gradio_client")
    url, uploads = local_demo
    secret = tmp_path / "private-notes.txt"
    secret.write_text("机密备忘：甲单位年度预算为八百万元。", encoding="utf-8")
    secret.chmod(0o600)
    server_path = {"path": str(secret), "meta": {"_type": "gradio.FileData"}}
    # A crafted request naming a server file is refused before anything reads it, by every file endpoint.
    assert "event: error" in _call(url, "ingest", [[server_path], False])
    assert "event: error" in _call(url, "evaluate", [server_path, 1])
    client = gradio_client.Client(url, verbose=False)
    assert "没有文档" in client.predict("private-notes.txt", api_name="/show_document")
    assert "private-notes.txt" not in json.dumps(client.predict(api_name="/documents"), ensure_ascii=False)

    # A real upload is read, and deleted once ingested.
    report = tmp_path / "喀什报道.txt"
    report.write_text("喀什地区召开第三次妇女儿童工作会议，会议由副专员阿依古丽主持。", encoding="utf-8")
    message = client.predict([gradio_client.handle_file(str(report))], False, api_name="/ingest")[0]
    assert "新增 1 篇" in message and "喀什报道.txt" in message
    assert not list(uploads.rglob("喀什报道.txt"))
    # Another file under that name is refused, not written over.
    report.write_text("和田地区召开妇女儿童工作会议。", encoding="utf-8")
    message = client.predict([gradio_client.handle_file(str(report))], False, api_name="/ingest")[0]
    assert "跳过 1 个" in message and "替换同名文档" in message
    assert "阿依古丽" in client.predict("喀什报道.txt", api_name="/show_document")

    # Over the size limit (0.05 MB here): refused by the upload itself.
    big = tmp_path / "big.txt"
    big.write_text("妇女儿童工作。" * 20_000, encoding="utf-8")
    with pytest.raises(Exception, match=r"(?i)size|large|413"):
        client.predict([gradio_client.handle_file(str(big))], False, api_name="/ingest")
    assert "big.txt" not in json.dumps(client.predict(api_name="/documents"), ensure_ascii=False)


def test_the_page_is_not_served_to_the_network_without_users(tmp_path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "demo.py"), "--host", "0.0.0.0", "--port", str(_free_port())],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "RAG_USERS_FILE": str(tmp_path / "users.json"),
                                 "RAG_INDEX_DIR": str(tmp_path / "index")})
    assert result.returncode != 0 and "rag user add" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "index").exists()


def test_signed_in_users_have_their_role_rights(office_demo, tmp_path) -> None:
    gradio_client = pytest.importorskip("gradio_client")
    url, uploads, _, _ = office_demo
    with pytest.raises(Exception, match=r"(?i)login|credentials"):
        gradio_client.Client(url, verbose=False)
    with pytest.raises(Exception, match=r"(?i)login"):
        gradio_client.Client(url, auth=("alice", "wrong password"), verbose=False)

    bob = gradio_client.Client(url, auth=("bob", "bob-password"), verbose=False)
    assert json.loads(bob.predict("安州区区长是谁？", api_name="/ask")[2])["answer"] == "李昊天"
    doc = tmp_path / "和田报道.txt"
    doc.write_text("和田地区召开妇女儿童工作会议，会议由副专员热依拉主持。", encoding="utf-8")
    assert "无权修改文档库" in bob.predict([gradio_client.handle_file(str(doc))], False, api_name="/ingest")[0]
    assert not list(uploads.rglob("和田报道.txt"))  # a refused upload is deleted too
    assert "无权修改文档库" in bob.predict(DOC_002, api_name="/remove_document")[0]

    alice = gradio_client.Client(url, auth=("alice", "alice-password"), verbose=False)
    assert "新增 1 篇" in alice.predict([gradio_client.handle_file(str(doc))], False, api_name="/ingest")[0]
    assert "已删除" in alice.predict("和田报道.txt", api_name="/remove_document")[0]


def test_browser_login_question_and_upload(office_demo, tmp_path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium chromium-driver)")
    playwright = pytest.importorskip("playwright.sync_api")
    url, _, started, _ = office_demo
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = _chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        # The login page: a wrong password is refused, the right one opens the app.
        page.locator("input[type=text]").first.fill("alice")
        page.locator("input[type=password]").fill("not her password")
        page.get_by_role("button", name="Login").click()
        page.get_by_text("Incorrect Credentials").wait_for(timeout=20_000)
        page.locator("input[type=text]").first.fill("alice")  # the form is cleared after a failure
        page.locator("input[type=password]").fill("alice-password")
        page.get_by_role("button", name="Login").click()
        box = page.locator("#question textarea, #question input").first
        box.wait_for(timeout=30_000)
        box.fill("甘孜州女性公务员比例达到多少？")
        box.press("Enter")
        page.locator("#answer").get_by_text("39.61%").first.wait_for(timeout=60_000)
        first_answer_s = time.monotonic() - started
        sources = page.locator("#sources")
        sources.locator("mark").first.wait_for(timeout=10_000)
        assert "004_94cd80d7522b4282.txt" in sources.inner_text()
        page.screenshot(path=str(ARTIFACTS / "demo-answer.png"), full_page=True)

        # Upload a new document and find it by asking about it.
        doc = tmp_path / "塔城报道.txt"
        doc.write_text("塔城地区召开第二次妇女儿童工作会议。会议由副专员古丽娜主持，共有120名代表参加。", encoding="utf-8")
        page.get_by_role("tab", name="文档库").click()
        page.locator("#upload input[type=file]").set_input_files(str(doc))
        page.locator("#ingest").click()
        page.locator("#ingest-report").get_by_text("新增 1 篇").wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "demo-library.png"), full_page=True)
        page.get_by_role("tab", name="问答").click()
        box = page.locator("#question textarea, #question input").first
        box.fill("塔城地区第二次妇女儿童工作会议有多少名代表参加？")
        box.press("Enter")
        page.locator("#answer").get_by_text("120名").first.wait_for(timeout=60_000)
        assert "塔城报道.txt" in page.locator("#sources").inner_text()
        browser.close()
    (ARTIFACTS / "demo-timing.json").write_text(json.dumps({"startup_to_first_answer_s": round(first_answer_s, 1)}))


def _chromium(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"])


def _sign_in(browser, url: str, name: str, password: str):
    """A new page (of a browser, or of a context: another user's cookies) signed in as ``name``."""
    page = browser.new_page()
    page.goto(url)
    page.locator("input[type=text]").first.fill(name)
    page.locator("input[type=password]").fill(password)
    page.get_by_role("button", name="Login").click()
    page.locator("#signed-in").get_by_text(name).wait_for(timeout=30_000)
    return page


def _choose_library(page, name: str) -> None:
    """Pick a library at the top of the page, and wait for the library tab (which it opens) to show it."""
    page.locator("#library-pick input").click()
    page.get_by_role("option", name=name).click()
    page.get_by_role("tab", name="文档库").click()
    page.locator("#stats").get_by_text(f"文档库 {name}").wait_for(timeout=30_000)


def test_browser_office_libraries_conversation_and_feedback(office_demo, tmp_path) -> None:
    """Two users with different roles: alice (editor) fills the library 新闻, holds a two-turn conversation whose
    second question needs the first, rates the answer and exports the feedback; bob (viewer) may not upload."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium chromium-driver)")
    playwright = pytest.importorskip("playwright.sync_api")
    from rag.evaluation.feedback import FeedbackStore

    url, _, _, root = office_demo
    ARTIFACTS.mkdir(exist_ok=True)
    doc = tmp_path / "南疆简讯.txt"
    doc.write_text("南疆简讯。喀什地区妇女儿童工作会议由副专员阿依古丽主持，部署了儿童友好社区建设。\n"
                   "和田地区妇女儿童工作会议由副专员热依拉主持，表彰了先进集体。", encoding="utf-8")
    with playwright.sync_playwright() as p:
        browser = _chromium(p)
        page = _sign_in(browser.new_context(viewport={"width": 1280, "height": 1100}), url, "alice", "alice-password")
        _choose_library(page, "新闻")
        page.locator("#upload input[type=file]").set_input_files(str(doc))
        page.locator("#ingest").click()
        page.locator("#ingest-report").get_by_text("新增 1 篇").wait_for(timeout=60_000)

        page.get_by_role("tab", name="对话").click()
        box = page.locator("#chat-input textarea, #chat-input input").first
        box.fill("喀什地区妇女儿童工作会议由谁主持？")
        box.press("Enter")
        page.locator("#chat").get_by_text("阿依古丽").first.wait_for(timeout=60_000)
        box.fill("那和田地区呢？")
        box.press("Enter")
        page.locator("#chat").get_by_text("热依拉").first.wait_for(timeout=60_000)
        # How the follow-up was understood is shown, and the turn's own sources.
        assert "和田地区妇女儿童工作会议由谁主持" in page.locator("#chat").inner_text()
        page.locator("#chat-sources").get_by_text("南疆简讯").first.wait_for(timeout=10_000)
        page.locator("#chat-comment textarea, #chat-comment input").first.fill("准确")
        page.locator("#chat-up").click()
        page.locator("#chat-rated").get_by_text("已记录").wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "demo-chat.png"), full_page=True)

        page.get_by_role("tab", name="反馈").click()
        page.locator("#export-feedback").click()
        page.locator("#export-report").get_by_text("已导出 1 题").wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "demo-feedback.png"), full_page=True)

        viewer = _sign_in(browser.new_context(viewport={"width": 1280, "height": 1100}), url, "bob", "bob-password")
        _choose_library(viewer, "新闻")
        viewer.locator("#upload input[type=file]").set_input_files(str(doc))
        viewer.locator("#ingest").click()
        viewer.locator("#ingest-report").get_by_text("无权").wait_for(timeout=60_000)
        browser.close()

    records = FeedbackStore(root / "state" / "feedback.sqlite").list(library="新闻")
    assert [(r.user, r.rating, r.comment) for r in records] == [("alice", 1, "准确")]
    assert records[0].question == "和田地区妇女儿童工作会议由谁主持？" and "热依拉" in records[0].answer

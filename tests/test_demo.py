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

from rag.service import RagService, render_answer, render_sources, render_summary
from tests.conftest import DOC_002, SAMPLE

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    from rag.config import Settings

    svc = RagService(Settings(index_dir=root / "index", cache_dir=root / "cache"))
    svc.ingest([SAMPLE])
    yield svc
    svc.close()


def test_service_answers_with_highlighted_sources(service) -> None:
    answer = service.ask("精河縣婦女兒童工作會議由誰主持？")
    markdown, sources = render_answer(answer), render_sources(answer)
    assert "木合塔爾·馬合蘇提" in markdown and "生成方式：extractive" in markdown
    assert "<mark>木合塔尔·马合苏提</mark>" in sources and DOC_002 in sources


def test_service_abstains_honestly(service) -> None:
    markdown = render_answer(service.ask("京东方首发的柔性OLED方案为哪款手机独供？"))
    assert "资料中未找到答案" in markdown and "最接近的段落" in markdown


def test_service_library_operations(service, tmp_path) -> None:
    before = service.stats().documents
    new = tmp_path / "新闻.txt"
    new.write_text("喀什地区召开第三次妇女儿童工作会议，会议由副专员阿依古丽主持。", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    report = service.ingest([new, tmp_path / "empty.txt"])
    assert report.added == ["新闻.txt"] and report.skipped[0]["reason"] == "empty file"
    assert service.stats().documents == before + 1
    assert service.ask("喀什地区第三次妇女儿童工作会议由谁主持？").answer == "阿依古丽"
    assert service.remove("新闻.txt") and not service.remove("新闻.txt")
    assert service.stats().documents == before


def test_service_summaries(service, tmp_path) -> None:
    summary = service.summarize(["000_073935cdbaaa5940.txt", "no-such-doc"], "short")
    assert len(summary) == 1 and "拉薩" in render_summary(summary[0]) and "出处" in render_summary(summary[0])
    topic = render_summary(service.summarize_topic("儿童友好城市建设"))
    assert topic.count("\n- ") >= 2
    counts = service.summarize_library(tmp_path / "all.jsonl", "short")
    assert counts["summarised"] == service.stats().documents and (tmp_path / "all.md").exists()


def test_concurrent_questions_do_not_mix(service) -> None:
    from concurrent.futures import ThreadPoolExecutor

    questions = ["甘孜州女性公务员比例达到多少？", "安州区区长是谁？", "甘孜州妇女之家达到多少个？"] * 4
    expected = {"甘孜州女性公务员比例达到多少？": "39.61%", "安州区区长是谁？": "李昊天", "甘孜州妇女之家达到多少个？": "2563个"}
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(service.ask, questions))
    assert [a.question for a in answers] == questions
    assert all(a.answer == expected[a.question] for a in answers)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def running_demo(tmp_path_factory):
    """demo.py in a subprocess on a free localhost port, over a fresh index of the sample corpus."""
    root = tmp_path_factory.mktemp("demo")
    port = _free_port()
    env = {**os.environ, "RAG_INDEX_DIR": str(root / "index"), "RAG_CACHE_DIR": str(root / "cache"),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(root / "demo.log", "w")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(ROOT / "demo.py"), "--port", str(port)], cwd=ROOT, env=env,
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
    yield url, started
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


def test_gradio_client_calls_the_ask_api(running_demo) -> None:
    gradio_client = pytest.importorskip("gradio_client")
    url, _ = running_demo
    client = gradio_client.Client(url, verbose=False)
    markdown, sources, payload = client.predict("第五次全区妇女儿童工作会议在哪里召开？", api_name="/ask")
    answer = json.loads(payload)
    assert answer["answer"] == "拉萨" and not answer["abstained"] and answer["generator"] == "extractive"
    assert answer["sources"][0]["doc_id"] == "000_073935cdbaaa5940.txt"
    assert "拉萨" in markdown and "<mark>" in sources


def test_browser_question_and_upload(running_demo, tmp_path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium chromium-driver)")
    playwright = pytest.importorskip("playwright.sync_api")
    url, started = running_demo
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        box = page.locator("#question textarea, #question input").first
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

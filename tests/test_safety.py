"""Nothing exposed, nothing lost: each defect of issue 15 reproduced, on the command line and the index.

(The web endpoints, login and uploads are exercised against a running demo in ``test_demo.py``.)
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rag.app.access import AccessError, UserStore, hash_password, verify_password
from rag.app.uploads import UploadGate
from rag.cli import main
from rag.index.schema import FORMAT_VERSION
from rag.index.store import IndexStore
from tests.conftest import DOC_000, DOC_002, SAMPLE

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(tmp_path, monkeypatch, shared_cache):
    """The CLI's environment: an index in the test's folder, the embedding cache shared."""
    monkeypatch.setenv("RAG_CACHE_DIR", str(shared_cache))
    monkeypatch.setenv("RAG_INDEX_DIR", str(tmp_path / "index"))
    return tmp_path


def rag(*args: str | bytes, cwd: Path = ROOT, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``rag`` in a subprocess, for what only a real process shows: argv bytes, pipes, exit codes, tracebacks."""
    return subprocess.run([sys.executable, "-m", "rag.cli", *args], cwd=cwd, capture_output=True, input=stdin,
                          text=True, encoding="utf-8", errors="replace", env=os.environ.copy(), timeout=300)


def doc_ids(index: Path) -> list[str]:
    with IndexStore.open(index) as store:
        return [d["doc_id"] for d in store.list_documents()]


# -- 2. ids that cannot collide silently -----------------------------------------------------------------------
def test_two_files_of_the_same_name_are_two_documents(env, capsys) -> None:
    for dept, text in (("deptA", "甲部门报告：本年度举办培训班12期。"), ("deptB", "乙部门报告：本年度走访家庭300户。")):
        (env / dept).mkdir()
        (env / dept / "report.txt").write_text(text, encoding="utf-8")
    assert main(["ingest", str(env / "deptA" / "report.txt"), "--quiet"]) == 0
    assert main(["ingest", str(env / "deptB" / "report.txt"), "--quiet"]) == 0
    ids = doc_ids(env / "index")
    assert ids == sorted([str(env / "deptA" / "report.txt"), str(env / "deptB" / "report.txt")])
    with IndexStore.open(env / "index") as store:
        assert "培训班" in store.document(ids[0])["text"] and "走访" in store.document(ids[1])["text"]


def test_an_id_held_by_another_source_is_refused_unless_replaced(env, capsys) -> None:
    for dept, text in (("deptA", "甲部门报告：本年度举办培训班12期。"), ("deptB", "乙部门报告：本年度走访家庭300户。")):
        (env / dept).mkdir()
        (env / dept / "report.txt").write_text(text, encoding="utf-8")
    assert main(["ingest", str(env / "deptA"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["ingest", str(env / "deptB"), "--quiet"]) == 1  # refused: reported, and the exit status says so
    out = capsys.readouterr().out
    assert "skipped" in out and "already belongs to" in out and str(env / "deptA" / "report.txt") in out
    with IndexStore.open(env / "index") as store:
        assert "培训班" in store.document("report.txt")["text"]  # deptA's text is still there

    # A JSONL line reusing a file's id is refused the same way, the file's document kept.
    shutil.copytree(SAMPLE, env / "sample")
    assert main(["ingest", str(env / "sample"), "--quiet"]) == 0
    lines = env / "news.jsonl"
    lines.write_text(json.dumps({"id": DOC_000, "text": "伪造的内容。"}, ensure_ascii=False) + "\n"
                     + json.dumps({"id": "n1", "text": "新闻一：某县召开妇女代表大会。"}, ensure_ascii=False) + "\n",
                     encoding="utf-8")
    capsys.readouterr()
    assert main(["ingest", str(lines), "--quiet", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == ["n1"] and report["conflicts"] == [DOC_000]
    with IndexStore.open(env / "index") as store:
        assert "拉薩" in store.document(DOC_000)["text"]

    # Asked for, the replacement happens.
    assert main(["ingest", str(env / "deptB"), "--quiet", "--replace"]) == 0
    with IndexStore.open(env / "index") as store:
        assert "走访" in store.document("report.txt")["text"]


def test_an_older_index_keeps_its_documents_and_ids(env, tmp_path) -> None:
    """A format 2 index (sources as typed, single files named by their bare name) is upgraded in place; its ids
    still work, and re-ingesting a single file moves it to its new id instead of copying it."""
    assert main(["ingest", str(SAMPLE / DOC_002), "--quiet"]) == 0
    db = sqlite3.connect(env / "index" / "index.sqlite")
    new_id = str((SAMPLE / DOC_002).resolve())
    db.execute("UPDATE documents SET doc_id = ?, source = ? WHERE doc_id = ?",
               (DOC_002, f"data/sample/{DOC_002}", new_id))
    db.execute("UPDATE chunks SET doc_id = ? WHERE doc_id = ?", (DOC_002, new_id))
    db.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
    db.commit()
    db.close()
    with IndexStore.open(env / "index") as store:  # upgraded when opened: the source made absolute, the id kept
        assert store.stats()["format_version"] == FORMAT_VERSION
        assert store.document(DOC_002)["source"] == new_id
    assert main(["ask", "精河县妇女儿童工作会议由谁主持？", "--json"]) == 0
    assert main(["ingest", str(SAMPLE / DOC_002), "--quiet", "--json"]) == 0
    with IndexStore.open(env / "index") as store:
        assert [d["doc_id"] for d in store.list_documents()] == [new_id]
        assert store.document(new_id)["source"] == new_id


# -- 3. one bad input never aborts the batch --------------------------------------------------------------------
def test_unreadable_and_badly_named_inputs_do_not_stop_the_run(env, capsys, monkeypatch) -> None:
    import builtins

    folder = env / "in"
    folder.mkdir()
    (folder / "good.txt").write_text("喀什地区召开妇女儿童工作会议，会议由阿依古丽主持。", encoding="utf-8")
    with open(os.path.join(os.fsencode(folder), "塔城报道.txt".encode("gbk")), "w", encoding="utf-8") as fh:
        fh.write("塔城地区召开第二次妇女儿童工作会议，共有120名代表参加。")
    locked = folder / "locked.jsonl"
    locked.write_text(json.dumps({"id": "x1", "text": "机密。"}, ensure_ascii=False) + "\n", encoding="utf-8")
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):  # what another user's mode-600 file does to a non-root process
        if str(file) == str(locked):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    assert main(["ingest", str(folder), "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["added"]) == ["good.txt", "塔城报道.txt"]
    assert report["skipped"] == [{"source": str(locked), "reason": "cannot read (Permission denied)"}]


def test_a_missing_path_is_an_error_and_the_others_are_ingested(env) -> None:
    result = rag("ingest", str(env / "no-such-folder"), str(SAMPLE / DOC_000), "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no such file or folder" in result.stderr
    assert doc_ids(env / "index") == [str((SAMPLE / DOC_000).resolve())]


# -- 4. a damaged index, and a backup to restore from -------------------------------------------------------------
def _corrupt_a_chunk_page(index: Path) -> None:
    db = sqlite3.connect(index / "index.sqlite")
    leaves = [r[0] for r in db.execute("SELECT pageno FROM dbstat WHERE name = 'chunks' AND pagetype = 'leaf'")]
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(index / "index.sqlite", "r+b") as fh:
        fh.seek((leaves[len(leaves) // 2] - 1) * page_size)
        fh.write(b"\xde\xad" * (page_size // 2))


def test_a_damaged_index_gives_one_line_errors_and_a_backup_restores_it(env, capsys) -> None:
    assert main(["ingest", str(SAMPLE), "--quiet"]) == 0
    assert main(["backup", str(env / "backup")]) == 0
    assert main(["check"]) == 0
    capsys.readouterr()
    _corrupt_a_chunk_page(env / "index")

    for command in (["status"], ["ingest", str(SAMPLE)], ["ask", "甘孜州女性公务员比例达到多少？"],
                    ["search", "安州区妇女儿童工作会"], ["remove", DOC_002]):
        result = rag(*command)
        assert "Traceback" not in result.stderr, command
        if command[0] == "search" and result.returncode == 0:
            continue  # a search that never reads the damaged page has nothing to report
        assert result.returncode == 2, (command, result.stderr)
        error = [line for line in result.stderr.splitlines() if line.startswith("rag: error:")]
        assert len(error) == 1 and "damaged" in error[0] and "rag check" in error[0], (command, result.stderr)
    check = rag("check")
    assert check.returncode == 1 and "DAMAGED: SQLite integrity" in check.stdout

    # The backup is an index of its own: it answers, and it can be copied back in place of the damaged one.
    shutil.rmtree(env / "index")
    shutil.copytree(env / "backup", env / "index")
    assert main(["check"]) == 0
    capsys.readouterr()
    assert main(["ask", "甘孜州女性公务员比例达到多少？", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == "39.61%"
    assert main(["backup", str(env / "backup")]) == 2  # never over an existing copy


def test_check_finds_a_vector_file_that_disagrees_with_the_database(env, capsys) -> None:
    assert main(["ingest", str(SAMPLE), "--quiet"]) == 0
    db = sqlite3.connect(env / "index" / "index.sqlite")
    db.execute("DELETE FROM chunk_terms WHERE rowid = (SELECT min(id) FROM chunks)")
    db.commit()
    db.close()
    capsys.readouterr()
    assert main(["check", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["problems"] == ["1 chunks without BM25 terms"]


# -- 5. a read-only index -----------------------------------------------------------------------------------------
def _read_only_view(folder: Path, *command: str) -> subprocess.CompletedProcess:
    """``command`` with ``folder`` bind-mounted read-only over itself, in a private mount namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    script = f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && exec "$@"'
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *command], capture_output=True, text=True,
                            cwd=ROOT, env=os.environ.copy(), timeout=300)
    if "mount" in result.stderr and ("Operation not permitted" in result.stderr or "permission" in result.stderr):
        pytest.skip(f"cannot make a read-only mount here: {result.stderr.strip()[:200]}")
    return result


def test_a_read_only_index_answers_and_refuses_changes_clearly(env) -> None:
    assert main(["ingest", str(SAMPLE), "--quiet"]) == 0
    index = env / "index"
    ask = _read_only_view(index, sys.executable, "-m", "rag.cli", "ask", "甘孜州女性公务员比例达到多少？", "--json")
    assert ask.returncode == 0, ask.stderr
    assert json.loads(ask.stdout)["answer"] == "39.61%"
    status = _read_only_view(index, sys.executable, "-m", "rag.cli", "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["read_only"] is True
    ingest = _read_only_view(index, sys.executable, "-m", "rag.cli", "ingest", str(SAMPLE), "--quiet")
    assert ingest.returncode == 2 and "Traceback" not in ingest.stderr
    assert "read-only" in ingest.stderr and "re-ingest" not in ingest.stderr


# -- 6. two processes creating one new index ------------------------------------------------------------------------
def _open_new_index(folder: str, barrier) -> str:
    barrier.wait()
    try:
        IndexStore.open(folder, create=True).close()
        return "ok"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def test_creating_a_new_index_is_race_free(tmp_path) -> None:
    context = multiprocessing.get_context("spawn")
    for attempt in range(3):
        folder = str(tmp_path / f"new{attempt}")
        with context.Manager() as manager:
            barrier = manager.Barrier(6)
            with context.Pool(6) as pool:
                results = pool.starmap(_open_new_index, [(folder, barrier)] * 6)
        assert results == ["ok"] * 6
        with IndexStore.open(folder) as store:
            assert store.stats()["documents"] == 0


def test_two_ingests_into_a_new_index(env) -> None:
    procs = [subprocess.Popen([sys.executable, "-m", "rag.cli", "ingest", str(SAMPLE), "--quiet"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for code, err in results:
        assert "Traceback" not in err and "already exists" not in err
        assert code == 0 or (code == 2 and "another process is writing" in err), err
    assert any(code == 0 for code, _ in results)
    assert len(doc_ids(env / "index")) == 5


# -- 7. invalid text in questions -------------------------------------------------------------------------------------
def test_invalid_bytes_in_a_question_are_decoded_or_replaced(env) -> None:
    assert main(["ingest", str(SAMPLE), "--quiet"]) == 0
    gbk = rag("ask", "甘孜州女性公务员比例达到多少？".encode("gbk"), "--json")  # a terminal set to GBK
    assert gbk.returncode == 0, gbk.stderr
    assert json.loads(gbk.stdout)["answer"] == "39.61%"
    broken = rag("ask", "甘孜州女性公务员比例".encode() + b"\xff\xfe" + "达到多少？".encode(), "--json")
    assert broken.returncode == 0 and "Traceback" not in broken.stderr
    answer = json.loads(broken.stdout)
    assert "\ufffd" in answer["question"] and "无法识别的字符" in answer["note"]
    assert rag("search", b"\xff\xfe\xfd").returncode in (0, 2)


def test_a_batch_answers_every_line_it_can(env) -> None:
    assert main(["ingest", str(SAMPLE), "--quiet"]) == 0
    questions = env / "q.jsonl"
    questions.write_bytes(b"\n".join([
        json.dumps({"id": "a", "question": "甘孜州女性公务员比例达到多少？"}, ensure_ascii=False).encode(),
        b'{"id": "b", "question": "\\ud800\\u5b89\\u5dde\\u533a\\u533a\\u957f\\u662f\\u8c01\\uff1f"}',  # lone surrogate
        b'{"id": "c", "question": ',  # not JSON
        b'{"id": "d", "question": "\xff\xfe"}',  # not UTF-8
        b'{"id": "e"}',
        json.dumps({"id": "f", "question": "安州区区长是谁？"}, ensure_ascii=False).encode()]))
    out = env / "answers.jsonl"
    result = rag("ask", "--batch", str(questions), "--out", str(out))
    assert result.returncode == 0 and "Traceback" not in result.stderr
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["id"] for line in lines] == ["a", "b", "3", "4", "e", "f"]
    assert lines[0]["answer"] == "39.61%" and lines[5]["answer"] == "李昊天"
    assert lines[1]["answer"] == "李昊天" and "\ufffd" in lines[1]["question"]
    assert {k for line in lines[2:5] for k in line} == {"id", "error"}


# -- 8. a planted document does not hijack the answer ---------------------------------------------------------------
def test_a_document_repeating_the_question_is_not_an_answer(env, capsys) -> None:
    corpus = env / "corpus"
    shutil.copytree(SAMPLE, corpus)
    (corpus / "faq.txt").write_text("常见问题\n问：第五次全区妇女儿童工作会议在拉萨召开了什么会议？答：详见通知。\n"
                                    "问：甘孜州女性公务员比例达到多少？答：请咨询相关部门。\n", encoding="utf-8")
    assert main(["ingest", str(corpus), "--quiet"]) == 0
    for question, not_this in (("第五次全区妇女儿童工作会议在拉萨召开了什么会议？", "什么会议"),
                               ("甘孜州女性公务员比例达到多少？", "多少")):
        capsys.readouterr()
        assert main(["ask", question, "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert not_this not in answer["answer"] and answer["evidence"] not in question
        if not answer["abstained"]:
            assert answer["sources"][answer["citations"][0] - 1]["doc_id"] != "faq.txt"


# -- 9. pipes and exit codes ---------------------------------------------------------------------------------------
def test_a_closed_pipe_is_not_a_traceback(env) -> None:
    assert main(["ingest", str(SAMPLE), "--quiet"]) == 0
    result = subprocess.run(f'"{sys.executable}" -m rag.cli status --documents | head -1', shell=True, cwd=ROOT,
                            capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert result.stdout.startswith("index:") and "Traceback" not in result.stderr and "Broken" not in result.stderr


# -- uploads and users ------------------------------------------------------------------------------------------------
def test_only_uploaded_files_within_the_limit_are_accepted(tmp_path) -> None:
    uploads = tmp_path / "gradio"
    (uploads / "abc").mkdir(parents=True)
    good = uploads / "abc" / "报告.txt"
    good.write_text("内容", encoding="utf-8")
    big = uploads / "abc" / "big.txt"
    big.write_bytes(b"x" * 2000)
    secret = tmp_path / "secret.txt"
    secret.write_text("机密", encoding="utf-8")
    (uploads / "link.txt").symlink_to(secret)
    # A server file copied into the upload folder by a crafted request: inside the folder, never uploaded.
    (uploads / "cc").mkdir()
    copied = uploads / "cc" / "users.json"
    copied.write_text('{"users": {}}', encoding="utf-8")
    registry = {str(good), str(big), str(uploads / "link.txt"), str(uploads / "gone.txt")}
    gate = UploadGate(uploads, registry)
    accepted, refused = gate.accept([good, big, secret, uploads / "link.txt", uploads / "abc" / ".." / ".." /
                                     "secret.txt", uploads / "gone.txt", copied], max_bytes=1000)
    assert [(u.name, u.path) for u in accepted] == [("报告.txt", good)]
    assert [r.name for r in refused] == ["big.txt", "secret.txt", "link.txt", "secret.txt", "gone.txt", "users.json"]
    assert "过大" in refused[0].reason and refused[1].reason == "不是本次上传的文件"
    assert refused[-1].reason == "不是本次上传的文件" and not copied.exists()  # the crafted copy is deleted at once
    assert not big.exists()  # so is a refused upload
    # An accepted upload serves one request: naming it again is refused.
    assert gate.accept([good], max_bytes=1000)[0] == [] and str(good) not in registry
    gate.discard([good, big, secret, uploads / "link.txt"])
    assert secret.exists() and not (uploads / "abc").exists() and (uploads / "link.txt").is_symlink()


def test_users_are_kept_as_salted_hashes(tmp_path) -> None:
    users = UserStore(tmp_path / "users.json")
    assert not users.exists()
    users.add("alice", "correct horse", "editor")
    with pytest.raises(AccessError, match="already exists"):
        users.add("alice", "another password")
    with pytest.raises(AccessError, match="at least"):
        users.add("bob", "short")
    with pytest.raises(AccessError, match="role"):
        users.add("bob", "long enough", "owner")
    text = (tmp_path / "users.json").read_text(encoding="utf-8")
    assert "correct horse" not in text and oct((tmp_path / "users.json").stat().st_mode & 0o777) == "0o600"
    assert users.authenticate("alice", "correct horse").role == "editor"
    assert users.authenticate("alice", "wrong") is None and users.authenticate("nobody", "correct horse") is None
    a, b = hash_password("same"), hash_password("same")
    assert a != b and verify_password("same", a) and verify_password("same", b)  # salted
    users.set_password("alice", "new password!")
    assert users.authenticate("alice", "correct horse") is None and users.authenticate("alice", "new password!")
    users.remove("alice")
    assert not users.exists()


def test_user_commands(env, monkeypatch) -> None:
    monkeypatch.setenv("RAG_USERS_FILE", str(env / "users.json"))
    added = rag("user", "add", "张三", "--role", "editor", "--password-stdin", stdin="a long password\n")
    assert added.returncode == 0, added.stderr
    listed = rag("user", "list", "--json")
    assert json.loads(listed.stdout) == [{"name": "张三", "role": "editor", "libraries": {}}]
    again = rag("user", "add", "张三", "--password-stdin", stdin="a long password\n")
    assert again.returncode == 2 and "already exists" in again.stderr
    assert rag("user", "add", "李四").returncode == 2  # no terminal to ask, no --password-stdin


# -- issue 28: files that would take the machine down, a full disk, a damaged index file ---------------------------
def test_zip_bombs_are_refused_and_the_rest_of_the_batch_is_ingested(env, capsys, monkeypatch) -> None:
    from tests.test_loaders import make_docx, make_pptx

    folder = env / "in"
    folder.mkdir()
    make_docx(folder / "bomb.docx", padding=30_000_000)
    make_pptx(folder / "zeros.pptx", zeros=40_000_000)
    make_docx(folder / "good.docx", "喀什地区召开妇女儿童工作会议，会议由阿依古丽主持。")
    (folder / "good.txt").write_text("塔城地区召开第二次妇女儿童工作会议，共有120名代表参加。", encoding="utf-8")
    assert main(["ingest", str(folder), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("added 2, updated 0, unchanged 0, removed 0, skipped 2;")
    assert f"skipped {folder / 'bomb.docx'}: refused: word/document.xml in the .docx archive" in out
    assert f"skipped {folder / 'zeros.pptx'}: refused: ppt/media/zeros.bin in the .pptx archive" in out
    assert doc_ids(env / "index") == ["good.docx", "good.txt"]

    # The limits are settings: RAG_MAX_ZIP_MEMBERS reaches the reader.
    monkeypatch.setenv("RAG_MAX_ZIP_MEMBERS", "5")
    make_docx(folder / "more.docx", "博州妇联召开家庭教育工作推进会。")
    assert main(["ingest", str(folder / "more.docx"), "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == [] and "(max_zip_members)" in report["skipped"][0]["reason"]


def test_without_the_ocr_extra_a_blank_pdf_is_skipped_and_the_others_ingested(env, capsys, monkeypatch) -> None:
    from tests.test_loaders import blank_pdf, make_docx

    for module in ("pypdfium2", "rapidocr_onnxruntime"):
        monkeypatch.setitem(sys.modules, module, None)  # the base install: `import pypdfium2` fails
    folder = env / "in"
    folder.mkdir()
    (folder / "good.txt").write_text("塔城地区召开第二次妇女儿童工作会议，共有120名代表参加。", encoding="utf-8")
    make_docx(folder / "good.docx", "喀什地区召开妇女儿童工作会议，会议由阿依古丽主持。")
    blank_pdf(folder / "scan.pdf")
    assert main(["ingest", str(folder), "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["added"]) == ["good.docx", "good.txt"]
    assert report["skipped"] == [{"source": str(folder / "scan.pdf"), "reason": (
        "PDF has no text layer: scanned pages need the OCR extra (pip install -e '.[ocr]'; pypdfium2 is not "
        "installed)")}]


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("rag: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_full_disk_is_reported_as_full_not_as_damage(env, capsys, monkeypatch) -> None:
    from rag.index import schema

    (env / "a.txt").write_text("塔城地区召开第二次妇女儿童工作会议，共有120名代表参加。", encoding="utf-8")
    assert main(["ingest", str(env / "a.txt"), "--quiet"]) == 0
    real_connect = schema.connect

    def full_disk(db_path, read_only=False):  # SQLite's own "database or disk is full": no page can be added
        db, read_only = real_connect(db_path, read_only)
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
        return db, read_only

    monkeypatch.setattr(schema, "connect", full_disk)
    (env / "b.txt").write_text("喀什地区召开妇女儿童工作会议，会议由阿依古丽主持。" * 400, encoding="utf-8")
    capsys.readouterr()
    assert main(["ingest", str(env / "b.txt"), "--quiet"]) == 2
    error = _one_error_line(capsys.readouterr().err)
    assert "disk is full" in error and "damaged" not in error and "restore" not in error.lower(), error
    monkeypatch.setattr(schema, "connect", real_connect)
    assert main(["check"]) == 0 and doc_ids(env / "index") == [str(env / "a.txt")]  # nothing was lost

    # The vector file of a new index cannot be written: the operating system's "No space left on device".
    fresh = env / "fresh"
    fresh.mkdir()
    (fresh / "vectors.faiss.tmp").symlink_to("/dev/full")
    capsys.readouterr()
    assert main(["ingest", str(env / "a.txt"), "--quiet", "--index", str(fresh)]) == 2
    error = _one_error_line(capsys.readouterr().err)
    assert "disk is full" in error and "damaged" not in error and "restore" not in error.lower(), error
    assert not (fresh / "vectors.faiss.tmp").exists()  # nothing half-written is left to fill the disk further


def test_check_finds_an_index_file_too_damaged_to_open(env, capsys) -> None:
    (env / "a.txt").write_text("塔城地区召开第二次妇女儿童工作会议，共有120名代表参加。", encoding="utf-8")
    assert main(["ingest", str(env / "a.txt"), "--quiet"]) == 0
    with open(env / "index" / "index.sqlite", "r+b") as fh:
        fh.write(b"\xde\xad\xbe\xef" * 25)  # garbage over SQLite's header
    capsys.readouterr()
    assert main(["check"]) == 1  # "rag check found damage", as the README says
    captured = capsys.readouterr()
    assert "DAMAGED: " in captured.out and "not a database" in captured.out and not captured.err
    assert main(["check", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and "not a database" in report["problems"][0]
    assert main(["status"]) == 2  # every other command: an error, in one line
    error = _one_error_line(capsys.readouterr().err)
    assert "damaged" in error and "rag check" in error
    assert main(["check", "--index", str(env / "nothing-here")]) == 2  # no index at all is an error, not damage

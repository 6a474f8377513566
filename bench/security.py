"""Attack the real server the way a hostile office user would, and report what held.

    python bench/security.py --out runs/security

Starts ``demo.py`` twice on loopback, each over a fresh index of the sample corpus: an office server with users
(alice editor, bob viewer, carol a viewer with ``none`` on the library ``secret``, dave whose key is revoked), and
an open one (no users, this machine only) whose Python cannot import ``pypdfium2`` (the base install: no OCR
extra). Then it runs one probe per hole of issue #28 that an HTTP client can reach (1–7 and 10) and writes
``report.json`` / ``report.md``: each probe's attack, what a safe server does, what this one did. Exit status 1 when
any probe found the hole open. ``tests/test_security.py`` runs the same probes in the test suite.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.app.access import UserStore  # noqa: E402
from rag.app.libraries import Libraries  # noqa: E402
from rag.config import Settings  # noqa: E402

log = logging.getLogger("bench.security")
SECRET_TEXT = "机密备忘：甲单位年度预算为八百万元。"
GOOD_TEXT = "喀什地区召开第三次妇女儿童工作会议，会议由副专员阿依古丽主持。"


@dataclass
class Finding:
    """One probe's result."""

    item: str
    attack: str
    expected: str
    observed: str
    held: bool
    seconds: float = 0.0


@dataclass
class Server:
    """A running ``demo.py``: its URL, folders and process."""

    url: str
    root: Path
    uploads: Path
    process: subprocess.Popen
    keys: dict[str, str]
    env: dict[str, str]

    def rag(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """Run ``rag ARGS`` against this installation (what an administrator types while the server runs)."""
        return subprocess.run([sys.executable, "-m", "rag.cli", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=120, input=stdin)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(root: Path, cache: Path, *, users: bool, block_modules: tuple[str, ...] = ()) -> Iterator[Server]:
    """``demo.py`` on a free loopback port over ``root`` (a fresh index of the sample corpus). ``users``: the
    office's users and a second library ``secret``; ``block_modules``: packages its Python cannot import."""
    root.mkdir(parents=True, exist_ok=True)
    keys: dict[str, str] = {}
    if users:
        store = UserStore(root / "users.json")
        for name, role in (("alice", "editor"), ("bob", "viewer"), ("carol", "viewer"), ("dave", "editor")):
            store.add(name, f"{name}-password", role)
            keys[name] = store.create_key(name)
        store.grant("carol", "secret", "none")
        store.revoke_keys("dave")
        Libraries(Settings(index_dir=root / "index")).create("secret")
    env = {**os.environ, "RAG_INDEX_DIR": str(root / "index"), "RAG_CACHE_DIR": str(cache),
           "RAG_USERS_FILE": str(root / "users.json"), "GRADIO_TEMP_DIR": str(root / "uploads"),
           "RAG_GENERATOR": "extractive", "GRADIO_ANALYTICS_ENABLED": "False", "RAG_MAX_REQUEST_MB": "20"}
    if block_modules:
        shim = root / "blocked-modules"
        for name in block_modules:
            (shim / name).mkdir(parents=True, exist_ok=True)
            (shim / name / "__init__.py").write_text(f"raise ModuleNotFoundError({f'No module named {name!r}'!r}, "
                                                     f"name={name!r})\n", encoding="utf-8")
        env["PYTHONPATH"] = os.pathsep.join([str(shim), env.get("PYTHONPATH", "")])
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    with open(root / "demo.log", "w") as out:
        process = subprocess.Popen([sys.executable, str(ROOT / "demo.py"), "--port", str(port)], cwd=ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(480):
            if process.poll() is not None:
                raise RuntimeError(f"demo.py exited: {(root / 'demo.log').read_text()[-2000:]}")
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.25)
        else:
            raise RuntimeError("demo.py did not start in 120 s")
        yield Server(url, root, root / "uploads", process, keys, env)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# -- clients ------------------------------------------------------------------------------------------------------
@contextmanager
def page(server: Server, user: str | None = None) -> Iterator[httpx.Client]:
    """An HTTP client of the page, signed in as ``user`` (``None``: nobody)."""
    with httpx.Client(base_url=server.url, timeout=120) as client:
        if user is not None:
            client.post("login", data={"username": user, "password": f"{user}-password"}).raise_for_status()
        yield client


def call(client: httpx.Client, api: str, data: list[Any]) -> tuple[str, Any]:
    """A raw call of a page endpoint (what a script sends, no browser): ``("complete" | "error", data)``."""
    reply = client.post(f"gradio_api/call/{api}", json={"data": data})
    if reply.status_code != 200:
        return "error", reply.text
    stream = client.get(f"gradio_api/call/{api}/{reply.json()['event_id']}").text
    event, payload = "error", None
    for block in stream.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines.get("event") in ("complete", "error"):
            event, payload = lines["event"], json.loads(lines.get("data", "null"))
    return event, payload


def upload(client: httpx.Client, name: str, content: bytes) -> dict[str, Any]:
    """A file uploaded the way the page uploads it: the FileData to pass to an endpoint."""
    reply = client.post("gradio_api/upload", files={"files": (name, content)})
    reply.raise_for_status()
    return {"path": reply.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def api(server: Server, user: str | None) -> httpx.Client:
    """An HTTP client of ``/v1`` with ``user``'s key (``None``: no key)."""
    headers = {"Authorization": f"Bearer {server.keys[user]}"} if user else {}
    return httpx.Client(base_url=server.url + "v1/", headers=headers, timeout=120)


def documents(server: Server, library: str = "default") -> list[str]:
    """The ids of a library's documents, as an administrator's ``rag status`` sees them."""
    listed = server.rag("status", "--documents", "--json", *(["--library", library] if library != "default" else []))
    return [d["doc_id"] for d in json.loads(listed.stdout).get("documents_list", [])] if listed.returncode == 0 else []


def _raw_request(server: Server, head: str, timeout: float = 10.0) -> str:
    """Send ``head`` (request line and headers, no body) on a socket and return the status line; a server that
    waits for the body instead of answering times out (``"timeout"``)."""
    host, port = server.url.removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1"))
        try:
            return sock.recv(4096).decode("latin-1").split("\r\n", 1)[0]
        except TimeoutError:
            return "timeout"


# -- the probes ------------------------------------------------------------------------------------------------
def probe_server_files(office: Server) -> Finding:
    """1: an editor names a server file in a raw ingest or evaluate request."""
    secret = office.root / "outside" / "private-notes.txt"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text(SECRET_TEXT, encoding="utf-8")
    crafted = {"path": str(secret), "meta": {"_type": "gradio.FileData"}}
    users_file = {"path": str(office.root / "users.json"), "meta": {"_type": "gradio.FileData"}}
    with page(office, "alice") as alice:
        ingest = call(alice, "ingest", [[crafted], False, "default"])
        evaluate = call(alice, "evaluate", [users_file, 1, "default"])
        shown = call(alice, "show_document", ["private-notes.txt", "default"])
    copies = [p for p in office.uploads.rglob("*") if p.is_file() and p.read_bytes() in
              (secret.read_bytes(), (office.root / "users.json").read_bytes())]
    stored = "private-notes.txt" in documents(office)
    held = not stored and not copies and SECRET_TEXT not in json.dumps(shown, ensure_ascii=False) and \
        "scrypt" not in json.dumps(evaluate, ensure_ascii=False)
    return Finding("1", "POST /gradio_api/call/ingest and /evaluate naming a server file (as an editor)",
                   "refused; nothing of the file stored, copied into the upload folder or shown",
                   f"ingest: {ingest[0]}; evaluate: {evaluate[0]}; stored: {stored}; copies in the upload folder: "
                   f"{len(copies)}", held)


def probe_renamed_library(office: Server) -> Finding:
    """2: a library renamed, then deleted, by ``rag library`` while the server runs, read by a user with
    ``none`` on it."""
    question = {"model": "secret", "messages": [{"role": "user", "content": "会议由谁主持？"}]}
    with api(office, "carol") as carol, api(office, "alice") as alice:
        before = carol.post("chat/completions", json=question).status_code
        alice.post("chat/completions", json=question)  # the server has the library open now
        renamed = office.rag("library", "rename", "secret", "secret2").returncode
        old_name = carol.post("chat/completions", json=question).status_code
        new_name = carol.post("chat/completions", json=question | {"model": "secret2"}).status_code
        deleted = office.rag("library", "delete", "secret2").returncode
        after_delete = alice.post("chat/completions", json=question | {"model": "secret2"}).status_code
    held = before == 403 and renamed == 0 and old_name == 404 and new_name == 403 and deleted == 0 and \
        after_delete == 404
    return Finding("2", "`rag library rename secret secret2`, then `rag library delete secret2`, while the server "
                   "runs; carol has none on secret",
                   "carol: 403 before, 404 by the old name, 403 by the new name; anyone: 404 once deleted",
                   f"before {before}; old name {old_name}; new name {new_name}; after delete {after_delete}", held)


def probe_users_added_later(open_server: Server) -> Finding:
    """3: a server started with no users, then ``rag user add``."""
    with api(open_server, None) as anonymous:
        before = anonymous.get("models").status_code
        open_server.rag("user", "add", "erin", "--role", "editor", "--password-stdin", stdin="erin-password\n")
        after = anonymous.get("models").status_code
        config = httpx.get(open_server.url + "config", timeout=30)
        login_asked = config.status_code == 401 or bool(config.json().get("auth_required"))
        with page(open_server) as nobody:
            asked = call(nobody, "ask", ["安州区区长是谁？", [], "default"])
    UserStore(open_server.root / "users.json").remove("erin")
    held = before == 200 and after == 401 and login_asked and "李昊天" not in json.dumps(asked, ensure_ascii=False)
    return Finding("3", "start with no users (loopback), then add a user while it runs",
                   "open before; then /v1 wants a key and the page a login",
                   f"/v1/models before {before}, after {after}; page asks for a login: {login_asked}; "
                   f"anonymous page question: {asked[0]}", held)


def _docx_bomb(inflated_mb: int) -> bytes:
    """A real .docx (made by python-docx) whose document.xml inflates to ``inflated_mb`` MB of paragraphs, each a
    parse node: what a parser that trusts the archive builds a tree of gigabytes from."""
    import docx

    made = io.BytesIO()
    docx.Document().save(made)
    paragraph = b"<w:p><w:r><w:t>x</w:t></w:r></w:p>"
    block = paragraph * ((1 << 20) // len(paragraph))
    body = io.BytesIO()
    with zipfile.ZipFile(made) as source, zipfile.ZipFile(body, "w", zipfile.ZIP_DEFLATED) as z:
        for info in source.infolist():
            if info.filename != "word/document.xml":
                z.writestr(info, source.read(info))
                continue
            head, _, tail = source.read(info).partition(b"<w:body>")
            with z.open("word/document.xml", "w", force_zip64=True) as member:
                member.write(head + b"<w:body>")
                for _ in range(inflated_mb):
                    member.write(block)
                member.write(tail)
    return body.getvalue()


def _peak_rss_mb(process: subprocess.Popen) -> float:
    try:
        status = Path(f"/proc/{process.pid}/status").read_text()
    except OSError:
        return float("nan")
    return next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:"))


def probe_zip_bomb(office: Server) -> Finding:
    """4: a .docx that inflates to 400 MB, uploaded with a good file."""
    bomb = _docx_bomb(400)
    before = _peak_rss_mb(office.process)
    started = time.monotonic()
    with api(office, "alice") as alice:
        reply = alice.post("documents", params={"model": "default"},
                           files=[("files", ("bomb.docx", bomb)), ("files", ("喀什.txt", GOOD_TEXT.encode()))])
    seconds = time.monotonic() - started
    after = _peak_rss_mb(office.process)
    body = reply.json() if reply.headers.get("content-type", "").startswith("application/json") else {}
    skipped = [s.get("source", "") for s in body.get("skipped", [])]
    held = reply.status_code == 200 and "喀什.txt" in body.get("added", []) and any("bomb.docx" in s for s in skipped) \
        and seconds < 30 and after - before < 300
    return Finding("4", f"POST /v1/documents: a {len(bomb) / 1e6:.1f} MB .docx inflating to 400 MB, and a good file",
                   "the bomb skipped with a reason, the good file ingested, in seconds and without the memory",
                   f"HTTP {reply.status_code}; added {body.get('added')}; skipped {skipped}; {seconds:.1f} s; "
                   f"server peak memory {before:.0f} → {after:.0f} MB", held, seconds)


def _blank_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def probe_blank_pdf(open_server: Server) -> Finding:
    """5: a text-less PDF page uploaded with two good files, on a server without the OCR extra."""
    files = [("files", ("一.txt", GOOD_TEXT.encode())), ("files", ("blank.pdf", _blank_pdf())),
             ("files", ("二.txt", "和田地区妇女儿童工作会议由副专员热依拉主持。".encode()))]
    with api(open_server, None) as anyone:
        reply = anyone.post("documents", params={"model": "default"}, files=files)
    body = reply.json()
    reasons = [s.get("reason", "") for s in body.get("skipped", [])]
    held = reply.status_code == 200 and sorted(body.get("added", [])) == ["一.txt", "二.txt"] and \
        any("OCR" in r or "ocr" in r for r in reasons)
    return Finding("5", "POST /v1/documents: two good files and a blank PDF, server without pypdfium2",
                   "the good files ingested; the PDF skipped with a note on the OCR extra",
                   f"HTTP {reply.status_code}; added {body.get('added')}; skipped reasons {reasons}", held)


def probe_unauthenticated_upload(office: Server) -> Finding:
    """6: an upload without a key, and one declaring a body over the size cap."""
    host = office.url.removeprefix("http://").rstrip("/")
    no_key = _raw_request(office, f"POST /v1/documents HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data;"
                                  f" boundary=x\r\nContent-Length: 10000000\r\n\r\n")
    too_big = _raw_request(office, f"POST /v1/documents HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                                   f"{office.keys['alice']}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                                   f"Content-Length: 1000000000\r\n\r\n")
    held = " 401 " in no_key + " " and " 413 " in too_big + " "
    return Finding("6", "POST /v1/documents declaring 10 MB without a key; declaring 1 GB with one (body not sent)",
                   "401 and 413 at once, before any of the body is read",
                   f"without a key: {no_key!r}; over the cap: {too_big!r}", held)


def probe_cross_site(open_server: Server) -> Finding:
    """7: a cross-site POST from a web page, and a rebound DNS name, on the open server."""
    files = {"files": ("evil.txt", "恶意网页添加的文档。".encode())}
    with httpx.Client(base_url=open_server.url, timeout=30) as client:
        cross = client.post("v1/documents", files=files, headers={"Origin": "http://evil.example.com"}).status_code
        fetch = client.post("v1/documents", files=files, headers={"Sec-Fetch-Site": "cross-site"}).status_code
        rebound = client.get("v1/models", headers={"Host": "evil.example.com:80"}).status_code
        same = client.get("v1/models", headers={"Origin": open_server.url.rstrip("/")}).status_code
    stored = "evil.txt" in documents(open_server)
    held = cross == 403 and fetch == 403 and rebound == 403 and same == 200 and not stored
    return Finding("7", "POST /v1/documents with Origin: http://evil.example.com, or Sec-Fetch-Site: cross-site; "
                   "GET /v1/models with Host: evil.example.com",
                   "403 each, nothing stored; the server's own origin still works",
                   f"cross-site Origin {cross}; Sec-Fetch-Site {fetch}; foreign Host {rebound}; own origin {same}; "
                   f"stored: {stored}", held)


def probe_named_endpoints(office: Server) -> Finding:
    """10: the page's named endpoints with a library other than default."""
    office.rag("library", "create", "新闻")
    with page(office, "alice") as alice:
        added = call(alice, "ingest", [[upload(alice, "喀什.txt", GOOD_TEXT.encode())], False, "新闻"])
        asked = call(alice, "ask", ["喀什地区第三次妇女儿童工作会议由谁主持？", [], "新闻"])
    answer = json.loads(asked[1][2]) if asked[0] == "complete" else {}
    held = added[0] == "complete" and "新增 1 篇" in added[1][0] and answer.get("answer") == "阿依古丽"
    return Finding("10", "/gradio_api/call/ingest and /ask with the library 新闻",
                   "accepted: the document added to 新闻 and answered from it",
                   f"ingest: {added[0]} {str(added[1])[:60]!r}; ask: {answer.get('answer')!r}", held)


# Which server each item's probe runs against (by issue item).
OFFICE_PROBES: dict[str, Callable[[Server], Finding]] = {
    "1": probe_server_files, "2": probe_renamed_library, "4": probe_zip_bomb, "6": probe_unauthenticated_upload,
    "10": probe_named_endpoints}
OPEN_PROBES: dict[str, Callable[[Server], Finding]] = {
    "3": probe_users_added_later, "5": probe_blank_pdf, "7": probe_cross_site}


def run_probes(work: Path, cache: Path) -> list[Finding]:
    """Both servers, every probe, in the order of the issue."""
    findings = []
    with running(work / "office", cache, users=True) as office:
        findings += [run_probe(item, probe, office) for item, probe in OFFICE_PROBES.items()]
    with running(work / "open", cache, users=False, block_modules=("pypdfium2",)) as open_server:
        findings += [run_probe(item, probe, open_server) for item, probe in OPEN_PROBES.items()]
    return sorted(findings, key=lambda f: int(f.item))


def run_probe(item: str, probe: Callable[[Server], Finding], server: Server) -> Finding:
    """One probe, timed; one that crashes or gets no answer has found a hole."""
    started = time.monotonic()
    try:
        finding = probe(server)
    except Exception as exc:
        finding = Finding(item, probe.__name__, "an answer", f"{type(exc).__name__}: {exc}", False)
        log.exception("probe %s failed", probe.__name__)
    finding.seconds = finding.seconds or round(time.monotonic() - started, 1)
    return finding


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Security probe (issue #28, items 1–7 and 10)", "",
             f"`python bench/security.py --out {report['out']}` · {report['when']} · "
             f"{sum(f['held'] for f in report['findings'])}/{len(report['findings'])} held", "",
             "| item | attack | a safe server | this server | held |", "|---|---|---|---|---|"]
    for f in report["findings"]:
        lines.append(f"| {f['item']} | {f['attack']} | {f['expected']} | {f['observed']} | "
                     f"{'yes' if f['held'] else '**NO**'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/security"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="rag-security-") as work:
        findings = run_probes(Path(work), Path(work) / "cache")
    sys.path.insert(0, str(ROOT / "bench"))
    from reporting import write_report

    report = {"out": str(args.out), "when": time.strftime("%Y-%m-%d %H:%M"),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
              "findings": [asdict(f) for f in findings]}
    print(write_report(args.out, report, markdown))
    return 0 if all(f.held for f in findings) else 1


if __name__ == "__main__":
    raise SystemExit(main())

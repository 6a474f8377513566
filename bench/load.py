"""Many API users at once: simultaneous clients ask different questions through the OpenAI-compatible API.

    python bench/load.py --out runs/bench-load [--users 20] [--rounds 2] [--generators extractive,auto]

The server is the product's own (``rag.web.server.serve``: the page and ``/v1`` in one process, uvicorn on loopback), over
the sample corpus. Each of ``--users`` threads is one client with its own API key, asking the sample gold
questions assigned to it (different questions per user) ``--rounds`` times, all starting together. Reported per
generator: answers, answers crossed (the reply names another question) or lost (an error or no reply), throughput
(answers per second of wall time) and latency p50/p95 per request; with a model, requests queue for it (one model
instance per process). The answers of the extractive run are checked against the gold answers as well.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reporting import percentiles, write_report  # noqa: E402  (bench/, the script's own folder)

from rag.app.access import LOCAL_USER, UserStore  # noqa: E402
from rag.app.service import RagService  # noqa: E402
from rag.app.signin import SignIn  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.evaluation.evaluate import load_gold, run_info  # noqa: E402
from rag.normalize import normalize  # noqa: E402
from rag.web.server import serve as serve_app  # noqa: E402

log = logging.getLogger("bench.load")
SAMPLE = ROOT / "data" / "sample"
GOLD = ROOT / "eval" / "data" / "sample_qa.jsonl"


def serve(service: RagService, users: UserStore) -> tuple[str, Any, threading.Thread]:
    """The product's app on a free loopback port: (base URL, server, thread)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(serve_app(service, SignIn(users, open_when_empty=True)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/v1", server, thread


def run(generator: str, users_n: int, rounds: int, work: Path) -> dict[str, Any]:
    """One load run with ``generator``; see the module docstring."""
    from openai import OpenAI

    settings = load_settings().replace(index_dir=work / generator / "index", users_file=work / generator / "users.json",
                                       generator=generator)
    users = UserStore(settings.users_file)
    keys = []
    for i in range(users_n):
        users.add(f"user{i:02d}", "load-test-password", "viewer")
        keys.append(users.create_key(f"user{i:02d}"))
    started = time.perf_counter()
    service = RagService(settings)
    service.ingest_paths(LOCAL_USER, [SAMPLE])
    load_s = time.perf_counter() - started
    base, server, thread = serve(service, users)
    questions = [item for item in load_gold(GOLD) if item.answers]
    assigned = [[questions[(u + users_n * r) % len(questions)] for r in range(rounds)] for u in range(users_n)]
    barrier = threading.Barrier(users_n)

    def user(index: int) -> list[dict[str, Any]]:
        client = OpenAI(base_url=base, api_key=keys[index], max_retries=0, timeout=600)
        barrier.wait()  # every user starts at once
        results = []
        for item in assigned[index]:
            began = time.perf_counter()
            try:
                reply = client.chat.completions.create(model="default", messages=[
                    {"role": "user", "content": item.question}])
                results.append({"id": item.id, "asked": item.question, "seconds": time.perf_counter() - began,
                                "echoed": reply.model_extra["rag"]["question"],
                                "answer": reply.choices[0].message.content, "gold": item.answers,
                                "generator": reply.model_extra["rag"]["generator"]})
            except Exception as exc:  # counted as lost
                results.append({"id": item.id, "asked": item.question, "error": repr(exc)})
        return results

    wall_started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=users_n) as pool:
        results = [r for batch in pool.map(user, range(users_n)) for r in batch]
    wall = time.perf_counter() - wall_started
    server.should_exit = True
    thread.join(timeout=30)
    generator_name = service.generator.name if service.generator else "extractive"
    service.close()
    answered = [r for r in results if "error" not in r]
    crossed = [r for r in answered if r["echoed"] != r["asked"]]
    correct = [r for r in answered if any(normalize(g) in normalize(r["answer"]) for g in r["gold"])]
    return {"generator": generator_name, "users": users_n, "rounds": rounds, "requests": len(results),
            "answered": len(answered), "lost": len(results) - len(answered), "crossed": len(crossed),
            "gold_in_answer": round(len(correct) / max(1, len(answered)), 3), "wall_s": round(wall, 2),
            "throughput_per_s": round(len(answered) / wall, 3), "startup_s": round(load_s, 1),
            **percentiles([r["seconds"] for r in answered]),
            "errors": sorted({r["error"][:200] for r in results if "error" in r})[:5]}


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table."""
    lines = [f"# Load: {report['runs'][0]['users'] if report['runs'] else 0} simultaneous API users",
             "", f"{report['info']}", "",
             "| generator | requests | answered | lost | crossed | gold in answer | throughput /s | p50 s | p95 s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        lines.append(f"| {r['generator']} | {r['requests']} | {r['answered']} | {r['lost']} | {r['crossed']} | "
                     f"{r['gold_in_answer']} | {r['throughput_per_s']} | {r.get('p50_s', '—')} | {r.get('p95_s', '—')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the load benchmark and write report.json and report.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--users", type=int, default=20, help="simultaneous API users (default 20)")
    parser.add_argument("--rounds", type=int, default=2, help="questions each user asks, one after another")
    parser.add_argument("--generators", default="extractive,auto",
                        help="comma-separated generator settings, one run each (default: extractive,auto)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    runs = []
    for generator in [g.strip() for g in args.generators.split(",") if g.strip()]:
        runs.append(run(generator, args.users, args.rounds, work))
        print(json.dumps(runs[-1], ensure_ascii=False))
    report = {"info": run_info(), "runs": runs}
    write_report(args.out, report, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

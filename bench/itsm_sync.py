"""`itops itsm sync` of N desk tickets from a real Request Tracker 5, and `itops kpi` over them.

    .venv/bin/python bench/itsm_sync.py --tickets 1000

Starts its own RT (Debian's request-tracker5, its SQLite database copied; `toolkit.lab.rt`) on
127.1.251.1, files N tickets over REST 2 — each created; every 4th answered by an engineer,
every 10th stalled and resumed, every 10th moved to P1, two in three resolved — then times, in a
fresh workspace: the first sync (everything), a second sync (nothing new: idempotent), a sync
after 50 more changes (incremental), and `itops kpi --json`. Prints a table and writes
bench/results/itsm_sync.json. Needs no root and no lab.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from toolkit.lab.rt import RtServer  # noqa: E402


def rest(server: RtServer, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        server.rest_url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Authorization": "Basic " + base64.b64encode(b"root:password").decode(),
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def file_ticket(server: RtServer, i: int) -> None:
    made = rest(server, "POST", "ticket", {
        "Queue": "General", "Subject": f"bench ticket {i}", "Requestor": f"user{i % 97}@example.org",
        "Priority": 20 + (i % 4) * 20,
    })  # fmt: skip
    n = made["id"]
    if i % 4 == 0:
        rest(server, "POST", f"ticket/{n}/correspond",
             {"Content": "looking into it", "ContentType": "text/plain"})  # fmt: skip
    if i % 10 == 3:
        rest(server, "PUT", f"ticket/{n}", {"Status": "stalled"})
        rest(server, "PUT", f"ticket/{n}", {"Status": "open"})
    if i % 10 == 5:
        rest(server, "PUT", f"ticket/{n}", {"Priority": 95})
    if i % 3 != 1:
        rest(server, "PUT", f"ticket/{n}", {"Status": "resolved"})


def itops(ws: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RT_PASSWORD": "password"}
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "--workspace", str(ws), *args],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"itops {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return took, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4, help="threads filing tickets")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="itops-bench-rt-") as tmp:
        server = RtServer(Path(tmp) / "rt")
        started = server.start()
        try:
            began = time.perf_counter()
            with ThreadPoolExecutor(args.workers) as pool:
                list(pool.map(lambda i: file_ticket(server, i), range(args.tickets)))
            filed = time.perf_counter() - began
            ws = Path(tmp) / "ws"
            subprocess.run([sys.executable, "-m", "toolkit", "init", str(ws)], check=True,
                           capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
            with open(ws / "itops.toml", "a") as f:
                f.write(f'\n[itsm]\nsystem = "rt"\nurl = "{server.url}"\nuser = "root"\n'
                        'password = "env:RT_PASSWORD"\ntimeout = 60\n')  # fmt: skip
            first_s, first = itops(ws, "itsm", "sync", "--json")
            second_s, second = itops(ws, "itsm", "sync", "--json")
            for i in range(50):  # 50 changes after the sync
                rest(server, "PUT", f"ticket/{i + 1}", {"Priority": 99 - i % 3})
            third_s, third = itops(ws, "itsm", "sync", "--json")
            kpi_s, kpi = itops(ws, "kpi", "--json", "--since", "1d")
            kpi_again_s, _ = itops(ws, "kpi", "--json", "--since", "1d")
        finally:
            server.stop()
    one, two, three, figures = (json.loads(d.stdout) for d in (first, second, third, kpi))
    result = {
        "tickets": args.tickets,
        "rt_start_s": round(started, 1),
        "filing_s": round(filed, 1),
        "sync_first_s": round(first_s, 2),
        "sync_first": {k: one[k] for k in ("steps", "tickets", "recorded", "events")},
        "sync_second_s": round(second_s, 2),
        "sync_second_recorded": two["recorded"],
        "sync_after_50_changes_s": round(third_s, 2),
        "sync_after_50_changes": {k: three[k] for k in ("steps", "tickets", "recorded")},
        "kpi_s": round(kpi_s, 2),
        "kpi_again_s": round(kpi_again_s, 2),
        "kpi": {
            k: figures[k]
            for k in ("tickets_opened", "tickets_resolved", "time_to_resolve_mean", "backlog_open")
        },
    }
    out = HERE / "results" / "itsm_sync.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:28} {value}")


if __name__ == "__main__":
    main()

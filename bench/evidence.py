"""Evidence bundles on a large ledger: `itops audit export` and `itops audit verify --bundle`
timed end to end (the real commands, each a fresh process) on a ledger of N records (default
100,000): a ticket whose actions are spread over the whole ledger (its chain segment is nearly
all of it: the worst case), a host (one of 500, with its approvals), and a ticket whose records
are close together; with the bundle's size.

    .venv/bin/python bench/evidence.py [--records 100000] [--links full|hashes]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toolkit.ledger import Entry, Ledger
from toolkit.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    {"step": "check", "command": "lpstat -p office", "exit_code": 0, "duration_ms": 12},
    {"step": "apply", "command": "/usr/sbin/cupsenable office", "exit_code": 0, "duration_ms": 9},
]


def fill(url: str, records: int) -> None:
    """Actions (a begin and a finish each) on 500 hosts under 1,000 tickets; every 100th action
    under INC-1042 (spread over the whole ledger); the last 20 under INC-9000 (together); and an
    approval for ws-042 now and then."""
    book = Ledger(url, operator="bench")
    batch: list[Entry] = []
    n = 0
    while n < records:
        i = n // 2
        host = f"ws-{i % 500:03d}"
        ticket = "INC-1042" if i % 100 == 0 else f"INC-{i % 1000:04d}"
        if records - n <= 40:
            ticket = "INC-9000"
        action = f"{i:032x}"
        policy = {"policy": {"decision": "allowed", "evaluated_at": "2026-11-01T00:00:00Z"}}
        batch += [
            Entry("action.begin", ticket=ticket, host=host, task="printer.clear-queue",
                  action_id=action, params={"queue": "office"}, data={"mode": "fix", **policy}),
            Entry("action.finish", ticket=ticket, host=host, task="printer.clear-queue",
                  action_id=action, outcome="fixed", duration_ms=310, commands=COMMANDS,
                  output="printer office disabled - paper jam\n",
                  data={"message": "resumed office", **policy}),
        ]  # fmt: skip
        n += 2
        if i % 5000 == 0:
            batch.append(
                Entry("approval.requested", ticket=ticket, task="printer.clear-queue",
                      data={"request_id": f"APR-{i:08x}"[:12], "hosts": ["ws-042"],
                            "task": "printer.clear-queue"})
            )  # fmt: skip
            n += 1
        if len(batch) >= 5000:
            book.append_many(batch)
            batch = []
    if batch:
        book.append_many(batch)
    book.close()


def itops(ws: Path, *args: str) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ITOPS_OPERATOR": "auditor"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "-w", str(ws), *args],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"itops {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--links", choices=["full", "hashes"], default="full")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="itops-bench-evidence-") as folder:
        root = Path(folder) / "ws"
        Workspace.init(root)
        url = Workspace.load(root).ledger_url
        started = time.perf_counter()
        fill(url, args.records)
        print(f"ledger: {args.records:,} records written in {time.perf_counter() - started:.1f} s")
        for label, scope in (
            ("ticket spread over the ledger (INC-1042)", ["--ticket", "INC-1042"]),
            ("host ws-042 (with its approvals)", ["--host", "ws-042"]),
            ("ticket close together (INC-9000)", ["--ticket", "INC-9000"]),
        ):
            out = Path(folder) / f"{scope[1]}.zip"
            spent, text = itops(root, "audit", "export", *scope, "--links", args.links,
                                "--out", str(out))  # fmt: skip
            checked, _ = itops(root, "audit", "verify", "--bundle", str(out))
            what = text.splitlines()[0].split(": ", 1)[1]
            size = out.stat().st_size / 1e6
            print(f"{label}: export {spent:.2f} s, verify {checked:.2f} s, {size:.1f} MB — {what}")


if __name__ == "__main__":
    main()

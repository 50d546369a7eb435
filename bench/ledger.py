"""Ledger throughput: finished actions (begin + finish records, hash-chained, secrets masked)
appended per second from one process, and `verify` of 1,000,000 records; beside a plain SQLite
insert of the same rows with no chain, no masking and no lock (the floor), in the same invocation.

    .venv/bin/python bench/ledger.py [--actions 20000] [--verify 1000000] [--pg URL]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from toolkit.ledger import Entry, Ledger
from toolkit.secrets.credentials import Redactor

HERE = Path(__file__).resolve().parent
COMMANDS = [
    {"step": s, "command": c, "exit_code": 0, "duration_ms": 12}
    for s, c in (
        ("check", "lpstat -p office"),
        ("apply", "cancel office-1"),
        ("apply", "/usr/sbin/cupsenable office"),
        ("verify", "lpstat -p office"),
    )
]


def actions(book: Ledger, count: int, offset: int = 0) -> None:
    for i in range(offset, offset + count):
        host = f"ws-{i % 500:03d}"
        action = book.begin(
            task="printer.clear-queue", host=host, ticket="INC-1042", params={"queue": "office"}
        )
        book.finish(
            action,
            task="printer.clear-queue",
            host=host,
            ticket="INC-1042",
            outcome="fixed",
            duration=0.31,
            commands=COMMANDS,
            output="printer office disabled since ... - paper jam\n",
        )


def rate(url: str, count: int, threads: int) -> float:
    book = Ledger(url, operator="bench", redactor=Redactor(["Canary-not-in-output"]))
    per = count // threads
    workers = [threading.Thread(target=actions, args=(book, per, n * per)) for n in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    assert book.verify().ok
    book.close()
    return per * threads / elapsed


def plain_sqlite(path: Path, count: int) -> float:
    """The floor: the same two rows per action, one autocommit INSERT each, nothing else."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE t (seq INTEGER PRIMARY KEY, at, kind, operator, ticket, host, task, "
        "action_id, outcome, duration_ms, params, commands, output, data)"
    )
    for column in ("ticket", "host", "at"):
        conn.execute(f"CREATE INDEX ix_{column} ON t ({column})")
    commands = json.dumps(COMMANDS)
    started = time.perf_counter()
    for i in range(count):
        for kind in ("action.begin", "action.finish"):
            conn.execute(
                "INSERT INTO t (at, kind, operator, ticket, host, task, action_id, outcome, "
                "duration_ms, params, commands, output, data) VALUES "
                "(?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    "2026-11-21T10:00:00.000000Z",
                    kind,
                    "bench",
                    "INC-1042",
                    f"ws-{i % 500:03d}",
                    "printer.clear-queue",
                    f"{i:032x}",
                    "fixed",
                    310,
                    '{"queue":"office"}',
                    commands,
                    "printer office disabled",
                    None,
                ),
            )
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


def verify_time(url: str, records: int) -> float:
    book = Ledger(url, operator="bench")
    batch = []
    for i in range(records // 2):
        action = f"{i:032x}"
        batch += [
            Entry(
                "action.begin",
                ticket=f"INC-{i // 50}",
                host=f"ws-{i % 500:03d}",
                task="printer.clear-queue",
                action_id=action,
                params={"queue": "office"},
            ),
            Entry(
                "action.finish",
                ticket=f"INC-{i // 50}",
                host=f"ws-{i % 500:03d}",
                task="printer.clear-queue",
                action_id=action,
                outcome="fixed",
                duration_ms=310,
                commands=COMMANDS,
                output="printer office is idle\n",
            ),
        ]
        if len(batch) >= 10_000:
            book.append_many(batch)
            batch = []
    if batch:
        book.append_many(batch)
    started = time.perf_counter()
    report = book.verify()
    elapsed = time.perf_counter() - started
    assert report.ok and report.records == records, report
    book.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=20_000)
    parser.add_argument("--verify", type=int, default=1_000_000)
    parser.add_argument("--pg", help="also measure on this PostgreSQL URL (empty database)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="itops-ledger-bench-"))
    floor = plain_sqlite(tmp / "plain.db", args.actions)
    results = {"plain sqlite insert, 2 rows/action (floor)": floor}
    for threads in (1, 8):
        results[f"itops ledger, SQLite, {threads} thread(s)"] = rate(
            f"sqlite:///{tmp / f'l{threads}.db'}", args.actions, threads
        )
    if args.pg:
        results["itops ledger, PostgreSQL, 1 thread"] = rate(args.pg, args.actions // 4, 1)
    print(f"ledger appends: finished actions/s (begin + finish records), {args.actions} actions")
    for name, value in results.items():
        print(f"  {name:<44} {value:8.0f}/s   {value / floor:5.2f}x the floor")
    seconds = verify_time(f"sqlite:///{tmp / 'verify.db'}", args.verify)
    print(f"audit verify of {args.verify:,} records (SQLite): {seconds:.2f} s")
    results["verify_seconds"] = seconds
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "ledger.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""The web view's ledger search on a large ledger: each filter of the search page, the first
page and a deep one, timed two ways — `toolkit.web.pages.search` (the page's queries, as the
server runs them, on the ledger opened read-only) and an HTTP GET of the page from `itops serve`'s
own application under uvicorn (rendering and the record of the view included).

The ledger is bench/evidence.py's (actions, a begin and a finish each, on 500 hosts under 1,000
tickets, approvals now and then), with a few rare records at its very start (an operator, a task
and a failure that occur once): the worst case for a newest-first search without an index.

    .venv/bin/python bench/web_search.py [--records 1000000] [--runs 5] [--url URL]

`--url postgresql+psycopg://postgres@127.0.0.1:5432/test` runs it on PostgreSQL: the ledger goes
into a schema of its own (`itops_bench_web_<random>`, through the connection's search_path), which
is dropped at the end, whatever happens. Its statistics are not gathered before the searches (no
ANALYZE; the test server runs with autovacuum off): the planner's worst case, which is why the
search's bounded reads are plain queries, not cursors (toolkit.ledger.store.Store._stream).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bench.evidence import fill
from toolkit.desk.sla import default_policy
from toolkit.ledger import Entry, Ledger
from toolkit.web import pages
from toolkit.workspace import Workspace


def queries(middle: str) -> list[tuple[str, dict[str, str]]]:
    return [
        ("newest page, no filter", {}),
        ("host ws-042", {"host": "ws-042"}),
        ("ticket INC-1042", {"ticket": "INC-1042"}),
        ("operator, one record at the start", {"operator": "rare-op"}),
        ("task, one record at the start", {"task": "rare.task"}),
        ("outcome failed, one record at the start", {"outcome": "failed"}),
        ("changes only", {"changes": "1"}),
        ("host + changes only", {"host": "ws-042", "changes": "1"}),
        ("until the middle of the ledger", {"until": middle}),
        ("since the middle, host ws-042", {"since": middle, "host": "ws-042"}),
        ("the oldest page (before #60)", {"before": "60"}),
    ]


def timed(runs: int, call: object) -> tuple[float, float]:
    spent = []
    for _ in range(runs):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        spent.append((time.perf_counter() - started) * 1000)
    return statistics.median(spent), max(spent)


@contextlib.contextmanager
def pg_schema(url: str) -> Iterator[str]:
    """A schema of its own on the PostgreSQL server at `url`, dropped afterwards; yields the
    ledger URL that works in it (search_path set through the connection's options)."""
    from toolkit.ledger.store import connect

    schema = f"itops_bench_web_{secrets.token_hex(4)}"
    admin = connect(url)
    admin.autocommit = True
    admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()
        print(f"\nschema {schema} dropped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--url", help="a PostgreSQL ledger URL (default: SQLite in a temp folder)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="itops-bench-web-"))
        if args.url:
            os.environ["ITOPS_LEDGER_URL"] = stack.enter_context(pg_schema(args.url))
        run(Path(folder), args)


def run(folder: Path, args: argparse.Namespace) -> None:
    root = folder / "ws"
    Workspace.init(root)
    ws = Workspace.load(root)
    print(f"ledger database: {ws.ledger_url.partition('://')[0]}")
    book = Ledger(ws.ledger_url, operator="bench")
    book.append_many(
        [
            Entry("note", operator="rare-op", task="rare.task", host="ws-042"),
            Entry("action.finish", task="printer.clear-queue", host="ws-007",
                  action_id="f" * 32, outcome="failed", duration_ms=5),
        ]
    )  # fmt: skip
    book.close()
    started = time.perf_counter()
    fill(ws.ledger_url, args.records)
    print(f"ledger: {args.records:,} records written in {time.perf_counter() - started:.0f} s")
    reader = Ledger(ws.ledger_url, operator="bench", read_only=True)
    last = reader.head()
    assert last is not None
    mid_record = next(reader.records(seq=last.seq // 2))
    middle = mid_record.at
    policy = default_policy()
    print(f"\npages.search, page of 50 (median / max of {args.runs} runs, ms):")
    for label, query in queries(middle):
        view = pages.search(reader, policy, query, 50)
        rows = len(view.tables[0].rows)
        median, worst = timed(args.runs, lambda q=query: pages.search(reader, policy, q, 50))
        print(f"  {label:42s} {median:7.1f} {worst:7.1f}   ({rows} rows)")
    reader.close()

    import uvicorn

    from toolkit.web.server import ServeSettings, build_app

    settings = ServeSettings(port=0, proxy_header="X-Remote-User")
    app = build_app(root, settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]

    def fetch(query: dict[str, str]) -> None:
        from urllib.parse import urlencode

        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/search?{urlencode(query)}",
            headers={"X-Remote-User": "bench"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert answer.status == 200
            answer.read()

    print("\nHTTP GET /search through uvicorn, rendered and recorded (median / max, ms):")
    for label, query in queries(middle):
        median, worst = timed(args.runs, lambda q=query: fetch(q))
        print(f"  {label:42s} {median:7.1f} {worst:7.1f}")
    server.should_exit = True
    thread.join(timeout=10)

    # the same rare-value searches on the ledger as schema 3 left it (no operator, task,
    # outcome or action id index): why schemas 4 and 5 add them
    from toolkit.ledger.store import connect

    conn = connect(ws.ledger_url)
    for name in ("operator", "task", "outcome", "action_kind"):
        conn.execute(f"DROP INDEX ix_ledger_{name}")
    conn.commit()
    conn.close()
    reader = Ledger(ws.ledger_url, operator="bench", read_only=True)
    print("\nwithout schemas 4 and 5's indexes (pages.search, median / max, ms):")
    for label, query in queries(middle):
        if not {"operator", "task", "outcome", "changes"} & set(query):
            continue
        median, worst = timed(args.runs, lambda q=query: pages.search(reader, policy, q, 50))
        print(f"  {label:42s} {median:7.1f} {worst:7.1f}")
    reader.close()


if __name__ == "__main__":
    main()

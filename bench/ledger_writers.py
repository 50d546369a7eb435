"""PostgreSQL ledger appends from several writer processes at once (as a controller and its
site workers write one ledger): finished actions (a begin and a finish record each, hash-chained)
per second, for 1 process × 1 thread and for N processes × T threads, in one invocation, on a
schema of its own (dropped after). Start-up time is not counted.

    .venv/bin/python bench/ledger_writers.py --pg postgresql+psycopg://postgres@127.0.0.1:5432/test \
        [--writers 1,2,4] [--threads 1,25] [--actions 500]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import secrets
import threading
import time
from typing import Any


def _writer(url: str, actions: int, threads: int, ready: Any, go: Any, done: Any) -> None:
    from toolkit.ledger import Ledger

    ledger = Ledger(url, operator="bench")

    def host(k: int) -> None:
        for _ in range(actions):
            action = ledger.begin(task="bench.marker", host=f"h{k}", ticket="INC-1", params={})
            ledger.finish(action, task="bench.marker", host=f"h{k}", ticket="INC-1",
                          outcome="fixed", duration=0.1, data={"message": "ok"})  # fmt: skip

    workers = [threading.Thread(target=host, args=(k,)) for k in range(threads)]
    ready.put(1)
    go.wait()
    started = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.put(time.monotonic() - started)
    ledger.close()


def run(url: str, writers: int, threads: int, total: int) -> float:
    """Finished actions per second with `writers` processes of `threads` threads each."""
    per_thread = max(1, total // (writers * threads))
    ready, done, go = mp.Queue(), mp.Queue(), mp.Event()
    procs = [mp.Process(target=_writer, args=(url, per_thread, threads, ready, go, done))
             for _ in range(writers)]  # fmt: skip
    for p in procs:
        p.start()
    for _ in procs:
        ready.get()
    go.set()
    slowest = max(done.get() for _ in procs)
    for p in procs:
        p.join()
    return per_thread * writers * threads / slowest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", required=True, help="a PostgreSQL URL (a schema is made in it)")
    parser.add_argument("--writers", default="1,2,4")
    parser.add_argument("--threads", default="1,25")
    parser.add_argument("--actions", type=int, default=500)
    args = parser.parse_args()
    from sqlalchemy import create_engine, text

    from toolkit.ledger import Ledger

    schema = f"itops_bench_{secrets.token_hex(4)}"
    engine = create_engine(args.pg)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{args.pg}{'&' if '?' in args.pg else '?'}options=-csearch_path%3D{schema}"
    try:
        Ledger(url, operator="bench").close()  # the schema, made once
        print(f"PostgreSQL ledger, finished actions/s ({args.actions} per row, start-up excluded)")
        base = run(url, 1, 1, args.actions)
        print(f"  1 process  x  1 thread      {base:7.0f}/s   1.00x")
        for writers in (int(w) for w in args.writers.split(",")):
            for threads in (int(t) for t in args.threads.split(",")):
                if writers == threads == 1:
                    continue
                rate = run(url, writers, threads, args.actions)
                print(f"  {writers} process  x {threads:2d} thread(s)  {rate:7.0f}/s   "
                      f"{rate / base:.2f}x")  # fmt: skip
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


if __name__ == "__main__":
    main()

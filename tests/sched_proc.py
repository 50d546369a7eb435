"""A scheduler in its own process, with its own fixed clock: for the cross-process lock tests.

    python -m tests.sched_proc URL CLOCK HOLD LOG [START_FILE]

Once ready to tick, creates START_FILE.ready.<pid> and waits for START_FILE to exist (a
barrier the parent opens when every process is ready), ticks once with the clock fixed at CLOCK;
the job appends "ran <ticket>" to LOG, then holds the lease: HOLD seconds, or with HOLD
`until:PATH` until PATH exists. Prints the tick's events.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path

from tests.clocks import FakeClock
from toolkit.automation.schedule import JobResult, Schedule, Scheduler, ScheduleStore
from toolkit.ledger import Ledger


def main() -> None:
    url, clock_at, hold, log = sys.argv[1:5]
    start = Path(sys.argv[5]) if len(sys.argv) > 5 else None

    def job(s: Schedule, ticket: str, occurrence: datetime) -> JobResult:
        with open(log, "a") as out:
            out.write(f"ran {ticket}\n")
        if hold.startswith("until:"):
            release, deadline = Path(hold[6:]), time.monotonic() + 60
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            time.sleep(float(hold))
        return JobResult("completed", "held the lease")

    store = ScheduleStore(url)
    ledger = Ledger(url, operator="scheduler")
    if start is not None:
        start.with_name(f"{start.name}.ready.{os.getpid()}").touch()
        while not start.exists():
            time.sleep(0.01)
    try:
        events = Scheduler(store, ledger, FakeClock(clock_at), job).run_due()
        for e in events:
            print(e.what, e.ticket or "", e.detail, flush=True)
    finally:
        ledger.close()
        store.close()


if __name__ == "__main__":
    main()

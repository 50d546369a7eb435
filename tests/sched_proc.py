"""A scheduler in its own process, with its own fixed clock: for the cross-process lock tests.

    python -m tests.sched_proc URL CLOCK HOLD_SECONDS LOG [START_FILE]

Waits for START_FILE to exist (a barrier), ticks once with the clock fixed at CLOCK; the job
appends "ran <ticket>" to LOG, then holds the lease for HOLD_SECONDS. Prints the tick's events.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

from tests.clocks import FakeClock
from toolkit.ledger import Ledger
from toolkit.schedule import JobResult, Schedule, Scheduler, ScheduleStore


def main() -> None:
    url, clock_at, hold, log = sys.argv[1:5]
    start = Path(sys.argv[5]) if len(sys.argv) > 5 else None
    while start is not None and not start.exists():
        time.sleep(0.01)

    def job(s: Schedule, ticket: str, occurrence: datetime) -> JobResult:
        with open(log, "a") as out:
            out.write(f"ran {ticket}\n")
        time.sleep(float(hold))
        return JobResult("completed", "held the lease")

    store = ScheduleStore(url)
    ledger = Ledger(url, operator="scheduler")
    try:
        events = Scheduler(store, ledger, FakeClock(clock_at), job).run_due()
        for e in events:
            print(e.what, e.ticket or "", e.detail, flush=True)
    finally:
        ledger.close()
        store.close()


if __name__ == "__main__":
    main()

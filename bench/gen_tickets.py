"""Synthetic ticket events in the `itops ticket import` JSON Lines format (deterministic).

    python bench/gen_tickets.py --events 1000000 > tickets.jsonl

Tickets open over a year in business-ish hours (some at night and weekends), with responses,
escalations, waits, resolutions, confirmations, closes, reopenings, surveys and complaints in
realistic proportions; ~7 events per ticket.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

CATEGORIES = [
    "hardware",
    "software",
    "network",
    "account",
    "security",
    "printer",
    "backup",
    "other",
]
ZONE = timezone(timedelta(hours=1))


def ticket_events(
    rng: random.Random, n: int, start: datetime, prefix: str = "INC"
) -> Iterator[dict[str, object]]:
    ticket = f"{prefix}-{n}"
    at = start + timedelta(minutes=rng.randrange(0, 365 * 24 * 60))
    if rng.random() < 0.8:  # most tickets come in during the working day
        at = at.replace(hour=rng.randrange(8, 18))
    prio = rng.choices(["P1", "P2", "P3", "P4"], weights=[3, 17, 55, 25])[0]

    def step(event: str, minutes: float, **fields: object) -> dict[str, object]:
        nonlocal at
        at = at + timedelta(minutes=minutes)
        return {"ticket": ticket, "event": event, "at": at.isoformat(), **fields}

    category = rng.choice(CATEGORIES)
    # two in three account and software tickets are standard requests (resets, installs); no
    # draw from rng, so the rest of the generated log is what it was before kinds
    kind = "request" if category in ("account", "software") and n % 3 else "incident"
    yield step(
        "opened",
        0,
        category=category,
        kind=kind,
        priority=prio,
        requester=f"user{rng.randrange(3000)}",
        channel=rng.choice(["phone", "email", "chat", "portal"]),
        hosts=[f"ws-{rng.randrange(2000):04d}"],
        assignee=f"eng{rng.randrange(30):02d}",
        tier=rng.choice(["L1", "L2"]),
        summary="synthetic ticket",
    )
    yield step("responded", rng.expovariate(1 / 40), note="on it", by=f"eng{rng.randrange(30):02d}")
    escalated = rng.random() < 0.15
    if escalated:
        yield step("escalated", rng.expovariate(1 / 60), tier=rng.choice(["L2", "L3", "ops"]))
    if rng.random() < 0.2:
        yield step("waiting", rng.expovariate(1 / 90), reason="waiting for the user")
        yield step("resumed", rng.expovariate(1 / 600))
    if rng.random() < 0.3:
        yield step("note", rng.expovariate(1 / 120), text="status", update=True)
    if rng.random() < 0.04:
        return  # still open
    first = not escalated and rng.random() < 0.5
    yield step("resolved", rng.expovariate(1 / 300), code="fixed", first_contact=first)
    if rng.random() < 0.05:
        yield step("reopened", rng.expovariate(1 / 1440), reason="came back")
        yield step("resolved", rng.expovariate(1 / 300), code="fixed")
    if rng.random() < 0.9:
        yield step("confirmed", rng.expovariate(1 / 240))
        yield step("closed", rng.expovariate(1 / 60))
    if rng.random() < 0.3:
        yield step(
            "survey",
            rng.expovariate(1 / 600),
            score=rng.choices([1, 2, 3, 4, 5], [2, 3, 10, 35, 50])[0],
        )
    if rng.random() < 0.01:
        yield step("complaint", rng.expovariate(1 / 600), text="too slow")


def generate(events: int, seed: int = 7, prefix: str = "INC") -> Iterator[dict[str, object]]:
    rng = random.Random(seed)
    start = datetime(2025, 11, 3, 9, 0, tzinfo=ZONE)
    count, n = 0, 1
    while count < events:
        for line in ticket_events(rng, n, start, prefix):
            yield line
            count += 1
            if count >= events:
                return  # the last ticket may be cut short: still a valid, open ticket
        n += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    out = sys.stdout
    for line in generate(args.events, args.seed):
        out.write(json.dumps(line, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()

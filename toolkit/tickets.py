"""Tickets on top of the ledger: every change runs under one; an unseen id opens a local ticket.

The full lifecycle (respond, escalate, wait, resolve, confirm, …) is recorded as more `ticket.*`
events in the same ledger; KPIs are queries over them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import ValidationError
from .ledger import Entry, Ledger, Record

TICKET_ID = re.compile(r"[A-Za-z][A-Za-z0-9]*-?[A-Za-z0-9._-]*")
CATEGORIES = (
    "hardware",
    "software",
    "network",
    "account",
    "security",
    "printer",
    "backup",
    "other",
)
PRIORITIES = ("P1", "P2", "P3", "P4")


def check_ticket_id(ticket: str) -> str:
    if not TICKET_ID.fullmatch(ticket) or len(ticket) > 64:
        raise ValidationError(
            f"invalid ticket id {ticket!r}", hint="use the desk's id, e.g. INC-1042 or CHG-7"
        )
    return ticket


def events(ledger: Ledger, ticket: str) -> list[Record]:
    return [r for r in ledger.records(ticket=ticket) if r.kind.startswith("ticket.")]


def ensure(
    ledger: Ledger,
    ticket: str,
    *,
    category: str | None = None,
    priority: str | None = None,
    summary: str | None = None,
    source: str = "itops",
) -> Record | None:
    """Open a local ticket for an id the ledger has not seen; returns the new event, if any."""
    check_ticket_id(ticket)
    if category is not None and category not in CATEGORIES:
        raise ValidationError(f"unknown category {category!r}", hint=", ".join(CATEGORIES))
    if priority is not None and priority not in PRIORITIES:
        raise ValidationError(f"unknown priority {priority!r}", hint=", ".join(PRIORITIES))
    if any(r.kind == "ticket.opened" for r in ledger.records(ticket=ticket)):
        return None
    data: Mapping[str, Any] = {
        "category": category or "other",
        "priority": priority or "P3",
        "summary": summary,
        "source": source,
    }
    return ledger.append(Entry("ticket.opened", ticket=ticket, data=data))


def ticket_priority(ledger: Ledger, ticket: str) -> str | None:
    """The ticket's current priority: the last `priority` any of its ticket events set (the
    runner gives it to remediations; the run policy checks it for break-glass)."""
    priority = None
    for record in ledger.records(ticket=ticket):
        if record.kind.startswith("ticket.") and record.info.get("priority"):
            priority = str(record.info["priority"])
    return priority

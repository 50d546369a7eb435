"""The audit report: can this record be trusted, and who did what, where, when, under which ticket.

At the top, the chain verification and the head hash; then every action in scope (operator,
ticket, host, task, outcome, duration, the commands with their exit codes — secrets masked) and a
timeline per ticket. Producing the report is itself written to the ledger (`report.audit`, with the
filters and the report's SHA-256), after the page is made: the page names the head it verified.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolkit.clock import iso_seconds
from toolkit.desk.tickets import KINDS, event_from_record
from toolkit.secrets.credentials import Redactor

if TYPE_CHECKING:
    from toolkit.ledger import Ledger, Record


@dataclass(frozen=True)
class AuditReport:
    html: str
    sha256: str
    actions: int
    tickets: int
    chain_ok: bool
    head_seq: int | None
    head_hash: str | None


def _actions(records: list[Record]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.kind not in ("action.begin", "action.finish") or not r.action_id:
            continue
        row = rows.setdefault(
            r.action_id,
            {
                "action_id": r.action_id,
                "at": r.at,
                "operator": r.operator,
                "ticket": r.ticket,
                "host": r.host,
                "task": r.task,
                "outcome": "open (never finished)",
                "duration": None,
                "commands": [],
                "params": r.params,
                "mode": None,
                "seq": r.seq,
                "message": "",
                "jump": [],
            },
        )
        info = r.info
        if r.kind == "action.begin":
            row.update(
                at=r.at, operator=r.operator, params=r.params, mode=info.get("mode"), seq=r.seq,
                jump=[h for h in info.get("jump") or [] if isinstance(h, dict)],
            )  # fmt: skip
        else:
            row.update(
                outcome=r.outcome or "?",
                duration=(r.duration_ms or 0) / 1000,
                commands=r.as_dict()["commands"] or [],
                message=info.get("message") or "",
                finish_seq=r.seq,
            )
    return sorted(rows.values(), key=lambda a: a["seq"])


def build(
    ledger: Ledger,
    redactor: Redactor,
    filters: Mapping[str, Any],
    records: Sequence[Record] | None = None,
) -> AuditReport:
    """Verify the chain and render the report for the records the filters select (or for
    `records`, selected by the caller: an evidence bundle's, with a host's approvals)."""
    from jinja2 import Environment

    verify = ledger.verify()
    selected = (
        list(records)
        if records is not None
        else list(ledger.records(**{k: v for k, v in filters.items() if v is not None}))
    )
    actions = _actions(selected)
    tickets = sorted({r.ticket for r in selected if r.ticket})
    timelines = []
    for ticket in tickets:
        events = []
        for r in ledger.records(ticket=ticket, kinds=KINDS):
            ev = event_from_record(r.seq, r.at, r.kind, r.operator, ticket, r.info)
            events.append(
                {
                    "at": iso_seconds(ev.at),
                    "recorded": r.at,
                    "event": ev.event,
                    "operator": ev.operator,
                    "backdated": ev.backdated,
                    "detail": ", ".join(
                        f"{k}={v}" for k, v in ev.data.items() if v not in (None, "")
                    ),
                    "seq": r.seq,
                }
            )
        ticket_actions = [a for a in actions if a["ticket"] == ticket]
        timelines.append({"ticket": ticket, "events": events, "actions": ticket_actions})
    env = Environment(autoescape=True)
    page = env.from_string(_template("audit.html")).render(
        v=verify,
        filters={k: v for k, v in filters.items() if v is not None},
        actions=actions,
        timelines=timelines,
        generated=iso_seconds(time.time()),
        operator=ledger.operator,
    )
    page = redactor.mask(page)
    return AuditReport(
        page,
        hashlib.sha256(page.encode()).hexdigest(),
        len(actions),
        len(tickets),
        verify.ok,
        verify.head_seq,
        verify.head_hash,
    )


def record_export(
    ledger: Ledger, report: AuditReport, filters: Mapping[str, Any], target: str
) -> Record:
    """The report's own ledger event: who exported which scope, and the hash of what they got."""
    from toolkit.ledger import Entry

    return ledger.append(
        Entry(
            "report.audit",
            data={
                "filters": {k: v for k, v in filters.items() if v is not None},
                "target": target,
                "sha256": report.sha256,
                "actions": report.actions,
                "tickets": report.tickets,
                "chain_ok": report.chain_ok,
                "verified_head_seq": report.head_seq,
                "verified_head_hash": report.head_hash,
            },
        )
    )


def _template(name: str) -> str:
    from importlib.resources import files

    return files("toolkit.reports").joinpath(name).read_text(encoding="utf-8")

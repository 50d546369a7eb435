"""The audit report: can this record be trusted, and who did what, where, when, under which ticket.

At the top, the chain verification and the head hash; then a summary per host and per ticket
(changes, failures, unchanged runs, approvals, break-glass uses); the changes, each with its
parameters, outcome, verify result, approval (who asked, who approved, when, the SHA-256 it binds)
and policy decision (window, break-glass and its reason), its commands collapsed to one line with
the full text on demand (`<details>`: no script); the approvals and other governance records in
scope; the timeline per ticket; and, in a closed appendix, the read-only checks and the runs that
changed nothing. Dates are local and read one way (`clock.readable`); every text from hosts and
desks is escaped and its control characters shown (`textsafe.visible`). Producing the report
is itself written to the ledger (`report.audit`, with the filters and the report's SHA-256),
after the page is made: the page names the head it verified.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from toolkit.clock import machine_readable, readable
from toolkit.desk.tickets import KINDS, event_from_record
from toolkit.ledger.store import UNCHANGED
from toolkit.secrets.credentials import Redactor
from toolkit.textsafe import visible

if TYPE_CHECKING:
    from toolkit.ledger import Ledger, Record


OPEN = "open (never finished)"


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
                "outcome": OPEN,
                "duration": None,
                "commands": [],
                "params": {},
                "mode": None,
                "seq": r.seq,
                "message": "",
                "verify": "",
                "jump": [],
            },
        )
        info = r.info
        if r.kind == "action.begin":
            row.update(
                at=r.at,
                operator=r.operator,
                params=json.loads(r.params) if r.params else {},
                mode=info.get("mode"),
                seq=r.seq,
                jump=[h for h in info.get("jump") or [] if isinstance(h, dict)],
            )
        else:
            row.update(
                outcome=r.outcome or "?",
                duration=(r.duration_ms or 0) / 1000,
                commands=r.as_dict()["commands"] or [],
                message=info.get("message") or "",
                verify=_verify(info),
                finish_seq=r.seq,
            )
    return sorted(rows.values(), key=lambda a: a["seq"])


FAILED = ("failed", "unreachable", OPEN)


def _is_change(action: Mapping[str, Any]) -> bool:
    """What changed a host, or may have: `itops log --changes-only`'s rule (a --check run, and
    a fix that ended already-ok, skipped or needs-approval, changed nothing)."""
    return action["mode"] != "check" and action["outcome"] not in UNCHANGED


def _verify(info: Mapping[str, Any]) -> str:
    verify = info.get("verify")
    if not isinstance(verify, dict):
        return "not run"
    return "passed" if verify.get("ok") else "failed"


def _counts(
    actions: Sequence[Mapping[str, Any]], request_ids: set[str], found: Mapping[str, Any]
) -> dict[str, Any]:
    granted = sum(1 for rid in request_ids if (found.get(rid) or {}).get("state") == "granted")
    pending = len(request_ids) - granted
    approvals = ", ".join(
        part
        for part in (
            f"{granted} granted" if granted else "",
            f"{pending} not granted" if pending else "",
        )
        if part
    )
    return {
        "changes": sum(1 for a in actions if a["change"]),
        "failures": sum(1 for a in actions if a["outcome"] in FAILED),
        "quiet": sum(1 for a in actions if not a["change"]),
        "approvals": approvals or "0",
        "break_glass": sum(
            1 for a in actions if (a["policy"] or {}).get("decision") == "break-glass"
        ),
    }


def _summaries(
    actions: Sequence[Mapping[str, Any]],
    governance: Sequence[Record],
    found: Mapping[str, Any],
    only_host: str | None,
    tickets: Iterable[str] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per host and per ticket: changes, failures, unchanged runs, approvals, break-glass uses
    (one pass over the actions and the governance records, grouped by host and by ticket)."""
    by_host: dict[str, list[Mapping[str, Any]]] = {}
    by_ticket: dict[str, list[Mapping[str, Any]]] = {t: [] for t in tickets}
    host_gov: dict[str, list[Record]] = {}
    ticket_gov: dict[str, list[Record]] = {}
    for a in actions:
        by_host.setdefault(a["host"] or "", []).append(a)
        if a["ticket"]:
            by_ticket.setdefault(a["ticket"], []).append(a)
    for r in governance:
        if r.kind != "approval.refused":  # (a refusal names no hosts: its request does)
            for h in dict.fromkeys(map(str, r.info.get("hosts") or ())):
                host_gov.setdefault(h, []).append(r)
                by_host.setdefault(h, [])
        if r.ticket:
            ticket_gov.setdefault(r.ticket, []).append(r)
            by_ticket.setdefault(r.ticket, [])
    hosts = list(by_host) if only_host is None else [only_host]

    def asked(rows: Sequence[Mapping[str, Any]], records: Iterable[Record]) -> set[str]:
        ids = {str(a["approval"]["request_id"]) for a in rows if a["approval"]}
        ids |= {str(a["policy"]["request_id"]) for a in rows if "request_id" in (a["policy"] or {})}
        return ids | {
            str(r.info["request_id"])
            for r in records
            if r.kind.startswith("approval.") and r.info.get("request_id")
        }

    per_host = []
    for host in hosts:
        mine, theirs = by_host.get(host, []), host_gov.get(host, [])
        per_host.append({"host": host, **_counts(mine, asked(mine, theirs), found)})
    per_ticket = []
    for ticket in sorted(by_ticket):
        mine, theirs = by_ticket[ticket], ticket_gov.get(ticket, [])
        per_ticket.append(
            {
                "ticket": ticket,
                "hosts": len({a["host"] for a in mine}),
                **_counts(mine, asked(mine, theirs), found),
            }
        )
    return per_host, per_ticket


def build(
    ledger: Ledger,
    redactor: Redactor,
    filters: Mapping[str, Any],
    records: Sequence[Record] | None = None,
    *,
    zone: tzinfo | None = None,
) -> AuditReport:
    """Verify the chain and render the report for the records the filters select (for a host,
    with the approvals, break-glass and refusals that concern it: `desk.governance`), or for
    `records`, selected by the caller (an evidence bundle's). Dates in `zone` (default: this
    machine's local zone)."""
    from jinja2 import Environment
    from markupsafe import Markup, escape

    from toolkit.desk.governance import (
        GOVERNANCE_KINDS,
        approvals,
        host_records,
        links,
        summary,
    )

    verify = ledger.verify()
    given = {k: v for k, v in filters.items() if v is not None}
    if records is not None:
        selected = list(records)
    elif given.get("host"):
        rest = {k: v for k, v in given.items() if k != "host"}
        selected = list(host_records(ledger, [str(given["host"])], **rest))
    else:
        selected = list(ledger.records(**given))
    actions = _actions(selected)
    governed = links(ledger, selected)
    governance = [r for r in selected if r.kind in GOVERNANCE_KINDS]
    found = {
        str(link["approval"]["request_id"]): link["approval"]
        for link in governed.values()
        if link["approval"]
    }
    more = {str(r.info.get("request_id")) for r in governance if r.info.get("request_id")}
    found.update(approvals(ledger, more - set(found)))
    for a in actions:
        # masked before the page cuts a line short: a cut secret would escape the final mask
        a["commands"] = [
            {**c, "command": redactor.mask(str(c.get("command")))} for c in a["commands"]
        ]
        a["message"] = redactor.mask(str(a["message"]))
        link = governed.get(a["action_id"]) or {}
        a["policy"] = link.get("policy")
        a["approval"] = link.get("approval")
        a["change"] = _is_change(a)
    tickets = sorted({r.ticket for r in selected if r.ticket})
    per_host, per_ticket = _summaries(actions, governance, found, given.get("host"), tickets)
    per_ticket_actions: dict[str, list[dict[str, Any]]] = {}
    for a in actions:
        per_ticket_actions.setdefault(a["ticket"] or "", []).append(a)
    timelines = []
    for ticket in tickets:
        events = []
        for r in ledger.records(ticket=ticket, kinds=KINDS):
            ev = event_from_record(r.seq, r.at, r.kind, r.operator, ticket, r.info)
            events.append(
                {
                    "at": ev.at,
                    "recorded": r.at,
                    "event": ev.event,
                    "operator": ev.operator,
                    "backdated": ev.backdated,
                    "detail": ", ".join(
                        f"{k}={', '.join(map(str, v)) if isinstance(v, list | tuple) else v}"
                        for k, v in ev.data.items()
                        if v not in (None, "", [])
                    ),
                    "seq": r.seq,
                }
            )
        timelines.append(
            {"ticket": ticket, "events": events, "actions": per_ticket_actions.get(ticket, [])}
        )

    def when(at: Any) -> Markup:
        if not at:  # (None, '', or a field the record does not have)
            return Markup("")
        return Markup('<time datetime="{}">{}</time>').format(
            machine_readable(at), readable(at, zone)
        )

    def shown(value: Any) -> Any:
        """Every value the page prints: control characters as visible stand-ins."""
        if isinstance(value, str) and not isinstance(value, Markup):
            return visible(value)
        return value

    env = Environment(autoescape=True, finalize=shown)
    env.filters["when"] = when
    env.filters["lines"] = lambda text: Markup(escape(visible(str(text), multiline=True)))
    env.filters["pairs"] = lambda d: ", ".join(f"{k}={v}" for k, v in (d or {}).items())
    env.filters["short"] = lambda text, n=80: text if len(text) <= n else text[: n - 1] + "…"
    page = env.from_string(_template("audit.html")).render(
        v=verify,
        filters=given,
        changes=[a for a in actions if a["change"]],
        quiet=[a for a in actions if not a["change"]],
        per_host=per_host,
        per_ticket=per_ticket,
        approvals=sorted(found.values(), key=lambda a: str(a.get("requested_at") or "")),
        governance=[{"record": r, "summary": summary(r) or ""} for r in governance],
        timelines=timelines,
        generated=time.time(),
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

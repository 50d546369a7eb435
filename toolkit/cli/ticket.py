"""`itops ticket`: the ticket lifecycle, its timeline with SLA clocks, and bulk import/export."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.cli.options import reads_only
from toolkit.desk.tickets import (
    CATEGORIES,
    CHANNELS,
    DEFAULT_KIND,
    PRIORITIES,
    STATES,
    TICKET_KINDS,
    TIERS,
    check_ticket_id,
)
from toolkit.errors import NotFound

if TYPE_CHECKING:
    from toolkit.desk.sla import Policy
    from toolkit.desk.tickets import TicketSummary


@click.group()
def ticket() -> None:
    """Tickets: open, work and close them; show their timeline and SLA clocks.

    Each step is one event in the ticket log, stamped with the operator and the ledger's
    time. --at records something that happened earlier (a phone call): it is flagged as
    back-dated and the clocks use the claimed time.

    \b
    Examples:
      itops ticket open INC-1042 -p P2 -c printer --host ws-042 --requester ana --at 15m
      itops ticket open REQ-77 --kind request -p P4 -c software --summary 'install 7-Zip'
      itops ticket respond INC-1042 --note "called back" --at 10m
      itops ticket resolve INC-1042 --code fixed --first-contact
      itops ticket show INC-1042
      itops ticket list --state open --breached
    """


def _epoch(app: App, when: str | None) -> float | None:
    """A command-line time (`log.parse_when`: the calendar's zone unless an offset) as epoch."""
    from toolkit.cli.log import read_when

    moment = read_when(app, when)
    return None if moment is None else moment.timestamp()


def _local(t: float | None, policy: Policy) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t, policy.calendar.zone).strftime("%Y-%m-%d %H:%M")


def _record(
    app: App, ticket_id: str, event: str, data: dict[str, Any], at: str | None, as_json: bool
) -> None:
    from toolkit.desk.service import policy_for
    from toolkit.desk.tickets import record

    policy = policy_for(app.workspace)
    rec = record(app.ledger, ticket_id, event, data, policy, at=_epoch(app, at))
    if as_json:
        render.emit_json(rec.as_dict())
        return
    info = rec.info
    when = f" (back-dated to {info['at']})" if info.get("backdated") else ""
    render.echo(
        f"{ticket_id}: {event} by {rec.operator} at {rec.at[:19]}Z{when}, record #{rec.seq}"
    )


_AT = click.option(
    "--at",
    metavar="WHEN",
    help="When it really happened (back-dated): 2026-11-21T14:30, 2026-11-21T14:30+01:00, 20m.",
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print the recorded event as JSON.")


def _event_command(
    verb: str,
    event: str,
    doc: str,
    options: list[Callable[[Any], Any]],
    text_arg: str | None = None,
) -> None:
    def command(app: App, ticket_id: str, at: str | None, as_json: bool, **fields: Any) -> None:
        data = {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()}
        data = {k: v for k, v in data.items() if v not in (None, [], False)}
        _record(app, ticket_id, event, data, at, as_json)

    command.__doc__ = doc
    command.__name__ = verb
    decorated: Any = command
    for option in reversed(options):
        decorated = option(decorated)
    if text_arg:
        decorated = click.argument(text_arg)(decorated)
    decorated = _JSON(decorated)
    decorated = _AT(decorated)
    decorated = click.argument("ticket_id")(decorated)
    decorated = click.pass_obj(decorated)
    ticket.command(verb)(decorated)


@ticket.command("open")
@click.argument("ticket_id", required=False)
@click.option(
    "--category", "-c", default="other", show_default=True, help="e.g. " + ", ".join(CATEGORIES)
)
@click.option("--priority", "-p", type=click.Choice(PRIORITIES), default="P3", show_default=True)
@click.option(
    "--kind",
    type=click.Choice(TICKET_KINDS),
    default=DEFAULT_KIND,
    show_default=True,
    help="request: a standard request (password reset, account or permission change, software "
    "install), measured apart from incidents in the KPIs.",
)
@click.option("--requester", help="Who asked (user name or e-mail).")
@click.option("--contact", help="How to reach the requester.")
@click.option("--channel", type=click.Choice(CHANNELS), help="Where the request came in.")
@click.option("--host", "hosts", multiple=True, help="An affected host (repeatable).")
@click.option("--assignee", help="The engineer working on it.")
@click.option("--tier", type=click.Choice(TIERS), default="L1", show_default=True)
@click.option("--summary", "-s", help="One line: what is wrong.")
@_AT
@_JSON
@click.pass_obj
def open_(
    app: App,
    /,
    ticket_id: str | None,
    at: str | None,
    as_json: bool,
    **fields: Any,
) -> None:
    """Open a ticket (an id from the desk, or a generated one).

    \b
    Examples:
      itops ticket open INC-1042 -p P2 -c printer --host ws-042 --requester ana --channel phone
      itops ticket open REQ-77 --kind request -p P4 -c account --requester ana -s 'new VPN group'
    """
    from toolkit.desk.tickets import new_ticket_id

    ticket_id = ticket_id or new_ticket_id()
    check_ticket_id(ticket_id)
    data = {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()}
    _record(
        app,
        ticket_id,
        "opened",
        {k: v for k, v in data.items() if v not in (None, [])},
        at,
        as_json,
    )


_event_command(
    "respond",
    "responded",
    "Record the first (or a further) response to the user.\n\n\b\nExample:\n"
    "  itops ticket respond INC-1042 --note 'called back, queue stuck' --at 10m",
    [
        click.option("--note", help="What was said."),
        click.option("--via", type=click.Choice(CHANNELS)),
    ],
)
_event_command(
    "note",
    "note",
    "Add a note; --update marks it as a status update to the user (resets the update clock).\n\n"
    "\b\nExample:\n  itops ticket note INC-1042 'waiting for the vendor part' --update",
    [
        click.option(
            "--update", is_flag=True, help="This note was sent to the user as a status update."
        )
    ],
    text_arg="text",
)
_event_command(
    "escalate",
    "escalated",
    "Escalate to another tier (and engineer).\n\n\b\nExample:\n"
    "  itops ticket escalate INC-1042 --tier L3 --assignee sec-oncall --reason 'malware suspected'",
    [
        click.option("--tier", type=click.Choice(TIERS), required=True),
        click.option("--assignee", help="The engineer who takes it over."),
        click.option("--reason"),
    ],
)
_event_command(
    "wait",
    "waiting",
    "Wait on the user: the resolution clock pauses until `resume` (or `resolve`).\n\n\b\nExample:\n"
    "  itops ticket wait INC-1042 --reason 'user out until Monday'",
    [click.option("--reason")],
)
_event_command(
    "resume",
    "resumed",
    "The user is back: the resolution clock runs again.\n\n\b\nExample:\n  itops ticket resume INC-1042",
    [click.option("--note")],
)
_event_command(
    "resolve",
    "resolved",
    "Resolve: the resolution clock stops.\n\n\b\nExample:\n"
    "  itops ticket resolve INC-1042 --code fixed --first-contact --root-cause 'stuck spooler'",
    [
        click.option("--code", default="fixed", show_default=True, help="Resolution code."),
        click.option("--first-contact", is_flag=True, help="Solved at the first contact."),
        click.option("--resolution", help="What was done."),
        click.option("--root-cause"),
        click.option("--steps", help="Steps taken (for the knowledge base)."),
    ],
)
_event_command(
    "confirm",
    "confirmed",
    "The user confirms the fix (needed before closing).\n\n\b\nExample:\n  itops ticket confirm INC-1042",
    [click.option("--note")],
)
_event_command(
    "close",
    "closed",
    "Close a resolved ticket the user confirmed (or --unconfirmed).\n\n\b\nExample:\n"
    "  itops ticket close INC-1042",
    [
        click.option("--note"),
        click.option("--unconfirmed", is_flag=True, help="Close without the user's confirmation."),
    ],
)
_event_command(
    "reopen",
    "reopened",
    "Reopen a resolved or closed ticket: the resolution clock runs again.\n\n\b\nExample:\n"
    "  itops ticket reopen INC-1042 --reason 'queue stuck again'",
    [click.option("--reason")],
)
_event_command(
    "survey",
    "survey",
    "Record the user's satisfaction score (1–5).\n\n\b\nExample:\n  itops ticket survey INC-1042 --score 5",
    [
        click.option("--score", type=int, required=True, help="1 (bad) … 5 (excellent)."),
        click.option("--comment"),
    ],
)
_event_command(
    "update",
    "updated",
    "Correct what the ticket says: priority, category, kind, assignee, tier or summary (recorded\n"
    "as an event; the SLA targets follow a new priority, from the ticket's opening).\n\n\b\n"
    "Examples:\n"
    "  itops ticket update INC-1042 --priority P1 --reason 'whole floor cannot print'\n"
    "  itops ticket update REQ-77 --kind request --reason 'a standard install, not a fault'\n"
    "  itops ticket update INC-1042 --assignee jdoe --summary 'queue office paused'",
    [
        click.option("--priority", "-p", type=click.Choice(PRIORITIES)),
        click.option("--category", "-c", help="e.g. " + ", ".join(CATEGORIES)),
        click.option("--kind", type=click.Choice(TICKET_KINDS), help="incident or request."),
        click.option("--assignee"),
        click.option("--tier", type=click.Choice(TIERS)),
        click.option("--summary", "-s"),
        click.option("--reason", help="Why (kept with the change)."),
    ],
)
_event_command(
    "complain",
    "complaint",
    "Record a complaint about the handling of a ticket.\n\n\b\nExample:\n"
    "  itops ticket complain INC-1042 'nobody called back'",
    [],
    text_arg="text",
)


# -- reading ------------------------------------------------------------------------------------
def _clock_lines(s: TicketSummary, policy: Policy, now: float) -> list[str]:
    zone = policy.calendar.timezone + (" 24×7" if s.always else " business hours")
    lines = []
    if s.response_at is None:
        state = "BREACHED (no response yet)" if s.response_due < now else "running"
        lines.append(
            f"response:   target {s.response_target:g} min, due {_local(s.response_due, policy)} — {state}"
        )
    else:
        verdict = "met" if s.response_at <= s.response_due else "BREACHED"
        lines.append(
            f"response:   target {s.response_target:g} min, due {_local(s.response_due, policy)}; "
            f"responded {_local(s.response_at, policy)} after {s.response_minutes or 0:.0f} min — {verdict}"
        )
    if s.resolved_at is not None:
        used = s.resolution_minutes or 0.0
        verdict = "met" if used <= s.resolution_target else "BREACHED"
        lines.append(
            f"resolution: target {s.resolution_target:g} min; resolved {_local(s.resolved_at, policy)} "
            f"after {used:.0f} min — {verdict}"
        )
    else:
        used = s.resolution_elapsed(policy, now)
        running = "paused (waiting on the user)" if s.state == "waiting" else "running"
        verdict = "BREACHED" if used > s.resolution_target else running
        lines.append(
            f"resolution: target {s.resolution_target:g} min; {used:.0f} min elapsed — {verdict}"
        )
    if s.update_due is not None:
        late = " — OVERDUE" if s.update_due < now else ""
        lines.append(f"status update due {_local(s.update_due, policy)}{late}")
    lines.append(f"(clocks in {zone}; times shown in {policy.calendar.timezone})")
    return lines


def _summary_dict(s: TicketSummary, policy: Policy, now: float) -> dict[str, Any]:
    from toolkit.clock import iso_seconds

    return {
        "ticket": s.ticket,
        "state": s.state,
        "priority": s.priority,
        "category": s.category,
        "kind": s.kind,
        "requester": s.requester,
        "hosts": list(s.hosts),
        "assignee": s.assignee,
        "tier": s.tier,
        "summary": s.summary,
        "opened_at": iso_seconds(s.opened_at),
        "response_due": iso_seconds(s.response_due),
        "responded_at": iso_seconds(s.response_at),
        "response_minutes": None if s.response_minutes is None else round(s.response_minutes, 1),
        "response_target": s.response_target,
        "resolved_at": iso_seconds(s.resolved_at),
        "resolution_minutes": round(
            s.resolution_minutes
            if s.resolution_minutes is not None
            else s.resolution_elapsed(policy, now),
            1,
        ),
        "resolution_target": s.resolution_target,
        "breached": s.breached(policy, now),
        "escalations": s.escalations,
        "reopens": s.reopens,
        "update_due": iso_seconds(s.update_due),
        "survey_score": s.survey_score,
    }


@ticket.command()
@click.argument("ticket_id")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the ticket, its clocks and records as JSON."
)
@click.pass_obj
@reads_only
def show(app: App, ticket_id: str, as_json: bool) -> None:
    """Show a ticket: its SLA clocks and a timeline of its events and actions.

    \b
    Example:
      itops ticket show INC-1042
    """
    from toolkit.cli.log import action_rows
    from toolkit.desk.governance import GOVERNANCE_KINDS, describe, links
    from toolkit.desk.service import policy_for
    from toolkit.desk.tickets import from_records, summarize

    check_ticket_id(ticket_id)
    records = list(app.ledger.records(ticket=ticket_id))
    if not records:
        raise NotFound(f"no ticket {ticket_id!r} in the ticket log")
    policy = policy_for(app.workspace)
    now = datetime.now(UTC).timestamp()
    events, actions = from_records(records)
    summary = summarize(ticket_id, events, actions, policy)
    governed = links(app.ledger, records)  # each change's policy decision and approval
    changes = [row for row in action_rows(records) if row.get("action_id") in governed]
    if as_json:
        render.emit_json(
            {
                "ticket": ticket_id,
                "summary": None if summary is None else _summary_dict(summary, policy, now),
                "changes": [
                    app.redactor.mask_data(
                        {
                            k: row[k]
                            for k in ("action_id", "seq", "at", "operator", "host", "outcome")
                        }
                        | {"task": row["action"], **governed[row["action_id"]]}
                    )
                    for row in changes
                ],
                "records": [app.redactor.mask_data(r.as_dict()) for r in records],
            }
        )
        return
    if summary is not None:
        render.echo(ticket_id, bold=True, nl=False)
        who = f"{summary.assignee or 'unassigned'}" + (f" ({summary.tier})" if summary.tier else "")
        render.echo(
            f"  {summary.priority} {summary.category} {summary.kind}  {summary.state}  "
            f"assignee {who}"
            + (f"  requester {summary.requester}" if summary.requester else "")
            + (f"  hosts {', '.join(summary.hosts)}" if summary.hosts else "")
        )
        if summary.summary:
            render.echo(f"  {summary.summary}")
        for line in _clock_lines(summary, policy, now):
            render.echo("  " + line)
        for anomaly in summary.anomalies:
            render.echo(f"  warning: event {anomaly}", fg="yellow")
    rows: list[tuple[float, int, tuple[str, ...]]] = []
    for ev in events:
        fields = {k: v for k, v in ev.data.items() if k != "by" and v not in (None, "", [], {})}
        detail = ", ".join(f"{k}={v}" for k, v in fields.items())
        mark = " (back-dated)" if ev.backdated else ""
        # who did it: the other desk's person for imported events (the importer is the operator)
        who = ev.data.get("by") or ev.operator
        rows.append(
            (ev.at, ev.seq, (_local(ev.at, policy) + mark, who, "", ev.event, "", detail[:100]))
        )
    for row in action_rows(
        r for r in records if r.kind.startswith("action.") or r.kind in GOVERNANCE_KINDS
    ):
        if extra := describe(governed.get(row.get("action_id") or "")):
            row["detail"] = f"{row['detail']} · {extra}" if row["detail"] else extra
        t = datetime.fromisoformat(row["at"]).timestamp()
        rows.append(
            (
                t,
                row["seq"],
                (
                    _local(t, policy),
                    row["operator"],
                    row["host"] or "",
                    row["action"],
                    row["outcome"],
                    row["detail"],
                ),
            )
        )
    rows.sort(key=lambda r: (r[0], r[1]))
    render.table(
        [
            f"time ({policy.calendar.timezone})",
            "operator",
            "host",
            "event / action",
            "outcome",
            "detail",
        ],
        [r[2] for r in rows],
        style_column="outcome",
    )


@ticket.command("list")
@click.option("--state", type=click.Choice([*STATES, "active"]), help="active = open or waiting.")
@click.option("--priority", type=click.Choice(PRIORITIES))
@click.option("--category")
@click.option("--kind", type=click.Choice(TICKET_KINDS), help="Only incidents, or only requests.")
@click.option("--assignee")
@click.option("--breached", is_flag=True, help="Only tickets past an SLA target now.")
@click.option(
    "--limit",
    type=click.IntRange(0),
    default=200,
    show_default=True,
    help="Table: newest N (0: all).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON: one object per ticket (never cut).")
@click.pass_obj
@reads_only
def list_(
    app: App,
    state: str | None,
    priority: str | None,
    category: str | None,
    kind: str | None,
    assignee: str | None,
    breached: bool,
    limit: int,
    as_json: bool,
) -> None:
    """List tickets with their state and SLA status.

    \b
    Examples:
      itops ticket list --state active --breached
      itops ticket list --priority P1 --assignee ana --json
      itops ticket list --kind request --state active
    """
    from toolkit.desk.service import policy_for, projection_for

    policy = policy_for(app.workspace)
    projection = projection_for(app, policy)
    try:
        tickets = projection.tickets(
            priority=priority, category=category, kind=kind, assignee=assignee
        )
        render.warn_anomalies(projection.anomalies())
    finally:
        projection.close()
    now = datetime.now(UTC).timestamp()
    if state == "active":
        tickets = [t for t in tickets if t.state in ("open", "waiting")]
    elif state:
        tickets = [t for t in tickets if t.state == state]
    if breached:
        tickets = [t for t in tickets if t.breached(policy, now)]
    tickets.sort(key=lambda t: (t.opened_at, t.ticket))
    if as_json:
        render.emit_json([_summary_dict(t, policy, now) for t in tickets])
        return
    total = len(tickets)
    shown = tickets[-limit:] if limit else tickets
    render.table(
        ["ticket", "opened", "prio", "category", "kind", "state", "assignee", "SLA", "summary"],
        [
            (
                t.ticket,
                _local(t.opened_at, policy),
                t.priority,
                t.category,
                t.kind,
                t.state,
                t.assignee or "",
                "BREACHED" if t.breached(policy, now) else "ok",
                (t.summary or "")[:60],
            )
            for t in shown
        ],
    )
    if limit and total > limit:
        render.echo(f"(newest {limit} of {total}; --limit 0 shows all)", err=True)


@ticket.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def import_(app: App, file: Path, as_json: bool) -> None:
    """Import ticket events from another desk (JSON Lines; all-or-nothing).

    One event per line: {"ticket": "INC-7", "event": "opened", "at": "2026-11-02T09:14:00+01:00",
    "priority": "P2", …}. Every line is checked first; any bad line is reported with its line
    number and nothing from the file is written. See docs/tickets.md for the fields.

    \b
    Example:
      itops ticket import desk-export.jsonl
    """
    from toolkit.desk.service import projection_for
    from toolkit.desk.ticketio import import_file

    projection = projection_for(app)
    try:
        # the projection summarises the checked file while the ledger appends it
        result = import_file(app.ledger, file, on_checked=projection.prime)
        projection.refresh()  # nothing left to do when the priming held
    finally:
        projection.close()
    if as_json:
        render.emit_json(result.__dict__)
    else:
        render.echo(
            f"imported {result.events} event(s) of {result.tickets} ticket(s) from {file}"
            + (f" as records #{result.first_seq}–#{result.last_seq}" if result.first_seq else "")
        )


@ticket.command("export")
@click.option("--ticket", "ticket_id", help="Only this ticket.")
@click.option("--since", metavar="WHEN", help="Events from this time (2026-11-01, 7d).")
@click.option("--until", metavar="WHEN", help="Events before this time.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File (default: stdout).",
)
@click.pass_obj
@reads_only
def export(
    app: App, ticket_id: str | None, since: str | None, until: str | None, output: Path | None
) -> None:
    """Export ticket events as JSON Lines (the format `ticket import` reads).

    \b
    Example:
      itops ticket export --since 2026-11-01 -o tickets.jsonl
    """
    from toolkit.desk.ticketio import export_lines, write_lines

    if ticket_id:
        check_ticket_id(ticket_id)
    rows = (
        app.redactor.mask_data(r)
        for r in export_lines(
            app.ledger, ticket=ticket_id, since=_epoch(app, since), until=_epoch(app, until)
        )
    )
    if output is None:
        write_lines(rows, sys.stdout)
        return
    with output.open("w", encoding="utf-8") as handle:
        count = write_lines(rows, handle)
    render.echo(f"exported {count} event(s) to {output}", err=True)

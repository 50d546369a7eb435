"""`itops log`: read the ticket log."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo
from typing import Any

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.cli.options import reads_only
from toolkit.clock import duration_of, iso
from toolkit.desk.governance import describe, host_records, links
from toolkit.desk.governance import summary as governance_summary
from toolkit.errors import ToolkitError, ValidationError
from toolkit.ledger import COLUMNS, Record
from toolkit.textsafe import CsvWriter


def parse_when(value: str | None, zone: tzinfo, *, now: datetime | None = None) -> datetime | None:
    """`2026-11-21`, `2026-11-21T10:00`, `2026-11-21T10:00+01:00` or relative `90m`/`2d` → an
    instant (UTC).

    The one reading of a time on the command line (log, kpi, report, ticket --at): without an
    offset it is wall time in `zone`, the desk calendar's (`read_when`), so a bare date is local
    midnight there and a month for a Berlin desk starts and ends at Berlin midnight, whatever
    the machine's zone; an explicit offset (`+02:00`, `Z`) wins."""
    if value is None:
        return None
    now = now or datetime.now(UTC)
    try:
        back = duration_of(value)  # relative: that long before now
        if back is not None:
            return (now - back).astimezone(UTC)
        moment = datetime.fromisoformat(value.strip())
    except (ValueError, OverflowError):
        raise ValidationError(
            f"cannot read the time {value!r}",
            hint="use 2026-11-21, 2026-11-21T14:30, 2026-11-21T14:30+01:00, or 90m / 12h / 7d",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def read_when(app: App, value: str | None, now: datetime | None = None) -> datetime | None:
    """A command-line time read by `parse_when` in the desk's zone: the workspace's [calendar]
    timezone (else this machine's zone); relative forms count back from the app's clock."""
    from toolkit.desk.sla import calendar_zone

    if value is None:
        return None
    return parse_when(value, calendar_zone(app.workspace.config), now=now or app.clock.now())


def ledger_time(app: App, value: str | None) -> str | None:
    """A command-line time (`read_when`) as the ledger writes times."""
    moment = read_when(app, value)
    return None if moment is None else iso(moment)


def action_rows(records: Iterable[Record]) -> list[dict[str, Any]]:
    """One row per action (begin and finish merged; `open` if never finished) or other event."""
    rows: list[dict[str, Any]] = []
    by_action: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec.kind in ("action.begin", "action.finish") and rec.action_id:
            row = by_action.get(rec.action_id)
            if row is None:
                row = {
                    "at": rec.at,
                    "operator": rec.operator,
                    "db_user": rec.db_user,
                    "ticket": rec.ticket,
                    "host": rec.host,
                    "action": rec.task,
                    "outcome": "open",
                    "detail": "",
                    "duration": None,
                    "seq": rec.seq,
                    "action_id": rec.action_id,
                }
                by_action[rec.action_id] = row
                rows.append(row)
            if rec.kind == "action.finish":
                info = rec.info
                row["outcome"] = rec.outcome or "?"
                row["duration"] = (rec.duration_ms or 0) / 1000
                row["detail"] = info.get("message") or ""
            elif rec.kind == "action.begin" and row["outcome"] == "open":
                row["detail"] = "begun, never finished"
        else:
            info = rec.info
            detail = governance_summary(rec) or ", ".join(
                f"{k}={v}" for k, v in info.items() if v not in (None, "", [], {})
            )
            rows.append(
                {
                    "at": rec.at,
                    "operator": rec.operator,
                    "db_user": rec.db_user,
                    "ticket": rec.ticket,
                    "host": rec.host,
                    "action": rec.kind,
                    "outcome": "",
                    "detail": detail[:120],
                    "duration": None,
                    "seq": rec.seq,
                }
            )
    return rows


OUTCOMES = (
    "already-ok", "fixed", "would-fix", "failed", "unreachable", "skipped", "needs-approval", "open",
)  # fmt: skip
UNCHANGED = ("already-ok", "would-fix", "skipped", "needs-approval")


def check_filters(app: App, **given: tuple[str, ...]) -> None:
    """Refuse a filter value the log has never seen (a typo would show an empty table and exit
    0), naming the closest known values."""
    import difflib

    known: dict[str, Iterable[str]] = {"outcome": OUTCOMES}
    for name, values in given.items():
        if not values:
            continue
        if name not in known:
            found = {str(v[0]) for v in app.ledger.tally((name,)) if v[0]}
            with contextlib.suppress(ToolkitError):  # an auditor's copy may come without them
                if name == "host":
                    found |= set(app.inventory.hosts)
                if name == "task":
                    found |= {t.name for t in app.catalog.infos()}
            known[name] = found
        for value in values:
            if value not in known[name]:
                close = difflib.get_close_matches(value, sorted(known[name]), n=3, cutoff=0.5)
                hint = f"did you mean {', '.join(close)}?" if close else None
                if name == "outcome":
                    hint = (hint + " " if hint else "") + f"outcomes: {', '.join(OUTCOMES)}"
                raise ValidationError(f"no {name} {value!r} in the ticket log", hint=hint)


def _open_actions(records: Iterable[Record]) -> list[Record]:
    finished = {r.action_id for r in records if r.kind == "action.finish"}
    return [r for r in records if r.kind == "action.begin" and r.action_id not in finished]


def changes(records: list[Record]) -> list[Record]:
    """What changed, or may have: actions of fix runs that did not end unchanged (fixed,
    failed, unreachable, open), and every event that is not an action."""
    quiet: set[str | None] = set()
    for r in records:
        if (r.kind == "action.begin" and r.info.get("mode") == "check") or (
            r.kind == "action.finish" and r.outcome in UNCHANGED
        ):
            quiet.add(r.action_id)
    return [r for r in records if not r.kind.startswith("action.") or r.action_id not in quiet]


@click.command()
@click.option("--ticket", multiple=True, help="Only this ticket (repeat for several).")
@click.option("--host", multiple=True, help="Only this host (repeat for several).")
@click.option("--operator", multiple=True, help="Only this operator (repeat for several).")
@click.option(
    "--task", multiple=True, help="Only this remediation, e.g. printer.clear-queue (repeatable)."
)
@click.option(
    "--outcome",
    multiple=True,
    help="Only actions with this outcome: fixed, failed, …, or open (repeatable).",
)
@click.option(
    "--changes-only",
    is_flag=True,
    help="Hide what changed nothing: --check runs and actions that ended already-ok, skipped "
    "or needs-approval (tickets, approvals and refusals stay).",
)
@click.option(
    "--since",
    metavar="WHEN",
    help="From this time: 2026-11-21, 2026-11-21T14:30 (the calendar's zone unless an offset "
    "is given), or 12h / 7d ago.",
)
@click.option("--until", metavar="WHEN", help="Before this time (same forms).")
@click.option(
    "--limit",
    type=click.IntRange(0),
    default=200,
    show_default=True,
    help="Table view: show the last N rows (0: all). JSON and CSV are never cut.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one ledger record per line.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: one ledger record per row.")
@click.pass_obj
@reads_only
def log(
    app: App,
    ticket: tuple[str, ...],
    host: tuple[str, ...],
    operator: tuple[str, ...],
    task: tuple[str, ...],
    outcome: tuple[str, ...],
    changes_only: bool,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Read the ticket log: who did what, where, when, and the verified outcome.

    The table merges each action's begin and finish records; --json and --csv give the
    raw records with their hashes. A filter value the log has never seen is an error with
    the closest known ones; a repeated filter matches any of its values.

    \b
    Examples:
      itops log --ticket INC-1042
      itops log --host ws-042 --since 7d
      itops log --outcome failed --outcome unreachable --changes-only
      itops log --outcome failed --json | jq .host
    """
    check_filters(app, ticket=ticket, host=host, operator=operator, task=task, outcome=outcome)
    filters: dict[str, Any] = {
        "since": ledger_time(app, since),
        "until": ledger_time(app, until),
    }
    for name, values in (("ticket", ticket), ("operator", operator), ("task", task)):
        if len(values) == 1:
            filters[name] = values[0]
    wanted = set(outcome)
    if len(wanted) == 1 and "open" not in wanted:
        filters["outcome"] = next(iter(wanted))
    # a host's records and the approvals, break-glass and refusals that concern it
    source = host_records(app.ledger, host, **filters) if host else app.ledger.records(**filters)
    records = [
        r
        for r in source
        if (not ticket or r.ticket in ticket)
        and (not operator or r.operator in operator)
        and (not task or r.task in task)
    ]
    if changes_only:
        records = changes(records)
    governed = links(app.ledger, records)  # each change's policy decision and approval
    if as_json or as_csv:
        raw = records
        if wanted:
            begun_open = (
                {r.action_id for r in _open_actions(records)} if "open" in wanted else set()
            )
            raw = [
                r
                for r in records
                if (r.kind == "action.finish" and r.outcome in wanted)
                or (r.kind == "action.begin" and r.action_id in begun_open)
            ]
        if as_json:
            render.emit_jsonl(
                r.as_dict()
                | ({"governance": governed[r.action_id]} if r.action_id in governed else {})
                for r in raw
            )
        else:
            writer = CsvWriter(sys.stdout)  # cells an outsider wrote: no formulas (OWASP)
            writer.writerow(COLUMNS)
            for r in raw:
                writer.writerow([getattr(r, c) for c in COLUMNS])
        return
    rows = action_rows(records)
    for row in rows:
        if extra := describe(governed.get(row.get("action_id") or "")):
            row["detail"] = f"{row['detail']} · {extra}" if row["detail"] else extra
    if wanted:
        rows = [r for r in rows if r["outcome"] in wanted]
    total = len(rows)
    if limit and total > limit:
        rows = rows[-limit:]
    render.table(
        ["time (UTC)", "operator", "ticket", "host", "action", "outcome", "detail"],
        [
            (
                r["at"][:19].replace("T", " "),
                r["operator"] + (f" [db: {r['db_user']}]" if r.get("db_user") else ""),
                r["ticket"] or "",
                r["host"] or "",
                r["action"],
                r["outcome"],
                r["detail"],
            )
            for r in rows
        ],
        style_column="outcome",
    )
    if limit and total > limit:
        render.echo(f"(last {limit} of {total}; --limit 0 shows all)", err=True)

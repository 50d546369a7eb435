"""What each page of the web view shows, as data: a `View` of tables (and a few figures), built
from the ledger opened read-only. The same View is rendered as HTML, CSV or JSON (`server`), so
an export is exactly what the page shows.

Nothing here writes: the one record the web view writes (`audit.view`) is `server`'s business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from toolkit.clock import iso, iso_seconds
from toolkit.desk.governance import (
    APPROVAL_KINDS,
    GOVERNANCE_KINDS,
    approvals,
    describe,
    host_records,
    links,
)
from toolkit.desk.governance import summary as governance_summary
from toolkit.errors import NotFound, ValidationError
from toolkit.ledger.store import UNCHANGED

if TYPE_CHECKING:
    from toolkit.app import App
    from toolkit.desk.projection import Projection
    from toolkit.desk.sla import Policy
    from toolkit.desk.tickets import TicketSummary
    from toolkit.ledger import Ledger, Record

SEARCH_FILTERS = ("host", "ticket", "operator", "task", "outcome")
HOST_ROWS = 500  # a host's page: its newest actions and events


@dataclass
class Table:
    """A table: `columns` are (key, label); each row a dict by key. Cells in `links` columns link
    to the ticket or host page of their value."""

    title: str
    columns: Sequence[tuple[str, str]]
    rows: list[dict[str, Any]]
    note: str = ""


@dataclass
class View:
    title: str
    tables: list[Table] = field(default_factory=list)
    facts: list[tuple[str, Any]] = field(default_factory=list)  # (label, value) above the tables
    data: dict[str, Any] = field(default_factory=dict)  # extra JSON (e.g. KPI values)
    tiles: list[dict[str, Any]] = field(default_factory=list)  # KPI tiles
    paging: dict[str, Any] = field(default_factory=dict)  # older/newer seq for the search
    form: dict[str, Any] = field(default_factory=dict)  # the search form's values
    scope: dict[str, Any] = field(default_factory=dict)  # what was asked (recorded with the view)


def when(record_at: str | None) -> str:
    """A recorded time, readable: `2026-11-21 09:56:39 UTC`."""
    return f"{record_at[:19].replace('T', ' ')} UTC" if record_at else ""


def local(t: float | None, policy: Policy) -> str:
    if t is None:
        return ""
    zone = policy.calendar.zone
    return datetime.fromtimestamp(t, zone).strftime("%Y-%m-%d %H:%M ") + str(
        policy.calendar.timezone
    )


def read_day(value: str | None, policy: Policy, what: str) -> str | None:
    """A date or time from the form (`2026-11-21`, `2026-11-21T14:30`, with or without an
    offset; without one it is the desk calendar's wall time) → the ledger's time text."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(
            f"cannot read the {what} time {value!r}",
            hint="use 2026-11-21 or 2026-11-21T14:30 (optionally with +01:00)",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=policy.calendar.zone)
    return iso(moment.astimezone(UTC))


def _int(value: str | None, what: str) -> int | None:
    if value in (None, ""):
        return None
    assert value is not None
    if not value.isdigit():
        raise ValidationError(f"{what} must be a record number, not {value!r}")
    return int(value)


def _detail(r: Record) -> str:
    """One line of what a record says (the full record is in the JSON export)."""
    info = r.info
    text = governance_summary(r)
    if text is None:
        if r.kind == "action.finish":
            text = str(info.get("message") or "")
        elif r.kind == "action.begin":
            mode = info.get("mode")
            params = r.as_dict()["params"] or {}
            text = (f"{mode}: " if mode else "") + ", ".join(f"{k}={v}" for k, v in params.items())
            hops = [str(h.get("name")) for h in info.get("jump") or [] if isinstance(h, dict)]
            if hops:  # the bastions it went through (names; the JSON has addresses and keys)
                text += f" · via {' → '.join(hops)}"
        else:
            text = ", ".join(f"{k}={v}" for k, v in info.items() if v not in (None, "", [], {}))
    return text if len(text) <= 200 else text[:199] + "…"


def record_rows(ledger: Ledger, records: Sequence[Record]) -> list[dict[str, Any]]:
    governed = links(ledger, records)  # each change's policy decision and approval
    rows = []
    for r in records:
        detail = _detail(r)
        if extra := describe(governed.get(r.action_id or "")):
            detail = f"{detail} · {extra}" if detail else extra
        rows.append(
            {
                "seq": r.seq,
                "at": when(r.at),
                "operator": r.operator,
                "ticket": r.ticket or "",
                "host": r.host or "",
                "what": r.task if r.kind.startswith("action.") and r.task else r.kind,
                "kind": r.kind,
                "outcome": r.outcome or ("begun" if r.kind == "action.begin" else ""),
                "detail": detail,
            }
        )
    return rows


RECORD_COLUMNS = (
    ("seq", "#"),
    ("at", "time (UTC)"),
    ("operator", "operator"),
    ("ticket", "ticket"),
    ("host", "host"),
    ("what", "task / event"),
    ("outcome", "outcome"),
    ("detail", "detail"),
)


# -- the ledger search ---------------------------------------------------------------------------
def search(ledger: Ledger, policy: Policy, query: Mapping[str, str], page_size: int) -> View:
    """Records newest first, by host, ticket, operator, task, outcome, period and changes only;
    keyset pages (`before`/`after` a record number: each page is an indexed query, however deep)."""
    form = {k: (query.get(k) or "").strip() for k in (*SEARCH_FILTERS, "since", "until")}
    changes = query.get("changes") in ("1", "on", "true")
    filters: dict[str, Any] = {k: v for k in SEARCH_FILTERS if (v := form[k])}
    if form["outcome"] and form["outcome"] not in (*UNCHANGED, "fixed", "failed", "unreachable"):
        raise ValidationError(f"no outcome {form['outcome']!r}")
    filters["since"] = read_day(form["since"], policy, "since")
    filters["until"] = read_day(form["until"], policy, "until")
    filters["changes_only"] = changes
    views = query.get("views") in ("1", "on", "true")  # the web view's own page-view records
    if not views:
        filters["not_kinds"] = ["audit.view"]
    before, after = _int(query.get("before"), "before"), _int(query.get("after"), "after")
    if after is not None:  # the page above: the oldest page_size newer than `after`, flipped
        found = list(ledger.records(**filters, seq_from=after + 1, limit=page_size + 1))
        more_newer = len(found) > page_size
        found = found[:page_size][::-1]
        more_older = True
    else:
        found = list(
            ledger.records(
                **filters,
                newest_first=True,
                seq_to=None if before is None else before - 1,
                limit=page_size + 1,
            )
        )
        more_older = len(found) > page_size
        found = found[:page_size]
        more_newer = before is not None
    if changes:
        found = _without_checks(ledger, found)
    paging = {
        "older": found[-1].seq if found and more_older else None,
        "newer": found[0].seq if found and more_newer else None,
    }
    scope = {k: v for k, v in {**form, "changes": changes, "views": views}.items() if v}
    scope |= {k: v for k, v in (("before", before), ("after", after)) if v is not None}
    return View(
        "Ledger search",
        [
            Table(
                "Records, newest first",
                RECORD_COLUMNS,
                record_rows(ledger, found),
                "" if found else "no record matches",
            )
        ],
        form={**form, "changes": changes, "views": views},
        paging=paging,
        scope=scope,
        data={"records": [r.as_dict() for r in found]},  # JSON: every field, as stored
    )


def _without_checks(ledger: Ledger, found: list[Record]) -> list[Record]:
    """Changes only: drop the finish records of --check runs (their mode is on the begin record,
    found by action id: one indexed query per page)."""
    ids = [r.action_id for r in found if r.kind == "action.finish" and r.action_id]
    if not ids:
        return found
    checks = {
        r.action_id
        for r in ledger.records(action_ids=ids, kind="action.begin")
        if r.info.get("mode") == "check"
    }
    return [r for r in found if r.action_id not in checks]


# -- a ticket ------------------------------------------------------------------------------------
def clocks(s: TicketSummary, policy: Policy, now: float) -> list[dict[str, Any]]:
    """The ticket's SLA clocks: target, due, what happened, and the verdict."""
    rows = []
    if s.response_at is None:
        state = "BREACHED (no response yet)" if s.response_due < now else "running"
        rows.append(
            {"clock": "response", "target": f"{s.response_target:g} min",
             "due": local(s.response_due, policy), "actual": "no response yet", "state": state}
        )  # fmt: skip
    else:
        verdict = "met" if s.response_at <= s.response_due else "BREACHED"
        rows.append(
            {"clock": "response", "target": f"{s.response_target:g} min",
             "due": local(s.response_due, policy),
             "actual": f"responded {local(s.response_at, policy)} after "
                       f"{s.response_minutes or 0:.0f} min",
             "state": verdict}
        )  # fmt: skip
    if s.resolved_at is not None:
        used = s.resolution_minutes or 0.0
        verdict = "met" if used <= s.resolution_target else "BREACHED"
        actual = f"resolved {local(s.resolved_at, policy)} after {used:.0f} min"
    else:
        used = s.resolution_elapsed(policy, now)
        running = "paused (waiting on the user)" if s.state == "waiting" else "running"
        verdict = "BREACHED" if used > s.resolution_target else running
        actual = f"{used:.0f} min elapsed"
    rows.append(
        {"clock": "resolution", "target": f"{s.resolution_target:g} min", "due": "",
         "actual": actual, "state": verdict}
    )  # fmt: skip
    if s.update_due is not None:
        rows.append(
            {"clock": "status update", "target": "", "due": local(s.update_due, policy),
             "actual": "", "state": "OVERDUE" if s.update_due < now else "due"}
        )  # fmt: skip
    return rows


def ticket(ledger: Ledger, policy: Policy, ticket_id: str, now: float) -> View:
    from toolkit.desk.tickets import check_ticket_id, from_records, summarize

    check_ticket_id(ticket_id)
    records = list(ledger.records(ticket=ticket_id))
    if not records:
        raise NotFound(f"no ticket {ticket_id!r} in the ticket log")
    events, actions = from_records(records)
    s = summarize(ticket_id, events, actions, policy)
    facts: list[tuple[str, Any]] = []
    tables = []
    if s is not None:
        facts = [
            ("state", s.state),
            ("priority", s.priority),
            ("category", s.category),
            ("kind", s.kind),
            ("assignee", (s.assignee or "unassigned") + (f" ({s.tier})" if s.tier else "")),
            ("requester", s.requester or ""),
            ("hosts", ", ".join(s.hosts)),
            ("summary", s.summary or ""),
            ("opened", local(s.opened_at, policy)),
            ("breached", "yes" if s.breached(policy, now) else "no"),
        ]
        tables.append(
            Table(
                f"SLA clocks ({policy.calendar.timezone}, "
                + ("24×7" if s.always else "business hours")
                + ")",
                (
                    ("clock", "clock"),
                    ("target", "target"),
                    ("due", "due"),
                    ("actual", "so far"),
                    ("state", "state"),
                ),
                clocks(s, policy, now),
            )
        )
    rows = []
    for ev in events:
        detail = ", ".join(
            f"{k}={v}" for k, v in ev.data.items() if k != "by" and v not in (None, "", [], {})
        )
        rows.append(
            {"seq": ev.seq, "at": local(ev.at, policy) + (" (back-dated)" if ev.backdated else ""),
             "_t": ev.at, "operator": ev.data.get("by") or ev.operator, "host": "",
             "what": ev.event, "outcome": "", "detail": detail[:200]}
        )  # fmt: skip
    other = [r for r in records if r.kind.startswith("action.") or r.kind in GOVERNANCE_KINDS]
    for row, r in zip(record_rows(ledger, other), other, strict=True):
        t = datetime.fromisoformat(r.at).timestamp()
        rows.append(row | {"at": local(t, policy), "_t": t})
    rows.sort(key=lambda row: (row["_t"], row["seq"]))
    for row in rows:
        del row["_t"]
    tables.append(
        Table(
            "Timeline",
            (
                ("seq", "#"),
                ("at", f"time ({policy.calendar.timezone})"),
                ("operator", "operator"),
                ("host", "host"),
                ("what", "event / action"),
                ("outcome", "outcome"),
                ("detail", "detail"),
            ),
            rows,
        )
    )
    return View(
        f"Ticket {ticket_id}",
        tables,
        facts=facts,
        scope={"ticket": ticket_id},
        data={"anomalies": list(s.anomalies) if s else []},
    )


# -- a host --------------------------------------------------------------------------------------
def host(ledger: Ledger, host_name: str) -> View:
    """A host's actions and events with the approvals, break-glass and refusals that concern it
    (`governance.host_records`), newest first."""
    if not host_name:
        raise ValidationError("which host?", hint="/host?name=HOST")
    found = list(host_records(ledger, [host_name]))
    if not found:
        raise NotFound(f"nothing recorded for the host {host_name!r}")
    shown = found[-HOST_ROWS:][::-1]
    changes = sum(1 for r in found if r.kind == "action.finish" and r.outcome not in UNCHANGED)
    governance = sum(1 for r in found if r.kind in GOVERNANCE_KINDS)
    return View(
        f"Host {host_name}",
        [
            Table(
                "History, newest first (with the governance records that concern it)",
                RECORD_COLUMNS,
                record_rows(ledger, shown),
                f"newest {HOST_ROWS} of {len(found)}" if len(found) > HOST_ROWS else "",
            )
        ],
        facts=[
            ("records", len(found)),
            ("changes (finished, not unchanged)", changes),
            ("approvals, break-glass and refusals", governance),
        ],
        scope={"host": host_name},
        data={"records": [r.as_dict() for r in shown]},  # JSON: every field, as stored
    )


# -- approvals -----------------------------------------------------------------------------------
def approval_list(ledger: Ledger) -> View:
    ids = [r.info.get("request_id") for r in ledger.records(kind="approval.requested")]
    found = approvals(ledger, [str(i) for i in ids if i])
    rows = []
    for a in sorted(found.values(), key=lambda a: str(a.get("requested_at") or ""), reverse=True):
        rows.append(
            {
                "request_id": a["request_id"],
                "state": a["state"],
                "ticket": a.get("ticket") or "",
                "task": a.get("task") or "",
                "hosts": ", ".join(map(str, a.get("hosts") or [])),
                "requested_by": a.get("requested_by") or "",
                "requested_at": when(a.get("requested_at")),
                "reason": a.get("reason") or "",
                "approved_by": a.get("approved_by") or "",
                "approved_at": when(a.get("approved_at")),
                "expires_at": when(a.get("expires_at")),
                "used": a["used"],
                "refusals": "; ".join(
                    f"{when(x['at'])} {x['by']}: {x.get('reason') or ''}" for x in a["refusals"]
                ),
                "params_sha256": a.get("params_sha256") or "",
            }
        )
    columns = (
        ("request_id", "request"), ("state", "state"), ("ticket", "ticket"), ("task", "task"),
        ("hosts", "hosts"), ("requested_by", "asked by"), ("requested_at", "asked (UTC)"),
        ("reason", "reason"), ("approved_by", "approved by"), ("approved_at", "approved (UTC)"),
        ("expires_at", "expires (UTC)"), ("used", "used"), ("refusals", "refused"),
    )  # fmt: skip
    return View(
        "Approvals",
        [Table("Approval requests, newest first", columns, rows, "" if rows else "none yet")],
        data={"kinds": list(APPROVAL_KINDS)},
    )


# -- the chain -----------------------------------------------------------------------------------
def chain(app: App) -> View:
    ledger = app.ledger
    report = ledger.verify()
    log = app.workspace.anchor_log()
    anchors = log.check(ledger.hashes, report.head_seq)
    newest = anchors.newest
    problem = report.reason if not report.ok else anchors.problem
    facts: list[tuple[str, Any]] = [
        ("chain", "intact" if problem is None else f"BROKEN: {problem}"),
        ("records", report.records),
        ("head", f"#{report.head_seq} {report.head_hash}" if report.head_seq else "empty"),
        ("first broken record", report.first_bad_seq or ""),
        ("actions begun, never finished", len(report.open_actions)),
        ("anchors", f"{anchors.anchors} in {log.path}"),
        (
            "last anchor",
            f"#{newest.seq} {newest.hash} signed {when(newest.at)}" if newest else "none yet",
        ),
        ("checked against", anchors.used),
        (
            "records after the last anchor",
            (report.head_seq or 0) - (newest.seq if newest else 0),
        ),
    ]
    return View(
        "Chain status",
        facts=facts,
        data={
            **report.as_dict(problem),
            "last_anchor": None
            if newest is None
            else {"seq": newest.seq, "hash": newest.hash, "at": newest.at},
        },
    )


# -- KPIs ----------------------------------------------------------------------------------------
# Figures whose tickets are cheap to list: a predicate over a ticket summary, the period and now.
DRILLS: dict[str, str] = {
    "tickets_opened": "opened in the period",
    "tickets_resolved": "resolved in the period",
    "backlog_open": "open at the end of the period",
    "backlog_past_sla": "open and past an SLA target at the end of the period",
    "escalation_rate": "opened in the period and escalated",
    "reopen_rate": "opened in the period and reopened",
}


def period(
    query: Mapping[str, str], policy: Policy, now: datetime, days: int = 30
) -> tuple[float, float]:
    until = read_day(query.get("until"), policy, "until")
    since = read_day(query.get("since"), policy, "since")
    stop = datetime.fromisoformat(until) if until else now
    start = datetime.fromisoformat(since) if since else stop - timedelta(days=days)
    if start >= stop:
        raise ValidationError("the period must start before it ends")
    return start.timestamp(), stop.timestamp()


def kpi(projection: Projection, policy: Policy, query: Mapping[str, str], now: datetime) -> View:
    """The KPI tiles: `itops kpi`'s numbers (`kpi_sql.kpis_fast`) for the period."""
    from toolkit.desk.kpi import shown
    from toolkit.desk.kpi_sql import kpis_fast
    from toolkit.reports.kpi import TILES, sla_targets

    since, until = period(query, policy, now)
    sla = sla_targets(policy)
    result = kpis_fast(projection, policy, since=since, until=until, now=now.timestamp())
    targets = result.get("targets") or {}
    tiles = []
    for key, label in TILES:
        target = targets.get(key)
        tiles.append(
            {
                "key": key,
                "label": label,
                "value": shown(key, result.get(key)),
                "raw": result.get(key),
                "target": shown(key, target["target"]) if target else "",
                "met": {True: "met", False: "missed", None: ""}[target["met"]] if target else "",
                "sla": sla.get(key, ""),
                "drill": key in DRILLS,
            }
        )
    form = {"since": query.get("since") or "", "until": query.get("until") or ""}
    return View(
        "KPI dashboard",
        tiles=tiles,
        facts=[
            ("period", f"{local(since, policy)} → {local(until, policy)}"),
            ("clocks in", str(result.get("timezone") or policy.calendar.timezone)),
        ],
        data={"kpis": result},
        form=form,
        scope={k: v for k, v in form.items() if v},
    )


def kpi_tickets(
    projection: Projection, policy: Policy, query: Mapping[str, str], now: datetime
) -> View:
    """The tickets behind a KPI figure (`DRILLS`)."""
    from toolkit.desk.kpi import as_of
    from toolkit.reports.kpi import UNASSIGNED

    figure = query.get("figure") or ""
    if figure not in DRILLS:
        raise ValidationError(
            f"no list of tickets behind {figure!r}", hint=f"figures: {', '.join(DRILLS)}"
        )
    since, until = period(query, policy, now)
    at = as_of(until, now.timestamp())
    tickets = projection.tickets()

    def opened(t: TicketSummary) -> bool:
        return since <= t.opened_at < until

    tests: dict[str, Callable[[TicketSummary], bool]] = {
        "tickets_opened": opened,
        "tickets_resolved": lambda t: t.resolved_at is not None and since <= t.resolved_at < until,
        "backlog_open": lambda t: t.is_open_at(at),
        "backlog_past_sla": lambda t: t.is_open_at(at) and t.breached(policy, at),
        "escalation_rate": lambda t: opened(t) and t.escalations > 0,
        "reopen_rate": lambda t: opened(t) and t.reopens > 0,
    }
    chosen = sorted((t for t in tickets if tests[figure](t)), key=lambda t: t.opened_at)
    rows = [
        {
            "ticket": t.ticket,
            "opened": local(t.opened_at, policy),
            "priority": t.priority,
            "category": t.category,
            "kind": t.kind,
            "state": t.state,
            "assignee": t.assignee or UNASSIGNED,
            "sla": "BREACHED" if t.breached(policy, at) else "ok",
            "summary": t.summary or "",
        }
        for t in chosen
    ]
    columns = (
        ("ticket", "ticket"), ("opened", "opened"), ("priority", "prio"),
        ("category", "category"), ("kind", "kind"), ("state", "state"),
        ("assignee", "assignee"), ("sla", "SLA"), ("summary", "summary"),
    )  # fmt: skip
    form = {"since": query.get("since") or "", "until": query.get("until") or ""}
    return View(
        f"Tickets behind {figure}",
        [Table(f"{len(rows)} ticket(s) {DRILLS[figure]}", columns, rows)],
        facts=[("period", f"{local(since, policy)} → {local(until, policy)}")],
        form=form,
        scope={"figure": figure, **{k: v for k, v in form.items() if v}},
    )


def cells(view: View) -> Iterable[tuple[str, list[str], list[list[Any]]]]:
    """Each table as (title, header, rows) for CSV; a view without tables gives its facts."""
    if not view.tables and view.tiles:
        yield (
            "kpis",
            ["kpi", "label", "value", "target", "met"],
            [[t["key"], t["label"], t["raw"], t["target"], t["met"]] for t in view.tiles],
        )
    elif not view.tables:
        yield "facts", ["fact", "value"], [[k, v] for k, v in view.facts]
    for table in view.tables:
        keys = [k for k, _ in table.columns]
        yield table.title, keys, [[row.get(k, "") for k in keys] for row in table.rows]


def as_json(view: View, now: datetime) -> dict[str, Any]:
    return {
        "view": view.title,
        "at": iso_seconds(now.timestamp()),
        "scope": view.scope,
        "facts": dict(view.facts),
        "tables": [{"title": t.title, "rows": t.rows} for t in view.tables],
        **({"paging": view.paging} if view.paging else {}),
        **view.data,
    }

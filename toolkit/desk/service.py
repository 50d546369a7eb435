"""The service desk's entry points the CLI calls: the SLA policy, the KPI projection, repeat fixes.

Kept apart from the CLI so commands stay thin, and apart from `kpi`/`tickets` so those stay pure
(no database, no workspace).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from toolkit.clock import iso
from toolkit.desk.sla import Policy, load_policy

if TYPE_CHECKING:
    from toolkit.app import App
    from toolkit.desk.projection import Projection
    from toolkit.ledger import Ledger
    from toolkit.workspace import Workspace

DAY = 86400.0


def policy_for(workspace: Workspace) -> Policy:
    """The SLA policy of a workspace (itops.toml [calendar], [sla], [kpi]; KPI.md's defaults)."""
    return load_policy(workspace.config, workspace.root)


def projection_for(app: App, policy: Policy | None = None) -> Projection:
    """The KPI projection beside the app's ledger, brought up to the ledger's head (for a
    read-only command on SQLite: in memory, beside the ledger opened read-only)."""
    from toolkit.desk.projection import open_projection

    ledger = app.ledger  # opens (and if need be creates) the ledger and its triggers first
    return open_projection(
        ledger.read_url, policy or policy_for(app.workspace), read_only=ledger.read_only
    )


def kpi_report(
    app: App,
    *,
    since: float,
    until: float,
    by: str | None = None,
    now: float | None = None,
    anomalies: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """`itops kpi`: the KPI object for the period (see toolkit.desk.kpi). `anomalies`, if given,
    is extended with the events the KPIs skipped or corrected (`Projection.anomalies`)."""
    from toolkit.desk.kpi_sql import kpis_fast

    policy = policy_for(app.workspace)
    projection = projection_for(app, policy)
    try:
        if anomalies is not None:
            anomalies.extend(projection.anomalies())
        return kpis_fast(projection, policy, since=since, until=until, now=now, by=by)
    finally:
        projection.close()


@dataclass(frozen=True)
class RepeatFix:
    """A host fixed for the same category often enough to deserve a problem record."""

    host: str
    category: str
    count: int
    days: int
    tickets: tuple[str, ...]

    @property
    def message(self) -> str:
        return (
            f"{self.host} has had {self.count} {self.category} fixes in {self.days} days "
            f"({', '.join(self.tickets) or 'no ticket'}): consider opening a problem record "
            f"(itops ticket open PRB-… --category {self.category} --host {self.host})"
        )


def repeat_fixes(
    ledger: Ledger,
    hosts: Iterable[str],
    category: str,
    category_of: Callable[[str], str | None],
    *,
    threshold: int = 3,
    days: int = 30,
    now: float | None = None,
) -> list[RepeatFix]:
    """Hosts with at least `threshold` fixed outcomes of tasks in `category` in the last `days`."""
    now = now if now is not None else time.time()
    since = iso(datetime.fromtimestamp(now - days * DAY, UTC))
    wanted = list(dict.fromkeys(hosts))
    counts: dict[str, int] = dict.fromkeys(wanted, 0)
    tickets: dict[str, dict[str, None]] = {h: {} for h in wanted}
    # one indexed, grouped query for every host of the run, not one per host or per record
    fixed = ledger.tally(
        ("host", "task", "ticket"), hosts=wanted, kind="action.finish", outcome="fixed", since=since
    )
    for host, task, ticket, count in sorted(fixed, key=lambda row: [str(v) for v in row[:3]]):
        if host in counts and task and category_of(task) == category:
            counts[host] += count
            if ticket:
                tickets[host][ticket] = None
    return [
        RepeatFix(host, category, counts[host], days, tuple(tickets[host]))
        for host in wanted
        if counts[host] >= threshold
    ]


def category_lookup(known: Mapping[str, str]) -> Callable[[str], str | None]:
    """A task's category from the catalog, else the task name's first part (`printer.x`)."""

    def category_of(task: str) -> str | None:
        return known.get(task) or task.split(".", 1)[0]

    return category_of


def resolve_after_run(
    app: App, ticket: str, source: str, outcomes: Mapping[str, str], *, held_by: str = ""
) -> tuple[bool, str]:
    """`--resolve`: resolve the run's ticket when every host ended fixed or already-ok (what
    verify proved), with the outcome as its resolution; otherwise leave it open and say why.
    Returns (resolved, what to tell the engineer)."""
    from toolkit.desk.tickets import TicketError, record

    done = {"fixed", "already-ok"}
    open_hosts = sorted(h for h, o in outcomes.items() if o not in done)
    if not outcomes or open_hosts or held_by:
        why = held_by or (
            f"{', '.join(open_hosts[:5])}{' …' if len(open_hosts) > 5 else ''} did not end fixed "
            "or already-ok"
            if open_hosts
            else "no host ran"
        )
        return False, f"{ticket} left open (--resolve): {why}"
    fixed = sorted(h for h, o in outcomes.items() if o == "fixed")
    summary = (
        f"{source}: verified fixed on {len(fixed)} host(s)"
        + (f" ({', '.join(fixed[:10])})" if fixed else "")
        + f"; already-ok on {len(outcomes) - len(fixed)}"
    )
    try:
        record(
            app.ledger,
            ticket,
            "resolved",
            {"code": "fixed-by-itops", "resolution": summary[:2000]},
            policy_for(app.workspace),
        )
    except TicketError as exc:
        return False, f"{ticket} not resolved: {exc.message}"
    return True, f"{ticket} resolved: {summary}"

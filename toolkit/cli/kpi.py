"""`itops kpi`: the support KPIs of KPI.md for a period, from the ticket log."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.cli.options import reads_only
from toolkit.errors import ValidationError

GROUPINGS = ("category", "priority", "kind", "assignee", "tier", "host")
SHOWN = (
    "tickets_opened",
    "tickets_resolved",
    "incidents_resolved",
    "requests_fulfilled",
    "response_sla_compliance",
    "resolution_sla_compliance",
    "incident_resolution_sla_compliance",
    "request_fulfilment_sla_compliance",
    "time_to_respond_median",
    "time_to_resolve_mean",
    "time_to_fulfil_mean",
    "first_contact_resolution_rate",
    "escalation_rate",
    "recurrence_rate",
    "reopen_rate",
    "csat_mean",
    "complaints",
    "backlog_open",
    "backlog_past_sla",
    "automation_rate",
    "request_automation_rate",
    "remediation_success_rate",
)


def period(
    app: App, since: str | None, until: str | None, now: datetime, *, days: int = 30
) -> tuple[float, float]:
    """--since/--until as epoch seconds; default: the last `days` days up to now.

    A bare date is midnight in the calendar's zone (`log.read_when`)."""
    from toolkit.cli.log import read_when

    stop = read_when(app, until, now) or now
    start = read_when(app, since, now) or stop - timedelta(days=days)
    if start >= stop:
        raise ValidationError("--since must be before --until")
    return start.timestamp(), stop.timestamp()


def fmt(key: str, value: Any) -> str:
    """A KPI value for people (`toolkit.desk.kpi.shown`: the JSON keeps full precision)."""
    from toolkit.desk.kpi import shown

    return shown(key, value)


@click.command()
@click.option(
    "--since",
    metavar="WHEN",
    help="Period start: 2026-11-01 (midnight in the calendar's zone), 2026-11-01T09:00+01:00, 30d.",
)
@click.option("--until", metavar="WHEN", help="Period end (exclusive; default: now).")
@click.option("--by", type=click.Choice(GROUPINGS), help="Also compute the KPIs per group.")
@click.option("--json", "as_json", is_flag=True, help="The stable JSON schema itops.kpi/1.")
@click.pass_obj
@reads_only
def kpi(app: App, since: str | None, until: str | None, by: str | None, as_json: bool) -> None:
    """Support KPIs for a period (default: the last 30 days), from the ticket log alone.

    Durations are business minutes on the SLA calendar (pauses excluded); rates are
    fractions in --json. Targets from itops.toml are shown beside each value. Incidents
    and requests are measured apart: time_to_resolve (MTTR) is over incidents,
    time_to_fulfil over requests, and SLA compliance and automation are also given per kind.

    \b
    Examples:
      itops kpi --since 2026-11-01 --until 2026-12-01
      itops kpi --by category
      itops kpi --by kind
      itops kpi --by host --json | jq '.groups | map_values(.recurrence_rate)'
    """
    from toolkit.desk.service import kpi_report

    now = app.clock.now()
    start, stop = period(app, since, until, now)
    anomalies: list[tuple[str, str]] = []
    result = kpi_report(
        app, since=start, until=stop, by=by, now=now.timestamp(), anomalies=anomalies
    )
    render.warn_anomalies(anomalies)
    if as_json:
        render.emit_json(result)
        return
    render.echo(f"KPIs {result['since']} → {result['until']} (clocks in {result['timezone']})")
    targets = result["targets"]
    rows = []
    for key in SHOWN:
        target = targets.get(key)
        met = "" if target is None else {True: "met", False: "missed", None: ""}[target["met"]]
        rows.append((key, fmt(key, result[key]), fmt(key, target["target"]) if target else "", met))
    render.table(["kpi", "value", "target", ""], rows)
    if by:
        columns = (
            "tickets_opened",
            "response_sla_compliance",
            "resolution_sla_compliance",
            "time_to_resolve_mean",
            "time_to_fulfil_mean",
            "recurrence_rate",
            "backlog_open",
        )
        render.table(
            [by, *columns],
            [(name, *(fmt(c, g[c]) for c in columns)) for name, g in result["groups"].items()],
        )

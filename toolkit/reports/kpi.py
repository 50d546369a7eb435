"""The KPI report for support leads: one self-contained HTML page (inline CSS and SVG), or CSV.

The numbers are `toolkit.desk.kpi.kpis()` for the period, the same function `itops kpi --json` prints,
so the page and the JSON cannot disagree. Each tile carries `data-kpi` and `data-value` (the raw
JSON value, full precision) for checking; what people read is rounded (`toolkit.desk.kpi.shown`, and
`toolkit.desk.kpi.rounded` in the CSV).
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from typing import Any

from toolkit.clock import machine_readable, readable, readable_day
from toolkit.desk.kpi import as_of, rounded, shown, weekly
from toolkit.desk.projection import Projection
from toolkit.desk.sla import Policy
from toolkit.reports.svg import bar_chart, line_chart
from toolkit.textsafe import visible

TILES = (
    ("response_sla_compliance", "Response SLA"),
    ("resolution_sla_compliance", "Resolution SLA"),
    ("time_to_respond_median", "Median time to respond"),
    ("time_to_resolve_mean", "MTTR, incidents (mean)"),
    ("time_to_resolve_p90", "Time to resolve p90"),
    ("time_to_fulfil_mean", "Request fulfilment (mean)"),
    ("time_to_fulfil_p90", "Request fulfilment p90"),
    ("incident_resolution_sla_compliance", "Incident resolution SLA"),
    ("request_fulfilment_sla_compliance", "Request fulfilment SLA"),
    ("first_contact_resolution_rate", "First-contact resolution"),
    ("escalation_rate", "Escalation rate"),
    ("recurrence_rate", "Recurrence rate"),
    ("reopen_rate", "Reopen rate"),
    ("csat_mean", "CSAT (mean of 5)"),
    ("csat_share_4_plus", "CSAT share ≥ 4"),
    ("complaints", "Complaints"),
    ("backlog_open", "Backlog (open)"),
    ("backlog_past_sla", "Backlog past SLA"),
    ("automation_rate", "Automation rate"),
    ("request_automation_rate", "Requests fulfilled by itops"),
    ("remediation_success_rate", "Remediation success"),
    ("tickets_opened", "Tickets opened"),
    ("tickets_resolved", "Tickets resolved"),
    ("incidents_resolved", "Incidents resolved"),
    ("requests_fulfilled", "Requests fulfilled"),
)
RESPONSE_TILES = ("response_sla_compliance", "time_to_respond_median")
RESOLUTION_TILES = (
    "resolution_sla_compliance",
    "incident_resolution_sla_compliance",
    "request_fulfilment_sla_compliance",
    "time_to_resolve_mean",
    "time_to_resolve_p90",
    "time_to_fulfil_mean",
    "time_to_fulfil_p90",
)
UNASSIGNED = "unassigned"  # a ticket without an assignee, as people read it (the data: "(none)")
BREAKDOWNS = ("kind", "category", "priority", "assignee")
BREAKDOWN_COLUMNS = (
    "tickets_opened",
    "tickets_resolved",
    "response_sla_compliance",
    "resolution_sla_compliance",
    "time_to_resolve_mean",
    "time_to_fulfil_mean",
    "first_contact_resolution_rate",
    "recurrence_rate",
    "backlog_open",
)


def build(
    projection: Projection,
    policy: Policy,
    *,
    since: float,
    until: float,
    now: float | None = None,
) -> dict[str, Any]:
    """Everything the page shows: the overall KPIs, breakdowns, and the weekly trend.

    The same queries as `itops kpi --json` (toolkit.desk.kpi_sql), so the page and the JSON agree."""
    from toolkit.desk.kpi_sql import backlog_at, kpis_fast, trend_rows

    at = as_of(until, now)  # one instant for the page: tiles, breakdowns and trend agree
    backlog = backlog_at(projection, policy, at)
    actions = projection.actions()
    # The breakdowns are independent scans: two forked workers run them while this process
    # does the overall figures and the trend (the machine this was measured on has two cores).
    _SHARED[:] = [projection.url, policy, actions, since, until, at, backlog]
    pool = pending = None
    try:
        import multiprocessing

        if not projection.scratch:  # (a projection in memory is this process's alone)
            projection.engine.dispose()  # no pooled connection may cross the fork
            pool = multiprocessing.get_context("fork").Pool(2)
            pending = pool.map_async(_breakdown, BREAKDOWNS)
    except (ValueError, OSError):
        pending = None
    try:
        overall = kpis_fast(projection, policy, since=since, until=until, now=at, backlog=backlog)
        weeks = weekly(trend_rows(projection, since, until), policy, since, until, at)
        found = (
            pending.get()
            if pending is not None
            else [_breakdown(by, projection) for by in BREAKDOWNS]
        )
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        _SHARED.clear()
    groups = {
        by: {
            name: g
            for name, g in result.items()
            if g["tickets_opened"] or g["tickets_resolved"] or g["backlog_open"]
        }
        for by, result in zip(BREAKDOWNS, found, strict=True)
    }
    return {
        "overall": overall,
        "groups": groups,
        "weeks": weeks,
        "sla_targets": sla_targets(policy),
    }


def _span(minutes: float, always: bool, day: int) -> str:
    """A target duration as people say it: 30 min, 8 h, 2 business days (24×7 clocks: days)."""
    whole = round(minutes)
    unit_day = 1440 if always else day
    if whole >= unit_day and whole % unit_day == 0:
        n = whole // unit_day
        return (
            f"{n} day{'s' if n != 1 else ''}"
            if always
            else f"{n} business day{'s' if n != 1 else ''}"
        )
    if whole >= 60 and whole % 60 == 0:
        return f"{whole // 60} h"
    return f"{whole:g} min"


def sla_targets(policy: Policy) -> dict[str, str]:
    """Per tile measured against the SLA policy, its targets in a line: the response or
    resolution time per priority (KPI.md's table, or itops.toml's) and, for resolution
    compliance, the per-category rates."""
    day = policy.calendar.day_minutes

    def per_priority(attr: str) -> str:
        return " · ".join(
            f"{name} {_span(getattr(p, attr), p.always, day)}{' (24×7)' if p.always else ''}"
            for name, p in sorted(policy.priorities.items())
        )

    respond = "first response within " + per_priority("response_minutes")
    resolve = "resolved within " + per_priority("resolution_minutes")
    out = dict.fromkeys(RESPONSE_TILES, respond) | dict.fromkeys(RESOLUTION_TILES, resolve)
    for key in ("resolution_sla_compliance", "incident_resolution_sla_compliance"):
        rates = [
            f"{category} ≥ {shown(key, rate)}"
            for category, targets in sorted(policy.category_targets.items())
            if (rate := targets.get(key, targets.get("resolution_sla_compliance"))) is not None
        ]
        if rates:
            out[key] += "; by category: " + ", ".join(rates)
    return out


_SHARED: list[Any] = []  # what the forked breakdown workers read (by memory, not by pickle)


def _breakdown(by: str, projection: Projection | None = None) -> dict[str, dict[str, Any]]:
    from toolkit.desk.kpi_sql import grouped

    url, policy, actions, since, until, at, backlog = _SHARED
    own = projection is None
    projection = projection or Projection(url, policy)
    try:
        return grouped(projection, policy, actions, since, until, at, by, backlog)
    finally:
        if own:
            projection.close()


def group_name(by: str, name: str) -> str:
    """A breakdown's group as people read it: a ticket without an assignee is "unassigned"."""
    return UNASSIGNED if by == "assignee" and name == "(none)" else name


def html(data: Mapping[str, Any], *, title: str = "Support KPIs") -> str:
    """The page. Dates read one way (`clock.readable`), in the business calendar's zone: the
    period and the weeks are that calendar's."""
    from zoneinfo import ZoneInfo

    from jinja2 import Environment
    from markupsafe import Markup

    overall = data["overall"]
    zone = ZoneInfo(str(overall["timezone"]))
    pct = lambda v: f"{v * 100:.0f} %"  # noqa: E731
    weeks = data["weeks"]
    labels = [readable_day(w["week"], zone) for w in weeks]

    def weekly(name: str, series: Mapping[str, str], **style: Any) -> Markup:
        """A line chart over the weeks: each series (its label: its key in a week) a line."""
        lines = {label: [w[key] for w in weeks] for label, key in series.items()}
        return Markup(line_chart(name, labels, lines, **style))

    charts: dict[str, Markup] = {
        "trend_compliance": weekly(
            "weekly-compliance",
            {
                "response SLA": "response_sla_compliance",
                "resolution SLA": "resolution_sla_compliance",
            },
            title="SLA compliance per week",
            fmt=pct,
        ),
        "trend_volume": weekly(
            "weekly-volume",
            {"opened": "opened", "resolved": "resolved"},
            title="Tickets opened and resolved per week",
        ),
        "trend_mttr": weekly(
            "weekly-mttr",
            {
                "MTTR, incidents": "time_to_resolve_mean",
                "fulfilment, requests": "time_to_fulfil_mean",
            },
            title="Mean time to resolve and to fulfil per week (business minutes)",
            fmt=lambda v: f"{v:,.0f}",
        ),
    }
    for by, groups in data["groups"].items():
        top = sorted(groups.items(), key=lambda kv: -kv[1]["tickets_opened"])[:15]
        charts[f"by_{by}"] = Markup(
            bar_chart(
                f"resolution-by-{by}",
                [(group_name(by, name), g["resolution_sla_compliance"]) for name, g in top],
                title=f"Resolution SLA compliance by {by}",
                fmt=pct,
            )
        )
    for what in ("hosts", "categories"):
        charts[f"recurring_{what}"] = Markup(
            bar_chart(
                f"recurring-{what}",
                [(r["name"], float(r["recurrences"])) for r in overall[f"recurring_{what}"]],
                title=f"Top recurring {what} (recurrences)",
            )
        )
    tiles = []
    sla = data.get("sla_targets") or {}
    for key, label in TILES:
        target = overall["targets"].get(key)
        tiles.append(
            {
                "key": key,
                "label": label,
                "raw": "null" if overall[key] is None else repr(overall[key]),
                "text": shown(key, overall[key]),
                "target": shown(key, target["target"]) if target else None,
                "met": None if target is None else target["met"],
                "sla": sla.get(key),
            }
        )

    def when(at: Any) -> Markup:
        return Markup('<time datetime="{}">{}</time>').format(
            machine_readable(at), readable(at, zone)
        )

    def plain(value: Any) -> Any:
        """Every value the page prints: control characters as visible stand-ins."""
        return visible(value) if isinstance(value, str) and not isinstance(value, Markup) else value

    env = Environment(autoescape=True, finalize=plain)
    env.filters["fmt"] = lambda value, key: shown(key, value)
    env.filters["when"] = when
    env.filters["group_name"] = group_name
    env.filters["day"] = lambda at: readable_day(at, zone, year=True)
    return env.from_string(_template("kpi.html")).render(
        title=title,
        o=overall,
        tiles=tiles,
        charts=charts,
        groups=data["groups"],
        columns=BREAKDOWN_COLUMNS,
        generated=time.time(),
    )


def csv_text(data: Mapping[str, Any]) -> str:
    """One row per (section, group, kpi): value, target, met — for spreadsheets."""
    from toolkit.desk.kpinames import KPI_KEYS
    from toolkit.textsafe import CsvWriter

    out = io.StringIO()
    writer = CsvWriter(out)  # group names (an assignee) come from outside: no formulas (OWASP)
    writer.writerow(["section", "group", "kpi", "value", "target", "met"])

    def rows(section: str, group: str, obj: Mapping[str, Any]) -> None:
        for key in KPI_KEYS:
            target = obj.get("targets", {}).get(key)
            writer.writerow(
                [
                    section,
                    group,
                    key,
                    "" if obj.get(key) is None else rounded(key, obj[key]),
                    "" if target is None else target["target"],
                    "" if target is None or target["met"] is None else str(target["met"]).lower(),
                ]
            )

    rows("overall", "", data["overall"])
    for by, groups in data["groups"].items():
        for name, obj in groups.items():
            rows(by, name, obj)
    for week in data["weeks"]:
        for key, value in week.items():
            if key != "week":
                shown_value = "" if value is None else rounded(key, value)
                writer.writerow(["week", week["week"], key, shown_value, "", ""])
    return out.getvalue()


def _template(name: str) -> str:
    from importlib.resources import files

    return files("toolkit.reports").joinpath(name).read_text(encoding="utf-8")

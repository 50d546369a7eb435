"""The KPIs as SQL over the projection: what `itops kpi` and `itops report kpi` run.

Same definitions and output as `toolkit.desk.kpi.kpis()` (the reference, in plain Python over ticket
summaries); the tests check both give identical objects. Counts, rates and sums are aggregated by
the database, grouped in the same query; only what needs order (medians, p90), the backlog at the
period's end (few rows, replayed clocks) and complaints are finished in Python. Recurrence uses the
projection's `recurs_at`, the first later opening of a same-category ticket on a shared host or for
the same requester.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from typing import Any

from sqlalchemy import text

from toolkit.clock import iso_seconds
from toolkit.desk.kpi import (
    RUN_OUTCOMES,
    SCHEMA,
    TrendRow,
    _availability,
    _group_values,
    _minutes,
    _rate,
    _success_by,
    _targets,
    as_of,
)
from toolkit.desk.projection import SUMMARY_SQL, Projection, _summary
from toolkit.desk.sla import Policy
from toolkit.desk.tickets import ActionFact, TicketSummary

_COLUMN_GROUPS = ("category", "priority", "kind", "assignee", "tier")


def _source(by: str | None) -> tuple[str, str]:
    """(group expression, FROM clause) for a grouping."""
    if by is None:
        return "''", "kpi_facts t"
    if by == "host":
        return (
            "COALESCE(h.host, '(none)')",
            "kpi_facts t LEFT JOIN kpi_hosts h ON h.ticket = t.ticket",
        )
    if by not in _COLUMN_GROUPS:
        raise ValueError(f"cannot group by {by!r}")
    return f"COALESCE(t.{by}, '(none)')", "kpi_facts t"


def kpis_fast(
    projection: Projection,
    policy: Policy,
    *,
    since: float,
    until: float,
    now: float | None = None,
    by: str | None = None,
    backlog: Backlog | None = None,
) -> dict[str, Any]:
    """`toolkit.desk.kpi.kpis()` computed in the database (call `projection.refresh()` first)."""
    at = as_of(until, now)
    actions = projection.actions()
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "since": iso_seconds(since),
        "until": iso_seconds(until),
        "as_of": iso_seconds(at),
        "timezone": policy.calendar.timezone,
    }
    if backlog is None:
        backlog = backlog_at(projection, policy, at)
    out.update(grouped(projection, policy, actions, since, until, at, None, backlog)[""])
    if by is not None:
        out["by"] = by
        out["groups"] = grouped(projection, policy, actions, since, until, at, by, backlog)
    return out


def grouped(
    projection: Projection,
    policy: Policy,
    actions: list[ActionFact],
    since: float,
    until: float,
    at: float,
    by: str | None,
    backlog: Backlog | None = None,
) -> dict[str, dict[str, Any]]:
    """One KPI object per group value (the key '' when not grouped), every clock judged at
    `at` (the period's as_of, `toolkit.desk.kpi.as_of`).

    `backlog`: `backlog_at(…, at)` when several groupings share it."""
    g, source = _source(by)
    params = {
        "since": since,
        "until": until,
        "at": at,
        "window": policy.recurrence_days * 86400.0,
    }
    opened_in = "t.opened_at >= :since AND t.opened_at < :until"
    resolved_in = "t.resolved_at >= :since AND t.resolved_at < :until"
    recurred = "t.recurs_at IS NOT NULL AND t.recurs_at <= t.resolved_at + :window"
    surveyed = "t.survey_at >= :since AND t.survey_at < :until AND t.survey_score IS NOT NULL"
    request = "t.kind = 'request'"  # anything else is an incident, as in toolkit.desk.kpi
    acc: dict[str, dict[str, Any]] = {}

    def slot(name: str) -> dict[str, Any]:
        found = acc.get(name)
        if found is None:
            found = acc[name] = {
                "opened": 0, "counted": 0, "on_time": 0, "escalated": 0, "resolved": 0,
                "in_time": 0, "fcr": 0, "reopened": 0, "automated": 0, "recurring": 0,
                "surveys": 0, "score_sum": 0, "score_4": 0, "complaints": 0,
                "respond": [], "resolve": [], "fulfil": [], "backlog": [], "assigned": {},
                "r_opened": 0, "r_counted": 0, "r_on_time": 0, "r_resolved": 0,
                "r_in_time": 0, "r_automated": 0,
                "recurring_hosts": {}, "recurring_categories": {},
            }  # fmt: skip
        return found

    if by is None:
        slot("")
    with projection.engine.connect() as conn:
        raw: Any = conn.connection.dbapi_connection

        def rows(sql: str) -> list[tuple[Any, ...]]:
            """Plain DBAPI, named parameters, all rows at once (~5× SQLAlchemy's row cost)."""
            marked = sql
            for name in params:
                marked = marked.replace(f":{name}", f"%({name})s" if pg else f":{name}")
            cursor = raw.cursor()
            try:
                cursor.execute(marked, params)
                return list(cursor.fetchall())
            finally:
                cursor.close()

        pg = projection.dialect == "postgresql"
        # 1. every count and sum, one scan: over all tickets, then over the requests alone
        # (an incident's figure is the difference)
        counted = (
            "WHEN t.response_at IS NOT NULL AND t.response_at <= :at THEN 1 "
            "WHEN t.response_due < :at THEN 1 ELSE 0 END"
        )
        on_time = (
            "t.response_at IS NOT NULL AND t.response_at <= :at AND t.response_at <= t.response_due"
        )
        in_time = "COALESCE(t.resolution_minutes, 0) <= t.resolution_target"
        for (
            name, opened, counted_, on_time_, escalated, resolved, in_time_, fcr, reopened,
            automated, recurring, surveys, score_sum, score_4, r_opened, r_counted, r_on_time,
            r_resolved, r_in_time, r_automated,
        ) in rows(
            f"SELECT {g}, "
            f"SUM(CASE WHEN {opened_in} THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN NOT ({opened_in}) THEN 0 {counted}), "
            f"SUM(CASE WHEN {opened_in} AND {on_time} THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN {opened_in} AND t.escalations > 0 THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN {resolved_in} THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN {resolved_in} AND {in_time} THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN {resolved_in} AND t.first_contact = 1 AND t.escalations = 0 "
            "AND t.reopens = 0 THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN {resolved_in} AND t.reopens > 0 THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN {resolved_in} AND t.automated = 1 THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN {resolved_in} AND {recurred} THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN {surveyed} THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN {surveyed} THEN t.survey_score ELSE 0 END), "
            f"SUM(CASE WHEN {surveyed} AND t.survey_score >= 4 THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN {request} AND {opened_in} THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN NOT ({request} AND {opened_in}) THEN 0 {counted}), "
            f"SUM(CASE WHEN {request} AND {opened_in} AND {on_time} THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN {request} AND {resolved_in} THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN {request} AND {resolved_in} AND {in_time} THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN {request} AND {resolved_in} AND t.automated = 1 THEN 1 ELSE 0 END) "
            f"FROM {source} GROUP BY 1"
        ):  # fmt: skip
            slot(name).update(
                opened=opened, counted=counted_, on_time=on_time_, escalated=escalated,
                resolved=resolved, in_time=in_time_, fcr=fcr, reopened=reopened,
                automated=automated, recurring=recurring, surveys=surveys,
                score_sum=score_sum, score_4=score_4, r_opened=r_opened, r_counted=r_counted,
                r_on_time=r_on_time, r_resolved=r_resolved, r_in_time=r_in_time,
                r_automated=r_automated,
            )  # fmt: skip
        # 2. what needs order: the durations of the period's tickets (narrow rows: fast to fetch)
        for name, respond, resolve, kind in rows(
            f"SELECT {g}, CASE WHEN {opened_in} AND t.response_at <= :at "
            "THEN t.response_minutes END, "
            f"CASE WHEN {resolved_in} THEN COALESCE(t.resolution_minutes, 0) END, t.kind "
            f"FROM {source} WHERE ({opened_in}) OR ({resolved_in})"
        ):
            s = acc[name]
            if respond is not None:
                s["respond"].append(respond)
            if resolve is not None:
                s["fulfil" if kind == "request" else "resolve"].append(resolve)
        # 3. workload per engineer, and what recurred
        for name, assignee, priority, count in rows(
            f"SELECT {g}, t.assignee, t.priority, COUNT(*) FROM {source} "
            f"WHERE {opened_in} AND t.assignee IS NOT NULL GROUP BY 1, 2, 3"
        ):
            work = acc[name]["assigned"].setdefault(assignee, [0, 0.0])
            work[0] += count
            work[1] += count * policy.weight(priority)
        for name, category, hosts, count in rows(
            f"SELECT {g}, t.category, t.hosts, COUNT(*) FROM {source} "
            f"WHERE {resolved_in} AND {recurred} GROUP BY 1, 2, 3"
        ):
            tally = acc[name]["recurring_categories"]
            tally[category] = tally.get(category, 0) + count
            tally = acc[name]["recurring_hosts"]
            for host in hosts.split("\x1f") if hosts else ():
                tally[host] = tally.get(host, 0) + count
        for name, complaints in rows(
            f"SELECT {g}, t.complaints FROM {source} WHERE t.complaints IS NOT NULL"
        ):
            acc[name]["complaints"] += sum(1 for c in json.loads(complaints) if since <= c < until)
        if backlog is None:
            backlog = backlog_at(projection, policy, at)
        for fact in backlog:
            for name in _group_values(fact[0], by) if by else [""]:
                acc[name]["backlog"].append(fact)
        action_groups = _action_groups(conn, actions, by, g, source)
    if by in ("host", "assignee"):
        for name in action_groups:
            slot(name)
    return {
        name: _assemble(acc[name], action_groups.get(name, []), policy, since, until, at, by, name)
        for name in sorted(acc)
    }


Backlog = list[tuple[TicketSummary, bool, float]]  # open ticket, past SLA, age (business minutes)


def backlog_at(projection: Projection, policy: Policy, at: float) -> Backlog:
    """The tickets open at instant `at`, replayed once and shared by every grouping."""
    ph = projection.mark
    sql = (
        f"SELECT {SUMMARY_SQL} FROM kpi_tickets WHERE ticket IN (SELECT ticket FROM kpi_facts "
        f"WHERE opened_at <= {ph} AND (resolved_at IS NULL OR resolved_at > {ph}))"
    )
    out: Backlog = []
    for row in projection.fetch(sql, (at, at)):
        t = _summary(row)
        if t.is_open_at(at):
            age = policy.calendar_for(t.priority).business_seconds(t.opened_at, at) / 60
            out.append((t, t.breached(policy, at), age))
    return out


def trend_rows(projection: Projection, since: float, until: float) -> list[TrendRow]:
    """The columns the weekly trend needs, for tickets opened or resolved in the period."""
    ph = projection.mark
    sql = (
        "SELECT opened_at, response_at, response_due, resolved_at, resolution_minutes, "
        f"resolution_target, kind FROM kpi_facts WHERE (opened_at >= {ph} AND opened_at < {ph}) "
        f"OR (resolved_at >= {ph} AND resolved_at < {ph})"
    )
    return [TrendRow(*r) for r in projection.fetch(sql, (since, until, since, until))]


def _top_counts(counts: Mapping[str, int], n: int = 10) -> list[dict[str, Any]]:
    """`toolkit.desk.kpi._top` from counts the database made."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [{"name": k, "recurrences": v} for k, v in ranked]


def _action_groups(
    conn: Any, actions: list[ActionFact], by: str | None, g: str, source: str
) -> dict[str, list[ActionFact]]:
    """Actions per group, as `toolkit.desk.kpi.partition` assigns them."""
    if by is None:
        return {"": actions}
    out: dict[str, list[ActionFact]] = {}
    if by in ("host", "assignee"):
        for a in actions:
            out.setdefault((a.host or "(none)") if by == "host" else a.operator, []).append(a)
        return out
    tickets = sorted({a.ticket for a in actions if a.ticket})
    names: dict[str, str] = {}
    for i in range(0, len(tickets), 500):
        chunk = tickets[i : i + 500]
        marks = ", ".join(f":t{j}" for j in range(len(chunk)))
        result = conn.execute(
            text(f"SELECT t.ticket, {g} FROM {source} WHERE t.ticket IN ({marks})"),
            {f"t{j}": v for j, v in enumerate(chunk)},
        )
        names.update({ticket: name for ticket, name in result})
    for a in actions:
        out.setdefault(names.get(a.ticket or "", "(none)"), []).append(a)
    return out


def _assemble(
    s: Mapping[str, Any],
    actions: list[ActionFact],
    policy: Policy,
    since: float,
    until: float,
    at: float,
    by: str | None,
    name: str,
) -> dict[str, Any]:
    """The KPI object, key for key as `toolkit.desk.kpi.compute` builds it."""
    backlog = s["backlog"]
    ages = [age for _, _, age in backlog]
    runs = [
        a
        for a in actions
        if a.finished_at is not None
        and since <= a.finished_at < until
        and a.mode in ("fix", None)
        and a.outcome in RUN_OUTCOMES
    ]
    respond, resolve = _minutes(s["respond"]), _minutes(s["resolve"])
    fulfil = _minutes(s["fulfil"])
    workload: dict[str, dict[str, Any]] = {
        who: {"tickets": n, "weighted_tickets": w, "actions": 0}
        for who, (n, w) in s["assigned"].items()
    }
    for a in actions:
        if since <= a.at < until:
            workload.setdefault(a.operator, {"tickets": 0, "weighted_tickets": 0.0, "actions": 0})
            workload[a.operator]["actions"] += 1
    resolved, surveys = s["resolved"], s["surveys"]
    fulfilled = s["r_resolved"]
    incidents_resolved = resolved - fulfilled
    out: dict[str, Any] = {
        "tickets_opened": s["opened"],
        "incidents_opened": s["opened"] - s["r_opened"],
        "requests_opened": s["r_opened"],
        "tickets_resolved": resolved,
        "incidents_resolved": incidents_resolved,
        "requests_fulfilled": fulfilled,
        "response_sla_compliance": _rate(s["on_time"], s["counted"]),
        "resolution_sla_compliance": _rate(s["in_time"], resolved),
        "incident_response_sla_compliance": _rate(
            s["on_time"] - s["r_on_time"], s["counted"] - s["r_counted"]
        ),
        "incident_resolution_sla_compliance": _rate(
            s["in_time"] - s["r_in_time"], incidents_resolved
        ),
        "request_response_sla_compliance": _rate(s["r_on_time"], s["r_counted"]),
        "request_fulfilment_sla_compliance": _rate(s["r_in_time"], fulfilled),
        "time_to_respond_mean": respond[0],
        "time_to_respond_median": respond[1],
        "time_to_respond_p90": respond[2],
        "time_to_resolve_mean": resolve[0],
        "time_to_resolve_median": resolve[1],
        "time_to_resolve_p90": resolve[2],
        "time_to_fulfil_mean": fulfil[0],
        "time_to_fulfil_median": fulfil[1],
        "time_to_fulfil_p90": fulfil[2],
        "first_contact_resolution_rate": _rate(s["fcr"], resolved),
        "escalation_rate": _rate(s["escalated"], s["opened"]),
        "recurrence_rate": _rate(s["recurring"], resolved),
        "reopen_rate": _rate(s["reopened"], resolved),
        "csat_mean": s["score_sum"] / surveys if surveys else None,
        "csat_share_4_plus": _rate(s["score_4"], surveys),
        "surveys": surveys,
        "complaints": s["complaints"],
        "backlog_open": len(backlog),
        "backlog_past_sla": sum(1 for _, breached, _ in backlog if breached),
        "backlog_age_mean": statistics.fmean(ages) if ages else None,
        "backlog_age_max": max(ages) if ages else None,
        "automation_rate": _rate(s["automated"], resolved),
        "incident_automation_rate": _rate(s["automated"] - s["r_automated"], incidents_resolved),
        "request_automation_rate": _rate(s["r_automated"], fulfilled),
        "remediation_runs": len(runs),
        "remediation_success_rate": _rate(sum(1 for a in runs if a.outcome == "fixed"), len(runs)),
        "remediation_by_task": _success_by(runs, lambda a: a.task),
        "remediation_by_platform": _success_by(runs, lambda a: a.platform),
        "availability": _availability(actions, policy, since, at, [name] if by == "host" else None),
        "workload": dict(sorted(workload.items())),
        "recurring_hosts": _top_counts(s["recurring_hosts"]),
        "recurring_categories": _top_counts(s["recurring_categories"]),
    }
    out["targets"] = _targets(out, policy, name if by == "category" else None)
    return out

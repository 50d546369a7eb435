"""The KPIs of KPI.md, computed from ticket summaries and actions (both replayed from the ledger).

`kpis()` returns one JSON-ready object, schema `itops.kpi/1` (documented in docs/tickets.md):
KPI names in snake_case; durations in business minutes, rates as fractions 0–1, counts as integers,
`null` where undefined (a rate with no denominator). `targets` holds, per KPI that has one, the
target and whether it was met. With a grouping, `groups` maps each group to an object of the same
shape.

Incidents and requests (a ticket's `kind`) are measured apart: the time to resolve (MTTR) is over
incidents, the time to fulfil over requests; counts, SLA compliance and the automation rate are
also given per kind; every other figure is over all tickets.

Period rules: every clock of one object is judged at one instant, `as_of` = min(until, now) — the
current time is read once (`as_of`), so a period that has ended gives the same object whenever it
is computed (what can still move it is the record: back-dated events, and the figures defined by
what follows a ticket — a reopen that moves its final resolution, a later escalation, recurrence;
docs/tickets.md). A ticket counts for response KPIs, escalation and workload in the period it was
opened in: its response if it came by as_of, a breach if it had none by as_of and was due before
it, neither if it was answered or due only after as_of; for resolution KPIs (compliance, MTTR,
first contact, reopen, recurrence, automation) in the period of its final resolution; surveys and
complaints at their own time; the backlog is the tickets open at as_of, with their age and whether
they are past an SLA target then.
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, NamedTuple, Protocol

from toolkit.clock import iso_seconds
from toolkit.desk.kpinames import KPI_KEYS, TIME_KEYS
from toolkit.desk.sla import Policy
from toolkit.desk.tickets import ActionFact, TicketSummary

SCHEMA = "itops.kpi/1"
GROUPINGS = ("category", "priority", "kind", "assignee", "tier", "host")
RUN_OUTCOMES = ("fixed", "failed", "unreachable")
UP_OUTCOMES = ("already-ok", "fixed", "ok")
LOWER_IS_BETTER = (
    *TIME_KEYS,
    "escalation_rate",
    "recurrence_rate",
    "reopen_rate",
    "complaints",
    "backlog_open",
    "backlog_past_sla",
)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _minutes(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    ordered = sorted(values)
    p90 = ordered[max(math.ceil(0.9 * len(ordered)) - 1, 0)]
    return statistics.fmean(ordered), statistics.median(ordered), p90


def _is_rate(key: str) -> bool:
    return key.endswith(("_rate", "_compliance", "_share_4_plus")) or key == "availability"


def _is_minutes(key: str) -> bool:
    return key.startswith(("time_to_", "backlog_age"))


def rounded(key: str, value: Any) -> Any:
    """A KPI value at the precision people read it: rates to 4 places, minutes to 1, CSAT to 2.

    Only for what people read (the CSV; the table and the HTML through `shown`): the KPI object
    and `--json` carry full precision, so a sum or a comparison downstream loses nothing."""
    if not isinstance(value, float):
        return value
    if key == "availability":
        return round(value, 5)
    if _is_rate(key):
        return round(value, 4)
    if _is_minutes(key):
        return round(value, 1)
    return round(value, 2)


def shown(key: str, value: Any) -> str:
    """A KPI value for people (the table, the HTML): rates as percentages, durations as whole
    minutes, CSAT with two decimals."""
    if value is None:
        return "–"
    if _is_rate(key):
        return f"{value * 100:.1f} %"
    if _is_minutes(key):
        return f"{value:,.0f} min"
    if isinstance(value, float):
        return f"{rounded(key, value):g}"
    return str(value)


class RecurrenceIndex:
    """Opening times per (category, host) and (category, requester), to look forward in time."""

    def __init__(self, tickets: Iterable[TicketSummary]) -> None:
        self.by_key: dict[tuple[str, str, str], list[float]] = {}
        for t in tickets:
            for host in t.hosts:
                self.by_key.setdefault((t.category, "h", host), []).append(t.opened_at)
            if t.requester:
                self.by_key.setdefault((t.category, "r", t.requester), []).append(t.opened_at)
        for times in self.by_key.values():
            times.sort()

    def recurs(self, t: TicketSummary, window: float) -> bool:
        """A new ticket of the same category on the same host (or requester) after t's resolution."""
        if t.resolved_at is None:
            return False
        keys = [(t.category, "h", h) for h in t.hosts]
        if t.requester:
            keys.append((t.category, "r", t.requester))
        for key in keys:
            times = self.by_key.get(key)
            if times:
                i = bisect_right(times, t.resolved_at)
                if i < len(times) and times[i] <= t.resolved_at + window:
                    return True
        return False


def as_of(until: float, now: float | None = None) -> float:
    """The instant every clock of a KPI object is judged at: the period's end, or now if earlier.

    Only the current time read here, once per object, so a period that has ended gives the same
    object whenever it is computed."""
    return min(until, now if now is not None else datetime.now(UTC).timestamp())


def compute(
    tickets: Sequence[TicketSummary],
    actions: Sequence[ActionFact],
    policy: Policy,
    since: float,
    until: float,
    at: float,
    recurrence: RecurrenceIndex,
    *,
    category: str | None = None,
    hosts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One KPI object for these tickets and actions over [since, until), every clock judged at
    `at` (as_of; see the module docstring).

    One pass over the tickets (this runs over ~150,000 rows several times per report)."""
    window = policy.recurrence_days * 86400
    opened = resolved = counted = on_time = 0
    in_time = first_contact = escalated = reopened = automated = 0
    respond: list[float] = []
    # per kind: [opened, counted, on_time, resolved, in_time, automated], and the durations
    # (incidents: time to resolve, MTTR; requests: time to fulfil)
    tally = {"incident": [0] * 6, "request": [0] * 6}
    resolve: list[float] = []
    fulfil: list[float] = []
    recurring: list[TicketSummary] = []
    surveys: list[int] = []
    complaints = 0
    backlog: list[TicketSummary] = []
    assigned: list[TicketSummary] = []
    recurs = recurrence.recurs
    for t in tickets:
        o, r = t.opened_at, t.resolved_at
        is_request = t.kind == "request"
        kind = tally["request" if is_request else "incident"]
        if since <= o < until:
            opened += 1
            kind[0] += 1
            ra = t.response_at
            if ra is not None and ra <= at:
                counted += 1
                kind[1] += 1
                hit = ra <= t.response_due
                on_time += hit
                kind[2] += hit
                respond.append(t.response_minutes or 0.0)
            elif t.response_due < at:
                # no response by as_of and already past its target then: a breach (KPI.md);
                # one answered or due only after as_of is neither hit nor miss of this period
                counted += 1
                kind[1] += 1
            escalated += t.escalations > 0
            if t.assignee:
                assigned.append(t)
        if r is not None and since <= r < until:
            resolved += 1
            kind[3] += 1
            minutes = t.resolution_minutes or 0.0
            (fulfil if is_request else resolve).append(minutes)
            within = minutes <= t.resolution_target
            in_time += within
            kind[4] += within
            first_contact += bool(t.first_contact and not t.escalations and not t.reopens)
            reopened += t.reopens > 0
            automated += bool(t.automated)
            kind[5] += bool(t.automated)
            if recurs(t, window):
                recurring.append(t)
        if t.survey_at is not None and since <= t.survey_at < until and t.survey_score is not None:
            surveys.append(t.survey_score)
        if t.complaints:
            complaints += sum(1 for c in t.complaints if since <= c < until)
        # after its final resolution a ticket stays resolved: only later ones can be open then
        if o <= at and (r is None or r > at) and t.is_open_at(at):
            backlog.append(t)
    ages = [policy.calendar_for(t.priority).business_seconds(t.opened_at, at) / 60 for t in backlog]
    runs = [
        a
        for a in actions
        if a.finished_at is not None
        and since <= a.finished_at < until
        and a.mode in ("fix", None)
        and a.outcome in RUN_OUTCOMES
    ]
    respond_stats, resolve_stats = _minutes(respond), _minutes(resolve)
    fulfil_stats = _minutes(fulfil)
    incident, request = tally["incident"], tally["request"]
    out: dict[str, Any] = {
        "tickets_opened": opened,
        "incidents_opened": incident[0],
        "requests_opened": request[0],
        "tickets_resolved": resolved,
        "incidents_resolved": incident[3],
        "requests_fulfilled": request[3],
        "response_sla_compliance": _rate(on_time, counted),
        "resolution_sla_compliance": _rate(in_time, resolved),
        "incident_response_sla_compliance": _rate(incident[2], incident[1]),
        "incident_resolution_sla_compliance": _rate(incident[4], incident[3]),
        "request_response_sla_compliance": _rate(request[2], request[1]),
        "request_fulfilment_sla_compliance": _rate(request[4], request[3]),
        "time_to_respond_mean": respond_stats[0],
        "time_to_respond_median": respond_stats[1],
        "time_to_respond_p90": respond_stats[2],
        "time_to_resolve_mean": resolve_stats[0],
        "time_to_resolve_median": resolve_stats[1],
        "time_to_resolve_p90": resolve_stats[2],
        "time_to_fulfil_mean": fulfil_stats[0],
        "time_to_fulfil_median": fulfil_stats[1],
        "time_to_fulfil_p90": fulfil_stats[2],
        "first_contact_resolution_rate": _rate(first_contact, resolved),
        "escalation_rate": _rate(escalated, opened),
        "recurrence_rate": _rate(len(recurring), resolved),
        "reopen_rate": _rate(reopened, resolved),
        "csat_mean": statistics.fmean(surveys) if surveys else None,
        "csat_share_4_plus": _rate(sum(1 for s in surveys if s >= 4), len(surveys)),
        "surveys": len(surveys),
        "complaints": complaints,
        "backlog_open": len(backlog),
        "backlog_past_sla": sum(1 for t in backlog if t.breached(policy, at)),
        "backlog_age_mean": statistics.fmean(ages) if ages else None,
        "backlog_age_max": max(ages) if ages else None,
        "automation_rate": _rate(automated, resolved),
        "incident_automation_rate": _rate(incident[5], incident[3]),
        "request_automation_rate": _rate(request[5], request[3]),
        "remediation_runs": len(runs),
        "remediation_success_rate": _rate(sum(1 for a in runs if a.outcome == "fixed"), len(runs)),
        "remediation_by_task": _success_by(runs, lambda a: a.task),
        "remediation_by_platform": _success_by(runs, lambda a: a.platform),
        "availability": _availability(actions, policy, since, at, hosts),
        "workload": _workload(assigned, actions, policy, since, until),
        "recurring_hosts": _top(h for t in recurring for h in t.hosts),
        "recurring_categories": _top(t.category for t in recurring),
    }
    out["targets"] = _targets(out, policy, category)
    return out


def _success_by(
    runs: Sequence[ActionFact], key: Callable[[ActionFact], str | None]
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for a in runs:
        entry = out.setdefault(key(a) or "(unknown)", {"runs": 0, "fixed": 0, "rate": None})
        entry["runs"] += 1
        entry["fixed"] += a.outcome == "fixed"
    for entry in out.values():
        entry["rate"] = _rate(entry["fixed"], entry["runs"])
    return dict(sorted(out.items()))


def _availability(
    actions: Sequence[ActionFact],
    policy: Policy,
    since: float,
    until: float,
    hosts: Sequence[str] | None,
) -> dict[str, dict[str, Any]]:
    """Per host: time up ÷ time observed, each monitoring sample holding until the next one."""
    samples: dict[str, list[tuple[float, bool]]] = {}
    for a in actions:
        if a.host is None or a.task is None or a.finished_at is None or a.outcome is None:
            continue
        if hosts is not None and a.host not in hosts:
            continue
        if a.finished_at < until and any(fnmatchcase(a.task, p) for p in policy.availability_tasks):
            samples.setdefault(a.host, []).append((a.finished_at, a.outcome in UP_OUTCOMES))
    out: dict[str, dict[str, Any]] = {}
    for host, points in sorted(samples.items()):
        points.sort()
        up = observed = 0.0
        for (t, is_up), nxt in zip(points, [*points[1:], (until, True)], strict=True):
            start, end = max(t, since), min(nxt[0], until)
            if end > start:
                observed += end - start
                up += (end - start) if is_up else 0.0
        value = up / observed if observed else None
        core = any(fnmatchcase(host, p) for p in policy.core_hosts)
        target = policy.targets["availability_core" if core else "availability"]
        out[host] = {
            "availability": value,
            "target": target,
            "met": None if value is None else value >= target,
        }
    return out


def _workload(
    opened: Sequence[TicketSummary],
    actions: Sequence[ActionFact],
    policy: Policy,
    since: float,
    until: float,
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        return out.setdefault(name, {"tickets": 0, "weighted_tickets": 0.0, "actions": 0})

    for t in opened:
        if t.assignee:
            e = entry(t.assignee)
            e["tickets"] += 1
            e["weighted_tickets"] += policy.weight(t.priority)
    for a in actions:
        if since <= a.at < until:
            entry(a.operator)["actions"] += 1
    return dict(sorted(out.items()))


def _top(names: Iterable[str], n: int = 10) -> list[dict[str, Any]]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [{"name": k, "recurrences": v} for k, v in ranked]


def _targets(
    values: Mapping[str, Any], policy: Policy, category: str | None
) -> dict[str, dict[str, Any]]:
    targets = {k: v for k, v in policy.targets.items() if k in KPI_KEYS}
    if category is not None:
        targets.update(policy.category_targets.get(category, {}))
    out: dict[str, dict[str, Any]] = {}
    for key, target in sorted(targets.items()):
        value = values.get(key)
        met = None
        if value is not None:
            met = value <= target if key in LOWER_IS_BETTER else value >= target
        out[key] = {"target": target, "met": met}
    return out


def _group_values(t: TicketSummary, by: str) -> list[str]:
    if by == "host":
        return list(t.hosts) or ["(none)"]
    value = getattr(t, by)
    return [str(value) if value else "(none)"]


def kpis(
    tickets: Sequence[TicketSummary],
    actions: Sequence[ActionFact],
    policy: Policy,
    *,
    since: float,
    until: float,
    now: float | None = None,
    by: str | None = None,
) -> dict[str, Any]:
    """The KPI object for the period, with `groups` when `by` is given (see the module doc)."""
    at = as_of(until, now)
    index = RecurrenceIndex(tickets)
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "since": iso_seconds(since),
        "until": iso_seconds(until),
        "as_of": iso_seconds(at),
        "timezone": policy.calendar.timezone,
    }
    out.update(compute(tickets, actions, policy, since, until, at, index))
    if by is not None:
        out["by"] = by
        out["groups"] = {
            name: compute(
                members,
                group_actions,
                policy,
                since,
                until,
                at,
                index,
                category=name if by == "category" else None,
                hosts=[name] if by == "host" else None,
            )
            for name, members, group_actions in partition(tickets, actions, by)
        }
    return out


def partition(
    tickets: Sequence[TicketSummary], actions: Sequence[ActionFact], by: str
) -> list[tuple[str, list[TicketSummary], list[ActionFact]]]:
    """Tickets and actions per group value (a ticket on several hosts is in each host's group)."""
    groups: dict[str, list[TicketSummary]] = {}
    by_ticket: dict[str, list[str]] = {}
    for t in tickets:
        names = _group_values(t, by)
        by_ticket[t.ticket] = names
        for name in names:
            groups.setdefault(name, []).append(t)
    group_actions: dict[str, list[ActionFact]] = {}
    for a in actions:
        if by == "host":
            names = [a.host or "(none)"]
        elif by == "assignee":
            names = [a.operator]
        else:
            names = by_ticket.get(a.ticket or "", ["(none)"])
        for name in names:
            group_actions.setdefault(name, []).append(a)
    keys = sorted(set(groups) | (set(group_actions) if by in ("host", "assignee") else set()))
    return [(k, groups.get(k, []), group_actions.get(k, [])) for k in keys]


class WeekRow(Protocol):
    """What the weekly trend reads of a ticket."""

    @property
    def opened_at(self) -> float: ...
    @property
    def response_at(self) -> float | None: ...
    @property
    def response_due(self) -> float: ...
    @property
    def resolved_at(self) -> float | None: ...
    @property
    def resolution_minutes(self) -> float | None: ...
    @property
    def resolution_target(self) -> float: ...
    @property
    def kind(self) -> str: ...


class TrendRow(NamedTuple):
    opened_at: float
    response_at: float | None
    response_due: float
    resolved_at: float | None
    resolution_minutes: float | None
    resolution_target: float
    kind: str


def weekly(
    tickets: Sequence[WeekRow], policy: Policy, since: float, until: float, now: float | None = None
) -> list[dict[str, Any]]:
    """Per week (Monday 00:00 in the calendar's zone): opened, resolved, compliance, MTTR (of
    incidents) and the mean time to fulfil (of requests), every clock judged at the period's
    as_of, as in the KPI object."""
    at = as_of(until, now)
    zone = policy.calendar.zone
    start = datetime.fromtimestamp(since, zone)
    monday = datetime(start.year, start.month, start.day, tzinfo=zone) - timedelta(
        days=start.weekday()
    )
    bounds: list[float] = []
    cursor = monday
    while cursor.timestamp() < until and len(bounds) < 520:
        bounds.append(cursor.timestamp())
        cursor = datetime(
            *(cursor + timedelta(days=7)).timetuple()[:3], tzinfo=zone
        )  # local midnight again, whatever DST did
    bounds.append(until)
    weeks = [_Week(iso_seconds(max(lo, since))) for lo in bounds[:-1]]

    def slot(t: float) -> int | None:
        if t < since or t >= until:
            return None
        i = bisect_right(bounds, t) - 1
        return i if i < len(weeks) else None

    for t in tickets:
        i = slot(t.opened_at)
        if i is not None:
            w = weeks[i]
            w.opened += 1
            ra = t.response_at
            if (ra is not None and ra <= at) or t.response_due < at:  # answered, or late
                w.responses += 1
                w.responses_on_time += ra is not None and ra <= at and ra <= t.response_due
        j = slot(t.resolved_at) if t.resolved_at is not None else None
        if j is not None:
            w = weeks[j]
            w.resolved += 1
            minutes = t.resolution_minutes or 0.0
            w.resolved_in_time += minutes <= t.resolution_target
            (w.fulfil if t.kind == "request" else w.minutes).append(minutes)
    out = []
    for w in weeks:
        out.append(
            {
                "week": w.week,
                "opened": w.opened,
                "resolved": w.resolved,
                "response_sla_compliance": _rate(w.responses_on_time, w.responses),
                "resolution_sla_compliance": _rate(w.resolved_in_time, w.resolved),
                "time_to_resolve_mean": statistics.fmean(w.minutes) if w.minutes else None,
                "time_to_fulfil_mean": statistics.fmean(w.fulfil) if w.fulfil else None,
            }
        )
    return out


@dataclass
class _Week:
    """Counters for one week of the trend (an accumulator, not a value)."""

    week: str
    opened: int = 0
    resolved: int = 0
    responses: int = 0
    responses_on_time: int = 0
    resolved_in_time: int = 0
    minutes: list[float] = field(default_factory=list)  # incidents' resolution times
    fulfil: list[float] = field(default_factory=list)  # requests' fulfilment times

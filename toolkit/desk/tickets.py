"""Tickets on top of the ledger: lifecycle events, their validation, and the SLA clocks they drive.

Every lifecycle step is one `ticket.<event>` ledger record (operator and UTC time from the ledger;
fields in `data`). A back-dated step (`at=`) keeps the ledger's time and stores the claimed time in
`data.at`, flagged `backdated`; imported steps carry their desk's time the same way. A ticket's
state is always a replay of its events in effective-time order (`summarize`): nothing about a
ticket is stored anywhere else as truth. Remediation runs under a ticket count as its first response
when nothing earlier did, and a `fixed` outcome before the resolution makes it automated.

    opened → responded → [escalated …] → [note …] → [waiting ⇄ resumed] → resolved
           → confirmed → closed;  reopened after resolved/closed;  survey (1–5);  complaint
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, overload

from toolkit.clock import iso_utc
from toolkit.desk.sla import Interval, Policy, elapsed
from toolkit.errors import ValidationError

if TYPE_CHECKING:
    from toolkit.ledger import Ledger, Record

TICKET_ID = re.compile(r"[A-Za-z][A-Za-z0-9]*-?[A-Za-z0-9._-]*")
CATEGORIES = (
    "hardware",
    "software",
    "network",
    "account",
    "security",
    "printer",
    "backup",
    "other",
)
PRIORITIES = ("P1", "P2", "P3", "P4")
# What a ticket is: an `incident` (something broke) or a `request` (KPI.md's standard requests:
# a password reset, an account or permission change, a software install). Requests are measured
# apart: their fulfilment time is not incident resolution time (MTTR). A ticket opened without a
# kind, as every ticket was before kinds existed, is an incident.
TICKET_KINDS = ("incident", "request")
DEFAULT_KIND = "incident"
TIERS = ("L1", "L2", "L3", "ops")
CHANNELS = ("phone", "email", "chat", "portal", "walk-in", "monitoring", "itops", "other")
STATES = ("open", "waiting", "resolved", "confirmed", "closed")
_CATEGORY = re.compile(r"[a-z][a-z0-9_-]{0,31}")

# command verb → event name (the ledger kind is `ticket.<event>`)
VERBS = {
    "open": "opened",
    "respond": "responded",
    "note": "note",
    "escalate": "escalated",
    "wait": "waiting",
    "resume": "resumed",
    "resolve": "resolved",
    "confirm": "confirmed",
    "close": "closed",
    "reopen": "reopened",
    "survey": "survey",
    "complain": "complaint",
    "update": "updated",
}
EVENTS = tuple(VERBS.values())
KINDS = tuple(f"ticket.{e}" for e in EVENTS)

# event → state it is allowed in → state after it (None: unchanged)
_ANY_LIVE = ("open", "waiting")
TRANSITIONS: dict[str, tuple[tuple[str | None, ...], str | None]] = {
    "opened": ((None,), "open"),
    "responded": (_ANY_LIVE, None),
    "note": (STATES, None),
    "escalated": (_ANY_LIVE, None),
    "waiting": (("open",), "waiting"),
    "resumed": (("waiting",), "open"),
    "resolved": (_ANY_LIVE, "resolved"),
    "confirmed": (("resolved",), "confirmed"),
    "closed": (("resolved", "confirmed"), "closed"),
    "reopened": (("resolved", "confirmed", "closed"), "open"),
    "survey": (("resolved", "confirmed", "closed"), None),
    "complaint": (STATES, None),
    "updated": (("open", "waiting", "resolved", "confirmed"), None),
}

# Per event: field → (type, required). Types: str, bool, int, list (of str).
_TEXT = (str, False)
FIELDS: dict[str, dict[str, tuple[type, bool]]] = {
    "opened": {
        "requester": _TEXT,
        "contact": _TEXT,
        "channel": _TEXT,
        "category": _TEXT,
        "priority": _TEXT,
        "kind": _TEXT,
        "hosts": (list, False),
        "assignee": _TEXT,
        "tier": _TEXT,
        "summary": _TEXT,
        "source": _TEXT,
    },
    "responded": {"note": _TEXT, "via": _TEXT},
    "note": {"text": (str, True), "update": (bool, False)},
    "escalated": {"tier": (str, True), "assignee": _TEXT, "reason": _TEXT},
    # a correction of what the ticket was opened with (the SLA targets follow a new priority)
    "updated": {
        "priority": _TEXT,
        "category": _TEXT,
        "kind": _TEXT,
        "assignee": _TEXT,
        "tier": _TEXT,
        "summary": _TEXT,
        "reason": _TEXT,
    },
    "waiting": {"reason": _TEXT},
    "resumed": {"note": _TEXT},
    "resolved": {
        "code": _TEXT,
        "first_contact": (bool, False),
        "resolution": _TEXT,
        "root_cause": _TEXT,
        "steps": _TEXT,
    },
    "confirmed": {"note": _TEXT},
    "closed": {"note": _TEXT, "unconfirmed": (bool, False)},
    "reopened": {"reason": _TEXT},
    "survey": {"score": (int, True), "comment": _TEXT},
    "complaint": {"text": (str, True)},
}
COMMON_FIELDS = ("by",)  # who did it at the other desk (imports); the ledger's operator is ours


class TicketError(ValidationError):
    """A ticket event that does not fit the ticket's history or the event's field rules."""


def check_ticket_id(ticket: str) -> str:
    if not isinstance(ticket, str) or not TICKET_ID.fullmatch(ticket) or len(ticket) > 64:
        raise ValidationError(
            f"invalid ticket id {ticket!r}", hint="use the desk's id, e.g. INC-1042 or CHG-7"
        )
    return ticket


def new_ticket_id() -> str:
    """A generated id for a ticket that has none at another desk."""
    return f"IT-{os.urandom(4).hex().upper()}"


_REQUIRED = {e: tuple(n for n, (_, req) in spec.items() if req) for e, spec in FIELDS.items()}
# Longest values the KPI tables hold (PostgreSQL enforces column lengths: one longer value in
# the append-only ledger would stop every later KPI refresh).
_LIMITS = {"requester": 255, "assignee": 128, "hosts": 255}
_VALUED = frozenset({"priority", "kind", "tier", "channel", "category", "score", *_LIMITS})


def check_fields(event: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The event's fields validated and normalised (None values dropped).

    Runs once per imported line (a million times for a large import): kept lean."""
    spec = FIELDS.get(event)
    if spec is None:
        raise TicketError(f"unknown event {event!r}", hint=", ".join(EVENTS))
    out: dict[str, Any] = {}
    valued = False
    for name, value in data.items():
        if value is None:
            continue
        rule = spec.get(name)
        if rule is None:
            if name not in COMMON_FIELDS:
                raise TicketError(
                    f"{event}: unknown field {name!r}",
                    hint="fields: " + ", ".join([*spec, *COMMON_FIELDS]),
                )
            if type(value) is not str:
                raise TicketError(f"{event}: {name} must be a string")
        else:
            kind = rule[0]
            if type(value) is not kind:
                if kind is list and isinstance(value, str):
                    value = [value]
                elif kind is list or kind is int or not isinstance(value, kind):
                    raise TicketError(
                        f"{event}: {name} must be "
                        + {list: "a list of names", int: "a whole number"}.get(kind, kind.__name__)
                        + f", not {value!r}"
                    )
            if kind is list and not all(type(v) is str for v in value):
                raise TicketError(f"{event}: {name} must be a list of names")
            valued = valued or name in _VALUED
        out[name] = value
    for name in _REQUIRED[event]:
        if name not in out:
            raise TicketError(f"{event}: {name} is required")
    if event == "updated" and not set(out) & _UPDATABLE:
        raise TicketError(
            "update: nothing to change", hint="give --priority, --category, --kind, --assignee, "
            "--tier or --summary"
        )  # fmt: skip
    if valued:
        _check_values(event, out)
    return out


_CHOICES = (
    ("priority", PRIORITIES),
    ("kind", TICKET_KINDS),
    ("tier", TIERS),
    ("channel", CHANNELS),
)
_UPDATABLE = {"priority", "category", "kind", "assignee", "tier", "summary"}


def _check_values(event: str, data: Mapping[str, Any]) -> None:
    for name, allowed in _CHOICES:
        if name in data and data[name] not in allowed:
            raise TicketError(
                f"{event}: unknown {name} {data[name]!r}", hint="one of: " + ", ".join(allowed)
            )
    if "category" in data and not _CATEGORY.fullmatch(data["category"]):
        raise TicketError(
            f"{event}: category {data['category']!r} is not a name",
            hint="e.g. " + ", ".join(CATEGORIES),
        )
    for name, limit in _LIMITS.items():
        values = data.get(name) or ()
        for value in [values] if isinstance(values, str) else values:
            if len(value) > limit:
                raise TicketError(f"{event}: {name} {value[:40]!r}… is longer than {limit}")
    if event == "survey" and not 1 <= data["score"] <= 5:
        raise TicketError(f"survey: score {data['score']} is not between 1 and 5")


def next_state(
    ticket: str, state: str | None, event: str, data: Mapping[str, Any] | None = None
) -> str | None:
    """The state after `event`, or a TicketError naming what is wrong.

    A ticket is closed only after the user confirmed the fix, unless the close says
    `unconfirmed` (the user could not be reached; the desk's auto-close)."""
    if event not in TRANSITIONS:
        raise TicketError(f"{ticket}: unknown event {event!r}", hint=", ".join(EVENTS))
    allowed, after = TRANSITIONS[event]
    if state not in allowed:
        if state is None:
            raise TicketError(f"{ticket}: {event!r} before the ticket was opened")
        if event == "opened":
            raise TicketError(f"{ticket}: already opened")
        raise TicketError(
            f"{ticket}: {event!r} is not possible while the ticket is {state}",
            hint="allowed in: " + ", ".join(s for s in allowed if s),
        )
    if event == "closed" and state == "resolved" and not (data or {}).get("unconfirmed"):
        raise TicketError(
            f"{ticket}: 'closed' before the user confirmed the fix",
            hint="record `confirmed` first, or close with unconfirmed (--unconfirmed)",
        )
    return after or state


# -- reading events from the ledger ----------------------------------------------------------
@dataclass(frozen=True)
class TicketEvent:
    """One lifecycle step at its effective time (claimed time if back-dated or imported)."""

    ticket: str
    event: str
    at: float
    operator: str
    data: Mapping[str, Any] = field(default_factory=dict)
    seq: int = 0
    recorded_at: float | None = None
    backdated: bool = False


@dataclass(frozen=True)
class ActionFact:
    """A remediation action under a ticket, as the SLA clocks see it."""

    action_id: str
    at: float
    operator: str
    host: str | None
    task: str | None
    outcome: str | None  # None: begun, not (yet) finished
    mode: str | None = None
    platform: str | None = None
    finished_at: float | None = None
    ticket: str | None = None


def parse_time(value: str) -> float:
    """ISO 8601 with an offset (or the ledger's `…Z`) → epoch seconds."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return moment.timestamp()


# The times a ticket's clocks can work with. A claimed time outside them (an import from
# before the input checks, a row written by hand) is reported and replaced by the ledger's own
# time; a ledger time outside them (only a tampered row) is pulled to the nearer bound. Either
# way the event is flagged (`TIME_REFUSED` in its data) and its ticket lists it as an anomaly:
# the append-only ledger cannot drop the row, so reading it must never crash.
TIME_FLOOR = 946684800.0  # 2000-01-01T00:00:00Z
TIME_CEILING = 4102444800.0  # 2100-01-01T00:00:00Z
TIME_REFUSED = "time_refused"


def sane_time(value: str) -> float | None:
    """`parse_time(value)` if it reads and lies between TIME_FLOOR and TIME_CEILING, else None."""
    try:
        t = parse_time(value)
    except (ValueError, OverflowError):
        return None
    return t if TIME_FLOOR <= t < TIME_CEILING else None


def event_from_record(
    seq: int, at: str, kind: str, operator: str, ticket: str, info: Mapping[str, Any]
) -> TicketEvent:
    """A ticket.* ledger record as an event at its effective time (the claimed one if any)."""
    data = dict(info)
    claimed = data.pop("at", None)
    # imported events carry their desk's time: claimed, like a back-dated one
    backdated = bool(data.pop("backdated", False)) | bool(data.pop("imported", False))
    effective: float | None = None
    if isinstance(claimed, str):
        effective = sane_time(claimed)
        if effective is None:
            data[TIME_REFUSED] = claimed
    recorded: float | None = None  # the ledger's own time: parsed only when it is the effective one
    if effective is None:
        recorded = sane_time(at)
        if recorded is None:
            data[TIME_REFUSED] = at
            recorded = _clamped(at)
        effective = recorded
    return TicketEvent(
        ticket,
        kind[7:],
        effective,
        operator,
        data,
        seq,
        recorded,
        backdated,
    )


def _clamped(at: str) -> float:
    """A ledger time outside the clocks' range, pulled to the nearer bound (see TIME_FLOOR)."""
    return TIME_CEILING - 1 if at[:4].isdigit() and at[:4] >= "2100" else TIME_FLOOR


def from_records(records: Iterable[Record]) -> tuple[list[TicketEvent], list[ActionFact]]:
    """Ticket events and actions from one ticket's ledger records."""
    events: list[TicketEvent] = []
    actions: dict[str, ActionFact] = {}
    for r in records:
        if r.kind.startswith("ticket.") and r.ticket:
            events.append(event_from_record(r.seq, r.at, r.kind, r.operator, r.ticket, r.info))
        elif r.kind in ("action.begin", "action.finish") and r.action_id:
            add_action(
                actions,
                r.kind,
                r.action_id,
                r.at,
                r.operator,
                r.host,
                r.task,
                r.outcome,
                r.info,
                r.ticket,
            )
    return events, list(actions.values())


def add_action(
    actions: dict[str, ActionFact],
    kind: str,
    action_id: str,
    at: str,
    operator: str,
    host: str | None,
    task: str | None,
    outcome: str | None,
    info: Mapping[str, Any],
    ticket: str | None = None,
) -> None:
    """Fold an action.begin / action.finish record into the action's fact."""
    t = sane_time(at)
    if t is None:  # a tampered row (the ledger writes its own time): pulled into range
        t = _clamped(at)
    known = actions.get(action_id)
    if kind == "action.begin":
        actions[action_id] = ActionFact(
            action_id,
            t,
            operator,
            host,
            task,
            known.outcome if known else None,
            info.get("mode"),
            info.get("platform"),
            known.finished_at if known else None,
            ticket,
        )
    elif known is not None:
        actions[action_id] = replace(known, outcome=outcome, finished_at=t, host=host, task=task)
    else:
        actions[action_id] = ActionFact(
            action_id, t, operator, host, task, outcome, None, None, t, ticket
        )


# -- the replay -------------------------------------------------------------------------------
class Intervals(Sequence[Interval]):
    """Clock intervals kept as their JSON text until first used (projection rows: most never are)."""

    __slots__ = ("_items", "_raw")

    def __init__(self, raw: str) -> None:
        self._raw = raw
        self._items: tuple[Interval, ...] | None = None

    def _load(self) -> tuple[Interval, ...]:
        if self._items is None:
            self._items = tuple((float(s), e) for s, e in json.loads(self._raw))
        return self._items

    @overload
    def __getitem__(self, index: int) -> Interval: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Interval]: ...
    def __getitem__(self, index: int | slice) -> Interval | Sequence[Interval]:
        return self._load()[index]

    def __len__(self) -> int:
        return len(self._load())

    def __iter__(self) -> Iterator[Interval]:
        return iter(self._load())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(self._load())

    def __repr__(self) -> str:
        return repr(self._load())


class TicketSummary(NamedTuple):
    """Everything the KPIs need about one ticket, replayed from its events (times: epoch).

    An immutable value like the frozen dataclasses elsewhere; a NamedTuple because the KPI
    projection builds ~150,000 of them per read and a tuple is built several times faster.
    """

    ticket: str
    state: str
    opened_at: float
    category: str
    priority: str
    kind: str  # incident or request (TICKET_KINDS)
    requester: str | None
    channel: str | None
    hosts: tuple[str, ...]
    assignee: str | None
    tier: str | None
    summary: str | None
    always: bool
    response_target: float  # minutes
    resolution_target: float
    response_at: float | None
    response_due: float
    response_minutes: float | None
    resolved_at: float | None  # the final resolution; None while not resolved
    resolution_minutes: float | None
    intervals: Sequence[Interval]  # when the resolution clock ran
    resolved_spans: Sequence[Interval]  # (resolved, reopened or None)
    escalations: int
    reopens: int
    first_contact: bool
    automated: bool
    survey_score: int | None
    survey_at: float | None
    complaints: Sequence[float]
    confirmed: bool
    closed_at: float | None
    last_update_at: float | None
    update_due: float | None
    anomalies: Sequence[str] = ()
    # From `settled_at` (its last start, stop or resolution) on, the resolution clock is
    # `closed_seconds` of business time plus what runs from `running_since`: the backlog "now"
    # needs no replay of the intervals.
    closed_seconds: float = 0.0
    running_since: float | None = None
    settled_at: float = 0.0

    def is_open_at(self, t: float) -> bool:
        if self.opened_at > t:
            return False
        if t >= self.settled_at:
            return self.resolved_at is None
        return not any(s <= t and (e is None or e > t) for s, e in self.resolved_spans)

    def resolution_elapsed(self, policy: Policy, t: float) -> float:
        """Business minutes on the resolution clock at instant t (pauses excluded)."""
        calendar = policy.calendar_for(self.priority)
        if t >= self.settled_at:
            running = self.running_since
            extra = calendar.business_seconds(running, t) if running is not None else 0.0
            return (self.closed_seconds + extra) / 60
        clipped = [(s, e) for s, e in self.intervals if s < t]
        return elapsed(calendar, clipped, t) / 60

    def response_breached(self, t: float) -> bool:
        if self.response_at is not None and self.response_at <= t:
            return self.response_at > self.response_due
        return self.response_due < t

    def breached(self, policy: Policy, t: float) -> bool:
        """Past an SLA target at instant t (response not on time, or resolution clock over)."""
        if self.response_breached(t):
            return True
        if self.resolved_at is not None and self.resolved_at <= t:
            return (self.resolution_minutes or 0.0) > self.resolution_target
        return self.resolution_elapsed(policy, t) > self.resolution_target


def summarize(
    ticket: str,
    events: Sequence[TicketEvent],
    actions: Sequence[ActionFact],
    policy: Policy,
    *,
    strict: bool = False,
) -> TicketSummary | None:
    """Replay a ticket's events (effective-time order) into its summary; None if never opened.

    strict: raise TicketError on the first event that does not fit; otherwise skip it and note it
    as an anomaly (the ledger is history: KPIs must still come out if an odd event is in it)."""
    ordered = sorted(events, key=lambda e: (e.at, e.seq))
    state: str | None = None
    anomalies: list[str] = []
    opened: dict[str, Any] = {}
    opened_at = 0.0
    assignee = tier = None
    response_at: float | None = None
    intervals: list[list[float | None]] = []
    spans: list[list[float | None]] = []
    escalations = reopens = 0
    first_contact = confirmed = False
    survey_score: int | None = None
    survey_at: float | None = None
    complaints: list[float] = []
    closed_at = last_update = None
    resolved_at: float | None = None
    for ev in ordered:
        if TIME_REFUSED in ev.data:
            anomalies.append(
                f"#{ev.seq}: time {ev.data[TIME_REFUSED]!r} is outside {iso_utc(TIME_FLOOR)[:10]}"
                f"..{iso_utc(TIME_CEILING)[:10]}: counted at {iso_utc(ev.at)[:19]}Z instead"
            )
        try:
            after = next_state(ticket, state, ev.event, ev.data)
        except TicketError as exc:
            if strict:
                raise
            anomalies.append(f"#{ev.seq}: {exc.message}")
            continue
        name, data = ev.event, ev.data
        if name == "opened":
            opened, opened_at = dict(data), ev.at
            assignee, tier = data.get("assignee"), data.get("tier")
            intervals.append([ev.at, None])
        elif name in ("responded", "resolved") and response_at is None:
            response_at = ev.at
        if name == "escalated":
            escalations += 1
            tier = data.get("tier", tier)
            assignee = data.get("assignee", assignee)
        elif name == "updated":
            opened.update(
                {k: data[k] for k in ("priority", "category", "kind", "summary") if k in data}
            )
            tier = data.get("tier", tier)
            assignee = data.get("assignee", assignee)
        elif name == "waiting" or (name == "resolved" and state == "open"):
            intervals[-1][1] = ev.at
        elif name in ("resumed", "reopened"):
            intervals.append([ev.at, None])
        if name == "resolved":
            resolved_at, confirmed = ev.at, False
            first_contact = bool(data.get("first_contact", False))
            spans.append([ev.at, None])
        elif name == "reopened":
            reopens += 1
            resolved_at, closed_at = None, None
            spans[-1][1] = ev.at
        elif name == "confirmed":
            confirmed = True
        elif name == "closed":
            closed_at = ev.at
        elif name == "survey":
            survey_score, survey_at = int(data["score"]), ev.at
        elif name == "complaint":
            complaints.append(ev.at)
        elif name == "note" and data.get("update"):
            last_update = ev.at
        state = after
    if state is None:
        return None
    priority = str(opened.get("priority") or "P3")
    prio = policy.priority(priority)
    calendar = policy.calendar_for(priority)
    automated = False
    for action in actions:
        if action.at < opened_at:
            continue
        # the first remediation action responds when nothing did; one that never touched the
        # host (skipped: outside its window; waiting for an approval) is no response
        responds = action.outcome not in ("skipped", "needs-approval")
        if responds and (response_at is None or action.at < response_at):
            response_at = action.at
        if action.outcome == "fixed" and resolved_at is not None:
            automated = automated or (action.finished_at or action.at) <= resolved_at
    response_due = calendar.deadline(opened_at, prio.response_minutes * 60)
    response_minutes = (
        calendar.business_seconds(opened_at, response_at) / 60 if response_at is not None else None
    )
    frozen_intervals = tuple((float(s or 0.0), e) for s, e in intervals)
    resolution_minutes = None
    if resolved_at is not None:
        resolution_minutes = elapsed(calendar, frozen_intervals, resolved_at) / 60
    update_due = None
    if state in _ANY_LIVE:
        every = prio.update_minutes or policy.update_minutes
        update_due = calendar.deadline(last_update or opened_at, every * 60)
    hosts = opened.get("hosts") or []
    closed = [(s, e) for s, e in frozen_intervals if e is not None]
    running = next((s for s, e in frozen_intervals if e is None), None)
    boundaries = [b for pair in (*intervals, *spans) for b in pair if b is not None]
    return TicketSummary(
        ticket=ticket,
        state=state,
        opened_at=opened_at,
        category=str(opened.get("category") or "other"),
        priority=priority,
        kind=opened["kind"] if opened.get("kind") in TICKET_KINDS else DEFAULT_KIND,
        requester=opened.get("requester"),
        channel=opened.get("channel"),
        hosts=tuple(hosts),
        assignee=assignee,
        tier=tier,
        summary=opened.get("summary"),
        always=prio.always,
        response_target=prio.response_minutes,
        resolution_target=prio.resolution_minutes,
        response_at=response_at,
        response_due=response_due,
        response_minutes=response_minutes,
        resolved_at=resolved_at,
        resolution_minutes=resolution_minutes,
        intervals=frozen_intervals,
        resolved_spans=tuple((float(s or 0.0), e) for s, e in spans),
        escalations=escalations,
        reopens=reopens,
        first_contact=first_contact,
        automated=automated,
        survey_score=survey_score,
        survey_at=survey_at,
        complaints=tuple(complaints),
        confirmed=confirmed,
        closed_at=closed_at,
        last_update_at=last_update,
        update_due=update_due,
        anomalies=tuple(anomalies),
        closed_seconds=elapsed(calendar, closed, max(boundaries, default=opened_at)),
        running_since=running,
        settled_at=max(boundaries, default=opened_at),
    )


# -- writing ----------------------------------------------------------------------------------
def history(ledger: Ledger, ticket: str) -> tuple[list[TicketEvent], list[ActionFact]]:
    return from_records(ledger.records(ticket=ticket))


def record(
    ledger: Ledger,
    ticket: str,
    event: str,
    data: Mapping[str, Any],
    policy: Policy,
    *,
    at: float | None = None,
    now: float | None = None,
) -> Record:
    """Append one lifecycle event after checking it against the ticket's replayed history.

    `at`: when it really happened (back-dated; the ledger still stamps its own time)."""
    from toolkit.ledger import Entry

    check_ticket_id(ticket)
    fields = check_fields(event, data)
    now = now if now is not None else datetime.now(UTC).timestamp()
    if at is not None and at > now + 60:
        raise TicketError(f"{ticket}: {event} at {iso_utc(at)} is in the future")
    past, actions = history(ledger, ticket)
    candidate = TicketEvent(
        ticket, event, at if at is not None else now, ledger.operator, fields, 1 << 62
    )
    if at is not None and past and at < min(e.at for e in past) and event != "opened":
        raise TicketError(f"{ticket}: {event} at {iso_utc(at)} is before the ticket was opened")
    summarize(ticket, [*past, candidate], actions, policy, strict=True)
    stored = dict(fields)
    if at is not None:
        stored.update(at=iso_utc(at), backdated=True)
    entry = Entry(f"ticket.{event}", ticket=ticket, data=stored)
    if event != "opened":
        return ledger.append(entry)
    written = ledger.append_once(entry)  # another process may have opened it since the replay
    if written is None:
        raise TicketError(f"{ticket}: already opened")
    return written


def ensure(
    ledger: Ledger,
    ticket: str,
    *,
    category: str | None = None,
    priority: str | None = None,
    kind: str | None = None,
    summary: str | None = None,
    source: str = "itops",
    requester: str | None = None,
    channel: str = "itops",
    at: float | None = None,
) -> Record | None:
    """Open a local ticket for an id the ledger has not seen; returns the new event, if any.
    `kind` (incident or request) is recorded on the opened event; default incident.
    (A desk's ticket is mirrored with its requester, the channel "other" and `at`: when the
    desk opened it, recorded as an imported time.)

    Idempotent at the store: runs racing to open the same new ticket record it once."""
    from toolkit.ledger import Entry

    check_ticket_id(ticket)
    if category is not None and category not in CATEGORIES:
        raise ValidationError(f"unknown category {category!r}", hint=", ".join(CATEGORIES))
    if priority is not None and priority not in PRIORITIES:
        raise ValidationError(f"unknown priority {priority!r}", hint=", ".join(PRIORITIES))
    if kind is not None and kind not in TICKET_KINDS:
        raise ValidationError(f"unknown ticket kind {kind!r}", hint=", ".join(TICKET_KINDS))
    data: Mapping[str, Any] = {
        "category": category or "other",
        "priority": priority or "P3",
        "kind": kind or DEFAULT_KIND,
        "summary": summary,
        "source": source,
        "channel": channel,
        **({"requester": requester[:255]} if requester else {}),
        **({"at": iso_utc(at), "imported": True} if at is not None else {}),
    }
    return ledger.append_once(Entry("ticket.opened", ticket=ticket, data=data))


def ticket_priority(ledger: Ledger, ticket: str) -> str | None:
    """The ticket's current priority: the last `priority` any of its ticket events set (the
    runner gives it to remediations; the run policy checks it for break-glass)."""
    priority = None
    for record in ledger.records(ticket=ticket, kinds=KINDS):
        if record.info.get("priority"):
            priority = str(record.info["priority"])
    return priority

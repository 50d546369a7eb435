"""The ticket lifecycle and its SLA clocks, replayed from events (KPI.md's edge cases)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from toolkit.desk.sla import default_policy
from toolkit.desk.tickets import (
    ActionFact,
    TicketError,
    TicketEvent,
    check_fields,
    next_state,
    summarize,
)

ZONE = ZoneInfo("Europe/Berlin")
POLICY = default_policy("Europe/Berlin")


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> float:
    return datetime(2026, month, day, hour, minute, tzinfo=ZONE).timestamp()


def ev(event: str, when: float, seq: int = 0, **data: Any) -> TicketEvent:
    return TicketEvent("INC-1", event, when, "ana", data, seq)


def opened(when: float, priority: str = "P3", **data: Any) -> TicketEvent:
    return ev("opened", when, 1, priority=priority, category="printer", hosts=["ws-1"], **data)


def test_a_plain_ticket() -> None:
    s = summarize(
        "INC-1",
        [
            opened(at(23, 10)),  # Monday
            ev("responded", at(23, 10, 30), 2),
            ev("resolved", at(23, 14), 3, first_contact=True),
            ev("confirmed", at(23, 15), 4),
            ev("closed", at(23, 16), 5),
        ],
        [],
        POLICY,
    )
    assert s is not None
    assert s.state == "closed"
    assert s.response_minutes == 30
    assert s.response_due == at(23, 12)
    assert s.resolution_minutes == 240
    assert s.first_contact and s.confirmed and not s.escalations


def test_opened_outside_hours_clock_starts_next_business_minute() -> None:
    s = summarize(
        "INC-1",
        [opened(at(20, 19)), ev("responded", at(23, 9, 45), 2), ev("resolved", at(23, 11), 3)],
        [],
        POLICY,
    )
    assert s is not None
    assert s.response_due == at(23, 11)  # Friday 19:00 + 2 business hours = Monday 11:00
    assert s.response_minutes == 45
    assert s.resolution_minutes == 120


def test_waiting_on_the_user_pauses_the_resolution_clock() -> None:
    s = summarize(
        "INC-1",
        [
            opened(at(23, 9)),
            ev("responded", at(23, 9, 10), 2),
            ev("waiting", at(23, 10), 3),
            ev("resumed", at(24, 10), 4),  # a whole business day waiting
            ev("resolved", at(24, 11), 5),
        ],
        [],
        POLICY,
    )
    assert s is not None
    assert s.resolution_minutes == 120
    assert len(s.intervals) == 2


def test_reopened_ticket_clock_stops_at_each_resolution() -> None:
    s = summarize(
        "INC-1",
        [
            opened(at(23, 9)),
            ev("resolved", at(23, 10), 2),
            ev("reopened", at(25, 9), 3),  # two days sitting resolved do not count
            ev("resolved", at(25, 9, 30), 4),
        ],
        [],
        POLICY,
    )
    assert s is not None
    assert s.resolution_minutes == 90
    assert s.reopens == 1
    assert s.resolved_at == at(25, 9, 30)
    assert s.is_open_at(at(25, 9, 10)) and not s.is_open_at(at(24, 12))


def test_no_response_yet_past_target_is_a_breach() -> None:
    s = summarize("INC-1", [opened(at(23, 9), "P2")], [], POLICY)
    assert s is not None
    assert s.response_at is None
    assert not s.response_breached(at(23, 9, 59))
    assert s.response_breached(at(23, 10, 1))
    assert s.breached(POLICY, at(23, 10, 1))


def test_still_open_resolution_clock_runs_to_now() -> None:
    s = summarize("INC-1", [opened(at(23, 9), "P2"), ev("responded", at(23, 9, 5), 2)], [], POLICY)
    assert s is not None
    assert s.resolved_at is None and s.resolution_minutes is None
    assert s.resolution_elapsed(POLICY, at(23, 17)) == 480
    assert not s.breached(POLICY, at(23, 17))
    assert s.breached(POLICY, at(24, 9, 1))


def test_p1_runs_24x7() -> None:
    s = summarize(
        "INC-1",
        [
            opened(at(21, 23), "P1"),
            ev("responded", at(21, 23, 20), 2),
            ev("resolved", at(22, 2), 3),
        ],
        [],
        POLICY,
    )
    assert s is not None
    assert s.always and s.response_minutes == 20 and s.resolution_minutes == 180
    assert s.update_due is None  # resolved: no status update due


def test_first_remediation_action_is_the_first_response() -> None:
    action = ActionFact(
        "a1",
        at(23, 9, 20),
        "ana",
        "ws-1",
        "printer.clear-queue",
        "fixed",
        "fix",
        "linux",
        at(23, 9, 21),
        "INC-1",
    )
    s = summarize(
        "INC-1",
        [opened(at(23, 9)), ev("responded", at(23, 9, 40), 2), ev("resolved", at(23, 9, 50), 3)],
        [action],
        POLICY,
    )
    assert s is not None
    assert s.response_at == at(23, 9, 20)
    assert s.automated


def test_back_dated_events_replay_in_effective_order() -> None:
    s = summarize(
        "INC-1",
        [opened(at(23, 9)), ev("resolved", at(23, 11), 2), ev("responded", at(23, 9, 15), 3)],
        [],
        POLICY,
    )
    assert s is not None and s.response_minutes == 15 and s.state == "resolved"


def test_status_update_due() -> None:
    s = summarize(
        "INC-1",
        [opened(at(23, 9), "P1"), ev("note", at(23, 9, 30), 2, text="working on it", update=True)],
        [],
        POLICY,
    )
    assert s is not None and s.update_due == at(23, 10, 30)


def test_survey_and_complaints() -> None:
    s = summarize(
        "INC-1",
        [
            opened(at(23, 9)),
            ev("resolved", at(23, 10), 2),
            ev("survey", at(23, 11), 3, score=2),
            ev("complaint", at(23, 12), 4, text="slow"),
        ],
        [],
        POLICY,
    )
    assert s is not None and s.survey_score == 2 and s.complaints == (at(23, 12),)


@pytest.mark.parametrize(
    ("state", "event", "message"),
    [
        (None, "resolved", "before the ticket was opened"),
        ("open", "opened", "already opened"),
        ("open", "resumed", "not possible while the ticket is open"),
        ("closed", "resolved", "not possible while the ticket is closed"),
        ("resolved", "closed", "before the user confirmed"),
        ("open", "survey", "not possible"),
        ("open", "frobnicated", "unknown event"),
    ],
)
def test_impossible_transitions(state: str | None, event: str, message: str) -> None:
    with pytest.raises(TicketError, match=message):
        next_state("INC-1", state, event)


def test_unconfirmed_close_is_allowed_when_said() -> None:
    assert next_state("INC-1", "resolved", "closed", {"unconfirmed": True}) == "closed"
    assert next_state("INC-1", "confirmed", "closed") == "closed"
    assert next_state("INC-1", "closed", "reopened") == "open"


@pytest.mark.parametrize(
    ("event", "data", "message"),
    [
        ("survey", {"score": 7}, "not between 1 and 5"),
        ("survey", {"score": "5"}, "whole number"),
        ("survey", {}, "score is required"),
        ("opened", {"priority": "P9"}, "unknown priority"),
        ("opened", {"tier": "L9"}, "unknown tier"),
        ("opened", {"colour": "red"}, "unknown field"),
        ("opened", {"hosts": [1, 2]}, "list of names"),
        ("opened", {"category": "Bad Category!"}, "not a name"),
        ("escalated", {}, "tier is required"),
        ("resolved", {"first_contact": "yes"}, "must be bool"),
        # longer than the KPI tables hold (PostgreSQL would refuse every later refresh)
        ("opened", {"assignee": "a" * 129}, "assignee .* longer than 128"),
        ("opened", {"requester": "r" * 256}, "requester .* longer than 255"),
        ("opened", {"hosts": ["ok", "h" * 256]}, "hosts .* longer than 255"),
        ("escalated", {"tier": "L2", "assignee": "a" * 129}, "longer than 128"),
    ],
)
def test_bad_fields(event: str, data: dict[str, Any], message: str) -> None:
    with pytest.raises(TicketError, match=message):
        check_fields(event, data)


def test_fields_are_normalised() -> None:
    assert check_fields("opened", {"hosts": "ws-1", "summary": None}) == {"hosts": ["ws-1"]}


def test_strict_replay_raises_and_lenient_replay_notes_anomalies() -> None:
    events = [opened(at(23, 9)), ev("resumed", at(23, 10), 2)]
    with pytest.raises(TicketError):
        summarize("INC-1", events, [], POLICY, strict=True)
    s = summarize("INC-1", events, [], POLICY)
    assert s is not None and s.state == "open" and len(s.anomalies) == 1


def test_never_opened_is_none() -> None:
    assert summarize("INC-1", [ev("note", at(23, 9), text="x")], [], POLICY) is None


@pytest.mark.parametrize("reopen", [False, True])
def test_the_settled_clock_shortcut_equals_replaying_the_intervals(reopen: bool) -> None:
    events = [
        opened(at(20, 17), "P3"),
        ev("waiting", at(23, 10), 2),
        ev("resumed", at(24, 11, 30), 3),
        ev("resolved", at(24, 15), 4),
    ]
    if reopen:
        events += [
            ev("reopened", at(25, 9, 45), 5),
            ev("waiting", at(25, 12), 6),
            ev("resumed", at(26, 8), 7),
        ]
    s = summarize("INC-1", events, [], POLICY)
    assert s is not None
    for t in (at(26, 9), at(27, 17, 59), at(30, 12), at(12, 10, month=12)):
        assert t >= s.settled_at
        slow = s._replace(settled_at=float("inf"))
        assert s.resolution_elapsed(POLICY, t) == slow.resolution_elapsed(POLICY, t)
        assert s.is_open_at(t) == slow.is_open_at(t) == reopen
        assert s.breached(POLICY, t) == slow.breached(POLICY, t)

"""A small desk week with every KPI edge case, as import lines, and the KPIs it must give.

Europe/Berlin, Mon 2026-11-02 … Mon 2026-11-09; the period is [11-02 00:00, 11-10 00:00) local.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ZONE = ZoneInfo("Europe/Berlin")
CONFIG = '\n[calendar]\ntimezone = "Europe/Berlin"\n'
SINCE = "2026-11-02T00:00:00+01:00"
UNTIL = "2026-11-10T00:00:00+01:00"


def t(day: int, hour: int, minute: int = 0) -> str:
    return datetime(2026, 11, day, hour, minute, tzinfo=ZONE).isoformat()


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def ev(ticket: str, event: str, when: str, **fields: Any) -> dict[str, Any]:
    return {"ticket": ticket, "event": event, "at": when, **fields}


LINES = [
    # INC-1: P2 printer on ws-1, answered and fixed at first contact
    ev(
        "INC-1",
        "opened",
        t(2, 9),
        priority="P2",
        category="printer",
        hosts=["ws-1"],
        requester="bob",
        assignee="ana",
        channel="phone",
    ),
    ev("INC-1", "responded", t(2, 9, 30)),
    ev("INC-1", "resolved", t(2, 11), code="fixed", first_contact=True),
    ev("INC-1", "confirmed", t(2, 12)),
    ev("INC-1", "closed", t(2, 12, 5)),
    # INC-2: the printer again on ws-1 (a recurrence of INC-1): late response, escalation,
    # waiting on the user overnight, reopened once
    ev(
        "INC-2",
        "opened",
        t(3, 9),
        priority="P3",
        category="printer",
        hosts=["ws-1"],
        requester="bob",
        assignee="li",
    ),
    ev("INC-2", "responded", t(3, 12)),
    ev("INC-2", "escalated", t(3, 12, 30), tier="L2", assignee="li"),
    ev("INC-2", "waiting", t(3, 13), reason="user away"),
    ev("INC-2", "resumed", t(4, 9)),
    ev("INC-2", "resolved", t(4, 10), code="fixed"),
    ev("INC-2", "reopened", t(5, 9), reason="again"),
    ev("INC-2", "resolved", t(5, 9, 30), code="fixed"),
    ev("INC-2", "survey", t(5, 12), score=4),
    # INC-3: P1 network outage on a Friday night (24×7 clock): resolution breached
    ev("INC-3", "opened", t(6, 20), priority="P1", category="network", hosts=["ws-2"]),
    ev("INC-3", "responded", t(6, 20, 20)),
    ev("INC-3", "resolved", t(7, 2), code="fixed"),
    ev("INC-3", "survey", t(7, 10), score=2),
    ev("INC-3", "complaint", t(7, 11), text="took all night"),
    # INC-4: no response yet, past its target: a breach, in the backlog
    ev("INC-4", "opened", t(9, 9), priority="P2", category="account", requester="carl"),
    # INC-5: still open at the period end, within its targets
    ev("INC-5", "opened", t(9, 10), priority="P4", category="hardware", hosts=["ws-3"]),
    ev("INC-5", "responded", t(9, 10, 5)),
]

EXPECTED: dict[str, Any] = {  # full precision, as `itops kpi --json` gives them
    "tickets_opened": 5,
    "tickets_resolved": 3,
    "response_sla_compliance": 0.6,
    "resolution_sla_compliance": 2 / 3,
    "time_to_respond_mean": 58.75,
    "time_to_respond_median": 25.0,
    "time_to_respond_p90": 180.0,
    "time_to_resolve_mean": 270.0,
    "time_to_resolve_median": 330.0,
    "time_to_resolve_p90": 360.0,
    "first_contact_resolution_rate": 1 / 3,
    "escalation_rate": 0.2,
    "recurrence_rate": 1 / 3,
    "reopen_rate": 1 / 3,
    "csat_mean": 3.0,
    "csat_share_4_plus": 0.5,
    "surveys": 2,
    "complaints": 1,
    "backlog_open": 2,
    "backlog_past_sla": 1,
    "backlog_age_mean": 510.0,
    "backlog_age_max": 540.0,
    "automation_rate": 0.0,
    "remediation_runs": 0,
    "remediation_success_rate": None,
}


def write(path: Path, lines: list[dict[str, Any]] | None = None) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in (lines or LINES)))
    return path


# Two standard requests in the same week (KPI.md: password resets, account and permission
# changes, software installs), measured apart from the incidents above.
REQUESTS = [
    # REQ-1: P4 account change, answered in 15 min, fulfilled an hour after it came in
    ev("REQ-1", "opened", t(2, 10), kind="request", priority="P4", category="account",
       requester="dana"),
    ev("REQ-1", "responded", t(2, 10, 15)),
    ev("REQ-1", "resolved", t(2, 11), code="fixed", first_contact=True),
    # REQ-2: P3 software install opened Tue 16:00: answered late (150 of 120 business minutes),
    # fulfilled Fri 17:00 after 120 + 540 + 540 + 480 = 1680 business minutes (target 1080)
    ev("REQ-2", "opened", t(3, 16), kind="request", priority="P3", category="software"),
    ev("REQ-2", "responded", t(4, 9, 30)),
    ev("REQ-2", "resolved", t(6, 17), code="fixed"),
]  # fmt: skip

# The week's KPIs with the requests imported too: the incidents' figures are EXPECTED's
EXPECTED_WITH_REQUESTS: dict[str, Any] = {
    "tickets_opened": 7,
    "incidents_opened": 5,
    "requests_opened": 2,
    "tickets_resolved": 5,
    "incidents_resolved": 3,
    "requests_fulfilled": 2,
    "response_sla_compliance": 4 / 7,
    "resolution_sla_compliance": 3 / 5,
    "incident_response_sla_compliance": 0.6,
    "incident_resolution_sla_compliance": 2 / 3,
    "request_response_sla_compliance": 0.5,
    "request_fulfilment_sla_compliance": 0.5,
    # MTTR is the incidents' alone: the requests do not move it
    "time_to_resolve_mean": 270.0,
    "time_to_resolve_median": 330.0,
    "time_to_resolve_p90": 360.0,
    "time_to_fulfil_mean": 870.0,
    "time_to_fulfil_median": 870.0,
    "time_to_fulfil_p90": 1680.0,
    "automation_rate": 0.0,
    "incident_automation_rate": 0.0,
    "request_automation_rate": 0.0,
    "first_contact_resolution_rate": 2 / 5,
}

"""KPIs from the ticket log, through the projection, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import fixture_tickets as desk
from toolkit.desk.kpi import kpis
from toolkit.desk.projection import Projection
from toolkit.desk.sla import load_policy
from toolkit.desk.ticketio import import_file
from toolkit.desk.tickets import record
from toolkit.ledger import Entry, Ledger, open_ledger

POLICY = load_policy({"calendar": {"timezone": "Europe/Berlin"}})
SINCE, UNTIL = desk.epoch(desk.SINCE), desk.epoch(desk.UNTIL)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    lg = open_ledger(ledger_url, operator="ana")
    yield lg
    lg.close()


@pytest.fixture
def projection(ledger: Ledger) -> Iterator[Projection]:
    p = Projection(ledger.url, POLICY)
    yield p
    p.close()


def compute(p: Projection, **kw: Any) -> dict[str, Any]:
    p.refresh()
    return kpis(p.tickets(), p.actions(), POLICY, since=SINCE, until=UNTIL, now=UNTIL, **kw)


def test_every_kpi_of_the_desk_week(ledger: Ledger, projection: Projection, tmp_path: Path) -> None:
    import_file(ledger, desk.write(tmp_path / "week.jsonl"))
    result = compute(projection)
    assert {k: result[k] for k in desk.EXPECTED} == desk.EXPECTED
    assert result["schema"] == "itops.kpi/1"
    assert result["targets"]["csat_mean"] == {"target": 4.5, "met": False}
    assert result["workload"] == {
        "ana": {"tickets": 1, "weighted_tickets": 3.0, "actions": 0},
        "li": {"tickets": 1, "weighted_tickets": 2.0, "actions": 0},
    }
    assert result["recurring_hosts"] == [{"name": "ws-1", "recurrences": 1}]


def test_groups(ledger: Ledger, projection: Projection, tmp_path: Path) -> None:
    import_file(ledger, desk.write(tmp_path / "week.jsonl"))
    by_host = compute(projection, by="host")
    assert by_host["by"] == "host"
    assert by_host["groups"]["ws-1"]["recurrence_rate"] == 0.5
    assert by_host["groups"]["ws-2"]["recurrence_rate"] == 0.0
    assert by_host["groups"]["(none)"]["tickets_opened"] == 1
    by_category = compute(projection, by="category")
    hardware = by_category["groups"]["hardware"]
    assert hardware["targets"]["resolution_sla_compliance"] == {"target": 0.95, "met": None}
    assert by_category["groups"]["network"]["targets"]["resolution_sla_compliance"]["met"] is False
    by_priority = compute(projection, by="priority")
    assert by_priority["groups"]["P2"]["response_sla_compliance"] == 0.5
    assert set(by_priority["groups"]["P2"]) == set(by_host["groups"]["ws-1"])


def test_a_period_without_tickets_gives_nulls_not_errors(
    ledger: Ledger, projection: Projection
) -> None:
    result = compute(projection)
    assert result["tickets_opened"] == 0
    assert result["response_sla_compliance"] is None and result["time_to_resolve_mean"] is None
    assert result["csat_mean"] is None and result["targets"]["csat_mean"]["met"] is None


def rows(p: Projection) -> list[tuple[Any, ...]]:
    return sorted(
        (
            t.ticket,
            t.state,
            t.response_at,
            t.resolved_at,
            t.resolution_minutes,
            t.reopens,
            t.automated,
            tuple(t.intervals),
        )
        for t in p.tickets()
    )


def test_incremental_refresh_equals_a_rebuild(
    ledger: Ledger, projection: Projection, tmp_path: Path
) -> None:
    half = len(desk.LINES) // 2
    import_file(ledger, desk.write(tmp_path / "a.jsonl", desk.LINES[:half]))
    assert projection.refresh() == half
    assert projection.refresh() == 0  # nothing new
    import_file(ledger, desk.write(tmp_path / "b.jsonl", desk.LINES[half:]))
    # a remediation under INC-5: begins (first response already there), then fixes it
    action = ledger.begin(
        task="printer.clear-queue",
        host="ws-3",
        ticket="INC-5",
        params={},
        data={"mode": "fix", "platform": "linux"},
    )
    projection.refresh()  # the begin is read before its finish: the finish must find it
    ledger.finish(
        action,
        task="printer.clear-queue",
        host="ws-3",
        ticket="INC-5",
        outcome="fixed",
        duration=1.0,
    )
    record(ledger, "INC-5", "resolved", {"code": "fixed"}, POLICY)
    projection.refresh()
    incremental = rows(projection)
    facts = projection.actions()
    assert [(a.mode, a.platform, a.outcome, a.ticket) for a in facts] == [
        ("fix", "linux", "fixed", "INC-5")
    ]
    projection.rebuild()
    assert rows(projection) == incremental
    inc5 = next(t for t in projection.tickets() if t.ticket == "INC-5")
    assert inc5.automated and inc5.state == "resolved"


def test_policy_change_rebuilds_the_projection(
    ledger: Ledger, projection: Projection, tmp_path: Path
) -> None:
    import_file(ledger, desk.write(tmp_path / "week.jsonl"))
    projection.refresh()
    before = {t.ticket: (t.response_minutes, t.resolution_minutes) for t in projection.tickets()}
    night_shift = load_policy(
        {
            "calendar": {
                "timezone": "Europe/Berlin",
                "hours": {"mon": "06:00-20:00", "tue": "06:00-20:00"},
            }
        }
    )
    other = Projection(ledger.url, night_shift)
    try:
        other.refresh()
        after = {t.ticket: (t.response_minutes, t.resolution_minutes) for t in other.tickets()}
    finally:
        other.close()
    assert before.keys() == after.keys()
    # INC-2 was worked partly outside the new calendar's hours: its resolution time changes
    assert before["INC-2"] == (180, 330) and after["INC-2"] == (180, 240)
    assert before["INC-1"] == after["INC-1"] == (30, 120)  # inside both calendars
    assert before["INC-3"] == after["INC-3"] == (20, 360)  # P1: 24×7 either way


def test_the_projection_is_disposable(
    ledger: Ledger, projection: Projection, tmp_path: Path
) -> None:
    import_file(ledger, desk.write(tmp_path / "week.jsonl"))
    first = compute(projection)
    with projection.engine.begin() as conn:
        for table in ("kpi_tickets", "kpi_actions", "kpi_state"):
            conn.exec_driver_sql(f"DROP TABLE {table}")
    again = Projection(ledger.url, POLICY)
    try:
        assert compute(again) == first
    finally:
        again.close()
    assert ledger.verify().ok


def test_remediation_and_availability_kpis(ledger: Ledger, projection: Projection) -> None:
    start = time.time() - 1
    record(
        ledger,
        "INC-7",
        "opened",
        {"priority": "P3", "category": "printer", "hosts": ["ws-1"]},
        POLICY,
    )
    for outcome, platform in (("fixed", "linux"), ("failed", "windows"), ("already-ok", "linux")):
        a = ledger.begin(
            task="printer.clear-queue",
            host="ws-1",
            ticket="INC-7",
            params={},
            data={"mode": "fix", "platform": platform},
        )
        ledger.finish(
            a,
            task="printer.clear-queue",
            host="ws-1",
            ticket="INC-7",
            outcome=outcome,
            duration=0.5,
        )
    for outcome in ("already-ok", "unreachable"):
        a = ledger.begin(
            task="network.ping", host="core-1", ticket=None, params={}, data={"mode": "check"}
        )
        ledger.finish(
            a, task="network.ping", host="core-1", ticket=None, outcome=outcome, duration=0.1
        )
        time.sleep(0.05)
    ledger.append(Entry("note", data={"x": 1}))  # other kinds are ignored
    record(ledger, "INC-7", "resolved", {"code": "fixed"}, POLICY)
    projection.refresh()
    now = time.time() + 1
    result = kpis(
        projection.tickets(), projection.actions(), POLICY, since=start, until=now, now=now
    )
    assert (
        result["remediation_runs"] == 2
    )  # already-ok needed no fix; the check-only pings don't count
    assert result["remediation_success_rate"] == 0.5
    assert result["remediation_by_platform"]["windows"] == {"runs": 1, "fixed": 0, "rate": 0.0}
    assert result["automation_rate"] == 1.0
    assert result["workload"]["ana"]["actions"] == 5
    availability = result["availability"]["core-1"]
    assert 0.0 < availability["availability"] < 1.0 and availability["met"] is False
    inc7 = next(t for t in projection.tickets() if t.ticket == "INC-7")
    assert inc7.response_at is not None and inc7.response_at < inc7.resolved_at  # type: ignore[operator]


def test_an_import_primes_the_projection_exactly_as_a_rebuild(
    ledger: Ledger, projection: Projection, tmp_path: Path
) -> None:
    projection.refresh()
    import_file(ledger, desk.write(tmp_path / "week.jsonl"), on_checked=projection.prime)
    with projection.engine.connect() as conn:
        mark = conn.exec_driver_sql("SELECT value FROM kpi_state WHERE key = 'watermark'").scalar()
    assert int(mark) == len(desk.LINES)  # primed: nothing left for a refresh
    assert projection.refresh() == 0
    primed = rows(projection)
    projection.rebuild()
    assert rows(projection) == primed and len(primed) == 5


def test_priming_steps_aside_when_tickets_already_exist(
    ledger: Ledger, projection: Projection, tmp_path: Path
) -> None:
    import_file(ledger, desk.write(tmp_path / "a.jsonl", desk.LINES[:3]))
    projection.refresh()
    import_file(
        ledger, desk.write(tmp_path / "b.jsonl", desk.LINES[3:]), on_checked=projection.prime
    )
    assert projection.refresh() == len(desk.LINES) - 3
    assert len(rows(projection)) == 5


def _generated(tmp_path: Path, events: int) -> Path:
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from gen_tickets import generate

    path = tmp_path / "generated.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in generate(events, seed=3, prefix="GEN")))
    return path


@pytest.mark.parametrize("by", [None, "category", "priority", "kind", "assignee", "tier", "host"])
def test_the_sql_kpis_equal_the_reference_kpis(
    ledger: Ledger, projection: Projection, tmp_path: Path, by: str | None
) -> None:
    """toolkit.desk.kpi_sql (what the CLI runs) and toolkit.desk.kpi (plain Python) agree exactly."""
    from toolkit.desk.kpi_sql import kpis_fast

    import_file(ledger, desk.write(tmp_path / "week.jsonl"))
    import_file(ledger, _generated(tmp_path, 2500))
    for i, outcome in enumerate(("fixed", "failed", "fixed", "unreachable")):
        ticket = ("INC-1", "INC-3", "INC-9", None)[i]
        a = ledger.begin(
            task=f"task.{i % 2}",
            host=f"ws-{i}",
            ticket=ticket,
            params={},
            data={"mode": "fix", "platform": ("linux", "windows")[i % 2]},
        )
        ledger.finish(
            a, task=f"task.{i % 2}", host=f"ws-{i}", ticket=ticket, outcome=outcome, duration=0.1
        )
    projection.refresh()
    tickets, actions = projection.tickets(), projection.actions()
    for since, until, now in (
        (desk.epoch("2025-11-01T00:00:00+00:00"), desk.epoch("2026-12-31T00:00:00+00:00"), None),
        (SINCE, UNTIL, UNTIL),
        (desk.epoch("2026-03-01T00:00:00+00:00"), desk.epoch("2026-04-01T00:00:00+00:00"), None),
    ):
        moment = now if now is not None else time.time()
        reference = kpis(tickets, actions, POLICY, since=since, until=until, now=moment, by=by)
        fast = kpis_fast(projection, POLICY, since=since, until=until, now=moment, by=by)
        assert fast == reference
    assert reference["tickets_opened"] > 0
    assert reference["requests_fulfilled"] > 0 and reference["incidents_resolved"] > 0


def test_a_failed_import_stores_nothing_primed(
    ledger: Ledger, projection: Projection, tmp_path: Path
) -> None:
    from toolkit.desk.ticketio import check_file

    projection.refresh()
    checked = check_file(desk.write(tmp_path / "week.jsonl"), ledger)
    finish = projection.prime(checked)
    assert finish is not None
    finish(None, None)  # as import_file does when the append fails
    assert projection.tickets() == []
    with projection.engine.connect() as conn:
        mark = conn.exec_driver_sql("SELECT value FROM kpi_state WHERE key = 'watermark'").scalar()
    assert mark == "0"


def test_the_report_data_is_the_kpi_json(
    ledger: Ledger, projection: Projection, tmp_path: Path
) -> None:
    """The page's numbers (breakdowns computed in forked workers) are the `kpi --json` ones."""
    from toolkit.desk.kpi_sql import kpis_fast
    from toolkit.reports import kpi as pages

    import_file(ledger, desk.write(tmp_path / "week.jsonl"))
    projection.refresh()
    data = pages.build(projection, POLICY, since=SINCE, until=UNTIL, now=UNTIL)
    assert data["overall"] == kpis_fast(projection, POLICY, since=SINCE, until=UNTIL, now=UNTIL)
    by_priority = kpis_fast(projection, POLICY, since=SINCE, until=UNTIL, now=UNTIL, by="priority")
    assert data["groups"]["priority"] == by_priority["groups"]
    assert [w["opened"] for w in data["weeks"]] == [3, 2]
    assert "overall,,response_sla_compliance,0.6,," in pages.csv_text(data)


def test_a_rebuild_computes_without_holding_the_ledgers_write_lock(
    ledger: Ledger, projection: Projection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the projection replays the log, an engineer's fix still writes its records; and a
    refresh another process finishes meanwhile is detected, not overwritten with older rows."""
    import toolkit.desk.projection as module

    import_file(ledger, desk.write(tmp_path / "week.jsonl"))
    projection.refresh()
    expected = rows(projection)
    other = Projection(ledger.url, POLICY)
    writer = open_ledger(ledger.url, operator="l2")
    real = module.summarize
    calls = {"n": 0}

    def meanwhile(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            started = time.perf_counter()
            writer.append(Entry("ticket.noted", ticket="INC-1", data={"text": "called the user"}))
            assert time.perf_counter() - started < 1, "the append waited for the rebuild"
            other.rebuild()  # and another process's refresh lands first
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "summarize", meanwhile)
    try:
        projection.rebuild()
    finally:
        writer.close()
        other.close()
    assert calls["n"] > len(expected), "the first attempt was dropped and the rebuild redone"
    assert projection.refresh() == 0, "up to the head, the note included"
    fresh = Projection(ledger.url, POLICY)
    try:
        fresh.rebuild()
        assert rows(projection) == rows(fresh)
    finally:
        fresh.close()


def late_at_period_end(tmp_path: Path, respond: bool) -> Path:
    """INC-9: P3 opened Mon 9 Nov 17:50 (the period's last day), due 2 business hours later:
    Tue 10 Nov 10:50, after the period; answered late on Wednesday, or never."""
    lines = [
        desk.ev("INC-9", "opened", desk.t(9, 17, 50), priority="P3", category="printer"),
    ]
    if respond:
        lines.append(desk.ev("INC-9", "responded", desk.t(11, 9)))
    return desk.write(tmp_path / "late.jsonl", lines)


@pytest.mark.parametrize("respond", [True, False])
def test_never_answering_a_ticket_cannot_look_better_than_answering_it_late(
    ledger: Ledger, projection: Projection, tmp_path: Path, respond: bool
) -> None:
    from toolkit.desk.kpi_sql import kpis_fast

    import_file(ledger, late_at_period_end(tmp_path, respond))
    projection.refresh()
    friday = desk.epoch(desk.t(13, 12))  # the report is made on Friday
    for until, expected in (
        # the week ended before the target: neither a hit nor a miss of that week, either way
        (UNTIL, None),
        # a period up to Friday: a breach either way (KPI.md)
        (friday, 0.0),
    ):
        args: dict[str, Any] = {"since": SINCE, "until": until, "now": friday}
        reference = kpis(projection.tickets(), projection.actions(), POLICY, **args)
        fast = kpis_fast(projection, POLICY, **args)
        for result in (reference, fast):  # by both implementations
            assert result["response_sla_compliance"] == expected, result
    # the week's trend of the current week counts a ticket only once it is late
    from toolkit.desk.kpi import weekly
    from toolkit.desk.kpi_sql import trend_rows

    opened = desk.epoch(desk.t(9, 17, 50))
    rows = trend_rows(projection, SINCE, friday)
    (week,) = weekly(rows, POLICY, opened - 1, friday, opened + 60)
    assert week["response_sla_compliance"] is None
    (week,) = weekly(rows, POLICY, opened - 1, friday, friday)
    assert week["response_sla_compliance"] == 0.0


def test_a_skipped_remediation_is_no_first_response(ledger: Ledger, projection: Projection) -> None:
    # P1 opened at 02:00; a fix at 02:05 was skipped (outside the host's window) and never
    # touched the host; the engineer answered at 03:00, past the 30-minute target.
    opened = desk.epoch(desk.t(3, 2))
    record(ledger, "INC-7", "opened", {"priority": "P1", "category": "printer"}, POLICY, at=opened)
    action = ledger.begin(task="printer.clear-queue", host="ws-1", ticket="INC-7", params={})
    ledger.finish(
        action, task="printer.clear-queue", host="ws-1", ticket="INC-7",
        outcome="skipped", duration=0.0,
    )  # fmt: skip
    record(ledger, "INC-7", "responded", {}, POLICY, at=opened + 3600)
    projection.refresh()
    (inc7,) = [t for t in projection.tickets() if t.ticket == "INC-7"]
    assert inc7.response_at == opened + 3600


def test_a_record_another_process_wrote_between_import_batches_is_not_skipped(
    ledger: Ledger, projection: Projection
) -> None:
    # An import of 3 records in batches; another process's record landed between two of
    # them, so the import spans seq 1..4. Storing the import's replay with watermark 4 would
    # leave that record out of the KPI tables until a rebuild: it must be refused.
    projection.refresh()  # current at head 0
    for n in range(4):
        ledger.append(Entry("note", ticket=f"X-{n}", data={"n": n}))
    assert not projection._store_primed(0, 1, 4, 3, [], {}, [])
    assert projection._store_primed(0, 1, 4, 4, [], {}, [])  # all four were the import's


def _refresh_in_a_process(url: str) -> None:
    projection = Projection(url, POLICY)
    try:
        projection.refresh()
    finally:
        projection.close()


def test_several_kpi_refreshes_at_once_agree(
    ledger: Ledger, projection: Projection, tmp_path: Path
) -> None:
    # Three `itops kpi` at the same moment over a fresh projection: one writes, the others
    # wait for it (SQLite's write lock, PostgreSQL's advisory lock) and take its result.
    import multiprocessing

    import_file(ledger, desk.write(tmp_path / "week.jsonl"))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_refresh_in_a_process, args=(ledger.url,)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    together = rows(projection)
    projection.rebuild()
    assert rows(projection) == together


def oct_(day: int, hour: int, minute: int = 0) -> str:
    """An October or November 2026 instant in Berlin (October's days; 32 … means November)."""
    from datetime import datetime, timedelta

    first = datetime(2026, 10, 1, tzinfo=desk.ZONE)
    return (first + timedelta(days=day - 1)).replace(hour=hour, minute=minute).isoformat()


OCTOBER = desk.epoch("2026-10-01T00:00:00+02:00"), desk.epoch("2026-11-01T00:00:00+01:00")
# What the ledger holds on Sunday 1 November at noon: October's desk, as it ended
KNOWN_IN_NOVEMBER = [
    desk.ev("OCT-1", "opened", oct_(5, 9), priority="P2", category="printer", hosts=["ws-1"]),
    desk.ev("OCT-1", "responded", oct_(5, 9, 20)),
    desk.ev("OCT-1", "resolved", oct_(5, 11), code="fixed", first_contact=True),
    desk.ev("OCT-1", "survey", oct_(6, 10), score=5),
    desk.ev("OCT-2", "opened", oct_(13, 10), priority="P3", category="software", assignee="li"),
    desk.ev("OCT-2", "responded", oct_(13, 13)),  # late: due 12:00
    desk.ev("OCT-2", "escalated", oct_(13, 14), tier="L2"),
    desk.ev("OCT-2", "resolved", oct_(15, 10), code="fixed"),
    desk.ev("OCT-2", "survey", oct_(15, 12), score=3),
    # P1 on the night the clocks go back (24×7)
    desk.ev("OCT-3", "opened", oct_(24, 22), priority="P1", category="network", hosts=["ws-2"]),
    desk.ev("OCT-3", "responded", oct_(24, 22, 10)),
    desk.ev("OCT-3", "resolved", oct_(25, 3, 30), code="fixed"),
    desk.ev("OCT-3", "survey", oct_(26, 9), score=3),
    # the example: P3 opened Friday 17:30, response due Monday 2 Nov 10:30, never answered
    desk.ev("OCT-4", "opened", oct_(30, 17, 30), priority="P3", category="printer"),
    # P2 opened Friday 17:45, answered on Monday 2 Nov 09:10 (due 09:45): on time, after the end
    desk.ev("OCT-5", "opened", oct_(30, 17, 45), priority="P2", category="account"),
    # P2 answered, its 8 business hours over on Thursday evening: in the backlog, past its SLA
    desk.ev("OCT-6", "opened", oct_(29, 10), priority="P2", category="hardware", assignee="ana"),
    desk.ev("OCT-6", "responded", oct_(29, 10, 30)),
]
# … and what it holds by December
LEARNED_LATER = [
    desk.ev("OCT-5", "responded", oct_(33, 9, 10)),
    desk.ev("OCT-5", "resolved", oct_(33, 12), code="fixed"),
    desk.ev("OCT-6", "resolved", oct_(63, 10), code="fixed"),
    desk.ev("NOV-1", "opened", oct_(34, 9), priority="P2", category="software", assignee="li"),
    desk.ev("NOV-1", "responded", oct_(34, 11)),
]


def test_a_past_periods_kpis_are_the_same_in_november_and_in_december(
    ledger: Ledger, projection: Projection, tmp_path: Path
) -> None:
    """Every clock of one KPI object is judged at as_of = min(until, now): a closed period's
    KPIs (both implementations, the groups, the report's weekly trend) never change."""
    from toolkit.desk.kpi_sql import kpis_fast
    from toolkit.reports import kpi as pages

    since, until = OCTOBER

    def everything(now: float) -> list[Any]:
        projection.refresh()
        args: dict[str, Any] = {"since": since, "until": until, "now": now}
        out: list[Any] = []
        for by in (None, "priority", "category"):
            reference = kpis(projection.tickets(), projection.actions(), POLICY, by=by, **args)
            assert kpis_fast(projection, POLICY, by=by, **args) == reference
            out.append(reference)
        out.append(pages.build(projection, POLICY, **args))
        return out

    import_file(ledger, desk.write(tmp_path / "october.jsonl", KNOWN_IN_NOVEMBER))
    in_november = everything(desk.epoch(oct_(32, 12)))
    import_file(ledger, desk.write(tmp_path / "later.jsonl", LEARNED_LATER))
    in_december = everything(desk.epoch(oct_(64, 12)))
    for early, late in zip(in_november, in_december, strict=True):
        assert late == early
    overall = in_december[0]
    assert overall["as_of"] == "2026-10-31T23:00:00+00:00"
    # OCT-4 and OCT-5 were due after the end: neither a miss nor a hit in October
    assert overall["tickets_opened"] == 6
    assert overall["response_sla_compliance"] == 0.75  # OCT-1, 3, 6 on time; OCT-2 late
    assert overall["time_to_respond_median"] == 25.0  # 20, 10, 30, 180 minutes
    assert overall["backlog_open"] == 3 and overall["backlog_past_sla"] == 1


# -- incidents and requests --------------------------------------------------------------------
def both(projection: Projection, **args: Any) -> dict[str, Any]:
    """The KPI object by both implementations, which must agree."""
    from toolkit.desk.kpi_sql import kpis_fast

    projection.refresh()
    reference = kpis(projection.tickets(), projection.actions(), POLICY, **args)
    assert kpis_fast(projection, POLICY, **args) == reference
    return reference


def test_the_ticket_table_mirrors_the_summary() -> None:
    from toolkit.desk.projection import _TICKET_COLUMNS
    from toolkit.desk.tickets import TicketSummary

    assert tuple(_TICKET_COLUMNS) == TicketSummary._fields


def test_requests_are_measured_apart_from_incidents(
    ledger: Ledger, projection: Projection, tmp_path: Path
) -> None:
    """MTTR stays the incidents' own; the requests get their fulfilment time and SLA figures."""
    from toolkit.reports import kpi as pages

    import_file(ledger, desk.write(tmp_path / "week.jsonl", [*desk.LINES, *desk.REQUESTS]))
    args: dict[str, Any] = {"since": SINCE, "until": UNTIL, "now": UNTIL}
    result = both(projection, **args)
    assert {k: result[k] for k in desk.EXPECTED_WITH_REQUESTS} == desk.EXPECTED_WITH_REQUESTS
    by_kind = both(projection, by="kind", **args)["groups"]
    assert set(by_kind) == {"incident", "request"}
    request, incident = by_kind["request"], by_kind["incident"]
    assert request["tickets_opened"] == 2 and request["time_to_fulfil_mean"] == 870.0
    assert request["time_to_resolve_mean"] is None and request["incidents_resolved"] == 0
    assert incident["time_to_fulfil_mean"] is None and incident["time_to_resolve_mean"] == 270.0
    assert incident["resolution_sla_compliance"] == 2 / 3
    summaries = {t.ticket: t.kind for t in projection.tickets()}
    assert summaries == {
        **dict.fromkeys(["INC-1", "INC-2", "INC-3", "INC-4", "INC-5"], "incident"),
        "REQ-1": "request",
        "REQ-2": "request",
    }
    # the report's weekly trend splits the same way
    page = pages.build(projection, POLICY, **args)
    first = page["weeks"][0]
    assert (first["time_to_resolve_mean"], first["time_to_fulfil_mean"]) == (270.0, 870.0)
    assert set(page["groups"]["kind"]) == {"incident", "request"}
    csv = pages.csv_text(page)
    assert "overall,,time_to_fulfil_mean,870.0,," in csv
    assert "kind,request,requests_fulfilled,2,," in csv


def test_a_request_fulfilled_by_a_verified_itops_action_counts_as_automated(
    ledger: Ledger, projection: Projection
) -> None:
    from toolkit.desk.tickets import ensure

    start = time.time() - 1

    def run(ticket: str, outcome: str) -> None:
        a = ledger.begin(
            task="password.reset",
            host="ws-1",
            ticket=ticket,
            params={},
            data={"mode": "fix", "platform": "linux"},
        )
        ledger.finish(a, task="password.reset", host="ws-1", ticket=ticket, outcome=outcome,
                      duration=0.2)  # fmt: skip

    ensure(ledger, "REQ-1", category="account", kind="request")  # as `itops fix` opens it
    run("REQ-1", "fixed")  # verify proved the reset: fulfilled by itops
    ensure(ledger, "REQ-2", category="account", kind="request")
    run("REQ-2", "failed")  # the engineer did it by hand afterwards
    ensure(ledger, "INC-3", category="printer")  # an incident, resolved by hand
    for ticket in ("REQ-1", "REQ-2", "INC-3"):
        record(ledger, ticket, "resolved", {"code": "fixed"}, POLICY)
    now = time.time() + 1
    result = both(projection, since=start, until=now, now=now)
    assert result["requests_fulfilled"] == 2 and result["incidents_resolved"] == 1
    assert result["request_automation_rate"] == 0.5
    assert result["incident_automation_rate"] == 0.0
    assert result["automation_rate"] == 1 / 3


def test_a_ticket_opened_before_kinds_existed_is_an_incident(
    ledger: Ledger, projection: Projection
) -> None:
    from toolkit.desk.tickets import TicketError, check_fields

    # an opened event as older versions wrote it: no kind
    ledger.append(Entry("ticket.opened", ticket="OLD-1", data={"category": "account",
                                                                "priority": "P4"}))  # fmt: skip
    projection.refresh()
    (old,) = projection.tickets()
    assert old.kind == "incident"
    # a correction makes it a request, from its opening
    record(ledger, "OLD-1", "updated", {"kind": "request", "reason": "a reset"}, POLICY)
    projection.refresh()
    assert [t.kind for t in projection.tickets(kind="request")] == ["request"]
    assert projection.tickets(kind="incident") == []
    with pytest.raises(TicketError, match="unknown kind 'problem'"):
        check_fields("opened", {"kind": "problem"})
    with pytest.raises(TicketError, match="unknown kind"):
        record(ledger, "OLD-2", "opened", {"kind": "Request"}, POLICY)

"""The scheduler's guarantees with a controllable clock, on SQLite and PostgreSQL: due runs once,
missed runs by policy (never silent, never twice), no overlap (also across real processes),
time zones and DST, and every schedule change recorded in the ledger."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.clocks import FakeClock
from toolkit.automation.schedule import (
    JobResult,
    Schedule,
    ScheduleError,
    Scheduler,
    ScheduleStore,
    change_ticket,
)
from toolkit.errors import NotFound, ToolkitError, ValidationError
from toolkit.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]


class Jobs:
    """A job executor that records what it was asked to run."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, datetime]] = []
        self.during: Any = None

    def __call__(self, s: Schedule, ticket: str, occurrence: datetime) -> JobResult:
        self.calls.append((s.name, ticket, occurrence))
        if self.during is not None:
            self.during()
        return JobResult("completed", f"task {s.what} on 2 host(s): 2 fixed", 0, {"fixed": 2})


@pytest.fixture
def env(ledger_url: str) -> Iterator[tuple[ScheduleStore, Ledger]]:
    store = ScheduleStore(ledger_url)
    ledger = Ledger(ledger_url, operator="lead")
    yield store, ledger
    ledger.close()
    store.close()


def make(
    env: tuple[ScheduleStore, Ledger], clock: FakeClock, jobs: Jobs | None = None, **kw: Any
) -> Scheduler:
    store, ledger = env
    return Scheduler(store, ledger, clock, jobs or Jobs(), **kw)


def weekly(name: str = "weekly-patch", **kw: Any) -> Schedule:
    fields: dict[str, Any] = {
        "name": name,
        "kind": "task",
        "what": "patch.apply",
        "targets": "linux",
        "cron": "0 2 * * SUN",
        "timezone": "Europe/Berlin",
        **kw,
    }
    return Schedule(**fields)


def kinds(ledger: Ledger, prefix: str = "schedule.") -> list[str]:
    return [r.kind for r in ledger.records() if r.kind.startswith(prefix)]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# -- definitions -------------------------------------------------------------------------------
def test_add_computes_the_next_run_in_the_schedules_time_zone(env: Any) -> None:
    clock = FakeClock("2026-11-18T12:00+00:00")  # a Wednesday
    sched = make(env, clock)
    berlin = sched.add(weekly())
    assert berlin.next_run_at == utc("2026-11-22T02:00+01:00")
    ny = sched.add(weekly("ny-patch", timezone="America/New_York"))
    assert ny.next_run_at == utc("2026-11-22T02:00-05:00")
    store, ledger = env
    assert [s.name for s in store.list()] == ["ny-patch", "weekly-patch"]
    added = next(ledger.records(kind="schedule.added"))
    assert added.info["cron"] == "0 2 * * SUN" and added.operator == "lead"
    assert added.info["next_run_at"] == "2026-11-22T01:00:00.000000Z"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cron": "61 2 * * SUN"}, "invalid cron expression '61 2 \\* \\* SUN': Bad minute"),
        ({"cron": "0 2 * *"}, "it needs 5 fields"),
        ({"cron": "0 2 * * FUNDAY"}, "Bad day-of-week"),
        ({"cron": "0 0 30 2 *"}, "Bad day-of-month"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"name": "Weekly Patch"}, "invalid schedule name"),
        ({"missed": "sometimes"}, "unknown missed-run policy"),
    ],
)
def test_bad_definitions_are_refused_and_nothing_is_stored(
    env: Any, change: dict[str, str], message: str
) -> None:
    sched = make(env, FakeClock("2026-11-18T12:00+00:00"))
    with pytest.raises(ToolkitError, match=message):
        sched.add(weekly(**change))
    store, ledger = env
    assert store.list() == [] and kinds(ledger) == []


def test_a_schedule_stored_before_target_was_renamed_what_still_reads(env: Any) -> None:
    """`Schedule.what` (the task, runbook or playbook) was stored as `target` beside `targets`."""
    store, _ = env
    sched = make(env, FakeClock("2026-11-18T12:00+00:00"))
    sched.add(weekly())
    with store.engine.begin() as conn:
        definition = json.loads(conn.execute(select(store.table.c.definition)).scalar_one())
        definition["target"] = definition.pop("what")
        conn.execute(update(store.table).values(definition=json.dumps(definition)))
    (old,) = store.list()
    assert old.what == "patch.apply" and old.job() == "task patch.apply"
    assert old.targets == "linux"


def test_a_name_is_taken_once(env: Any) -> None:
    sched = make(env, FakeClock("2026-11-18T12:00+00:00"))
    sched.add(weekly())
    with pytest.raises(ScheduleError, match="already exists"):
        sched.add(weekly(cron="0 3 * * *"))


# -- due runs ----------------------------------------------------------------------------------
def test_a_due_run_opens_a_change_ticket_runs_once_and_resolves_it(env: Any) -> None:
    clock = FakeClock("2026-11-18T12:00+00:00")
    jobs = Jobs()
    sched = make(env, clock, jobs)
    sched.add(weekly())
    clock.set("2026-11-22T00:59:00+00:00")
    assert sched.run_due() == [] and jobs.calls == []
    clock.set("2026-11-22T01:00:20+00:00")
    events = sched.run_due()
    assert [(e.what, e.ticket) for e in events] == [("ran", "CHG-20261122T0100Z-weekly-patch")]
    assert sched.run_due() == [], "never twice"
    assert len(jobs.calls) == 1
    store, ledger = env
    ticket = [(r.kind, r.info) for r in ledger.records(ticket="CHG-20261122T0100Z-weekly-patch")]
    assert [k for k, _ in ticket] == [
        "ticket.opened",
        "schedule.run-started",
        "schedule.run-finished",
        "ticket.resolved",
    ]
    assert ticket[0][1]["priority"] == "P3" and "weekly-patch" in ticket[0][1]["source"]
    assert ticket[3][1] == {
        "code": "completed",
        "resolution": "task patch.apply on 2 host(s): 2 fixed",
    }
    s = store.get("weekly-patch")
    assert s.next_run_at == utc("2026-11-29T02:00+01:00")
    assert (s.last_outcome, s.last_ticket, s.lease_owner) == (
        "completed",
        "CHG-20261122T0100Z-weekly-patch",
        None,
    )


def test_a_missed_run_is_run_once_at_start_up_under_run_once(env: Any) -> None:
    clock = FakeClock("2026-11-18T12:00+00:00")
    jobs = Jobs()
    sched = make(env, clock, jobs)
    sched.add(weekly(missed="run-once"))
    clock.set("2026-12-08T09:00+00:00")  # down for three Sundays
    events = sched.run_due()
    assert [e.what for e in events] == ["missed", "ran"]
    assert events[1].detail == "catch-up" and len(jobs.calls) == 1
    assert jobs.calls[0][2] == utc("2026-12-06T02:00+01:00"), "the latest missed occurrence"
    store, ledger = env
    missed = next(ledger.records(kind="schedule.missed"))
    assert missed.info["count"] == 3 and missed.info["action"] == "one catch-up run now"
    assert missed.info["first"] == "2026-11-22T01:00:00.000000Z"
    clock.advance(minutes=1)
    assert sched.run_due() == [] and len(jobs.calls) == 1, "never twice"
    assert store.get("weekly-patch").next_run_at == utc("2026-12-13T02:00+01:00")


def test_a_missed_run_is_recorded_not_run_under_record(env: Any) -> None:
    clock = FakeClock("2026-11-18T12:00+00:00")
    jobs = Jobs()
    sched = make(env, clock, jobs)
    sched.add(weekly(missed="record"))
    clock.set("2026-11-22T03:30+00:00")  # 02:00 Berlin was 2.5 hours ago: past the grace
    events = sched.run_due()
    assert [(e.what, e.detail) for e in events] == [("missed", "1: not run")]
    assert jobs.calls == []
    store, ledger = env
    assert kinds(ledger) == ["schedule.added", "schedule.missed"]
    assert store.get("weekly-patch").next_run_at == utc("2026-11-29T02:00+01:00")
    assert sched.run_due() == []


def test_within_the_grace_a_late_tick_is_on_time(env: Any) -> None:
    clock = FakeClock("2026-11-18T12:00+00:00")
    jobs = Jobs()
    sched = make(env, clock, jobs, grace=timedelta(minutes=5))
    sched.add(weekly(missed="record"))
    clock.set("2026-11-22T01:04:59+00:00")
    assert [e.what for e in sched.run_due()] == ["ran"]


def test_daily_job_runs_once_a_day_across_both_dst_changes(env: Any) -> None:
    for start, days, special in [
        ("2026-10-23T00:00+00:00", 4, ("2026-10-25", "2026-10-25T00:30:00+00:00")),  # back
        ("2026-03-27T00:00+00:00", 4, ("2026-03-29", "2026-03-29T01:00:00+00:00")),  # forward
    ]:
        clock = FakeClock(start)
        jobs = Jobs()
        sched = make(env, clock, jobs)
        name = f"daily-{start[:10]}"
        sched.add(weekly(name, cron="30 2 * * *", missed="record"))
        for _ in range(days * 96):  # a tick every 15 minutes
            clock.advance(minutes=15)
            sched.run_due()
        runs = [c[2] for c in jobs.calls if c[0] == name]
        assert len(runs) == days, runs
        assert len({r.date() for r in runs}) == days
        day, instant = special
        assert utc(instant) in runs, (day, runs)
        _store, ledger = env
        assert not any(
            r.info.get("schedule") == name for r in ledger.records(kind="schedule.missed")
        )


def test_hourly_job_runs_in_both_repeated_hours_when_clocks_go_back(env: Any) -> None:
    clock = FakeClock("2026-10-24T21:50+00:00")  # 23:50 CEST on the 24th
    jobs = Jobs()
    sched = make(env, clock, jobs)
    sched.add(weekly("hourly", cron="0 * * * *"))
    for _ in range(26 * 12):  # a tick every 5 minutes through the 25-hour local day
        clock.advance(minutes=5)
        sched.run_due()
    local_day = [c[2] for c in jobs.calls if c[2].astimezone(FakeZone.BERLIN).day == 25]
    assert len(local_day) == 25


class FakeZone:
    from zoneinfo import ZoneInfo

    BERLIN = ZoneInfo("Europe/Berlin")


# -- overlap and leases ------------------------------------------------------------------------
def test_an_occurrence_due_while_the_previous_run_holds_the_lease_is_recorded_skipped(
    env: Any,
) -> None:
    clock = FakeClock("2026-11-18T12:00:30+00:00")
    jobs = Jobs()
    first = make(env, clock, jobs, owner="host-a:1")
    first.add(weekly("often", cron="* * * * *"))
    other_jobs = Jobs()
    second = make(env, clock, other_jobs, owner="host-b:2")
    seen: list[Any] = []

    def while_running() -> None:  # the next minute comes while the first run is still going
        clock.advance(minutes=1)
        seen.extend(second.run_due())

    jobs.during = while_running
    clock.set("2026-11-18T12:01:10+00:00")
    first.run_due()
    assert len(jobs.calls) == 1 and other_jobs.calls == []
    assert [(e.what, e.detail) for e in seen] == [
        ("skipped", "overlap: the previous run (host-a:1) still holds the schedule")
    ]
    store, ledger = env
    skipped = next(ledger.records(kind="schedule.skipped"))
    assert skipped.info["occurrence"] == "2026-11-18T12:02:00.000000Z"
    assert store.get("often").lease_owner is None, "released after the run"
    refused: list[str] = []

    def run_now_meanwhile() -> None:  # an on-demand run while a scheduled one holds the lease
        try:
            second.run_now("often")
        except ScheduleError as exc:
            refused.append(exc.message)

    jobs.during = run_now_meanwhile
    clock.advance(minutes=5)
    first.run_due()
    assert refused == ["often is running already (host-a:1)"] and other_jobs.calls == []


def test_a_crashed_holders_lease_expires_and_its_occurrence_is_not_rerun(env: Any) -> None:
    clock = FakeClock("2026-11-18T12:00:30+00:00")
    store, _ledger = env
    sched = make(env, clock, owner="host-a:1", lease=timedelta(minutes=2))
    sched.add(weekly("often", cron="*/10 * * * *"))
    clock.set("2026-11-18T12:10:05+00:00")
    s = store.get("often")
    assert s.next_run_at is not None
    # host-a claims 12:10 and dies without releasing
    status, _ = store.claim(
        "often",
        expected_next=s.next_run_at,
        new_next=utc("2026-11-18T12:20:00+00:00"),
        owner="host-a:1",
        now=clock.now(),
        lease=timedelta(minutes=2),
    )
    assert status == "claimed"
    jobs = Jobs()
    survivor = make(env, clock, jobs, owner="host-b:2")
    clock.set("2026-11-18T12:11:00+00:00")
    assert survivor.run_due() == [], "12:10 belongs to host-a: not run twice"
    clock.set("2026-11-18T12:20:05+00:00")
    assert [e.what for e in survivor.run_due()] == ["ran"], "host-a's lease has expired"
    assert [c[2] for c in jobs.calls] == [utc("2026-11-18T12:20:00+00:00")]


def test_a_failing_job_is_recorded_and_its_ticket_resolved(env: Any) -> None:
    clock = FakeClock("2026-11-18T12:00+00:00")

    def refuse(s: Schedule, ticket: str, occurrence: datetime) -> JobResult:
        raise NotFound("the targets 'linux' match no host")

    store, ledger = env
    sched = Scheduler(store, ledger, clock, refuse)
    sched.add(weekly())
    clock.set("2026-11-22T01:00:30+00:00")
    event = sched.run_due()[0]
    assert event.result is not None and event.result.resolution == "refused"
    resolved = next(ledger.records(kind="ticket.resolved"))
    assert resolved.info == {
        "code": "refused",
        "resolution": "the targets 'linux' match no host",
    }
    assert store.get("weekly-patch").lease_owner is None


# -- pause, resume, remove ---------------------------------------------------------------------
def test_pause_resume_and_remove_are_recorded(env: Any) -> None:
    clock = FakeClock("2026-11-18T12:00+00:00")
    jobs = Jobs()
    sched = make(env, clock, jobs)
    sched.add(weekly())
    assert sched.pause("weekly-patch").paused
    clock.set("2026-12-01T12:00+00:00")
    assert sched.run_due() == [] and jobs.calls == []
    resumed = sched.resume("weekly-patch")
    assert not resumed.paused and resumed.next_run_at == utc("2026-12-06T02:00+01:00")
    store, ledger = env
    event = next(ledger.records(kind="schedule.resumed"))
    assert event.info["skipped_while_paused"] == 2
    sched.remove("weekly-patch")
    assert kinds(ledger) == [
        "schedule.added",
        "schedule.paused",
        "schedule.resumed",
        "schedule.removed",
    ]
    with pytest.raises(NotFound, match="unknown schedule 'weekly-patch'"):
        store.get("weekly-patch")


def test_the_ledger_table_stays_append_only(env: Any) -> None:
    store, ledger = env
    make(env, FakeClock("2026-11-18T12:00+00:00")).add(weekly())
    from sqlalchemy import text

    with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
        conn.execute(text("DELETE FROM ledger"))
    assert ledger.verify().ok


def test_change_tickets_are_valid_ticket_ids() -> None:
    from toolkit.desk.tickets import check_ticket_id

    occurrence = utc("2026-11-22T01:00+00:00")
    assert check_ticket_id(change_ticket("a" * 40, occurrence)) == (
        "CHG-20261122T0100Z-" + "a" * 40
    )
    with pytest.raises(ValidationError):
        check_ticket_id("CHG-2026/11")


# -- two real processes ------------------------------------------------------------------------
def wait_ready(start: Path, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(list(start.parent.glob(f"{start.name}.ready.*"))) < count:
        assert time.monotonic() < deadline, "the scheduler processes did not get ready"
        time.sleep(0.01)


def _proc(url: str, clock: str, hold: str, log: Path, start: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.sched_proc", url, clock, str(hold), str(log), str(start)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_scheduler_processes_run_one_occurrence_once(env: Any, tmp_path: Path) -> None:
    store, _ledger = env
    make(env, FakeClock("2026-11-18T12:00:30+00:00")).add(weekly("often", cron="* * * * *"))
    log, start = tmp_path / "runs.log", tmp_path / "go"
    procs = [_proc(store.url, "2026-11-18T12:01:05+00:00", "0.2", log, start) for _ in range(2)]
    wait_ready(start, 2)  # both have imported and opened the store: they tick together
    start.touch()
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert log.read_text() == "ran CHG-20261118T1201Z-often\n"
    assert sorted(out.strip() for out, _ in outputs) == ["", "ran CHG-20261118T1201Z-often on-time"]


def test_the_lease_keeps_a_second_process_from_overlapping(env: Any, tmp_path: Path) -> None:
    store, ledger = env
    make(env, FakeClock("2026-11-18T12:00:30+00:00")).add(weekly("often", cron="* * * * *"))
    log, start, release = tmp_path / "runs.log", tmp_path / "go", tmp_path / "release"
    start.touch()
    # the first holds its lease until the second has come and gone, however slowly it starts
    first = _proc(store.url, "2026-11-18T12:01:05+00:00", f"until:{release}", log, start)
    deadline = time.monotonic() + 30
    while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = _proc(store.url, "2026-11-18T12:02:05+00:00", "0", log, start)
    out2, err2 = second.communicate(timeout=60)
    release.touch()
    out1, err1 = first.communicate(timeout=60)
    assert out1.strip() == "ran CHG-20261118T1201Z-often on-time"
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert log.read_text() == "ran CHG-20261118T1201Z-often\n", "the second never ran"
    assert out2.startswith("skipped  overlap: the previous run"), out2
    skipped = next(ledger.records(kind="schedule.skipped"))
    assert skipped.info["occurrence"] == "2026-11-18T12:02:00.000000Z"


def test_manual_runs_in_the_same_second_each_get_their_own_change_ticket(env: Any) -> None:
    sched = make(env, FakeClock("2026-11-18T12:00:30+00:00"))  # the clock does not move
    sched.add(weekly())
    tickets = [sched.run_now("weekly-patch").ticket for _ in range(3)]
    assert tickets == [
        "CHG-20261118T120030Z-weekly-patch",
        "CHG-20261118T120030Z.2-weekly-patch",
        "CHG-20261118T120030Z.3-weekly-patch",
    ]
    _, ledger = env
    for ticket in tickets:
        assert [r.kind for r in ledger.records(ticket=ticket, kind="ticket.resolved")] == [
            "ticket.resolved"
        ], "each ticket is resolved exactly once"


def test_the_schedule_table_opens_sqlite_as_the_ledger_does(tmp_path: Path) -> None:
    """One SQLite setup (ledger.store.connect): WAL, the URL's busy timeout, BEGIN IMMEDIATE."""
    store = ScheduleStore(f"sqlite:///{tmp_path / 'new' / 'l.db'}?timeout=5")
    try:
        with store.engine.begin() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
            assert conn.connection.dbapi_connection.in_transaction
    finally:
        store.close()

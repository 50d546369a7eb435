"""Schedules: cron-timed jobs (a task, a runbook or a playbook) that run unattended.

Schedules live in the workspace's ledger database, in their own table (`itops_schedules`): the
`ledger` table stays append-only, and every change to a schedule is also a ledger event
(`schedule.added`, `.paused`, `.resumed`, `.removed`, `.run-started`, `.run-finished`, `.missed`,
`.skipped`). Each run opens its own change ticket (CHG-…), records every action under it and
resolves it with the outcome summary.

Guarantees, each tested with a controllable clock:
- **Never twice.** An occurrence is claimed by a compare-and-set on the row's `next_run_at`
  (UPDATE … WHERE next_run_at = the value read): of any number of scheduler processes on one
  database exactly one wins it, and the winner moves `next_run_at` past now in the same
  transaction.
- **No overlap.** A run holds a lease on its schedule's row (owner + expiry, renewed by a
  heartbeat while it runs). An occurrence that comes due while another process still holds the
  lease is recorded as `schedule.skipped` (overlap), not run and not queued. A crashed holder's
  lease simply expires; its claimed occurrence is not run again.
- **Missed runs are never silent.** Occurrences more than `grace` in the past (the scheduler was
  down) are recorded as `schedule.missed`; the schedule's policy decides whether one catch-up run
  happens now (`run-once`) or none (`record`). Never more than one run, whatever was missed.
- **Time zones and DST.** Cron fields are wall-clock times in the schedule's zone, evaluated by
  cronsim, which follows Debian cron: a fixed-time job in the hour clocks skip runs at the jump,
  one in the hour that repeats runs once; interval jobs (`0 * * * *`) run in both repeated hours.
  Instants are stored in UTC.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from toolkit.clock import Clock, iso, parse_iso
from toolkit.errors import ConfigError, NotFound, ToolkitError, ValidationError
from toolkit.ledger import Entry, Ledger

log = logging.getLogger("itops.schedule")

KINDS = ("task", "runbook", "playbook")
MISSED_POLICIES = ("run-once", "record")
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}")
DEFAULT_GRACE = timedelta(minutes=5)
DEFAULT_LEASE = timedelta(minutes=2)
MAX_COUNTED = 10_000  # missed occurrences counted one by one; beyond this, "at least"


class ScheduleError(ToolkitError):
    """A schedule cannot be defined or changed as asked."""


# -- cron ------------------------------------------------------------------------------------
def check_cron(expression: str, timezone: str) -> None:
    """A 5-field cron expression that fires at least once; errors name the bad field."""
    from cronsim import CronSim, CronSimError

    from toolkit.run.maintenance import zone

    tz = zone(timezone, "schedule")
    if len(expression.split()) != 5:
        raise ValidationError(
            f"invalid cron expression {expression!r}: it needs 5 fields",
            hint="minute hour day-of-month month day-of-week, e.g. '0 2 * * SUN'",
        )
    try:
        next(iter(CronSim(expression, datetime(2000, 1, 1, tzinfo=tz))))
    except CronSimError as exc:
        raise ValidationError(
            f"invalid cron expression {expression!r}: {exc}",
            hint="minute hour day-of-month month day-of-week, e.g. '0 2 * * SUN'",
        ) from None
    except StopIteration:
        raise ValidationError(f"cron expression {expression!r} never fires") from None


def occurrences(expression: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """Fire times strictly after `after`, as UTC instants."""
    from zoneinfo import ZoneInfo

    from cronsim import CronSim

    local = after.astimezone(ZoneInfo(timezone))
    for moment in CronSim(expression, local):
        yield moment.astimezone(UTC)


def next_after(expression: str, timezone: str, after: datetime) -> datetime:
    return next(occurrences(expression, timezone, after))


def local_timezone() -> str:
    """The machine's zone name (TZ, /etc/timezone, the /etc/localtime link), else UTC."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    try:
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    from zoneinfo import ZoneInfo

    for name in candidates:
        if name:
            try:
                ZoneInfo(name)
                return name
            except (ValueError, KeyError, OSError):
                continue
    return "UTC"


# -- the definition ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    name: str
    kind: str  # task | runbook | playbook
    what: str  # the task, runbook or playbook it runs (older rows store it as `target`)
    targets: str  # inventory pattern
    cron: str
    timezone: str
    window: str | None = None
    params: Mapping[str, str | list[str]] = field(default_factory=dict)
    missed: str = "run-once"
    category: str | None = None
    priority: str = "P3"
    check_only: bool = False
    created_by: str = ""
    created_at: str = ""
    # state
    paused: bool = False
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    last_outcome: str | None = None
    last_ticket: str | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None

    DEFINITION = (
        "kind",
        "what",
        "targets",
        "cron",
        "timezone",
        "window",
        "params",
        "missed",
        "category",
        "priority",
        "check_only",
        "created_by",
        "created_at",
    )

    def definition(self) -> dict[str, Any]:
        return {
            k: (dict(v) if k == "params" else v)
            for k in self.DEFINITION
            if (v := getattr(self, k)) is not None
        }

    def job(self) -> str:
        return f"{self.kind} {self.what}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **self.definition(),
            "paused": self.paused,
            "next_run_at": iso(self.next_run_at) if self.next_run_at else None,
            "last_run_at": iso(self.last_run_at) if self.last_run_at else None,
            "last_outcome": self.last_outcome,
            "last_ticket": self.last_ticket,
            "running": self.lease_owner,
        }


def validate_definition(s: Schedule) -> None:
    """The checks that need nothing but the schedule itself (the job layer checks the rest)."""
    if not NAME.fullmatch(s.name):
        raise ValidationError(
            f"invalid schedule name {s.name!r}",
            hint="lower-case letters, digits, '.', '_' and '-', at most 40, e.g. weekly-patch",
        )
    if s.kind not in KINDS:
        raise ValidationError(f"unknown job kind {s.kind!r}", hint=", ".join(KINDS))
    if s.missed not in MISSED_POLICIES:
        raise ValidationError(
            f"unknown missed-run policy {s.missed!r}", hint=", ".join(MISSED_POLICIES)
        )
    check_cron(s.cron, s.timezone)


# -- storage ---------------------------------------------------------------------------------
class ScheduleStore:
    """The `itops_schedules` table in the ledger's database (SQLite or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import (
            Boolean,
            Column,
            MetaData,
            String,
            Table,
            Text,
        )

        from toolkit.ledger.store import backend, make_engine

        self.url = url
        self.dialect = backend(url)
        # The ledger's own connections (WAL, busy timeout); on SQLite every transaction takes the
        # write lock up front (BEGIN IMMEDIATE), so two processes claiming one row serialise
        # instead of failing to upgrade a read lock.
        self.engine = make_engine(url, immediate=True)

        metadata = MetaData()
        self.table = Table(
            "itops_schedules",
            metadata,
            Column("name", String(64), primary_key=True),
            Column("definition", Text, nullable=False),
            Column("paused", Boolean, nullable=False, default=False),
            Column("next_run_at", String(32)),
            Column("last_run_at", String(32)),
            Column("last_outcome", String(32)),
            Column("last_ticket", String(64)),
            Column("lease_owner", String(128)),
            Column("lease_until", String(32)),
        )
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    from sqlalchemy import text

                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": 0x17C4ED01})
                metadata.create_all(conn, checkfirst=True)
        except Exception as exc:
            raise ScheduleError(f"cannot open the schedule table at {url}: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()

    def _row(self, row: Any) -> Schedule:
        spec = json.loads(row.definition)
        if "target" in spec:  # written before `target` (beside `targets`) was renamed `what`
            spec["what"] = spec.pop("target")
        return Schedule(
            name=row.name,
            **spec,
            paused=bool(row.paused),
            next_run_at=parse_iso(row.next_run_at) if row.next_run_at else None,
            last_run_at=parse_iso(row.last_run_at) if row.last_run_at else None,
            last_outcome=row.last_outcome,
            last_ticket=row.last_ticket,
            lease_owner=row.lease_owner,
            lease_until=parse_iso(row.lease_until) if row.lease_until else None,
        )

    def list(self) -> list[Schedule]:
        from sqlalchemy import select

        with self.engine.connect() as conn:
            rows = conn.execute(select(self.table).order_by(self.table.c.name)).all()
        return [self._row(r) for r in rows]

    def get(self, name: str) -> Schedule:
        from sqlalchemy import select

        with self.engine.connect() as conn:
            row = conn.execute(select(self.table).where(self.table.c.name == name)).first()
        if row is None:
            raise NotFound.named("schedule", name, [s.name for s in self.list()])
        return self._row(row)

    def add(self, s: Schedule) -> None:
        from sqlalchemy import insert
        from sqlalchemy.exc import IntegrityError

        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(self.table).values(
                        name=s.name,
                        definition=json.dumps(s.definition(), sort_keys=True),
                        paused=s.paused,
                        next_run_at=iso(s.next_run_at) if s.next_run_at else None,
                    )
                )
        except IntegrityError:
            raise ScheduleError(
                f"a schedule named {s.name!r} already exists",
                hint=f"itops schedule show {s.name}; remove it first to redefine it",
            ) from None

    def remove(self, name: str) -> None:
        from sqlalchemy import delete

        with self.engine.begin() as conn:
            conn.execute(delete(self.table).where(self.table.c.name == name))

    def set_paused(self, name: str, paused: bool, next_run_at: datetime | None) -> None:
        from sqlalchemy import update

        values: dict[str, Any] = {"paused": paused}
        if next_run_at is not None:
            values["next_run_at"] = iso(next_run_at)
        with self.engine.begin() as conn:
            conn.execute(update(self.table).where(self.table.c.name == name).values(**values))

    def claim(
        self,
        name: str,
        *,
        expected_next: datetime,
        new_next: datetime,
        owner: str,
        now: datetime,
        lease: timedelta,
    ) -> tuple[str, str | None]:
        """Take the due occurrence(s) and, if free, the lease — one transaction.

        Returns ("taken", None) if another process claimed the occurrence first, ("busy",
        holder) if this process consumed it but another run still holds the lease, or
        ("claimed", None) if this process may run it."""
        from sqlalchemy import update

        t = self.table
        with self.engine.begin() as conn:
            moved = conn.execute(
                update(t)
                .where(
                    t.c.name == name,
                    t.c.next_run_at == iso(expected_next),
                    t.c.paused.is_(False),
                )
                .values(next_run_at=iso(new_next))
            ).rowcount
            if moved != 1:
                return "taken", None
            holder = self._lease(conn, name, owner=owner, now=now, lease=lease)
            return ("claimed", None) if holder is None else ("busy", holder)

    def acquire(self, name: str, *, owner: str, now: datetime, lease: timedelta) -> str | None:
        """Take the lease for an on-demand run; returns the holder's id if it is taken."""
        with self.engine.begin() as conn:
            return self._lease(conn, name, owner=owner, now=now, lease=lease)

    def _lease(
        self, conn: Any, name: str, *, owner: str, now: datetime, lease: timedelta
    ) -> str | None:
        """Take the lease if it is free or has lapsed; else the holder's id."""
        from sqlalchemy import or_, select, update

        t = self.table
        leased = conn.execute(
            update(t)
            .where(t.c.name == name, or_(t.c.lease_owner.is_(None), t.c.lease_until < iso(now)))
            .values(lease_owner=owner, lease_until=iso(now + lease))
        ).rowcount
        if leased == 1:
            return None
        return str(conn.execute(select(t.c.lease_owner).where(t.c.name == name)).scalar())

    def renew(self, name: str, *, owner: str, until: datetime) -> bool:
        from sqlalchemy import update

        t = self.table
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    update(t)
                    .where(t.c.name == name, t.c.lease_owner == owner)
                    .values(lease_until=iso(until))
                ).rowcount
            )

    def release(
        self, name: str, *, owner: str, ran_at: datetime | None, outcome: str, ticket: str | None
    ) -> None:
        from sqlalchemy import update

        t = self.table
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
        if ran_at is not None:
            values.update(last_run_at=iso(ran_at), last_outcome=outcome, last_ticket=ticket)
        with self.engine.begin() as conn:
            conn.execute(
                update(t).where(t.c.name == name, t.c.lease_owner == owner).values(**values)
            )


# -- running ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobResult:
    """What one run of a job came to: the ticket's resolution and its outcome summary."""

    resolution: str  # completed | failed | needs-approval | skipped | refused | error
    summary: str
    exit_code: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)


JobExecutor = Callable[[Schedule, str, datetime], JobResult]


@dataclass(frozen=True)
class TickEvent:
    """One thing a scheduler tick did about one schedule (for the CLI and the tests)."""

    schedule: str
    what: str  # ran | missed | skipped
    occurrence: datetime
    ticket: str | None = None
    result: JobResult | None = None
    detail: str = ""


def change_ticket(name: str, occurrence: datetime, *, manual: bool = False, seq: int = 1) -> str:
    """CHG-20261129T0100Z-weekly-patch: one ticket per schedule and occurrence (UTC); a manual
    run's has seconds, and a second manual run in the same second a sequence number (….2)."""
    stamp = occurrence.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ" if manual else "%Y%m%dT%H%MZ")
    return f"CHG-{stamp}{f'.{seq}' if seq > 1 else ''}-{name}"


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(2).hex()}"


class Scheduler:
    """Runs what is due: claims occurrences, leases schedules, records everything."""

    def __init__(
        self,
        store: ScheduleStore,
        ledger: Ledger,
        clock: Clock,
        execute: JobExecutor,
        *,
        owner: str | None = None,
        grace: timedelta = DEFAULT_GRACE,
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.clock = clock
        self.execute = execute
        self.owner = owner or owner_id()
        self.grace = grace
        self.lease = lease

    # -- definition changes (each also a ledger event) -------------------------------------
    def add(self, s: Schedule) -> Schedule:
        validate_definition(s)
        now = self.clock.now()
        s = replace(
            s,
            created_by=self.ledger.operator,
            created_at=iso(now),
            next_run_at=next_after(s.cron, s.timezone, now),
        )
        self.store.add(s)
        self._event("schedule.added", s, **s.definition(), next_run_at=_iso(s.next_run_at))
        return s

    def remove(self, name: str) -> None:
        s = self.store.get(name)
        self.store.remove(name)
        self._event("schedule.removed", s, **s.definition())

    def pause(self, name: str) -> Schedule:
        s = self.store.get(name)
        if not s.paused:
            self.store.set_paused(name, True, None)
            self._event("schedule.paused", s)
        return self.store.get(name)

    def resume(self, name: str) -> Schedule:
        """Resume from now: occurrences while paused were skipped on purpose (counted)."""
        s = self.store.get(name)
        if s.paused:
            now = self.clock.now()
            skipped = 0
            if s.next_run_at is not None and s.next_run_at <= now:
                skipped = 1 + sum(
                    1 for _ in _until(occurrences(s.cron, s.timezone, s.next_run_at), now)
                )
            nxt = next_after(s.cron, s.timezone, now)
            self.store.set_paused(name, False, nxt)
            self._event("schedule.resumed", s, skipped_while_paused=skipped, next_run_at=_iso(nxt))
        return self.store.get(name)

    # -- ticks ------------------------------------------------------------------------------
    def run_due(self) -> list[TickEvent]:
        """Run every schedule whose time has come (once), record missed and overlapping ones."""
        events: list[TickEvent] = []
        for s in self.store.list():
            now = self.clock.now()
            if s.paused or s.next_run_at is None or s.next_run_at > now:
                continue
            events.extend(self._due(s, now))
        return events

    def _due(self, s: Schedule, now: datetime) -> list[TickEvent]:
        assert s.next_run_at is not None
        due = [s.next_run_at, *_until(occurrences(s.cron, s.timezone, s.next_run_at), now)]
        latest = due[-1]
        on_time = now - latest <= self.grace
        missed = due[:-1] if on_time else due
        status, holder = self.store.claim(
            s.name,
            expected_next=s.next_run_at,
            new_next=next_after(s.cron, s.timezone, now),
            owner=self.owner,
            now=now,
            lease=self.lease,
        )
        if status == "taken":
            return []  # another scheduler process claimed these occurrences
        events: list[TickEvent] = []
        if missed:
            run_once = s.missed == "run-once" and status == "claimed"
            action = "one catch-up run now" if run_once and not on_time else "not run"
            if on_time:
                action = "covered by the on-time run" if status == "claimed" else "not run"
            self._event(
                "schedule.missed",
                s,
                count=len(missed),
                at_least=len(missed) >= MAX_COUNTED,
                first=iso(missed[0]),
                last=iso(missed[-1]),
                occurrences=[iso(m) for m in missed[:50]],
                policy=s.missed,
                action=action,
            )
            events.append(
                TickEvent(s.name, "missed", missed[-1], detail=f"{len(missed)}: {action}")
            )
        if status == "busy":
            reason = f"overlap: the previous run ({holder}) still holds the schedule"
            self._event("schedule.skipped", s, occurrence=iso(latest), reason=reason)
            events.append(TickEvent(s.name, "skipped", latest, detail=reason))
            return events
        ran_at: datetime | None = None
        ticket = result = None
        try:
            if on_time or s.missed == "run-once":
                trigger = "on-time" if on_time else "catch-up"
                ran_at = self.clock.now()
                ticket = change_ticket(s.name, latest)
                result = self._run(s, ticket, latest, trigger)
                events.append(TickEvent(s.name, "ran", latest, ticket, result, trigger))
        finally:
            self.store.release(
                s.name,
                owner=self.owner,
                ran_at=ran_at,
                outcome=result.resolution if result else "error",
                ticket=ticket,
            )
        return events

    def run_now(self, name: str) -> TickEvent:
        """An on-demand run (`itops schedule run NAME`): its own ticket, the same lease."""
        s = self.store.get(name)
        now = self.clock.now()
        holder = self.store.acquire(name, owner=self.owner, now=now, lease=self.lease)
        if holder is not None:
            raise ScheduleError(
                f"{name} is running already ({holder})", hint="wait for it: itops schedule show"
            )
        ticket = change_ticket(s.name, now, manual=True)
        seq = 1
        while any(self.ledger.records(ticket=ticket, kind="ticket.opened", limit=1)):
            seq += 1  # never run under a ticket an earlier run opened (and resolved)
            ticket = change_ticket(s.name, now, manual=True, seq=seq)
        result = None
        try:
            result = self._run(s, ticket, now, "manual")
        finally:
            self.store.release(
                name,
                owner=self.owner,
                ran_at=now,
                outcome=result.resolution if result else "error",
                ticket=ticket,
            )
        return TickEvent(name, "ran", now, ticket, result, "manual")

    def _run(self, s: Schedule, ticket: str, occurrence: datetime, trigger: str) -> JobResult:
        from toolkit.desk.tickets import CATEGORIES, ensure

        ensure(
            self.ledger,
            ticket,
            category=s.category if s.category in CATEGORIES else "other",
            priority=s.priority,
            summary=f"scheduled {s.job()} on {s.targets} ({s.name}, {trigger})",
            source=f"itops schedule {s.name}",
        )
        self.ledger.append(
            Entry(
                "schedule.run-started",
                ticket=ticket,
                task=_task(s),
                data={
                    "schedule": s.name,
                    "occurrence": iso(occurrence),
                    "trigger": trigger,
                    "owner": self.owner,
                },
            )
        )
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(s.name, stop), name="itops-lease", daemon=True
        )
        beat.start()
        try:
            result = self.execute(s, ticket, occurrence)
        except ToolkitError as exc:
            result = JobResult("refused", exc.message, 2)
        except Exception as exc:  # a bug in a job is that run's failure; the scheduler goes on
            log.exception("schedule %s raised", s.name)
            result = JobResult("error", f"internal error: {type(exc).__name__}: {exc}", 1)
        finally:
            stop.set()
            beat.join()
        self.ledger.append(
            Entry(
                "schedule.run-finished",
                ticket=ticket,
                task=_task(s),
                outcome=result.resolution,
                data={
                    "schedule": s.name,
                    "occurrence": iso(occurrence),
                    "exit_code": result.exit_code,
                    "counts": dict(result.counts),
                    "summary": result.summary,
                },
            )
        )
        self.ledger.append(
            Entry(
                "ticket.resolved",
                ticket=ticket,
                # the ticket model's fields: `code` says how it ended, `resolution` what was done
                data={"code": result.resolution, "resolution": result.summary},
            )
        )
        return result

    def _heartbeat(self, name: str, stop: threading.Event) -> None:
        period = max(self.lease.total_seconds() / 3, 0.05)
        while not stop.wait(period):
            try:
                if not self.store.renew(
                    name, owner=self.owner, until=self.clock.now() + self.lease
                ):
                    log.warning("lost the lease on schedule %s", name)
            except Exception:
                log.warning("renewing the lease on %s failed", name, exc_info=True)

    def serve(self, stop: threading.Event, *, interval: float = 30.0) -> None:
        """The daemon loop: tick, sleep until the next due time (at most `interval`), repeat.

        `stop` (set by SIGTERM) ends the loop after the job that is running, if any."""
        self.ledger.append(Entry("scheduler.started", data={"owner": self.owner}))
        try:
            while not stop.is_set():
                self.run_due()
                stop.wait(self._sleep(interval))
        finally:
            self.ledger.append(Entry("scheduler.stopped", data={"owner": self.owner}))

    def _sleep(self, interval: float) -> float:
        upcoming = [s.next_run_at for s in self.store.list() if s.next_run_at and not s.paused]
        if not upcoming:
            return interval
        seconds = (min(upcoming) - self.clock.now()).total_seconds()
        return max(0.5, min(interval, seconds + 0.5))

    def _event(self, event: str, s: Schedule, **data: Any) -> None:
        self.ledger.append(Entry(event, task=_task(s), data={"schedule": s.name, **data}))


def _task(s: Schedule) -> str:
    return s.what if s.kind == "task" else f"{s.kind}:{s.what}"


def _iso(at: datetime | None) -> str | None:
    return iso(at) if at else None


def _until(times: Iterator[datetime], end: datetime) -> Iterator[datetime]:
    for count, moment in enumerate(times):
        if moment > end or count >= MAX_COUNTED:
            return
        yield moment


def settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """[scheduler] in itops.toml: timezone, grace, lease, interval."""
    from toolkit.clock import parse_duration

    section = config.get("scheduler", {})
    if not isinstance(section, Mapping):
        raise ConfigError("[scheduler] must be a table")
    return {
        "timezone": str(section.get("timezone") or local_timezone()),
        "grace": parse_duration(section.get("grace", "5m"), "[scheduler] grace"),
        "lease": parse_duration(section.get("lease", "2m"), "[scheduler] lease"),
        "interval": float(section.get("interval", 30)),
    }

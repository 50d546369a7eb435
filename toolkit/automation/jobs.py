"""What a schedule runs: a catalog task, a runbook or a playbook, under the run's change ticket.

Each run reloads the inventory and the catalog (a scheduler runs for weeks), selects the targets,
and goes through the same runner, policy and ledger as `itops fix` (or ansible-runner for a
playbook). `check()` refuses a definition that cannot run: unknown task, runbook or playbook, bad
parameters, an unknown window, targets that match nothing.

After each run the service desk's outbox is delivered (`deliver_pending`): the notes runs queued
for desk tickets — a scheduled runbook's, or an interactive run's left pending while the desk was
down — reach the desk without an operator's `itops itsm deliver`. The backoff of a note that
failed before is honoured; a desk that is down or refuses never changes the job's result.
"""

from __future__ import annotations

import importlib
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from toolkit.automation.schedule import JobResult, Schedule
from toolkit.errors import ToolkitError, ValidationError
from toolkit.inventory import Host, Inventory
from toolkit.run.runner import RunReport

if TYPE_CHECKING:
    from toolkit.app import App

RUNBOOK_ENGINE = "toolkit.automation.runbooks"
log = logging.getLogger("itops.schedule")


class EngineMissing(ToolkitError):
    """The runbook engine is not part of this build."""


def runbook_engine() -> Any:
    """The runbook engine module (toolkit/automation/runbooks.py), called by name; refused if absent."""
    try:
        return importlib.import_module(RUNBOOK_ENGINE)
    except ModuleNotFoundError as exc:
        if exc.name != RUNBOOK_ENGINE:
            raise
        raise EngineMissing(
            "runbooks are not available in this build (no toolkit/automation/runbooks.py)",
            hint="schedule the runbook's tasks or a playbook instead",
        ) from None


def select(app: App, pattern: str) -> list[Host]:
    """The hosts a schedule targets, from a freshly loaded inventory; nothing matched is an error."""
    return Inventory.load(app.workspace.inventory_sources).select(pattern)


def check(app: App, s: Schedule) -> None:
    """Refuse a schedule that could not run (before it is stored)."""
    from toolkit.run.maintenance import get_window

    hosts = select(app, s.targets)
    if s.window is not None:
        window = get_window(app.policy_settings.windows, s.window)
        if first_in_window(s, window, app.clock.now()) is None:
            raise ValidationError(
                f"schedule {s.name} would never run: none of the times of cron {s.cron!r} "
                f"({s.timezone}) in the next year falls inside window {s.window} "
                f"({window.describe(app.clock.now())})",
                hint="pick cron times inside the window, or another window",
            )
    if s.kind == "task":
        entry = app.catalog.get(s.what)
        entry.validate(dict(s.params), {h.platform for h in hosts})
        from toolkit.run.maintenance import check_hosts

        check_hosts(hosts, app.policy_settings.windows)
    elif s.kind == "playbook":
        from toolkit.automation.playbooks import find_playbook, parse_extra_vars, refuse_site_hosts

        refuse_site_hosts(find_playbook(app.workspace, s.what).name, hosts)
        parse_extra_vars(_as_list(s.params))
    else:
        engine = runbook_engine()
        engine.load(app.workspace, s.what)


def first_in_window(s: Schedule, window: Any, now: datetime, *, days: int = 366) -> Any:
    """The first time of the schedule's cron in the next `days` days that falls inside the
    window, or None (at most 50,000 times are looked at: an every-minute cron meets any window
    that opens within a month)."""
    from toolkit.automation.schedule import occurrences

    end = now + timedelta(days=days)
    for n, moment in enumerate(occurrences(s.cron, s.timezone, now)):
        if moment > end or n >= 50_000:
            return None
        if window.is_open(moment):
            return moment
    return None


def _as_list(params: Any) -> list[str]:
    out = []
    for name, value in dict(params).items():
        for v in value if isinstance(value, list) else [value]:
            out.append(f"{name}={v}")
    return out


def summarize(what: str, report: RunReport) -> JobResult:
    counts = Counter(str(r.outcome) for r in report.results)
    code = report.exit_code
    resolution = {0: "completed", 4: "completed", 5: "needs-approval", 6: "skipped"}.get(
        code, "failed"
    )
    text = ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "no hosts"
    return JobResult(resolution, f"{what} on {len(report.results)} host(s): {text}", code, counts)


class JobRunner:
    """The scheduler's executor: runs a schedule's job under its change ticket."""

    def __init__(self, app: App, *, forks: int | None = None) -> None:
        self.app = app
        self.forks = forks

    def __call__(self, s: Schedule, ticket: str, occurrence: datetime) -> JobResult:
        try:
            hosts = select(self.app, s.targets)
            if s.kind == "task":
                return self._task(s, hosts, ticket)
            if s.kind == "playbook":
                return self._playbook(s, hosts, ticket)
            return self._runbook(s, hosts, ticket)
        finally:
            deliver_pending(self.app)

    def _task(self, s: Schedule, hosts: Sequence[Host], ticket: str) -> JobResult:
        from toolkit.remediation.catalog import Catalog
        from toolkit.run.service import RunRequest, RunService

        app = self.app
        # Loaded afresh: the scheduler runs for days, and a task file may have been edited.
        entry = Catalog.load(
            app.workspace.task_folders, overrides=app.workspace.task_overrides
        ).get(s.what)
        request = RunRequest(
            entry,
            hosts,
            dict(s.params),
            ticket=ticket,
            check_only=s.check_only,
            forks=self.forks,
            job_window=s.window,
            schedule=s.name,
        )
        with RunService(app) as service:  # hosts with a site: on their sites' workers
            report = service.run(request).report
        return summarize(f"task {entry.name}", report)

    def _playbook(self, s: Schedule, hosts: Sequence[Host], ticket: str) -> JobResult:
        from toolkit.automation.playbooks import parse_extra_vars, run_playbook

        # The run policy (the schedule's own window, the hosts', approvals bound to the
        # schedule) is run_playbook's, as for an ad-hoc run.
        report = run_playbook(
            self.app,
            s.what,
            hosts,
            ticket=ticket,
            check_only=s.check_only,
            extra_vars=parse_extra_vars(_as_list(s.params)),
            job_window=s.window,
            schedule=s.name,
        )
        return summarize(f"playbook {s.what}", report)

    def _runbook(self, s: Schedule, hosts: Sequence[Host], ticket: str) -> JobResult:
        engine = runbook_engine()
        if not hasattr(engine, "run"):
            raise ValidationError("the runbook engine has no run() entry point")
        report = engine.run(
            self.app, s.what, hosts, dict(s.params), ticket=ticket, check_only=s.check_only
        )
        if isinstance(report, RunReport):
            return summarize(f"runbook {s.what}", report)
        code = getattr(report, "exit_code", None)
        if isinstance(code, int):  # a RunbookReport: escalated hosts fail the job
            resolution = {0: "completed", 4: "completed", 5: "needs-approval", 6: "skipped"}.get(
                code, "failed"
            )
            counts = Counter(str(r.outcome) for r in getattr(report, "results", ()))
            return JobResult(resolution, f"runbook {s.what}: {report.describe()}", code, counts)
        return JobResult("completed", f"runbook {s.what}: {report}")


def deliver_pending(app: App) -> list[Any]:
    """Deliver the desk notes still pending (the outbox's backoff honoured); what was tried.
    Never raises: a desk that is down, refuses, or is misconfigured is logged, and the notes
    stay pending for the next run or `itops itsm deliver`."""
    if "itsm" not in app.workspace.config:
        return []
    try:
        from toolkit.itsm import ItsmSettings, open_desk
        from toolkit.itsm.outbox import deliver, pending

        settings = ItsmSettings.of(app.workspace)
        if not settings.configured or not pending(app.ledger):
            return []
        desk = open_desk(settings, app.credentials)
        try:
            done = deliver(
                app.ledger,
                desk,
                lock=app.workspace.state_dir / "itsm-outbox.lock",
                max_attempts=settings.max_attempts,
                honour_backoff=True,
            )
        finally:
            desk.close()
    except Exception as exc:  # (a ToolkitError or a bug: the job's result stands either way)
        log.warning("desk notes not delivered after the scheduled run: %s", exc)
        return []
    for d in done:
        level = logging.INFO if d.result in ("delivered", "already-there") else logging.WARNING
        log.log(level, "%s: note %s %s %s", d.note.ticket, d.note.key, d.result, d.detail)
    return done

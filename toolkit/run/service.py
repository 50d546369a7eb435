"""The one path that runs a remediation under the run policy.

`itops fix`, `itops backup run`, runbooks (each step) and scheduled jobs all call `RunService`:
it applies the workspace's defaults (forks), opens a new ticket when asked, takes the run
policy's decision per host (maintenance windows, approvals, break-glass), and runs the task with
the runner over one set of connections — or, for hosts with a site, on the site's Celery worker
(`run` routes them; toolkit.workers.dispatch), which executes with this same service.

    with RunService(app, observers=[progress]) as service:
        ran = service.run(RunRequest(task, hosts, params, ticket="INC-1042"))
        ran.report.exit_code

A runbook runs several requests through one service: each step gets its own policy decision and
its own runner, while the connections' event loop and host keys are loaded once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from toolkit.run.runner import Runner, RunOptions, RunReport

if TYPE_CHECKING:
    from toolkit.app import App
    from toolkit.inventory import Host
    from toolkit.itsm.mirror import Lookup
    from toolkit.itsm.outbox import Note
    from toolkit.remediation.catalog import Task
    from toolkit.run.events import RunObserver
    from toolkit.run.policy import RunPolicy
    from toolkit.run.writeback import DeskWriteBack
    from toolkit.transports import Connector

DEFAULT_FORKS = 50


@dataclass(frozen=True)
class NewTicket:
    """Open the run's ticket if it is new (what `itops fix --ticket NEW-ID` does)."""

    category: str
    priority: str | None = None
    source: str = "itops"
    kind: str | None = None  # incident or request (default: incident)


@dataclass(frozen=True)
class RunRequest:
    """One task over some hosts: everything a caller decides; the service supplies the rest."""

    task: Task
    hosts: Sequence[Host]
    params: Mapping[str, Any]
    ticket: str | None = None
    check_only: bool = False
    forks: int | None = None  # default: [run] forks
    serial: int | None = None
    max_fail_percent: float | None = None
    command_timeout: float | None = None
    open_ticket: NewTicket | None = None
    break_glass: str | None = None  # the reason, when --break-glass
    approval_id: str | None = None
    job_window: str | None = None  # a schedule's own window
    schedule: str | None = None  # approvals bound to a schedule instead of one ticket
    tags: Mapping[str, Any] = field(default_factory=dict)  # recorded with every action
    not_run: str | None = None  # every host only recorded as skipped, for this reason


def check_governance(
    break_glass: bool, reason: str | None, approval: str | None, check_only: bool
) -> None:
    """The run policy's overrides (--break-glass, --reason, --approval) refused when they make
    no sense, before anything is opened (exit 2)."""
    from toolkit.errors import ValidationError

    if break_glass and not (reason and reason.strip()):
        raise ValidationError("--break-glass needs --reason TEXT saying why")
    if reason and not break_glass:
        raise ValidationError("--reason goes with --break-glass")
    if (break_glass or approval) and check_only:
        raise ValidationError("--check changes nothing: it needs no --break-glass or --approval")


def refuse_desk_overrides(
    app: App, ticket: str, *, category: str | None, priority: str | None
) -> None:
    """--priority/--category open a local ticket; a desk's ticket has its own (the policy's
    break-glass and privileged-reset rules read them): refused rather than ignored (exit 2)."""
    if not (category or priority) or "itsm" not in app.workspace.config:
        return
    from toolkit.errors import ValidationError
    from toolkit.itsm import ItsmSettings

    settings = ItsmSettings.of(app.workspace)
    if settings.owns(ticket):
        given = "--priority" if priority else "--category"
        raise ValidationError(
            f"{given} is for a new local ticket: {ticket} is {str(settings.system).upper()}'s, "
            "and its priority and queue there decide",
            hint=f"change them in {str(settings.system).upper()}, then run again",
        )


def desk_system(app: App, ticket: str | None) -> str | None:
    """The desk system if `ticket` is the configured desk's id (RT-123 with [itsm] rt)."""
    if not ticket or "itsm" not in app.workspace.config:
        return None
    from toolkit.itsm import ItsmSettings

    settings = ItsmSettings.of(app.workspace)
    return settings.system if settings.owns(ticket) else None


def start_desk_lookup(app: App, ticket: str | None) -> Lookup | None:
    """For a desk's ticket: its look-up started now, in a thread (toolkit.itsm.mirror.Lookup),
    so the desk answers while the caller loads the inventory and the task and the run service
    prepares its transports; `RunService(desk_lookup=…)` waits for it before its policy decision
    and before anything is recorded. None for any other ticket."""
    if desk_system(app, ticket) is None:
        return None
    from toolkit.itsm import ItsmSettings
    from toolkit.itsm.mirror import Lookup

    return Lookup(ItsmSettings.of(app.workspace), app.credentials, str(ticket))


def plan(
    app: App,
    task: str,
    targets: str,
    params: Mapping[str, Any],
    *,
    ticket: str | None = None,
    category: str | None = None,
    priority: str | None = None,
    kind: str | None = None,
    check_only: bool = False,
    break_glass: str | None = None,
    approval_id: str | None = None,
    source: str | None = None,
    **options: Any,
) -> RunRequest:
    """A request from what a user typed: the task and hosts looked up, every value checked
    before anything is opened, recorded or connected (`options`: RunRequest's other fields)."""
    from toolkit.desk.tickets import check_ticket_id
    from toolkit.run.runner import prepare_hosts

    entry = app.catalog.get(task)
    if ticket is not None:
        check_ticket_id(ticket)
        refuse_desk_overrides(app, ticket, category=category, priority=priority)
    hosts = app.inventory.select(targets)
    # Bad values are refused by the rules of the implementations that will run (a Windows
    # printer name may hold spaces that a CUPS queue name may not), and host-specific input
    # (a template's variables) too, before the ticket is touched.
    prepare_hosts(entry, entry.validate(params, {h.platform for h in hosts}), hosts)
    check_governance(break_glass is not None, break_glass, approval_id, check_only)
    return RunRequest(
        entry,
        hosts,
        params,
        ticket=ticket,
        check_only=check_only,
        open_ticket=NewTicket(
            category or entry.category,
            priority,
            source or f"itops fix {entry.name}",
            kind or entry.kind,  # the task's: a password reset opens a request
        ),
        break_glass=break_glass,
        approval_id=approval_id,
        **options,
    )


@dataclass(frozen=True)
class Ran:
    report: RunReport
    policy: RunPolicy | None  # the policy decision (its approval request id, if one was made)


class RunService:
    """Runs remediations for one caller over one set of connections (see the module docstring)."""

    def __init__(
        self,
        app: App,
        *,
        connect_timeout: float | None = None,
        command_timeout: float | None = None,
        observers: Sequence[RunObserver] = (),
        connector: Connector | None = None,
        write_back: bool = True,
        resolve: Callable[[RunReport], tuple[bool, str]] | None = None,
        desk_lookup: Lookup | None = None,
    ) -> None:
        """`observers`: see every run's events (toolkit.run.events: the CLI's progress bar);
        `connector`: where hosts are reached (default: the transports, opened on first use,
        closed with the service; a given one is the caller's to close); `desk_lookup`: a desk
        ticket's look-up the caller started early (`start_desk_lookup`)."""
        self.app = app
        self.observers = tuple(observers)
        self._timeouts = (connect_timeout, command_timeout)
        self._connector = connector
        self._owned = connector is None
        self.write_back = write_back  # a runbook writes one note for all its steps instead
        # --resolve under a desk ticket: decided when the run is done, folded into its note
        self.resolve = resolve
        self.resolution: tuple[bool, str] | None = None
        self.desk_notes: list[Note] = []  # queued for the desk by this service's runs
        self.desk_warnings: list[str] = []
        self._looked_up: set[str] = set()
        self._lookups = {desk_lookup.ticket: desk_lookup} if desk_lookup is not None else {}
        self._runners: set[Runner] = set()
        self._interrupted = False
        self._lock = threading.Lock()

    def interrupt(self) -> None:
        """Stop this service's runs from another thread (a worker's job revoked by Ctrl-C on
        the controller): no host starts, commands in flight stop on their hosts, every started
        host writes its finish record (Runner.interrupt)."""
        with self._lock:
            self._interrupted = True
            runners = list(self._runners)
        for runner in runners:
            runner.interrupt()

    def __enter__(self) -> RunService:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def options(self, request: RunRequest) -> RunOptions:
        forks = request.forks or int(self.app.workspace.run_setting("forks", DEFAULT_FORKS))
        return RunOptions(
            check_only=request.check_only,
            forks=forks,
            serial=request.serial,
            max_fail_percent=request.max_fail_percent,
            command_timeout=request.command_timeout or self._timeouts[1],
            tags=request.tags,
            not_run=request.not_run,
        )

    def run(self, request: RunRequest) -> Ran:
        """Open the ticket if asked, decide the policy, run: the report, and the policy used.

        Hosts with a site (inventory variable `site`) run on their sites' workers: the request
        is admitted once here, and the hosts without a site run here meanwhile
        (toolkit.workers.dispatch; Celery is imported only then). Every caller — `itops fix`,
        `itops backup run`, each runbook step, scheduled tasks — goes through this one switch."""
        from toolkit.workers import has_sites

        if not has_sites(request.hosts):
            return self.execute(request, self.admit(request))
        from toolkit.workers.dispatch import run_distributed

        ran = run_distributed(self, request, connect_timeout=self._timeouts[0])
        self.write_note(request, ran)
        return ran

    def preflight(self, hosts: Sequence[Host]) -> None:
        """What `run` would refuse before anything, checked for a caller that records before
        its first run (a runbook's begin): hosts with a site need the shared ledger and a
        live worker for each site ("no worker for site X")."""
        from toolkit.workers import has_sites

        if has_sites(hosts):
            from toolkit.workers.dispatch import require_workers

            require_workers(self.app, hosts)

    def admit(self, request: RunRequest) -> RunPolicy | None:
        """The run-level work before any host: the ticket opened (or the desk's looked up) and
        the run policy prepared (windows, break-glass, approvals: recorded once per run). A
        distributed run admits once on the controller; its workers only `execute`."""
        app = self.app
        changes = bool(request.ticket) and not request.check_only
        desk = self.desk_system(request.ticket)
        if desk is not None:
            self._prepare_transports(request)  # while the desk answers
            self.look_up(str(request.ticket))
        elif changes and request.open_ticket is not None:
            from toolkit.desk.tickets import ensure

            ensure(
                app.ledger,
                str(request.ticket),
                category=request.open_ticket.category,
                priority=request.open_ticket.priority,
                kind=request.open_ticket.kind,
                source=request.open_ticket.source,
            )
        policy = None
        if changes:
            from toolkit.desk.tickets import ticket_priority
            from toolkit.run.policy import prepare

            # The task's own run-level rules first: an approval is never asked for a run that
            # would be refused anyway (a privileged reset on a P3 ticket).
            priority = ticket_priority(app.ledger, str(request.ticket))
            platforms = {h.platform for h in request.hosts}
            for spec, values in request.task.validate(request.params, platforms).items():
                spec.cls.admit(values, priority)

            policy = prepare(
                app.ledger,
                app.policy_settings,
                clock=app.clock,
                task=request.task,
                hosts=request.hosts,
                params=request.params,
                ticket=str(request.ticket),
                break_glass=request.break_glass,
                approval_id=request.approval_id,
                job_window=request.job_window,
                schedule=request.schedule,
                identity=app.identity,
            )
        return policy

    def execute(
        self, request: RunRequest, policy: RunPolicy | None, *, write_back: bool = True
    ) -> Ran:
        """Run an admitted request under `policy` (see `admit`). `write_back=False`: no desk
        note for this part (a distributed run writes one for all its hosts, `write_note`)."""
        app = self.app
        observers = list(self.observers)
        writeback = self._writeback(request, policy) if write_back else None
        if writeback is not None:
            observers.append(writeback)
        runner = Runner(
            ledger=app.ledger,
            connector=self.connector,
            credentials=app.credentials,
            observers=observers,
            state_dir=app.workspace.state_dir,
            policy=policy,
        )
        with self._lock:
            self._runners.add(runner)
            if self._interrupted:
                runner.interrupt()
        try:
            report = runner.run(
                request.task,
                request.hosts,
                request.params,
                ticket=request.ticket,
                options=self.options(request),
            )
        finally:
            with self._lock:
                self._runners.discard(runner)
        if writeback is not None:
            self._written(writeback)
        if request.check_only:
            report = self._window_notes(request, report)
        return Ran(report, policy)

    def write_note(self, request: RunRequest, ran: Ran) -> None:
        """The run's one desk note from its whole report — the hosts its sites' workers ran
        included (they write none: a worker executes with write-back off) — queued in the
        ledger's outbox as a local run's is at run_done."""
        writeback = self._writeback(request, ran.policy)
        if writeback is not None:
            writeback.run_done(ran.report)
            self._written(writeback)

    def _writeback(self, request: RunRequest, policy: RunPolicy | None) -> DeskWriteBack | None:
        """The desk note's writer for a run under the configured desk's ticket (None: no desk,
        or write-back off)."""
        desk = self.desk_system(request.ticket)
        if desk is None or not self.write_back:
            return None
        from toolkit.run.writeback import DeskWriteBack

        return DeskWriteBack(
            self.app.ledger,
            ticket=str(request.ticket),
            system=desk,
            mask=self.app.redactor.mask,
            policy=policy,
            resolve=self.resolve,
        )

    def _written(self, writeback: DeskWriteBack) -> None:
        """What a finished run's writer queued (and resolved), kept for the command to report."""
        self.desk_notes.extend(writeback.queued)
        self.resolution = writeback.resolution

    def desk_system(self, ticket: str | None) -> str | None:
        """The desk system if `ticket` is the configured desk's id (RT-123 with [itsm] rt)."""
        return desk_system(self.app, ticket)

    def _prepare_transports(self, request: RunRequest) -> None:
        """A desk look-up under way: meanwhile the run's transports are made ready (their
        modules imported, known hosts loaded), which reaches no host. A transport that cannot
        be made ready is left for the run to report, host by host, as it would."""
        from toolkit.errors import ToolkitError

        pending = self._lookups.get(str(request.ticket))
        if pending is None or pending.done:
            return
        for kind in sorted({h.transport for h in request.hosts}):
            try:
                self.connector.factory(kind)
            except ToolkitError:
                continue

    def look_up(self, ticket: str) -> None:
        """Before anything runs: the desk's ticket looked up (unknown, closed: refused) and
        mirrored in the ledger, once per service (a runbook's steps share it)."""
        if ticket in self._looked_up:
            return
        from toolkit.desk.service import policy_for
        from toolkit.itsm import ItsmSettings
        from toolkit.itsm.mirror import lookup_and_mirror

        app = self.app
        looked = lookup_and_mirror(
            ItsmSettings.of(app.workspace),
            app.credentials,
            app.ledger,
            ticket,
            policy_for(app.workspace),
            started=self._lookups.pop(ticket, None),
        )
        if looked.warning:
            self.desk_warnings.append(looked.warning)
        self._looked_up.add(ticket)

    def _window_notes(self, request: RunRequest, report: RunReport) -> RunReport:
        """--check: a host that would be fixed but that the maintenance windows keep off now
        says so — the run policy's own verdict (`RunPolicy.held`), asked read-only: a check
        run records no policy and needs no approval."""
        import dataclasses

        from toolkit.run.maintenance import get_window
        from toolkit.run.policy import RunPolicy
        from toolkit.run.results import Outcome

        settings = self.app.policy_settings
        job = get_window(settings.windows, request.job_window) if request.job_window else None
        preview = RunPolicy(settings, self.app.clock, job_window=job)
        now = self.app.clock.now()
        hosts = {h.name: h for h in request.hosts}
        results = []
        for r in report.results:
            spec = request.task.implementation(hosts[r.host].platform)
            if r.outcome == Outcome.WOULD_FIX and spec is not None:
                hold = preview.held(spec, hosts[r.host], now=now)
                if hold is not None:
                    r = dataclasses.replace(
                        r, message=f"{r.message} (a fix now would be skipped: {hold.reason})"
                    )
            results.append(r)
        return dataclasses.replace(report, results=tuple(results))

    @property
    def connector(self) -> Connector:
        if self._connector is None:
            from toolkit.transports import Connector

            self._connector = Connector(
                self.app.connect_options(*self._timeouts), self.app.credentials
            )
        return self._connector

    def close(self) -> None:
        if self._connector is not None and self._owned:
            self._connector.close()
            self._connector = None

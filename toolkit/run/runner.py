"""Fan a remediation out over hosts: check → apply → verify per host, ledger first, one connection each.

Per host, at most `--forks` hosts at once:

    ledger.begin  →  connect (one Transport)  →  check  →  apply  →  verify  →  ledger.finish

Hosts run in a thread pool; a batch whose hosts all use SSH runs as greenlets on the SSH event
loop instead (same steps, same order, no thread per host: see transports.ssh).

The begin record is committed before anything touches the host, so a crash or `kill -9` leaves a
visible open action. One host's failure is that host's result: every exception becomes an outcome
and the other hosts go on. Check and verify get a context whose `change()` refuses, and a check-only
run never calls apply, so `--check` cannot modify a host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from toolkit.desk.tickets import ticket_priority
from toolkit.errors import (
    AuthFailed,
    CertificateError,
    ChangeRefused,
    CommandFailed,
    CommandInterrupted,
    CommandTimeout,
    HostKeyError,
    TicketRequired,
    ToolkitError,
    TransportError,
    Unreachable,
)
from toolkit.inventory import Host
from toolkit.ledger import Ledger
from toolkit.remediation.catalog import Finding, PastAction, Remediation, RunInfo, Task, TaskSpec
from toolkit.remediation.quoting import Command, become, config_display, mapping_display
from toolkit.secrets.credentials import CredentialStore, Secret
from toolkit.secrets.handover import Handover
from toolkit.transports import CommandResult, Connector, Transport
from toolkit.transports.base import ConfigTransport
from toolkit.transports.green import offload

log = logging.getLogger("itops.runner")


class Outcome(enum.StrEnum):
    ALREADY_OK = "already-ok"  # check found nothing to fix
    FIXED = "fixed"  # apply ran and verify passed
    WOULD_FIX = "would-fix"  # check-only run: the problem is there
    FAILED = "failed"  # apply or verify failed, or a step raised
    UNREACHABLE = "unreachable"  # could not connect or authenticate, or the host key was refused
    SKIPPED = "skipped"  # not this platform, outside its window, or not run (max-fail-percent)
    NEEDS_APPROVAL = "needs-approval"


# Exit codes, documented in `itops fix --help`; the first that applies wins.
EXIT_CODES: tuple[tuple[Outcome, int], ...] = (
    (Outcome.FAILED, 1),
    (Outcome.UNREACHABLE, 3),
    (Outcome.NEEDS_APPROVAL, 5),
    (Outcome.WOULD_FIX, 4),
)


class Interrupted(ToolkitError):
    """The run was interrupted (Ctrl-C) before this host's next command."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C ended a run. It carries what the engineer must still be shown: the results of the
    hosts that got one (a password a finished host now has must still reach them), the hosts
    abandoned while running (a second Ctrl-C: their actions stay open in the ledger, and their
    commands stop on the hosts as the connections close) and the hosts that never started."""

    def __init__(
        self,
        task: str,
        ticket: str | None,
        results: tuple[HostResult, ...],
        abandoned: tuple[str, ...] = (),
        never_started: tuple[str, ...] = (),
        duration: float = 0.0,
    ) -> None:
        super().__init__("interrupted")
        self.task = task
        self.ticket = ticket
        self.results = results
        self.abandoned = abandoned
        self.never_started = never_started
        self.duration = duration


@dataclass(frozen=True)
class RunOptions:
    check_only: bool = False
    forks: int = 50
    serial: int | None = None
    max_fail_percent: float | None = None
    command_timeout: float | None = None
    # Recorded in every action's begin and finish data (a runbook run: its name and run id).
    tags: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CommandRecord:
    step: str
    command: str
    exit_code: int | None
    duration: float
    stdout: str = ""
    stderr: str = ""

    def as_ledger(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "command": self.command,
            "exit_code": self.exit_code,
            "duration_ms": round(self.duration * 1000),
        }


@dataclass(frozen=True)
class HostResult:
    host: str
    outcome: Outcome
    message: str
    duration: float = 0.0
    check: Finding | None = None
    verify: Finding | None = None
    commands: tuple[CommandRecord, ...] = ()
    error: str | None = None
    action_id: str | None = None
    notes: tuple[str, ...] = ()
    # Secrets for the engineer (a generated password): delivered once by the CLI, never in
    # as_dict(), the notes or the ledger.
    handovers: tuple[Handover, ...] = field(default=(), repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "outcome": str(self.outcome),
            "message": self.message,
            "error": self.error,
            "duration": round(self.duration, 3),
            "action_id": self.action_id,
            "check": _finding(self.check),
            "verify": _finding(self.verify),
            "notes": list(self.notes),
            "commands": [
                {**c.as_ledger(), "stdout": c.stdout, "stderr": c.stderr} for c in self.commands
            ],
        }


def _finding(f: Finding | None) -> dict[str, Any] | None:
    return None if f is None else {"ok": f.ok, "summary": f.summary, "facts": dict(f.facts)}


@dataclass(frozen=True)
class RunReport:
    task: str
    ticket: str | None
    check_only: bool
    results: tuple[HostResult, ...]
    duration: float
    notes: tuple[str, ...] = ()  # from the task's finish_run (e.g. the backup commit)
    finish_failed: bool = False  # finish_run raised: its note says why

    @property
    def counts(self) -> Counter[str]:
        return Counter(str(r.outcome) for r in self.results)

    @property
    def exit_code(self) -> int:
        outcomes = {r.outcome for r in self.results}
        code = next((code for outcome, code in EXIT_CODES if outcome in outcomes), 0)
        return 1 if self.finish_failed and code in (0, 4) else code

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "ticket": self.ticket,
            "mode": "check" if self.check_only else "fix",
            "duration": round(self.duration, 3),
            "counts": dict(self.counts),
            "exit_code": self.exit_code,
            "notes": list(self.notes),
            "hosts": [r.as_dict() for r in self.results],
        }


EventHandler = Callable[[str, Host, Any], None]


@dataclass(frozen=True)
class PolicyDecision:
    """A run policy's verdict for one host, made before anything connects to it.

    `outcome` None lets the host run; SKIPPED or NEEDS_APPROVAL ends it there with `message`.
    `record` goes into the host's begin and finish records under "policy"."""

    outcome: Outcome | None
    message: str = ""
    record: Mapping[str, Any] = field(default_factory=dict)


class HostPolicy(Protocol):
    """The runner's one policy hook (maintenance windows, approvals: toolkit.run.policy)."""

    def decide(self, task: Task, spec: TaskSpec, host: Host) -> PolicyDecision: ...


@dataclass
class _Recorder:
    commands: list[CommandRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    handovers: list[Handover] = field(default_factory=list)

    def output(self) -> str:
        return "".join(
            f"$ {c.command}\n{c.stdout}{c.stderr}"
            + ("" if (c.stdout + c.stderr).endswith("\n") or not (c.stdout + c.stderr) else "\n")
            for c in self.commands
        )


class StepContext:
    """The `ctx` a remediation step receives (implements catalog.Context)."""

    def __init__(
        self,
        host: Host,
        transport: Transport,
        recorder: _Recorder,
        credentials: CredentialStore,
        cancel: threading.Event,
        command_timeout: float | None,
        state_dir: Path | None = None,
        *,
        ticket: str | None = None,
        ticket_priority: str | None = None,
        history: Callable[[], Sequence[PastAction]] | None = None,
    ) -> None:
        self.host = host
        self.step = "check"
        self.ticket = ticket
        self.ticket_priority = ticket_priority
        self._history = history
        self._transport = transport
        self._recorder = recorder
        self._credentials = credentials
        self._cancel = cancel
        self._timeout = command_timeout
        self._state_dir = state_dir

    def read(
        self, command: Command, *, become: bool = False, timeout: float | None = None
    ) -> CommandResult:
        return self._run(command, None, become, timeout)

    def change(
        self,
        command: Command,
        *,
        stdin: bytes | Secret | None = None,
        become: bool = False,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        self._require_apply(command.display)
        result = self._run(command, stdin, become, timeout)
        if check and result.exit_code != 0:
            raise CommandFailed(result.command, result.exit_code, result.stderr or result.stdout)
        return result

    def put(self, local: Path, remote: str) -> None:
        self._require_apply(f"upload {remote}")
        self._transport.put(local, remote)

    def get(self, remote: str, local: Path) -> None:
        self._transport.get(remote, local)

    def secret(self, reference: str, label: str = "secret") -> Secret:
        return self._credentials.resolve(reference, label)

    def adopt(self, secret: Secret) -> Secret:
        return self._credentials.adopt(secret)

    def note(self, text: str) -> None:
        self._recorder.notes.append(self._credentials.redactor.mask(text))

    def previous(self) -> Sequence[PastAction]:
        return self._history() if self._history is not None else ()

    def handover(self, label: str, secret: Secret, *, to_file: str | None = None) -> None:
        self._credentials.adopt(secret)
        self._recorder.handovers.append(Handover(self.host.name, label, secret, to_file))
        where = f"written to {to_file}" if to_file else "shown to the engineer once"
        self.note(f"{label}: {where}, not recorded")

    def configure(self, lines: Sequence[str], *, check: bool = True) -> CommandResult:
        # Each line scrubbed like the device's output: a rollback re-adds lines such as
        # `neighbor … password 7 …` from the running config, and this text is recorded.
        display = config_display(lines, getattr(self._transport, "scrub", None))
        self._require_apply(display)
        transport = self._transport
        if not isinstance(transport, ConfigTransport):
            raise ToolkitError(f"{self.host.name} is not a network device: nothing to configure")
        result = self._record(
            display, lambda timeout: transport.configure(lines, timeout=timeout), None
        )
        if check and result.exit_code != 0:
            raise CommandFailed(result.command, result.exit_code, result.stderr or result.stdout)
        return result

    def save(self) -> CommandResult:
        self._require_apply("save the running configuration")
        transport = self._transport
        if not isinstance(transport, ConfigTransport):
            raise ToolkitError(f"{self.host.name} is not a network device: nothing to save")
        result = self._record("save running configuration", lambda _: transport.save(), None)
        if result.exit_code != 0:
            raise CommandFailed(result.command, result.exit_code, result.stderr or result.stdout)
        return result

    def artifacts(self, name: str) -> Path:
        return artifacts_dir(self._state_dir, name)

    def _require_apply(self, what: str) -> None:
        if self.step != "apply":
            raise ChangeRefused(
                f"{self.step} may only read; refused to run a change: {what}",
                hint="changes belong in apply(); check() and verify() must not modify the host",
            )

    def _run(
        self,
        command: Command,
        stdin: bytes | Secret | None,
        use_become: bool,
        timeout: float | None,
    ) -> CommandResult:
        if use_become:
            command = become(
                command,
                method=str(self.host.var("become_method", "sudo")),
                user=str(self.host.var("become_user", "root")),
            )
        transport = self._transport
        return self._record(
            command.display,
            lambda limit: transport.run(command, stdin=stdin, timeout=limit),
            timeout,
        )

    def _record(
        self,
        display: str,
        call: Callable[[float | None], CommandResult],
        timeout: float | None,
    ) -> CommandResult:
        """Run one transport call and record it; secrets masked (and, for network devices,
        secret-bearing configuration values scrubbed from what is recorded)."""
        if self._cancel.is_set():
            raise Interrupted("interrupted before: " + display)
        mask = self._credentials.redactor.mask
        scrub: Callable[[str], str] = getattr(self._transport, "scrub", None) or (lambda t: t)
        started = time.monotonic()
        try:
            raw = call(timeout or self._timeout)
        except TransportError as exc:
            self._recorder.commands.append(
                CommandRecord(
                    self.step,
                    mask(display),
                    None,
                    time.monotonic() - started,
                    "",
                    mask(exc.detail),
                )
            )
            raise
        result = CommandResult(
            mask(raw.command), raw.exit_code, mask(raw.stdout), mask(raw.stderr), raw.duration
        )
        self._recorder.commands.append(
            CommandRecord(
                self.step,
                result.command,
                result.exit_code,
                result.duration,
                scrub(result.stdout),
                scrub(result.stderr),
            )
        )
        return result


class Runner:
    """Runs one remediation over many hosts (see the module docstring)."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        connector: Connector,
        credentials: CredentialStore,
        on_event: EventHandler | None = None,
        state_dir: Path | None = None,
        policy: HostPolicy | None = None,
    ) -> None:
        self.ledger = ledger
        self.policy = policy
        self.connector = connector
        self.credentials = credentials
        self.state_dir = state_dir  # the workspace's .itops: where tasks keep artifacts
        self._on_event = on_event or (lambda kind, host, detail: None)
        self._cancel = threading.Event()
        self._open: dict[int, Transport] = {}  # connections with a host's steps under way
        self._begun: set[str] = set()  # hosts whose begin record is written
        self._open_lock = threading.Lock()

    def interrupt(self) -> None:
        """Ctrl-C: no host starts, no new command starts, and every command in flight is
        stopped on its host (each host still writes its finish record, saying so)."""
        self._cancel.set()
        with self._open_lock:
            running = list(self._open.values())
        for transport in running:
            try:
                transport.interrupt()
            except Exception:  # one host's failure to stop is that host's to report
                log.debug("interrupting %s failed", transport.host.name, exc_info=True)

    def run(
        self,
        task: Task,
        hosts: Sequence[Host],
        params: Mapping[str, str | list[str]],
        *,
        ticket: str | None,
        options: RunOptions,
        policy: HostPolicy | None = None,
    ) -> RunReport:
        """Validate, then run `task` on every host; returns when every host has an outcome.

        `policy` decides per host before anything connects (default: the runner's own)."""
        policy = policy if policy is not None else self.policy
        if not options.check_only and not ticket:
            raise TicketRequired(
                f"{task.name} changes hosts: a ticket is required",
                hint="add --ticket INC-1234 (a new id opens a local ticket), or --check to look only",
            )
        plans = {
            spec: self._resolve_secrets(spec, values)
            for spec, values in task.validate(params, {h.platform for h in hosts}).items()
        }
        prepare_hosts(task, plans, hosts)
        priority = ticket_priority(self.ledger, ticket) if ticket else None
        started = time.monotonic()
        hosts_by_name = {h.name: h for h in hosts}
        results: dict[str, HostResult] = {}
        batches = _batches(list(hosts), options.serial)
        stop_reason: str | None = None
        workers = max(1, min(options.forks, max((len(b) for b in batches), default=1)))
        with (
            ThreadPoolExecutor(workers, thread_name_prefix="itops-host") as pool,
            _on_interrupt(lambda: self._partial(task.name, ticket, hosts, results, started)),
        ):
            for batch in batches:
                if stop_reason:
                    for host in batch:
                        results[host.name] = self._not_run(task, host, ticket, stop_reason, options)
                    continue
                job = functools.partial(
                    self._guarded,
                    task.name,
                    functools.partial(
                        self._host,
                        task,
                        plans,
                        ticket=ticket,
                        priority=priority,
                        options=options,
                        policy=policy,
                    ),
                )
                if not self._run_green(batch, job, options.forks, results):
                    futures = {pool.submit(job, host): host for host in batch}
                    self._collect(futures, results)
                failed = sum(
                    results[h.name].outcome in (Outcome.FAILED, Outcome.UNREACHABLE) for h in batch
                )
                limit = options.max_fail_percent
                if limit is not None and failed * 100 > limit * len(batch):
                    stop_reason = (
                        f"not run: {failed} of {len(batch)} hosts failed in an earlier batch "
                        f"(more than --max-fail-percent {limit:g})"
                    )
        ordered = tuple(results[h.name] for h in hosts if h.name in results)
        notes: list[str] = []
        finish_failed = False
        for spec in plans:
            info = RunInfo(
                task=task.name,
                ticket=ticket,
                check_only=options.check_only,
                outcomes={
                    r.host: str(r.outcome)
                    for r in ordered
                    if task.implementation(hosts_by_name[r.host].platform) is spec
                },
                artifacts=lambda name: artifacts_dir(self.state_dir, name),
            )
            try:
                notes += [self.credentials.redactor.mask(n) for n in spec.cls.finish_run(info)]
            except ToolkitError as exc:
                finish_failed = True
                notes.append(self.credentials.redactor.mask(f"error: {exc.message}"))
                log.error("%s: finishing the run failed: %s", task.name, exc.message)
        return RunReport(
            task.name,
            ticket,
            options.check_only,
            ordered,
            time.monotonic() - started,
            tuple(notes),
            finish_failed,
        )

    def _partial(
        self,
        task: str,
        ticket: str | None,
        hosts: Sequence[Host],
        results: Mapping[str, HostResult],
        started: float,
    ) -> RunInterrupted:
        """What an interrupted run leaves: per host a result, abandoned, or never started."""
        with self._open_lock:
            begun = set(self._begun)
        return RunInterrupted(
            task,
            ticket,
            tuple(results[h.name] for h in hosts if h.name in results),
            tuple(h.name for h in hosts if h.name not in results and h.name in begun),
            tuple(h.name for h in hosts if h.name not in results and h.name not in begun),
            time.monotonic() - started,
        )

    @staticmethod
    def _guarded(task: str, run_host: Callable[..., HostResult], host: Host) -> HostResult | None:
        """One host's run (`_host`), whatever happens: None if Ctrl-C came before it started;
        a bug that escapes it is that host's failure, never the end of the other hosts' runs."""
        try:
            return run_host(host=host)
        except Interrupted:
            return None
        except Exception as exc:
            log.exception("running %s on %s failed", task, host.name)
            return HostResult(
                host.name,
                Outcome.FAILED,
                f"internal error: {type(exc).__name__}: {exc}",
                error="internal-error",
            )

    def _collect(
        self, futures: dict[Future[HostResult | None], Host], results: dict[str, HostResult]
    ) -> None:
        def keep(future: Future[HostResult | None]) -> None:
            if (result := future.result()) is not None:
                results[futures[future].name] = result

        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    keep(future)
        except KeyboardInterrupt:
            # Hosts not yet started never start; running commands are stopped on their hosts,
            # and every started host still writes its finish record.
            self.interrupt()
            for future in pending:
                future.cancel()
            for future in pending:
                if not future.cancelled():
                    keep(future)
            raise

    def _run_green(
        self,
        batch: list[Host],
        job: Callable[[Host], HostResult | None],
        limit: int,
        results: dict[str, HostResult],
    ) -> bool:
        """Run an all-SSH batch as greenlets on the SSH event loop instead of threads; False if
        the connector cannot (other transports, or a test's connector)."""
        start = getattr(self.connector, "start_green", None)
        if start is None:
            return False
        future = start(batch, [functools.partial(job, h) for h in batch], limit)
        if future is None:
            return False
        try:
            done = future.result()
        except KeyboardInterrupt:
            # Running commands are stopped on their hosts; every host writes its finish record.
            self.interrupt()
            done = future.result()
            results.update({r.host: r for r in done if r is not None})
            raise
        results.update({r.host: r for r in done if r is not None})
        return True

    def _resolve_secrets(self, spec: TaskSpec, values: Mapping[str, Any]) -> dict[str, Any]:
        resolved = dict(values)
        for name in spec.secret_params():
            if isinstance(resolved.get(name), str):
                resolved[name] = self.credentials.resolve(resolved[name], f"parameter {name}")
        return resolved

    def _not_run(
        self, task: Task, host: Host, ticket: str | None, why: str, options: RunOptions
    ) -> HostResult:
        action_id = self.ledger.begin(
            task=task.name, host=host.name, ticket=ticket, params={}, data=dict(options.tags)
        )
        self.ledger.finish(
            action_id,
            task=task.name,
            host=host.name,
            ticket=ticket,
            outcome=Outcome.SKIPPED,
            duration=0.0,
            data={"message": why, **options.tags},
        )
        result = HostResult(host.name, Outcome.SKIPPED, why, action_id=action_id)
        self._on_event("done", host, result)
        return result

    def _host(
        self,
        task: Task,
        plans: Mapping[TaskSpec, Mapping[str, Any]],
        *,
        host: Host,
        ticket: str | None,
        priority: str | None,
        options: RunOptions,
        policy: HostPolicy | None = None,
    ) -> HostResult:
        if self._cancel.is_set():
            raise Interrupted("interrupted")
        started = time.monotonic()
        spec = task.implementation(host.platform)
        values = plans.get(spec, {}) if spec is not None else {}
        shown = mapping_display(values)
        decision = self._decide(task, spec, host, options, policy)
        recorded = {"policy": dict(decision.record)} if decision is not None else {}
        try:
            action_id = self.ledger.begin(
                task=task.name,
                host=host.name,
                ticket=ticket,
                params=shown,
                data={
                    "mode": "check" if options.check_only else "fix",
                    "platform": host.platform,
                    "transport": host.transport,
                    "address": f"{host.address}:{host.port}",
                    **recorded,
                    **options.tags,
                },
            )
        except Exception as exc:  # nothing may touch a host the ledger has not recorded
            log.error("%s: the ledger could not record the action: %s", host.name, exc)
            return HostResult(
                host.name,
                Outcome.FAILED,
                self.credentials.redactor.mask(f"not run: the ledger could not record it: {exc}"),
                error="ledger-unavailable",
            )
        with self._open_lock:
            self._begun.add(host.name)
        self._on_event("start", host, None)
        recorder = _Recorder()
        transport: Transport | None = None
        ctx: StepContext | None = None
        remediation: Remediation | None = None
        check = verify = None
        error: str | None = None
        try:
            if spec is None:
                outcome = Outcome.SKIPPED
                message = f"{task.name} has no implementation for platform {host.platform}"
            elif decision is not None and decision.outcome is not None:
                outcome, message = decision.outcome, decision.message
            else:
                transport = self.connector.open(host)
                with self._open_lock:
                    self._open[id(transport)] = transport
                if self._cancel.is_set():  # Ctrl-C came while it connected
                    raise Interrupted("interrupted before its first command")
                # Warnings a transport raises when it opens (e.g. an insecure WinRM connection
                # the inventory allowed) go into this host's notes, every run.
                for notice in getattr(transport, "notices", ()):
                    recorder.notes.append(self.credentials.redactor.mask(str(notice)))
                remediation = spec.cls(values)
                ctx = StepContext(
                    host,
                    transport,
                    recorder,
                    self.credentials,
                    self._cancel,
                    options.command_timeout,
                    self.state_dir,
                    ticket=ticket,
                    ticket_priority=priority,
                    history=lambda: self._history(task.name, host.name, ticket),
                )
                self._on_event("step", host, "check")
                check = remediation.check(ctx)
                if check.ok:
                    outcome, message = Outcome.ALREADY_OK, check.summary
                elif options.check_only:
                    outcome, message = Outcome.WOULD_FIX, check.summary
                else:
                    ctx.step = "apply"
                    self._on_event("step", host, "apply")
                    remediation.apply(ctx)
                    ctx.step = "verify"
                    self._on_event("step", host, "verify")
                    verify = remediation.verify(ctx)
                    outcome = Outcome.FIXED if verify.ok else Outcome.FAILED
                    # fixed: say what was wrong; failed: say what is still wrong
                    message = check.summary if verify.ok else f"verify failed: {verify.summary}"
        except (CommandTimeout, CommandInterrupted) as exc:
            # Stopped on the host mid-command: say what that means for the host's state.
            outcome, error = Outcome.FAILED, exc.kind
            assert ctx is not None and remediation is not None
            step = ctx.step
            after, verify = self._after_stop(remediation, ctx, exc)
            message = f"{step}: {exc.detail}{after}"
        except (Unreachable, AuthFailed, HostKeyError, CertificateError) as exc:
            # Before a connection exists the host is unreachable; afterwards its state is unknown.
            outcome = Outcome.UNREACHABLE if transport is None else Outcome.FAILED
            message, error = exc.detail, exc.kind
        except TransportError as exc:
            outcome, message, error = Outcome.FAILED, exc.detail, exc.kind
        except Interrupted as exc:
            outcome, error = Outcome.FAILED, "interrupted"
            message = exc.message
            if ctx is not None:
                message = f"{ctx.step}: {exc.message}" + (
                    "; the host was changed (apply ran to its end); verify did not run"
                    if ctx.step == "verify"
                    else "; state unknown: apply stopped part-way, verify did not run"
                    if ctx.step == "apply"
                    else "; nothing was changed (check only reads)"
                )
        except ToolkitError as exc:
            step = f"{ctx.step}: " if ctx is not None else ""
            outcome, message, error = Outcome.FAILED, step + exc.message, _kebab(type(exc).__name__)
        except Exception as exc:  # a bug in a task is that host's failure, not the run's
            log.exception("%s on %s raised", task.name, host.name)
            outcome = Outcome.FAILED
            message = f"internal error in {task.name}: {type(exc).__name__}: {exc}"
            error = "internal-error"
        finally:
            if transport is not None:
                with self._open_lock:
                    self._open.pop(id(transport), None)
            _close_quietly(transport, host)
        mask = self.credentials.redactor.mask
        result = HostResult(
            host=host.name,
            outcome=outcome,
            message=mask(message),
            duration=time.monotonic() - started,
            check=check,
            verify=verify,
            commands=tuple(recorder.commands),
            error=error,
            action_id=action_id,
            notes=tuple(recorder.notes),
            handovers=tuple(recorder.handovers),
        )
        try:
            self.ledger.finish(
                action_id,
                task=task.name,
                host=host.name,
                ticket=ticket,
                outcome=outcome,
                duration=result.duration,
                commands=[c.as_ledger() for c in recorder.commands],
                output=recorder.output(),
                data={
                    "message": result.message,
                    "error": error,
                    "check": _finding(check),
                    "verify": _finding(verify),
                    "notes": list(recorder.notes),
                    **recorded,
                    **options.tags,
                },
            )
        except Exception as exc:  # what ran is still reported; the ledger shows it as open
            log.error("%s: the ledger could not record the finish: %s", host.name, exc)
            result = dataclasses.replace(
                result,
                outcome=Outcome.FAILED,
                message=mask(
                    f"{outcome} on the host, but the ledger could not record it "
                    f"(the action stays open there): {exc}"
                ),
                error="ledger-unavailable",
            )
        self._on_event("done", host, result)
        return result

    def _after_stop(
        self, remediation: Remediation, ctx: StepContext, exc: TransportError
    ) -> tuple[str, Finding | None]:
        """After a command was stopped on its host: what that means for the host's state, and,
        when an apply timed out (not on Ctrl-C), what verify then finds there."""
        if ctx.step == "check":
            return "; nothing was changed (check only reads)", None
        if ctx.step == "verify":
            return "; apply had run to its end, verify did not", None
        if isinstance(exc, CommandInterrupted) or self._cancel.is_set():
            return "; state unknown: apply stopped part-way, verify did not run", None
        ctx.step = "verify"
        self._on_event("step", ctx.host, "verify")
        try:
            found = remediation.verify(ctx)
        except Exception as error:  # the host is in doubt either way: say so, keep the timeout
            why = error.message if isinstance(error, ToolkitError) else repr(error)
            return f"; state unknown: apply stopped part-way, verify could not run: {why}", None
        held = "the fix is in place" if found.ok else f"not fixed: {found.summary}"
        return f"; apply stopped part-way, verify ran after it: {held}", found

    def _decide(
        self,
        task: Task,
        spec: TaskSpec | None,
        host: Host,
        options: RunOptions,
        policy: HostPolicy | None,
    ) -> PolicyDecision | None:
        """Ask the policy about this host (not for check-only runs: they change nothing)."""
        if policy is None or spec is None or options.check_only:
            return None
        try:
            return policy.decide(task, spec, host)
        except ToolkitError as exc:
            return PolicyDecision(Outcome.SKIPPED, f"refused by policy: {exc.message}")
        except Exception as exc:  # a policy bug stops this host, never lets it run unchecked
            log.exception("policy for %s on %s raised", task.name, host.name)
            return PolicyDecision(Outcome.FAILED, f"internal error in the run policy: {exc}")

    def _history(self, task: str, host: str, ticket: str | None) -> list[PastAction]:
        """Finished runs of `task` on `host` under `ticket`, oldest first (none without one)."""
        if not ticket:
            return []
        begun: dict[str, dict[str, Any]] = {}
        done: list[PastAction] = []
        records = offload(lambda: list(self.ledger.records(ticket=ticket, host=host, task=task)))
        for rec in records:
            if rec.kind == "action.begin" and rec.action_id:
                begun[rec.action_id] = json.loads(rec.params) if rec.params else {}
            elif rec.kind == "action.finish" and rec.action_id in begun:
                done.append(
                    PastAction(
                        rec.action_id,
                        rec.at,
                        rec.outcome or "",
                        begun[rec.action_id],
                        rec.info.get("verify"),
                    )
                )
        return done


def _close_quietly(transport: Transport | None, host: Host) -> None:
    """Close a host's connection after its run; a failure to close is not the run's outcome."""
    if transport is not None:
        try:
            transport.close()
        except Exception:
            log.debug("closing %s failed", host.name, exc_info=True)


@contextlib.contextmanager
def _on_interrupt(partial: Callable[[], RunInterrupted]) -> Iterator[None]:
    try:
        yield
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        raise partial() from None


def prepare_hosts(
    task: Task, plans: Mapping[TaskSpec, Mapping[str, Any]], hosts: Sequence[Host]
) -> None:
    """Refuse host-specific input (a template's variables) before anything connects or records."""
    for host in hosts:
        spec = task.implementation(host.platform)
        if spec is not None and spec in plans:
            spec.cls(plans[spec]).prepare(host)


def artifacts_dir(state_dir: Path | None, name: str) -> Path:
    """`<workspace>/.itops/<name>`, created on first use; refused for runs without a workspace."""
    if state_dir is None:
        raise ToolkitError(f"this run has no workspace folder to keep {name!r} in")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*", name):
        raise ValueError(f"invalid artifacts folder name {name!r}")
    folder = state_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _kebab(name: str) -> str:
    return "".join(f"-{c.lower()}" if c.isupper() else c for c in name).lstrip("-")


def _batches(hosts: list[Host], serial: int | None) -> list[list[Host]]:
    if not serial or serial >= len(hosts):
        return [hosts]
    return [hosts[i : i + serial] for i in range(0, len(hosts), serial)]


def probe(connector: Connector, hosts: Sequence[Host], *, forks: int = 50) -> list[dict[str, Any]]:
    """Connect to each host and run one read-only command: is it reachable, trusted, logged in?"""
    from toolkit.remediation.quoting import cmd, ps_script

    probes = {
        "ssh": cmd("uname", "-snr"),
        "winrm": ps_script("[Environment]::OSVersion.VersionString"),
    }

    def one(host: Host) -> dict[str, Any]:
        started = time.monotonic()
        transport: Transport | None = None
        try:
            transport = connector.open(host)
            command = probes.get(host.transport)
            if command is None:
                detail = "connected"
            else:
                result = transport.run(command)
                lines = (result.stdout or result.stderr).strip().splitlines()
                detail = lines[0] if lines else f"exit {result.exit_code}"
            status = "ok"
        except TransportError as exc:
            status, detail = exc.kind, exc.detail
        except ToolkitError as exc:
            status, detail = "error", exc.message
        finally:
            _close_quietly(transport, host)
        return {
            "host": host.name,
            "status": status,
            "detail": connector.credentials.redactor.mask(str(detail)),
            "seconds": round(time.monotonic() - started, 3),
        }

    if not hosts:
        return []
    with ThreadPoolExecutor(
        max(1, min(forks, len(hosts))), thread_name_prefix="itops-probe"
    ) as pool:
        return list(pool.map(one, hosts))

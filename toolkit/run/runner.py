"""Fan a remediation out over hosts: check → apply → verify per host, ledger first, one connection each.

Per host, at most `--forks` hosts at once:

    ledger.begin  →  connect (one Transport)  →  check  →  apply  →  verify  →  ledger.finish

Hosts run in a thread pool; a batch whose hosts all use SSH runs as greenlets on the SSH event
loop instead (same steps, same order, no thread per host: see transports.ssh).

The begin record is committed before anything touches the host, so a crash or `kill -9` leaves a
visible open action. One host's failure is that host's result: every exception becomes an outcome
(in one place, `Runner._failure`) and the other hosts go on. Check and verify get a context whose
`change()` refuses, and a check-only run never calls apply, so `--check` cannot modify a host.

The ledger's records and the CLI's progress bar are not written here: they observe the run's
typed events (toolkit.run.events: host started, step, host done, as Nornir's Processor). A
step's context offers what its host's transport offers (transports.base: file transfer over
SSH, configuration sessions on network devices), and nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

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
    Unsupported,
)
from toolkit.inventory import Host
from toolkit.ledger import Ledger
from toolkit.remediation.catalog import (
    Change,
    Entry,
    Finding,
    PastAction,
    Remediation,
    RunInfo,
    Task,
    TaskSpec,
)
from toolkit.remediation.quoting import Command, become, config_display, mapping_display
from toolkit.run.events import HostRun, LedgerRecorder, NotRecorded, Observers, RunObserver
from toolkit.run.results import (
    EXIT_CODES,
    LEDGER_UNAVAILABLE,
    NOT_ITS_PLATFORM,
    CommandRecord,
    HostResult,
    Outcome,
    RunReport,
    max_fail_stop,
)
from toolkit.secrets.credentials import CredentialStore, Secret
from toolkit.secrets.handover import Handover
from toolkit.transports import CommandResult, Connector, Transport
from toolkit.transports.base import (
    ConfigSession,
    DirectorySession,
    DirectoryTransport,
    FileTransfer,
    NetworkTransport,
)
from toolkit.transports.green import offload

# Re-exported: the result types lived here before toolkit.run.results.
__all__ = [
    "EXIT_CODES",
    "CommandRecord",
    "DirectoryStepContext",
    "HostResult",
    "HostRun",
    "NetworkStepContext",
    "Outcome",
    "PolicyDecision",
    "RunInterrupted",
    "RunObserver",
    "RunOptions",
    "RunReport",
    "Runner",
    "StepContext",
    "artifacts_dir",
    "prepare_hosts",
    "probe",
]

log = logging.getLogger("itops.runner")


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
    # Every host only recorded as skipped for this reason, none contacted (a distributed run's
    # batches after --max-fail-percent stopped it: the controller records them).
    not_run: str | None = None


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
class _Trace:
    """What one host's steps did, as they do it: commands (masked), notes, handovers."""

    commands: list[CommandRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # the notes apply made: what the fix did
    handovers: list[Handover] = field(default_factory=list)


@dataclass(frozen=True)
class _StepEnv:
    """What every step context of one run shares."""

    credentials: CredentialStore
    cancel: threading.Event
    command_timeout: float | None
    state_dir: Path | None
    ticket: str | None
    ticket_priority: str | None
    history: Callable[[str], Sequence[PastAction]]  # a host's earlier runs under the ticket


def fixed_message(found: str, done: Sequence[str]) -> str:
    """A fixed host's result: what apply did (the notes it made), then what check had found —
    `resumed office, cancelled 3 stuck job(s) (was: office: disabled (paper jam), …)` — so the
    table does not repeat the problem as if it were still there. Without notes: `was: …`."""
    if not done:
        return f"was: {found}"
    return f"{'; '.join(done)} (was: {found})"


def _unchanged(text: str) -> str:
    return text


class StepContext:
    """The `ctx` a remediation step receives (implements catalog.Context).

    It offers what the host's transport offers: `put`/`get` refuse, naming the host, on a
    transport without file transfer (WinRM, network devices); a network device's context is a
    `NetworkStepContext`, which adds `configure`/`save`."""

    def __init__(self, host: Host, transport: Transport, trace: _Trace, env: _StepEnv) -> None:
        self.host = host
        self.step = "check"
        self.ticket = env.ticket
        self.ticket_priority = env.ticket_priority
        self._env = env
        self._transport = transport
        self._trace = trace
        self._credentials = env.credentials
        # What is recorded of any output: a network device's secret-bearing config values
        # scrubbed (NetworkStepContext); everything else as it came (masked).
        self._scrub: Callable[[str], str] = _unchanged

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
        self._files(f"upload {remote}").put(local, remote)

    def get(self, remote: str, local: Path) -> None:
        self._files(f"download {remote}").get(remote, local)

    def secret(self, reference: str, label: str = "secret") -> Secret:
        return self._credentials.resolve(reference, label)

    def adopt(self, secret: Secret) -> Secret:
        return self._credentials.adopt(secret)

    def note(self, text: str) -> None:
        masked = self._credentials.redactor.mask(text)
        self._trace.notes.append(masked)
        if self.step == "apply":
            self._trace.done.append(masked)

    def previous(self) -> Sequence[PastAction]:
        return self._env.history(self.host.name)

    def handover(self, label: str, secret: Secret, *, to_file: str | None = None) -> None:
        self._credentials.adopt(secret)
        self._trace.handovers.append(Handover(self.host.name, label, secret, to_file))
        where = f"written to {to_file}" if to_file else "shown to the engineer once"
        self.note(f"{label}: {where}, not recorded")

    def artifacts(self, name: str) -> Path:
        return artifacts_dir(self._env.state_dir, name)

    def _files(self, what: str) -> FileTransfer:
        transport = self._transport
        if not _offers(type(transport), FileTransfer):
            raise Unsupported(
                f"{self.host.name}: its {self.host.transport} transport cannot transfer files "
                f"(refused to {what})",
                hint="file transfer works over SSH; on other hosts, work with files on the host",
            )
        return cast(FileTransfer, transport)

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
        if self._env.cancel.is_set():
            raise Interrupted("interrupted before: " + display)
        mask = self._credentials.redactor.mask
        started = time.monotonic()
        try:
            raw = call(timeout or self._env.command_timeout)
        except TransportError as exc:
            self._trace.commands.append(
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
        self._trace.commands.append(
            CommandRecord(
                self.step,
                result.command,
                result.exit_code,
                result.duration,
                self._scrub(result.stdout),
                self._scrub(result.stderr),
            )
        )
        return result


class NetworkStepContext(StepContext):
    """A network device's `ctx` (implements catalog.NetworkContext): configuration lines and
    saving them are verbs of their own, changes like any other (apply only)."""

    def __init__(
        self, host: Host, transport: NetworkTransport, trace: _Trace, env: _StepEnv
    ) -> None:
        super().__init__(host, transport, trace, env)
        self._session = transport
        self._scrub = transport.scrub

    def configure(self, lines: Sequence[str], *, check: bool = True) -> CommandResult:
        # Each line scrubbed like the device's output: a rollback re-adds lines such as
        # `neighbor … password 7 …` from the running config, and this text is recorded.
        display = config_display(lines, self._scrub)
        self._require_apply(display)
        session = self._session
        result = self._record(
            display, lambda timeout: session.configure(lines, timeout=timeout), None
        )
        if check and result.exit_code != 0:
            raise CommandFailed(result.command, result.exit_code, result.stderr or result.stdout)
        return result

    def save(self) -> CommandResult:
        self._require_apply("save the running configuration")
        session = self._session
        result = self._record("save running configuration", lambda _: session.save(), None)
        if result.exit_code != 0:
            raise CommandFailed(result.command, result.exit_code, result.stderr or result.stdout)
        return result


_PRIVILEGED_GROUPS = ("Domain Admins", "Enterprise Admins", "Administrators", "Schema Admins")


class DirectoryStepContext(StepContext):
    """A directory's `ctx` (implements catalog.DirectoryContext): every directory operation is
    recorded in the step's commands like a command (`ldap search …`, `ldap modify …`, `ldap
    bind-check …`), secrets masked; `modify` is a change (apply only)."""

    def __init__(
        self, host: Host, transport: DirectoryTransport, trace: _Trace, env: _StepEnv
    ) -> None:
        super().__init__(host, transport, trace, env)
        self._directory = transport
        self.kind = transport.kind
        self.base_dn = transport.base_dn
        self.encrypted = transport.encrypted
        self.privileged_groups = tuple(
            dict.fromkeys((*_PRIVILEGED_GROUPS, *transport.privileged_groups))
        )

    def _op(self, display: str, call: Callable[[], str]) -> str:
        """Run one directory operation and record it like a command: exit 0, or the LDAP
        result code of a DirectoryError (recorded, then raised)."""
        started = time.monotonic()
        code, out, err = 0, "", ""

        def run(_: float | None) -> CommandResult:
            nonlocal code, out, err
            try:
                out = call()
            except ToolkitError as exc:
                if isinstance(exc, TransportError):
                    raise
                code, err = int(getattr(exc, "code", 1) or 1), exc.message
                raise _Recorded(exc) from exc
            return CommandResult(display, code, out, err, time.monotonic() - started)

        try:
            return self._record(display, run, None).stdout
        except _Recorded as wrapped:
            mask = self._credentials.redactor.mask
            self._trace.commands.append(
                CommandRecord(
                    self.step, mask(display), code, time.monotonic() - started, "", mask(err)
                )
            )
            raise wrapped.error from None

    def search(
        self, filterstr: str, attrs: Sequence[str], *, base: str | None = None, scope: str = "sub"
    ) -> list[Entry]:
        where = base if base is not None else self.base_dn
        found: list[Entry] = []

        def call() -> str:
            for dn, values in self._directory.search(where, scope, filterstr, attrs):
                found.append(
                    Entry(
                        dn,
                        {
                            k: tuple(v.decode("utf-8", "replace") for v in vs)
                            for k, vs in values.items()
                        },
                    )
                )
            return "\n".join(e.dn for e in found) or "no entry"

        shown = ",".join(attrs)
        self._op(f"ldap search {scope} base={where!r} filter={filterstr!r} attrs={shown}", call)
        return found

    def find_user(self, name: str, attrs: Sequence[str]) -> Entry:
        from toolkit.remediation import ldapsafe as q

        q.check_account(name, "user")
        if self.kind == "active_directory":
            naming = (
                q.eq("userPrincipalName", name) if "@" in name else q.eq("sAMAccountName", name)
            )
            filterstr = q.all_of(
                q.eq("objectCategory", "person"), q.eq("objectClass", "user"), naming
            )
        else:
            filterstr = (
                q.any_of(q.eq("uid", name), q.eq("mail", name))
                if "@" in name
                else q.eq("uid", name)
            )
        return self._one(self.search(filterstr, attrs), "user", name)

    def find_group(self, name: str, attrs: Sequence[str]) -> Entry:
        from toolkit.remediation import ldapsafe as q

        q.check_group(name)
        if self.kind == "active_directory":
            filterstr = q.all_of(
                q.eq("objectClass", "group"),
                q.any_of(q.eq("sAMAccountName", name), q.eq("cn", name)),
            )
        else:
            filterstr = q.all_of(q.eq("objectClass", "groupOfNames"), q.eq("cn", name))
        return self._one(self.search(filterstr, attrs), "group", name)

    def _one(self, found: list[Entry], what: str, name: str) -> Entry:
        from toolkit.errors import NotFound

        if not found:
            raise NotFound(
                f"no {what} {name!r} in {self.host.name} ({self.base_dn})",
                hint=f"check the {what}'s name: itops fix account.status {self.host.name} "
                "-p user=NAME --check"
                if what == "user"
                else None,
            )
        if len(found) > 1:
            raise ToolkitError(
                f"{len(found)} {what}s match {name!r} in {self.host.name}: "
                + "; ".join(e.dn for e in found[:5]),
                hint="name it unambiguously (the UPN on Active Directory)",
            )
        return found[0]

    def modify(self, dn: str, changes: Sequence[Change]) -> None:
        shown = "; ".join(
            f"{op} {attr}"
            + (
                ""
                if values is None
                else "=" + (str(values) if isinstance(values, Secret) else ",".join(values))
            )
            for op, attr, values in changes
        )
        display = f"ldap modify {dn!r}: {shown}"
        self._require_apply(display)
        wire = [
            (op, attr, v if v is None or isinstance(v, Secret) else [x.encode() for x in v])
            for op, attr, v in changes
        ]

        def call() -> str:
            self._directory.modify(dn, wire)
            return "modified"

        self._op(display, call)

    def set_password(self, dn: str, secret: Secret) -> None:
        self._credentials.adopt(secret)
        display = f"ldap set-password {dn!r} new={secret}"
        self._require_apply(display)

        def call() -> str:
            self._directory.set_password(dn, secret)
            return "password set"

        self._op(display, call)

    def bind_check(self, dn: str, secret: Secret) -> str:
        self._credentials.adopt(secret)
        return self._op(
            f"ldap bind-check {dn!r} password={secret}",
            lambda: self._directory.bind_check(dn, secret),
        )


class _Recorded(Exception):
    """Carries a directory's error out of `_record` after the operation was recorded."""

    def __init__(self, error: ToolkitError) -> None:
        super().__init__(error.message)
        self.error = error


def _context(host: Host, transport: Transport, trace: _Trace, env: _StepEnv) -> StepContext:
    """The context a host's steps get: what its transport offers (see StepContext)."""
    if _offers(type(transport), ConfigSession):
        return NetworkStepContext(host, cast(NetworkTransport, transport), trace, env)
    if _offers(type(transport), DirectorySession):
        return DirectoryStepContext(host, cast(DirectoryTransport, transport), trace, env)
    return StepContext(host, transport, trace, env)


@functools.cache
def _offers(kind: type, capability: type) -> bool:
    """Whether a transport class implements a capability Protocol (transports.base), asked
    once per class: a runtime Protocol check costs microseconds on every host otherwise."""
    return issubclass(kind, capability)


@dataclass(frozen=True)
class _Job:
    """One run's inputs, the same for each of its hosts."""

    task: Task
    plans: Mapping[TaskSpec, Mapping[str, Any]]
    ticket: str | None
    options: RunOptions
    policy: HostPolicy | None
    env: _StepEnv
    # per implementation, the code that runs (its file and SHA-256): read once per run
    code: Mapping[TaskSpec, Mapping[str, str]] = field(default_factory=dict)


@dataclass
class _HostState:
    """One host's run as it goes: what `_failure` needs to say where it stopped."""

    run: HostRun
    trace: _Trace = field(default_factory=_Trace)
    transport: Transport | None = None
    ctx: StepContext | None = None
    remediation: Remediation | None = None
    check: Finding | None = None
    verify: Finding | None = None


# What Ctrl-C during each step means for the host.
_INTERRUPTED_IN = {
    "check": "; nothing was changed (check only reads)",
    "apply": "; state unknown: apply stopped part-way, verify did not run",
    "verify": "; the host was changed (apply ran to its end); verify did not run",
}


class Runner:
    """Runs one remediation over many hosts (see the module docstring)."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        connector: Connector,
        credentials: CredentialStore,
        observers: Sequence[RunObserver] = (),
        state_dir: Path | None = None,
        policy: HostPolicy | None = None,
    ) -> None:
        """`observers` see the run's events after the ledger recorder (toolkit.run.events)."""
        self.ledger = ledger
        self.policy = policy
        self.connector = connector
        self.credentials = credentials
        self.state_dir = state_dir  # the workspace's .itops: where tasks keep artifacts
        self.recorder = LedgerRecorder(
            ledger, credentials.redactor.mask, getattr(connector, "route", None)
        )  # (a test's connector may have no jump hosts to tell of)
        self.observers = Observers(observers)
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
        stop_reason: str | None = options.not_run
        workers = max(1, min(options.forks, max((len(b) for b in batches), default=1)))
        job = _Job(
            task,
            plans,
            ticket,
            options,
            policy,
            _StepEnv(
                self.credentials,
                self._cancel,
                options.command_timeout,
                self.state_dir,
                ticket,
                priority,
                functools.partial(self._history, task.name, ticket=ticket),
            ),
            {spec: {"source": spec.source, "sha256": spec.code_sha256} for spec in task.specs},
        )
        self.observers.run_started(task.name, hosts)
        with (
            ThreadPoolExecutor(workers, thread_name_prefix="itops-host") as pool,
            _on_interrupt(lambda: self._partial(task.name, ticket, hosts, results, started)),
        ):
            for batch in batches:
                if stop_reason:
                    for host in batch:
                        if (result := self._host(job, host, stop=stop_reason)) is not None:
                            results[host.name] = result
                    continue
                run_host = functools.partial(self._host, job)
                if not self._run_green(batch, run_host, options.forks, results):
                    futures = {pool.submit(run_host, host): host for host in batch}
                    self._collect(futures, results)
                stop_reason = max_fail_stop(batch, results, options.max_fail_percent)
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
        report = RunReport(
            task.name,
            ticket,
            options.check_only,
            ordered,
            time.monotonic() - started,
            tuple(notes),
            finish_failed,
        )
        self.observers.run_done(report)
        return report

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

    def _host(self, job: _Job, host: Host, *, stop: str | None = None) -> HostResult | None:
        """One host's run, whatever happens: its result (None if Ctrl-C came before it started).
        `stop`: the host is not run, only recorded as skipped for that reason.

        The ledger recorder writes the begin record first (a host it cannot record is never
        contacted) and the finish record last; every exception on the way becomes the host's
        result in `_failure`, and the other hosts go on."""
        if self._cancel.is_set():
            return None
        started = time.monotonic()
        spec = job.task.implementation(host.platform)
        # (_decide turns a policy's exception into a decision: nothing here raises)
        decision = PolicyDecision(Outcome.SKIPPED, stop) if stop else self._decide(job, spec, host)
        state = _HostState(
            HostRun(
                job.task.name,
                host,
                job.ticket,
                job.options.check_only,
                mapping_display(job.plans.get(spec, {})) if spec and not stop else {},
                dict(decision.record) if decision is not None and not stop else None,
                job.options.tags,
                # the code that runs: its file and SHA-256 (an edited task is other code)
                code=job.code.get(spec) if spec else None,
            )
        )
        try:
            state.run = self.recorder.begin(state.run)
            with self._open_lock:
                self._begun.add(host.name)
            self.observers.host_started(state.run)
            outcome, message = self._steps(job, spec, decision, state)
            # the fix ran and verify says it did not hold: named, like every other failure
            error: str | None = (
                "not-fixed" if state.verify is not None and not state.verify.ok else None
            )
            if spec is None:
                error = NOT_ITS_PLATFORM  # skipped, but no work left undone (exit code)
        except Exception as exc:
            outcome, message, error = self._failure(exc, state)
        finally:
            if state.transport is not None:
                with self._open_lock:
                    self._open.pop(id(state.transport), None)
                _close_quietly(state.transport, host)
        run, trace = state.run, state.trace
        result = HostResult(
            host=host.name,
            outcome=outcome,
            message=self.credentials.redactor.mask(message),
            duration=time.monotonic() - started,
            check=state.check,
            verify=state.verify,
            commands=tuple(trace.commands),
            error=error,
            action_id=run.action_id,
            notes=tuple(trace.notes),
            handovers=tuple(trace.handovers),
        )
        if run.action_id is not None:
            result = self.recorder.finish(run, result)
        self.observers.host_done(run, result)
        return result

    def _steps(
        self, job: _Job, spec: TaskSpec | None, decision: PolicyDecision | None, state: _HostState
    ) -> tuple[Outcome, str]:
        """Connect, then check → apply → verify: the outcome and what to say about it."""
        host = state.run.host
        if decision is not None and decision.outcome is not None:
            return decision.outcome, decision.message
        if spec is None:
            why = f"{job.task.name} has no implementation for platform {host.platform}"
            return Outcome.SKIPPED, why
        state.transport = transport = self.connector.open(host)
        with self._open_lock:
            self._open[id(transport)] = transport
        if self._cancel.is_set():  # Ctrl-C came while it connected
            raise Interrupted("interrupted before its first command")
        for notice in transport.notices:
            state.trace.notes.append(self.credentials.redactor.mask(str(notice)))
        state.remediation = remediation = spec.cls(job.plans.get(spec, {}))
        state.ctx = ctx = _context(host, transport, state.trace, job.env)
        self._enter(state, "check")
        state.check = check = remediation.check(ctx)
        if check.ok:
            return Outcome.ALREADY_OK, check.summary
        if job.options.check_only:
            return Outcome.WOULD_FIX, check.summary
        self._enter(state, "apply")
        remediation.apply(ctx)
        self._enter(state, "verify")
        state.verify = verify = remediation.verify(ctx)
        # fixed: say what was done and what was wrong; failed: say what is still wrong
        if verify.ok:
            return Outcome.FIXED, fixed_message(check.summary, state.trace.done)
        return Outcome.FAILED, f"verify failed: {verify.summary}"

    def _enter(self, state: _HostState, step: str) -> None:
        assert state.ctx is not None
        state.ctx.step = step
        self.observers.step(state.run, step)

    def _failure(self, exc: Exception, state: _HostState) -> tuple[Outcome, str, str]:
        """The one place a host's exception becomes its outcome, message and error kind."""
        ctx = state.ctx
        where = f"{ctx.step}: " if ctx is not None else ""
        if isinstance(exc, NotRecorded):
            return Outcome.FAILED, exc.message, LEDGER_UNAVAILABLE
        if isinstance(exc, CommandTimeout | CommandInterrupted) and ctx is not None:
            # Stopped on the host mid-command: say what that means for the host's state.
            after = self._after_stop(state, exc)
            return Outcome.FAILED, f"{where}{exc.detail}{after}", exc.kind
        if isinstance(exc, Unreachable | AuthFailed | HostKeyError | CertificateError):
            # Before a connection exists the host is unreachable; afterwards its state is unknown.
            outcome = Outcome.UNREACHABLE if state.transport is None else Outcome.FAILED
            return outcome, exc.detail, exc.kind
        if isinstance(exc, TransportError):
            return Outcome.FAILED, exc.detail, exc.kind
        if isinstance(exc, Interrupted):
            said = _INTERRUPTED_IN[ctx.step] if ctx is not None else ""
            return Outcome.FAILED, where + exc.message + said, "interrupted"
        if isinstance(exc, ToolkitError):
            # Named for what it is: a bare ToolkitError from a step is the host's (or device's)
            # answer that stops the fix ("freshclam exited 2"), never "toolkit-error", which read
            # like an itops bug; a subclass names itself (device-rejected, command-failed, …).
            kind = "host-reported" if type(exc) is ToolkitError else _kebab(type(exc).__name__)
            return Outcome.FAILED, where + exc.message, kind
        # a bug in a task (or in itops) is that host's failure, not the run's
        log.exception("%s on %s raised", state.run.task, state.run.host.name)
        message = f"internal error in {state.run.task}: {type(exc).__name__}: {exc}"
        return Outcome.FAILED, message, "itops-bug"

    def _after_stop(self, state: _HostState, exc: TransportError) -> str:
        """After a command was stopped on its host: what that means for the host's state, and,
        when an apply timed out (not on Ctrl-C), what verify then finds there."""
        ctx, remediation = state.ctx, state.remediation
        assert ctx is not None and remediation is not None
        if ctx.step == "check":
            return "; nothing was changed (check only reads)"
        if ctx.step == "verify":
            return "; apply had run to its end, verify did not"
        if isinstance(exc, CommandInterrupted) or self._cancel.is_set():
            return "; state unknown: apply stopped part-way, verify did not run"
        self._enter(state, "verify")
        try:
            state.verify = found = remediation.verify(ctx)
        except Exception as error:  # the host is in doubt either way: say so, keep the timeout
            why = error.message if isinstance(error, ToolkitError) else repr(error)
            return f"; state unknown: apply stopped part-way, verify could not run: {why}"
        held = "the fix is in place" if found.ok else f"not fixed: {found.summary}"
        return f"; apply stopped part-way, verify ran after it: {held}"

    def _decide(self, job: _Job, spec: TaskSpec | None, host: Host) -> PolicyDecision | None:
        """Ask the policy about this host (not for check-only runs: they change nothing)."""
        if job.policy is None or spec is None or job.options.check_only:
            return None
        try:
            return job.policy.decide(job.task, spec, host)
        except ToolkitError as exc:
            return PolicyDecision(Outcome.SKIPPED, f"refused by policy: {exc.message}")
        except Exception as exc:  # a policy bug stops this host, never lets it run unchecked
            log.exception("policy for %s on %s raised", job.task.name, host.name)
            return PolicyDecision(Outcome.FAILED, f"internal error in the run policy: {exc}")

    def _history(self, task: str, host: str, *, ticket: str | None) -> list[PastAction]:
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

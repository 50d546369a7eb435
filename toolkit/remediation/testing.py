"""A test kit for remediation authors: run a task against scripted replies, no host needed.

Like Invoke's `MockContext`, the transport answers only what was scripted and fails the test on
any other command, so a test pins down exactly what the task sends. The run itself is the real
one (`toolkit.run.runner.Runner` over a scratch ledger): check → apply → verify, changes refused
outside apply, secrets masked, the outcome computed as `itops fix` computes it.

    from toolkit.remediation.testing import Script, run_task

    def test_the_flag_is_created(tmp_path):
        script = Script().on("test -e /tmp/flag", (1, "", ""), (0, "", ""))  # check, then verify
        script.on("touch /tmp/flag", (0, "", ""))
        run = run_task("demo.flag", {}, script, tasks=tmp_path.parent / "tasks", state=tmp_path)
        assert run.outcome == "fixed" and run.sent == ["test -e /tmp/flag", "touch /tmp/flag",
                                                       "test -e /tmp/flag"]

A reply is `(exit_code, stdout, stderr)` or a callable `(command, stdin) -> reply`. Several
replies for one match are used in turn (the last one repeats), so check and verify can differ.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import TransportError
from toolkit.inventory import Host, make_host
from toolkit.remediation.catalog import Catalog, Remediation, Task
from toolkit.remediation.quoting import Command
from toolkit.secrets.credentials import CredentialStore, Redactor, Secret
from toolkit.transports.base import CommandResult, ConnectOptions

Reply = tuple[int, str, str] | Callable[[Command, "bytes | Secret | None"], tuple[int, str, str]]


class UnscriptedCommand(AssertionError):
    """The task sent a command the test did not script."""


@dataclass
class Script:
    """Replies by exact command text or by regular expression (the first match wins)."""

    replies: list[tuple[str | re.Pattern[str], list[Reply]]] = field(default_factory=list)

    def on(self, match: str | re.Pattern[str], *replies: Reply) -> Script:
        if not replies:
            raise ValueError("script at least one reply")
        self.replies.append((match, list(replies)))
        return self

    def reply(self, command: Command, stdin: bytes | Secret | None) -> tuple[int, str, str]:
        for match, queue in self.replies:
            hit = command.text == match if isinstance(match, str) else match.search(command.text)
            if hit:
                reply = queue.pop(0) if len(queue) > 1 else queue[0]
                return reply(command, stdin) if callable(reply) else reply
        raise UnscriptedCommand(f"unscripted command: {command.text}")


class MockTransport:
    """A Transport that answers from a Script and logs every command it was sent: commands
    only, as WinRM offers (a task's `ctx.put`/`ctx.get` is refused on such a host)."""

    def __init__(self, host: Host, script: Script, notices: Sequence[str] = ()) -> None:
        self.host = host
        self.script = script
        self.notices = tuple(notices)
        self.sent: list[Command] = []
        self.stdin: list[bytes | Secret | None] = []
        self.files: list[str] = []
        self.closed = False
        self.interrupted = False
        self.unscripted: UnscriptedCommand | None = None  # the first, re-raised by run_task

    def run(
        self, command: Command, *, stdin: bytes | Secret | None = None, timeout: float | None = None
    ) -> CommandResult:
        if self.closed:
            raise AssertionError(f"command on a closed transport: {command.display}")
        self.sent.append(command)
        self.stdin.append(stdin)
        try:
            rc, out, err = self.script.reply(command, stdin)
        except UnscriptedCommand as exc:  # the runner makes it the host's failure: keep it
            self.unscripted = self.unscripted or exc
            raise
        return CommandResult(command.display, rc, out, err, 0.001)

    def interrupt(self) -> None:
        self.interrupted = True

    def close(self) -> None:
        self.closed = True


class MockSSHTransport(MockTransport):
    """An SSH host: commands, and file transfer (each logged in `files` as "put REMOTE" or
    "get REMOTE"; nothing is copied)."""

    def put(self, local: Path, remote: str) -> None:
        self.files.append(f"put {remote}")

    def get(self, remote: str, local: Path) -> None:
        self.files.append(f"get {remote}")


class MockNetTransport(MockTransport):
    """A network device: `configure` and `save` are sent as "configure: l1 ; l2" and "save",
    and answered by the script like commands; what is recorded is scrubbed as the real
    transport scrubs it (secret-bearing configuration values)."""

    def configure(self, lines: Sequence[str], *, timeout: float | None = None) -> CommandResult:
        text = "configure: " + " ; ".join(line.strip() for line in lines)
        return self.run(Command(text, text, "netcli"))

    def save(self) -> CommandResult:
        return self.run(Command("save", "save", "netcli"))

    def scrub(self, text: str) -> str:
        from toolkit.remediation.network.config import scrub

        return scrub(self.host.platform, text)


# The mock that stands in for each transport a host may use (inventory `transport`).
MOCKS: Mapping[str, type[MockTransport]] = {
    "ssh": MockSSHTransport,
    "winrm": MockTransport,
    "netdev": MockNetTransport,
}


class MockConnector:
    """Stands in for `toolkit.transports.Connector`: one script per host (or one for all)."""

    def __init__(
        self,
        scripts: Script | Mapping[str, Script],
        *,
        credentials: CredentialStore | None = None,
        errors: Mapping[str, TransportError] | None = None,
    ) -> None:
        self.scripts = scripts
        self.errors = dict(errors or {})
        self.credentials = credentials or CredentialStore(Redactor())
        self.options = ConnectOptions()
        self.transports: dict[str, MockTransport] = {}

    def open(self, host: Host) -> MockTransport:
        if host.name in self.errors:
            raise self.errors[host.name]
        script = self.scripts if isinstance(self.scripts, Script) else self.scripts[host.name]
        transport = MOCKS[host.transport](host, script)
        self.transports[host.name] = transport
        return transport

    def close(self) -> None:
        pass


def mock_host(name: str = "host-01", platform: str = "linux", **host_vars: Any) -> Host:
    """An inventory host for a test (nothing connects to its address)."""
    return make_host(name, {"address": "127.0.0.1", "platform": platform, **host_vars}, (), "test")


@dataclass(frozen=True)
class TaskRun:
    """What one scripted run did: its outcome, message, and every command sent."""

    report: Any  # toolkit.run.runner.RunReport
    transport: MockTransport | None

    @property
    def result(self) -> Any:  # toolkit.run.runner.HostResult
        return self.report.results[0]

    @property
    def outcome(self) -> str:
        return str(self.result.outcome)

    @property
    def message(self) -> str:
        return str(self.result.message)

    @property
    def sent(self) -> list[str]:
        return [c.text for c in self.transport.sent] if self.transport else []


def run_task(
    task: str | type[Remediation] | Task,
    params: Mapping[str, Any],
    script: Script,
    *,
    host: Host | None = None,
    check_only: bool = False,
    ticket: str | None = "TEST-1",
    tasks: Path | None = None,
    state: Path | None = None,
) -> TaskRun:
    """Run one task on one host against `script`, as `itops fix` would (see the module doc).

    `task` is a catalog name (the built-in tasks, plus `tasks`, a workspace's tasks folder), a
    class decorated with @remediation, or a Task. A test that wants the ledger, or more hosts,
    builds a `toolkit.run.runner.Runner` with a `MockConnector` itself. A command the script
    does not answer raises UnscriptedCommand here (the runner would make it the host's failure)."""
    from toolkit.ledger import open_ledger
    from toolkit.remediation.catalog import BUILTIN_TASKS
    from toolkit.run.runner import Runner, RunOptions

    if isinstance(task, str):
        entry = Catalog.load([BUILTIN_TASKS, *([tasks] if tasks else [])]).get(task)
    elif isinstance(task, Task):
        entry = task
    else:
        spec = task.__remediation__  # type: ignore[attr-defined]
        entry = Task(spec.name, (spec,))
    target = host or mock_host()
    connector = MockConnector(script)
    with tempfile.TemporaryDirectory(prefix="itops-test-") as scratch:
        folder = state or Path(scratch)
        ledger = open_ledger(
            f"sqlite:///{Path(scratch) / 'ledger.db'}",
            operator="test",
            redactor=connector.credentials.redactor,
        )
        try:
            runner = Runner(
                ledger=ledger,
                connector=connector,  # type: ignore[arg-type]
                credentials=connector.credentials,
                state_dir=folder,
            )
            report = runner.run(
                entry,
                [target],
                params,
                ticket=None if check_only else ticket,
                options=RunOptions(check_only=check_only, forks=1),
            )
        finally:
            ledger.close()
    transport = connector.transports.get(target.name)
    if transport is not None and transport.unscripted is not None:
        raise transport.unscripted  # the test fails on it, not on a puzzling outcome
    return TaskRun(report, transport)

"""A strict scripted WinRM transport and a helper that runs a task through the real Runner.

`StrictTransport` answers PowerShell commands from a script, in order: each expected command is a
regular expression over the script text actually sent, with the reply (stdout/JSON, stderr, exit
code). Any unscripted or unexpected command raises `Unscripted`, a BaseException, so it escapes the
Runner's "a task's exception is that host's failure" handling and fails the test. Every command is
also passed through the real WinRM transport's command-line builder, so a script too long for
cmd.exe that carries a secret is caught here too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.inventory import Host, make_host
from toolkit.ledger import Ledger, open_ledger
from toolkit.remediation.catalog import BUILTIN_TASKS, Catalog
from toolkit.remediation.quoting import Command
from toolkit.run.runner import HostResult, Runner, RunOptions
from toolkit.secrets.credentials import CredentialStore, Redactor, Secret
from toolkit.transports.base import CommandResult
from toolkit.transports.winrm import command_line


class Unscripted(BaseException):
    """The task sent a command the test did not script (or in another order)."""


@dataclass(frozen=True)
class Expect:
    step: str  # check | apply | verify: the step the command must be sent in
    pattern: str  # must be found (re.search) in the PowerShell text sent
    reply: Any = ""  # str: stdout as is; anything else is sent as JSON
    stderr: str = ""
    rc: int = 0
    error: Exception | None = None  # raise this typed transport error instead of answering


@dataclass
class StrictTransport:
    host: Host
    script: list[Expect]
    sent: list[Command] = field(default_factory=list)
    stdin: list[bytes | Secret | None] = field(default_factory=list)
    closed: bool = False
    notices: tuple[str, ...] = ()  # as WinRM: commands only, no file transfer

    def run(
        self, command: Command, *, stdin: bytes | Secret | None = None, timeout: float | None = None
    ) -> CommandResult:
        if command.shell != "powershell":
            raise Unscripted(f"not PowerShell: {command.display}")
        command_line(command)  # the real transport must be able to send it
        if not self.script:
            raise Unscripted(f"unscripted command: {command.display}")
        expect = self.script.pop(0)
        if not re.search(expect.pattern, command.text):
            raise Unscripted(f"expected /{expect.pattern}/ ({expect.step}), got: {command.display}")
        self.sent.append(command)
        self.stdin.append(stdin)
        if expect.error is not None:
            raise expect.error
        out = expect.reply if isinstance(expect.reply, str) else json.dumps(expect.reply)
        return CommandResult(command.display, expect.rc, out, expect.stderr, 0.01)

    def interrupt(self) -> None:
        self.interrupted = True

    def close(self) -> None:
        self.closed = True


class ScriptedConnector:
    """Stands in for toolkit.transports.Connector: one StrictTransport per host name."""

    def __init__(self, scripts: Mapping[str, Sequence[Expect]], credentials: CredentialStore):
        self.transports = {
            name: StrictTransport(_host(name), list(s)) for name, s in scripts.items()
        }
        self.credentials = credentials

    def open(self, host: Host) -> StrictTransport:
        transport = self.transports[host.name]
        transport.host = host
        return transport

    def close(self) -> None:
        pass


def _host(name: str, **extra: Any) -> Host:
    return make_host(
        name,
        {"platform": "windows", "address": "127.0.0.1", "user": "itops", **extra},
        ("windows",),
        "test",
    )


CATALOG = Catalog.load([BUILTIN_TASKS])


@dataclass
class Run:
    result: HostResult
    transport: StrictTransport
    ledger: Ledger
    redactor: Redactor

    @property
    def steps(self) -> list[str]:
        return [c.step for c in self.result.commands]

    def ledger_text(self) -> str:
        return "\n".join(repr(r) for r in self.ledger.records())


def run_task(
    tmp_path: Path,
    task: str,
    params: Mapping[str, str | list[str]],
    script: Sequence[Expect],
    *,
    check_only: bool = False,
    host_vars: Mapping[str, Any] | None = None,
    priority: str | None = None,
) -> Run:
    """Run `task` on one Windows host through the real Runner, ledger and StepContext."""
    redactor = Redactor()
    credentials = CredentialStore(redactor)
    ledger = open_ledger(
        f"sqlite:///{tmp_path / 'ledger.db'}", operator="tester", redactor=redactor
    )
    if priority is not None:
        from toolkit.desk.tickets import ensure

        ensure(ledger, "INC-1042", category="account", priority=priority)
    connector = ScriptedConnector({"ws-042": script}, credentials)
    runner = Runner(ledger=ledger, connector=connector, credentials=credentials)  # type: ignore[arg-type]
    host = _host("ws-042", **(host_vars or {}))
    report = runner.run(
        CATALOG.get(task),
        [host],
        params,
        ticket=None if check_only else "INC-1042",
        options=RunOptions(check_only=check_only, forks=1),
    )
    transport = connector.transports["ws-042"]
    if transport.script:
        raise Unscripted(f"scripted commands never sent: {[e.pattern for e in transport.script]}")
    assert transport.closed, "the runner closes every transport"
    return Run(report.results[0], transport, ledger, redactor)

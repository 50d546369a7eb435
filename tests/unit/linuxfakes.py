"""Run a Linux remediation through the real Runner, ledger and StepContext against a strict
scripted transport (`tests.fakes.Script`: any command it was not scripted for fails the test).

Used where the lab cannot hold the real service (systemd, NetworkManager, dnf): the test checks
the exact commands sent and the findings parsed from recorded outputs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes import Script
from toolkit.inventory import Host, make_host
from toolkit.ledger import Ledger, open_ledger
from toolkit.remediation.catalog import BUILTIN_TASKS, Catalog
from toolkit.remediation.testing import MockSSHTransport as Transport
from toolkit.run.events import RunObserver
from toolkit.run.runner import HostResult, Runner, RunOptions, RunReport
from toolkit.secrets.credentials import CredentialStore, Redactor

CATALOG = Catalog.load([BUILTIN_TASKS])


class Connector:
    def __init__(self, script: Script, credentials: CredentialStore) -> None:
        self.script = script
        self.credentials = credentials
        self.transport: Transport | None = None

    def open(self, host: Host) -> Transport:
        self.transport = Transport(host, self.script)
        return self.transport

    def close(self) -> None:
        pass


@dataclass
class LinuxRun:
    result: HostResult
    report: RunReport
    transport: Transport
    ledger: Ledger
    redactor: Redactor

    @property
    def sent(self) -> list[str]:
        return [c.text for c in self.transport.sent]

    @property
    def steps(self) -> list[str]:
        return [c.step for c in self.result.commands]

    def ledger_text(self) -> str:
        return "\n".join(repr(r) for r in self.ledger.records())

    def result_text(self) -> str:
        return json.dumps(self.result.as_dict(), default=str)


def linux_host(name: str = "web-01", **host_vars: Any) -> Host:
    return make_host(
        name, {"address": "127.0.0.1", "platform": "linux", **host_vars}, ("linux",), "test"
    )


def run_linux(
    tmp_path: Path,
    task: str,
    params: Mapping[str, str | list[str]],
    script: Script,
    *,
    check_only: bool = False,
    host_vars: Mapping[str, Any] | None = None,
    ticket: str | None = "INC-1042",
    priority: str | None = None,
    ledger: Ledger | None = None,
    observers: Sequence[RunObserver] = (),
) -> LinuxRun:
    redactor = ledger.redactor if ledger is not None else Redactor()
    credentials = CredentialStore(redactor)
    if ledger is None:
        ledger = open_ledger(
            f"sqlite:///{tmp_path / 'ledger.db'}", operator="tester", redactor=redactor
        )
    if priority is not None and ticket:
        from toolkit.desk.tickets import ensure

        ensure(ledger, ticket, category="other", priority=priority)
    connector = Connector(script, credentials)
    runner = Runner(
        ledger=ledger,
        connector=connector,  # type: ignore[arg-type]
        credentials=credentials,
        state_dir=tmp_path / "state",
        observers=observers,
    )
    report = runner.run(
        CATALOG.get(task),
        [linux_host(**(host_vars or {}))],
        params,
        ticket=None if check_only and ticket == "INC-1042" else ticket,
        options=RunOptions(check_only=check_only, forks=1),
    )
    result = report.results[0]
    if result.error == "itops-bug":
        raise AssertionError(result.message)  # e.g. an unscripted command
    assert connector.transport is None or connector.transport.closed
    assert connector.transport is not None or result.outcome == "skipped"
    return LinuxRun(result, report, connector.transport, ledger, redactor)  # type: ignore[arg-type]

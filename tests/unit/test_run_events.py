"""Run events: observers see each host's events in order, an observer's failure is never the
host's, and a step context offers only what its host's transport offers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeConnector, hosts
from tests.unit.test_runner import Flag, FlakyLedger, flag_script, task
from toolkit.inventory import Host, make_host
from toolkit.ledger import Ledger
from toolkit.remediation.catalog import Context, Finding, Remediation, remediation
from toolkit.remediation.testing import MockConnector, Script
from toolkit.run.events import HostRun, RunObserver
from toolkit.run.results import HostResult, RunReport
from toolkit.run.runner import Outcome, Runner, RunOptions


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(f"sqlite:///{tmp_path / 'l.db'}", operator="tester")
    yield book
    book.close()


class Log:
    """An observer written against the Protocol alone (no base class): logs every event."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def run_started(self, task: str, hosts: Sequence[Host]) -> None:
        self.events.append(("run", task, [h.name for h in hosts]))

    def host_started(self, run: HostRun) -> None:
        self.events.append(("start", run.host.name, run.action_id is not None))

    def step(self, run: HostRun, name: str) -> None:
        self.events.append(("step", run.host.name, name))

    def host_done(self, run: HostRun, result: HostResult) -> None:
        assert result.action_id == run.action_id
        self.events.append(("done", result.host, str(result.outcome)))

    def run_done(self, report: RunReport) -> None:
        self.events.append(("end", report.exit_code))


class Broken(RunObserver):
    """Raises on every event it sees."""

    def __init__(self) -> None:
        self.calls = 0

    def _boom(self) -> None:
        self.calls += 1
        raise RuntimeError("the progress bar broke")

    def run_started(self, task: str, hosts: Sequence[Host]) -> None:
        self._boom()

    def host_started(self, run: HostRun) -> None:
        self._boom()

    def step(self, run: HostRun, name: str) -> None:
        self._boom()

    def host_done(self, run: HostRun, result: HostResult) -> None:
        self._boom()

    def run_done(self, report: RunReport) -> None:
        self._boom()


def run_flag(book: Ledger, *observers: RunObserver, names: Sequence[str] = ("a",)) -> RunReport:
    conn = FakeConnector({name: flag_script() for name in names})
    runner = Runner(
        ledger=book,
        connector=conn,  # type: ignore[arg-type]
        credentials=conn.credentials,
        observers=observers,
    )
    return runner.run(task(Flag), hosts(*names), {}, ticket="T-1", options=RunOptions(forks=1))


def test_an_observer_sees_a_hosts_events_in_order(ledger: Ledger) -> None:
    log = Log()
    report = run_flag(ledger, log)
    assert report.results[0].outcome == Outcome.FIXED
    assert log.events == [
        ("run", "demo.flag", ["a"]),
        ("start", "a", True),  # the begin record is written before the host is touched
        ("step", "a", "check"),
        ("step", "a", "apply"),
        ("step", "a", "verify"),
        ("done", "a", "fixed"),
        ("end", 0),
    ]


def test_an_observer_that_raises_stops_neither_the_host_nor_the_other_observers(
    ledger: Ledger,
) -> None:
    broken, log = Broken(), Log()
    report = run_flag(ledger, broken, log, names=("a", "b"))
    assert [r.outcome for r in report.results] == [Outcome.FIXED, Outcome.FIXED]
    assert broken.calls == 1 + 2 * 5 + 1  # every event reached it, and each raised
    assert [e for e in log.events if e[0] == "done"] == [
        ("done", "a", "fixed"),
        ("done", "b", "fixed"),
    ]
    assert ledger.verify().ok and not ledger.verify().open_actions


def test_a_host_the_ledger_cannot_record_is_done_without_starting(tmp_path: Path) -> None:
    # The ledger recorder gates; observers still learn the host's (failed) result.
    book = FlakyLedger(f"sqlite:///{tmp_path / 'l.db'}", operator="tester")
    log = Log()
    try:
        report = run_flag(book, log, names=("a", "b"))
    finally:
        book.close()
    assert report.results[1].error == "ledger-unavailable"
    assert [e for e in log.events if e[1] == "b"] == [("done", "b", "failed")]


def test_a_subclass_overrides_only_the_events_it_needs(ledger: Ledger) -> None:
    class Counter(RunObserver):
        done = 0

        def host_done(self, run: HostRun, result: HostResult) -> None:
            type(self).done += 1

    run_flag(ledger, Counter(), names=("a", "b", "c"))
    assert Counter.done == 3


@remediation("demo.fetch", category="other", platforms={"linux", "windows", "cisco_ios"},
             summary="Fetches a file")  # fmt: skip
class Fetch(Remediation):
    def check(self, ctx: Context) -> Finding:
        ctx.get("/etc/motd", Path("/nonexistent/motd"))
        return Finding.healthy("fetched")

    def apply(self, ctx: Context) -> None:  # pragma: no cover - check is ok
        pass


def _host(name: str, platform: str) -> Host:
    return make_host(name, {"address": "127.0.0.1", "platform": platform}, (), "test")


def test_a_context_refuses_file_transfer_on_a_host_whose_transport_has_none(
    ledger: Ledger,
) -> None:
    connector = MockConnector(Script())
    runner = Runner(
        ledger=ledger,
        connector=connector,  # type: ignore[arg-type]
        credentials=connector.credentials,
    )
    targets = [_host("srv", "linux"), _host("win", "windows"), _host("sw", "cisco_ios")]
    report = runner.run(task(Fetch), targets, {}, ticket=None, options=RunOptions(check_only=True))
    ssh, win, switch = report.results
    assert ssh.outcome == Outcome.ALREADY_OK and connector.transports["srv"].files == [
        "get /etc/motd"
    ]
    for result, kind in ((win, "winrm"), (switch, "netdev")):
        assert result.outcome == Outcome.FAILED and result.error == "unsupported"
        assert result.message == (
            f"check: {result.host}: its {kind} transport cannot transfer files "
            "(refused to download /etc/motd)"
        )
        assert connector.transports[result.host].sent == []


def test_each_transport_keeps_the_protocols_it_offers_and_no_others() -> None:
    from toolkit.transports.base import ConfigSession, FileTransfer
    from toolkit.transports.netdev import NetdevTransport
    from toolkit.transports.ssh import SSHTransport
    from toolkit.transports.winrm import WinRMTransport

    offers = {
        kind.__name__: (issubclass(kind, FileTransfer), issubclass(kind, ConfigSession))
        for kind in (SSHTransport, WinRMTransport, NetdevTransport)
    }
    assert offers == {
        "SSHTransport": (True, False),
        "WinRMTransport": (False, False),  # no put/get that only raise
        "NetdevTransport": (False, True),
    }
    for kind in (SSHTransport, WinRMTransport, NetdevTransport):
        assert all(callable(getattr(kind, m)) for m in ("run", "interrupt", "close"))

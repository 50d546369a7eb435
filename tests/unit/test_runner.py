"""The runner's contracts, with strict scripted transports: ledger first, one connection per host,
read/change verbs, failures as data, batches and max-fail-percent, tickets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeConnector, Script, commands, hosts
from toolkit.errors import (
    AuthFailed,
    HostKeyMismatch,
    TicketRequired,
    ToolkitError,
    Unreachable,
    ValidationError,
)
from toolkit.ledger import Ledger
from toolkit.remediation.catalog import (
    Context,
    Finding,
    Param,
    Remediation,
    RunInfo,
    Task,
    network,
    remediation,
)
from toolkit.remediation.quoting import cmd
from toolkit.run.runner import Outcome, Runner, RunOptions
from toolkit.secrets.credentials import CredentialStore, Redactor


@remediation(
    "demo.flag", category="other", platforms={"linux"}, summary="Ensure a flag file exists"
)
class Flag(Remediation):
    """Example:
    itops fix demo.flag lab --ticket T-1
    """

    name = Param(str, default="flag", help="flag name")

    def check(self, ctx: Context) -> Finding:
        r = ctx.read(cmd("test", "-e", f"/tmp/{self.name}"))
        return Finding.healthy("present") if r.exit_code == 0 else Finding.problem("missing")

    def apply(self, ctx: Context) -> None:
        ctx.change(cmd("touch", f"/tmp/{self.name}"))


@remediation("demo.sneaky", category="other", platforms={"linux"}, summary="Changes during check")
class Sneaky(Remediation):
    def check(self, ctx: Context) -> Finding:
        ctx.change(cmd("rm", "-rf", "/tmp/x"))
        return Finding.problem("unreachable code")

    def apply(self, ctx: Context) -> None:
        raise AssertionError("never reached")


@remediation("demo.buggy", category="other", platforms={"linux"}, summary="Raises")
class Buggy(Remediation):
    def check(self, ctx: Context) -> Finding:
        raise KeyError("boom")

    def apply(self, ctx: Context) -> None:  # pragma: no cover
        pass


def task(cls: type[Remediation]) -> Task:
    spec = cls.__remediation__  # type: ignore[attr-defined]
    return Task(spec.name, (spec,))


def flag_script(present: bool = False) -> Script:
    state = {"present": present}

    def test(command: Any, stdin: Any) -> tuple[int, str, str]:
        return (0 if state["present"] else 1, "", "")

    def touch(command: Any, stdin: Any) -> tuple[int, str, str]:
        state["present"] = True
        return (0, "", "")

    return Script().on("test -e /tmp/flag", test).on("touch /tmp/flag", touch)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(f"sqlite:///{tmp_path / 'l.db'}", operator="tester")
    yield book
    book.close()


def make_runner(ledger: Ledger, connector: FakeConnector) -> Runner:
    return Runner(
        ledger=ledger,
        connector=connector,  # type: ignore[arg-type]
        credentials=connector.credentials,
    )


def test_fix_runs_check_apply_verify_with_one_connection_per_host(ledger: Ledger) -> None:
    targets = hosts("a", "b")
    conn = FakeConnector({"a": flag_script(), "b": flag_script(present=True)})
    report = make_runner(ledger, conn).run(
        task(Flag), targets, {}, ticket="T-1", options=RunOptions()
    )
    assert [(r.host, r.outcome) for r in report.results] == [
        ("a", Outcome.FIXED),
        ("b", Outcome.ALREADY_OK),
    ]
    assert sorted(conn.opened) == ["a", "b"]
    assert commands(conn.log, "a") == ["test -e /tmp/flag", "touch /tmp/flag", "test -e /tmp/flag"]
    assert all(t.closed for t in conn.transports)
    assert report.exit_code == 0
    kinds = [(r.kind, r.host) for r in ledger.records()]
    assert kinds.count(("action.begin", "a")) == 1 and kinds.count(("action.finish", "a")) == 1
    finish = next(r for r in ledger.records(host="a", kind="action.finish"))
    assert finish.outcome == "fixed" and '"step":"apply"' in (finish.commands or "")
    assert ledger.verify().ok


def test_check_only_never_calls_apply(ledger: Ledger) -> None:
    conn = FakeConnector({"a": flag_script()})
    report = make_runner(ledger, conn).run(
        task(Flag), hosts("a"), {}, ticket=None, options=RunOptions(check_only=True)
    )
    assert report.results[0].outcome == Outcome.WOULD_FIX and report.exit_code == 4
    assert commands(conn.log, "a") == ["test -e /tmp/flag"]


def test_a_change_outside_apply_is_refused_by_the_api(ledger: Ledger) -> None:
    conn = FakeConnector({"a": Script()})  # any command reaching the transport would fail loudly
    report = make_runner(ledger, conn).run(
        task(Sneaky), hosts("a"), {}, ticket="T-1", options=RunOptions()
    )
    result = report.results[0]
    assert result.outcome == Outcome.FAILED and result.error == "change-refused"
    assert "check may only read" in result.message
    assert conn.log == []


def test_one_hosts_failure_is_data_and_the_others_go_on(ledger: Ledger) -> None:
    targets = hosts("ok", "down", "badkey", "badauth", "bug")
    conn = FakeConnector(
        {"ok": flag_script(), "bug": Script()},
        errors={
            "down": Unreachable("down", "connection refused"),
            "badkey": HostKeyMismatch("badkey", "key differs"),
            "badauth": AuthFailed("badauth", "refused"),
        },
    )
    runner = make_runner(ledger, conn)
    report = runner.run(task(Flag), targets[:4], {}, ticket="T-1", options=RunOptions())
    outcome = {r.host: (r.outcome, r.error) for r in report.results}
    assert outcome == {
        "ok": (Outcome.FIXED, None),
        "down": (Outcome.UNREACHABLE, "unreachable"),
        "badkey": (Outcome.UNREACHABLE, "host-key-mismatch"),
        "badauth": (Outcome.UNREACHABLE, "auth-failed"),
    }
    assert report.exit_code == 3
    buggy = make_runner(ledger, conn).run(
        task(Buggy), hosts("bug"), {}, ticket="T-1", options=RunOptions()
    )
    assert buggy.results[0].outcome == Outcome.FAILED
    assert buggy.results[0].error == "itops-bug" and "KeyError" in buggy.results[0].message
    assert buggy.exit_code == 1
    assert ledger.verify().ok and ledger.verify().open_actions == ()


def test_changes_need_a_ticket_and_nothing_is_recorded_without_one(ledger: Ledger) -> None:
    conn = FakeConnector({"a": flag_script()})
    with pytest.raises(TicketRequired):
        make_runner(ledger, conn).run(task(Flag), hosts("a"), {}, ticket=None, options=RunOptions())
    assert conn.opened == [] and list(ledger.records()) == []


def test_bad_parameters_are_refused_before_any_connection(ledger: Ledger) -> None:
    conn = FakeConnector({"a": flag_script()})
    for bad in ("$(reboot)", "-rf", "a\nb", "x y"):
        with pytest.raises(ValidationError):
            make_runner(ledger, conn).run(
                task(Flag), hosts("a"), {"name": bad}, ticket="T-1", options=RunOptions()
            )
    assert conn.opened == [] and list(ledger.records()) == []


def test_serial_batches_and_max_fail_percent_stop_later_batches(ledger: Ledger) -> None:
    names = [f"h{i}" for i in range(6)]
    down = {n: Unreachable(n, "connection refused") for n in names[:2]}
    conn = FakeConnector({n: flag_script() for n in names}, errors=down)
    report = make_runner(ledger, conn).run(
        task(Flag),
        hosts(*names),
        {},
        ticket="T-1",
        options=RunOptions(serial=2, max_fail_percent=40),
    )
    outcomes = [r.outcome for r in report.results]
    assert outcomes[:2] == [Outcome.UNREACHABLE] * 2
    assert outcomes[2:] == [Outcome.SKIPPED] * 4
    assert "max-fail-percent" in report.results[-1].message
    assert conn.opened == ["h0", "h1"] or sorted(conn.opened) == ["h0", "h1"]


def test_hosts_of_another_platform_are_skipped(ledger: Ledger) -> None:
    conn = FakeConnector({})
    report = make_runner(ledger, conn).run(
        task(Flag), hosts("w", platform="windows"), {}, ticket="T-1", options=RunOptions()
    )
    assert report.results[0].outcome == Outcome.SKIPPED and conn.opened == []
    assert report.exit_code == 0


def test_secrets_resolved_for_a_run_are_masked_everywhere(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = "Runner-Canary-51"
    monkeypatch.setenv("T_CANARY", canary)

    @remediation("demo.secret", category="other", platforms={"linux"}, summary="uses a secret")
    class UsesSecret(Remediation):
        pw = Param(str, secret=True, required=True)

        def check(self, ctx: Context) -> Finding:
            return Finding.problem("needs it")

        def apply(self, ctx: Context) -> None:
            ctx.change(cmd("chpasswd"), stdin=self.pw)
            raise ValidationError(f"remote said: bad password {self.pw.reveal()}")

    def echo(command: Any, stdin: Any) -> tuple[int, str, str]:
        return (0, f"got {stdin.reveal()}\n", "")

    conn = FakeConnector(
        {"a": Script().on("chpasswd", echo)}, credentials=CredentialStore(Redactor())
    )
    report = make_runner(ledger, conn).run(
        task(UsesSecret), hosts("a"), {"pw": "env:T_CANARY"}, ticket="T-1", options=RunOptions()
    )
    text = repr(report.as_dict()) + repr([r.as_dict() for r in ledger.records()])
    assert canary not in text and "********" in text
    assert report.results[0].outcome == Outcome.FAILED


@remediation("demo.finishing", category="other", platforms={"linux"}, summary="Has a run hook")
class Finishing(Remediation):
    seen: list[RunInfo] = []  # noqa: RUF012 - the test reads what the hook was given

    def check(self, ctx: Context) -> Finding:
        return Finding.problem("always")

    def apply(self, ctx: Context) -> None:
        ctx.note(str(ctx.artifacts("demo")))

    def verify(self, ctx: Context) -> Finding:
        return Finding.healthy("done")

    @classmethod
    def finish_run(cls, run: RunInfo) -> list[str]:
        cls.seen.append(run)
        if run.ticket == "T-broken":
            raise ToolkitError("the commit failed")
        return [f"{len(run.outcomes)} host(s) finished"]


def test_finish_run_sees_every_outcome_once_and_its_failure_fails_the_run(
    ledger: Ledger, tmp_path: Path
) -> None:
    conn = FakeConnector({"a": Script(), "b": Script()})
    runner = Runner(
        ledger=ledger,
        connector=conn,  # type: ignore[arg-type]
        credentials=conn.credentials,
        state_dir=tmp_path / "state",
    )
    report = runner.run(task(Finishing), hosts("a", "b"), {}, ticket="T-1", options=RunOptions())
    assert report.notes == ("2 host(s) finished",) and report.exit_code == 0
    assert Finishing.seen[-1].outcomes == {"a": "fixed", "b": "fixed"}
    assert Finishing.seen[-1].artifacts("demo") == tmp_path / "state" / "demo"
    assert str(tmp_path / "state" / "demo") in report.results[0].notes
    broken = runner.run(task(Finishing), hosts("a"), {}, ticket="T-broken", options=RunOptions())
    assert broken.notes == ("error: the commit failed",) and broken.exit_code == 1


def test_configure_and_save_are_changes_and_need_a_network_device(ledger: Ledger) -> None:
    @remediation(
        "demo.configure", category="other", platforms={"linux", "cisco_ios"}, summary="Configures"
    )
    class Configure(Remediation):
        def check(self, ctx: Context) -> Finding:
            network(ctx).configure(["hostname x"])
            return Finding.problem("unreachable")

        def apply(self, ctx: Context) -> None:
            network(ctx).save()

    conn = FakeConnector({"a": Script(), "sw": Script()})
    report = make_runner(ledger, conn).run(
        task(Configure),
        [*hosts("a"), *hosts("sw", platform="cisco_ios")],
        {},
        ticket="T-1",
        options=RunOptions(),
    )
    linux, switch = report.results
    # A Linux host's context has no configuration verbs: refused by name, nothing sent.
    assert linux.outcome == Outcome.FAILED and linux.error == "unsupported"
    assert linux.message == "check: a is not a network device: it has no configuration to change"
    # A network device's context has them, and they are changes: refused outside apply.
    assert switch.error == "change-refused" and "check may only read" in switch.message
    assert conn.log == []


class FlakyLedger(Ledger):
    """A ledger that cannot record one host's begin and another's finish (a dropped database
    connection, a full disk)."""

    def begin(self, **kwargs: Any) -> str:
        if kwargs["host"] == "b":
            raise ToolkitError("database is locked")
        return super().begin(**kwargs)

    def finish(self, action_id: str, **kwargs: Any) -> Any:
        if kwargs["host"] == "c":
            raise OSError("disk full")
        return super().finish(action_id, **kwargs)


def test_a_ledger_failure_is_that_hosts_outcome_and_nothing_unrecorded_runs(
    tmp_path: Path,
) -> None:
    book = FlakyLedger(f"sqlite:///{tmp_path / 'l.db'}", operator="tester")
    conn = FakeConnector({h: flag_script() for h in "abcd"})
    try:
        report = make_runner(book, conn).run(
            task(Flag), hosts("a", "b", "c", "d"), {}, ticket="T-1", options=RunOptions()
        )
        by_host = {r.host: r for r in report.results}
        assert {h: r.outcome for h, r in by_host.items()} == {
            "a": Outcome.FIXED,
            "b": Outcome.FAILED,
            "c": Outcome.FAILED,
            "d": Outcome.FIXED,
        }
        assert "b" not in conn.opened  # never contacted: its begin was not recorded
        assert by_host["b"].error == by_host["c"].error == "ledger-unavailable"
        assert by_host["c"].message.startswith("fixed on the host, but the ledger could not")
        assert report.exit_code != 0
        assert book.verify().open_actions == (by_host["c"].action_id,)  # visible as open
    finally:
        book.close()


def test_ctrl_c_hands_back_the_results_of_the_hosts_that_finished(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What finished before Ctrl-C (say, a host that now has a new password) is not lost with
    # the run: the interrupt carries those hosts' results for the CLI to deliver.
    import concurrent.futures

    import toolkit.run.runner as runner_module
    from toolkit.run.runner import RunInterrupted

    calls = {"n": 0}

    def wait_then_interrupt(fs: Any, timeout: float, return_when: str) -> Any:
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        done, _ = concurrent.futures.wait(fs, return_when=concurrent.futures.ALL_COMPLETED)
        first = next(f for f in done if f.result().host == "a")
        return {first}, set(fs) - {first}

    monkeypatch.setattr(runner_module, "wait", wait_then_interrupt)
    conn = FakeConnector({"a": flag_script(), "b": flag_script()})
    with pytest.raises(RunInterrupted) as stop:
        make_runner(ledger, conn).run(
            task(Flag), hosts("a", "b"), {}, ticket="T-1", options=RunOptions()
        )
    assert [(r.host, r.outcome) for r in stop.value.results] == [
        ("a", Outcome.FIXED),
        ("b", Outcome.FIXED),  # it was running: it finished its step and was collected
    ]
    assert isinstance(stop.value, KeyboardInterrupt)  # the CLI's Ctrl-C handling still applies

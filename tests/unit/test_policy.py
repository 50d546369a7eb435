"""The run policy through the runner: windows, break-glass, approvals — decided before connecting,
recorded in each host's ledger records, refusals recorded and nothing run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clocks import FakeClock
from tests.fakes import FakeConnector, Script
from toolkit.errors import ConfigError, NotFound
from toolkit.inventory import Host, make_host
from toolkit.ledger import Entry, Ledger
from toolkit.remediation.catalog import Context, Finding, Param, Remediation, Task, remediation
from toolkit.remediation.quoting import cmd
from toolkit.run import approvals
from toolkit.run.approvals import ApprovalError
from toolkit.run.policy import PolicySettings, RunRefused, prepare
from toolkit.run.runner import Outcome, Runner, RunOptions


@remediation(
    "demo.restart",
    category="software",
    platforms={"linux"},
    summary="Restart a service",
    disruptive=True,
)
class Restart(Remediation):
    def check(self, ctx: Context) -> Finding:
        return Finding.problem("stale") if ctx.read(cmd("stale")).exit_code else Finding.healthy("")

    def apply(self, ctx: Context) -> None:
        ctx.change(cmd("restart"))


@remediation(
    "demo.rotate", category="account", platforms={"linux"}, summary="Rotate a key", risky=True
)
class Rotate(Remediation):
    user = Param(str, default="svc")

    def check(self, ctx: Context) -> Finding:
        return Finding.problem("old") if ctx.read(cmd("stale")).exit_code else Finding.healthy("")

    def apply(self, ctx: Context) -> None:
        ctx.change(cmd("restart"))


def task(cls: type[Remediation]) -> Task:
    spec = cls.__remediation__  # type: ignore[attr-defined]
    return Task(spec.name, (spec,))


SETTINGS = PolicySettings.from_config(
    {
        "maintenance_windows": {
            "night": {"timezone": "Europe/Berlin", "weekly": ["Sun 01:00-05:00"]},
        },
        "policy": {"approval_ttl": "2h"},
    }
)
INSIDE = "2026-11-22T02:00+01:00"  # Sunday 02:00 Berlin
OUTSIDE = "2026-11-23T12:00+01:00"  # Monday noon


def servers(*names: str, window: str | None = "night") -> list[Host]:
    extra = {"maintenance_window": window} if window else {}
    return [make_host(n, {"address": "127.0.0.1", **extra}, (), "test") for n in names]


def script() -> Script:
    state = {"stale": True}

    def stale(c: Any, s: Any) -> tuple[int, str, str]:
        return (1 if state["stale"] else 0, "", "")

    def restart(c: Any, s: Any) -> tuple[int, str, str]:
        state["stale"] = False
        return (0, "", "")

    return Script().on("stale", stale).on("restart", restart)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(f"sqlite:///{tmp_path / 'l.db'}", operator="alice")
    yield book
    book.close()


def open_ticket(ledger: Ledger, ticket: str, priority: str = "P3") -> None:
    ledger.append(Entry("ticket.opened", ticket=ticket, data={"priority": priority}))


def run(
    ledger: Ledger,
    t: Task,
    targets: list[Host],
    clock: FakeClock,
    *,
    ticket: str = "CHG-1",
    params: dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[Any, FakeConnector]:
    policy = prepare(
        ledger,
        SETTINGS,
        clock=clock,
        task=t,
        hosts=targets,
        params=params or {},
        ticket=ticket,
        **kwargs,
    )
    conn = FakeConnector({h.name: script() for h in targets})
    runner = Runner(ledger=ledger, connector=conn, credentials=conn.credentials, policy=policy)  # type: ignore[arg-type]
    report = runner.run(t, targets, params or {}, ticket=ticket, options=RunOptions())
    return report, conn


def begin_policy(ledger: Ledger, host: str) -> dict[str, Any]:
    rec = list(ledger.records(host=host, kind="action.begin"))[-1]  # the latest run's
    policy: dict[str, Any] = rec.info["policy"]
    return policy


def test_disruptive_task_runs_inside_its_window(ledger: Ledger) -> None:
    report, conn = run(ledger, task(Restart), servers("srv-1"), FakeClock(INSIDE))
    assert conn.opened == ["srv-1"]
    assert report.results[0].outcome == Outcome.FIXED
    assert begin_policy(ledger, "srv-1")["decision"] == "allowed"


def test_disruptive_task_outside_window_is_skipped_without_connecting(ledger: Ledger) -> None:
    report, conn = run(ledger, task(Restart), servers("srv-1", "srv-2"), FakeClock(OUTSIDE))
    assert {r.outcome for r in report.results} == {Outcome.SKIPPED}
    assert report.results[0].message.startswith("outside window night (Europe/Berlin)")
    assert "next opens Sun 2026-11-29 01:00 CET" in report.results[0].message
    assert conn.opened == [], "nothing connects outside the window"
    assert begin_policy(ledger, "srv-1")["decision"] == "outside-window"
    finish = next(ledger.records(host="srv-1", kind="action.finish"))
    assert finish.outcome == "skipped" and finish.info["policy"]["windows"] == ["night"]
    assert report.exit_code == 0


def test_hosts_without_a_window_are_free_unless_the_workspace_requires_one(
    ledger: Ledger,
) -> None:
    report, _ = run(ledger, task(Restart), servers("ws-1", window=None), FakeClock(OUTSIDE))
    assert report.results[0].outcome == Outcome.FIXED
    strict = PolicySettings(windows=SETTINGS.windows, require_window=True)
    policy = prepare(
        ledger,
        strict,
        clock=FakeClock(OUTSIDE),
        task=task(Restart),
        hosts=servers("ws-2", window=None),
        params={},
        ticket="CHG-1",
    )
    decision = policy.decide(task(Restart), task(Restart).specs[0], servers("ws-2", window=None)[0])
    assert decision.outcome == Outcome.SKIPPED and "no maintenance window" in decision.message


def test_break_glass_on_a_p1_ticket_runs_outside_the_window_and_is_recorded(
    ledger: Ledger,
) -> None:
    open_ticket(ledger, "INC-9", "P1")
    report, _ = run(
        ledger,
        task(Restart),
        servers("srv-1"),
        FakeClock(OUTSIDE),
        ticket="INC-9",
        break_glass="core switch down, users cannot work",
    )
    assert report.results[0].outcome == Outcome.FIXED
    decision = begin_policy(ledger, "srv-1")
    assert decision["decision"] == "break-glass"
    assert decision["reason"] == "core switch down, users cannot work"
    event = next(ledger.records(kind="policy.break-glass"))
    assert event.ticket == "INC-9" and event.info["hosts"] == ["srv-1"]


def test_break_glass_on_a_lower_priority_ticket_is_refused_and_recorded(ledger: Ledger) -> None:
    open_ticket(ledger, "INC-10", "P2")
    with pytest.raises(RunRefused, match="only for P1 tickets; INC-10 is P2"):
        run(
            ledger,
            task(Restart),
            servers("srv-1"),
            FakeClock(OUTSIDE),
            ticket="INC-10",
            break_glass="impatient",
        )
    refused = next(ledger.records(kind="run.refused"))
    assert refused.ticket == "INC-10" and "P1" in refused.info["reason"]
    assert not list(ledger.records(kind="action.begin")), "nothing ran"


def test_an_unknown_window_refuses_the_run_and_records_it(ledger: Ledger) -> None:
    with pytest.raises(RunRefused, match="unknown maintenance window 'nihgt'") as err:
        run(ledger, task(Restart), servers("srv-1", window="nihgt"), FakeClock(INSIDE))
    assert err.value.hint == "did you mean: night?"
    assert next(ledger.records(kind="run.refused")).info["hosts"] == ["srv-1"]
    assert not list(ledger.records(kind="action.begin"))
    with pytest.raises(RunRefused, match="unknown maintenance window 'weekend'"):
        run(ledger, task(Restart), servers("srv-1"), FakeClock(INSIDE), job_window="weekend")


def test_risky_task_records_a_request_and_ends_needs_approval(ledger: Ledger) -> None:
    report, conn = run(ledger, task(Rotate), servers("srv-1", "srv-2"), FakeClock(OUTSIDE))
    assert {r.outcome for r in report.results} == {Outcome.NEEDS_APPROVAL}
    assert report.exit_code == 5
    assert conn.opened == []
    request = next(ledger.records(kind="approval.requested"))
    rid = request.info["request_id"]
    assert approvals.REQUEST_ID.fullmatch(rid)
    assert request.info["hosts"] == ["srv-1", "srv-2"] and request.ticket == "CHG-1"
    assert f"itops approve {rid}" in report.results[0].message
    assert begin_policy(ledger, "srv-2")["approval_request"] == rid


def test_approval_by_another_operator_lets_exactly_that_run_through(
    ledger: Ledger, tmp_path: Path
) -> None:
    clock = FakeClock(OUTSIDE)
    targets = servers("srv-1", "srv-2")
    run(ledger, task(Rotate), targets, clock, params={"user": "svc"})
    rid = next(ledger.records(kind="approval.requested")).info["request_id"]

    # alice asked; alice cannot approve
    with pytest.raises(ApprovalError, match="self-approval: alice requested this change"):
        approvals.grant(ledger, rid, clock=clock)
    assert next(ledger.records(kind="approval.refused")).info["request_id"] == rid

    bob = Ledger(ledger.url, operator="bob")
    try:
        granted = approvals.grant(bob, rid, clock=clock, ttl=SETTINGS.approval_ttl)
        assert granted.approved_by == "bob" and granted.binding.hosts == ("srv-1", "srv-2")
        with pytest.raises(ApprovalError, match="already approved"):
            approvals.grant(bob, rid, clock=clock)
    finally:
        bob.close()

    clock.advance(minutes=30)
    report, conn = run(ledger, task(Rotate), targets, clock, params={"user": "svc"})
    assert {r.outcome for r in report.results} == {Outcome.FIXED}
    assert begin_policy(ledger, "srv-1")["approved_by"] == "bob"
    assert next(ledger.records(kind="approval.used")).info["request_id"] == rid

    # other parameters or other hosts: not covered — a new request, nothing runs
    report, conn = run(ledger, task(Rotate), targets, clock, params={"user": "root"})
    assert {r.outcome for r in report.results} == {Outcome.NEEDS_APPROVAL} and conn.opened == []
    report, conn = run(ledger, task(Rotate), servers("srv-1"), clock, params={"user": "svc"})
    assert report.results[0].outcome == Outcome.NEEDS_APPROVAL and conn.opened == []
    # another ticket: not covered either
    report, conn = run(ledger, task(Rotate), targets, clock, ticket="CHG-2", params={"user": "svc"})
    assert report.results[0].outcome == Outcome.NEEDS_APPROVAL and conn.opened == []
    # and after the TTL it has expired
    clock.advance(hours=2)
    report, conn = run(ledger, task(Rotate), targets, clock, params={"user": "svc"})
    assert report.results[0].outcome == Outcome.NEEDS_APPROVAL and conn.opened == []
    assert len(list(ledger.records(kind="approval.requested"))) == 5


def _granted(ledger: Ledger, clock: FakeClock, targets: list[Host], params: dict[str, Any]) -> str:
    run(ledger, task(Rotate), targets, clock, params=params)
    rid: str = list(ledger.records(kind="approval.requested"))[-1].info["request_id"]
    bob = Ledger(ledger.url, operator="bob")
    try:
        approvals.grant(bob, rid, clock=clock, ttl=SETTINGS.approval_ttl)
    finally:
        bob.close()
    return rid


@pytest.mark.parametrize(
    ("hosts_", "params", "message"),
    [
        (["srv-1"], {"user": "svc"}, "it is for hosts srv-1, srv-2, not srv-1"),
        (["srv-1", "srv-2"], {"user": "root"}, "it was given for different parameters"),
    ],
)
def test_a_mismatched_approval_is_refused_recorded_and_nothing_runs(
    ledger: Ledger, hosts_: list[str], params: dict[str, Any], message: str
) -> None:
    clock = FakeClock(OUTSIDE)
    rid = _granted(ledger, clock, servers("srv-1", "srv-2"), {"user": "svc"})
    begun = len(list(ledger.records(kind="action.begin")))
    with pytest.raises(ApprovalError, match=message):
        run(ledger, task(Rotate), servers(*hosts_), clock, params=params, approval_id=rid)
    refused = list(ledger.records(kind="approval.refused"))[-1]
    assert refused.info["request_id"] == rid and message in refused.info["reason"]
    assert len(list(ledger.records(kind="action.begin"))) == begun, "nothing ran"


def test_an_expired_approval_is_refused_recorded_and_nothing_runs(ledger: Ledger) -> None:
    clock = FakeClock(OUTSIDE)
    targets = servers("srv-1", "srv-2")
    rid = _granted(ledger, clock, targets, {"user": "svc"})
    clock.advance(hours=2, seconds=1)
    begun = len(list(ledger.records(kind="action.begin")))
    with pytest.raises(ApprovalError, match="approval expired at"):
        run(ledger, task(Rotate), targets, clock, params={"user": "svc"}, approval_id=rid)
    assert "expired" in list(ledger.records(kind="approval.refused"))[-1].info["reason"]
    assert len(list(ledger.records(kind="action.begin"))) == begun


def test_a_stale_request_cannot_be_approved(ledger: Ledger) -> None:
    clock = FakeClock(OUTSIDE)
    run(ledger, task(Rotate), servers("srv-1"), clock)
    rid = next(ledger.records(kind="approval.requested")).info["request_id"]
    clock.advance(days=8)
    bob = Ledger(ledger.url, operator="bob")
    try:
        with pytest.raises(ApprovalError, match="the request expired"):
            approvals.grant(bob, rid, clock=clock)
        with pytest.raises(NotFound, match="no approval request APR-00000000"):
            approvals.grant(bob, "APR-00000000", clock=clock)
    finally:
        bob.close()


def test_check_runs_and_runs_without_a_policy_are_unchanged(ledger: Ledger) -> None:
    conn = FakeConnector({"srv-1": script()})
    runner = Runner(ledger=ledger, connector=conn, credentials=conn.credentials)  # type: ignore[arg-type]
    report = runner.run(task(Rotate), servers("srv-1"), {}, ticket="T-1", options=RunOptions())
    assert report.results[0].outcome == Outcome.FIXED
    assert "policy" not in next(ledger.records(kind="action.begin")).info


@remediation(
    "demo.trunk",
    category="network",
    platforms={"linux"},
    summary="Change a trunk",
    risky_on_core=True,
)
class Trunk(Remediation):
    def check(self, ctx: Context) -> Finding:
        return Finding.problem("old") if ctx.read(cmd("stale")).exit_code else Finding.healthy("")

    def apply(self, ctx: Context) -> None:
        ctx.change(cmd("restart"))


def test_a_task_risky_on_core_devices_holds_only_the_core_ones(ledger: Ledger) -> None:
    settings = PolicySettings.from_config({"policy": {"core_groups": ["spine"]}})
    spec = task(Trunk).specs[0]
    access = make_host("acc-1", {"address": "127.0.0.1"}, ("access",), "test")
    spine = make_host("sp-1", {"address": "127.0.0.1"}, ("spine",), "test")
    role = make_host("rt-1", {"address": "127.0.0.1", "device_role": "core"}, (), "test")
    assert [settings.is_risky(spec, {}, h) for h in (access, spine, role)] == [False, True, True]
    assert PolicySettings().is_core(make_host("c", {"address": "x"}, ("core",), "test"))

    policy = prepare(
        ledger,
        settings,
        clock=FakeClock(OUTSIDE),
        task=task(Trunk),
        hosts=[access, spine],
        params={},
        ticket="CHG-7",
    )
    request = next(ledger.records(kind="approval.requested"))
    assert request.info["hosts"] == ["sp-1"], "the approval is bound to the core device only"
    assert policy.decide(task(Trunk), spec, access).outcome is None
    assert policy.decide(task(Trunk), spec, spine).outcome == Outcome.NEEDS_APPROVAL


def test_core_groups_must_be_a_list_of_names() -> None:
    with pytest.raises(ConfigError, match=r"\[policy\] core_groups must be a list of inventory"):
        PolicySettings.from_config({"policy": {"core_groups": "core"}})

"""The run policy through the runner: windows, break-glass, approvals — decided before connecting,
recorded in each host's ledger records, refusals recorded and nothing run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.clocks import FakeClock
from tests.fakes import FakeConnector, Script
from tests.signers import NAMES, Operators
from toolkit.errors import ConfigError, NotFound
from toolkit.inventory import Host, make_host
from toolkit.ledger import Entry, Ledger
from toolkit.remediation.catalog import Context, Finding, Param, Remediation, Task, remediation
from toolkit.remediation.quoting import cmd
from toolkit.run import approvals
from toolkit.run.approvals import ApprovalError
from toolkit.run.policy import PolicySettings, RunRefused, prepare
from toolkit.run.runner import Outcome, Runner, RunOptions
from toolkit.secrets.identity import Identity


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


IDS: dict[str, Identity] = {}  # each test's operators: their keys, its allowed_signers


@pytest.fixture(autouse=True)
def identities(operators: Operators, tmp_path: Path) -> Iterator[dict[str, Identity]]:
    """alice, bob and carol, each with their own key listed in this test's allowed_signers."""
    allowed = operators.write(tmp_path / "allowed_signers")
    IDS.update({n: operators.identity(n, allowed) for n in NAMES})
    yield IDS
    IDS.clear()


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
    identity: str = "alice",
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
        identity=IDS[identity],
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
    assert report.exit_code == 6  # skipped work has its own exit code (a cron job sees it)


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
        approvals.grant(ledger, rid, clock=clock, identity=IDS["alice"])
    assert next(ledger.records(kind="approval.refused")).info["request_id"] == rid

    bob = Ledger(ledger.url, operator="bob")
    try:
        granted = approvals.grant(
            bob, rid, clock=clock, identity=IDS["bob"], ttl=SETTINGS.approval_ttl
        )
        assert granted.approved_by == "bob" and granted.binding.hosts == ("srv-1", "srv-2")
        with pytest.raises(ApprovalError, match="already approved"):
            approvals.grant(bob, rid, clock=clock, identity=IDS["carol"])
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
        approvals.grant(bob, rid, clock=clock, identity=IDS["bob"], ttl=SETTINGS.approval_ttl)
    finally:
        bob.close()
    return rid


# -- identity: who asked and who approved are proven by SSH signatures ---------------------------
def _requested(ledger: Ledger, clock: FakeClock) -> str:
    run(ledger, task(Rotate), servers("srv-1"), clock, params={"user": "svc"})
    rid: str = list(ledger.records(kind="approval.requested"))[-1].info["request_id"]
    return rid


def test_a_request_carries_the_requesters_signature_and_verified_principal(
    ledger: Ledger,
) -> None:
    rid = _requested(ledger, FakeClock(OUTSIDE))
    info = next(ledger.records(kind="approval.requested")).info
    assert info["principal"] == "alice" and "BEGIN SSH SIGNATURE" in info["signature"]
    record = next(ledger.records(kind="approval.requested"))
    binding = approvals.Binding.from_record(record)
    assert info["binding_sha256"] == binding.sha256
    # bound to what will run, not only to what was typed: the task's code and each host's plan
    assert binding.params_sha256 != approvals.params_hash({"user": "svc"})
    statement = approvals.request_statement(rid, binding.sha256)
    assert IDS["bob"].principal_of(statement, info["signature"]) == "alice"


def test_another_name_on_the_requesters_key_cannot_approve(ledger: Ledger) -> None:
    """The attack: ITOPS_OPERATOR=alice asks, ITOPS_OPERATOR=bob approves — one person, one key.
    The label says bob; the signature says alice: refused, recorded, nothing granted."""
    clock = FakeClock(OUTSIDE)
    rid = _requested(ledger, clock)
    as_bob = Ledger(ledger.url, operator="bob")
    try:
        with pytest.raises(ApprovalError, match="self-approval: alice requested this change"):
            approvals.grant(as_bob, rid, clock=clock, identity=IDS["alice"])
    finally:
        as_bob.close()
    refused = list(ledger.records(kind="approval.refused"))[-1]
    assert refused.info["request_id"] == rid and refused.operator == "bob"
    assert list(ledger.records(kind="approval.granted")) == []
    report, conn = run(ledger, task(Rotate), servers("srv-1"), clock, params={"user": "svc"})
    assert report.results[0].outcome == Outcome.NEEDS_APPROVAL and conn.opened == []


def test_a_key_listed_under_two_principals_identifies_nobody(
    ledger: Ledger, operators: Operators, tmp_path: Path
) -> None:
    clock = FakeClock(OUTSIDE)
    rid = _requested(ledger, clock)
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(allowed.read_text() + operators.line("alice", principal="mallory"))
    with pytest.raises(ApprovalError, match="several principals"):
        approvals.grant(ledger, rid, clock=clock, identity=IDS["bob"])
    assert "several principals" in list(ledger.records(kind="approval.refused"))[-1].info["reason"]


def _forge(ledger: Ledger, rid: str, clock: FakeClock, signature: str, **changes: str) -> None:
    """A grant row written straight into the ledger by someone with write access, no key."""
    req = next(r for r in ledger.records(kind="approval.requested") if r.info["request_id"] == rid)
    binding = approvals.Binding.from_record(req)
    approved_at = clock.now()
    data = {
        "request_id": rid,
        **binding.as_data(),
        "binding_sha256": binding.sha256,
        "requested_by": "alice",
        "approved_by": "bob",
        "approved_at": approvals.iso(approved_at),
        "expires_at": approvals.iso(approved_at + timedelta(hours=2)),
        "signature": signature,
        **changes,
    }
    forger = Ledger(ledger.url, operator="bob")
    try:
        forger.append(Entry("approval.granted", ticket=req.ticket, task=binding.task, data=data))
    finally:
        forger.close()


@pytest.mark.parametrize("forgery", ["no signature", "alice signs", "expiry edited"])
def test_a_grant_row_forged_in_the_database_is_refused_at_use(ledger: Ledger, forgery: str) -> None:
    clock = FakeClock(OUTSIDE)
    rid = _requested(ledger, clock)
    if forgery == "expiry edited":  # bob's real grant, its expiry pushed out by a year
        bob = Ledger(ledger.url, operator="bob")
        approvals.grant(bob, rid, clock=clock, identity=IDS["bob"], ttl=timedelta(minutes=1))
        bob.close()
        real = next(ledger.records(kind="approval.granted")).info
        clock.advance(minutes=5)
        _forge(ledger, rid, clock, real["signature"], approved_at=real["approved_at"],
               expires_at=approvals.iso(clock.now() + timedelta(days=365)))  # fmt: skip
    else:
        binding = approvals.Binding.of("CHG-1", "demo.rotate", ["srv-1"], {"user": "svc"})
        now = approvals.iso(clock.now())
        later = approvals.iso(clock.now() + timedelta(hours=2))
        statement = approvals.grant_statement(rid, binding.sha256, now, later)
        signature = IDS["alice"].sign(statement) if forgery == "alice signs" else ""
        _forge(ledger, rid, clock, signature, approved_at=now, expires_at=later)
    refusals = len(list(ledger.records(kind="approval.refused")))
    report, conn = run(ledger, task(Rotate), servers("srv-1"), clock, params={"user": "svc"})
    assert report.results[0].outcome == Outcome.NEEDS_APPROVAL and conn.opened == []
    refused = list(ledger.records(kind="approval.refused"))[refusals:]
    assert refused and refused[0].info["request_id"] == rid
    assert refused[0].info["reason"].startswith("approval not usable: ")
    assert list(ledger.records(kind="approval.used")) == []
    # named with --approval: the request's first grant decides (the real one has expired)
    with pytest.raises(ApprovalError, match="approval not usable|approval expired"):
        run(ledger, task(Rotate), servers("srv-1"), clock, params={"user": "svc"}, approval_id=rid)


def test_a_key_removed_from_allowed_signers_voids_its_grants(
    ledger: Ledger, operators: Operators, tmp_path: Path
) -> None:
    clock = FakeClock(OUTSIDE)
    rid = _granted(ledger, clock, servers("srv-1"), {"user": "svc"})
    operators.write(tmp_path / "allowed_signers", ["alice", "carol"])  # bob has left
    report, conn = run(ledger, task(Rotate), servers("srv-1"), clock, params={"user": "svc"})
    assert report.results[0].outcome == Outcome.NEEDS_APPROVAL and conn.opened == []
    refused = list(ledger.records(kind="approval.refused"))[-1]
    assert refused.info["request_id"] == rid and "not listed" in refused.info["reason"]
    with pytest.raises(ApprovalError, match="not listed"):
        run(ledger, task(Rotate), servers("srv-1"), clock, params={"user": "svc"}, approval_id=rid)


def test_without_allowed_signers_a_request_is_recorded_but_cannot_be_granted(
    ledger: Ledger, tmp_path: Path
) -> None:
    clock = FakeClock(OUTSIDE)
    (tmp_path / "allowed_signers").unlink()
    rid = _requested(ledger, clock)
    info = next(ledger.records(kind="approval.requested")).info
    assert "principal" not in info and "no allowed_signers file" in info["unsigned"]
    with pytest.raises(ApprovalError, match="no allowed_signers file") as refused:
        approvals.grant(ledger, rid, clock=clock, identity=IDS["bob"])
    assert refused.value.hint is not None and "allowed_signers" in refused.value.hint
    assert list(ledger.records(kind="approval.refused"))[-1].info["request_id"] == rid


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
            approvals.grant(bob, rid, clock=clock, identity=IDS["bob"])
        with pytest.raises(NotFound, match="no approval request APR-00000000"):
            approvals.grant(bob, "APR-00000000", clock=clock, identity=IDS["bob"])
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


# -- what was approved is what runs: single use, the plan and the code ---------------------------
def test_a_grant_covers_one_run_unless_the_approver_gives_more_uses(ledger: Ledger) -> None:
    clock = FakeClock(OUTSIDE)
    targets = servers("srv-1")
    _granted(ledger, clock, targets, {"user": "svc"})
    first, _ = run(ledger, task(Rotate), targets, clock, params={"user": "svc"})
    assert first.results[0].outcome == Outcome.FIXED
    again, conn = run(ledger, task(Rotate), targets, clock, params={"user": "svc"})
    assert again.results[0].outcome == Outcome.NEEDS_APPROVAL and conn.opened == []  # used up
    rid = list(ledger.records(kind="approval.requested"))[-1].info["request_id"]
    bob = Ledger(ledger.url, operator="bob")
    try:
        approvals.grant(bob, rid, clock=clock, identity=IDS["bob"], uses=2)
    finally:
        bob.close()
    for _ in range(2):
        ok, _ = run(ledger, task(Rotate), targets, clock, params={"user": "svc"})
        assert ok.results[0].outcome == Outcome.FIXED
    third, _ = run(ledger, task(Rotate), targets, clock, params={"user": "svc"})
    assert third.results[0].outcome == Outcome.NEEDS_APPROVAL


PLAN_FILE: list[Path] = []


@remediation("demo.push", category="network", platforms={"linux"}, summary="Push", risky=True)
class Push(Remediation):
    def plan(self, host: Host) -> str:
        return PLAN_FILE[0].read_text()  # a template, rendered: what apply will send

    def check(self, ctx: Context) -> Finding:
        return Finding.problem("old") if ctx.read(cmd("stale")).exit_code else Finding.healthy("")

    def apply(self, ctx: Context) -> None:
        ctx.change(cmd("restart"))


def test_an_approval_binds_the_plan_a_changed_template_needs_a_new_one(
    ledger: Ledger, tmp_path: Path
) -> None:
    # Before: network.config-apply -p file=ntp.cfg was approved, the file was then rewritten
    # (telnet on the vty lines) and the approved run pushed the new text.
    PLAN_FILE[:] = [tmp_path / "ntp.cfg"]
    PLAN_FILE[0].write_text("ntp server 10.0.0.1\n")
    clock = FakeClock(OUTSIDE)
    targets = servers("srv-1")
    run(ledger, task(Push), targets, clock)
    request = list(ledger.records(kind="approval.requested"))[-1].info
    assert request["plan"] == {"srv-1": "ntp server 10.0.0.1\n"}  # shown to the approver
    bob = Ledger(ledger.url, operator="bob")
    try:
        approvals.grant(bob, request["request_id"], clock=clock, identity=IDS["bob"], uses=5)
    finally:
        bob.close()
    PLAN_FILE[0].write_text("line vty 0 4\n transport input telnet\n")  # after the approval
    changed, conn = run(ledger, task(Push), targets, clock)
    assert changed.results[0].outcome == Outcome.NEEDS_APPROVAL and conn.opened == []
    PLAN_FILE[0].write_text("ntp server 10.0.0.1\n")  # what was approved: it runs
    approved, _ = run(ledger, task(Push), targets, clock)
    assert approved.results[0].outcome == Outcome.FIXED


def test_the_windows_verdict_reads_only_and_is_what_decide_says() -> None:
    """`RunPolicy.held`: the windows' part of `decide`, without `prepare` (no ledger at all):
    what `itops fix --check` tells before a fix would be skipped."""
    from toolkit.run.maintenance import get_window
    from toolkit.run.policy import RunPolicy

    restart, rotate = task(Restart), task(Rotate)
    (host,) = servers("srv-1")
    outside = RunPolicy(SETTINGS, FakeClock(OUTSIDE))
    held = outside.held(restart.specs[0], host)
    assert held is not None and held.decision == "outside-window"
    assert held.reason.startswith("outside night (Europe/Berlin) next opens Sun 2026-11-29")
    decision = outside.decide(restart, restart.specs[0], host)
    assert (decision.outcome, decision.message) == (Outcome.SKIPPED, held.message)
    assert decision.record["decision"] == held.decision and decision.record["windows"] == ["night"]
    assert RunPolicy(SETTINGS, FakeClock(INSIDE)).held(restart.specs[0], host) is None
    assert outside.held(rotate.specs[0], host) is None  # not disruptive (risky is not windows)
    glass = RunPolicy(SETTINGS, FakeClock(OUTSIDE), break_glass="site down")
    assert glass.held(restart.specs[0], host) is None
    strict = RunPolicy(PolicySettings(windows=SETTINGS.windows, require_window=True),
                       FakeClock(OUTSIDE))  # fmt: skip
    (bare,) = servers("ws-1", window=None)
    no_window = strict.held(restart.specs[0], bare)
    assert no_window is not None and no_window.decision == "no-window"
    assert no_window.reason == "no maintenance window is attached to this host"
    job = RunPolicy(SETTINGS, FakeClock(OUTSIDE), job_window=get_window(SETTINGS.windows, "night"))
    by_job = job.held(rotate.specs[0], host)  # a schedule's own window holds any task
    assert by_job is not None and by_job.reason.startswith("outside night")
    assert job.decide(rotate, rotate.specs[0], host).message == by_job.message

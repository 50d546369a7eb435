"""One answer per change: `itops log --host` and `itops ticket show` show each change with its
approval (who asked, who approved, when, for what) and its policy decision (break-glass and its
reason), and a host filter finds the approvals, break-glass and refusals that concern the host
although those records carry no host column."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clocks import FakeClock
from tests.inprocess import itops
from tests.signers import NAMES, Operators
from tests.unit.test_policy import IDS, OUTSIDE, Restart, Rotate, open_ticket, run, servers, task
from toolkit.ledger import Ledger
from toolkit.run import approvals
from toolkit.workspace import Workspace


@pytest.fixture
def ws(workspace: Workspace, operators: Operators, tmp_path: Path) -> Iterator[Path]:
    """srv-1 fixed under an approval alice asked for and bob granted (CHG-1), and restarted
    outside its window under break-glass (INC-9, P1); srv-2 only in a refused approval."""
    allowed = operators.write(tmp_path / "allowed_signers")
    IDS.update({n: operators.identity(n, allowed) for n in NAMES})
    clock = FakeClock(OUTSIDE)
    book = Ledger(workspace.ledger_url, operator="alice")
    bob = Ledger(workspace.ledger_url, operator="bob")
    try:
        open_ticket(book, "CHG-1")
        open_ticket(book, "INC-9", "P1")
        params = {"user": "svc"}
        run(book, task(Rotate), servers("srv-1"), clock, params=params)
        rid = next(book.records(kind="approval.requested")).info["request_id"]
        approvals.grant(bob, rid, clock=clock, identity=IDS["bob"], note="CAB 12/04")
        clock.advance(minutes=5)
        run(book, task(Rotate), servers("srv-1"), clock, params=params)
        run(
            book, task(Restart), servers("srv-1"), clock, ticket="INC-9",
            break_glass="payroll down\x1b[2J<b>",
        )  # fmt: skip
        run(book, task(Rotate), servers("srv-2"), clock, ticket="CHG-2", params=params)
        other = list(book.records(kind="approval.requested"))[-1].info["request_id"]
        with pytest.raises(approvals.ApprovalError):
            approvals.grant(book, other, clock=clock, identity=IDS["alice"])  # self-approval
    finally:
        book.close()
        bob.close()
        IDS.clear()
    yield workspace.root


def test_log_for_a_host_shows_its_approvals_break_glass_and_refusals(ws: Path) -> None:
    code, out = itops(ws, "log", "--host", "srv-1")
    assert code == 0, out
    for kind in ("approval.requested", "approval.granted", "approval.used", "policy.break-glass"):
        assert kind in out, (kind, out)
    # the change itself says what approved it and the break-glass reason (escaped)
    assert "asked by alice, approved by bob" in out, out
    assert "break-glass: payroll down␛[2J<b>" in out and "\x1b" not in out, out
    assert "approval.refused" not in out  # srv-2's refusal is not srv-1's
    code, out = itops(ws, "log", "--host", "srv-2")
    assert code == 0 and "approval.refused" in out and "self-approval" in out, out
    assert "approval.granted" not in out and "policy.break-glass" not in out, out


def test_log_json_carries_each_changes_approval_and_decision(ws: Path) -> None:
    code, out = itops(ws, "log", "--host", "srv-1", "--json")
    assert code == 0, out
    records = [json.loads(line) for line in out.splitlines()]
    fixed = [r for r in records if r["kind"] == "action.finish" and r["task"] == "demo.rotate"]
    approved = [r for r in fixed if r["governance"]["approval"]]
    assert approved, records
    a = approved[-1]["governance"]["approval"]
    assert a["requested_by"] == "alice" and a["approved_by"] == "bob" and a["state"] == "granted"
    assert a["hosts"] == ["srv-1"] and a["task"] == "demo.rotate" and a["note"] == "CAB 12/04"
    assert a["params"] == {"user": "svc"} and a["used"] == 1 and a["approved_at"]
    glass = [r for r in records if r["kind"] == "action.begin" and r["task"] == "demo.restart"]
    assert glass[0]["governance"]["policy"]["decision"] == "break-glass"
    assert glass[0]["governance"]["policy"]["reason"] == "payroll down\x1b[2J<b>"
    assert "\x1b" not in out  # JSON escapes it
    kinds = {r["kind"] for r in records}
    assert {"approval.requested", "approval.granted", "approval.used"} <= kinds


def test_ticket_show_gives_each_change_its_approval(ws: Path) -> None:
    code, out = itops(ws, "ticket", "show", "CHG-1")
    assert code == 0, out
    assert "approval.granted" in out and "asked by alice, approved by bob" in out, out
    assert "asked by alice: approved later by bob at 2026-11-23 11:00 UTC" in out, out
    code, out = itops(ws, "ticket", "show", "CHG-1", "--json")
    data = json.loads(out)
    changes = [c for c in data["changes"] if c["outcome"] == "fixed"]
    assert len(changes) == 1 and changes[0]["host"] == "srv-1", data["changes"]
    assert changes[0]["approval"]["approved_by"] == "bob"
    assert changes[0]["policy"]["request_id"] == changes[0]["approval"]["request_id"]
    pending = [c for c in data["changes"] if c["outcome"] == "needs-approval"]
    assert pending and pending[0]["policy"]["decision"] == "needs-approval"
    code, out = itops(ws, "ticket", "show", "INC-9")
    assert code == 0 and "policy.break-glass" in out and "break-glass: payroll down␛[2J" in out


def test_a_hosts_evidence_bundle_carries_its_approvals(ws: Path, tmp_path: Path) -> None:
    """The ledger here was written without anchors: the export anchors its head first."""
    out = tmp_path / "srv-1.zip"
    code, text = itops(ws, "audit", "export", "--host", "srv-1", "--out", str(out))
    assert code == 0, text
    with zipfile.ZipFile(out) as archive:
        records = [json.loads(line) for line in archive.read("records.jsonl").splitlines()]
    kinds = {r["kind"] for r in records}
    assert {"approval.requested", "approval.granted", "approval.used"} <= kinds, kinds
    assert "policy.break-glass" in kinds and "approval.refused" not in kinds
    assert {r["host"] for r in records if r["kind"].startswith("action.")} == {"srv-1"}
    code, text = itops(ws, "audit", "verify", "--bundle", str(out))
    assert code == 0 and "bundle intact" in text, text
    code, text = itops(ws, "audit", "verify", "--bundle", str(out), "--trusted-key", "nope.pub")
    assert code == 2 and "no such file" in text, text

"""Runbooks through the real CLI against lab hosts: one ledger group per run under its ticket,
--check changes nothing, a fix that does not hold is escalated as a ticket event."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from tests.integration.conftest import LabEnv

pytestmark = pytest.mark.integration


def records(lab: LabEnv, ticket: str) -> list[dict[str, Any]]:
    out = lab.itops("log", "--ticket", ticket, "--json").stdout
    return [json.loads(line) for line in out.splitlines()]


def test_printer_not_printing_check_then_run_as_one_group(lab: LabEnv) -> None:
    lab.break_printer("lab-02")
    before = lab.lpstat("lab-02")
    check = lab.itops("runbook", "run", "printer-not-printing", "lab-02", "--check")
    assert check.returncode == 4, check.stdout + check.stderr
    assert "nothing changed, nothing escalated" in check.stdout
    assert lab.lpstat("lab-02") == before

    run = lab.itops(
        "runbook", "run", "printer-not-printing", "lab-02", "--ticket", "LNX-5001", "--json"
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    steps = {s["name"]: [h["outcome"] for h in s["hosts"]] for s in report["steps"]}
    assert steps == {"diagnose": ["would-fix"], "clear queue": ["fixed"], "restart spooler": []}
    assert report["steps"][2]["skipped"] == ["lab-02"] and report["escalated"] == {}
    assert "disabled" not in lab.lpstat("lab-02")

    recs = records(lab, "LNX-5001")
    kinds = [r["kind"] for r in recs]
    assert (
        kinds[0] == "ticket.opened"
        and kinds[1] == "runbook.begin"
        and kinds[-1] == "runbook.finish"
    )
    assert recs[0]["data"]["category"] == "printer"
    run_id = recs[1]["data"]["run_id"]
    assert run_id == report["run_id"]
    actions = [r for r in recs if r["kind"].startswith("action.")]
    assert len(actions) == 4  # diagnose and clear queue, begin + finish each
    assert {(a["data"]["runbook"], a["data"]["run_id"]) for a in actions} == {
        ("printer-not-printing", run_id)
    }
    assert "ticket.escalated" not in kinds


def test_no_network_escalates_when_the_fix_does_not_hold(lab: LabEnv) -> None:
    run = lab.itops(
        "runbook",
        "run",
        "no-network",
        "lab-01",
        "-p",
        "name=nothing-here.invalid",
        "--ticket",
        "LNX-5002",
        "--priority",
        "P2",
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "escalated to L3: lab-01: verify (failed)" in run.stdout
    recs = records(lab, "LNX-5002")
    escalated = [r for r in recs if r["kind"] == "ticket.escalated"]
    assert len(escalated) == 1
    assert escalated[0]["data"]["tier"] == "L3"
    assert "Still no connectivity" in escalated[0]["data"]["reason"]
    assert "nothing-here.invalid does not resolve" in escalated[0]["data"]["reason"]
    finish = recs[-1]
    assert finish["kind"] == "runbook.finish" and finish["outcome"] == "escalated"
    assert finish["data"]["outcomes"]["lab-01"] == {
        "diagnose": "would-fix",
        "flush dns": "already-ok",
        "renew dhcp": "failed",
        "verify": "failed",
    }
    shown = lab.itops("ticket", "show", "LNX-5002")
    assert "tier=L3" in shown.stdout and "(L3)" in shown.stdout  # escalated to L3


def test_password_locked_hands_the_new_password_over_once(lab: LabEnv) -> None:
    user = str(lab.state.data["accounts"]["user"])
    lab.service("accounts").lock(user)
    args = ["runbook", "run", "password-locked", "lab-01", "-p", f"user={user}", "--ticket"]
    run = lab.itops(*args, "LNX-5003")  # a routine reset needs no second operator
    assert run.returncode == 0 and "APR-" not in run.stdout, run.stdout + run.stderr
    lines = [ln for ln in run.stderr.splitlines() if "(shown once, not recorded)" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"lab-01: new password for {user}")
    status = subprocess.run(["passwd", "-S", user], capture_output=True, text=True).stdout.split()
    assert status[1] == "P"  # a usable password, no longer locked
    generated = lines[0].rsplit(": ", 1)[1]
    assert generated not in run.stdout
    assert generated not in lab.itops("log", "--ticket", "LNX-5003", "--json").stdout


def test_a_runbook_step_the_policy_calls_risky_waits_for_approval(lab: LabEnv) -> None:
    """A workspace whose [policy] lists password.reset as risky: the runbook holds the host
    (exit 5, no escalation) until another operator approves, then goes ahead."""
    user = str(lab.state.data["accounts"]["user"])
    known = (lab.lab.dir / "known_hosts").read_text()
    ws = lab.other_workspace("strict-policy", known_hosts=known)
    config = ws / "itops.toml"
    config.write_text(config.read_text() + '\n[policy]\nrisky = ["password.reset"]\n')
    lab.service("accounts").lock(user)
    args = [
        "runbook",
        "run",
        "password-locked",
        "lab-01",
        "-p",
        f"user={user}",
        "--ticket",
        "LNX-5013",
    ]
    waiting = lab.itops(*args, workspace=ws)
    assert waiting.returncode == 5, waiting.stdout + waiting.stderr
    assert "held: lab-01: reset and unlock (needs-approval)" in waiting.stdout
    assert "approval requested: APR-" in waiting.stdout and "escalated" not in waiting.stdout
    request = re.search(r"approval requested: (APR-[0-9a-f]{8})", waiting.stdout)
    assert request is not None
    grant = lab.itops(
        "approve", request.group(1), "--yes", workspace=ws, env=lab.as_operator("l2-lead")
    )
    assert grant.returncode == 0, grant.stdout + grant.stderr
    run = lab.itops(*args, workspace=ws)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sum("(shown once, not recorded)" in ln for ln in run.stderr.splitlines()) == 1


def test_patch_compliance_and_av_out_of_date(lab: LabEnv) -> None:
    lab.service("apt").refresh(lab.state, "lab-04")
    first = lab.itops("runbook", "run", "patch-compliance", "lab-04", "--ticket", "LNXC-5004")
    assert first.returncode == 0, first.stdout + first.stderr
    assert set(lab.service("apt").installed(lab.state, "lab-04").values()) == {"2.0"}
    again = lab.itops(
        "runbook", "run", "patch-compliance", "lab-04", "--ticket", "LNXC-5004", "--json"
    )
    outcomes = [h["outcome"] for s in json.loads(again.stdout)["steps"] for h in s["hosts"]]
    assert outcomes == ["already-ok", "already-ok"]

    check = lab.itops("runbook", "run", "av-out-of-date", "lab-03", "--check", "--json")
    report = json.loads(check.stdout)
    assert report["mode"] == "check" and report["steps"][0]["hosts"][0]["outcome"] == "already-ok"
    assert report["steps"][2]["skipped"] == ["lab-03"]  # signatures were current: no scan needed

"""A real fix on a lab host under a ServiceNow incident and a Jira SM issue, with --resolve.

The lab host is real (sshd and cupsd on loopback: run under the lab lock, `flock
/work/lab.lock`); the desks are the loopback stand-ins of tests/fake_servicenow.py and
tests/fake_jira.py — NOT ServiceNow or Jira, which cannot run here: they implement the vendors'
documented request and response shapes for the calls itops makes. What reached the desk is read
from the stand-in's own state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import LabEnv
from tests.unit.test_itsm_snow_jira import Case, jira, run_itops, servicenow, workspace

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("make", [servicenow, jira], ids=["servicenow", "jira"])
def test_lab_a_verified_fix_with_resolve_resolves_the_desk_ticket(
    lab: LabEnv, tmp_path: Path, make: Callable[[Path], Case]
) -> None:
    case = make(tmp_path)
    try:
        ws = workspace(tmp_path, case)
        lab_dir = lab.root / ".itops" / "lab"
        config = (ws / "itops.toml").read_text()
        (ws / "itops.toml").write_text(
            config.replace('"inventory/hosts.yml"', f'"{lab_dir / "hosts.yml"}"').replace(
                '"inventory/known_hosts"', f'"{lab_dir / "known_hosts"}"'
            )
        )
        ticket = case.new_ticket("printer on lab-01 stuck")
        lab.break_printer("lab-01")
        done = run_itops(ws, "fix", "printer.clear-queue", "lab-01", "--ticket", ticket,
                         "--resolve")  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{ticket}: resolved with a note" in done.stderr
        [note] = case.internal(ticket)  # ONE note: the run, and the resolution folded in
        assert "- lab-01: fixed" in note and "resolution: " in note
        assert case.public(ticket) == []
        shown = json.loads(run_itops(ws, "ticket", "show", ticket, "--json").stdout)
        assert shown["summary"]["state"] == "resolved"
        again = run_itops(ws, "fix", "printer.clear-queue", "lab-01", "--ticket", ticket)
        assert again.returncode == 2 and "no run goes under a closed ticket" in again.stderr
    finally:
        case.fake.stop()
        lab.heal_printers()

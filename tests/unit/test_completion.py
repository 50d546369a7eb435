"""Shell completion: `itops completion SHELL` prints click's script for bash, zsh and fish, and a
Tab press completes task, host and group, runbook, playbook and schedule names from the workspace
(through click's own completion machinery, as the shell calls it) — and never fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.shell_completion import BashComplete
from click.testing import CliRunner

from toolkit.automation.schedule import Schedule, ScheduleStore
from toolkit.cli import cli
from toolkit.workspace import Workspace

INVENTORY = """
all:
  children:
    office:
      hosts:
        ws-041: {ansible_host: 127.0.0.1}
        ws-042: {ansible_host: 127.0.0.1}
    switches:
      hosts:
        sw-01: {ansible_host: 127.0.0.1, platform: cisco_ios}
"""


@pytest.fixture
def ws(workspace: Workspace) -> Path:
    root = workspace.root
    (root / "inventory" / "hosts.yml").write_text(INVENTORY)
    (root / "runbooks").mkdir(exist_ok=True)
    (root / "runbooks" / "vpn-broken.yml").write_text("summary: x\n")
    (root / "playbooks" / "rotate_logs.yml").write_text("- name: Rotate logs\n  hosts: all\n")
    store = ScheduleStore(workspace.ledger_url)
    for name in ("weekly-patch", "nightly-backup"):
        store.add(Schedule(name, "task", "patch.apply", "office", "0 2 * * SUN", "UTC"))
    store.close()
    return root


def complete(ws: Path, line: str) -> list[str]:
    """What a Tab press after `line` offers (the last word is what was typed so far)."""
    *args, incomplete = line.split(" ")
    shell = BashComplete(cli, {}, "itops", "_ITOPS_COMPLETE")
    return [c.value for c in shell.get_completions(["-w", str(ws), *args], incomplete)]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_script_for_each_shell_is_printed(shell: str) -> None:
    result = CliRunner().invoke(cli, ["completion", shell], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "_ITOPS_COMPLETE" in result.output and "itops" in result.output


def test_an_unknown_shell_is_refused() -> None:
    result = CliRunner().invoke(cli, ["completion", "tcsh"])
    assert result.exit_code == 2 and "tcsh" in result.output


def test_names_complete_from_the_workspace(ws: Path) -> None:
    assert complete(ws, "fix printer.cl") == ["printer.clear-queue"]
    assert "network.port-recover" in complete(ws, "tasks show network.")
    assert complete(ws, "fix printer.status ws-") == ["ws-041", "ws-042"]
    assert complete(ws, "fix printer.status o") == ["office"]
    assert complete(ws, "fix printer.status office:!ws-04") == ["office:!ws-041", "office:!ws-042"]
    assert complete(ws, "inventory show sw") == ["sw-01", "switches"]
    assert "vpn-broken" in complete(ws, "runbook run ")
    assert complete(ws, "runbook show switch-") == ["switch-port-down"]
    assert complete(ws, "playbook run rot") == ["rotate_logs"]
    assert complete(ws, "schedule show ") == ["nightly-backup", "weekly-patch"]
    assert complete(ws, "schedule run w") == ["weekly-patch"]


def test_a_tab_press_never_fails_and_writes_nothing(tmp_path: Path) -> None:
    # no workspace there: nothing to offer, no error, no ledger created
    assert complete(tmp_path, "fix printer.status ws-") == []
    assert complete(tmp_path, "schedule show ") == []
    assert not any(tmp_path.iterdir())


def test_the_shell_gets_the_names_from_the_real_itops_process(ws: Path) -> None:
    env = {
        **os.environ,
        "_ITOPS_COMPLETE": "bash_complete",
        "COMP_WORDS": f"itops -w {ws} fix printer.status ws-",
        "COMP_CWORD": "5",
    }
    done = subprocess.run(
        [sys.executable, "-m", "toolkit"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["plain,ws-041", "plain,ws-042"]

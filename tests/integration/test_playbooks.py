"""Playbooks through real ansible-runner against the lab's real sshd hosts.

The patch playbook runs here in check mode: each lab host has its own dpkg database with
upgrades pending (see toolkit/lab/apt.py), which the run must report and leave untouched; the
backup playbook really runs: it only reads a few files under /etc and copies them to the
workspace's state folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import LabEnv
from toolkit.lab import ed25519_keypair
from toolkit.ledger import Ledger

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def with_playbooks(ws: Path) -> Path:
    for playbook in (ROOT / "playbooks").glob("*.yml"):
        shutil.copy(playbook, ws / "playbooks" / playbook.name)
    return ws


def lab_known_hosts(lab: LabEnv, skip: str = "") -> str:
    lines = (lab.lab.dir / "known_hosts").read_text().splitlines(keepends=True)
    return "".join(line for line in lines if not (skip and line.endswith(f":{skip}\n")))


def records(ws: Path, **filters: Any) -> list[Any]:
    ledger = Ledger(f"sqlite:///{ws / '.itops' / 'ledger.db'}", operator="auditor")
    try:
        return list(ledger.records(**filters))
    finally:
        ledger.close()


def outcomes(stdout: str) -> dict[str, str]:
    return {h["host"]: h["outcome"] for h in json.loads(stdout)["hosts"]}


def test_playbook_list_shows_the_shipped_playbooks(lab: LabEnv) -> None:
    with_playbooks(lab.root)
    result = lab.itops("playbook", "list", "--json")
    assert result.returncode == 0, result.stderr
    names = {p["name"]: p["summary"] for p in json.loads(result.stdout)}
    assert names == {
        "backup_configs": "Back up configuration files",
        "patch_linux": "Patch Linux hosts",
        "sample": "Show what the hosts run",  # what `itops init` puts in every workspace
    }


def test_patch_playbook_in_check_mode_records_every_event_and_changes_nothing(
    lab: LabEnv,
) -> None:
    ws = with_playbooks(lab.root)
    before = {h: lab.dpkg_state(h) for h in ("lab-01", "lab-02")}
    assert before["lab-01"][0] == {"itops-lab-libsafe": "1.0", "itops-lab-tool": "1.0"}
    targets = "lab-01:lab-02"  # two are enough: the apt simulation is the slow part
    result = lab.itops("playbook", "run", "patch_linux", targets, "--check", "--json", timeout=300)
    assert result.returncode == 4, result.stdout + result.stderr  # 4: upgrades pending
    hosts = outcomes(result.stdout)
    assert hosts["lab-01"] == "would-fix", hosts  # nothing patches lab-01: 2 upgrades pending
    assert hosts["lab-02"] in {"would-fix", "already-ok"}, hosts  # another test may patch it
    assert {h: lab.dpkg_state(h) for h in hosts} == before, "dpkg untouched"
    events = records(ws, kind="playbook.event", task="playbook:patch_linux")
    by_task: dict[str, set[tuple[str, str]]] = {}
    for e in events:
        by_task.setdefault(e.info["ansible_task"], set()).add((e.host, e.outcome))
    simulated = by_task["Pending upgrades (apt simulation, read-only)"]
    assert {h for h, _ in simulated} == set(hosts)
    assert {o for _, o in simulated} <= {"ok", "changed"}
    assert {o for _, o in by_task["Upgrade packages (apt)"]} == {"skipped"}
    simulation = next(
        e for e in events if e.info["ansible_task"].startswith("Pending upgrades (apt")
    )
    assert "simulation" in (simulation.output_excerpt or "").lower()
    assert simulation.duration_ms is not None and simulation.duration_ms > 0
    begins = records(ws, kind="action.begin", task="playbook:patch_linux")
    assert {b.host for b in begins} == set(hosts)
    assert all(b.info["mode"] == "check" for b in begins)
    assert "Gathering Facts" in result.stderr, "progress is shown"


def test_backup_playbook_copies_files_then_reports_ok_and_a_wrong_host_key_is_unreachable(
    lab: LabEnv,
) -> None:
    ws = with_playbooks(lab.root)
    first = lab.itops(
        "playbook", "run", "backup_configs", "lab:!lab-04", "--ticket", "CHG-600", "--json"
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert set(outcomes(first.stdout).values()) == {"fixed"}
    copy = ws / ".itops" / "backups" / "playbook" / "lab-02" / "etc" / "hosts"
    assert copy.read_bytes() == Path("/etc/hosts").read_bytes()
    again = lab.itops(
        "playbook", "run", "backup_configs", "lab-02", "--ticket", "CHG-600", "--json"
    )
    assert again.returncode == 0 and outcomes(again.stdout) == {"lab-02": "already-ok"}
    ticket = records(ws, ticket="CHG-600")
    assert ticket[0].kind == "ticket.opened" and ticket[0].info["category"] == "backup"
    kinds = {(r.kind, r.outcome) for r in ticket}
    assert ("playbook.event", "changed") in kinds and ("playbook.event", "ok") in kinds
    assert ("action.finish", "fixed") in kinds and ("action.finish", "already-ok") in kinds

    # A second workspace pins a wrong key for lab-02: ansible must refuse it (not report ok).
    _, wrong = ed25519_keypair("impostor")
    known = lab_known_hosts(lab, skip="lab-02") + (
        f"[127.1.0.2]:{lab.state.port} {' '.join(wrong.split()[:2])}\n"
    )
    other = with_playbooks(lab.other_workspace("ansible-mitm", known_hosts=known))
    result = lab.itops(
        "playbook",
        "run",
        "backup_configs",
        "lab-01:lab-02",
        "--ticket",
        "CHG-601",
        "--json",
        workspace=other,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert outcomes(result.stdout) == {"lab-01": "fixed", "lab-02": "unreachable"}
    assert not (other / ".itops" / "backups" / "playbook" / "lab-02").exists()
    event = next(r for r in records(other, kind="playbook.event") if r.host == "lab-02")
    assert event.outcome == "unreachable"
    assert "Host key verification failed" in (event.output_excerpt or "")
    finish = next(r for r in records(other, kind="action.finish") if r.host == "lab-02")
    assert finish.outcome == "unreachable" and finish.ticket == "CHG-601"


@pytest.mark.parametrize("name", ["../etc/passwd", "sub/patch_linux", "..", "C:\\x"])
def test_a_playbook_name_with_path_separators_is_refused_and_nothing_runs(
    lab: LabEnv, name: str, tmp_path: Path
) -> None:
    ws = lab.other_workspace("pb-names", known_hosts=lab_known_hosts(lab))
    result = lab.itops("playbook", "run", name, "lab-01", "--ticket", "CHG-602", workspace=ws)
    assert result.returncode == 2
    assert "playbooks are named, not given as paths" in result.stderr
    assert not (ws / ".itops" / "ledger.db").exists(), "nothing was recorded or run"


ECHO = """\
- name: Echo a token
  hosts: all
  gather_facts: false
  tasks:
    - name: Say it
      ansible.builtin.command: echo "token is {{ api_token }}"
      changed_when: false
"""


SLOW_ECHO = (
    ECHO
    + """
    - name: Take a while
      ansible.builtin.command: sleep 2
      changed_when: false
"""
)


def test_a_secret_extra_var_is_on_no_command_line(lab: LabEnv) -> None:
    # Any local user can read every process's command line (ps): a secret extra var must
    # travel in a file only its run can read, never as `-e {...}` to ansible-playbook.
    ws = lab.other_workspace("pb-argv", known_hosts=lab_known_hosts(lab))
    (ws / "playbooks" / "echo_token.yml").write_text(SLOW_ECHO)
    canary = "canary-argv-4d81e0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITOPS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "--workspace", str(ws), "playbook", "run",
         "echo_token", "lab-01", "--ticket", "CHG-604", "--json",
         "-e", "api_token=env:ITOPS_TEST_CANARY"],
        env={**env, "ITOPS_TEST_CANARY": canary}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    seen: set[str] = set()
    while proc.poll() is None:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = cmdline.read_bytes()
            except OSError:
                continue  # the process ended meanwhile
            if b"ansible-playbook" in argv:
                seen.add("ansible-playbook")
            if canary.encode() in argv:
                # Lab hosts run on this machine too: the playbook's own `echo` on the target
                # (a process of a lab session, marked ITOPS_LAB_HOST) is not the controller's.
                try:
                    environ = (cmdline.parent / "environ").read_bytes()
                except OSError:
                    continue  # ended meanwhile; the controller's ansible-playbook lives on
                assert b"ITOPS_LAB_HOST=" in environ, argv
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, out + err
    assert "ansible-playbook" in seen  # the scan did see the run
    (event,) = [
        e for e in records(ws, kind="playbook.event") if "token" in (e.output_excerpt or "")
    ]
    assert event.output_excerpt == "token is ********"  # and the value did reach the host


def test_a_secret_extra_var_reaches_the_host_and_is_masked_everywhere(lab: LabEnv) -> None:
    ws = lab.other_workspace("pb-secret", known_hosts=lab_known_hosts(lab))
    (ws / "playbooks" / "echo_token.yml").write_text(ECHO)
    canary = "canary-7f3a9c1e5b"
    plain = lab.itops(
        "playbook", "run", "echo_token", "lab-01", "--ticket", "CHG-603", "-e", f"api_token={canary}",
        workspace=ws,
    )  # fmt: skip
    assert plain.returncode == 2 and "extra var api_token is a secret" in plain.stderr
    result = lab.itops(
        "playbook", "run", "echo_token", "lab-01", "--ticket", "CHG-603", "--json",
        "-e", "api_token=env:ITOPS_TEST_CANARY", workspace=ws, env={"ITOPS_TEST_CANARY": canary},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert canary not in result.stdout + result.stderr
    (event,) = records(ws, kind="playbook.event")
    assert event.output_excerpt == "token is ********"
    (begin,) = records(ws, kind="action.begin")
    assert json.loads(begin.params or "{}") == {"api_token": "********"}
    for path in (ws / ".itops").rglob("*"):
        if path.is_file():
            assert canary.encode() not in path.read_bytes(), path
    audit = lab.itops("audit", "verify", workspace=ws)
    assert audit.returncode == 0 and "ledger intact" in audit.stdout, audit.stdout + audit.stderr


def test_an_ad_hoc_playbook_goes_through_the_run_policy(lab: LabEnv) -> None:
    # Before: `playbook run patch_linux lab-03 --ticket …` ran on a host whose only window is
    # closed, even with [policy] disruptive = ["playbook:patch_linux"], and its begin record had
    # no policy block.
    ws = lab.other_workspace(
        "pb-policy",
        known_hosts=lab_known_hosts(lab),
        extra_inventory="all:\n  hosts:\n    lab-03:\n      maintenance_window: never\n",
    )
    config = ws / "itops.toml"
    config.write_text(
        config.read_text()
        + '\n[policy]\ndisruptive = ["playbook:patch_linux"]\n'
        + '\n[maintenance_windows.never]\ntimezone = "UTC"\ndates = ["2001-01-01"]\n'
    )
    with_playbooks(ws)
    installed = lab.dpkg_state("lab-03")
    result = lab.itops(
        "playbook", "run", "patch_linux", "lab-03", "--ticket", "CHG-4003", "--json",
        workspace=ws,
    )  # fmt: skip
    assert outcomes(result.stdout) == {"lab-03": "skipped"}, result.stdout + result.stderr
    assert "outside window never" in result.stdout
    assert lab.dpkg_state("lab-03") == installed  # nothing ran there
    begin = [r for r in records(ws, kind="action.begin") if r.task == "playbook:patch_linux"]
    policy = begin[-1].info["policy"]
    assert policy["decision"] == "outside-window" and policy["windows"] == ["never"]
    assert not records(ws, kind="playbook.event")  # ansible never ran

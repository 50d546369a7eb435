"""`itops lab`: starts real daemons on loopback, reports them, and stops exactly those."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import LabEnv
from toolkit.lab.core import _listening
from toolkit.workspace import Workspace

pytestmark = pytest.mark.integration


def sleeping(seconds: str, wait: float = 0.0) -> bool:
    """A `sleep SECONDS` process is running (waiting up to `wait` s for one to appear: ssh can
    return before the shell it left in the background has exec'd sleep)."""
    deadline = time.monotonic() + wait
    while not _sleeping(seconds):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _sleeping(seconds: str) -> bool:
    argv = f"sleep\0{seconds}\0".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes() == argv:
                return True
        except OSError:
            continue
    return False


def test_up_status_down_stop_exactly_what_was_started(lab: LabEnv, tmp_path: Path) -> None:
    Workspace.init(tmp_path / "second")
    ws = tmp_path / "second"
    bystander = subprocess.Popen(["sleep", "120"])
    try:
        up = lab.itops("lab", "up", "--hosts", "3", "--services", "none", workspace=ws)
        assert up.returncode == 0, up.stderr
        status = json.loads(lab.itops("lab", "status", "--json", workspace=ws).stdout)
        assert status["running"] and [h["ssh"] for h in status["hosts"]] == ["listening"] * 3
        port = status["port"]
        assert port != lab.state.port  # a second lab picks its own free port
        assert {h["address"].split(":")[0] for h in status["hosts"]} <= _listening(port)
        assert all(h["address"].startswith("127.") for h in status["hosts"])

        twice = lab.itops("lab", "up", workspace=ws)
        assert twice.returncode == 2 and "already running" in twice.stderr
        assert lab.itops("inventory", "check", "lab", workspace=ws).returncode == 0

        # a job a session left running in the background, detached from it
        seconds = f"3{secrets.randbelow(10**6):06d}"
        state = ws / ".itops" / "lab"
        host = status["hosts"][0]["address"].split(":")[0]
        subprocess.run(
            ["ssh", "-i", str(state / "client_ed25519"), "-p", str(port),
             "-o", f"UserKnownHostsFile={state / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
             "-o", "BatchMode=yes", f"itops-lab@{host}",
             f"setsid sleep {seconds} </dev/null >/dev/null 2>&1 &"],
            check=True, timeout=30,
        )  # fmt: skip
        assert sleeping(seconds, wait=15)

        down = lab.itops("lab", "down", workspace=ws)
        assert down.returncode == 0 and "stopped 1 process" in down.stdout
        assert not sleeping(seconds)  # stopped with the lab it was started in
        assert not _listening(port)
        assert not (ws / ".itops" / "lab" / "hosts.yml").exists()
        assert bystander.poll() is None  # untouched
        # the session's own lab is untouched too
        assert lab.itops("inventory", "check", "lab-01").returncode == 0
        assert (
            json.loads(lab.itops("lab", "status", "--json", workspace=ws).stdout)["running"]
            is False
        )
    finally:
        bystander.kill()
        lab.itops("lab", "down", workspace=ws)


def test_break_needs_cups_and_names_lab_hosts(lab: LabEnv) -> None:
    broken = lab.itops("lab", "break", "printer", "lab-04")
    assert broken.returncode == 0 and "lab-04" in broken.stdout
    assert "paper jam" in lab.lpstat("lab-04")
    fixed = lab.itops("fix", "printer.clear-queue", "lab-04", "--ticket", "INC-7000")
    assert fixed.returncode == 0

"""Scheduled jobs against the lab, through the real CLI: a task and a playbook each under their
own change ticket, and the `itops scheduler` daemon catching up a missed run at start-up and
stopping cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import LabEnv
from tests.integration.test_playbooks import lab_known_hosts, records, with_playbooks

pytestmark = pytest.mark.integration


def run_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def test_scheduled_task_and_playbook_run_under_their_own_change_tickets(lab: LabEnv) -> None:
    ws = with_playbooks(lab.other_workspace("scheduled", known_hosts=lab_known_hosts(lab)))
    added = lab.itops(
        "schedule", "add", "printers", "--task", "printer.clear-queue",
        "--targets", "lab-01:lab-02", "--cron", "*/15 * * * *", workspace=ws,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    lab.break_printer("lab-01")
    (run,) = run_json(lab.itops("schedule", "run", "printers", "--json", workspace=ws))
    assert run["resolution"] == "completed", run
    assert run["summary"] == "task printer.clear-queue on 2 host(s): 1 already-ok, 1 fixed"
    ticket = records(ws, ticket=run["ticket"])
    assert ticket[0].kind == "ticket.opened" and ticket[0].info["category"] == "printer"
    fixed = [r for r in ticket if r.kind == "action.finish" and r.outcome == "fixed"]
    assert [r.host for r in fixed] == ["lab-01"]
    assert ticket[-1].kind == "ticket.resolved"
    assert ticket[-1].info == {"code": "completed", "resolution": run["summary"]}

    assert lab.itops(
        "schedule", "add", "backups", "--playbook", "backup_configs", "--targets", "lab-03",
        "--cron", "0 3 * * *", "-p", "backup_paths=/etc/hostname", workspace=ws,
    ).returncode == 0  # fmt: skip
    (run,) = run_json(lab.itops("schedule", "run", "backups", "--json", workspace=ws, timeout=180))
    assert run["resolution"] == "completed", run
    events = [r for r in records(ws, ticket=run["ticket"]) if r.kind == "playbook.event"]
    assert {(e.host, e.info["ansible_task"], e.outcome) for e in events} >= {
        ("lab-03", "Copy them to the controller", "changed")
    }
    assert (ws / ".itops" / "backups" / "playbook" / "lab-03" / "etc" / "hostname").is_file()


def test_the_daemon_catches_up_a_missed_run_and_stops_on_sigterm(lab: LabEnv) -> None:
    ws = lab.other_workspace("daemon", known_hosts=lab_known_hosts(lab))
    assert lab.itops(
        "schedule", "add", "printers", "--task", "printer.status", "--targets", "lab-04",
        "--cron", "0 4 * * *", "--missed", "run-once", workspace=ws,
    ).returncode == 0  # fmt: skip
    # The scheduler was down at the last 04:00: move the due time back, as a week's downtime would.
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{ws / '.itops' / 'ledger.db'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE itops_schedules SET next_run_at = '2026-01-01T03:00:00.000000Z'"))
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITOPS_")}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "--workspace", str(ws), "scheduler", "--interval", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(r.kind == "ticket.resolved" for r in records(ws)):
                break
            time.sleep(0.3)
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert daemon.returncode == 0, err
    assert "SIGTERM, stopping" in err and "stopped" in err
    kinds = [r.kind for r in records(ws) if not r.kind.startswith(("action.", "ticket.opened"))]
    assert kinds[:2] == ["schedule.added", "scheduler.started"]
    assert kinds.count("schedule.run-started") == 1, kinds
    assert kinds[-1] == "scheduler.stopped"
    missed = next(r for r in records(ws, kind="schedule.missed"))
    assert missed.info["action"] == "one catch-up run now" and missed.info["count"] >= 1
    finished = next(r for r in records(ws, kind="schedule.run-finished"))
    assert finished.outcome == "completed"
    assert Path(ws / ".itops" / "ledger.db").exists()

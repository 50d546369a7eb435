"""The L2 engineer's flow, through the real CLI, over real SSH, against real cupsd."""

from __future__ import annotations

import json
import re

import pytest

from tests.integration.conftest import LabEnv

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def healthy_printers(lab: LabEnv) -> None:
    """Each test starts from healthy printers: its exact outcomes depend on no earlier test."""
    lab.heal_printers()


def outcomes(output: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^(lab-\d+)\s+(\S+)", output, re.M)}


def test_check_changes_nothing_fix_fixes_second_run_is_already_ok(lab: LabEnv) -> None:
    lab.break_printer("lab-01", "lab-02", "lab-03")
    before = {h: lab.lpstat(h) for h in ("lab-01", "lab-02", "lab-03", "lab-04")}

    check = lab.itops("fix", "printer.clear-queue", "lab", "--check")
    assert check.returncode == 4, check.stderr
    assert outcomes(check.stdout) == {
        "lab-01": "would-fix",
        "lab-02": "would-fix",
        "lab-03": "would-fix",
        "lab-04": "already-ok",
    }
    assert "paper jam" in check.stdout
    after_check = {h: lab.lpstat(h) for h in before}
    assert after_check == before  # --check did not touch a single queue or job

    fix = lab.itops(
        "fix",
        "printer.clear-queue",
        "lab",
        "--ticket",
        "INC-1042",
        "--category",
        "printer",
        "--priority",
        "P2",
    )
    assert fix.returncode == 0, fix.stdout + fix.stderr
    assert outcomes(fix.stdout) == {
        "lab-01": "fixed",
        "lab-02": "fixed",
        "lab-03": "fixed",
        "lab-04": "already-ok",
    }
    for host in ("lab-01", "lab-02", "lab-03"):
        state = lab.lpstat(host)
        assert "disabled" not in state and "office-" not in state  # enabled, no jobs left
        assert "office accepting requests" in state

    again = lab.itops("fix", "printer.clear-queue", "lab", "--ticket", "INC-1042")
    assert again.returncode == 0
    assert set(outcomes(again.stdout).values()) == {"already-ok"}


def test_resolve_closes_the_loop_when_every_host_is_verified(lab: LabEnv) -> None:
    lab.break_printer("lab-02")
    fixed = lab.itops(
        "fix", "printer.clear-queue", "lab-02", "--ticket", "INC-1077", "--resolve",
        "--category", "printer",
    )  # fmt: skip
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "INC-1077 resolved: itops fix printer.clear-queue: verified fixed on 1 host(s)" in (
        fixed.stdout
    )
    shown = json.loads(lab.itops("ticket", "show", "INC-1077", "--json").stdout)
    assert shown["summary"]["state"] == "resolved"


def test_the_run_is_in_the_ticket_log_and_the_chain_verifies(lab: LabEnv) -> None:
    lab.break_printer("lab-02")
    fix = lab.itops("fix", "printer.clear-queue", "lab-02", "--ticket", "INC-2001", "--json")
    report = json.loads(fix.stdout)
    assert report["hosts"][0]["outcome"] == "fixed"
    steps = [c["step"] for c in report["hosts"][0]["commands"]]
    assert steps[0] == "check" and "apply" in steps and steps[-1] == "verify"

    log = lab.itops("log", "--ticket", "INC-2001", "--json")
    records = [json.loads(line) for line in log.stdout.splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds == ["ticket.opened", "action.begin", "action.finish"]
    begin, finish = records[1], records[2]
    assert begin["seq"] < finish["seq"] and begin["action_id"] == finish["action_id"]
    assert finish["outcome"] == "fixed" and finish["host"] == "lab-02"
    assert {c["exit_code"] for c in finish["commands"]} == {0}
    assert re.fullmatch(r"[0-9a-f]{64}", finish["output_sha256"])
    assert begin["operator"] and begin["at"].endswith("Z")

    shown = lab.itops("ticket", "show", "INC-2001")
    assert shown.returncode == 0 and "lab-02" in shown.stdout and "fixed" in shown.stdout
    table = lab.itops("log", "--host", "lab-02", "--outcome", "fixed")
    assert "INC-2001" in table.stdout
    csv = lab.itops("log", "--ticket", "INC-2001", "--csv")
    assert csv.stdout.splitlines()[0].startswith("seq,at,kind,operator")
    verify = lab.itops("audit", "verify")
    assert verify.returncode == 0 and "ledger intact" in verify.stdout


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_a_team_ledger_on_postgresql_records_a_run_over_every_lab_host(
    lab: LabEnv, ledger_url: str
) -> None:
    # The hosts run as greenlets on the SSH event loop; their ledger writes go to worker
    # threads (a database round trip must not stall the other hosts) and still land in order.
    env = {"ITOPS_LEDGER_URL": ledger_url}
    hosts = ("lab-01", "lab-02", "lab-03", "lab-04")
    lab.break_printer("lab-01", "lab-04")
    fix = lab.itops("fix", "printer.clear-queue", "lab", "--ticket", "INC-2101", "--json", env=env)
    assert {h["host"]: h["outcome"] for h in json.loads(fix.stdout)["hosts"]} == {
        "lab-01": "fixed",
        "lab-02": "already-ok",
        "lab-03": "already-ok",
        "lab-04": "fixed",
    }, fix.stderr
    log = lab.itops("log", "--ticket", "INC-2101", "--json", env=env)
    records = [json.loads(line) for line in log.stdout.splitlines()]
    assert records[0]["kind"] == "ticket.opened"
    for host in hosts:
        mine = [r for r in records if r["host"] == host]
        assert [r["kind"] for r in mine] == ["action.begin", "action.finish"], host
        assert mine[0]["action_id"] == mine[1]["action_id"]
    verify = lab.itops("audit", "verify", env=env)
    assert verify.returncode == 0 and "ledger intact" in verify.stdout
    assert "INC-2101" not in lab.itops("log", "--json").stdout  # the workspace's SQLite ledger


def test_one_connection_per_host_for_the_whole_sequence(lab: LabEnv) -> None:
    lab.break_printer("lab-03")
    connections = re.compile(r"Connection from \S+ port \d+ on 127\.1\.0\.3 port")
    log = lab.sshd_log()
    fix = lab.itops("fix", "printer.clear-queue", "lab-03", "--ticket", "INC-2002", "--json")
    commands = json.loads(fix.stdout)["hosts"][0]["commands"]
    assert len(commands) >= 4  # check, apply (several), verify
    assert len(connections.findall(lab.sshd_log_settled(log, closed=1))) == 1


def test_changes_need_a_ticket(lab: LabEnv) -> None:
    result = lab.itops("fix", "printer.clear-queue", "lab")
    assert result.returncode == 2 and "ticket is required" in result.stderr


def test_inventory_commands(lab: LabEnv) -> None:
    listed = lab.itops("inventory", "list", "lab", "--json")
    assert [h["name"] for h in json.loads(listed.stdout)] == [
        "lab-01",
        "lab-02",
        "lab-03",
        "lab-04",
    ]
    check = lab.itops("inventory", "check", "lab")
    assert check.returncode == 0 and check.stdout.count(" ok ") == 4
    show = lab.itops("inventory", "show", "lab-01")
    assert "127.1.0.1" in show.stdout and "hosts.yml" in show.stdout


def test_tasks_list_and_show(lab: LabEnv) -> None:
    listed = lab.itops("tasks", "list", "--json")
    names = {t["name"] for t in json.loads(listed.stdout)}
    assert {"printer.clear-queue", "test.sleep"} <= names
    shown = lab.itops("tasks", "show", "printer.clear-queue")
    assert "Example:" in shown.stdout and "queue" in shown.stdout


def test_unknown_names_get_the_closest_suggestions(lab: LabEnv) -> None:
    task = lab.itops("fix", "printer.clear-queu", "lab", "--check")
    assert task.returncode == 2 and "did you mean: printer.clear-queue" in task.stderr
    host = lab.itops("fix", "printer.clear-queue", "lab-1", "--check")
    assert host.returncode == 2 and "lab-01" in host.stderr
    group = lab.itops("fix", "printer.clear-queue", "labs", "--check")
    assert group.returncode == 2 and "lab" in group.stderr


def test_a_terminal_gets_a_live_progress_bar_and_a_table(lab: LabEnv) -> None:
    """Run the CLI on a real pseudo-terminal, as an engineer's shell would."""
    import os
    import pty
    import subprocess
    import sys

    lab.break_printer("lab-04")
    main, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITOPS_")} | {"COLUMNS": "120"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toolkit",
            "--workspace",
            str(lab.root),
            "fix",
            "printer.clear-queue",
            "lab",
            "--ticket",
            "INC-2003",
        ],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        close_fds=True,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(60)
    os.close(main)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0
    assert "hosts" in screen and "4/4" in screen  # the bar reached every host
    assert "fixed:1" in screen  # live counts by outcome
    assert "\x1b[" in screen and "fixed" in screen  # colour and the final table

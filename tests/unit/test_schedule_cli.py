"""The CLI of schedules, approvals and windows: bad input refused with a clear error and nothing
stored or run; the approval round trip between two operators; systemd units; a fast --help."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.signers import NAMES, Operators
from toolkit.cli import main
from toolkit.ledger import Ledger
from toolkit.run.approvals import Binding
from toolkit.workspace import Workspace

TASKS = """
from toolkit.remediation.catalog import Context, Finding, Remediation, Param, remediation
from toolkit.remediation.quoting import cmd

@remediation("demo.restart", category="software", platforms={"linux"}, summary="Restart",
             disruptive=True)
class Restart(Remediation):
    def check(self, ctx: Context) -> Finding:
        return Finding.problem("stale")
    def apply(self, ctx: Context) -> None:
        ctx.change(cmd("true"))

@remediation("demo.rotate", category="account", platforms={"linux"}, summary="Rotate",
             risky=True)
class Rotate(Remediation):
    user = Param(str, default="svc")
    def check(self, ctx: Context) -> Finding:
        return Finding.problem("old")
    def apply(self, ctx: Context) -> None:
        ctx.change(cmd("true"))
"""

CONFIG = """
[maintenance_windows.never]
timezone = "UTC"
dates = ["2001-01-01"]

[maintenance_windows.always]
timezone = "UTC"
weekly = ["Mon 00:00-Mon 00:00"]

[maintenance_windows.sunday-night]
timezone = "Europe/Berlin"
weekly = ["Sun 01:00-05:00"]
"""


KEYS: dict[str, Path] = {}  # each operator's signing key (tests.signers), for itops()


@pytest.fixture
def ws(workspace: Workspace, operators: Operators) -> Iterator[Path]:
    root = workspace.root
    operators.write(root / "allowed_signers")
    KEYS.update({n: operators.key(n) for n in NAMES})
    (root / "itops.toml").write_text((root / "itops.toml").read_text() + CONFIG)
    (root / "inventory" / "hosts.yml").write_text(
        "all:\n  children:\n    web:\n      hosts:\n"
        "        web-1: {address: 127.0.0.1, port: 1}\n"
        "        web-2: {address: 127.0.0.1, port: 1, maintenance_window: never}\n"
        "    db:\n      hosts:\n        db-1: {address: 127.0.0.1, port: 1}\n"
        "    typo:\n      hosts:\n        db-9: {address: 127.0.0.1, port: 1, maintenance_window: nevr}\n"
    )
    (root / "tasks" / "demo.py").write_text(TASKS)
    (root / "playbooks" / "noop.yml").write_text("- name: Nothing\n  hosts: all\n  tasks: []\n")
    yield root
    KEYS.clear()


@dataclass(frozen=True)
class Result:
    exit_code: int
    output: str  # stdout and stderr, interleaved


def itops(ws: Path, *args: str, operator: str = "alice", key: str | None = None) -> Result:
    """The real entry point (`itops …`: errors become messages and exit codes), in-process, as
    `operator` (the label) signing with `key`'s SSH key (default: the operator's own)."""
    signing = KEYS.get(key or operator)
    env = {
        "ITOPS_OPERATOR": operator,
        "ITOPS_WORKSPACE": None,
        "ITOPS_SIGNING_KEY": str(signing) if signing else None,
    }
    with CliRunner().isolation(env=env) as (_out, _err, both):
        try:
            main(["-w", str(ws), *args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Result(code, both.getvalue().decode())


def kinds(ws: Path) -> list[str]:
    db = ws / ".itops" / "ledger.db"
    if not db.exists():
        return []
    ledger = Ledger(f"sqlite:///{db}", operator="auditor")
    try:
        return [r.kind for r in ledger.records()]
    finally:
        ledger.close()


def schedules(ws: Path) -> list[Any]:
    result = itops(ws, "schedule", "list", "--json")
    assert result.exit_code == 0, result.output
    data: list[Any] = json.loads(result.output)
    return data


ADD = ["schedule", "add", "nightly", "--task", "demo.restart", "--targets", "web"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "0 2 * * FUNDAY"], "invalid cron expression '0 2 * * FUNDAY': Bad day-of-week"),
        (["--cron", "every night"], "invalid cron expression 'every night': it needs 5 fields"),
        (["--cron", "0 2 * * *", "--window", "weekend"], "unknown maintenance window 'weekend'"),
        (["--cron", "0 2 * * *", "--tz", "Berlin"], "unknown time zone 'Berlin'"),
        # every Monday noon against a Sunday-night window: it would never run
        (["--cron", "0 12 * * MON", "--window", "sunday-night"],
         "would never run: none of the times of cron '0 12 * * MON'"),
        (["--cron", "0 3 * * *", "--window", "never"], "would never run"),
    ],
)
def test_schedule_add_refuses_bad_input_and_stores_nothing(
    ws: Path, args: list[str], message: str
) -> None:
    result = itops(ws, *ADD, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert schedules(ws) == [] and "schedule.added" not in kinds(ws)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--targets", "web:&db"], "the targets 'web:&db' match no host"),
        (["--targets", "nothing-here"], "unknown host or group 'nothing-here'"),
        (["--targets", "typo"], "unknown maintenance window 'nevr'"),
        (["--playbook", "../../etc/passwd"], "playbooks are named, not given as paths"),
        (["--playbook", "missing"], "unknown playbook 'missing'"),
        (["--runbook", "printer"], "unknown runbook 'printer'"),
        (["--task", "demo.restart", "--playbook", "noop"], "exactly one of --task"),
        (["--task", "demo.rotate", "-p", "user=a;b"], "parameter user"),
    ],
)
def test_schedule_add_refuses_jobs_that_could_not_run(
    ws: Path, args: list[str], message: str
) -> None:
    base = ["schedule", "add", "job", "--cron", "0 2 * * *"]
    if not any(a.startswith("--targets") for a in args):
        base += ["--targets", "web"]
    if not any(a in ("--task", "--playbook", "--runbook") for a in args):
        base += ["--task", "demo.restart"]
    result = itops(ws, *base, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert schedules(ws) == []


def test_schedule_lifecycle_through_the_cli(ws: Path) -> None:
    added = itops(ws, *ADD, "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--window", "always")
    assert added.exit_code == 0, added.output
    assert "next run:" in added.output and ("CET" in added.output or "CEST" in added.output)
    (item,) = schedules(ws)
    assert item["kind"] == "task" and item["window"] == "always"
    assert item["category"] == "software" and item["missed"] == "run-once"
    shown = itops(ws, "schedule", "show", "nightly", "--json")
    assert shown.exit_code == 0 and len(json.loads(shown.output)["upcoming"]) == 5
    assert itops(ws, "schedule", "pause", "nightly").exit_code == 0
    assert schedules(ws)[0]["paused"] is True
    assert itops(ws, "schedule", "resume", "nightly").exit_code == 0
    assert itops(ws, "schedule", "remove", "nightly").exit_code == 0
    assert schedules(ws) == []
    assert [k for k in kinds(ws) if k.startswith("schedule.")] == [
        "schedule.added",
        "schedule.paused",
        "schedule.resumed",
        "schedule.removed",
    ]
    missing = itops(ws, "schedule", "pause", "nightly")
    assert missing.exit_code == 2 and "unknown schedule 'nightly'" in missing.output


def test_a_manual_run_opens_and_resolves_its_own_change_ticket(ws: Path) -> None:
    assert itops(ws, *ADD, "--cron", "0 2 * * *").exit_code == 0
    result = itops(ws, "schedule", "run", "nightly", "--json")
    assert result.exit_code == 3, result.output  # nothing listens on port 1: unreachable
    (event,) = json.loads(result.output)
    ticket = event["ticket"]
    assert ticket.startswith("CHG-") and ticket.endswith("-nightly")
    assert event["resolution"] == "failed"
    # web-2 is outside its window: skipped before connecting; web-1 has none and is tried
    assert "1 skipped" in event["summary"] and "1 unreachable" in event["summary"]
    shown = itops(ws, "ticket", "show", ticket, "--json")
    records = json.loads(shown.output)["records"]
    order = [r["kind"] for r in records]
    assert order[0] == "ticket.opened" and order[-1] == "ticket.resolved"
    assert order.count("action.begin") == 2 and order.count("action.finish") == 2
    assert records[-1]["data"]["resolution"] == event["summary"]


def test_run_due_with_nothing_due(ws: Path) -> None:
    assert itops(ws, *ADD, "--cron", "0 2 1 1 *").exit_code == 0
    result = itops(ws, "schedule", "run-due")
    assert result.exit_code == 0 and "nothing due" in result.output


def test_install_prints_or_writes_a_timer_and_a_service(ws: Path, tmp_path: Path) -> None:
    printed = itops(ws, "schedule", "install", "--systemd", "--print")
    assert printed.exit_code == 0, printed.output
    assert (
        "# itops-schedule.timer" in printed.output and "OnCalendar=*-*-* *:*:00" in printed.output
    )
    assert f"--workspace {ws} schedule run-due" in printed.output
    units = tmp_path / "units"
    written = itops(ws, "schedule", "install", "--systemd", "--daemon", "--dir", str(units))
    assert written.exit_code == 0, written.output
    service = (units / "itops-scheduler.service").read_text()
    assert "scheduler" in service and "KillSignal=SIGTERM" in service and "Type=simple" in service


# -- approvals and windows through `itops fix` -------------------------------------------------
def test_the_approval_round_trip_between_two_operators(ws: Path) -> None:
    first = itops(ws, "fix", "demo.rotate", "db-1", "-p", "user=svc", "--ticket", "INC-7")
    assert first.exit_code == 5, first.output
    assert "needs-approval" in first.output
    rid = first.output.split("approval requested: ", 1)[1].split()[0]
    listed = itops(ws, "approve", "--list", "--json", operator="bob")
    assert [r["request_id"] for r in json.loads(listed.output)] == [rid]

    self_approval = itops(ws, "approve", rid, "--yes")
    assert self_approval.exit_code == 2
    assert (
        "self-approval: alice requested this change and cannot approve it" in self_approval.output
    )
    # the attack: the same person, another label — their key still says alice
    relabelled = itops(ws, "approve", rid, "--yes", operator="bob", key="alice")
    assert relabelled.exit_code == 2, relabelled.output
    assert "self-approval: alice requested this change" in relabelled.output
    unconfirmed = itops(ws, "approve", rid, operator="bob")
    assert unconfirmed.exit_code == 2 and "not confirmed: nothing signed" in unconfirmed.output

    granted = itops(ws, "approve", rid, "--note", "checked", "--yes", operator="bob")
    assert granted.exit_code == 0, granted.output
    assert f"approved {rid}: demo.rotate on db-1 under INC-7" in granted.output
    assert "requested by alice, signed by bob" in granted.output
    ledger = Ledger(f"sqlite:///{ws / '.itops' / 'ledger.db'}", operator="auditor")
    req = next(r for r in ledger.records(kind="approval.requested") if r.info["request_id"] == rid)
    binding = Binding.from_record(req)
    ledger.close()
    for shown in ("ticket INC-7", "demo.rotate", "db-1", '{"user": "svc"}', binding.sha256):
        assert shown in granted.output, shown

    again = itops(ws, "fix", "demo.rotate", "db-1", "-p", "user=svc", "--ticket", "INC-7")
    assert again.exit_code == 3, again.output  # approved: it ran, and port 1 is closed
    other = itops(ws, "fix", "demo.rotate", "db-1", "-p", "user=root", "--ticket", "INC-7")
    assert other.exit_code == 5, "other parameters need their own approval"
    wrong = itops(
        ws, "fix", "demo.rotate", "db-1", "-p", "user=root", "--ticket", "INC-7", "--approval", rid
    )
    assert wrong.exit_code == 2 and "it was given for different parameters" in wrong.output
    recorded = kinds(ws)
    for kind in ("approval.requested", "approval.refused", "approval.granted", "approval.used"):
        assert kind in recorded, kind


def test_a_scheduled_risky_task_is_approved_once_for_the_schedules_runs(ws: Path) -> None:
    """Each scheduled run opens its own change ticket, so the approval binds to the schedule:
    granted once, it covers that schedule's later runs (and nothing else) until it expires."""
    add = [
        "schedule",
        "add",
        "rotate",
        "--task",
        "demo.rotate",
        "--targets",
        "db",
        "-p",
        "user=svc",
    ]
    assert itops(ws, *add, "--cron", "0 3 * * *").exit_code == 0
    held = itops(ws, "schedule", "run", "rotate", "--json")
    assert held.exit_code == 5, held.output
    (event,) = json.loads(held.output)
    assert event["resolution"] == "needs-approval"
    (request,) = json.loads(itops(ws, "approve", "--list", "--json", operator="bob").output)
    assert request["ticket"] == event["ticket"] and request["task"] == "demo.rotate"

    granted = itops(ws, "approve", request["request_id"], "--yes", operator="bob")
    assert granted.exit_code == 0, granted.output
    assert "demo.rotate on db-1 for the runs of schedule rotate" in granted.output

    tickets = []
    for _ in range(2):
        ran = itops(ws, "schedule", "run", "rotate", "--json")
        assert ran.exit_code == 3, ran.output  # approved: it ran, and port 1 is closed
        tickets.append(json.loads(ran.output)[0]["ticket"])
    assert len(set(tickets)) == 2 and event["ticket"] not in tickets
    db = Ledger(f"sqlite:///{ws / '.itops' / 'ledger.db'}", operator="auditor")
    try:
        used = [r.ticket for r in db.records(kind="approval.used")]
    finally:
        db.close()
    assert used == tickets, "each use is recorded under the run's own change ticket"

    by_hand = itops(ws, "fix", "demo.rotate", "db-1", "-p", "user=svc", "--ticket", "INC-9")
    assert by_hand.exit_code == 5, "the schedule's approval does not cover a run by hand"
    named = itops(
        ws, "fix", "demo.rotate", "db-1", "-p", "user=svc", "--ticket", "INC-9",
        "--approval", request["request_id"],
    )  # fmt: skip
    assert named.exit_code == 2 and "it is for schedule rotate, not ticket INC-9" in named.output


def test_break_glass_needs_a_reason_and_a_p1_ticket(ws: Path) -> None:
    no_reason = itops(ws, "fix", "demo.restart", "web-2", "--ticket", "INC-8", "--break-glass")
    assert no_reason.exit_code == 2 and "--break-glass needs --reason" in no_reason.output
    assert kinds(ws) == []
    p3 = itops(
        ws, "fix", "demo.restart", "web-2", "--ticket", "INC-8", "--break-glass", "--reason", "x"
    )
    assert p3.exit_code == 2 and "only for P1 tickets; INC-8 is P3" in p3.output
    assert "run.refused" in kinds(ws) and "action.begin" not in kinds(ws)
    outside = itops(ws, "fix", "demo.restart", "web-2", "--ticket", "INC-9", "--priority", "P1")
    assert outside.exit_code == 6 and "outside window never" in outside.output
    glass = itops(
        ws,
        "fix",
        "demo.restart",
        "web-2",
        "--ticket",
        "INC-9",
        "--break-glass",
        "--reason",
        "site down",
    )
    assert glass.exit_code == 3, glass.output  # it ran (port 1 is closed)
    assert "policy.break-glass" in kinds(ws)


def test_an_unknown_window_on_a_host_refuses_the_fix_and_records_it(ws: Path) -> None:
    result = itops(ws, "fix", "demo.restart", "db-9", "--ticket", "INC-10")
    assert result.exit_code == 2
    assert (
        "unknown maintenance window 'nevr'" in result.output
        and "did you mean: never?" in result.output
    )
    assert "run.refused" in kinds(ws) and "action.begin" not in kinds(ws)


def test_itops_help_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from toolkit.cli import cli\n"
        "result = CliRunner().invoke(cli, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "for name in ('approve', 'playbook', 'schedule', 'scheduler'):\n"
        "    assert name in result.output, name\n"
        "heavy = ('ansible_runner', 'ansible', 'cronsim', 'croniter', 'asyncssh', 'sqlalchemy')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in heavy]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr


def _examples(command: Any, path: list[str]) -> list[tuple[list[str], str]]:
    """Every `itops …` example line in a command's help (backslash continuations joined)."""
    import click

    found = []
    text = (command.help or "").replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("itops ") and "&&" not in line:
            found.append((path, line))
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found.extend(_examples(sub, [*path, name]))
    return found


def _all_examples() -> list[tuple[list[str], str]]:
    from toolkit.cli.approve import approve
    from toolkit.cli.playbook import playbook
    from toolkit.cli.schedule import schedule, scheduler

    return [
        *_examples(approve, ["approve"]),
        *_examples(playbook, ["playbook"]),
        *_examples(schedule, ["schedule"]),
        *_examples(scheduler, ["scheduler"]),
    ]


@pytest.mark.parametrize(("path", "example"), _all_examples())
def test_every_help_example_parses(path: list[str], example: str) -> None:
    """Docs are executable: each example names a real command and valid options."""
    import shlex

    import click

    from toolkit.cli import cli

    args = shlex.split(example)[1:]
    assert args[: len(path)] == path, "an example of the command it documents"
    command: Any = cli
    with click.Context(cli) as ctx:
        while isinstance(command, click.Group):
            name, args = args[0], args[1:]
            command = command.get_command(ctx, name)
            assert command is not None, example
        command.make_context(name, args, parent=ctx)  # raises on an unknown option or argument


def test_a_schedule_inside_its_window_is_accepted(ws: Path) -> None:
    ok = itops(ws, *ADD, "--cron", "30 2 * * SUN", "--tz", "Europe/Berlin", "--window",
               "sunday-night")  # fmt: skip
    assert ok.exit_code == 0, ok.output


def test_identity_show_names_the_principal_of_your_key(ws: Path, operators: Operators) -> None:
    shown = itops(ws, "identity", "show", "--json", operator="whoever", key="bob")
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert data["principal"] == "bob" and data["fingerprint"].startswith("SHA256:")
    (ws / "allowed_signers").unlink()
    missing = itops(ws, "identity", "show", key="bob")
    assert missing.exit_code == 2 and "principal        (none)" in missing.output
    assert "no allowed_signers file" in missing.output and "ssh.pub" not in missing.output
    assert "allowed_signers" in missing.output.split("hint:", 1)[1]

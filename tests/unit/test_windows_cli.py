"""The Windows catalog from the command line: every Example parses and validates, `tasks show`
prints them, and hostile values are refused by `itops fix` before any connection."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from winfakes import CATALOG

from toolkit import software
from toolkit.cli import cli
from toolkit.cli.fix import fix, parse_params, task_options
from toolkit.remediation.catalog import TaskSpec
from toolkit.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
WINDOWS = [s for t in CATALOG for s in t.specs if "windows" in s.platforms]


def test_twenty_three_windows_tasks_each_with_examples() -> None:
    assert len(WINDOWS) == 23  # and account.status|unlock|enable|disable|group-add|group-remove (AD module)
    assert all(spec.examples for spec in WINDOWS)


@pytest.mark.parametrize(
    ("spec", "example"),
    [(s, e) for s in WINDOWS for e in s.examples],
    ids=[f"{s.name}-{i}" for s in WINDOWS for i in range(len(s.examples))],
)
def test_example_parses_and_validates(spec: TaskSpec, example: str) -> None:
    argv = shlex.split(example)
    assert argv[:3] == ["itops", "fix", spec.name]
    ctx = fix.make_context("fix", argv[2:])
    raw = parse_params(ctx.params["params"])
    software.activate(ROOT / "software")  # the sample workspace's catalog: software.* names
    try:
        values = spec.validate(raw)
    finally:
        software.activate(None)
    assert set(values) == set(spec.params)
    assert ctx.params["check_only"] or ctx.params["ticket"], "a fix example names its ticket"


@pytest.fixture
def windows_workspace(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Path:
    (workspace.root / "inventory" / "hosts.yml").write_text(
        "all:\n  children:\n    windows:\n      hosts:\n"
        "        ws-042: {address: 127.0.0.1, port: 1, user: itops, password: env:ITOPS_TEST_PW}\n"
        "      vars: {platform: windows}\n"
    )
    monkeypatch.setenv("ITOPS_TEST_PW", "unused")
    return workspace.root


def test_tasks_show_prints_the_windows_examples(windows_workspace: Path) -> None:
    result = CliRunner().invoke(
        cli, ["-w", str(windows_workspace), "tasks", "show", "password.reset"]
    )
    assert result.exit_code == 0, result.output
    assert "platforms: windows" in result.output
    assert "itops fix password.reset mgmt-01 -p scope=ad" in result.output
    assert "allow_privileged" in result.output


@pytest.mark.parametrize(
    "param",
    [
        "user=jdoe; Remove-LocalUser admin",
        "user=$(Get-Credential)",
        "user=j`doe",
        'user=j"doe',
        "user=jdoe\nStop-Computer",
    ],
)
def test_fix_refuses_hostile_user_before_connecting(windows_workspace: Path, param: str) -> None:
    result = CliRunner().invoke(
        cli,
        ["-w", str(windows_workspace), "fix", "password.reset", "ws-042", "-p", param, "--check"],
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, Exception)
    assert "parameter user" in str(result.exception)
    assert not (windows_workspace / ".itops" / "ledger.db").exists(), "nothing was recorded or run"


def test_windows_printer_name_with_spaces_is_accepted_for_windows_hosts(
    windows_workspace: Path,
) -> None:
    """`itops fix` validates by the rules of the hosts' platform: CUPS would refuse the spaces."""
    result = CliRunner().invoke(
        cli,
        [
            "-w",
            str(windows_workspace),
            "fix",
            "printer.status",
            "ws-042",
            "-p",
            "queue=HP LaserJet 4th floor",
            "--check",
            "--connect-timeout",
            "1",
        ],
    )
    assert result.exit_code == 3, result.output  # validated, then: nothing listens on port 1
    assert "unreachable" in result.output


def test_task_parameters_may_be_given_as_options_after_the_targets() -> None:
    patch = CATALOG.get("patch.apply")
    extras = ["--security-only", "--include", "KB5034441", "--exclude=KB890830", "--no-reboot"]
    assert task_options(patch, extras) == [
        "security_only=true",
        "include=KB5034441",
        "exclude=KB890830",
        "reboot=false",
    ]
    values = patch.implementation("windows").validate(  # type: ignore[union-attr]
        parse_params(task_options(patch, [*extras, "--include", "KB5035845"]))
    )
    assert values["security_only"] is True and values["include"] == ["KB5034441", "KB5035845"]


@pytest.mark.parametrize(
    ("extras", "message"),
    [
        (["--bogus"], "patch.apply has no option '--bogus' (its parameters: --security-only"),
        (["--include"], "--include needs a value"),
        (["--include", "--reboot"], "--include needs a value"),
        (["--no-include"], "--no-include is only for on/off parameters"),
        (["ws-043"], "unexpected argument 'ws-043': TARGETS is one pattern — join hosts"),
    ],
)
def test_a_wrong_task_option_says_what_the_task_takes(extras: list[str], message: str) -> None:
    with pytest.raises(click.UsageError, match=re.escape(message)):
        task_options(CATALOG.get("patch.apply"), extras)


def test_fix_with_an_option_before_the_targets_is_a_usage_error(windows_workspace: Path) -> None:
    result = CliRunner().invoke(
        cli, ["-w", str(windows_workspace), "fix", "patch.apply", "--reboot", "ws-042", "--check"]
    )
    assert result.exit_code == 2
    assert "'--reboot' where TASK and TARGETS belong" in result.output


def test_ctrl_c_still_hands_over_the_passwords_hosts_already_got(
    windows_workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 30 of 40 accounts were reset when the engineer pressed Ctrl-C: those 30 new passwords
    # must reach the engineer (the run ends with "interrupted" as before).
    import toolkit.cli.fix as fix_module
    from toolkit.run.runner import HostResult, Outcome, RunInterrupted
    from toolkit.secrets.credentials import Secret
    from toolkit.secrets.handover import Handover

    done = HostResult(
        "ws-042",
        Outcome.FIXED,
        "reset",
        handovers=(Handover("ws-042", "new password for jdoe", Secret("Canary-Pw-77")),),
    )

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise RunInterrupted("password.reset", "INC-1", (done,), never_started=("ws-043",))

    monkeypatch.setattr(fix_module, "execute", interrupted)
    result = CliRunner().invoke(
        cli,
        ["-w", str(windows_workspace), "fix", "password.reset", "ws-042", "-p", "user=jdoe",
         "--ticket", "INC-1"],
    )  # fmt: skip
    assert result.exit_code == 130
    # the table of what happened, as after a finished run, and what never started
    assert "ws-042" in result.output and "ws-043" in result.output
    assert "password.reset interrupted after" in result.output
    assert "1 fixed, 1 not-started" in result.output
    assert "ws-042: new password for jdoe (shown once, not recorded): Canary-Pw-77" in (
        result.output
    )

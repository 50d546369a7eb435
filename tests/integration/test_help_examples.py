"""Docs are executable: every `Example:` in the help of the ticket, kpi and report commands runs."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests import fixture_tickets as desk
from toolkit.cli import cli
from toolkit.workspace import Workspace

pytestmark = pytest.mark.integration

OPEN = [["ticket", "open", "INC-1042", "-c", "printer", "--host", "ws-042", "--at", "1h"]]
RESOLVED = [*OPEN, ["ticket", "resolve", "INC-1042"]]
# what must have happened before a command's examples make sense
SETUP: dict[str, list[list[str]]] = {
    "ticket": [],
    "ticket open": [],
    "ticket respond": OPEN,
    "ticket note": OPEN,
    "ticket escalate": OPEN,
    "ticket wait": OPEN,
    "ticket resume": [*OPEN, ["ticket", "wait", "INC-1042"]],
    "ticket resolve": OPEN,
    "ticket confirm": RESOLVED,
    "ticket close": [*RESOLVED, ["ticket", "confirm", "INC-1042"]],
    "ticket reopen": RESOLVED,
    "ticket survey": RESOLVED,
    "ticket complain": OPEN,
    "ticket show": OPEN,
    "ticket list": OPEN,
    "ticket import": [],
    "ticket export": OPEN,
    "kpi": OPEN,
    "report": OPEN,
    "report kpi": OPEN,
    "report audit": OPEN,
    "serve user list": [],
}


def examples(command: str) -> list[list[str]]:
    """The `itops …` lines of a command's help text, after its Example(s): heading."""
    result = CliRunner().invoke(cli, [*command.split(), "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    text = result.output.split("Example", 1)
    assert len(text) == 2, f"`itops {command} --help` has no example"
    found = []
    for line in text[1].splitlines():
        line = line.strip()
        if line.startswith("itops "):
            line = line.split(" | ", 1)[0].split("  #", 1)[0]  # the itops part of a pipeline
            found.append(shlex.split(line)[1:])
    assert found, command
    return found


@pytest.mark.parametrize("command", sorted(SETUP))
def test_examples_run(
    command: str, workspace: Workspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(workspace.root)
    monkeypatch.setenv("ITOPS_OPERATOR", "ana")
    monkeypatch.setenv("ITOPS_WORKSPACE", str(workspace.root))
    desk.write(workspace.root / "desk-export.jsonl")
    runner = CliRunner()
    for argv in [*SETUP[command], *examples(command)]:
        result = runner.invoke(cli, argv, catch_exceptions=False)
        assert result.exit_code == 0, (argv, result.output)

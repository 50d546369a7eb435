"""`itops log` filters: a typo is an error with suggestions, repeated options combine, and
--changes-only hides what changed nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.inprocess import itops
from toolkit.ledger import Entry, Ledger
from toolkit.workspace import Workspace


def action(book: Ledger, aid: str, host: str, ticket: str, outcome: str | None, mode: str) -> None:
    book.append(
        Entry("action.begin", ticket=ticket, host=host, task="printer.clear-queue",
              action_id=aid, data={"mode": mode})
    )  # fmt: skip
    if outcome is not None:
        book.append(
            Entry("action.finish", ticket=ticket, host=host, task="printer.clear-queue",
                  action_id=aid, outcome=outcome, data={"message": f"{host} {outcome}"})
        )  # fmt: skip


@pytest.fixture
def ws(workspace: Workspace) -> Path:
    book = Ledger(f"sqlite:///{workspace.state_dir / 'ledger.db'}", operator="ana")
    book.append(Entry("ticket.opened", ticket="INC-1", data={"priority": "P3"}))
    action(book, "a1", "ws-042", "INC-1", "would-fix", "check")
    action(book, "a2", "ws-042", "INC-1", "fixed", "fix")
    action(book, "a3", "ws-043", "INC-1", "failed", "fix")
    action(book, "a4", "ws-044", "INC-1", "already-ok", "fix")
    action(book, "a5", "ws-045", "INC-2", None, "fix")  # begun, never finished
    book.close()
    return workspace.root


def hosts_shown(out: str) -> list[str]:
    return [json.loads(line)["host"] for line in out.splitlines() if line.startswith("{")]


@pytest.mark.parametrize(
    ("args", "message", "suggestion"),
    [
        (["--outcome", "fixd"], "no outcome 'fixd' in the ticket log", "did you mean fixed"),
        (["--host", "ws-42"], "no host 'ws-42'", "did you mean ws-042"),
        (["--ticket", "INC-9"], "no ticket 'INC-9'", "INC-1"),
        (["--operator", "anna"], "no operator 'anna'", "did you mean ana"),
        (["--task", "printer.clear-queu"], "no task", "printer.clear-queue"),
    ],
)
def test_a_filter_value_never_seen_is_an_error_with_suggestions(
    ws: Path, args: list[str], message: str, suggestion: str
) -> None:
    code, out = itops(ws, "log", *args)
    assert code == 2, out
    assert message in out and suggestion in out


def test_repeated_filters_combine(ws: Path) -> None:
    code, out = itops(ws, "log", "--outcome", "fixed", "--outcome", "failed", "--json")
    assert code == 0, out
    assert sorted(hosts_shown(out)) == ["ws-042", "ws-043"]
    code, out = itops(ws, "log", "--host", "ws-043", "--host", "ws-044", "--json")
    assert sorted(set(hosts_shown(out))) == ["ws-043", "ws-044"]
    code, out = itops(ws, "log", "--ticket", "INC-1", "--ticket", "INC-2", "--outcome", "open")
    assert code == 0 and "ws-045" in out and "ws-042" not in out


def test_changes_only_hides_check_runs_and_unchanged_hosts(ws: Path) -> None:
    code, out = itops(ws, "log", "--changes-only")
    assert code == 0, out
    assert "ticket.opened" in out  # governance stays
    assert "ws-042" in out and "ws-043" in out and "ws-045" in out  # fixed, failed, open
    assert "would-fix" not in out and "ws-044" not in out  # the check run, the already-ok host


def test_audit_head_has_json(ws: Path) -> None:
    code, out = itops(ws, "audit", "head", "--json")
    head = json.loads(out)
    assert code == 0 and head["seq"] == 10 and len(head["hash"]) == 64
    code, text = itops(ws, "audit", "head")
    assert text.strip() == f"{head['seq']}:{head['hash']}"

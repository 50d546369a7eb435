"""`itops ticket update`: a ticket's priority, category, assignee or summary corrected, as an
event — so the break-glass hint "raise the ticket to P1" can be followed."""

from __future__ import annotations

import json
from pathlib import Path

from tests.inprocess import itops
from toolkit.desk.tickets import ticket_priority
from toolkit.ledger import Ledger
from toolkit.workspace import Workspace


def test_update_changes_priority_and_assignee_and_the_sla_follows(workspace: Workspace) -> None:
    ws = workspace.root
    assert itops(ws, "ticket", "open", "INC-7", "-c", "printer", "-p", "P3")[0] == 0
    before = json.loads(itops(ws, "ticket", "show", "INC-7", "--json")[1])
    code, out = itops(
        ws, "ticket", "update", "INC-7", "--priority", "P1", "--assignee", "jdoe",
        "--summary", "whole floor cannot print", "--reason", "site impact",
    )  # fmt: skip
    assert code == 0, out
    after = json.loads(itops(ws, "ticket", "show", "INC-7", "--json")[1])
    ticket = after["summary"]
    assert (ticket["priority"], ticket["assignee"], ticket["summary"]) == (
        "P1", "jdoe", "whole floor cannot print",
    )  # fmt: skip
    old = before["summary"]
    assert ticket["resolution_target"] < old["resolution_target"]  # P1's target now
    book = Ledger(f"sqlite:///{workspace.state_dir / 'ledger.db'}", operator="x")
    assert ticket_priority(book, "INC-7") == "P1"  # what break-glass and privileged resets read
    kinds = [r.kind for r in book.records(ticket="INC-7")]
    book.close()
    assert kinds == ["ticket.opened", "ticket.updated"]


def test_update_refuses_nothing_to_change_and_a_closed_ticket(workspace: Workspace) -> None:
    ws: Path = workspace.root
    itops(ws, "ticket", "open", "INC-8", "-c", "printer")
    code, out = itops(ws, "ticket", "update", "INC-8", "--reason", "just because")
    assert code == 2 and "nothing to change" in out
    for verb in ("resolve", "confirm", "close"):
        assert itops(ws, "ticket", verb, "INC-8")[0] == 0
    code, out = itops(ws, "ticket", "update", "INC-8", "--priority", "P1")
    assert code != 0 and "closed" in out


def test_resolve_after_run_resolves_only_when_every_host_held(workspace: Workspace) -> None:
    from toolkit.app import App
    from toolkit.desk.service import resolve_after_run

    ws = workspace.root
    itops(ws, "ticket", "open", "INC-9", "-c", "printer")
    app = App(ws)
    ok, said = resolve_after_run(app, "INC-9", "itops fix x", {"a": "fixed", "b": "failed"})
    assert not ok and "b did not end fixed or already-ok" in said
    ok, said = resolve_after_run(app, "INC-9", "itops fix x", {"a": "fixed", "b": "already-ok"})
    assert ok and "verified fixed on 1 host(s) (a); already-ok on 1" in said
    app.close()
    shown = json.loads(itops(ws, "ticket", "show", "INC-9", "--json")[1])
    assert shown["summary"]["state"] == "resolved"
    code, out = itops(ws, "fix", "printer.status", "x", "--check", "--resolve")
    assert code == 2 and "--resolve resolves the run's ticket" in out

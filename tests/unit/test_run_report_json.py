"""The JSON report of a run (`itops fix --json`, `itops runbook run --json`): `ticket_resolved`
says what --resolve decided, and only when it decided."""

from __future__ import annotations

import json

import pytest

from toolkit.workspace import Workspace


def test_ticket_resolved_is_there_only_when_resolve_decided(
    workspace: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    from toolkit.app import App
    from toolkit.cli.fix import emit_report
    from toolkit.run.results import RunReport

    report = RunReport("printer.status", "INC-1", False, (), 0.25)
    app = App(workspace.root)
    try:
        emit_report(app, report, None)
        undecided = json.loads(capsys.readouterr().out)
        emit_report(app, report, (False, "INC-1 stays open: ws-1 did not end fixed or already-ok"))
        refused = json.loads(capsys.readouterr().out)
        emit_report(app, report, (True, "INC-1 resolved"))
        resolved = json.loads(capsys.readouterr().out)
    finally:
        app.close()
    assert "ticket_resolved" not in undecided
    assert undecided["task"] == "printer.status" and undecided["ticket"] == "INC-1"
    assert refused == {**undecided, "ticket_resolved": False}
    assert resolved == {**undecided, "ticket_resolved": True}

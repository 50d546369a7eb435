"""The one run path (toolkit.run.service): defaults, the new ticket, the policy — once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from toolkit.app import App
from toolkit.errors import ValidationError
from toolkit.remediation.testing import MockConnector, Script
from toolkit.run.results import HostResult
from toolkit.run.service import RunService, plan
from toolkit.workspace import Workspace

INVENTORY = """all:
  hosts:
    ws-01: {ansible_host: 127.0.0.1, platform: linux}
    ws-02: {ansible_host: 127.0.0.1, platform: linux}
"""


@pytest.fixture
def app(tmp_path: Path) -> App:
    Workspace.init(tmp_path)
    (tmp_path / "inventory" / "hosts.yml").write_text(INVENTORY)
    config = (tmp_path / "itops.toml").read_text().replace("forks = 50", "forks = 7")
    (tmp_path / "itops.toml").write_text(config)
    return App(tmp_path)


def anything_ok() -> Script:
    return Script().on(re.compile(".*"), (0, "", ""))


def test_a_request_gets_the_workspaces_defaults_and_opens_its_ticket_once(app: App) -> None:
    request = plan(app, "printer.status", "ws-*", {}, ticket="INC-9", priority="P3")
    service = RunService(app, connector=MockConnector(anything_ok()))  # type: ignore[arg-type]
    assert service.options(request).forks == 7  # [run] forks, applied in one place
    for _ in range(2):
        service.run(request)
    opened = list(app.ledger.records(ticket="INC-9", kind="ticket.opened"))
    assert len(opened) == 1 and opened[0].info.get("priority") == "P3"


def test_a_new_ticket_takes_the_kind_the_task_declares(app: App) -> None:
    """A password reset is a standard request (KPI.md): its new ticket opens as one, unless the
    engineer says otherwise; a task that declares nothing opens an incident."""
    service = RunService(app, connector=MockConnector(anything_ok()))  # type: ignore[arg-type]
    for ticket, task, params, kind in (
        ("REQ-1", "password.reset", {"user": "jdoe"}, None),
        ("INC-2", "password.reset", {"user": "jdoe"}, "incident"),
        ("INC-3", "printer.status", {}, None),
    ):
        service.run(plan(app, task, "ws-01", params, ticket=ticket, kind=kind))
    opened = {r.ticket: r.info["kind"] for r in app.ledger.records(kind="ticket.opened")}
    assert opened == {"REQ-1": "request", "INC-2": "incident", "INC-3": "incident"}
    assert app.catalog.get("password.reset").kind == "request"


def test_bad_input_is_refused_before_anything_is_opened_or_recorded(app: App) -> None:
    with pytest.raises(ValidationError, match="--check changes nothing"):
        plan(app, "printer.status", "ws-01", {}, check_only=True, break_glass="site down")
    with pytest.raises(ValidationError, match="--reason"):
        plan(app, "printer.status", "ws-01", {}, ticket="INC-9", break_glass="  ")
    assert not (app.workspace.state_dir / "ledger.db").exists()


def test_a_run_the_task_would_refuse_asks_no_approval(app: App) -> None:
    # A privileged reset on a P3 ticket: before, an approval was requested, granted by a second
    # operator, and only then the run failed "allow_privileged needs a P1 or P2 ticket".
    from toolkit.errors import ToolkitError

    request = plan(
        app, "password.reset", "ws-01", {"user": "root", "allow_privileged": "true"},
        ticket="INC-10", priority="P3",
    )  # fmt: skip
    service = RunService(app, connector=MockConnector(anything_ok()))  # type: ignore[arg-type]
    with pytest.raises(ToolkitError, match="allow_privileged needs a P1 or P2 ticket"):
        service.run(request)
    kinds = [r.kind for r in app.ledger.records(ticket="INC-10")]
    assert "approval.requested" not in kinds and "action.begin" not in kinds
    # the same run with allow_privileged=false is not refused up front (the host decides)
    fine = plan(app, "password.reset", "ws-01", {"user": "jdoe"}, ticket="INC-11", priority="P3")
    service.run(fine)



def check_bounce(ws: Path) -> HostResult:
    """`--check` of a workspace task demo.bounce (always needs a bounce) on ws-01."""
    (ws / "tasks" / "demo.py").write_text(
        "from toolkit.remediation.catalog import Context, Finding, Remediation, remediation\n"
        "@remediation('demo.bounce', category='software', platforms={'linux'}, summary='x')\n"
        "class Bounce(Remediation):\n"
        "    def check(self, ctx: Context) -> Finding:\n"
        "        return Finding.problem('needs a bounce')\n"
        "    def apply(self, ctx: Context) -> None:\n"
        "        pass\n"
    )
    fresh = App(ws)
    request = plan(fresh, "demo.bounce", "ws-01", {}, check_only=True)
    service = RunService(fresh, connector=MockConnector(anything_ok()))  # type: ignore[arg-type]
    (result,) = service.run(request).report.results
    return result

def test_check_says_when_the_hosts_window_is_closed(app: App, tmp_path: Path) -> None:
    ws = app.workspace.root
    (ws / "inventory" / "hosts.yml").write_text(
        "all:\n  hosts:\n    ws-01: {ansible_host: 127.0.0.1, platform: linux, "
        "maintenance_window: never}\n"
    )
    config = ws / "itops.toml"
    config.write_text(
        config.read_text() + '\n[maintenance_windows.never]\ntimezone = "UTC"\n'
        'dates = ["2001-01-01"]\n\n[policy]\ndisruptive = ["demo.*"]\n'
    )
    result = check_bounce(ws)
    assert str(result.outcome) == "would-fix"
    assert "a fix now would be skipped: outside never" in result.message


def test_check_says_when_a_required_window_is_missing(app: App) -> None:
    """With [policy] require_window, a disruptive fix skips a host that has no window: --check
    says so (the same verdict as the fix's, `RunPolicy.held`)."""
    ws = app.workspace.root
    config = ws / "itops.toml"
    config.write_text(
        config.read_text() + '\n[policy]\ndisruptive = ["demo.*"]\nrequire_window = true\n'
    )
    result = check_bounce(ws)
    assert str(result.outcome) == "would-fix"
    assert result.message == (
        "needs a bounce (a fix now would be skipped: no maintenance window is attached to this "
        "host)"
    )

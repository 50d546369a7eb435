"""End to end: `itops ticket …`, `itops kpi`, `itops report audit` in a real workspace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result

from tests import fixture_tickets as desk
from toolkit.cli import cli
from toolkit.desk.service import category_lookup, repeat_fixes
from toolkit.ledger import open_ledger
from toolkit.secrets.credentials import MASK, Redactor
from toolkit.workspace import Workspace

pytestmark = pytest.mark.integration
ITOPS = str(Path(sys.executable).with_name("itops"))


@pytest.fixture
def ws(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    (workspace.root / "itops.toml").write_text(
        (workspace.root / "itops.toml").read_text() + desk.CONFIG
    )
    monkeypatch.setenv("ITOPS_OPERATOR", "ana")
    monkeypatch.delenv("ITOPS_LEDGER_URL", raising=False)
    return workspace


def run(ws: Workspace, *args: str) -> Result:
    result = CliRunner().invoke(cli, ["-w", str(ws.root), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def itops(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ITOPS_WORKSPACE": str(ws.root), "ITOPS_OPERATOR": "ana"}
    return subprocess.run([ITOPS, *args], env=env, capture_output=True, text=True, timeout=60)


def as_json(result: Result) -> Any:
    return json.loads(result.output)


def test_lifecycle_from_the_command_line(ws: Workspace) -> None:
    opened = as_json(
        run(
            ws,
            "ticket",
            "open",
            "INC-42",
            "-p",
            "P2",
            "-c",
            "printer",
            "--host",
            "ws-1",
            "--requester",
            "bob",
            "--assignee",
            "ana",
            "--at",
            "3h",
            "--json",
        )
    )
    assert opened["kind"] == "ticket.opened" and opened["operator"] == "ana"
    assert opened["data"]["backdated"] is True and opened["data"]["hosts"] == ["ws-1"]
    run(ws, "ticket", "respond", "INC-42", "--note", "called back", "--at", "150m")
    run(ws, "ticket", "note", "INC-42", "part ordered", "--update")
    run(ws, "ticket", "escalate", "INC-42", "--tier", "L2", "--assignee", "li")
    run(ws, "ticket", "wait", "INC-42", "--reason", "user at lunch")
    run(ws, "ticket", "resume", "INC-42")
    run(ws, "ticket", "resolve", "INC-42", "--code", "fixed", "--root-cause", "spooler")
    run(ws, "ticket", "confirm", "INC-42")
    run(ws, "ticket", "close", "INC-42")
    run(ws, "ticket", "reopen", "INC-42", "--reason", "stuck again")
    run(ws, "ticket", "resolve", "INC-42")
    run(ws, "ticket", "close", "INC-42", "--unconfirmed")
    run(ws, "ticket", "survey", "INC-42", "--score", "4", "--comment", "ok")
    run(ws, "ticket", "complain", "INC-42", "took two tries")
    shown = run(ws, "ticket", "show", "INC-42").output
    assert "response:" in shown and "resolution:" in shown and "(back-dated)" in shown
    assert "escalated" in shown and "complaint" in shown
    detail = as_json(run(ws, "ticket", "show", "INC-42", "--json"))
    summary = detail["summary"]
    assert summary["state"] == "closed" and summary["reopens"] == 1 and summary["escalations"] == 1
    assert summary["assignee"] == "li" and summary["survey_score"] == 4
    assert len(detail["records"]) == 14
    listed = as_json(run(ws, "ticket", "list", "--state", "closed", "--json"))
    assert [t["ticket"] for t in listed] == ["INC-42"]
    assert as_json(run(ws, "ticket", "list", "--state", "active", "--json")) == []


def test_generated_ids_and_clean_errors(ws: Workspace) -> None:
    opened = as_json(run(ws, "ticket", "open", "--summary", "mouse broken", "--json"))
    assert opened["ticket"].startswith("IT-")
    bad = itops(ws, "ticket", "survey", opened["ticket"], "--score", "5")
    assert bad.returncode == 2 and "not possible while the ticket is open" in bad.stderr
    resolved = itops(ws, "ticket", "resolve", opened["ticket"])
    assert resolved.returncode == 0, resolved.stderr
    bad = itops(ws, "ticket", "survey", opened["ticket"], "--score", "7")
    assert bad.returncode == 2 and "score 7 is not between 1 and 5" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = itops(ws, "ticket", "respond", "INC-404")
    assert bad.returncode == 2 and "before the ticket was opened" in bad.stderr
    bad = itops(ws, "ticket", "respond", "bad id!")
    assert bad.returncode == 2 and "invalid ticket id" in bad.stderr
    future = itops(ws, "ticket", "note", opened["ticket"], "x", "--at", "2099-01-01T00:00+00:00")
    assert future.returncode == 2 and "in the future" in future.stderr


def test_import_kpi_and_export(ws: Workspace, tmp_path: Path) -> None:
    path = desk.write(tmp_path / "week.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        path.read_text()
        + '{"ticket": "INC-1", "event": "survey", "at": "2026-11-20T10:00:00Z", "score": 7}\n'
    )
    refused = itops(ws, "ticket", "import", str(bad))
    assert refused.returncode == 2
    assert f"line {len(desk.LINES) + 1}: survey: score 7" in refused.stderr
    assert "nothing was imported" in refused.stderr
    assert as_json(run(ws, "ticket", "list", "--json")) == []
    result = as_json(run(ws, "ticket", "import", str(path), "--json"))
    assert result["events"] == len(desk.LINES) and result["tickets"] == 5
    kpi = as_json(run(ws, "kpi", "--since", desk.SINCE, "--until", desk.UNTIL, "--json"))
    # backlog figures depend on "now" only when the period reaches it; this one ended long ago
    assert {k: kpi[k] for k in desk.EXPECTED} == desk.EXPECTED
    grouped = as_json(
        run(ws, "kpi", "--since", desk.SINCE, "--until", desk.UNTIL, "--by", "host", "--json")
    )
    assert grouped["groups"]["ws-1"]["recurrence_rate"] == 0.5
    table = run(ws, "kpi", "--since", desk.SINCE, "--until", desk.UNTIL, "--by", "category").output
    assert "response_sla_compliance" in table and "60.0 %" in table and "printer" in table
    breached = as_json(run(ws, "ticket", "list", "--breached", "--json"))
    assert {t["ticket"] for t in breached} >= {"INC-3", "INC-4"}
    out = tmp_path / "export.jsonl"
    run(ws, "ticket", "export", "-o", str(out))
    exported = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(e["ticket"], e["event"]) for e in exported] == [
        (x["ticket"], x["event"]) for x in desk.LINES
    ]
    assert all(e["at"].endswith("+00:00") for e in exported)


def test_audit_report_is_recorded_and_masks_secrets(ws: Workspace, tmp_path: Path) -> None:
    canary = "s3cr3t-canary-7731"
    ledger = open_ledger(ws.ledger_url, operator="ana", redactor=Redactor([canary]))
    try:
        run(ws, "ticket", "open", "INC-9", "--host", "ws-9")
        action = ledger.begin(
            task="password.reset", host="ws-9", ticket="INC-9", params={"user": "bob"}
        )
        ledger.finish(
            action,
            task="password.reset",
            host="ws-9",
            ticket="INC-9",
            outcome="fixed",
            duration=0.2,
            commands=[{"step": "apply", "command": f"chpasswd bob:{canary}", "exit_code": 0}],
        )
    finally:
        ledger.close()
    html = tmp_path / "audit.html"
    out = as_json(run(ws, "report", "audit", "--html", str(html), "--ticket", "INC-9", "--json"))
    page = html.read_text()
    assert canary not in page and MASK in page
    assert out["chain_ok"] is True and out["actions"] == 1 and out["tickets"] == 1
    assert out["head_hash"] in page and "Chain intact" in page and "password.reset" in page
    records = [json.loads(x) for x in run(ws, "log", "--json").output.splitlines()]
    export = records[-1]
    assert export["kind"] == "report.audit" and export["operator"] == "ana"
    assert export["data"]["sha256"] == out["sha256"] and export["data"]["filters"] == {
        "ticket": "INC-9"
    }


def test_kpi_report_files(ws: Workspace, tmp_path: Path) -> None:
    run(ws, "ticket", "import", str(desk.write(tmp_path / "week.jsonl")))
    html, csv = tmp_path / "kpi.html", tmp_path / "kpi.csv"
    run(
        ws,
        "report",
        "kpi",
        "--html",
        str(html),
        "--csv",
        str(csv),
        "--since",
        desk.SINCE,
        "--until",
        desk.UNTIL,
    )
    page = html.read_text()
    assert 'data-kpi="response_sla_compliance" data-value="0.6"' in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    lines = csv.read_text().splitlines()
    assert lines[0] == "section,group,kpi,value,target,met"
    assert "overall,,csat_mean,3.0,4.5,false" in lines
    assert any(x.startswith("category,printer,") for x in lines)
    nothing = itops(ws, "report", "kpi")
    assert nothing.returncode == 2 and "nothing to write" in nothing.stderr


def test_repeat_fixes_suggest_a_problem_record(ws: Workspace) -> None:
    ledger = open_ledger(ws.ledger_url, operator="ana")
    try:
        for i in range(3):
            a = ledger.begin(task="printer.clear-queue", host="ws-7", ticket=f"INC-{i}", params={})
            ledger.finish(
                a,
                task="printer.clear-queue",
                host="ws-7",
                ticket=f"INC-{i}",
                outcome="fixed",
                duration=0.1,
            )
        a = ledger.begin(task="network.flush-dns", host="ws-7", ticket=None, params={})
        ledger.finish(
            a, task="network.flush-dns", host="ws-7", ticket=None, outcome="fixed", duration=0.1
        )
        lookup = category_lookup({})
        found = repeat_fixes(ledger, ["ws-7", "ws-8"], "printer", lookup, threshold=3)
        assert [(f.host, f.count, f.tickets) for f in found] == [
            ("ws-7", 3, ("INC-0", "INC-1", "INC-2"))
        ]
        assert "problem record" in found[0].message
        assert repeat_fixes(ledger, ["ws-7"], "printer", lookup, threshold=4) == []
        assert repeat_fixes(ledger, ["ws-7"], "network", lookup, threshold=2) == []
    finally:
        ledger.close()


def test_help_stays_light() -> None:
    code = (
        "import sys, toolkit.cli, toolkit.cli.ticket, toolkit.cli.kpi, toolkit.cli.report;"
        "heavy = [m for m in ('sqlalchemy', 'jinja2', 'holidays', 'icalendar') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    helped = subprocess.run([ITOPS, "ticket", "--help"], capture_output=True, text=True, check=True)
    for verb in (
        "open",
        "respond",
        "escalate",
        "wait",
        "resume",
        "resolve",
        "confirm",
        "close",
        "reopen",
        "survey",
        "complain",
        "list",
        "import",
        "export",
        "show",
        "note",
    ):
        assert f"  {verb} " in helped.stdout or f"  {verb}\n" in helped.stdout, verb
    for command in (["kpi", "--help"], ["report", "kpi", "--help"], ["report", "audit", "--help"]):
        text = subprocess.run([ITOPS, *command], capture_output=True, text=True, check=True).stdout
        assert "Example" in text


def test_fix_warns_about_repeat_fixes(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    from toolkit.app import App
    from toolkit.cli.fix import _warn_repeat_fixes

    app = App(ws.root)
    try:
        for i in range(3):
            a = app.ledger.begin(
                task="printer.clear-queue", host="ws-7", ticket=f"INC-{i}", params={}
            )
            app.ledger.finish(
                a,
                task="printer.clear-queue",
                host="ws-7",
                ticket=f"INC-{i}",
                outcome="fixed",
                duration=0.1,
            )
        _warn_repeat_fixes(app, "printer", ["ws-7"])
        _warn_repeat_fixes(app, "printer", [])
    finally:
        app.close()
    err = capsys.readouterr().err
    assert err.count("warning: ws-7 has had 3 printer fixes in 30 days") == 1
    assert "problem record" in err


@pytest.fixture
def utc_machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This machine's clock in UTC, whatever it is set to: the desk's zone (Berlin) must win."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_bare_date_is_midnight_in_the_calendars_zone(
    ws: Workspace, tmp_path: Path, utc_machine: None
) -> None:
    """October for a Europe/Berlin desk: [Oct 1 00:00 CEST, Nov 1 00:00 CET), across the DST
    change of Oct 25; an explicit offset wins over the calendar's zone."""
    lines = [
        desk.ev("BER-1", "opened", "2026-09-30T23:30:00Z", priority="P3"),  # Oct 1, 01:30 Berlin
        desk.ev("BER-2", "opened", "2026-10-31T23:30:00Z", priority="P3"),  # Nov 1, 00:30 Berlin
        desk.ev("BER-3", "opened", "2026-10-31T22:30:00Z", priority="P3"),  # Oct 31, 23:30 Berlin
    ]
    run(ws, "ticket", "import", str(desk.write(tmp_path / "edges.jsonl", lines)))
    october = as_json(run(ws, "kpi", "--since", "2026-10-01", "--until", "2026-11-01", "--json"))
    assert (october["since"], october["until"]) == (
        "2026-09-30T22:00:00+00:00",
        "2026-10-31T23:00:00+00:00",
    )
    assert october["tickets_opened"] == 2  # BER-1 and BER-3
    for since, until, opened in (
        ("2026-10-01T00:00Z", "2026-10-31T23:00Z", 1),  # UTC: BER-3 only
        ("2026-10-01T00:00+02:00", "2026-11-01T00:00+01:00", 2),
        ("2026-10-01T01:00", "2026-10-31", 1),  # Berlin wall times: BER-1 only
    ):
        got = as_json(run(ws, "kpi", "--since", since, "--until", until, "--json"))
        assert got["tickets_opened"] == opened, (since, until)
    page = tmp_path / "october.html"
    report = as_json(
        run(ws, "report", "kpi", "--html", str(page), "--since", "2026-10-01", "--until",
            "2026-11-01", "--json")
    )  # fmt: skip
    assert report["kpis"]["until"] == october["until"]
    assert report["kpis"]["tickets_opened"] == 2
    # `log` and `report audit` read the same way (the ledger's own times here: the import's)
    records = [json.loads(x) for x in run(ws, "log", "--json").output.splitlines()]
    written = datetime.fromisoformat(records[-1]["at"].replace("Z", "+00:00"))
    berlin = written.astimezone(ZoneInfo("Europe/Berlin")).replace(tzinfo=None)
    wall = (berlin - timedelta(minutes=1)).isoformat(timespec="minutes")
    assert len(run(ws, "log", "--since", wall, "--json").output.splitlines()) == len(records)
    assert run(ws, "log", "--until", wall, "--json").output == ""
    audit = tmp_path / "audit.html"
    out = as_json(run(ws, "report", "audit", "--html", str(audit), "--until", wall, "--json"))
    assert out["tickets"] == 0


def test_kpi_json_carries_full_precision_and_the_table_rounds(
    ws: Workspace, tmp_path: Path
) -> None:
    """Rounding belongs to what people read (the table, the HTML, the CSV), not to the data."""
    lines = []
    for n, (score, minutes) in enumerate(((5, 10), (3, 20), (3, 22)), start=1):
        lines += [
            desk.ev(f"P-{n}", "opened", desk.t(2, 9), priority="P3", category="printer"),
            desk.ev(f"P-{n}", "responded", desk.t(2, 9, minutes)),
            desk.ev(f"P-{n}", "resolved", desk.t(2, 10), code="fixed"),
            desk.ev(f"P-{n}", "survey", desk.t(2, 11), score=score),
        ]
    run(ws, "ticket", "import", str(desk.write(tmp_path / "three.jsonl", lines)))
    period = ("--since", desk.SINCE, "--until", desk.UNTIL)
    data = as_json(run(ws, "kpi", *period, "--json"))
    assert data["csat_mean"] == 11 / 3 and data["csat_share_4_plus"] == 1 / 3
    assert data["time_to_respond_mean"] == 52 / 3 and data["time_to_respond_median"] == 20.0
    assert data["tickets_resolved"] == 3 and data["first_contact_resolution_rate"] == 0.0
    assert data["time_to_resolve_mean"] == 60.0
    assert data["targets"]["csat_mean"] == {"target": 4.5, "met": False}
    table = run(ws, "kpi", *period).output
    assert "3.67" in table and "3.6666" not in table
    page, sheet = tmp_path / "kpi.html", tmp_path / "kpi.csv"
    report = as_json(
        run(ws, "report", "kpi", "--html", str(page), "--csv", str(sheet), *period, "--json")
    )
    assert report["kpis"] == data  # `report kpi --json` prints the same unrounded object
    html = page.read_text()
    assert f'data-kpi="csat_mean" data-value="{11 / 3!r}"' in html  # the JSON value, to check
    assert '<div class="value">3.67</div>' in html and ">3.66666" not in html
    rows = sheet.read_text().splitlines()
    assert "overall,,csat_mean,3.67,4.5,false" in rows
    assert "overall,,csat_share_4_plus,0.3333,," in rows


def test_requests_apart_from_incidents_from_the_command_line(ws: Workspace, tmp_path: Path) -> None:
    """`--kind request` on open and update, shown and filtered by `ticket list/show`; `kpi`
    (table and --json) and `report kpi` (HTML and CSV) give the requests' figures apart."""
    opened = as_json(
        run(ws, "ticket", "open", "REQ-7", "--kind", "request", "-p", "P4", "-c", "account",
            "--json")
    )  # fmt: skip
    assert opened["data"]["kind"] == "request"
    assert as_json(run(ws, "ticket", "open", "INC-8", "--json"))["data"]["kind"] == "incident"
    listed = as_json(run(ws, "ticket", "list", "--json"))
    assert {t["ticket"]: t["kind"] for t in listed} == {"REQ-7": "request", "INC-8": "incident"}
    only = as_json(run(ws, "ticket", "list", "--kind", "request", "--json"))
    assert [t["ticket"] for t in only] == ["REQ-7"]
    table = run(ws, "ticket", "list").output
    assert "KIND" in table.splitlines()[0] and "request" in table
    assert "P4 account request  open" in run(ws, "ticket", "show", "REQ-7").output
    run(ws, "ticket", "update", "INC-8", "--kind", "request", "--reason", "an install")
    only = as_json(run(ws, "ticket", "list", "--kind", "request", "--json"))
    assert [t["ticket"] for t in only] == ["REQ-7", "INC-8"]
    bad = itops(ws, "ticket", "open", "X-1", "--kind", "problem")
    assert bad.returncode == 2 and "'problem' is not one of 'incident', 'request'" in bad.stderr

    week = desk.write(tmp_path / "week.jsonl", [*desk.LINES, *desk.REQUESTS])
    run(ws, "ticket", "import", str(week))
    period = ("--since", desk.SINCE, "--until", desk.UNTIL)
    data = as_json(run(ws, "kpi", *period, "--json"))
    assert {k: data[k] for k in desk.EXPECTED_WITH_REQUESTS} == desk.EXPECTED_WITH_REQUESTS
    table = run(ws, "kpi", *period).output
    assert "time_to_fulfil_mean" in table and "870 min" in table
    assert "request_fulfilment_sla_compliance" in table
    by_kind = run(ws, "kpi", *period, "--by", "kind").output
    assert any(line.startswith("request") for line in by_kind.splitlines())
    page, sheet = tmp_path / "kpi.html", tmp_path / "kpi.csv"
    run(ws, "report", "kpi", "--html", str(page), "--csv", str(sheet), *period)
    html = page.read_text()
    assert 'data-kpi="time_to_fulfil_mean" data-value="870.0"' in html
    assert 'data-by="kind"' in html and "fulfilment, requests" in html
    assert "overall,,requests_fulfilled,2,," in sheet.read_text().splitlines()

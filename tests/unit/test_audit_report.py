"""The audit report answers "who changed what, approved by whom": a summary per host and per
ticket first, then the changes (read-only checks in an appendix), each with its approval and
policy decision, commands collapsed to one line, dates people read; hostile text stays text."""

from __future__ import annotations

import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.htmltree import Element, header, parse
from tests.inprocess import itops
from tests.unit.test_governance_links import ws  # noqa: F401  (the fixture: srv-1, srv-2)
from toolkit.ledger import Ledger
from toolkit.workspace import Workspace

HOSTILE_HOST = "<script>alert(1)</script>\x1b[31mevil"
HOSTILE_COMMAND = "echo '<img src=x onerror=alert(2)>'\x1b]8;;http://x.invalid\x07 && rm -rf /tmp/q"
READABLE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2} UTC([+-]\d{1,2}(:\d{2})?)?$"
)


@pytest.fixture(autouse=True)
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local time zone, for the report's dates: Berlin (UTC+1 in November)."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def book(ws: Path) -> Path:  # noqa: F811
    """The governance fixture plus a --check run on srv-1 and a change on a hostile host."""
    ledger = Ledger(Workspace.load(ws).ledger_url, operator="carol")
    try:
        check = ledger.begin(
            task="demo.rotate", host="srv-1", ticket="CHG-1", params={}, data={"mode": "check"}
        )
        ledger.finish(
            check, task="demo.rotate", host="srv-1", ticket="CHG-1", outcome="already-ok",
            duration=0.1, commands=[{"step": "check", "command": "stale", "exit_code": 0}],
        )  # fmt: skip
        bad = ledger.begin(
            task="demo.restart", host=HOSTILE_HOST, ticket="INC-9", params={"p": "<b>x</b>"},
            data={"mode": "fix"},
        )  # fmt: skip
        ledger.finish(
            bad, task="demo.restart", host=HOSTILE_HOST, ticket="INC-9", outcome="failed",
            duration=0.3,
            commands=[
                {"step": "check", "command": "stale", "exit_code": 1},
                {"step": "apply", "command": HOSTILE_COMMAND, "exit_code": 2},
            ],
        )  # fmt: skip
    finally:
        ledger.close()
    return ws


def report(root: Path, tmp_path: Path, *scope: str) -> tuple[str, Element]:
    out = tmp_path / "audit.html"
    code, text = itops(root, "report", "audit", "--html", str(out), *scope)
    assert code == 0, text
    page = out.read_text(encoding="utf-8")
    return page, parse(page)


def table_rows(table: Element) -> dict[str, dict[str, str]]:
    """Body rows keyed by their first cell, as {column header: cell text}."""
    names = header(table)
    out = {}
    for tr in table.find_all("tr"):
        cells = [c for c in tr.children if isinstance(c, Element) and c.tag == "td"]
        if cells:
            out[cells[0].words()] = dict(zip(names, (c.words() for c in cells), strict=True))
    return out


def test_the_report_leads_with_a_summary_per_host_and_per_ticket(
    book: Path, tmp_path: Path
) -> None:
    _page, doc = report(book, tmp_path)
    headings = [h.words() for h in doc.find_all("h2")]
    first = [h.split(" (")[0] for h in headings]
    assert first.index("Summary per host") < first.index("Changes"), headings
    assert first.index("Summary per ticket") < first.index("Changes"), headings
    hosts = table_rows(doc.by_id("summary-hosts"))
    assert header(doc.by_id("summary-hosts")) == [
        "host", "changes", "failures", "unchanged / checks", "approvals", "break-glass uses",
    ]  # fmt: skip
    # srv-1: the approved rotation and the break-glass restart changed it; a needs-approval
    # run and a --check changed nothing; one approval (granted)
    assert hosts["srv-1"] == {
        "host": "srv-1", "changes": "2", "failures": "0", "unchanged / checks": "2",
        "approvals": "1 granted", "break-glass uses": "1",
    }, hosts  # fmt: skip
    assert hosts["srv-2"]["changes"] == "0" and hosts["srv-2"]["approvals"] == "1 not granted"
    shown_host = "<script>alert(1)</script>␛[31mevil"
    assert hosts[shown_host]["failures"] == "1" and hosts[shown_host]["changes"] == "1"
    tickets = table_rows(doc.by_id("summary-tickets"))
    assert tickets["CHG-1"]["changes"] == "1" and tickets["CHG-1"]["approvals"] == "1 granted"
    assert tickets["INC-9"]["break-glass uses"] == "1" and tickets["INC-9"]["failures"] == "1"
    assert tickets["CHG-2"]["approvals"] == "1 not granted", tickets


def test_changes_first_checks_and_unchanged_runs_in_a_closed_appendix(
    book: Path, tmp_path: Path
) -> None:
    page, doc = report(book, tmp_path)
    changes = doc.by_id("changes")
    outcomes = [
        tr.attrs["data-outcome"] for tr in changes.find_all("tr") if "data-action" in tr.attrs
    ]
    assert sorted(outcomes) == ["failed", "fixed", "fixed"], outcomes
    appendix = doc.by_id("appendix")
    assert appendix.tag == "details" and "open" not in appendix.attrs  # collapsed, no script
    assert "read-only" in appendix.find("summary").words()
    quiet = [
        tr.attrs["data-outcome"] for tr in appendix.find_all("tr") if "data-action" in tr.attrs
    ]
    assert sorted(quiet) == ["already-ok", "needs-approval", "needs-approval"], quiet
    assert "<script" not in page.replace("&lt;script", "")  # no JavaScript at all


def test_each_change_shows_its_approval_and_policy_decision(book: Path, tmp_path: Path) -> None:
    page, doc = report(book, tmp_path)
    changes = doc.by_id("changes")
    names = header(changes)
    for column in ("when", "parameters", "approval", "policy", "verify", "commands"):
        assert column in names, names
    rows = {
        tr.attrs["data-task"] + "/" + tr.attrs["data-outcome"]: tr
        for tr in changes.find_all("tr")
        if "data-action" in tr.attrs
    }
    rotate = rows["demo.rotate/fixed"]
    approval = rotate.find("td", class_="approval").words()
    assert "asked by alice" in approval and "approved by bob" in approval, approval
    assert "Mon 23 Nov 2026 12:00 UTC+1" in approval, approval  # granted 11:00 UTC, shown local
    assert "binds" in approval and re.search(r"[0-9a-f]{12}", approval), approval
    assert "CAB 12/04" in approval
    assert rotate.find("td", class_="params").words() == "user=svc"
    assert rotate.find("td", class_="verify").words() == "passed"
    restart = rows["demo.restart/fixed"]
    policy = restart.find("td", class_="policy").words()
    assert "break-glass" in policy and "payroll down␛[2J<b>" in policy, policy
    assert "night" in policy  # the window it ran outside
    assert "\x1b" not in page and "payroll down\x1b" not in page


def test_commands_are_one_line_with_the_full_text_on_demand(book: Path, tmp_path: Path) -> None:
    _page, doc = report(book, tmp_path)
    for tr in doc.by_id("changes").find_all("tr"):
        if "data-action" not in tr.attrs:
            continue
        cell = tr.find("td", class_="commands")
        details = cell.find("details")
        summary = details.find("summary").text()
        assert "\n" not in summary.strip() and len(summary) <= 100, summary
        full = [li.words() for li in details.find_all("li")]
        assert full and all(re.search(r"→ exit \d+$", line) for line in full), full
    hostile = next(
        tr for tr in doc.by_id("changes").find_all("tr") if tr.attrs.get("data-outcome") == "failed"
    )
    full = hostile.find("td", class_="commands").find("details").words()
    assert "echo '<img src=x onerror=alert(2)>'␛]8;;http://x.invalid␇ && rm -rf /tmp/q" in full


def test_hostile_host_and_command_stay_text(book: Path, tmp_path: Path) -> None:
    page, doc = report(book, tmp_path)
    assert "<script>alert" not in page and "<img" not in page and "<b>x" not in page
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", page)  # no control character
    assert "&lt;script&gt;alert(1)&lt;/script&gt;␛[31mevil" in page
    host_cells = [td.text() for td in doc.by_id("changes").find_all("td", class_="host")]
    assert "<script>alert(1)</script>␛[31mevil" in host_cells
    assert doc.find_all("script") == [] and doc.find_all("img") == []


def test_every_date_is_local_and_readable(book: Path, tmp_path: Path) -> None:
    _page, doc = report(book, tmp_path)
    times = doc.find_all("time")
    assert len(times) >= 10
    for t in times:
        assert READABLE.match(t.words()), t.words()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t.attrs["datetime"]), t.attrs
    # no raw ledger time left in what people read
    assert not re.search(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d", doc.find("body").words())


def test_a_host_filter_includes_the_governance_records_concerning_the_host(
    book: Path, tmp_path: Path
) -> None:
    page, doc = report(book, tmp_path, "--host", "srv-1")
    approvals = doc.by_id("approvals")
    rows = [tr for tr in approvals.find_all("tr") if "data-request" in tr.attrs]
    assert len(rows) == 1 and rows[0].attrs["data-state"] == "granted", page
    text = rows[0].words()
    assert "alice" in text and "bob" in text and "demo.rotate" in text and "user=svc" in text
    kinds = [
        tr.attrs["data-kind"]
        for tr in doc.by_id("governance").find_all("tr")
        if "data-kind" in tr.attrs
    ]
    assert "policy.break-glass" in kinds and "approval.granted" in kinds, kinds
    assert "approval.refused" not in kinds and "srv-2" not in doc.by_id("changes").words()
    assert list(table_rows(doc.by_id("summary-hosts"))) == ["srv-1"]
    _, doc2 = report(book, tmp_path, "--host", "srv-2")
    kinds = [
        tr.attrs["data-kind"]
        for tr in doc2.by_id("governance").find_all("tr")
        if "data-kind" in tr.attrs
    ]
    assert "approval.refused" in kinds and "self-approval" in doc2.by_id("governance").words()
    assert "approval.granted" not in kinds and "policy.break-glass" not in kinds


def test_the_evidence_bundles_report_shows_the_approvals(book: Path, tmp_path: Path) -> None:
    out = tmp_path / "srv-1.zip"
    code, text = itops(book, "audit", "export", "--host", "srv-1", "--out", str(out))
    assert code == 0, text
    with zipfile.ZipFile(out) as archive:
        doc = parse(archive.read("report.html").decode())
    rows = [tr for tr in doc.by_id("approvals").find_all("tr") if "data-request" in tr.attrs]
    assert [r.attrs["data-state"] for r in rows] == ["granted"]
    assert "approved by bob" in doc.by_id("changes").words()
    assert table_rows(doc.by_id("summary-hosts"))["srv-1"]["break-glass uses"] == "1"


def test_a_secret_past_the_one_line_cut_is_masked_not_cut_in_half(ws: Path) -> None:  # noqa: F811
    """The collapsed line cuts a long command: the secret in it is masked before the cut, so no
    prefix of it is left for the page-wide masking to miss."""
    from toolkit.reports.audit import build
    from toolkit.secrets.credentials import MASK, Redactor

    canary = "s3cr3t-canary-7731-abcdefghijklmnop"
    ledger = Ledger(Workspace.load(ws).ledger_url, operator="ana")
    try:
        action = ledger.begin(task="password.reset", host="ws-9", ticket="INC-9", params={})
        command = "usermod --password-from-stdin-of-a-long-option svc " + canary  # cut at 59
        ledger.finish(
            action, task="password.reset", host="ws-9", ticket="INC-9", outcome="fixed",
            duration=0.2, commands=[{"step": "apply", "command": command, "exit_code": 0}],
        )  # fmt: skip
        page = build(ledger, Redactor([canary]), {"ticket": "INC-9"}).html
    finally:
        ledger.close()
    assert canary[:8] not in page and MASK in page


def test_a_ticket_without_runs_is_in_the_ticket_summary(book: Path, tmp_path: Path) -> None:
    from toolkit.ledger import Entry

    ledger = Ledger(Workspace.load(book).ledger_url, operator="ana")
    try:
        ledger.append(Entry("ticket.opened", ticket="INC-50", data={"hosts": ["ws-1", "ws-2"]}))
    finally:
        ledger.close()
    _page, doc = report(book, tmp_path)
    tickets = table_rows(doc.by_id("summary-tickets"))
    assert tickets["INC-50"]["changes"] == "0" and tickets["INC-50"]["approvals"] == "0", tickets
    assert doc.find("h3", id="ticket-INC-50").words() == "INC-50"
    assert "hosts=ws-1, ws-2" in doc.words() and "['ws-1'" not in doc.words()

"""Hostile text from hosts and other desks: shown literally, never obeyed — no rich markup, no
terminal escape sequence, no spreadsheet formula. Each command is checked on both output paths:
the rich table a terminal gets and the plain columns a pipe gets."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inprocess import itops
from toolkit.cli import render
from toolkit.ledger import Entry, Ledger
from toolkit.run.runner import HostResult, Outcome, RunReport
from toolkit.textsafe import CsvWriter, csv_cell, json_safe, visible
from toolkit.workspace import Workspace

MARKUP = ("[/x]", "[link=https://evil]click[/link]", "[bold green]approved by CISO[/]")
# what must never reach the terminal: an OSC 8 hyperlink, clear-screen, an 8-bit CSI
ATTACKS = ("\x1b]8;", "\x1b[2J", "\x9b")
OSC_LINK = "\x1b]8;;https://evil\x07"
SUMMARY = "[/x] \x1b[2J\x9b [link=https://evil]click[/link]"  # (ticket list shows 60 chars)
ASSIGNEE = "[bold green]approved by CISO[/]" + OSC_LINK
DETAIL = "[/x] [link=https://evil]click[/link] [bold green]approved by CISO[/] " + OSC_LINK


@pytest.fixture(params=["plain", "terminal"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test on the plain path and on the rich path (a terminal, forced)."""
    if request.param == "terminal":
        monkeypatch.setattr(render, "is_tty", lambda: True)
        monkeypatch.setenv("FORCE_COLOR", "1")  # rich writes as to a terminal (colours, links)
    monkeypatch.setenv("COLUMNS", "400")  # no folding: the text must appear in one piece
    return str(request.param)


def assert_shown_literally(output: str, path: str, *pieces: str) -> None:
    for piece in pieces:
        assert piece in output, (piece, output)
    for attack in ATTACKS:
        assert attack not in output, (attack, output)
    if path == "plain":
        assert "\x1b" not in output, output  # no escape sequence at all in a pipe
    assert "\u241b" in output  # ␛: the ESC is shown, not obeyed


@pytest.fixture
def ws(workspace: Workspace) -> Iterator[Path]:
    book = Ledger(f"sqlite:///{workspace.state_dir / 'ledger.db'}", operator="ana")
    book.append(Entry("action.begin", ticket="INC-1", host="ws-1", task="t.x", action_id="a1"))
    book.append(
        Entry(
            "action.finish",
            ticket="INC-1",
            host="ws-1",
            task="t.x",
            action_id="a1",
            outcome="failed",
            duration_ms=10,
            data={"message": DETAIL},
        )
    )
    book.close()
    line = {
        "ticket": "INC-7",
        "event": "opened",
        "at": "2026-11-02T09:14:00+01:00",
        "priority": "P2",
        "category": "printer",
        "summary": SUMMARY,
        "assignee": ASSIGNEE,
        "by": "[/x]\x1b[2J",
    }
    (workspace.root / "in.jsonl").write_text(json.dumps(line) + "\n")
    code, out = itops(workspace.root, "ticket", "import", str(workspace.root / "in.jsonl"))
    assert code == 0, out
    yield workspace.root


def test_log_shows_hostile_host_text_literally(ws: Path, path: str) -> None:
    code, out = itops(ws, "log")
    assert code == 0, out
    assert_shown_literally(out, path, *MARKUP)


def test_ticket_show_shows_an_imported_summary_literally(ws: Path, path: str) -> None:
    code, out = itops(ws, "ticket", "show", "INC-7")
    assert code == 0, out
    assert_shown_literally(out, path, *MARKUP)


def test_ticket_list_shows_an_imported_summary_literally(ws: Path, path: str) -> None:
    code, out = itops(ws, "ticket", "list")
    assert code == 0, out
    assert_shown_literally(out, path, *MARKUP)


def test_fix_report_table_shows_a_hosts_stderr_literally(
    path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from toolkit.cli.fix import show_report

    result = HostResult("ws-1\x1b[2J", Outcome.FAILED, DETAIL + "\x9b", error="[/]")
    show_report(RunReport("t.x", "INC-1", False, (result,), 1.0, notes=(OSC_LINK + "note",)))
    out = capsys.readouterr().out
    assert_shown_literally(out, path, *MARKUP, "failed ([/])")


def test_json_output_escapes_c1_controls_and_stays_the_same_json() -> None:
    text = json.dumps({"s": "a\x9bb\u202ec\x1b"}, ensure_ascii=False, indent=2)
    safe = json_safe(text)
    assert "\x9b" not in safe and "\u202e" not in safe
    assert "\x1b" not in safe and safe.count("\n") == 2  # (JSON escapes C0; its layout stays)
    assert json.loads(safe) == {"s": "a\x9bb\u202ec\x1b"}


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J", "\u241b[2J"),
        ("a\x00b", "a\u2400b"),
        ("tab\there", "tab\u2409here"),
        ("line\nbreak", "line\u240abreak"),
        ("\x7f", "\u2421"),
        ("\x9b31m", "<U+009B>31m"),
        ("evil\u202etxt.exe", "evil<U+202E>txt.exe"),
        ("plain [text] ünïcode", "plain [text] ünïcode"),
    ],
)
def test_a_table_cell_shows_every_control_character(raw: str, shown: str) -> None:
    assert visible(raw) == shown


def test_lines_keep_their_breaks_and_tabs_but_not_escapes() -> None:
    assert visible("a\n\tb\x1b[2J", multiline=True) == "a\n\tb\u241b[2J"


# -- CSV formula injection (OWASP) ---------------------------------------------------------------
@pytest.mark.parametrize(
    "cell",
    [
        '=HYPERLINK("https://evil","click")',
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(A1)",
        "\t=1",
        "\r=1",
    ],
)
def test_a_formula_cell_is_neutralised_and_quoted(cell: str) -> None:
    out = io.StringIO()
    CsvWriter(out).writerow(["group", cell, 3])
    text = out.getvalue()
    assert text.startswith('"group","\'')  # every cell of the row quoted, the formula prefixed
    assert next(csv.reader(io.StringIO(text))) == ["group", "'" + cell, "3"]


def test_numbers_are_data_but_strings_that_look_negative_are_neutralised() -> None:
    # OWASP: prefix anyway. A number the program computed (-3) is written as a number; the same
    # characters as text from outside ("-3") could be "-3+cmd|…", so they get the quote too.
    assert csv_cell(-3) == -3 and csv_cell(-0.5) == -0.5
    assert csv_cell("-3") == "'-3"
    out = io.StringIO()
    CsvWriter(out).writerow(["a", -3, 2.5])
    assert out.getvalue() == "a,-3,2.5\r\n"  # nothing to neutralise: the usual minimal quoting


def test_report_kpi_csv_neutralises_an_assignee_formula(tmp_path: Path) -> None:
    from toolkit.reports.kpi import csv_text

    data = {
        "overall": {},
        "groups": {"assignee": {'=HYPERLINK("https://evil","x")': {}, "ana": {}}},
        "weeks": [],
    }
    rows = list(csv.reader(io.StringIO(csv_text(data))))
    groups = {r[1] for r in rows if r[0] == "assignee"}
    assert groups == {'\'=HYPERLINK("https://evil","x")', "ana"}


def test_log_csv_neutralises_formulas(ws: Path) -> None:
    book = Ledger(f"sqlite:///{ws / '.itops' / 'ledger.db'}", operator="=cmd|' /C calc'!A0")
    book.append(Entry("ticket.note", ticket="INC-7", data={"text": "@SUM(1)"}))
    book.close()
    code, out = itops(ws, "log", "--csv")
    assert code == 0, out
    rows = list(csv.reader(io.StringIO(out)))
    assert rows, out
    assert rows[-1][3] == "'=cmd|' /C calc'!A0"
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for cell in r)


def test_a_real_terminal_gets_no_escape_from_the_ledger(ws: Path) -> None:
    """`itops log` and `ticket list` with stdout on a pseudo-terminal (the real isatty() path)."""
    import os
    import pty
    import subprocess

    import toolkit

    root = str(Path(toolkit.__file__).resolve().parents[1])
    for args in (["log"], ["ticket", "list"], ["ticket", "show", "INC-7"]):
        master, slave = pty.openpty()
        env = {**os.environ, "ITOPS_OPERATOR": "ana", "COLUMNS": "400", "PYTHONPATH": root}
        env.pop("ITOPS_WORKSPACE", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "toolkit", "-w", str(ws), *args],
            stdout=slave,
            stderr=subprocess.PIPE,
            env=env,
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        out = b"".join(chunks).decode()
        assert_shown_literally(out, "terminal", *MARKUP[:2])


def test_plain_table_headers_upper_case_the_name_but_keep_a_zone_as_spelled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`ticket show` names its time column after the calendar's zone: `TIME (Europe/Berlin)`,
    not `TIME (EUROPE/BERLIN)` — a zone name is case-sensitive (tz database)."""
    render.table(["time (Europe/Berlin)", "outcome"], [["2026-12-04 10:00", "fixed"]])
    header = capsys.readouterr().out.splitlines()[0]
    assert header.split() == ["TIME", "(Europe/Berlin)", "OUTCOME"]

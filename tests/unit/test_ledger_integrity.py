"""`audit verify` against edits the old SQL pre-image could not see (a NUL: SQLite's printf stops
there) and against a ledger whose append-only triggers were dropped or disabled."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.inprocess import itops as _itops
from tests.unit.test_ledger import fill, tamper
from toolkit.errors import LedgerError
from toolkit.ledger import Entry, Ledger
from toolkit.workspace import Workspace


def itops(ws: Path, *args: str) -> tuple[int, str]:
    return _itops(ws, *args, operator="auditor")


@pytest.fixture
def ws(workspace: Workspace) -> Iterator[Path]:
    book = Ledger(f"sqlite:///{workspace.state_dir / 'ledger.db'}", operator="alice")
    fill(book, 3)
    book.close()
    yield workspace.root


def head(ws: Path) -> str:
    code, out = itops(ws, "audit", "head")
    assert code == 0, out
    return out.strip()


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE ledger SET operator = operator || char(0) || ' (actually mallory)' WHERE seq = 2",
        "UPDATE ledger SET host = char(0) || host WHERE seq = 3",
    ],
)
def test_a_nul_edit_fails_verify_and_expect_head(ws: Path, tmp_path: Path, edit: str) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(ws, copy)
    before = head(copy)
    assert itops(copy, "audit", "verify", "--expect-head", before)[0] == 0
    db = copy / ".itops" / "ledger.db"
    tamper(f"sqlite:///{db}", edit)  # drops the triggers, then edits
    code, out = itops(copy, "audit", "verify", "--expect-head", before)
    assert code == 1, out
    assert "LEDGER BROKEN" in out
    assert "NUL" in out
    code, out = itops(copy, "audit", "verify")
    assert code == 1, out


def test_dropped_triggers_fail_verify(ledger_url: str) -> None:
    book = Ledger(ledger_url, operator="alice")
    fill(book, 2)
    assert book.verify().ok
    tamper(ledger_url)  # the triggers go, nothing else changes
    report = book.verify()
    book.close()
    assert not report.ok
    assert "trigger" in (report.reason or "") and "ledger_no_" in (report.reason or "")


def test_a_disabled_or_emptied_trigger_fails_verify(ledger_url: str) -> None:
    book = Ledger(ledger_url, operator="alice")
    fill(book, 1)
    engine = create_engine(ledger_url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":  # the same name, a body that refuses nothing
            conn.execute(text("DROP TRIGGER ledger_no_update"))
            conn.execute(
                text("CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger BEGIN SELECT 1; END")
            )
        else:
            conn.execute(text("ALTER TABLE ledger DISABLE TRIGGER ledger_no_change"))
    engine.dispose()
    report = book.verify()
    book.close()
    assert not report.ok and "ledger_no_" in (report.reason or ""), report


def test_the_cli_names_dropped_triggers(ws: Path) -> None:
    tamper(f"sqlite:///{ws / '.itops' / 'ledger.db'}")
    code, out = itops(ws, "audit", "verify")
    assert code == 1, out
    assert "ledger_no_update" in out


def test_the_writer_refuses_a_nul_in_every_field(ledger_url: str) -> None:
    book = Ledger(ledger_url, operator="alice")
    try:
        for entry in (
            Entry("action.begin\x00x"),
            Entry("action.begin", action_id="a\x00b"),
            Entry("action.finish", outcome="fixed\x00"),
        ):
            with pytest.raises(LedgerError, match="NUL"):
                book.append(entry)
        # text fields keep their visible stand-in (a command's output may hold a NUL)
        stored = book.append(Entry("note", host="h\x00", operator="bob\x00"))
        assert stored.host == "h\u2400" and stored.operator == "bob\u2400"
        assert book.verify().ok
    finally:
        book.close()

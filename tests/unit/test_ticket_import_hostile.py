"""Hostile ticket imports: absurd times, lone surrogates, deep nesting, duplicate keys, huge text —
each refused with a clean error naming the line, exit 2, nothing written; a whole import is one
transaction; and the desk survives a bad row that is already in the (append-only) ledger."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.inprocess import itops
from toolkit.desk.ticketio import import_file
from toolkit.ledger import Entry, Ledger
from toolkit.workspace import Workspace


def opened(ticket: str = "INC-1", at: str = "2026-11-02T09:14:00+01:00", **extra: Any) -> str:
    return json.dumps(
        {"ticket": ticket, "event": "opened", "at": at, "priority": "P2", "category": "printer"}
        | extra
    )


def ticket_records(ws: Path) -> int:
    db = ws / ".itops" / "ledger.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(
            conn.execute("SELECT count(*) FROM ledger WHERE kind LIKE 'ticket.%'").fetchone()[0]
        )


def refused(ws: Path, lines: list[str], *fragments: str) -> str:
    path = ws / "in.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    code, out = itops(ws, "ticket", "import", str(path))
    assert code == 2, out
    assert "Traceback" not in out
    assert "nothing was imported" in out
    for fragment in fragments:
        assert fragment in out, (fragment, out)
    assert ticket_records(ws) == 0
    return out


@pytest.mark.parametrize(
    "when",
    ["0001-01-01T00:00:00+00:00", "9999-12-31T23:00:00-05:00", "1999-12-31T23:59:59+00:00"],
)
def test_an_absurd_time_is_refused(workspace: Workspace, when: str) -> None:
    refused(workspace.root, [opened("INC-1"), opened("INC-2", when)], "line 2", "time")


def test_a_time_more_than_a_day_ahead_is_refused(workspace: Workspace) -> None:
    refused(workspace.root, [opened("INC-1", "2099-01-01T00:00:00+00:00")], "line 1", "future")


def test_a_lone_surrogate_is_refused_before_anything_is_written(workspace: Workspace) -> None:
    good = [opened(f"INC-{n}") for n in range(1, 6)]
    bad = '{"ticket":"INC-9","event":"opened","at":"2026-11-02T09:14:00+01:00","summary":"\\ud800"}'
    refused(workspace.root, [*good, bad], "line 6", "surrogate")


def test_deep_nesting_is_a_clean_error(workspace: Workspace) -> None:
    deep = '{"ticket":"INC-1","event":"opened","at":"2026-11-02T09:14:00+01:00","summary":'
    deep += "[" * 20_000 + "]" * 20_000 + "}"  # (json's decoder recurses once per level)
    refused(workspace.root, [opened("INC-2"), deep], "line 2", "nested")


def test_duplicate_keys_are_refused(workspace: Workspace) -> None:
    line = opened("INC-1")[:-1] + ', "priority": "P1"}'
    refused(workspace.root, [line], "line 1", "duplicate key 'priority'")


def test_free_text_has_a_length_limit(workspace: Workspace) -> None:
    refused(workspace.root, [opened("INC-1", summary="x" * 10_000)], "line 1", "summary", "long")


def test_a_line_has_a_length_limit(workspace: Workspace) -> None:
    refused(workspace.root, [opened("INC-1", hosts=["h"] * 100_000)], "line 1", "long")


def test_a_line_has_a_limit_on_keys(workspace: Workspace) -> None:
    many = {f"k{n}": "v" for n in range(200)}
    line = json.dumps({"ticket": "INC-1", "event": "opened", "at": "2026-11-02T09:14:00Z", **many})
    refused(workspace.root, [line], "line 1", "keys")


def test_an_import_is_one_transaction(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails after 20,000 of 20,006 events leaves nothing: all or nothing."""
    from toolkit.ledger import store

    path = workspace.root / "in.jsonl"
    path.write_text("".join(opened(f"INC-{n}") + "\n" for n in range(20_006)), encoding="utf-8")
    real = store.Store._insert
    sent = [0]

    def fails_late(self: store.Store, values: list[Any], **kw: Any) -> None:
        sent[0] += len(values)
        if sent[0] > 20_000:
            raise sqlite3.OperationalError("disk I/O error")
        real(self, values, **kw)

    monkeypatch.setattr(store.Store, "_insert", fails_late)
    book = Ledger(f"sqlite:///{workspace.state_dir / 'ledger.db'}", operator="ana")
    with pytest.raises(Exception, match="nothing was written"):
        import_file(book, path, batch=5000)
    book.close()
    assert ticket_records(workspace.root) == 0


# -- a bad row already in the ledger ----------------------------------------------------------------
@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+00:00", "9999-12-31T23:00:00-05:00"])
def test_the_desk_survives_an_absurd_time_already_in_the_ledger(
    workspace: Workspace, tmp_path: Path, when: str
) -> None:
    book = Ledger(f"sqlite:///{workspace.state_dir / 'ledger.db'}", operator="ana")
    good = {"priority": "P2", "category": "printer", "imported": True}
    book.append(Entry("ticket.opened", ticket="INC-1", data={**good, "at": "2026-11-02T09:14:00Z"}))
    bad = book.append(Entry("ticket.opened", ticket="INC-9", data={**good, "at": when}))
    book.close()
    for args in (
        ["ticket", "list"],
        ["ticket", "show", "INC-9"],
        ["kpi"],
        ["report", "kpi", "--csv", str(tmp_path / "k.csv")],
    ):
        code, out = itops(workspace.root, *args)
        assert code == 0, (args, out)
        assert f"#{bad.seq}" in out and when in out, (args, out)  # the warning names the record


def test_the_desk_survives_a_tampered_ledger_time(workspace: Workspace, tmp_path: Path) -> None:
    book = Ledger(f"sqlite:///{workspace.state_dir / 'ledger.db'}", operator="ana")
    book.append(
        Entry("ticket.opened", ticket="INC-1", data={"priority": "P2", "category": "printer"})
    )
    book.append(Entry("action.begin", ticket="INC-1", host="h", task="t.x", action_id="a1"))
    book.close()
    with sqlite3.connect(workspace.state_dir / "ledger.db") as conn:  # raw SQL: no chain, no checks
        conn.execute(
            "INSERT INTO ledger (seq, at, kind, operator, ticket, host, task, action_id, outcome, "
            "duration_ms, data, prev_hash, hash) VALUES (3, '9999-12-31T23:59:59.000000Z', "
            "'action.finish', 'x', 'INC-1', 'h', 't.x', 'a1', 'fixed', 5, '{}', 'x', 'x')"
        )
        conn.execute(
            "INSERT INTO ledger (seq, at, kind, operator, ticket, data, prev_hash, hash) VALUES "
            "(4, '0001-01-01T00:00:00.000000Z', 'ticket.note', 'x', 'INC-1', '{\"text\": \"t\"}', "
            "'x', 'x')"
        )
    for args in (["ticket", "list"], ["ticket", "show", "INC-1"], ["kpi"], ["log"]):
        code, out = itops(workspace.root, *args)
        assert code == 0, (args, out)
    code, out = itops(workspace.root, "ticket", "show", "INC-1")
    assert "#4" in out

"""Anchors: a plain `itops audit verify` catches what the hash chain alone cannot — the newest
records cut off, or the chain rewritten (and its hashes recomputed) by someone who could drop and
restore the append-only triggers — and a forged or edited anchor log."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.inprocess import itops
from toolkit.ledger.schema import FIELDS, GENESIS, record_hash
from toolkit.ledger.store import SQLITE_TRIGGERS
from toolkit.workspace import Workspace


@pytest.fixture
def ws(workspace: Workspace) -> Path:
    root = workspace.root
    for n in range(1, 4):  # three commands, three anchors
        assert itops(root, "ticket", "open", f"INC-{n}", "-c", "printer")[0] == 0
    code, out = itops(root, "audit", "verify")
    assert code == 0 and "checked against 3 anchor(s)" in out, out
    return root


def tamper(root: Path, sql: str, *, rehash: bool = False) -> None:
    """What an attacker with write access to the database file does: drop the triggers, change
    rows, recompute every hash from the first record on (a rewrite), restore the triggers."""
    db = sqlite3.connect(root / ".itops" / "ledger.db")
    db.execute("DROP TRIGGER ledger_no_update")
    db.execute("DROP TRIGGER ledger_no_delete")
    db.execute(sql)
    if rehash:
        prev = GENESIS
        rows = db.execute(f"SELECT {', '.join(FIELDS)} FROM ledger ORDER BY seq").fetchall()
        for row in rows:
            values = list(row)
            values[FIELDS.index("prev_hash")] = prev
            prev = record_hash(values)
            db.execute(
                "UPDATE ledger SET prev_hash = ?, hash = ? WHERE seq = ?",
                (values[FIELDS.index("prev_hash")], prev, values[FIELDS.index("seq")]),
            )
    for trigger in SQLITE_TRIGGERS:
        db.execute(trigger)
    db.commit()
    db.close()


def test_the_newest_records_cut_off_are_caught_by_a_plain_verify(ws: Path) -> None:
    tamper(ws, "DELETE FROM ledger WHERE seq = 3")
    code, out = itops(ws, "audit", "verify")
    assert code == 1 and "records after #2 are missing" in out, out


def test_a_rewritten_chain_with_recomputed_hashes_is_caught(ws: Path) -> None:
    tamper(ws, "UPDATE ledger SET operator = 'mallory' WHERE seq = 1", rehash=True)
    code, out = itops(ws, "audit", "verify")
    assert code == 1 and "record #1 is not the one anchored" in out, out


def test_an_edited_or_forged_anchor_log_is_caught(ws: Path) -> None:
    (log,) = (ws / ".itops").glob("anchors-*.jsonl")
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], lines[2]]) + "\n")  # the middle anchor removed
    code, out = itops(ws, "audit", "verify")
    assert code == 1 and "the anchor log" in out and "was edited" in out, out
    # a newest line signed by another key (the anchoring key replaced, its public half kept)
    log.write_text("\n".join(lines) + "\n")
    forged = json.loads(lines[2])
    forged["signature"] = json.loads(lines[1])["signature"]  # a real signature, of another head
    log.write_text("\n".join([*lines[:2], json.dumps(forged)]) + "\n")
    code, out = itops(ws, "audit", "verify")
    assert code == 1 and "the anchor log was forged" in out, out


def test_every_writing_command_anchors_and_audit_anchor_says_where(ws: Path) -> None:
    code, out = itops(ws, "ticket", "note", "INC-1", "called the user")
    assert code == 0
    code, out = itops(ws, "audit", "anchor", "--json")
    anchor = json.loads(out)
    assert code == 0 and anchor["seq"] == 4 and anchor["signature"].startswith("-----BEGIN SSH")
    assert (ws / ".itops" / "anchor_ed25519").stat().st_mode & 0o077 == 0  # the key is private


def test_concurrent_commands_append_one_linear_anchor_log(workspace: Workspace) -> None:
    # Two itops processes finishing at once used to write two lines following the same line.
    import subprocess
    import sys

    root = workspace.root
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "toolkit", "-w", str(root), "ticket", "open", f"INC-{n}",
             "-c", "printer"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for n in range(6)
    ]  # fmt: skip
    for proc in procs:
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    code, out = itops(root, "audit", "verify")
    assert code == 0 and "anchor(s)" in out, out

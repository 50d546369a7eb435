"""The ledger's table and the hash that chains its rows. Kept apart so the format is one place.

A row's hash is SHA-256 over its FIELDS joined by U+001F, NULL as the empty string, then
hex-encoded. Stored text never contains U+001F (the ledger replaces it on write), so the joined
string splits back into exactly one tuple of fields: nothing can move from one field to another.
The same pre-image can be built inside the database (`preimage_sql`), which lets `verify` stream one
string per row instead of seventeen columns. The table itself is declared in `tables.py`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

# Hashed fields, in hash order; `hash` itself follows them in the table.
FIELDS = (
    "seq",
    "at",
    "kind",
    "operator",
    "ticket",
    "host",
    "task",
    "action_id",
    "outcome",
    "duration_ms",
    "params",
    "commands",
    "output_excerpt",
    "output_sha256",
    "data",
    "prev_hash",
)
COLUMNS = (*FIELDS, "hash")  # what a client writes
# Read beside them, never hashed: the database user that wrote the row, filled by PostgreSQL
# itself (`session_user`, a column default and a BEFORE INSERT trigger that overrides whatever the
# client sends) after the client computed the hash; NULL on SQLite (no database users).
DB_USER = "db_user"
READ_COLUMNS = (*COLUMNS, DB_USER)
SEPARATOR = "\x1f"
SEPARATOR_STANDIN = "\u241f"  # ␟, what a U+001F in user text is stored as
NUL_STANDIN = "\u2400"  # ␀, what a NUL is stored as (PostgreSQL text cannot hold one, and
# SQLite's printf, which rebuilds a record's hash input, stops at one)
GENESIS = "0" * 64
SCHEMA_VERSION = "5"
# What opening an older ledger adds (when the account may): version 2 finds a ticket's events
# without reading every action recorded under it (a change ticket a schedule reuses has many);
# version 3 records each row's database user; version 4 indexes operator, task, outcome and
# action id (the web view's search pages through a million records by any of them, newest first,
# and finds a page's actions' begin records); version 5 makes the action id index (action_id,
# kind): "the begin records of these 50 actions" is then one index's lookup, which PostgreSQL
# picks even on a table without statistics (with action_id alone it walked the (ticket, kind)
# index over every begin: 130 ms on 400,000 records; bench/web_search.py, PostgreSQL). An account
# that may not upgrade reads on as before.
UPGRADES = {
    "1": (
        "CREATE INDEX IF NOT EXISTS ix_ledger_ticket_kind ON ledger (ticket, kind)",
        "DROP INDEX IF EXISTS ix_ledger_ticket",  # the new one serves every ticket lookup
    ),
    # version 3: the database user of each record (PostgreSQL fills it: store.PG_DB_USER)
    "2": ("ALTER TABLE ledger ADD COLUMN db_user VARCHAR(128)",),
    "3": (
        "CREATE INDEX IF NOT EXISTS ix_ledger_operator ON ledger (operator)",
        "CREATE INDEX IF NOT EXISTS ix_ledger_task ON ledger (task)",
        "CREATE INDEX IF NOT EXISTS ix_ledger_outcome ON ledger (outcome)",
        # (the action id index is version 5's, below)
    ),
    "4": (
        "CREATE INDEX IF NOT EXISTS ix_ledger_action_kind ON ledger (action_id, kind)",
        "DROP INDEX IF EXISTS ix_ledger_action",  # the new one serves every action id lookup
    ),
}


def preimage(values: Sequence[object]) -> str:
    return SEPARATOR.join(["" if v is None else str(v) for v in values])


def record_hash(values: Sequence[object]) -> str:
    """The chain hash of one row, from its FIELDS values in order."""
    return hashlib.sha256(preimage(values).encode()).hexdigest()


def preimage_sql(dialect: str) -> str:
    """SQL that builds `preimage()` of a row inside the database (same text, one pass).

    PostgreSQL: format(), which renders NULL as '' for %s (its text cannot hold a NUL). SQLite:
    the columns joined with `||` and returned as a BLOB — the exact UTF-8 bytes `preimage()`
    hashes. Not printf(): its %s stops at a NUL, so `'bob' || char(0) || ' (actually mallory)'`
    had bob's pre-image and passed verify. The ledger never writes a NUL (`Ledger._prepare`);
    verify reports any stored one as an edit."""
    if dialect == "postgresql":
        template = SEPARATOR.join(["%s"] * len(FIELDS))
        return f"format('{template}', {', '.join(FIELDS)})"
    joined = " || char(31) || ".join(f"coalesce({name}, '')" for name in FIELDS)
    return f"CAST({joined} AS BLOB)"

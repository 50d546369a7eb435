"""The ledger's tables as SQLAlchemy Core metadata: the portable DDL for SQLite and PostgreSQL.

Imported only when a ledger is created (SQLAlchemy takes ~0.3 s to import; the append and read
paths use the database driver directly).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

ledger = Table(
    "ledger",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
    Column("at", String(32), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("operator", String(128), nullable=False),
    Column("ticket", String(64)),
    Column("host", String(255)),
    Column("task", String(128)),
    Column("action_id", String(32)),
    Column("outcome", String(32)),
    Column("duration_ms", BigInteger),
    Column("params", Text),
    Column("commands", Text),
    Column("output_excerpt", Text),
    Column("output_sha256", String(64)),
    Column("data", Text),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("db_user", String(128)),  # not hashed: PostgreSQL fills it (store.PG_DB_USER)
    Index("ix_ledger_ticket_kind", "ticket", "kind"),  # a ticket's events among its actions
    Index("ix_ledger_host", "host"),
    Index("ix_ledger_at", "at"),
    # schema 4: the web view's search by each filter, newest first (schema.UPGRADES)
    Index("ix_ledger_operator", "operator"),
    Index("ix_ledger_task", "task"),
    Index("ix_ledger_outcome", "outcome"),
    # schema 5: an action's records by id and kind ("the begin records of these actions")
    Index("ix_ledger_action_kind", "action_id", "kind"),
)

meta = Table(
    "ledger_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

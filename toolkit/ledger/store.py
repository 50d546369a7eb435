"""Database access for the ledger: SQLite (WAL, `BEGIN IMMEDIATE`) or PostgreSQL (advisory lock).

SQLAlchemy owns the engine, the schema and the queries. The append path, which runs twice per host
per remediation and must sustain thousands of records a second, speaks to the DBAPI connection
directly with one fixed statement: SQLAlchemy's per-execute machinery cost ~10× the SQLite work.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, insert, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from ..errors import LedgerError
from .schema import (
    COLUMNS,
    FIELDS,
    GENESIS,
    SCHEMA_VERSION,
    ledger,
    meta,
    metadata,
    preimage_sql,
    record_hash,
)

SCHEMA_LOCK_KEY = 0x17_0B5_5C4E  # serialises concurrent first opens on PostgreSQL
FILTERS = ("seq", "ticket", "host", "operator", "task", "outcome", "kind", "action_id")
PARALLEL_VERIFY_MIN = 200_000

SQLITE_TRIGGERS = [
    "CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON ledger "
    "BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS ledger_no_delete BEFORE DELETE ON ledger "
    "BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END",
]
PG_TRIGGERS = [
    "CREATE OR REPLACE FUNCTION itops_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'the ledger is append-only'; END $$",
    "CREATE OR REPLACE TRIGGER ledger_no_change BEFORE UPDATE OR DELETE ON ledger "
    "FOR EACH ROW EXECUTE FUNCTION itops_ledger_append_only()",
    "CREATE OR REPLACE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger "
    "FOR EACH STATEMENT EXECUTE FUNCTION itops_ledger_append_only()",
]


_second: list[Any] = [None, ""]


def _now() -> str:
    """UTC now as 2026-11-21T09:56:39.123456Z (the seconds part formatted once per second)."""
    now = time.time()
    whole = int(now)
    if _second[0] != whole:
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return f"{_second[1]}.{int((now - whole) * 1e6):06d}Z"


@dataclass(frozen=True)
class RangeCheck:
    """What verification found over a seq range (or, merged, over the whole chain)."""

    count: int
    first_bad: int | None = None
    reason: str | None = None
    first_prev: str | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    begun: tuple[str, ...] = ()  # actions begun in this range and not finished in it
    finished: tuple[str, ...] = ()  # actions finished in this range and not begun in it


def make_engine(url: str, synchronous: str = "normal") -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # autocommit driver: we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA wal_autocheckpoint=10000")  # fewer, larger checkpoints: faster appends
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # A writer takes the lock up front: upgrading a read transaction to a write one fails
        # at once with SQLITE_BUSY (no busy wait) when another connection wrote meanwhile.
        write = conn.get_execution_options().get("itops_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class Store:
    def __init__(self, url: str, *, synchronous: str = "normal") -> None:
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise LedgerError(
                f"unsupported ledger database {self.dialect!r}",
                hint="use sqlite:///path or postgresql+psycopg://…",
            )
        try:
            self.engine = make_engine(url, synchronous)
            self._ensure_schema()
        except SQLAlchemyError as exc:
            raise LedgerError(f"cannot open the ledger: {exc.__class__.__name__}: {exc}") from exc
        self._raw: Any = None
        self._cursor: Any = None
        self._head: tuple[int, str] | None = None
        self._integrity_errors: tuple[type[Exception], ...] = self._driver_integrity_errors()
        mark = "?" if self.dialect == "sqlite" else "%s"
        self._insert_sql = (
            f"INSERT INTO ledger ({', '.join(COLUMNS)}) VALUES ({', '.join([mark] * len(COLUMNS))})"
        )
        self._pg_insert_prefix = f"INSERT INTO ledger ({', '.join(COLUMNS)}) VALUES "
        self._pg_row = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"

    def _ensure_schema(self) -> None:
        """Create tables and guards once. Opening an existing ledger runs no DDL at all (so a
        read-only auditor account can open it), and concurrent first opens are serialised."""
        with self.engine.connect() as conn:
            if (
                inspect(conn).has_table("ledger_meta")
                and conn.execute(select(meta.c.value).where(meta.c.key == "schema")).first()
            ):
                return
        with self.engine.connect().execution_options(itops_write=True) as conn, conn.begin():
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
            metadata.create_all(conn)
            for ddl in SQLITE_TRIGGERS if self.dialect == "sqlite" else PG_TRIGGERS:
                conn.exec_driver_sql(ddl)
            if conn.execute(select(meta.c.value).where(meta.c.key == "schema")).first() is None:
                conn.execute(
                    insert(meta),
                    [
                        {"key": "schema", "value": SCHEMA_VERSION},
                        {"key": "created", "value": _now()},
                    ],
                )

    # -- append ------------------------------------------------------------------------------
    def append(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """Number, time, chain and insert rows; returns them as stored (COLUMNS order).

        Optimistic: the head (seq, hash) is cached, rows are numbered from it, and the primary
        key rejects the insert if another writer took that seq first; then the head is re-read
        and the rows renumbered. Rows never change once written, so a cached head that still
        names the last row is exact, and the chain stays linear whatever the writers.
        Not thread-safe: the Ledger serialises callers."""
        for _attempt in range(1000):
            try:
                if self._raw is None:
                    self._raw = self.engine.raw_connection()
                    self._cursor = self._raw.cursor()
                    self._head = None
                if self._head is None:
                    self._cursor.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")
                    found = self._cursor.fetchone()
                    self._head = (found[0], found[1]) if found else (0, GENESIS)
                seq, prev = self._head
                at = _now()
                values = []
                for row in rows:
                    seq += 1
                    row["seq"], row["at"], row["prev_hash"] = seq, at, prev
                    prev = record_hash([row[f] for f in FIELDS])
                    values.append((*[row[f] for f in FIELDS], prev))
                self._insert(values)
                self._head = (seq, prev)
                return values
            except self._integrity_errors:
                self._rollback(keep=True)
                self._head = None  # another writer got there first: renumber from the new head
            except Exception as exc:
                self._rollback(keep=False)
                raise LedgerError(
                    f"cannot write to the ledger: {exc.__class__.__name__}: {exc}"
                ) from exc
        raise LedgerError("cannot write to the ledger: too much contention from other writers")

    def _insert(self, values: list[tuple[Any, ...]]) -> None:
        cur = self._cursor
        if self.dialect == "sqlite":
            if len(values) == 1:
                cur.execute(self._insert_sql, values[0])  # autocommit: its own transaction
            else:
                cur.execute("BEGIN")
                cur.executemany(self._insert_sql, values)
                cur.execute("COMMIT")
        else:
            # One multi-row INSERT: psycopg's executemany pipelines, and a lost race then
            # surfaces as a noisy aborted pipeline instead of one clean IntegrityError.
            rows_sql = ", ".join([self._pg_row] * len(values))
            cur.execute(self._pg_insert_prefix + rows_sql, [v for row in values for v in row])
            self._raw.commit()

    def _rollback(self, *, keep: bool) -> None:
        if self._raw is None:
            return
        try:
            if self.dialect == "sqlite":
                if self._raw.in_transaction:
                    self._cursor.execute("ROLLBACK")
            else:
                self._raw.rollback()
        except Exception:
            keep = False
        if not keep:
            self._raw.close()
            self._raw = None

    def _driver_integrity_errors(self) -> tuple[type[Exception], ...]:
        module = self.engine.dialect.dbapi
        return (module.IntegrityError,) if module is not None else ()

    # -- read --------------------------------------------------------------------------------
    def select(self, filters: Mapping[str, Any]) -> Iterator[tuple[Any, ...]]:
        query = select(*[ledger.c[f] for f in COLUMNS]).order_by(ledger.c.seq)
        for key in FILTERS:
            value = filters.get(key)
            if value is not None:
                query = query.where(ledger.c[key] == value)
        if filters.get("kinds"):
            query = query.where(ledger.c.kind.in_(list(filters["kinds"])))
        if filters.get("since"):
            query = query.where(ledger.c.at >= filters["since"])
        if filters.get("until"):
            query = query.where(ledger.c.at < filters["until"])
        if filters.get("action_ids") is not None:
            query = query.where(ledger.c.action_id.in_(list(filters["action_ids"])))
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=5000).execute(query):
                yield tuple(row)

    def head(self) -> tuple[Any, ...] | None:
        query = select(*[ledger.c[f] for f in COLUMNS]).order_by(ledger.c.seq.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return tuple(row) if row else None

    # -- verify ------------------------------------------------------------------------------
    def verify_chain(self) -> RangeCheck:
        """Recompute every hash and link; seq ranges in parallel processes for large ledgers."""
        with self.engine.connect() as conn:
            count, high = conn.execute(text("SELECT count(*), max(seq) FROM ledger")).one()
        if not count:
            return RangeCheck(0)
        workers = min(os.cpu_count() or 1, 8) if count >= PARALLEL_VERIFY_MIN else 1
        step = -(-high // workers)
        lows = list(range(1, high + 1, step))
        highs = [min(lo + step - 1, high) for lo in lows]
        if workers == 1:
            parts = [check_range(self.url, 1, high)]
        else:
            self.engine.dispose()  # no pooled connection may cross the fork
            with ProcessPoolExecutor(len(lows), mp_context=get_context("fork")) as pool:
                parts = list(pool.map(check_range, [self.url] * len(lows), lows, highs))
        total, prev, last_seq = 0, GENESIS, None
        begun: dict[str, None] = {}
        for low, part in zip(lows, parts, strict=True):
            begun.update(dict.fromkeys(part.begun))
            for action in part.finished:
                begun.pop(action, None)
            if part.count and part.first_prev != prev and part.first_bad != low:
                return RangeCheck(
                    total,
                    low,
                    f"record {low} does not link to record {low - 1}",
                    last_seq=last_seq,
                    last_hash=prev,
                )
            total += part.count
            if part.first_bad is not None:
                return RangeCheck(
                    total,
                    part.first_bad,
                    part.reason,
                    last_seq=part.last_seq,
                    last_hash=part.last_hash,
                )
            prev, last_seq = part.last_hash or prev, part.last_seq
        return RangeCheck(total, last_seq=last_seq, last_hash=prev, begun=tuple(begun))

    def close(self) -> None:
        self._rollback(keep=False)
        self.engine.dispose()


def check_range(url: str, low: int, high: int) -> RangeCheck:
    """Verify rows low..high: contiguous seq, each row's hash, each row's link to the one before.

    The link of row `low` to row `low - 1` is left to the caller (it reads `first_prev`)."""
    import hashlib

    engine = make_engine(url)
    dialect = make_url(url).get_backend_name()
    sha = hashlib.sha256
    count, first_prev, expected = 0, None, low
    prev: str | None = None
    mark = "?" if dialect == "sqlite" else "%s"
    begun: dict[str, None] = {}
    finished: list[str] = []
    image_sql = preimage_sql(dialect)
    if dialect == "postgresql":
        image_sql = image_sql.replace("%", "%%")  # psycopg's own placeholders are %s
    query = (
        f"SELECT seq, prev_hash, hash, kind, action_id, {image_sql} FROM ledger "
        f"WHERE seq BETWEEN {mark} AND {mark} ORDER BY seq"
    )
    try:
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            cur = raw.cursor(name="itops_verify") if dialect == "postgresql" else raw.cursor()
            cur.execute(query, (low, high))
            while batch := cur.fetchmany(50_000):
                for seq, prev_hash, stored, kind, action_id, image in batch:
                    problem = None
                    if seq != expected:
                        what = "missing" if seq > expected else "out of order"
                        problem = (expected, f"record {expected} is {what}")
                    elif count and prev_hash != prev:
                        problem = (seq, f"record {seq} does not link to record {seq - 1}")
                    elif sha(image.encode()).hexdigest() != stored:
                        problem = (seq, f"record {seq} was altered (its hash does not match)")
                    if problem:
                        return RangeCheck(count, *problem, first_prev, expected - 1, prev)
                    if count == 0:
                        first_prev = prev_hash
                    count += 1
                    expected = seq + 1
                    prev = stored
                    if kind == "action.begin":
                        begun[action_id] = None
                    elif kind == "action.finish" and action_id not in begun:
                        finished.append(action_id)  # begun in an earlier range
                    else:
                        begun.pop(action_id, None)
            cur.close()
    finally:
        engine.dispose()
    if expected != high + 1:
        return RangeCheck(
            count, expected, f"record {expected} is missing", first_prev, expected - 1, prev
        )
    return RangeCheck(count, None, None, first_prev, high, prev, tuple(begun), tuple(finished))

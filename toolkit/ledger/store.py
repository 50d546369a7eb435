"""Database access for the ledger: SQLite (WAL) or PostgreSQL, through the database driver.

SQLAlchemy Core declares the tables and creates them portably (`tables.py`, imported only when a
ledger is new). Everything else — appending, reading, verifying — is a handful of fixed statements
sent through the DBAPI driver: measured here, SQLAlchemy's per-execute machinery cost ~10× the
SQLite work on the append path, and its import alone cost every `itops fix` ~0.3 s.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from toolkit.errors import LedgerError
from toolkit.ledger.schema import (
    COLUMNS,
    DB_USER,
    FIELDS,
    GENESIS,
    READ_COLUMNS,
    SCHEMA_VERSION,
    UPGRADES,
    preimage_sql,
    record_hash,
)

SCHEMA_LOCK_KEY = 0x170B55C4E  # serialises concurrent first opens on PostgreSQL
FILTERS = ("seq", "ticket", "host", "operator", "task", "outcome", "kind", "action_id")
# Filters that bound how many rows a read returns (`Store._stream` reads those without a cursor)
BOUNDED = ("limit", "seq", "seqs", "action_id", "action_ids")
UNCHANGED = ("already-ok", "would-fix", "skipped", "needs-approval")
# A record of a change, or of what may have been one: an action's finish that did not end
# unchanged, and every record that is not an action's (tickets, approvals, refusals) nor a record
# of a read (READS: a page viewed, a report or bundle made) or of a sign-in (SIGNINS). An action's
# begin is left to its finish. (Whether a finished action was a --check run is on its begin
# record: the web search looks those up per page, by action id.)
READS = ("audit.view", "audit.export", "report.audit")  # records of someone reading the log
SIGNINS = ("audit.signin", "audit.signin-failed")  # web sign-ins (toolkit.web.signin)
CHANGES_ONLY = (
    "kind NOT IN (" + ", ".join(f"'{k}'" for k in (*READS, *SIGNINS)) + ") AND "
    "(kind NOT IN ('action.begin', 'action.finish') OR (kind = 'action.finish' AND "
    "(outcome IS NULL OR outcome NOT IN (" + ", ".join(f"'{o}'" for o in UNCHANGED) + "))))"
)
PARALLEL_VERIFY_MIN = 200_000
PG_ROWS = 2000  # rows per multi-row INSERT on PostgreSQL (17 parameters each; at most 65,535)
# Waits before each retry of a write that lost its connection: ~3 s in all, then the write fails
RETRY_DELAYS = (0.1, 0.2, 0.4, 0.8, 1.6)

log = logging.getLogger("itops.ledger")

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

# The record's database user is the database's word, not the client's: a default for rows that
# omit it and a trigger that overwrites whatever a client sent. Only the table's owner may drop or
# disable the trigger (ALTER TABLE); the application role may only INSERT and SELECT.
PG_DB_USER = [
    "ALTER TABLE ledger ALTER COLUMN db_user SET DEFAULT session_user",
    "CREATE OR REPLACE FUNCTION itops_ledger_db_user() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN NEW.db_user := session_user; RETURN NEW; END $$",
    "CREATE OR REPLACE TRIGGER ledger_db_user BEFORE INSERT ON ledger "
    "FOR EACH ROW EXECUTE FUNCTION itops_ledger_db_user()",
]

_second: list[Any] = [None, ""]


def _now() -> str:
    """UTC now as 2026-11-21T09:56:39.123456Z (the seconds part formatted once per second)."""
    now = time.time()
    whole = int(now)
    cached, text = _second  # one read: another thread may replace the pair meanwhile
    if cached != whole:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second[:] = [whole, text]  # (a list slice assignment swaps both items at once)
    return f"{text}.{int((now - whole) * 1e6):06d}Z"


def backend(url: str) -> str:
    name = url.partition("://")[0].split("+")[0]
    if name not in ("sqlite", "postgresql"):
        raise LedgerError(
            f"unsupported ledger database {name!r}",
            hint="use sqlite:///path or postgresql+psycopg://user@host/db",
        )
    return name


def placeholder(dialect: str) -> str:
    """The DBAPI parameter marker of a backend's driver: sqlite3's `?`, psycopg's `%s`."""
    return "?" if dialect == "sqlite" else "%s"


@dataclass(frozen=True)
class SqliteTarget:
    """Where a sqlite:/// URL points and how to open it: its query string is honoured, as in
    SQLAlchemy (`timeout`: the busy timeout in seconds; anything else is a SQLite URI
    parameter, e.g. `mode=ro` or `immutable=1`, see https://sqlite.org/uri.html)."""

    path: str  # ":memory:" for sqlite://
    params: tuple[tuple[str, str], ...] = ()
    timeout: float = 60.0

    @classmethod
    def parse(cls, url: str) -> SqliteTarget:
        rest, _, query = url.partition("://")[2].partition("?")
        path = unquote(rest[1:]) if rest.startswith("/") else ":memory:"
        params, timeout = [], 60.0
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == "timeout":
                timeout = float(value)
            elif key != "uri":  # (SQLAlchemy's switch for URI filenames: this always uses them)
                params.append((key, value))
        return cls(path, tuple(params), timeout)

    @property
    def read_only(self) -> bool:
        options = dict(self.params)
        return options.get("mode") == "ro" or options.get("immutable") == "1"

    def uri(self) -> str:
        query = urlencode(self.params)
        return f"file:{quote(self.path)}" + (f"?{query}" if query else "")

    def url(self) -> str:
        query = urlencode([*self.params, ("timeout", f"{self.timeout:g}")])
        return f"sqlite:///{quote(self.path)}?{query}"


def readable(url: str) -> tuple[str, Path | None]:
    """A SQLite URL that opens the ledger read-only, wherever its file lies; and the folder of
    a private copy it reads, if one was needed (the caller removes it).

    `mode=ro` reads in place when the folder is writable (SQLite adds its -shm there). On
    read-only media a WAL-mode file cannot be opened `mode=ro` without a -shm beside it: with no
    -wal content it is opened `immutable=1` (no locks, no -shm); with a -wal (a copy taken while
    itops was writing) the newest records are only in the -wal, which `immutable=1` would
    silently ignore, so a -shm beside it is used if there is one, else the file and its -wal are
    copied to a private folder first. A URL that already says `immutable` is taken as it is."""
    target = SqliteTarget.parse(url)
    options = dict(target.params)
    if target.path == ":memory:" or "immutable" in options:
        return url, None
    options["mode"] = "ro"
    path = Path(target.path)
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    has_wal = wal.exists() and wal.stat().st_size > 0
    if os.access(path.parent, os.W_OK) or (has_wal and shm.exists()):
        return _with(target, options).url(), None
    if not has_wal:
        return _with(target, {**options, "immutable": "1"}).url(), None
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="itops-ledger-"))
    for source in (path, wal):
        shutil.copyfile(source, folder / source.name)
    log.info("reading a copy of %s and its -wal in %s (read-only media)", path, folder)
    copy = SqliteTarget(str(folder / path.name), target.params, target.timeout)
    return _with(copy, options).url(), folder


def _with(target: SqliteTarget, options: Mapping[str, str]) -> SqliteTarget:
    return SqliteTarget(target.path, tuple(options.items()), target.timeout)


def connect(url: str, synchronous: str = "normal") -> Any:
    """A DBAPI connection for a SQLAlchemy-style URL (SQLite in autocommit mode: we BEGIN).

    A read-only SQLite URL (`mode=ro`, `immutable=1`) gets no journal-mode change: it must not
    write, and needs no -wal/-shm files it cannot create."""
    if backend(url) == "sqlite":
        target = SqliteTarget.parse(url)
        if target.path == ":memory:":
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        else:
            if not target.read_only:
                Path(target.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                target.uri(),
                uri=True,
                timeout=target.timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            if not target.read_only:
                conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        conn.execute(f"PRAGMA busy_timeout={int(target.timeout * 1000)}")
        conn.execute("PRAGMA wal_autocheckpoint=10000")  # fewer, larger checkpoints: faster appends
        return conn
    import psycopg

    conninfo = "postgresql://" + url.partition("://")[2]
    # a server that does not answer at all fails the connection, not the run (10 s unless set)
    if "connect_timeout=" not in conninfo:
        return psycopg.connect(conninfo, connect_timeout=10)
    return psycopg.connect(conninfo)


def make_engine(
    url: str, synchronous: str = "normal", *, immediate: bool = False, scratch: bool = False
) -> Any:
    """A SQLAlchemy engine on a ledger database — the one place an engine on it is set up, for
    code that wants Core queries (KPIs, the projection, the schedule table).

    SQLite connections are the ledger's own (`connect`: WAL, busy timeout, the URL's query),
    and a connection opened with `execution_options(itops_write=True)` starts with BEGIN
    IMMEDIATE: upgrading a read transaction to a write fails at once with SQLITE_BUSY when
    another connection wrote. `immediate`: every transaction does (a table whose every
    transaction may write, as the schedule's claims). `scratch`: an in-memory database on one
    connection, the file at `url` attached as `ledger_db` (a read-only open of the projection:
    nothing is written to the file)."""
    from sqlalchemy import create_engine, event

    if backend(url) == "postgresql":
        return create_engine(url, pool_pre_ping=True)
    target = SqliteTarget.parse(url)
    if scratch:
        from sqlalchemy.pool import StaticPool

        def attached() -> Any:
            conn = connect(f"sqlite://?timeout={target.timeout:g}", synchronous)
            conn.execute("ATTACH DATABASE ? AS ledger_db", (target.uri(),))
            return conn

        engine = create_engine("sqlite://", creator=attached, poolclass=StaticPool)
    else:
        engine = create_engine(
            f"sqlite:///{target.path}" if target.path != ":memory:" else "sqlite://",
            creator=lambda: connect(url, synchronous),
        )

    @event.listens_for(engine, "connect")
    def _autocommit(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # autocommit driver: BEGIN is issued below

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        write = immediate or conn.get_execution_options().get("itops_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


@dataclass(frozen=True)
class _Attempt:
    """An insert sent whose commit outcome is unknown: its last seq and hash, and its result."""

    seq: int
    hash: str
    result: list[tuple[Any, ...] | None]


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


class Store:
    """The ledger's database. `read_only`: open it for reading only (no schema creation or
    upgrade, no journal-mode change, appends refused); a SQLite URL saying `mode=ro` or
    `immutable=1` is read-only too. `url` is then what every read opens (see `readable`)."""

    def __init__(self, url: str, *, synchronous: str = "normal", read_only: bool = False) -> None:
        self.url = url
        self.dialect = backend(url)
        self._copy: Path | None = None
        if self.dialect == "sqlite":
            read_only = read_only or SqliteTarget.parse(url).read_only
            if read_only:
                self.url, self._copy = readable(url)
        self.read_only = read_only
        self.synchronous = synchronous
        self.mark = placeholder(self.dialect)
        self._raw: Any = None
        self._cursor: Any = None
        self._head: tuple[int, str] | None = None
        self._row_sql = "(" + ", ".join([self.mark] * len(COLUMNS)) + ")"
        self._insert_sql = f"INSERT INTO ledger ({', '.join(COLUMNS)}) VALUES {self._row_sql}"
        try:
            self._connect()
            self._ensure_schema()
        except Exception as exc:
            self.close()
            if isinstance(exc, LedgerError):
                raise
            raise LedgerError(f"cannot open the ledger: {exc.__class__.__name__}: {exc}") from exc
        self._integrity_errors = self._driver_errors("IntegrityError")
        self._read_sql = ", ".join(COLUMNS) + (
            f", {DB_USER}" if self._has_db_user() else f", NULL AS {DB_USER}"
        )

    def _has_db_user(self) -> bool:
        """Whether the table has the db_user column (a ledger older than schema 3, opened by an
        account that may not upgrade it, has not: its rows read as NULL)."""
        try:
            self._cursor.execute(f"SELECT {DB_USER} FROM ledger WHERE 1 = 0")
            self._cursor.fetchall()
            return True
        except Exception:
            return False
        finally:
            self._end()

    def _connect(self) -> None:
        self._raw = connect(self.url, self.synchronous)
        self._cursor = self._raw.cursor()
        self._head = None

    def _driver_errors(self, name: str) -> tuple[type[Exception], ...]:
        if self.dialect == "sqlite":
            return (getattr(sqlite3, name),)
        import psycopg

        return (getattr(psycopg, name),)

    def _ensure_schema(self) -> None:
        """Create tables and guards once. Opening an existing ledger runs no DDL (so a read-only
        auditor account can open it), and concurrent first opens are serialised."""
        try:
            self._cursor.execute("SELECT value FROM ledger_meta WHERE key = 'schema'")
            found = self._cursor.fetchone()
            if self.dialect == "postgresql":
                self._raw.rollback()
            if found:
                if found[0] in UPGRADES and not self.read_only:
                    self._upgrade(found[0])
                return
        except Exception:
            if self.dialect == "postgresql":
                self._raw.rollback()
        if self.read_only:
            raise LedgerError(
                "no ledger to read there (opened read-only, nothing may be created)",
                hint="check the ledger URL in itops.toml (or ITOPS_LEDGER_URL)",
            )
        from sqlalchemy import insert, select, text

        from toolkit.ledger.tables import meta, metadata

        engine = make_engine(self.url, self.synchronous)
        try:
            with engine.connect().execution_options(itops_write=True) as conn, conn.begin():
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
                    # Another process may have created it while this one waited for the lock,
                    # and be appending already: its DDL again (ALTER TABLE takes an exclusive
                    # lock) would deadlock with those appends. Done is done.
                    made = conn.execute(text("SELECT to_regclass('ledger_meta')")).scalar()
                    if (
                        made is not None
                        and conn.execute(select(meta.c.value).where(meta.c.key == "schema")).first()
                    ):
                        return
                metadata.create_all(conn)
                for ddl in (
                    SQLITE_TRIGGERS if self.dialect == "sqlite" else PG_TRIGGERS + PG_DB_USER
                ):
                    conn.exec_driver_sql(ddl)
                if conn.execute(select(meta.c.value).where(meta.c.key == "schema")).first() is None:
                    conn.execute(
                        insert(meta),
                        [
                            {"key": "schema", "value": SCHEMA_VERSION},
                            {"key": "created", "value": _now()},
                        ],
                    )
        finally:
            engine.dispose()

    def _upgrade(self, version: str) -> None:
        """Bring an older ledger's indexes up to date; a read-only account keeps the old ones
        (everything still works, some ticket lookups are slower)."""
        try:
            if self.dialect == "sqlite":
                self._cursor.execute("BEGIN IMMEDIATE")
            while version in UPGRADES:
                for statement in UPGRADES[version]:
                    self._cursor.execute(statement)
                if version == "2" and self.dialect == "postgresql":
                    for statement in PG_DB_USER:
                        self._cursor.execute(statement)
                version = str(int(version) + 1)
            self._cursor.execute(
                f"UPDATE ledger_meta SET value = {self.mark} WHERE key = 'schema'", (version,)
            )
            self._raw.commit()
        except Exception as exc:
            self._raw.rollback()
            log.debug("ledger indexes not upgraded (read-only?): %s", exc)

    # -- append ------------------------------------------------------------------------------
    def append(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...] | None]:
        """Number, time, chain and insert rows; returns them as stored (COLUMNS order), None for
        a `once` row the ledger already held (see `_unrecorded`).

        Optimistic: the head (seq, hash) is cached, rows are numbered from it, and the primary
        key rejects the insert if another writer took that seq first; then the head is re-read
        and the rows renumbered. Rows never change once written, so a cached head that still
        names the last row is exact, and the chain stays linear whatever the writers.

        A lost connection (or SQLite's lock held past the busy timeout) is retried on a fresh
        connection after RETRY_DELAYS. When it was lost after the insert was sent, the commit
        may or may not have happened: before writing again the retry reads the seq it used, and
        if that row holds the very hash it sent, the rows are in and are not written twice.
        Not thread-safe: the Ledger serialises callers."""
        if self.read_only:
            raise LedgerError(
                "the ledger is open read-only: nothing can be recorded",
                hint="this command only reads, or the ledger URL says mode=ro / immutable=1",
            )
        delays = iter(RETRY_DELAYS)
        unsure: list[_Attempt] = []  # sent, and the connection died before the answer
        guarded = any(row.get("once") for row in rows)
        for _attempt in range(1000):
            sent: _Attempt | None = None
            try:
                if self._raw is None:
                    self._connect()
                if unsure and (landed := self._landed(unsure)) is not None:
                    return landed
                if guarded and self.dialect == "sqlite":
                    self._cursor.execute("BEGIN IMMEDIATE")  # one writer: check, then insert
                if self._head is None:
                    self._cursor.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")
                    found = self._cursor.fetchone()
                    self._head = (found[0], found[1]) if found else (0, GENESIS)
                # (after the head: on PostgreSQL every row below the head is committed by now,
                # so the check sees any row a writer of a lower seq added)
                new = self._unrecorded(rows) if guarded else [True] * len(rows)
                seq, prev = self._head
                at = _now()
                values: list[tuple[Any, ...]] = []
                result: list[tuple[Any, ...] | None] = []
                for row, wanted in zip(rows, new, strict=True):
                    if not wanted:
                        result.append(None)
                        continue
                    seq += 1
                    values.append(_chained(row, seq, at, prev))
                    prev = values[-1][-1]
                    result.append(values[-1])
                if not values:
                    self._end()
                    return result
                sent = _Attempt(seq, prev, result)
                self._insert(values, began=guarded)
                self._head = (seq, prev)
                return result
            except self._integrity_errors:
                self._rollback(keep=True)
                self._head = None  # another writer got there first: renumber from the new head
            except Exception as exc:
                self._rollback(keep=False)
                if not self._transient(exc):
                    raise LedgerError(
                        f"cannot write to the ledger: {exc.__class__.__name__}: {exc}"
                    ) from exc
                if sent is not None:
                    unsure.append(sent)
                delay = next(delays, None)
                if delay is None:
                    raise LedgerError(
                        f"cannot write to the ledger: {exc.__class__.__name__}: {exc} "
                        f"(gave up after {len(RETRY_DELAYS)} retries in {sum(RETRY_DELAYS):g} s)",
                        hint="check that the ledger database is up and reachable",
                    ) from exc
                log.warning("ledger write failed (%s), retrying in %g s", exc, delay)
                time.sleep(delay)
        raise LedgerError("cannot write to the ledger: too much contention from other writers")

    def append_all(
        self, batches: Callable[[], Iterable[list[dict[str, Any]]]]
    ) -> tuple[int, int] | None:
        """Append every row of `batches()` in ONE transaction — all of them or none (a ticket
        import); the first and last seq written, None if there were no rows.

        Rows are numbered, hashed and sent a batch at a time, so memory holds one batch. On
        SQLite the transaction holds the write lock from the start (BEGIN IMMEDIATE); on
        PostgreSQL a writer that takes a seq first makes the insert fail on the primary key,
        and the whole transaction is rolled back and made again from the new head (`batches` is
        called again). A failure rolls everything back; if the connection was lost while the
        COMMIT itself was on its way, the ledger is asked whether it landed (`_landed`)."""
        if self.read_only:
            raise LedgerError("the ledger is open read-only: nothing can be recorded")
        for _attempt in range(100):
            sent: _Attempt | None = None
            try:
                if self._raw is None:
                    self._connect()
                if self.dialect == "sqlite":
                    self._cursor.execute("BEGIN IMMEDIATE")
                self._cursor.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")
                found = self._cursor.fetchone()
                seq, prev = (found[0], found[1]) if found else (0, GENESIS)
                first, at = seq + 1, _now()
                for rows in batches():
                    values: list[tuple[Any, ...]] = []
                    for row in rows:
                        seq += 1
                        values.append(_chained(row, seq, at, prev))
                        prev = values[-1][-1]
                    if values:
                        self._insert(values, began=True, commit=False)
                if seq < first:
                    self._end()
                    return None
                sent = _Attempt(seq, prev, [])
                self._commit()
                self._head = (seq, prev)
                return first, seq
            except self._integrity_errors:
                self._rollback(keep=True)
                self._head = None  # another writer got there first: again, from the new head
            except Exception as exc:
                self._rollback(keep=False)
                if sent is not None:
                    try:
                        self._connect()
                        if self._landed([sent]) is not None:
                            return first, sent.seq
                    except Exception:
                        raise LedgerError(
                            f"cannot tell whether the ledger committed the write: {exc}",
                            hint="look at `itops log` before writing it again",
                        ) from exc
                raise LedgerError(
                    f"cannot write to the ledger: {exc.__class__.__name__}: {exc}; "
                    "nothing was written (one transaction)"
                ) from exc
        raise LedgerError("cannot write to the ledger: too much contention from other writers")

    def _commit(self) -> None:
        if self.dialect == "sqlite":
            self._cursor.execute("COMMIT")
        else:
            self._raw.commit()

    def _transient(self, exc: Exception) -> bool:
        """A failure a fresh connection may not have: the server went away or cut this session
        (PostgreSQL), or another writer held SQLite's lock past the busy timeout."""
        if self.dialect == "sqlite":
            text = str(exc)
            return isinstance(exc, sqlite3.OperationalError) and (
                "locked" in text or "busy" in text
            )
        import psycopg

        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))

    def _landed(self, unsure: list[_Attempt]) -> list[tuple[Any, ...] | None] | None:
        """The rows of an earlier attempt whose commit went through after all, if one did: its
        last row is in the ledger under the seq and hash it was sent with (a hash covers the
        row's time to the microsecond and the one before it: no other write can have it)."""
        mark = self.mark
        try:
            for attempt in unsure:
                self._cursor.execute(f"SELECT hash FROM ledger WHERE seq = {mark}", (attempt.seq,))
                found = self._cursor.fetchone()
                if found and found[0] == attempt.hash:
                    self._head = None
                    return attempt.result
            return None
        finally:
            self._end()

    def _unrecorded(self, rows: list[dict[str, Any]]) -> list[bool]:
        """Which rows to write: all but a `once` row whose kind the ledger already holds for its
        ticket (or that an earlier row of this batch brings). Runs inside the write transaction,
        so of several processes racing to record a new ticket's `ticket.opened`, one does."""
        keys = {(row["kind"], row["ticket"]) for row in rows if row.get("once")}
        kinds, tickets = sorted({k for k, _ in keys}), sorted({t for _, t in keys})
        marks = ", ".join
        self._cursor.execute(
            f"SELECT DISTINCT kind, ticket FROM ledger WHERE kind IN "
            f"({marks([self.mark] * len(kinds))}) AND ticket IN ({marks([self.mark] * len(tickets))})",
            [*kinds, *tickets],
        )
        seen = {(kind, ticket) for kind, ticket in self._cursor.fetchall()}
        new = []
        for row in rows:
            key = (row["kind"], row["ticket"])
            new.append(not row.get("once") or key not in seen)
            if row.get("once"):
                seen.add(key)
        return new

    def _insert(
        self, values: list[tuple[Any, ...]], *, began: bool = False, commit: bool = True
    ) -> None:
        cur = self._cursor
        if self.dialect == "sqlite":
            if began:  # BEGIN IMMEDIATE already
                cur.executemany(self._insert_sql, values)
                if commit:
                    cur.execute("COMMIT")
            elif len(values) == 1:
                cur.execute(self._insert_sql, values[0])  # autocommit: its own transaction
            else:
                cur.execute("BEGIN")
                cur.executemany(self._insert_sql, values)
                cur.execute("COMMIT")
        else:
            # Multi-row INSERTs: psycopg's executemany pipelines, and a lost race then
            # surfaces as a noisy aborted pipeline instead of one clean IntegrityError. (At most
            # PG_ROWS rows each: a statement takes at most 65,535 parameters.)
            head = self._insert_sql.partition(" VALUES ")[0] + " VALUES "
            for start in range(0, len(values), PG_ROWS):
                chunk = values[start : start + PG_ROWS]
                sql = head + ", ".join([self._row_sql] * len(chunk))
                cur.execute(sql, [v for row in chunk for v in row])
            if commit:
                self._raw.commit()

    def _end(self) -> None:
        """End a transaction that wrote nothing (SQLite's BEGIN IMMEDIATE; PostgreSQL's
        implicit one), releasing its lock or snapshot."""
        if self.dialect == "postgresql":
            self._raw.rollback()
        elif self._raw.in_transaction:
            self._cursor.execute("ROLLBACK")

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
            try:
                self._raw.close()
            finally:
                self._raw = self._cursor = None

    # -- read --------------------------------------------------------------------------------
    def select(self, filters: Mapping[str, Any]) -> Iterator[tuple[Any, ...]]:
        """Rows in seq order matching equality filters, kinds/action_ids lists, since/until."""
        where, params = self._where(filters)
        limit = f" LIMIT {int(filters['limit'])}" if filters.get("limit") is not None else ""
        order = " DESC" if filters.get("newest_first") else ""
        bounded = any(filters.get(k) is not None for k in BOUNDED)
        yield from self._stream(
            f"SELECT {self._read_sql} FROM ledger{where} ORDER BY seq{order}{limit}",
            params,
            bounded=bounded,
        )

    def tally(self, columns: tuple[str, ...], filters: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """(*columns, count) for each distinct value of `columns` among the matching rows."""
        unknown = set(columns) - set(READ_COLUMNS if self.db_users else COLUMNS)
        if unknown or not columns:
            raise ValueError(f"cannot group the ledger by {sorted(unknown) or 'nothing'}")
        where, params = self._where(filters)
        names = ", ".join(columns)
        return list(
            self._stream(f"SELECT {names}, count(*) FROM ledger{where} GROUP BY {names}", params)
        )

    def _where(self, filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
        where, params = [], []
        for key in FILTERS:
            if filters.get(key) is not None:
                where.append(f"{key} = {self.mark}")
                params.append(filters[key])
        for key, column in (
            ("kinds", "kind"),
            ("action_ids", "action_id"),
            ("hosts", "host"),
            ("seqs", "seq"),
        ):
            values = filters.get(key)
            if values is not None:
                values = list(values)
                where.append(
                    f"{column} IN ({', '.join([self.mark] * len(values))})" if values else "1 = 0"
                )
                params.extend(values)
        if filters.get("seq_from") is not None:  # a seq range (an evidence bundle's segment)
            where.append(f"seq >= {self.mark}")
            params.append(int(filters["seq_from"]))
        if filters.get("seq_to") is not None:
            where.append(f"seq <= {self.mark}")
            params.append(int(filters["seq_to"]))
        if filters.get("not_kinds"):  # (kinds left out: the web search's page views)
            where.append(f"kind NOT IN ({', '.join([self.mark] * len(filters['not_kinds']))})")
            params.extend(filters["not_kinds"])
        if filters.get("changes_only"):  # what changed or may have (see CHANGES_ONLY)
            where.append(CHANGES_ONLY)
        if filters.get("since"):
            where.append(f"at >= {self.mark}")
            params.append(filters["since"])
        if filters.get("until"):
            where.append(f"at < {self.mark}")
            params.append(filters["until"])
        return (" WHERE " + " AND ".join(where) if where else ""), params

    def head(self) -> tuple[Any, ...] | None:
        sql = f"SELECT {self._read_sql} FROM ledger ORDER BY seq DESC LIMIT 1"
        return next(self._stream(sql, []), None)

    def _stream(
        self, sql: str, params: list[Any], *, bounded: bool = False
    ) -> Iterator[tuple[Any, ...]]:
        """Rows from a separate read connection (the writer's belongs to appends).

        PostgreSQL: through a server-side cursor, so a million rows stream in batches — unless
        the result is `bounded` (a LIMIT, or records named by seq or action id). A cursor's
        query is planned to return its first 10% fast (`cursor_tuple_fraction`), so a page of
        the newest 51 records by a rare operator was planned as a backward walk of the whole
        primary key (350 ms on a million records whose statistics are not yet gathered) instead
        of the operator index (0.1 ms); a plain query is planned for the rows it asks for."""
        conn = connect(self.url, self.synchronous)
        try:
            server_side = self.dialect == "postgresql" and not bounded
            cur = conn.cursor(name="itops_read") if server_side else conn.cursor()
            cur.execute(sql, params)
            while batch := cur.fetchmany(5000):
                for row in batch:
                    yield tuple(row)
            cur.close()
        finally:
            conn.close()

    # -- verify ------------------------------------------------------------------------------
    def verify_chain(self) -> RangeCheck:
        """Recompute every hash and link; seq ranges in parallel processes for large ledgers."""
        count, low, high = next(self._stream("SELECT count(*), min(seq), max(seq) FROM ledger", []))
        if not count:
            return RangeCheck(0)
        if low < 1:  # a row slipped in below the chain, where no range check would look
            return RangeCheck(0, low, f"record {low} is outside the chain (it starts at 1)")
        workers = min(os.cpu_count() or 1, 8) if count >= PARALLEL_VERIFY_MIN else 1
        step = -(-high // workers)
        lows = list(range(1, high + 1, step))
        highs = [min(lo + step - 1, high) for lo in lows]
        if workers == 1:
            parts = [check_range(self.url, 1, high)]
        else:
            from concurrent.futures import ProcessPoolExecutor  # only audit verify pays for it
            from multiprocessing import get_context

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

    def guards_missing(self) -> list[str]:
        """The append-only triggers that are gone, disabled or changed: named, for `verify`
        (without them anyone with write access edits rows in place, and only the chain shows it)."""
        if self.dialect == "sqlite":
            expected = {
                ddl.split()[5]: ddl.replace(" IF NOT EXISTS", "") for ddl in SQLITE_TRIGGERS
            }
            found = dict(
                self._stream(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                    "AND tbl_name = 'ledger'",
                    [],
                )
            )
            return [
                name
                for name, ddl in expected.items()
                if " ".join((found.get(name) or "").split()) != ddl
            ]
        rows = self._stream(
            "SELECT t.tgname, t.tgenabled, pg_get_triggerdef(t.oid), p.prosrc FROM pg_trigger t "
            "JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE t.tgrelid = 'ledger'::regclass AND NOT t.tgisinternal",
            [],
        )
        body = PG_TRIGGERS[0].split("$$")[1].strip()
        shapes = {"ledger_no_change": "BEFORE DELETE OR UPDATE", "ledger_no_truncate": "TRUNCATE"}
        good = {
            str(name)
            for name, enabled, definition, source in rows
            if enabled in ("O", "A")  # fires (D: disabled; R: replica only)
            and shapes.get(str(name), "\0") in definition
            and " ".join(str(source).split()) == body
        }
        return [name for name in shapes if name not in good]

    @property
    def db_users(self) -> bool:
        """Whether records carry the database's word on who wrote them (PostgreSQL, schema 3)."""
        return self.dialect == "postgresql" and "NULL AS" not in self._read_sql

    def db_user_problem(self) -> str | None:
        """PostgreSQL: why records' database users may not be the database's word (the trigger
        that fills them is missing or disabled); None when it is in place, or on SQLite, or on
        a ledger older than schema 3 (its rows have no database user)."""
        if not self.db_users:
            return None
        sql = (
            "SELECT t.tgenabled, pg_get_expr(d.adbin, d.adrelid) FROM pg_class c "
            "LEFT JOIN pg_trigger t ON t.tgrelid = c.oid AND t.tgname = 'ledger_db_user' "
            "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'db_user' "
            "LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum "
            "WHERE c.oid = 'ledger'::regclass"
        )
        enabled, default = next(self._stream(sql, []), (None, None))
        if enabled is None:
            return "the trigger that fills each record's database user (ledger_db_user) is missing"
        if enabled == "D":
            return "the trigger that fills each record's database user (ledger_db_user) is disabled"
        if default is None or "session_user" not in str(default).lower():
            return "the db_user column's default is not session_user"
        return None

    def close(self) -> None:
        self._rollback(keep=False)
        if self._copy is not None:
            import shutil

            shutil.rmtree(self._copy, ignore_errors=True)
            self._copy = None


def _chained(row: dict[str, Any], seq: int, at: str, prev: str) -> tuple[Any, ...]:
    """A row numbered, timed and linked to `prev`: its values in COLUMNS order (hash last)."""
    row["seq"], row["at"], row["prev_hash"] = seq, at, prev
    fields = [row[f] for f in FIELDS]
    fields.append(record_hash(fields))
    return tuple(fields)


def check_range(url: str, low: int, high: int) -> RangeCheck:
    """Verify rows low..high: contiguous seq, each row's hash, each row's link to the one before.

    The link of row `low` to row `low - 1` is left to the caller (it reads `first_prev`)."""
    import hashlib

    dialect = backend(url)
    sha = hashlib.sha256
    count, first_prev, expected = 0, None, low
    prev: str | None = None
    begun: dict[str, None] = {}
    finished: list[str] = []
    image_sql = preimage_sql(dialect)
    mark = placeholder(dialect)
    if dialect == "postgresql":
        image_sql = image_sql.replace("%", "%%")  # psycopg reads every % as a placeholder
    query = (
        f"SELECT seq, prev_hash, hash, kind, action_id, {image_sql} FROM ledger "
        f"WHERE seq BETWEEN {mark} AND {mark} ORDER BY seq"
    )
    conn = connect(url)
    try:
        cur = conn.cursor(name="itops_verify") if dialect == "postgresql" else conn.cursor()
        cur.execute(query, (low, high))
        while batch := cur.fetchmany(50_000):
            for seq, prev_hash, stored, kind, action_id, image in batch:
                problem = None
                if seq != expected:
                    what = "missing" if seq > expected else "out of order"
                    problem = (expected, f"record {expected} is {what}")
                elif count and prev_hash != prev:
                    problem = (seq, f"record {seq} does not link to record {seq - 1}")
                else:
                    if type(image) is not bytes:  # (PostgreSQL: text, which holds no NUL)
                        image = image.encode()
                    if b"\x00" in image:
                        problem = (seq, f"record {seq} was altered (it holds a NUL character)")
                    elif sha(image).hexdigest() != stored:
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
        conn.close()
    if expected != high + 1:
        return RangeCheck(
            count, expected, f"record {expected} is missing", first_prev, expected - 1, prev
        )
    return RangeCheck(count, None, None, first_prev, high, prev, tuple(begun), tuple(finished))

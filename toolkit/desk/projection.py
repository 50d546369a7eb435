"""A derived, disposable projection of the ticket log for fast KPIs: one row per ticket and action.

The ledger stays the only truth. These tables (`kpi_tickets`, `kpi_facts`, `kpi_hosts`,
`kpi_actions`, `kpi_state`) live beside it in the same database and hold nothing the ledger does
not: each ticket row is `tickets.summarize()` of that ticket's ledger records. They are brought up
to date on every read by a seq watermark: records after it are read, the tickets they touch are
replayed from the ledger (their full history, through the ticket index), and their rows replaced,
in one transaction with the new watermark. A change of the SLA policy (its fingerprint) or of this
module's format drops the tables' contents and rebuilds them from seq 1. Deleting the tables is
always safe. An import primes it (`Projection.prime`) instead of reading back what it just wrote.

Why a projection: replaying 1,000,000 ledger records takes ~40 s (read, decode, business-time
clocks); the KPI queries over the ~170,000 ticket rows they make take about a second.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from toolkit.desk.bulk import paused_gc
from toolkit.desk.sla import Policy
from toolkit.desk.ticketio import Checked, Parsed
from toolkit.desk.tickets import (
    ActionFact,
    Intervals,
    TicketEvent,
    TicketSummary,
    add_action,
    event_from_record,
    summarize,
)

KPI_LOCK_KEY = 0x17_0B_55_C4_F  # serialises projection writers on PostgreSQL
VERSION = "7"  # 6: skipped runs are no first response; 7: the ticket's kind
CHUNK = 500

metadata = MetaData()

kpi_tickets = Table(
    "kpi_tickets",
    metadata,
    Column("ticket", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("category", String(64), nullable=False),
    Column("priority", String(8), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("requester", String(255)),
    Column("channel", String(32)),
    Column("hosts", Text),
    Column("assignee", String(128)),
    Column("tier", String(8)),
    Column("summary", Text),
    Column("always", Integer, nullable=False),
    Column("response_target", Float, nullable=False),
    Column("resolution_target", Float, nullable=False),
    Column("response_at", Float),
    Column("response_due", Float, nullable=False),
    Column("response_minutes", Float),
    Column("resolved_at", Float),
    Column("resolution_minutes", Float),
    Column("intervals", Text, nullable=False),
    Column("resolved_spans", Text, nullable=False),
    Column("escalations", Integer, nullable=False),
    Column("reopens", Integer, nullable=False),
    Column("first_contact", Integer, nullable=False),
    Column("automated", Integer, nullable=False),
    Column("survey_score", Integer),
    Column("survey_at", Float),
    Column("complaints", Text),
    Column("confirmed", Integer, nullable=False),
    Column("closed_at", Float),
    Column("last_update_at", Float),
    Column("update_due", Float),
    Column("anomalies", Text),
    Column("closed_seconds", Float, nullable=False),
    Column("running_since", Float),
    Column("settled_at", Float, nullable=False),
)

# The narrow copy the KPI queries scan: a row a third the size of kpi_tickets' scans three times
# faster. No time indexes: KPI queries cover whole periods, where a scan beats an index.
_FACT_COLUMNS = [
    "ticket",
    "category",
    "priority",
    "kind",
    "assignee",
    "tier",
    "requester",
    "hosts",
    "opened_at",
    "response_at",
    "response_due",
    "response_minutes",
    "resolved_at",
    "resolution_minutes",
    "resolution_target",
    "escalations",
    "reopens",
    "first_contact",
    "automated",
    "survey_score",
    "survey_at",
    "complaints",
]
kpi_facts = Table(
    "kpi_facts",
    metadata,
    # kpi_tickets' columns of these names, as declared there
    *(
        Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
        for c in (kpi_tickets.c[name] for name in _FACT_COLUMNS)
    ),
    # the opening time of the first later ticket of the same category on one of its hosts or
    # for its requester, after its final resolution (a recurrence if within recurrence_days)
    Column("recurs_at", Float),
)

kpi_hosts = Table(
    "kpi_hosts",
    metadata,
    Column("ticket", String(64), nullable=False),
    Column("host", String(255), nullable=False),
    Index("ix_kpi_hosts_ticket", "ticket"),
)

kpi_actions = Table(
    "kpi_actions",
    metadata,
    Column("action_id", String(32), primary_key=True),
    Column("at", Float, nullable=False),
    Column("operator", String(128), nullable=False),
    Column("ticket", String(64)),
    Column("host", String(255)),
    Column("task", String(128)),
    Column("outcome", String(32)),
    Column("mode", String(16)),
    Column("platform", String(32)),
    Column("finished_at", Float),
)

kpi_state = Table(
    "kpi_state",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("value", Text, nullable=False),
)

_TICKET_COLUMNS = [c.name for c in kpi_tickets.columns]  # TicketSummary's fields, in order
_FACT_INDEX = [_TICKET_COLUMNS.index(c) for c in _FACT_COLUMNS]
SUMMARY_SQL = ", ".join(_TICKET_COLUMNS)
_ACTION_COLUMNS = [c.name for c in kpi_actions.columns]
_SEP = "\x1f"


_FIELD = {name: i for i, name in enumerate(TicketSummary._fields)}
_HOSTS = _FIELD["hosts"]
_FLAGS = [_FIELD[n] for n in ("always", "first_contact", "automated", "confirmed")]
_INTERVALS, _SPANS = _FIELD["intervals"], _FIELD["resolved_spans"]
_COMPLAINTS, _ANOMALIES = _FIELD["complaints"], _FIELD["anomalies"]


def _row(s: TicketSummary) -> tuple[Any, ...]:
    """A summary as a projection row (TicketSummary's fields are the table's columns, in order)."""
    row: list[Any] = list(s)
    row[_HOSTS] = _SEP.join(s.hosts) if s.hosts else None
    for k in _FLAGS:
        row[k] = int(bool(row[k]))
    row[_INTERVALS] = json.dumps(list(s.intervals), separators=(",", ":"))
    row[_SPANS] = json.dumps(list(s.resolved_spans), separators=(",", ":"))
    row[_COMPLAINTS] = json.dumps(list(s.complaints)) if s.complaints else None
    row[_ANOMALIES] = json.dumps(list(s.anomalies)) if s.anomalies else None
    return tuple(row)


_RECUR_SQL = "ticket, category, requester, hosts, opened_at, resolved_at, recurs_at"


def recurrence_changes(rows: Iterable[Sequence[Any]]) -> list[tuple[float | None, str]]:
    """(recurs_at, ticket) for every row whose recurs_at is not what the rows say it must be.

    rows: (ticket, category, requester, hosts, opened_at, resolved_at, recurs_at)."""
    rows = list(rows)
    index: dict[tuple[str, str, str], list[float]] = {}
    for _, category, requester, hosts, opened, _r, _x in rows:
        for host in hosts.split(_SEP) if hosts else ():
            index.setdefault((category, "h", host), []).append(opened)
        if requester:
            index.setdefault((category, "r", requester), []).append(opened)
    for times in index.values():
        times.sort()
    changes = []
    for ticket, category, requester, hosts, _, resolved, old in rows:
        new = None
        if resolved is not None:
            keys = [(category, "h", h) for h in hosts.split(_SEP)] if hosts else []
            if requester:
                keys.append((category, "r", requester))
            for key in keys:
                times = index[key]
                i = bisect_right(times, resolved)
                if i < len(times) and (new is None or times[i] < new):
                    new = times[i]
        if new != old:
            changes.append((new, ticket))
    return changes


def _summary(r: Sequence[Any]) -> TicketSummary:
    """A projection row (columns in table order) as a summary; clocks decoded lazily."""
    return TicketSummary(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        r[7],
        tuple(r[8].split(_SEP)) if r[8] else (),
        r[9],
        r[10],
        r[11],
        bool(r[12]),
        r[13],
        r[14],
        r[15],
        r[16],
        r[17],
        r[18],
        r[19],
        Intervals(r[20]),
        Intervals(r[21]) if r[21] != "[]" else (),
        r[22],
        r[23],
        bool(r[24]),
        bool(r[25]),
        r[26],
        r[27],
        tuple(json.loads(r[28])) if r[28] else (),
        bool(r[29]),
        r[30],
        r[31],
        r[32],
        tuple(json.loads(r[33])) if r[33] else (),
        r[34],
        r[35],
        r[36],
    )


_RELEVANT = "(kind LIKE 'ticket.%' OR kind IN ('action.begin', 'action.finish'))"
_READ = "SELECT seq, at, kind, operator, ticket, host, task, action_id, outcome, data FROM ledger"


class _Raced(Exception):
    """Another process refreshed the projection while this one was computing."""


class Projection:
    """The KPI projection of one ledger database (see the module docstring)."""

    def __init__(self, url: str, policy: Policy, *, read_only: bool = False) -> None:
        from toolkit.ledger.store import make_engine, placeholder

        self.url = url
        self.policy = policy
        scratch = read_only and url.startswith("sqlite")
        self.scratch = scratch  # in memory: one connection, lost when the engine is disposed
        self.engine: Engine = make_engine(url, scratch=scratch)
        self.dialect = self.engine.dialect.name
        self.mark = placeholder(self.dialect)  # the driver's parameter marker
        if self.dialect == "sqlite":
            # KPI queries scan kpi_facts several times: keep it in SQLite's own page cache
            # (the ledger's connections keep the default size; these are the projection's own)
            event.listen(self.engine, "connect", _large_cache)
        with self.engine.begin() as conn:
            metadata.create_all(conn)
            version = conn.execute(
                select(kpi_state.c.value).where(kpi_state.c.key == "version")
            ).scalar()
            if version is not None and version != VERSION:  # an older format: start afresh
                metadata.drop_all(conn)
                metadata.create_all(conn)
            if scratch:
                _copy_stored(conn)

    def close(self) -> None:
        self.engine.dispose()

    # -- keeping up with the ledger ----------------------------------------------------------
    def refresh(self) -> int:
        """Bring the projection up to the ledger's head; returns the records read."""
        for _attempt in range(5):
            try:
                with paused_gc():
                    return self._refresh()
            except (_Raced, IntegrityError, OperationalError):
                continue  # another process refreshed at the same moment: read its result
        with paused_gc():
            return self._refresh()

    def rebuild(self) -> int:
        with self.engine.begin() as conn:
            conn.execute(delete(kpi_state))
        return self.refresh()

    def _refresh(self) -> int:
        # Read and compute in a read transaction — WAL lets the ledger's writers go on; a cold
        # rebuild replays every record, tens of seconds at 1M — then write the result in a short
        # BEGIN IMMEDIATE transaction, if no other process refreshed in between.
        with self.engine.connect() as conn, conn.begin():
            state = dict(conn.execute(select(kpi_state.c.key, kpi_state.c.value)).all())
            head = conn.execute(text("SELECT max(seq) FROM ledger")).scalar() or 0
            fresh = (
                state.get("version") == VERSION and state.get("policy") == self.policy.fingerprint
            )
            mark = int(state.get("watermark", 0)) if fresh else 0
            if head <= mark and fresh:
                return 0
            events: dict[str, list[TicketEvent]] = {}
            actions: dict[str, ActionFact] = {}
            ticket_of: dict[str, str] = {}
            count = 0
            for row in self._stream(
                conn,
                f"{_READ} WHERE seq > {int(mark)} AND {_RELEVANT} "
                f"AND seq <= {int(head)} ORDER BY seq",
            ):
                count += 1
                self._absorb(row, events, actions, ticket_of)
            touched = set(events) | {t for t in ticket_of.values()}
            if mark:
                self._complete_actions(conn, actions)
                self._earlier_history(conn, touched, mark, events, actions, ticket_of)
        per_ticket: dict[str, list[ActionFact]] = {}
        for action_id, fact in actions.items():
            t = ticket_of.get(action_id)
            if t is not None:
                per_ticket.setdefault(t, []).append(fact)
        rows = []
        for ticket in touched:
            summary = summarize(
                ticket, events.get(ticket, []), per_ticket.get(ticket, []), self.policy
            )
            if summary is not None:
                rows.append(_row(summary))
        new_actions = [a for a in actions.values() if a.at is not None]
        action_rows = [
            (
                a.action_id,
                a.at,
                a.operator,
                a.ticket or ticket_of.get(a.action_id),
                a.host,
                a.task,
                a.outcome,
                a.mode,
                a.platform,
                a.finished_at,
            )
            for a in new_actions
        ]
        with self._writing() as conn:
            now = dict(conn.execute(select(kpi_state.c.key, kpi_state.c.value)).all())
            if now != state:
                raise _Raced  # another process refreshed meanwhile: start again from its result
            if not fresh:
                for table in (kpi_tickets, kpi_facts, kpi_hosts, kpi_actions):
                    conn.execute(delete(table))
            else:
                touched_list = sorted(touched)
                for i in range(0, len(touched_list), CHUNK):
                    chunk = touched_list[i : i + CHUNK]
                    conn.execute(delete(kpi_tickets).where(kpi_tickets.c.ticket.in_(chunk)))
                    conn.execute(delete(kpi_facts).where(kpi_facts.c.ticket.in_(chunk)))
                    conn.execute(delete(kpi_hosts).where(kpi_hosts.c.ticket.in_(chunk)))
                ids = [a.action_id for a in new_actions]
                for i in range(0, len(ids), CHUNK):
                    conn.execute(
                        delete(kpi_actions).where(kpi_actions.c.action_id.in_(ids[i : i + CHUNK]))
                    )
            self._insert_tickets(conn, rows)
            if touched:
                self._recurrence(conn)
            self._insert_many(conn, "kpi_actions", _ACTION_COLUMNS, action_rows)
            conn.execute(delete(kpi_state))
            conn.execute(
                insert(kpi_state),
                [
                    {"key": "version", "value": VERSION},
                    {"key": "policy", "value": self.policy.fingerprint},
                    {"key": "watermark", "value": str(head)},
                ],
            )
            return count

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Any]:
        """A write transaction, one projection writer at a time: SQLite's BEGIN IMMEDIATE
        (itops_write); on PostgreSQL a transaction-scoped advisory lock, so a second `itops kpi`
        waits, sees the first one's result and starts again from it instead of colliding."""
        with self.engine.connect().execution_options(itops_write=True) as conn, conn.begin():
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": KPI_LOCK_KEY})
            yield conn

    def _insert_tickets(
        self,
        conn: Any,
        rows: Sequence[tuple[Any, ...]],
        recurs: Mapping[str, float | None] | None = None,
    ) -> None:
        self._insert_many(conn, "kpi_tickets", _TICKET_COLUMNS, rows)
        get = (recurs or {}).get
        facts = [(*(r[i] for i in _FACT_INDEX), get(r[0])) for r in rows]
        self._insert_many(conn, "kpi_facts", [*_FACT_COLUMNS, "recurs_at"], facts)
        hosts = [(r[0], h) for r in rows if r[_HOSTS] for h in r[_HOSTS].split(_SEP)]
        self._insert_many(conn, "kpi_hosts", ["ticket", "host"], hosts)

    def _recurrence(self, conn: Any) -> None:
        """Recompute every ticket's `recurs_at` (one pass; only the changed rows are written)."""
        rows = list(self._stream(conn, f"SELECT {_RECUR_SQL} FROM kpi_facts"))
        self._update_recurrence(conn, recurrence_changes(rows))

    def _update_recurrence(self, conn: Any, changes: list[tuple[float | None, str]]) -> None:
        if changes:
            ph = self.mark
            raw: Any = conn.connection.dbapi_connection
            cursor = raw.cursor()
            try:
                cursor.executemany(
                    f"UPDATE kpi_facts SET recurs_at = {ph} WHERE ticket = {ph}", changes
                )
            finally:
                cursor.close()

    def _insert_many(
        self, conn: Any, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
    ) -> None:
        """Plain DBAPI executemany inside the transaction (SQLAlchemy's per-row cost is ~5×)."""
        if not rows:
            return
        ph = self.mark
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([ph] * len(columns))})"
        )
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            for i in range(0, len(rows), 5000):
                cursor.executemany(sql, rows[i : i + 5000])
        finally:
            cursor.close()

    def _stream(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """Rows of a plain SQL query, fetched in large batches straight from the DBAPI cursor."""
        raw: Any = conn.connection.dbapi_connection
        cursor = raw.cursor()
        try:
            if params:
                cursor.execute(sql, tuple(params))
            else:
                cursor.execute(sql)
            while batch := cursor.fetchmany(20000):
                yield from batch
        finally:
            cursor.close()

    @staticmethod
    def _absorb(
        row: tuple[Any, ...],
        events: dict[str, list[TicketEvent]],
        actions: dict[str, ActionFact],
        ticket_of: dict[str, str],
    ) -> None:
        seq, at, kind, operator, ticket, host, task, action_id, outcome, data = row
        info = json.loads(data) if data else {}
        if kind.startswith("ticket."):
            if ticket:
                events.setdefault(ticket, []).append(
                    event_from_record(seq, at, kind, operator, ticket, info)
                )
        elif action_id:
            add_action(actions, kind, action_id, at, operator, host, task, outcome, info, ticket)
            if ticket:
                ticket_of[action_id] = ticket

    def _complete_actions(self, conn: Any, actions: dict[str, ActionFact]) -> None:
        """A finish whose begin was read before the watermark: take the begin's facts from the table."""
        missing = [
            a.action_id for a in actions.values() if a.mode is None and a.outcome is not None
        ]
        for i in range(0, len(missing), CHUNK):
            query = select(kpi_actions).where(kpi_actions.c.action_id.in_(missing[i : i + CHUNK]))
            for old in conn.execute(query).mappings():
                new = actions[old["action_id"]]
                actions[new.action_id] = replace(
                    new,
                    at=old["at"],
                    operator=old["operator"],
                    mode=old["mode"],
                    platform=old["platform"],
                    ticket=new.ticket or old["ticket"],
                )

    def _earlier_history(
        self,
        conn: Any,
        touched: set[str],
        mark: int,
        events: dict[str, list[TicketEvent]],
        actions: dict[str, ActionFact],
        ticket_of: dict[str, str],
    ) -> None:
        """Touched tickets are replayed whole: read their records up to the watermark."""
        names = sorted(touched)
        ph = self.mark
        for i in range(0, len(names), CHUNK):
            chunk = names[i : i + CHUNK]
            relevant = _RELEVANT if ph == "?" else _RELEVANT.replace("%", "%%")
            sql = (
                f"{_READ} WHERE ticket IN ({', '.join([ph] * len(chunk))}) AND seq <= {int(mark)} "
                f"AND {relevant} ORDER BY seq"
            )
            earlier_events: dict[str, list[TicketEvent]] = {}
            earlier_actions: dict[str, ActionFact] = {}
            for row in self._stream(conn, sql, chunk):
                self._absorb(row, earlier_events, earlier_actions, ticket_of)
            for t, evs in earlier_events.items():
                events[t] = [*evs, *events.get(t, [])]
            for action_id, fact in earlier_actions.items():
                newer = actions.get(action_id)
                if newer is None:
                    actions[action_id] = fact
                elif newer.mode is None:
                    actions[action_id] = replace(
                        newer,
                        at=fact.at,
                        operator=fact.operator,
                        mode=fact.mode,
                        platform=fact.platform,
                        ticket=newer.ticket or fact.ticket,
                    )

    # -- priming from an import ------------------------------------------------------------------
    def prime(self, checked: Checked) -> Callable[[int | None, int | None], None] | None:
        """Replay a checked import in a second process while the ledger appends it.

        Only when that is exactly what a refresh would do: the projection is current at the
        ledger's head and every ticket in the file is new. The worker replays the tickets and
        works out recurrences while the ledger appends; told the seqs written, it checks that
        they were the only records written meanwhile and stores its rows with the new
        watermark. In every other case the next refresh reads the records from the ledger."""
        if not checked.all_new:
            return None
        with self.engine.connect() as conn:
            state = dict(conn.execute(select(kpi_state.c.key, kpi_state.c.value)).all())
            head = conn.execute(text("SELECT max(seq) FROM ledger")).scalar() or 0
        if (
            state.get("version") != VERSION
            or state.get("policy") != self.policy.fingerprint
            or int(state.get("watermark", -1)) != head
        ):
            return None
        try:
            context = multiprocessing.get_context("fork")
        except ValueError:
            return None
        _PRIME[:] = [checked.events, self.url, self.policy, head]
        self.engine.dispose()  # no pooled connection may cross the fork
        go_receive, go_send = context.Pipe(duplex=False)
        worker = context.Process(target=_prime_worker, args=(go_receive,), daemon=True)
        worker.start()
        go_receive.close()
        _PRIME.clear()

        def finish(first: int | None, last: int | None) -> None:
            try:
                go_send.send((first, last))  # (None, None): the import failed
            except OSError:
                pass  # the worker died: the next refresh reads the records from the ledger
            finally:
                go_send.close()
                worker.join()

        return finish

    def _store_primed(
        self,
        head: int,
        first: int,
        last: int,
        written: int,
        rows: list[tuple[Any, ...]],
        recurs: Mapping[str, float | None],
        changes: list[tuple[float | None, str]],
    ) -> bool:
        """Store an import's replayed rows with the watermark `last`, if nothing else was written
        (the import's `written` records are all of head+1..last: another process's record
        between two of its batches would otherwise never reach the KPI tables)."""
        with self._writing() as conn:
            mark = conn.execute(select(kpi_state.c.value).where(kpi_state.c.key == "watermark"))
            now_head = conn.execute(text("SELECT max(seq) FROM ledger")).scalar() or 0
            if (
                first != head + 1
                or now_head != last
                or last - first + 1 != written
                or int(mark.scalar() or -1) != head
            ):
                return False  # someone else wrote meanwhile: leave it to refresh()
            self._insert_tickets(conn, rows, recurs)
            self._update_recurrence(conn, changes)
            conn.execute(delete(kpi_state).where(kpi_state.c.key == "watermark"))
            conn.execute(insert(kpi_state), [{"key": "watermark", "value": str(last)}])
            return True

    # -- reading -------------------------------------------------------------------------------
    def tickets(self, **where: Any) -> list[TicketSummary]:
        """Every ticket row (after a refresh), optionally filtered by equal columns."""
        ph = self.mark
        conditions = [(k, v) for k, v in where.items() if v is not None]
        for key, _ in conditions:
            if key not in _TICKET_COLUMNS:
                raise ValueError(f"no column {key}")
        sql = f"SELECT {SUMMARY_SQL} FROM kpi_tickets"
        if conditions:
            sql += " WHERE " + " AND ".join(f"{k} = {ph}" for k, _ in conditions)
        return [_summary(r) for r in self.fetch(sql, [v for _, v in conditions])]

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """All rows of a plain SQL query (parameters marked `self.mark`), straight from the DBAPI
        cursor (SQLAlchemy's per-row cost is ~5×)."""
        with self.engine.connect() as conn:
            raw: Any = conn.connection.dbapi_connection
            cursor = raw.cursor()
            try:
                cursor.execute(sql, tuple(params))
                return list(cursor.fetchall())
            finally:
                cursor.close()

    def anomalies(self) -> list[tuple[str, str]]:
        """(ticket, note) for each event its replay skipped or corrected (`summarize`): an odd
        event, or a time outside the clocks' range; the CLI warns of them."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(kpi_tickets.c.ticket, kpi_tickets.c.anomalies)
                .where(kpi_tickets.c.anomalies.is_not(None))
                .order_by(kpi_tickets.c.ticket)
            ).all()
        return [(ticket, note) for ticket, notes in rows for note in json.loads(notes)]

    def actions(self) -> list[ActionFact]:
        cols = kpi_actions.c
        query = select(
            cols.action_id,
            cols.at,
            cols.operator,
            cols.host,
            cols.task,
            cols.outcome,
            cols.mode,
            cols.platform,
            cols.finished_at,
            cols.ticket,
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            ActionFact(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]) for r in rows
        ]


def _large_cache(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA cache_size=-131072")  # 128 MB
    cursor.close()


_PRIME: list[Any] = []  # what the forked worker needs, handed over by memory, not by pickle


def _prime_worker(go: Any) -> None:
    """The forked half of `Projection.prime` (see there)."""
    events: list[Parsed]
    events, url, policy, head = _PRIME
    per_ticket: dict[str, list[TicketEvent]] = {}
    for i, e in enumerate(events):
        per_ticket.setdefault(e.ticket, []).append(
            TicketEvent(e.ticket, e.event, e.at, "", e.fields, i + 1)
        )
    rows = []
    for ticket, evs in per_ticket.items():
        summary = summarize(ticket, evs, [], policy)
        if summary is not None:
            rows.append(_row(summary))
    projection = Projection(url, policy)
    try:
        with projection.engine.connect() as conn:
            existing = list(projection._stream(conn, f"SELECT {_RECUR_SQL} FROM kpi_facts"))
        index = {c: i for i, c in enumerate(_TICKET_COLUMNS)}
        fresh = [
            (r[0], r[index["category"]], r[index["requester"]], r[index["hosts"]],
             r[index["opened_at"]], r[index["resolved_at"]], None)
            for r in rows
        ]  # fmt: skip
        new_tickets = {r[0] for r in rows}
        recurs: dict[str, float | None] = {}
        changes = []
        for value, ticket in recurrence_changes([*existing, *fresh]):
            if ticket in new_tickets:
                recurs[ticket] = value
            else:
                changes.append((value, ticket))
        try:
            first, last = go.recv()  # the ledger has appended the file: (first, last)
        except EOFError:
            return
        if first is None or last is None:
            return  # the import failed: nothing to store
        projection._store_primed(head, first, last, len(events), rows, recurs, changes)
    finally:
        projection.close()


def _copy_stored(conn: Any) -> None:
    """Start a scratch projection from the one stored beside the ledger, if it has this format:
    then only the records after its watermark are replayed (`refresh` checks the rest)."""
    stored = conn.exec_driver_sql(
        "SELECT count(*) FROM ledger_db.sqlite_master WHERE type = 'table' AND name = 'kpi_state'"
    ).scalar()
    if not stored:
        return
    version = conn.exec_driver_sql(
        "SELECT value FROM ledger_db.kpi_state WHERE key = 'version'"
    ).scalar()
    if version != VERSION:
        return
    for table in metadata.sorted_tables:
        conn.exec_driver_sql(f"INSERT INTO main.{table.name} SELECT * FROM ledger_db.{table.name}")


def open_projection(
    url: str, policy: Policy, *, refresh: bool = True, read_only: bool = False
) -> Projection:
    """The projection of the ledger at `url`. `read_only` (SQLite): computed in memory, never
    written to the database. On PostgreSQL the stored projection serves every command, so the
    account must be allowed to bring it up to date."""
    projection = Projection(url, policy, read_only=read_only)
    if refresh:
        projection.refresh()
    return projection

"""The ticket log: an append-only, hash-chained ledger of every action and ticket event.

Each record carries the SHA-256 of its own fields and of the previous record's hash, so an edited,
deleted, reordered or inserted row breaks the chain at that point and `verify()` names it (a row
slipped in below record 1 too). Appends are optimistic: rows are numbered from the last known
head and the `seq` primary key refuses a number another writer took first, whereupon the writer
re-reads the head and renumbers; so several itops processes writing at once still produce one
linear chain. UPDATE and DELETE are refused by triggers; the chain catches anyone who removes the
triggers first. What the chain alone cannot show is records cut from its end (or a chain rebuilt
whole by someone with write access to the database): an auditor keeps `itops audit head` outside
the database and passes it to the next `itops audit verify --expect-head SEQ:HASH`.

Every text field passes through the run's Redactor before it is hashed or written.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from toolkit.errors import LedgerError
from toolkit.ledger.schema import (
    COLUMNS,
    FIELDS,
    GENESIS,
    NUL_STANDIN,
    SEPARATOR,
    SEPARATOR_STANDIN,
    record_hash,
)
from toolkit.ledger.store import Store
from toolkit.secrets.credentials import Redactor

__all__ = [
    "COLUMNS",
    "FIELDS",
    "GENESIS",
    "Entry",
    "Ledger",
    "Record",
    "VerifyReport",
    "record_hash",
]

EXCERPT_HEAD, EXCERPT_TAIL = 2000, 1500
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return _ENCODER.encode(value)


class Record(NamedTuple):
    """One ledger row, exactly as stored (JSON fields as text, so the hash is over these bytes).

    A NamedTuple, not a dataclass: reading a million records builds a million of these."""

    seq: int
    at: str
    kind: str
    operator: str
    ticket: str | None
    host: str | None
    task: str | None
    action_id: str | None
    outcome: str | None
    duration_ms: int | None
    params: str | None
    commands: str | None
    output_excerpt: str | None
    output_sha256: str | None
    data: str | None
    prev_hash: str
    hash: str
    db_user: str | None = None  # PostgreSQL: the database user that wrote it (not hashed)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the JSON text fields decoded."""
        out: dict[str, Any] = {name: getattr(self, name) for name in (*FIELDS, "hash", "db_user")}
        for name in ("params", "commands", "data"):
            if out[name] is not None:
                out[name] = json.loads(out[name])
        return out

    @property
    def info(self) -> dict[str, Any]:
        return json.loads(self.data) if self.data else {}


@dataclass(frozen=True)
class Entry:
    """A record to append, before the ledger numbers, times and hashes it."""

    kind: str
    ticket: str | None = None
    host: str | None = None
    task: str | None = None
    action_id: str | None = None
    outcome: str | None = None
    duration_ms: int | None = None
    params: Mapping[str, Any] | None = None
    commands: Sequence[Mapping[str, Any]] | None = None
    output: str | None = None
    data: Mapping[str, Any] | None = None
    operator: str | None = None


class _LazyEvent:
    """threading.Event, created only if someone actually has to wait (most appends never do)."""

    __slots__ = ("_event", "_set")

    _guard = threading.Lock()

    def __init__(self) -> None:
        self._event: threading.Event | None = None
        self._set = False

    def set(self) -> None:
        with self._guard:
            self._set = True
            if self._event is not None:
                self._event.set()

    def wait(self) -> None:
        with self._guard:
            if self._set:
                return
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        event.wait()


class _Request:
    """Rows waiting for a group commit, and what became of them."""

    __slots__ = ("committed", "error", "records", "rows")

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.records: list[Record | None] = []
        self.error: BaseException | None = None
        self.committed = _LazyEvent()

    def result(self) -> list[Record | None]:
        if self.error is not None:
            raise self.error
        return self.records


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    records: int
    head_seq: int | None
    head_hash: str | None
    first_bad_seq: int | None = None
    reason: str | None = None
    open_actions: tuple[str, ...] = field(default_factory=tuple)
    db_users: tuple[tuple[str | None, int], ...] = ()  # (database user, records) — PostgreSQL

    def as_dict(self, problem: str | None) -> dict[str, Any]:
        """The report as JSON data; `problem` is what the caller concluded (the chain's own
        reason, or one an anchor found), None when all holds."""
        return {
            "ok": problem is None,
            "records": self.records,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "first_bad_seq": self.first_bad_seq,
            "reason": problem,
            "open_actions": list(self.open_actions),
        }


class Ledger:
    """Append and read the ticket log (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        operator: str,
        redactor: Redactor | None = None,
        blob_dir: Path | None = None,
        synchronous: str = "normal",
        read_only: bool = False,
    ) -> None:
        self.url = url
        self.operator = operator
        self.redactor = redactor or Redactor()
        self.blob_dir = blob_dir
        try:
            self._store = Store(url, synchronous=synchronous, read_only=read_only)
        except LedgerError:
            raise
        except Exception as exc:
            raise LedgerError(f"cannot open the ledger at {url}: {exc}") from exc
        self._mutex = threading.Lock()
        self._queue: list[_Request] = []
        self._writing = False

    # -- writing -----------------------------------------------------------------------------
    def append(self, entry: Entry) -> Record:
        return self.append_many([entry])[0]

    def append_many(self, entries: Iterable[Entry]) -> list[Record]:
        """Append entries in order and return them once committed.

        From a host's greenlet on the SSH event loop the write runs on a worker thread (a
        PostgreSQL round trip would stall every host's I/O), where concurrent hosts' records
        share commits (below)."""
        from toolkit.transports.green import offload

        stored = offload(self._append_many, list(entries), False)
        return [r for r in stored if r is not None]  # (only append_once leaves a row out)

    def append_once(self, entry: Entry) -> Record | None:
        """Append `entry` unless the ledger already holds a record of its kind for its ticket;
        None then. The ledger checks inside its write transaction, so of several runs racing
        to open the same new ticket, exactly one records `ticket.opened`."""
        if entry.ticket is None:
            raise ValueError("append_once needs a ticket to key the record by")
        from toolkit.transports.green import offload

        return offload(self._append_many, [entry], True)[0]

    def append_once_each(self, entries: Iterable[Entry]) -> list[Record | None]:
        """`append_once` for many entries in one transaction (each keyed by its kind and
        ticket; an entry whose key an earlier one of them has is left out too): None for each
        left out. A desk sync opens its new tickets with it."""
        todo = list(entries)
        if any(e.ticket is None for e in todo):
            raise ValueError("append_once_each needs a ticket on every entry")
        from toolkit.transports.green import offload

        return offload(self._append_many, todo, True)

    def _append_many(self, entries: list[Entry], once: bool) -> list[Record | None]:
        """Group commit: a caller that finds no write in progress writes its rows and then any rows
        queued meanwhile; callers arriving during a write queue up and sleep until a later batch
        has committed theirs. Nobody returns before their own rows are committed."""
        request = _Request([self._prepare(e, once) for e in entries])
        with self._mutex:
            self._queue.append(request)
            leader = not self._writing
            self._writing = True
        if not leader:
            request.committed.wait()
            return request.result()
        while True:
            with self._mutex:
                batch, self._queue = self._queue, []
                if not batch:
                    self._writing = False
                    break
            try:
                stored = iter(self._store.append([row for r in batch for row in r.rows]))
                for r in batch:
                    r.records = [Record(*row) if (row := next(stored)) else None for _ in r.rows]
            except BaseException as exc:
                for r in batch:
                    r.error = exc
            for r in batch:
                if r is not request:
                    r.committed.set()
        return request.result()

    def append_all(
        self, batches: Callable[[], Iterable[Sequence[Entry]]]
    ) -> tuple[int, int] | None:
        """Append every entry of `batches()` in one transaction: all or none (`Store.append_all`;
        a ticket import). The first and last seq written. For a single writer of this Ledger
        object (the CLI's import); `batches` may be called again if another process's write
        forces a renumbering."""
        prepare = self._prepare
        return self._store.append_all(lambda: ([prepare(e) for e in batch] for batch in batches()))

    def begin(
        self,
        *,
        task: str,
        host: str,
        ticket: str | None,
        params: Mapping[str, Any],
        data: Mapping[str, Any] | None = None,
    ) -> str:
        """Record an action about to run; written before anything touches the host."""
        action_id = os.urandom(16).hex()
        self.append(
            Entry(
                "action.begin",
                ticket=ticket,
                host=host,
                task=task,
                action_id=action_id,
                params=params,
                data=data,
            )
        )
        return action_id

    def finish(
        self,
        action_id: str,
        *,
        task: str,
        host: str,
        ticket: str | None,
        outcome: str,
        duration: float,
        commands: Sequence[Mapping[str, Any]] = (),
        output: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> Record:
        return self.append(
            Entry(
                "action.finish",
                ticket=ticket,
                host=host,
                task=task,
                action_id=action_id,
                outcome=outcome,
                duration_ms=round(duration * 1000),
                commands=commands,
                output=output,
                data=data,
            )
        )

    def _prepare(self, e: Entry, once: bool = False) -> dict[str, Any]:
        for name, value in (("kind", e.kind), ("action_id", e.action_id), ("outcome", e.outcome)):
            if value is not None and "\x00" in value:  # (text fields get a visible stand-in)
                raise LedgerError(f"a ledger {name} may not hold a NUL character: {value!r}")
        mask = self._mask
        excerpt = sha = None
        if e.output is not None:
            full = mask(e.output)
            sha = hashlib.sha256(full.encode()).hexdigest()
            if len(full) <= EXCERPT_HEAD + EXCERPT_TAIL:
                excerpt = full or None
            else:
                omitted = len(full) - EXCERPT_HEAD - EXCERPT_TAIL
                excerpt = f"{full[:EXCERPT_HEAD]}\n… [{omitted} characters omitted] …\n{full[-EXCERPT_TAIL:]}"
                self._keep_blob(sha, full)
        return {
            "kind": e.kind,
            "operator": mask(e.operator or self.operator),
            "ticket": e.ticket and mask(e.ticket),
            "host": e.host and mask(e.host),
            "task": e.task and mask(e.task),
            "action_id": e.action_id,
            "outcome": e.outcome,
            "duration_ms": e.duration_ms,
            "params": self._json(e.params),
            "commands": self._json(e.commands),
            "output_excerpt": excerpt,
            "output_sha256": sha,
            "data": self._json(e.data),
            "once": once,
        }

    def _mask(self, text: str) -> str:
        """Secrets masked; the hash separator (it may never appear in stored text) and NUL (see
        schema.NUL_STANDIN: a command's output may hold one) replaced by visible stand-ins."""
        text = self.redactor.mask(text)
        if SEPARATOR in text:
            text = text.replace(SEPARATOR, SEPARATOR_STANDIN)
        return text.replace("\x00", NUL_STANDIN) if "\x00" in text else text

    def _json(self, value: Any) -> str | None:
        # JSON escapes control characters, so the separator cannot appear in JSON text; the
        # redactor knows each secret's JSON-escaped form, so one pass over the text masks them.
        if value is None:
            return None
        return self.redactor.mask(_json(value) or "")

    def _keep_blob(self, sha: str, text: str) -> None:
        if self.blob_dir is None:
            return
        path = self.blob_dir / sha[:2] / sha
        if not path.exists():
            from toolkit.statefiles import write_private

            write_private(path, text)  # a full command output: 0600 (see statefiles)

    # -- reading -----------------------------------------------------------------------------
    def records(self, **filters: Any) -> Iterator[Record]:
        """Records in chain order. Equality filters: seq ticket host operator task outcome kind
        action_id; lists: kinds action_ids hosts; since/until: ISO strings, UTC; seq_from/seq_to:
        a seq range, both ends included; limit: the first N only; newest_first: in reverse
        chain order (with limit: the newest N); changes_only: see `store.CHANGES_ONLY`; not_kinds:
        a list of kinds left out."""
        for row in self._store.select(filters):
            yield Record(*row)

    def tally(self, columns: tuple[str, ...], **filters: Any) -> list[tuple[Any, ...]]:
        """Counts per distinct value of `columns` (say `("host", "task")`) among the records the
        filters of `records()` match, counted by the database: `[(*values, count), ...]`."""
        return self._store.tally(columns, filters)

    def hashes(self, seqs: Sequence[int]) -> dict[int, str]:
        """The hash of each record named (by seq) that exists, fetched in batches."""
        found: dict[int, str] = {}
        for i in range(0, len(seqs), 500):
            found |= {r.seq: r.hash for r in self.records(seqs=seqs[i : i + 500])}
        return found

    def head(self) -> Record | None:
        row = self._store.head()
        return Record(*row) if row else None

    def verify(self) -> VerifyReport:
        """Recompute the whole chain; report the first broken record and any open actions; and
        that the append-only triggers are in place (named if not)."""
        result = self._store.verify_chain()
        missing = self._store.guards_missing() if result.first_bad is None else []
        if missing:
            return VerifyReport(
                False,
                result.count,
                result.last_seq,
                result.last_hash,
                None,
                f"the append-only trigger(s) {', '.join(missing)} are missing, disabled or "
                "altered: records could have been changed in place",
            )
        if result.first_bad is not None:
            return VerifyReport(
                False,
                result.count,
                result.last_seq,
                result.last_hash,
                result.first_bad,
                result.reason,
            )
        # the database user is outside the hash (the database fills it after the client hashed
        # the row): what vouches for it is the trigger, checked here
        tally = self._store.tally(("db_user",), {}) if self._store.db_users else []
        users = tuple((user, count) for user, count in tally if user)
        problem = self._store.db_user_problem()
        return VerifyReport(
            problem is None,
            result.count,
            result.last_seq,
            result.last_hash,
            reason=problem,
            open_actions=result.begun,
            db_users=tuple(sorted(users, key=lambda u: str(u[0]))),
        )

    @property
    def read_only(self) -> bool:
        return self._store.read_only

    @property
    def read_url(self) -> str:
        """The URL its reads open: for a read-only SQLite open, with `mode=ro` (or a private
        copy's, see `store.readable`); what a reader beside the ledger (the KPIs) must use."""
        return self._store.url

    def close(self) -> None:
        self._store.close()


# The name callers open a ledger by: the constructor says a failure to open it as a LedgerError.
open_ledger = Ledger

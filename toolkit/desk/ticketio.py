"""Bulk exchange of ticket events in JSON Lines: `itops ticket import` and `itops ticket export`.

One event per line, a JSON object:

    {"ticket": "INC-1042", "event": "opened", "at": "2026-11-02T09:14:00+01:00",
     "category": "printer", "priority": "P3", "requester": "ana", "hosts": ["ws-042"]}
    {"ticket": "INC-1042", "event": "resolved", "at": "2026-11-02T10:02:00+01:00",
     "code": "fixed", "first_contact": true, "by": "li"}

`ticket`, `event` (opened, responded, note, escalated, waiting, resumed, resolved, confirmed,
closed, reopened, survey, complaint) and `at` (ISO 8601 *with* a UTC offset) are required; the other
keys are the event's fields (see `tickets.FIELDS`), plus `by`: who did it at the other desk.

Checking is all-or-nothing: every line is checked first (JSON without duplicate keys, at most
MAX_KEYS keys, MAX_LINE characters and MAX_TEXT per field, text UTF-8 can hold, fields, a time from
2000-01-01 to a day from now, order within the ticket, the lifecycle, duplicates against the file
and the ticket log) and every problem is reported with its line number; only a clean file is
appended, in ONE transaction (`Ledger.append_all`, sent in large batches): if writing fails
part-way (the database goes away, the disk fills) nothing of the file is in the log, and the same
file can be imported again once the cause is fixed. (The append-only log could never drop a
half-import, or an absurd time that would stop every SLA clock: hence the checks up front.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from toolkit.clock import iso_utc
from toolkit.desk.bulk import paused_gc
from toolkit.desk.tickets import (
    KINDS,
    TicketError,
    TicketEvent,
    check_fields,
    check_ticket_id,
    event_from_record,
    next_state,
)
from toolkit.errors import ToolkitError, ValidationError
from toolkit.textsafe import json_safe

if TYPE_CHECKING:
    from toolkit.ledger import Ledger

MAX_ERRORS = 50
# What one imported line may hold (a desk export is small, flat records; anything past these is
# an attack or a broken exporter, refused with the line's number before anything is written).
MAX_LINE = 64 * 1024  # characters in one line
MAX_TEXT = 8000  # characters in one field (a summary, a note)
MAX_KEYS = 32  # keys in one event
EARLIEST = 946684800.0  # 2000-01-01T00:00:00Z: the oldest time an event may claim
AHEAD = 86400.0  # and the newest: now + one day (clock skew between desks)


class ImportRefused(ValidationError):
    """The file has bad lines; nothing from it was written."""

    def __init__(self, path: str, errors: list[str], total: int) -> None:
        shown = "\n".join(errors[:MAX_ERRORS])
        more = f"\n… and {total - MAX_ERRORS} more" if total > MAX_ERRORS else ""
        super().__init__(
            f"{path}: {total} bad line(s); nothing was imported\n{shown}{more}",
            hint="fix the lines named above and import the whole file again",
        )
        self.errors = errors


@dataclass(frozen=True)
class ImportResult:
    path: str
    events: int
    tickets: int
    first_seq: int | None
    last_seq: int | None


@dataclass
class _Known:
    """What the ticket log (and the file so far) says about one ticket."""

    state: str | None = None
    last_at: float = float("-inf")
    last_line: int = 0


def _key(ticket: str, event: str, at: float) -> tuple[str, str, float]:
    """Events are duplicates when the same ticket has the same event at the same instant."""
    return ticket, event, round(at, 3)


def _existing(
    ledger: Ledger, tickets: set[str]
) -> tuple[dict[str, _Known], set[tuple[str, str, float]]]:
    """The replayed state, last time and event keys of those tickets already in the log."""
    known: dict[str, _Known] = {}
    keys: set[tuple[str, str, float]] = set()
    by_ticket: dict[str, list[TicketEvent]] = {}
    for r in ledger.records(kinds=KINDS):
        if r.ticket in tickets:
            ev = event_from_record(r.seq, r.at, r.kind, r.operator, r.ticket, r.info)
            by_ticket.setdefault(r.ticket, []).append(ev)
    for ticket, evs in by_ticket.items():
        state: str | None = None
        last = float("-inf")
        for ev in sorted(evs, key=lambda e: (e.at, e.seq)):
            try:
                state = next_state(ticket, state, ev.event, ev.data)
            except TicketError:
                continue
            last = max(last, ev.at)
            keys.add(_key(ticket, ev.event, ev.at))
        known[ticket] = _Known(state, last, 0)
    return known, keys


class Parsed(NamedTuple):
    """One checked line: the event, its time (epoch and as written) and its fields."""

    ticket: str
    event: str
    at: float
    when: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Checked:
    """A checked file: its events in file order, the problems found, and whether every ticket in
    it is new to the ticket log."""

    events: list[Parsed]
    errors: list[str]
    all_new: bool


Read = tuple[list[tuple[int, Parsed]], list[tuple[int, str]], set[str]]


def _read(lines: Iterable[str], first: int = 1) -> Read:
    """Check each line on its own: JSON, ticket id, event, time, fields. Numbers from `first`."""
    errors: list[tuple[int, str]] = []
    parsed: list[tuple[int, Parsed]] = []
    valid_ids: set[str] = set()
    loads = json.JSONDecoder(object_pairs_hook=_unique).decode
    fromisoformat = datetime.fromisoformat
    latest = time.time() + AHEAD
    for number, line in enumerate(lines, first):
        if not line or line.isspace():
            continue
        if len(line) > MAX_LINE:
            errors.append((number, f"line too long ({len(line)} characters; at most {MAX_LINE})"))
            continue
        try:
            obj = loads(line)
        except json.JSONDecodeError as exc:
            errors.append((number, f"not JSON: {exc.msg} (column {exc.colno})"))
            continue
        except RecursionError:
            errors.append((number, "not an event: nested too deeply"))
            continue
        except TicketError as exc:  # (from _unique)
            errors.append((number, exc.message))
            continue
        if not isinstance(obj, dict):
            errors.append((number, "not a JSON object"))
            continue
        try:
            if len(obj) > MAX_KEYS:
                raise TicketError(f"too many keys ({len(obj)}; at most {MAX_KEYS})")
            if "\\u" in line:  # only an escape can make a lone surrogate (the file is UTF-8)
                _encodable(obj)
            ticket = obj.pop("ticket", None)
            event = obj.pop("event", None)
            when = obj.pop("at", None)
            if ticket is None or event is None or when is None:
                missing = [
                    k for k, v in (("ticket", ticket), ("event", event), ("at", when)) if v is None
                ]
                raise TicketError(f"missing {', '.join(missing)}")
            if ticket not in valid_ids:
                check_ticket_id(ticket)
                valid_ids.add(ticket)
            if not isinstance(event, str):
                raise TicketError(f"event must be a name, not {event!r}")
            if not isinstance(when, str):
                raise TicketError(f"at must be an ISO 8601 time, not {when!r}")
            try:
                moment = fromisoformat(when)
                if moment.tzinfo is None:
                    raise ValueError(when)
                at = moment.timestamp()
            except (ValueError, OverflowError):
                raise TicketError(
                    f"time {when!r} has no UTC offset"
                    if _naive(when)
                    else f"cannot read the time {when!r}",
                    hint="use ISO 8601 with an offset, e.g. 2026-11-02T09:14:00+01:00",
                ) from None
            if not EARLIEST <= at <= latest:
                raise TicketError(
                    f"time {when!r} is "
                    + ("before 2000-01-01" if at < EARLIEST else "more than a day in the future"),
                    hint="events from 2000-01-01 up to now (+1 day of clock skew) are accepted",
                )
            fields = check_fields(event, obj)
            for name, value in fields.items():
                if type(value) is str and len(value) > MAX_TEXT:
                    raise TicketError(
                        f"{event}: {name} too long ({len(value)} characters; at most {MAX_TEXT})"
                    )
        except ValidationError as exc:
            errors.append((number, exc.message))
            continue
        parsed.append((number, Parsed(ticket, event, at, when, fields)))
    return parsed, errors, valid_ids


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (json merges duplicates: the last one wins,
    so `{"priority": "P4", …, "priority": "P1"}` would say one thing to a reader and another
    to itops)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise TicketError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _encodable(value: Any) -> None:
    """Refuse text UTF-8 cannot hold (a lone surrogate from a `\\ud800` escape): found now,
    with the line's number, instead of at write time after the events before it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise TicketError(
                f"text {value[:40]!r} holds a lone surrogate (not Unicode text)"
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _encodable(key)
            _encodable(item)
    elif isinstance(value, list):
        for item in value:
            _encodable(item)


def _order(read: Read, ledger: Ledger | None) -> Checked:
    """Check the lines together: order within each ticket, the lifecycle, duplicates."""
    parsed, errors, valid_ids = read
    known, keys = _existing(ledger, valid_ids) if ledger is not None and valid_ids else ({}, set())
    all_new = not known
    seen_at: dict[tuple[str, str, float], int] = {}
    out: list[Parsed] = []
    for number, item in parsed:
        ticket, event, at, _, fields = item
        k = known.get(ticket)
        if k is None:
            k = known[ticket] = _Known()
        key = (ticket, event, round(at, 3))  # as _key()
        try:
            if key in seen_at:
                raise TicketError(f"duplicate event: the same as line {seen_at[key]}")
            if key in keys:
                raise TicketError(
                    f"duplicate event: {ticket} {event} at {iso_utc(at)} is already in the ticket log"
                )
            if at < k.last_at:
                where = f"line {k.last_line}" if k.last_line else "the ticket log"
                raise TicketError(f"{ticket}: events out of order: {event} is earlier than {where}")
            k.state = next_state(ticket, k.state, event, fields)
        except TicketError as exc:
            errors.append((number, exc.message))
            seen_at.setdefault(key, number)
            continue
        seen_at[key] = number
        k.last_at, k.last_line = at, number
        out.append(item)
    errors.sort(key=lambda e: e[0])
    return Checked(out, [f"line {n}: {text}" for n, text in errors], all_new)


def parse_lines(lines: Iterable[str], ledger: Ledger | None = None) -> Checked:
    """Check every line (see the module docstring); nothing is written."""
    return _order(_read(lines), ledger)


def check_file(path: Path, ledger: Ledger | None = None) -> Checked:
    """`parse_lines` over a file (one process: splitting it across two measured slower here,
    the parsed events cost more to hand back than to parse)."""
    with path.open(encoding="utf-8") as text:
        return parse_lines(text, ledger)


def _naive(when: str) -> bool:
    from datetime import datetime

    try:
        return datetime.fromisoformat(when).tzinfo is None
    except ValueError:
        return False


def import_file(
    ledger: Ledger,
    path: Path,
    *,
    batch: int | None = None,
    on_checked: Callable[[Checked], Callable[[int | None, int | None], None] | None] | None = None,
) -> ImportResult:
    """Validate the whole file, then append it in large batches (see the module docstring).

    `on_checked` may start work on the checked events while they are appended (the KPI
    projection does); it returns a callable that is given the first and last seq written
    (None, None if the append failed)."""
    with paused_gc():
        return _import(ledger, path, batch, on_checked)


def _import(
    ledger: Ledger,
    path: Path,
    batch: int | None,
    on_checked: Callable[[Checked], Callable[[int | None, int | None], None] | None] | None,
) -> ImportResult:
    from toolkit.ledger import Entry

    try:
        checked = check_file(path, ledger)
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path} is not UTF-8 text: {exc.reason}") from exc
    if checked.errors:
        raise ImportRefused(str(path), checked.errors, len(checked.errors))
    events = checked.events
    finish = on_checked(checked) if on_checked is not None and events else None
    size = batch or (2000 if ledger.url.startswith("postgresql") else 20000)
    first = last = None
    ok = False

    def batches() -> Iterator[list[Entry]]:
        for start in range(0, len(events), size):
            yield [
                Entry(
                    "ticket." + e.event,
                    ticket=e.ticket,
                    data={**e.fields, "at": e.when, "imported": True},
                )
                for e in events[start : start + size]
            ]

    try:
        try:
            span = ledger.append_all(batches)
        except Exception as exc:
            raise ToolkitError(
                f"{path}: the import was not written: {exc}",
                hint="an import is one transaction: fix the cause and import the file again",
            ) from exc
        if span is not None:
            first, last = span
        ok = True
    finally:
        if finish is not None:
            finish(first if ok else None, last if ok else None)
    return ImportResult(str(path), len(events), len({e.ticket for e in events}), first, last)


def export_lines(
    ledger: Ledger,
    *,
    ticket: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Ticket events as import lines (effective time, `by` = who did it)."""
    for r in ledger.records(ticket=ticket, kinds=KINDS):
        if not r.ticket:
            continue
        ev = event_from_record(r.seq, r.at, r.kind, r.operator, r.ticket, r.info)
        if (since is not None and ev.at < since) or (until is not None and ev.at >= until):
            continue
        data = dict(ev.data)
        data.setdefault("by", ev.operator)
        yield {"ticket": ev.ticket, "event": ev.event, "at": iso_utc(ev.at), **data}


def write_lines(rows: Iterable[Mapping[str, Any]], out: IO[str]) -> int:
    count = 0
    for row in rows:
        text = json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=str)
        out.write(json_safe(text) + "\n")  # (C1 controls escaped: the same JSON, terminal-safe)
        count += 1
    return count

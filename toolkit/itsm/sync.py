"""`itops itsm sync`: the desk's tickets and their lifecycle pulled into the ledger.

Each step of a desk ticket's history (`Change`) becomes at most a few ticket events at the
desk's own time (`data.at`, marked `imported`, `by`: the desk's user), so the KPIs count the
desk's tickets like any other:

    created                          → opened (priority, queue and requester as they were then)
    a reply by anyone but a requester → responded (the first), later a status update (note)
    status: waiting (RT: stalled)    → waiting;  back to open → resumed
            resolved                 → resolved;  from resolved or closed back → reopened
            closed (rejected/deleted)→ resolved (code: the desk's status) + closed
    priority / queue changed         → updated (priority / category), when the mapped value changes
    survey answered (GLPI, Jira Cloud, ServiceNow) → survey (score 1–5, comment); a score outside 1–5 skipped

Every event carries the desk step's id as its dedupe key (`action_id` `rt-1234`; a second
event of one step `rt-1234-2`; a survey the key its desk gives it, `glpi-survey-12`): a
step whose key the ticket already holds is never recorded again, so a second sync adds
nothing. The newest step read is the high-water mark (`itsm.synced`, recorded with the
events in one transaction): the next sync reads only the steps after it. `--since` reads
from that instant instead (what is already there is still not recorded twice). A ticket
first seen through a later step is read with its whole history.

Each event is checked against the ticket's replayed history at its time (`tickets.next_state`);
one that does not fit — itops resolved the mirror itself before the desk did — is skipped and
counted, never recorded as an anomaly. One sync at a time per workspace (a lock file).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.clock import iso_utc
from toolkit.itsm import Change, Desk, DeskTicket, ItsmSettings

if TYPE_CHECKING:
    from toolkit.desk.tickets import TicketEvent
    from toolkit.ledger import Entry, Ledger

SYNCED = "itsm.synced"
_KEY = "\x00key"  # (in a replayed event's data only: the dedupe key it was recorded with)
_LATE = float(1 << 62)  # seq of an event not yet written: after every recorded one at its time


@dataclass
class SyncResult:
    system: str
    through: int  # the newest desk step read (the next sync's mark)
    steps: int = 0  # desk steps read
    tickets: int = 0  # tickets with a new event
    events: Counter[str] = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    busy: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "through": self.through,
            "steps": self.steps,
            "tickets": self.tickets,
            "events": dict(sorted(self.events.items())),
            "recorded": sum(self.events.values()),
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "busy": self.busy,
        }


def mark(ledger: Ledger, settings: ItsmSettings) -> int:
    """The newest desk step an earlier sync of this desk read (0: never synced)."""
    through = 0
    for r in ledger.records(kind=SYNCED):
        info = r.info
        if info.get("system") == settings.system and info.get("url") == settings.url:
            through = max(through, int(info.get("through") or 0))
    return through


def sync(
    ledger: Ledger,
    desk: Desk,
    settings: ItsmSettings,
    *,
    lock: Path,
    since: float | None = None,
    now: float | None = None,
) -> SyncResult:
    """Read the desk's steps after the mark (or from `since`) and record their ticket events."""
    from toolkit.itsm.outbox import _locked

    began = time.monotonic()
    system = settings.system or desk.system
    with _locked(lock) as held:
        after = mark(ledger, settings)
        result = SyncResult(system, after)
        if not held:
            result.busy = True
            return result
        steps = list(desk.changes(0 if since is not None else after, since))
        result.steps = len(steps)
        result.through = max([after, *(c.txn for c in steps)])
        by_ticket: dict[str, list[Change]] = {}
        for change in steps:
            by_ticket.setdefault(change.ticket, []).append(change)
        past = _past(ledger, by_ticket)
        for ticket, changes in by_ticket.items():
            opened = any(e.event == "opened" for e in past.get(ticket, ([], set()))[0])
            if not opened and not any(c.what == "created" for c in changes):
                by_ticket[ticket] = desk.history(ticket)  # first seen: its whole history
        infos = desk.tickets(by_ticket) if by_ticket else {}
        opens: list[Entry] = []
        rest: list[Entry] = []
        clock = now if now is not None else time.time()
        for ticket, changes in by_ticket.items():
            events, keys = past.get(ticket, ([], set()))
            made = _ticket_events(
                ticket, sorted(changes, key=lambda c: c.txn), infos.get(ticket), events, keys,
                settings, result, clock,
            )  # fmt: skip
            if made:
                result.tickets += 1
            for entry in made:
                (opens if entry.kind == "ticket.opened" else rest).append(entry)
        from toolkit.ledger import Entry

        written = ledger.append_once_each(opens) if opens else []
        for entry, record in zip(opens, written, strict=True):
            if record is None:  # opened meanwhile (a run's lookup mirrored it)
                result.events["opened"] -= 1
                result.skipped.append(f"{entry.ticket}: already opened")
        rest.append(
            Entry(
                SYNCED,
                data={
                    "system": system,
                    "url": settings.url,
                    "through": result.through,
                    "since": iso_utc(since) if since is not None else None,
                    "steps": result.steps,
                    "tickets": result.tickets,
                    "events": sum(result.events.values()),
                },
            )
        )
        ledger.append_many(rest)
    result.events = +result.events
    result.seconds = time.monotonic() - began
    return result


def _past(
    ledger: Ledger, tickets: Mapping[str, object]
) -> dict[str, tuple[list[TicketEvent], set[str]]]:
    """The ticket events the ledger holds for those tickets, and their dedupe keys."""
    from toolkit.desk.tickets import KINDS, event_from_record

    found: dict[str, tuple[list[TicketEvent], set[str]]] = {}

    def add(records: Iterable[Any]) -> None:
        for r in records:
            if r.ticket in tickets:
                events, keys = found.setdefault(r.ticket, ([], set()))
                info = {**r.info, _KEY: r.action_id} if r.action_id else r.info
                events.append(event_from_record(r.seq, r.at, r.kind, r.operator, r.ticket, info))
                if r.action_id:
                    keys.add(r.action_id)

    if len(tickets) <= 200:  # the ticket index
        for ticket in tickets:
            add(ledger.records(ticket=ticket, kinds=KINDS))
    else:  # one scan of the ticket events
        add(ledger.records(kinds=KINDS))
    return found


@dataclass
class _Now:
    """A ticket's replayed state at one instant."""

    state: str | None = None
    priority: str = "P3"
    category: str = "other"
    responded: bool = False


def _step_of(key: str | None) -> int | None:
    """The desk step a synced event came from (its key `rt-1234` or `rt-1234-2`); None for an
    event itops recorded itself."""
    if not key or "-" not in key:
        return None
    parts = key.split("-")
    return int(parts[1]) if len(parts) in (2, 3) and parts[1].isdigit() else None


def _replay(
    ticket: str, events: list[TicketEvent], at: float, step: int, *, own: bool = False
) -> _Now:
    """The ticket at the desk step `step` (at `at`): the events before that instant, and at
    that very second those itops recorded and those of earlier steps (with `own`, of this step
    too) — RT's times are whole seconds, so several steps share one, and a later step's event
    must not decide an earlier one's (a re-read would then decide differently)."""
    from toolkit.desk.tickets import TicketError, next_state

    now = _Now()
    for ev in sorted(events, key=lambda e: (e.at, e.seq)):
        if ev.at > at:
            break
        if ev.at == at:
            origin = _step_of(ev.data.get(_KEY))
            if origin is not None and (origin > step or (origin == step and not own)):
                continue
        try:
            after = next_state(ticket, now.state, ev.event, ev.data)
        except TicketError:
            continue
        if ev.event in ("opened", "updated"):
            now.priority = str(ev.data.get("priority") or now.priority)
            now.category = str(ev.data.get("category") or now.category)
        if ev.event in ("responded", "resolved"):
            now.responded = True
        now.state = after
    return now


def _ticket_events(
    ticket: str,
    changes: list[Change],
    info: DeskTicket | None,
    past: list[TicketEvent],
    keys: set[str],
    settings: ItsmSettings,
    result: SyncResult,
    clock: float,
) -> list[Entry]:
    """The new ticket events of one ticket's steps, each checked at its time."""
    from toolkit.desk.tickets import TicketError, TicketEvent, check_fields, next_state
    from toolkit.ledger import Entry

    events = list(past)
    made: list[Entry] = []
    requesters = set(info.requesters) if info else set()

    def add(key: str, change: Change, event: str, data: Mapping[str, Any]) -> bool:
        if key in keys:
            return False
        at = min(change.at, clock)
        try:
            fields = check_fields(event, {**data, "by": change.by[:128] or None})
            before = _replay(ticket, events, at, change.txn, own=True)
            next_state(ticket, before.state, event, fields)
        except TicketError as exc:
            result.skipped.append(f"{ticket} (desk step {change.txn}): {exc.message}")
            return False
        known = {**fields, _KEY: key}
        events.append(TicketEvent(ticket, event, at, "", known, int(_LATE) + len(made)))
        made.append(
            Entry(
                f"ticket.{event}",
                ticket=ticket,
                action_id=key,
                data={**fields, "at": iso_utc(at), "imported": True},
            )
        )
        keys.add(key)
        result.events[event] += 1
        return True

    for change in changes:
        key = change.key or f"{result.system}-{change.txn}"
        now = _replay(ticket, events, change.at, change.txn)
        if change.what == "created":
            if now.state is not None or any(e.event == "opened" for e in events):
                continue  # a run's lookup mirrored it first
            add(key, change, "opened", _opening(ticket, changes, info, settings))
        elif now.state is None:
            continue  # a step of a ticket whose opening is not known
        elif change.what == "replied":
            if change.by in requesters:
                continue
            if not now.responded:
                add(key, change, "responded", {"via": "desk reply"})
            elif now.state in ("open", "waiting"):
                add(key, change, "note", {"text": "replied to the requester at the desk",
                                          "update": True})  # fmt: skip
        elif change.what == "status":
            steps = _status_events(now.state, settings.state(change.new), change.new)
            for n, (event, data) in enumerate(steps):
                if not add(key if n == 0 else f"{key}-{n + 1}", change, event, data):
                    break
        elif change.what == "priority":
            priority = settings.priority(change.new)
            if priority != now.priority:
                reason = f"priority {change.old or '?'} → {change.new} at the desk"
                add(key, change, "updated", {"priority": priority, "reason": reason})
        elif change.what == "queue":
            category = settings.category(change.new)
            if category != now.category:
                reason = f"queue {change.old or '?'} → {change.new} at the desk"
                add(key, change, "updated", {"category": category, "reason": reason[:500]})
        elif change.what == "survey":
            score = _score(change.new)
            if score is None:
                result.skipped.append(
                    f"{ticket} ({key}): survey score {change.new[:20]!r} is not 1–5"
                )
                continue
            comment = change.old.strip()[:COMMENT] or None
            add(key, change, "survey", {"score": score, "comment": comment})
    return made


COMMENT = 2000  # characters of a survey's comment kept


def _score(value: str) -> int | None:
    """A survey's score as the desk adapter mapped it: a whole number 1–5, else None."""
    try:
        score = int(value.strip())
    except ValueError:
        return None
    return score if 1 <= score <= 5 else None


Step = tuple[str, dict[str, Any]]


def _status_events(state: str | None, target: str, status: str) -> list[Step]:
    """The ticket events that take a ticket in `state` to the desk's new status (its class)."""
    wait: list[Step] = [("waiting", {"reason": f"{status} at the desk"})]
    resolve: list[Step] = [("resolved", {"code": status[:64]})]
    close: list[Step] = [("closed", {"unconfirmed": True, "note": f"{status} at the desk"})]
    reopen: list[Step] = [("reopened", {"reason": f"{status} at the desk"})]
    table: dict[str | None, dict[str, list[Step]]] = {
        "open": {"waiting": wait, "resolved": resolve, "closed": resolve + close},
        "waiting": {"open": [("resumed", {})], "resolved": resolve, "closed": resolve + close},
        "resolved": {"open": reopen, "waiting": reopen + wait, "closed": close},
        "confirmed": {"open": reopen, "waiting": reopen + wait, "closed": close},
        "closed": {"open": reopen, "waiting": reopen + wait},
    }
    return table.get(state, {}).get(target, [])


def _opening(
    ticket: str, changes: list[Change], info: DeskTicket | None, settings: ItsmSettings
) -> dict[str, Any]:
    """The opened event's fields: priority and queue as they were at creation (the old value
    of their first change, else the ticket's current one)."""
    first_priority = next((c.old for c in changes if c.what == "priority" and c.old), None)
    first_queue = next((c.old for c in changes if c.what == "queue" and c.old), None)
    raw_priority: Any = (
        first_priority if first_priority is not None else (info.desk_priority if info else None)
    )
    queue = first_queue if first_queue is not None else (info.queue if info else "")
    data: dict[str, Any] = {
        "priority": settings.priority(raw_priority),
        "category": settings.category(queue),
        "kind": "incident",
        "channel": "other",
        "source": f"{ticket} ({queue})"[:200] if queue else ticket,
    }
    if info is not None:
        if info.subject:
            data["summary"] = info.subject[:500]
        if info.requester:
            data["requester"] = info.requester[:255]
    return data

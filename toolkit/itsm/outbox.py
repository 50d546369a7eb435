"""The outbox in the ledger: a note for the desk is recorded first and delivered after.

    itsm.note       ticket, action_id = the dedupe key; data: system, text, resolve
    itsm.sending    a delivery is about to post the note (so whoever delivers it next looks first)
    itsm.attempt    a delivery that failed: its error, the attempt's number, when to try again
    itsm.delivered  the desk has the note (data.found: it was already there, not posted again)
    itsm.failed     given up (max attempts, or the desk refused for good): `itsm status` shows it

The ledger is append-only, so a note's state is the replay of its records. The text holds its
dedupe key (`itops-note: KEY`). Before posting, `itsm.sending` is recorded; a delivery of a note
that was ever sent (or failed) first looks the key up on the ticket, so a post the desk committed
before its answer was lost (a timeout, a deliverer killed after posting) is never posted a second
time. A failed attempt waits before the next: the desk's Retry-After (429), else 30 s doubling up
to an hour. One delivery at a time per workspace (a lock file): two deliverers (a run's detached
one, `itops itsm deliver`, the scheduler) never post the same note at once.

Delivery never raises: a desk that is down leaves the note pending, and the run that queued it
has already finished.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.itsm import Desk, DeskAuthError, DeskError, TicketClosed, TicketUnknown

if TYPE_CHECKING:
    from toolkit.ledger import Ledger

log = logging.getLogger("itops.itsm")

NOTE, ATTEMPT, DELIVERED, FAILED = "itsm.note", "itsm.attempt", "itsm.delivered", "itsm.failed"
SENDING = "itsm.sending"
KINDS = (NOTE, SENDING, ATTEMPT, DELIVERED, FAILED)
KEY_LINE = "itops-note: "
FIRST_DELAY, MAX_DELAY = 30.0, 3600.0


def new_key() -> str:
    """A dedupe key: letters, digits and '-' only (it is searched for with SQL LIKE)."""
    return f"itops-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Note:
    key: str
    ticket: str
    system: str
    text: str
    resolve: bool
    queued_at: str
    seq: int
    state: str = "pending"  # pending | delivered | failed
    attempts: int = 0
    error: str = ""
    next_at: float = 0.0  # epoch seconds; 0: now
    where: str = ""
    sent: int = 0  # deliveries that went as far as posting it (itsm.sending)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "ticket": self.ticket,
            "system": self.system,
            "state": self.state,
            "queued_at": self.queued_at,
            "seq": self.seq,
            "attempts": self.attempts,
            "error": self.error,
            "next_at": _iso(self.next_at) if self.next_at else None,
            "resolve": self.resolve,
            "where": self.where,
        }


def queue(
    ledger: Ledger, ticket: str, system: str, text: str, *, resolve: bool = False, key: str = ""
) -> Note:
    """Record a note for the desk (the ledger masks every registered secret in it)."""
    from toolkit.ledger import Entry

    key = key or new_key()
    body = f"{text.rstrip()}\n\n{KEY_LINE}{key}\n"
    record = ledger.append(
        Entry(
            NOTE,
            ticket=ticket,
            action_id=key,
            data={"system": system, "text": body, "resolve": resolve},
        )
    )
    return Note(key, ticket, system, record.info["text"], resolve, record.at, record.seq)


def notes(ledger: Ledger, *, ticket: str | None = None) -> list[Note]:
    """Every note the outbox holds, in the order queued, with its state replayed."""
    found: dict[str, Note] = {}
    for r in ledger.records(kinds=KINDS, ticket=ticket):
        info, key = r.info, r.action_id or ""
        if r.kind == NOTE:
            found[key] = Note(
                key,
                r.ticket or "",
                str(info.get("system", "")),
                str(info.get("text", "")),
                bool(info.get("resolve")),
                r.at,
                r.seq,
            )
            continue
        note = found.get(key)
        if note is None:
            continue
        if r.kind == SENDING:
            found[key] = replace(note, sent=note.sent + 1)
        elif r.kind == ATTEMPT:
            found[key] = replace(
                note,
                attempts=int(info.get("attempt", note.attempts + 1)),
                error=str(info.get("error", "")),
                next_at=float(info.get("next_at", 0.0)),
            )
        elif r.kind == DELIVERED:
            found[key] = replace(note, state="delivered", where=str(info.get("where", "")))
        elif r.kind == FAILED:
            found[key] = replace(note, state="failed", error=str(info.get("error", note.error)))
    return list(found.values())


def pending(ledger: Ledger) -> list[Note]:
    return [n for n in notes(ledger) if n.state == "pending"]


@dataclass(frozen=True)
class Delivery:
    note: Note
    result: str  # delivered | already-there | retry | failed | waiting | busy
    detail: str = ""


def deliver(
    ledger: Ledger,
    desk: Desk,
    *,
    lock: Path,
    keys: Sequence[str] | None = None,
    max_attempts: int = 20,
    now: float | None = None,
    honour_backoff: bool = False,
    lock_wait: float = 0.0,
) -> list[Delivery]:
    """Deliver the pending notes (only `keys`, if given). A desk's Retry-After is always
    honoured; the doubling backoff only with `honour_backoff` (an operator's `itsm deliver`
    means now). `lock_wait`: seconds to wait for a delivery already under way (then: busy).
    Never raises for the desk."""
    with _locked(lock, lock_wait) as held:
        todo = [n for n in pending(ledger) if keys is None or n.key in keys]
        if not held:
            return [Delivery(n, "busy", "another itops is delivering") for n in todo]
        results = []
        for note in todo:
            clock = now if now is not None else _now()
            if note.next_at > clock and (honour_backoff or "retry-after" in note.error):
                results.append(Delivery(note, "waiting", f"next try at {_iso(note.next_at)}"))
                continue
            results.append(_deliver_one(ledger, desk, note, max_attempts, clock))
        return results


def _deliver_one(ledger: Ledger, desk: Desk, note: Note, max_attempts: int, now: float) -> Delivery:
    from toolkit.ledger import Entry

    try:
        # sent or tried before: the desk may have it already (its answer lost, the deliverer
        # killed after posting): look before posting again
        where = desk.find_note(note.ticket, note.key) if note.attempts or note.sent else None
        found = where is not None
        if where is None:
            ledger.append(
                Entry(SENDING, ticket=note.ticket, action_id=note.key, data={"to": desk.system})
            )
            where = desk.add_note(note.ticket, note.text)
        if note.resolve:
            desk.resolve(note.ticket)
    except DeskError as exc:
        attempt = note.attempts + 1
        error = exc.message
        if exc.retry_after is not None:
            error += f" (retry-after {exc.retry_after:g} s)"
        permanent = isinstance(exc, TicketUnknown | TicketClosed) or not (
            exc.transient or isinstance(exc, DeskAuthError)
        )
        if permanent or attempt >= max_attempts:
            why = error if permanent else f"{error} (gave up after {attempt} attempts)"
            ledger.append(
                Entry(FAILED, ticket=note.ticket, action_id=note.key, data={"error": why})
            )
            return Delivery(note, "failed", why)
        delay = exc.retry_after if exc.retry_after is not None else backoff(attempt)
        ledger.append(
            Entry(
                ATTEMPT,
                ticket=note.ticket,
                action_id=note.key,
                data={
                    "attempt": attempt,
                    "error": error,
                    "maybe_committed": exc.maybe_committed,
                    "next_at": now + delay,
                },
            )
        )
        log.warning(
            "%s: note %s not delivered (attempt %d): %s", note.ticket, note.key, attempt, error
        )
        return Delivery(note, "retry", error)
    except Exception as exc:  # a bug in an adapter must not lose the note either
        log.exception("%s: note %s: delivery failed", note.ticket, note.key)
        ledger.append(
            Entry(
                ATTEMPT,
                ticket=note.ticket,
                action_id=note.key,
                data={"attempt": note.attempts + 1, "error": f"{type(exc).__name__}: {exc}",
                      "next_at": now + backoff(note.attempts + 1)},
            )
        )  # fmt: skip
        return Delivery(note, "retry", str(exc))
    ledger.append(
        Entry(
            DELIVERED,
            ticket=note.ticket,
            action_id=note.key,
            data={"where": where, "found": found, "resolved": note.resolve},
        )
    )
    return Delivery(note, "already-there" if found else "delivered", where)


def backoff(attempt: int) -> float:
    return float(min(FIRST_DELAY * 2 ** max(attempt - 1, 0), MAX_DELAY))


@contextlib.contextmanager
def _locked(path: Path, wait: float = 0.0) -> Iterator[bool]:
    """The lock file held (True), or not within `wait` seconds (False)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.05)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _now() -> float:
    return datetime.now(UTC).timestamp()


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def detach(root: Path, keys: Sequence[str]) -> int:
    """Deliver `keys` from a detached process: `itops itsm deliver --background`, niced, in a
    session of its own (no terminal: a hang-up or Ctrl-C of the command's shell does not reach
    it), its standard streams on /dev/null (whoever reads the command's output sees it end
    now), its results in the ledger and itops.log. It waits for the outbox lock if another
    delivery holds it, then also delivers what earlier runs left pending (their backoff
    honoured). Returns its pid; OSError if it could not be started (the notes stay pending)."""
    import os
    import shutil
    import subprocess
    import sys
    import warnings

    nice = shutil.which("nice")  # background work: below the commands an operator waits for
    argv = [nice, "-n", "10"] if nice else []
    argv += [sys.executable, "-m", "toolkit", "--workspace", str(root), "itsm", "deliver"]
    argv += ["--background", *(arg for key in keys for arg in ("--note", key))]
    with warnings.catch_warnings():  # never waited for: it outlives this command
        warnings.simplefilter("ignore", ResourceWarning)
        child = subprocess.Popen(
            argv,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=os.environ.copy(),
        )
        pid = child.pid
        del child
    return pid

"""Sign-in attempts: each one recorded in the ledger, and throttling decided from those records.

Every failed sign-in is a ledger record (`audit.signin-failed`: the name as typed — hostile text,
shown escaped like every value —, the client address and the reason; never the password), and
every successful one too (`audit.signin`: the account as operator). The throttle is computed
from those records, as django-axes computes its lockouts from its table of attempts, so the
decision survives a restart of the server and is shared by every server on one PostgreSQL
ledger: at the first attempt it reads those of the last `window`, then before each attempt the
ones recorded since (an indexed range of record numbers).

The rule (`Limits`), per account name as typed (whether or not such an account exists, so a
lockout tells nothing about which names exist) and per client address:
- only failures that were checked count (wrong password, unknown or malformed name); refusals
  while locked and expired forms are recorded but do not lengthen the lock;
- an account's failures before its last successful sign-in do not count (a source's do);
- with `n` counted failures in the last `window`, n at least the limit (`account_failures`,
  default 5; `source_failures`, 20), the name or address is locked until its last failure plus
  `backoff * 2**(n - limit)`, at most `backoff_max`: 1, 2, 4 … minutes — exponential backoff
  rather than a fixed lockout, so an attacker gets few guesses and a user locked out by one is
  not locked out for long once the attempts stop;
- attempts being checked right now count as failures (a burst of parallel guesses cannot slip
  past the limit while the first ones are still being hashed).

A locked attempt gets the same page as a wrong password ("wrong name or password"), status 429
with Retry-After, and no password is checked.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.ledger import Ledger, Record

FAILED_KIND = "audit.signin-failed"
SIGNIN_KIND = "audit.signin"
KINDS = (FAILED_KIND, SIGNIN_KIND)
NAME_KEPT = 256  # characters of a typed name kept in the record (the form allows 64 KB)

# Reasons recorded; the first three are checked failures, which count towards a lock.
WRONG_PASSWORD = "wrong password"
NO_ACCOUNT = "no such account"
BAD_NAME = "not an account name"
ACCOUNT_LOCKED = "account locked"
SOURCE_LOCKED = "source locked"
FORM_EXPIRED = "form expired or from another site"
COUNTED = frozenset({WRONG_PASSWORD, NO_ACCOUNT, BAD_NAME})


@dataclass(frozen=True)
class Limits:
    """[serve] signin_* in itops.toml (see the module's docstring)."""

    account_failures: int = 5
    source_failures: int = 20
    window: float = 3600.0  # seconds
    backoff: float = 60.0  # seconds
    backoff_max: float = 1800.0  # seconds

    def lock(self, count: int, limit: int) -> float:
        """How long `count` failures lock a name or address for, after the last (0: not)."""
        if count < limit:
            return 0.0
        return float(min(self.backoff * 2 ** min(count - limit, 40), self.backoff_max))


@dataclass(frozen=True)
class Refusal:
    reason: str  # ACCOUNT_LOCKED or SOURCE_LOCKED
    until: float  # epoch seconds

    def retry_after(self, now: float) -> int:
        return max(1, int(self.until - now + 0.999))


def epoch(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Key:
    failures: deque[float] = field(default_factory=deque)  # counted failures, oldest first
    pending: int = 0  # attempts being checked now


class Throttle:
    """Failure counts per account name and per client address, kept from the ledger's records.

    `read` returns the sign-in records with a seq from the one given (None: those since a time),
    oldest first; the server passes its read-only ledger."""

    def __init__(
        self,
        limits: Limits,
        read: Callable[[int | None, str | None], Iterable[Record]],
        clock: Callable[[], float] = time.time,
        head: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.limits = limits
        self._read = read
        self._head = head  # the ledger's last seq: where the reads after the first start
        self._clock = clock
        self._lock = threading.Lock()
        self._names: dict[str, _Key] = defaultdict(_Key)
        self._sources: dict[str, _Key] = defaultdict(_Key)
        self._last_seq: int | None = None
        self._loaded = False
        self._tidied = 0.0

    @classmethod
    def on(cls, ledger: Ledger, limits: Limits, clock: Callable[[], float] = time.time) -> Throttle:
        def read(seq_from: int | None, since: str | None) -> Iterable[Record]:
            if seq_from is not None:
                return ledger.records(kinds=list(KINDS), seq_from=seq_from)
            return ledger.records(kinds=list(KINDS), since=since)

        def head() -> int | None:
            last = ledger.head()
            return last.seq if last is not None else None

        return cls(limits, read, clock, head)

    # -- what the ledger says ----------------------------------------------------------------
    def _refresh(self) -> None:
        if not self._loaded:
            self._last_seq = self._head()  # (read first: a record written meanwhile is after it)
            records = self._read(None, iso(self._clock() - self.limits.window))
            self._loaded = True
        else:
            records = self._read((self._last_seq or 0) + 1, None)
        for r in records:
            self._last_seq = r.seq if self._last_seq is None else max(self._last_seq, r.seq)
            self._note(r)

    def _note(self, r: Record) -> None:
        info = r.info
        when = epoch(r.at)
        if r.kind == SIGNIN_KIND:
            self._names[r.operator].failures.clear()  # a success forgives the name's failures
            return
        if info.get("reason") not in COUNTED:
            return
        name, client = info.get("name"), info.get("client")
        if isinstance(name, str):
            self._names[name].failures.append(when)
        if isinstance(client, str):
            self._sources[client].failures.append(when)

    def _count(self, key: _Key, now: float) -> int:
        while key.failures and key.failures[0] <= now - self.limits.window:
            key.failures.popleft()
        return len(key.failures)

    # -- one attempt -------------------------------------------------------------------------
    def begin(self, name: str, client: str) -> Refusal | None:
        """Before checking a password: a Refusal if the name or the address is locked, else
        None, and the attempt counts as pending until `end`."""
        with self._lock:
            self._refresh()
            now = self._clock()
            for key, limit, reason in (
                (self._names[name], self.limits.account_failures, ACCOUNT_LOCKED),
                (self._sources[client], self.limits.source_failures, SOURCE_LOCKED),
            ):
                count = self._count(key, now)
                last = key.failures[-1] if key.failures else now
                if key.pending and count + key.pending >= limit:
                    last = now  # guesses in flight: the lock starts now
                span = self.limits.lock(count + key.pending, limit)
                if span and last + span > now:
                    return Refusal(reason, last + span)
            self._names[name].pending += 1
            self._sources[client].pending += 1
            return None

    def end(self, name: str, client: str, failed_unrecorded: bool = False) -> None:
        """After the check (and its record). `failed_unrecorded`: a failure the ledger could not
        take still counts here, in memory (a ledger that is down must not lift the limit)."""
        with self._lock:
            self._names[name].pending -= 1
            self._sources[client].pending -= 1
            if failed_unrecorded:
                now = self._clock()
                self._names[name].failures.append(now)
                self._sources[client].failures.append(now)
            self._tidy()

    def _tidy(self) -> None:
        """Forget names and addresses with nothing counted (a spray of made-up names does not
        grow the tables beyond one window's failures)."""
        now = self._clock()
        if now - self._tidied < 60:
            return
        self._tidied = now
        for table in (self._names, self._sources):
            for key in [k for k, v in table.items() if not v.pending and not self._count(v, now)]:
                del table[key]

    def counts(self, name: str, client: str) -> dict[str, int]:
        """The counted failures of a name and an address now (for the record)."""
        with self._lock:
            self._refresh()
            now = self._clock()
            return {
                "account": self._count(self._names[name], now),
                "source": self._count(self._sources[client], now),
            }


def failed_data(name: Any, client: str, reason: str, **more: Any) -> dict[str, Any]:
    """A failed sign-in's record data: the name as typed (its first NAME_KEPT characters), the
    address and the reason. Never the password: it is not a parameter."""
    typed = name if isinstance(name, str) else None
    data: dict[str, Any] = {"name": typed[:NAME_KEPT] if typed is not None else None}
    if typed is not None and len(typed) > NAME_KEPT:
        data["name_length"] = len(typed)
    return data | {"client": client, "reason": reason} | more

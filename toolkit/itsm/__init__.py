"""The service desk itops is a citizen of: its tickets looked up, every run written back to them.

`[itsm] system = "rt"` names the desk (docs/itsm.md). A `--ticket` in the desk's own id form
(`RT-123`) is then the desk's ticket: before anything runs, `mirror.lookup` reads it from the
desk (unknown: exit 2; resolved, rejected or deleted: refused) and mirrors it into the ledger as a
local ticket, so its priority, category (from the desk's queue) and requester feed the run
policy exactly as a local ticket's do, and KPIs and `itops ticket show` see it. After the run one
internal note per ticket goes through the ledger's outbox (`outbox`): recorded first, delivered
after, retried with backoff, never posted twice.

A `Desk` is the few calls itops makes; `rt.RtDesk` is Request Tracker's (REST 2, python-rt).
Nothing here reaches a host or runs a task.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from toolkit.errors import ToolkitError

if TYPE_CHECKING:
    from toolkit.secrets.credentials import CredentialStore, Secret
    from toolkit.workspace import Workspace

SYSTEMS = ("rt",)  # implemented; the other desks' id forms are in docs/itsm.md
# desk → its ticket ids as itops takes them (RT shows `#123`; itops says RT-123)
ID_FORMS = {"rt": re.compile(r"RT-([1-9][0-9]{0,9})")}
DEFAULT_PRIORITIES = {"P1": 90, "P2": 50, "P3": 20, "P4": 0}  # the lowest desk value of each
DEFAULT_CLOSED = ("resolved", "rejected", "deleted")
DEFAULT_WAITING = ("stalled",)
DEFAULT_RESOLVED = ("resolved",)
DEFAULT_TIMEOUT = 10.0
DEFAULT_ATTEMPTS = 20
DELIVERY_MODES = ("detach", "wait")  # after a run: a detached process delivers, or the command
DELIVER_ENV = "ITOPS_ITSM_DELIVER"  # overrides [itsm] deliver (a script, a test: "wait")


class DeskError(ToolkitError):
    """The desk could not be asked, or said no. `transient`: worth retrying later;
    `retry_after`: the desk said when (429); `maybe_committed`: the request was sent and no
    answer came (a timeout) — the desk may have done it, so look before doing it again."""

    transient = False

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        retry_after: float | None = None,
        maybe_committed: bool = False,
    ) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after
        self.maybe_committed = maybe_committed


class DeskUnavailable(DeskError):
    """Down, unreachable, timed out, overloaded (429, 5xx): try again later."""

    transient = True


class DeskAuthError(DeskError):
    """The desk refused itops' credentials or their rights (401, 403)."""


class TicketUnknown(DeskError):
    """No such ticket at the desk."""


class TicketClosed(DeskError):
    """The desk's ticket is resolved, rejected or deleted: no run goes under it."""


@dataclass(frozen=True)
class DeskTicket:
    """A desk's ticket as itops sees it (its text is the desk's: hostile until shown safely)."""

    id: str  # itops' form: RT-123
    number: str  # the desk's own: 123
    subject: str
    status: str  # the desk's state name
    priority: str  # P1..P4, mapped by [itsm.priorities]
    desk_priority: str  # the desk's own value
    queue: str
    category: str  # mapped by [itsm.categories]
    requester: str
    closed: bool
    created: float | None = None  # when the desk opened it (epoch seconds)
    requesters: tuple[str, ...] = ()  # the desk's user names of its requesters


@dataclass(frozen=True)
class Change:
    """One step of a desk ticket's history, as the desk recorded it (`itops itsm sync`).

    `txn`: the desk's own id of the step (RT: its transaction id), rising: the dedupe key of
    the ticket events made from it and the high-water mark of the next sync. `what`: created,
    replied (a reply to the requester, by anyone but the desk itself), status, priority or
    queue; `old`/`new` the desk's own values (a status name, a priority value, a queue name).
    """

    ticket: str  # itops' form: RT-123
    txn: int
    at: float  # epoch seconds
    by: str  # the desk's user name of who did it (hostile text)
    what: str
    old: str = ""
    new: str = ""


class Desk(Protocol):
    """What itops asks of a service desk. Every call raises a DeskError on failure."""

    system: str

    def lookup(self, ticket: str) -> DeskTicket:
        """The ticket (TicketUnknown if the desk has none with that id)."""
        ...

    def find_note(self, ticket: str, key: str) -> str | None:
        """Where a note holding `key` is on the ticket (the desk's reference), or None."""
        ...

    def add_note(self, ticket: str, text: str) -> str:
        """Add an internal note (never mailed to the requester); the desk's reference."""
        ...

    def resolve(self, ticket: str) -> str:
        """Resolve the ticket where the desk's workflow allows it; its state after."""
        ...

    def check(self) -> list[str]:
        """URL, TLS and credentials tried; what was found, one line each."""
        ...

    def changes(self, after: int, since: float | None = None) -> Iterator[Change]:
        """Every ticket's history steps after the step `after` (and, with `since`, from that
        instant on), in the desk's order."""
        ...

    def history(self, ticket: str) -> list[Change]:
        """One ticket's whole history."""
        ...

    def tickets(self, ids: Iterable[str]) -> dict[str, DeskTicket]:
        """Those tickets as they are now (one missing: the desk has it no more)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ItsmSettings:
    """`[itsm]` of itops.toml (checked by toolkit.settings when the workspace loads)."""

    system: str | None = None
    url: str = ""
    user: str = ""
    password: str | None = None  # a reference (env:, keyring:, file:, prompt)
    token: str | None = None
    ca_bundle: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_attempts: int = DEFAULT_ATTEMPTS
    deliver: str = "detach"  # DELIVERY_MODES
    priorities: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PRIORITIES))
    categories: Mapping[str, str] = field(default_factory=dict)
    closed_states: tuple[str, ...] = DEFAULT_CLOSED
    waiting_states: tuple[str, ...] = DEFAULT_WAITING
    resolved_states: tuple[str, ...] = DEFAULT_RESOLVED

    @classmethod
    def of(cls, workspace: Workspace) -> ItsmSettings:
        raw: Mapping[str, Any] = workspace.section("itsm")
        ca = raw.get("ca_bundle")
        return cls(
            system=raw.get("system"),
            url=str(raw.get("url", "")).rstrip("/"),
            user=str(raw.get("user", "")),
            password=raw.get("password"),
            token=raw.get("token"),
            ca_bundle=workspace.path(ca) if ca else None,
            timeout=float(raw.get("timeout", DEFAULT_TIMEOUT)),
            max_attempts=int(raw.get("max_attempts", DEFAULT_ATTEMPTS)),
            deliver=str(raw.get("deliver", "detach")),
            priorities={**DEFAULT_PRIORITIES, **dict(raw.get("priorities", {}))},
            categories={str(k).casefold(): str(v) for k, v in raw.get("categories", {}).items()},
            closed_states=tuple(raw.get("closed_states", DEFAULT_CLOSED)),
            waiting_states=tuple(raw.get("waiting_states", DEFAULT_WAITING)),
            resolved_states=tuple(raw.get("resolved_states", DEFAULT_RESOLVED)),
        )

    @property
    def configured(self) -> bool:
        return self.system is not None

    def delivery(self) -> str:
        """How a run's note is delivered: "detach" (a detached process, after the command has
        printed its report and exited) or "wait" (the command delivers before it exits).

        ITOPS_ITSM_DELIVER overrides [itsm] deliver; a password or token typed at a prompt (or
        piped in) exists only in this process, so its notes are always delivered here."""
        import os

        mode = os.environ.get(DELIVER_ENV, "").strip().lower() or self.deliver
        if mode not in DELIVERY_MODES:
            raise ToolkitError(
                f"{DELIVER_ENV}={mode!r} is not one of {', '.join(DELIVERY_MODES)}",
                hint=f"unset it, or {DELIVER_ENV}=wait to deliver before the command exits",
            )
        secret = self.token or self.password or ""
        if secret in ("prompt", "stdin") or secret.startswith("prompt:"):
            return "wait"
        return mode

    def owns(self, ticket: str | None) -> bool:
        """`ticket` is in this desk's id form (RT-123 with system = "rt")."""
        if not ticket or self.system is None:
            return False
        return ID_FORMS[self.system].fullmatch(ticket) is not None

    def priority(self, value: Any) -> str:
        """The desk's priority value → P1..P4: the first whose lowest value it reaches."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            return "P3"
        for name in ("P1", "P2", "P3"):
            if number >= self.priorities[name]:
                return name
        return "P4"

    def state(self, status: str) -> str:
        """The desk's status → what it is to itops' ticket lifecycle: waiting (the SLA clock
        pauses), resolved, closed (a closed state that is not a resolution: RT's rejected and
        deleted), or open (anything else: RT's new and open)."""
        if status in self.waiting_states:
            return "waiting"
        if status in self.resolved_states:
            return "resolved"
        if status in self.closed_states:
            return "closed"
        return "open"

    def category(self, queue: str) -> str:
        """The desk's queue → an itops category ([itsm.categories], else the queue's name if it
        is a category, else "other")."""
        from toolkit.desk.tickets import CATEGORIES

        mapped = self.categories.get(queue.casefold())
        if mapped:
            return mapped
        return queue.casefold() if queue.casefold() in CATEGORIES else "other"


def number(ticket: str, system: str = "rt") -> str:
    """The desk's own number in an itops id (RT-123 → 123)."""
    found = ID_FORMS[system].fullmatch(ticket)
    if found is None:
        raise ToolkitError(f"{ticket!r} is not a {system.upper()} ticket id", hint="e.g. RT-123")
    return found.group(1)


def desk_secrets(
    settings: ItsmSettings, credentials: CredentialStore
) -> tuple[Secret | None, Secret | None]:
    """The configured desk's (password, token), resolved (and registered with the redactor):
    in the calling thread, as a prompt must be."""
    if settings.system is None:
        raise ToolkitError(
            "no service desk is configured",
            hint='add [itsm] to itops.toml: system = "rt", url, user, password (docs/itsm.md)',
        )
    if not settings.url:
        raise ToolkitError(
            "[itsm] url is not set", hint="the desk's base URL, e.g. https://rt.example.org"
        )
    if settings.token:
        return None, credentials.resolve(settings.token, "[itsm] token")
    if settings.password:
        return credentials.resolve(settings.password, "[itsm] password"), None
    raise ToolkitError(
        "[itsm] needs password or token (a reference)",
        hint='password = "env:RT_PASSWORD" or token = "keyring:itops/rt"',
    )


def connect_desk(settings: ItsmSettings, password: Secret | None, token: Secret | None) -> Desk:
    """The configured desk's adapter for secrets already resolved (any thread)."""
    from toolkit.itsm.rt import RtDesk

    return RtDesk(settings, password=password, token=token)


def open_desk(settings: ItsmSettings, credentials: CredentialStore) -> Desk:
    """The configured desk's adapter, its secrets resolved (and registered with the redactor)."""
    return connect_desk(settings, *desk_secrets(settings, credentials))

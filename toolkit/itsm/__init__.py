"""The service desk itops is a citizen of: its tickets looked up, every run written back to them.

`[itsm] system = "rt"` names the desk (docs/itsm.md). A `--ticket` in the desk's own id form
(`RT-123`) is then the desk's ticket: before anything runs, `mirror.lookup` reads it from the
desk (unknown: exit 2; resolved, rejected or deleted: refused) and mirrors it into the ledger as a
local ticket, so its priority, category (from the desk's queue) and requester feed the run
policy exactly as a local ticket's do, and KPIs and `itops ticket show` see it. After the run one
internal note per ticket goes through the ledger's outbox (`outbox`): recorded first, delivered
after, retried with backoff, never posted twice.

A `Desk` is the few calls itops makes; `rt.RtDesk` is Request Tracker's (REST 2, python-rt),
`glpi.GlpiDesk` GLPI's (apirest.php, plain httpx2), `zammad.ZammadDesk` Zammad's (zammad_py),
`servicenow.ServiceNowDesk` ServiceNow's (pysnc), `jira.JiraDesk` Jira Service Management's
(the `jira` library).
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

SYSTEMS = (
    "rt",
    "glpi",
    "zammad",
    "servicenow",
    "jira",
)  # implemented; the other desks' id forms: docs/itsm.md
# desk → its ticket ids as itops takes them (RT shows `#123`; itops says RT-123)
ID_FORMS = {
    "rt": re.compile(r"RT-([1-9][0-9]{0,9})"),
    "glpi": re.compile(r"GLPI-([1-9][0-9]{0,9})"),  # GLPI shows its ticket id: 45
    "zammad": re.compile(r"Z-([1-9][0-9]{0,19})"),  # Zammad's ticket number (31001), not its id
    "servicenow": re.compile(r"(INC[0-9]{7,12})"),  # an incident's number, as ServiceNow shows it
    "jira": re.compile(r"([A-Z][A-Z0-9_]{0,29}-[1-9][0-9]{0,9})"),  # the issue key: ITSD-17
}
# desk → the adapter class ("module:Class"), imported only when that desk is opened
ADAPTERS = {
    "rt": "toolkit.itsm.rt:RtDesk",
    "glpi": "toolkit.itsm.glpi:GlpiDesk",
    "zammad": "toolkit.itsm.zammad:ZammadDesk",
    "servicenow": "toolkit.itsm.servicenow:ServiceNowDesk",
    "jira": "toolkit.itsm.jira:JiraDesk",
}
DEFAULT_PRIORITIES = {"P1": 90, "P2": 50, "P3": 20, "P4": 0}  # the lowest desk value of each
DEFAULT_CLOSED = ("resolved", "rejected", "deleted")
DEFAULT_WAITING = ("stalled",)
DEFAULT_RESOLVED = ("resolved",)
DEFAULT_TIMEOUT = 10.0
DEFAULT_ATTEMPTS = 20
# desk → its defaults where they are not RT's (the keys of [itsm] they stand for)
DESK_DEFAULTS: dict[str, dict[str, Any]] = {
    # GLPI: priority 1 very low … 5 very high, 6 major; statuses as named by GlpiDesk
    "glpi": {
        "priorities": {"P1": 5, "P2": 4, "P3": 3, "P4": 0},
        "closed_states": ("solved", "closed"),
        "waiting_states": ("pending",),
        "resolved_states": ("solved",),
    },
    # Zammad: priority 1 low, 2 normal, 3 high (P1 needs a 4th, or [itsm.priorities] P1 = 3)
    "zammad": {
        "priorities": {"P1": 4, "P2": 3, "P3": 2, "P4": 0},
        "closed_states": ("closed", "merged", "removed"),
        "waiting_states": ("pending reminder", "pending close"),
        "resolved_states": ("closed",),
    },
    # ServiceNow: priority 1 Critical … 5 Planning; states by their labels (ServiceNowDesk)
    "servicenow": {
        "priority_names": {"1": "P1", "2": "P2", "3": "P3", "4": "P4", "5": "P4"},
        "closed_states": ("resolved", "closed", "canceled"),
        "waiting_states": ("on hold",),
        "resolved_states": ("resolved",),
    },
    # Jira SM: priorities and statuses by name (any case; a project's own names via [itsm])
    "jira": {
        "priority_names": {
            "highest": "P1",
            "high": "P2",
            "medium": "P3",
            "low": "P4",
            "lowest": "P4",
        },
        "closed_states": ("resolved", "closed", "done", "canceled", "cancelled", "declined"),
        "waiting_states": ("waiting for customer", "pending"),
        "resolved_states": ("resolved", "done"),
    },
}
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
    replied (a reply to the requester, by anyone but the desk itself), status, priority,
    queue or survey; `old`/`new` the desk's own values (a status name, a priority value, a
    queue name; a survey: its comment and its score 1–5 as text). `key`: the dedupe key of
    its ticket event when the desk's step id is not one (a survey answered later than the
    ticket's last step: GLPI's `glpi-survey-<its id>`); empty: `<system>-<txn>`.
    """

    ticket: str  # itops' form: RT-123
    txn: int
    at: float  # epoch seconds
    by: str  # the desk's user name of who did it (hostile text)
    what: str
    old: str = ""
    new: str = ""
    key: str = ""


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
    app_token: str | None = None  # GLPI: the API client's App-Token (a reference)
    ca_bundle: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_attempts: int = DEFAULT_ATTEMPTS
    deliver: str = "detach"  # DELIVERY_MODES
    priorities: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PRIORITIES))
    priority_names: Mapping[str, str] = field(default_factory=dict)  # desk name → P1..P4
    projects: tuple[str, ...] = ()  # Jira: the project keys whose issues are the desk's (all)
    categories: Mapping[str, str] = field(default_factory=dict)
    closed_states: tuple[str, ...] = DEFAULT_CLOSED
    waiting_states: tuple[str, ...] = DEFAULT_WAITING
    resolved_states: tuple[str, ...] = DEFAULT_RESOLVED
    survey_metric: str = ""  # ServiceNow: the asmt_metric whose answer is the score
    survey_comment_metric: str = ""  # ServiceNow: the string asmt_metric that is the comment

    @classmethod
    def of(cls, workspace: Workspace) -> ItsmSettings:
        raw: Mapping[str, Any] = workspace.section("itsm")
        ca = raw.get("ca_bundle")
        desk = DESK_DEFAULTS.get(str(raw.get("system")), {})
        return cls(
            system=raw.get("system"),
            url=str(raw.get("url", "")).rstrip("/"),
            user=str(raw.get("user", "")),
            password=raw.get("password"),
            token=raw.get("token"),
            app_token=raw.get("app_token"),
            ca_bundle=workspace.path(ca) if ca else None,
            timeout=float(raw.get("timeout", DEFAULT_TIMEOUT)),
            max_attempts=int(raw.get("max_attempts", DEFAULT_ATTEMPTS)),
            deliver=str(raw.get("deliver", "detach")),
            priorities={
                **desk.get("priorities", DEFAULT_PRIORITIES),
                **dict(raw.get("priorities", {})),
            },
            priority_names={
                **desk.get("priority_names", {}),
                **{str(k).casefold(): str(v) for k, v in raw.get("priority_names", {}).items()},
            },
            projects=tuple(str(p) for p in raw.get("projects", ())),
            categories={str(k).casefold(): str(v) for k, v in raw.get("categories", {}).items()},
            closed_states=tuple(
                raw.get("closed_states", desk.get("closed_states", DEFAULT_CLOSED))
            ),
            waiting_states=tuple(
                raw.get("waiting_states", desk.get("waiting_states", DEFAULT_WAITING))
            ),
            resolved_states=tuple(
                raw.get("resolved_states", desk.get("resolved_states", DEFAULT_RESOLVED))
            ),
            survey_metric=str(raw.get("survey_metric", "")),
            survey_comment_metric=str(raw.get("survey_comment_metric", "")),
        )

    @classmethod
    def for_desk(cls, system: str, **values: Any) -> ItsmSettings:
        """Settings of `system` with that desk's defaults (tests, and code without a workspace)."""
        desk = DESK_DEFAULTS.get(system, {})
        defaults = {k: v for k, v in desk.items() if k not in values}
        for name in ("priorities", "priority_names"):
            if name in defaults:
                defaults[name] = dict(defaults[name])
        return cls(system=system, **defaults, **values)

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
        if self.projects and ticket.rpartition("-")[0] not in self.projects:
            return False
        return ID_FORMS[self.system].fullmatch(ticket) is not None

    def priority(self, value: Any) -> str:
        """The desk's priority → P1..P4: by its name (`priority_names`: ServiceNow's 1–5,
        Jira's Highest…Lowest), else the first whose lowest value it reaches (RT's 0–99)."""
        named = self.priority_names.get(str(value).strip().casefold())
        if named:
            return named
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
        status = status.casefold()
        if status in _folded(self.waiting_states):
            return "waiting"
        if status in _folded(self.resolved_states):
            return "resolved"
        if status in _folded(self.closed_states):
            return "closed"
        return "open"

    def closed(self, status: str) -> bool:
        """No run may go under a ticket in this state (`closed_states`, any case)."""
        return status.casefold() in _folded(self.closed_states)

    def category(self, queue: str) -> str:
        """The desk's queue → an itops category ([itsm.categories], else the queue's name if it
        is a category, else "other")."""
        from toolkit.desk.tickets import CATEGORIES

        mapped = self.categories.get(queue.casefold())
        if mapped:
            return mapped
        return queue.casefold() if queue.casefold() in CATEGORIES else "other"


def _folded(states: Iterable[str]) -> set[str]:
    return {s.casefold() for s in states}


def number(ticket: str, system: str = "rt") -> str:
    """The desk's own number in an itops id (RT-123 → 123, GLPI-45 → 45, Z-31001 → 31001)."""
    found = ID_FORMS[system].fullmatch(ticket)
    if found is None:
        example = {"glpi": "GLPI-45", "zammad": "Z-31001", "servicenow": "INC0010042",
                   "jira": "ITSD-17"}.get(system, "RT-123")  # fmt: skip
        raise ToolkitError(
            f"{ticket!r} is not a {system.upper()} ticket id", hint=f"e.g. {example}"
        )
    return found.group(1)


@dataclass(frozen=True)
class DeskSecrets:
    """A desk's credentials, resolved: a password or a token (and GLPI's App-Token)."""

    password: Secret | None
    token: Secret | None
    app_token: Secret | None = None


def desk_secrets(settings: ItsmSettings, credentials: CredentialStore) -> DeskSecrets:
    """The configured desk's credentials, resolved (and registered with the redactor):
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
    if settings.system not in ADAPTERS:
        raise ToolkitError(
            f"[itsm] system {settings.system!r} is not implemented",
            hint=f"one of {', '.join(SYSTEMS)} (docs/itsm.md)",
        )
    app_token = None
    if settings.app_token:  # GLPI: its API client's App-Token
        app_token = credentials.resolve(settings.app_token, "[itsm] app_token")
    if settings.token:
        return DeskSecrets(None, credentials.resolve(settings.token, "[itsm] token"), app_token)
    if settings.password:
        return DeskSecrets(
            credentials.resolve(settings.password, "[itsm] password"), None, app_token
        )
    raise ToolkitError(
        "[itsm] needs password or token (a reference)",
        hint='password = "env:RT_PASSWORD" or token = "keyring:itops/rt"',
    )


def connect_desk(settings: ItsmSettings, secrets: DeskSecrets) -> Desk:
    """The configured desk's adapter for secrets already resolved (any thread); its module is
    imported only now, when that desk is opened."""
    import importlib

    module, _, name = ADAPTERS[str(settings.system)].partition(":")
    adapter = getattr(importlib.import_module(module), name)
    extra = {"app_token": secrets.app_token} if secrets.app_token is not None else {}
    desk: Desk = adapter(settings, password=secrets.password, token=secrets.token, **extra)
    return desk


def open_desk(settings: ItsmSettings, credentials: CredentialStore) -> Desk:
    """The configured desk's adapter, its secrets resolved (and registered with the redactor)."""
    return connect_desk(settings, desk_secrets(settings, credentials))

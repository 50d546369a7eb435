"""A desk's ticket looked up before a run, and mirrored into the ledger as a local ticket.

The mirror is what the run policy, KPIs and `itops ticket show` read: opened once with the desk's
mapped priority, category (its queue) and requester; later a changed priority or category is
recorded as `ticket.updated`, and a ticket the desk reopened as `ticket.reopened`. The desk's
text (subject, requester) is stored as the desk sent it and shown through `textsafe`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from toolkit.itsm import (
    DeskSecrets,
    DeskTicket,
    DeskUnavailable,
    ItsmSettings,
    TicketClosed,
    connect_desk,
    desk_secrets,
)

if TYPE_CHECKING:
    from toolkit.desk.sla import Policy
    from toolkit.desk.tickets import TicketSummary
    from toolkit.ledger import Ledger
    from toolkit.secrets.credentials import CredentialStore

log = logging.getLogger("itops.itsm")


@dataclass(frozen=True)
class Looked:
    ticket: DeskTicket | None  # None: the desk was unreachable and the mirror was used
    warning: str = ""


class Lookup:
    """A desk ticket's look-up under way in a thread of its own: started as soon as the command
    knows the ticket, so the desk answers while the inventory, the task and the transports are
    prepared; `result()` waits for it, before the run policy reads the ticket and before
    anything is recorded or changed. The secrets are resolved in the caller's thread (a prompt
    must be); the thread only asks the desk (the adapter's import, one request)."""

    def __init__(self, settings: ItsmSettings, credentials: CredentialStore, ticket: str) -> None:
        self.ticket = ticket
        self._settings = settings
        self._found: DeskTicket | None = None
        self._error: BaseException | None = None
        secrets = desk_secrets(settings, credentials)
        self._thread = threading.Thread(
            target=self._ask, args=(secrets,), name=f"desk look-up {ticket}", daemon=True
        )
        self._thread.start()

    def _ask(self, secrets: DeskSecrets) -> None:
        try:
            desk = connect_desk(self._settings, secrets)
            try:
                self._found = desk.lookup(self.ticket)
            finally:
                desk.close()
        except BaseException as exc:  # raised in the caller's thread, by result()
            self._error = exc

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> DeskTicket:
        """The desk's ticket (the look-up's DeskError raised here)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._found is not None
        return self._found


def lookup_and_mirror(
    settings: ItsmSettings,
    credentials: CredentialStore,
    ledger: Ledger,
    ticket: str,
    policy: Policy,
    *,
    started: Lookup | None = None,
) -> Looked:
    """Look `ticket` up at the desk (TicketUnknown / TicketClosed / DeskAuthError raise: exit 2)
    and bring its mirror up to date. A desk that is unreachable is tolerated only for a ticket
    already mirrored (its last known priority then decides). `started`: the look-up begun
    earlier (`Lookup`), waited for here."""
    pending = started if started is not None else Lookup(settings, credentials, ticket)
    try:
        found = pending.result()
    except DeskUnavailable as exc:
        known = last_mirrored(ledger, ticket, policy)
        if known is None:
            raise DeskUnavailable(
                f"{exc.message}: cannot look {ticket} up, and it was never mirrored here",
                hint="try again when the desk answers (itops itsm check)",
            ) from exc
        warning = f"{exc.message}; going on with {ticket} as last mirrored ({known.priority})"
        log.warning("%s", warning)
        return Looked(None, warning)
    if found.closed:
        raise TicketClosed(
            f"{ticket} is {found.status} in {settings.system.upper() if settings.system else 'the desk'}"
            f" ({found.subject[:80]!r}): no run goes under a closed ticket",
            hint="reopen it at the desk first, or open a new ticket there for this work",
        )
    mirror(ledger, found, policy)
    return Looked(found)


def mirror(ledger: Ledger, found: DeskTicket, policy: Policy) -> None:
    """Open the local mirror of a desk ticket, or record what changed at the desk since."""
    from toolkit.desk.tickets import TicketError, ensure, record

    opened = ensure(
        ledger,
        found.id,
        category=found.category,
        priority=found.priority,
        summary=found.subject[:500] or None,
        source=f"{found.id} ({found.queue})",
        requester=found.requester or None,
        channel="other",
        at=min(found.created, time.time()) if found.created else None,
    )
    if opened is not None:
        return
    known = last_mirrored(ledger, found.id, policy)
    if known is None:
        return
    try:
        if known.state in ("resolved", "confirmed", "closed"):
            record(
                ledger,
                found.id,
                "reopened",
                {"reason": f"open at the desk ({found.status})"},
                policy,
            )
        changed = {
            k: v
            for k, v in (("priority", found.priority), ("category", found.category))
            if getattr(known, k) != v
        }
        if changed:
            record(
                ledger,
                found.id,
                "updated",
                {**changed, "reason": f"changed at the desk (priority {found.desk_priority})"},
                policy,
            )
    except TicketError as exc:  # the mirror is best effort; the desk's values still decide
        log.warning("%s: mirror not updated: %s", found.id, exc.message)


def last_mirrored(ledger: Ledger, ticket: str, policy: Policy) -> TicketSummary | None:
    """The mirror's state, priority and category as its ticket events leave them. Only those
    events are read: they alone decide these (the records of the runs under the ticket — a few
    hundred per run — only time its response), and every run under the ticket asks again."""
    from toolkit.desk.tickets import KINDS, from_records, summarize

    events, _ = from_records(ledger.records(ticket=ticket, kinds=KINDS))
    return summarize(ticket, events, (), policy)

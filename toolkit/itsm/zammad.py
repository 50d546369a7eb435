"""Zammad (5, 6) through its REST API, /api/v1/, with zammad_py (the maintained client).

zammad_py (3.2, 2026) holds a `requests` session (token auth `Token token=…`, or basic auth) and
wraps the calls used here: tickets/search, tickets/N, ticket_articles (create), ticket_articles/
by_ticket/N, users/me. What it lacks is added on its own session, as the RT adapter does with
python-rt's: a timeout on every request (an adapter mounted on the session: zammad_py sets none),
the CA bundle (also set on each request: requests lets REQUESTS_CA_BUNDLE override a session's
`verify`), and a response hook that keeps the last status and `Retry-After` — zammad_py raises
`HTTPError(response.text)`, which has lost the status. The one call it does not wrap, GET
ticket_history/N, goes through that same session. Its exceptions become DeskErrors here:
nothing of zammad_py or requests leaves this module.

itops' id is `Z-` and the ticket's *number* (what Zammad shows, 31001), not its database id: a
ticket is found by `tickets/search?query=number:31001` (Zammad's search: its Elasticsearch).
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from toolkit.itsm import (
    ID_FORMS,
    Change,
    DeskAuthError,
    DeskError,
    DeskTicket,
    DeskUnavailable,
    ItsmSettings,
    TicketUnknown,
    number,
)
from toolkit.itsm.http import pinned_adapter, retry_after, unanswered

if TYPE_CHECKING:
    from toolkit.secrets.credentials import Secret

log = logging.getLogger("itops.itsm")
_LEADING = re.compile(r"^\s*(\d+)")  # "3 high" → 3
PAGE = 100


class ZammadDesk:
    system = "zammad"

    def __init__(
        self, settings: ItsmSettings, *, password: Secret | None, token: Secret | None
    ) -> None:
        from zammad_py import ZammadAPI

        self.settings = settings
        self.url = settings.url
        try:
            self._api = ZammadAPI(
                url=f"{self.url}/api/v1/",
                username=settings.user or None,
                password=password.reveal() if password else None,
                http_token=token.reveal() if token else None,
            )
        except Exception as exc:  # zammad_py's ConfigException, ValueError
            raise DeskError(f"cannot use the Zammad at {self.url}: {exc}") from exc
        ca = str(settings.ca_bundle) if settings.ca_bundle else None
        session = self._api.session
        session.mount("http://", pinned_adapter(settings.timeout, ca))
        session.mount("https://", pinned_adapter(settings.timeout, ca))
        session.verify = ca or True
        session.hooks["response"].append(self._remember)
        self._status = 0
        self._retry_after: float | None = None
        self._said = ""
        self._ids: dict[str, int] = {}  # Z-number → Zammad's ticket id
        self._known: dict[str, dict[str, Any]] = {}  # tickets as the last search read them
        self._me: str | None = None

    def _remember(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        self._status = response.status_code
        self._retry_after = None
        self._said = ""
        if response.status_code >= 400:
            self._said = response.text[:200]
            value = response.headers.get("Retry-After")
            if value and response.status_code in (429, 503):
                self._retry_after = retry_after(value)
        return response

    # -- the Desk calls ----------------------------------------------------------------------
    def lookup(self, ticket: str) -> DeskTicket:
        return self._ticket(ticket, self._find(ticket))

    def _find(self, ticket: str) -> dict[str, Any]:
        n = number(ticket, "zammad")
        found = self._call(
            f"look up {ticket}",
            lambda: self._api.ticket.search(f"number:{n}", filters={"per_page": 10}),
            ticket=ticket,
        )
        for item in _items(found):
            if str(item.get("number")) == n:
                self._ids[ticket] = int(item["id"])
                self._known[ticket] = item
                return item
        raise TicketUnknown(
            f"{ticket}: Zammad at {self.url} has no such ticket",
            hint="check the number (Zammad shows it as #31001); or the itops account's groups "
            "do not let it see the ticket",
        )

    def _id(self, ticket: str) -> int:
        if ticket not in self._ids:
            self._find(ticket)
        return self._ids[ticket]

    def _ticket(self, ticket: str, item: dict[str, Any]) -> DeskTicket:
        state = str(item.get("state") or "")
        group = str(item.get("group") or "")
        customer = str(item.get("customer") or "")
        priority = _priority(item.get("priority_id"), item.get("priority"))
        return DeskTicket(
            id=ticket,
            number=number(ticket, "zammad"),
            subject=str(item.get("title") or ""),
            status=state,
            priority=self.settings.priority(priority),
            desk_priority=priority,
            queue=group,
            category=self.settings.category(group),
            requester=customer,
            closed=state in self.settings.closed_states,
            created=_epoch(item.get("created_at")),
            requesters=(customer,) if customer else (),
        )

    def find_note(self, ticket: str, key: str) -> str | None:
        for article in self._articles(ticket):
            if key in str(article.get("body") or ""):
                return f"article {article.get('id')}"
        return None

    def _articles(self, ticket: str) -> list[dict[str, Any]]:
        n = self._id(ticket)
        found = self._call(
            f"read {ticket}'s articles", lambda: self._api.ticket.articles(n), ticket=ticket
        )
        return [a for a in found or [] if isinstance(a, dict)]

    def add_note(self, ticket: str, text: str) -> str:
        n = self._id(ticket)
        body = {
            "ticket_id": n,
            "body": text,
            "content_type": "text/plain",
            "type": "note",
            "internal": True,
        }
        made = self._call(
            f"add a note to {ticket}",
            lambda: self._api.ticket_article.create(body),
            ticket=ticket,
            send=True,
        )
        return f"article {made.get('id') if isinstance(made, dict) else '?'}"

    def resolve(self, ticket: str) -> str:
        before = self.lookup(ticket)
        if before.status in self.settings.resolved_states:
            return before.status  # (a retry after Zammad took the change)
        n = self._id(ticket)
        state = self.settings.resolved_states[0] if self.settings.resolved_states else "closed"
        self._call(
            f"resolve {ticket}",
            lambda: self._api.ticket.update(n, {"state": state}),
            ticket=ticket,
            send=True,
        )
        after = self.lookup(ticket)
        if after.status not in self.settings.resolved_states:
            raise DeskError(
                f"Zammad left {ticket} {after.status!r}: its workflow does not allow closing it now"
            )
        return after.status

    def check(self) -> list[str]:
        tls = "TLS verified" if self.url.startswith("https://") else "plain HTTP (no TLS)"
        if self.url.startswith("https://") and self.settings.ca_bundle:
            tls += f" against {self.settings.ca_bundle}"
        me = self._call("read the signed-in user", lambda: self._api.user.me())
        login = str(me.get("login") if isinstance(me, dict) else "?")
        self._me = login
        return [f"reached {self.url}/api/v1/ ({tls})", f"signed in as {login}"]

    # -- the sync: history steps and tickets in bulk ------------------------------------------
    def changes(self, after: int, since: float | None = None) -> Iterator[Change]:
        """The tickets by updated_at, newest first (tickets/search), each with its history
        (ticket_history/N): the steps whose history id is after `after`. Zammad's history ids
        rise across all tickets, so they are the steps' ids; a ticket's updated_at moves with
        each step. The walk stops at the first ticket updated well before a step already
        synced (or before `since`)."""
        query = "*"
        if since is not None:
            query = "updated_at:>=" + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since - 1))
        found: list[Change] = []
        synced_at: float | None = None
        margin = 300.0
        filters = {"per_page": PAGE, "sort_by": "updated_at", "order_by": "desc"}

        page = 1
        while True:
            at = {**filters, "page": page}
            batch = _items(
                self._call(
                    "search the tickets",
                    functools.partial(self._api.ticket.search, query, filters=at),
                )
            )
            for item in batch:
                ticket = f"Z-{item.get('number')}"
                if not ID_FORMS["zammad"].fullmatch(ticket) or not item.get("id"):
                    continue
                self._ids[ticket] = int(item["id"])
                self._known[ticket] = item
                modified = _epoch(item.get("updated_at"))
                if synced_at is not None and modified is not None and modified < synced_at - margin:
                    yield from sorted(found, key=lambda c: c.txn)
                    return
                for change in self.history(ticket):
                    if change.txn > after and (since is None or change.at >= since):
                        found.append(change)
                    elif change.txn <= after:
                        synced_at = max(synced_at or change.at, change.at)
            if len(batch) < PAGE:
                break
            page += 1
        yield from sorted(found, key=lambda c: c.txn)

    def history(self, ticket: str) -> list[Change]:
        n = self._id(ticket)
        api = self._api

        def read() -> Any:
            response = api.session.get(f"{api.url}ticket_history/{n}")
            return api.ticket._raise_or_return_json(response)

        data = self._call(f"read {ticket}'s history", read, ticket=ticket)
        if not isinstance(data, dict):
            return []
        users = (data.get("assets") or {}).get("User") or {}
        articles: dict[str, dict[str, Any]] | None = None
        found: list[Change] = []
        for entry in data.get("history") or []:
            if not isinstance(entry, dict):
                continue
            if entry.get("history_object") == "Ticket::Article" and articles is None:
                articles = {str(a.get("id")): a for a in self._articles(ticket)}
            change = self._change(ticket, entry, users, articles or {})
            if change is not None:
                found.append(change)
        return sorted(found, key=lambda c: c.txn)

    def _change(
        self,
        ticket: str,
        entry: dict[str, Any],
        users: dict[str, Any],
        articles: dict[str, dict[str, Any]],
    ) -> Change | None:
        try:
            txn = int(entry.get("id") or 0)
        except (TypeError, ValueError):
            return None
        at = _epoch(entry.get("created_at"))
        if txn <= 0 or at is None:
            return None
        user = users.get(str(entry.get("created_by_id"))) or {}
        by = str(user.get("login") or entry.get("created_by_id") or "")
        kind, what = entry.get("history_type"), entry.get("history_object")
        name = entry.get("history_attribute")
        old, new = str(entry.get("value_from") or ""), str(entry.get("value_to") or "")
        if what == "Ticket" and kind == "created":
            return Change(ticket, txn, at, by, "created")
        if what == "Ticket::Article" and kind == "created":
            article = articles.get(str(entry.get("o_id"))) or {}
            if article.get("sender") != "Agent" or article.get("internal") or by == self._login():
                return None  # a customer's, an internal note (itops' own), the system's
            return Change(ticket, txn, at, by, "replied")
        if what != "Ticket" or kind != "updated":
            return None
        if name == "state":
            return Change(ticket, txn, at, by, "status", old, new)
        if name == "priority":
            return Change(
                ticket, txn, at, by, "priority",
                _priority(entry.get("id_from"), old), _priority(entry.get("id_to"), new),
            )  # fmt: skip
        if name == "group":
            return Change(ticket, txn, at, by, "queue", old, new)
        return None

    def _login(self) -> str:
        if self._me is None:
            me = self._call("read the signed-in user", lambda: self._api.user.me())
            self._me = str(me.get("login") if isinstance(me, dict) else self.settings.user)
        return self._me

    def tickets(self, ids: Iterable[str]) -> dict[str, DeskTicket]:
        found: dict[str, DeskTicket] = {}
        for ticket in sorted(set(ids)):
            item = self._known.get(ticket)
            try:
                found[ticket] = self._ticket(ticket, item) if item else self.lookup(ticket)
            except TicketUnknown:
                continue
        return found

    def close(self) -> None:
        import atexit

        atexit.unregister(self._api.session.close)  # (zammad_py registers it: one per desk opened)
        self._api.session.close()

    # -- errors ------------------------------------------------------------------------------
    def _call(
        self, what: str, call: Callable[[], Any], *, ticket: str | None = None, send: bool = False
    ) -> Any:
        """Run one zammad_py call; its failures as DeskErrors. `send`: the call changes the
        ticket, so a timeout leaves it unknown whether Zammad did it."""
        import requests

        began = time.monotonic()
        self._status = 0
        try:
            return call()
        except requests.HTTPError as exc:
            raise self._refused(what, ticket) from exc
        except requests.exceptions.SSLError as exc:
            raise DeskError(
                f"Zammad at {self.url}: its TLS certificate is not trusted ({exc})",
                hint="for a private CA set [itsm] ca_bundle to its PEM file",
            ) from exc
        except requests.RequestException as exc:
            raise unanswered("Zammad", self.url, what, exc, began=began, send=send) from exc
        except ValueError as exc:  # a body that is not JSON
            raise DeskError(f"Zammad at {self.url}: cannot {what}: {exc}") from exc

    def _refused(self, what: str, ticket: str | None) -> DeskError:
        status, said = self._status, self._said
        if status == 401:
            return DeskAuthError(
                f"Zammad at {self.url} refused the credentials of "
                f"{self.settings.user or 'the token'!r} (HTTP 401) to {what}",
                hint="check [itsm] token (an access token) or user and password; then: "
                "itops itsm check",
            )
        if status == 403:
            return DeskAuthError(
                f"Zammad at {self.url}: the itops account may not {what} (HTTP 403): {said}",
                hint="the permissions the itops account needs: docs/itsm.md",
            )
        if status == 404 and ticket is not None:
            return TicketUnknown(
                f"{ticket}: Zammad at {self.url} has no such ticket",
                hint="check the number; or the itops account's groups do not let it see it",
            )
        if status == 429 or status >= 500:
            return DeskUnavailable(
                f"Zammad at {self.url} answered HTTP {status} to {what}",
                retry_after=self._retry_after,
            )
        return DeskError(f"Zammad at {self.url} answered HTTP {status} to {what}: {said}")


def _items(found: Any) -> list[dict[str, Any]]:
    """A zammad_py page (or list) as its items."""
    if found is None or isinstance(found, bytes | str | dict):
        return []
    return [item for item in found if isinstance(item, dict)]


def _priority(ident: Any, name: Any) -> str:
    """Zammad's priority as a number: its id, else the leading number of its name (2 normal)."""
    if ident not in (None, ""):
        return str(ident)
    found = _LEADING.match(str(name or ""))
    return found.group(1) if found else str(name or "")


def _epoch(value: Any) -> float | None:
    """Zammad's time (2026-12-04T10:00:00.000Z, UTC) → epoch seconds."""
    from datetime import datetime

    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None

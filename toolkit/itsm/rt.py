"""Request Tracker 5 through REST 2, with python-rt (`rt.rest2`, the maintained client).

python-rt verifies TLS (a CA bundle file for a private CA), takes a timeout per request and
basic auth or an RT auth token (`Authorization: token …`, RT::Authen::Token, core in RT 5).
What it does not expose — the `Retry-After` of a 429 — is read by a response hook on its HTTP
session. Its exceptions become DeskErrors here: nothing of python-rt leaves this module.

The look-up — the one call a run waits for, made in a thread beside the command's start — is a
single `GET ticket/N` through the standard library (urllib: the same auth header, timeout, TLS
verification, proxy variables, no redirects followed), with python-rt's status mapping: loading
python-rt's HTTP stack (httpx2, httpcore2, importlib.metadata) and parsing the system's CA bundle
for an http:// URL cost ≈0.1 s of CPU, more than the request (issue 17). python-rt's client is
opened only when another call needs it (a note, a resolve, the sync, `itsm check`).

Calls used: GET ticket/N (with the queue's name), POST ticket/N/comment (an internal comment:
RT never mails it to the requester), POST ticket/N/attachments with a Content LIKE search (the
dedupe key), PUT ticket/N {Status: resolved}, GET queues/all (check).
"""

from __future__ import annotations

import base64
import logging
import sys
import time
from collections.abc import Iterable, Iterator
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
from toolkit.itsm.http import retry_after

if TYPE_CHECKING:
    import ssl

    from toolkit.secrets.credentials import Secret

log = logging.getLogger("itops.itsm")


class RtDesk:
    system = "rt"

    def __init__(
        self, settings: ItsmSettings, *, password: Secret | None, token: Secret | None
    ) -> None:
        self.settings = settings
        self.url = settings.url
        self._password = password
        self._token = token
        self._client: Any = None  # python-rt's Rt, opened on first use (`_rt`)
        self._tls: ssl.SSLContext | None = None  # the look-up's, built once (`_context`)
        self._retry_after: float | None = None

    @property
    def _rt(self) -> Any:
        """python-rt's client (its httpx2 session): imported and opened on first use."""
        if self._client is None:
            import httpx2
            import rt.rest2

            settings, password, token = self.settings, self._password, self._token
            auth = httpx2.BasicAuth(settings.user, password.reveal()) if password else None
            verify: str | bool = str(settings.ca_bundle) if settings.ca_bundle else True
            try:
                client = rt.rest2.Rt(
                    f"{self.url}/REST/2.0/",
                    http_auth=auth,
                    token=token.reveal() if token else None,
                    verify_cert=verify,
                    http_timeout=settings.timeout,  # type: ignore[arg-type]  # (a float is fine)
                )
            except (ValueError, OSError) as exc:  # a bad URL, an unreadable CA bundle
                raise DeskError(f"cannot use the RT at {self.url}: {exc}") from exc
            client.session.event_hooks["response"].append(self._remember)
            self._client = client
        return self._client

    def _remember(self, response: Any) -> None:
        self._retry_after = None
        if response.status_code in (429, 503):
            value = response.headers.get("Retry-After")
            if value:
                self._retry_after = retry_after(value)

    # -- the Desk calls ----------------------------------------------------------------------
    def lookup(self, ticket: str) -> DeskTicket:
        """GET ticket/N with its queue's name and its requestors' addresses (what python-rt's
        get_ticket asks), through the standard library (see the module's docstring)."""
        n = number(ticket)
        query = {"fields[Queue]": "Name", "fields[Requestor]": "EmailAddress,Name"}
        data = self._call(f"look up {ticket}", lambda: self._plain_get(f"ticket/{n}", query),
                          ticket=ticket)  # fmt: skip
        return self._ticket(ticket, data)

    def _plain_get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        """One GET of REST 2 through urllib, its failures raised as python-rt raises them (so
        `_call` says what they mean): the same basic auth or token, timeout and TLS check as the
        python-rt client, the proxy variables honoured as httpx does, no redirect followed."""
        import http.client
        import json
        import urllib.error
        import urllib.parse
        import urllib.request

        import rt.exceptions as rte

        if self._password is not None:
            pair = f"{self.settings.user}:{self._password.reveal()}".encode()
            authorization = "Basic " + base64.b64encode(pair).decode("ascii")
        elif self._token is not None:
            authorization = f"token {self._token.reveal()}"
        else:
            authorization = ""
        url = f"{self.url}/REST/2.0/{path}?{urllib.parse.urlencode(params)}"
        headers = {"Accept": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        try:
            handlers: list[urllib.request.BaseHandler] = [_no_redirect()]
            if url.startswith("https://"):
                handlers.append(urllib.request.HTTPSHandler(context=self._context()))
            opener = urllib.request.build_opener(*handlers)
            request = urllib.request.Request(url, headers=headers)
        except (ValueError, OSError) as exc:  # a bad URL, an unreadable CA bundle
            raise DeskError(f"cannot use the RT at {self.url}: {exc}") from exc
        self._retry_after = None
        try:
            with opener.open(request, timeout=self.settings.timeout) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as answer:  # RT answered, not with the ticket
            status, body = answer.code, answer.read()
            if status in (429, 503) and answer.headers.get("Retry-After"):
                self._retry_after = retry_after(answer.headers["Retry-After"])
            answer.close()
        except urllib.error.URLError as exc:  # (its reason: the socket's, TLS's error)
            reason = exc.reason if isinstance(exc.reason, BaseException) else exc
            raise ConnectionError("Transport error", reason) from exc
        except (OSError, http.client.HTTPException) as exc:  # a timeout reading, a cut
            raise ConnectionError("Transport error", exc) from exc
        except ValueError:  # (its text would show the header it refused: the credentials)
            raise DeskError(
                f"cannot use the RT at {self.url}: a control character in [itsm] user or in "
                "the password/token"
            ) from None
        if status == 400:
            try:
                message = json.loads(body).get("message") or "Bad request"
            except (ValueError, AttributeError):
                message = "Bad request"
            raise rte.BadRequestError(str(message))
        if status == 401:
            raise rte.AuthorizationError("401")
        if status == 404:
            raise rte.NotFoundError("404")
        if status not in (200, 201):
            raise rte.UnexpectedResponseError(
                f"HTTP {status}",
                status_code=status,
                response_message=body[:200].decode(errors="replace"),
            )
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise rte.UnexpectedResponseError("not JSON", status_code=status) from exc
        if not isinstance(data, dict):
            raise rte.UnexpectedResponseError("not a JSON object", status_code=status)
        return data

    def _context(self) -> ssl.SSLContext:
        """The look-up's TLS context, built once: `ca_bundle` if set (as python-rt does), else
        the system's CAs (SSL_CERT_FILE / SSL_CERT_DIR honoured, as httpx2 does)."""
        if self._tls is None:
            import ssl

            cafile = str(self.settings.ca_bundle) if self.settings.ca_bundle else None
            self._tls = ssl.create_default_context(cafile=cafile)
        return self._tls

    def _ticket(self, ticket: str, data: dict[str, Any]) -> DeskTicket:
        queue = data.get("Queue") or {}
        queue_name = str(queue.get("Name") or queue.get("id") or "")
        requestors = [r for r in data.get("Requestor") or [] if isinstance(r, dict)]
        requester = ""
        if requestors:
            first = requestors[0]
            requester = str(first.get("EmailAddress") or first.get("Name") or first.get("id") or "")
        status = str(data.get("Status") or "")
        return DeskTicket(
            id=ticket,
            number=number(ticket),
            subject=str(data.get("Subject") or ""),
            status=status,
            priority=self.settings.priority(data.get("Priority")),
            desk_priority=str(data.get("Priority") or ""),
            queue=queue_name,
            category=self.settings.category(queue_name),
            requester=requester,
            closed=self.settings.closed(status),
            created=_epoch(data.get("Created")),
            requesters=tuple(str(r.get("Name") or r.get("id") or "") for r in requestors),
        )

    def find_note(self, ticket: str, key: str) -> str | None:
        n = number(ticket)
        found = self._call(
            f"search {ticket} for {key}",
            lambda: self._rt.get_attachments(
                n,
                query_filter=[{"field": "Content", "operator": "LIKE", "value": key}],
                query_format=["TransactionId"],
            ),
            ticket=ticket,
        )
        for item in found:
            return f"transaction {item.get('TransactionId') or '?'}"
        return None

    def add_note(self, ticket: str, text: str) -> str:
        n = number(ticket)
        self._call(
            f"comment on {ticket}",
            lambda: self._rt.comment(n, content=text),
            ticket=ticket,
            send=True,
        )
        return "comment"

    def resolve(self, ticket: str) -> str:
        n = number(ticket)
        self._call(
            f"resolve {ticket}",
            lambda: self._rt.edit_ticket(n, Status="resolved"),
            ticket=ticket,
            send=True,
        )
        after = self.lookup(ticket)
        if after.status != "resolved":
            raise DeskError(
                f"RT left {ticket} {after.status!r}: its lifecycle does not allow resolving it now"
            )
        return after.status

    def check(self) -> list[str]:
        tls = "TLS verified" if self.url.startswith("https://") else "plain HTTP (no TLS)"
        if self.url.startswith("https://") and self.settings.ca_bundle:
            tls += f" against {self.settings.ca_bundle}"
        queues = self._call("list queues", lambda: self._rt.get_all_queues())
        names = ", ".join(str(q.get("Name") or q.get("id")) for q in queues[:10]) or "none"
        return [
            f"reached {self.url}/REST/2.0/ ({tls})",
            f"signed in as {self.settings.user or 'the token'}; queues it sees: {names}",
        ]

    # -- the sync: history steps and tickets in bulk ------------------------------------------
    def changes(self, after: int, since: float | None = None) -> Iterator[Change]:
        """POST transactions (a JSON search: every ticket's transactions after `after`, by id)."""
        search: list[dict[str, str]] = [
            {"field": "ObjectType", "value": "RT::Ticket"},
            {"field": "id", "operator": ">", "value": str(after)},
        ]
        search += [  # only what `_change` reads: half of RT's transactions are mail records
            {"field": "Type", "operator": "=", "value": kind, "entry_aggregator": "OR"}
            for kind in READ_TYPES
        ]
        if since is not None:  # (REST 2 compares a JSON search's dates as UTC)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(since))
            search.append({"field": "Created", "operator": ">=", "value": stamp})
        queues: dict[str, str] | None = None
        params = {"fields": TXN_FIELDS, "orderby": "id", "order": "ASC"}
        for item in self._pages("read the tickets' history", "transactions", params, search):
            ticket = f"RT-{item.get('ObjectId')}"
            if not ID_FORMS["rt"].fullmatch(ticket):
                continue
            if item.get("Field") == "Queue" and queues is None:
                queues = self._queue_names()
            change = _change(ticket, item, queues or {})
            if change is not None:
                yield change

    def history(self, ticket: str) -> list[Change]:
        n = number(ticket)
        params = {"fields": TXN_FIELDS}
        items = list(self._pages(f"read {ticket}'s history", f"ticket/{n}/history", params))
        queues = self._queue_names() if any(i.get("Field") == "Queue" for i in items) else {}
        found = [_change(ticket, item, queues) for item in items]
        return sorted((c for c in found if c is not None), key=lambda c: c.txn)

    def tickets(self, ids: Iterable[str]) -> dict[str, DeskTicket]:
        """GET tickets?query=id = … OR id = … (TicketSQL, 50 a request); a ticket the search does
        not return (RT leaves deleted tickets out) is read on its own."""
        wanted = sorted({number(t) for t in ids}, key=int)
        found: dict[str, DeskTicket] = {}
        params = {
            "fields": "Subject,Status,Priority,Created,Queue,Requestor",
            "fields[Queue]": "Name",
            "fields[Requestor]": "Name,EmailAddress",
        }
        for start in range(0, len(wanted), 50):
            chunk = wanted[start : start + 50]
            query = " OR ".join(f"id = {n}" for n in chunk)
            for item in self._pages("search tickets", "tickets", {**params, "query": query}):
                ticket = f"RT-{item.get('id')}"
                if ID_FORMS["rt"].fullmatch(ticket):
                    found[ticket] = self._ticket(ticket, item)
        for n in wanted:
            if f"RT-{n}" not in found:
                try:
                    found[f"RT-{n}"] = self.lookup(f"RT-{n}")
                except TicketUnknown:
                    continue
        return found

    def _queue_names(self) -> dict[str, str]:
        queues = self._call("list queues", lambda: self._rt.get_all_queues(include_disabled=True))
        return {str(q.get("id")): str(q.get("Name") or q.get("id")) for q in queues}

    def _pages(
        self, what: str, path: str, params: dict[str, str], search: Any = None
    ) -> Iterator[dict[str, Any]]:
        """A REST 2 collection, 100 a page (python-rt has no transaction search)."""
        page = 1
        while True:
            query = {**params, "page": str(page), "per_page": "100"}
            data = self._call(what, lambda q=query: self._get(path, q, search))
            items = data.get("items") or []
            yield from items
            if not items or page >= int(data.get("pages") or 0):
                return
            page += 1

    def _get(self, path: str, params: dict[str, str], search: Any) -> dict[str, Any]:
        """One page, through python-rt's HTTP session (its auth, TLS and timeout); HTTP errors
        as python-rt's exceptions, so `_call` says what they mean."""
        import httpx2
        import rt.exceptions as rte

        try:
            response = self._rt.session.request(
                "POST" if search is not None else "GET",
                f"{self._rt.url}{path}",
                params=params,
                json=search,
            )
        except httpx2.TransportError as exc:
            raise ConnectionError("Transport error", exc) from exc
        status = response.status_code
        if status == 401:
            raise rte.AuthorizationError("401")
        if status == 404:
            raise rte.NotFoundError("404")
        if status == 400:
            raise rte.BadRequestError(response.text[:200])
        if status != 200:
            raise rte.UnexpectedResponseError(
                f"HTTP {status}", status_code=status, response_message=response.text[:200]
            )
        data = response.json()
        if not isinstance(data, dict):
            raise rte.UnexpectedResponseError("not a JSON object", status_code=status)
        return data

    def close(self) -> None:
        if self._client is not None:
            self._client.session.close()

    # -- errors ------------------------------------------------------------------------------
    def _call(self, what: str, call: Any, *, ticket: str | None = None, send: bool = False) -> Any:
        """Run one python-rt call; its failures as DeskErrors. `send`: the call changes the
        ticket, so a timeout leaves it unknown whether RT did it."""
        import rt.exceptions as rte

        began = time.monotonic()
        try:
            return call()
        except rte.AuthorizationError as exc:
            raise DeskAuthError(
                f"RT at {self.url} refused the credentials of {self.settings.user or 'the token'!r} "
                f"(HTTP 401) to {what}",
                hint="check [itsm] user and password/token; then: itops itsm check",
            ) from exc
        except rte.NotFoundError as exc:
            if ticket is not None:
                raise TicketUnknown(
                    f"{ticket}: RT at {self.url} has no such ticket",
                    hint="check the number (RT shows it as #N); or the itops account cannot "
                    "see its queue (ShowTicket)",
                ) from exc
            raise DeskError(f"RT at {self.url}: not found ({what})") from exc
        except rte.BadRequestError as exc:
            raise DeskError(f"RT at {self.url} refused to {what}: {exc}") from exc
        except rte.UnexpectedResponseError as exc:
            status = exc.status_code or 0
            if status == 403:
                raise DeskAuthError(
                    f"RT at {self.url}: {self.settings.user!r} may not {what} (HTTP 403)",
                    hint="the rights the itops account needs: docs/itsm.md",
                ) from exc
            if status == 429 or status >= 500:
                raise DeskUnavailable(
                    f"RT at {self.url} answered HTTP {status} to {what}",
                    retry_after=self._retry_after,
                ) from exc
            raise DeskError(f"RT at {self.url} answered HTTP {status} to {what}") from exc
        except (rte.ConnectionError, ConnectionError) as exc:
            # (python-rt's REST 2 raises the built-in ConnectionError(message, cause))
            raise _transport_error(self.url, what, exc, send, time.monotonic() - began) from exc
        except rte.RtError as exc:
            raise DeskError(f"RT at {self.url}: cannot {what}: {exc}") from exc


def _transport_error(url: str, what: str, exc: Any, send: bool, took: float) -> DeskError:
    """python-rt's ConnectionError(message, cause) — or the look-up's, whose cause is the
    standard library's (a socket timeout, a TLS verification error) — as a DeskError."""
    import ssl

    cause = getattr(exc, "cause", None)
    if cause is None and len(exc.args) > 1 and isinstance(exc.args[1], BaseException):
        cause = exc.args[1]
    inner = cause.__context__ if cause is not None else None
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in (cause, inner)) or (
        "CERTIFICATE_VERIFY_FAILED" in str(cause)
    ):
        return DeskError(
            f"RT at {url}: its TLS certificate is not trusted ({cause})",
            hint="for a private CA set [itsm] ca_bundle to its PEM file",
        )
    timeout, connecting = isinstance(cause, TimeoutError), False  # (the look-up's: a read)
    if "httpx2" in sys.modules:  # (python-rt's: never imported just to be compared with)
        import httpx2

        timeout = timeout or isinstance(cause, httpx2.TimeoutException)
        connecting = isinstance(cause, httpx2.ConnectTimeout)
    if timeout:
        return DeskUnavailable(
            f"RT at {url} did not answer within {took:.0f} s ({what})",
            maybe_committed=send and not connecting,
        )
    return DeskUnavailable(f"RT at {url} is unreachable ({what}): {cause or exc}")


def _no_redirect() -> Any:
    """A urllib handler that follows no redirect (as python-rt's client): a 3xx is RT's answer,
    and the credentials never go to where it points."""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    return NoRedirect()


TXN_FIELDS = "Type,Field,OldValue,NewValue,Created,Creator,ObjectId"
READ_TYPES = ("Create", "Correspond", "Status", "Set")  # the transactions `_change` reads
SYSTEM_USERS = frozenset({"RT_System"})  # RT's own steps: an autoreply is no response


def _change(ticket: str, item: dict[str, Any], queues: dict[str, str]) -> Change | None:
    """An RT transaction as a Change; None for what the sync does not read (comments — itops'
    own notes are comments —, mail records, watchers, owners, custom fields)."""
    kind, name = item.get("Type"), item.get("Field")
    creator = item.get("Creator")
    by = str((creator.get("id") if isinstance(creator, dict) else creator) or "")
    at = _epoch(item.get("Created"))
    try:
        txn = int(item.get("id") or 0)
    except (TypeError, ValueError):
        return None
    if at is None or txn <= 0:
        return None
    old, new = str(item.get("OldValue") or ""), str(item.get("NewValue") or "")
    if kind == "Create":
        what = "created"
    elif kind == "Correspond":
        if by in SYSTEM_USERS:
            return None
        what = "replied"
    elif kind == "Status" or (kind == "Set" and name == "Status"):
        what = "status"
    elif kind == "Set" and name == "Priority":
        what = "priority"
    elif kind == "Set" and name == "Queue":
        what, old, new = "queue", queues.get(old, old), queues.get(new, new)
    else:
        return None
    return Change(ticket, txn, at, by, what, old, new)


def _epoch(value: Any) -> float | None:
    """RT's REST 2 time (2026-12-04T15:50:28Z, UTC) → epoch seconds; None if unset."""
    from datetime import datetime

    if not value or not isinstance(value, str) or value.startswith("1970-01-01"):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None

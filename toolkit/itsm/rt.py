"""Request Tracker 5 through REST 2, with python-rt (`rt.rest2`, the maintained client).

python-rt verifies TLS (a CA bundle file for a private CA), takes a timeout per request and
basic auth or an RT auth token (`Authorization: token …`, RT::Authen::Token, core in RT 5).
What it does not expose — the `Retry-After` of a 429 — is read by a response hook on its HTTP
session. Its exceptions become DeskErrors here: nothing of python-rt leaves this module.

Calls used: GET ticket/N (with the queue's name), POST ticket/N/comment (an internal comment:
RT never mails it to the requester), POST ticket/N/attachments with a Content LIKE search (the
dedupe key), PUT ticket/N {Status: resolved}, GET queues/all (check).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from toolkit.itsm import (
    DeskAuthError,
    DeskError,
    DeskTicket,
    DeskUnavailable,
    ItsmSettings,
    TicketUnknown,
    number,
)

if TYPE_CHECKING:
    from toolkit.secrets.credentials import Secret

log = logging.getLogger("itops.itsm")


class RtDesk:
    system = "rt"

    def __init__(
        self, settings: ItsmSettings, *, password: Secret | None, token: Secret | None
    ) -> None:
        import httpx2
        import rt.rest2

        self.settings = settings
        self.url = settings.url
        auth = httpx2.BasicAuth(settings.user, password.reveal()) if password else None
        verify: str | bool = str(settings.ca_bundle) if settings.ca_bundle else True
        try:
            self._rt = rt.rest2.Rt(
                f"{self.url}/REST/2.0/",
                http_auth=auth,
                token=token.reveal() if token else None,
                verify_cert=verify,
                http_timeout=settings.timeout,  # type: ignore[arg-type]  # (httpx takes a float)
            )
        except (ValueError, OSError) as exc:  # a bad URL, an unreadable CA bundle
            raise DeskError(f"cannot use the RT at {self.url}: {exc}") from exc
        self._retry_after: float | None = None
        self._rt.session.event_hooks["response"].append(self._remember)

    def _remember(self, response: Any) -> None:
        self._retry_after = None
        if response.status_code in (429, 503):
            value = response.headers.get("Retry-After")
            if value:
                self._retry_after = _seconds(value)

    # -- the Desk calls ----------------------------------------------------------------------
    def lookup(self, ticket: str) -> DeskTicket:
        n = number(ticket)
        data = self._call(
            f"look up {ticket}",
            lambda: self._rt.get_ticket(n, {"fields[Requestor]": "EmailAddress,Name"}),
            ticket=ticket,
        )
        queue = data.get("Queue") or {}
        queue_name = str(queue.get("Name") or queue.get("id") or "")
        requestors = data.get("Requestor") or []
        requester = ""
        if requestors:
            first = requestors[0]
            requester = str(first.get("EmailAddress") or first.get("Name") or first.get("id") or "")
        status = str(data.get("Status") or "")
        return DeskTicket(
            id=ticket,
            number=n,
            subject=str(data.get("Subject") or ""),
            status=status,
            priority=self.settings.priority(data.get("Priority")),
            desk_priority=str(data.get("Priority") or ""),
            queue=queue_name,
            category=self.settings.category(queue_name),
            requester=requester,
            closed=status in self.settings.closed_states,
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

    def close(self) -> None:
        self._rt.session.close()

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
    import ssl

    import httpx2

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
    if isinstance(cause, httpx2.TimeoutException):
        return DeskUnavailable(
            f"RT at {url} did not answer within {took:.0f} s ({what})",
            maybe_committed=send and not isinstance(cause, httpx2.ConnectTimeout),
        )
    return DeskUnavailable(f"RT at {url} is unreachable ({what}): {cause or exc}")


def _seconds(value: str) -> float | None:
    """Retry-After: delta-seconds or an HTTP date."""
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None

"""GLPI (9.5, 10) through its REST API, apirest.php, with plain HTTP (httpx2).

No GLPI client is used. The longest-standing one, `glpi-api` (0.7, 2025), sets no timeout on any
request (a GLPI that hangs would hang the delivery after a fix), turns every HTTP status into a
message string (401, 404, 429 and 5xx cannot be told apart, `Retry-After` is out of reach), makes
a timeout and a refused connection the same error (a timeout may have committed a note: the
outbox must know), and opens its session in its constructor, before a private CA can be set. The
younger ones (glpi-utils, glpi-python-sdk, glpi-rest, …) are one-author projects a year old or
less. The calls used are few and documented (GLPI's apirest.md), and httpx2 is already here
(python-rt brings it): it verifies TLS against a CA bundle and takes a timeout per request.

Calls used: GET initSession (`Authorization: user_token …` or basic auth, `App-Token`), GET
killSession, GET getFullSession (check), GET Ticket/N?expand_dropdowns=true&with_logs=true (the
ticket and its history: raw glpi_logs rows), GET Ticket/N/Ticket_User (requesters), GET
Ticket/N/ITILFollowup (the dedupe key; public vs private followups for the sync), POST
ITILFollowup {is_private: 1} (the internal note), POST ITILSolution (resolve: GLPI sets the
ticket solved), GET search/Ticket (ids by date_mod, for the sync; by its satisfaction's
date_answered, search option 61, for surveys answered since), GET Ticket/N/TicketSatisfaction
(its satisfaction survey: glpi_ticketsatisfactions rows).

A session token that expires (401 ERROR_SESSION_TOKEN_INVALID) is renewed once.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from toolkit.itsm import (
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
    import httpx2

    from toolkit.secrets.credentials import Secret

log = logging.getLogger("itops.itsm")

# GLPI's ticket statuses (CommonITILObject::INCOMING … CLOSED) by the names itops gives them
STATUSES = {1: "new", 2: "assigned", 3: "planned", 4: "pending", 5: "solved", 6: "closed"}
# glpi_logs: linked_action (Log::HISTORY_*) and id_search_option of Ticket's fields
CREATE_ITEM, ADD_SUBITEM = 20, 17
FIELD_STATUS, FIELD_PRIORITY, FIELD_CATEGORY = 12, 3, 7
# Ticket's search options of its satisfaction (TicketSatisfaction: offset 0): date_answered,
# satisfaction — a survey answered writes a glpi_logs row on the ticket (option 62) but leaves
# the ticket's date_mod as it was, so surveys are searched by their own date
FIELD_ANSWERED, FIELD_SATISFACTION = 61, 62
REQUESTER = 1  # Ticket_User.type (CommonITILActor::REQUESTER)
_ID_SUFFIX = re.compile(r"^(.*?)\s*\((\d+)\)$")  # "glpi (2)", "Printers (4)"


class GlpiDesk:
    system = "glpi"

    def __init__(
        self,
        settings: ItsmSettings,
        *,
        password: Secret | None,
        token: Secret | None,
        app_token: Secret | None = None,
    ) -> None:
        import ssl

        import httpx2

        self.settings = settings
        self.url = settings.url
        self.api = f"{self.url}/apirest.php"
        if token is not None:
            self._auth = f"user_token {token.reveal()}"
        elif password is not None:
            pair = f"{settings.user}:{password.reveal()}".encode()
            self._auth = "Basic " + base64.b64encode(pair).decode()
        else:
            raise DeskError("GLPI needs a user_token ([itsm] token) or a user and password")
        self._headers = {"Content-Type": "application/json"}
        if app_token is not None:
            self._headers["App-Token"] = app_token.reveal()
        try:
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=str(settings.ca_bundle))
                if settings.ca_bundle
                else True
            )
            self._http = httpx2.Client(verify=verify, timeout=settings.timeout)
        except (ValueError, OSError, ssl.SSLError) as exc:  # an unreadable CA bundle
            raise DeskError(f"cannot use the GLPI at {self.url}: {exc}") from exc
        self._session: str | None = None
        self._me: str | None = None
        self._followups: dict[str, list[dict[str, Any]]] = {}
        self._known: dict[str, dict[str, Any]] = {}  # tickets as the sync's history read them

    # -- the Desk calls ----------------------------------------------------------------------
    def lookup(self, ticket: str) -> DeskTicket:
        return self._ticket(ticket, self._read(ticket, logs=False))

    def _read(self, ticket: str, *, logs: bool) -> dict[str, Any]:
        n = number(ticket, "glpi")
        params = {"expand_dropdowns": "true", "with_logs": "true" if logs else "false"}
        data = self._call("GET", f"Ticket/{n}", f"look up {ticket}", params=params, ticket=ticket)
        if not isinstance(data, dict) or data.get("is_deleted") in (1, "1", True):
            raise TicketUnknown(f"{ticket}: GLPI at {self.url} has no such ticket (deleted)")
        return data

    def _ticket(self, ticket: str, data: dict[str, Any]) -> DeskTicket:
        n = number(ticket, "glpi")
        actors = self._items(ticket, "Ticket_User", "requesters", {"expand_dropdowns": "true"})
        requesters = [a for a in actors if _int(a.get("type")) == REQUESTER]
        names = tuple(_name(a.get("users_id")) for a in requesters if a.get("users_id"))
        email = next((str(a.get("alternative_email")) for a in requesters
                      if a.get("alternative_email")), "")  # fmt: skip
        category = _name(data.get("itilcategories_id")) if data.get("itilcategories_id") else ""
        status = STATUSES.get(_int(data.get("status")), str(data.get("status") or ""))
        return DeskTicket(
            id=ticket,
            number=n,
            subject=str(data.get("name") or ""),
            status=status,
            priority=self.settings.priority(data.get("priority")),
            desk_priority=str(data.get("priority") or ""),
            queue=category,
            category=self.settings.category(category),
            requester=email or (names[0] if names else ""),
            closed=status in self.settings.closed_states,
            created=_epoch(data.get("date") or data.get("date_creation")),
            requesters=names,
        )

    def find_note(self, ticket: str, key: str) -> str | None:
        for followup in self._followup_list(ticket, fresh=True):
            if key in str(followup.get("content") or ""):
                return f"followup {followup.get('id')}"
        return None

    def _followup_list(self, ticket: str, *, fresh: bool = False) -> list[dict[str, Any]]:
        if fresh or ticket not in self._followups:
            self._followups[ticket] = self._items(
                ticket, "ITILFollowup", "followups", {"range": "0-9999"}
            )
        return self._followups[ticket]

    def _items(
        self, ticket: str, itemtype: str, what: str, params: dict[str, str]
    ) -> list[dict[str, Any]]:
        """The ticket's items of one type (GET Ticket/N/<itemtype>): its actors, its followups."""
        found = self._call(
            "GET",
            f"Ticket/{number(ticket, 'glpi')}/{itemtype}",
            f"read {ticket}'s {what}",
            params=params,
            ticket=ticket,
        )
        return [item for item in found or [] if isinstance(item, dict)]

    def add_note(self, ticket: str, text: str) -> str:
        n = int(number(ticket, "glpi"))
        body = {"input": {"itemtype": "Ticket", "items_id": n, "content": text, "is_private": 1}}
        made = self._call(
            "POST", "ITILFollowup", f"add a followup to {ticket}", json=body, ticket=ticket,
            send=True,
        )  # fmt: skip
        return f"followup {made.get('id') if isinstance(made, dict) else '?'}"

    def resolve(self, ticket: str) -> str:
        before = self.lookup(ticket)
        if before.status in self.settings.resolved_states:
            return before.status  # (a retry after GLPI took the solution)
        n = int(number(ticket, "glpi"))
        body = {
            "input": {
                "itemtype": "Ticket",
                "items_id": n,
                "content": "Resolved by itops: the run's note on this ticket has the evidence.",
            }
        }
        self._call("POST", "ITILSolution", f"resolve {ticket}", json=body, ticket=ticket, send=True)
        after = self.lookup(ticket)
        if after.status not in self.settings.resolved_states:
            raise DeskError(
                f"GLPI left {ticket} {after.status!r}: its workflow does not allow solving it now"
            )
        return after.status

    def check(self) -> list[str]:
        tls = "TLS verified" if self.url.startswith("https://") else "plain HTTP (no TLS)"
        if self.url.startswith("https://") and self.settings.ca_bundle:
            tls += f" against {self.settings.ca_bundle}"
        data = self._call("GET", "getFullSession", "read the session")
        session = data.get("session", {}) if isinstance(data, dict) else {}
        profile = session.get("glpiactiveprofile") or {}
        name = str(session.get("glpiname") or "?")
        return [
            f"reached {self.api} ({tls})",
            f"signed in as {name}; active profile: {profile.get('name', '?')}",
        ]

    # -- the sync: history steps and tickets in bulk ------------------------------------------
    def changes(self, after: int, since: float | None = None) -> Iterator[Change]:
        """The tickets by date_mod, newest first (search/Ticket), each with its log: the steps
        whose log id is after `after`. GLPI's log ids rise across all items, so they are the
        steps' ids; a ticket's date_mod moves with each step. The walk stops at the first ticket
        last modified well before a step already synced (or before `since`)."""
        found: list[Change] = []
        surveys: list[Change] = []
        walked: set[str] = set()
        synced_at: float | None = None  # the newest time of a step read before
        margin = 300.0
        for ticket, modified in self._search(since):
            if synced_at is not None and modified is not None and modified < synced_at - margin:
                break
            try:
                steps = self.history(ticket)
            except TicketUnknown:  # deleted since the search
                continue
            walked.add(ticket)
            for change in steps:
                if change.what == "survey":
                    surveys.append(change)
                elif change.txn > after and (since is None or change.at >= since):
                    found.append(change)
                elif change.txn <= after:
                    synced_at = max(synced_at or change.at, change.at)
        # surveys: answering one leaves the ticket's date_mod alone, so the walk above does not
        # find a ticket answered after its last step; those answered since (less the margin)
        # are searched by their date_answered. Each is keyed by its own id: read twice, kept once
        cutoff = since if since is not None else (
            synced_at - margin if synced_at is not None and after else None
        )  # fmt: skip
        if after or since is not None:
            answered = cutoff if cutoff is not None else 1.0  # (any answer at all)
            for ticket, _ in self._search(answered, field=FIELD_ANSWERED):
                if ticket in walked:
                    continue
                try:
                    surveys += [c for c in self.history(ticket) if c.what == "survey"]
                except TicketUnknown:
                    continue
        found += [c for c in surveys if cutoff is None or c.at >= cutoff]
        yield from sorted(found, key=lambda c: c.txn)

    def _search(self, since: float | None, field: int = 19) -> Iterator[tuple[str, float | None]]:
        """Ticket ids and date_mod, newest first; with `since`, those whose `field` (19:
        date_mod, 61: their satisfaction's date_answered) is after it."""
        start = 0
        while True:
            params = {
                "forcedisplay[0]": "2",
                "forcedisplay[1]": "19",
                "sort": "19",
                "order": "DESC",
                "range": f"{start}-{start + 99}",
            }
            if since is not None:
                params.update(
                    {
                        "criteria[0][field]": str(field),
                        "criteria[0][searchtype]": "morethan",
                        "criteria[0][value]": time.strftime(
                            "%Y-%m-%d %H:%M:%S", time.gmtime(since - 1)
                        ),
                    }
                )
            data = self._call("GET", "search/Ticket", "search the tickets", params=params)
            rows = data.get("data") or [] if isinstance(data, dict) else []
            for row in rows:
                if isinstance(row, dict) and _int(row.get("2")) > 0:
                    yield f"GLPI-{_int(row.get('2'))}", _epoch(row.get("19"))
            total = _int(data.get("totalcount")) if isinstance(data, dict) else 0
            start += 100
            if not rows or start >= total:
                return

    def history(self, ticket: str) -> list[Change]:
        data = self._read(ticket, logs=True)
        self._known[ticket] = data  # (the sync's `tickets` next: not read twice)
        logs = data.get("_logs") or []
        if isinstance(logs, dict):  # (a PHP array with keys: an object in JSON)
            logs = list(logs.values())
        found = []
        for row in logs:
            if isinstance(row, dict):
                change = self._change(ticket, row)
                if change is not None:
                    found.append(change)
        found += self._surveys(ticket, found, logs)
        return sorted(found, key=lambda c: c.txn)

    def _surveys(self, ticket: str, steps: list[Change], logs: list[Any]) -> list[Change]:
        """The ticket's answered satisfaction surveys (date_answered and satisfaction set):
        the score is satisfaction_scaled_to_5 (GLPI 10) or satisfaction, rounded half up and
        held to 1–5 (GLPI's 0 stars is 1). Its step id is the glpi_logs row that recorded the
        answer on the ticket (else the ticket's newest step); its key its own id."""
        import html
        import math

        answers = [r for r in logs if isinstance(r, dict)
                   and _int(r.get("id_search_option")) == FIELD_SATISFACTION]  # fmt: skip
        logged = max(answers, key=lambda r: _int(r.get("id")), default=None)
        found = []
        for row in self._items(ticket, "TicketSatisfaction", "satisfaction survey", {}):
            sid, at = _int(row.get("id")), _epoch(row.get("date_answered"))
            if sid <= 0 or at is None or row.get("satisfaction") in (None, ""):
                continue  # not answered (yet)
            scaled = row.get("satisfaction_scaled_to_5")
            try:
                rate = float(scaled if scaled not in (None, "") else row["satisfaction"])
                score = str(min(5, max(1, math.floor(rate + 0.5))))
            except (TypeError, ValueError, OverflowError):
                score = str(row.get("satisfaction"))[:20]  # (the sync skips it, saying why)
            txn = _int(logged.get("id")) if logged else max((c.txn for c in steps), default=0)
            by = _name(logged.get("user_name")) if logged else ""
            comment = html.unescape(str(row.get("comment") or ""))
            found.append(Change(ticket, txn, at, by, "survey", comment, score,
                                key=f"glpi-survey-{sid}"))  # fmt: skip
        return found

    def _change(self, ticket: str, row: dict[str, Any]) -> Change | None:
        txn, at = _int(row.get("id")), _epoch(row.get("date_mod"))
        if txn <= 0 or at is None:
            return None
        by = _name(row.get("user_name"))
        action, field = _int(row.get("linked_action")), _int(row.get("id_search_option"))
        old, new = str(row.get("old_value") or ""), str(row.get("new_value") or "")
        if action == CREATE_ITEM:
            return Change(ticket, txn, at, by, "created")
        if action == ADD_SUBITEM and row.get("itemtype_link") == "ITILFollowup":
            if not self._public_reply(ticket, new, by):
                return None
            return Change(ticket, txn, at, by, "replied")
        if action != 0:
            return None
        if field == FIELD_STATUS:
            return Change(ticket, txn, at, by, "status", _status(old), _status(new))
        if field == FIELD_PRIORITY:
            return Change(ticket, txn, at, by, "priority", old, new)
        if field == FIELD_CATEGORY:
            return Change(ticket, txn, at, by, "queue", _name(old), _name(new))
        return None

    def _public_reply(self, ticket: str, logged: str, by: str) -> bool:
        """A followup the log names is a reply if it is public and not itops' own."""
        if by and by == self._own_name():
            return False
        wanted = _ID_SUFFIX.match(logged)
        for followup in self._followup_list(ticket):
            if wanted and str(followup.get("id")) == wanted.group(2):
                return not _int(followup.get("is_private"))
        return False

    def _own_name(self) -> str:
        if self._me is None:
            data = self._call("GET", "getFullSession", "read the session")
            session = data.get("session", {}) if isinstance(data, dict) else {}
            self._me = str(session.get("glpiname") or self.settings.user)
        return self._me

    def tickets(self, ids: Iterable[str]) -> dict[str, DeskTicket]:
        found: dict[str, DeskTicket] = {}
        for ticket in sorted(set(ids)):
            known = self._known.pop(ticket, None)
            try:
                found[ticket] = self._ticket(ticket, known) if known else self.lookup(ticket)
            except TicketUnknown:
                continue
        return found

    def close(self) -> None:
        if self._session is not None:
            try:
                self._http.get(f"{self.api}/killSession", headers=self._session_headers())
            except Exception:  # (the session expires on its own)
                log.debug("GLPI killSession failed", exc_info=True)
            self._session = None
        self._http.close()

    # -- HTTP and errors ---------------------------------------------------------------------
    def _session_headers(self) -> dict[str, str]:
        return {**self._headers, "Session-Token": self._session or ""}

    def _open(self) -> None:
        response = self._send(
            "GET", "initSession", "sign in", headers={**self._headers, "Authorization": self._auth}
        )
        if response.status_code != 200:
            self._fail(response, "sign in", None)
        token = response.json().get("session_token") if _is_json(response) else None
        if not token:
            raise DeskError(f"GLPI at {self.url} answered initSession without a session token")
        self._session = str(token)

    def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        ticket: str | None = None,
        send: bool = False,
    ) -> Any:
        for renewed in (False, True):
            if self._session is None:
                self._open()
            response = self._send(
                method, path, what, headers=self._session_headers(), params=params, json=json,
                send=send,
            )  # fmt: skip
            if response.status_code in (200, 201, 206, 207):
                return response.json() if _is_json(response) else None
            expired = _code(response) in (
                "ERROR_SESSION_TOKEN_INVALID",
                "ERROR_SESSION_TOKEN_MISSING",
            )
            if response.status_code == 401 and not renewed and expired:
                self._session = None  # expired: sign in again, once
                continue
            self._fail(response, what, ticket)
        raise AssertionError("unreachable")

    def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        headers: dict[str, str],
        params: dict[str, str] | None = None,
        json: Any = None,
        send: bool = False,
    ) -> httpx2.Response:
        import ssl

        import httpx2

        began = time.monotonic()
        try:
            return self._http.request(
                method, f"{self.api}/{path}", headers=headers, params=params, json=json
            )
        except httpx2.TimeoutException as exc:
            raise DeskUnavailable(
                f"GLPI at {self.url} did not answer within {time.monotonic() - began:.0f} s "
                f"({what})",
                maybe_committed=send and not isinstance(exc, httpx2.ConnectTimeout),
            ) from exc
        except httpx2.TransportError as exc:
            inner = exc.__context__
            if isinstance(inner, ssl.SSLCertVerificationError) or (
                "CERTIFICATE_VERIFY_FAILED" in str(exc)
            ):
                raise DeskError(
                    f"GLPI at {self.url}: its TLS certificate is not trusted ({exc})",
                    hint="for a private CA set [itsm] ca_bundle to its PEM file",
                ) from exc
            raise DeskUnavailable(f"GLPI at {self.url} is unreachable ({what}): {exc}") from exc

    def _fail(self, response: httpx2.Response, what: str, ticket: str | None) -> NoReturn:
        status = response.status_code
        said = _said(response)
        refused = ("ERROR_GLPI_LOGIN", "ERROR_WRONG_APP_TOKEN_PARAMETER", "ERROR_APP_TOKEN")
        if status == 403 or _code(response) == "ERROR_RIGHT_MISSING":  # (GLPI answers it with 401)
            raise DeskAuthError(
                f"GLPI at {self.url}: the itops account may not {what} (HTTP {status}): {said}",
                hint="the profile rights the itops account needs: docs/itsm.md",
            )
        if status == 401 or (status == 400 and _code(response).startswith(refused)):
            raise DeskAuthError(
                f"GLPI at {self.url} refused the credentials of "
                f"{self.settings.user or 'the user_token'!r} (HTTP {status}) to {what}: {said}",
                hint="check [itsm] token (user_token) or user and password, and app_token; "
                "then: itops itsm check",
            )
        if status == 404 and ticket is not None:
            raise TicketUnknown(
                f"{ticket}: GLPI at {self.url} has no such ticket",
                hint="check the number (GLPI shows the ticket's ID); or the itops account's "
                "profile and entities do not let it see the ticket",
            )
        if status == 429 or status >= 500:
            raise DeskUnavailable(
                f"GLPI at {self.url} answered HTTP {status} to {what}",
                retry_after=_retry_after(response),
            )
        raise DeskError(f"GLPI at {self.url} answered HTTP {status} to {what}: {said}")


def _is_json(response: Any) -> bool:
    return "json" in response.headers.get("Content-Type", "") and bool(response.content)


def _code(response: Any) -> str:
    """GLPI's error key: its errors are ["ERROR_…", "message"]."""
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body[0]) if isinstance(body, list) and body else ""


def _said(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]  # type: ignore[no-any-return]
    if isinstance(body, list):
        return " ".join(str(part) for part in body)[:200]
    return str(body)[:200]


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("Retry-After")
    return retry_after(value) if value else None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _name(value: Any) -> str:
    """A dropdown or user as GLPI's log writes it, "Printers (4)", without its id."""
    text = str(value or "")
    found = _ID_SUFFIX.match(text)
    return found.group(1) if found else text


def _status(value: str) -> str:
    return STATUSES.get(_int(value), value)


def _epoch(value: Any) -> float | None:
    """GLPI's time (2026-12-04 10:00:00: its server's time zone, taken as UTC) → epoch."""
    from datetime import UTC, datetime

    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None

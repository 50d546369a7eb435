"""ServiceNow incidents through the Table API, with pysnc (ServiceNow's own maintained client).

pysnc's `ServiceNowClient` is a requests session (basic auth, or a session carrying an OAuth
bearer token) and `GlideRecord` the Table API: GET /api/now/table/T with an encoded query
(`sysparm_query`, `sysparm_fields`, `sysparm_display_value=all`, paged by `sysparm_offset`
and X-Total-Count), PATCH /api/now/table/T/SYS_ID. What pysnc does not do is added on its
session here: a timeout on every request (a mounted adapter: pysnc sets none), no retries of
its own (`auto_retry=False`: the outbox retries, with the desk's Retry-After), and a response
hook that keeps the status and Retry-After its exceptions drop. pysnc refuses http:// URLs.

Calls used (table: what):
    incident        look up by number; PATCH work_notes (an internal note: never shown to the
                    caller), PATCH state=6 + close_code + close_notes (resolve); numberIN (sync)
    sys_journal_field  element_id=SYS_ID^element=work_notes^valueLIKEKEY (find a note)
    sys_audit       tablename=incident^fieldnameIN… (the sync: state, priority, category,
                    comments — the caller-visible replies)
    asmt_assessment_instance  trigger_table=incident^state=complete^taken_on>=… (the sync:
                    satisfaction surveys answered, trigger_id = the incident's sys_id)
    asmt_metric_result  instanceIN… (their answers, with metric.name/datatype/scale_min/
                    scale_max dot-walked into asmt_metric)
Nothing of pysnc or requests leaves this module: their failures become DeskErrors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

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
from toolkit.itsm.http import pinned_adapter, retry_after, unanswered

if TYPE_CHECKING:
    from toolkit.secrets.credentials import Secret

log = logging.getLogger("itops.itsm")

# the incident table's state choices (ServiceNow's documented defaults): value → label
STATES = {
    "1": "new", "2": "in progress", "3": "on hold", "6": "resolved", "7": "closed",
    "8": "canceled",
}  # fmt: skip
RESOLVED = "6"
CLOSE_CODE = "Solution provided"  # (a choice of close_code since the Tokyo release)
FIELDS = [
    "sys_id", "number", "short_description", "state", "priority", "category", "caller_id",
    "caller_id.user_name", "caller_id.email", "sys_created_on", "sys_created_by",
]  # fmt: skip
AUDITED = {"comments": ("replied", 1), "state": ("status", 2), "priority": ("priority", 3),
           "category": ("queue", 4)}  # fmt: skip
# a step's id: its second, the record's update count (record_checkpoint) and the field's rank —
# rising with time, unique within an incident (sys_audit's own ids are GUIDs)
SECOND = 100_000
MARGIN = 120  # seconds re-read before the mark: an audit row committed late is not missed
SURVEY_MARGIN = 300  # seconds of surveys re-read before the mark (taken_on is set on submit)
SURVEY_RANK = 5  # a survey's rank in its second (after the audited fields' 1–4)
SURVEY_FIELDS = ["sys_id", "trigger_id", "taken_on", "user", "user.user_name"]
RESULT_FIELDS = [
    "instance", "metric", "metric.name", "metric.datatype", "metric.scale_min",
    "metric.scale_max", "metric.order", "actual_value", "string_value",
]  # fmt: skip


class ServiceNowDesk:
    system = "servicenow"

    def __init__(
        self, settings: ItsmSettings, *, password: Secret | None, token: Secret | None
    ) -> None:
        import requests
        from pysnc import ServiceNowClient
        from pysnc.exceptions import InstanceException

        self.settings = settings
        self.url = settings.url
        auth: Any
        if token is not None:  # an OAuth access token, sent as a bearer token
            auth = requests.Session()
            auth.headers["Authorization"] = f"Bearer {token.reveal()}"
        else:
            auth = (settings.user, password.reveal() if password else "")
        verify: str | bool = str(settings.ca_bundle) if settings.ca_bundle else True
        try:
            self._sn = ServiceNowClient(self.url, auth=auth, verify=verify, auto_retry=False)
        except InstanceException as exc:
            raise DeskError(
                f"cannot use ServiceNow at {self.url}: {exc}",
                hint="the instance's https:// URL, e.g. https://example.service-now.com",
            ) from exc
        session = self._sn.session
        session.mount("https://", pinned_adapter(settings.timeout, verify))
        session.hooks["response"].append(self._remember)
        self._status = 0
        self._retry_after: float | None = None
        self._sys_ids: dict[str, str] = {}  # INC… → sys_id, as looked up

    def _remember(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self._status = int(response.status_code)
        self._retry_after = None
        if response.status_code in (429, 503):
            value = response.headers.get("Retry-After")
            if value:
                self._retry_after = retry_after(value)

    # -- the Desk calls ----------------------------------------------------------------------
    def _incident(self, ticket: str) -> list[Any]:
        """The incident's row (none: an empty list)."""
        n = number(ticket, self.system)
        rows: list[Any] = self._call(
            f"look up {ticket}",
            lambda: self._rows("incident", f"number={n}", FIELDS, limit=1),
            ticket=ticket,
        )
        return rows

    def lookup(self, ticket: str) -> DeskTicket:
        rows = self._incident(ticket)
        if not rows:
            raise TicketUnknown(
                f"{ticket}: ServiceNow at {self.url} has no such incident",
                hint="check the number (INC and its digits); or the itops account may not read "
                "it (an ACL on incident)",
            )
        return self._ticket(rows[0])

    def _ticket(self, row: dict[str, Field]) -> DeskTicket:
        ticket = row["number"].value
        self._sys_ids[ticket] = row["sys_id"].value
        status = STATES.get(row["state"].value, row["state"].shown or row["state"].value)
        category = row["category"].value
        caller = row["caller_id.user_name"].value
        return DeskTicket(
            id=ticket,
            number=ticket,
            subject=row["short_description"].value,
            status=status,
            priority=self.settings.priority(row["priority"].value),
            desk_priority=row["priority"].value,
            queue=category,
            category=self.settings.category(category),
            requester=row["caller_id.email"].value or row["caller_id"].shown or caller,
            closed=self.settings.closed(status),
            created=_epoch(row["sys_created_on"].value),
            requesters=(caller,) if caller else (),
        )

    def _sys_id(self, ticket: str) -> str:
        if ticket not in self._sys_ids:
            self.lookup(ticket)
        return self._sys_ids[ticket]

    def find_note(self, ticket: str, key: str) -> str | None:
        sys_id = self._sys_id(ticket)
        query = f"element_id={sys_id}^element=work_notes^valueLIKE{key}"
        rows = self._call(
            f"search {ticket}'s work notes for {key}",
            lambda: self._rows("sys_journal_field", query, ["sys_id"], limit=1),
            ticket=ticket,
        )
        return f"work note {rows[0]['sys_id'].value}" if rows else None

    def add_note(self, ticket: str, text: str) -> str:
        sys_id = self._sys_id(ticket)
        self._call(
            f"add a work note to {ticket}",
            lambda: self._update(sys_id, {"work_notes": text}),
            ticket=ticket,
            send=True,
        )
        return "work note"

    def resolve(self, ticket: str) -> str:
        sys_id = self._sys_id(ticket)
        after = self._call(
            f"resolve {ticket}",
            lambda: self._update(
                sys_id,
                {
                    "state": RESOLVED,
                    "close_code": CLOSE_CODE,
                    "close_notes": "Resolved by itops: the work note above has the evidence.",
                },
            ),
            ticket=ticket,
            send=True,
        )
        state = STATES.get(str(after), str(after))
        if after != RESOLVED:
            raise DeskError(
                f"ServiceNow left {ticket} {state!r}: its workflow does not allow resolving it now"
            )
        return state

    def check(self) -> list[str]:
        tls = "TLS verified"
        if self.settings.ca_bundle:
            tls += f" against {self.settings.ca_bundle}"
        who = self.settings.user or "the token"
        seen = self._call("read incidents", lambda: self._count("incident", "active=true"))
        return [
            f"reached {self.url}/api/now/table/ ({tls})",
            f"signed in as {who}; active incidents it can read: {seen}",
        ]

    # -- the sync ----------------------------------------------------------------------------
    def changes(self, after: int, since: float | None = None) -> Iterator[Change]:
        """Incidents created, then sys_audit rows of incidents, from the later of `since` and
        the mark's second (less MARGIN), oldest first."""
        start = max(since or 0.0, after // SECOND - MARGIN if after else 0.0)
        stamp = _stamp(start)
        created = self._call(
            "read new incidents",
            lambda: self._rows(
                "incident", f"sys_created_on>={stamp}", FIELDS, order="sys_created_on"
            ),
        )
        steps = [self._created(row) for row in created]
        query = f"tablename=incident^fieldnameIN{','.join(AUDITED)}^sys_created_on>={stamp}"
        audits = self._call(
            "read the incidents' history",
            lambda: self._rows("sys_audit", query, AUDIT_FIELDS, order="sys_created_on"),
        )
        begun = max(since or 0.0, after // SECOND - SURVEY_MARGIN if after else 0.0)
        surveys = self._surveys(f"taken_on>={_stamp(begun)}", "read the surveys answered")
        numbers = self._numbers(
            {a["documentkey"].value for a in audits} | {r["trigger_id"].value for r in surveys}
        )
        for row in audits:
            ticket = numbers.get(row["documentkey"].value)
            change = _change(ticket, row) if ticket else None
            if change is not None:
                steps.append(change)
        steps += self._survey_changes(surveys, numbers)
        yield from sorted(steps, key=lambda c: c.txn)

    def _surveys(self, query: str, what: str, ticket: str | None = None) -> list[dict[str, Field]]:
        """The complete survey instances an incident triggered, of `query`."""
        full = f"trigger_table=incident^state=complete^{query}"
        try:
            rows: list[dict[str, Field]] = self._call(
                what,
                lambda: self._rows(
                    "asmt_assessment_instance", full, SURVEY_FIELDS, order="taken_on"
                ),
                ticket=ticket,
            )
        except DeskAuthError as exc:  # an account without the survey tables' rights: the
            # incidents' history is still synced; the surveys are said to be unread
            log.warning("ServiceNow surveys not read: %s (rights: docs/itsm.md)", exc.message)
            return []
        return rows

    def _survey_changes(
        self, surveys: list[dict[str, Field]], numbers: dict[str, str]
    ) -> list[Change]:
        """Each survey as a Change: its score the configured (else the first) scale metric's
        answer scaled to 1–5, its comment a string metric's answer; keyed by its sys_id."""
        ids = sorted({r["sys_id"].value for r in surveys})
        answers: dict[str, list[dict[str, Field]]] = {}
        for start in range(0, len(ids), 50):
            query = f"instanceIN{','.join(ids[start : start + 50])}"
            rows = self._call(
                "read the surveys' answers",
                partial(self._rows, "asmt_metric_result", query, RESULT_FIELDS),
            )
            for row in rows:
                answers.setdefault(row["instance"].value, []).append(row)
        found: list[Change] = []
        for row in surveys:
            ticket = numbers.get(row["trigger_id"].value)
            at = _epoch(row["taken_on"].value)
            if not ticket or at is None:
                continue
            mine = answers.get(row["sys_id"].value, [])
            score = _survey_score(mine, self.settings.survey_metric)
            if score is None:
                log.info("ServiceNow survey %s of %s: no scale answer to read", row["sys_id"].value,
                         ticket)  # fmt: skip
                continue
            comment = _survey_comment(mine, self.settings.survey_comment_metric)
            by = row["user.user_name"].value or row["user"].shown
            key = f"servicenow-survey-{row['sys_id'].value}"
            txn = _txn(at, 0, SURVEY_RANK)
            found.append(Change(ticket, txn, at, by, "survey", comment, score, key=key))
        return found

    def _created(self, row: dict[str, Field]) -> Change:
        info = self._ticket(row)
        at = info.created or 0.0
        return Change(info.id, _txn(at), at, row["sys_created_by"].value, "created")

    def history(self, ticket: str) -> list[Change]:
        rows = self._incident(ticket)
        if not rows:
            return []
        first = self._created(rows[0])
        sys_id = self._sys_ids[ticket]
        query = f"tablename=incident^documentkey={sys_id}^fieldnameIN{','.join(AUDITED)}"
        audits = self._call(
            f"read {ticket}'s history",
            lambda: self._rows("sys_audit", query, AUDIT_FIELDS, order="sys_created_on"),
            ticket=ticket,
        )
        found = [_change(ticket, row) for row in audits]
        surveys = self._surveys(f"trigger_id={sys_id}", f"read {ticket}'s surveys", ticket)
        found += self._survey_changes(surveys, {sys_id: ticket})
        return sorted([first, *(c for c in found if c is not None)], key=lambda c: c.txn)

    def tickets(self, ids: Iterable[str]) -> dict[str, DeskTicket]:
        wanted = sorted({number(t, self.system) for t in ids})
        found: dict[str, DeskTicket] = {}
        for start in range(0, len(wanted), 50):
            query = f"numberIN{','.join(wanted[start : start + 50])}"
            rows = self._call("read incidents", partial(self._rows, "incident", query, FIELDS))
            for row in rows:
                info = self._ticket(row)
                found[info.id] = info
        return found

    def _numbers(self, sys_ids: set[str]) -> dict[str, str]:
        """sys_id → INC… of the incidents that exist."""
        todo = sorted(sys_ids)
        found: dict[str, str] = {}
        for start in range(0, len(todo), 50):
            query = f"sys_idIN{','.join(todo[start : start + 50])}"
            rows = self._call(
                "read incidents", partial(self._rows, "incident", query, ["sys_id", "number"])
            )
            found.update({r["sys_id"].value: r["number"].value for r in rows})
        return found

    def close(self) -> None:
        self._sn.session.close()

    # -- pysnc -------------------------------------------------------------------------------
    def _rows(
        self,
        table: str,
        query: str,
        fields: list[str],
        *,
        limit: int | None = None,
        order: str | None = None,
    ) -> list[dict[str, Field]]:
        """The records of one encoded query (pysnc pages them), each field's value and label."""
        gr = self._sn.GlideRecord(table, batch_size=100)
        gr.fields = list(fields)
        gr.add_encoded_query(query)
        if order:
            gr.order_by(order)
        if limit:
            gr.limit = limit
        gr.query()
        rows: list[dict[str, Field]] = []
        while gr.next():
            rows.append(
                {
                    f: Field(str(gr.get_value(f) or ""), str(gr.get_display_value(f) or ""))
                    for f in fields
                }
            )
            if limit and len(rows) >= limit:
                break
        return rows

    def _count(self, table: str, query: str) -> int:
        gr = self._sn.GlideRecord(table, batch_size=1)
        gr.fields = ["sys_id"]
        gr.add_encoded_query(query)
        gr.limit = 1
        gr.query()
        return int(gr.get_row_count())

    def _update(self, sys_id: str, values: dict[str, str]) -> str:
        """PATCH the incident (only `values`: pysnc sends the changed fields); its state after."""
        gr = self._sn.GlideRecord("incident")
        gr.initialize()
        gr.set_value("sys_id", sys_id)
        for name, value in values.items():
            gr.set_value(name, None)  # (pysnc sends a field it did not read only once changed)
            gr.set_value(name, value)
        if gr.update() is None:
            raise DeskError(f"ServiceNow at {self.url} did not return the updated incident")
        return str(gr.get_value("state") or "")  # (pysnc is untyped)

    def _call(
        self, what: str, call: Callable[[], Any], *, ticket: str | None = None, send: bool = False
    ) -> Any:
        """Run pysnc calls; their failures as DeskErrors. `send`: the call changes the incident,
        so a timeout leaves it unknown whether ServiceNow did it."""
        import requests
        from pysnc import exceptions as snx

        self._status = 0
        began = time.monotonic()
        try:
            return call()
        except snx.AuthenticationException as exc:
            raise DeskAuthError(
                f"ServiceNow at {self.url} refused the credentials of "
                f"{self.settings.user or 'the token'!r} (HTTP 401) to {what}",
                hint="check [itsm] user and password/token; then: itops itsm check",
            ) from exc
        except snx.RoleException as exc:
            raise DeskAuthError(
                f"ServiceNow at {self.url}: {self.settings.user!r} may not {what} (HTTP 403)",
                hint="the roles and ACLs the itops account needs: docs/itsm.md",
            ) from exc
        except snx.NotFoundException as exc:
            if ticket is not None:
                raise TicketUnknown(
                    f"{ticket}: ServiceNow at {self.url} has no such incident"
                ) from exc
            raise DeskError(f"ServiceNow at {self.url}: not found ({what})") from exc
        except (snx.RequestException, snx.UpdateException, snx.InsertException) as exc:
            status = self._status
            if status in (401, 403):  # (pysnc says so only when the body is ServiceNow's JSON)
                raise DeskAuthError(
                    f"ServiceNow at {self.url} refused {self.settings.user or 'the token'!r} "
                    f"(HTTP {status}) to {what}",
                    hint="check [itsm] user and password/token, and the roles and ACLs the "
                    "itops account needs: docs/itsm.md",
                ) from exc
            if status == 429 or status >= 500 or status == 409:
                raise DeskUnavailable(
                    f"ServiceNow at {self.url} answered HTTP {status} to {what}",
                    retry_after=self._retry_after,
                ) from exc
            raise DeskError(f"ServiceNow at {self.url} answered HTTP {status} to {what}") from exc
        except requests.exceptions.RequestException as exc:
            raise unanswered("ServiceNow", self.url, what, exc, began=began, send=send) from exc
        except (ValueError, KeyError) as exc:  # an answer that is not the Table API's
            raise DeskError(
                f"ServiceNow at {self.url}: unexpected answer to {what}: {exc}"
            ) from exc


class Field:
    """One field of a Table API record: its value and its label (display value)."""

    __slots__ = ("shown", "value")

    def __init__(self, value: str, shown: str) -> None:
        self.value = value
        self.shown = shown


AUDIT_FIELDS = [
    "sys_id", "documentkey", "fieldname", "oldvalue", "newvalue", "user", "sys_created_on",
    "record_checkpoint",
]  # fmt: skip


def _txn(at: float, checkpoint: int = 0, rank: int = 0) -> int:
    return int(at) * SECOND + (checkpoint % 1000) * 100 + rank


def _change(ticket: str, row: dict[str, Field]) -> Change | None:
    """A sys_audit row as a Change (state values as their labels)."""
    what, rank = AUDITED.get(row["fieldname"].value, ("", 0))
    at = _epoch(row["sys_created_on"].value)
    if not what or at is None:
        return None
    try:
        checkpoint = int(row["record_checkpoint"].value or 0)
    except ValueError:
        checkpoint = 0
    old, new = row["oldvalue"].value, row["newvalue"].value
    if what == "status":
        old, new = STATES.get(old, old), STATES.get(new, new)
    elif what == "replied":
        old, new = "", ""  # (the reply's text is not kept)
    return Change(ticket, _txn(at, checkpoint, rank), at, row["user"].value, what, old, new)


def _stamp(at: float) -> str:
    """Epoch seconds → the Table API's internal time (UTC), for an encoded query."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _survey_score(answers: list[dict[str, Field]], metric: str) -> str | None:
    """The score of a survey's answers: the metric named `metric` (any case), else the first
    scale metric (by its order); its actual_value scaled from [scale_min, scale_max] to 1–5,
    rounded half up and clamped. None: no such answer. An answer that is not a number, or a
    scale without a span, is returned as it is (the sync skips it, saying why)."""
    scales = [a for a in answers if a["metric.datatype"].value == "scale"]
    if metric:
        chosen = [a for a in answers if a["metric.name"].value.casefold() == metric.casefold()]
    else:
        chosen = sorted(scales, key=lambda a: (_number(a["metric.order"].value) or 0.0,
                                               a["metric.name"].value))  # fmt: skip
    if not chosen:
        return None
    answer = chosen[0]
    value = _number(answer["actual_value"].value)
    low = _number(answer["metric.scale_min"].value)
    high = _number(answer["metric.scale_max"].value)
    if value is None or low is None or high is None or high <= low:
        return answer["actual_value"].value
    scaled = 1 + (value - low) * 4 / (high - low)
    return str(min(5, max(1, int(scaled + 0.5))))


def _survey_comment(answers: list[dict[str, Field]], metric: str) -> str:
    """The comment of a survey's answers: the string metric named `metric` (any case), else the
    first answered string metric; empty: none."""
    texts = [a for a in answers if a["metric.datatype"].value == "string"]
    if metric:
        texts = [a for a in texts if a["metric.name"].value.casefold() == metric.casefold()]
    return next((a["string_value"].value for a in texts if a["string_value"].value.strip()), "")


def _epoch(value: str) -> float | None:
    """The Table API's internal time (2026-12-04 15:50:28, UTC) → epoch seconds."""
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None

"""Jira Service Management through Jira's REST API v2, with the `jira` library (pycontribs).

`jira.JIRA` is the maintained client: basic auth (Cloud: the account's e-mail and an API token;
Data Center: user and password) or a Data Center personal access token (`token_auth`), TLS
verification, a timeout per request. Its own retry loop (ResilientSession: sleeps on 429/503,
up to a minute each) is switched off (`max_retries=0`): the outbox retries, honouring the
desk's Retry-After, and a fix never waits on the desk. It asks for serverInfo once, when first
used, to know Cloud from Data Center (their search calls differ).

Calls used: GET issue/KEY (look up), GET issue/KEY/comment (find a note by its dedupe key),
POST issue/KEY/comment with the `sd.public.comment` property `{"internal": true}` (JSM's
internal comment: never shown on the customer portal nor mailed), GET issue/KEY/transitions
(with their fields) and POST issue/KEY/transitions (resolve: the transition to a resolved
state, with a resolution if the screen asks for one), GET myself (check), the JQL search
(Cloud: GET search/jql with nextPageToken; Data Center: GET search) with the changelog
expanded, and GET issue/KEY/changelog when an issue's embedded changelog is cut short (sync);
on Cloud, GET servicedeskapi/request/KEY/feedback (the customer's satisfaction rating of a
resolved request: {"type": "csat", "rating": 1–5, "comment": {"body"}}, 404 when there is none;
an experimental method, so sent with `X-ExperimentalApi: opt-in`). Data Center's REST API has
no such resource: its ratings are not read.
Nothing of jira or requests leaves this module: their failures become DeskErrors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, tzinfo
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

KEY_LINE = "itops-note: "  # (outbox.KEY_LINE: the last line of every note itops writes)
FIELDS = "summary,status,priority,components,issuetype,reporter,created,updated,project"
# a step's id: its millisecond and its kind's rank — rising with time, unique within an issue
# (Jira numbers changelog entries and comments in two separate sequences)
RANKS = {"created": 0, "replied": 1, "status": 2, "priority": 3, "queue": 4, "survey": 5}
CHANGED = {"status": "status", "priority": "priority", "component": "queue"}
MARGIN = 120  # seconds re-read before the mark: JQL's minutes, an issue updated late
PAGE = 100


class JiraDesk:
    system = "jira"

    def __init__(
        self, settings: ItsmSettings, *, password: Secret | None, token: Secret | None
    ) -> None:
        self.settings = settings
        self.url = settings.url
        self._password = password
        self._token = token
        self._client: Any = None
        self._seen: dict[str, DeskTicket] = {}

    @property
    def _jira(self) -> Any:
        """The client, made when first used (its serverInfo request is then a desk call)."""
        if self._client is None:
            self._client = self._call("connect", self._connect)
        return self._client

    def _connect(self) -> Any:
        from jira import JIRA

        verify: str | bool = str(self.settings.ca_bundle) if self.settings.ca_bundle else True
        auth: dict[str, Any] = {}
        secret = self._token or self._password
        if self.settings.user and secret is not None:
            auth["basic_auth"] = (self.settings.user, secret.reveal())
        elif self._token is not None:
            auth["token_auth"] = self._token.reveal()
        client = JIRA(
            server=self.url,
            options={"verify": verify},
            max_retries=0,
            timeout=self.settings.timeout,
            get_server_info=False,
            **auth,
        )
        session = client._session
        for prefix in ("https://", "http://"):
            session.mount(prefix, pinned_adapter(self.settings.timeout, verify))
        info = client.server_info()  # Cloud or Data Center
        client.deploymentType = info.get("deploymentType")
        client._version = tuple(info.get("versionNumbers") or (0, 0, 0))
        return client

    # -- the Desk calls ----------------------------------------------------------------------
    def lookup(self, ticket: str) -> DeskTicket:
        key = number(ticket, self.system)
        issue = self._call(
            f"look up {ticket}", lambda: self._jira.issue(key, fields=FIELDS).raw, ticket=ticket
        )
        return self._ticket(issue)

    def _ticket(self, issue: dict[str, Any]) -> DeskTicket:
        fields = issue.get("fields") or {}
        key = str(issue.get("key") or "")
        status = str((fields.get("status") or {}).get("name") or "")
        priority = str((fields.get("priority") or {}).get("name") or "")
        queue = _queue(fields)
        reporter = fields.get("reporter") or {}
        found = DeskTicket(
            id=key,
            number=key,
            subject=str(fields.get("summary") or ""),
            status=status,
            priority=self.settings.priority(priority),
            desk_priority=priority,
            queue=queue,
            category=self.settings.category(queue),
            requester=str(reporter.get("emailAddress") or reporter.get("displayName") or ""),
            closed=self.settings.closed(status),
            created=_epoch(fields.get("created")),
            requesters=(_who(reporter),) if reporter else (),
        )
        self._seen[key] = found
        return found

    def find_note(self, ticket: str, key: str) -> str | None:
        issue = number(ticket, self.system)
        start = 0
        while True:
            page = self._call(
                f"read {ticket}'s comments",
                partial(self._jira.comments, issue, start_at=start, max_results=PAGE),
                ticket=ticket,
            )
            for comment in page:
                if key in str(comment.raw.get("body") or ""):
                    return f"comment {comment.raw.get('id')}"
            if len(page) < PAGE:
                return None
            start += len(page)

    def add_note(self, ticket: str, text: str) -> str:
        issue = number(ticket, self.system)
        comment = self._call(
            f"comment on {ticket}",
            lambda: self._jira.add_comment(issue, text, is_internal=True),
            ticket=ticket,
            send=True,
        )
        return f"internal comment {comment.raw.get('id')}"

    def resolve(self, ticket: str) -> str:
        issue = number(ticket, self.system)
        offered = self._call(
            f"read {ticket}'s transitions",
            lambda: self._jira.transitions(issue, expand="transitions.fields"),
            ticket=ticket,
        )
        chosen = _resolving(offered, self.settings.resolved_states)
        if chosen is None:
            names = ", ".join(repr(str(t.get("name"))) for t in offered) or "none"
            raise DeskError(
                f"Jira offers no transition of {ticket} to a resolved state (offered: {names})",
                hint="the workflow decides; [itsm] resolved_states names its resolved states",
            )
        fields: dict[str, Any] = {}
        resolution = (chosen.get("fields") or {}).get("resolution")
        if resolution:
            allowed = [str(v.get("name")) for v in resolution.get("allowedValues") or []]
            pick = next((n for n in ("Done", "Fixed", "Resolved") if n in allowed), None)
            if pick or allowed:
                fields["resolution"] = {"name": pick or allowed[0]}
        self._call(
            f"resolve {ticket}",
            lambda: self._jira.transition_issue(issue, str(chosen["id"]), fields=fields),
            ticket=ticket,
            send=True,
        )
        after = self.lookup(ticket)
        if self.settings.state(after.status) != "resolved":
            raise DeskError(f"Jira left {ticket} {after.status!r} after {chosen.get('name')!r}")
        return after.status

    def check(self) -> list[str]:
        me = self._call("read the signed-in account", lambda: self._jira.myself())
        kind = self._jira.deploymentType or "Data Center"
        tls = "TLS verified" if self.url.startswith("https://") else "plain HTTP (no TLS)"
        if self.url.startswith("https://") and self.settings.ca_bundle:
            tls += f" against {self.settings.ca_bundle}"
        return [
            f"reached {self.url}/rest/api/2/ (Jira {kind}; {tls})",
            f"signed in as {me.get('displayName') or me.get('name') or me.get('accountId')}"
            f" ({self.settings.user or 'a personal access token'})",
        ]

    # -- the sync ----------------------------------------------------------------------------
    def changes(self, after: int, since: float | None = None) -> Iterator[Change]:
        """The steps of every issue updated since the later of `since` and the mark (less
        MARGIN), oldest first. JQL reads its dates in the itops account's time zone (GET
        myself says which), so the instant is written in that zone."""
        mark = after / 100_000 - MARGIN if after else 0.0
        start = max(since or 0.0, mark, 0.0)
        stamp = datetime.fromtimestamp(start, self._zone()).strftime("%Y/%m/%d %H:%M")
        jql = f'updated >= "{stamp}" ORDER BY updated ASC'
        steps: list[Change] = []
        for issue in self._search(jql):
            steps += [c for c in self._steps(issue) if since is None or c.at >= since]
        yield from sorted(steps, key=lambda c: c.txn)

    def _zone(self) -> tzinfo:
        """The itops account's time zone (UTC if Jira does not say, or names an unknown one)."""
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        me = self._call("read the signed-in account", lambda: self._jira.myself())
        try:
            return ZoneInfo(str(me.get("timeZone") or "UTC"))
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("Jira names an unknown time zone %r: JQL times as UTC", me.get("timeZone"))
            return UTC

    def history(self, ticket: str) -> list[Change]:
        key = number(ticket, self.system)
        issue = self._call(
            f"read {ticket}'s history",
            lambda: self._jira.issue(key, fields=f"{FIELDS},comment", expand="changelog").raw,
            ticket=ticket,
        )
        return sorted(self._steps(issue), key=lambda c: c.txn)

    def tickets(self, ids: Iterable[str]) -> dict[str, DeskTicket]:
        found: dict[str, DeskTicket] = {}
        for ticket in ids:
            if ticket in self._seen:
                found[ticket] = self._seen[ticket]
                continue
            try:
                found[ticket] = self.lookup(ticket)
            except TicketUnknown:
                continue
        return found

    def _search(self, jql: str) -> Iterator[dict[str, Any]]:
        fields = f"{FIELDS},comment"
        token: str | None = None
        start = 0
        while True:
            if self._jira.deploymentType == "Cloud":
                call = partial(self._jira.enhanced_search_issues, jql, nextPageToken=token)
            else:
                call = partial(self._jira.search_issues, jql, startAt=start)
            page = self._call(
                "search issues",
                partial(call, maxResults=PAGE, fields=fields, expand="changelog",
                        json_result=True),
            )  # fmt: skip
            issues = page.get("issues") or []
            yield from issues
            token = page.get("nextPageToken")
            start += len(issues)
            done = (not token) if self._jira.deploymentType == "Cloud" else (
                not issues or start >= int(page.get("total") or 0)
            )  # fmt: skip
            if done:
                return

    def _steps(self, issue: dict[str, Any]) -> list[Change]:
        """An issue's steps: its creation, public comments (replies), changelog items."""
        info = self._ticket(issue)
        fields = issue.get("fields") or {}
        ticket = info.id
        steps: list[Change] = []
        if info.created is not None:
            creator = _who(fields.get("reporter") or {})
            steps.append(Change(ticket, _txn(info.created, "created"), info.created, creator,
                                "created"))  # fmt: skip
        comments = (fields.get("comment") or {}).get("comments")
        total = int((fields.get("comment") or {}).get("total") or 0)
        cloud = self._jira.deploymentType == "Cloud"  # (only Cloud says jsdPublic inline)
        if comments is None or total > len(comments) or (total and not cloud):
            comments = self._call(
                f"read {ticket}'s comments",
                partial(self._jira.comments, ticket, expand="properties"),
                ticket=ticket,
            )
            comments = [c.raw for c in comments]
        for comment in comments:
            at = _epoch(comment.get("created"))
            if at is None or not _public(comment) or KEY_LINE in str(comment.get("body") or ""):
                continue  # internal, or itops' own note
            steps.append(Change(ticket, _txn(at, "replied"), at, _who(comment.get("author") or {}),
                                "replied"))  # fmt: skip
        changelog = issue.get("changelog") or {}
        histories = changelog.get("histories") or []
        if int(changelog.get("total") or 0) > len(histories):
            histories = self._changelog(ticket)
        for history in histories:
            at = _epoch(history.get("created"))
            if at is None:
                continue
            by = _who(history.get("author") or {})
            for item in history.get("items") or []:
                what = CHANGED.get(str(item.get("field") or "").casefold())
                if what is None:
                    continue
                old, new = str(item.get("fromString") or ""), str(item.get("toString") or "")
                steps.append(Change(ticket, _txn(at, what), at, by, what, old, new))
        survey = self._survey(issue, info)
        if survey is not None:
            steps.append(survey)
        return steps

    def _survey(self, issue: dict[str, Any], info: DeskTicket) -> Change | None:
        """A resolved request's satisfaction rating (Cloud only), keyed by the issue's id: one
        per request, recorded once. Its time is not in the answer (the portal's "Satisfaction
        date" is a custom field whose id differs per site): it is the issue's last update —
        rating a request updates it, which is also how the sync's JQL finds it."""
        if self._jira.deploymentType != "Cloud":
            return None
        if self.settings.state(info.status) not in ("resolved", "closed"):
            return None
        at = _epoch((issue.get("fields") or {}).get("updated"))
        if at is None:
            return None
        url = f"{self.url}/rest/servicedeskapi/request/{info.number}/feedback"

        def get() -> Any:
            from jira.utils import json_loads

            return json_loads(self._jira._session.get(url, headers={"X-ExperimentalApi": "opt-in"}))

        try:
            feedback = self._call(f"read {info.id}'s satisfaction rating", get, ticket=info.id)
        except TicketUnknown:  # no rating (or not a service request)
            return None
        if not isinstance(feedback, dict) or feedback.get("rating") is None:
            return None
        comment = str((feedback.get("comment") or {}).get("body") or "")
        by = info.requesters[0] if info.requesters else ""
        key = f"jira-survey-{issue.get('id') or info.id}"
        rating = str(feedback.get("rating"))  # (the sync skips one outside 1–5, saying why)
        return Change(info.id, _txn(at, "survey"), at, by, "survey", comment, rating, key=key)

    def _changelog(self, ticket: str) -> list[dict[str, Any]]:
        """GET issue/KEY/changelog, every page (an issue with more than the search embeds)."""
        found: list[dict[str, Any]] = []
        while True:
            params = {"startAt": len(found), "maxResults": PAGE}
            page = self._call(
                f"read {ticket}'s changelog",
                partial(self._jira._get_json, f"issue/{ticket}/changelog", params=params),
                ticket=ticket,
            )
            values = page.get("values") or []
            found += values
            if not values or page.get("isLast", True):
                return found

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # -- errors ------------------------------------------------------------------------------
    def _call(
        self, what: str, call: Callable[[], Any], *, ticket: str | None = None, send: bool = False
    ) -> Any:
        """Run a jira call; its failures as DeskErrors. `send`: the call changes the issue,
        so a timeout leaves it unknown whether Jira did it."""
        import requests
        from jira.exceptions import JIRAError

        began = time.monotonic()
        try:
            return call()
        except JIRAError as exc:
            status = int(exc.status_code or 0)
            said = _said(exc)
            if status == 401:
                raise DeskAuthError(
                    f"Jira at {self.url} refused the credentials of "
                    f"{self.settings.user or 'the token'!r} (HTTP 401) to {what}",
                    hint="check [itsm] user and token (Cloud: the account's e-mail and an API "
                    "token); then: itops itsm check",
                ) from exc
            if status == 403:
                raise DeskAuthError(
                    f"Jira at {self.url}: {self.settings.user!r} may not {what} (HTTP 403)",
                    hint="the permissions the itops account needs: docs/itsm.md",
                ) from exc
            if status == 404 and ticket is not None:
                raise TicketUnknown(
                    f"{ticket}: Jira at {self.url} has no such issue",
                    hint="check the key (PROJECT-N); or the itops account cannot browse its "
                    "project (Browse Projects)",
                ) from exc
            if status in (409, 429) or status >= 500:
                retry = (
                    exc.response.headers.get("Retry-After") if exc.response is not None else None
                )
                raise DeskUnavailable(
                    f"Jira at {self.url} answered HTTP {status} to {what}",
                    retry_after=retry_after(retry) if retry else None,
                ) from exc
            raise DeskError(f"Jira at {self.url} answered HTTP {status} to {what}: {said}") from exc
        except requests.exceptions.RequestException as exc:
            raise unanswered("Jira", self.url, what, exc, began=began, send=send) from exc
        except (ValueError, KeyError, TypeError) as exc:  # an answer that is not Jira's
            raise DeskError(f"Jira at {self.url}: unexpected answer to {what}: {exc}") from exc


def _queue(fields: dict[str, Any]) -> str:
    """What itops maps to a category: the first component, else the issue type."""
    for component in fields.get("components") or []:
        if component.get("name"):
            return str(component["name"])
    return str((fields.get("issuetype") or {}).get("name") or "")


def _who(user: dict[str, Any]) -> str:
    """A Jira user as the sync compares them: Cloud's accountId, Data Center's name."""
    return str(user.get("accountId") or user.get("name") or user.get("displayName") or "")


def _public(comment: dict[str, Any]) -> bool:
    """A comment the customer sees: Cloud says `jsdPublic`; else the sd.public.comment
    property (internal: true) marks an internal one."""
    if "jsdPublic" in comment:
        return bool(comment["jsdPublic"])
    for prop in comment.get("properties") or []:
        if prop.get("key") == "sd.public.comment":
            return not (prop.get("value") or {}).get("internal")
    return True


def _resolving(offered: list[dict[str, Any]], resolved: Iterable[str]) -> dict[str, Any] | None:
    """The transition whose target status is a resolved state (a resolved state's own name
    first, in `resolved_states` order)."""
    by_target: dict[str, dict[str, Any]] = {}
    for t in offered:
        by_target.setdefault(str((t.get("to") or {}).get("name") or "").casefold(), t)
    for state in resolved:
        if state.casefold() in by_target:
            return by_target[state.casefold()]
    return None


def _said(exc: Any) -> str:
    text = str(getattr(exc, "text", "") or "")
    return text[:200]


def _txn(at: float, what: str) -> int:
    return round(at * 1000) * 100 + RANKS[what]


def _epoch(value: Any) -> float | None:
    """Jira's time (2026-12-04T15:50:28.123+0000) → epoch seconds."""
    if not value or not isinstance(value, str):
        return None
    for form in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.strptime(value, form).timestamp()
        except ValueError:
            continue
    return None

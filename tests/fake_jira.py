"""A loopback stand-in for a Jira Service Management Cloud site's REST API v2 — NOT Jira.

It implements Atlassian's documented request/response shapes for the calls itops makes (Jira
Cloud platform REST API v2): GET serverInfo, GET myself, GET issue/{key}?fields&expand=changelog,
GET issue/{key}/comment?startAt&maxResults (comments carry JSM's `jsdPublic`), POST
issue/{key}/comment (the `sd.public.comment` property `{"internal": true}` makes it internal),
GET issue/{key}/transitions?expand=transitions.fields and POST issue/{key}/transitions (204; a
transition whose screen requires a resolution refuses one without it: 400), GET
issue/{key}/changelog (paged, isLast), GET search/jql (`updated >= "yyyy/MM/dd HH:mm"
ORDER BY updated ASC`, nextPageToken paging); errors as {"errorMessages": [...], "errors":
{}}. The workflow is JSM's IT service desk one: Waiting for support → In Progress / Waiting for
customer → Resolved → Closed (and Canceled). Times are UTC, as an account set to UTC sees them.
Cloud only, from the Service Management REST API: GET /rest/servicedeskapi/request/{key}/feedback
→ {"type": "csat", "rating": 1–5, "comment": {"body"}} (CSATFeedbackFullDTO), 404 when the
request has no rating; Data Center has no such resource (404). A rating updates the issue
(`updated`), as a change of its Satisfaction field does.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tests.fakedesk import Answer, FakeDesk

STATUSES = {
    "Waiting for support": "new", "In Progress": "indeterminate",
    "Waiting for customer": "indeterminate", "Pending": "indeterminate", "Resolved": "done",
    "Closed": "done", "Canceled": "done",
}  # fmt: skip
# from a status: the transitions offered (id, name, target status)
WORKFLOW = {
    "open": [("11", "Start work", "In Progress"), ("21", "Respond to customer",
             "Waiting for customer"), ("761", "Resolve this issue", "Resolved"),
             ("851", "Cancel request", "Canceled")],
    "Resolved": [("901", "Close", "Closed"), ("911", "Back to in progress", "In Progress")],
}  # fmt: skip
FIELD_IDS = (
    "summary",
    "status",
    "priority",
    "components",
    "issuetype",
    "reporter",
    "created",
    "updated",
    "project",
    "comment",
    "resolution",
)
RESOLUTIONS = [{"id": "10000", "name": "Done"}, {"id": "10001", "name": "Won't Do"},
               {"id": "10002", "name": "Duplicate"}]  # fmt: skip


def jtime(at: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}+0000"
    )


class FakeJira(FakeDesk):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("user", "itops@example.org")
        super().__init__(**kwargs)
        self.clock = time.time
        self.issues: dict[str, dict[str, Any]] = {}
        self.next_id = 10017
        self.next_history = 20000
        self.next_comment = 30000
        self.embed = 100  # changelog entries a search or issue embeds (Cloud: up to 100)
        self.accounts = {"itops@example.org": "5b10ac8d82e05b22cc7d4ef5"}
        # "Cloud", or "Server" (Data Center): comments then carry no jsdPublic, only the
        # sd.public.comment property when asked for (expand=properties), and the search is
        # GET search with startAt/total
        self.deployment = "Cloud"
        self.time_zone = "UTC"  # the itops account's: JQL's dates are read in it

    # -- seeding, as the portal and agents would -----------------------------------------------
    def account(self, name: str) -> dict[str, Any]:
        account = self.accounts.setdefault(name, f"acc-{len(self.accounts):04d}-{name}")
        return {"accountId": account, "displayName": name.title(),
                "emailAddress": f"{name}@example.org" if "@" not in name else name,
                "accountType": "atlassian", "active": True, "timeZone": self.time_zone}  # fmt: skip

    def new_issue(
        self, summary: str, *, priority: str = "Medium", component: str | None = "Printers",
        reporter: str = "alice", project: str = "ITSD", at: float | None = None,
    ) -> str:  # fmt: skip
        with self.lock:
            at = self.clock() if at is None else at
            key = f"{project}-{self.next_id - 10000}"
            self.next_id += 1
            self.issues[key] = {
                "id": str(self.next_id), "key": key, "histories": [], "comments": [],
                "updated_at": at,
                "fields": {
                    "summary": summary, "status": self._status("Waiting for support"),
                    "priority": {"name": priority, "id": "3"},
                    "components": [{"name": component, "id": "10100"}] if component else [],
                    "issuetype": {"name": "[System] Incident", "id": "10004"},
                    "reporter": self.account(reporter), "created": jtime(at),
                    "updated": jtime(at), "project": {"key": project, "name": "IT Support"},
                    "resolution": None,
                },
            }  # fmt: skip
            return key

    def change(self, key: str, by: str, at: float | None = None, **values: str) -> None:
        """An agent's change at the desk: status=…, priority=…, component=…."""
        with self.lock:
            self._change(self.issues[key], self.account(by), self.clock() if at is None else at,
                         values)  # fmt: skip

    def comment(self, key: str, by: str, body: str, *, public: bool = True,
                at: float | None = None) -> None:  # fmt: skip
        with self.lock:
            self._comment(self.issues[key], self.account(by), body, public,
                          self.clock() if at is None else at)  # fmt: skip

    def rate(self, key: str, rating: int, comment: str | None = None, *,
             at: float | None = None) -> None:  # fmt: skip
        """The customer rates the resolved request on the portal (CSAT)."""
        with self.lock:
            issue = self.issues[key]
            issue["feedback"] = {"type": "csat", "rating": rating}
            if comment is not None:
                issue["feedback"]["comment"] = {"body": comment}
            at = self.clock() if at is None else at
            issue["fields"]["updated"] = jtime(at)
            issue["updated_at"] = at

    def comments_of(self, key: str) -> list[dict[str, Any]]:
        return list(self.issues[key]["comments"])

    # -- the REST API --------------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> Any:
        return {"errorMessages": [message], "errors": {}}

    def unauthorized(self) -> Answer:
        return (
            401,
            {"WWW-Authenticate": 'Basic realm="protected-area"'},
            {
                "errorMessages": ["Client must be authenticated to access this resource."],
                "errors": {},
            },
        )

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Answer:
        param = {k: v[-1] for k, v in query.items()}
        feedback = re.fullmatch(r"/rest/servicedeskapi/request/([A-Z][A-Z0-9_]*-[0-9]+)/feedback",
                                path)  # fmt: skip
        if feedback and method == "GET" and self.deployment == "Cloud":
            rated = (self.issues.get(feedback.group(1)) or {}).get("feedback")
            if rated is None:
                return 404, {}, self.error_body(404, "No feedback found for this request.")
            return 200, {}, dict(rated)
        if not path.startswith("/rest/api/2/"):
            return 404, {}, self.error_body(404, "not found")
        rest = path[len("/rest/api/2/") :]
        if rest == "serverInfo" and method == "GET":
            return 200, {}, {"baseUrl": self.url, "version": "1001.0.0-SNAPSHOT",
                             "versionNumbers": [1001, 0, 0], "deploymentType": self.deployment,
                             "buildNumber": 100289, "serverTitle": "Jira"}  # fmt: skip
        if rest == "field" and method == "GET":  # (the library maps field names to ids)
            return 200, {}, [{"id": f, "key": f, "name": f.title(), "custom": False,
                              "navigable": True, "searchable": True,
                              "clauseNames": [f]} for f in FIELD_IDS]  # fmt: skip
        if rest == "myself" and method == "GET":
            return 200, {}, self.account(self.user)
        if rest == "search/jql" and method == "GET" and self.deployment == "Cloud":
            return self._search(query, param)
        if rest == "search" and method == "GET" and self.deployment != "Cloud":
            return self._search(query, param)
        found = re.fullmatch(r"issue/([A-Z][A-Z0-9_]*-[0-9]+)(?:/(comment|transitions|changelog))?",
                             rest)  # fmt: skip
        if found is None:
            return 404, {}, self.error_body(404, "not found")
        key, sub = found.groups()
        issue = self.issues.get(key)
        if issue is None:
            return (
                404,
                {},
                self.error_body(
                    404, "Issue does not exist or you do not have permission to see it."
                ),
            )
        me = self.account(self.user)
        if sub is None and method == "GET":
            return 200, {}, self._render(issue, param.get("fields"), param.get("expand"))
        if sub == "comment" and method == "GET":
            start, most = int(param.get("startAt") or 0), int(param.get("maxResults") or 5000)
            items = [self._shown(c, "properties" in (param.get("expand") or ""))
                     for c in issue["comments"]]  # fmt: skip
            return 200, {}, {"startAt": start, "maxResults": most, "total": len(items),
                             "comments": items[start : start + most]}  # fmt: skip
        if sub == "comment" and method == "POST" and isinstance(body, dict):
            internal = any(p.get("key") == "sd.public.comment" and (p.get("value") or {}).get(
                "internal") for p in body.get("properties") or [])  # fmt: skip
            made = self._comment(issue, me, str(body.get("body") or ""), not internal,
                                 self.clock())  # fmt: skip
            return 201, {}, self._shown(made, True)
        if sub == "transitions" and method == "GET":
            offered = self._offered(issue, "transitions.fields" in (param.get("expand") or ""))
            return 200, {}, {"expand": "transitions", "transitions": offered}
        if sub == "transitions" and method == "POST" and isinstance(body, dict):
            wanted = str((body.get("transition") or {}).get("id") or "")
            step = next((t for t in self._steps(issue) if t[0] == wanted), None)
            if step is None:
                return 400, {}, {"errorMessages": [f"Transition id '{wanted}' is not valid for "
                                 "this issue."], "errors": {}}  # fmt: skip
            fields = body.get("fields") or {}
            if step[2] == "Resolved" and not fields.get("resolution"):
                return (
                    400,
                    {},
                    {"errorMessages": [], "errors": {"resolution": "Resolution is required."}},
                )
            values = {"status": step[2]}
            self._change(issue, me, self.clock(), values)
            if fields.get("resolution"):
                issue["fields"]["resolution"] = fields["resolution"]
            return 204, {}, None
        if sub == "changelog" and method == "GET":
            start, most = int(param.get("startAt") or 0), int(param.get("maxResults") or 100)
            items = issue["histories"]
            return 200, {}, {"startAt": start, "maxResults": most, "total": len(items),
                             "isLast": start + most >= len(items),
                             "values": items[start : start + most]}  # fmt: skip
        return 405, {}, self.error_body(405, "method not allowed")

    # -- state ---------------------------------------------------------------------------------
    def _status(self, name: str) -> dict[str, Any]:
        return {"name": name, "id": str(10000 + list(STATUSES).index(name)),
                "statusCategory": {"key": STATUSES[name]}}  # fmt: skip

    def _steps(self, issue: dict[str, Any]) -> list[tuple[str, str, str]]:
        status = issue["fields"]["status"]["name"]
        if status == "Resolved":
            return WORKFLOW["Resolved"]
        if STATUSES[status] == "done":
            return []
        return [t for t in WORKFLOW["open"] if t[2] != status]

    def _offered(self, issue: dict[str, Any], with_fields: bool) -> list[dict[str, Any]]:
        offered = []
        for tid, name, target in self._steps(issue):
            t: dict[str, Any] = {"id": tid, "name": name, "to": self._status(target),
                                 "hasScreen": target == "Resolved", "isGlobal": False}  # fmt: skip
            if with_fields:
                t["fields"] = {}
                if target == "Resolved":
                    t["fields"]["resolution"] = {
                        "required": True, "name": "Resolution", "key": "resolution",
                        "schema": {"type": "resolution", "system": "resolution"},
                        "operations": ["set"], "allowedValues": RESOLUTIONS,
                    }  # fmt: skip
            offered.append(t)
        return offered

    def _change(self, issue: dict[str, Any], by: dict[str, Any], at: float,
                values: dict[str, str]) -> None:  # fmt: skip
        fields = issue["fields"]
        items = []
        for name, value in values.items():
            if name == "status":
                old = fields["status"]["name"]
                fields["status"] = self._status(value)
                items.append({"field": "status", "fieldtype": "jira", "fieldId": "status",
                              "fromString": old, "toString": value})  # fmt: skip
            elif name == "priority":
                old = fields["priority"]["name"]
                fields["priority"] = {"name": value, "id": "2"}
                items.append({"field": "priority", "fieldtype": "jira", "fieldId": "priority",
                              "fromString": old, "toString": value})  # fmt: skip
            elif name == "component":
                old = fields["components"][0]["name"] if fields["components"] else None
                fields["components"] = [{"name": value, "id": "10101"}]
                items.append({"field": "Component", "fieldtype": "jira", "fieldId": "components",
                              "fromString": old, "toString": value})  # fmt: skip
        self.next_history += 1
        issue["histories"].append({"id": str(self.next_history), "author": by,
                                   "created": jtime(at), "items": items})  # fmt: skip
        fields["updated"] = jtime(at)
        issue["updated_at"] = at

    def _comment(self, issue: dict[str, Any], by: dict[str, Any], body: str, public: bool,
                 at: float) -> dict[str, Any]:  # fmt: skip
        self.next_comment += 1
        made = {"id": str(self.next_comment), "author": by, "updateAuthor": by, "body": body,
                "created": jtime(at), "updated": jtime(at), "jsdPublic": public}  # fmt: skip
        issue["comments"].append(made)
        issue["fields"]["updated"] = jtime(at)
        issue["updated_at"] = at
        return made

    def _shown(self, comment: dict[str, Any], properties: bool) -> dict[str, Any]:
        """A comment as this deployment shows it (Cloud: jsdPublic; Data Center: the
        sd.public.comment property, only with expand=properties)."""
        shown = {k: v for k, v in comment.items() if k != "jsdPublic"}
        if self.deployment == "Cloud":
            shown["jsdPublic"] = comment["jsdPublic"]
        elif properties:
            shown["properties"] = [{"key": "sd.public.comment",
                                    "value": {"internal": not comment["jsdPublic"]}}]  # fmt: skip
        return shown

    def _render(self, issue: dict[str, Any], fields: str | None, expand: str | None) -> Any:
        names = [f for f in (fields or "*all").split(",") if f]
        all_fields = dict(issue["fields"])
        comments = [self._shown(c, False) for c in issue["comments"][:5000]]
        all_fields["comment"] = {"comments": comments, "maxResults": 5000,
                                 "total": len(issue["comments"]), "startAt": 0}  # fmt: skip
        shown = all_fields if "*all" in names else {n: all_fields.get(n) for n in names}
        out: dict[str, Any] = {"expand": "renderedFields,names,changelog", "id": issue["id"],
                               "key": issue["key"], "fields": shown}  # fmt: skip
        if expand and "changelog" in expand:
            histories = issue["histories"]
            out["changelog"] = {
                "startAt": 0,
                "maxResults": min(self.embed, len(histories)),
                "total": len(histories),
                "histories": histories[: self.embed],
            }
        return out

    def _search(self, query: dict[str, list[str]], param: dict[str, str]) -> Answer:
        jql = param.get("jql", "")
        found = re.fullmatch(
            r'updated >= "(\d{4}/\d\d/\d\d \d\d:\d\d)" ORDER BY updated ASC', jql.strip()
        )
        if found is None:
            return 400, {}, {"errorMessages": [f"Error in the JQL Query: {jql!r}"], "errors": {}}
        local = datetime.strptime(found.group(1), "%Y/%m/%d %H:%M")
        since = local.replace(tzinfo=ZoneInfo(self.time_zone)).timestamp()
        matching = sorted((i for i in self.issues.values() if i["updated_at"] >= since),
                          key=lambda i: i["updated_at"])  # fmt: skip
        start = int(param.get("nextPageToken") or param.get("startAt") or 0)
        most = int(param.get("maxResults") or 50)
        fields = None  # (the library repeats `fields=` per field: every field is answered)
        page = [
            self._render(i, fields, param.get("expand")) for i in matching[start : start + most]
        ]
        if self.deployment != "Cloud":  # GET search: startAt and total
            return 200, {}, {"expand": "names,schema", "startAt": start, "maxResults": most,
                             "total": len(matching), "issues": page}  # fmt: skip
        out: dict[str, Any] = {"issues": page, "isLast": start + most >= len(matching)}
        if not out["isLast"]:
            out["nextPageToken"] = str(start + most)
        return 200, {}, out

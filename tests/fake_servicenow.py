"""A loopback stand-in for a ServiceNow instance's Table API — NOT ServiceNow.

It implements ServiceNow's documented request/response shapes for the calls itops makes
(REST API reference, "Table API"): GET /api/now/table/{table} with sysparm_query (an encoded
query: `=`, `!=`, `IN`, `LIKE`, `>=`, `>`, `<=`, `<`, `^`-joined, `ORDERBY`/`ORDERBYDESC`),
sysparm_fields (dot-walked reference fields too), sysparm_display_value=true|false|all,
sysparm_limit/sysparm_offset with the X-Total-Count header; PATCH /api/now/table/{table}/{id};
errors as {"error": {"message", "detail"}, "status": "failure"}. The tables hold what itops
reads: incident (work_notes and comments go to sys_journal_field, audited changes to
sys_audit with record_checkpoint = the incident's update count), sys_user, and the
Assessments tables a survey lives in (asmt_metric: name, datatype scale|string|…, scale_min,
scale_max; asmt_assessment_instance: trigger_table, trigger_id = the incident's sys_id,
state ready|wip|complete, taken_on, user; asmt_metric_result: instance, metric,
actual_value, string_value; reference fields rendered as sys_ids, dot-walkable). Resolving
(state 6) without close_code and close_notes is refused with 403 "Data Policy Exception", as
the incident's data policy does. Times are UTC ("2026-12-04 15:50:28").
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from tests.fakedesk import Answer, FakeDesk

STATE_LABELS = {"1": "New", "2": "In Progress", "3": "On Hold", "6": "Resolved",
                "7": "Closed", "8": "Canceled"}  # fmt: skip
PRIORITY_LABELS = {"1": "1 - Critical", "2": "2 - High", "3": "3 - Moderate", "4": "4 - Low",
                   "5": "5 - Planning"}  # fmt: skip
AUDITED = ("state", "priority", "category", "comments", "work_notes")
# dot-walkable reference fields: table → field → referenced table
REFERENCES = {
    "incident": {"caller_id": "sys_user"},
    "asmt_assessment_instance": {"user": "sys_user"},
    "asmt_metric_result": {"metric": "asmt_metric", "instance": "asmt_assessment_instance"},
}
CONDITION = re.compile(r"^([a-z_][a-z0-9_.]*?)(IN|LIKE|>=|<=|!=|=|>|<)(.*)$", re.S)


def stamp(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def sys_id() -> str:
    return uuid.uuid4().hex


class FakeServiceNow(FakeDesk):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clock = time.time
        self.tables: dict[str, dict[str, dict[str, str]]] = {
            "incident": {}, "sys_user": {}, "sys_journal_field": {}, "sys_audit": {},
            "asmt_metric": {}, "asmt_assessment_instance": {}, "asmt_metric_result": {},
        }  # fmt: skip
        self.next_number = 10042
        self.add_user("itops", "itops@example.org", "itops service account")

    # -- seeding, as ServiceNow's own UI would -------------------------------------------------
    def add_user(self, user_name: str, email: str, name: str) -> str:
        key = sys_id()
        self.tables["sys_user"][key] = {"sys_id": key, "user_name": user_name, "email": email,
                                        "name": name}  # fmt: skip
        return key

    def user_key(self, user_name: str) -> str:
        for key, row in self.tables["sys_user"].items():
            if row["user_name"] == user_name:
                return key
        return self.add_user(user_name, f"{user_name}@example.org", user_name.title())

    def new_incident(
        self, subject: str, *, priority: str = "3", category: str = "software",
        caller: str = "alice", by: str = "alice", at: float | None = None,
    ) -> str:  # fmt: skip
        with self.lock:
            at = self.clock() if at is None else at
            number = f"INC{self.next_number:07d}"
            self.next_number += 1
            key = sys_id()
            self.tables["incident"][key] = {
                "sys_id": key, "number": number, "short_description": subject, "state": "1",
                "priority": priority, "category": category, "caller_id": self.user_key(caller),
                "sys_created_on": stamp(at), "sys_created_by": by, "sys_mod_count": "0",
                "close_code": "", "close_notes": "", "work_notes": "", "comments": "",
            }  # fmt: skip
            return number

    def incident(self, number: str) -> dict[str, str]:
        return next(r for r in self.tables["incident"].values() if r["number"] == number)

    def update(self, number: str, by: str, at: float | None = None, **values: str) -> None:
        """A change made at the desk by someone (a state, priority, category, a comment)."""
        with self.lock:
            self._patch(self.incident(number), values, by, self.clock() if at is None else at)

    def work_notes(self, number: str) -> list[str]:
        key = self.incident(number)["sys_id"]
        return [r["value"] for r in self.tables["sys_journal_field"].values()
                if r["element_id"] == key and r["element"] == "work_notes"]  # fmt: skip

    def add_metric(
        self, name: str, datatype: str = "scale", scale_min: int = 1, scale_max: int = 5
    ) -> str:
        """An asmt_metric (a survey question)."""
        key = sys_id()
        self.tables["asmt_metric"][key] = {
            "sys_id": key, "name": name, "datatype": datatype, "scale_min": str(scale_min),
            "scale_max": str(scale_max),
        }  # fmt: skip
        return key

    def survey(
        self, number: str, answers: dict[str, str], *, user: str = "alice",
        state: str = "complete", at: float | None = None,
    ) -> str:  # fmt: skip
        """A survey instance triggered by the incident, its answers keyed by metric sys_id
        (a scale metric's actual_value; a string metric's string_value)."""
        with self.lock:
            at = self.clock() if at is None else at
            key = sys_id()
            self.tables["asmt_assessment_instance"][key] = {
                "sys_id": key, "trigger_table": "incident",
                "trigger_id": self.incident(number)["sys_id"], "state": state,
                "taken_on": stamp(at) if state == "complete" else "",
                "user": self.user_key(user), "sys_created_on": stamp(at),
            }  # fmt: skip
            for metric, answer in answers.items():
                rkey = sys_id()
                text = self.tables["asmt_metric"][metric]["datatype"] == "string"
                self.tables["asmt_metric_result"][rkey] = {
                    "sys_id": rkey, "instance": key, "metric": metric,
                    "actual_value": "-1" if text else answer,
                    "string_value": answer if text else "",
                }  # fmt: skip
            return key

    def complete(self, instance: str, at: float) -> None:
        """The survey taken later."""
        with self.lock:
            row = self.tables["asmt_assessment_instance"][instance]
            row.update(state="complete", taken_on=stamp(at))

    # -- the Table API -------------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> Any:
        return {"error": {"message": message, "detail": ""}, "status": "failure"}

    def unauthorized(self) -> Answer:
        body = {
            "error": {
                "message": "User Not Authenticated",
                "detail": "Required to provide Auth information",
            },
            "status": "failure",
        }
        return 401, {}, body

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Answer:
        found = re.fullmatch(r"/api/now/table/([a-z_]+)(?:/([0-9a-f]{32}))?", path)
        if found is None or found.group(1) not in self.tables:
            return 400, {}, self.error_body(400, "Invalid table")
        table, key = found.groups()
        param = {k: v[-1] for k, v in query.items()}
        display = param.get("sysparm_display_value", "false")
        fields = [f for f in param.get("sysparm_fields", "").split(",") if f]
        if method == "GET" and key is None:
            rows = self._select(table, param.get("sysparm_query", ""))
            offset = int(param.get("sysparm_offset") or 0)
            limit = int(param.get("sysparm_limit") or 10000)
            page = rows[offset : offset + limit]
            result = [self._render(table, r, fields, display) for r in page]
            return 200, {"X-Total-Count": str(len(rows))}, {"result": result}
        row = self.tables[table].get(key or "")
        if row is None:
            return (
                404,
                {},
                {
                    "error": {
                        "message": "No Record found",
                        "detail": "Record doesn't exist or ACL restricts the record retrieval",
                    },
                    "status": "failure",
                },
            )
        if method == "GET":
            return 200, {}, {"result": self._render(table, row, fields, display)}
        if method in ("PATCH", "PUT") and table == "incident" and isinstance(body, dict):
            values = {k: str(v) for k, v in body.items() if k != "sys_id"}
            if values.get("state") == "6" and not (
                (values.get("close_code") or row["close_code"])
                and (values.get("close_notes") or row["close_notes"])
            ):
                return 403, {}, {"error": {"message": "Operation Failed", "detail":
                                 "Data Policy Exception: Resolution code, Resolution notes "
                                 "are mandatory"}, "status": "failure"}  # fmt: skip
            self._patch(row, values, self.user, self.clock())
            return 200, {}, {"result": self._render(table, row, [], display)}
        return 405, {}, self.error_body(405, "Method not Supported")

    def _patch(self, row: dict[str, str], values: dict[str, str], by: str, at: float) -> None:
        checkpoint = int(row["sys_mod_count"]) + 1
        for name, value in values.items():
            if name in ("work_notes", "comments"):
                jkey = sys_id()
                self.tables["sys_journal_field"][jkey] = {
                    "sys_id": jkey, "element_id": row["sys_id"], "element": name,
                    "name": "incident", "value": value, "sys_created_on": stamp(at),
                    "sys_created_by": by,
                }  # fmt: skip
                old = ""
            else:
                old = row.get(name, "")
                if old == value:
                    continue
                row[name] = value
            if name in AUDITED:
                akey = sys_id()
                self.tables["sys_audit"][akey] = {
                    "sys_id": akey, "tablename": "incident", "documentkey": row["sys_id"],
                    "fieldname": name, "oldvalue": old, "newvalue": value, "user": by,
                    "sys_created_on": stamp(at), "record_checkpoint": str(checkpoint),
                }  # fmt: skip
        row["sys_mod_count"] = str(checkpoint)

    # -- encoded queries and rendering ---------------------------------------------------------
    def _select(self, table: str, encoded: str) -> list[dict[str, str]]:
        rows = list(self.tables[table].values())
        order: list[tuple[str, bool]] = []
        for part in [p for p in encoded.split("^") if p]:
            if part.startswith("ORDERBYDESC"):
                order.append((part[11:], True))
                continue
            if part.startswith("ORDERBY"):
                order.append((part[7:], False))
                continue
            found = CONDITION.match(part)
            if found is None:
                raise ValueError(f"unsupported condition {part!r}")
            name, op, value = found.groups()
            rows = [r for r in rows if _holds(self._value(table, r, name), op, value)]
        for name, desc in reversed(order):
            rows.sort(key=lambda r, n=name: self._value(table, r, n), reverse=desc)  # type: ignore[misc]
        return rows

    def _value(self, table: str, row: dict[str, str], name: str) -> str:
        if table == "incident" and name == "active":  # (ServiceNow derives it from the state)
            return "false" if row["state"] in ("6", "7", "8") else "true"
        if "." in name and table in REFERENCES:
            ref, _, sub = name.partition(".")
            target = REFERENCES[table].get(ref, "sys_user")
            return self.tables[target].get(row.get(ref, ""), {}).get(sub, "")
        return row.get(name, "")

    def _label(self, table: str, row: dict[str, str], name: str) -> str:
        value = self._value(table, row, name)
        if table == "incident" and name == "state":
            return STATE_LABELS.get(value, value)
        if table == "incident" and name == "priority":
            return PRIORITY_LABELS.get(value, value)
        if (table, name) in (("incident", "caller_id"), ("asmt_assessment_instance", "user")):
            return self.tables["sys_user"].get(value, {}).get("name", "")
        return value

    def _render(
        self, table: str, row: dict[str, str], fields: list[str], display: str
    ) -> dict[str, Any]:
        names = fields or [n for n in row if n not in ("work_notes", "comments")]
        out: dict[str, Any] = {}
        for name in names:
            value, label = self._value(table, row, name), self._label(table, row, name)
            if display == "all":
                out[name] = {"display_value": label, "value": value}
            else:
                out[name] = label if display == "true" else value
        return out


def _holds(have: str, op: str, want: str) -> bool:
    if op == "=":
        return have == want
    if op == "!=":
        return have != want
    if op == "IN":
        return have in want.split(",")
    if op == "LIKE":
        return want.casefold() in have.casefold()
    return {">=": have >= want, ">": have > want, "<=": have <= want, "<": have < want}[op]

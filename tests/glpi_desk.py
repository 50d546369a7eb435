"""A loopback server implementing GLPI's documented REST API shapes (apirest.php) for the calls
itops makes — NOT GLPI. See tests/desk_server.py.

Implemented as GLPI's apirest.md documents them: initSession (`Authorization: user_token …` or
`Basic …`, `App-Token`) → {"session_token"}; killSession; getFullSession → {"session":
{"glpiname", "glpiactiveprofile"}}; GET Ticket/:id (expand_dropdowns: dropdown ids as names;
with_logs: `_logs`, the ticket's glpi_logs rows); GET Ticket/:id/Ticket_User and
/ITILFollowup; POST ITILFollowup and ITILSolution ({"input": {…}} → 201 {"id", "message"});
GET search/Ticket (criteria on field 19 date_mod `morethan`, forcedisplay 2 and 19, sort,
order, range → {"totalcount", "count", "data": [{"2": id, "19": date_mod}]}, 206 when partial;
or criteria on field 61, the ticket's satisfaction's date_answered); GET
Ticket/:id/TicketSatisfaction (glpi_ticketsatisfactions rows: id, tickets_id, type, date_begin,
date_answered, satisfaction, satisfaction_scaled_to_5, comment — GLPI 10's columns; answering
logs option 62 on the ticket, as CommonITILSatisfaction's history does, and leaves the ticket's
date_mod alone).
Errors as GLPI sends them: a JSON list ["ERROR_…", "message"] (401 ERROR_SESSION_TOKEN_INVALID,
401 ERROR_GLPI_LOGIN_USER_TOKEN, 400 ERROR_WRONG_APP_TOKEN_PARAMETER, 404 ERROR_ITEM_NOT_FOUND).
Log rows as glpi_logs holds them: linked_action 20 (created), 17 (a sub-item added:
itemtype_link ITILFollowup, new_value "(id)"), 0 with id_search_option 12 (status), 3
(priority), 7 (category: "Name (id)"); user_name "name (id)"; times "Y-m-d H:i:s".
"""

from __future__ import annotations

import base64
import itertools
import secrets
import time
from typing import Any

from tests.desk_server import DeskServer, Reply, Seen, stamp

GLPI_TIME = "%Y-%m-%d %H:%M:%S"


class GlpiServer(DeskServer):
    def __init__(self, *, app_token: str | None = "app-tok") -> None:
        super().__init__()
        self.app_token = app_token
        self.users = {2: "glpi", 7: "alice", 9: "itops", 11: "bob"}
        self.user_tokens = {"itops-user-token": 9}
        self.passwords = {"itops": "itops-pw"}
        self.sessions: dict[str, int] = {}
        self.categories = {4: "Printers", 5: "Network", 6: "Hardware > Disks"}
        self.tickets: dict[int, dict[str, Any]] = {}
        self.actors: list[dict[str, Any]] = []
        self.followups: dict[int, dict[str, Any]] = {}
        self.logs: list[dict[str, Any]] = []
        self._log_ids = itertools.count(1000)
        self._ids = itertools.count(1)
        self._fids = itertools.count(501)
        self.satisfactions: dict[int, dict[str, Any]] = {}
        self._sids = itertools.count(71)

    # -- what a GLPI user does in GLPI's own UI (test setup) --------------------------------
    def _log(self, ticket: int, user: int, action: int, field: int = 0, old: str = "",
             new: str = "", link: str = "", at: float | None = None) -> None:  # fmt: skip
        when = stamp(at if at is not None else time.time(), GLPI_TIME)
        self.logs.append(
            {
                "id": next(self._log_ids),
                "itemtype": "Ticket",
                "items_id": ticket,
                "itemtype_link": link,
                "linked_action": action,
                "user_name": f"{self.users[user]} ({user})",
                "date_mod": when,
                "id_search_option": field,
                "old_value": old,
                "new_value": new,
            }
        )
        self.tickets[ticket]["date_mod"] = when

    def new_ticket(self, name: str, *, priority: int = 3, category: int = 4, requester: int = 7,
                   by: int = 2, status: int = 1, at: float | None = None) -> str:  # fmt: skip
        with self.lock:
            n = next(self._ids)
            when = stamp(at if at is not None else time.time(), GLPI_TIME)
            self.tickets[n] = {
                "id": n, "entities_id": 0, "name": name, "date": when, "date_mod": when,
                "date_creation": when, "status": status, "priority": priority, "urgency": 3,
                "impact": 3, "itilcategories_id": category, "is_deleted": 0,
                "users_id_recipient": by, "content": "&lt;p&gt;" + name + "&lt;/p&gt;",
            }  # fmt: skip
            self.actors.append({"id": len(self.actors) + 1, "tickets_id": n,
                                "users_id": requester, "type": 1,
                                "alternative_email": f"{self.users[requester]}@example.org"})  # fmt: skip
            self._log(n, by, 20, at=at)
            return f"GLPI-{n}"

    def set(self, ticket: str, field: str, value: int, *, by: int = 11,
            at: float | None = None) -> None:  # fmt: skip
        n = int(ticket.removeprefix("GLPI-"))
        with self.lock:
            old = self.tickets[n][field]
            self.tickets[n][field] = value
            option = {"status": 12, "priority": 3, "itilcategories_id": 7}[field]
            if field == "itilcategories_id":
                before, after = (
                    f"{self.categories[old]} ({old})",
                    f"{self.categories[value]} ({value})",
                )
            else:
                before, after = str(old), str(value)
            self._log(n, by, 0, option, before, after, at=at)

    def followup(self, ticket: str, content: str, *, by: int = 11, private: bool = False,
                 at: float | None = None) -> int:  # fmt: skip
        n = int(ticket.removeprefix("GLPI-"))
        with self.lock:
            return self._add_followup(n, content, by, private, at)

    def _add_followup(self, n: int, content: str, by: int, private: bool,
                      at: float | None = None) -> int:  # fmt: skip
        fid = next(self._fids)
        self.followups[fid] = {
            "id": fid, "itemtype": "Ticket", "items_id": n, "users_id": by,
            "content": content.replace("<", "&lt;").replace(">", "&gt;"),
            "is_private": 1 if private else 0,
            "date": stamp(at if at is not None else time.time(), GLPI_TIME),
        }  # fmt: skip
        self._log(n, by, 17, new=f"({fid})", link="ITILFollowup", at=at)
        return fid

    def survey(self, ticket: str, *, at: float | None = None) -> int:
        """GLPI's survey made when the ticket is closed (unanswered: satisfaction NULL)."""
        n = int(ticket.removeprefix("GLPI-"))
        with self.lock:
            sid = next(self._sids)
            self.satisfactions[sid] = {
                "id": sid, "tickets_id": n, "type": 1,
                "date_begin": stamp(at if at is not None else time.time(), GLPI_TIME),
                "date_answered": None, "satisfaction": None, "satisfaction_scaled_to_5": None,
                "comment": None,
            }  # fmt: skip
            return sid

    def answer(self, sid: int, satisfaction: int, comment: str = "", *, max_rate: int = 5,
               by: int = 7, scaled: bool = True, at: float | None = None) -> None:  # fmt: skip
        """The requester answers (GLPI 9.5 has no satisfaction_scaled_to_5: `scaled=False`);
        GLPI stores the comment HTML-escaped."""
        with self.lock:
            row = self.satisfactions[sid]
            when = stamp(at if at is not None else time.time(), GLPI_TIME)
            row.update(date_answered=when, satisfaction=satisfaction,
                       comment=comment.replace("<", "&lt;").replace(">", "&gt;"))  # fmt: skip
            if scaled:
                row["satisfaction_scaled_to_5"] = satisfaction / (max_rate / 5)
            else:
                row.pop("satisfaction_scaled_to_5", None)
            self.logs.append({
                "id": next(self._log_ids), "itemtype": "Ticket", "items_id": row["tickets_id"],
                "itemtype_link": "", "linked_action": 0,
                "user_name": f"{self.users[by]} ({by})", "date_mod": when,
                "id_search_option": 62, "old_value": "", "new_value": str(satisfaction),
            })  # fmt: skip

    def notes(self, ticket: str) -> list[dict[str, Any]]:
        n = int(ticket.removeprefix("GLPI-"))
        with self.lock:
            return [f for f in self.followups.values() if f["items_id"] == n]

    # -- the API ---------------------------------------------------------------------------
    def route(self, req: Seen) -> Reply:
        prefix = "/apirest.php/"
        if not req.path.startswith(prefix):
            return Reply(404, ["ERROR_RESOURCE_NOT_FOUND_NOR_COMMONDBTM", "not found"])
        parts = req.path[len(prefix) :].strip("/").split("/")
        if self.app_token and req.headers.get("app-token") != self.app_token:
            return Reply(400, ["ERROR_WRONG_APP_TOKEN_PARAMETER", "missing or wrong app_token"])
        if parts == ["initSession"]:
            return self._init(req)
        user = self.sessions.get(req.headers.get("session-token", ""))
        if user is None:
            return Reply(401, ["ERROR_SESSION_TOKEN_INVALID", "session_token seems invalid"])
        match (req.method, parts):
            case ("GET", ["killSession"]):
                self.sessions.pop(req.headers["session-token"], None)
                return Reply(200, None)
            case ("GET", ["getFullSession"]):
                return Reply(200, {"session": {"glpiID": user, "glpiname": self.users[user],
                                               "glpiactiveprofile": {"id": 6, "name": "Technician"}}})  # fmt: skip
            case ("GET", ["Ticket", n]):
                return self._ticket(int(n), req.query)
            case ("GET", ["Ticket", n, "Ticket_User"]):
                rows = [dict(a) for a in self.actors if a["tickets_id"] == int(n)]
                if req.query.get("expand_dropdowns") == "true":
                    for row in rows:
                        row["users_id"] = self.users[row["users_id"]]
                return Reply(200, rows)
            case ("GET", ["Ticket", n, "ITILFollowup"]):
                if int(n) not in self.tickets:
                    return Reply(404, ["ERROR_ITEM_NOT_FOUND", "Item not found"])
                return Reply(200, [dict(f) for f in self.followups.values()
                                   if f["items_id"] == int(n)])  # fmt: skip
            case ("GET", ["Ticket", n, "TicketSatisfaction"]):
                if int(n) not in self.tickets:
                    return Reply(404, ["ERROR_ITEM_NOT_FOUND", "Item not found"])
                return Reply(200, [dict(r) for r in self.satisfactions.values()
                                   if r["tickets_id"] == int(n)])  # fmt: skip
            case ("POST", ["ITILFollowup"]):
                data = (req.body or {}).get("input") or {}
                n = int(data.get("items_id") or 0)
                if n not in self.tickets:
                    return Reply(400, ["ERROR_GLPI_ADD", "You don't have permission"])
                fid = self._add_followup(n, str(data.get("content", "")), user,
                                         bool(data.get("is_private")))  # fmt: skip
                return Reply(201, {"id": fid, "message": ""},
                             {"Location": f"{prefix}ITILFollowup/{fid}"})  # fmt: skip
            case ("POST", ["ITILSolution"]):
                data = (req.body or {}).get("input") or {}
                n = int(data.get("items_id") or 0)
                ticket = self.tickets.get(n)
                if ticket is None or ticket["status"] in (5, 6):
                    return Reply(400, ["ERROR_GLPI_ADD", "cannot add a solution"])
                old = ticket["status"]
                ticket["status"] = 5
                self._log(n, user, 17, new=f"({n + 9000})", link="ITILSolution")
                self._log(n, user, 0, 12, str(old), "5")
                return Reply(201, {"id": n + 9000, "message": ""})
            case ("GET", ["search", "Ticket"]):
                return self._search(req.query)
        return Reply(400, ["ERROR_BAD_ARRAY", f"not implemented here: {req.method} {req.path}"])

    def _init(self, req: Seen) -> Reply:
        auth = req.headers.get("authorization", "")
        user = None
        if auth.startswith("user_token "):
            user = self.user_tokens.get(auth[len("user_token ") :])
            if user is None:
                return Reply(
                    401, ["ERROR_GLPI_LOGIN_USER_TOKEN", "parameter user_token seems invalid"]
                )
        elif auth.startswith("Basic "):
            login, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if self.passwords.get(login) != password:
                return Reply(401, ["ERROR_GLPI_LOGIN", "Incorrect username or password"])
            user = next(i for i, name in self.users.items() if name == login)
        else:
            return Reply(
                400,
                [
                    "ERROR_LOGIN_PARAMETERS_MISSING",
                    "parameter(s) login, password or user_token are missing",
                ],
            )
        token = secrets.token_hex(8)
        self.sessions[token] = user
        return Reply(200, {"session_token": token})

    def _ticket(self, n: int, query: dict[str, str]) -> Reply:
        ticket = self.tickets.get(n)
        if ticket is None:
            return Reply(404, ["ERROR_ITEM_NOT_FOUND", "Item not found"])
        out = dict(ticket)
        if query.get("expand_dropdowns") == "true":
            out["itilcategories_id"] = self.categories.get(ticket["itilcategories_id"], "")
            out["users_id_recipient"] = self.users[ticket["users_id_recipient"]]
        if query.get("with_logs") == "true":
            out["_logs"] = {str(r["id"]): dict(r) for r in self.logs if r["items_id"] == n}
        return Reply(200, out)

    def _search(self, query: dict[str, str]) -> Reply:
        rows = sorted(self.tickets.values(), key=lambda t: (t["date_mod"], t["id"]),
                      reverse=query.get("order", "ASC") == "DESC")  # fmt: skip
        if query.get("criteria[0][field]") == "19":
            assert query.get("criteria[0][searchtype]") == "morethan"
            rows = [t for t in rows if t["date_mod"] > query["criteria[0][value]"]]
        elif query.get("criteria[0][field]") == "61":  # a child join: any of its surveys
            assert query.get("criteria[0][searchtype]") == "morethan"
            value = query["criteria[0][value]"]
            rows = [t for t in rows if any(
                r["tickets_id"] == t["id"] and r["date_answered"] and r["date_answered"] > value
                for r in self.satisfactions.values())]  # fmt: skip
        elif "criteria[0][field]" in query:
            return Reply(400, ["ERROR_BAD_ARRAY", "criteria not implemented here"])
        first, _, last = query.get("range", "0-49").partition("-")
        page = rows[int(first) : int(last) + 1]
        data = [{"2": t["id"], "19": t["date_mod"]} for t in page]
        status = 206 if len(page) < len(rows) else 200
        return Reply(status, {"totalcount": len(rows), "count": len(page), "data": data},
                     {"Content-Range": f"{first}-{int(first) + len(page) - 1}/{len(rows)}"})  # fmt: skip

"""A loopback server implementing Zammad's documented REST API shapes (/api/v1/) for the calls
itops makes — NOT Zammad. See tests/desk_server.py.

Implemented as Zammad's API docs show them: `Authorization: Token token=…` or basic auth (401
{"error": "Invalid token!"} / "authentication failed"); GET tickets/search (query `number:N`,
`*`, `updated_at:>=ISO`; page, per_page, sort_by, order_by; with expand=true a list of tickets
with state, priority, group and customer by name); PUT tickets/:id ({"state": …}); GET
ticket_articles/by_ticket/:id; POST ticket_articles ({ticket_id, body, type "note", internal}
→ 201 the article); GET ticket_history/:id → {"history": [{id, o_id, history_type,
history_object, history_attribute, value_from, value_to, id_from, id_to, created_by_id,
created_at}], "assets": {"User": {id: {login, …}}}}; GET users/me. Ticket ids and numbers
differ, as in Zammad (number 31001 is id 1). Times are ISO 8601 UTC with milliseconds.
"""

from __future__ import annotations

import base64
import itertools
import time
from typing import Any

from tests.desk_server import DeskServer, Reply, Seen, stamp

STATES = {1: "new", 2: "open", 3: "pending reminder", 4: "closed", 5: "merged", 7: "pending close"}
PRIORITIES = {1: "1 low", 2: "2 normal", 3: "3 high", 4: "4 urgent"}
GROUPS = {1: "Users", 2: "Printers", 3: "Network"}


def iso(at: float) -> str:
    return stamp(at, "%Y-%m-%dT%H:%M:%S") + f".{int(at * 1000) % 1000:03d}Z"


class ZammadServer(DeskServer):
    def __init__(self) -> None:
        super().__init__()
        self.users = {1: "-", 3: "agent.bob", 5: "nicole.braun@zammad.org", 9: "itops"}
        self.tokens = {"itops-access-token": 9}
        self.passwords = {"itops": "itops-pw"}
        self.tickets: dict[int, dict[str, Any]] = {}
        self.articles: dict[int, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._aids = itertools.count(1)
        self._hids = itertools.count(500)

    # -- what an agent or customer does in Zammad itself (test setup) -----------------------
    def _hist(self, tid: int, by: int, kind: str, obj: str = "Ticket", attr: str | None = None,
              old: Any = None, new: Any = None, id_from: int | None = None,
              id_to: int | None = None, o_id: int | None = None,
              at: float | None = None) -> None:  # fmt: skip
        when = iso(at if at is not None else time.time())
        self.history.append({
            "id": next(self._hids), "o_id": o_id if o_id is not None else tid,
            "history_type": kind, "history_object": obj, "history_attribute": attr,
            "value_from": old, "value_to": new, "id_from": id_from, "id_to": id_to,
            "related_o_id": tid if obj != "Ticket" else None, "related_history_object":
            "Ticket" if obj != "Ticket" else None, "created_by_id": by, "created_at": when,
            "_ticket": tid,
        })  # fmt: skip
        self.tickets[tid]["updated_at"] = when

    def new_ticket(self, title: str, *, priority: int = 2, group: int = 2, customer: int = 5,
                   at: float | None = None) -> str:  # fmt: skip
        with self.lock:
            tid = next(self._ids)
            when = iso(at if at is not None else time.time())
            self.tickets[tid] = {
                "id": tid, "number": str(31000 + tid), "title": title, "state_id": 1,
                "priority_id": priority, "group_id": group, "customer_id": customer,
                "created_at": when, "updated_at": when,
            }  # fmt: skip
            self._hist(tid, customer, "created", at=at)
            self._article(tid, title, customer, "Customer", False, at=at)
            return f"Z-{31000 + tid}"

    def _tid(self, ticket: str) -> int:
        number = ticket.removeprefix("Z-")
        return next(t["id"] for t in self.tickets.values() if t["number"] == number)

    def set(self, ticket: str, field: str, value: int, *, by: int = 3,
            at: float | None = None) -> None:  # fmt: skip
        with self.lock:
            tid = self._tid(ticket)
            self._update(tid, field, value, by, at)

    def _update(self, tid: int, field: str, value: int, by: int, at: float | None = None) -> None:
        names = {"state_id": STATES, "priority_id": PRIORITIES, "group_id": GROUPS}[field]
        old = self.tickets[tid][field]
        self.tickets[tid][field] = value
        self._hist(tid, by, "updated", attr=field[:-3], old=names[old], new=names[value],
                   id_from=old, id_to=value, at=at)  # fmt: skip

    def reply(self, ticket: str, body: str, *, by: int = 3, internal: bool = False,
              at: float | None = None) -> int:  # fmt: skip
        with self.lock:
            sender = "Customer" if by == 5 else "Agent"
            return self._article(self._tid(ticket), body, by, sender, internal, at=at)

    def _article(self, tid: int, body: str, by: int, sender: str, internal: bool,
                 at: float | None = None) -> int:  # fmt: skip
        aid = next(self._aids)
        self.articles[aid] = {
            "id": aid, "ticket_id": tid, "body": body, "content_type": "text/plain",
            "type": "note" if internal else "web", "internal": internal, "sender": sender,
            "created_by_id": by, "created_by": self.users[by],
            "created_at": iso(at if at is not None else time.time()),
        }  # fmt: skip
        self._hist(tid, by, "created", "Ticket::Article", o_id=aid, at=at)
        return aid

    def notes(self, ticket: str) -> list[dict[str, Any]]:
        with self.lock:
            tid = self._tid(ticket)
            return [a for a in self.articles.values() if a["ticket_id"] == tid and a["internal"]]

    # -- the API ---------------------------------------------------------------------------
    def _expanded(self, t: dict[str, Any]) -> dict[str, Any]:
        return {**t, "state": STATES[t["state_id"]], "priority": PRIORITIES[t["priority_id"]],
                "group": GROUPS[t["group_id"]], "customer": self.users[t["customer_id"]]}  # fmt: skip

    def route(self, req: Seen) -> Reply:
        prefix = "/api/v1/"
        auth = req.headers.get("authorization", "")
        user = None
        if auth.startswith("Token token="):
            user = self.tokens.get(auth[len("Token token=") :])
        elif auth.startswith("Basic "):
            login, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if self.passwords.get(login) == password:
                user = next(i for i, name in self.users.items() if name == login)
        if user is None:
            return Reply(401, {"error": "authentication failed"})
        parts = req.path.removeprefix(prefix).strip("/").split("/")
        match (req.method, parts):
            case ("GET", ["users", "me"]):
                return Reply(200, {"id": user, "login": self.users[user], "active": True})
            case ("GET", ["tickets", "search"]):
                return self._search(req.query)
            case ("PUT", ["tickets", tid]):
                ticket = self.tickets.get(int(tid))
                if ticket is None:
                    return Reply(404, {"error": "Couldn't find Ticket with 'id'=" + tid})
                state = (req.body or {}).get("state")
                ids = {v: k for k, v in STATES.items()}
                if state not in ids:
                    return Reply(422, {"error": f"No lookup value found for 'state': {state!r}"})
                if ids[state] != ticket["state_id"]:
                    self._update(int(tid), "state_id", ids[state], user)
                return Reply(200, self._expanded(ticket))
            case ("GET", ["ticket_articles", "by_ticket", tid]):
                if int(tid) not in self.tickets:
                    return Reply(404, {"error": "Couldn't find Ticket with 'id'=" + tid})
                return Reply(200, [dict(a) for a in self.articles.values()
                                   if a["ticket_id"] == int(tid)])  # fmt: skip
            case ("POST", ["ticket_articles"]):
                body = req.body or {}
                tid = int(body.get("ticket_id") or 0)
                if tid not in self.tickets:
                    return Reply(422, {"error": "Couldn't find Ticket"})
                aid = self._article(tid, str(body.get("body", "")), user, "Agent",
                                    bool(body.get("internal")))  # fmt: skip
                return Reply(201, dict(self.articles[aid]))
            case ("GET", ["ticket_history", tid]):
                if int(tid) not in self.tickets:
                    return Reply(404, {"error": "Couldn't find Ticket with 'id'=" + tid})
                rows = [{k: v for k, v in h.items() if k != "_ticket"} for h in self.history
                        if h["_ticket"] == int(tid)]  # fmt: skip
                users = {str(h["created_by_id"]) for h in rows}
                assets = {"User": {u: {"id": int(u), "login": self.users[int(u)]} for u in users}}
                return Reply(200, {"history": rows, "assets": assets})
        return Reply(404, {"error": f"No route matches [{req.method}] {req.path}"})

    def _search(self, query: dict[str, str]) -> Reply:
        q = query.get("query", "")
        rows = list(self.tickets.values())
        if q.startswith("number:"):
            rows = [t for t in rows if t["number"] == q[len("number:") :]]
        elif q.startswith("updated_at:>="):
            rows = [t for t in rows if t["updated_at"] >= q[len("updated_at:>=") :]]
        elif q != "*":
            rows = [t for t in rows if q.lower() in t["title"].lower()]
        if query.get("sort_by") == "updated_at":
            rows.sort(key=lambda t: (t["updated_at"], t["id"]),
                      reverse=query.get("order_by") == "desc")  # fmt: skip
        per_page = int(query.get("per_page", "10"))
        page = int(query.get("page", "1"))
        rows = rows[(page - 1) * per_page : page * per_page]
        if query.get("expand") == "true":
            return Reply(200, [self._expanded(t) for t in rows])
        assets = {"Ticket": {str(t["id"]): t for t in rows}}
        return Reply(200, {"tickets": [t["id"] for t in rows], "tickets_count": len(rows),
                           "assets": assets})  # fmt: skip

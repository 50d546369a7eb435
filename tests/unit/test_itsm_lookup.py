"""What a run pays for its desk look-up (issue 17): one plain GET and its ticket's events.

A run under a desk ticket asks the desk once, before anything runs, in a thread beside the
command's own start. On a small machine that thread's CPU is the command's wall time, so the
look-up must not load an HTTP client library (python-rt, httpx2, httpcore2: ≈0.1 s of imports
and a CA bundle parsed for an http:// URL), and mirroring the ticket must not replay every record
its earlier runs left (hundreds per run). The servers here answer as RT's REST 2 does (its
paths, JSON and statuses) on loopback; they are not RT (tests/integration/test_itsm_rt.py).
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_itsm import rt_with_password, serving
from toolkit.itsm import DeskAuthError, DeskError, DeskTicket, DeskUnavailable, ItsmSettings
from toolkit.ledger import Entry, open_ledger
from toolkit.secrets.credentials import Secret

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("httpx2", "httpcore2", "anyio", "requests", "certifi", "rt.rest2", "importlib.metadata")

TICKET = {
    "id": 7,
    "Subject": "printer on fire",
    "Status": "open",
    "Priority": "95",
    "Created": "2026-12-04T15:50:28Z",
    "Queue": {"id": "3", "type": "queue", "Name": "Hardware"},
    "Requestor": [
        {"id": "alice", "type": "user", "Name": "alice", "EmailAddress": "a@example.org"}
    ],
}


class _Rest2(http.server.BaseHTTPRequestHandler):
    """GET /REST/2.0/ticket/7 as RT answers it; anything else 404 as RT's JSON."""

    seen: list[tuple[str, str, str]]

    def do_GET(self) -> None:
        self.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        found = self.path.split("?")[0] == "/REST/2.0/ticket/7"
        body = json.dumps(TICKET if found else {"message": "Resource does not exist"}).encode()
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def rest2() -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    seen: list[tuple[str, str, str]] = []
    with serving(type("H", (_Rest2,), {"seen": seen})) as url:
        yield url, seen


LOOK_UP = """
import json, sys
from toolkit.itsm import ItsmSettings
from toolkit.itsm.rt import RtDesk
from toolkit.secrets.credentials import Secret
url, auth, heavy = sys.argv[1], sys.argv[2], tuple(sys.argv[3].split(","))
secret = Secret("pw-123")
desk = RtDesk(ItsmSettings.for_desk("rt", url=url, user="itops", timeout=5),
              password=secret if auth == "password" else None,
              token=secret if auth == "token" else None)
found = desk.lookup("RT-7")
desk.close()
loaded = sorted(m for m in sys.modules if m in heavy or m.split(".")[0] in heavy)
print(json.dumps({"ticket": found.__dict__, "loaded": loaded}))
"""


@pytest.mark.parametrize("auth", ["password", "token"])
def test_an_rt_lookup_is_one_get_and_loads_no_http_client_library(
    rest2: tuple[str, list[tuple[str, str, str]]], auth: str
) -> None:
    """In a fresh interpreter, as the look-up thread of `itops fix --ticket RT-7` runs it."""
    url, seen = rest2
    done = subprocess.run(
        [sys.executable, "-c", LOOK_UP, url, auth, ",".join(HEAVY)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["loaded"] == []  # none of python-rt's HTTP stack, no metadata scan
    ticket = answer["ticket"]
    assert (ticket["id"], ticket["number"], ticket["status"], ticket["closed"]) == (
        "RT-7", "7", "open", False
    )  # fmt: skip
    assert (ticket["priority"], ticket["desk_priority"]) == ("P1", "95")
    assert (ticket["queue"], ticket["requester"], ticket["requesters"]) == (
        "Hardware", "a@example.org", ["alice"]
    )  # fmt: skip
    assert ticket["created"] == 1796399428.0
    [(method, path, authorization)] = seen  # one request
    assert method == "GET" and path.startswith("/REST/2.0/ticket/7?")
    assert "fields%5BQueue%5D=Name" in path and "fields%5BRequestor%5D=EmailAddress%2CName" in path
    expected = "token pw-123" if auth == "token" else (
        "Basic " + base64.b64encode(b"itops:pw-123").decode()
    )  # fmt: skip
    assert authorization == expected


def test_an_unknown_ticket_and_refused_credentials_are_the_desks_answers(
    rest2: tuple[str, list[tuple[str, str, str]]],
) -> None:
    from toolkit.itsm import TicketUnknown
    from toolkit.itsm.rt import RtDesk

    url, _ = rest2
    desk = RtDesk(
        ItsmSettings(system="rt", url=url, user="itops"), password=Secret("pw"), token=None
    )
    with pytest.raises(TicketUnknown, match="RT-8: RT at .* has no such ticket"):
        desk.lookup("RT-8")


def test_a_token_no_header_can_carry_is_refused_without_showing_it(
    rest2: tuple[str, list[tuple[str, str, str]]],
) -> None:
    from toolkit.itsm.rt import RtDesk

    url, seen = rest2
    desk = RtDesk(ItsmSettings(system="rt", url=url), password=None, token=Secret("s3cr\nt-x"))
    with pytest.raises(DeskError) as caught:
        desk.lookup("RT-7")
    assert "control character" in caught.value.message and "s3cr" not in str(caught.value)
    assert seen == []


class _Refusing(http.server.BaseHTTPRequestHandler):
    status = 401

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Location", "http://127.0.0.1:9/elsewhere")  # (a 302 is not followed)
        self.end_headers()
        self.wfile.write(b"Authorization required")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "error", "text"),
    [
        (401, DeskAuthError, "refused the credentials of 'itops' (HTTP 401) to look up RT-7"),
        (403, DeskAuthError, "'itops' may not look up RT-7 (HTTP 403)"),
        (302, DeskError, "answered HTTP 302 to look up RT-7"),
        (400, DeskError, "refused to look up RT-7"),
        (502, DeskUnavailable, "answered HTTP 502 to look up RT-7"),
    ],
)
def test_what_rt_answers_instead_of_the_ticket_is_said_as_python_rt_calls_would(
    status: int, error: type[DeskError], text: str
) -> None:

    handler = type("H", (_Refusing,), {"status": status})
    with serving(handler) as url:
        desk = rt_with_password(url, timeout=5)
        with pytest.raises(DeskError) as caught:
            desk.lookup("RT-7")
    assert type(caught.value) is error and text in caught.value.message, caught.value.message


def test_an_rt_that_never_answers_the_lookup_is_unavailable_after_the_timeout() -> None:

    silent = socket.socket()  # accepts (the kernel's backlog) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        desk = rt_with_password(url, timeout=1)
        with pytest.raises(DeskUnavailable, match="did not answer within 1 s") as caught:
            desk.lookup("RT-7")
    finally:
        silent.close()
    assert not caught.value.maybe_committed  # a look-up changes nothing


# -- the mirror ----------------------------------------------------------------------------------
def desk_ticket(priority: str = "P2", status: str = "open") -> DeskTicket:
    return DeskTicket(
        id="RT-5", number="5", subject="disk full", status=status, priority=priority,
        desk_priority="50", queue="General", category="other", requester="a@example.org",
        closed=False, created=1_780_000_000.0, requesters=("alice",),
    )  # fmt: skip


def test_mirroring_a_ticket_reads_its_events_not_the_records_of_its_runs(tmp_path: Path) -> None:
    """Every run under RT-5 looks it up and mirrors it again: that must not replay the hundreds
    of action records each earlier run left under the ticket (only its ticket events decide its
    state, priority and category)."""
    from toolkit.desk.sla import default_policy
    from toolkit.itsm.mirror import mirror

    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", operator="ana")
    policy = default_policy()
    try:
        mirror(ledger, desk_ticket(), policy)  # opened
        for n in range(300):  # two earlier runs' records under the ticket
            ledger.append(Entry("action.begin", ticket="RT-5", host=f"h{n}", action_id=f"a{n}"))
            ledger.append(Entry("action.finish", ticket="RT-5", host=f"h{n}", action_id=f"a{n}",
                                outcome="fixed"))  # fmt: skip
        read: list[str] = []
        records = ledger.records

        def counted(**filters: Any) -> Iterator[Any]:
            for record in records(**filters):
                read.append(record.kind)
                yield record

        ledger.records = counted  # type: ignore[method-assign]  # the real ledger, counted
        mirror(ledger, desk_ticket(), policy)  # nothing changed at the desk
        assert not [k for k in read if not k.startswith("ticket.")], f"{len(read)} records read"
        mirror(ledger, desk_ticket(priority="P1"), policy)  # re-prioritised at the desk
    finally:
        ledger.records = records  # type: ignore[method-assign]
        kinds = [(r.kind, r.info.get("priority")) for r in ledger.records(ticket="RT-5")
                 if r.kind.startswith("ticket.")]  # fmt: skip
        ledger.close()
    assert kinds == [("ticket.opened", "P2"), ("ticket.updated", "P1")]

"""The desk's outbox, its mappings and settings, and the RT adapter's HTTP error handling.

The real Request Tracker round trip is tests/integration/test_itsm_rt.py. Here the outbox's
replay, backoff and give-up rules run against `ScriptedDesk` (a Desk whose answers a test
scripts: clearly not RT), and python-rt itself is driven against a loopback HTTP server that
answers what RT's REST 2 answers when overloaded (429 with Retry-After) or failing (503).
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolkit import settings
from toolkit.itsm import (
    DeskAuthError,
    DeskError,
    DeskTicket,
    DeskUnavailable,
    ItsmSettings,
    TicketUnknown,
)
from toolkit.itsm.outbox import backoff, deliver, notes, queue
from toolkit.ledger import open_ledger
from toolkit.secrets.credentials import Redactor, Secret


class ScriptedDesk:
    """A Desk whose add_note answers come from a script (exceptions raised, else posted)."""

    system = "rt"

    def __init__(self, *answers: BaseException | None) -> None:
        self.answers = list(answers)
        self.posted: list[tuple[str, str]] = []
        self.searched: list[str] = []
        self.committed_anyway = False  # a timeout after the desk took the note

    def lookup(self, ticket: str) -> DeskTicket:
        raise NotImplementedError

    def find_note(self, ticket: str, key: str) -> str | None:
        self.searched.append(key)
        return "transaction 7" if any(key in text for _, text in self.posted) else None

    def add_note(self, ticket: str, text: str) -> str:
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            if getattr(answer, "maybe_committed", False):
                self.posted.append((ticket, text))
            raise answer
        self.posted.append((ticket, text))
        return "comment"

    def resolve(self, ticket: str) -> str:
        return "resolved"

    def check(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Any]:
    book = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", operator="ana")
    yield book
    book.close()


def test_a_note_is_recorded_first_and_delivered_once(ledger: Any, tmp_path: Path) -> None:
    note = queue(ledger, "RT-5", "rt", "itops: printer.clear-queue")
    assert [n.state for n in notes(ledger)] == ["pending"]
    desk = ScriptedDesk()
    [done] = deliver(ledger, desk, lock=tmp_path / "lock", now=1000.0)
    assert done.result == "delivered"
    assert desk.posted == [("RT-5", note.text)] and f"itops-note: {note.key}" in note.text
    assert deliver(ledger, desk, lock=tmp_path / "lock") == []  # nothing pending any more
    assert [n.state for n in notes(ledger)] == ["delivered"]


def test_a_timeout_after_the_desk_committed_is_found_not_posted_again(
    ledger: Any, tmp_path: Path
) -> None:
    note = queue(ledger, "RT-5", "rt", "text")
    desk = ScriptedDesk(DeskUnavailable("no answer in 10 s", maybe_committed=True))
    [first] = deliver(ledger, desk, lock=tmp_path / "lock", now=1000.0)
    assert first.result == "retry" and len(desk.posted) == 1
    [second] = deliver(ledger, desk, lock=tmp_path / "lock", now=1001.0)
    assert second.result == "already-there"
    assert desk.searched == [note.key] and len(desk.posted) == 1


def test_429_retry_after_is_honoured_and_backoff_doubles(ledger: Any, tmp_path: Path) -> None:
    queue(ledger, "RT-5", "rt", "text")
    desk = ScriptedDesk(DeskUnavailable("HTTP 429", retry_after=120.0), DeskUnavailable("503"))
    lock = tmp_path / "lock"
    assert deliver(ledger, desk, lock=lock, now=1000.0)[0].result == "retry"
    [note] = notes(ledger)
    assert note.next_at == 1120.0 and "retry-after 120" in note.error
    assert deliver(ledger, desk, lock=lock, now=1100.0)[0].result == "waiting"  # even when asked
    assert deliver(ledger, desk, lock=lock, now=1121.0)[0].result == "retry"
    [note] = notes(ledger)
    assert note.attempts == 2 and note.next_at == 1121.0 + backoff(2) == 1181.0
    assert deliver(ledger, desk, lock=lock, now=1122.0, honour_backoff=True)[0].result == "waiting"
    assert deliver(ledger, desk, lock=lock, now=1200.0)[0].result == "delivered"
    assert backoff(1) == 30 and backoff(20) == 3600


def test_a_deleted_ticket_or_too_many_attempts_fail_the_note(ledger: Any, tmp_path: Path) -> None:
    queue(ledger, "RT-5", "rt", "gone")
    queue(ledger, "RT-6", "rt", "flaky")
    desk = ScriptedDesk(TicketUnknown("RT-5: no such ticket"), DeskUnavailable("down"))
    results = deliver(ledger, desk, lock=tmp_path / "lock", now=0.0, max_attempts=1)
    assert [d.result for d in results] == ["failed", "failed"]
    assert "gave up after 1 attempts" in results[1].detail
    assert {n.state for n in notes(ledger)} == {"failed"}


def test_refused_credentials_keep_the_note_pending(ledger: Any, tmp_path: Path) -> None:
    queue(ledger, "RT-5", "rt", "text")
    desk = ScriptedDesk(DeskAuthError("HTTP 401"))
    assert deliver(ledger, desk, lock=tmp_path / "lock", now=0.0)[0].result == "retry"
    assert notes(ledger)[0].state == "pending"  # fixed credentials deliver it later


def test_one_delivery_at_a_time(ledger: Any, tmp_path: Path) -> None:
    import fcntl

    queue(ledger, "RT-5", "rt", "text")
    with open(tmp_path / "lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        [busy] = deliver(ledger, ScriptedDesk(), lock=tmp_path / "lock", now=0.0)
    assert busy.result == "busy" and notes(ledger)[0].state == "pending"


def test_a_deliverer_killed_after_posting_never_gets_the_note_posted_twice(
    ledger: Any, tmp_path: Path
) -> None:
    """A run's detached deliverer posts the note and is killed (a shutdown, `kill`) before it
    records the delivery: the next one finds the note by its key instead of posting again."""
    note = queue(ledger, "RT-5", "rt", "text")
    desk = ScriptedDesk(KeyboardInterrupt())  # posted, then the process dies mid-answer
    desk.answers[0].maybe_committed = True  # type: ignore[union-attr]
    with pytest.raises(KeyboardInterrupt):
        deliver(ledger, desk, lock=tmp_path / "lock", now=1000.0)
    assert len(desk.posted) == 1 and notes(ledger)[0].state == "pending"
    [again] = deliver(ledger, desk, lock=tmp_path / "lock", now=1001.0)
    assert again.result == "already-there" and desk.searched == [note.key]
    assert len(desk.posted) == 1 and notes(ledger)[0].state == "delivered"


def test_a_deliverer_waits_for_the_delivery_under_way(ledger: Any, tmp_path: Path) -> None:
    """`lock_wait`: a second deliverer (the next run's, `itsm deliver`) waits for the first
    instead of leaving the notes pending as busy; without it, busy at once."""
    import fcntl
    import time

    queue(ledger, "RT-5", "rt", "text")
    lock = tmp_path / "lock"
    held = open(lock, "a")  # noqa: SIM115 (released by the timer below)
    fcntl.flock(held, fcntl.LOCK_EX)
    threading.Timer(0.5, held.close).start()
    began = time.monotonic()
    [busy] = deliver(ledger, ScriptedDesk(), lock=lock, now=0.0)
    assert busy.result == "busy"
    [done] = deliver(ledger, ScriptedDesk(), lock=lock, now=0.0, lock_wait=30)
    assert done.result == "delivered" and 0.3 < time.monotonic() - began < 10


def test_delivery_mode_detach_by_default_wait_on_request_and_for_a_prompted_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from toolkit.errors import ToolkitError

    monkeypatch.delenv("ITOPS_ITSM_DELIVER", raising=False)
    env = ItsmSettings(system="rt", password="env:RT_PASSWORD")
    assert env.delivery() == "detach"
    assert ItsmSettings(system="rt", password="env:X", deliver="wait").delivery() == "wait"
    for typed in ("prompt", "prompt:RT password", "stdin"):  # only this process has it
        assert ItsmSettings(system="rt", password=typed).delivery() == "wait"
        assert ItsmSettings(system="rt", token=typed).delivery() == "wait"
    monkeypatch.setenv("ITOPS_ITSM_DELIVER", "wait")
    assert env.delivery() == "wait"
    monkeypatch.setenv("ITOPS_ITSM_DELIVER", "later")
    with pytest.raises(ToolkitError, match="ITOPS_ITSM_DELIVER='later'"):
        env.delivery()
    assert settings.problems({"itsm": {"system": "rt", "deliver": "now"}})


def test_secrets_in_a_note_are_masked_before_the_desk_sees_them(tmp_path: Path) -> None:
    redactor = Redactor([Secret("hunter2-Sekret")])
    book = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", operator="ana", redactor=redactor)
    try:
        queue(book, "RT-5", "rt", "password set to hunter2-Sekret on ws-1")
        desk = ScriptedDesk()
        deliver(book, desk, lock=tmp_path / "lock", now=0.0)
    finally:
        book.close()
    assert "hunter2-Sekret" not in desk.posted[0][1] and "********" in desk.posted[0][1]


def test_priorities_and_queues_map_to_the_policys_values() -> None:
    s = ItsmSettings(system="rt", categories={"helpdesk printers": "printer"})
    assert [s.priority(v) for v in (100, 90, 89, 50, 20, 19, 0, "x")] == [
        "P1", "P1", "P2", "P2", "P3", "P4", "P4", "P3",
    ]  # fmt: skip
    assert s.category("Helpdesk Printers") == "printer"
    assert s.category("Network") == "network" and s.category("General") == "other"
    assert s.owns("RT-123") and not s.owns("INC-1042") and not s.owns("RT-0")
    assert not ItsmSettings().owns("RT-1")  # no desk configured: a local ticket


def test_the_itsm_section_takes_references_only() -> None:
    bad = {"itsm": {"system": "remedy", "password": "hunter2", "categories": {"Q": "x"}}}
    found = [message for _, message in settings.problems(bad)]
    assert any(m.startswith("itsm.system: must be one of 'rt'") for m in found)
    assert any(m.startswith("itsm.password: must be a reference") for m in found)
    assert any(m.startswith("itsm.categories.Q: must be one of 'hardware'") for m in found)
    assert not any("hunter2" in m for m in found)
    good = {"itsm": {"system": "rt", "password": "env:RT_PASSWORD", "priorities": {"P1": 80}}}
    assert settings.problems(good) == []


def rt_with_password(url: str, *, timeout: float, ca_bundle: str | None = None) -> Any:
    """An RtDesk signing in as itops with a password, for the tests' loopback desks."""
    from toolkit.itsm.rt import RtDesk

    settings = ItsmSettings(system="rt", url=url, user="itops", timeout=timeout,
                            ca_bundle=ca_bundle)  # fmt: skip
    return RtDesk(settings, password=Secret("pw"), token=None)


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served over HTTP on a free loopback port (its URL) for the block."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Overloaded(http.server.BaseHTTPRequestHandler):
    status = 429

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Retry-After", "42")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"message":"slow down"}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("status", [429, 503])
def test_python_rt_against_an_overloaded_desk_gives_retry_after(status: int) -> None:
    """A loopback server answering as an overloaded RT would (not RT itself)."""

    handler = type("H", (_Overloaded,), {"status": status})
    with serving(handler) as url:
        desk = rt_with_password(url, timeout=5)
        with pytest.raises(DeskUnavailable) as caught:
            desk.lookup("RT-1")
        desk.close()
    assert caught.value.retry_after == 42.0 and f"HTTP {status}" in caught.value.message


def test_an_unreachable_desk_is_unavailable_not_a_crash() -> None:

    desk = rt_with_password("http://127.0.0.1:9", timeout=2)
    with pytest.raises(DeskUnavailable, match="unreachable"):
        desk.lookup("RT-1")
    with pytest.raises(DeskError):
        desk.check()


class _Unauthorized(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"message":"Unauthorized"}')

    def log_message(self, *args: Any) -> None:
        pass


def test_a_self_signed_desk_is_refused_unless_its_ca_is_configured(tmp_path: Path) -> None:
    """python-rt over TLS to a loopback server whose certificate a private CA signed (not RT:
    RT's standalone server speaks HTTP only)."""
    import ssl

    from toolkit.lab.tlsca import issue

    tls = issue(tmp_path / "tls", "localhost", "127.0.0.1", ca_name="itops test desk CA")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        untrusting = rt_with_password(url, timeout=5)
        with pytest.raises(DeskError) as refused:
            untrusting.check()
        trusting = rt_with_password(url, timeout=5, ca_bundle=tls.ca)
        with pytest.raises(DeskAuthError):  # TLS accepted: the desk's own answer comes through
            trusting.check()
    finally:
        server.shutdown()
    assert "TLS certificate is not trusted" in refused.value.message
    assert refused.value.hint and "ca_bundle" in refused.value.hint


# -- itsm sync's rules, against a desk whose history a test scripts (clearly not RT) ---------
class HistoryDesk:
    """A desk whose history is a list of Changes (the real RT: tests/integration/test_itsm_rt)."""

    system = "rt"

    def __init__(self, tickets: dict[str, DeskTicket], steps: list[Any]) -> None:
        self.known = tickets
        self.steps = steps
        self.down = False

    def changes(self, after: int, since: float | None = None) -> Iterator[Any]:
        if self.down:
            raise DeskUnavailable("RT at http://rt is unreachable")
        return iter([c for c in self.steps if c.txn > after and (since is None or c.at >= since)])

    def history(self, ticket: str) -> list[Any]:
        return [c for c in self.steps if c.ticket == ticket]

    def tickets(self, ids: Any) -> dict[str, DeskTicket]:
        return {t: self.known[t] for t in ids if t in self.known}


def desk_ticket(ticket: str, priority: str = "50", requester: str = "alice") -> DeskTicket:
    return DeskTicket(
        id=ticket, number=ticket[3:], subject=f"subject of {ticket}", status="open",
        priority="P2", desk_priority=priority, queue="General", category="other",
        requester=f"{requester}@example.org", closed=False, created=1_780_000_000.0,
        requesters=(requester,),
    )  # fmt: skip


def kinds(ledger: Any, ticket: str) -> list[str]:
    return [r.kind[7:] for r in ledger.records(ticket=ticket) if r.kind.startswith("ticket.")]


def test_sync_records_each_desk_step_once_and_moves_its_mark(ledger: Any, tmp_path: Path) -> None:
    from toolkit.itsm import Change
    from toolkit.itsm.sync import mark, sync

    t0 = 1_780_000_000.0
    settings = ItsmSettings(system="rt", url="http://rt")
    steps = [
        Change("RT-1", 10, t0, "alice", "created"),
        Change("RT-1", 11, t0 + 60, "alice", "replied"),  # the requester: no response
        Change("RT-1", 12, t0 + 120, "bob", "replied"),  # the first response
        Change("RT-1", 13, t0 + 180, "bob", "status", "open", "stalled"),
        Change("RT-1", 14, t0 + 240, "alice", "status", "stalled", "open"),
        Change("RT-1", 15, t0 + 300, "bob", "priority", "50", "95"),
        Change("RT-1", 16, t0 + 360, "bob", "priority", "95", "96"),  # still P1: nothing
        Change("RT-1", 17, t0 + 420, "bob", "status", "open", "deleted"),
    ]
    desk = HistoryDesk({"RT-1": desk_ticket("RT-1")}, steps)
    lock = tmp_path / "sync.lock"
    first = sync(ledger, desk, settings, lock=lock, now=t0 + 3600)
    assert kinds(ledger, "RT-1") == [
        "opened", "responded", "waiting", "resumed", "updated", "resolved", "closed",
    ]  # fmt: skip
    assert first.through == 17 == mark(ledger, settings) and first.skipped == []
    keys = [r.action_id for r in ledger.records(ticket="RT-1")]
    assert keys == ["rt-10", "rt-12", "rt-13", "rt-14", "rt-15", "rt-17", "rt-17-2"]
    again = sync(ledger, desk, settings, lock=lock, now=t0 + 3600)
    assert again.steps == 0 and sum(again.events.values()) == 0
    reread = sync(ledger, desk, settings, lock=lock, since=t0 - 1, now=t0 + 3600)
    assert reread.steps == len(steps) and sum(reread.events.values()) == 0
    assert len(kinds(ledger, "RT-1")) == 7

    desk.steps.append(Change("RT-1", 30, t0 + 900, "bob", "status", "deleted", "open"))
    later = sync(ledger, desk, settings, lock=lock, now=t0 + 3600)
    assert dict(later.events) == {"reopened": 1} and later.through == 30

    desk.down = True  # a desk down mid-sync: nothing recorded, the mark stays
    with pytest.raises(DeskUnavailable):
        sync(ledger, desk, settings, lock=lock, now=t0 + 3600)
    assert mark(ledger, settings) == 30


def test_sync_skips_a_desk_step_that_does_not_fit_what_itops_recorded(
    ledger: Any, tmp_path: Path
) -> None:
    """itops resolved the mirror itself (a run's --resolve) before RT resolved the ticket: the
    desk's resolution is skipped, not recorded as a second one (no anomaly)."""
    from toolkit.desk.sla import default_policy
    from toolkit.desk.tickets import ensure, history, record, summarize
    from toolkit.itsm import Change
    from toolkit.itsm.sync import sync

    t0 = 1_780_000_000.0
    settings = ItsmSettings(system="rt", url="http://rt")
    ensure(ledger, "RT-2", priority="P2", channel="other", at=t0)
    record(ledger, "RT-2", "resolved", {"code": "fixed-by-itops"}, default_policy(), at=t0 + 100)
    desk = HistoryDesk(
        {"RT-2": desk_ticket("RT-2")},
        [
            Change("RT-2", 20, t0, "root", "created"),
            Change("RT-2", 21, t0 + 200, "itops", "status", "open", "resolved"),
        ],
    )
    done = sync(ledger, desk, settings, lock=tmp_path / "lock", now=t0 + 3600)
    assert sum(done.events.values()) == 0
    assert kinds(ledger, "RT-2") == ["opened", "resolved"]
    summary = summarize("RT-2", *history(ledger, "RT-2"), default_policy())
    assert summary is not None and summary.anomalies == ()


def test_a_second_sync_at_the_same_time_reads_nothing(ledger: Any, tmp_path: Path) -> None:
    import fcntl

    from toolkit.itsm.sync import sync

    lock = tmp_path / "sync.lock"
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        desk = HistoryDesk({}, [])
        busy = sync(ledger, desk, ItsmSettings(system="rt", url="http://rt"), lock=lock)
    assert busy.busy and busy.steps == 0


def test_a_reread_decides_each_step_as_the_first_sync_did_within_one_second(
    ledger: Any, tmp_path: Path
) -> None:
    """RT's times are whole seconds: RT's own new → open and an engineer's stall in the same
    second. The re-read must not let the later step's `waiting` decide the earlier step (which
    would record a `resumed` that never happened)."""
    from toolkit.itsm import Change
    from toolkit.itsm.sync import sync

    t0 = 1_780_000_000.0
    settings = ItsmSettings(system="rt", url="http://rt")
    steps = [
        Change("RT-3", 40, t0, "root", "created"),
        Change("RT-3", 41, t0, "RT_System", "status", "new", "open"),
        Change("RT-3", 42, t0, "root", "status", "open", "stalled"),
    ]
    desk = HistoryDesk({"RT-3": desk_ticket("RT-3")}, steps)
    sync(ledger, desk, settings, lock=tmp_path / "lock", now=t0 + 60)
    assert kinds(ledger, "RT-3") == ["opened", "waiting"]
    reread = sync(ledger, desk, settings, lock=tmp_path / "lock", since=t0 - 1, now=t0 + 60)
    assert sum(reread.events.values()) == 0, reread.events
    assert kinds(ledger, "RT-3") == ["opened", "waiting"]

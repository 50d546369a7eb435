"""ServiceNow and Jira Service Management adapters, each with its real client library (pysnc,
jira) over real HTTP(S) against a loopback server.

The servers are NOT the vendors' products (those cannot run here): tests/fake_servicenow.py
and tests/fake_jira.py implement the vendors' documented request and response shapes for the
calls itops makes, and tests/desk_server.py scripts the faults (401, 403, 404, 409, 429 with
Retry-After, 5xx, a desk that hangs, a desk that commits and then hangs). One contract suite
runs against ServiceNow, Jira Cloud and Jira Data Center; what is checked is read back from the
fake's own state, not through the adapter. The real Request Tracker round trip is tests/integration/test_itsm_rt.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fake_jira import FakeJira
from tests.fake_servicenow import FakeServiceNow
from tests.fakedesk import tls_for
from toolkit.clock import iso_utc
from toolkit.itsm import (
    Desk,
    DeskAuthError,
    DeskError,
    DeskUnavailable,
    ItsmSettings,
    TicketUnknown,
    open_desk,
)
from toolkit.itsm.outbox import deliver, notes, queue
from toolkit.ledger import open_ledger
from toolkit.secrets.credentials import Secret

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "desk-pw-Canary-71"  # the itops account's secret: in no output, note or error


@dataclass
class Case:
    """One desk behind its fake, and how a test reads the fake's state directly."""

    system: str
    fake: Any
    ca: Path
    user: str
    new_ticket: Callable[..., str]  # (subject, urgent=False) → the desk's id
    internal: Callable[[str], list[str]]  # the ticket's internal notes, as the desk holds them
    public: Callable[[str], list[str]]  # what the requester sees
    write: tuple[str, str]  # method and path prefix of the note's request
    read: tuple[str, str]  # of the look-up
    unknown: str  # a ticket id in the desk's form that the desk does not have
    p1: str  # the desk's own value of a P1 ticket

    def settings(self, **values: Any) -> ItsmSettings:
        base: dict[str, Any] = {"url": self.fake.url, "user": self.user, "timeout": 1.0,
                                "ca_bundle": self.ca}  # fmt: skip
        return ItsmSettings.for_desk(self.system, **{**base, **values})

    def open(self, password: str = PASSWORD, **values: Any) -> Desk:
        desk: Desk = _adapter(self.system)(
            self.settings(**values), password=Secret(password), token=None
        )
        return desk


def _adapter(system: str) -> Any:
    import importlib

    from toolkit.itsm import ADAPTERS

    module, _, name = ADAPTERS[system].partition(":")
    return getattr(importlib.import_module(module), name)


def servicenow(folder: Path) -> Case:
    tls = tls_for(folder / "tls")
    fake = FakeServiceNow(user="itops", password=PASSWORD, tls=tls).start()

    def new(subject: str, urgent: bool = False) -> str:
        return fake.new_incident(subject, priority="1" if urgent else "3", category="hardware")

    def public(number: str) -> list[str]:
        key = fake.incident(number)["sys_id"]
        return [r["value"] for r in fake.tables["sys_journal_field"].values()
                if r["element_id"] == key and r["element"] == "comments"]  # fmt: skip

    return Case(
        "servicenow", fake, tls.ca, "itops", new, fake.work_notes, public,
        ("PATCH", "/api/now/table/incident/"), ("GET", "/api/now/table/incident"),
        "INC0099999", "1",
    )  # fmt: skip


def jira(folder: Path, deployment: str = "Cloud") -> Case:
    tls = tls_for(folder / "tls")
    fake = FakeJira(user="itops@example.org", password=PASSWORD, tls=tls)
    fake.deployment = deployment  # Cloud, or Server (Data Center)
    fake.start()

    def new(subject: str, urgent: bool = False) -> str:
        return fake.new_issue(subject, priority="Highest" if urgent else "Medium")

    def internal(key: str) -> list[str]:
        return [c["body"] for c in fake.comments_of(key) if not c["jsdPublic"]]

    def public(key: str) -> list[str]:
        return [c["body"] for c in fake.comments_of(key) if c["jsdPublic"]]

    return Case(
        "jira", fake, tls.ca, "itops@example.org", new, internal, public,
        ("POST", "/rest/api/2/issue/"), ("GET", "/rest/api/2/issue/"), "ITSD-9999",
        "Highest",
    )  # fmt: skip


def jira_dc(folder: Path) -> Case:
    return jira(folder, "Server")


@pytest.fixture(params=["servicenow", "jira", "jira-dc"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    made = {"servicenow": servicenow, "jira": jira, "jira-dc": jira_dc}[request.param](tmp_path)
    yield made
    made.fake.stop()


@pytest.fixture(params=["servicenow", "jira"])
def cli_case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    """The CLI end to end: one path per desk (Data Center differs below the CLI only)."""
    made = {"servicenow": servicenow, "jira": jira}[request.param](tmp_path)
    yield made
    made.fake.stop()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Any]:
    book = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", operator="ana")
    yield book
    book.close()


# -- the Desk calls -------------------------------------------------------------------------------
def test_lookup_maps_priority_state_category_and_requester(case: Case) -> None:
    ticket = case.new_ticket("printer on floor 3 stuck", urgent=True)
    desk = case.open()
    try:
        found = desk.lookup(ticket)
        with pytest.raises(TicketUnknown) as unknown:
            desk.lookup(case.unknown)
    finally:
        desk.close()
    assert found.id == ticket and found.subject == "printer on floor 3 stuck"
    assert found.priority == "P1" and found.desk_priority == case.p1
    assert found.requester == "alice@example.org" and not found.closed
    assert found.category in ("hardware", "other") and found.created is not None
    assert case.unknown in unknown.value.message


def test_a_note_is_internal_and_found_by_its_key(case: Case) -> None:
    ticket = case.new_ticket("vpn down")
    desk = case.open()
    try:
        assert desk.find_note(ticket, "itops-0123456789abcdef") is None
        where = desk.add_note(ticket, "itops: vpn.restart ok\n\nitops-note: itops-0123456789abcdef")
        found = desk.find_note(ticket, "itops-0123456789abcdef")
        other = desk.find_note(ticket, "itops-fedcba9876543210")
    finally:
        desk.close()
    assert where and found and other is None
    assert case.internal(ticket) == ["itops: vpn.restart ok\n\nitops-note: itops-0123456789abcdef"]
    assert case.public(ticket) == []  # never shown to the requester


def test_resolve_takes_the_ticket_to_a_resolved_state(case: Case) -> None:
    ticket = case.new_ticket("disk full")
    desk = case.open()
    try:
        state = desk.resolve(ticket)
        after = desk.lookup(ticket)
    finally:
        desk.close()
    assert state.casefold() == "resolved" and after.closed


def test_jira_refuses_to_resolve_when_the_workflow_offers_no_way(tmp_path: Path) -> None:
    made = jira(tmp_path)
    try:
        key = made.new_ticket("already closed")
        made.fake.change(key, "bob", status="Closed")
        desk = made.open()
        with pytest.raises(DeskError, match="no transition of .* to a resolved state"):
            desk.resolve(key)
        desk.close()
    finally:
        made.fake.stop()


def test_check_reports_tls_and_the_account(case: Case) -> None:
    desk = case.open()
    try:
        lines = desk.check()
    finally:
        desk.close()
    assert "TLS verified against" in lines[0] and case.fake.url in lines[0]
    assert lines[1].startswith("signed in as")


# -- the desk refusing or failing -----------------------------------------------------------------
def test_bad_credentials_are_refused_and_never_echoed(case: Case) -> None:
    ticket = case.new_ticket("x")
    desk = case.open(password="wrong-Canary-93")
    try:
        with pytest.raises(DeskAuthError) as refused:
            desk.lookup(ticket)
    finally:
        desk.close()
    assert "HTTP 401" in refused.value.message and "wrong-Canary-93" not in str(refused.value)
    assert refused.value.hint and "itsm check" in refused.value.hint


@pytest.mark.parametrize("status", [403])
def test_forbidden_names_the_missing_rights(case: Case, status: int) -> None:
    ticket = case.new_ticket("x")
    case.fake.fail(*case.read, status=status)
    desk = case.open()
    try:
        with pytest.raises(DeskAuthError, match="HTTP 403") as refused:
            desk.lookup(ticket)
    finally:
        desk.close()
    assert refused.value.hint and "docs/itsm.md" in refused.value.hint


def test_a_ticket_gone_after_lookup_is_unknown(case: Case) -> None:
    ticket = case.new_ticket("x")
    desk = case.open()
    try:
        desk.lookup(ticket)
        case.fake.fail(*case.write, status=404)
        with pytest.raises(TicketUnknown):
            desk.add_note(ticket, "text")
    finally:
        desk.close()


@pytest.mark.parametrize(
    ("status", "retry_after"), [(429, "42"), (503, "7"), (500, None), (409, None)]
)
def test_overload_conflict_and_server_errors_are_transient(
    case: Case, status: int, retry_after: str | None
) -> None:
    ticket = case.new_ticket("x")
    desk = case.open()
    try:
        desk.lookup(ticket)
        case.fake.fail(*case.write, status=status, retry_after=retry_after)
        with pytest.raises(DeskUnavailable) as caught:
            desk.add_note(ticket, "text")
        assert desk.add_note(ticket, "text again")  # the next try goes through
    finally:
        desk.close()
    assert f"HTTP {status}" in caught.value.message
    assert caught.value.retry_after == (float(retry_after) if retry_after else None)
    assert case.internal(ticket) == ["text again"]  # the refused request changed nothing


def test_a_desk_that_hangs_is_a_timeout_that_may_have_committed(case: Case) -> None:
    ticket = case.new_ticket("x")
    desk = case.open()
    try:
        desk.lookup(ticket)
        case.fake.fail(*case.write, status=504, delay=1.6)  # nothing done
        with pytest.raises(DeskUnavailable, match="did not answer within") as caught:
            desk.add_note(ticket, "text")
    finally:
        desk.close()
    assert caught.value.maybe_committed and case.internal(ticket) == []


def test_an_unreachable_desk_is_unavailable(case: Case) -> None:
    desk = case.open(url="https://127.0.0.1:9")
    try:
        with pytest.raises(DeskUnavailable, match="unreachable"):
            desk.lookup(case.new_ticket("x"))
    finally:
        desk.close()


def test_a_private_ca_is_refused_unless_configured(case: Case) -> None:
    desk = case.open(ca_bundle=None)  # (REQUESTS_CA_BUNDLE may name the system's CAs)
    try:
        with pytest.raises(DeskError) as refused:
            desk.lookup(case.new_ticket("x"))
    finally:
        desk.close()
    assert "TLS certificate is not trusted" in refused.value.message
    assert refused.value.hint and "ca_bundle" in refused.value.hint


# -- through the outbox ---------------------------------------------------------------------------
def test_a_commit_then_timeout_is_found_by_its_key_not_posted_twice(
    case: Case, ledger: Any, tmp_path: Path
) -> None:
    ticket = case.new_ticket("printer stuck")
    note = queue(ledger, ticket, case.system, "itops: printer.clear-queue on ws-1: fixed")
    case.fake.fail(*case.write, delay=1.6, commit=True)
    desk = case.open()
    try:
        [first] = deliver(ledger, desk, lock=tmp_path / "lock", now=1000.0)
        assert first.result == "retry" and len(case.internal(ticket)) == 1  # the desk has it
        [second] = deliver(ledger, desk, lock=tmp_path / "lock", now=2000.0)
    finally:
        desk.close()
    assert second.result == "already-there"
    assert case.internal(ticket) == [note.text]  # exactly once
    assert [n.state for n in notes(ledger)] == ["delivered"]


def test_429_retry_after_sets_the_next_try(case: Case, ledger: Any, tmp_path: Path) -> None:
    ticket = case.new_ticket("x")
    queue(ledger, ticket, case.system, "text")
    case.fake.fail(*case.write, status=429, retry_after="120")
    desk = case.open()
    try:
        deliver(ledger, desk, lock=tmp_path / "lock", now=1000.0)
        [note] = notes(ledger)
        assert note.next_at == 1120.0 and "retry-after 120" in note.error
        assert deliver(ledger, desk, lock=tmp_path / "lock", now=1100.0)[0].result == "waiting"
        assert deliver(ledger, desk, lock=tmp_path / "lock", now=1121.0)[0].result == "delivered"
    finally:
        desk.close()
    assert len(case.internal(ticket)) == 1


def test_delivery_with_resolve_resolves_the_ticket_once(
    case: Case, ledger: Any, tmp_path: Path
) -> None:
    ticket = case.new_ticket("x")
    queue(ledger, ticket, case.system, "fixed\nresolution: fixed", resolve=True)
    desk = case.open()
    try:
        [done] = deliver(ledger, desk, lock=tmp_path / "lock", now=0.0)
        after = desk.lookup(ticket)
    finally:
        desk.close()
    assert done.result == "delivered" and after.closed and len(case.internal(ticket)) == 1


# -- itsm sync --------------------------------------------------------------------------------
def kinds(ledger: Any, ticket: str) -> list[str]:
    return [r.kind[7:] for r in ledger.records(ticket=ticket) if r.kind.startswith("ticket.")]


def test_sync_records_each_desk_step_once(case: Case, ledger: Any, tmp_path: Path) -> None:
    from toolkit.itsm.sync import sync

    t0 = 1_796_000_000.0
    fake = case.fake
    if case.system == "servicenow":
        ticket = fake.new_incident("mail down", priority="3", caller="alice", at=t0)
        fake.update(ticket, "alice", at=t0 + 30, comments="still down")  # the requester
        fake.update(ticket, "bob", at=t0 + 60, comments="looking at it")  # the response
        fake.update(ticket, "bob", at=t0 + 120, state="3")  # on hold
        fake.update(ticket, "alice", at=t0 + 180, state="2")
        fake.update(ticket, "bob", at=t0 + 240, priority="1")
        fake.update(ticket, "bob", at=t0 + 300, state="6", close_code="Solution provided",
                    close_notes="ok")  # fmt: skip
        later: Callable[[], None] = lambda: fake.update(ticket, "bob", at=t0 + 900, state="2")  # noqa: E731
    else:
        ticket = fake.new_issue("mail down", priority="Medium", reporter="alice", at=t0)
        fake.comment(ticket, "alice", "still down", at=t0 + 30)
        fake.comment(ticket, "bob", "internal chatter", public=False, at=t0 + 45)
        fake.comment(ticket, "bob", "looking at it", at=t0 + 60)
        fake.change(ticket, "bob", at=t0 + 120, status="Waiting for customer")
        fake.change(ticket, "alice", at=t0 + 180, status="In Progress")
        fake.change(ticket, "bob", at=t0 + 240, priority="Highest")
        fake.change(ticket, "bob", at=t0 + 300, status="Resolved")
        later = lambda: fake.change(ticket, "bob", at=t0 + 900, status="In Progress")  # noqa: E731
    settings = case.settings()
    desk = case.open()
    lock = tmp_path / "sync.lock"
    try:
        first = sync(ledger, desk, settings, lock=lock, now=t0 + 3600)
        assert kinds(ledger, ticket) == [
            "opened", "responded", "waiting", "resumed", "updated", "resolved",
        ], first.skipped  # fmt: skip
        [opened] = [r for r in ledger.records(ticket=ticket) if r.kind == "ticket.opened"]
        responded = [r.info["at"] for r in ledger.records(ticket=ticket, kind="ticket.responded")]
        assert responded == [iso_utc(t0 + 60)]  # not the requester's, not an internal comment
        assert opened.info["priority"] == "P3" and opened.info["summary"] == "mail down"
        again = sync(ledger, desk, settings, lock=lock, now=t0 + 3600)
        assert sum(again.events.values()) == 0
        reread = sync(ledger, desk, settings, lock=lock, since=t0 - 60, now=t0 + 3600)
        assert sum(reread.events.values()) == 0
        later()
        after = sync(ledger, desk, settings, lock=lock, now=t0 + 3600)
        assert dict(after.events) == {"reopened": 1}
    finally:
        desk.close()


# -- end to end: the CLI against the fake desk ------------------------------------------------
DEAD = "127.1.252.9"  # nothing listens there: the run's host ends unreachable at once


def run_itops(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITOPS_")}
    # the note is delivered before the command exits (detached delivery: tests/integration/test_itsm_rt.py)
    env.update(PYTHONPATH=str(ROOT), ITOPS_OPERATOR="l2-ana", DESK_PASSWORD=PASSWORD)
    env.update(ITOPS_ITSM_DELIVER="wait")
    return subprocess.run(
        [sys.executable, "-m", "toolkit", "--workspace", str(ws), *args],
        capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def workspace(tmp_path: Path, case: Case) -> Path:
    ws = tmp_path / "ws"
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "init", str(ws)], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with open(ws / "itops.toml", "a") as f:
        f.write(
            f'\n[itsm]\nsystem = "{case.system}"\nurl = "{case.fake.url}"\nuser = "{case.user}"\n'
            f'password = "env:DESK_PASSWORD"\nca_bundle = "{case.ca}"\ntimeout = 5\n'
        )
    (ws / "inventory" / "hosts.yml").write_text(
        "all:\n  hosts:\n"
        f"    ws-dead:\n      ansible_host: {DEAD}\n      ansible_port: 2222\n"
        "      platform: linux\n"
    )
    return ws


def test_cli_fix_under_the_desk_ticket_then_check_status_and_sync(
    cli_case: Case, tmp_path: Path
) -> None:
    ws = workspace(tmp_path, cli_case)
    ticket = cli_case.new_ticket("printer stuck on floor 3", urgent=True)

    checked = run_itops(ws, "itsm", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "signed in as" in checked.stdout

    unknown = run_itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", cli_case.unknown)
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "no such" in unknown.stderr

    done = run_itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket)
    assert done.returncode == 3, done.stdout + done.stderr  # the host is unreachable
    assert f"{ticket}: note delivered" in done.stderr
    [text] = cli_case.internal(ticket)
    assert "printer.clear-queue" in text and "ws-dead" in text and "itops-note: " in text
    assert cli_case.public(ticket) == []

    status = run_itops(ws, "itsm", "status", "--all", "--json")
    [note] = json.loads(status.stdout)
    assert note["state"] == "delivered" and note["ticket"] == ticket and note["key"] in text

    synced = run_itops(ws, "itsm", "sync", "--json")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    report = json.loads(synced.stdout)
    assert report["system"] == cli_case.system and report["steps"] >= 1, (
        report
    )  # (its own note is no step)
    assert report["skipped"] == [], report  # the mirror's opening and the desk's history agree
    shown = run_itops(ws, "ticket", "show", ticket, "--json")
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)["summary"]
    assert summary["priority"] == "P1", summary
    for out in (checked, done, status, synced, shown):
        assert PASSWORD not in out.stdout + out.stderr


def test_cli_deliver_after_the_desk_came_back(cli_case: Case, tmp_path: Path) -> None:
    """The desk answers 503 while the run writes back: the run's result stands, the note waits;
    `itops itsm deliver` later posts it once."""
    ws = workspace(tmp_path, cli_case)
    ticket = cli_case.new_ticket("x")
    cli_case.fake.fail(*cli_case.write, status=503, retry_after="1")
    done = run_itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "note pending" in done.stderr and cli_case.internal(ticket) == []
    import time

    time.sleep(1.1)  # the desk's Retry-After
    again = run_itops(ws, "itsm", "deliver")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(cli_case.internal(ticket)) == 1
    assert run_itops(ws, "itsm", "deliver").returncode == 0 and len(cli_case.internal(ticket)) == 1


def test_open_desk_dispatches_through_the_registry(tmp_path: Path) -> None:
    from toolkit.itsm import ADAPTERS, ID_FORMS, SYSTEMS

    assert set(SYSTEMS) >= {"rt", "servicenow", "jira"}
    assert set(ID_FORMS) == set(ADAPTERS) == set(SYSTEMS)
    sn = ItsmSettings.for_desk("servicenow", url="https://sn.example.org", password="env:X")
    assert sn.owns("INC0010042") and not sn.owns("INC-1042") and not sn.owns("RT-1")
    jr = ItsmSettings.for_desk("jira", url="https://x.atlassian.net", password="env:X")
    assert jr.owns("ITSD-17") and not jr.owns("itsd-17") and not jr.owns("ITSD-0")
    only = ItsmSettings.for_desk("jira", projects=("ITSD",))
    assert only.owns("ITSD-17") and not only.owns("INC-1042")
    assert [jr.priority(p) for p in ("Highest", "high", "Medium", "Low", "Lowest", "?")] == [
        "P1", "P2", "P3", "P4", "P4", "P3",
    ]  # fmt: skip
    assert [sn.priority(p) for p in ("1", "2", "3", "4", "5")] == ["P1", "P2", "P3", "P4", "P4"]
    assert jr.state("Waiting for customer") == "waiting" and jr.closed("Done")
    assert sn.state("on hold") == "waiting" and sn.state("canceled") == "closed"

    class Store:
        def resolve(self, ref: str, what: str) -> Secret:
            return Secret("pw")

    desk = open_desk(sn, Store())  # type: ignore[arg-type]
    assert type(desk).__name__ == "ServiceNowDesk" and desk.system == "servicenow"
    desk.close()
    desk = open_desk(jr, Store())  # type: ignore[arg-type]
    assert type(desk).__name__ == "JiraDesk"
    desk.close()
    with pytest.raises(DeskError, match="https://"):
        open_desk(ItsmSettings.for_desk("servicenow", url="http://sn", password="env:X"), Store())  # type: ignore[arg-type]


def test_ca_bundle_holds_even_where_requests_ca_bundle_is_set(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests lets REQUESTS_CA_BUNDLE override a session's `verify` when a call passes none
    (pysnc and jira pass none): without the adapters' pinning, [itsm] ca_bundle was ignored."""
    import certifi

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    desk = case.open()
    try:
        assert desk.lookup(case.new_ticket("x")).subject == "x"
    finally:
        desk.close()


@pytest.mark.parametrize("zone", ["America/Los_Angeles", "Asia/Kolkata", "UTC"])
def test_jira_sync_reads_only_what_changed_in_the_accounts_time_zone(
    tmp_path: Path, ledger: Any, zone: str
) -> None:
    """JQL reads `updated >= "yyyy/MM/dd HH:mm"` in the itops account's time zone: the next
    sync asks for the issues changed since its mark in that zone — an issue changed hours ago
    is not read again, and one changed now is not missed (west of UTC a UTC time would be read
    hours too late)."""
    import time

    from toolkit.itsm.sync import sync

    made = jira(tmp_path)
    fake = made.fake
    fake.time_zone = zone
    now = time.time()
    old = fake.new_issue("changed hours ago", at=now - 3 * 3600)
    new = fake.new_issue("changed now", at=now - 2 * 3600)
    desk = made.open()
    try:
        first = sync(ledger, desk, made.settings(), lock=tmp_path / "lock")
        assert {c for c in (old, new) if kinds(ledger, c) == ["opened"]} == {old, new}
        fake.change(new, "bob", status="Waiting for customer")
        second = sync(ledger, desk, made.settings(), lock=tmp_path / "lock")
    finally:
        desk.close()
        fake.stop()
    assert first.steps == 2 and dict(second.events) == {"waiting": 1}
    assert second.steps == 2  # the changed issue's creation and its change: not the other's


def test_a_token_without_a_user_is_sent_as_a_bearer_token(case: Case) -> None:
    """ServiceNow: an OAuth access token; Jira Data Center: a personal access token."""
    case.fake.token = "tok-Canary-55"
    ticket = case.new_ticket("x")
    desk: Desk = _adapter(case.system)(
        case.settings(user=""), password=None, token=Secret("tok-Canary-55")
    )
    try:
        assert desk.lookup(ticket).id == ticket
    finally:
        desk.close()
    [seen] = [s for s in case.fake.seen if case.unknown not in s.path][-1:]
    headers = {name.lower(): value for name, value in seen.headers.items()}
    assert headers["authorization"] == "Bearer tok-Canary-55"


@pytest.mark.parametrize("deployment", ["Cloud", "Server"])
def test_jira_cloud_satisfaction_ratings_become_surveys_once(
    tmp_path: Path, ledger: Any, deployment: str
) -> None:
    """JSM Cloud: a resolved request's rating (GET servicedeskapi/request/KEY/feedback) is a
    survey at the issue's update, its comment kept as data; a rating outside 1–5 is skipped
    and said; none twice; a request rated after the last sync is found. Data Center has no
    feedback resource: nothing is asked, nothing recorded."""
    from toolkit.itsm.sync import sync

    t0 = 1_796_000_000.0
    hostile = "great \x1b[31mred\x1b]0;t\x07 <script>x</script>"
    made = jira(tmp_path, deployment)
    fake = made.fake
    rated, odd, later, open_ = (
        fake.new_issue(f"csat {i}", reporter="alice", at=t0 + i) for i in range(4)
    )
    for key in (rated, odd, later):
        fake.change(key, "bob", at=t0 + 300, status="Resolved")
    fake.rate(rated, 4, f"  {hostile}  ", at=t0 + 400)
    fake.rate(odd, 7, at=t0 + 401)  # not a CSAT rating itops can count
    desk = made.open()
    lock = tmp_path / "lock"
    try:
        first = sync(ledger, desk, made.settings(), lock=lock, now=t0 + 3600)
        again = sync(ledger, desk, made.settings(), lock=lock, now=t0 + 3600)
        fake.rate(later, 2, at=t0 + 1800)
        third = sync(ledger, desk, made.settings(), lock=lock, now=t0 + 3600)
    finally:
        desk.close()
        fake.stop()
    asked = [s for s in fake.seen if s.path.endswith("/feedback")]
    if deployment != "Cloud":
        assert asked == [] and "survey" not in first.events + third.events
        return
    assert asked and all({k.lower(): v for k, v in s.headers.items()}.get("x-experimentalapi")
                         == "opt-in" for s in asked)  # fmt: skip
    assert not any(s.path.endswith(f"/{open_}/feedback") for s in asked)  # not resolved
    assert first.events["survey"] == 1 and sum(again.events.values()) == 0
    assert [m for m in first.skipped if odd in m and "survey score '7' is not 1–5" in m]
    assert dict(third.events) == {"survey": 1}
    [survey] = [r for r in ledger.records(ticket=rated) if r.kind == "ticket.survey"]
    assert survey.info["score"] == 4 and survey.info["comment"] == hostile
    assert survey.info["at"] == iso_utc(t0 + 400) and survey.action_id.startswith("jira-survey-")
    assert [r.info["score"] for r in ledger.records(ticket=later, kind="ticket.survey")] == [2]
    assert not list(ledger.records(ticket=odd, kind="ticket.survey"))


def test_servicenow_surveys_become_scaled_survey_events_once(tmp_path: Path, ledger: Any) -> None:
    """ServiceNow: a complete asmt_assessment_instance an incident triggered is a survey at its
    taken_on, keyed by its sys_id; the configured scale metric's answer scaled to 1–5 (half
    up), a string metric's answer its comment, kept as data; an unfinished one ignored; none
    twice; one answered after the last sync found by its taken_on."""
    from toolkit.itsm.sync import sync

    t0 = 1_796_000_000.0
    hostile = "great \x1b[31mred\x1b]0;t\x07 <script>x</script>'; DROP TABLE x; --"
    made = servicenow(tmp_path)
    fake = made.fake
    speed = fake.add_metric("How fast?", scale_min=1, scale_max=5)
    resolution = fake.add_metric("How satisfied are you with the resolution?", scale_min=0,
                                 scale_max=8)  # fmt: skip
    words = fake.add_metric("Anything else?", datatype="string")
    rated, unfinished, later = (
        fake.new_incident(f"csat {i}", caller="alice", at=t0 + i) for i in range(3)
    )
    for number in (rated, unfinished, later):
        fake.update(number, "bob", at=t0 + 300, state="6", close_code="Solution provided",
                    close_notes="ok")  # fmt: skip
    fake.survey(rated, {speed: "1", resolution: "7", words: f"  {hostile}  "}, at=t0 + 400)
    fake.survey(unfinished, {resolution: "8"}, state="wip", at=t0 + 410)
    pending = fake.survey(later, {resolution: "3"}, state="wip", at=t0 + 420)
    settings = made.settings(survey_metric="how satisfied are you with the resolution?")
    desk = made.open(survey_metric=settings.survey_metric)
    lock = tmp_path / "lock"
    try:
        first = sync(ledger, desk, settings, lock=lock, now=t0 + 3600)
        again = sync(ledger, desk, settings, lock=lock, now=t0 + 3600)
        reread = sync(ledger, desk, settings, lock=lock, since=t0 - 60, now=t0 + 3600)
        fake.complete(pending, at=t0 + 1800)
        third = sync(ledger, desk, settings, lock=lock, now=t0 + 3600)
    finally:
        desk.close()
        fake.stop()
    assert first.events["survey"] == 1, first.skipped
    assert sum(again.events.values()) == 0 and sum(reread.events.values()) == 0
    assert dict(third.events) == {"survey": 1}
    [survey] = [r for r in ledger.records(ticket=rated) if r.kind == "ticket.survey"]
    assert survey.info["score"] == 5  # 7 of 0–8 → 4.5 → 5 (half up, not to even)
    assert survey.info["comment"] == hostile.strip() and survey.info["by"] == "alice"
    assert survey.info["at"] == iso_utc(t0 + 400)
    assert survey.action_id.startswith("servicenow-survey-")
    assert [r.info["score"] for r in ledger.records(ticket=later, kind="ticket.survey")] == [3]
    assert not list(ledger.records(ticket=unfinished, kind="ticket.survey"))
    asked = [s for s in fake.seen if "asmt_assessment_instance" in s.path]
    assert asked and all("state=complete" in s.query.get("sysparm_query", "") for s in asked)


@pytest.mark.parametrize(
    ("value", "low", "high", "metric", "score"),
    [
        ("4", "1", "5", "", "4"), ("0", "0", "10", "", "1"), ("10", "0", "10", "", "5"),
        ("12", "0", "10", "", "5"), ("-3", "0", "10", "", "1"), ("3", "0", "8", "", "3"),
        ("x", "1", "5", "", "x"), ("3", "5", "5", "", "3"), ("4", "1", "5", "nope", None),
    ],
)  # fmt: skip
def test_servicenow_survey_score_is_scaled_half_up_and_clamped(
    value: str, low: str, high: str, metric: str, score: str | None
) -> None:
    from toolkit.itsm.servicenow import Field, _survey_comment, _survey_score

    def row(**values: str) -> dict[str, Field]:
        return {k.replace("__", "."): Field(v, v) for k, v in values.items()}

    answers = [
        row(metric__name="Words", metric__datatype="string", metric__order="0",
            actual_value="-1", string_value="", metric__scale_min="", metric__scale_max=""),
        row(metric__name="Q", metric__datatype="scale", metric__order="1", actual_value=value,
            string_value="", metric__scale_min=low, metric__scale_max=high),
    ]  # fmt: skip
    assert _survey_score(answers, metric) == score
    assert _survey_comment(answers, "") == ""  # no answered string metric: no comment


def test_servicenow_surveys_refused_leave_the_incidents_synced(
    tmp_path: Path, ledger: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An account without read on asmt_assessment_instance (403): the incidents' steps are
    still recorded, the surveys are said to be unread (a warning naming the rights' doc)."""
    from toolkit.itsm.sync import sync

    t0 = 1_796_000_000.0
    made = servicenow(tmp_path)
    fake = made.fake
    scale = fake.add_metric("How satisfied are you?")
    number = fake.new_incident("csat", caller="alice", at=t0)
    fake.update(number, "bob", at=t0 + 300, state="6", close_code="Solution provided",
                close_notes="ok")  # fmt: skip
    fake.survey(number, {scale: "4"}, at=t0 + 400)
    fake.fail("GET", "/api/now/table/asmt_assessment_instance", status=403, times=5)
    desk = made.open()
    try:
        with caplog.at_level("WARNING", logger="itops.itsm"):
            result = sync(ledger, desk, made.settings(), lock=tmp_path / "lock", now=t0 + 3600)
    finally:
        desk.close()
        fake.stop()
    assert kinds(ledger, number) == ["opened", "resolved"], result.skipped
    assert [r for r in caplog.records if "surveys not read" in r.getMessage()
            and "docs/itsm.md" in r.getMessage()]  # fmt: skip
    assert PASSWORD not in caplog.text


def test_cli_servicenow_survey_synced_counts_in_kpi_csat(tmp_path: Path) -> None:
    """`itops itsm sync` then `itops kpi`: a ServiceNow survey (configured metric, 0–10) is in
    CSAT; `ticket show` shows it without the comment's control characters."""
    import time

    made = servicenow(tmp_path)
    fake = made.fake
    try:
        ws = workspace(tmp_path, made)
        with open(ws / "itops.toml") as f:
            toml = f.read()
        (ws / "itops.toml").write_text(
            toml.replace("timeout = 5\n", 'timeout = 5\nsurvey_metric = "Resolution?"\n')
        )
        t0 = time.time() - 3600
        resolution = fake.add_metric("Resolution?", scale_min=0, scale_max=10)
        words = fake.add_metric("Words?", datatype="string")
        number = fake.new_incident("kpi csat", caller="alice", at=t0)
        fake.update(number, "bob", at=t0 + 600, state="6", close_code="Solution provided",
                    close_notes="ok")  # fmt: skip
        fake.survey(number, {resolution: "7", words: "slow \x1b[31mred\x07"}, at=t0 + 900)
        synced = run_itops(ws, "itsm", "sync", "--json")
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert json.loads(synced.stdout)["skipped"] == []
        shown = run_itops(ws, "ticket", "show", number)
        assert shown.returncode == 0 and "\x1b" not in shown.stdout + shown.stderr
        kpi = run_itops(ws, "kpi", "--since", iso_utc(t0 - 60), "--until", iso_utc(t0 + 3500),
                        "--json")  # fmt: skip
        assert kpi.returncode == 0, kpi.stderr
        found = json.loads(kpi.stdout)
        assert found["surveys"] == 1 and found["csat_mean"] == pytest.approx(4.0)  # 3.8 → 4
    finally:
        fake.stop()

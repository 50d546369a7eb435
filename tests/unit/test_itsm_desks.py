"""The GLPI and Zammad adapters against loopback servers that implement each vendor's
documented request/response shapes for the calls used (tests/glpi_desk.py, tests/zammad_desk.py:
NOT GLPI or Zammad, which cannot run here). Each test runs for both desks: the whole Desk
Protocol over real HTTP with the adapter's real client stack (GLPI: httpx2; Zammad: zammad_py on
requests), the mappings, the faults (401, 404, 409, 429 with Retry-After, 5xx, timeouts, a desk
that commits and then times out) and the outbox's and the sync's rules on top of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.glpi_desk import GlpiServer
from tests.zammad_desk import ZammadServer
from toolkit.itsm import (
    Desk,
    DeskAuthError,
    DeskError,
    DeskUnavailable,
    ItsmSettings,
    TicketUnknown,
)
from toolkit.itsm.outbox import deliver, notes, queue
from toolkit.ledger import open_ledger
from toolkit.secrets.credentials import Secret


@dataclass
class Env:
    """One desk's loopback server and how a test drives it."""

    system: str
    server: Any

    def settings(self, **values: Any) -> ItsmSettings:
        values.setdefault("timeout", 2.0)
        values.setdefault("categories", {"printers": "printer"})
        return ItsmSettings.for_desk(self.system, url=self.server.url, user="itops", **values)

    def desk(self, token: str | None = None, **values: Any) -> Desk:
        settings = self.settings(**values)
        if self.system == "glpi":
            from toolkit.itsm.glpi import GlpiDesk

            return GlpiDesk(
                settings,
                password=None,
                token=Secret(token or "itops-user-token"),
                app_token=Secret("app-tok"),
            )
        from toolkit.itsm.zammad import ZammadDesk

        return ZammadDesk(settings, password=None, token=Secret(token or "itops-access-token"))

    def ticket(self, title: str = "printer stuck", *, high: bool = False, **kw: Any) -> str:
        if self.system == "glpi":
            return str(self.server.new_ticket(title, priority=5 if high else 3, **kw))
        return str(self.server.new_ticket(title, priority=3 if high else 2, **kw))

    def notes(self, ticket: str) -> list[str]:
        """The internal notes on the ticket, as the server holds them."""
        if self.system == "glpi":
            return [f["content"] for f in self.server.notes(ticket) if f["is_private"]]
        return [a["body"] for a in self.server.notes(ticket)]

    @property
    def note_call(self) -> tuple[str, str]:
        if self.system == "glpi":
            return "POST", "/apirest.php/ITILFollowup"
        return "POST", "/api/v1/ticket_articles"

    @property
    def lookup_call(self) -> tuple[str, str]:
        if self.system == "glpi":
            return "GET", "/apirest.php/Ticket/"
        return "GET", "/api/v1/tickets/search"

    @property
    def unknown(self) -> str:
        return "GLPI-999" if self.system == "glpi" else "Z-99999"


@pytest.fixture(params=["glpi", "zammad"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    server = GlpiServer() if request.param == "glpi" else ZammadServer()
    server.start()
    try:
        yield Env(request.param, server)
    finally:
        server.stop()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Any]:
    book = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", operator="ana")
    yield book
    book.close()


def test_a_ticket_is_looked_up_with_its_priority_category_requester_and_state(env: Env) -> None:
    high = env.ticket("printer on fire", high=True)
    normal = env.ticket("toner low")
    desk = env.desk()
    try:
        found = desk.lookup(high)
        assert found.id == high and found.subject == "printer on fire"
        assert found.priority == ("P1" if env.system == "glpi" else "P2")  # GLPI 5, Zammad 3
        assert found.queue == "Printers" and found.category == "printer"  # [itsm.categories]
        assert found.requester in ("alice@example.org", "nicole.braun@zammad.org")
        assert found.status == "new" and not found.closed and found.created
        assert desk.lookup(normal).priority == "P3"  # GLPI 3 medium, Zammad 2 normal
        if env.system == "glpi":
            env.server.set(normal, "status", 5)  # solved
        else:
            env.server.set(normal, "state_id", 4)  # closed
        closed = desk.lookup(normal)
        assert closed.closed and closed.status in ("solved", "closed")
        with pytest.raises(TicketUnknown, match="has no such ticket"):
            desk.lookup(env.unknown)
    finally:
        desk.close()


def test_a_note_is_internal_found_by_its_key_and_resolve_is_idempotent(env: Env) -> None:
    ticket = env.ticket()
    desk = env.desk()
    try:
        assert desk.find_note(ticket, "itops-abc123") is None
        where = desk.add_note(ticket, "itops: printer.clear-queue\n\nitops-note: itops-abc123\n")
        assert where.split()[0] in ("followup", "article") and where.split()[1].isdigit()
        assert desk.find_note(ticket, "itops-abc123") == where
        assert len(env.notes(ticket)) == 1  # internal: GLPI is_private=1, Zammad internal=true
        assert desk.resolve(ticket) in ("solved", "closed")
        assert desk.resolve(ticket) in ("solved", "closed")  # again: nothing posted twice
        lines = desk.check()
        assert "signed in as itops" in lines[1] and "plain HTTP" in lines[0]
    finally:
        desk.close()
    solutions = [s for s in env.server.seen if s.path.endswith(("ITILSolution", "tickets/1"))]
    assert len([s for s in solutions if s.method in ("POST", "PUT")]) == 1


def test_refused_credentials_are_an_auth_error_that_names_no_secret(env: Env) -> None:
    ticket = env.ticket()
    desk = env.desk(token="wrong-Sekret-123")
    try:
        with pytest.raises(DeskAuthError, match=r"HTTP 401") as caught:
            desk.lookup(ticket)
        with pytest.raises(DeskAuthError):
            desk.check()
    finally:
        desk.close()
    assert "wrong-Sekret-123" not in caught.value.message + (caught.value.hint or "")


def test_missing_rights_are_named_as_such(env: Env) -> None:
    ticket = env.ticket()
    desk = env.desk()
    try:
        desk.lookup(ticket)
        if env.system == "glpi":  # GLPI says a right is missing with a 401
            body: Any = ["ERROR_RIGHT_MISSING", "You don't have permission to perform this action."]
            env.server.fail(*env.note_call, status=401, body=body)
        else:
            env.server.fail(*env.note_call, status=403, body={"error": "Not authorized"})
        with pytest.raises(DeskAuthError, match="the itops account may not") as caught:
            desk.add_note(ticket, "x")
    finally:
        desk.close()
    assert caught.value.hint and "docs/itsm.md" in caught.value.hint
    assert env.notes(ticket) == []


@pytest.mark.parametrize("status", [429, 503])
def test_an_overloaded_desk_says_when_to_come_back(env: Env, status: int) -> None:
    ticket = env.ticket()
    desk = env.desk()
    try:
        desk.lookup(ticket)  # signed in (GLPI's session) before the fault
        env.server.fail(*env.lookup_call, status=status, retry_after="42", body={"error": "slow"})
        with pytest.raises(DeskUnavailable) as caught:
            desk.lookup(ticket)
        env.server.fail(*env.lookup_call, status=500, body={"error": "boom"})
        with pytest.raises(DeskUnavailable) as failed:
            desk.lookup(ticket)
    finally:
        desk.close()
    assert caught.value.retry_after == 42.0 and f"HTTP {status}" in caught.value.message
    assert failed.value.retry_after is None and "HTTP 500" in failed.value.message


def test_a_conflict_fails_the_note_for_good(env: Env, ledger: Any, tmp_path: Path) -> None:
    ticket = env.ticket()
    note = queue(ledger, ticket, env.system, "itops: text")
    env.server.fail(*env.note_call, status=409, body=["ERROR_CONFLICT", "edited meanwhile"])
    desk = env.desk()
    try:
        with pytest.raises(DeskError) as caught:
            desk.add_note(ticket, "x")
        assert not caught.value.transient and "HTTP 409" in caught.value.message
        env.server.fail(*env.note_call, status=409, body={"error": "conflict"})
        [done] = deliver(ledger, desk, lock=tmp_path / "lock", now=1000.0)
    finally:
        desk.close()
    assert done.result == "failed" and "HTTP 409" in done.detail
    assert [n.state for n in notes(ledger)] == ["failed"] and note.key not in str(env.notes(ticket))


def test_a_timeout_before_the_desk_did_anything_is_posted_once_later(
    env: Env, ledger: Any, tmp_path: Path
) -> None:
    ticket = env.ticket()
    queue(ledger, ticket, env.system, "itops: slow desk")
    env.server.fail(*env.note_call, delay=2.5)
    desk = env.desk(timeout=1.0)
    try:
        began = time.monotonic()
        [first] = deliver(ledger, desk, lock=tmp_path / "lock", now=1000.0)
        assert time.monotonic() - began < 2.4  # the adapter's timeout, not the desk's delay
        assert first.result == "retry" and "did not answer within" in first.detail
        assert env.notes(ticket) == []
        [second] = deliver(ledger, desk, lock=tmp_path / "lock", now=2000.0)
    finally:
        desk.close()
    assert second.result == "delivered" and len(env.notes(ticket)) == 1


def test_a_desk_that_commits_and_then_times_out_gets_the_note_once(
    env: Env, ledger: Any, tmp_path: Path
) -> None:
    ticket = env.ticket()
    note = queue(ledger, ticket, env.system, "itops: committed, answer lost")
    env.server.fail(*env.note_call, delay=2.5, commit=True)
    desk = env.desk(timeout=1.0)
    try:
        [first] = deliver(ledger, desk, lock=tmp_path / "lock", now=1000.0)
        assert first.result == "retry"
        assert len(env.notes(ticket)) == 1  # the desk has it; itops does not know
        [attempt] = [r for r in ledger.records(kind="itsm.attempt")]
        assert attempt.info["maybe_committed"] is True
        [second] = deliver(ledger, desk, lock=tmp_path / "lock", now=2000.0)
    finally:
        desk.close()
    assert second.result == "already-there"
    [text] = env.notes(ticket)
    assert f"itops-note: {note.key}" in text  # one note: found by its key, not posted again


def test_an_unreachable_desk_is_unavailable(env: Env) -> None:
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env.server.stop()
    settings = ItsmSettings.for_desk(env.system, url=f"http://127.0.0.1:{port}", timeout=2.0)
    if env.system == "glpi":
        from toolkit.itsm.glpi import GlpiDesk

        desk: Desk = GlpiDesk(settings, password=None, token=Secret("t"))
    else:
        from toolkit.itsm.zammad import ZammadDesk

        desk = ZammadDesk(settings, password=None, token=Secret("t"))
    try:
        with pytest.raises(DeskUnavailable, match="unreachable") as caught:
            desk.lookup("GLPI-1" if env.system == "glpi" else "Z-31001")
    finally:
        desk.close()
    assert not caught.value.maybe_committed
    env.server.start()  # (the fixture stops it)


def kinds(ledger: Any, ticket: str) -> list[str]:
    return [r.kind[7:] for r in ledger.records(ticket=ticket) if r.kind.startswith("ticket.")]


def test_sync_pulls_each_ticket_step_once_then_only_what_is_new(
    env: Env, ledger: Any, tmp_path: Path
) -> None:
    from toolkit.itsm.sync import mark, sync

    t0 = time.time() - 3600
    s = env.server
    ticket = env.ticket("disk full", at=t0)
    other = env.ticket("no network", at=t0 + 1)
    if env.system == "glpi":
        s.followup(ticket, "I still cannot print", by=7, at=t0 + 60)  # the requester: no response
        s.followup(ticket, "looking into it", by=11, at=t0 + 120)  # the first response
        s.followup(ticket, "internal musing", by=11, private=True, at=t0 + 130)  # not a reply
        s.set(ticket, "status", 4, at=t0 + 180)  # pending
        s.set(ticket, "status", 2, at=t0 + 240)  # assigned
        s.set(ticket, "priority", 5, at=t0 + 300)  # very high: P1
        s.set(ticket, "itilcategories_id", 5, at=t0 + 360)  # Network
        s.set(ticket, "status", 5, at=t0 + 420)  # solved
    else:
        s.reply(ticket, "I still cannot print", by=5, at=t0 + 60)
        s.reply(ticket, "looking into it", by=3, at=t0 + 120)
        s.reply(ticket, "internal musing", by=3, internal=True, at=t0 + 130)
        s.set(ticket, "state_id", 3, at=t0 + 180)  # pending reminder
        s.set(ticket, "state_id", 2, at=t0 + 240)  # open
        s.set(ticket, "priority_id", 4, at=t0 + 300)  # 4 urgent: P1
        s.set(ticket, "group_id", 3, at=t0 + 360)  # Network
        s.set(ticket, "state_id", 4, at=t0 + 420)  # closed
    settings = env.settings(timeout=5.0)
    desk = env.desk()
    lock = tmp_path / "sync.lock"
    try:
        desk.add_note(other, "itops: a note of ours\n\nitops-note: itops-0000\n")  # not a reply
        first = sync(ledger, desk, settings, lock=lock)
        assert first.skipped == [], first.skipped
        assert kinds(ledger, ticket) == [
            "opened", "responded", "waiting", "resumed", "updated", "updated", "resolved",
        ]  # fmt: skip
        assert kinds(ledger, other) == ["opened"]
        opened = next(r for r in ledger.records(ticket=ticket) if r.kind == "ticket.opened")
        assert opened.info["priority"] == "P3" and opened.info["category"] == "printer"
        assert abs(_epoch(opened.info["at"]) - t0) < 2  # at the desk's own time
        keys = [r.action_id for r in ledger.records(ticket=ticket)]
        assert all(k and k.startswith(f"{env.system}-") for k in keys)
        assert first.through == mark(ledger, settings) > 0

        again = sync(ledger, desk, settings, lock=lock)
        assert sum(again.events.values()) == 0 and again.steps == 0
        reread = sync(ledger, desk, settings, lock=lock, since=t0 - 10)
        assert sum(reread.events.values()) == 0 and reread.steps > 0

        if env.system == "glpi":
            s.set(ticket, "status", 2)  # reopened at the desk
        else:
            s.set(ticket, "state_id", 2)
        later = sync(ledger, desk, settings, lock=lock)
        assert dict(later.events) == {"reopened": 1} and later.through > first.through
    finally:
        desk.close()


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_glpi_renews_an_expired_session_and_needs_its_app_token() -> None:
    server = GlpiServer().start()
    try:
        env = Env("glpi", server)
        ticket = env.ticket()
        desk = env.desk()
        try:
            desk.lookup(ticket)
            server.sessions.clear()  # GLPI's session expired
            assert desk.lookup(ticket).id == ticket
            inits = [r for r in server.seen if r.path.endswith("initSession")]
            assert len(inits) == 2
        finally:
            desk.close()
        from toolkit.itsm.glpi import GlpiDesk

        wrong = GlpiDesk(env.settings(), password=None, token=Secret("itops-user-token"),
                         app_token=Secret("bad-app"))  # fmt: skip
        with pytest.raises(DeskAuthError, match="ERROR_WRONG_APP_TOKEN_PARAMETER"):
            wrong.check()
        wrong.close()
        by_password = GlpiDesk(env.settings(), password=Secret("itops-pw"), token=None,
                               app_token=Secret("app-tok"))  # fmt: skip
        assert "signed in as itops" in by_password.check()[1]
        by_password.close()
        assert not server.sessions  # killSession on close
    finally:
        server.stop()


def test_zammad_ids_are_ticket_numbers_not_database_ids() -> None:
    server = ZammadServer().start()
    try:
        env = Env("zammad", server)
        ticket = env.ticket()
        assert ticket == "Z-31001"
        desk = env.desk()
        try:
            assert desk.lookup(ticket).number == "31001"
            with pytest.raises(TicketUnknown):
                desk.lookup("Z-1")  # the database id is not the number
        finally:
            desk.close()
        searched = [r for r in server.seen if r.path.endswith("tickets/search")]
        assert searched[0].query["query"] == "number:31001"
    finally:
        server.stop()


def test_the_desks_id_forms_and_defaults() -> None:
    glpi = ItsmSettings.for_desk("glpi")
    zammad = ItsmSettings.for_desk("zammad")
    assert glpi.owns("GLPI-45") and not glpi.owns("RT-45") and not glpi.owns("GLPI-0")
    assert zammad.owns("Z-31001") and not zammad.owns("Z-") and not zammad.owns("GLPI-45")
    assert [glpi.priority(v) for v in (6, 5, 4, 3, 2, 1)] == ["P1", "P1", "P2", "P3", "P4", "P4"]
    assert [zammad.priority(v) for v in (4, 3, 2, 1)] == ["P1", "P2", "P3", "P4"]
    assert glpi.state("pending") == "waiting" and glpi.state("solved") == "resolved"
    assert glpi.state("closed") == "closed" and glpi.state("assigned") == "open"
    assert zammad.state("pending reminder") == "waiting" and zammad.state("closed") == "resolved"
    assert zammad.state("merged") == "closed" and zammad.state("open") == "open"


@pytest.mark.parametrize("system", ["glpi", "zammad"])
def test_a_self_signed_desk_is_refused_unless_its_ca_is_configured(
    system: str, tmp_path: Path
) -> None:
    import ssl

    from toolkit.lab.tlsca import issue

    tls = issue(tmp_path / "tls", "localhost", "127.0.0.1", ca_name="itops test desk CA")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    server = (GlpiServer() if system == "glpi" else ZammadServer()).start(tls=context)
    try:
        env = Env(system, server)
        assert server.url.startswith("https://")
        untrusting = env.desk()
        with pytest.raises(DeskError) as refused:
            untrusting.check()
        untrusting.close()
        trusting = env.desk(ca_bundle=tls.ca)
        lines = trusting.check()
        trusting.close()
    finally:
        server.stop()
    assert "TLS certificate is not trusted" in refused.value.message
    assert not refused.value.transient
    assert refused.value.hint and "ca_bundle" in refused.value.hint
    assert f"TLS verified against {tls.ca}" in lines[0] and "signed in as itops" in lines[1]


def test_sync_pages_through_the_desk_and_reads_again_only_what_changed(
    env: Env, ledger: Any, tmp_path: Path
) -> None:
    """120 tickets, ten minutes apart (two pages of the desk's search); the next sync stops at
    the first ticket last modified more than five minutes before the newest step it had read:
    it reads the changed ticket's history and the newest one's, not 120."""
    from toolkit.itsm.sync import sync

    t0 = time.time() - 121 * 600
    tickets = [env.ticket(f"ticket {i}", at=t0 + 600 * i) for i in range(120)]
    settings = env.settings(timeout=5.0)
    desk = env.desk()
    try:
        first = sync(ledger, desk, settings, lock=tmp_path / "lock")
        assert first.events == {"opened": 120} and first.tickets == 120
        if env.system == "glpi":
            env.server.set(tickets[3], "priority", 5)
        else:
            env.server.set(tickets[3], "priority_id", 4)
        before = len(env.server.seen)
        later = sync(ledger, desk, settings, lock=tmp_path / "lock")
    finally:
        desk.close()
    assert later.events == {"updated": 1} and later.steps == 1
    histories = [
        r for r in env.server.seen[before:]
        if "ticket_history/" in r.path or r.query.get("with_logs") == "true"
    ]  # fmt: skip
    assert len(histories) <= 2, [r.path for r in histories]


def test_a_resolve_the_desk_committed_before_timing_out_is_not_done_twice(
    env: Env, ledger: Any, tmp_path: Path
) -> None:
    ticket = env.ticket()
    queue(ledger, ticket, env.system, "itops: fixed", resolve=True)
    call = (
        ("POST", "/apirest.php/ITILSolution")
        if env.system == "glpi"
        else ("PUT", "/api/v1/tickets/")
    )
    env.server.fail(*call, delay=2.5, commit=True)
    desk = env.desk(timeout=1.0)
    try:
        [first] = deliver(ledger, desk, lock=tmp_path / "lock", now=1000.0)
        assert first.result == "retry" and "did not answer" in first.detail
        [second] = deliver(ledger, desk, lock=tmp_path / "lock", now=2000.0)
        state = desk.lookup(ticket).status
    finally:
        desk.close()
    assert second.result == "already-there" and state in ("solved", "closed")
    assert len(env.notes(ticket)) == 1
    changes = [r for r in env.server.seen if r.method == call[0] and r.path.startswith(call[1])]
    assert len(changes) == 1  # one solution / one state change


def test_glpi_surveys_are_synced_once_scaled_to_1_to_5_even_when_answered_later(
    ledger: Any, tmp_path: Path
) -> None:
    """GLPI's satisfaction surveys: answered ones become `survey` events (score
    satisfaction_scaled_to_5, or satisfaction on 9.5, half up, 0 stars → 1; the comment kept
    as data), unanswered ones nothing; one answered after the ticket's last step — which
    leaves the ticket's date_mod alone — is found by its date_answered, and none twice."""
    from toolkit.desk.kpi import kpis
    from toolkit.desk.sla import default_policy
    from toolkit.desk.tickets import from_records, summarize
    from toolkit.itsm.sync import sync

    server = GlpiServer().start()
    env = Env("glpi", server)
    t0 = time.time() - 7200
    hostile = "merci \x1b[31m<b>red</b>\x1b]0;title\x07 '; DROP TABLE x; --"
    tickets = [env.ticket(f"survey {i}", at=t0 + i) for i in range(4)]
    sids = []
    for i, ticket in enumerate(tickets):
        server.set(ticket, "status", 5, at=t0 + 600 + i)  # solved
        server.set(ticket, "status", 6, at=t0 + 900 + i)  # closed: GLPI makes its survey
        sids.append(server.survey(ticket, at=t0 + 900 + i))
    server.answer(sids[0], 10, hostile, max_rate=10, at=t0 + 1000)  # scaled: 5
    server.answer(sids[1], 3, max_rate=5, scaled=False, at=t0 + 1001)  # GLPI 9.5: 3
    # sids[2]: never answered; sids[3]: answered after the first sync
    settings = env.settings(timeout=5.0)
    desk = env.desk()
    lock = tmp_path / "lock"
    try:
        first = sync(ledger, desk, settings, lock=lock)
        assert first.skipped == [] and first.events["survey"] == 2, first.as_dict()
        before = len(server.seen)
        again = sync(ledger, desk, settings, lock=lock)
        assert sum(again.events.values()) == 0, again.as_dict()
        server.answer(sids[3], 0, "nul", at=time.time() - 60)  # 0 stars
        modified = {n: dict(t) for n, t in server.tickets.items()}
        later = sync(ledger, desk, settings, lock=lock)
        assert dict(later.events) == {"survey": 1} and later.skipped == [], later.as_dict()
        assert {n: dict(t) for n, t in server.tickets.items()} == modified  # date_mod as it was
        last = sync(ledger, desk, settings, lock=lock)
        assert sum(last.events.values()) == 0, last.as_dict()
    finally:
        desk.close()
        server.stop()
    assert any(r.query.get("criteria[0][field]") == "61" for r in server.seen[before:])
    surveys = {t: [r for r in ledger.records(ticket=t) if r.kind == "ticket.survey"]
               for t in tickets}  # fmt: skip
    assert [len(s) for s in surveys.values()] == [1, 1, 0, 1]
    [one], [two], [four] = surveys[tickets[0]], surveys[tickets[1]], surveys[tickets[3]]
    assert one.info["score"] == 5 and one.info["comment"] == hostile.strip()  # data, unescaped
    assert one.action_id == f"glpi-survey-{sids[0]}" and one.info["imported"] is True
    assert one.info["by"] == "alice" and abs(_epoch(one.info["at"]) - (t0 + 1000)) < 2
    assert two.info["score"] == 3 and "comment" not in two.info
    assert four.info["score"] == 1 and four.info["comment"] == "nul"  # 0 stars → 1
    policy = default_policy()
    summaries = []
    for ticket in tickets:
        events, actions = from_records(list(ledger.records(ticket=ticket)))
        summaries.append(summarize(ticket, events, actions, policy))
    assert [s.survey_score for s in summaries if s] == [5, 3, None, 1]
    found = kpis([s for s in summaries if s], [], policy, since=t0 - 60, until=time.time() + 60)
    assert found["surveys"] == 3 and found["csat_mean"] == pytest.approx(3.0)  # (5+3+1)/3

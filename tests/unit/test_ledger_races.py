"""The ledger under races and faults: a ticket opened once by concurrent runs; a finish that
survives a dropped database connection, and is never written twice.

Every test here runs on SQLite and on a real PostgreSQL (see the `ledger_url` fixture)."""

from __future__ import annotations

import multiprocessing
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from toolkit.desk.tickets import ensure
from toolkit.errors import LedgerError
from toolkit.ledger import Entry, Ledger

PROCESSES, ROUNDS = 4, 25


def _opener(url: str, name: str, barrier: Any, rounds: int) -> None:
    """One `itops fix --ticket` process: each round, at the barrier, open ticket RACE-<round>."""
    book = Ledger(url, operator=name)
    try:
        for n in range(rounds):
            barrier.wait(60)
            ensure(book, f"RACE-{n}", category="printer", source=f"itops fix ({name})")
    finally:
        book.close()


def test_concurrent_runs_open_a_new_ticket_exactly_once(ledger_url: str) -> None:
    """Four processes race `tickets.ensure` for the same new ticket, round after round, released
    together by a barrier: each ticket has exactly one `ticket.opened`."""
    Ledger(ledger_url, operator="setup").close()  # the schema exists before the race
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    procs = [
        ctx.Process(target=_opener, args=(ledger_url, f"p{n}", barrier, ROUNDS))
        for n in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    book = Ledger(ledger_url, operator="check")
    try:
        opened = book.tally(("ticket",), kind="ticket.opened")
        assert sorted(opened) == sorted((f"RACE-{n}", 1) for n in range(ROUNDS))
        assert book.verify().ok
    finally:
        book.close()


def test_append_once_writes_a_tickets_kind_once_and_keeps_the_chain(ledger_url: str) -> None:
    book = Ledger(ledger_url, operator="alice")
    try:
        first = book.append_once(Entry("ticket.opened", ticket="INC-1", data={"priority": "P2"}))
        assert first is not None and first.seq == 1
        assert book.append_once(Entry("ticket.opened", ticket="INC-1")) is None
        assert book.append(Entry("ticket.note", ticket="INC-1", data={"text": "x"})).seq == 2
        assert book.append_once(Entry("ticket.opened", ticket="INC-2")) is not None
        assert [(r.kind, r.ticket) for r in book.records()] == [
            ("ticket.opened", "INC-1"),
            ("ticket.note", "INC-1"),
            ("ticket.opened", "INC-2"),
        ]
        assert book.verify().ok
    finally:
        book.close()


# -- a dropped database connection (PostgreSQL) ------------------------------------------------
def _terminate(url: str, pid: int) -> None:
    """What `SELECT pg_terminate_backend(pid)` from another session does to itops' connection."""
    import psycopg

    with psycopg.connect("postgresql://" + url.partition("://")[2], autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


def _backend_pid(book: Ledger) -> int:
    pid: int = book._store._raw.info.backend_pid
    return pid


def finishes(book: Ledger, action_id: str) -> list[Any]:
    return list(book.records(kind="action.finish", action_id=action_id))


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_a_finish_survives_its_backend_being_terminated_mid_run(ledger_url: str) -> None:
    """The issue's run: the store's backend is terminated while the host is being fixed; the
    finish is written on a fresh connection, once, and no action stays open."""
    from tests.fakes import FakeConnector, Script, hosts
    from tests.unit.test_runner import Flag, make_runner, task
    from toolkit.run.runner import Outcome, RunOptions

    book = Ledger(ledger_url, operator="tester")
    state = {"present": False}

    def test(command: Any, stdin: Any) -> tuple[int, str, str]:
        return (0 if state["present"] else 1, "", "")

    def touch(command: Any, stdin: Any) -> tuple[int, str, str]:
        _terminate(ledger_url, _backend_pid(book))  # between begin and finish
        state["present"] = True
        return (0, "", "")

    conn = FakeConnector({"a": Script().on("test -e /tmp/flag", test).on("touch /tmp/flag", touch)})
    try:
        report = make_runner(book, conn).run(
            task(Flag), hosts("a"), {}, ticket="T-1", options=RunOptions()
        )
        result = report.results[0]
        assert (result.outcome, result.error) == (Outcome.FIXED, None), result.message
        assert [r.outcome for r in finishes(book, result.action_id or "")] == ["fixed"]
        verdict = book.verify()
        assert verdict.ok and verdict.open_actions == ()
    finally:
        book.close()


class _LostAnswer:
    """A psycopg connection whose first COMMIT goes through on the server, after which the
    backend is terminated before the client hears back: the outcome is unknown to the writer."""

    def __init__(self, real: Any, url: str) -> None:
        self._real, self._url, self.lost = real, url, 0

    def commit(self) -> None:
        self._real.commit()
        if not self.lost:
            self.lost += 1
            _terminate(self._url, self._real.info.backend_pid)
            import psycopg

            raise psycopg.OperationalError("server closed the connection unexpectedly")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_a_finish_whose_commit_answer_was_lost_is_written_once(ledger_url: str) -> None:
    book = Ledger(ledger_url, operator="tester")
    try:
        action = book.begin(task="t.x", host="h", ticket="T-1", params={})
        store = book._store
        lost = _LostAnswer(store._raw, ledger_url)
        store._raw = lost
        record = book.finish(
            action, task="t.x", host="h", ticket="T-1", outcome="fixed", duration=1.0
        )
        assert lost.lost == 1  # the fault happened
        assert [r.seq for r in finishes(book, action)] == [record.seq]
        assert book.append(Entry("ticket.note", ticket="T-1", data={"text": "next"})).seq == 3
        verdict = book.verify()
        assert verdict.ok and verdict.records == 3 and verdict.open_actions == ()
    finally:
        book.close()


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_a_database_that_stays_down_fails_the_finish_in_bounded_time(ledger_url: str) -> None:
    """The backend is terminated and every reconnection refused (the database no longer
    accepts connections): the finish gives up after its retries, with a clear error."""
    import psycopg

    base = "postgresql://" + ledger_url.partition("://")[2].partition("?")[0]
    name = f"itops_down_{secrets.token_hex(3)}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = ledger_url.partition("?")[0].rpartition("/")[0] + f"/{name}"
    book = Ledger(url, operator="tester")
    try:
        action = book.begin(task="t.x", host="h", ticket="T-1", params={})
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        _terminate(ledger_url, _backend_pid(book))
        started = time.monotonic()
        with pytest.raises(LedgerError, match="gave up after 5 retries") as caught:
            book.finish(action, task="t.x", host="h", ticket="T-1", outcome="fixed", duration=1)
        assert 3.0 <= time.monotonic() - started < 15
        assert "not currently accepting connections" in caught.value.message
    finally:
        book.close()
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


# -- SQLite's lock held past the busy timeout ---------------------------------------------------
def test_sqlite_lock_held_past_the_busy_timeout_is_retried(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}?timeout=0.05"
    book = Ledger(url, operator="tester")
    holder = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer's long transaction
        threading.Timer(0.5, holder.execute, ("COMMIT",)).start()
        record = book.append(Entry("ticket.note", ticket="T-1", data={"text": "waited"}))
        assert record.seq == 1 and book.verify().ok
        holder.execute("BEGIN IMMEDIATE")  # and one that never ends
        started = time.monotonic()
        with pytest.raises(LedgerError, match="database is locked.*gave up after 5 retries"):
            book.append(Entry("ticket.note", ticket="T-1", data={"text": "never"}))
        assert time.monotonic() - started < 6
        holder.execute("ROLLBACK")
    finally:
        holder.close()
        book.close()

"""The ticket log: chained, append-only, linear under concurrent writers, tamper-evident.

Every test here runs on SQLite and on a real PostgreSQL (see the `ledger_url` fixture)."""

from __future__ import annotations

import json
import multiprocessing
import secrets
from collections.abc import Iterator
from urllib.parse import unquote

import pytest
from sqlalchemy import Engine, create_engine, text

from toolkit.ledger import GENESIS, Entry, Ledger, record_hash
from toolkit.ledger.schema import FIELDS, SCHEMA_VERSION
from toolkit.secrets.credentials import MASK, Redactor

CANARY = "Ledger-Canary-7f3a"


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    book = Ledger(ledger_url, operator="alice", redactor=Redactor([CANARY]))
    yield book
    book.close()


def fill(book: Ledger, actions: int = 5) -> None:
    for i in range(actions):
        action = book.begin(
            task="printer.clear-queue",
            host=f"ws-{i:03d}",
            ticket="INC-1",
            params={"queue": "office"},
        )
        book.finish(
            action,
            task="printer.clear-queue",
            host=f"ws-{i:03d}",
            ticket="INC-1",
            outcome="fixed",
            duration=0.25,
            commands=[{"command": "lpstat", "exit_code": 0}],
            output="printer office is idle\n",
        )


def tamper(url: str, *statements: str) -> None:
    """What an attacker with database access does: drop the guards, then edit."""
    engine = create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER IF EXISTS ledger_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS ledger_no_delete"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS ledger_no_change ON ledger"))
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def test_records_chain_from_genesis_and_verify(ledger: Ledger) -> None:
    fill(ledger, 3)
    records = list(ledger.records())
    assert [r.seq for r in records] == list(range(1, 7))
    assert records[0].prev_hash == GENESIS
    for before, after in zip(records, records[1:], strict=False):
        assert after.prev_hash == before.hash
    for r in records:
        assert record_hash([getattr(r, f) for f in FIELDS]) == r.hash
    report = ledger.verify()
    assert report.ok and report.records == 6 and report.head_seq == 6
    assert report.head_hash == records[-1].hash and report.open_actions == ()


def test_begin_without_finish_is_an_open_action_not_a_break(ledger: Ledger) -> None:
    fill(ledger, 1)
    open_id = ledger.begin(task="x.y", host="h", ticket="INC-2", params={})
    report = ledger.verify()
    assert report.ok and report.open_actions == (open_id,)


def test_secrets_are_masked_in_every_field_and_json(ledger: Ledger) -> None:
    action = ledger.begin(
        task="password.reset",
        host="ws-1",
        ticket="INC-3",
        params={"note": f"pw={CANARY}", "nested": [CANARY]},
    )
    ledger.finish(
        action,
        task="password.reset",
        host="ws-1",
        ticket="INC-3",
        outcome="failed",
        duration=1,
        commands=[{"command": f"echo {CANARY}"}],
        output=f"{CANARY}\n" * 3,
        data={"message": f"auth failed for {CANARY}"},
    )
    dumped = json.dumps([r.as_dict() for r in ledger.records()])
    assert CANARY not in dumped and MASK in dumped
    assert ledger.verify().ok


def test_long_output_keeps_an_excerpt_and_the_hash_of_the_whole(ledger: Ledger) -> None:
    import hashlib

    output = "".join(f"line {i}\n" for i in range(5000))
    action = ledger.begin(task="x.y", host="h", ticket=None, params={})
    record = ledger.finish(
        action, task="x.y", host="h", ticket=None, outcome="fixed", duration=0, output=output
    )
    assert record.output_sha256 == hashlib.sha256(output.encode()).hexdigest()
    assert record.output_excerpt is not None and len(record.output_excerpt) < 4000
    assert "characters omitted" in record.output_excerpt


def test_the_separator_cannot_be_smuggled_into_a_field(ledger: Ledger) -> None:
    record = ledger.append(
        Entry("ticket.note", ticket="INC-4", host="a\x1fb", data={"t": "x\x1fy"})
    )
    assert "\x1f" not in (record.host or "") and "\x1f" not in (record.data or "")
    assert ledger.verify().ok


def test_update_and_delete_are_refused_by_the_database(ledger: Ledger, ledger_url: str) -> None:
    fill(ledger, 1)
    engine = create_engine(ledger_url)
    for statement in (
        "UPDATE ledger SET outcome = 'failed' WHERE seq = 2",
        "DELETE FROM ledger WHERE seq = 1",
    ):
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    engine.dispose()
    assert ledger.verify().ok


@pytest.mark.parametrize(
    ("statements", "first_bad", "words"),
    [
        (["UPDATE ledger SET outcome = 'already-ok' WHERE seq = 4"], 4, "altered"),
        (["UPDATE ledger SET operator = 'mallory' WHERE seq = 7"], 7, "altered"),
        (["DELETE FROM ledger WHERE seq = 5"], 5, "missing"),
        # reorder: swap the contents of records 3 and 4
        (
            [
                "UPDATE ledger SET seq = -3 WHERE seq = 3",
                "UPDATE ledger SET seq = 3 WHERE seq = 4",
                "UPDATE ledger SET seq = 4 WHERE seq = -3",
            ],
            3,
            "link",
        ),
        # insert: shift 6.. up by one and forge a record 6 chained to 5
        (
            [
                "UPDATE ledger SET seq = seq + 1000 WHERE seq >= 6",
                "UPDATE ledger SET seq = seq - 999 WHERE seq >= 1006",
                "INSERT INTO ledger (seq, at, kind, operator, prev_hash, hash) SELECT 6, at, kind, "
                "'mallory', hash, hash FROM ledger WHERE seq = 5",
            ],
            6,
            "altered",
        ),
        # a forged row below the chain (INSERT is not what the guards stop): a back-dated
        # "first response" that records() would list first
        (
            [
                "INSERT INTO ledger (seq, at, kind, operator, ticket, prev_hash, hash) "
                "SELECT 0, at, 'ticket.responded', 'mallory', 'INC-1', hash, hash "
                "FROM ledger WHERE seq = 1"
            ],
            0,
            "outside the chain",
        ),
    ],
)
def test_tampering_is_found_at_the_first_broken_record(
    ledger: Ledger, ledger_url: str, statements: list[str], first_bad: int, words: str
) -> None:
    fill(ledger, 5)
    assert ledger.verify().ok
    tamper(ledger_url, *statements)
    report = ledger.verify()
    assert not report.ok
    assert report.first_bad_seq == first_bad, report.reason
    assert words in (report.reason or "")


def test_output_with_nul_bytes_is_stored_visibly_and_verifies(ledger: Ledger) -> None:
    # `find -print0`, /proc/*/cmdline: a NUL must neither break the record's hash (SQLite's
    # printf stops at one) nor be refused (PostgreSQL text cannot hold one).
    action = ledger.begin(task="t.x", host="h\x00", ticket="INC-1", params={"p": "a\x00b"})
    ledger.finish(
        action,
        task="t.x",
        host="h",
        ticket="INC-1",
        outcome="fixed",
        duration=0,
        output="one\x00two\x00",
    )
    finish = list(ledger.records(kind="action.finish"))[0]
    assert finish.output_excerpt == "one\u2400two\u2400"
    assert list(ledger.records(kind="action.begin"))[0].host == "h\u2400"
    assert ledger.verify().ok


def _writer(url: str, name: str, count: int) -> None:
    book = Ledger(url, operator=name)
    for i in range(count):
        action = book.begin(task="t.x", host=f"{name}-{i}", ticket="INC-9", params={})
        book.finish(
            action, task="t.x", host=f"{name}-{i}", ticket="INC-9", outcome="fixed", duration=0
        )
    book.close()


def test_concurrent_processes_keep_one_linear_chain_and_lose_nothing(ledger_url: str) -> None:
    """Four processes open a fresh ledger at once (racing to create it) and append."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(ledger_url, f"p{n}", 60)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    book = Ledger(ledger_url, operator="check")
    report = book.verify()
    assert report.ok and report.records == 4 * 60 * 2 and report.open_actions == ()
    by_operator: dict[str, int] = {}
    for r in book.records():
        by_operator[r.operator] = by_operator.get(r.operator, 0) + 1
    assert by_operator == {f"p{n}": 120 for n in range(4)}
    book.close()


def test_threads_share_one_ledger_through_group_commit(ledger: Ledger) -> None:
    import threading

    threads = [threading.Thread(target=fill, args=(ledger, 20)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = ledger.verify()
    assert report.ok and report.records == 8 * 20 * 2


def test_filters(ledger: Ledger) -> None:
    fill(ledger, 3)
    ledger.append(Entry("ticket.opened", ticket="INC-7", data={"priority": "P1"}))
    assert [r.kind for r in ledger.records(ticket="INC-7")] == ["ticket.opened"]
    assert len(list(ledger.records(host="ws-001"))) == 2
    assert len(list(ledger.records(outcome="fixed"))) == 3
    first = next(ledger.records())
    assert [r.seq for r in ledger.records(since=first.at)][0] == 1
    assert list(ledger.records(until=first.at)) == []


def test_limit_and_grouped_counts(ledger: Ledger) -> None:
    fill(ledger, 3)
    fill(ledger, 2)
    assert [r.seq for r in ledger.records(kind="action.finish", limit=2)] == [2, 4]
    counts = ledger.tally(("host", "outcome"), kind="action.finish", hosts=["ws-000", "ws-002"])
    assert sorted(counts) == [("ws-000", "fixed", 2), ("ws-002", "fixed", 1)]
    assert ledger.tally(("host",), kind="action.finish", hosts=[]) == []
    with pytest.raises(ValueError, match="cannot group"):
        ledger.tally(("host; DROP TABLE ledger",), kind="action.finish")


def schema_version(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(text("SELECT value FROM ledger_meta WHERE key = 'schema'")).scalar()
        )


def test_an_older_ledger_gets_the_ticket_kind_index_when_opened(ledger_url: str) -> None:
    book = Ledger(ledger_url, operator="alice")
    fill(book, 2)
    book.close()
    # What a version-1 ledger looked like: a ticket-only index, no db_user column.
    engine = create_engine(ledger_url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("DROP TRIGGER ledger_db_user ON ledger"))
        conn.execute(text("ALTER TABLE ledger DROP COLUMN db_user"))
        conn.execute(text("DROP INDEX ix_ledger_ticket_kind"))
        conn.execute(text("CREATE INDEX ix_ledger_ticket ON ledger (ticket)"))
        for name in ("operator", "task", "outcome", "action_kind"):  # (schemas 4 and 5)
            conn.execute(text(f"DROP INDEX ix_ledger_{name}"))
        conn.execute(text("UPDATE ledger_meta SET value = '1' WHERE key = 'schema'"))

    book = Ledger(ledger_url, operator="alice")
    try:
        assert [r.kind for r in book.records(ticket="INC-1", kinds=["action.begin"])] == [
            "action.begin",
            "action.begin",
        ]
        assert book.verify().ok
    finally:
        book.close()
    assert schema_version(engine) == SCHEMA_VERSION
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = conn.execute(
                text(
                    "EXPLAIN QUERY PLAN SELECT seq FROM ledger WHERE ticket = 'INC-1' "
                    "AND kind IN ('ticket.opened', 'ticket.updated') ORDER BY seq"
                )
            )
            assert "ix_ledger_ticket_kind" in " ".join(str(row[-1]) for row in plan)
            names = conn.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'ledger'")
            )
        else:
            names = conn.execute(
                text(
                    "SELECT indexname FROM pg_indexes "
                    "WHERE tablename = 'ledger' AND schemaname = current_schema()"
                )
            )
        # schemas 4 and 5: the web search's indexes
        found = set(names.scalars())
        assert {"ix_ledger_ticket_kind", "ix_ledger_operator", "ix_ledger_task",
                "ix_ledger_outcome", "ix_ledger_action_kind"} <= found  # fmt: skip
        assert "ix_ledger_action" not in found
    engine.dispose()


def test_a_version_4_ledger_gets_the_action_kind_index_when_opened(ledger_url: str) -> None:
    book = Ledger(ledger_url, operator="alice")
    fill(book, 2)
    book.close()
    engine = create_engine(ledger_url)
    with engine.begin() as conn:  # what a version-4 ledger looked like
        conn.execute(text("DROP INDEX ix_ledger_action_kind"))
        conn.execute(text("CREATE INDEX ix_ledger_action ON ledger (action_id)"))
        conn.execute(text("UPDATE ledger_meta SET value = '4' WHERE key = 'schema'"))
    book = Ledger(ledger_url, operator="alice")
    try:
        (begin,) = [r for r in book.records() if r.kind == "action.begin"][:1]
        found = list(book.records(action_ids=[begin.action_id], kind="action.begin"))
        assert [r.seq for r in found] == [begin.seq]
        assert book.verify().ok
    finally:
        book.close()
    assert schema_version(engine) == SCHEMA_VERSION == "5"
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            query = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'ledger'"
        else:
            query = (
                "SELECT indexname FROM pg_indexes "
                "WHERE tablename = 'ledger' AND schemaname = current_schema()"
            )
        found = set(conn.execute(text(query)).scalars())
    engine.dispose()
    assert "ix_ledger_action_kind" in found and "ix_ledger_action" not in found


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_an_auditor_who_may_only_read_opens_an_older_ledger(ledger_url: str) -> None:
    # A team's shared ledger, opened by an account with SELECT only: the upgrade is not
    # possible, and the ledger still opens, reads and verifies.
    book = Ledger(ledger_url, operator="alice")
    fill(book, 1)
    book.close()
    role = f"itops_auditor_{secrets.token_hex(3)}"
    schema = unquote(ledger_url).rpartition("search_path=")[2]
    engine = create_engine(ledger_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE ledger_meta SET value = '1' WHERE key = 'schema'"))
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {role}"))
        conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}"))
    try:
        rest = ledger_url.partition("@")[2]
        auditor = Ledger(f"postgresql+psycopg://{role}@{rest}", operator="bob")
        try:
            assert len(list(auditor.records(ticket="INC-1"))) == 2
            assert auditor.verify().ok
        finally:
            auditor.close()
        assert schema_version(engine) == "1"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}"))
            conn.execute(text(f"REVOKE ALL ON SCHEMA {schema} FROM {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        engine.dispose()

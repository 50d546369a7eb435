"""Each record's database user is the database's word: on PostgreSQL a column default and a
trigger fill it with `session_user`, whatever the client sends; the application role may only
INSERT and SELECT, so it can neither rewrite rows nor switch the trigger off. Older ledgers gain
the column when opened (and still read when they cannot be upgraded)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from toolkit.ledger import Entry, Ledger, record_hash
from toolkit.ledger.schema import COLUMNS, FIELDS, SCHEMA_VERSION

PG_URL = os.environ.get("ITOPS_TEST_PG_URL")


def test_an_older_ledger_gains_the_db_user_column_when_opened(ledger_url: str) -> None:
    book = Ledger(ledger_url, operator="alice")
    book.append(Entry("note", ticket="INC-1"))
    book.close()
    engine = create_engine(ledger_url)
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:  # what a version-2 ledger looked like
        if postgres:
            conn.execute(text("DROP TRIGGER ledger_db_user ON ledger"))
        conn.execute(text("ALTER TABLE ledger DROP COLUMN db_user"))
        conn.execute(text("UPDATE ledger_meta SET value = '2' WHERE key = 'schema'"))
    if not postgres:  # read-only, it cannot be upgraded: it still reads, its rows have no db user
        reader = Ledger(ledger_url, operator="auditor", read_only=True)
        assert [r.db_user for r in reader.records()] == [None]
        assert reader.verify().ok
        reader.close()
    book = Ledger(ledger_url, operator="alice")
    try:
        book.append(Entry("note", ticket="INC-1"))
        users = [r.db_user for r in book.records()]
        assert users == [None, "postgres" if postgres else None]
        report = book.verify()
        assert report.ok, report.reason
    finally:
        book.close()
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT value FROM ledger_meta WHERE key = 'schema'")).scalar()
            == SCHEMA_VERSION
        )
    engine.dispose()


@dataclass(frozen=True)
class Roles:
    owner_url: str  # the role that owns the ledger's schema and tables
    app_url: str  # the application's role: INSERT and SELECT only
    owner: str
    app: str


def _as(role: str, schema: str) -> str:
    assert PG_URL is not None
    rest = PG_URL.partition("://")[2].partition("@")[2]
    sep = "&" if "?" in rest else "?"
    return f"postgresql+psycopg://{role}@{rest}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def roles() -> Iterator[Roles]:
    """A ledger in a schema owned by one role, used by an application role granted INSERT and
    SELECT on it (docs/security.md, "Identity and approvals")."""
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must set ITOPS_TEST_PG_URL")
        pytest.skip("ITOPS_TEST_PG_URL not set (PostgreSQL ledger tests run in CI)")
    tag = secrets.token_hex(3)
    owner, app, schema = f"itops_owner_{tag}", f"itops_app_{tag}", f"itops_ledger_{tag}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE ROLE {owner} LOGIN"))
        conn.execute(text(f"CREATE ROLE {app} LOGIN"))
        conn.execute(text(f"CREATE SCHEMA {schema} AUTHORIZATION {owner}"))
    try:
        Ledger(_as(owner, schema), operator="dba").close()  # the owner creates the tables
        with create_engine(_as(owner, schema)).begin() as conn:
            conn.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {app}"))
            conn.execute(text(f"GRANT SELECT, INSERT ON ledger TO {app}"))
            conn.execute(text(f"GRANT SELECT ON ledger_meta TO {app}"))
        yield Roles(_as(owner, schema), _as(app, schema), owner, app)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            conn.execute(text(f"DROP OWNED BY {app}"))
            conn.execute(text(f"DROP ROLE {app}"))
            conn.execute(text(f"DROP ROLE {owner}"))
        admin.dispose()


def _raw(url: str) -> Any:
    import psycopg

    return psycopg.connect("postgresql://" + url.partition("://")[2], autocommit=True)


def test_the_database_fills_each_records_db_user_whatever_the_client_sends(roles: Roles) -> None:
    book = Ledger(roles.app_url, operator="alice")
    try:
        book.append(Entry("note", ticket="INC-1"))
        # a client that writes the row itself, claiming to be the owner
        head = book.head()
        assert head is not None and head.db_user == roles.app
        row: dict[str, Any] = dict.fromkeys(FIELDS)
        row.update(seq=head.seq + 1, at=head.at, kind="note", operator="alice")
        row["prev_hash"] = head.hash
        values = [row[f] for f in FIELDS]
        values.append(record_hash(values))
        conn = _raw(roles.app_url)
        try:
            marks = ", ".join(["%s"] * (len(COLUMNS) + 1))
            conn.execute(
                f"INSERT INTO ledger ({', '.join(COLUMNS)}, db_user) VALUES ({marks})",
                [*values, roles.owner],
            )
        finally:
            conn.close()
        assert [r.db_user for r in book.records()] == [roles.app, roles.app]
        report = book.verify()
        assert report.ok, report.reason
        assert dict(report.db_users) == {roles.app: 2}
    finally:
        book.close()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger SET operator = 'mallory'",
        "UPDATE ledger SET db_user = 'mallory'",
        "DELETE FROM ledger",
        "TRUNCATE ledger",
        "ALTER TABLE ledger DISABLE TRIGGER ledger_db_user",
        "ALTER TABLE ledger DISABLE TRIGGER ALL",
        "DROP TRIGGER ledger_db_user ON ledger",
        "ALTER TABLE ledger ALTER COLUMN db_user DROP DEFAULT",
        "SET session_replication_role = replica",  # (would skip every trigger)
    ],
)
def test_the_application_role_may_only_insert_and_select(roles: Roles, statement: str) -> None:
    import psycopg

    book = Ledger(roles.app_url, operator="alice")
    book.append(Entry("note", ticket="INC-1"))
    book.close()
    conn = _raw(roles.app_url)
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
        rows = conn.execute("SELECT operator, db_user FROM ledger").fetchall()
        assert rows == [("alice", roles.app)]
    finally:
        conn.close()


def test_verify_fails_when_the_owner_disables_the_db_user_trigger(roles: Roles) -> None:
    owner = _raw(roles.owner_url)
    try:
        owner.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_db_user")
    finally:
        owner.close()
    book = Ledger(roles.app_url, operator="alice")
    try:
        book.append(Entry("note", ticket="INC-1"))
        report = book.verify()
        assert not report.ok and report.first_bad_seq is None
        assert report.reason is not None and "ledger_db_user) is disabled" in report.reason
    finally:
        book.close()

"""Shared fixtures: throwaway workspaces and ledger URLs for SQLite and a real PostgreSQL.

PostgreSQL tests run when ITOPS_TEST_PG_URL is set (CI sets it: the CI machine runs PostgreSQL
on 127.0.0.1:5432). Under CI (`CI` set) a missing URL is an error, never a silent skip.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.signers import Operators, make_operators
from toolkit.workspace import Workspace

PG_URL = os.environ.get("ITOPS_TEST_PG_URL")


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A fresh, empty workspace (itops init) in a temporary folder."""
    Workspace.init(tmp_path / "ws")
    return Workspace.load(tmp_path / "ws")


def _pg_schema_url(base: str) -> Iterator[str]:
    """A private schema on the test server for one test; dropped afterwards."""
    from sqlalchemy import create_engine, text

    schema = f"itops_test_{secrets.token_hex(4)}"
    engine = create_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each ledger test runs on SQLite and on a real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    yield from _pg_url()


@pytest.fixture
def pg_ledger_url() -> Iterator[str]:
    """A private schema on the real PostgreSQL, for a test whose SQLite case is covered elsewhere."""
    yield from _pg_url()


def _pg_url() -> Iterator[str]:
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must set ITOPS_TEST_PG_URL: the ledger suite runs on PostgreSQL too")
        pytest.skip("ITOPS_TEST_PG_URL not set (PostgreSQL ledger tests run in CI)")
    yield from _pg_schema_url(PG_URL)


@pytest.fixture(scope="session")
def operators(tmp_path_factory: pytest.TempPathFactory) -> Operators:
    """alice's, bob's and carol's SSH signing keys (tests.signers), made once per session."""
    return make_operators(tmp_path_factory.mktemp("keys"))

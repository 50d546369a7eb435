"""The web search's reads on a large PostgreSQL ledger are index lookups, not walks of the table.

bench/web_search.py on PostgreSQL (1,000,000 records) found a rare operator, task or outcome
taking 380 ms and *changes only* 470 ms, though their indexes were there: the reads went through a
server-side cursor, which PostgreSQL plans to return its first 10% fast, and on a table whose
statistics are not gathered yet (autovacuum off, or not yet run after a bulk load) that is a
backward walk of the whole primary key. Here 400,000 records are written straight into the table
(the chain does not matter to a search), autovacuum is kept off it, and the reads must answer
within a statement_timeout of 50 ms that such a walk cannot meet (the index answers in ~1 ms).
"""

from __future__ import annotations

import json

import pytest

from toolkit.desk.sla import default_policy
from toolkit.ledger import Entry, Ledger
from toolkit.ledger.store import connect
from toolkit.web import pages

RECORDS = 400_000
COMMANDS = json.dumps(
    [
        {"step": "check", "command": "lpstat -p office", "exit_code": 0, "duration_ms": 12},
        {"step": "apply", "command": "/usr/sbin/cupsenable office", "exit_code": 0},
    ]
)  # (rows as wide as real ones: the planner weighs the pages a walk of the table reads)
BULK = (
    "INSERT INTO ledger (seq, at, kind, operator, ticket, host, task, action_id, outcome, "
    "params, commands, output_excerpt, data, prev_hash, hash) "
    "SELECT g, '2026-11-01T00:00:00.000000Z', "
    "CASE WHEN g %% 2 = 0 THEN 'action.begin' ELSE 'action.finish' END, 'bench', "
    "'INC-' || (g %% 1000), 'ws-' || lpad((g %% 500)::text, 3, '0'), 'printer.clear-queue', "
    "lpad(to_hex(g / 2), 32, '0'), CASE WHEN g %% 2 = 1 THEN 'fixed' END, "
    "'{\"queue\": \"office\"}', %s, 'printer office disabled - paper jam', "
    "CASE WHEN g %% 2 = 0 THEN '{\"mode\": \"fix\"}' END, repeat('0', 64), repeat('0', 64) "
    "FROM generate_series(%s, %s) AS g"
)


@pytest.fixture
def big(pg_ledger_url: str) -> str:
    book = Ledger(pg_ledger_url, operator="bench")
    book.append_many(
        [
            Entry("note", operator="rare-op", task="rare.task", host="ws-042"),
            Entry("action.finish", task="printer.clear-queue", host="ws-007",
                  action_id="f" * 32, outcome="failed", duration_ms=5),
        ]
    )  # fmt: skip
    book.close()
    conn = connect(pg_ledger_url)
    conn.execute("ALTER TABLE ledger SET (autovacuum_enabled = false)")
    conn.execute(BULK, (COMMANDS, 3, RECORDS))
    conn.commit()
    conn.close()
    return pg_ledger_url


def test_the_searchs_pages_are_index_lookups_on_postgresql(big: str) -> None:
    hurried = f"{big}%20-cstatement_timeout%3D50"  # ms, for every read below
    reader = Ledger(hurried, operator="auditor", read_only=True)
    policy = default_policy()
    try:
        for query, found in (
            ({"operator": "rare-op"}, [1]),
            ({"task": "rare.task"}, [1]),
            ({"outcome": "failed"}, [2]),
            ({"operator": "rare-op", "changes": "1"}, [1]),
        ):
            view = pages.search(reader, policy, query, 50)
            assert [r["seq"] for r in view.tables[0].rows] == found, query
        view = pages.search(reader, policy, {"changes": "1"}, 50)  # (the --check lookup too)
        rows = view.tables[0].rows
        assert len(rows) == 50 and rows[0]["seq"] == RECORDS - 1 + RECORDS % 2
        assert {r["outcome"] for r in rows} == {"fixed"}
        # a read that is not bounded still streams through a cursor, in order
        reader.close()
        reader = Ledger(big, operator="auditor", read_only=True)
        seqs = [r.seq for r in reader.records(ticket="INC-7")]
        assert len(seqs) == RECORDS // 1000 and seqs == sorted(seqs)
    finally:
        reader.close()

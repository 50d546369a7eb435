"""`ticket import`/`export`: every bad line named with its number, nothing partially imported."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from toolkit.desk.ticketio import ImportRefused, export_lines, import_file, write_lines
from toolkit.ledger import Ledger, open_ledger


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    lg = open_ledger(ledger_url, operator="importer")
    yield lg
    lg.close()


def line(ticket: str, event: str, when: str, **fields: Any) -> dict[str, Any]:
    return {"ticket": ticket, "event": event, "at": when, **fields}


GOOD = [
    line(
        "INC-1",
        "opened",
        "2026-11-02T09:14:00+01:00",
        priority="P2",
        category="printer",
        hosts=["ws-1"],
        requester="bob",
    ),
    line("INC-1", "responded", "2026-11-02T09:20:00+01:00", by="li"),
    line("INC-2", "opened", "2026-11-02T10:00:00+01:00", priority="P3"),
    line("INC-1", "resolved", "2026-11-02T10:02:00+01:00", code="fixed", first_contact=True),
    line("INC-1", "confirmed", "2026-11-02T11:00:00+01:00"),
    line("INC-1", "closed", "2026-11-02T11:05:00+01:00"),
    line("INC-1", "survey", "2026-11-03T08:00:00+01:00", score=5),
]


def write(tmp_path: Path, rows: list[Any], name: str = "in.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def ticket_records(ledger: Ledger) -> int:
    return sum(1 for r in ledger.records() if r.kind.startswith("ticket."))


def test_a_good_file_is_imported_whole(ledger: Ledger, tmp_path: Path) -> None:
    result = import_file(ledger, write(tmp_path, GOOD), batch=3)
    assert (result.events, result.tickets) == (7, 2)
    assert ticket_records(ledger) == 7
    first = next(ledger.records(kind="ticket.opened"))
    assert first.info["at"] == "2026-11-02T09:14:00+01:00" and first.info["imported"] is True
    assert first.operator == "importer"
    assert ledger.verify().ok


def test_a_write_that_fails_part_way_writes_nothing(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import is one transaction: a failure after some batches were sent leaves none of them."""
    from toolkit.errors import ToolkitError

    store = ledger._store
    real = store._insert
    calls = {"n": 0}

    def fails_on_the_third_batch(values: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(values, **kw)

    monkeypatch.setattr(store, "_insert", fails_on_the_third_batch)
    with pytest.raises(ToolkitError, match="not written: .*disk full.*nothing was written") as e:
        import_file(ledger, write(tmp_path, GOOD), batch=2)
    assert "one transaction" in (e.value.hint or "")
    assert calls["n"] == 3
    assert ticket_records(ledger) == 0 and ledger.verify().ok
    monkeypatch.undo()
    result = import_file(ledger, write(tmp_path, GOOD), batch=2)  # and the same file goes in whole
    assert result.events == 7 and ticket_records(ledger) == 7 and ledger.verify().ok


def expect_refused(ledger: Ledger, tmp_path: Path, rows: list[Any], *fragments: str) -> None:
    with pytest.raises(ImportRefused) as caught:
        import_file(ledger, write(tmp_path, rows), batch=2)
    for fragment in fragments:
        assert fragment in caught.value.message, caught.value.message
    assert ticket_records(ledger) == 0  # nothing from that file


def test_events_out_of_order(ledger: Ledger, tmp_path: Path) -> None:
    rows = [*GOOD[:2], line("INC-1", "note", "2026-11-02T09:00:00+01:00", text="earlier")]
    expect_refused(ledger, tmp_path, rows, "line 3: INC-1: events out of order", "line 2")


def test_resolve_before_open(ledger: Ledger, tmp_path: Path) -> None:
    rows = [line("INC-9", "resolved", "2026-11-02T09:00:00+01:00"), *GOOD]
    expect_refused(ledger, tmp_path, rows, "line 1: INC-9: 'resolved' before the ticket was opened")


def test_unknown_event_type(ledger: Ledger, tmp_path: Path) -> None:
    rows = [*GOOD, line("INC-2", "teleported", "2026-11-02T12:00:00+01:00")]
    expect_refused(ledger, tmp_path, rows, "line 8: unknown event 'teleported'")


def test_time_without_offset(ledger: Ledger, tmp_path: Path) -> None:
    rows = [GOOD[0], line("INC-1", "responded", "2026-11-02T09:20:00")]
    expect_refused(ledger, tmp_path, rows, "line 2: time '2026-11-02T09:20:00' has no UTC offset")


def test_survey_score_of_7(ledger: Ledger, tmp_path: Path) -> None:
    rows = [*GOOD[:6], line("INC-1", "survey", "2026-11-03T08:00:00+01:00", score=7)]
    expect_refused(ledger, tmp_path, rows, "line 7: survey: score 7 is not between 1 and 5")


def test_duplicate_event_in_the_file(ledger: Ledger, tmp_path: Path) -> None:
    rows = [*GOOD[:2], GOOD[1]]
    expect_refused(ledger, tmp_path, rows, "line 3: duplicate event: the same as line 2")


def test_duplicate_of_an_event_already_in_the_log(ledger: Ledger, tmp_path: Path) -> None:
    import_file(ledger, write(tmp_path, GOOD[:2], "first.jsonl"))
    before = ticket_records(ledger)
    with pytest.raises(ImportRefused, match="line 1: duplicate event: INC-1 opened"):
        import_file(ledger, write(tmp_path, GOOD[:3]))
    assert ticket_records(ledger) == before


def test_later_events_continue_a_ticket_already_in_the_log(ledger: Ledger, tmp_path: Path) -> None:
    import_file(ledger, write(tmp_path, GOOD[:2], "first.jsonl"))
    import_file(ledger, write(tmp_path, GOOD[2:]))
    assert ticket_records(ledger) == len(GOOD)
    with pytest.raises(ImportRefused, match="earlier than the ticket log"):
        import_file(
            ledger,
            write(
                tmp_path, [line("INC-1", "note", "2026-11-01T00:00:00Z", text="x")], "late.jsonl"
            ),
        )


def test_every_bad_line_is_reported_at_once(ledger: Ledger, tmp_path: Path) -> None:
    rows = [
        "{not json",
        "[1, 2]",
        {"event": "opened", "at": "2026-11-02T09:00:00Z"},
        line("bad id!", "opened", "2026-11-02T09:00:00Z"),
        line("INC-3", "opened", "yesterday"),
        line("INC-3", "opened", "2026-11-02T09:00:00Z", priority="P7"),
        *GOOD,
    ]
    expect_refused(
        ledger,
        tmp_path,
        rows,
        "6 bad line(s)",
        "line 1: not JSON",
        "line 2: not a JSON object",
        "line 3: missing ticket",
        "line 4: invalid ticket id",
        "line 5: cannot read the time 'yesterday'",
        "line 6: opened: unknown priority 'P7'",
    )


def test_export_round_trips_through_import(ledger: Ledger, ledger_url: str, tmp_path: Path) -> None:
    import_file(ledger, write(tmp_path, GOOD))
    out = io.StringIO()
    assert write_lines(export_lines(ledger), out) == len(GOOD)
    exported = [json.loads(x) for x in out.getvalue().splitlines()]
    assert exported[0]["at"] == "2026-11-02T08:14:00+00:00" and exported[0]["by"] == "importer"
    assert exported[1]["by"] == "li"
    other = open_ledger(f"sqlite:///{tmp_path / 'other.db'}", operator="desk2")
    try:
        result = import_file(other, write(tmp_path, exported, "exported.jsonl"))
        assert result.events == len(GOOD)
        again = io.StringIO()
        write_lines(export_lines(other), again)
        assert again.getvalue() == out.getvalue()
    finally:
        other.close()


def test_export_filters(ledger: Ledger, tmp_path: Path) -> None:
    import_file(ledger, write(tmp_path, GOOD))
    assert {r["ticket"] for r in export_lines(ledger, ticket="INC-2")} == {"INC-2"}
    since = datetime(2026, 11, 2, 9, 0, tzinfo=UTC).timestamp()
    events = [r["event"] for r in export_lines(ledger, since=since)]
    assert events == ["opened", "resolved", "confirmed", "closed", "survey"]


def test_errors_come_in_line_order_and_good_files_keep_their_order(
    ledger: Ledger, tmp_path: Path
) -> None:
    from toolkit.desk import ticketio

    rows = [*GOOD]
    for i in range(200):
        rows.append(line(f"CHG-{i}", "opened", "2026-11-04T09:00:00+01:00", category="network"))
    bad = [
        *rows[:50],
        line("INC-77", "resolved", "2026-11-04T09:00:00Z"),
        *rows[50:],
        line("CHG-3", "survey", "2026-11-05T09:00:00Z", score=9),
    ]
    checked = ticketio.check_file(write(tmp_path, bad), ledger)
    assert [e.split(":")[0] for e in checked.errors] == ["line 51", f"line {len(bad)}"]
    result = import_file(ledger, write(tmp_path, rows))
    assert result.events == len(rows) and ticket_records(ledger) == len(rows)
    assert [r.ticket for r in ledger.records()][-1] == "CHG-199"

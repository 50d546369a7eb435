"""toolkit.clock, the one time-format module: each format named for its reader, each read back."""

from __future__ import annotations

from datetime import UTC, datetime

from toolkit.clock import iso, iso_seconds, iso_utc, parse_iso

AT = datetime(2026, 11, 21, 9, 56, 39, 123456, tzinfo=UTC)


def test_each_format_is_its_readers_and_reads_back() -> None:
    assert iso(AT) == "2026-11-21T09:56:39.123456Z"  # the ledger's: sorts as text
    assert iso_seconds(AT.timestamp()) == "2026-11-21T09:56:39+00:00"  # reports, ticket JSON
    assert iso_seconds(None) is None
    assert iso_utc(AT.timestamp()) == "2026-11-21T09:56:39.123456+00:00"  # ticket events
    assert parse_iso(iso(AT)) == AT == parse_iso(iso_utc(AT.timestamp()))

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


def test_one_reading_of_a_duration() -> None:
    """`duration_of` reads '90m', '24h', '7d', '2w' for both the settings (`parse_duration`)
    and the command line's relative times (`parse_when`)."""
    from datetime import timedelta

    import pytest

    from toolkit.cli.log import parse_when
    from toolkit.clock import duration_of, parse_duration
    from toolkit.errors import ValidationError

    assert duration_of("90m") == timedelta(minutes=90) == parse_duration("90m", "x")
    assert duration_of(" 2 w ") == timedelta(weeks=2)
    assert duration_of("2026-11-21") is None and duration_of("7x") is None
    assert duration_of("99999999999d") is None  # past what a timedelta holds: not a duration
    assert parse_duration(30, "x") == timedelta(seconds=30)
    with pytest.raises(ValidationError, match="x: cannot read the duration '7x'"):
        parse_duration("7x", "x")
    now = AT
    assert parse_when("90m", UTC, now=now) == now - timedelta(minutes=90)
    assert parse_when(" 7d ", UTC, now=now) == now - timedelta(days=7)
    assert parse_when("2026-11-21", UTC, now=now) == datetime(2026, 11, 21, tzinfo=UTC)
    for bad in ("7x", "999999999d"):  # the second: further back than a date can be
        with pytest.raises(ValidationError, match="cannot read the time"):
            parse_when(bad, UTC, now=now)


def test_one_readable_local_format_for_people() -> None:
    """Reports show instants one way: weekday, day, month, year, time and the UTC offset of the
    zone (the machine's by default), e.g. 'Fri 4 Dec 2026 14:03 UTC+1'."""
    from zoneinfo import ZoneInfo

    from toolkit.clock import readable

    at = datetime(2026, 12, 4, 13, 3, 59, tzinfo=UTC)
    assert readable(at, ZoneInfo("Europe/Berlin")) == "Fri 4 Dec 2026 14:03 UTC+1"
    assert readable(at.timestamp(), ZoneInfo("Europe/Berlin")) == "Fri 4 Dec 2026 14:03 UTC+1"
    assert readable("2026-12-04T13:03:59.5Z", UTC) == "Fri 4 Dec 2026 13:03 UTC"
    assert readable(at, ZoneInfo("Asia/Kolkata")) == "Fri 4 Dec 2026 18:33 UTC+5:30"
    assert readable(at, ZoneInfo("America/Sao_Paulo")) == "Fri 4 Dec 2026 10:03 UTC-3"
    summer = datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    assert readable(summer, ZoneInfo("Europe/Berlin")) == "Wed 1 Jul 2026 12:00 UTC+2"
    assert readable(None) == "" and readable("") == ""

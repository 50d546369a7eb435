"""Maintenance windows: weekly wall-clock ranges in a time zone, one-off dates, blackouts, DST."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.fakes import hosts
from toolkit.errors import ConfigError, NotFound
from toolkit.inventory import make_host
from toolkit.run.maintenance import host_windows, load_windows, parse_window


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


BERLIN = {
    "timezone": "Europe/Berlin",
    "weekly": ["Sat 22:00-Mon 06:00", "Mon-Fri 01:00-03:00"],
    "dates": ["2026-12-23 20:00/2026-12-23 23:00"],
    "blackout": ["2026-12-24/2026-12-26"],
}


@pytest.mark.parametrize(
    ("when", "open_"),
    [
        ("2026-11-21T21:59+01:00", False),  # Saturday just before 22:00 Berlin
        ("2026-11-21T22:00+01:00", True),
        ("2026-11-22T12:00+01:00", True),  # Sunday
        ("2026-11-23T05:59+01:00", True),  # Monday before 06:00
        ("2026-11-23T06:00+01:00", False),
        ("2026-11-24T01:30+01:00", True),  # Tuesday 01:00-03:00
        ("2026-11-24T03:00+01:00", False),
        ("2026-11-24T00:30+00:00", True),  # the same instant written in UTC: 01:30 Berlin
        ("2026-12-23T21:00+01:00", True),  # one-off date on a Wednesday evening
        ("2026-12-26T12:00+01:00", False),  # a blackout Saturday… the weekend range is shut
        ("2026-12-27T00:00+01:00", True),  # …and opens again when the blackout ends
    ],
)
def test_weekly_one_off_and_blackout(when: str, open_: bool) -> None:
    window = parse_window("weekend", BERLIN)
    assert window.is_open(at(when)) is open_


def test_ranges_are_wall_clock_across_dst() -> None:
    window = parse_window("night", {"timezone": "Europe/Berlin", "weekly": ["Sun 01:00-05:00"]})
    # 2026-10-25: clocks go back at 03:00 CEST → 02:00 CET; the window lasts five real hours.
    assert window.is_open(at("2026-10-24T23:00+00:00"))  # 01:00 CEST
    assert window.is_open(at("2026-10-25T03:59+00:00"))  # 04:59 CET
    assert not window.is_open(at("2026-10-25T04:00+00:00"))  # 05:00 CET
    # 2026-03-29: clocks go forward at 02:00 CET → 03:00 CEST; the window lasts three real hours.
    assert window.is_open(at("2026-03-29T00:00+00:00"))  # 01:00 CET
    assert window.is_open(at("2026-03-29T02:59+00:00"))  # 04:59 CEST
    assert not window.is_open(at("2026-03-29T03:00+00:00"))  # 05:00 CEST
    nxt = window.next_open(at("2026-03-29T04:00+00:00"))
    assert nxt == at("2026-04-05T01:00+02:00")


def test_next_open_skips_blackouts() -> None:
    window = parse_window("weekend", BERLIN)
    assert window.next_open(at("2026-12-24T10:00+01:00")) == at("2026-12-27T00:00+01:00")
    assert "next opens Sun 2026-12-27 00:00 CET" in window.describe(at("2026-12-24T10:00+01:00"))


@pytest.mark.parametrize(
    ("weekly", "when", "open_"),
    [  # a reboot window's forms work here too: one syntax for every weekly window
        ("Sat,Sun 01:00-02:00", "2026-11-22T01:30+01:00", True),
        ("Sat,Sun 01:00-02:00", "2026-11-23T01:30+01:00", False),
        ("daily 02:00-04:00", "2026-11-25T03:00+01:00", True),
        ("Sun 23:00-24:00", "2026-11-22T23:59+01:00", True),
        ("Sun 23:00-24:00", "2026-11-23T00:00+01:00", False),
    ],
)
def test_weekly_ranges_have_the_reboot_windows_forms(weekly: str, when: str, open_: bool) -> None:
    window = parse_window("w", {"timezone": "Europe/Berlin", "weekly": [weekly]})
    assert window.is_open(at(when)) is open_
    assert window.next_open(at("2026-11-16T12:00+01:00")) is not None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"weekly": ["Funday 01:00-02:00"]}, "cannot read the weekly range"),
        ({"weekly": ["Sun 25:00-02:00"]}, "invalid time"),
        ({"weekly": ["Sun 01:00-02:00"], "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"dates": ["2026-13-01"]}, "cannot read the date range"),
        ({"dates": ["2026-12-02/2026-12-01"]}, "ends before it starts"),
        ({"blackout": ["2026-12-24"]}, "needs weekly ranges or dates"),
        ({"weekly": ["Sun 01:00-02:00"], "every": "day"}, "unknown key 'every'"),
    ],
)
def test_bad_window_definitions_are_refused_with_the_window_named(
    table: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_windows({"maintenance_windows": {"night": table}})
    assert "[maintenance_windows.night]" in err.value.message


def test_hosts_name_their_windows_and_unknown_ones_are_refused() -> None:
    windows = load_windows({"maintenance_windows": {"night": {"weekly": ["Sun 01:00-02:00"]}}})
    plain = hosts("ws-1")[0]
    assert host_windows(plain, windows) == ()
    attached = make_host(
        "srv-1", {"address": "127.0.0.1", "maintenance_window": ["night"]}, (), "test"
    )
    assert [w.name for w in host_windows(attached, windows)] == ["night"]
    typo = make_host("srv-2", {"address": "127.0.0.1", "maintenance_window": "nihgt"}, (), "t")
    with pytest.raises(NotFound, match="unknown maintenance window 'nihgt'") as err:
        host_windows(typo, windows)
    assert err.value.hint == "did you mean: night?"

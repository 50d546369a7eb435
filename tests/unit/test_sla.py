"""The SLA interval arithmetic: properties (hypothesis) and every edge case of KPI.md."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.desk.sla import (
    Calendar,
    default_policy,
    elapsed,
    load_policy,
    parse_duration,
    parse_hours,
    pause,
)
from toolkit.errors import ConfigError

BERLIN = ZoneInfo("Europe/Berlin")
NINE_TO_SIX = ((540, 1080),)
WEEKDAYS_ONLY = (NINE_TO_SIX,) * 5 + ((), ())
CAL = Calendar("Europe/Berlin", WEEKDAYS_ONLY, frozenset({date(2026, 12, 25)}))
SPLIT = Calendar("America/New_York", (((480, 720), (780, 1020)),) * 6 + ((),))
CALENDARS = [CAL, SPLIT, CAL.twenty_four_seven()]


def at(*parts: int, zone: ZoneInfo = BERLIN) -> float:
    return datetime(*parts, tzinfo=zone).timestamp()


# Instants from 2024 to 2028: they cross DST changes in both directions every year.
instants = st.floats(min_value=1_704_067_200.0, max_value=1_830_297_600.0)
spans = st.floats(min_value=0.0, max_value=40 * 86400.0)
calendars = st.sampled_from(CALENDARS)


def brute(cal: Calendar, start: float, end: float) -> float:
    """Business seconds minute by minute-window, without the day-total shortcut."""
    total = 0.0
    for ordinal in range(cal.local_day(start), cal.local_day(end) + 1):
        for s, e in cal.windows(ordinal):
            total += max(0.0, min(e, end) - max(s, start))
    return total


@given(calendars, instants, spans)
def test_business_time_never_exceeds_wall_time(cal: Calendar, start: float, span: float) -> None:
    assert 0.0 <= cal.business_seconds(start, start + span) <= span + 1e-6


@given(calendars, instants, spans, spans)
def test_pausing_never_increases_elapsed_time(
    cal: Calendar, start: float, span: float, pause_offset: float
) -> None:
    end = start + span
    clock = [(start, end)]
    paused = pause(clock, start + pause_offset / 2, start + pause_offset)
    assert elapsed(cal, paused, end) <= elapsed(cal, clock, end) + 1e-6


@given(calendars, instants, spans, spans, st.integers(min_value=0, max_value=4))
def test_pausing_a_running_clock_never_increases_it(
    cal: Calendar, start: float, span: float, gap: float, count: int
) -> None:
    until = start + span
    clock: list[tuple[float, float | None]] = [(start, None)]
    reference = elapsed(cal, clock, until)
    for i in range(count):
        lo = start + (i + 1) * gap / (count + 1)
        clock = pause(clock, lo, lo + gap / (2 * (count + 1)))
        assert elapsed(cal, clock, until) <= reference + 1e-6


def _gap_after(cal: Calendar, ordinal: int) -> tuple[float, float]:
    """The non-business stretch from the day's last window end to the next window start."""
    while not cal.windows(ordinal):
        ordinal -= 1
    end = cal.windows(ordinal)[-1][1]
    return end, cal.next_business(end + 1)


@given(
    st.sampled_from([CAL, SPLIT]),
    st.integers(min_value=0, max_value=1500),
    st.floats(min_value=0.0, max_value=1.0),
    st.floats(min_value=0.0, max_value=1.0),
    st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=6),
)
def test_a_ticket_moved_entirely_into_non_business_hours_yields_zero(
    cal: Calendar, day: int, offset: float, length: float, cuts: list[float]
) -> None:
    """Whatever its shape (pauses included), a clock inside a night, weekend or holiday is 0."""
    lo, hi = _gap_after(cal, date(2024, 1, 1).toordinal() + day)
    start = lo + offset * (hi - lo)
    end = start + length * (hi - start)
    points = sorted([start, end, *(start + c * (end - start) for c in cuts)])
    clock = [(points[i], points[i + 1]) for i in range(0, len(points) - 1, 2)]
    assert elapsed(cal, clock, end) == 0.0
    assert cal.business_seconds(start, end) == 0.0


@given(calendars, instants, spans, spans)
def test_business_time_is_additive(cal: Calendar, start: float, a: float, b: float) -> None:
    mid, end = start + a, start + a + b
    whole = cal.business_seconds(start, end)
    assert whole == pytest.approx(
        cal.business_seconds(start, mid) + cal.business_seconds(mid, end), abs=1e-3
    )


@given(calendars, instants, spans)
def test_day_totals_shortcut_matches_brute_force(cal: Calendar, start: float, span: float) -> None:
    if cal.always:
        return
    assert cal.business_seconds(start, start + span) == pytest.approx(
        brute(cal, start, start + span), abs=1e-3
    )


@settings(max_examples=200)
@given(calendars, instants, st.floats(min_value=0.0, max_value=30 * 9 * 3600.0))
def test_deadline_is_the_inverse_of_business_time(cal: Calendar, start: float, need: float) -> None:
    due = cal.deadline(start, need)
    assert due >= start
    assert cal.business_seconds(start, due) == pytest.approx(need, abs=1e-3)
    # and not a second later than necessary: the clock is running at the deadline
    if need > 0 and not cal.always:
        assert cal.business_seconds(start, due - 1) < need


@given(calendars, instants, spans, spans)
def test_business_time_is_monotonic(cal: Calendar, start: float, a: float, b: float) -> None:
    assert (
        cal.business_seconds(start, start + a) <= cal.business_seconds(start, start + a + b) + 1e-6
    )


@given(instants, spans)
def test_24x7_business_time_is_wall_time(start: float, span: float) -> None:
    assert CAL.twenty_four_seven().business_seconds(start, start + span) == pytest.approx(
        span, abs=1e-3
    )


# -- explicit edge cases from KPI.md -----------------------------------------------------------
def test_a_working_day_is_nine_hours() -> None:
    assert CAL.business_seconds(at(2026, 11, 23, 0, 0), at(2026, 11, 24, 0, 0)) == 9 * 3600


def test_opened_outside_hours_starts_at_the_next_business_minute() -> None:
    friday_evening = at(2026, 11, 20, 19, 30)
    assert CAL.next_business(friday_evening) == at(2026, 11, 23, 9, 0)
    # a 2-hour response target from Friday evening is due Monday 11:00
    assert CAL.deadline(friday_evening, 2 * 3600) == at(2026, 11, 23, 11, 0)
    assert CAL.business_seconds(friday_evening, at(2026, 11, 23, 9, 30)) == 30 * 60


def test_holiday_has_no_business_hours() -> None:
    christmas = (at(2026, 12, 25, 0, 0), at(2026, 12, 26, 0, 0))
    assert CAL.business_seconds(*christmas) == 0
    # Thursday 17:00 + 2 h: one hour Thursday, Friday is a holiday, the weekend, Monday 10:00
    assert CAL.deadline(at(2026, 12, 24, 17, 0), 2 * 3600) == at(2026, 12, 28, 10, 0)


def test_dst_spring_forward_night_changes_nothing_in_business_hours() -> None:
    # 2026-03-29 is the Sunday Europe moves clocks forward; Friday 17:00 → Monday 10:00
    start, end = at(2026, 3, 27, 17, 0), at(2026, 3, 30, 10, 0)
    assert CAL.business_seconds(start, end) == 2 * 3600
    assert end - start == (65 - 1) * 3600  # the wall clock lost an hour
    assert CAL.deadline(start, 2 * 3600) == end


def test_dst_fall_back_in_a_24x7_clock_counts_the_real_hour() -> None:
    always = CAL.twenty_four_seven()
    # 2026-10-25 02:00–03:00 happens twice in Berlin: midnight to midnight is 25 real hours
    assert always.business_seconds(at(2026, 10, 25, 0, 0), at(2026, 10, 26, 0, 0)) == 25 * 3600


def test_dst_with_business_hours_spanning_the_change() -> None:
    cal = Calendar("Europe/Berlin", (((0, 1440),),) * 7)
    # a 00:00–24:00 business day on the spring-forward Sunday has 23 real hours
    assert cal.day_seconds(date(2026, 3, 29).toordinal()) == 23 * 3600
    assert cal.day_seconds(date(2026, 10, 25).toordinal()) == 25 * 3600


def test_pause_removes_only_the_paused_time() -> None:
    start = at(2026, 11, 23, 9, 0)
    clock = pause([(start, None)], at(2026, 11, 23, 10, 0), at(2026, 11, 23, 12, 0))
    assert clock == [(start, at(2026, 11, 23, 10, 0)), (at(2026, 11, 23, 12, 0), None)]
    assert elapsed(CAL, clock, at(2026, 11, 23, 13, 0)) == 2 * 3600


def test_split_business_day_with_lunch_break() -> None:
    ny = ZoneInfo("America/New_York")
    assert SPLIT.business_seconds(
        at(2026, 6, 1, 11, 0, zone=ny), at(2026, 6, 1, 14, 0, zone=ny)
    ) == (2 * 3600)


def test_holidays_from_an_icalendar_file(tmp_path: Path) -> None:
    ics = tmp_path / "holidays.ics"
    ics.write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n"
        "BEGIN:VEVENT\r\nUID:1\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:Company day\r\n"
        "DTSTART;VALUE=DATE:20261116\r\nDTEND;VALUE=DATE:20261118\r\nEND:VEVENT\r\n"
        # a timed event ending at midnight: DTEND is exclusive, the 24th is no holiday
        "BEGIN:VEVENT\r\nUID:2\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:Closed early\r\n"
        "DTSTART:20261223T120000\r\nDTEND:20261224T000000\r\nEND:VEVENT\r\n"
        "END:VCALENDAR\r\n"
    )
    policy = load_policy(
        {"calendar": {"timezone": "UTC", "holidays_file": "holidays.ics"}}, tmp_path
    )
    assert {date(2026, 11, 16), date(2026, 11, 17), date(2026, 12, 23)} <= policy.calendar.holidays
    assert date(2026, 11, 18) not in policy.calendar.holidays
    assert date(2026, 12, 24) not in policy.calendar.holidays


def test_public_holidays_from_the_holidays_package() -> None:
    policy = load_policy({"calendar": {"timezone": "Europe/Berlin", "country": "DE"}})
    assert date(2026, 12, 25) in policy.calendar.holidays
    assert date(2026, 10, 3) in policy.calendar.holidays


def test_defaults_are_kpi_md() -> None:
    policy = default_policy()
    p1, p3, p4 = policy.priorities["P1"], policy.priorities["P3"], policy.priorities["P4"]
    assert (p1.response_minutes, p1.resolution_minutes, p1.always, p1.update_minutes) == (
        30,
        240,
        True,
        60,
    )
    assert (p3.response_minutes, p3.resolution_minutes) == (120, 2 * 540)
    assert p4.resolution_minutes == 5 * 540
    assert policy.calendar.hours[0] == NINE_TO_SIX and policy.calendar.hours[5] == ()
    assert policy.targets["csat_mean"] == 4.5


def test_configured_priorities_and_hours() -> None:
    policy = load_policy(
        {
            "calendar": {"timezone": "UTC", "hours": {"mon": ["08:00-12:00", "13:00-17:00"]}},
            "sla": {
                "priorities": {"P2": {"response": "15m", "resolution": "1bd", "always": False}}
            },
        }
    )
    assert policy.calendar.hours[0] == ((480, 720), (780, 1020))
    assert policy.calendar.hours[1] == ()
    assert policy.priorities["P2"].response_minutes == 15
    assert policy.priorities["P2"].resolution_minutes == 480


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"calendar": {"timezone": "Mars/Olympus"}}, "unknown time zone"),
        ({"calendar": {"hours": {"mon": "9-18"}}}, "cannot read"),
        ({"calendar": {"hours": {"mon": "18:00-09:00"}}}, "not a window"),
        ({"calendar": {"hours": {"funday": "09:00-18:00"}}}, "unknown weekday"),
        ({"calendar": {"hours": {}}}, "no business hours"),
        ({"calendar": {"holidays": ["25.12.2026"]}}, "not a date"),
        ({"sla": {"priorities": {"P9": {"response": "1h"}}}}, "needs response and resolution"),
        ({"sla": {"priorities": {"P1": {"response": "soon"}}}}, "cannot read the duration"),
        ({"sla": "fast"}, "must be a table"),
    ],
)
def test_bad_configuration_is_a_config_error(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_policy(config)


def test_durations_and_hours_parsing() -> None:
    assert parse_duration("90m", day_minutes=540, what="x") == 90
    assert parse_duration("2bd", day_minutes=540, what="x") == 1080
    assert parse_duration("1d", day_minutes=1440, what="x") == 1440  # a 24×7 clock
    # on a business clock a calendar day cannot be counted (it was 1,440 business minutes)
    with pytest.raises(ConfigError, match="counts calendar days") as info:
        parse_duration("2d", day_minutes=540, what="x")
    assert "2bd" in (info.value.hint or "")
    assert parse_duration(45, day_minutes=540, what="x") == 45
    with pytest.raises(ConfigError):
        parse_duration(0, day_minutes=540, what="x")
    with pytest.raises(ConfigError, match="overlap"):
        parse_hours(["09:00-13:00", "12:00-18:00"], "x")


def test_policy_fingerprint_changes_with_the_calendar() -> None:
    a = load_policy({"calendar": {"timezone": "UTC"}})
    b = load_policy({"calendar": {"timezone": "UTC", "holidays": ["2026-12-24"]}})
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == load_policy({"calendar": {"timezone": "UTC"}}).fingerprint


def test_the_sample_config_in_the_repository_loads() -> None:
    from toolkit.desk.service import policy_for
    from toolkit.workspace import Workspace

    policy = policy_for(Workspace.load(Path(__file__).resolve().parents[2]))
    assert policy.calendar.timezone == "Europe/Berlin"
    assert policy.priorities["P1"].always and policy.priorities["P4"].resolution_minutes == 5 * 540
    assert date(2026, 12, 24) in policy.calendar.holidays

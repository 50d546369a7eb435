"""Business calendars and SLA clocks: the interval arithmetic, written once.

Times are UTC epoch seconds (floats) throughout. A Calendar turns each local day into its business
windows as real UTC instants (so a DST change shortens or lengthens nothing that was not really
shorter or longer), and everything else is built on two operations over those windows:
`business_seconds(start, end)` and `deadline(start, seconds)`. A clock is a list of running
intervals; pausing removes time from them, never adds it.

Configuration (itops.toml), every key optional; the defaults are KPI.md's:

    [calendar]
    timezone = "Europe/Berlin"              # IANA zone; default: this machine's zone (else UTC)
    hours = { mon = "09:00-18:00", … }      # per weekday: "HH:MM-HH:MM", a list of them, or ""
    holidays = ["2026-12-25"]               # local dates without business hours
    holidays_file = "holidays.ics"          # iCalendar: every event's day(s) are holidays
    country = "DE"                          # public holidays from the `holidays` package
    subdivision = "BY"

    [sla]
    update_every = "4h"                     # status update due after this much business time
    recurrence_days = 30
    repeat_fix_threshold = 3                # `itops fix` warns at this many fixes in 30 days

    [sla.priorities.P1]
    response = "30m"                        # m, h, d (calendar days) or bd (business days)
    resolution = "4h"
    always = true                           # 24×7 clocks for this priority
    update_every = "1h"
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from toolkit.clock import WEEKDAYS
from toolkit.errors import ConfigError

DEFAULT_HOURS = "09:00-18:00"
_HOURS = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(m|min|h|d|bd)")

Interval = tuple[float, float | None]  # (start, end); end None: still running


@dataclass(frozen=True)
class Calendar:
    """Business hours in one time zone: per weekday windows (minutes after local midnight).

    `always` makes it a 24×7 calendar: business time is wall time."""

    timezone: str = "UTC"
    hours: tuple[tuple[tuple[int, int], ...], ...] = ((),) * 7
    holidays: frozenset[date] = frozenset()
    always: bool = False
    _cache: dict[int, tuple[tuple[float, float], ...]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )
    # running totals of whole days' business seconds: _sums[i] covers days _first .. _first+i-1
    _sums: list[float] = field(default_factory=list, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_zone", zone_named(self.timezone))
        if len(self.hours) != 7:
            raise ConfigError("business hours need exactly seven weekdays")
        if not self.always and not any(self.hours):
            raise ConfigError(
                "the business calendar has no business hours at all",
                hint='set [calendar] hours, e.g. mon = "09:00-18:00"',
            )

    @property
    def zone(self) -> tzinfo:
        zone: tzinfo = self.__dict__["_zone"]
        return zone

    def twenty_four_seven(self) -> Calendar:
        """The same zone with a clock that never stops (for 24×7 priorities)."""
        if self.always:
            return self
        sibling = self.__dict__.get("_always")
        if sibling is None:
            sibling = Calendar(self.timezone, self.hours, self.holidays, always=True)
            object.__setattr__(self, "_always", sibling)
        assert isinstance(sibling, Calendar)
        return sibling

    @property
    def day_minutes(self) -> int:
        """Length of a usual business day (the most common non-empty weekday), for `bd` units."""
        if self.always:
            return 1440
        lengths = [sum(e - s for s, e in day) for day in self.hours if day]
        return max(set(lengths), key=lengths.count)

    # -- the day's windows -------------------------------------------------------------------
    def local_day(self, t: float) -> int:
        """Proleptic ordinal of the local date at instant t."""
        return datetime.fromtimestamp(t, self.zone).toordinal()

    def windows(self, ordinal: int) -> tuple[tuple[float, float], ...]:
        """Business windows of a local day as UTC epoch intervals (empty on holidays)."""
        cached = self._cache.get(ordinal)
        if cached is not None:
            return cached
        day = date.fromordinal(ordinal)
        spans: tuple[tuple[float, float], ...] = ()
        if day not in self.holidays:
            spans = tuple(
                (self._instant(day, s), self._instant(day, e)) for s, e in self.hours[day.weekday()]
            )
        self._cache[ordinal] = spans
        return spans

    def _instant(self, day: date, minute: int) -> float:
        moment = datetime(day.year, day.month, day.day, tzinfo=self.zone) + timedelta(
            minutes=minute
        )
        # Adding a timedelta to an aware datetime is wall-clock arithmetic; rebuild it so a time
        # that falls in a DST gap or fold resolves by the zone's rules (PEP 495).
        wall = moment.replace(tzinfo=None)
        return datetime(*wall.timetuple()[:6], tzinfo=self.zone).timestamp()

    def day_seconds(self, ordinal: int) -> float:
        return sum(e - s for s, e in self.windows(ordinal))

    def days_seconds(self, first: int, stop: int) -> float:
        """Business seconds of the whole local days first .. stop-1 (prefix sums, O(1) once built)."""
        if stop <= first:
            return 0.0
        if stop - first < 8:
            return sum(self.day_seconds(o) for o in range(first, stop))
        sums = self._sums
        base = self.__dict__.get("_first")
        if base is None or first < base:
            # (re)start the table a year before the earliest day asked for
            base = first - 366
            end = stop if not sums else max(stop, self.__dict__["_first"] + len(sums) - 1)
            sums.clear()
            sums.append(0.0)
            object.__setattr__(self, "_first", base)
        else:
            end = stop
        while base + len(sums) - 1 < end:
            sums.append(sums[-1] + self.day_seconds(base + len(sums) - 1))
        return sums[stop - base] - sums[first - base]

    # -- the two operations ------------------------------------------------------------------
    def business_seconds(self, start: float, end: float) -> float:
        """Business time between two instants (0 if end <= start)."""
        if end <= start:
            return 0.0
        if self.always:
            return end - start
        first, last = self.local_day(start), self.local_day(end)
        total = 0.0
        for ordinal in (first, last) if last > first else (first,):
            for s, e in self.windows(ordinal):
                lo, hi = max(s, start), min(e, end)
                if hi > lo:
                    total += hi - lo
        return total + self.days_seconds(first + 1, last)

    def deadline(self, start: float, seconds: float) -> float:
        """The instant when `seconds` of business time have run from `start`.

        With 0 seconds: the next business instant at or after start (the clock's real start
        for a ticket opened outside business hours)."""
        if self.always:
            return start + seconds
        remaining = max(seconds, 0.0)
        ordinal = self.local_day(start) - 1  # a window of the previous local day may still be open
        for _ in range(3700):  # ten years without a single business minute is a config error
            for s, e in self.windows(ordinal):
                lo = max(s, start)
                if lo < e:
                    if remaining <= e - lo:
                        return lo + remaining
                    remaining -= e - lo
            ordinal += 1
        raise ConfigError("the business calendar has no business hours for ten years")

    def next_business(self, t: float) -> float:
        return self.deadline(t, 0.0)


# -- clocks ----------------------------------------------------------------------------------
def elapsed(calendar: Calendar, intervals: Iterable[Interval], until: float) -> float:
    """Business seconds a clock has run by `until`; a running interval runs to `until`."""
    total = 0.0
    for start, end in intervals:
        stop = until if end is None else min(end, until)
        total += calendar.business_seconds(start, stop)
    return total


def pause(intervals: Sequence[Interval], start: float, end: float) -> list[Interval]:
    """The clock's intervals with [start, end) removed (a pause never adds time)."""
    out: list[Interval] = []
    for s, e in intervals:
        if (e is not None and e <= start) or s >= end:
            out.append((s, e))
            continue
        if s < start:
            out.append((s, start))
        if e is None or e > end:
            out.append((end, e))
    return out


# -- policy ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PriorityPolicy:
    name: str
    response_minutes: float
    resolution_minutes: float
    always: bool = False
    update_minutes: float | None = None


DEFAULT_PRIORITIES: dict[str, dict[str, Any]] = {
    "P1": {"response": "30m", "resolution": "4h", "always": True, "update_every": "1h"},
    "P2": {"response": "1h", "resolution": "8h"},
    "P3": {"response": "2h", "resolution": "2bd"},
    "P4": {"response": "4h", "resolution": "5bd"},
}


@dataclass(frozen=True)
class Policy:
    """The SLA policy: the business calendar, the targets per priority, and KPI settings."""

    calendar: Calendar
    priorities: Mapping[str, PriorityPolicy]
    update_minutes: float = 240.0
    recurrence_days: int = 30
    repeat_fix_threshold: int = 3
    targets: Mapping[str, float] = field(default_factory=dict)
    category_targets: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    weights: Mapping[str, float] = field(default_factory=dict)
    availability_tasks: tuple[str, ...] = ("monitor.*", "network.ping")
    core_hosts: tuple[str, ...] = ()
    fingerprint: str = ""

    def priority(self, name: str | None) -> PriorityPolicy:
        found = self.priorities.get(name or "")
        return (
            found
            if found is not None
            else self.priorities.get("P3") or next(iter(self.priorities.values()))
        )

    def calendar_for(self, priority: str | None) -> Calendar:
        return (
            self.calendar.twenty_four_seven() if self.priority(priority).always else self.calendar
        )

    def weight(self, priority: str | None) -> float:
        return float(self.weights.get(priority or "", 1.0))


def parse_duration(value: Any, *, day_minutes: int, what: str) -> float:
    """`30m`, `4h`, `2d` (calendar days), `2bd` (business days) or a number of minutes."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: {value!r} is not a duration")
    if isinstance(value, int | float):
        minutes = float(value)
    else:
        m = _DURATION.fullmatch(str(value).strip())
        if not m:
            raise ConfigError(
                f"{what}: cannot read the duration {value!r}", hint="e.g. 30m, 4h, 2bd"
            )
        number, unit = float(m.group(1)), m.group(2)
        if unit == "d" and day_minutes != 1440:
            # a clock in business time cannot count calendar days: 2d would be 2,880 business
            # minutes, about five 9-hour business days
            raise ConfigError(
                f"{what}: {value!r} counts calendar days, but this clock runs in business hours",
                hint=f"use {m.group(1)}bd (business days), or always = true for a 24×7 clock",
            )
        minutes = number * {"m": 1, "min": 1, "h": 60, "d": 1440, "bd": day_minutes}[unit]
    if minutes <= 0:
        raise ConfigError(f"{what}: a duration must be positive")
    return minutes


def parse_hours(value: Any, what: str) -> tuple[tuple[int, int], ...]:
    items = [value] if isinstance(value, str) else list(value or [])
    out: list[tuple[int, int]] = []
    for item in items:
        if not str(item).strip():
            continue
        m = _HOURS.fullmatch(str(item).strip())
        if not m:
            raise ConfigError(f"{what}: cannot read {item!r}", hint='use "09:00-18:00"')
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if not (0 <= start < end <= 1440) or m1 > 59 or m2 > 59:
            raise ConfigError(f"{what}: {item!r} is not a window within one day")
        out.append((start, end))
    out.sort()
    for (_, e), (s, _) in itertools.pairwise(out):
        if s < e:
            raise ConfigError(f"{what}: business windows overlap")
    return tuple(out)


def zone_named(name: str) -> ZoneInfo:
    """An IANA time zone, or a ConfigError naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"unknown time zone {name!r}", hint="use an IANA name such as Europe/Berlin"
        ) from exc


def calendar_zone(config: Mapping[str, Any]) -> ZoneInfo:
    """The desk's time zone: itops.toml's [calendar] timezone, else this machine's zone.

    The zone SLA clocks run in, and the one the CLI reads a date or time without an offset in."""
    return zone_named(str(_table(config, "calendar").get("timezone") or system_timezone()))


def system_timezone() -> str:
    """This machine's IANA zone name (TZ, else /etc/localtime), else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name and "/" in name:
        return name
    try:
        target = os.path.realpath("/etc/localtime")
    except OSError:
        return "UTC"
    marker = "zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else "UTC"


def load_holidays_file(path: Path) -> set[date]:
    """Every day covered by a VEVENT of an iCalendar file."""
    from icalendar import Calendar as ICalendar

    try:
        ical = ICalendar.from_ical(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the holidays file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not an iCalendar file: {exc}") from exc
    days: set[date] = set()
    for event in ical.walk("VEVENT"):
        start = event.decoded("DTSTART")
        end = event.decoded("DTEND") if "DTEND" in event else None
        first = start.date() if isinstance(start, datetime) else start
        if end is None:
            days.add(first)
            continue
        if isinstance(end, datetime):  # DTEND is exclusive: an event ending at 00:00 ends
            last = (end - timedelta(microseconds=1)).date()  # the day before
        else:
            last = end - timedelta(days=1)
        day = first
        while day <= max(last, first):
            days.add(day)
            day += timedelta(days=1)
    return days


def load_policy(config: Mapping[str, Any], root: Path | None = None) -> Policy:
    """The policy from itops.toml's [calendar], [sla] and [kpi] tables (defaults: KPI.md)."""
    cal = _table(config, "calendar")
    sla = _table(config, "sla")
    kpi = _table(config, "kpi")
    hours_cfg = cal.get("hours")
    if hours_cfg is None:
        hours_cfg = {day: DEFAULT_HOURS for day in WEEKDAYS[:5]}
    if not isinstance(hours_cfg, Mapping):
        raise ConfigError("[calendar] hours must be a table of weekdays")
    unknown = set(hours_cfg) - set(WEEKDAYS)
    if unknown:
        raise ConfigError(
            f"[calendar] hours: unknown weekday {sorted(unknown)[0]!r}", hint="mon … sun"
        )
    hours = tuple(
        parse_hours(hours_cfg.get(day, ""), f"[calendar] hours.{day}") for day in WEEKDAYS
    )
    holidays: set[date] = set()
    for item in cal.get("holidays", []):
        try:
            holidays.add(item if isinstance(item, date) else date.fromisoformat(str(item)))
        except ValueError:
            raise ConfigError(f"[calendar] holidays: {item!r} is not a date (YYYY-MM-DD)") from None
    if cal.get("holidays_file"):
        path = Path(str(cal["holidays_file"]))
        holidays |= load_holidays_file(path if path.is_absolute() or root is None else root / path)
    if cal.get("country"):
        import holidays as holidays_lib

        years = range(int(cal.get("first_year", 2000)), int(cal.get("last_year", 2050)) + 1)
        try:
            country = holidays_lib.country_holidays(
                str(cal["country"]), subdiv=cal.get("subdivision"), years=years
            )
        except NotImplementedError as exc:
            raise ConfigError(f"[calendar] country: {exc}") from exc
        holidays |= set(country.keys())
    calendar = Calendar(calendar_zone(config).key, hours, frozenset(holidays))
    day = calendar.day_minutes
    update = parse_duration(
        sla.get("update_every", "4h"), day_minutes=day, what="[sla] update_every"
    )
    given = _table(sla, "priorities", "[sla] priorities")
    priorities: dict[str, PriorityPolicy] = {}
    for name in sorted(set(DEFAULT_PRIORITIES) | set(given)):
        spec = {
            **DEFAULT_PRIORITIES.get(name, {}),
            **_table(given, name, f"[sla.priorities.{name}]"),
        }
        where = f"[sla.priorities.{name}]"
        if "response" not in spec or "resolution" not in spec:
            raise ConfigError(f"{where} needs response and resolution")
        always = bool(spec.get("always", False))
        unit_day = 1440 if always else day
        priorities[name] = PriorityPolicy(
            name,
            parse_duration(spec["response"], day_minutes=unit_day, what=f"{where} response"),
            parse_duration(spec["resolution"], day_minutes=unit_day, what=f"{where} resolution"),
            always,
            parse_duration(spec["update_every"], day_minutes=unit_day, what=f"{where} update_every")
            if "update_every" in spec
            else None,
        )
    targets = {"csat_mean": 4.5, **{k: float(v) for k, v in _table(kpi, "targets").items()}}
    category_targets: dict[str, dict[str, float]] = {
        "hardware": {"resolution_sla_compliance": 0.95},
        "software": {"resolution_sla_compliance": 0.98},
        "network": {"resolution_sla_compliance": 0.96},
    }
    for cat, values in _table(kpi, "category_targets").items():
        category_targets[cat] = {**category_targets.get(cat, {}), **dict(values)}
    targets.setdefault("availability", 0.995)
    targets.setdefault("availability_core", 0.999)
    weights = {"P1": 4.0, "P2": 3.0, "P3": 2.0, "P4": 1.0, **dict(_table(kpi, "weights"))}
    policy = Policy(
        calendar=calendar,
        priorities=priorities,
        update_minutes=update,
        recurrence_days=int(sla.get("recurrence_days", 30)),
        repeat_fix_threshold=int(sla.get("repeat_fix_threshold", 3)),
        targets=targets,
        category_targets=category_targets,
        weights=weights,
        availability_tasks=tuple(kpi.get("availability_tasks", ("monitor.*", "network.ping"))),
        core_hosts=tuple(kpi.get("core_hosts", ())),
    )
    return _with_fingerprint(policy)


def _with_fingerprint(policy: Policy) -> Policy:
    """A hash of everything that changes stored clock values (the projection rebuilds on change)."""
    cal = policy.calendar
    basis = {
        "tz": cal.timezone,
        "hours": cal.hours,
        "holidays": sorted(d.isoformat() for d in cal.holidays),
        "priorities": {
            k: [p.response_minutes, p.resolution_minutes, p.always, p.update_minutes]
            for k, p in sorted(policy.priorities.items())
        },
        "update": policy.update_minutes,
        "availability_tasks": policy.availability_tasks,
    }
    digest = hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]
    return replace(policy, fingerprint=digest)


def _table(config: Mapping[str, Any], name: str, where: str | None = None) -> Mapping[str, Any]:
    value = config.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where or f'[{name}]'} must be a table")
    return value


def default_policy(timezone: str = "UTC") -> Policy:
    """KPI.md's defaults in a given zone (tests and a fresh install without [calendar])."""
    return load_policy({"calendar": {"timezone": timezone}})

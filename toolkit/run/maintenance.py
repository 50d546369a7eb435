"""Maintenance windows: when a disruptive remediation may run on a host.

Windows are named in itops.toml and attached to inventory groups or hosts with the
`maintenance_window` variable (one name or a list: open when any of them is open):

    [maintenance_windows.weekend]
    timezone = "Europe/Berlin"
    weekly = ["Sat 22:00-Mon 06:00", "Mon-Fri 01:00-03:00"]   # wall-clock ranges, local time
    dates = ["2026-12-27 20:00/2026-12-28 04:00"]             # one-off ranges (or whole days)
    blackout = ["2026-12-24/2026-12-26"]                     # never open on these local days

A weekly range is `DAY HH:MM-HH:MM` (ends next day when the end is not after the start),
`DAY-DAY HH:MM-HH:MM` (that range on each day), or `DAY HH:MM-DAY HH:MM` (one span). Ranges are
wall-clock times in the window's time zone, so a 01:00-05:00 window lasts five hours of real time
on the night clocks go back and three on the night they go forward. Blackouts win over everything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from toolkit.errors import ConfigError, NotFound
from toolkit.inventory import Host

WEEK = 7 * 1440
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOST_VAR = "maintenance_window"
_DAY = r"(mon|tue|wed|thu|fri|sat|sun)[a-z]*"
_TIME = r"(\d{1,2}):(\d{2})"
_WEEKLY = re.compile(
    rf"{_DAY}(?:\s*-\s*{_DAY})?\s+{_TIME}\s*-\s*(?:{_DAY}\s+)?{_TIME}", re.IGNORECASE
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def zone(name: str, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where}: unknown time zone {name!r}", hint="use an IANA name such as Europe/Berlin"
        ) from None


@dataclass(frozen=True)
class Window:
    """One named window: weekly wall-clock ranges, one-off ranges, blackout ranges."""

    name: str
    timezone: str
    weekly: tuple[tuple[int, int], ...] = ()  # (start minute of the week from Monday, length)
    dates: tuple[tuple[datetime, datetime], ...] = ()  # one-off [start, end) instants
    blackout: tuple[tuple[datetime, datetime], ...] = ()  # [start, end) instants

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def is_open(self, at: datetime) -> bool:
        if any(start <= at < end for start, end in self.blackout):
            return False
        if any(start <= at < end for start, end in self.dates):
            return True
        local = at.astimezone(self.tz)
        minute = local.weekday() * 1440 + local.hour * 60 + local.minute
        return any((minute - start) % WEEK < length for start, length in self.weekly)

    def next_open(self, at: datetime, *, horizon_days: int = 400) -> datetime | None:
        """The first instant after `at` at which the window is open (None within the horizon)."""
        tz = self.tz
        candidates = [s for s, _ in self.dates] + [e for _, e in self.blackout]
        first = at.astimezone(tz).date()
        for offset in range(horizon_days):
            day = first + timedelta(days=offset)
            for start, _ in self.weekly:
                if start // 1440 == day.weekday():
                    minute = start % 1440
                    local = datetime.combine(day, time(minute // 60, minute % 60), tz)
                    candidates.append(local.astimezone(UTC))
        for candidate in sorted(c for c in candidates if c > at):
            if self.is_open(candidate):
                return candidate
        return None

    def describe(self, at: datetime) -> str:
        upcoming = self.next_open(at)
        when = (
            upcoming.astimezone(self.tz).strftime("%a %Y-%m-%d %H:%M %Z")
            if upcoming
            else "not within a year"
        )
        return f"{self.name} ({self.timezone}) next opens {when}"


def _weekly(text: str, where: str) -> list[tuple[int, int]]:
    m = _WEEKLY.fullmatch(text.strip())
    if not m:
        raise ConfigError(
            f"{where}: cannot read the weekly range {text!r}",
            hint="e.g. 'Sun 01:00-05:00', 'Mon-Fri 22:00-02:00' or 'Sat 22:00-Mon 06:00'",
        )
    d1, d2, h1, m1, d3, h2, m2 = m.groups()
    start_t, end_t = _minutes(h1, m1, text, where), _minutes(h2, m2, text, where)
    first = DAYS.index(d1[:3].lower())
    if d3 is not None:
        if d2 is not None:
            raise ConfigError(f"{where}: {text!r} mixes a day range with an end day")
        start = first * 1440 + start_t
        end = DAYS.index(d3[:3].lower()) * 1440 + end_t
        length = (end - start) % WEEK or WEEK
        return [(start, length)]
    last = DAYS.index(d2[:3].lower()) if d2 is not None else first
    length = (end_t - start_t) % 1440 or 1440
    days = [(first + i) % 7 for i in range((last - first) % 7 + 1)]
    return [(d * 1440 + start_t, length) for d in days]


def _minutes(hours: str, minutes: str, text: str, where: str) -> int:
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise ConfigError(f"{where}: invalid time in {text!r}")
    return h * 60 + m


def _span(text: str, tz: ZoneInfo, where: str) -> tuple[datetime, datetime]:
    """'2026-12-24', '2026-12-24/2026-12-26' (whole local days, inclusive) or
    '2026-12-27 20:00/2026-12-28 04:00' (local times) → [start, end) instants."""
    left, _, right = (part.strip() for part in text.partition("/"))
    try:
        start = _local(left, tz, end=False)
        end = _local(right or left, tz, end=True)
    except ValueError:
        raise ConfigError(
            f"{where}: cannot read the date range {text!r}",
            hint="use 2026-12-24, 2026-12-24/2026-12-26 or 2026-12-27 20:00/2026-12-28 04:00",
        ) from None
    if end <= start:
        raise ConfigError(f"{where}: {text!r} ends before it starts")
    return start, end


def _local(text: str, tz: ZoneInfo, *, end: bool) -> datetime:
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = date.fromisoformat(text) + timedelta(days=1 if end else 0)
        return datetime.combine(day, time(), tz).astimezone(UTC)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(UTC)


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{where} must be a list of strings")


def parse_window(name: str, table: Mapping[str, Any], default_tz: str = "UTC") -> Window:
    where = f"[maintenance_windows.{name}]"
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: invalid window name")
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = set(table) - {"timezone", "weekly", "dates", "blackout", "description"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    tz_name = str(table.get("timezone", default_tz))
    tz = zone(tz_name, where)
    weekly = [
        r for t in _strings(table.get("weekly"), f"{where} weekly") for r in _weekly(t, where)
    ]
    dates = [_span(t, tz, where) for t in _strings(table.get("dates"), f"{where} dates")]
    blackout = [_span(t, tz, where) for t in _strings(table.get("blackout"), f"{where} blackout")]
    if not weekly and not dates:
        raise ConfigError(f"{where}: a window needs weekly ranges or dates")
    return Window(name, tz_name, tuple(weekly), tuple(dates), tuple(blackout))


def load_windows(config: Mapping[str, Any]) -> dict[str, Window]:
    """Every window in itops.toml's [maintenance_windows] tables, validated."""
    tables = config.get("maintenance_windows", {})
    if not isinstance(tables, Mapping):
        raise ConfigError("[maintenance_windows] must be a table of windows")
    default_tz = str(config.get("scheduler", {}).get("timezone", "UTC"))
    return {name: parse_window(name, table, default_tz) for name, table in tables.items()}


def get_window(windows: Mapping[str, Window], name: str) -> Window:
    try:
        return windows[name]
    except KeyError:
        raise NotFound.named("maintenance window", name, windows) from None


def host_windows(host: Host, windows: Mapping[str, Window]) -> tuple[Window, ...]:
    """The windows a host's `maintenance_window` variable names (empty: none attached)."""
    value = host.var(HOST_VAR)
    names: Sequence[str]
    if value is None:
        return ()
    if isinstance(value, str):
        names = [value]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        names = value
    else:
        raise ConfigError(f"{host.name}: {HOST_VAR} must be a window name or a list of names")
    found = []
    for name in names:
        if name not in windows:
            raise NotFound.named(
                "maintenance window",
                name,
                windows,
                f"(host {host.name}, variable {HOST_VAR}; define it in itops.toml)",
            )
        found.append(windows[name])
    return tuple(found)


def check_hosts(hosts: Iterable[Host], windows: Mapping[str, Window]) -> None:
    """Every window the hosts name exists (raises NotFound for the first that does not)."""
    for host in hosts:
        host_windows(host, windows)

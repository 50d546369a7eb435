"""Maintenance windows: when a disruptive remediation may run on a host.

Windows are named in itops.toml and attached to inventory groups or hosts with the
`maintenance_window` variable (one name or a list: open when any of them is open):

    [maintenance_windows.weekend]
    timezone = "Europe/Berlin"
    weekly = ["Sat 22:00-Mon 06:00", "Mon-Fri 01:00-03:00"]   # wall-clock ranges, local time
    dates = ["2026-12-27 20:00/2026-12-28 04:00"]             # one-off ranges (or whole days)
    blackout = ["2026-12-24/2026-12-26"]                     # never open on these local days

A weekly range has the one syntax of every weekly window (`toolkit.clock.WeeklyWindow`, the
same as a reboot window's): `DAYS HH:MM-HH:MM` where DAYS is a day, a range (`Mon-Fri`), a list
(`Sat,Sun`) or `daily` — it ends next day when the end is not after the start — or
`DAY HH:MM-DAY HH:MM` (one span). Ranges are wall-clock times in the window's time zone, so a
01:00-05:00 window lasts five hours of real time on the night clocks go back and three on the
night they go forward. Blackouts win over everything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from toolkit.clock import WeeklyWindow
from toolkit.errors import ConfigError, NotFound, ValidationError
from toolkit.inventory import Host

HOST_VAR = "maintenance_window"
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
    weekly: tuple[WeeklyWindow, ...] = ()
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
        return any(weekly.is_open_at(local) for weekly in self.weekly)

    def next_open(self, at: datetime, *, horizon_days: int = 400) -> datetime | None:
        """The first instant after `at` at which the window is open (None within the horizon)."""
        tz = self.tz
        candidates = [s for s, _ in self.dates] + [e for _, e in self.blackout]
        first = at.astimezone(tz).date()
        for offset in range(horizon_days):
            day = first + timedelta(days=offset)
            for start, _ in (r for weekly in self.weekly for r in weekly.ranges):
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


def _weekly(text: str, where: str) -> WeeklyWindow:
    try:
        return WeeklyWindow.parse(text, "weekly range")
    except ValidationError as exc:
        raise ConfigError(f"{where}: {exc.message}", hint=exc.hint) from None


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
    weekly = [_weekly(t, where) for t in _strings(table.get("weekly"), f"{where} weekly")]
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

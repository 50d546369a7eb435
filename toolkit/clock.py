"""Time as a dependency (windows, approvals and the scheduler ask a Clock, so tests control it),
and time's formats, each written once: the ledger's instants, weekday names, weekly windows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol, overload

from toolkit.errors import ValidationError


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


def iso(at: datetime) -> str:
    """An instant as the ledger writes times: 2026-11-21T09:56:39.123456Z (sorts as text)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@overload
def iso_seconds(t: float) -> str: ...
@overload
def iso_seconds(t: float | None) -> str | None: ...
def iso_seconds(t: float | None) -> str | None:
    """Epoch seconds as reports and ticket JSON print times: 2026-11-21T09:00:00+00:00 (UTC, to
    the second). Not the ledger's format (`iso`): these are read by people and spreadsheets."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def iso_utc(t: float) -> str:
    """Epoch seconds as ticket events and ticket exports carry them: 2026-11-21T09:00:00.5+00:00
    style (`datetime.isoformat`, full precision, so an export imports back to the same instant)."""
    return datetime.fromtimestamp(t, UTC).isoformat()


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def readable(at: datetime | float | str | None, zone: tzinfo | None = None) -> str:
    """An instant for people, the reports' one format: 'Fri 4 Dec 2026 14:03 UTC+1' — in
    `zone` (default: this machine's local zone), to the minute, with the offset that held
    then (English names whatever the locale). '' for None or ''."""
    if at is None or at == "":
        return ""
    moment = _instant(at)
    local = moment.astimezone(zone) if zone is not None else moment.astimezone()
    offset = int((local.utcoffset() or timedelta()).total_seconds() // 60)
    sign, offset = ("+" if offset >= 0 else "-"), abs(offset)
    shift = "" if offset == 0 else f"{sign}{offset // 60}"
    if offset % 60:
        shift += f":{offset % 60:02d}"
    return (
        f"{_DAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]} {local.year} "
        f"{local.hour:02d}:{local.minute:02d} UTC{shift}"
    )


def readable_day(
    at: datetime | float | str, zone: tzinfo | None = None, *, year: bool = False
) -> str:
    """The day of an instant in `readable`'s words: '2 Nov' (a week on a chart's axis), or
    '2 Nov 2026' with the year."""
    local = _instant(at).astimezone(zone) if zone is not None else _instant(at).astimezone()
    return f"{local.day} {_MONTHS[local.month - 1]}" + (f" {local.year}" if year else "")


def _instant(at: datetime | float | str) -> datetime:
    if isinstance(at, str):
        return parse_iso(at)
    if isinstance(at, int | float):
        return datetime.fromtimestamp(at, UTC)
    return at


def machine_readable(at: datetime | float | str | None) -> str:
    """The same instant for a `<time datetime=…>` attribute: 2026-12-04T13:03:59Z (UTC)."""
    if at is None or at == "":
        return ""
    moment = _instant(at)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- weekly windows

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
WEEK = 7 * 1440  # minutes
_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*"
_TIME = r"\d{1,2}:\d{2}"
_WINDOW = re.compile(
    rf"(?P<days>daily|{_DAY}(?:\s*-\s*{_DAY})?(?:\s*,\s*{_DAY}(?:\s*-\s*{_DAY})?)*)"
    rf"\s+(?P<start>{_TIME})\s*-\s*(?:(?P<end_day>{_DAY})\s+)?(?P<end>{_TIME})",
    re.IGNORECASE,
)
WINDOW_SYNTAX = (
    "DAYS HH:MM-HH:MM or DAY HH:MM-DAY HH:MM; DAYS is a day (Mon … Sun), a range (Mon-Fri), "
    "a list (Sat,Sun) or daily, e.g. 'Sat 01:00-05:00', 'Mon-Fri 22:00-06:00', "
    "'Sat 22:00-Mon 06:00'"
)


@dataclass(frozen=True)
class WeeklyWindow:
    """A weekly wall-clock window — the one syntax of maintenance windows and reboot windows:

    `DAYS HH:MM-HH:MM`: that range on each of DAYS (a day, a range such as `Mon-Fri` or
    `Fri-Mon`, a list such as `Sat,Sun`, or `daily`); a range whose end is not after its start
    runs past midnight into the next day (`Mon-Fri 22:00-06:00`: five nights; `00:00-00:00`:
    the whole day). `DAY HH:MM-DAY HH:MM`: one span (`Sat 22:00-Mon 06:00`). Days are English
    names or their first three letters, any case; times 00:00 … 24:00, in the local time of
    whoever asks (the host's clock, or the maintenance window's time zone)."""

    text: str
    ranges: tuple[tuple[int, int], ...]  # (start minute of the week from Monday 00:00, length)

    @classmethod
    def parse(cls, text: str, what: str = "weekly window") -> WeeklyWindow:
        """Read one window, or refuse it saying which part it could not read."""
        m = _WINDOW.fullmatch(text.strip())
        if not m:
            raise ValidationError(f"cannot read the {what} {text!r}", hint=WINDOW_SYNTAX)
        start, end = _minute(m["start"], text, what), _minute(m["end"], text, what)
        items = [i.strip() for i in m["days"].split(",")]
        if m["end_day"] is not None:
            if len(items) != 1 or "-" in items[0]:
                raise ValidationError(
                    f"the {what} {text!r} mixes a day range with an end day", hint=WINDOW_SYNTAX
                )
            first = _day(items[0]) * 1440 + start
            length = (_day(m["end_day"]) * 1440 + end - first) % WEEK or WEEK
            return cls(text, ((first % WEEK, length),))
        days: list[int] = []
        for item in items:
            if item.lower() == "daily":
                days += range(7)
                continue
            a, _, b = (part.strip() for part in item.partition("-"))
            first, last = _day(a), _day(b or a)
            days += [(first + i) % 7 for i in range((last - first) % 7 + 1)]
        length = (end - start) % 1440 or 1440
        return cls(text, tuple(((d * 1440 + start) % WEEK, length) for d in dict.fromkeys(days)))

    def contains(self, weekday: int, minute: int) -> bool:
        """Open at ISO `weekday` (1 = Monday … 7 = Sunday, as `date +%u`), `minute` after midnight."""
        at = (weekday - 1) * 1440 + minute
        return any((at - start) % WEEK < length for start, length in self.ranges)

    def is_open_at(self, local: datetime) -> bool:
        """Open at this local wall-clock time."""
        return self.contains(local.isoweekday(), local.hour * 60 + local.minute)


def _day(name: str) -> int:
    return WEEKDAYS.index(name[:3].lower())


def _minute(text: str, window: str, what: str) -> int:
    hours, _, minutes = text.partition(":")
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise ValidationError(f"invalid time {text!r} in the {what} {window!r} (00:00 … 24:00)")
    return h * 60 + m


_DURATION = re.compile(r"\s*(\d+)\s*([smhdw])\s*")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def duration_of(text: str) -> timedelta | None:
    """'90m', '24h', '7d', '2w' (s, m, h, d, w) as a timedelta; None when the text is not one
    (or is longer than a timedelta holds). The one reading of a duration: itops.toml's
    (`parse_duration`) and the command line's relative times (`cli.log.parse_when`)."""
    m = _DURATION.fullmatch(text)
    if m is None:
        return None
    try:
        return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    except OverflowError:
        return None


def parse_duration(text: str | int | float, where: str) -> timedelta:
    """'90m', '24h', '7d' or a number of seconds (approval and request TTLs, scheduler grace
    and lease: checked when itops.toml loads, so it lives here, not with approvals)."""
    if isinstance(text, int | float):
        return timedelta(seconds=float(text))
    found = duration_of(str(text))
    if found is None:
        raise ValidationError(
            f"{where}: cannot read the duration {text!r}", hint="e.g. 30m, 24h, 7d"
        )
    return found

"""A controllable clock for tests of windows, approvals and the scheduler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    def __init__(self, start: datetime | str) -> None:
        if isinstance(start, str):
            start = datetime.fromisoformat(start)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.at = start.astimezone(UTC)

    def now(self) -> datetime:
        return self.at

    def set(self, at: datetime | str) -> None:
        self.at = FakeClock(at).at

    def advance(self, **delta: float) -> datetime:
        self.at += timedelta(**delta)
        return self.at

"""The one source of time. Tests inject FakeClock and advance it instead of sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

__all__ = ["Clock", "FakeClock", "ScaledClock", "SystemClock", "parse_at"]


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall time."""
        ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """Wall and monotonic time that move only when told to."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def step_wall(self, seconds: float) -> None:
        """A wall-clock step (NTP sync, RTC-less boot) that monotonic time does not see."""
        self._now += timedelta(seconds=seconds)


class ScaledClock:
    """Time that runs `speed` times faster than real time from `start`: the demo's fast-forwarded day."""

    def __init__(self, *, start: datetime, speed: float) -> None:
        if start.tzinfo is None:
            raise ValueError("ScaledClock needs an aware datetime")
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._start = start.astimezone(UTC)
        self._speed = speed
        self._m0 = time.monotonic()

    @property
    def speed(self) -> float:
        """Clock seconds per real second (poll loops sleep in real seconds)."""
        return self._speed

    def now(self) -> datetime:
        return self._start + timedelta(seconds=(time.monotonic() - self._m0) * self._speed)

    def monotonic(self) -> float:
        return (time.monotonic() - self._m0) * self._speed


def parse_at(text: str | None, tz: str) -> datetime:
    """An ISO time from the command line (naive: site time ``tz``); None or empty: now."""
    if not text:
        return datetime.now(ZoneInfo(tz))
    at = datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=ZoneInfo(tz))

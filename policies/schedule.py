"""Pure schedule arithmetic: working periods, after-hours stretches, sweep instants, sun times.

All from (local time, calendar, configuration): nothing reads a clock. Local datetimes are built with
the site's tzinfo and compared as aware datetimes, so DST sites behave too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

from astral import Observer
from astral.sun import sunrise, sunset

from policies.calendar import Calendar
from policies.model import LightingGroup, TimeRange

__all__ = ["HORIZON_DAYS", "ScheduleState", "last_sweep", "schedule_state", "sun_times"]

# How far back an after-hours stretch is searched for the last working period (longest Chinese
# holiday runs are ~9 days; beyond this the stretch is taken to start at the horizon).
HORIZON_DAYS = 31


@dataclass(frozen=True, slots=True)
class ScheduleState:
    in_period: TimeRange | None  # the working period now is in, or None when after hours
    stretch_start: datetime | None  # when the current after-hours stretch began (None inside a period)

    def describe(self) -> str:
        if self.in_period is not None:
            return f"inside working period {self.in_period}"
        assert self.stretch_start is not None
        return f"after hours since {self.stretch_start:%Y-%m-%d %H:%M}"


def _at(d: date, minutes: int, tz: tzinfo) -> datetime:
    return datetime.combine(d, time(minutes // 60, minutes % 60), tzinfo=tz)


def _minutes(t: time) -> int:
    return t.hour * 60 + t.minute


def schedule_state(local: datetime, periods: Sequence[TimeRange], calendar: Calendar) -> ScheduleState:
    """Where `local` (aware, site time) falls: in a working-day period, or in which after-hours stretch."""
    tz = local.tzinfo
    assert tz is not None
    today = local.date()
    now_t = local.time().replace(tzinfo=None)
    if periods and calendar.is_working_day(today):
        for p in periods:
            if p.contains(now_t):
                return ScheduleState(in_period=p, stretch_start=None)
        ended = [p.end for p in periods if p.end <= now_t]
        if ended:
            return ScheduleState(None, datetime.combine(today, max(ended), tzinfo=tz))
    if periods:
        for back in range(1, HORIZON_DAYS + 1):
            d = today - timedelta(days=back)
            if calendar.is_working_day(d):
                return ScheduleState(None, datetime.combine(d, max(p.end for p in periods), tzinfo=tz))
    return ScheduleState(None, datetime.combine(today - timedelta(days=HORIZON_DAYS), time(0, 0), tzinfo=tz))


def _sweep_minutes(d: date, group: LightingGroup, calendar: Calendar) -> list[int]:
    """Minutes of day `d` when `group` sweeps (fixed sweeps, then every N minutes until the day starts)."""
    fixed = {_minutes(s) for s in group.sweeps}
    out = set(fixed)
    every = group.sweep_every_min
    if every:
        ends = [_minutes(p.end) for p in group.on_periods]
        starts = [_minutes(p.start) for p in group.on_periods]
        anchor = max(fixed | set(ends)) if (fixed or ends) else 0
        chain = {(anchor + k * every) % 1440 for k in range(1440 // every)}
        if group.on_periods and calendar.is_working_day(d):
            first = min(starts)
            chain = {m for m in chain if m > anchor or m < first}
        out |= chain
    return sorted(out)


def last_sweep(local: datetime, group: LightingGroup, calendar: Calendar, since: datetime) -> datetime | None:
    """The latest sweep instant in [since, local], or None if no sweep has happened in that stretch."""
    tz = local.tzinfo
    assert tz is not None
    d = local.date()
    first_day = since.astimezone(tz).date()
    while d >= first_day:
        best: datetime | None = None
        for m in _sweep_minutes(d, group, calendar):
            inst = _at(d, m, tz)
            if since <= inst <= local and (best is None or inst > best):
                best = inst
        if best is not None:
            return best
        d -= timedelta(days=1)
    return None


def sun_times(d: date, latitude: float, longitude: float, tz: tzinfo) -> tuple[datetime, datetime] | str:
    """(sunrise, sunset) on local day `d`, or the reason they do not exist (polar day/night)."""
    obs = Observer(latitude=latitude, longitude=longitude)
    try:
        return sunrise(obs, date=d, tzinfo=tz), sunset(obs, date=d, tzinfo=tz)
    except ValueError as exc:
        return f"no sunrise/sunset on {d.isoformat()} at {latitude:.2f},{longitude:.2f}: {exc}"

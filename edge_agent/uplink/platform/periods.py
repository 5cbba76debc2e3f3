"""Periods of the platform report: aligned in site time, frozen from the ledger. Pure functions."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from edge_agent.config.settings import PlatformMeter
from edge_agent.store.ledger import Ledger
from edge_agent.store.platform import PeriodValue

__all__ = [
    "ERROR_NO_DATA",
    "ERROR_OK",
    "EnergySource",
    "due_periods",
    "ledger_source",
    "period_bounds",
    "period_values",
]

ERROR_OK = "192"  # the protocol's "no error" in a function's `error` attribute
ERROR_NO_DATA = "no_data"  # the ledger has no slot of this meter in the period (meter silent)

# (start, end) -> point id -> (energy in the ledger's unit, 15-minute slots with a figure)
EnergySource = Callable[[datetime, datetime], Mapping[str, tuple[float, int]]]


def period_bounds(t: datetime, period_s: int, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The period holding ``t``: periods are counted from local midnight (15 minutes: the quarter hours
    of site time), the last one of a day cut at the next midnight. Returned in UTC."""
    local = t.astimezone(tz)
    midnight = datetime(local.year, local.month, local.day, tzinfo=tz)
    next_midnight = datetime.combine(midnight.date() + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    since = (local - midnight).total_seconds()
    k = math.floor(since / period_s)
    start = midnight + timedelta(seconds=k * period_s)
    end = min(start + timedelta(seconds=period_s), next_midnight)
    return start.astimezone(UTC), end.astimezone(UTC)


def due_periods(
    closed_until: datetime | None, now: datetime, *, period_s: int, tz: ZoneInfo, close_delay_s: float
) -> list[tuple[datetime, datetime]]:
    """Periods to close now, oldest first: from where closing stopped (or, the first time, the period in
    progress) to the last one whose end is ``close_delay_s`` behind ``now``. A start that is not on a
    boundary (the server changed the period) gives one shorter period up to the next boundary."""
    start = closed_until if closed_until is not None else period_bounds(now, period_s, tz)[0]
    out: list[tuple[datetime, datetime]] = []
    while True:
        end = period_bounds(start, period_s, tz)[1]
        if end + timedelta(seconds=close_delay_s) > now:
            return out
        out.append((start, end))
        start = end


def period_values(
    meters: Sequence[PlatformMeter], codes: Mapping[str, str], energy: Mapping[str, tuple[float, int]]
) -> tuple[PeriodValue, ...]:
    """One period's figures: each configured meter/function with its item code and the ledger's energy."""
    out = []
    for m in meters:
        value, slots = energy.get(m.point, (0.0, 0))
        coding = m.coding or codes.get(m.point, "")
        error = ERROR_OK if slots > 0 else ERROR_NO_DATA
        out.append(PeriodValue(m.meter_id, m.function_id, coding, round(value, 6), error))
    return tuple(out)


def ledger_source(ledger: Ledger) -> EnergySource:
    """The ledger's booked energy (measured + estimated + kept outliers) and slot count per meter."""

    def energy(start: datetime, end: datetime) -> dict[str, tuple[float, int]]:
        return {pid: (t.total, t.slots) for pid, t in ledger.totals(start, end).items()}

    return energy

"""Per-point plausibility checks. Flags travel with the reading; the value is never altered.

Rules (each adds a flag, several may apply to one reading):

- ``out_of_range``: the value is below the point's ``min`` or above its ``max``.
- Cumulative counters (``cumulative: true``) are compared with the last accepted value of the point:
  - ``rollover``: the counter has ``rollover`` set, went down, and the wrapped increase
    ``rollover - last + new`` is at most ``rollover_fraction`` (10 %) of the counter's range. The ledger
    adds ``rollover - last + new``.
  - ``counter_reset``: it went down to near zero (``new <= reset_fraction * last``, 5 %): a meter reset
    or replacement. The new value becomes the baseline.
  - ``counter_backwards``: any other decrease. The old baseline is kept (a glitch should not move it).
  - ``spike``: the increase per second is more than ``spike_factor`` (100x) the meter's peak rate: the
    largest of the last ``spike_window`` (8) accepted intervals and of its own daily maxima over the last
    ``peak_days`` (31) days, once at least ``spike_min_samples`` (3) intervals are known and that peak is
    above zero. Rates, not raw deltas, so a missed poll that doubles the interval does not look like a
    spike; the daily maxima, so an air conditioner starting in the morning after a night (or a weekend)
    on standby is not one either. A suspect followed by a reading whose rate since the suspect is also
    beyond the old regime is a real change of load, not a step: that reading is accepted and flagged
    ``load_change`` (the suspects before it were a start-up, not outliers).
  A ``spike`` or ``counter_backwards`` reading does not become the baseline; after
  ``rebaseline_after`` (3) such readings in a row the latest one does (a real step change is accepted)
  and carries ``rebaseline`` as well, so the ledger excludes the step instead of booking it as energy.
- ``not_finite``: NaN or infinity; no other check runs.
- ``unknown_point``: the point id is not configured; no other check runs.

Bad readings and non-numeric values (bool, str, None) pass through with no flag and leave state alone.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from drivers.base import PointBase, Quality, Reading

__all__ = ["FLAGS", "ValidatedReading", "Validator"]

_CHECKED = object()  # validate_many: the point has checks to run

FLAGS: frozenset[str] = frozenset(
    {
        "out_of_range",
        "counter_backwards",
        "rollover",
        "counter_reset",
        "spike",
        "not_finite",
        "unknown_point",
        "rebaseline",
        "load_change",
    }
)


class ValidatedReading(NamedTuple):
    """A NamedTuple like Reading: every polled reading makes one (issue 18: 3-4x cheaper than a frozen
    dataclass)."""

    reading: Reading
    flags: tuple[str, ...] = ()
    unit: str | None = None


@dataclass(slots=True)
class _CounterState:
    last: float
    last_ts: datetime
    rates: deque[float] = field(default_factory=deque)
    suspects: int = 0  # consecutive spike/backwards readings since the last accepted one
    day_peaks: dict[int, float] = field(default_factory=dict)  # day number (UTC) -> largest rate
    suspect_at: tuple[float, datetime] | None = None  # the last spike reading (value, time)


class Validator:
    """Holds the last accepted value of each cumulative point; not thread-safe (one poll loop calls it)."""

    def __init__(
        self,
        *,
        points: Iterable[PointBase],
        spike_factor: float = 100.0,
        spike_window: int = 8,
        spike_min_samples: int = 3,
        reset_fraction: float = 0.05,
        rollover_fraction: float = 0.10,
        rebaseline_after: int = 3,
        peak_days: int = 31,
    ) -> None:
        self._points: dict[str, PointBase] = {p.id: p for p in points}
        self.spike_factor = spike_factor
        self.spike_window = spike_window
        self.spike_min_samples = spike_min_samples
        self.reset_fraction = reset_fraction
        self.rollover_fraction = rollover_fraction
        self.rebaseline_after = rebaseline_after
        self.peak_days = peak_days
        self._state: dict[str, _CounterState] = {}
        # Points with nothing to check (no min/max, not a counter): a good float only needs its unit.
        self._unchecked: dict[str, str | None] = {
            p.id: p.unit
            for p in self._points.values()
            if p.min is None and p.max is None and not p.cumulative
        }

    def seed(self, point_id: str, value: float, ts: datetime) -> None:
        """Start a counter from a baseline kept elsewhere (the ledger's, after a restart or reload), so
        the first reading is checked against the last one before the stop."""
        point = self._points.get(point_id)
        if point is not None and point.cumulative and point_id not in self._state:
            rates: deque[float] = deque(maxlen=self.spike_window)
            self._state[point_id] = _CounterState(last=value, last_ts=ts, rates=rates)

    def validate_many(
        self, readings: Sequence[Reading], extra: Callable[[datetime], tuple[str, ...]] | None = None
    ) -> list[ValidatedReading]:
        """One device poll at once: a finite float of a point with nothing to check takes a dict look-up
        and a tuple, the rest the full checks of validate(). ``extra``: flags by timestamp appended
        after the checks' own (the clock's), asked once per timestamp of the poll, not per reading."""
        unit_of, validate, good = self._unchecked.get, self.validate, Quality.GOOD
        make, vr = tuple.__new__, ValidatedReading  # the NamedTuple without its Python-level __new__
        out: list[ValidatedReading] = []
        append = out.append
        more: tuple[str, ...] = ()
        last_ts: datetime | None = None
        seen: dict[datetime, tuple[str, ...]] = {}
        for r in readings:
            if extra is not None and r.ts is not last_ts:  # a driver stamps a block with one datetime
                last_ts = r.ts
                got = seen.get(last_ts)
                more = seen[last_ts] = extra(last_ts) if got is None else got
            unit = unit_of(r.point_id, _CHECKED)
            v = r.value
            # v - v is 0.0 for a finite float, NaN for NaN and +/-inf: math.isfinite without a call
            if unit is not _CHECKED and type(v) is float and v - v == 0.0 and r.quality is good:
                append(make(vr, (r, more, unit)))
            elif more:
                checked = validate(r)
                append(make(vr, (r, checked.flags + more, checked.unit)))
            else:
                append(validate(r))
        return out

    def validate(self, reading: Reading) -> ValidatedReading:
        point = self._points.get(reading.point_id)
        if point is None:
            return ValidatedReading(reading=reading, flags=("unknown_point",), unit=None)
        value = reading.value
        if reading.quality is Quality.BAD or isinstance(value, bool) or not isinstance(value, int | float):
            return ValidatedReading(reading=reading, flags=(), unit=point.unit)
        v = float(value)
        if not math.isfinite(v):
            return ValidatedReading(reading=reading, flags=("not_finite",), unit=point.unit)
        flags: list[str] = []
        if (point.min is not None and v < point.min) or (point.max is not None and v > point.max):
            flags.append("out_of_range")
        if point.cumulative:
            flags.extend(self._check_counter(point, v, reading.ts))
        return ValidatedReading(reading=reading, flags=tuple(flags), unit=point.unit)

    def _check_counter(self, point: PointBase, v: float, ts: datetime) -> list[str]:
        st = self._state.get(point.id)
        if st is None:
            self._state[point.id] = _CounterState(last=v, last_ts=ts, rates=deque(maxlen=self.spike_window))
            return []
        if v >= st.last:
            dt = (ts - st.last_ts).total_seconds()
            rate = (v - st.last) / dt if dt > 0 else None
            if rate is not None and self._is_spike(st, rate, ts):
                if st.suspect_at is not None and v >= st.suspect_at[0]:
                    sdt = (ts - st.suspect_at[1]).total_seconds()
                    since = (v - st.suspect_at[0]) / sdt if sdt > 0 else 0.0
                    if self._is_spike(st, since, ts):
                        # Still far above the old regime after the jump: the load changed (a start-up),
                        # the counter did not step. Accepted; the new rate starts the window.
                        st.rates.clear()
                        self._accept(st, v, ts, since)
                        return ["load_change"]
                st.suspect_at = (v, ts)
                return self._suspect(st, v, ts, "spike")
            self._accept(st, v, ts, rate)
            return []
        if point.rollover is not None:
            wrapped = point.rollover - st.last + v
            if 0 <= wrapped <= self.rollover_fraction * point.rollover:
                dt = (ts - st.last_ts).total_seconds()
                self._accept(st, v, ts, wrapped / dt if dt > 0 else None)
                return ["rollover"]
        if v <= self.reset_fraction * st.last:
            # A new meter: its increments have nothing to do with the old one's.
            st.rates.clear()
            self._accept(st, v, ts, None)
            return ["counter_reset"]
        return self._suspect(st, v, ts, "counter_backwards")

    def _is_spike(self, st: _CounterState, rate: float, ts: datetime) -> bool:
        if len(st.rates) < self.spike_min_samples:
            return False
        # Against the largest recent rate, not the median: a load switching on (standby -> full AC) is
        # an ordinary 10-50x step; a register glitch or a bogus jump is orders of magnitude beyond it.
        # And against the meter's own daily maxima: this morning's start-up is yesterday's load.
        today = _day(ts)
        history = [r for d, r in st.day_peaks.items() if today - self.peak_days <= d <= today]
        peak = max([*st.rates, *history])
        return peak > 0 and rate > self.spike_factor * peak

    def _accept(self, st: _CounterState, v: float, ts: datetime, rate: float | None) -> None:
        st.last, st.last_ts, st.suspects, st.suspect_at = v, ts, 0, None
        if rate is not None:
            st.rates.append(rate)
            day = _day(ts)
            if rate > st.day_peaks.get(day, 0.0):
                st.day_peaks[day] = rate
                for old in [d for d in st.day_peaks if d < day - self.peak_days]:
                    del st.day_peaks[old]

    def _suspect(self, st: _CounterState, v: float, ts: datetime, flag: str) -> list[str]:
        st.suspects += 1
        if st.suspects >= self.rebaseline_after:
            # Persistent: the device really is somewhere else now. Start over from here.
            st.rates.clear()
            self._accept(st, v, ts, None)
            return [flag, "rebaseline"]
        return [flag]


def _day(ts: datetime) -> int:
    return int(ts.timestamp() // 86400)

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
  - ``spike``: the increase per second is more than ``spike_factor`` (10x) the median increase per
    second over the last ``spike_window`` (8) accepted intervals, once at least ``spike_min_samples`` (3)
    intervals are known and that median is above zero. Rates, not raw deltas, so a missed poll that
    doubles the interval does not look like a spike.
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from drivers.base import PointBase, Quality, Reading

__all__ = ["FLAGS", "ValidatedReading", "Validator"]

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
    }
)


@dataclass(frozen=True, slots=True)
class ValidatedReading:
    reading: Reading
    flags: tuple[str, ...] = ()
    unit: str | None = None


@dataclass(slots=True)
class _CounterState:
    last: float
    last_ts: datetime
    rates: deque[float] = field(default_factory=deque)
    suspects: int = 0  # consecutive spike/backwards readings since the last accepted one


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
    ) -> None:
        self._points: dict[str, PointBase] = {p.id: p for p in points}
        self.spike_factor = spike_factor
        self.spike_window = spike_window
        self.spike_min_samples = spike_min_samples
        self.reset_fraction = reset_fraction
        self.rollover_fraction = rollover_fraction
        self.rebaseline_after = rebaseline_after
        self._state: dict[str, _CounterState] = {}

    def seed(self, point_id: str, value: float, ts: datetime) -> None:
        """Start a counter from a baseline kept elsewhere (the ledger's, after a restart or reload), so
        the first reading is checked against the last one before the stop."""
        point = self._points.get(point_id)
        if point is not None and point.cumulative and point_id not in self._state:
            rates: deque[float] = deque(maxlen=self.spike_window)
            self._state[point_id] = _CounterState(last=value, last_ts=ts, rates=rates)

    def validate_many(self, readings: Sequence[Reading]) -> list[ValidatedReading]:
        return [self.validate(r) for r in readings]

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
            if rate is not None and self._is_spike(st, rate):
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

    def _is_spike(self, st: _CounterState, rate: float) -> bool:
        if len(st.rates) < self.spike_min_samples:
            return False
        # Against the largest recent rate, not the median: a load switching on (standby -> full AC) is
        # an ordinary 10-50x step; a register glitch or a bogus jump is orders of magnitude beyond it.
        peak = max(st.rates)
        return peak > 0 and rate > self.spike_factor * peak

    def _accept(self, st: _CounterState, v: float, ts: datetime, rate: float | None) -> None:
        st.last, st.last_ts, st.suspects = v, ts, 0
        if rate is not None:
            st.rates.append(rate)

    def _suspect(self, st: _CounterState, v: float, ts: datetime, flag: str) -> list[str]:
        st.suspects += 1
        if st.suspects >= self.rebaseline_after:
            # Persistent: the device really is somewhere else now. Start over from here.
            st.rates.clear()
            self._accept(st, v, ts, None)
            return [flag, "rebaseline"]
        return [flag]

"""Report by exception: which polled readings go to the outbox and the uplink (issue 18, item 3).

Pure and per point: a reading is reported when it is the first of its point, when its quality or failure
code differs from the last reported one, when its value moved beyond the deadband from the last
*reported* value (so the consumer's last value is always within the deadband of the polled one), or when
``max_interval_s`` has passed since the last report (the consumer knows the last value still holds).
Counters report periodically instead: the first reading of every ``align_s`` bucket (the 15-minute
boundary the ledger books by), so no interval boundary the ledger needs is skipped.

The snapshot, enforcement and ledger still see every poll; only the outbox consumes this decision.
Not wired into the configuration and the service yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

__all__ = ["COUNTER_RULE", "ReportFilter", "ReportRule"]


@dataclass(frozen=True, slots=True)
class ReportRule:
    on_change: bool = True
    deadband: float = 0.0  # absolute, in the point's unit
    deadband_pct: float = 0.0  # of the last reported value's magnitude
    max_interval_s: float = 900.0
    align_s: float | None = None  # periodic report aligned to this bucket (counters)

    def band(self, last: float) -> float:
        return max(self.deadband, abs(last) * self.deadband_pct / 100.0)


COUNTER_RULE = ReportRule(on_change=False, align_s=900.0)


@dataclass(slots=True)
class _Last:
    value: object
    quality: str
    code: str | None
    ts: float  # POSIX seconds


class ReportFilter:
    """Remembers the last reported reading of each point and decides for each new one."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, _Last] = {}

    def keep(
        self, point: str, rule: ReportRule, *, value: object, ts: datetime, quality: str, code: str | None
    ) -> bool:
        t = ts.timestamp()
        last = self._last.get(point)
        report = last is None or quality != last.quality or code != last.code or self._due(rule, last, t)
        if not report and last is not None and rule.on_change:
            report = _moved(rule, last.value, value)
        if report:
            self._last[point] = _Last(value, quality, code, t)
        return report

    @staticmethod
    def _due(rule: ReportRule, last: _Last, t: float) -> bool:
        if t - last.ts >= rule.max_interval_s or t < last.ts:  # a clock step back: report, do not guess
            return True
        if rule.align_s is not None:
            return math.floor(t / rule.align_s) != math.floor(last.ts / rule.align_s)
        return False


def _moved(rule: ReportRule, before: object, now: object) -> bool:
    numeric = (int, float)
    if (
        isinstance(before, numeric)
        and isinstance(now, numeric)
        and not isinstance(before, bool)
        and not isinstance(now, bool)
    ):
        if not (math.isfinite(before) and math.isfinite(now)):
            return before != now
        return abs(now - before) > rule.band(before)
    return before != now

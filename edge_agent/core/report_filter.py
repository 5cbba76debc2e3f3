"""Report by exception: which polled readings go to the outbox and the uplink (issue 18, item 3).

Pure and per point: a reading is reported when it is the first of its point, when its quality or failure
code differs from the last reported one, when its value moved beyond the deadband from the last
*reported* value (so the consumer's last value is always within the deadband of the polled one), or when
``max_interval_s`` has passed since the last report (the consumer knows the last value still holds).
Counters report periodically instead: the first reading of every ``align_s`` bucket (the 15-minute
boundary the ledger books by), so no interval boundary the ledger needs is skipped.

A change of validation flags (``out_of_range``, ``spike``, ``clock_unsynced``...) counts like a change of
quality: the consumer always holds the flags of the polled reading.

The snapshot, enforcement and ledger still see every poll; only the outbox consumes this decision
(``Service._on_readings``). ``rule_for`` turns site.yaml's ``report:`` options into a rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = ["COUNTER_ALIGN_S", "COUNTER_RULE", "ReportFilter", "ReportRule", "rule_for"]

COUNTER_ALIGN_S = 900.0  # the ledger's (and the municipal platform's) 15-minute slot


@dataclass(frozen=True, slots=True)
class ReportRule:
    on_change: bool = True
    deadband: float = 0.0  # absolute, in the point's unit
    deadband_pct: float = 0.0  # of the last reported value's magnitude
    max_interval_s: float = 900.0
    align_s: float | None = None  # periodic report aligned to this bucket (counters)

    def band(self, last: float) -> float:
        return max(self.deadband, abs(last) * self.deadband_pct / 100.0)


COUNTER_RULE = ReportRule(on_change=False, align_s=COUNTER_ALIGN_S)


class ReportOptionsLike(Protocol):
    """site.yaml's ``report:`` (edge_agent.config.settings.ReportOptions), as this module reads it."""

    @property
    def on_change(self) -> bool: ...
    @property
    def deadband(self) -> float | None: ...
    @property
    def deadband_pct(self) -> float | None: ...
    @property
    def max_interval_s(self) -> float: ...


def rule_for(
    point: ReportOptionsLike | None, device: ReportOptionsLike | None, *, cumulative: bool
) -> ReportRule | None:
    """The rule of one point: its own ``report`` wins over its device's; None (every poll reported) when
    neither has one. A counter under its device's ``report`` gets the periodic report instead (the
    device's max_interval_s still bounds the silence), and every counter rule keeps the first reading of
    each 15-minute slot, so a consumer can book the ledger's slots from what it receives."""
    if point is None and device is None:
        return None
    align = COUNTER_ALIGN_S if cumulative else None
    if point is None and cumulative:
        assert device is not None
        return ReportRule(on_change=False, max_interval_s=device.max_interval_s, align_s=align)
    opts = point if point is not None else device
    assert opts is not None
    return ReportRule(
        on_change=opts.on_change,
        deadband=opts.deadband or 0.0,
        deadband_pct=opts.deadband_pct or 0.0,
        max_interval_s=opts.max_interval_s,
        align_s=align,
    )


@dataclass(slots=True)
class _Last:
    value: object
    quality: str
    code: str | None
    flags: tuple[str, ...]
    ts: float  # POSIX seconds


class ReportFilter:
    """Remembers the last reported reading of each point and decides for each new one."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, _Last] = {}

    def keep(
        self,
        point: str,
        rule: ReportRule,
        *,
        value: object,
        ts: datetime,
        quality: str,
        code: str | None,
        flags: tuple[str, ...] = (),
    ) -> bool:
        t = ts.timestamp()
        last = self._last.get(point)
        report = (
            last is None
            or quality != last.quality
            or code != last.code
            or flags != last.flags
            or self._due(rule, last, t)
        )
        if not report and last is not None and rule.on_change:
            report = _moved(rule, last.value, value)
        if report:
            self._last[point] = _Last(value, quality, code, flags, t)
        return report

    def forget(self, points: Iterable[str]) -> None:
        """Start these points afresh (removed, or their rule changed on a reload): next reading reported."""
        for p in points:
            self._last.pop(p, None)

    def __contains__(self, point: object) -> bool:
        return point in self._last

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

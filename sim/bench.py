"""Benchmark units 100..100+N-1: each holds M float32 values (holding registers 0..2M-1, big word order).

Values are deterministic functions of (unit, index, sim time) and change slowly (a period of 10 minutes),
so a benchmark sees plausible, changing data and a test can recompute what it should have read.
"""

from __future__ import annotations

import math

from sim.encoding import encode
from sim.modbus_server import UnitBank

__all__ = ["BENCH_FIRST_UNIT", "bench_value", "build_bench_unit", "refresh_bench_unit"]

BENCH_FIRST_UNIT = 100
_PERIOD_S = 600.0


def bench_value(unit_id: int, index: int, t: float) -> float:
    """Value of point ``index`` of bench unit ``unit_id`` at ``t`` seconds (POSIX time)."""
    base = 10.0 * (unit_id - BENCH_FIRST_UNIT) + index * 0.5
    return base + 2.0 * math.sin(2 * math.pi * t / _PERIOD_S + index * 0.1)


def build_bench_unit(*, unit_id: int, points: int, t: float) -> UnitBank:
    if not 1 <= points <= 32768:
        raise ValueError(f"bench points {points} outside 1..32768")
    bank = UnitBank(unit_id=unit_id, name=f"bench-{unit_id}")
    regs: list[int] = []
    for i in range(points):
        regs += encode(bench_value(unit_id, i, t), "float32")
    bank.map("holding", 0, regs)
    return bank


def refresh_bench_unit(bank: UnitBank, *, points: int, t: float) -> None:
    regs: list[int] = []
    for i in range(points):
        regs += encode(bench_value(bank.unit_id, i, t), "float32")
    bank.set("holding", 0, regs)

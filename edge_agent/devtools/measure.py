"""What the benchmarks share: waiting for a child simulator, and timing methods in interleaved rounds."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Awaitable, Callable

__all__ = ["Meter", "interleaved", "wait_port"]


async def wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"simulator exited with code {proc.returncode}")
        with contextlib.suppress(OSError):
            _r, w = await asyncio.open_connection(host, port)
            w.close()
            await w.wait_closed()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"simulator did not listen on {host}:{port} within {timeout:.0f} s")


class Meter:
    """Accumulates points, wall and CPU time of one method over several interleaved rounds."""

    def __init__(self, cycle: Callable[[], Awaitable[int]]) -> None:
        self.cycle = cycle
        self.points = 0
        self.wall = 0.0
        self.cpu = 0.0

    async def round(self, seconds: float) -> None:
        cpu0, t0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            self.points += await self.cycle()
        self.wall += time.perf_counter() - t0
        self.cpu += time.process_time() - cpu0

    def result(self) -> dict[str, float]:
        return {
            "points_per_s": round(self.points / self.wall, 1),
            "cpu_s_per_1k_points": round(self.cpu / self.points * 1000, 5),
            "points_read": self.points,
        }


async def interleaved(
    methods: dict[str, Callable[[], Awaitable[int]]],
    seconds: float,
    rounds: int,
    progress: Callable[[str], None],
) -> dict[str, dict[str, float]]:
    """Run the methods in alternating rounds so a noisy neighbour affects all of them alike."""
    meters = {name: Meter(cycle) for name, cycle in methods.items()}
    for m in meters.values():
        await m.cycle()  # warm-up: connect, plan, first decode
    for i in range(rounds):
        progress(f"round {i + 1}/{rounds}: " + ", ".join(meters))
        for m in meters.values():
            await m.round(seconds / rounds)
    return {name: m.result() for name, m in meters.items()}

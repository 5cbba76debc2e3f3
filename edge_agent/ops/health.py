"""Progress tracking that feeds the systemd watchdog only while every loop makes progress.

Each long-running loop registers with a deadline and calls beat() once per cycle that completed
(a cycle whose devices all failed still completed: a dead meter is data, not a stall). The
watchdog loop pings WATCHDOG=1 only while no loop is past its deadline, so a hung loop (a lock
never released, a blocking call on the event loop) lets systemd's WatchdogSec expire and the
unit restarts (Restart=on-failure). Monotonic time only: a wall-clock step is no stall.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import structlog

from edge_agent.core.clock import Clock
from edge_agent.ops.sdnotify import Notifier

__all__ = ["Health", "LoopHealth", "UnknownLoopError"]

_log = structlog.get_logger("edge_agent.health")


class UnknownLoopError(KeyError):
    """beat() or unregister() for a name that was never registered (a wiring bug)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"loop {self.name!r} is not registered with Health"


@dataclass(frozen=True, slots=True)
class LoopHealth:
    name: str
    deadline_s: float
    age_s: float  # seconds since the last beat (or registration)
    beats: int
    stalled: bool


@dataclass(slots=True)
class _Loop:
    deadline_s: float
    last: float
    beats: int = 0


class Health:
    """Registry of loops and their last beat, on an injected clock (monotonic part only)."""

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._loops: dict[str, _Loop] = {}
        self._reported_stalled: frozenset[str] = frozenset()
        self._last_status: str | None = None
        self.pings = 0  # WATCHDOG=1 sent; for status and tests
        self.withheld = 0  # ticks on which the ping was withheld because a loop stalled

    def register(self, name: str, deadline_s: float) -> None:
        """Track `name`; registering counts as a beat, so a loop gets one deadline to start."""
        if deadline_s <= 0:
            raise ValueError(f"loop {name!r}: deadline_s must be > 0, got {deadline_s}")
        self._loops[name] = _Loop(deadline_s=deadline_s, last=self._clock.monotonic())

    def unregister(self, name: str) -> None:
        """Stop tracking a loop that ended on purpose (e.g. a device removed by a reload)."""
        if self._loops.pop(name, None) is None:
            raise UnknownLoopError(name)

    def beat(self, name: str) -> None:
        loop = self._loops.get(name)
        if loop is None:
            raise UnknownLoopError(name)
        loop.last = self._clock.monotonic()
        loop.beats += 1

    def stalled(self) -> list[str]:
        """Names of loops whose last beat is older than their deadline, sorted."""
        now = self._clock.monotonic()
        return sorted(n for n, lp in self._loops.items() if now - lp.last > lp.deadline_s)

    def loops(self) -> list[LoopHealth]:
        now = self._clock.monotonic()
        return [
            LoopHealth(
                name=n,
                deadline_s=lp.deadline_s,
                age_s=now - lp.last,
                beats=lp.beats,
                stalled=now - lp.last > lp.deadline_s,
            )
            for n, lp in sorted(self._loops.items())
        ]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view for the status document."""
        return {
            "loops": {
                h.name: {
                    "deadline_s": h.deadline_s,
                    "age_s": round(h.age_s, 3),
                    "beats": h.beats,
                    "stalled": h.stalled,
                }
                for h in self.loops()
            },
            "stalled": self.stalled(),
            "watchdog_pings": self.pings,
            "watchdog_withheld": self.withheld,
        }

    def tick(self, notifier: Notifier, status: Callable[[], str] | None = None) -> bool:
        """One watchdog decision: ping when nothing stalled. Returns whether WATCHDOG=1 was sent.

        Logs once when loops stall and once when they recover (state changes, not every tick),
        and sends STATUS= when the status line changed.
        """
        stalled = frozenset(self.stalled())
        if stalled != self._reported_stalled:
            newly = sorted(stalled - self._reported_stalled)
            recovered = sorted(self._reported_stalled - stalled)
            if newly:
                ages = {h.name: round(h.age_s, 1) for h in self.loops() if h.name in newly}
                _log.error("loop_stalled", loops=newly, age_s=ages, action="watchdog_withheld")
            if recovered:
                _log.info("loop_recovered", loops=recovered, still_stalled=sorted(stalled))
            self._reported_stalled = stalled
        line: str | None = f"stalled: {', '.join(sorted(stalled))}" if stalled else "running"
        if not stalled and status is not None:
            try:
                line = status()
            except Exception as exc:  # a broken status supplier must not stop the watchdog
                _log.warning("status_supplier_failed", error=repr(exc))
                line = None
        if line is not None and line != self._last_status:
            notifier.status(line)
            self._last_status = line
        if stalled:
            self.withheld += 1
            return False
        sent = notifier.watchdog()
        if sent:
            self.pings += 1
        return sent

    async def watchdog_loop(
        self, notifier: Notifier, interval_s: float, *, status: Callable[[], str] | None = None
    ) -> NoReturn:
        """tick() every `interval_s` (half of WatchdogSec: sdnotify.watchdog_interval()) until cancelled."""
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        while True:
            self.tick(notifier, status)
            await asyncio.sleep(interval_s)

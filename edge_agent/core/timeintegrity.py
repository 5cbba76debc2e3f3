"""Is the wall clock trustworthy? Step detection, the synchronisation state, and reading flags.

A Raspberry Pi has no battery-backed clock: it boots with the time of its last shutdown
(fake-hwclock) and jumps when NTP first synchronises, possibly hours after boot when the uplink
was down. Readings stamped before that are mis-dated, and a reading taken while the clock steps
cannot be placed. We do not rewrite their timestamps (never alter data); we flag them:

- ``clock_unsynced``: taken while the kernel/timedated said the clock is not synchronised;
- ``clock_step``: its timestamp falls in the window in which a wall-clock step was detected;
- ``clock_offset``: taken while an outside reference (the municipal platform's heartbeat time) said the
  clock is off by more than its tolerance. Evidence, not a verdict: the ledger does not hold these
  readings (the reference may be the wrong clock), the consumer sees the doubt.

Each detected step is a ClockStep whose ``event()`` the runtime audits (kind ``clock_step``).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import subprocess
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import structlog

from edge_agent.core.clock import Clock

__all__ = [
    "CLOCK_OFFSET",
    "CLOCK_STEP",
    "CLOCK_UNSYNCED",
    "ClockMonitor",
    "ClockStep",
    "SyncSource",
    "SyncState",
    "adjtimex_sync",
    "clock_flags",
    "system_sync_state",
    "timedatectl_sync",
    "timesyncd_flag_sync",
]

_log = structlog.get_logger("edge_agent.timeintegrity")

CLOCK_UNSYNCED = "clock_unsynced"
CLOCK_STEP = "clock_step"
CLOCK_OFFSET = "clock_offset"


class SyncState(StrEnum):
    SYNCED = "synced"
    UNSYNCED = "unsynced"
    UNKNOWN = "unknown"  # no source could tell; readings are not flagged for it


class SyncSource(Protocol):
    def __call__(self) -> SyncState | None:
        """The synchronisation state, or None when this source cannot tell. Blocking, but short."""
        ...


# --- sources ---------------------------------------------------------------------------------


_SYSTEMD_NOTIFY_ENV = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"})


class _Runner(Protocol):
    def __call__(
        self,
        args: list[str],
        *,
        capture_output: bool,
        text: bool,
        timeout: float,
        check: bool,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]: ...


def timedatectl_sync(*, timeout_s: float = 2.0, runner: _Runner | None = None) -> SyncState | None:
    """`timedatectl show -p NTPSynchronized --value` (asks systemd-timedated over D-Bus).

    This is the source that works inside the hardened unit: ProtectClock= forbids adjtimex()
    even read-only, while timedated runs outside the sandbox.
    """
    run: _Runner = runner if runner is not None else subprocess.run
    try:
        proc = run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            # Not our systemd notify socket: timedatectl would report its own errors into it.
            env={k: v for k, v in os.environ.items() if k not in _SYSTEMD_NOTIFY_ENV},
        )
    except (OSError, subprocess.SubprocessError):  # not installed, timed out, not permitted
        return None
    if proc.returncode != 0:
        return None
    answer = proc.stdout.strip().lower()
    if answer == "yes":
        return SyncState.SYNCED
    if answer == "no":
        return SyncState.UNSYNCED
    return None


# struct timex from <sys/timex.h>. Only `status` is read; it sits after `modes` and four longs on
# every ABI. Trailing padding absorbs ABI differences (e.g. 64-bit time_t on 32-bit ARM).
class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_char * 128),
    ]


_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


def decode_adjtimex(rc: int, status: int) -> SyncState | None:
    """Kernel answer -> state: rc -1 is a failed call (e.g. EPERM under seccomp): cannot tell."""
    if rc < 0:
        return None
    if rc == _TIME_ERROR or status & _STA_UNSYNC:
        return SyncState.UNSYNCED
    return SyncState.SYNCED


def adjtimex_sync() -> SyncState | None:
    """The kernel's NTP state via adjtimex(2) with modes=0 (read only, no privilege needed)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        rc = int(libc.adjtimex(ctypes.byref(tx)))
    except (OSError, AttributeError):
        return None
    return decode_adjtimex(rc, tx.status)


def timesyncd_flag_sync(path: Path = Path("/run/systemd/timesync/synchronized")) -> SyncState | None:
    """systemd-timesyncd touches this file once synchronised; its absence proves nothing."""
    try:
        return SyncState.SYNCED if path.exists() else None
    except OSError:
        return None


_DEFAULT_SOURCES: tuple[SyncSource, ...] = (timedatectl_sync, adjtimex_sync, timesyncd_flag_sync)


def system_sync_state(sources: Iterable[SyncSource] = _DEFAULT_SOURCES) -> SyncState:
    """The first source that can tell wins; UNKNOWN when none can."""
    for source in sources:
        try:
            state = source()
        except Exception as exc:  # a source must never break the agent
            _log.warning(
                "clock_sync_source_failed", source=getattr(source, "__name__", repr(source)), error=repr(exc)
            )
            continue
        if state is not None:
            return state
    return SyncState.UNKNOWN


# --- steps and flags -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClockStep:
    """A wall-clock jump seen between two observations: wall moved by `wall_delta_s` while
    monotonic time moved by `mono_delta_s`; the difference is the step."""

    wall_before: datetime  # wall time at the previous observation (old time scale)
    wall_after: datetime  # wall time at the observation that saw the step (new time scale)
    mono_delta_s: float
    wall_delta_s: float

    @property
    def step_s(self) -> float:
        return self.wall_delta_s - self.mono_delta_s

    def covers(self, ts: datetime) -> bool:
        """Could a reading stamped `ts` have been taken while the clock stepped?

        The step happened somewhere between the two observations, so a timestamp within that
        interval on either time scale (old: after wall_before, new: before wall_after) is ambiguous.
        """
        span = timedelta(seconds=self.mono_delta_s)
        return (self.wall_before <= ts <= self.wall_before + span) or (
            self.wall_after - span <= ts <= self.wall_after
        )

    def event(self) -> dict[str, Any]:
        """The audit record the runtime writes (kind ``clock_step``)."""
        return {
            "kind": "clock_step",
            "step_s": round(self.step_s, 6),
            "wall_before": self.wall_before.isoformat(),
            "wall_after": self.wall_after.isoformat(),
            "mono_delta_s": round(self.mono_delta_s, 6),
        }


def clock_flags(
    ts: datetime, *, sync: SyncState, steps: Sequence[ClockStep] = (), offset: bool = False
) -> tuple[str, ...]:
    """Flags for a reading stamped `ts`, given the sync state when it was taken and recent steps.

    Pure. UNKNOWN sync does not flag (a machine with no way to tell would flag everything forever);
    the status view shows it instead.
    """
    flags: list[str] = []
    if sync is SyncState.UNSYNCED:
        flags.append(CLOCK_UNSYNCED)
    if any(step.covers(ts) for step in steps):
        flags.append(CLOCK_STEP)
    if offset:
        flags.append(CLOCK_OFFSET)
    return tuple(flags)


class ClockMonitor:
    """Watches one clock for steps and tracks whether it is synchronised.

    observe() is cheap (two clock reads) and pure in its inputs: call it once per cycle.
    refresh_sync() may run a subprocess: from asyncio use refresh_sync_async() (a thread).
    """

    def __init__(
        self,
        *,
        clock: Clock,
        sync_source: Callable[[], SyncState] = system_sync_state,
        step_threshold_s: float = 2.0,
        keep_steps: int = 16,
    ) -> None:
        if step_threshold_s <= 0:
            raise ValueError(f"step_threshold_s must be > 0, got {step_threshold_s}")
        self._clock = clock
        self._source = sync_source
        self.step_threshold_s = step_threshold_s
        self._last: tuple[datetime, float] | None = None
        self._steps: deque[ClockStep] = deque(maxlen=keep_steps)
        self.steps_total = 0
        self.sync = SyncState.UNKNOWN
        self.sync_checked: datetime | None = None
        self.reference_offset_s: float | None = None  # ours minus an outside reference's, when one told
        self.reference_off = False  # that offset is beyond the reference's tolerance

    @property
    def recent_steps(self) -> tuple[ClockStep, ...]:
        return tuple(self._steps)

    def observe(self) -> ClockStep | None:
        """Compare wall and monotonic progress since the previous call; a step beyond the threshold
        (either direction) is recorded, logged and returned."""
        wall, mono = self._clock.now(), self._clock.monotonic()
        last, self._last = self._last, (wall, mono)
        if last is None:
            return None
        step = ClockStep(
            wall_before=last[0],
            wall_after=wall,
            mono_delta_s=mono - last[1],
            wall_delta_s=(wall - last[0]).total_seconds(),
        )
        if abs(step.step_s) < self.step_threshold_s:
            return None
        self._steps.append(step)
        self.steps_total += 1
        _log.warning("clock_step", **{k: v for k, v in step.event().items() if k != "kind"})
        return step

    def refresh_sync(self) -> SyncState:
        """Ask the sync source (blocking); log transitions."""
        try:
            state = self._source()
        except Exception as exc:
            _log.warning("clock_sync_source_failed", error=repr(exc))
            state = SyncState.UNKNOWN
        if state is not self.sync:
            _log.info("clock_sync_changed", before=str(self.sync), after=str(state))
        self.sync = state
        self.sync_checked = self._clock.now()
        return state

    async def refresh_sync_async(self) -> SyncState:
        return await asyncio.to_thread(self.refresh_sync)

    def set_reference(self, offset_s: float, *, off: bool) -> None:
        """An outside clock's verdict (the platform's heartbeat): readings taken while ``off`` carry
        ``clock_offset``. The clock itself is never changed; the caller logs and audits the finding."""
        self.reference_offset_s = offset_s
        self.reference_off = off

    def may_flag(self) -> bool:
        """False when no reading can get a clock flag now (synchronised, no step remembered, no outside
        clock disagreeing)."""
        return self.sync is SyncState.UNSYNCED or bool(self._steps) or self.reference_off

    def flags(self, ts: datetime) -> tuple[str, ...]:
        """clock_flags() with this monitor's current sync state, recent steps and outside reference."""
        return clock_flags(ts, sync=self.sync, steps=self._steps, offset=self.reference_off)

    def as_dict(self) -> dict[str, Any]:
        last = self._steps[-1] if self._steps else None
        return {
            "sync": str(self.sync),
            "sync_checked": self.sync_checked.isoformat() if self.sync_checked else None,
            "steps_total": self.steps_total,
            "last_step": last.event() if last else None,
            "reference_offset_s": self.reference_offset_s,
            "reference_off": self.reference_off,
        }

    async def run(
        self,
        on_step: Callable[[ClockStep], Awaitable[None] | None],
        *,
        interval_s: float = 1.0,
        sync_interval_s: float = 60.0,
        beat: Callable[[], None] | None = None,
    ) -> None:
        """observe() every `interval_s`, refresh_sync() every `sync_interval_s`, until cancelled.

        `on_step` is where the runtime audits the step; `beat` feeds Health (e.g.
        ``lambda: health.beat("clock")``).
        """
        await self.refresh_sync_async()
        self.observe()
        since_sync = 0.0
        while True:
            await asyncio.sleep(interval_s)
            step = self.observe()
            if step is not None:
                result = on_step(step)
                if result is not None:
                    await result
                # A step is often NTP's first sync: ask now rather than up to a minute later.
                await self.refresh_sync_async()
                since_sync = 0.0
            since_sync += interval_s
            if since_sync >= sync_interval_s:
                await self.refresh_sync_async()
                since_sync = 0.0
            if beat is not None:
                beat()

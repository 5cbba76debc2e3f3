"""Clock steps on a FakeClock, the sync state through fake sources at our own interface, and the
pure reading flags."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from edge_agent.core.clock import FakeClock
from edge_agent.core.timeintegrity import (
    CLOCK_OFFSET,
    CLOCK_STEP,
    CLOCK_UNSYNCED,
    ClockMonitor,
    ClockStep,
    SyncState,
    adjtimex_sync,
    clock_flags,
    decode_adjtimex,
    system_sync_state,
    timedatectl_sync,
    timesyncd_flag_sync,
)

T0 = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)


class FakeSync:
    def __init__(self, state: SyncState) -> None:
        self.state = state
        self.calls = 0

    def __call__(self) -> SyncState:
        self.calls += 1
        return self.state


def test_observe_detects_steps_both_ways() -> None:
    clock = FakeClock(T0)
    mon = ClockMonitor(clock=clock, sync_source=FakeSync(SyncState.SYNCED))
    assert mon.observe() is None  # first observation: nothing to compare
    clock.advance(1)
    assert mon.observe() is None
    clock.advance(1)
    clock.step_wall(1.5)  # below the 2 s threshold: slewing territory, not a step
    assert mon.observe() is None

    clock.advance(1)
    clock.step_wall(3600)  # NTP's first sync on an RTC-less Pi
    with capture_logs() as logs:
        step = mon.observe()
    assert step is not None
    assert step.step_s == pytest.approx(3600)
    assert step.mono_delta_s == pytest.approx(1)
    assert step.wall_after == clock.now()
    assert logs[0]["event"] == "clock_step" and logs[0]["step_s"] == pytest.approx(3600)
    ev = step.event()
    assert ev["kind"] == "clock_step" and ev["step_s"] == pytest.approx(3600)
    assert datetime.fromisoformat(ev["wall_after"]) == clock.now()

    clock.advance(2)
    clock.step_wall(-30)
    back = mon.observe()
    assert back is not None and back.step_s == pytest.approx(-30)
    assert mon.steps_total == 2
    assert mon.recent_steps == (step, back)
    assert mon.as_dict()["last_step"]["step_s"] == pytest.approx(-30)


def test_threshold_is_configurable_and_validated() -> None:
    clock = FakeClock(T0)
    mon = ClockMonitor(clock=clock, sync_source=FakeSync(SyncState.SYNCED), step_threshold_s=0.5)
    mon.observe()
    clock.step_wall(0.6)
    assert mon.observe() is not None
    with pytest.raises(ValueError):
        ClockMonitor(clock=clock, step_threshold_s=0)


def test_step_window_on_both_time_scales() -> None:
    step = ClockStep(
        wall_before=T0, wall_after=T0 + timedelta(hours=1, seconds=10), mono_delta_s=10, wall_delta_s=3610
    )
    assert step.covers(T0 + timedelta(seconds=5))  # old scale, inside the window
    assert step.covers(T0 + timedelta(hours=1, seconds=5))  # new scale, inside the window
    assert not step.covers(T0 - timedelta(seconds=1))
    assert not step.covers(T0 + timedelta(seconds=11))
    assert not step.covers(T0 + timedelta(hours=1, seconds=11))


def test_clock_flags_is_pure_and_marks_what_it_should() -> None:
    step = ClockStep(wall_before=T0, wall_after=T0 + timedelta(seconds=70), mono_delta_s=10, wall_delta_s=70)
    inside = T0 + timedelta(seconds=3)
    outside = T0 + timedelta(seconds=30)
    assert clock_flags(outside, sync=SyncState.SYNCED, steps=[step]) == ()
    assert clock_flags(inside, sync=SyncState.SYNCED, steps=[step]) == (CLOCK_STEP,)
    assert clock_flags(outside, sync=SyncState.UNSYNCED) == (CLOCK_UNSYNCED,)
    assert clock_flags(inside, sync=SyncState.UNSYNCED, steps=[step]) == (CLOCK_UNSYNCED, CLOCK_STEP)
    # Unknown is not evidence: no flag (the status view shows it instead).
    assert clock_flags(outside, sync=SyncState.UNKNOWN) == ()


def test_monitor_flags_follow_the_sync_source() -> None:
    clock = FakeClock(T0)
    src = FakeSync(SyncState.UNSYNCED)
    mon = ClockMonitor(clock=clock, sync_source=src)
    assert mon.sync is SyncState.UNKNOWN and mon.flags(clock.now()) == ()
    assert mon.refresh_sync() is SyncState.UNSYNCED
    assert mon.flags(clock.now()) == (CLOCK_UNSYNCED,)
    src.state = SyncState.SYNCED
    with capture_logs() as logs:
        mon.refresh_sync()
        mon.refresh_sync()
    assert [e["event"] for e in logs] == ["clock_sync_changed"]  # transitions only
    assert logs[0]["before"] == "unsynced" and logs[0]["after"] == "synced"
    assert mon.flags(clock.now()) == ()
    assert mon.as_dict()["sync"] == "synced" and mon.as_dict()["sync_checked"] == T0.isoformat()


def test_an_outside_reference_flags_readings_while_it_disagrees() -> None:
    clock = FakeClock(T0)
    mon = ClockMonitor(clock=clock, sync_source=FakeSync(SyncState.SYNCED))
    mon.refresh_sync()
    assert not mon.may_flag() and mon.flags(clock.now()) == ()
    mon.set_reference(-300.0, off=True)
    assert mon.may_flag() and mon.flags(clock.now()) == (CLOCK_OFFSET,)
    assert clock.now() == T0  # evidence only: the clock is never set from it
    mon.set_reference(-0.4, off=False)
    assert not mon.may_flag() and mon.flags(clock.now()) == ()
    assert mon.as_dict()["reference_offset_s"] == -0.4


def test_monitor_survives_a_raising_source() -> None:
    def boom() -> SyncState:
        raise RuntimeError("dbus down")

    mon = ClockMonitor(clock=FakeClock(T0), sync_source=boom)
    assert mon.refresh_sync() is SyncState.UNKNOWN


async def test_run_reports_steps_and_rechecks_sync() -> None:
    clock = FakeClock(T0)
    src = FakeSync(SyncState.UNSYNCED)
    mon = ClockMonitor(clock=clock, sync_source=src)
    seen: list[ClockStep] = []
    got = asyncio.Event()
    beats = 0

    async def on_step(step: ClockStep) -> None:
        seen.append(step)
        got.set()

    def beat() -> None:
        nonlocal beats
        beats += 1

    task = asyncio.create_task(
        mon.run(on_step, interval_s=0.005, sync_interval_s=1000, beat=beat), name="clock-monitor"
    )
    try:
        await until(lambda: beats >= 3)
        assert src.calls == 1 and seen == []
        src.state = SyncState.SYNCED
        clock.step_wall(120)
        async with asyncio.timeout(5):
            await got.wait()
        await until(lambda: mon.sync is SyncState.SYNCED)
        assert len(seen) == 1 and seen[0].step_s == pytest.approx(120)
        assert src.calls == 2  # asked again right after the step, not a minute later
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --- sources ----------------------------------------------------------------------------------


async def until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.002)):
        if cond():
            return
        await asyncio.sleep(0.002)
    raise TimeoutError(f"condition not met within {timeout_s} s")


def _runner(stdout: str = "", rc: int = 0, exc: Exception | None = None) -> Any:
    calls: list[list[str]] = []

    def run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        assert kw["timeout"] > 0
        if exc is not None:
            raise exc
        return subprocess.CompletedProcess(args, rc, stdout, "")

    run.calls = calls  # type: ignore[attr-defined]
    return run


@pytest.mark.parametrize(
    ("runner", "expected"),
    [
        (_runner("yes\n"), SyncState.SYNCED),
        (_runner("no\n"), SyncState.UNSYNCED),
        (_runner("maybe\n"), None),
        (_runner("", rc=1), None),  # timedated unreachable
        (_runner(exc=FileNotFoundError("timedatectl")), None),
        (_runner(exc=subprocess.TimeoutExpired(["timedatectl"], 2)), None),
    ],
)
def test_timedatectl_source(runner: Any, expected: SyncState | None) -> None:
    assert timedatectl_sync(runner=runner) is expected
    assert runner.calls == [["timedatectl", "show", "-p", "NTPSynchronized", "--value"]]


def test_timedatectl_real_call_never_raises() -> None:
    # Here (no systemd as PID 1) it usually cannot tell; on a Pi it says yes/no. Either way: no exception.
    assert timedatectl_sync(timeout_s=2) in (SyncState.SYNCED, SyncState.UNSYNCED, None)


@pytest.mark.parametrize(
    ("rc", "status", "expected"),
    [
        (0, 0x2001, SyncState.SYNCED),  # TIME_OK, PLL|NANO
        (0, 0x0041, SyncState.UNSYNCED),  # STA_UNSYNC set
        (5, 0x0001, SyncState.UNSYNCED),  # TIME_ERROR
        (1, 0x0001, SyncState.SYNCED),  # TIME_INS: leap second pending, still synchronised
        (-1, 0, None),  # EPERM under seccomp (ProtectClock=)
    ],
)
def test_decode_adjtimex(rc: int, status: int, expected: SyncState | None) -> None:
    assert decode_adjtimex(rc, status) is expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="adjtimex is Linux")
def test_adjtimex_real_call_reads_the_kernel() -> None:
    # Outside a seccomp sandbox the read-only call answers; the answer depends on the host.
    assert adjtimex_sync() in (SyncState.SYNCED, SyncState.UNSYNCED)


def test_timesyncd_flag(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    assert timesyncd_flag_sync(flag) is None  # absence proves nothing
    flag.touch()
    assert timesyncd_flag_sync(flag) is SyncState.SYNCED


def test_system_sync_state_takes_the_first_source_that_can_tell() -> None:
    def cannot() -> SyncState | None:
        return None

    def broken() -> SyncState | None:
        raise OSError("nope")

    def no() -> SyncState | None:
        return SyncState.UNSYNCED

    def yes() -> SyncState | None:
        return SyncState.SYNCED

    assert system_sync_state([cannot, broken, no, yes]) is SyncState.UNSYNCED
    assert system_sync_state([cannot, yes, no]) is SyncState.SYNCED
    assert system_sync_state([cannot, broken]) is SyncState.UNKNOWN
    assert system_sync_state([]) is SyncState.UNKNOWN

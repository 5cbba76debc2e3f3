"""Health: progress per loop on a fake clock; the watchdog pings a real fake NOTIFY_SOCKET only while
every loop makes progress."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge_agent.core.clock import FakeClock
from edge_agent.ops.health import Health, UnknownLoopError
from edge_agent.ops.sdnotify import SdNotifier

T0 = datetime(2025, 7, 1, 8, 0, tzinfo=UTC)


class RecordingNotifier:
    """Fake at our own Notifier interface, for the tick-level tests."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def watchdog(self) -> bool:
        self.sent.append("WATCHDOG=1")
        return True

    def status(self, text: str) -> bool:
        self.sent.append(f"STATUS={text}")
        return True


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def test_register_beat_stalled(clock: FakeClock) -> None:
    h = Health(clock=clock)
    h.register("poll:meter-1", 10)
    h.register("uplink", 60)
    assert h.stalled() == []
    clock.advance(10)
    assert h.stalled() == []  # exactly at the deadline is still fine
    clock.advance(0.5)
    assert h.stalled() == ["poll:meter-1"]
    h.beat("poll:meter-1")
    assert h.stalled() == []
    clock.advance(60)
    assert h.stalled() == ["poll:meter-1", "uplink"]
    loops = {lp.name: lp for lp in h.loops()}
    assert loops["poll:meter-1"].beats == 1 and loops["poll:meter-1"].age_s == pytest.approx(60)
    assert loops["uplink"].beats == 0 and loops["uplink"].age_s == pytest.approx(70.5)


def test_wall_clock_step_is_not_a_stall(clock: FakeClock) -> None:
    h = Health(clock=clock)
    h.register("poll", 5)
    clock.step_wall(3600)
    assert h.stalled() == []


def test_unknown_and_invalid(clock: FakeClock) -> None:
    h = Health(clock=clock)
    with pytest.raises(UnknownLoopError) as ei:
        h.beat("nope")
    assert ei.value.name == "nope" and "nope" in str(ei.value)
    with pytest.raises(ValueError, match="deadline_s"):
        h.register("x", 0)
    h.register("gone", 5)
    h.unregister("gone")
    clock.advance(10)
    assert h.stalled() == []
    with pytest.raises(UnknownLoopError):
        h.unregister("gone")


def test_tick_pings_withholds_and_logs_state_changes_once(clock: FakeClock) -> None:
    h = Health(clock=clock)
    h.register("poll", 10)
    n = RecordingNotifier()
    assert h.tick(n, lambda: "3 devices up") is True
    assert n.sent == ["STATUS=3 devices up", "WATCHDOG=1"]
    n.sent.clear()
    assert h.tick(n, lambda: "3 devices up") is True
    assert n.sent == ["WATCHDOG=1"]  # unchanged status is not resent

    clock.advance(11)
    n.sent.clear()
    with capture_logs() as logs:
        assert h.tick(n, lambda: "3 devices up") is False
        assert h.tick(n, lambda: "3 devices up") is False
    assert n.sent == ["STATUS=stalled: poll"]
    assert [e["event"] for e in logs] == ["loop_stalled"]
    assert logs[0]["loops"] == ["poll"] and logs[0]["log_level"] == "error"
    assert h.withheld == 2

    h.beat("poll")
    n.sent.clear()
    with capture_logs() as logs:
        assert h.tick(n, lambda: "3 devices up") is True
    assert n.sent == ["STATUS=3 devices up", "WATCHDOG=1"]
    assert [e["event"] for e in logs] == ["loop_recovered"]
    assert h.pings == 3
    doc = h.as_dict()
    assert doc["stalled"] == [] and doc["watchdog_pings"] == 3 and doc["watchdog_withheld"] == 2
    assert doc["loops"]["poll"]["beats"] == 1


def test_broken_status_supplier_does_not_stop_pings(clock: FakeClock) -> None:
    h = Health(clock=clock)
    h.register("poll", 10)
    n = RecordingNotifier()

    def broken() -> str:
        raise RuntimeError("boom")

    with capture_logs() as logs:
        assert h.tick(n, broken) is True
    assert n.sent == ["WATCHDOG=1"]
    assert logs[0]["event"] == "status_supplier_failed"


# --- the loop against a real datagram socket -----------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    try:
        yield path, sock
    finally:
        sock.close()


def drain(sock: socket.socket) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


async def until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.002)):
        if cond():
            return
        await asyncio.sleep(0.002)
    raise TimeoutError(f"condition not met within {timeout_s} s")


async def test_watchdog_loop_pings_only_while_loops_progress(
    clock: FakeClock, notify_socket: tuple[str, socket.socket]
) -> None:
    path, sock = notify_socket
    h = Health(clock=clock)
    h.register("poll:meter-1", 10)
    h.register("uplink", 30)
    notifier = SdNotifier(environ={"NOTIFY_SOCKET": path})
    task = asyncio.create_task(h.watchdog_loop(notifier, 0.005, status=lambda: "ok"), name="watchdog")
    try:
        await until(lambda: h.pings >= 3)
        got = drain(sock)
        assert got[0] == b"STATUS=ok"
        assert got.count(b"WATCHDOG=1") >= 3

        # The poll loop hangs: its deadline passes and the pings stop.
        clock.advance(11)
        await until(lambda: h.withheld >= 1)
        pings_at_stall = h.pings
        drain(sock)
        await until(lambda: h.withheld >= 5)
        assert drain(sock) == []  # the STATUS=stalled line went out before the drain; nothing since
        assert h.pings == pings_at_stall

        # It makes progress again: pings resume.
        h.beat("poll:meter-1")
        h.beat("uplink")
        await until(lambda: h.pings >= pings_at_stall + 2)
        got = drain(sock)
        assert b"STATUS=ok" in got and got.count(b"WATCHDOG=1") >= 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        notifier.close()


async def test_watchdog_loop_rejects_bad_interval(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        await Health(clock=clock).watchdog_loop(RecordingNotifier(), 0)

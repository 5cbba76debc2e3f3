"""sd_notify over a real UNIX datagram socket the test binds (a fake NOTIFY_SOCKET)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge_agent.ops.sdnotify import SdNotifier, watchdog_interval


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    try:
        yield path, sock
    finally:
        sock.close()


def test_unset_socket_is_a_silent_noop() -> None:
    n = SdNotifier(environ={})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    assert n.status("x") is False
    assert n.stopping() is False
    n.close()


def test_messages_arrive_as_datagrams(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    n = SdNotifier(environ={"NOTIFY_SOCKET": path})
    try:
        assert n.enabled and n.socket_path == path
        assert n.ready("polling 3 devices")
        assert sock.recv(4096) == b"READY=1\nSTATUS=polling 3 devices"
        assert n.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert n.stopping()
        assert sock.recv(4096) == b"STOPPING=1"
        # A newline would start a bogus KEY=VALUE field: it is folded into a space.
        assert n.status("line one\nline two")
        assert sock.recv(4096) == b"STATUS=line one line two"
        assert n.status("温度 26 °C")
        assert sock.recv(4096) == "STATUS=温度 26 °C".encode()
        assert n.extend_timeout(60, "converting the outbox")
        assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=60000000\nSTATUS=converting the outbox"
    finally:
        n.close()


def test_reloading_carries_monotonic_usec(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    n = SdNotifier(socket_path=path)
    try:
        assert n.reloading("reloading site.yaml")
        fields = dict(line.split("=", 1) for line in sock.recv(4096).decode().split("\n"))
        assert fields["RELOADING"] == "1"
        assert fields["STATUS"] == "reloading site.yaml"
        usec = int(fields["MONOTONIC_USEC"])
        import time

        assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 10_000_000
    finally:
        n.close()


@pytest.mark.skipif(
    not hasattr(socket, "AF_UNIX") or os.uname().sysname != "Linux", reason="abstract sockets"
)
def test_abstract_socket_name(tmp_path: Path) -> None:
    name = f"edge-agent-test-{os.getpid()}-{tmp_path.name}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    n = SdNotifier(environ={"NOTIFY_SOCKET": "@" + name})
    try:
        assert n.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        n.close()
        sock.close()


def test_send_failure_never_raises_and_logs_once(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.sock")
    n = SdNotifier(socket_path=path)
    try:
        with capture_logs() as logs:
            assert n.watchdog() is False
            assert n.watchdog() is False
        assert [e["event"] for e in logs] == ["sd_notify_failed"]
        assert logs[0]["socket"] == path
        # The service manager comes back: the next send works and the recovery is logged.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(2.0)
        try:
            with capture_logs() as logs:
                assert n.watchdog() is True
            assert sock.recv(4096) == b"WATCHDOG=1"
            assert [e["event"] for e in logs] == ["sd_notify_recovered"]
        finally:
            sock.close()
    finally:
        n.close()


@pytest.mark.parametrize(
    ("env", "pid", "expected"),
    [
        ({}, 10, None),
        ({"WATCHDOG_USEC": "30000000"}, 10, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "10"}, 10, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "11"}, 10, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, 10, None),
        ({"WATCHDOG_USEC": "soon"}, 10, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, 10, None),
        ({"WATCHDOG_USEC": "1000000"}, 10, 0.5),
    ],
)
def test_watchdog_interval(env: dict[str, str], pid: int, expected: float | None) -> None:
    assert watchdog_interval(env, pid=pid) == expected


def test_watchdog_interval_defaults_to_this_process() -> None:
    env = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(env) == 2.0

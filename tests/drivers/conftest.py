"""Fixtures for driver tests: the bundled simulators on 127.0.0.1 (port 0), a fake monotonic clock."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from drivers.bacnet.driver import BacnetDriver
from drivers.base import PointBase, Reading, is_failure_code
from drivers.modbus.driver import EndpointPool, ModbusTcpDriver
from sim.modbus_server import ModbusServer
from sim.typebank import build_type_unit


class FakeMonotonic:
    """Monotonic time that moves only when told to (drives reconnect backoff in tests)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def mono() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
async def pool(mono: FakeMonotonic) -> AsyncIterator[EndpointPool]:
    # jitter fixed at 1.0: backoff is exactly the doubling schedule, so tests know when it ends
    p = EndpointPool(backoff_initial_s=0.5, backoff_max_s=30.0, monotonic=mono, jitter=lambda: 1.0)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def type_server() -> AsyncIterator[ModbusServer]:
    """The simulator with the type-test unit 99 (every data type, both word orders)."""
    srv = ModbusServer(units=[build_type_unit()])
    await srv.start(host="127.0.0.1", port=0)
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture(autouse=True)
async def _no_leaked_tasks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """A Modbus driver test that leaves asyncio tasks behind fails (structured concurrency)."""
    if "modbus" not in request.node.nodeid:
        yield
        return
    before = asyncio.all_tasks()
    yield
    for _ in range(5):
        await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()]
    assert not leaked, f"leaked tasks: {[t.get_name() for t in leaked]}"


@pytest.fixture(autouse=True)
def _codes_in_vocabulary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reading a driver returns against the simulators carries a code of the failure vocabulary
    (WriteResult and DriverError check their own codes when built)."""
    for cls in (ModbusTcpDriver, BacnetDriver):
        original = cls.read

        async def read(self: Any, points: Sequence[PointBase], _original: Any = original) -> list[Reading]:
            readings: list[Reading] = await _original(self, points)
            bad = [r for r in readings if r.code is not None and not is_failure_code(r.code)]
            assert not bad, f"codes outside the vocabulary: {bad}"
            return readings

        monkeypatch.setattr(cls, "read", read)

"""Modbus RTU on a serial port (`protocol: modbus_rtu`, a real pseudo-terminal) and over TCP (`framer: rtu`,
a serial device server): the same planner, codecs, learning and envelope as Modbus TCP, against the
simulator's RTU bus (sim/modbus_rtu.py). Every behaviour test runs on both transports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import Quality
from drivers.modbus.driver import EndpointPool, ModbusTcpDriver
from drivers.modbus.options import ModbusDevice, ModbusPoint, ModbusRtuDevice
from sim.modbus_rtu import RtuSerialBus, RtuTcpFrontEnd, crc16
from sim.modbus_server import ModbusServer, UnitBank
from tests.drivers.conftest import FakeMonotonic

Bus = RtuTcpFrontEnd | RtuSerialBus


def rtu_device(
    bus: Bus, points: list[ModbusPoint], *, unit_id: int, **kw: Any
) -> ModbusDevice | ModbusRtuDevice:
    if isinstance(bus, RtuSerialBus):
        return ModbusRtuDevice(
            protocol="modbus_rtu", id=kw.pop("id", f"m{unit_id}"), port=bus.path, baudrate=bus.baudrate,
            parity="N", unit_id=unit_id, points=points, timeout_s=0.3, **kw,
        )  # fmt: skip
    assert bus.port
    return ModbusDevice(
        protocol="modbus", framer="rtu", id=kw.pop("id", f"m{unit_id}"), host="127.0.0.1", port=bus.port,
        unit_id=unit_id, points=points, timeout_s=0.3, **kw,
    )  # fmt: skip


def meter_bank(unit_id: int, kwh: int, volts: int = 2301) -> UnitBank:
    bank = UnitBank(unit_id=unit_id)
    bank.map("input", 0, [kwh >> 16, kwh & 0xFFFF, volts])
    bank.map("holding", 100, [260], writable=True)
    return bank


POINTS = [
    ModbusPoint(id="kwh", table="input", address=0, type="uint32", scale=0.01, cumulative=True),  # type: ignore[call-arg]
    ModbusPoint(id="volts", table="input", address=2, type="uint16", scale=0.1),  # type: ignore[call-arg]
]


# A Linux pseudo-terminal refuses PARENB (tcsetattr EINVAL), so the pty bus runs 8N1; parity is the
# UART's business, below what a pty can show.
@pytest.fixture(params=["serial", "tcp"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[tuple[ModbusServer, Bus]]:
    srv = ModbusServer(units=[meter_bank(1, 123456), meter_bank(2, 654321), meter_bank(3, 1)])
    serial = request.param == "serial"
    front: Bus = RtuSerialBus(srv, baudrate=9600, parity="N") if serial else RtuTcpFrontEnd(srv)
    async with front:
        yield srv, front


@pytest.fixture
async def drivers(pool: EndpointPool) -> AsyncIterator[Any]:
    made: list[ModbusTcpDriver] = []

    def make(dev: ModbusDevice | ModbusRtuDevice, **kw: Any) -> ModbusTcpDriver:
        d = ModbusTcpDriver(device=dev, pool=pool, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        await d.close()


def test_crc_of_the_spec_example() -> None:
    # Modbus over Serial Line V1.02, 6.2.2: read 2 holding registers at 0x006B of unit 0x11 -> CRC 76 87
    assert crc16(bytes.fromhex("1103006B0003")) == bytes.fromhex("7687")


@given(st.binary(min_size=1, max_size=64))
def test_a_frame_with_its_crc_checks_to_zero(frame: bytes) -> None:
    crc = crc16(frame)
    full = frame + crc
    # the CRC over a frame and its own CRC is 0 (the receiver's check)
    assert crc16(full) == b"\x00\x00"


async def test_several_units_share_one_connection_to_the_device_server(
    bus: tuple[ModbusServer, Bus], drivers: Any, pool: EndpointPool
) -> None:
    _srv, front = bus
    d1 = drivers(rtu_device(front, POINTS, unit_id=1))
    d2 = drivers(rtu_device(front, POINTS, unit_id=2))
    r1 = await d1.read(POINTS)
    r2 = await d2.read(POINTS)
    assert [(r.quality, r.value) for r in r1] == [
        (Quality.GOOD, pytest.approx(1234.56)), (Quality.GOOD, pytest.approx(230.1)),
    ]  # fmt: skip
    assert r2[0].value == pytest.approx(6543.21)
    assert len(pool.endpoints) == 1 and pool.endpoints[0].framer == "rtu"  # one bus, one lock


async def test_write_is_read_back_over_rtu(bus: tuple[ModbusServer, Bus], drivers: Any) -> None:
    srv, front = bus
    sp = ModbusPoint(id="sp", address=100, scale=0.1, writable=True, min=16, max=30)  # type: ignore[call-arg]
    drv = drivers(rtu_device(front, [sp], unit_id=2, readback_delay_s=0))
    result = await drv.write(sp, 27.0)
    assert result.ok, result
    assert srv.units[2].get("holding", 100) == [270]


async def test_a_dead_unit_times_out_backs_off_and_its_neighbours_still_read(
    bus: tuple[ModbusServer, Bus], drivers: Any, mono: FakeMonotonic
) -> None:
    srv, front = bus
    srv.set_offline(3)
    dead = drivers(rtu_device(front, POINTS, unit_id=3, dead_after=2, interval_s=5))
    live = drivers(rtu_device(front, POINTS, unit_id=1))
    for _ in range(2):
        rs = await dead.read(POINTS)
        assert {(r.quality, r.code) for r in rs} == {(Quality.BAD, "timeout")}
        assert (await live.read(POINTS))[0].quality is Quality.GOOD
    asked = srv.request_count
    rs = await dead.read(POINTS)  # backed off: answered at once, nothing goes on the bus
    assert {r.quality for r in rs} == {Quality.BAD} and srv.request_count == asked
    assert (await live.read(POINTS))[0].value == pytest.approx(1234.56)
    srv.set_offline(3, False)
    mono.advance(3600)
    assert (await dead.read(POINTS))[0].quality is Quality.GOOD


async def test_wrong_crc_and_line_noise_are_bad_readings_and_the_next_poll_recovers(
    bus: tuple[ModbusServer, Bus], drivers: Any, mono: FakeMonotonic
) -> None:
    _srv, front = bus
    drv = drivers(rtu_device(front, POINTS, unit_id=1))
    front.corrupt_next = True
    rs = await drv.read(POINTS)
    assert {r.quality for r in rs} == {Quality.BAD}
    assert {r.code for r in rs} <= {"timeout", "protocol"}
    mono.advance(60)
    rs = await drv.read(POINTS)
    assert rs[0].quality is Quality.GOOD, rs
    for noise in (b"\x00\xff\x13", b"\x01\x04\x04", b"\xfe\xfe\xfe"):
        front.garbage = noise  # line noise before the reply: pymodbus cannot find the frame in time
        rs = await drv.read(POINTS)
        assert {(r.quality, r.code) for r in rs} == {(Quality.BAD, "timeout")}, noise
        rs = await drv.read(POINTS)  # the connection was dropped with the noise: the next poll is clean
        assert rs[0].value == pytest.approx(1234.56), rs


async def test_an_exception_reply_over_rtu_is_learned_like_tcp(
    bus: tuple[ModbusServer, Bus], drivers: Any
) -> None:
    _srv, front = bus
    missing = ModbusPoint(id="missing", table="input", address=50)  # type: ignore[call-arg]
    pts = [*POINTS, missing]
    drv = drivers(rtu_device(front, pts, unit_id=1, max_gap=60))
    rs = await drv.read(pts)
    by = {r.point_id: r for r in rs}
    assert (by["missing"].quality, by["missing"].code) == (Quality.BAD, "modbus:2")
    assert by["kwh"].value == pytest.approx(1234.56)


async def test_a_serial_port_that_is_not_there_says_so(drivers: Any, tmp_path: Any) -> None:
    port = str(tmp_path / "ttyUSB9")
    dev = ModbusRtuDevice(
        protocol="modbus_rtu", id="gone", port=port, parity="N", unit_id=1, points=POINTS, timeout_s=0.3,
    )  # fmt: skip
    rs = await drivers(dev).read(POINTS)
    assert {(r.quality, r.code) for r in rs} == {(Quality.BAD, "unreachable")}
    # Not "connection refused" (what pymodbus's False meant for TCP): the port and why.
    assert all(
        f"{port} cannot open the serial port: No such file or directory" in (r.detail or "") for r in rs
    )

"""The CJ/T 188 meter simulator on a real pseudo-terminal, read with the driver's codec (written
separately): a cold-water meter in both DI byte orders, a heat meter's every quantity, a wrong checksum."""

from __future__ import annotations

import asyncio
import os
import tty

import pytest

from drivers.cjt188.codec import decode_901f, read_request, split_frame
from sim.cjt188_meter import Cjt188Bus, FlowMeter

HEAT = {
    "settlement_heat": 10.0, "heat": 1234.56, "heat_power": 15.5, "flow_rate": 1.2345, "flow": 987.65,
    "supply_temp": 55.2, "return_temp": 40.1, "hours": 8760.0,
}  # fmt: skip


async def exchange(path: str, request: bytes, timeout: float = 2.0) -> bytes:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        tty.setraw(fd)
        os.write(fd, request)
        buf = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                buf += os.read(fd, 256)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                continue
            if split_frame(buf)[1] is not None:
                break
        return buf
    finally:
        os.close(fd)


async def test_water_and_heat_meters_read_with_the_codec() -> None:
    meters = [
        FlowMeter("00000000001234", 0x10, {"flow": 12345.67, "settlement_flow": 12000.0}),
        FlowMeter("00000000001235", 0x10, {"flow": 1.5}, di_high_first=False),
        FlowMeter("00000000005678", 0x20, dict(HEAT)),
    ]
    async with Cjt188Bus(meters, baudrate=9600, turnaround_s=0) as bus:
        _u, f = split_frame(await exchange(bus.path, read_request(0x10, "00000000001234")))
        assert f is not None
        assert decode_901f(f).values == pytest.approx({"flow": 12345.67, "settlement_flow": 12000.0})
        req = read_request(0x10, "00000000001235", di_order="low_first")
        _u, f = split_frame(await exchange(bus.path, req))
        assert f is not None and decode_901f(f, di_order="low_first").values["flow"] == pytest.approx(1.5)
        _u, f = split_frame(await exchange(bus.path, read_request(0x20, "00000000005678")))
        assert f is not None
        r = decode_901f(f)
        assert r.values == pytest.approx(HEAT) and r.units["heat"] == "kWh"


async def test_wrong_checksum_gets_no_reply() -> None:
    async with Cjt188Bus([FlowMeter("00000000001234")], baudrate=9600, turnaround_s=0) as bus:
        bad = bytearray(read_request(0x10, "00000000001234"))
        bad[-2] ^= 0xFF
        assert await exchange(bus.path, bytes(bad), timeout=0.3) == b""
        assert bus.bad_frames == 1

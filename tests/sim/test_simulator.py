"""The whole simulator over a real socket: register map, writes into the model, stepping task, CLI glue."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from sim.bench import bench_value
from sim.building import Mode
from sim.encoding import decode
from sim.modbus_map import AC_UNITS, REGISTER_MAP
from sim.runner import Simulator, add_arguments, run_from_args
from sim.typebank import ENTRIES, registers_of
from tests.sim.rawclient import RawClient

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 7, 15, 13, 59, 0, tzinfo=TZ)


def _unit(ac: str) -> int:
    return next(u for u, a in AC_UNITS.items() if a == ac)


def _s16(r: int) -> int:
    return r - 0x10000 if r & 0x8000 else r


async def test_meters_and_ac_read_as_documented() -> None:
    async with Simulator(seed=1, start=START, speed=0) as sim:
        b = sim.building
        assert sim.modbus_port
        c = await RawClient.connect(sim.modbus_port)
        try:
            # floor lighting sub-meter 1F: uint32 x0.01 kWh, low word first
            lo, hi, p = (await c.read(2, 3, 0, 3)).registers()
            assert (hi << 16 | lo) == math.floor(b.meters["f1-ls"].reading * 100)
            assert _s16(p) == round(b.meters["f1-ls"].rate * 10)
            # main meter: float32 big word order in input registers; gap between 10 and 256
            regs = (await c.read(1, 4, 256, 2)).registers()
            assert decode(regs, "float32") == pytest.approx(b.meters["main"].reading, abs=0.02)
            power = decode((await c.read(1, 4, 4, 2)).registers(), "float32")
            assert power == pytest.approx(b.meters["main"].rate, rel=1e-6)
            assert (await c.read(1, 4, 0, 12)).exception == 2
            # data-centre meter: uint32 x0.01 big word order; water: uint32 x0.001 m³
            hi, lo = (await c.read(8, 3, 0, 2)).registers()
            assert (hi << 16 | lo) == math.floor(b.meters["dc"].reading * 100)
            hi, lo = (await c.read(10, 3, 0, 2)).registers()
            assert (hi << 16 | lo) == math.floor(b.meters["water"].reading * 1000)
            # AC unit f2-ac1: on, cool, 26.0 (morning script), room temperature x10
            u = _unit("f2-ac1")
            assert (await c.read(u, 3, 0, 3)).registers() == [1, 1, 260]
            room = _s16((await c.read(u, 4, 0, 1)).registers()[0]) / 10
            assert room == pytest.approx(b.ac_units["f2-ac1"].room_temp, abs=0.05)
            out = _s16((await c.read(17, 4, 0, 1)).registers()[0]) / 10
            assert out == pytest.approx(b.outdoor_temp, abs=0.05) and out > 28
            # the occupant script, seen through the registers after a step
            sim.step_to(datetime(2026, 7, 15, 14, 0, 5, tzinfo=TZ))
            assert (await c.read(u, 3, 2, 1)).registers() == [220]
            # lights: all on in office hours (coils) and the feedback inputs agree
            assert (await c.read(20, 1, 0, 6)).bits(6) == [True] * 6
            assert (await c.read(20, 2, 0, 6)).bits(6) == [True] * 6
        finally:
            await c.close()


async def test_writes_reach_the_model_and_bad_values_are_refused() -> None:
    async with Simulator(seed=1, start=START, speed=0, script=False) as sim:
        b = sim.building
        assert sim.modbus_port
        c = await RawClient.connect(sim.modbus_port)
        try:
            u = _unit("f3-ac2")
            assert (await c.read(u, 3, 0, 2)).registers() == [0, 0]  # off
            assert (await c.write_register(u, 2, 235)).exception is None
            assert b.ac_units["f3-ac2"].setpoint == 23.5
            assert (await c.write_register(u, 1, 2)).exception is None  # heat, powers on
            assert b.ac_units["f3-ac2"].power and b.ac_units["f3-ac2"].mode == Mode.HEAT
            assert (await c.read(u, 3, 0, 3)).registers() == [1, 2, 235]
            # out of the device range / not an enumeration value: exception 3, nothing changes
            assert (await c.write_register(u, 2, 321)).exception == 3
            assert (await c.write_register(u, 2, 0xFF9C)).exception == 3  # -10.0 °C
            assert (await c.write_register(u, 1, 4)).exception == 3
            assert (await c.write_register(u, 0, 2)).exception == 3
            assert (await c.write_registers(u, 0, [1, 1, 400])).exception == 3
            assert b.ac_units["f3-ac2"].setpoint == 23.5 and b.ac_units["f3-ac2"].mode == Mode.HEAT
            assert (await c.read(u, 3, 0, 3)).registers() == [1, 2, 235]
            # FC16 over power, mode, setpoint at once
            assert (await c.write_registers(u, 0, [1, 1, 260])).exception is None
            unit = b.ac_units["f3-ac2"]  # a fresh name: mypy narrowed the earlier expression to HEAT
            assert unit.mode == Mode.COOL and unit.setpoint == 26.0
            # power off: mode register reads 0, the remembered mode survives
            assert (await c.write_register(u, 0, 0)).exception is None
            assert (await c.read(u, 3, 0, 3)).registers() == [0, 0, 260]
            assert b.ac_units["f3-ac2"].mode == Mode.COOL
            # read-only registers: exception 2
            assert (await c.write_register(2, 2, 5)).exception == 2
            assert (await c.write_register(u, 3, 5)).exception == 2
            # lights
            assert (await c.write_coil(20, 5, True)).exception is None
            assert b.lights["f3-l2"].on
            assert (await c.read(20, 2, 5, 1)).bits(1) == [True]
            power_before = b.meters["f3-ls"].rate
            assert (await c.write_coils(20, 4, [True, False])).exception is None
            assert b.lights["f3-l1"].on and not b.lights["f3-l2"].on
            assert b.meters["f3-ls"].rate == pytest.approx(power_before)
            p = (await c.read(4, 3, 2, 1)).registers()[0]
            assert p == round(b.meters["f3-ls"].rate * 10)
            # the API side shows up in the registers at once too
            b.set_setpoint("f3-ac2", 27.0)
            assert (await c.read(u, 3, 2, 1)).registers() == [270]
        finally:
            await c.close()


async def test_type_bank_and_bench_units_served() -> None:
    async with Simulator(seed=0, start=START, speed=0, bench_units=2, bench_points=3) as sim:
        assert sim.modbus_port and 99 in sim.units and {100, 101} <= set(sim.units)
        c = await RawClient.connect(sim.modbus_port)
        try:
            e = next(e for e in ENTRIES if e.table == "input" and e.type == "float64")
            assert (await c.read(99, 4, e.address, 4)).registers() == registers_of(e)
            regs = (await c.read(101, 3, 0, 6)).registers()
            t = START.timestamp()
            for i in range(3):
                assert decode(regs[2 * i : 2 * i + 2], "float32") == pytest.approx(
                    bench_value(101, i, t), rel=1e-6
                )
            assert (await c.read(101, 3, 6, 1)).exception == 2
        finally:
            await c.close()


async def test_stepping_task_advances_sim_time() -> None:
    # speed 7200: 14:00 arrives about 0.5 s after start; wait for the event, not for a wall-clock figure
    async with Simulator(seed=0, start=START, speed=7200) as sim:
        for _ in range(100):
            if any(name == "too-warm" for _t, name in sim.building.fired):
                break
            await asyncio.sleep(0.05)
        assert any(name == "too-warm" for _t, name in sim.building.fired)
        assert sim.building.now > START and sim.now() >= sim.building.now
        assert sim.modbus_port
        c = await RawClient.connect(sim.modbus_port)
        try:
            assert (await c.read(_unit("f2-ac1"), 3, 2, 1)).registers() == [220]
        finally:
            await c.close()


def test_register_map_has_no_overlaps() -> None:
    seen: dict[tuple[int, str, int], str] = {}
    for reg in REGISTER_MAP:
        for i in range(reg.count):
            key = (reg.unit, reg.table, reg.address + i)
            assert key not in seen, (reg.meaning, seen.get(key))
            seen[key] = reg.meaning


async def test_run_from_args_starts_and_stops(caplog: pytest.LogCaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    from tests.drivers.test_bacnet_driver import free_udp_port

    # `sim` serves BACnet too by default, on a fixed UDP port: pick a free one so parallel runs never collide
    args = parser.parse_args(
        ["--port", "0", "--speed", "60", "--start", "2026-07-15T08:00:00+08:00", "--seed", "3",
         "--bacnet-port", str(free_udp_port())]
    )  # fmt: skip
    assert args.bacnet is True
    assert args.start == datetime(2026, 7, 15, 8, 0, tzinfo=TZ)
    with caplog.at_level("INFO", logger="sim"):
        task = asyncio.create_task(run_from_args(args))
        for _ in range(100):
            if any("modbus simulator on" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    line = next(r.getMessage() for r in caplog.records if "modbus simulator on" in r.getMessage())
    assert line.startswith("modbus simulator on 127.0.0.1:") and "units 1,2,3" in line and "99" in line
    with pytest.raises(SystemExit):
        parser.parse_args(["--start", "2026-07-15T08:00:00"])  # no UTC offset

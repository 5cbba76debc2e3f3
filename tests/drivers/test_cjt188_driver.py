"""The CJ/T 188 driver against the simulator's meters on a real pseudo-terminal: every quantity of every
meter type in both DI byte orders, heat units converted to kWh, a dead meter backed off while the others
read, garbage, a wrong checksum and a broken frame on the line; and one bus shared with DL/T 645 meters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from drivers import serialbus
from drivers.base import Quality
from drivers.cjt188.driver import Cjt188Driver
from drivers.cjt188.options import HEAT_ONLY, QUANTITIES, WATER_ONLY, Cjt188Device, Cjt188Point
from drivers.dlt645.driver import Dlt645Driver
from drivers.dlt645.options import Dlt645Device, Dlt645Point
from drivers.serialbus import MeterPool
from sim.cjt188_meter import Cjt188Bus, FlowMeter
from sim.dlt645_meter import Meter
from sim.rs485 import MeterBus
from tests.drivers.conftest import FakeMonotonic

WATER = {"flow": 12345.67, "settlement_flow": 12000.5}
HEAT = {
    "settlement_heat": 10.0, "heat": 1234.56, "heat_power": 15.5, "flow_rate": 1.2345, "flow": 987.65,
    "supply_temp": 55.2, "return_temp": 40.1, "hours": 8760.0,
}  # fmt: skip
TYPES = {"cold_water": 0x10, "hot_water": 0x11, "gas": 0x30, "heat": 0x20, "heat_cooling": 0x21}
ALL = [Cjt188Point(id=q, quantity=q) for q in QUANTITIES if q not in WATER_ONLY]  # type: ignore[arg-type]
FLOW = [
    Cjt188Point(id="flow", quantity="flow", cumulative=True),
    Cjt188Point(id="s", quantity="settlement_flow"),
]


def device(path: str, address: str, meter_type: str, points: list[Cjt188Point], **kw: Any) -> Cjt188Device:
    # Linux ptys refuse parity (tcsetattr EINVAL): the pty bus runs 8N1
    return Cjt188Device(
        protocol="cjt188", id=kw.pop("id", f"w{address[-4:]}"), port=path, address=address,
        meter_type=meter_type, baudrate=kw.pop("baudrate", 9600), parity="N", timeout_s=0.3, points=points,
        **kw,
    )  # fmt: skip


@pytest.fixture
async def line() -> AsyncIterator[Cjt188Bus]:
    meters = [
        FlowMeter("00000000001234", 0x10, dict(WATER)),
        FlowMeter("00000000005678", 0x10, dict(WATER), di_high_first=False),
        FlowMeter("00000000009999", 0x10, dict(WATER)),
    ]
    meters += [
        FlowMeter(
            f"000000000020{i:02d}", t, dict(HEAT if t in (0x20, 0x21) else WATER), di_high_first=i % 2 == 0
        )
        for i, t in enumerate(TYPES.values())
    ]
    async with Cjt188Bus(meters, baudrate=9600, turnaround_s=0.01) as bus:
        yield bus


@pytest.fixture
async def pool(mono: FakeMonotonic) -> AsyncIterator[MeterPool]:
    p = MeterPool(monotonic=mono, jitter=lambda: 1.0)
    yield p
    await p.close()


@pytest.fixture
async def drivers(pool: MeterPool) -> AsyncIterator[Any]:
    made: list[Any] = []

    def make(dev: Any) -> Any:
        d = (Cjt188Driver if isinstance(dev, Cjt188Device) else Dlt645Driver)(device=dev, pool=pool)
        made.append(d)
        return d

    yield make
    for d in made:
        await d.close()


async def test_every_quantity_of_every_meter_type_in_both_di_orders(line: Cjt188Bus, drivers: Any) -> None:
    for i, name in enumerate(TYPES):
        heat = name.startswith("heat")
        points = ALL if heat else [p for p in ALL + FLOW[1:] if p.quantity not in HEAT_ONLY]
        order = "high_first" if i % 2 == 0 else "low_first"
        drv = drivers(device(line.path, f"000000000020{i:02d}", name, points, di_order=order))
        rs = await drv.read(points)
        want = HEAT if heat else WATER
        for p, r in zip(points, rs, strict=True):
            assert r.quality is Quality.GOOD, (name, r)
            assert r.value == pytest.approx(want[p.quantity]), (name, p.quantity)


@pytest.mark.parametrize(("code", "factor"), [(0x08, 1000.0), (0x11, 1e6 / 3600), (0x0E, 1e3 / 3600)])
async def test_heat_in_mwh_gj_and_mj_reads_in_kwh(
    line: Cjt188Bus, drivers: Any, code: int, factor: float
) -> None:
    line.meters[3 + 3].heat_unit = code  # the "heat" meter (T 20)
    drv = drivers(device(line.path, "00000000002003", "heat", ALL, di_order="low_first"))
    rs = {r.point_id: r for r in await drv.read(ALL)}
    assert rs["heat"].value == pytest.approx(HEAT["heat"] * factor)
    assert rs["settlement_heat"].value == pytest.approx(HEAT["settlement_heat"] * factor)
    assert rs["flow"].value == pytest.approx(HEAT["flow"])


async def test_the_wrong_di_order_is_an_error_reply_and_writes_are_refused(
    line: Cjt188Bus, drivers: Any
) -> None:
    drv = drivers(device(line.path, "00000000005678", "cold_water", FLOW))  # the meter sends 1F 90
    rs = await drv.read(FLOW)
    assert {(r.quality, r.code) for r in rs} == {(Quality.BAD, "no_value")}
    result = await drv.write(FLOW[0], 1.0)
    assert (result.ok, result.code) == (False, "not_writable")


async def test_a_dead_meter_is_backed_off_and_its_neighbours_read(
    line: Cjt188Bus, drivers: Any, mono: FakeMonotonic
) -> None:
    line.meters[2].offline = True
    dead = drivers(device(line.path, "00000000009999", "cold_water", FLOW, dead_after=2, interval_s=60))
    live = drivers(device(line.path, "00000000001234", "cold_water", FLOW))
    for _ in range(2):
        assert {(r.quality, r.code) for r in await dead.read(FLOW)} == {(Quality.BAD, "timeout")}
        assert (await live.read(FLOW))[0].value == pytest.approx(WATER["flow"])
    asked = line.requests + line.bad_frames
    rs = await dead.read(FLOW)  # backed off: answered at once, nothing on the bus
    assert {r.quality for r in rs} == {Quality.BAD} and "backed off" in (rs[0].detail or "")
    assert line.requests + line.bad_frames == asked
    assert (await live.read(FLOW))[1].value == pytest.approx(WATER["settlement_flow"])
    line.meters[2].offline = False
    mono.advance(3600)
    assert (await dead.read(FLOW))[0].quality is Quality.GOOD


async def test_an_echoing_adapter_and_noise_like_a_frame_do_not_hide_the_reply(
    line: Cjt188Bus, drivers: Any
) -> None:
    """An adapter that echoes the request puts a well-formed frame (ours) on the line first; noise with a
    68H and a plausible type byte parses as a broken frame: both are skipped and the meter's reply read."""
    meter = drivers(device(line.path, "00000000001234", "cold_water", FLOW))
    line.echo = True
    assert (await meter.read(FLOW))[0].value == pytest.approx(WATER["flow"])
    line.echo = False
    line.garbage = b"\x68\x20" + bytes(11)  # T=20H, L=0, then 00 where CS 16 should be
    assert (await meter.read(FLOW))[0].value == pytest.approx(WATER["flow"])
    line.corrupt_next = True  # no good reply behind it: the broken frame is the answer
    rs = await meter.read(FLOW)
    assert {r.code for r in rs} == {"protocol"} and "checksum" in (rs[0].detail or "")


async def test_an_adapter_pulled_out_closes_the_port_and_reads_unreachable(
    line: Cjt188Bus, drivers: Any
) -> None:
    """A hang-up leaves the port's descriptor readable for ever: the bus must let go of it (a reader left
    on it spins the event loop) and the next poll says why, at once."""
    meter = drivers(device(line.path, "00000000001234", "cold_water", FLOW))
    assert (await meter.read(FLOW))[0].quality is Quality.GOOD
    bus = serialbus._buses[line.path]
    assert bus.is_open
    await line.stop()  # the pty's far end goes away, as a USB-RS485 adapter pulled out
    for _ in range(50):
        if not bus.is_open:
            break
        await asyncio.sleep(0.01)
    assert not bus.is_open
    rs = await meter.read(FLOW)
    assert {(r.quality, r.code) for r in rs} == {(Quality.BAD, "unreachable")}, rs


async def test_wrong_checksum_garbage_and_broken_frames_are_bad_readings_then_recovery(
    line: Cjt188Bus, drivers: Any
) -> None:
    drv = drivers(device(line.path, "00000000001234", "cold_water", FLOW))
    line.corrupt_next = True
    rs = await drv.read(FLOW)
    assert {(r.quality, r.code) for r in rs} == {(Quality.BAD, "protocol")}
    assert "checksum" in (rs[0].detail or "")
    line.garbage = b"\x00\x13\xff\x68\x01\x68"  # noise, with stray 68s, before the reply
    assert [r.quality for r in await drv.read(FLOW)] == [Quality.GOOD, Quality.GOOD]
    line.truncate_next = True  # the reply breaks off mid-frame
    assert {(r.quality, r.code) for r in await drv.read(FLOW)} == {(Quality.BAD, "timeout")}
    line.meters[0].values["flow"] = 12345.6
    assert (await drv.read(FLOW))[0].value == pytest.approx(12345.6)


async def test_dlt645_and_cjt188_meters_share_one_port(drivers: Any) -> None:
    kwh = [Dlt645Point(id="kwh", di="00010000", cumulative=True)]  # type: ignore[call-arg]
    async with MeterBus(
        [Meter("000000001234", {0x00010000: 4321.5})],
        [FlowMeter("00000000005678", 0x10, dict(WATER))],
        baudrate=9600,
        turnaround_s=0.01,
    ) as bus:
        elec = drivers(Dlt645Device(protocol="dlt645", id="e", port=bus.path, address="000000001234",
                                    baudrate=9600, parity="N", timeout_s=0.3, points=kwh))  # fmt: skip
        water = drivers(device(bus.path, "00000000005678", "cold_water", FLOW))
        assert elec._bus is water._bus  # one handle, one lock
        for _ in range(2):
            assert (await elec.read(kwh))[0].value == pytest.approx(4321.5)
            assert (await water.read(FLOW))[0].value == pytest.approx(WATER["flow"])
        other = drivers(device(bus.path, "00000000005679", "cold_water", FLOW, id="x", baudrate=2400))
        rs = await other.read(FLOW)  # the port is open at 9600 for the others
        assert {r.code for r in rs} == {"config"} and "9600" in (rs[0].detail or "")
        assert bus.path in serialbus.open_ports()

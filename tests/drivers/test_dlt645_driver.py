"""The DL/T 645 driver against the simulator's meters on a real pseudo-terminal: every data identifier,
a dead meter backed off while the others read, a wrong checksum, garbage and a broken frame on the line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from drivers.base import Quality
from drivers.dlt645.codec import DATA_IDS
from drivers.dlt645.driver import BusPool, Dlt645Driver
from drivers.dlt645.options import Dlt645Device, Dlt645Point
from sim.dlt645_meter import Dlt645Bus, Meter
from tests.drivers.conftest import FakeMonotonic

VALUES = {
    0x00000000: -12.5, 0x00010000: 123456.78, 0x00010100: 1.01, 0x00010200: 2.02, 0x00010300: 3.03,
    0x00010400: 4.04, 0x00020000: 5.5, 0x02010100: 230.1, 0x02010200: 229.9, 0x02010300: 231.0,
    0x02020100: -1.5, 0x02020200: 2.25, 0x02020300: 3.125, 0x02030000: 1.2345, 0x02030100: -0.4321,
    0x02060000: 0.985, 0x02800002: 49.98,
}  # fmt: skip
ALL = [Dlt645Point(id=f"p{di:08x}", di=f"{di:08X}") for di in sorted(DATA_IDS)]  # type: ignore[call-arg]
KWH = [Dlt645Point(id="kwh", di="00010000", cumulative=True), Dlt645Point(id="v", di="02010100")]  # type: ignore[call-arg]


def meter(bus: Dlt645Bus, address: str, points: list[Dlt645Point], **kw: Any) -> Dlt645Device:
    # Linux ptys refuse parity (tcsetattr EINVAL): the pty bus runs 8N1
    return Dlt645Device(
        protocol="dlt645", id=kw.pop("id", f"m{address[-4:]}"), port=bus.path, address=address,
        baudrate=9600, parity="N", timeout_s=0.3, points=points, **kw,
    )  # fmt: skip


@pytest.fixture
async def line() -> AsyncIterator[Dlt645Bus]:
    meters = [Meter("000000001234", dict(VALUES)), Meter("000000005678", dict(VALUES)), Meter("000000009999")]
    async with Dlt645Bus(meters, baudrate=9600, turnaround_s=0.01) as bus:
        yield bus


@pytest.fixture
async def pool(mono: FakeMonotonic) -> AsyncIterator[BusPool]:
    p = BusPool(monotonic=mono, jitter=lambda: 1.0)
    yield p
    await p.close()


@pytest.fixture
async def drivers(pool: BusPool) -> AsyncIterator[Any]:
    made: list[Dlt645Driver] = []

    def make(dev: Dlt645Device) -> Dlt645Driver:
        d = Dlt645Driver(device=dev, pool=pool)
        made.append(d)
        return d

    yield make
    for d in made:
        await d.close()


async def test_every_data_identifier_reads(line: Dlt645Bus, drivers: Any) -> None:
    drv = drivers(meter(line, "000000001234", ALL))
    rs = await drv.read(ALL)
    for p, r in zip(ALL, rs, strict=True):
        assert r.quality is Quality.GOOD, r
        assert r.value == pytest.approx(VALUES[int(p.di, 16)]), p.di


async def test_a_dead_meter_is_backed_off_and_its_neighbours_read(
    line: Dlt645Bus, drivers: Any, mono: FakeMonotonic
) -> None:
    line.meters[2].offline = True
    dead = drivers(meter(line, "000000009999", KWH, dead_after=2, interval_s=60))
    live = drivers(meter(line, "000000005678", KWH))
    for _ in range(2):
        assert {(r.quality, r.code) for r in await dead.read(KWH)} == {(Quality.BAD, "timeout")}
        assert (await live.read(KWH))[0].value == pytest.approx(123456.78)
    asked = line.requests + line.bad_frames
    rs = await dead.read(KWH)  # backed off: answered at once, nothing on the bus
    assert {r.quality for r in rs} == {Quality.BAD} and "backed off" in (rs[0].detail or "")
    assert line.requests + line.bad_frames == asked
    assert (await live.read(KWH))[1].value == pytest.approx(230.1)
    line.meters[2].offline = False
    line.meters[2].values = dict(VALUES)
    mono.advance(3600)
    assert (await dead.read(KWH))[0].quality is Quality.GOOD


async def test_wrong_checksum_garbage_and_broken_frames_are_bad_readings_then_recovery(
    line: Dlt645Bus, drivers: Any
) -> None:
    drv = drivers(meter(line, "000000001234", KWH))
    line.corrupt_next = True
    rs = await drv.read(KWH)
    assert (rs[0].quality, rs[0].code) == (Quality.BAD, "protocol") and "checksum" in (rs[0].detail or "")
    assert rs[1].quality is Quality.GOOD  # the next DI of the same poll reads
    line.garbage = b"\x00\x13\xff\x68\x01"  # noise, with a stray 68, before the reply
    rs = await drv.read(KWH)
    assert [r.quality for r in rs] == [Quality.GOOD, Quality.GOOD]  # the noise is skipped
    line.truncate_next = True  # the reply breaks off mid-frame
    rs = await drv.read(KWH)
    assert (rs[0].quality, rs[0].code) == (Quality.BAD, "timeout")
    rs = await drv.read(KWH)
    assert [r.quality for r in rs] == [Quality.GOOD, Quality.GOOD]


async def test_an_identifier_the_meter_lacks_is_no_value_and_writes_are_refused(
    line: Dlt645Bus, drivers: Any
) -> None:
    del line.meters[0].values[0x02010100]
    drv = drivers(meter(line, "000000001234", KWH))
    rs = await drv.read(KWH)
    assert rs[0].quality is Quality.GOOD
    assert (rs[1].quality, rs[1].code) == (Quality.BAD, "no_value")
    result = await drv.write(KWH[0], 1.0)
    assert (result.ok, result.code) == (False, "not_writable")


async def test_a_port_that_is_not_there_is_one_plain_reason_on_every_point(
    drivers: Any, tmp_path: Any
) -> None:
    port = str(tmp_path / "ttyUSB9")
    dev = Dlt645Device(protocol="dlt645", id="gone", port=port, address="000000001234", points=KWH)
    rs = await drivers(dev).read(KWH)
    # Not "skipped: ...": no point was tried; pyserial's text (path and errno twice) reduced to the reason.
    assert [(r.quality, r.code, r.detail) for r in rs] == [
        (Quality.BAD, "unreachable", f"{port}: cannot open the serial port: No such file or directory")
    ] * 2

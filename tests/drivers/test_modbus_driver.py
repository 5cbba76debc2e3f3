"""The Modbus TCP driver against the bundled simulator, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from structlog.testing import capture_logs

from drivers.base import Quality
from drivers.modbus.driver import EndpointPool, ModbusTcpDriver
from drivers.modbus.options import ModbusDevice, ModbusPoint
from drivers.modbus.planner import per_point_plan
from sim.encoding import encode as sim_encode
from sim.modbus_server import ModbusException, ModbusServer, UnitBank
from sim.typebank import ENTRIES, SCRATCH_HOLDING, TYPE_TEST_UNIT, TypeEntry
from tests.drivers.conftest import FakeMonotonic


def point_of(e: TypeEntry) -> ModbusPoint:
    kw: dict[str, Any] = {}
    if e.bit is not None:
        kw["bit"] = e.bit
    if e.length is not None:
        kw["length"] = e.length
    return ModbusPoint(
        id=f"{e.table}-{e.address}-{e.type}-{e.bit}",
        table=e.table,
        address=e.address,
        type=e.type,  # type: ignore[arg-type]
        word_order=e.word_order,
        byte_order=e.byte_order,
        **kw,
    )


def device(port: int, points: list[ModbusPoint], *, unit_id: int = TYPE_TEST_UNIT, **kw: Any) -> ModbusDevice:
    return ModbusDevice(
        protocol="modbus",
        id=kw.pop("id", "dev"),
        host="127.0.0.1",
        port=port,
        unit_id=unit_id,
        points=points,
        **kw,
    )


def hp(pid: str, address: int, type_: str = "uint16", **kw: Any) -> ModbusPoint:
    if kw.get("writable") and type_ not in ("bit", "bool"):
        # check wants bounds on writable numeric points; these tests are about the driver, not the envelope
        kw.setdefault("min", -1e30)
        kw.setdefault("max", 1e30)
    return ModbusPoint(id=pid, address=address, type=type_, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def drivers(pool: EndpointPool) -> Any:
    """Factory of drivers that are closed at the end of the test."""
    made: list[ModbusTcpDriver] = []

    def make(dev: ModbusDevice, **kw: Any) -> ModbusTcpDriver:
        d = ModbusTcpDriver(device=dev, pool=pool, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        await d.close()


# --- reading ------------------------------------------------------------------------------------------


async def test_every_typebank_entry_decodes_to_the_simulator_value(
    type_server: ModbusServer, drivers: Any
) -> None:
    points = [point_of(e) for e in ENTRIES]
    assert {p.type for p in points} == {
        "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bit", "bool", "string"
    }  # fmt: skip
    assert {(p.word_order, p.byte_order) for p in points if p.type in ("int32", "float32")} == {
        ("big", "big"), ("little", "big"), ("big", "little"), ("little", "little")
    }  # fmt: skip
    assert type_server.port
    drv = drivers(device(type_server.port, points, max_gap=8))
    before = type_server.request_count
    readings = await drv.read(points)
    # block A and B of holding and input, two coil and two discrete runs: 8 requests for 138 points
    assert type_server.request_count - before == 8
    assert [r.point_id for r in readings] == [p.id for p in points]
    for e, r in zip(ENTRIES, readings, strict=True):
        assert e.matches(r.value), f"{r.point_id}: got {r.value!r}, simulator holds {e.value!r}"
        if isinstance(e.value, float) and not math.isfinite(e.value):
            assert r.quality is Quality.UNCERTAIN and r.code == ("nan" if math.isnan(e.value) else "inf")
        else:
            assert r.quality is Quality.GOOD and r.code is None, r
        assert r.ts.tzinfo is not None


async def test_illegal_address_on_a_bridged_gap_splits_and_is_remembered(
    type_server: ModbusServer, drivers: Any
) -> None:
    # 120..199 are unmapped: a block bridging them gets exception 2
    points = [hp("pad", 110), hp("b0", 200), hp("b1", 201, "int16")]
    assert type_server.port
    drv = drivers(device(type_server.port, points, max_gap=100))
    n0 = type_server.request_count
    readings = await drv.read(points)
    assert [(r.value, r.quality) for r in readings] == [
        (0, Quality.GOOD),
        (42, Quality.GOOD),
        (-300, Quality.GOOD),
    ]
    assert type_server.request_count - n0 == 3  # refused block, then its two runs
    n1 = type_server.request_count
    readings = await drv.read(points)
    assert all(r.quality is Quality.GOOD for r in readings)
    assert type_server.request_count - n1 == 2  # the split is remembered


async def test_unmapped_point_is_bad_and_retried_rarely(type_server: ModbusServer, drivers: Any) -> None:
    points = [hp("ok", 0, "int16"), hp("hole", 150), hp("ok2", 1, "int16")]
    assert type_server.port
    drv = drivers(device(type_server.port, points, max_gap=0), retry_bad_every=3)
    sent = []
    for _ in range(4):
        n = type_server.request_count
        readings = await drv.read(points)
        sent.append(type_server.request_count - n)
        by_id = {r.point_id: r for r in readings}
        assert by_id["ok"].value == -12345 and by_id["ok2"].value == -1
        assert by_id["hole"].quality is Quality.BAD and by_id["hole"].code == "modbus:2"
        assert by_id["hole"].value is None and by_id["hole"].detail
    assert sent == [2, 1, 2, 1]  # the bad point is asked again only every third poll
    # once the device maps it, the next retry reads it and it stays good
    type_server.units[TYPE_TEST_UNIT].map("holding", 150, [7])
    values = [[r.value for r in await drv.read(points)] for _ in range(3)]
    assert values[-2:] == [[-12345, 7, -1], [-12345, 7, -1]]


async def test_gateway_exception_is_a_bad_reading_and_skips_the_rest(
    type_server: ModbusServer, drivers: Any
) -> None:
    points = [hp("a", 0), hp("c", 3, "bool", table="coil")]
    assert type_server.port
    drv = drivers(device(type_server.port, points, unit_id=42))  # no such unit behind the "gateway"
    n = type_server.request_count
    readings = await drv.read(points)
    assert [(r.quality, r.code) for r in readings] == [(Quality.BAD, "modbus:11")] * 2
    assert type_server.request_count - n == 1  # the second block is not sent after exception 11


async def test_per_point_plan_reads_the_same_values_with_one_request_per_point(
    type_server: ModbusServer, drivers: Any
) -> None:
    points = [point_of(e) for e in ENTRIES if e.table == "holding" and e.address < 40]
    assert type_server.port
    planned = drivers(device(type_server.port, points, id="planned"))
    naive = drivers(device(type_server.port, points, id="naive"), planner=per_point_plan)
    n = type_server.request_count
    a = await planned.read(points)
    assert type_server.request_count - n == 1
    n = type_server.request_count
    b = await naive.read(points)
    assert type_server.request_count - n == len(points)
    assert [r.value for r in a] == [r.value for r in b]


async def test_units_behind_one_gateway_share_one_connection(
    type_server: ModbusServer, pool: EndpointPool, drivers: Any
) -> None:
    bank = UnitBank(unit_id=7)
    bank.map("input", 0, [1234])
    type_server.add_unit(bank)
    assert type_server.port
    d99 = drivers(device(type_server.port, [hp("x", 0, "int16")], id="d99"))
    d7 = drivers(device(type_server.port, [hp("y", 0, table="input")], unit_id=7, id="d7"))
    r99, r7 = await asyncio.gather(d99.read(d99.device.points), d7.read(d7.device.points))
    assert r99[0].value == -12345 and r7[0].value == 1234
    assert len(pool.endpoints) == 1 and pool.endpoints[0].users == 2
    await d99.close()
    assert len(pool.endpoints) == 1  # still used by d7
    assert (await d7.read(d7.device.points))[0].value == 1234
    await d7.close()
    assert pool.endpoints == []


async def test_points_the_driver_cannot_read_are_bad_not_raised(
    type_server: ModbusServer, drivers: Any
) -> None:
    wide = hp("wide", 0, "float64")
    assert type_server.port
    drv = drivers(device(type_server.port, [wide, hp("ok", 0, "int16")], max_registers=2))
    readings = await drv.read([wide, hp("ok", 0, "int16")])
    assert (readings[0].quality, readings[0].code) == (Quality.BAD, "config")
    assert readings[1].value == -12345
    assert await drv.read([]) == []


# --- failures and recovery ------------------------------------------------------------------------------


async def test_closed_port_is_unreachable_with_backoff(
    closed_port: int, pool: EndpointPool, mono: FakeMonotonic, drivers: Any
) -> None:
    points = [hp("a", 0), hp("b", 1, "bool", table="coil")]
    drv = drivers(device(closed_port, points, timeout_s=0.5))
    readings = await drv.read(points)
    assert [(r.quality, r.code) for r in readings] == [(Quality.BAD, "unreachable")] * 2
    [ep] = pool.endpoints
    assert ep.failures == 1 and ep.retry_at == pytest.approx(mono() + 0.5)
    # within the backoff no connect is attempted
    mono.advance(0.4)
    assert (await drv.read(points))[0].code == "unreachable"
    assert ep.failures == 1
    # after it, one attempt, and the delay doubles
    mono.advance(0.2)
    await drv.read(points)
    assert ep.failures == 2 and ep.retry_at == pytest.approx(mono() + 1.0)
    for _ in range(10):
        mono.advance(60)
        await drv.read(points)
    assert ep.retry_at == pytest.approx(mono() + 30.0)  # capped


async def test_silent_device_times_out_without_delaying_another_endpoint(drivers: Any) -> None:
    silent_bank = UnitBank(unit_id=1)
    silent_bank.map("holding", 0, [1, 2])
    silent_bank.map("coil", 0, [True])
    live_bank = UnitBank(unit_id=1)
    live_bank.map("holding", 0, [5])
    async with ModbusServer(units=[silent_bank]) as silent, ModbusServer(units=[live_bank]) as live:
        silent.set_offline(1)  # the gateway is up, the device behind it never answers
        assert silent.port and live.port
        points = [hp("a", 0), hp("b", 1), hp("c", 0, "bool", table="coil")]
        slow = drivers(device(silent.port, points, unit_id=1, timeout_s=0.3, id="silent"))
        fast = drivers(device(live.port, [hp("v", 0)], unit_id=1, timeout_s=0.3, id="live"))
        await fast.connect()
        await slow.connect()
        finished: list[str] = []

        async def poll(d: ModbusTcpDriver) -> list[Any]:
            r = await d.read(d.device.points)
            finished.append(d.device_id)
            return r

        async def poll_live_repeatedly() -> list[Any]:
            out = [await poll(fast) for _ in range(5)]
            return out[-1]

        slow_r, fast_r = await asyncio.gather(poll(slow), poll_live_repeatedly())
        assert finished[:5] == ["live"] * 5 and finished[5] == "silent"
        assert fast_r[0].value == 5 and fast_r[0].quality is Quality.GOOD
        assert [(r.quality, r.code) for r in slow_r] == [(Quality.BAD, "timeout")] * 3
        assert silent.request_count == 1  # the coil block was not sent after the timeout
        # the device comes back: the same connection serves it again
        silent.set_offline(1, False)
        assert [r.value for r in await slow.read(points)] == [1, 2, True]


async def test_reads_recover_after_the_server_restarts(
    type_server: ModbusServer, mono: FakeMonotonic
) -> None:
    port = type_server.port
    assert port
    points = [hp("a", 0, "int16")]
    with capture_logs() as logs:
        pool = EndpointPool(monotonic=mono, jitter=lambda: 1.0)
        drv = ModbusTcpDriver(device=device(port, points, timeout_s=0.5), pool=pool)
        try:
            assert (await drv.read(points))[0].value == -12345
            await type_server.stop()
            for _ in range(3):
                r = (await drv.read(points))[0]
                assert (r.quality, r.code) == (Quality.BAD, "unreachable")
            await type_server.start(host="127.0.0.1", port=port)
            n = type_server.request_count
            assert (await drv.read(points))[0].code == "unreachable"  # still in backoff: not even tried
            assert type_server.request_count == n
            mono.advance(31)
            r = (await drv.read(points))[0]
            assert (r.value, r.quality) == (-12345, Quality.GOOD)
        finally:
            await drv.close()
            await pool.close()
    events = [e["event"] for e in logs if e.get("device") == "dev"]
    assert events == ["device_failed", "device_recovered"]  # state changes only, not every poll


# --- writing --------------------------------------------------------------------------------------------


async def test_writes_to_holding_registers_and_coils_read_back(
    type_server: ModbusServer, drivers: Any
) -> None:
    s = SCRATCH_HOLDING.start
    bank = type_server.units[TYPE_TEST_UNIT]
    bank.set("holding", s + 20, [0x8001])
    f32 = hp("sp", s, "float32", writable=True)
    scaled = hp("sp10", s + 2, "int16", scale=0.1, writable=True)
    u32 = hp("cnt", s + 4, "uint32", word_order="little", writable=True)
    text = hp("name", s + 10, "string", length=4, writable=True)
    bit = hp("flag", s + 20, "bit", bit=5, writable=True)
    coil = hp("relay", 300, "bool", table="coil", writable=True)
    assert type_server.port
    drv = drivers(device(type_server.port, [f32, scaled, u32, text, bit, coil], readback_delay_s=0))

    res = await drv.write(f32, 21.5)
    assert (res.ok, res.readback, res.code) == (True, 21.5, None)
    assert bank.get("holding", s, 2) == sim_encode(21.5, "float32")
    res = await drv.write(scaled, 26.5)
    assert res.ok and res.readback == pytest.approx(26.5)
    assert bank.get("holding", s + 2, 1) == [265]
    res = await drv.write(u32, 4_000_000_000)
    assert res.ok and bank.get("holding", s + 4, 2) == sim_encode(
        4_000_000_000, "uint32", word_order="little"
    )
    res = await drv.write(text, "AC-3F")
    assert res.ok and res.readback == "AC-3F"
    res = await drv.write(bit, True)
    assert res.ok and bank.get("holding", s + 20, 1) == [0x8021]  # the other bits kept
    res = await drv.write(bit, False)
    assert res.ok and bank.get("holding", s + 20, 1) == [0x8001]
    res = await drv.write(coil, True)
    assert (res.ok, res.readback) == (True, True) and bank.get("coil", 300, 1) == [True]
    res = await drv.write(coil, 0)
    assert res.ok and bank.get("coil", 300, 1) == [False]


async def test_write_refusals_never_reach_the_wire(type_server: ModbusServer, drivers: Any) -> None:
    ro = hp("ro", SCRATCH_HOLDING.start)
    small = hp("small", SCRATCH_HOLDING.start, "int16", writable=True)
    assert type_server.port
    drv = drivers(device(type_server.port, [ro, small]))
    n = type_server.request_count
    res = await drv.write(ro, 1)
    assert (res.ok, res.code) == (False, "not_writable")
    res = await drv.write(small, 40000)
    assert (res.ok, res.code) == (False, "range")
    res = await drv.write(small, math.nan)
    assert (res.ok, res.code) == (False, "nan")
    assert type_server.request_count == n


async def test_device_refusing_a_write_gives_its_exception_code(
    type_server: ModbusServer, drivers: Any
) -> None:
    block_a = hp("blockA", 0, "int16", writable=True)  # mapped read-only on the simulator: exception 2
    assert type_server.port
    drv = drivers(device(type_server.port, [block_a], readback_delay_s=0))
    res = await drv.write(block_a, 5)
    assert (res.ok, res.code, res.readback) == (False, "modbus:2", None)
    assert type_server.units[TYPE_TEST_UNIT].get("holding", 0, 1) == sim_encode(-12345, "int16")


async def test_readback_mismatch_when_the_device_clamps(drivers: Any) -> None:
    loop = asyncio.get_running_loop()
    bank = UnitBank(unit_id=3)

    def clamp(table: str, address: int, values: list[int] | list[bool]) -> None:
        # like an AC controller that accepts the write, then holds the setpoint at 26.0 °C at least
        if int(values[0]) > 400:
            raise ModbusException(3, "out of range")
        if int(values[0]) < 260:
            loop.call_soon(bank.set, "holding", address, [260])

    bank.on_write = clamp  # type: ignore[assignment]
    bank.map("holding", 0, [270], writable=True)
    sp = hp("sp", 0, "int16", scale=0.1, writable=True)
    async with ModbusServer(units=[bank]) as srv:
        assert srv.port
        drv = drivers(device(srv.port, [sp], unit_id=3, readback_delay_s=0.01))
        res = await drv.write(sp, 24.0)
        assert (res.ok, res.code) == (False, "readback_mismatch")
        assert res.readback == pytest.approx(26.0) and res.requested == 24.0
        res = await drv.write(sp, 27.0)
        assert res.ok and res.readback == pytest.approx(27.0)
        res = await drv.write(sp, 45.0)
        assert (res.ok, res.code) == (False, "modbus:3")


async def test_write_to_unreachable_device(closed_port: int, drivers: Any) -> None:
    sp = hp("sp", 0, writable=True)
    drv = drivers(device(closed_port, [sp], timeout_s=0.5))
    res = await drv.write(sp, 1)
    assert (res.ok, res.code) == (False, "unreachable")


async def test_connection_lost_mid_request_is_unreachable_at_once(drivers: Any) -> None:
    bank = UnitBank(unit_id=1)
    bank.map("holding", 0, [1])
    srv = ModbusServer(units=[bank])
    await srv.start(host="127.0.0.1", port=0)
    try:
        srv.set_offline(1)
        assert srv.port
        drv = drivers(device(srv.port, [hp("a", 0)], unit_id=1, timeout_s=30))
        task = asyncio.create_task(drv.read(drv.device.points), name="read-during-loss")
        while srv.request_count == 0:  # noqa: ASYNC110 - the simulator has no request event
            await asyncio.sleep(0.005)
        await srv.stop()  # the peer closes the connection while our request waits for its reply
        [r] = await asyncio.wait_for(task, 5)  # far less than the 30 s request timeout
        assert (r.quality, r.code) == (Quality.BAD, "unreachable")
    finally:
        await srv.stop()


async def test_undecodable_point_is_bad_decode_and_spares_its_neighbours(drivers: Any) -> None:
    bank = UnitBank(unit_id=1)
    bank.map("holding", 0, [0x4142, 0xC3A9, 0x0000, 77])
    points = [hp("name", 0, "string", length=3), hp("n", 3)]
    async with ModbusServer(units=[bank]) as srv:
        assert srv.port
        drv = drivers(device(srv.port, points, unit_id=1))
        name, n = await drv.read(points)
        assert (name.quality, name.code, name.value) == (Quality.BAD, "decode", None)
        assert (n.quality, n.value) == (Quality.GOOD, 77)


async def test_backoff_is_jittered_between_half_and_all_of_the_delay(
    closed_port: int, mono: FakeMonotonic
) -> None:
    for jitter, expected in ((0.0, 0.25), (0.5, 0.375), (1.0, 0.5)):
        pool = EndpointPool(monotonic=mono, jitter=lambda j=jitter: j)  # type: ignore[misc]
        drv = ModbusTcpDriver(device=device(closed_port, [hp("a", 0)], timeout_s=0.5), pool=pool)
        try:
            await drv.read(drv.device.points)
            [ep] = pool.endpoints
            assert ep.retry_at - mono() == pytest.approx(expected)
        finally:
            await drv.close()
            await pool.close()

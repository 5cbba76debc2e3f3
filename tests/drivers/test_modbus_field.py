"""What vendor manuals and misbehaving devices taught the Modbus driver (issue 11), over real sockets on
127.0.0.1 against the bundled simulator's server with its device rules switched on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from drivers.base import Quality
from drivers.modbus.codec import block_decoder, decode, raw_word
from drivers.modbus.driver import EndpointPool, ModbusTcpDriver
from drivers.modbus.options import ModbusDevice, ModbusPoint
from sim.modbus_server import ModbusServer, UnitBank
from tests.drivers.hostile_modbus import MODES, HostileServer


def device(port: int, points: list[ModbusPoint], *, unit_id: int = 1, **kw: Any) -> ModbusDevice:
    return ModbusDevice(
        protocol="modbus", id=kw.pop("id", "dev"), host="127.0.0.1", port=port, unit_id=unit_id,
        points=points, **kw,
    )  # fmt: skip


def hp(pid: str, address: int, type_: str = "uint16", **kw: Any) -> ModbusPoint:
    return ModbusPoint(id=pid, address=address, type=type_, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def drivers(pool: EndpointPool) -> AsyncIterator[Any]:
    made: list[ModbusTcpDriver] = []

    def make(dev: ModbusDevice, **kw: Any) -> ModbusTcpDriver:
        d = ModbusTcpDriver(device=dev, pool=pool, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        await d.close()


# --- item 4: "no value" sentinels ---------------------------------------------------------------------


async def test_sentinel_register_is_a_bad_no_value_reading(drivers: Any) -> None:
    bank = UnitBank(unit_id=1)
    bank.map("holding", 0, [0x8000, 255, 0xFFFF], writable=True)
    sp = hp("sp", 0, "int16", scale=0.1, invalid_raw=(0x8000, 0xFFFF), writable=True, min=16, max=32)
    other = hp("other", 1)
    room = hp("room", 2, "int16", scale=0.1, invalid_raw=(0x8000, 0xFFFF))
    points = [sp, other, room]
    async with ModbusServer(units=[bank]) as srv:
        assert srv.port
        drv = drivers(device(srv.port, points))
        r_sp, r_other, r_room = await drv.read(points)
        assert (r_sp.quality, r_sp.code, r_sp.value) == (Quality.BAD, "no_value", None)
        assert r_sp.detail and "0x8000" in r_sp.detail
        assert (r_room.quality, r_room.code) == (Quality.BAD, "no_value")
        assert (r_other.quality, r_other.value) == (Quality.GOOD, 255)  # neighbours unaffected
        bank.set("holding", 0, [265])
        r_sp, _, _ = await drv.read(points)
        assert (r_sp.quality, r_sp.value) == (Quality.GOOD, pytest.approx(26.5))
        # without invalid_raw the same word is a (wrong) good value: the option is what makes it bad
        bank.set("holding", 0, [0x8000])
        plain = hp("plain", 0, "int16", scale=0.1)
        [r] = await drivers(device(srv.port, [plain], id="plain")).read([plain])
        assert (r.quality, r.value) == (Quality.GOOD, pytest.approx(-3276.8))


def test_sentinel_on_a_two_register_value_follows_the_word_order() -> None:
    p = hp("e", 0, "uint32", word_order="little", invalid_raw=(0xFFFFFFFE,))
    assert raw_word([0xFFFE, 0xFFFF], p) == 0xFFFFFFFE
    values, clean = block_decoder(0, 2, [p])([0xFFFE, 0xFFFF])
    assert not clean and getattr(values[0], "code", None) == "no_value"
    assert block_decoder(0, 2, [p])([0xFFFF, 0xFFFE])[0] == [0xFFFEFFFF]


@given(st.integers(0, 0xFFFF), st.lists(st.integers(0, 0xFFFF), max_size=3))
def test_a_sentinel_word_never_decodes_to_a_value(word: int, sentinels: list[int]) -> None:
    p = hp("p", 0, "int16", scale=0.1, invalid_raw=(word, *sentinels))
    values, clean = block_decoder(0, 1, [p])([word])
    assert not clean and getattr(values[0], "code", None) == "no_value"
    with pytest.raises(ValueError, match="sentinel"):
        decode([word], p)


def test_invalid_raw_is_checked_against_the_width() -> None:
    with pytest.raises(ValueError, match="outside"):
        hp("p", 0, "int16", invalid_raw=(0x10000,))
    with pytest.raises(ValueError, match="numeric"):
        hp("p", 0, "bit", bit=1, invalid_raw=(1,))


# --- item 1: learning from exceptions 01 and 03 -----------------------------------------------------


async def test_exception_1_on_a_bridged_range_splits_and_is_remembered(drivers: Any) -> None:
    bank = UnitBank(unit_id=1)
    bank.map("holding", 0, range(30))
    bank.other_function = [("holding", 10, 20)]  # e.g. energy registers served on FC4 only
    points = [hp("a", 5), hp("b", 25)]
    async with ModbusServer(units=[bank]) as srv:
        assert srv.port
        drv = drivers(device(srv.port, points, max_gap=30))
        n0 = srv.request_count
        readings = await drv.read(points)
        assert [(r.quality, r.value) for r in readings] == [(Quality.GOOD, 5), (Quality.GOOD, 25)]
        assert srv.request_count - n0 == 3  # the refused block, then its two runs
        n1 = srv.request_count
        for _ in range(5):
            assert [r.value for r in await drv.read(points)] == [5, 25]
        assert srv.request_count - n1 == 10  # the split is remembered: never the refused block again


async def test_exception_1_on_a_single_point_is_bad_and_retried_rarely(drivers: Any) -> None:
    bank = UnitBank(unit_id=1)
    bank.map("holding", 0, range(30))
    bank.other_function = [("holding", 10, 11)]
    points = [hp("ok", 0), hp("fc4_only", 10)]
    async with ModbusServer(units=[bank]) as srv:
        assert srv.port
        drv = drivers(device(srv.port, points, max_gap=0), retry_bad_every=3)
        sent = []
        for _ in range(4):
            n = srv.request_count
            ok, bad = await drv.read(points)
            sent.append(srv.request_count - n)
            assert ok.value == 0 and (bad.quality, bad.code) == (Quality.BAD, "modbus:1")
            assert bad.detail and "illegal function" in bad.detail
        assert sent == [2, 1, 2, 1]


async def test_exception_3_teaches_the_device_request_size(drivers: Any) -> None:
    bank = UnitBank(unit_id=1)
    bank.map("holding", 0, range(100))
    bank.max_read_registers = 16  # the manual: "at most 16 registers per read"
    points = [hp(f"r{i}", i) for i in range(0, 100, 2)]  # 50 points over 99 registers
    async with ModbusServer(units=[bank]) as srv:
        assert srv.port
        drv = drivers(device(srv.port, points, max_gap=8))
        with capture_logs() as logs:
            first = await drv.read(points)
        assert [r.value for r in first] == list(range(0, 100, 2))  # nothing lost in the first poll
        learned = [e for e in logs if e["event"] == "modbus_request_size_learned"]
        assert learned and learned[-1]["max"] <= 16
        n = srv.request_count
        with capture_logs() as logs:
            again = await drv.read(points)
        assert [r.value for r in again] == list(range(0, 100, 2))
        assert srv.request_count - n <= 100 // learned[-1]["max"] + 1  # no refused request any more
        assert not [e for e in logs if e["event"] == "modbus_request_size_learned"]
        # a new point set on the same device is planned with the learned size from the start
        other = [hp("x", 0), hp("y", 60)]
        n = srv.request_count
        assert [r.value for r in await drv.read(other)] == [0, 60]
        assert srv.request_count - n == 2


async def test_exception_3_on_one_wide_point_is_bad_modbus_3(drivers: Any) -> None:
    bank = UnitBank(unit_id=1)
    bank.map("holding", 0, range(10))
    bank.max_read_registers = 2
    points = [hp("e", 0, "uint64"), hp("s", 5)]
    async with ModbusServer(units=[bank]) as srv:
        assert srv.port
        drv = drivers(device(srv.port, points, max_gap=0))
        e, s = await drv.read(points)
        assert (e.quality, e.code) == (Quality.BAD, "modbus:3") and (s.quality, s.value) == (Quality.GOOD, 5)
        e, s = await drv.read(points)
        assert (e.quality, e.code) == (Quality.BAD, "modbus:3") and e.detail and "remembered" in e.detail


# --- item 6: hostile replies ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_hostile_reply_is_protocol_closes_the_connection_and_logs_once(
    mode: str, drivers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    points = [hp("a", 0), hp("b", 1)]
    async with HostileServer(mode) as srv:
        drv = drivers(device(srv.port, points, timeout_s=5.0))  # far above what any answer here takes
        with capture_logs() as logs:
            for poll in range(3):
                readings = await drv.read(points)
                assert [(r.quality, r.code) for r in readings] == [(Quality.BAD, "protocol")] * 2, mode
                assert all(r.detail for r in readings)
                assert srv.connections == poll + 1  # a fresh connection per poll: the bad one was closed
        assert [e["event"] for e in logs if e["log_level"] in ("warning", "error")] == ["device_failed"]
    assert not [r for r in caplog.records if r.name == "asyncio"], "asyncio logged a traceback"


async def test_a_streaming_device_costs_one_buffer_not_a_core(drivers: Any) -> None:
    points = [hp("a", 0)]
    async with HostileServer("stream") as srv:
        drv = drivers(device(srv.port, points, timeout_s=5.0))
        [r] = await drv.read(points)
        assert (r.quality, r.code) == (Quality.BAD, "protocol")
        for _ in range(50):  # the server notices the hang-up within a few loop turns
            if srv.closed:
                break
            await asyncio.sleep(0.01)
        assert srv.closed == 1


async def test_after_a_timeout_a_late_reply_never_answers_the_next_request(drivers: Any) -> None:
    bank = UnitBank(unit_id=1)
    bank.map("holding", 0, [11, 22])
    async with ModbusServer(units=[bank]) as srv:
        assert srv.port
        a, b = hp("a", 0), hp("b", 1)
        drv = drivers(device(srv.port, [a, b], timeout_s=0.2, max_gap=0))
        srv.set_offline(1)
        assert [r.code for r in await drv.read([a])] == ["timeout"]
        srv.set_offline(1, False)
        assert [(r.point_id, r.value) for r in await drv.read([b])] == [("b", 22)]
        assert [(r.point_id, r.value) for r in await drv.read([a])] == [("a", 11)]


# --- item 3: write_function per point ------------------------------------------------------------------


def _fc16_bank() -> UnitBank:
    bank = UnitBank(unit_id=1)
    bank.map("holding", 0, [260, 1], writable=True)
    bank.fc16_only = True  # the manual: "all writes use function 16"
    return bank


async def test_fc06_refused_with_exception_1_falls_back_to_fc16_and_remembers(drivers: Any) -> None:
    sp = hp("sp", 0, "int16", scale=0.1, writable=True, min=16, max=32)
    async with ModbusServer(units=[_fc16_bank()]) as srv:
        assert srv.port
        drv = drivers(device(srv.port, [sp], readback_delay_s=0))
        with capture_logs() as logs:
            res = await drv.write(sp, 27.0)
            assert res.ok and res.readback == pytest.approx(27.0)
            n = srv.request_count
            res = await drv.write(sp, 26.0)
            assert res.ok and srv.request_count - n == 2  # FC16 at once (and the read-back): remembered
        learned = [e for e in logs if e["event"] == "modbus_write_function_learned"]
        assert [(e["point"], e["function"]) for e in learned] == [("sp", 16)]


async def test_write_function_16_is_used_from_the_first_write(drivers: Any) -> None:
    sp = hp("sp", 0, "int16", scale=0.1, writable=True, min=16, max=32, write_function=16)
    async with ModbusServer(units=[_fc16_bank()]) as srv:
        assert srv.port
        drv = drivers(device(srv.port, [sp], readback_delay_s=0))
        n = srv.request_count
        res = await drv.write(sp, 25.5)
        assert res.ok and srv.request_count - n == 2  # one write, one read-back: no refused FC06


async def test_write_function_6_is_kept_even_when_refused(drivers: Any) -> None:
    sp = hp("sp", 0, "int16", scale=0.1, writable=True, min=16, max=32, write_function=6)
    async with ModbusServer(units=[_fc16_bank()]) as srv:
        assert srv.port
        drv = drivers(device(srv.port, [sp], readback_delay_s=0))
        res = await drv.write(sp, 25.0)
        assert (res.ok, res.code) == (False, "modbus:1")


async def test_coil_write_function_15(drivers: Any) -> None:
    bank = UnitBank(unit_id=1)
    bank.map("coil", 0, [False], writable=True)
    c = hp("c", 0, "bool", table="coil", writable=True, write_function=15)
    async with ModbusServer(units=[bank]) as srv:
        assert srv.port
        drv = drivers(device(srv.port, [c], readback_delay_s=0))
        res = await drv.write(c, True)
        assert res.ok and bank.coil[0] is True


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"type": "int16", "write_function": 5}, "use 6 or 16"),
        ({"type": "float32", "write_function": 6}, "use 16"),
        ({"type": "bool", "table": "coil", "write_function": 16}, "use 5 or 15"),
        ({"type": "int16", "write_function": 16, "writable": False}, "writable"),
    ],
)
def test_write_function_is_checked_against_the_table_and_width(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bounds = {} if kw.get("type") == "bool" else {"min": 0, "max": 100}  # writable numbers need both
        ModbusPoint(id="p", address=0, writable=kw.pop("writable", True), **bounds, **kw)


# --- item 5: dead-unit isolation -----------------------------------------------------------------------


async def test_a_silent_unit_is_backed_off_and_probed_once_per_backoff(drivers: Any, mono: Any) -> None:
    live, dead = UnitBank(unit_id=1), UnitBank(unit_id=2)
    live.map("holding", 0, [5])
    dead.map("holding", 0, [6])
    async with ModbusServer(units=[live, dead]) as srv:
        assert srv.port
        a, b = hp("a", 0), hp("b", 0)
        drv_live = drivers(device(srv.port, [a], id="live", unit_id=1, timeout_s=0.2))
        drv_dead = drivers(
            device(srv.port, [b], id="dead", unit_id=2, timeout_s=0.2, interval_s=2, dead_after=3)
        )
        srv.set_offline(2)
        with capture_logs() as logs:
            for _ in range(3):  # three polls in a row without an answer: then backed off
                assert [r.code for r in await drv_dead.read([b])] == ["timeout"]
            n = srv.request_count
            for _ in range(5):  # backed off: answered at once, nothing sent, the endpoint free
                [r] = await drv_dead.read([b])
                assert (r.quality, r.code) == (Quality.BAD, "timeout") and "backed off" in (r.detail or "")
                assert [x.value for x in await drv_live.read([a])] == [5]
            assert srv.request_count - n == 5  # only the live unit's reads
            mono.advance(2 * 2 + 0.1)  # first backoff: two poll intervals (jitter fixed at 1.0)
            n = srv.request_count
            assert [r.code for r in await drv_dead.read([b])] == ["timeout"]  # the probe
            assert srv.request_count - n == 1
            n = srv.request_count
            await drv_dead.read([b])
            assert srv.request_count == n  # backed off again, now for twice as long
            mono.advance(4.0)
            await drv_dead.read([b])
            assert srv.request_count == n  # still within the doubled backoff
            srv.set_offline(2, False)
            mono.advance(4.1)
            assert [r.value for r in await drv_dead.read([b])] == [6]  # the probe finds it back
            for _ in range(3):
                assert [r.value for r in await drv_dead.read([b])] == [6]
        assert [e["event"] for e in logs if e["event"] == "unit_backed_off"] == ["unit_backed_off"]


async def test_a_silent_unit_waits_for_its_timeout_on_its_own_connection(drivers: Any) -> None:
    live, dead = UnitBank(unit_id=1), UnitBank(unit_id=2)
    live.map("holding", 0, [5])
    dead.map("holding", 0, [6])
    async with ModbusServer(units=[live, dead]) as srv:
        assert srv.port
        a, b = hp("a", 0), hp("b", 0)
        drv_live = drivers(device(srv.port, [a], id="live", unit_id=1, timeout_s=5.0))
        drv_dead = drivers(device(srv.port, [b], id="dead", unit_id=2, timeout_s=0.3, dead_after=100))
        srv.set_offline(2)
        assert [r.value for r in await drv_live.read([a])] == [5]
        with capture_logs() as logs:
            assert [r.code for r in await drv_dead.read([b])] == ["timeout"]  # first silence: shared conn.
            probe = asyncio.create_task(drv_dead.read([b]), name="dead-unit-poll")
            await asyncio.sleep(0)  # the dead unit's request is on the wire
            assert [r.value for r in await drv_live.read([a])] == [5]
            assert not probe.done()  # the live unit did not wait behind the dead unit's timeout
            assert [r.code for r in await probe] == ["timeout"]
            srv.set_offline(2, False)
            assert [r.value for r in await drv_dead.read([b])] == [6]
            assert [r.value for r in await drv_live.read([a])] == [5]
        # the unit's own connection is an implementation detail: only the device's state changes are logged
        assert [e["event"] for e in logs] == ["device_failed", "device_recovered"]


# --- item 7: manual addressing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "table", "address"),
    [
        (40001, "holding", 0), (40003, "holding", 2), (30001, "input", 0), (10001, "discrete", 0),
        (1, "coil", 0), (9999, "coil", 9998), (400001, "holding", 0), (465536, "holding", 65535),
        (300257, "input", 256),
    ],
)  # fmt: skip
def test_ref_resolves_to_the_table_and_0_based_address(ref: int, table: str, address: int) -> None:
    type_ = "bool" if table in ("coil", "discrete") else "uint16"
    p = ModbusPoint.model_validate({"id": "p", "ref": ref, "type": type_})
    assert (p.table, p.address, p.ref) == (table, address, ref)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ref": 20001}, "not a Modbus reference"),
        ({"ref": 40001, "address": 0}, "not both"),
        ({"ref": 30001, "table": "holding"}, "input reference"),
        ({}, "`address:`"),
    ],
)
def test_ref_mistakes_are_named(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModbusPoint.model_validate({"id": "p", **data})


def test_address_base_1_counts_from_1_and_refuses_0() -> None:
    dev = ModbusDevice.model_validate(
        {"protocol": "modbus", "id": "d", "host": "127.0.0.1", "address_base": 1,
         "points": [{"id": "a", "address": 1}, {"id": "b", "ref": 40010}]}
    )  # fmt: skip
    assert [(p.table, p.address) for p in dev.points] == [("holding", 0), ("holding", 9)]  # ref is absolute
    with pytest.raises(ValueError, match="address_base 1"):
        ModbusDevice.model_validate(
            {"protocol": "modbus", "id": "d", "host": "127.0.0.1", "address_base": 1,
             "points": [{"id": "a", "address": 0}]}
        )  # fmt: skip


async def test_manual_addressing_reads_the_same_registers_from_the_simulator(drivers: Any) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from sim.runner import Simulator

    start = datetime(2026, 7, 15, 14, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    async with Simulator(seed=1, start=start, speed=0) as sim:
        assert sim.modbus_port
        base = {"protocol": "modbus", "host": "127.0.0.1", "port": sim.modbus_port, "unit_id": 11}
        plain = ModbusDevice.model_validate({**base, "id": "plain", "points": [
            {"id": "p.sp", "address": 2, "type": "int16", "scale": 0.1},
            {"id": "p.room", "table": "input", "address": 0, "type": "int16", "scale": 0.1},
        ]})  # fmt: skip
        manual = ModbusDevice.model_validate({**base, "id": "manual", "address_base": 1, "points": [
            {"id": "m.sp", "address": 3, "type": "int16", "scale": 0.1},  # "register 3" in a 1-based manual
            {"id": "m.room", "ref": 30001, "type": "int16", "scale": 0.1},
        ]})  # fmt: skip
        a = await drivers(plain).read(plain.points)
        b = await drivers(manual).read(manual.points)
        assert [r.value for r in a] == [r.value for r in b] and all(r.ok for r in a + b)
        assert manual.points[1].describe_address() == "input 0 (30001) read FC4"


def test_check_explains_addresses_and_names_a_bad_ref_by_file_and_line(tmp_path: Any) -> None:
    import io
    from pathlib import Path

    from edge_agent.cli.check import check_main

    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "config"
    policy = (fixtures / "modbus_policy.yaml").read_text("utf-8")
    (tmp_path / "modbus_policy.yaml").write_text(policy, "utf-8")
    text = (fixtures / "modbus_site.yaml").read_text("utf-8")
    good = text.replace('f2-ac1 setpoint 设定温度", address: 2,', 'f2-ac1 setpoint 设定温度", ref: 40003,')
    assert good != text
    site = tmp_path / "modbus_site.yaml"
    site.write_text(good, "utf-8")
    out, err = io.StringIO(), io.StringIO()
    assert check_main(site, out=out, err=err, explain=True) == 0
    rows = {ln.split()[1]: ln for ln in out.getvalue().splitlines()[1:] if len(ln.split()) > 2}
    assert rows["f2-ac1.setpoint"].endswith("holding 2 (40003) read FC3, write FC6")
    assert rows["main.energy"].endswith("input 256 (30257) read FC4")
    bad = good.replace("ref: 40003,", "ref: 20003,")
    site.write_text(bad, "utf-8")
    line = next(i for i, ln in enumerate(bad.splitlines(), 1) if "ref: 20003" in ln)
    out, err = io.StringIO(), io.StringIO()
    assert check_main(site, out=out, err=err) == 2
    message = err.getvalue()
    assert f"modbus_site.yaml:{line}:" in message and "20003 is not a Modbus reference" in message
    assert "Traceback" not in err.getvalue()


# --- item 9: composite points ----------------------------------------------------------------------------


async def test_a_total_split_over_two_registers_reads_as_one_full_resolution_value(drivers: Any) -> None:
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from sim.runner import Simulator

    start = datetime(2026, 7, 15, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    async with Simulator(seed=1, start=start, speed=0) as sim:
        assert sim.modbus_port
        dev = ModbusDevice.model_validate({
            "protocol": "modbus", "id": "water", "host": "127.0.0.1", "port": sim.modbus_port, "unit_id": 10,
            "points": [
                {"id": "w.m3", "address": 4, "type": "uint32"},
                {"id": "w.litres", "address": 6, "type": "uint16"},
                {"id": "w.volume", "sum_of": {"w.m3": 1, "w.litres": 0.001}, "cumulative": True},
                {"id": "w.reference", "address": 0, "type": "uint32", "scale": 0.001},
            ],
        })  # fmt: skip
        drv = drivers(dev)
        first = {r.point_id: r for r in await drv.read(dev.points)}
        sim.step_to(start + timedelta(minutes=15))
        later = {r.point_id: r for r in await drv.read(dev.points)}
        for rs in (first, later):
            assert rs["w.volume"].ok and rs["w.volume"].value == pytest.approx(rs["w.reference"].value)
        # 15 minutes of flow: the whole-m3 register alone books whole m3 only; the sum has the litres
        used = later["w.volume"].value - first["w.volume"].value  # type: ignore[operator]
        assert used == pytest.approx(later["w.reference"].value - first["w.reference"].value)  # type: ignore[operator]
        assert used > 0 and used != later["w.m3"].value - first["w.m3"].value  # type: ignore[operator]
        # asked alone, the parts are still read
        [alone] = await drv.read([dev.points[2]])
        assert alone.ok and alone.value == pytest.approx(later["w.volume"].value)


async def test_a_bad_part_makes_the_sum_bad_with_its_code(drivers: Any) -> None:
    bank = UnitBank(unit_id=1)
    bank.map("holding", 0, [0, 12, 0xFFFF])
    dev = ModbusDevice.model_validate({
        "protocol": "modbus", "id": "d", "host": "127.0.0.1", "port": 1, "unit_id": 1,
        "points": [
            {"id": "whole", "address": 0, "type": "uint32"},
            {"id": "part", "address": 2, "invalid_raw": [0xFFFF]},
            {"id": "sum", "sum_of": {"whole": 1, "part": 0.001}},
        ],
    })  # fmt: skip
    async with ModbusServer(units=[bank]) as srv:
        assert srv.port
        dev = dev.model_copy(update={"port": srv.port})
        drv = drivers(dev)
        whole, part, total = await drv.read(dev.points)
        assert whole.value == 12 and (part.code, total.code) == ("no_value", "no_value")
        assert total.quality is Quality.BAD and total.value is None
        bank.set("holding", 2, [345])
        assert [r.value for r in await drv.read(dev.points)][2] == pytest.approx(12.345)


def test_sum_of_is_checked() -> None:
    base = {"protocol": "modbus", "id": "d", "host": "127.0.0.1"}
    with pytest.raises(ValueError, match="not a point of device"):
        ModbusDevice.model_validate({**base, "points": [{"id": "s", "sum_of": {"nope": 1}}]})
    with pytest.raises(ValueError, match="no `address:`"):
        ModbusPoint.model_validate({"id": "s", "address": 1, "sum_of": {"a": 1}})
    with pytest.raises(ValueError, match="not writable"):
        ModbusPoint.model_validate({"id": "s", "sum_of": {"a": 1}, "writable": True, "min": 0, "max": 9})

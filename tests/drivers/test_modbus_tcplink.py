"""The lean Modbus TCP link of the poll path (issue 18): its frames and parsing agree with pymodbus's,
and odd but valid replies read as pymodbus read them, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.pdu.bit_message import WriteMultipleCoilsRequest, WriteSingleCoilRequest
from pymodbus.pdu.register_message import WriteMultipleRegistersRequest, WriteSingleRegisterRequest
from structlog.testing import capture_logs

from drivers.base import Quality
from drivers.modbus.driver import EndpointPool
from drivers.modbus.tcplink import BadReply, parse_read, parse_write, write_request
from sim.modbus_server import ModbusServer, UnitBank
from tests.drivers import test_modbus_field
from tests.drivers.hostile_modbus import ODD_BUT_VALID, HostileServer
from tests.drivers.test_modbus_field import device, hp

drivers = test_modbus_field.drivers  # the fixture: drivers closed at the end of each test


# --- parsing: the same answers as pymodbus -------------------------------------------------------------


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125), st.sampled_from([3, 4]))
def test_registers_parse_as_sent(regs: list[int], fc: int) -> None:
    pdu = struct.pack(f">BB{len(regs)}H", fc, 2 * len(regs), *regs)
    r = parse_read(pdu)
    assert (r.isError(), r.function_code, list(r.registers)) == (False, fc, regs)


@given(st.lists(st.booleans(), min_size=1, max_size=2000), st.sampled_from([1, 2]))
def test_bits_parse_least_significant_first_in_whole_bytes(bits: list[bool], fc: int) -> None:
    packed = bytes(
        sum(1 << i for i, b in enumerate(bits[k : k + 8]) if b) for k in range(0, len(bits), 8)
    )
    r = parse_read(bytes([fc, len(packed)]) + packed)
    assert len(r.bits) == 8 * len(packed)
    assert list(r.bits[: len(bits)]) == bits and not any(r.bits[len(bits) :])


@pytest.mark.parametrize("code", [1, 2, 3, 10, 11])
def test_an_exception_reply_carries_its_code(code: int) -> None:
    r = parse_read(bytes([0x83, code]))
    assert r.isError() and r.exception_code == code
    w = parse_write(6, bytes([0x86, code]))
    assert w.isError() and w.exception_code == code


@pytest.mark.parametrize(
    "pdu",
    [
        b"\x83",  # exception without its code
        b"\x03",  # no byte count
        b"\x03\x06\x00\x07\x00\x07",  # byte count beyond the PDU
        b"\x03\x03\x00\x07\x00",  # half a register
    ],
)
def test_a_reply_that_does_not_parse_is_a_bad_reply(pdu: bytes) -> None:
    with pytest.raises(BadReply):
        parse_read(pdu)


def test_a_write_reply_of_another_function_is_a_bad_reply() -> None:
    with pytest.raises(BadReply):
        parse_write(6, b"\x10\x00\x00\x00\x01")


@given(
    st.integers(0, 0xFFFF),
    st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=123),
    st.sampled_from([5, 6, 15, 16]),
)
def test_write_requests_are_the_bytes_pymodbus_sends(address: int, regs: list[int], fc: int) -> None:
    if fc in (5, 6, 15):
        regs = regs[:1]
    pdu: Any
    if fc == 5:
        pdu = WriteSingleCoilRequest(address=address, bits=[bool(regs[0])])
    elif fc == 15:
        pdu = WriteMultipleCoilsRequest(address=address, bits=[bool(regs[0])])
    elif fc == 6:
        pdu = WriteSingleRegisterRequest(address=address, registers=regs)
    else:
        pdu = WriteMultipleRegistersRequest(address=address, registers=regs)
    assert write_request(fc, address, regs) == bytes([pdu.function_code]) + pdu.encode()


# --- over real sockets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ODD_BUT_VALID)
async def test_odd_but_valid_replies_are_read(mode: str, drivers: Any) -> None:
    points = [hp("a", 0), hp("b", 1)]
    async with HostileServer(mode) as srv:
        drv = drivers(device(srv.port, points, timeout_s=5.0))
        with capture_logs() as logs:
            for _ in range(3):
                readings = await drv.read(points)
                assert [(r.quality, r.value) for r in readings] == [(Quality.GOOD, 7)] * 2, mode
                # the stray copy comes 20 ms after the reply: while no request waits it is ignored
                await asyncio.sleep(0.05 if mode == "stray" else 0)
        assert not [e for e in logs if e["log_level"] in ("warning", "error")]
        assert srv.connections == 1 and srv.closed == 0


async def test_transaction_ids_wrap_as_pymodbus_counts_them(drivers: Any, pool: EndpointPool) -> None:
    bank = UnitBank(unit_id=1)
    bank.map("holding", 0, [11, 22])
    points = [hp("a", 0), hp("b", 1)]
    async with ModbusServer(units=[bank]) as srv:
        assert srv.port
        drv = drivers(device(srv.port, points))
        await drv.read(points)
        [ep] = pool.endpoints
        assert ep.link is not None
        ep.link._tid = 64_999  # the counter's end, without 65,000 requests
        for _ in range(3):
            assert [r.value for r in await drv.read(points)] == [11, 22]
        assert ep.link._tid == 2  # 65,000, then 1, 2 (0 is never sent)
        assert srv.request_count == 4


async def test_rtu_framing_over_tcp_keeps_pymodbus(pool: EndpointPool, drivers: Any) -> None:
    drv = drivers(device(1, [hp("a", 0)], framer="rtu"))
    [ep] = pool.endpoints
    assert not ep.lean and ep.link is None and drv.device.framer == "rtu"


async def test_a_stray_frame_while_a_request_waits_is_protocol(drivers: Any) -> None:
    """The copy of the last reply lands on the next request (its transaction id is the old one)."""
    points = [hp("a", 0)]
    async with HostileServer("stray") as srv:
        drv = drivers(device(srv.port, points, timeout_s=5.0))
        assert [r.code for r in await drv.read(points)] == [None]
        [r] = await drv.read(points)  # sent at once: the copy is on its way
        assert (r.quality, r.code) == (Quality.BAD, "protocol")
        assert r.detail and "transaction id" in r.detail

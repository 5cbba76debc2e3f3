"""The lean Modbus TCP link of the poll path (issue 18): its frames and parsing agree with pymodbus's,
and odd but valid replies read as pymodbus read them, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.pdu.bit_message import WriteMultipleCoilsRequest, WriteSingleCoilRequest
from pymodbus.pdu.register_message import WriteMultipleRegistersRequest, WriteSingleRegisterRequest
from structlog.testing import capture_logs

from drivers.base import Quality
from drivers.modbus.driver import EndpointPool, ModbusTcpDriver
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
    packed = bytes(sum(1 << i for i, b in enumerate(bits[k : k + 8]) if b) for k in range(0, len(bits), 8))
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


# --- any bytes, in any chunks: a reading or a failure code, never an exception -------------------------


class _Replayer:
    """A server that answers each request with ``data`` cut at ``cuts`` (with the request's transaction
    id in its first two bytes when ``frame``), then waits for the next request or the hang-up."""

    def __init__(self, data: bytes, cuts: list[int], frame: bool) -> None:
        self.data, self.cuts, self.frame = data, cuts, frame
        self.handlers: set[asyncio.Task[Any]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                head = await reader.readexactly(7)
                await reader.readexactly(struct.unpack(">H", head[4:6])[0] - 1)
                reply = head[:2] + self.data[2:] if self.frame else self.data
                for chunk in _chunked(reply, self.cuts):
                    writer.write(chunk)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


async def _read_from(replayer: _Replayer) -> list[tuple[Quality, str | None, Any]]:
    """One poll of two registers; asserts that nothing reached asyncio's exception handler."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    server = await asyncio.start_server(replayer.serve, "127.0.0.1", 0)
    pool = EndpointPool(backoff_initial_s=0.5, backoff_max_s=1.0)
    points = [hp("a", 0), hp("b", 1)]
    drv = ModbusTcpDriver(device=device(server.sockets[0].getsockname()[1], points, timeout_s=0.2), pool=pool)
    try:
        return [(r.quality, r.code, r.value) for r in await drv.read(points)]
    finally:
        await drv.close()
        await pool.close()
        server.close()
        if replayer.handlers:  # each ends on the hang-up; asyncio.run would cancel them mid-read
            await asyncio.wait(replayer.handlers, timeout=2.0)
        await server.wait_closed()
        assert not errors, errors


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=300), st.lists(st.integers(0, 300), max_size=4))
def test_any_reply_bytes_are_a_reading_or_a_failure_code(data: bytes, cuts: list[int]) -> None:
    got = asyncio.run(_read_from(_Replayer(data, cuts, frame=False)))
    codes = {code for _, code, _ in got}
    assert len(codes) == 1
    [code] = codes
    assert code in (None, "protocol", "timeout") or (code or "").startswith("modbus:"), got


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.lists(st.integers(0, 16), max_size=6))
def test_a_reply_in_any_chunks_reads_the_same(a: int, b: int, cuts: list[int]) -> None:
    frame = struct.pack(">HHHBBBHH", 0, 0, 7, 1, 3, 4, a, b)  # transaction id patched in per request
    got = asyncio.run(_read_from(_Replayer(frame, cuts, frame=True)))
    assert got == [(Quality.GOOD, None, a), (Quality.GOOD, None, b)]

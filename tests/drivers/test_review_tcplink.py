"""Review of the lean Modbus TCP link (issue 18): replies a device may send to writes."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.pdu import DecodePDU

from drivers.modbus.driver import ModbusTcpDriver
from drivers.modbus.tcplink import BadReply, parse_read, parse_write
from tests.drivers import test_modbus_field
from tests.drivers.test_modbus_field import device, hp

drivers = test_modbus_field.drivers


Answer = Callable[[bytes], bytes]  # request PDU -> reply PDU


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Answer], Any]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> int:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    tid, _p, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                    pdu = answer(await reader.readexactly(length - 1))
                    writer.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        srv = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(srv)
        return int(srv.sockets[0].getsockname()[1])

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


async def test_a_bit_write_whose_register_read_is_empty_fails_with_a_code(server: Any, drivers: Any) -> None:
    """The read before a bit write gets a reply with no registers: a failed write with a code, not an
    IndexError out of write()."""

    def answer(pdu: bytes) -> bytes:
        if pdu[0] == 3:
            return b"\x03\x00"  # byte count 0: no register
        return pdu  # a write: echoed

    port = await server(answer)
    bit = hp("b", 0, "bit", bit=3, writable=True)
    drv: ModbusTcpDriver = drivers(device(port, [bit]))
    await drv.connect()
    res = await drv.write(bit, True)
    assert not res.ok and res.code is not None


async def test_an_exception_reply_0x80_to_a_write_is_not_a_success(server: Any, drivers: Any) -> None:
    """A reply with function code 0x80 (exception bit, no function) is not the write's echo."""
    regs = [7]

    def answer(pdu: bytes) -> bytes:
        if pdu[0] == 3:
            return b"\x03\x02" + struct.pack(">H", regs[0])
        return b"\x80\x04"

    port = await server(answer)
    sp = hp("sp", 0, writable=True, min=0, max=100)
    drv: ModbusTcpDriver = drivers(device(port, [sp]))
    await drv.connect()
    res = await drv.write(sp, 7)
    assert not res.ok and res.code == "protocol", res


def test_a_0x80_reply_does_not_parse() -> None:
    """pymodbus decodes no function 0: a read answered so is a bad reply (not an exception that would
    make the read plan split the block), as before the lean link."""
    with pytest.raises(BadReply):
        parse_read(b"\x80\x02")
    with pytest.raises(BadReply):
        parse_write(6, b"\x80\x02")


@settings(max_examples=2000, deadline=None)
@given(
    st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16, 0x80, 0x83, 0x86, 0x90]),
    st.binary(max_size=10),
    st.sampled_from([5, 6, 15, 16]),
)
def test_the_lean_parse_accepts_no_reply_pymodbus_refused(fc: int, body: bytes, write_fc: int) -> None:
    """Never more lenient than the pymodbus client it replaces: a reply pymodbus cannot decode (a write
    echo cut short, say) is a bad reply here too, not a write acknowledged."""
    pdu = bytes([fc]) + body
    try:
        theirs = DecodePDU(is_server=False).decode(pdu)
    except Exception:  # pymodbus raises several kinds on a bad PDU
        theirs = None
    # parse_read hands a reply of another function to the driver, which refuses it: reads only here
    reads = (parse_read,) if fc in (1, 2, 3, 4) or fc > 0x80 else ()
    for parse in (*reads, lambda p: parse_write(write_fc, p)):
        try:
            parse(pdu)
        except BadReply:
            continue
        assert theirs is not None, pdu.hex()

"""The simulator's Modbus TCP server over a real socket, with a raw struct client (not the drivers)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest

from sim.modbus_server import ModbusException, ModbusServer, Table, UnitBank
from tests.sim.rawclient import RawClient, frame, read_pdu


def _bank() -> UnitBank:
    writes: list[tuple[Table, int, list[int] | list[bool]]] = []

    def hook(table: Table, address: int, values: list[int] | list[bool]) -> None:
        if table == "holding" and address <= 10 < address + len(values):
            v = values[10 - address]
            if not 160 <= int(v) <= 320:
                raise ModbusException(3, "setpoint out of range")
        writes.append((table, address, values))

    bank = UnitBank(unit_id=7, on_write=hook)
    bank.map("holding", 0, [100, 200, 300, 400], writable=False)
    bank.map("holding", 10, [250, 0, 0], writable=True)
    bank.map("input", 0, [0xFFFF, 1, 2])
    bank.map("input", 5, [5])  # 3, 4 are a gap
    bank.map("coil", 0, [True, False, True, True, False, False, False, False, True], writable=True)
    bank.map("discrete", 0, [False, True, True])
    bank.writes = writes  # type: ignore[attr-defined]
    return bank


@pytest.fixture
async def server() -> AsyncIterator[ModbusServer]:
    srv = ModbusServer(units=[_bank()])
    await srv.start(host="127.0.0.1", port=0)
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def client(server: ModbusServer) -> AsyncIterator[RawClient]:
    assert server.port
    c = await RawClient.connect(server.port)
    try:
        yield c
    finally:
        await c.close()


async def test_read_functions(client: RawClient) -> None:
    assert (await client.read(7, 3, 0, 4)).registers() == [100, 200, 300, 400]
    assert (await client.read(7, 3, 11, 2)).registers() == [0, 0]
    assert (await client.read(7, 4, 0, 3)).registers() == [0xFFFF, 1, 2]
    reply = await client.read(7, 1, 0, 9)
    assert reply.pdu[1] == 2  # 9 coils take two bytes
    assert reply.bits(9) == [True, False, True, True, False, False, False, False, True]
    assert (await client.read(7, 2, 1, 2)).bits(2) == [True, True]


async def test_write_functions(client: RawClient, server: ModbusServer) -> None:
    bank = server.units[7]
    reply = await client.write_register(7, 11, 0xBEEF)
    assert reply.pdu == struct.pack(">BHH", 6, 11, 0xBEEF)  # echo
    assert (await client.read(7, 3, 11, 1)).registers() == [0xBEEF]
    reply = await client.write_registers(7, 10, [300, 1, 2])
    assert reply.pdu == struct.pack(">BHH", 16, 10, 3)
    assert bank.get("holding", 10, 3) == [300, 1, 2]
    reply = await client.write_coil(7, 1, True)
    assert reply.pdu == struct.pack(">BHH", 5, 1, 0xFF00)
    reply = await client.write_coils(7, 0, [False] * 9)
    assert reply.pdu == struct.pack(">BHH", 15, 0, 9)
    assert (await client.read(7, 1, 0, 9)).bits(9) == [False] * 9
    assert bank.writes[0] == ("holding", 11, [0xBEEF])  # type: ignore[attr-defined]
    assert bank.writes[2] == ("coil", 1, [True])  # type: ignore[attr-defined]


async def test_exceptions(client: RawClient, server: ModbusServer) -> None:
    # 2: unmapped address, gap inside a range, past the end, read-only register
    assert (await client.read(7, 3, 4, 1)).exception == 2
    assert (await client.read(7, 4, 2, 4)).exception == 2
    assert (await client.read(7, 4, 5, 1)).registers() == [5]
    assert (await client.read(7, 1, 0, 10)).exception == 2
    assert (await client.read(7, 3, 65535, 2)).exception == 2
    assert (await client.write_register(7, 0, 1)).exception == 2
    assert (await client.write_coil(7, 100, True)).exception == 2
    # 3: bad counts, bad coil value, value the device refuses (nothing stored)
    assert (await client.read(7, 3, 0, 0)).exception == 3
    assert (await client.read(7, 3, 0, 126)).exception == 3
    assert (await client.read(7, 1, 0, 2001)).exception == 3
    assert (await client.request(7, struct.pack(">BHH", 5, 0, 0x1234))).exception == 3
    reply = await client.write_registers(7, 10, [999, 5, 5])
    assert reply.exception == 3 and reply.pdu[0] == 0x90
    assert server.units[7].get("holding", 10, 3) == [250, 0, 0]
    assert (await client.write_register(7, 10, 100)).exception == 3
    # 1: unknown function
    reply = await client.request(7, bytes([0x2B, 0x0E, 0x01, 0x00]))
    assert reply.pdu == bytes([0xAB, 1])
    # unknown unit: gateway exception 0x0B
    assert (await client.read(42, 3, 0, 1)).exception == 0x0B


async def test_offline_unit_gets_no_reply(client: RawClient, server: ModbusServer) -> None:
    server.set_offline(7)
    client.writer.write(frame(1, 7, read_pdu(3, 0, 1)))
    with pytest.raises(TimeoutError):
        await client.recv(timeout=0.2)
    server.set_offline(7, False)
    client.tid = 1
    assert (await client.read(7, 3, 0, 1)).registers() == [100]


async def test_pipelined_requests_in_one_segment(client: RawClient) -> None:
    segment = (
        frame(11, 7, read_pdu(3, 0, 2)) + frame(12, 7, read_pdu(4, 0, 1)) + frame(13, 7, read_pdu(3, 4, 1))
    )
    client.writer.write(segment)  # one write, one segment on loopback
    await client.writer.drain()
    replies = [await client.recv() for _ in range(3)]
    assert [r.tid for r in replies] == [11, 12, 13]
    assert replies[0].registers() == [100, 200]
    assert replies[1].registers() == [0xFFFF]
    assert replies[2].exception == 2


async def test_several_connections(server: ModbusServer) -> None:
    assert server.port
    clients = [await RawClient.connect(server.port) for _ in range(4)]
    try:
        results = await asyncio.gather(*(c.read(7, 3, i, 1) for i, c in enumerate(clients)))
        assert [r.registers() for r in results] == [[100], [200], [300], [400]]
    finally:
        for c in clients:
            await c.close()


async def test_pymodbus_client_interoperates(server: ModbusServer) -> None:
    from pymodbus.client import AsyncModbusTcpClient

    assert server.port
    c = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=2, retries=0)
    await c.connect()
    try:
        rr = await c.read_holding_registers(0, count=4, device_id=7)
        assert rr.registers == [100, 200, 300, 400]
        rr = await c.read_input_registers(3, count=1, device_id=7)
        assert rr.isError() and rr.exception_code == 2
    finally:
        c.close()


async def test_stop_closes_open_connections(server: ModbusServer) -> None:
    assert server.port
    c = await RawClient.connect(server.port)
    await c.read(7, 3, 0, 1)
    await server.stop()
    assert await c.reader.read() == b""
    await c.close()

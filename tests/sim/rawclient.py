"""A tiny Modbus TCP client over a raw asyncio stream, for testing the simulator without the drivers."""

from __future__ import annotations

import asyncio
import struct

__all__ = ["ModbusReply", "RawClient"]


class ModbusReply:
    def __init__(self, tid: int, unit: int, pdu: bytes) -> None:
        self.tid = tid
        self.unit = unit
        self.pdu = pdu

    @property
    def exception(self) -> int | None:
        return self.pdu[1] if self.pdu[0] & 0x80 else None

    def registers(self) -> list[int]:
        assert self.exception is None, f"exception {self.exception}"
        n = self.pdu[1]
        return list(struct.unpack(f">{n // 2}H", self.pdu[2 : 2 + n]))

    def bits(self, count: int) -> list[bool]:
        assert self.exception is None, f"exception {self.exception}"
        data = self.pdu[2:]
        return [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]


def frame(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def read_pdu(fc: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", fc, address, count)


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.tid = 0

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass

    async def recv(self, timeout: float = 2.0) -> ModbusReply:
        header = await asyncio.wait_for(self.reader.readexactly(7), timeout)
        tid, proto, length, unit = struct.unpack(">HHHB", header)
        assert proto == 0
        pdu = await asyncio.wait_for(self.reader.readexactly(length - 1), timeout)
        return ModbusReply(tid, unit, pdu)

    async def request(self, unit: int, pdu: bytes, timeout: float = 2.0) -> ModbusReply:
        self.tid = (self.tid + 1) & 0xFFFF
        self.writer.write(frame(self.tid, unit, pdu))
        await self.writer.drain()
        reply = await self.recv(timeout)
        assert reply.tid == self.tid and reply.unit == unit
        return reply

    async def read(self, unit: int, fc: int, address: int, count: int) -> ModbusReply:
        return await self.request(unit, read_pdu(fc, address, count))

    async def write_register(self, unit: int, address: int, value: int) -> ModbusReply:
        return await self.request(unit, struct.pack(">BHH", 6, address, value))

    async def write_registers(self, unit: int, address: int, values: list[int]) -> ModbusReply:
        body = struct.pack(f">{len(values)}H", *values)
        return await self.request(unit, struct.pack(">BHHB", 16, address, len(values), len(body)) + body)

    async def write_coil(self, unit: int, address: int, on: bool) -> ModbusReply:
        return await self.request(unit, struct.pack(">BHH", 5, address, 0xFF00 if on else 0))

    async def write_coils(self, unit: int, address: int, bits: list[bool]) -> ModbusReply:
        data = bytearray((len(bits) + 7) // 8)
        for i, b in enumerate(bits):
            if b:
                data[i // 8] |= 1 << (i % 8)
        return await self.request(unit, struct.pack(">BHHB", 15, address, len(bits), len(data)) + bytes(data))

"""Modbus RTU front ends for :class:`sim.modbus_server.ModbusServer`: the bus behind a serial device server.

Written from the Modbus over Serial Line specification V1.02 (section 2.5.1 RTU frame: address, PDU,
CRC-16 low byte first; 6.2.2 CRC generation, polynomial 0xA001 reflected, preset 0xFFFF), independently
of the drivers' code.

Behaviour (MANUAL.md, "RS-485: Modbus RTU"):

- A device server in transparent mode forwards the bytes of one TCP connection to its RS-485 bus and the
  answers back. The front end answers like the slaves on that bus: only the addressed unit replies.
- A frame whose CRC is wrong gets no reply (the slave discards it, spec 2.5.1.2). Nor does a request to a unit
  that is not on the bus, to an offline unit, or a broadcast (address 0: writes are executed, never answered).
- Over TCP there is no inter-frame silence to delimit frames; the front end cuts requests by their function
  code's length, as device servers' "frame by length" mode does. An unknown function code empties the
  buffer (the bus would resynchronise on the next silence).
- ``garbage``: bytes written before the next reply, like line noise on a bus without bias resistors.
- :class:`RtuSerialBus` is the same bus on a pseudo-terminal (its :attr:`RtuSerialBus.path` is the device
  the agent opens): replies leave after the time their bytes take at the configured baud rate, and a
  silence of more than 3.5 characters inside a request discards it (a broken frame, spec 2.5.1.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sim.modbus_server import ModbusServer
from sim.ptyline import PtyLine

__all__ = ["RtuSerialBus", "RtuTcpFrontEnd", "crc16"]

log = logging.getLogger("sim.modbus_rtu")


def crc16(frame: bytes) -> bytes:
    """The Modbus RTU CRC of ``frame``, as the two bytes that follow it on the line (low byte first)."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return bytes((crc & 0xFF, crc >> 8))


def request_length(buf: bytes | bytearray) -> int | None:
    """Bytes of the request frame at the start of ``buf`` (with CRC); 0 when not yet known; None if the
    function code is one this bus does not frame."""
    if len(buf) < 2:
        return 0
    fc = buf[1]
    if fc in (1, 2, 3, 4, 5, 6):
        return 8
    if fc in (15, 16):
        return 0 if len(buf) < 7 else 9 + buf[6]
    return None


class _Bus:
    """The slaves' side of one RS-485 bus: which frames they answer and how."""

    def __init__(self, server: ModbusServer) -> None:
        self.server = server
        self.crc_errors = 0
        self.garbage = b""  # written (once) before the next reply
        self.corrupt_next = False  # the next reply goes out with a wrong CRC

    def reply(self, frame: bytes) -> bytes | None:
        """The RTU reply to one request frame, or None when the bus stays silent."""
        if len(frame) < 4 or crc16(frame[:-2]) != frame[-2:]:
            self.crc_errors += 1
            return None
        unit, pdu = frame[0], frame[1:-2]
        if unit == 0:  # broadcast: executed by every unit, answered by none
            for uid in list(self.server.units):
                self.server.handle_pdu(uid, pdu)
            return None
        if unit not in self.server.units:
            return None  # nobody on the bus has that address
        resp = self.server.handle_pdu(unit, pdu)
        if resp is None:
            return None
        body = bytes([unit]) + resp
        crc = crc16(body)
        if self.corrupt_next:
            self.corrupt_next = False
            crc = bytes((crc[0] ^ 0xFF, crc[1]))
        out = body + crc
        if self.garbage:
            out, self.garbage = self.garbage + out, b""
        return out

    def frames(self, buf: bytearray) -> list[bytes]:
        """Cut the complete requests off the front of ``buf``."""
        out: list[bytes] = []
        while True:
            need = request_length(buf)
            if need is None:
                buf.clear()
                return out
            if need == 0 or len(buf) < need:
                return out
            out.append(bytes(buf[:need]))
            del buf[:need]
            self.server.request_count += 1


class RtuSerialBus(_Bus, PtyLine):
    """An RS-485 bus on a pseudo-terminal: open :attr:`path` as the serial port (8 data bits)."""

    def __init__(
        self, server: ModbusServer, *, baudrate: int = 9600, parity: str = "E", stopbits: int = 1
    ) -> None:
        _Bus.__init__(self, server)
        PtyLine.__init__(self)
        self.baudrate = baudrate
        self.char_s = (1 + 8 + (0 if parity == "N" else 1) + stopbits) / baudrate
        self.silence_s = 0.00175 if baudrate > 19200 else 3.5 * self.char_s
        self.broken_frames = 0
        self._buf = bytearray()
        self._last_byte = 0.0

    _task_prefix = "sim-rtu"

    def _received(self, data: bytes) -> None:
        now = time.monotonic()
        if self._buf and now - self._last_byte > self.silence_s * 4:
            # a silence inside a frame: the slaves drop what they had (tolerant x4: a pty is not a UART)
            self.broken_frames += 1
            self._buf.clear()
        self._last_byte = now
        self._buf += data
        for frame in self.frames(self._buf):
            self._inbox.put_nowait(frame)

    async def _answer(self) -> None:
        while True:
            frame = await self._inbox.get()
            resp = self.reply(frame)
            if resp is None:
                continue
            # the request's bytes took their time on the wire (a pty delivers them at once), then the
            # slave waits the silence, and its reply's bytes take theirs
            await asyncio.sleep((len(frame) + len(resp)) * self.char_s + self.silence_s)
            self._send(resp)


class RtuTcpFrontEnd(_Bus):
    """RTU frames over TCP (a serial device server) in front of a :class:`ModbusServer`'s units."""

    def __init__(self, server: ModbusServer) -> None:
        super().__init__(server)
        self.host: str | None = None
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)
        sock = self._server.sockets[0].getsockname()
        self.host, self.port = sock[0], sock[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._conns.values()):  # ends each read loop normally
            writer.close()
        tasks = list(self._conns)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=2.0)
            for task in pending:
                task.cancel()
        await server.wait_closed()

    async def __aenter__(self) -> RtuTcpFrontEnd:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        buf = bytearray()
        try:
            while True:
                chunk = await reader.read(512)
                if not chunk:
                    return
                buf += chunk
                for frame in self.frames(buf):
                    resp = self.reply(frame)
                    if resp is not None:
                        writer.write(resp)
                        await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._conns.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

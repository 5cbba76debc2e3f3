"""A deliberately hostile Modbus TCP server for the driver tests (issue 11, item 6).

It reads requests like a real server and answers each in one of several broken ways. Written from the
Modbus TCP spec (MBAP header: transaction id, protocol id 0, length, unit id), sharing no code with the
driver or the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

__all__ = ["MODES", "ODD_BUT_VALID", "HostileServer"]

MODES = ("byte_count", "transaction_id", "unit_id", "garbage", "oversized", "stream", "wrong_function")
# Replies a client must still read: one byte per write, transaction id 0 (some gateways), the frame
# with bytes after it in the same write, and a second copy of the reply after it (a stray frame).
ODD_BUT_VALID = ("trickle", "tid_zero", "trailing", "stray")


class HostileServer:
    """Answers every read with ``mode``'s kind of broken reply; counts connections and closes."""

    def __init__(self, mode: str) -> None:
        if mode not in (*MODES, *ODD_BUT_VALID, "ok"):
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.port = 0
        self.connections = 0
        self.closed = 0  # connections that ended (the client closed them)
        self.sent_bytes = 0
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def __aenter__(self) -> HostileServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        # Closing the transports ends each handler normally (cancelling them makes 3.11 log an error).
        for writer in list(self._conns.values()):
            writer.close()
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=2.0)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        self.connections += 1
        try:
            while True:
                tid, _proto, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                fc, _start, count = pdu[0], *struct.unpack(">HH", pdu[1:5])
                body = bytes([fc, 2 * count]) + b"\x00\x07" * count
                if self.mode == "byte_count":
                    body = bytes([fc, 2 * count + 4]) + b"\x00\x07" * count
                elif self.mode == "transaction_id":
                    tid ^= 0x5555
                elif self.mode == "unit_id":
                    unit ^= 1
                elif self.mode == "oversized":
                    body = bytes([fc, 250]) + b"\x00\x07" * 125
                elif self.mode == "wrong_function":
                    body = bytes([4, 2 * count]) + b"\x00\x07" * count
                elif self.mode == "tid_zero":
                    tid = 0
                if self.mode == "garbage":
                    frame = b"\xde\xad\xbe\xef" * 8
                elif self.mode == "stream":
                    while True:  # bytes without end, until the client hangs up
                        writer.write(b"\x00" * 1024)
                        self.sent_bytes += 1024
                        await writer.drain()
                else:
                    frame = struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body
                if self.mode == "trickle":
                    for i in range(len(frame)):
                        writer.write(frame[i : i + 1])
                        await writer.drain()
                        await asyncio.sleep(0.001)
                elif self.mode == "trailing":
                    writer.write(frame + b"\x00\x00")
                else:
                    writer.write(frame)
                self.sent_bytes += len(frame)
                await writer.drain()
                if self.mode == "stray":
                    await asyncio.sleep(0.02)
                    writer.write(frame)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed += 1
            self._conns.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

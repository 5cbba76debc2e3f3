"""One end of a simulated serial line: a pseudo-terminal whose other end a client opens as its port.

The bus classes (Modbus RTU, DL/T 645, CJ/T 188) say how bytes become request frames (``_received``) and
what they answer (``_answer``, reading ``_inbox`` and writing with ``_send``); opening the pty, reading it
and shutting down is the same for all of them and lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from typing import Self

__all__ = ["MeterLine", "PtyLine"]


class PtyLine:
    """Open :attr:`path` as the serial port once :meth:`start` has run."""

    _task_prefix = "sim-pty"

    def __init__(self) -> None:
        self.path = ""
        self._master = self._slave = -1
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # switches for tests (meter buses: replies end with CS 16)
        self.garbage = b""  # written (once) before the next reply: line noise
        self.corrupt_next = False  # the next reply leaves with a wrong checksum
        self.truncate_next = False  # the next reply breaks off in the middle

    async def start(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline until the client sets its own
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        asyncio.get_running_loop().add_reader(self._master, self._readable)
        self._task = asyncio.create_task(self._answer(), name=f"{self._task_prefix}-{self.path}")

    async def stop(self) -> None:
        if self._master < 0:
            return
        asyncio.get_running_loop().remove_reader(self._master)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = -1

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 1024)
        except OSError:  # BlockingIOError included: nothing there after all
            return
        self._received(data)

    def _send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the client closed its end
            os.write(self._master, data)

    def _meter_fault(self, reply: bytes) -> bytes:
        """``reply`` (``... CS 16``) as the test switches want it on the line; each switch acts once."""
        if self.corrupt_next:
            self.corrupt_next = False
            reply = reply[:-2] + bytes(((reply[-2] + 1) % 256, 0x16))
        if self.truncate_next:
            self.truncate_next = False
            reply = reply[: len(reply) // 2]
        if self.garbage:
            reply, self.garbage = self.garbage + reply, b""
        return reply

    @staticmethod
    def _collide(replies: list[bytes]) -> list[bytes]:
        """Several meters answering one request (a wildcard address) talk at once: the line carries one
        collided frame, bitwise AND (an idle-high line pulled low by any driver), no checksum survives."""
        if len(replies) < 2:
            return replies
        width = max(len(r) for r in replies)
        collided = bytearray(b"\xff" * width)
        for r in replies:
            for i, b in enumerate(r.ljust(width, b"\xff")):
                collided[i] &= b
        return [bytes(collided)]

    def _received(self, data: bytes) -> None:
        """Bytes from the client: cut complete frames into ``_inbox``."""
        raise NotImplementedError

    async def _answer(self) -> None:
        """Answer the frames of ``_inbox`` until cancelled."""
        raise NotImplementedError


class MeterLine(PtyLine):
    """A bus of meters whose frames start with 68H and end with ``CS 16H`` (DL/T 645, CJ/T 188): frames
    are cut from the byte stream, anything before a 68H is line noise, and a frame whose checksum or end
    byte is wrong is counted in :attr:`bad_frames` and not answered."""

    def __init__(self, *, baudrate: int, turnaround_s: float) -> None:
        super().__init__()
        self.baudrate = baudrate
        self.turnaround_s = turnaround_s
        self.char_s = 11 / baudrate  # 8E1: start, 8 data, parity, stop
        self.bad_frames = 0
        self.requests = 0
        self.echo = False  # test switch: the adapter echoes what the client sends (2-wire, no echo cancel)
        self._buf = bytearray()

    def _frame_size(self, buf: bytearray) -> int | None:
        """Bytes of the frame starting at ``buf[0]`` (a 68H); None: not enough bytes yet to tell; 0: this
        68H does not start a frame."""
        raise NotImplementedError

    def _received(self, data: bytes) -> None:
        if self.echo:
            self._send(data)
        self._buf += data
        while True:
            start = self._buf.find(0x68)
            if start < 0:
                self._buf.clear()
                return
            del self._buf[:start]
            size = self._frame_size(self._buf)
            if size is None:
                return
            if size == 0:
                del self._buf[:1]
                continue
            if len(self._buf) < size:
                return
            frame, self._buf = bytes(self._buf[:size]), self._buf[size:]
            self._inbox.put_nowait(frame)

    def _accepted(self, frame: bytes) -> bool:
        """Counts the request: a good one in :attr:`requests`, a broken one in :attr:`bad_frames`."""
        if frame[-1] != 0x16 or sum(frame[:-2]) % 256 != frame[-2]:
            self.bad_frames += 1
            return False
        self.requests += 1
        return True

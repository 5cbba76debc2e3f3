"""One RS-485 bus carrying DL/T 645 electricity meters and CJ/T 188 water/heat meters together, on one
pseudo-terminal (MANUAL.md, "RS-485: a mixed meter bus").

Real buses mix the two (one converter, one baud rate): every meter hears every frame and answers only its
own. Here a frame is cut by its shape: ``68 A0..A5 68`` is DL/T 645 (a second 68 after six address bytes),
any other ``68 T ...`` CJ/T 188; the meters of :class:`Dlt645Bus` and :class:`Cjt188Bus` (not started
themselves) answer it; several answers to one wildcard request collide on the line. A CJ/T 188 address
whose sixth byte is 68 would read as DL/T 645 here, as it may on a real bus: keep such meters apart.
"""

from __future__ import annotations

import asyncio

from sim.cjt188_meter import Cjt188Bus, FlowMeter
from sim.dlt645_meter import Dlt645Bus, Meter
from sim.ptyline import PtyLine

__all__ = ["MeterBus"]


class MeterBus(PtyLine):
    """DL/T 645 and CJ/T 188 meters sharing one pseudo-terminal; open :attr:`path` as the serial port."""

    _task_prefix = "sim-rs485"

    def __init__(
        self,
        meters: list[Meter],
        flow_meters: list[FlowMeter],
        *,
        baudrate: int = 2400,
        turnaround_s: float = 0.02,
    ) -> None:
        super().__init__()
        self.dlt645 = Dlt645Bus(meters, baudrate=baudrate, turnaround_s=turnaround_s)
        self.cjt188 = Cjt188Bus(flow_meters, baudrate=baudrate, turnaround_s=turnaround_s)
        self.char_s = 11 / baudrate
        self.turnaround_s = turnaround_s
        self._buf = bytearray()

    def _received(self, data: bytes) -> None:
        self._buf += data
        while True:
            start = self._buf.find(0x68)
            if start < 0:
                self._buf.clear()
                return
            del self._buf[:start]
            if len(self._buf) < 11:
                return
            dlt = self._buf[7] == 0x68
            end = 12 + self._buf[9] if dlt else 13 + self._buf[10]
            if len(self._buf) < end:
                return
            frame, self._buf = bytes(self._buf[:end]), self._buf[end:]
            self._inbox.put_nowait(frame)

    def replies(self, frame: bytes) -> list[bytes]:
        return self.dlt645.replies(frame) if frame[7] == 0x68 else self.cjt188.replies(frame)

    async def _answer(self) -> None:
        while True:
            frame = await self._inbox.get()
            for reply in self._collide(self.replies(frame)):
                reply = self._meter_fault(reply)
                await asyncio.sleep(self.turnaround_s + (len(frame) + len(reply)) * self.char_s)
                self._send(reply)

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
from sim.ptyline import MeterLine

__all__ = ["MeterBus"]


class MeterBus(MeterLine):
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
        super().__init__(baudrate=baudrate, turnaround_s=turnaround_s)
        self.dlt645 = Dlt645Bus(meters, baudrate=baudrate, turnaround_s=turnaround_s)
        self.cjt188 = Cjt188Bus(flow_meters, baudrate=baudrate, turnaround_s=turnaround_s)

    def _frame_size(self, buf: bytearray) -> int | None:
        if len(buf) < 11:
            return None
        return 12 + buf[9] if buf[7] == 0x68 else 13 + buf[10]  # DL/T 645 by its second 68, else CJ/T 188

    def replies(self, frame: bytes) -> list[bytes]:
        return self.dlt645.replies(frame) if frame[7] == 0x68 else self.cjt188.replies(frame)

    async def _answer(self) -> None:
        while True:
            frame = await self._inbox.get()
            for reply in self._collide(self.replies(frame)):
                reply = self._meter_fault(reply)
                await asyncio.sleep(self.turnaround_s + (len(frame) + len(reply)) * self.char_s)
                self._send(reply)

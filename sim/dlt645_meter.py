"""DL/T 645-2007 electricity meters on an RS-485 bus, on a pseudo-terminal (MANUAL.md, "RS-485: DL/T 645").

Written from the standard's frame description (STANDARDS.md), independently of drivers/dlt645:

- Frames ``FE.. 68 A0..A5 68 C L DATA CS 16``; the meter skips any FE and noise before the first 68.
- Address: 6 bytes BCD, low byte first. A meter answers its own address, and the all-``AA`` wildcard
  (so with several meters on the bus they all answer at once and garble each other, as real ones do).
- C 0x13 read address (to the wildcard ``AA..AA`` only): reply 0x93 with the meter's address. With several
  meters on the bus they all answer at once: the line carries their replies collided (bitwise AND, the
  idle-high line pulled low by any driver), which no checksum survives, as DL/T 645 warns.
- C 0x11 read data: reply 0x91 with the DI and the value (BCD, low byte first, sign in the top bit),
  every data byte +0x33; an unknown DI gets 0xD1 with error byte 0x02 (no such data).
- A frame with a wrong checksum or end byte gets no reply. ``offline`` meters never answer.
- Switches for tests: ``garbage`` (noise before the next reply), ``corrupt_next`` (a wrong checksum),
  ``truncate_next`` (the reply breaks off halfway).
- Replies are preceded by four FE and leave after ``turnaround_s`` plus their bytes' time at the baud rate.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sim.ptyline import MeterLine

__all__ = ["Dlt645Bus", "Meter"]

# DI -> (bytes, decimals, signed): DL/T 645-2007 appendix A, the identifiers the simulated meter serves.
VALUE_FORMATS: dict[int, tuple[int, int, bool]] = {
    0x00000000: (4, 2, True),
    0x00010000: (4, 2, False),
    0x00010100: (4, 2, False),
    0x00010200: (4, 2, False),
    0x00010300: (4, 2, False),
    0x00010400: (4, 2, False),
    0x00020000: (4, 2, False),
    0x02010100: (2, 1, False),
    0x02010200: (2, 1, False),
    0x02010300: (2, 1, False),
    0x02020100: (3, 3, True),
    0x02020200: (3, 3, True),
    0x02020300: (3, 3, True),
    0x02030000: (3, 4, True),
    0x02030100: (3, 4, True),
    0x02060000: (2, 3, True),
    0x02800002: (2, 2, False),
}


def _bcd(value: float, size: int, decimals: int, signed: bool) -> bytes:
    n = round(abs(value) * 10**decimals)
    text = str(n).rjust(size * 2, "0")[-size * 2 :]
    out = [int(text[i : i + 2], 16) for i in range(0, size * 2, 2)]  # most significant first
    if signed and value < 0:
        out[0] |= 0x80
    return bytes(reversed(out))


@dataclass
class Meter:
    """One meter: its 12-digit address (as printed on its plate) and its present values by DI."""

    address: str
    values: dict[int, float] = field(default_factory=dict)
    offline: bool = False

    def address_bytes(self) -> bytes:
        return bytes(int(self.address[i : i + 2], 16) for i in range(10, -1, -2))


class Dlt645Bus(MeterLine):
    """Meters sharing one pseudo-terminal; open :attr:`path` as the serial port."""

    def __init__(self, meters: list[Meter], *, baudrate: int = 2400, turnaround_s: float = 0.02) -> None:
        super().__init__(baudrate=baudrate, turnaround_s=turnaround_s)
        self.meters = meters

    _task_prefix = "sim-dlt645"

    def _frame_size(self, buf: bytearray) -> int | None:
        if len(buf) < 10:
            return None
        return 12 + buf[9] if buf[7] == 0x68 else 0  # 68 A0..A5 68 C L DATA CS 16

    def replies(self, frame: bytes) -> list[bytes]:
        """What the bus carries back for one request frame (one reply per answering meter)."""
        if not self._accepted(frame):
            return []
        addr, control = frame[1:7], frame[8]
        data = bytes((b - 0x33) % 256 for b in frame[10:-2])
        out = []
        for m in self.meters:
            if m.offline or (addr != m.address_bytes() and addr != b"\xaa" * 6):
                continue
            if control == 0x13 and addr == b"\xaa" * 6:
                out.append(self._frame(m, 0x93, m.address_bytes()))
                continue
            if control != 0x11 or len(data) < 4:
                continue
            di = int.from_bytes(data[:4], "little")
            fmt = VALUE_FORMATS.get(di)
            if fmt is None or di not in m.values:
                out.append(self._frame(m, 0xD1, b"\x02"))
            else:
                out.append(self._frame(m, 0x91, data[:4] + _bcd(m.values[di], *fmt)))
        return out

    @staticmethod
    def _frame(m: Meter, control: int, data: bytes) -> bytes:
        body = b"\x68" + m.address_bytes() + b"\x68" + bytes((control, len(data)))
        body += bytes((b + 0x33) % 256 for b in data)
        return b"\xfe" * 4 + body + bytes((sum(body) % 256, 0x16))

    async def _answer(self) -> None:
        while True:
            frame = await self._inbox.get()
            for reply in self._collide(self.replies(frame)):
                reply = self._meter_fault(reply)
                await asyncio.sleep(self.turnaround_s + len(reply) * self.char_s)
                self._send(reply)

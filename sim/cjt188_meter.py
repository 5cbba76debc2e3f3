"""CJ/T 188 water and heat meters on an RS-485 bus (through an M-Bus converter), on a pseudo-terminal.

Written from the standard's frame description (STANDARDS.md), independently of drivers/cjt188
(MANUAL.md, "RS-485: CJ/T 188"):

- Frames ``FE.. 68 T A0..A6 C L DATA CS 16``; noise and FE before the first 68 are skipped.
- A meter answers its own type and address, and the all-``AA`` wildcard address.
- C 0x01 with DI 901F (byte order per meter: ``di_high_first``): reply 0x81 with the 901F block of its type
  (water/gas 22 bytes, heat 46 bytes); any other DI: 0xC1 with a status byte.
- Wrong checksum or end byte: no reply. ``offline`` meters never answer.
- Heat is sent in ``heat_unit`` (0x05 kWh, 0x08 MWh, 0x11 GJ, 0x0E MJ; the values are in that unit).
- Switches for tests (sim.ptyline): ``garbage``, ``corrupt_next``, ``truncate_next``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sim.ptyline import MeterLine

__all__ = ["Cjt188Bus", "FlowMeter"]


def _bcd(n: int, size: int) -> bytes:
    text = str(n).rjust(size * 2, "0")[-size * 2 :]
    return bytes(int(text[i : i + 2], 16) for i in range(size * 2 - 2, -1, -2))


@dataclass
class FlowMeter:
    """A water, gas (type 0x10/0x11/0x30) or heat (0x20/0x21) meter and its present values."""

    address: str  # 14 digits
    meter_type: int = 0x10
    values: dict[str, float] = field(default_factory=dict)
    di_high_first: bool = True
    offline: bool = False
    heat_unit: int = 0x05

    def address_bytes(self) -> bytes:
        return bytes(int(self.address[i : i + 2], 16) for i in range(12, -1, -2))

    def block(self, serial: int) -> bytes:
        v = self.values
        di = b"\x90\x1f" if self.di_high_first else b"\x1f\x90"
        out = di + bytes((serial,))
        if self.meter_type in (0x20, 0x21):
            unit = bytes((self.heat_unit,))
            out += _bcd(round(v.get("settlement_heat", 0) * 100), 4) + unit
            out += _bcd(round(v.get("heat", 0) * 100), 4) + unit
            out += _bcd(round(v.get("heat_power", 0) * 100), 4) + b"\x17"
            out += _bcd(round(v.get("flow_rate", 0) * 10000), 4) + b"\x35"
            out += _bcd(round(v.get("flow", 0) * 100), 4) + b"\x2c"
            out += _bcd(round(v.get("supply_temp", 0) * 100), 3) + _bcd(
                round(v.get("return_temp", 0) * 100), 3
            )
            out += _bcd(round(v.get("hours", 0)), 3)
        else:
            out += _bcd(round(v.get("flow", 0) * 100), 4) + b"\x2c"
            out += _bcd(round(v.get("settlement_flow", 0) * 100), 4) + b"\x2c"
        return out + bytes.fromhex("00301215112620") + b"\x00\x00"  # 2026-11-15 12:30:00, status 0


class Cjt188Bus(MeterLine):
    """Meters sharing one pseudo-terminal; open :attr:`path` as the serial port."""

    def __init__(self, meters: list[FlowMeter], *, baudrate: int = 2400, turnaround_s: float = 0.02) -> None:
        super().__init__(baudrate=baudrate, turnaround_s=turnaround_s)
        self.meters = meters

    _task_prefix = "sim-cjt188"

    def _frame_size(self, buf: bytearray) -> int | None:
        return None if len(buf) < 11 else 13 + buf[10]  # 68 T A0..A6 C L DATA CS 16

    def replies(self, frame: bytes) -> list[bytes]:
        if not self._accepted(frame):
            return []
        mtype, addr, control, data = frame[1], frame[2:9], frame[9], frame[11:-2]
        out = []
        for m in self.meters:
            if m.offline or (addr != m.address_bytes() and addr != b"\xaa" * 7):
                continue
            if mtype not in (m.meter_type, 0xAA) or control != 0x01 or len(data) < 3:
                continue
            di = b"\x90\x1f" if m.di_high_first else b"\x1f\x90"
            if data[:2] == di:
                out.append(self._frame(m, 0x81, m.block(data[2])))
            else:
                out.append(self._frame(m, 0xC1, data[:3] + b"\x01"))
        return out

    @staticmethod
    def _frame(m: FlowMeter, control: int, data: bytes) -> bytes:
        body = bytes((0x68, m.meter_type)) + m.address_bytes() + bytes((control, len(data))) + data
        return b"\xfe\xfe" + body + bytes((sum(body) % 256, 0x16))

    async def _answer(self) -> None:
        while True:
            frame = await self._inbox.get()
            for reply in self.replies(frame):
                reply = self._meter_fault(reply)
                await asyncio.sleep(self.turnaround_s + (len(frame) + len(reply)) * self.char_s)
                self._send(reply)

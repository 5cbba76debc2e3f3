"""CJ/T 188 (water, heat, gas meters) frames and the 901F reading, pure: bytes in, typed values out.

Frame (STANDARDS.md): optional ``FE`` preamble, then ``68 T A0..A6 C L DATA CS 16``: T the meter type
(0x10 cold water, 0x11 hot water, 0x20/0x21 heat, 0x30 gas), the address 7 bytes BCD low byte first
(all-``AA`` a wildcard), C 0x01 read data -> 0x81 (0xC1 an error reply), CS the sum mod 256 of the bytes
from 68 to before CS. No byte offset (unlike DL/T 645). DATA starts with the DI (2 bytes, in an order that
differs between editions: a per-meter setting) and a serial byte.

901F reply after DI and serial byte:
- water/gas (L 0x16): current cumulative flow (4 bytes BCD, 2 decimals, unit code), settlement-day flow
  (4 + unit), real time (7: ss mm hh DD MM YYlo YYhi), status (2).
- heat (L 0x2E): settlement-day heat (4 + unit), current heat (4 + unit), heat power (4, 2 decimals, + unit),
  flow rate (4, 4 decimals, + unit), cumulative flow (4 + unit), supply and return temperatures (3 bytes,
  2 decimals, degC), working hours (3), real time (7), status (2).
Unit codes: 0x2C m3, 0x35 m3/h, 0x05 kWh, 0x08 MWh, 0x11 GJ, 0x0E MJ, 0x17 kW.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "METER_TYPES",
    "UNIT_CODES",
    "BcdError",
    "Frame",
    "FrameError",
    "MeterErrorReply",
    "Reading901F",
    "bcd",
    "bcd_bytes",
    "decode_901f",
    "encode_address",
    "encode_frame",
    "read_request",
    "split_frame",
]

METER_TYPES: dict[str, int] = {
    "cold_water": 0x10,
    "hot_water": 0x11,
    "heat": 0x20,
    "heat_cooling": 0x21,
    "gas": 0x30,
}
UNIT_CODES: dict[int, str] = {
    0x2C: "m3",
    0x35: "m3/h",
    0x05: "kWh",
    0x08: "MWh",
    0x11: "GJ",
    0x0E: "MJ",
    0x17: "kW",
}
READ = 0x01
READ_REPLY = 0x81
READ_ERROR = 0xC1
DiOrder = Literal["low_first", "high_first"]


class FrameError(ValueError):
    """A frame or value that cannot be used: checksum, end byte, BCD, length, an error reply."""


class BcdError(FrameError):
    """A value byte whose nibbles are not both 0-9."""


class MeterErrorReply(FrameError):
    """The meter answered with an error reply (C 0xC1)."""


@dataclass(frozen=True, slots=True)
class Frame:
    meter_type: int
    address: str
    control: int
    data: bytes


def encode_address(address: str) -> bytes:
    """14 digits, most significant first -> 7 bytes low byte first (``AA`` pairs kept as wildcards)."""
    if len(address) != 14 or not all(c in "0123456789Aa" for c in address):
        raise ValueError(f"meter address {address!r} is not 14 digits")
    pairs = [address[i : i + 2] for i in range(0, 14, 2)]
    return bytes(0xAA if p.upper() == "AA" else int(p, 16) for p in reversed(pairs))


def _decode_address(raw: bytes) -> str:
    out = []
    for b in reversed(raw):
        if b == 0xAA:
            out.append("AA")
        elif (b >> 4) > 9 or (b & 0xF) > 9:
            raise FrameError(f"address byte {b:02X} is not BCD")
        else:
            out.append(f"{b:02X}")
    return "".join(out)


def bcd_bytes(value: int, size: int) -> bytes:
    """A non-negative integer -> ``size`` BCD bytes, low byte first."""
    digits = f"{value:0{size * 2}d}"
    if value < 0 or len(digits) > size * 2:
        raise ValueError(f"{value} does not fit {size} BCD bytes")
    return bytes(int(digits[i : i + 2], 16) for i in range(size * 2 - 2, -1, -2))


def bcd(raw: bytes) -> int:
    """BCD bytes, low byte first -> integer; FrameError on a nibble above 9."""
    value = 0
    for b in reversed(raw):
        hi, lo = b >> 4, b & 0xF
        if hi > 9 or lo > 9:
            raise BcdError(f"byte {b:02X} is not BCD")
        value = value * 100 + hi * 10 + lo
    return value


def encode_frame(meter_type: int, address: str, control: int, data: bytes, *, preamble: int = 2) -> bytes:
    if len(data) > 255:
        raise ValueError(f"{len(data)} data bytes, at most 255")
    body = bytes((0x68, meter_type)) + encode_address(address) + bytes((control, len(data))) + data
    return b"\xfe" * preamble + body + bytes((sum(body) & 0xFF, 0x16))


def read_request(
    meter_type: int, address: str, *, serial: int = 0, di_order: DiOrder = "high_first"
) -> bytes:
    """C 0x01 read of DI 901F."""
    di = b"\x90\x1f" if di_order == "high_first" else b"\x1f\x90"
    return encode_frame(meter_type, address, READ, di + bytes((serial & 0xFF,)))


def split_frame(buf: bytes) -> tuple[int, Frame | None]:
    """(bytes consumed, frame), or (bytes to drop, None) while incomplete or when only noise precedes a
    possible start; FrameError on a complete frame with a wrong checksum or end byte."""
    start = buf.find(b"\x68")
    if start < 0:
        return len(buf), None
    if len(buf) < start + 2:
        return start, None
    if not (0x10 <= buf[start + 1] <= 0x49 or buf[start + 1] == 0xAA):
        return start + 1, None  # a 68 inside noise (T is 1x water, 2x heat, 3x gas, 4x other): look after it
    if len(buf) < start + 11:
        return start, None
    length = buf[start + 10]
    end = start + 13 + length
    if len(buf) < end:
        return start, None
    body = bytes(buf[start : end - 2])
    if buf[end - 1] != 0x16:
        raise FrameError(f"frame ends with {buf[end - 1]:02X}, expected 16")
    if sum(body) & 0xFF != buf[end - 2]:
        raise FrameError(f"checksum {buf[end - 2]:02X}, computed {sum(body) & 0xFF:02X}")
    return end, Frame(meter_type=body[1], address=_decode_address(body[2:9]), control=body[9], data=body[11:])


@dataclass(frozen=True, slots=True)
class Reading901F:
    """The values of one 901F reply, in the meter's units (``units`` names each quantity's unit)."""

    values: dict[str, float]
    units: dict[str, str]
    status: int


def _quantity(data: bytes, at: int, decimals: int, name: str, out: Reading901F) -> int:
    out.values[name] = bcd(data[at : at + 4]) / 10**decimals
    code = data[at + 4]
    unit = UNIT_CODES.get(code)
    if unit is None:
        raise FrameError(f"{name}: unit code {code:02X} is not one of CJ/T 188's")
    out.units[name] = unit
    return at + 5


def decode_901f(frame: Frame, *, di_order: DiOrder = "high_first") -> Reading901F:
    """The 901F reply of a water, gas or heat meter. FrameError on an error reply, another DI, a short
    frame, bad BCD or an unknown unit code."""
    if frame.control == READ_ERROR:
        raise MeterErrorReply(f"meter error reply (status {frame.data[-1:].hex() or 'none'})")
    if frame.control != READ_REPLY:
        raise FrameError(f"control code {frame.control:02X} is not a read reply")
    di = b"\x90\x1f" if di_order == "high_first" else b"\x1f\x90"
    if frame.data[:2] != di:
        raise FrameError(f"reply for DI {frame.data[:2].hex().upper()}, expected {di.hex().upper()}")
    heat = frame.meter_type in (0x20, 0x21)
    need = 0x2E if heat else 0x16
    if len(frame.data) < need:
        raise FrameError(f"901F reply of {len(frame.data)} bytes, expected {need}")
    out = Reading901F(values={}, units={}, status=0)
    at = 3
    if heat:
        at = _quantity(frame.data, at, 2, "settlement_heat", out)
        at = _quantity(frame.data, at, 2, "heat", out)
        at = _quantity(frame.data, at, 2, "heat_power", out)
        at = _quantity(frame.data, at, 4, "flow_rate", out)
        at = _quantity(frame.data, at, 2, "flow", out)
        for name in ("supply_temp", "return_temp"):
            out.values[name] = bcd(frame.data[at : at + 3]) / 100
            out.units[name] = "degC"
            at += 3
        out.values["hours"] = float(bcd(frame.data[at : at + 3]))
        out.units["hours"] = "h"
        at += 3
    else:
        at = _quantity(frame.data, at, 2, "flow", out)
        at = _quantity(frame.data, at, 2, "settlement_flow", out)
    at += 7  # real time
    status = int.from_bytes(frame.data[at : at + 2], "little")
    return Reading901F(values=out.values, units=out.units, status=status)

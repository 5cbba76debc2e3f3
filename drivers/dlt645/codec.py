"""DL/T 645-2007 frames and values, pure: bytes in, typed values out (no I/O, no clock).

Frame (STANDARDS.md, DL/T 645-2007 section 7): optional wake-up preamble ``FE FE FE FE``, then
``68 A0..A5 68 C L DATA CS 16``. The address is 6 bytes BCD, low byte first (``AA`` a wildcard byte);
every DATA byte goes on the line +0x33; CS is the sum of every byte from the first 68 to before CS,
mod 256. Read data is C 0x11; a normal reply 0x91 (0xB1: more frames follow), an error reply 0xD1
with one error byte. A reply's DATA starts with the 4-byte data identifier (DI), low byte first, then
the value: BCD, low byte first, the top bit of the top byte a sign where the DI is signed.

Written here as a pure module with property tests (tests/unit/test_dlt645_codec.py). The index has
``dlt645`` 3.2.0 and ``python-dlt645`` 0.1.4; neither was evaluated yet (issue 19 asks to), so nothing here
says they are unsound: this module needs no I/O and no dependency, which is reason enough for now.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BROADCAST",
    "DATA_IDS",
    "PREAMBLE",
    "WILDCARD",
    "BcdError",
    "DataId",
    "Frame",
    "FrameError",
    "MeterErrorReply",
    "bcd_decode",
    "bcd_encode",
    "checksum",
    "decode_address",
    "decode_read_reply",
    "encode_address",
    "encode_frame",
    "read_address_reply",
    "read_address_request",
    "read_request",
    "split_frame",
]

PREAMBLE = b"\xfe\xfe\xfe\xfe"
WILDCARD = "AAAAAAAAAAAA"  # every meter answers: one meter on the bus only (13H read address)
BROADCAST = "999999999999"  # commands without a reply (08H time sync)
READ = 0x11
READ_REPLY = 0x91
READ_REPLY_MORE = 0xB1
READ_ERROR = 0xD1
READ_ADDRESS = 0x13  # to the wildcard address: the one meter on the bus answers 0x93 with its address
READ_ADDRESS_REPLY = 0x93
_OFFSET = 0x33
_MAX_DATA = 200


class FrameError(ValueError):
    """A frame that cannot be used: wrong checksum, wrong end byte, length past the buffer, bad BCD."""


class BcdError(FrameError):
    """A value byte whose nibbles are not both 0-9."""


class MeterErrorReply(FrameError):
    """The meter answered with an error reply (C 0xD1); ``error`` is its error byte."""

    def __init__(self, message: str, *, error: int) -> None:
        super().__init__(message)
        self.error = error


@dataclass(frozen=True, slots=True)
class DataId:
    """What a data identifier's value looks like: its bytes, decimals, sign bit, unit."""

    di: int
    name: str
    size: int
    decimals: int
    unit: str
    signed: bool = False


# The identifiers the driver reads (DL/T 645-2007 appendix A); sizes and decimals from the standard.
DATA_IDS: dict[int, DataId] = {
    d.di: d
    for d in (
        DataId(0x00000000, "combined_active_energy", 4, 2, "kWh", signed=True),
        DataId(0x00010000, "forward_active_energy", 4, 2, "kWh"),
        DataId(0x00010100, "forward_active_energy_t1", 4, 2, "kWh"),
        DataId(0x00010200, "forward_active_energy_t2", 4, 2, "kWh"),
        DataId(0x00010300, "forward_active_energy_t3", 4, 2, "kWh"),
        DataId(0x00010400, "forward_active_energy_t4", 4, 2, "kWh"),
        DataId(0x00020000, "reverse_active_energy", 4, 2, "kWh"),
        DataId(0x02010100, "voltage_a", 2, 1, "V"),
        DataId(0x02010200, "voltage_b", 2, 1, "V"),
        DataId(0x02010300, "voltage_c", 2, 1, "V"),
        DataId(0x02020100, "current_a", 3, 3, "A", signed=True),
        DataId(0x02020200, "current_b", 3, 3, "A", signed=True),
        DataId(0x02020300, "current_c", 3, 3, "A", signed=True),
        DataId(0x02030000, "active_power", 3, 4, "kW", signed=True),
        DataId(0x02030100, "active_power_a", 3, 4, "kW", signed=True),
        DataId(0x02060000, "power_factor", 2, 3, "", signed=True),
        DataId(0x02800002, "frequency", 2, 2, "Hz"),
    )
}


def checksum(body: bytes) -> int:
    """CS: the sum of the bytes from the first 68 to before CS, mod 256."""
    return sum(body) & 0xFF


def encode_address(address: str) -> bytes:
    """12 digits (as printed on the meter, most significant first; ``A`` for a wildcard digit pair) ->
    the 6 address bytes, low byte first."""
    if len(address) != 12 or not all(c in "0123456789Aa" for c in address):
        raise ValueError(f"meter address {address!r} is not 12 digits")
    pairs = [address[i : i + 2] for i in range(0, 12, 2)]
    return bytes(0xAA if p.upper() == "AA" else int(p, 16) for p in reversed(pairs))


def decode_address(raw: bytes) -> str:
    """The 6 address bytes of a frame -> 12 digits, most significant first."""
    if len(raw) != 6:
        raise FrameError(f"address of {len(raw)} bytes, expected 6")
    out = []
    for b in reversed(raw):
        if b == 0xAA:
            out.append("AA")
        elif (b >> 4) > 9 or (b & 0xF) > 9:
            raise FrameError(f"address byte {b:02X} is not BCD")
        else:
            out.append(f"{b:02X}")
    return "".join(out)


def bcd_encode(value: int, size: int, *, signed: bool = False) -> bytes:
    """An integer -> ``size`` bytes of BCD, low byte first; the top bit of the top byte the sign."""
    negative = value < 0
    if negative and not signed:
        raise ValueError(f"{value} is negative for an unsigned field")
    digits = f"{abs(value):0{size * 2}d}"
    if len(digits) > size * 2 or (signed and int(digits[0]) > 7):
        raise ValueError(f"{value} does not fit {size} BCD bytes")
    raw = bytearray(int(digits[i : i + 2], 16) for i in range(0, size * 2, 2))
    if negative:
        raw[0] |= 0x80
    return bytes(reversed(raw))


def bcd_decode(raw: bytes, *, signed: bool = False) -> int:
    """BCD bytes, low byte first -> integer. FrameError on a nibble above 9."""
    top_first = bytearray(reversed(raw))
    negative = signed and bool(top_first and top_first[0] & 0x80)
    if negative:
        top_first[0] &= 0x7F
    value = 0
    for b in top_first:
        hi, lo = b >> 4, b & 0xF
        if hi > 9 or lo > 9:
            raise BcdError(f"byte {b:02X} is not BCD")
        value = value * 100 + hi * 10 + lo
    return -value if negative else value


@dataclass(frozen=True, slots=True)
class Frame:
    address: str
    control: int
    data: bytes  # with the 0x33 offset removed


def encode_frame(address: str, control: int, data: bytes = b"", *, preamble: bool = True) -> bytes:
    """A complete frame, DATA sent +0x33, with the FE wake-up preamble unless told otherwise."""
    if len(data) > _MAX_DATA:
        raise ValueError(f"{len(data)} data bytes, at most {_MAX_DATA}")
    body = (
        b"\x68"
        + encode_address(address)
        + b"\x68"
        + bytes((control, len(data)))
        + bytes((b + _OFFSET) & 0xFF for b in data)
    )
    return (PREAMBLE if preamble else b"") + body + bytes((checksum(body), 0x16))


def read_request(address: str, di: int) -> bytes:
    """C 0x11 read data of one data identifier."""
    return encode_frame(address, READ, di.to_bytes(4, "little"))


def read_address_request() -> bytes:
    """C 0x13 read address, to the all-AA wildcard: only valid with one meter on the bus (several answer
    at once and their replies collide on the line)."""
    return encode_frame(WILDCARD, READ_ADDRESS)


def read_address_reply(frame: Frame) -> str:
    """The address a 0x93 reply carries (its DATA, the 6 address bytes). FrameError otherwise."""
    if frame.control != READ_ADDRESS_REPLY or len(frame.data) != 6:
        raise FrameError(
            f"control code {frame.control:02X} with {len(frame.data)} bytes is not a read-address reply"
        )
    return decode_address(frame.data)


def split_frame(buf: bytes) -> tuple[int, Frame | None]:
    """Find the first frame in ``buf``: (bytes consumed, frame), or (bytes to drop, None) while it is
    incomplete (0) or when only noise precedes a possible start. FrameError on a frame that is complete
    but wrong (checksum, end byte); the bytes up to its end are then to be dropped by the caller."""
    start = buf.find(b"\x68")
    if start < 0:
        return len(buf), None  # preamble or noise only
    if len(buf) < start + 10:
        return start, None
    if buf[start + 7] != 0x68:
        return start + 1, None  # a 68 inside noise: look again after it
    length = buf[start + 9]
    end = start + 12 + length
    if len(buf) < end:
        return start, None
    body = bytes(buf[start : end - 2])
    if buf[end - 1] != 0x16:
        raise FrameError(f"frame ends with {buf[end - 1]:02X}, expected 16")
    if checksum(body) != buf[end - 2]:
        raise FrameError(f"checksum {buf[end - 2]:02X}, computed {checksum(body):02X}")
    address = decode_address(body[1:7])
    data = bytes((b - _OFFSET) & 0xFF for b in body[10:])
    return end, Frame(address=address, control=body[8], data=data)


def decode_read_reply(frame: Frame, di: int) -> float | int:
    """The value of a normal read reply for ``di``. FrameError on an error reply (with its error byte),
    another DI, a short value or bad BCD."""
    if frame.control == READ_ERROR:
        err = frame.data[0] if frame.data else 0
        raise MeterErrorReply(f"meter error reply {err:02X} for DI {di:08X}", error=err)
    if frame.control not in (READ_REPLY, READ_REPLY_MORE):
        raise FrameError(f"control code {frame.control:02X} is not a read reply")
    if len(frame.data) < 4:
        raise FrameError("reply without a data identifier")
    got = int.from_bytes(frame.data[:4], "little")
    if got != di:
        raise FrameError(f"reply for DI {got:08X}, expected {di:08X}")
    spec = DATA_IDS.get(di)
    raw = frame.data[4:]
    if spec is None:
        return bcd_decode(raw)
    if len(raw) < spec.size:
        raise FrameError(f"DI {di:08X} value of {len(raw)} bytes, expected {spec.size}")
    n = bcd_decode(raw[: spec.size], signed=spec.signed)
    return n / 10**spec.decimals if spec.decimals else n

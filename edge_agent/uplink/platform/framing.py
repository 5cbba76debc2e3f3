"""Cutting the platform's TCP stream into messages: pure functions over bytes, framing from settings.

binary: HEADER | LENGTH (covers sequence + body) | [SEQUENCE u32] | BODY | CRC16 | TAIL
hex:    LENGTH as ``2 * length_bytes`` hex digits (bytes of BODY) | BODY as upper-case hex text
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge_agent.config.settings import PlatformFraming

__all__ = ["Frame", "FrameError", "FrameReader", "crc16", "encode_frame"]

_CRC: dict[str, tuple[int, int, bool, int]] = {
    # name: (poly, init, reflected, xorout)
    "ccitt_false": (0x1021, 0xFFFF, False, 0x0000),
    "xmodem": (0x1021, 0x0000, False, 0x0000),
    "kermit": (0x1021, 0x0000, True, 0x0000),
    "modbus": (0x8005, 0xFFFF, True, 0x0000),
}
_MAX_BODY = 16 * 1024 * 1024


class FrameError(ValueError):
    """A frame that cannot be this city's framing; carries what was expected and what came."""


@dataclass(frozen=True, slots=True)
class Frame:
    sequence: int | None
    body: bytes


def _reflect(v: int, width: int) -> int:
    return int(f"{v:0{width}b}"[::-1], 2)


def crc16(data: bytes, variant: str) -> int:
    poly, crc, reflected, xorout = _CRC[variant]
    if reflected:
        rpoly = _reflect(poly, 16)
        for b in data:
            crc ^= b
            for _ in range(8):
                crc = (crc >> 1) ^ rpoly if crc & 1 else crc >> 1
    else:
        for b in data:
            crc ^= b << 8
            for _ in range(8):
                crc = ((crc << 1) ^ poly) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc ^ xorout


def _endian(e: str) -> Literal["little", "big"]:
    return "little" if e == "little" else "big"


def encode_frame(body: bytes, f: PlatformFraming, *, sequence: int = 0) -> bytes:
    if f.kind == "hex":
        width = 2 * f.length_bytes
        if len(body) >= 16**width:
            raise FrameError(f"body of {len(body)} bytes does not fit {width} hex length digits")
        return f"{len(body):0{width}X}".encode() + body.hex().upper().encode()
    seq = sequence.to_bytes(4, _endian(f.length_endian)) if f.sequence_field else b""
    covered = seq + body
    if len(covered) >= 256**f.length_bytes:
        raise FrameError(f"body of {len(body)} bytes does not fit a {f.length_bytes}-byte length")
    length = len(covered).to_bytes(f.length_bytes, _endian(f.length_endian))
    crc = b""
    if f.crc != "none":
        span = covered if f.crc_covers == "body" else length + covered
        crc = crc16(span, f.crc).to_bytes(2, _endian(f.crc_endian))
    return bytes.fromhex(f.header_hex) + length + covered + crc + bytes.fromhex(f.tail_hex)


class FrameReader:
    """Bytes in, whole frames out; keeps the partial rest. No I/O: the client feeds what it reads."""

    def __init__(self, framing: PlatformFraming) -> None:
        self._f = framing
        self._buf = bytearray()
        self._header = bytes.fromhex(framing.header_hex)
        self._tail = bytes.fromhex(framing.tail_hex)

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while True:
            frame = self._hex() if self._f.kind == "hex" else self._binary()
            if frame is None:
                return out
            out.append(frame)

    def _hex(self) -> Frame | None:
        width = 2 * self._f.length_bytes
        if len(self._buf) < width:
            return None
        head = bytes(self._buf[:width])
        try:
            n = int(head.decode("ascii"), 16)
        except ValueError:
            raise FrameError(f"length field {head!r} is not {width} hex digits") from None
        if n > _MAX_BODY:
            raise FrameError(f"length {n} is above {_MAX_BODY}")
        if len(self._buf) < width + 2 * n:
            return None
        text = bytes(self._buf[width : width + 2 * n])
        del self._buf[: width + 2 * n]
        try:
            return Frame(None, bytes.fromhex(text.decode("ascii")))
        except ValueError:
            raise FrameError("body is not hex text") from None

    def _binary(self) -> Frame | None:
        f = self._f
        h = len(self._header)
        if len(self._buf) < h:
            return None
        if bytes(self._buf[:h]) != self._header:
            raise FrameError(f"header {bytes(self._buf[:h]).hex()} is not {f.header_hex}")
        if len(self._buf) < h + f.length_bytes:
            return None
        lraw = bytes(self._buf[h : h + f.length_bytes])
        n = int.from_bytes(lraw, _endian(f.length_endian))
        seq_len = 4 if f.sequence_field else 0
        if n > _MAX_BODY or n < seq_len:
            raise FrameError(f"length {n} is out of range")
        crc_len = 0 if f.crc == "none" else 2
        total = h + f.length_bytes + n + crc_len + len(self._tail)
        if len(self._buf) < total:
            return None
        raw = bytes(self._buf[:total])
        del self._buf[:total]
        start = h + f.length_bytes
        covered = raw[start : start + n]
        if crc_len:
            got = int.from_bytes(raw[start + n : start + n + 2], _endian(f.crc_endian))
            span = covered if f.crc_covers == "body" else lraw + covered
            want = crc16(span, f.crc)
            if got != want:
                raise FrameError(f"CRC {got:04X} is not {want:04X} ({f.crc}, {f.crc_endian})")
        if raw[total - len(self._tail) :] != self._tail:
            raise FrameError(f"tail {raw[total - len(self._tail) :].hex()} is not {f.tail_hex}")
        seq = int.from_bytes(covered[:4], _endian(f.length_endian)) if seq_len else None
        return Frame(seq, covered[seq_len:])

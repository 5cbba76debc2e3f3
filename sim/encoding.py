"""Register encoding as the simulated devices' manuals describe it (struct based, independent of drivers/).

Conventions (see MANUAL.md, "Data encoding"):

- A register holds 16 bits. With ``byte_order="big"`` (the Modbus default) the first byte of the value's
  big-endian representation is the register's high byte; ``"little"`` swaps the two bytes of every register.
- ``word_order="big"``: the register with the most significant word comes first (lowest address).
  ``"little"``: least significant word first ("CDAB" / "word swapped" in vendor manuals).
- Strings are ASCII, two characters per register, first character in the high byte (big byte order),
  padded with NUL to the declared length in registers.
"""

from __future__ import annotations

import struct
from typing import Literal

__all__ = ["TYPE_WIDTH", "ByteOrder", "WordOrder", "decode", "encode"]

WordOrder = Literal["big", "little"]
ByteOrder = Literal["big", "little"]

# Registers per numeric type, and the struct format of its big-endian bytes.
TYPE_WIDTH: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
_FMT: dict[str, str] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "float32": ">f",
    "int64": ">q",
    "uint64": ">Q",
    "float64": ">d",
}


def _bytes_to_registers(raw: bytes, word_order: WordOrder, byte_order: ByteOrder) -> list[int]:
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    regs = [int.from_bytes(w, "big") for w in words]
    if word_order == "little":
        regs.reverse()
    return regs


def _registers_to_bytes(regs: list[int], word_order: WordOrder, byte_order: ByteOrder) -> bytes:
    ordered = list(reversed(regs)) if word_order == "little" else list(regs)
    out = bytearray()
    for r in ordered:
        w = (r & 0xFFFF).to_bytes(2, "big")
        out += w[::-1] if byte_order == "little" else w
    return bytes(out)


def encode(
    value: float | int | str,
    type_: str,
    *,
    word_order: WordOrder = "big",
    byte_order: ByteOrder = "big",
    length: int | None = None,
) -> list[int]:
    """Registers holding ``value`` as ``type_``. Raises ValueError / struct.error for values out of range."""
    if type_ == "string":
        if length is None:
            raise ValueError("string needs a length in registers")
        data = str(value).encode("ascii")
        if len(data) > 2 * length:
            raise ValueError(f"string {value!r} does not fit {length} registers")
        data = data.ljust(2 * length, b"\x00")
        # Strings have no word order: characters run in address order.
        return _bytes_to_registers(data, "big", byte_order)
    fmt = _FMT.get(type_)
    if fmt is None:
        raise ValueError(f"unknown type {type_!r}")
    if type_.startswith("float"):
        raw = struct.pack(fmt, float(value))
    else:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{type_} needs an int, got {value!r}")
        raw = struct.pack(fmt, value)
    return _bytes_to_registers(raw, word_order, byte_order)


def decode(
    regs: list[int],
    type_: str,
    *,
    word_order: WordOrder = "big",
    byte_order: ByteOrder = "big",
) -> float | int | str:
    """Inverse of :func:`encode` (used for values clients write into the simulator)."""
    if type_ == "string":
        return _registers_to_bytes(regs, "big", byte_order).rstrip(b"\x00").decode("ascii", errors="replace")
    fmt = _FMT.get(type_)
    if fmt is None:
        raise ValueError(f"unknown type {type_!r}")
    if len(regs) != TYPE_WIDTH[type_]:
        raise ValueError(f"{type_} needs {TYPE_WIDTH[type_]} registers, got {len(regs)}")
    value: float | int = struct.unpack(fmt, _registers_to_bytes(regs, word_order, byte_order))[0]
    return value

"""Registers in, typed values out, and back. Pure, struct based, compiled once per point layout.

Conventions (the usual Modbus ones, and the simulator manual's):

- ``byte_order="big"``: a register's high byte comes first; ``"little"`` swaps the two bytes of every
  register (strings included).
- ``word_order="big"``: the most significant register comes first (lowest address); ``"little"`` is the
  "CDAB"/word-swapped layout. Strings have no word order: characters run in address order.
- value = raw * scale + offset. With scale 1 and offset 0 integer types stay ``int``; otherwise ``float``.
- ``bit`` is one bit of a register (after the byte swap); ``bool`` is a coil or discrete input.
- Strings are ASCII, two characters per register; trailing NULs and spaces are stripped.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from drivers.base import FailureCode, Value
from drivers.modbus.options import ModbusPoint, register_count

__all__ = [
    "BlockDecoder",
    "CodecError",
    "Decoder",
    "block_decoder",
    "decode",
    "decoder_for",
    "encode",
    "non_finite_code",
    "raw_word",
]

Decoder = Callable[[Sequence[int]], Value]
BlockDecoder = Callable[[Sequence[int]], "tuple[list[Value | CodecError], bool]"]

# struct format of each numeric type's big-endian bytes, and its raw range.
_FMT: dict[str, str] = {
    "int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I",
    "int64": ">q", "uint64": ">Q", "float32": ">f", "float64": ">d",
}  # fmt: skip
_RANGE: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_WIDTH = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "int64": 4,
    "uint64": 4,
    "float32": 2,
    "float64": 4,
}


class CodecError(ValueError):
    """A value that cannot be decoded or encoded; permanent (retrying gives the same answer).

    ``code``: ``decode`` (registers do not form a value), ``range`` (outside the type's range), ``nan``
    (NaN into an integer type), ``type`` (wrong kind of value), ``scale`` (scale 0 cannot be inverted).
    """

    def __init__(self, message: str, *, point: str, code: FailureCode) -> None:
        super().__init__(message)
        self.point = point
        self.code = code


def non_finite_code(value: Value) -> FailureCode | None:
    """``nan`` or ``inf`` for a float that is not finite, else None (the driver marks it uncertain)."""
    if type(value) is float and not math.isfinite(value):
        return FailureCode.NAN if math.isnan(value) else FailureCode.INF
    return None


def _swap(r: int) -> int:
    return ((r & 0xFF) << 8) | (r >> 8)


@lru_cache(maxsize=512)
def _compile(
    type_: str,
    byte_order: str,
    word_order: str,
    bit: int | None,
    length: int | None,
    scale: float,
    offset: float,
) -> Decoder:
    identity = scale == 1.0 and offset == 0.0

    if type_ == "bool":
        return lambda regs: bool(regs[0])
    if type_ == "bit":
        assert bit is not None
        if byte_order == "big":
            return lambda regs: bool((regs[0] >> bit) & 1)
        return lambda regs: bool((_swap(regs[0]) >> bit) & 1)
    if type_ == "string":
        n = length or 1
        pack_s = struct.Struct(f"{'>' if byte_order == 'big' else '<'}{n}H").pack

        def dec_string(regs: Sequence[int]) -> Value:
            return pack_s(*regs).rstrip(b"\x00 ").decode("ascii")

        return dec_string

    width = _WIDTH[type_]
    # Packing the registers with '<H' swaps the bytes of each: that is byte_order little.
    pack = struct.Struct(f"{'>' if byte_order == 'big' else '<'}{width}H").pack
    unpack = struct.Struct(_FMT[type_]).unpack
    reverse = word_order == "little" and width > 1

    if identity and byte_order == "big" and type_ == "uint16":
        return lambda regs: regs[0]  # the commonest layout, no struct round trip
    if reverse:

        def raw(regs: Sequence[int]) -> float | int:
            v: float | int = unpack(pack(*reversed(regs)))[0]
            return v
    else:

        def raw(regs: Sequence[int]) -> float | int:
            v: float | int = unpack(pack(*regs))[0]
            return v

    if identity:
        return raw
    return lambda regs: raw(regs) * scale + offset


def decoder_for(point: ModbusPoint) -> Decoder:
    """The compiled decoder of a point's layout (cached: points of one layout share it).

    The decoder takes exactly the point's registers (bits) and raises IndexError/struct.error/
    UnicodeDecodeError on malformed input; :func:`decode` turns those into :class:`CodecError`.
    """
    return _compile(
        point.type, point.byte_order, point.word_order, point.bit, point.length, point.scale, point.offset
    )


def raw_word(registers: Sequence[int], point: ModbusPoint) -> int:
    """The point's registers as one unsigned number, high word first (after ``word_order``), bytes as read.

    What ``invalid_raw`` sentinels are compared with: 0x8000 is the register 0x8000 whatever the type.
    """
    regs = list(registers)
    if point.word_order == "little":
        regs.reverse()
    out = 0
    for r in regs:
        out = (out << 16) | (r & 0xFFFF)
    return out


def _no_value(raw: int, point: ModbusPoint) -> CodecError:
    return CodecError(
        f"point {point.id}: raw {raw:#06x} is a 'no value' sentinel (invalid_raw)",
        point=point.id,
        code=FailureCode.NO_VALUE,
    )


def decode(registers: Sequence[int], point: ModbusPoint) -> Value:
    """The point's value from its registers (bits for coil/discrete).

    Raises CodecError "decode", or "no_value" when the registers hold one of the point's ``invalid_raw``.
    """
    n = register_count(point)
    if len(registers) != n:
        raise CodecError(
            f"{point.type} needs {n} registers, got {len(registers)}", point=point.id, code=FailureCode.DECODE
        )
    if point.invalid_raw:
        raw = raw_word(registers, point)
        if raw in point.invalid_raw:
            raise _no_value(raw, point)
    try:
        return decoder_for(point)(registers)
    except (struct.error, UnicodeDecodeError, IndexError, OverflowError) as exc:
        raise CodecError(
            f"cannot decode {list(registers)} as {point.type}: {exc}", point=point.id, code=FailureCode.DECODE
        ) from exc


_K_BE, _K_LE, _K_BIT, _K_FALLBACK = 0, 1, 2, 3
_DECODE_ERRORS = (struct.error, ValueError, IndexError, ArithmeticError)


def _whole_block_struct(jobs: Sequence[tuple[Any, ...]], count: int) -> struct.Struct | None:
    """One Struct covering every point of the block, when all are big-endian numbers without scale,
    in address order and not overlapping; None otherwise."""
    fmt, pos = ">", 0
    for kind, byte_off, _b, fn, _scale, _offset, identity, _is_float, _pid in jobs:
        if kind != _K_BE or not identity or byte_off < pos:
            return None
        code = fn.__self__.format.lstrip(">")
        fmt += "x" * (byte_off - pos) + code
        pos = byte_off + struct.calcsize(">" + code)
    return struct.Struct(fmt) if pos <= 2 * count else None


def block_decoder(
    start: int, count: int, points: Sequence[ModbusPoint], *, _whole: bool = True, _sentinels: bool = True
) -> BlockDecoder:
    """A decoder of a whole read reply: registers (bits) from ``start`` in, one value per point out.

    The hot path of a poll. The reply is packed to bytes once per byte order, and each numeric point is
    one precompiled ``unpack_from`` (no per-point packing). Returns ``(values, clean)``: a point whose
    registers do not decode gets a :class:`CodecError` in its place (the others are unaffected), and
    ``clean`` is False when any value is a CodecError or a NaN/infinite float. A point whose registers
    hold one of its ``invalid_raw`` sentinels gets a CodecError with code ``no_value``.
    """
    if _sentinels and any(p.invalid_raw for p in points):
        inner = block_decoder(start, count, points, _whole=_whole, _sentinels=False)
        return _with_sentinels(inner, start, points)
    jobs: list[tuple[int, int, int, Any, float, float, bool, bool, str]] = []
    need_be = need_le = False
    for p in points:
        off = p.address - start
        n = register_count(p)
        identity = p.scale == 1.0 and p.offset == 0.0
        is_float = p.type in ("float32", "float64") or (p.type in _FMT and not identity)
        if p.table in ("coil", "discrete"):
            jobs.append((_K_BIT, off, 0, None, 1.0, 0.0, True, False, p.id))
        elif p.type in _FMT and (n == 1 or p.word_order == "big"):
            kind = _K_BE if p.byte_order == "big" else _K_LE
            need_be = need_be or kind == _K_BE
            need_le = need_le or kind == _K_LE
            unpack_from = struct.Struct(_FMT[p.type]).unpack_from
            jobs.append((kind, 2 * off, 0, unpack_from, p.scale, p.offset, identity, is_float, p.id))
        else:
            jobs.append((_K_FALLBACK, off, off + n, decoder_for(p), 1.0, 0.0, True, is_float, p.id))
    pack_be = struct.Struct(f">{count}H").pack
    pack_le = struct.Struct(f"<{count}H").pack  # '<H' swaps the bytes of each register
    whole = _whole_block_struct(jobs, count) if _whole else None
    if whole is not None:
        # The common case (plain big-endian numbers, no scale): one unpack for the whole reply.
        unpack_all = whole.unpack_from
        has_float = any(j[7] for j in jobs)
        fallback: BlockDecoder | None = None

        def run_whole(data: Sequence[int]) -> tuple[list[Value | CodecError], bool]:
            nonlocal fallback
            try:
                values: list[Value | CodecError] = list(unpack_all(pack_be(*data[:count])))
            except _DECODE_ERRORS:
                values = []
            if values and (not has_float or math.isfinite(sum(values) * 0.0)):  # type: ignore[arg-type]
                return values, True
            # A short reply, a NaN or an infinity: the point-by-point path says which and why.
            if fallback is None:
                fallback = block_decoder(start, count, points, _whole=False, _sentinels=False)
            return fallback(data)

        return run_whole

    def run(data: Sequence[int]) -> tuple[list[Value | CodecError], bool]:
        out: list[Value | CodecError] = []
        append = out.append
        buf_be = buf_le = b""
        if need_be or need_le:
            regs = data if len(data) == count else data[:count]
            try:
                if need_be:
                    buf_be = pack_be(*regs)
                if need_le:
                    buf_le = pack_le(*regs)
            except _DECODE_ERRORS as exc:
                err = f"reply of {len(data)} registers does not decode: {exc}"
                return [CodecError(err, point=j[8], code=FailureCode.DECODE) for j in jobs], False
        clean = True
        acc = 0.0  # stays 0.0 while every float is finite (inf*0 and nan*0 are nan): one check per block
        for kind, a, b, fn, scale, offset, identity, is_float, pid in jobs:
            try:
                if kind == _K_BE:
                    v = fn(buf_be, a)[0]
                elif kind == _K_LE:
                    v = fn(buf_le, a)[0]
                elif kind == _K_BIT:
                    append(bool(data[a]))
                    continue
                else:
                    v = fn(data[a:b])
                if not identity:
                    v = v * scale + offset
                if is_float:
                    acc += v * 0.0
                append(v)
            except _DECODE_ERRORS as exc:
                clean = False
                append(CodecError(f"cannot decode point {pid}: {exc}", point=pid, code=FailureCode.DECODE))
        return out, clean and acc == 0.0

    return run


def _with_sentinels(inner: BlockDecoder, start: int, points: Sequence[ModbusPoint]) -> BlockDecoder:
    """``inner``, then each sentinel point's raw registers compared with its ``invalid_raw``."""
    checks = [
        (i, p.address - start, p.address - start + register_count(p), p)
        for i, p in enumerate(points)
        if p.invalid_raw
    ]

    def run(data: Sequence[int]) -> tuple[list[Value | CodecError], bool]:
        values, clean = inner(data)
        for i, a, b, p in checks:
            if isinstance(values[i], CodecError) or b > len(data):
                continue
            raw = raw_word(data[a:b], p)
            if raw in p.invalid_raw:
                values[i] = _no_value(raw, p)
                clean = False
        return values, clean

    return run


def _raw_number(value: Value, point: ModbusPoint) -> float | int:
    """Invert scale and offset. Integers pass through exactly when scale is 1 and offset 0."""
    if isinstance(value, str) or value is None:
        raise CodecError(
            f"{point.type} point {point.id} needs a number, got {value!r}",
            point=point.id,
            code=FailureCode.TYPE,
        )
    identity = point.scale == 1.0 and point.offset == 0.0
    if identity and isinstance(value, int):
        return int(value)
    f = float(value)
    if point.scale == 0.0:
        raise CodecError(
            f"point {point.id} has scale 0: a value cannot be written", point=point.id, code=FailureCode.SCALE
        )
    return f if identity else (f - point.offset) / point.scale


def encode(value: Value, point: ModbusPoint, *, current: int = 0) -> list[int]:
    """The registers (bits) that make the device report ``value`` for this point.

    For type ``bit`` the other 15 bits come from ``current`` (the register as last read: a bit is written
    by read-modify-write). Raises :class:`CodecError` for NaN into an integer type, a value outside the
    type's range, a string that is not ASCII or too long, or a value of the wrong kind.
    """
    t = point.type
    if t in ("bool", "bit"):
        if isinstance(value, bool):
            on = value
        elif isinstance(value, int | float) and value in (0, 1):
            on = bool(value)
        else:
            raise CodecError(
                f"{t} point {point.id} takes true/false or 0/1, got {value!r}",
                point=point.id,
                code=FailureCode.TYPE,
            )
        if t == "bool":
            return [int(on)]
        assert point.bit is not None
        reg = current if point.byte_order == "big" else _swap(current)
        reg = (reg | (1 << point.bit)) if on else (reg & ~(1 << point.bit) & 0xFFFF)
        return [reg if point.byte_order == "big" else _swap(reg)]

    if t == "string":
        if not isinstance(value, str):
            raise CodecError(
                f"string point {point.id} needs a str, got {value!r}", point=point.id, code=FailureCode.TYPE
            )
        n = point.length or 1
        try:
            data = value.encode("ascii")
        except UnicodeEncodeError as exc:
            raise CodecError(f"{value!r} is not ASCII", point=point.id, code=FailureCode.TYPE) from exc
        if len(data) > 2 * n:
            raise CodecError(
                f"{value!r} is longer than {2 * n} characters", point=point.id, code=FailureCode.RANGE
            )
        data = data.ljust(2 * n, b"\x00")
        return list(struct.unpack(f"{'>' if point.byte_order == 'big' else '<'}{n}H", data))

    raw = _raw_number(value, point)
    if t in _RANGE:
        if isinstance(raw, float):
            if math.isnan(raw):
                raise CodecError(
                    f"NaN cannot be written to {t} point {point.id}", point=point.id, code=FailureCode.NAN
                )
            if math.isinf(raw):
                raise CodecError(
                    f"{value} cannot be written to {t} point {point.id}",
                    point=point.id,
                    code=FailureCode.RANGE,
                )
            raw = round(raw)
        lo, hi = _RANGE[t]
        if not lo <= raw <= hi:
            raise CodecError(
                f"{value} (raw {raw}) is outside {t} range {lo}..{hi} for point {point.id}",
                point=point.id,
                code=FailureCode.RANGE,
            )
    try:
        data = struct.pack(_FMT[t], raw)
    except (OverflowError, struct.error) as exc:  # a float too large for float32
        raise CodecError(
            f"{value} does not fit {t} point {point.id}: {exc}", point=point.id, code=FailureCode.RANGE
        ) from exc
    width = _WIDTH[t]
    regs = list(struct.unpack(f"{'>' if point.byte_order == 'big' else '<'}{width}H", data))
    if point.word_order == "little":
        regs.reverse()
    return regs

"""The register codec: fixed vectors from the Modbus conventions, round trips for every type and order."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.codec import CodecError, decode, decoder_for, encode, non_finite_code
from drivers.modbus.options import ModbusPoint

ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]  # (byte, word)
INT_RANGE = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
WIDTH = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "int64": 4,
    "uint64": 4,
    "float32": 2,
    "float64": 4,
}


def pt(type_: str, byte_order: str = "big", word_order: str = "big", **kw: Any) -> ModbusPoint:
    table = kw.pop("table", "coil" if type_ == "bool" else "holding")
    return ModbusPoint(
        id="p", address=0, table=table, type=type_, byte_order=byte_order, word_order=word_order, **kw
    )  # type: ignore[arg-type]


# --- fixed vectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "byte_order", "word_order", "regs", "value"),
    [
        ("float32", "big", "big", [0x3F80, 0x0000], 1.0),
        ("float32", "big", "little", [0x0000, 0x3F80], 1.0),
        ("float32", "little", "big", [0x803F, 0x0000], 1.0),
        ("float32", "little", "little", [0x0000, 0x803F], 1.0),
        ("float32", "big", "big", [0xC1C8, 0x0000], -25.0),
        ("float64", "big", "big", [0x3FF0, 0, 0, 0], 1.0),
        ("float64", "big", "little", [0, 0, 0, 0x3FF0], 1.0),
        ("int16", "big", "big", [0xFFFF], -1),
        ("int16", "little", "big", [0x0180], -32767),
        ("uint16", "big", "big", [0xFFFF], 65535),
        ("uint16", "little", "big", [0x3412], 0x1234),
        ("int32", "big", "big", [0x1234, 0x5678], 0x12345678),
        ("int32", "big", "little", [0x5678, 0x1234], 0x12345678),
        ("int32", "little", "big", [0x3412, 0x7856], 0x12345678),
        ("int32", "big", "big", [0xFFFF, 0xFFFE], -2),
        ("uint32", "big", "big", [0xFFFF, 0xFFFE], 0xFFFFFFFE),
        ("int64", "big", "big", [0, 0, 0, 1], 1),
        ("int64", "big", "little", [1, 0, 0, 0], 1),
        ("uint64", "big", "big", [0x0102, 0x0304, 0x0506, 0x0708], 0x0102030405060708),
        ("uint64", "big", "little", [0x0708, 0x0506, 0x0304, 0x0102], 0x0102030405060708),
    ],
)
def test_fixed_vectors(type_: str, byte_order: str, word_order: str, regs: list[int], value: Any) -> None:
    p = pt(type_, byte_order, word_order)
    got = decode(regs, p)
    assert got == value and type(got) is type(value)
    assert encode(value, p) == regs


def test_strings() -> None:
    p = pt("string", length=3)
    assert decode([0x4142, 0x4300, 0x0000], p) == "ABC"
    assert decode([0x4142, 0x2020, 0x2000], p) == "AB"  # trailing spaces and NULs stripped
    assert decode([0x2041, 0x0000, 0x0000], p) == " A"  # leading space kept
    assert encode("ABC", p) == [0x4142, 0x4300, 0x0000]
    swapped = pt("string", "little", length=2)
    assert decode([0x4241, 0x0043], swapped) == "ABC"
    assert encode("ABC", swapped) == [0x4241, 0x0043]
    # word order does not apply to strings
    assert decode([0x4142, 0x4300], pt("string", word_order="little", length=2)) == "ABC"


def test_bits_and_bools() -> None:
    b3 = pt("bit", bit=3)
    assert decode([0b1000], b3) is True and decode([0b0111], b3) is False
    assert decode([0x0100], pt("bit", "little", bit=0)) is True  # bit 0 of the swapped register
    assert encode(True, b3, current=0xF000) == [0xF008]
    assert encode(False, b3, current=0xFFFF) == [0xFFF7]
    assert encode(1, pt("bit", "little", bit=0), current=0) == [0x0100]
    coil = pt("bool")
    assert decode([True], coil) is True and decode([0], coil) is False
    assert encode(True, coil) == [1] and encode(0, coil) == [0]


def test_scale_and_offset() -> None:
    p = pt("int16", scale=0.1)
    assert decode([265], p) == pytest.approx(26.5)
    assert encode(26.5, p) == [265]
    assert encode(-0.1, p) == [0xFFFF]
    assert encode(26.54, p) == [265]  # rounds to the nearest step
    k = pt("uint16", scale=0.01, offset=-40.0)
    assert decode([6500], k) == pytest.approx(25.0)
    assert encode(25.0, k) == [6500]
    f = pt("float32", scale=1000.0)
    assert decode([0x3F80, 0], f) == 1000.0
    assert encode(1000.0, f) == [0x3F80, 0]


def test_non_finite_floats_decode_as_such() -> None:
    nan = decode([0x7FC0, 0], pt("float32"))
    assert isinstance(nan, float) and math.isnan(nan) and non_finite_code(nan) == "nan"
    inf = decode([0xFF80, 0], pt("float32"))
    assert inf == -math.inf and non_finite_code(inf) == "inf"
    assert non_finite_code(1.5) is None and non_finite_code(3) is None and non_finite_code("x") is None
    assert decode([0x7FF0, 0, 0, 0], pt("float64")) == math.inf
    # NaN and infinity can be written to a float register
    assert encode(math.inf, pt("float32")) == [0x7F80, 0]
    assert math.isnan(decode(encode(math.nan, pt("float64")), pt("float64")))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "point", "code"),
    [
        (32768, pt("int16"), "range"),
        (-1, pt("uint16"), "range"),
        (2**32, pt("uint32"), "range"),
        (2**64, pt("uint64"), "range"),
        (3276.8, pt("int16", scale=0.1), "range"),
        (math.nan, pt("int32"), "nan"),
        (math.inf, pt("int16"), "range"),
        (1e39, pt("float32"), "range"),
        ("12", pt("int16"), "type"),
        (None, pt("float32"), "type"),
        (2, pt("bool"), "type"),
        ("on", pt("bit", bit=1), "type"),
        ("ABCDE", pt("string", length=2), "range"),
        ("温度", pt("string", length=2), "type"),
        (5, pt("string", length=2), "type"),
        # check refuses scale 0 (test_config); the codec still refuses a point built around validation
        (1.0, pt("int16").model_copy(update={"scale": 0.0}), "scale"),
    ],
)
def test_encode_refuses(value: Any, point: ModbusPoint, code: str) -> None:
    with pytest.raises(CodecError) as err:
        encode(value, point)
    assert err.value.code == code and err.value.point == "p"
    assert isinstance(err.value, ValueError)


def test_decode_failures() -> None:
    with pytest.raises(CodecError) as err:
        decode([1], pt("float32"))
    assert err.value.code == "decode"
    with pytest.raises(CodecError) as err:
        decode([0xC3A9, 0], pt("string", length=2))  # not ASCII
    assert err.value.code == "decode"
    with pytest.raises(CodecError):
        decode([0x1_0000], pt("int16", "little"))  # not a 16-bit register


def test_decoders_are_shared_per_layout() -> None:
    assert decoder_for(pt("float32", word_order="little")) is decoder_for(pt("float32", word_order="little"))


# --- round trips --------------------------------------------------------------------------------------

orders_st = st.sampled_from(ORDERS)


def regs_st(n: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, 0xFFFF), min_size=n, max_size=n)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(WIDTH)), orders_st, st.data())
def test_registers_round_trip(type_: str, orders: tuple[str, str], data: st.DataObject) -> None:
    p = pt(type_, *orders)
    regs = data.draw(regs_st(WIDTH[type_]))
    value = decode(regs, p)
    if isinstance(value, float) and math.isnan(value):
        return  # NaN payloads need not survive; that NaN decodes as NaN is tested above
    assert encode(value, p) == regs


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(INT_RANGE)), orders_st, st.data())
def test_int_values_round_trip(type_: str, orders: tuple[str, str], data: st.DataObject) -> None:
    p = pt(type_, *orders)
    value = data.draw(st.integers(*INT_RANGE[type_]))
    got = decode(encode(value, p), p)
    assert got == value and type(got) is int


@settings(max_examples=150, deadline=None)
@given(orders_st, st.floats(width=32, allow_nan=False), st.floats(allow_nan=False))
def test_float_values_round_trip(orders: tuple[str, str], f32: float, f64: float) -> None:
    assert decode(encode(f32, pt("float32", *orders)), pt("float32", *orders)) == f32
    assert decode(encode(f64, pt("float64", *orders)), pt("float64", *orders)) == f64


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(sorted(INT_RANGE)),
    orders_st,
    st.sampled_from([0.1, 0.01, 0.5, 2.0, 10.0, -1.0, 0.001]),
    st.sampled_from([0.0, -40.0, 273.15, 5.0]),
    st.data(),
)
def test_scaled_ints_round_trip(
    type_: str, orders: tuple[str, str], scale: float, offset: float, data: st.DataObject
) -> None:
    p = pt(type_, *orders, scale=scale, offset=offset)
    lo, hi = INT_RANGE[type_]
    raw = data.draw(st.integers(max(lo, -(2**40)), min(hi, 2**40)))
    regs = encode(raw, pt(type_, *orders))
    value = decode(regs, p)
    assert value == pytest.approx(raw * scale + offset)
    assert encode(value, p) == regs


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["big", "little"]), st.integers(1, 8), st.data())
def test_strings_round_trip(byte_order: str, length: int, data: st.DataObject) -> None:
    p = pt("string", byte_order, length=length)
    alphabet = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
    text = data.draw(st.text(alphabet, max_size=2 * length))
    # inner spaces survive, trailing ones are stripped
    text = data.draw(st.sampled_from([text, text[: len(text) // 2] + " " + text[len(text) // 2 :]]))[
        : 2 * length
    ]
    assert decode(encode(text, p), p) == text.rstrip(" ")


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["big", "little"]), st.integers(0, 15), st.integers(0, 0xFFFF), st.booleans())
def test_bits_round_trip_and_leave_other_bits(byte_order: str, bit: int, current: int, on: bool) -> None:
    p = pt("bit", byte_order, bit=bit)
    [reg] = encode(on, p, current=current)
    assert decode([reg], p) is on
    assert reg ^ current in (0, 1 << (bit if byte_order == "big" else (bit + 8) % 16))


def _independent_registers(value: Any, type_: str, byte_order: str, word_order: str) -> list[int]:
    """An oracle written apart from the codec: big-endian bytes, then cut into words and reorder."""
    fmt = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "int64": ">q", "uint64": ">Q",
           "float32": ">f", "float64": ">d"}[type_]  # fmt: skip
    raw = struct.pack(fmt, value)
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if word_order == "little":
        words.reverse()
    return [int.from_bytes(w, "big" if byte_order == "big" else "little") for w in words]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(WIDTH)), orders_st, st.data())
def test_decode_matches_an_independent_oracle(
    type_: str, orders: tuple[str, str], data: st.DataObject
) -> None:
    if type_ in INT_RANGE:
        value: Any = data.draw(st.integers(*INT_RANGE[type_]))
    else:
        value = data.draw(st.floats(width=32 if type_ == "float32" else 64, allow_nan=False))
    regs = _independent_registers(value, type_, *orders)
    assert decode(regs, pt(type_, *orders)) == value
    assert encode(value, pt(type_, *orders)) == regs


@given(
    st.lists(
        st.sampled_from(["int16", "uint16", "int32", "uint32", "float32", "float64", "int64"]),
        min_size=1,
        max_size=12,
    ),
    st.lists(st.integers(0, 3), min_size=12, max_size=12),
    st.data(),
)
def test_whole_block_fast_path_agrees_with_point_by_point(
    types: list[str], gaps: list[int], data: st.DataObject
) -> None:
    """The one-unpack path for plain big-endian blocks must give exactly what the per-point path gives."""
    from drivers.modbus.codec import block_decoder
    from drivers.modbus.options import ModbusPoint, register_count

    points, addr = [], 10
    for i, t in enumerate(types):
        addr += gaps[i]
        p = ModbusPoint(id=f"p{i}", address=addr, type=t)  # type: ignore[arg-type]
        points.append(p)
        addr += register_count(p)
    count = addr - 10
    regs = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=count, max_size=count))
    fast_values, fast_clean = block_decoder(10, count, points)(regs)
    slow_values, slow_clean = block_decoder(10, count, points, _whole=False)(regs)
    assert fast_clean == slow_clean
    for f, s in zip(fast_values, slow_values, strict=True):
        assert f == s or (f != f and s != s), (f, s)  # NaN == NaN here

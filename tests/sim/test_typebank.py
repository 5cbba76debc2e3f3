"""Unit 99 (type-test block): raw registers checked by hand, and the whole bank over a socket."""

from __future__ import annotations

import math
import struct

import pytest

from sim import typebank
from sim.encoding import decode, encode
from sim.modbus_server import ModbusServer
from sim.typebank import ENTRIES, TypeEntry, build_type_unit, registers_of
from tests.sim.rawclient import RawClient


def _find(
    table: str, type_: str, value: object, word_order: str = "big", byte_order: str = "big"
) -> TypeEntry:
    for e in ENTRIES:
        if (e.table, e.type, e.word_order, e.byte_order) == (table, type_, word_order, byte_order) and (
            e.value == value or (isinstance(value, float) and math.isnan(value) and e.value != e.value)
        ):
            return e
    raise LookupError((table, type_, value, word_order, byte_order))


def test_hand_checked_registers() -> None:
    assert registers_of(_find("holding", "float32", 1.0)) == [0x3F80, 0x0000]
    assert registers_of(_find("holding", "float32", 1.0, "little")) == [0x0000, 0x3F80]
    assert registers_of(_find("holding", "int16", -1)) == [0xFFFF]
    assert registers_of(_find("holding", "int16", -12345)) == [0xCFC7]
    assert registers_of(_find("holding", "int16", -2, byte_order="little")) == [0xFEFF]
    # -123456789 = 0xF8A432EB
    assert registers_of(_find("holding", "int32", -123456789)) == [0xF8A4, 0x32EB]
    assert registers_of(_find("holding", "int32", -123456789, "little")) == [0x32EB, 0xF8A4]
    # 4_000_000_000 = 0xEE6B2800
    assert registers_of(_find("holding", "uint32", 4000000000, "little")) == [0x2800, 0xEE6B]
    assert registers_of(_find("holding", "float32", float("inf"))) == [0x7F80, 0x0000]
    assert registers_of(_find("holding", "float32", float("nan")))[0] & 0x7F80 == 0x7F80
    assert registers_of(_find("holding", "float32", 21.5, byte_order="little")) == [
        0xAC41,
        0x0000,
    ]  # 0x41AC0000
    assert registers_of(_find("holding", "float64", math.pi)) == [0x4009, 0x21FB, 0x5444, 0x2D18]
    s = _find("holding", "string", "EDGE-SIM-01")
    assert registers_of(s)[:2] == [ord("E") << 8 | ord("D"), ord("G") << 8 | ord("E")]
    assert registers_of(s)[-1] == ord("1") << 8  # NUL padded
    assert registers_of(_find("holding", "string", "AbCd", byte_order="little")) == [
        ord("b") << 8 | ord("A"),
        ord("d") << 8 | ord("C"),
    ]


def test_bank_covers_every_type_and_layout() -> None:
    for table in ("holding", "input"):
        got = {(e.type, e.word_order, e.byte_order) for e in ENTRIES if e.table == table}
        for t in ("int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"):
            assert (t, "big", "big") in got
        for t in ("int32", "uint32", "int64", "uint64", "float32", "float64"):
            assert (t, "little", "big") in got
        assert any(bo == "little" for (_t, _w, bo) in got)
        types = {e.type for e in ENTRIES if e.table == table}
        assert {"bit", "string"} <= types
        values = [e.value for e in ENTRIES if e.table == table and isinstance(e.value, float)]
        assert any(math.isnan(v) for v in values) and float("inf") in values
        assert any(isinstance(e.value, int) and e.value < 0 for e in ENTRIES if e.table == table)
    assert {e.table for e in ENTRIES if e.type == "bool"} == {"coil", "discrete"}
    # holding and input differ, so reading the wrong table cannot pass
    h = {e.address: e.value for e in ENTRIES if e.table == "holding" and e.type != "bit"}
    i = {e.address: e.value for e in ENTRIES if e.table == "input" and e.type != "bit"}
    assert sum(1 for a in h if repr(h[a]) != repr(i.get(a))) > len(h) * 0.9


def test_entries_round_trip_through_own_decoder() -> None:
    for e in ENTRIES:
        regs = registers_of(e)
        if e.type == "bool":
            assert bool(regs[0]) is e.value
        elif e.type == "bit":
            assert bool(regs[0] >> (e.bit or 0) & 1) is e.value
        else:
            got = decode(regs, e.type, word_order=e.word_order, byte_order=e.byte_order)
            assert e.matches(got), (e, got)


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(struct.error):
        encode(70000, "int16")
    with pytest.raises(ValueError):
        encode(1.5, "int32")
    with pytest.raises(ValueError):
        encode("too long for one", "string", length=2)


async def test_served_over_socket_with_gap() -> None:
    async with ModbusServer(units=[build_type_unit()]) as srv:
        assert srv.port
        c = await RawClient.connect(srv.port)
        try:
            for table, fc in (("holding", 3), ("input", 4)):
                regs = (await c.read(99, fc, 0, typebank.GAP.start)).registers()
                for e in ENTRIES:
                    if e.table == table and e.type != "bit" and e.address < typebank.GAP.start:
                        assert regs[e.address : e.address + e.count] == registers_of(e)
                # bridging the gap is refused; each side alone works
                assert (await c.read(99, fc, typebank.GAP.start - 2, 4)).exception == 2
                assert (await c.read(99, fc, typebank.GAP.stop, 1)).exception is None
                assert (await c.read(99, fc, typebank.BLOCK_B - 1, 3)).exception == 2
            coils = (await c.read(99, 1, 0, 16)).bits(16)
            assert coils == [e.value for e in ENTRIES if e.table == "coil" and e.address < 16]
            assert (await c.read(99, 2, 0, 17)).exception == 2
            # type-bank registers are read-only; the scratch area takes writes
            assert (await c.write_register(99, 0, 1)).exception == 2
            words = encode(-2.5, "float32", word_order="little")
            assert (await c.write_registers(99, typebank.SCRATCH_HOLDING.start, words)).exception is None
            back = (await c.read(99, 3, typebank.SCRATCH_HOLDING.start, 2)).registers()
            assert decode(back, "float32", word_order="little") == -2.5
            assert (await c.write_coil(99, typebank.SCRATCH_COILS.start + 3, True)).exception is None
            assert (await c.read(99, 1, typebank.SCRATCH_COILS.start, 4)).bits(4) == [
                False,
                False,
                False,
                True,
            ]
        finally:
            await c.close()

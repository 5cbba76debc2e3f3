"""Unit 99, the type-test register block: one known value for every data type and layout.

Tests compare what a driver decodes with :data:`ENTRIES` (the values this module encodes with its own
struct-based encoder, sim/encoding.py). Layout (MANUAL.md, "Unit 99"):

- holding and input registers 0..N-1: block A, contiguous, the same layout in both tables but different
  values (a driver that reads the wrong table gets wrong numbers, not accidentally right ones);
- holding/input 120..199: NOT mapped (a gap: a read that bridges it gets exception 2);
- holding/input 200..: block B, a few more entries after the gap;
- coils 0..15 and discrete inputs 0..15: fixed bit patterns; 16..31 not mapped; coils/discretes 32..39 more;
- holding 300..363 and coils 300..315: writable scratch area, initially 0, for write/read-back tests.

Block A and B registers and the pattern bits are read-only (a write answers exception 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from sim.encoding import TYPE_WIDTH, ByteOrder, WordOrder, encode
from sim.modbus_server import UnitBank

__all__ = [
    "BLOCK_A",
    "BLOCK_B",
    "ENTRIES",
    "GAP",
    "SCRATCH_COILS",
    "SCRATCH_HOLDING",
    "TYPE_TEST_UNIT",
    "TypeEntry",
    "build_type_unit",
    "entries",
    "manual_rows",
    "registers_of",
]

TYPE_TEST_UNIT = 99
BLOCK_A = 0
GAP = range(120, 200)  # unmapped in holding and input
BLOCK_B = 200
SCRATCH_HOLDING = range(300, 364)
SCRATCH_COILS = range(300, 316)

TableName = Literal["holding", "input", "coil", "discrete"]


@dataclass(frozen=True, slots=True)
class TypeEntry:
    """One value of the type-test unit, as the manual documents it."""

    table: TableName
    address: int
    type: str  # int16 ... float64, "bit", "bool" (coil/discrete), "string"
    value: float | int | bool | str
    word_order: WordOrder = "big"
    byte_order: ByteOrder = "big"
    bit: int | None = None  # for type "bit"
    length: int | None = None  # registers, for type "string"

    @property
    def count(self) -> int:
        if self.table in ("coil", "discrete") or self.type == "bit":
            return 1
        if self.type == "string":
            assert self.length is not None
            return self.length
        return TYPE_WIDTH[self.type]

    def matches(self, value: object) -> bool:
        """True when ``value`` equals this entry's value (NaN equals NaN; floats within float32 precision)."""
        if isinstance(self.value, float):
            if not isinstance(value, int | float) or isinstance(value, bool):
                return False
            if math.isnan(self.value):
                return math.isnan(value)
            if math.isinf(self.value):
                return value == self.value
            rel = 1e-6 if self.type == "float32" else 1e-12
            return math.isclose(value, self.value, rel_tol=rel, abs_tol=0.0)
        if isinstance(self.value, bool):
            return isinstance(value, bool | int) and value in (0, 1) and bool(value) is self.value
        if isinstance(self.value, int):
            return isinstance(value, int) and not isinstance(value, bool) and value == self.value
        return value == self.value


# (type, word_order, byte_order, holding value, input value[, length]) for the numeric blocks.
# Chosen so that a wrong word order, byte order or signedness gives a visibly different number.
_NAN = float("nan")
_INF = float("inf")
_BLOCK_A_SPECS: list[tuple[str, WordOrder, ByteOrder, float | int | str, float | int | str]] = [
    ("int16", "big", "big", -12345, 23456),
    ("int16", "big", "big", -1, -32768),
    ("int16", "big", "little", -2, 258),  # byte-swapped
    ("uint16", "big", "big", 65535, 40000),
    ("uint16", "big", "big", 1234, 0),
    ("uint16", "big", "little", 0x1234, 0xABCD),
    ("int32", "big", "big", -123456789, 2000000000),
    ("int32", "little", "big", -123456789, -2000000000),
    ("int32", "little", "little", 305419896, -305419896),  # word- and byte-swapped
    ("uint32", "big", "big", 4000000000, 70000),
    ("uint32", "little", "big", 4000000000, 123456789),
    ("uint32", "big", "little", 0x01020304, 0xA1B2C3D4),
    ("int64", "big", "big", -1234567890123456789, 9000000000000000000),
    ("int64", "little", "big", -1234567890123456789, -42),
    ("uint64", "big", "big", 18000000000000000000, 5),
    ("uint64", "little", "big", 18000000000000000000, 0x0102030405060708),
    ("float32", "big", "big", 1.0, -1.5),
    ("float32", "little", "big", 1.0, 3.25),
    ("float32", "big", "big", -273.15, 1.0e10),
    ("float32", "little", "big", 123456.5, -0.000125),
    ("float32", "big", "big", _NAN, _NAN),
    ("float32", "big", "big", _INF, -_INF),
    ("float32", "little", "big", -_INF, _INF),
    ("float32", "big", "little", 21.5, -7.75),  # byte-swapped ("BADC")
    ("float32", "little", "little", 230.0, 49.98),  # "DCBA"
    ("float64", "big", "big", math.pi, -math.e),
    ("float64", "little", "big", -1.0e300, 6.02214076e23),
    ("float64", "big", "big", _NAN, _INF),
    ("float64", "little", "big", _INF, _NAN),
    ("float64", "big", "little", 12345.678901234, -0.1),
]
_BLOCK_A_BITWORD = (0xA005, 0x5AF0)  # holding, input: the register whose bits are documented
_BITS_DOCUMENTED = (0, 1, 2, 4, 7, 13, 14, 15)
_STRINGS: list[tuple[ByteOrder, int, str, str]] = [
    ("big", 6, "EDGE-SIM-01", "INPUT-STR"),  # 12 characters room, NUL padded
    ("little", 2, "AbCd", "WxYz"),  # byte-swapped string (each register's two characters swapped)
]
_BLOCK_B_SPECS: list[tuple[str, WordOrder, ByteOrder, float | int | str, float | int | str]] = [
    ("uint16", "big", "big", 42, 4242),
    ("int16", "big", "big", -300, 300),
    ("float32", "big", "big", 12.5, -12.5),
    ("uint32", "little", "big", 100000, 200000),
]
_COIL_PATTERN = [bool(0b1011_0010_0110_1101 >> i & 1) for i in range(16)]
_DISCRETE_PATTERN = [bool(0b0100_1101_1001_0011 >> i & 1) for i in range(16)]
_COIL_PATTERN_B = [True, False, False, True, True, True, False, True]  # coils 32..39
_DISCRETE_PATTERN_B = [False, True, True, False, True, False, False, False]  # discretes 32..39


def _layout() -> tuple[list[TypeEntry], dict[tuple[str, int], int]]:
    """All entries and the raw register/bit contents they imply."""
    out: list[TypeEntry] = []
    raw: dict[tuple[str, int], int] = {}

    def put_numeric(
        table: TableName, addr: int, type_: str, wo: WordOrder, bo: ByteOrder, value: float | int | str
    ) -> int:
        regs = encode(value, type_, word_order=wo, byte_order=bo)
        for i, r in enumerate(regs):
            raw[(table, addr + i)] = r
        out.append(
            TypeEntry(table=table, address=addr, type=type_, value=value, word_order=wo, byte_order=bo)
        )
        return addr + len(regs)

    for t_index, table in enumerate(("holding", "input")):
        tbl: TableName = table  # type: ignore[assignment]
        addr = BLOCK_A
        for type_, wo, bo, hv, iv in _BLOCK_A_SPECS:
            addr = put_numeric(tbl, addr, type_, wo, bo, hv if t_index == 0 else iv)
        word = _BLOCK_A_BITWORD[t_index]
        raw[(tbl, addr)] = word
        out.append(TypeEntry(table=tbl, address=addr, type="uint16", value=word))
        for b in _BITS_DOCUMENTED:
            out.append(TypeEntry(table=tbl, address=addr, type="bit", value=bool(word >> b & 1), bit=b))
        addr += 1
        for bo, length, hs, is_ in _STRINGS:
            text = hs if t_index == 0 else is_
            regs = encode(text, "string", byte_order=bo, length=length)
            for i, r in enumerate(regs):
                raw[(tbl, addr + i)] = r
            out.append(
                TypeEntry(table=tbl, address=addr, type="string", value=text, byte_order=bo, length=length)
            )
            addr += length
        if addr > GAP.start:
            raise AssertionError(f"block A overruns the gap ({addr})")
        # Pad block A up to the gap with mapped zero registers, so block A is contiguous.
        for a in range(addr, GAP.start):
            raw[(tbl, a)] = 0
        addr = BLOCK_B
        for type_, wo, bo, hv, iv in _BLOCK_B_SPECS:
            addr = put_numeric(tbl, addr, type_, wo, bo, hv if t_index == 0 else iv)

    for tbl, pat_a, pat_b in (
        ("coil", _COIL_PATTERN, _COIL_PATTERN_B),
        ("discrete", _DISCRETE_PATTERN, _DISCRETE_PATTERN_B),
    ):
        bt: TableName = tbl
        for base, pat in ((0, pat_a), (32, pat_b)):
            for i, v in enumerate(pat):
                raw[(bt, base + i)] = int(v)
                out.append(TypeEntry(table=bt, address=base + i, type="bool", value=v))
    return out, raw


ENTRIES: list[TypeEntry]
_RAW: dict[tuple[str, int], int]
ENTRIES, _RAW = _layout()


def entries(*, table: TableName | None = None, type_: str | None = None) -> list[TypeEntry]:
    """Entries filtered by table and/or type."""
    return [e for e in ENTRIES if (table is None or e.table == table) and (type_ is None or e.type == type_)]


def registers_of(entry: TypeEntry) -> list[int]:
    """The raw registers (or 0/1 bits) the simulator serves for ``entry``."""
    return [_RAW[(entry.table, entry.address + i)] for i in range(entry.count)]


def build_type_unit(*, unit_id: int = TYPE_TEST_UNIT) -> UnitBank:
    """A fresh bank for the type-test unit (fresh scratch area each time)."""
    bank = UnitBank(unit_id=unit_id, name="type-test")
    for (table, addr), v in sorted(_RAW.items()):
        tbl: TableName = table  # type: ignore[assignment]
        bank.map(tbl, addr, [bool(v)] if tbl in ("coil", "discrete") else [v])
    bank.map("holding", SCRATCH_HOLDING.start, [0] * len(SCRATCH_HOLDING), writable=True)
    bank.map("coil", SCRATCH_COILS.start, [False] * len(SCRATCH_COILS), writable=True)
    return bank


def _fmt_value(e: TypeEntry) -> str:
    v = e.value
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "+inf" if v > 0 else "-inf"
        return repr(v)
    return str(v)


def manual_rows() -> list[str]:
    """The unit-99 table rows of MANUAL.md: table, address, type, word order, byte order, extra, value, raw.

    Coils and discrete inputs are listed one row per contiguous run, values in address order."""
    rows = []
    runs: dict[tuple[str, int], list[TypeEntry]] = {}
    for e in ENTRIES:
        if e.type == "bool":
            key = next(
                ((t, a) for (t, a), run in runs.items() if t == e.table and a + len(run) == e.address),
                (e.table, e.address),
            )
            runs.setdefault(key, []).append(e)
            continue
        extra = f"bit {e.bit}" if e.type == "bit" else (f"length {e.length}" if e.type == "string" else "-")
        raw = " ".join(f"{r:04X}" for r in registers_of(e)) if e.type != "bit" else "-"
        words = e.word_order if e.count > 1 and e.type != "string" else "-"
        rows.append(
            f"| {e.table} | {e.address} | {e.type} | {words} | {e.byte_order} | {extra} "
            f"| {_fmt_value(e)} | {raw} |"
        )
    for (table, address), run in runs.items():
        bits = " ".join(_fmt_value(e) for e in run)
        rows.append(f"| {table} | {address}-{address + len(run) - 1} | bool | - | - | - | {bits} | - |")
    return rows

"""The simulator's Modbus register map (MANUAL.md documents the same table for integrators).

One table (:data:`REGISTER_MAP`) drives the banks, the refresh from the building model and the handling of
writes; a test checks that MANUAL.md lists every row. Unit-id plan, all on one host:port like a gateway:

====  ==============================  =====================================
unit  device                          building object
====  ==============================  =====================================
1     main incoming meter             meters["main"]
2-4   1F-3F lighting+socket meters    meters["f1-ls"] .. ["f3-ls"]  (01A00)
5-7   1F-3F AC sub-meters             meters["f1-ac"] .. ["f3-ac"]  (01B00)
8     data-centre meter               meters["dc"]                  (01D10)
9     data-centre IT-load meter       meters["it"]                  (01D1A)
10    water meter                     meters["water"]               (02000)
11-16 AC units                        ac_units["f1-ac1"], ["f1-ac2"], ["f2-ac1"], ... ["f3-ac2"]
17    outdoor temperature sensor      outdoor_temp
18    1F room sensor                  illuminance["f1"], windows["f1"]
20    lighting controller             lights["f1-l1"] .. ["f3-l2"]
21    VRF gateway, 16 indoor units    sim.vrf (its own small model, not the building's)
99    type-test block                 sim.typebank
100+  bench units                     sim.bench
====  ==============================  =====================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sim.building import AC_UNIT_IDS, FLOORS, LIGHT_IDS, Building, Change, Mode, OutOfRange
from sim.encoding import TYPE_WIDTH, WordOrder, decode, encode
from sim.modbus_server import ILLEGAL_DATA_VALUE, ModbusException, Table, UnitBank

__all__ = [
    "AC_UNITS",
    "LIGHTING_UNIT",
    "METER_UNITS",
    "NO_VALUE",
    "OUTDOOR_UNIT",
    "REGISTER_MAP",
    "ROOM_SENSOR_UNIT",
    "BuildingModbus",
    "Reg",
    "manual_rows",
]

Getter = Callable[[Building], float | int | bool]
Setter = Callable[[Building, float | int | bool], None]
Rounding = Literal["round", "floor"]

METER_UNITS: dict[int, str] = {
    1: "main",
    2: "f1-ls",
    3: "f2-ls",
    4: "f3-ls",
    5: "f1-ac",
    6: "f2-ac",
    7: "f3-ac",
    8: "dc",
    9: "it",
    10: "water",
}
AC_UNITS: dict[int, str] = {11 + i: ac for i, ac in enumerate(AC_UNIT_IDS)}
OUTDOOR_UNIT = 17
ROOM_SENSOR_UNIT = 18
LIGHTING_UNIT = 20


@dataclass(frozen=True, slots=True)
class Reg:
    """One documented value of the map."""

    unit: int
    device: str
    table: Table
    address: int
    type: str  # uint16, int16, uint32, float32, bool
    scale: float  # engineering value = raw * scale
    eng_unit: str
    meaning: str
    get: Getter
    set: Setter | None = None  # writable when present
    word_order: WordOrder = "big"
    rounding: Rounding = "round"  # counters truncate so they never run ahead of the true integral
    min: float | None = None  # device range of a writable value (outside: exception 3)
    max: float | None = None
    allowed: tuple[int, ...] | None = None  # allowed raw values of a writable enumeration

    @property
    def count(self) -> int:
        return 1 if self.type == "bool" else TYPE_WIDTH[self.type]

    @property
    def rw(self) -> str:
        return "R/W" if self.set is not None else "R"

    def raw(self, b: Building) -> list[int] | list[bool]:
        value = self.get(b)
        if self.type == "bool":
            return [bool(value)]
        if self.type.startswith("float"):
            return encode(float(value) / self.scale, self.type, word_order=self.word_order)
        scaled = float(value) / self.scale
        n = math.floor(scaled + 1e-9) if self.rounding == "floor" else round(scaled)
        lo, hi = _INT_RANGE[self.type]
        return encode(min(hi, max(lo, n)), self.type, word_order=self.word_order)  # saturate, like meters do

    def value_of(self, raw: list[int] | list[bool]) -> float | int | bool:
        """Engineering value of raw registers written by a client; raises ModbusException(3) if refused."""
        if self.type == "bool":
            return bool(raw[0])
        n = decode([int(r) for r in raw], self.type, word_order=self.word_order)
        assert isinstance(n, int | float)
        if self.allowed is not None and n not in self.allowed:
            raise ModbusException(
                ILLEGAL_DATA_VALUE, f"{self.device} {self.meaning}: {n} not in {self.allowed}"
            )
        value = n * self.scale
        if (self.min is not None and value < self.min - 1e-9) or (
            self.max is not None and value > self.max + 1e-9
        ):
            raise ModbusException(
                ILLEGAL_DATA_VALUE, f"{self.device} {self.meaning}: {value} outside {self.min}..{self.max}"
            )
        return value


_INT_RANGE = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}

NO_VALUE = 0x8000  # what a register reads when its sensor is missing or failed (MANUAL.md)
_VOLTS = 230.0
_PF = 0.95


def _main_meter() -> list[Reg]:
    d = "main meter"

    def power(b: Building) -> float:
        return b.meters["main"].rate

    def volts(b: Building) -> float:
        # a little sag with load, deterministic
        return _VOLTS + 1.5 - 0.01 * b.meters["main"].rate

    return [
        Reg(1, d, "input", 0, "float32", 1, "V", "phase voltage L1-N", volts),
        Reg(
            1,
            d,
            "input",
            2,
            "float32",
            1,
            "A",
            "phase current L1 (balanced load)",
            lambda b: power(b) * 1000 / (3 * volts(b) * _PF),
        ),
        Reg(1, d, "input", 4, "float32", 1, "kW", "total active power", power),
        Reg(1, d, "input", 6, "float32", 1, "Hz", "frequency", lambda b: 50.0),
        Reg(1, d, "input", 8, "float32", 1, "", "power factor", lambda b: _PF),
        Reg(
            1,
            d,
            "input",
            256,
            "float32",
            1,
            "kWh",
            "total active energy import",
            lambda b: b.meters["main"].reading,
        ),
    ]


def _sub_meter(unit: int, meter: str, label: str) -> list[Reg]:
    return [
        Reg(
            unit,
            label,
            "holding",
            0,
            "uint32",
            0.01,
            "kWh",
            "total active energy",
            lambda b: b.meters[meter].reading,
            word_order="little",
            rounding="floor",
        ),
        Reg(unit, label, "holding", 2, "int16", 0.1, "kW", "active power", lambda b: b.meters[meter].rate),
        Reg(unit, label, "holding", 3, "uint16", 0.1, "V", "phase voltage", lambda b: _VOLTS),
    ]


def _dc_meter(unit: int, meter: str, label: str) -> list[Reg]:
    return [
        Reg(
            unit,
            label,
            "holding",
            0,
            "uint32",
            0.01,
            "kWh",
            "total active energy",
            lambda b: b.meters[meter].reading,
            rounding="floor",
        ),
        Reg(unit, label, "holding", 2, "float32", 1, "kW", "active power", lambda b: b.meters[meter].rate),
    ]


def _water_meter() -> list[Reg]:
    d = "water meter"
    return [
        Reg(
            10,
            d,
            "holding",
            0,
            "uint32",
            0.001,
            "m3",
            "cumulative volume",
            lambda b: b.meters["water"].reading,
            rounding="floor",
        ),
        Reg(10, d, "holding", 2, "uint16", 0.01, "m3/h", "flow rate", lambda b: b.meters["water"].rate),
        Reg(
            10,
            d,
            "holding",
            4,
            "uint32",
            1,
            "m3",
            "cumulative volume, whole m3 (the litres are in register 6)",
            lambda b: math.floor(b.meters["water"].reading),
            rounding="floor",
        ),
        Reg(
            10,
            d,
            "holding",
            6,
            "uint16",
            0.001,
            "m3",
            "cumulative volume, litres part 0-999 (add to registers 4-5)",
            lambda b: b.meters["water"].reading % 1.0,
            rounding="floor",
        ),
    ]


def _ac_unit(unit: int, ac: str) -> list[Reg]:
    d = f"AC unit {ac}"

    def set_power(b: Building, v: float | int | bool) -> None:
        b.set_power(ac, bool(v), source="modbus")

    def set_mode(b: Building, v: float | int | bool) -> None:
        b.set_mode(ac, int(v), source="modbus")

    def set_sp(b: Building, v: float | int | bool) -> None:
        b.set_setpoint(ac, round(float(v), 1), source="modbus")

    def status(b: Building) -> int:
        a = b.ac_units[ac]
        compressor = a.power and a.mode in (Mode.COOL, Mode.HEAT) and a.electric_kw > 0.5 + 1e-6
        return int(a.power) | int(compressor) << 1

    return [
        Reg(
            unit,
            d,
            "holding",
            0,
            "uint16",
            1,
            "",
            "power: 0 off, 1 on",
            lambda b: int(b.ac_units[ac].power),
            set=set_power,
            allowed=(0, 1),
        ),
        Reg(
            unit,
            d,
            "holding",
            1,
            "uint16",
            1,
            "",
            "mode: 0 off, 1 cool, 2 heat, 3 fan (writing 1-3 also powers the unit on, 0 powers it off)",
            lambda b: int(b.ac_units[ac].running_mode),
            set=set_mode,
            allowed=(0, 1, 2, 3),
        ),
        Reg(
            unit,
            d,
            "holding",
            2,
            "int16",
            0.1,
            "degC",
            "setpoint (device range 16.0-32.0)",
            lambda b: b.ac_units[ac].setpoint,
            set=set_sp,
            min=16.0,
            max=32.0,
        ),
        Reg(
            unit, d, "input", 0, "int16", 0.1, "degC", "room temperature", lambda b: b.ac_units[ac].room_temp
        ),
        Reg(
            unit,
            d,
            "input",
            1,
            "uint16",
            1,
            "",
            "status bits: bit 0 running, bit 1 compressor on, bit 2 fault (always 0)",
            status,
        ),
    ]


def _lighting() -> list[Reg]:
    d = "lighting controller"
    regs: list[Reg] = []
    for i, light in enumerate(LIGHT_IDS):

        def get(b: Building, light: str = light) -> bool:
            return b.lights[light].on

        def put(b: Building, v: float | int | bool, light: str = light) -> None:
            b.set_light(light, bool(v), source="modbus")

        regs.append(Reg(LIGHTING_UNIT, d, "coil", i, "bool", 1, "", f"relay {light} (1 = on)", get, set=put))
        regs.append(
            Reg(LIGHTING_UNIT, d, "discrete", i, "bool", 1, "", f"relay {light} feedback (1 = on)", get)
        )
    return regs


def _build_map() -> list[Reg]:
    regs = _main_meter()
    for f in range(1, FLOORS + 1):
        regs += _sub_meter(1 + f, f"f{f}-ls", f"{f}F lighting+socket meter")
    for f in range(1, FLOORS + 1):
        regs += _sub_meter(4 + f, f"f{f}-ac", f"{f}F AC meter")
    regs += _dc_meter(8, "dc", "data-centre meter")
    regs += _dc_meter(9, "it", "IT-load meter")
    regs += _water_meter()
    for unit, ac in AC_UNITS.items():
        regs += _ac_unit(unit, ac)
    regs.append(
        Reg(
            OUTDOOR_UNIT,
            "outdoor sensor",
            "input",
            0,
            "int16",
            0.1,
            "degC",
            "outdoor air temperature",
            lambda b: b.outdoor_temp,
        )
    )
    d = "1F room sensor"
    regs.append(
        Reg(
            ROOM_SENSOR_UNIT,
            d,
            "input",
            0,
            "uint16",
            1,
            "lx",
            "illuminance at the window side",
            lambda b: b.illuminance["f1"],
        )
    )
    regs.append(
        Reg(
            ROOM_SENSOR_UNIT,
            d,
            "discrete",
            0,
            "bool",
            1,
            "",
            "window contact (1 = open)",
            lambda b: b.windows["f1"],
        )
    )
    regs += _lighting()
    return regs


REGISTER_MAP: list[Reg] = _build_map()


class BuildingModbus:
    """The Modbus front end of a :class:`Building`: banks built from REGISTER_MAP, kept in step with it."""

    def __init__(self, *, building: Building) -> None:
        self.building = building
        self.banks: dict[int, UnitBank] = {}
        self._by_unit: dict[int, list[Reg]] = {}
        for reg in REGISTER_MAP:
            self._by_unit.setdefault(reg.unit, []).append(reg)
        for unit, regs in self._by_unit.items():
            bank = UnitBank(unit_id=unit, name=regs[0].device, on_write=self._hook(unit))
            for reg in regs:
                bank.map(reg.table, reg.address, reg.raw(building), writable=reg.set is not None)
            self.banks[unit] = bank
        self._building = building
        self._unsubscribe: Callable[[], None] | None = None
        # Registers that read the manual's "no value" word (no sensor fitted / sensor failed).
        self.no_value: set[tuple[int, Table, int]] = set()
        self.open()

    def set_no_value(self, unit: int, table: Table, address: int, on: bool = True) -> None:
        """Make one register read NO_VALUE (0x8000, "no sensor") instead of the model's value, or stop."""
        if not any(r.table == table and r.address == address for r in self._by_unit.get(unit, ())):
            raise KeyError(f"unit {unit} has no {table} {address} in the map")
        if on:
            self.no_value.add((unit, table, address))
        else:
            self.no_value.discard((unit, table, address))
        self.refresh([unit])

    def open(self) -> None:
        """Follow the model's changes (again, after close(): a simulator can be stopped and restarted)."""
        if self._unsubscribe is None:
            self._unsubscribe = self._building.subscribe(self._on_change)

    def close(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()

    def refresh(self, units: list[int] | None = None) -> None:
        """Copy the model's state into the registers (after a step, or a change)."""
        for unit in units if units is not None else list(self._by_unit):
            bank = self.banks[unit]
            for reg in self._by_unit[unit]:
                if (unit, reg.table, reg.address) in self.no_value:
                    bank.set(reg.table, reg.address, [NO_VALUE] * reg.count)
                else:
                    bank.set(reg.table, reg.address, reg.raw(self.building))

    def _on_change(self, change: Change) -> None:
        # Registers follow a change at once (script, API or Modbus), not only at the next step.
        kind_units = {"light": [LIGHTING_UNIT, ROOM_SENSOR_UNIT], "window": [ROOM_SENSOR_UNIT]}
        self.refresh(kind_units.get(change.kind, list(AC_UNITS)))
        self.refresh([u for u in METER_UNITS])  # power figures change with the state

    def _hook(self, unit: int) -> Callable[[Table, int, list[int] | list[bool]], None]:
        def on_write(table: Table, address: int, values: list[int] | list[bool]) -> None:
            end = address + len(values)
            todo: list[tuple[Reg, float | int | bool]] = []
            for reg in self._by_unit[unit]:
                if reg.table != table or reg.address + reg.count <= address or reg.address >= end:
                    continue
                if reg.address < address or reg.address + reg.count > end:
                    # Part of a multi-register value: refuse rather than guess the other half.
                    raise ModbusException(ILLEGAL_DATA_VALUE, f"partial write of {reg.meaning}")
                raw = values[reg.address - address : reg.address - address + reg.count]
                todo.append((reg, reg.value_of(list(raw))))
            # All values checked before any is applied: a refused FC16 changes nothing.
            for reg, value in todo:
                assert reg.set is not None
                try:
                    reg.set(self.building, value)
                except OutOfRange as exc:
                    raise ModbusException(ILLEGAL_DATA_VALUE, str(exc)) from exc

        return on_write


_REF_BASE = {"coil": 1, "discrete": 10001, "input": 30001, "holding": 40001}


def _fmt_scale(scale: float) -> str:
    return "1" if scale == 1 else f"{scale:g}"


def _ranges(units: list[int]) -> str:
    out: list[str] = []
    start = prev = units[0]
    for u in [*units[1:], None]:
        if u is not None and u == prev + 1:
            prev = u
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if u is not None:
            start = prev = u
    return ", ".join(out)


def manual_rows() -> list[str]:
    """The register table rows of MANUAL.md, units with identical rows merged (a test checks the manual)."""
    grouped: dict[str, list[int]] = {}
    for r in REGISTER_MAP:
        words = "high word first" if r.word_order == "big" else "**low word first**"
        words = "-" if r.count == 1 else words
        tail = (
            f"| {r.table} | {r.address} | {_REF_BASE[r.table] + r.address} | {r.type} | {words} "
            f"| {_fmt_scale(r.scale)} | {r.eng_unit or '-'} | {r.meaning} | {r.rw} |"
        )
        grouped.setdefault(tail, []).append(r.unit)
    return [f"| {_ranges(units)} {tail}" for tail, units in grouped.items()]

"""Unit 21, a VRF gateway: 16 indoor units behind one unit id, one register block each at a fixed stride.

What VRF/AC gateway manuals look like (MANUAL.md, "VRF gateway"): indoor unit ``n`` (0-based) occupies
holding and input registers ``VRF_BASE + n * VRF_STRIDE`` onwards, the same layout in every block; the
mode register has more raw values than the six canonical modes (auxiliary electric heat, two
ventilation variants), and the setpoint range depends on the mode (cool 18-32 °C, heat 16-30 °C). The
indoor units are a small model of their own, not part of :class:`sim.building.Building` (whose energy
figures the other tests rely on): power, mode, setpoint and a room temperature the tests set.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.modbus_server import ILLEGAL_DATA_VALUE, ModbusException, Table, UnitBank

__all__ = [
    "VRF_BASE",
    "VRF_INDOOR_UNITS",
    "VRF_MODES",
    "VRF_OIL_RETURN",
    "VRF_SETPOINT_RANGES",
    "VRF_STRIDE",
    "VRF_UNIT",
    "IndoorUnit",
    "VrfGateway",
    "manual_rows",
]

VRF_UNIT = 21
VRF_BASE = 100  # indoor unit 0's block starts at holding/input 100
VRF_STRIDE = 10  # registers from one indoor unit's block to the next
VRF_INDOOR_UNITS = 16
# Raw mode values as the manual lists them, with the canonical mode an integrator maps each to.
VRF_MODES: dict[int, tuple[str, str]] = {
    0: ("auto", "auto"),
    1: ("cool", "cool"),
    2: ("dry (dehumidify)", "dry"),
    3: ("fan only", "fan"),
    4: ("heat", "heat"),
    5: ("heat with auxiliary electric heater", "heat"),
    6: ("ventilation, fresh air", "fan"),
    7: ("ventilation, heat recovery", "fan"),
}
# Not a mode: what the mode register shows while the outdoor unit runs an oil-return cycle (the manual
# mentions it in a footnote; a site.yaml `states` copied from the mode table does not list it).
VRF_OIL_RETURN = 9
# Setpoint range the gateway accepts per canonical mode (°C); writes outside answer exception 3.
VRF_SETPOINT_RANGES: dict[str, tuple[float, float]] = {
    "cool": (18.0, 32.0),
    "dry": (18.0, 32.0),
    "auto": (17.0, 30.0),
    "heat": (16.0, 30.0),
    "fan": (16.0, 32.0),
}

# Offsets inside one indoor unit's block.
_POWER, _MODE, _SETPOINT = 0, 1, 2  # holding
_ROOM = 0  # input


@dataclass
class IndoorUnit:
    power: bool = False
    mode: int = 1  # raw mode value (VRF_MODES), kept while off
    setpoint: float = 26.0
    room_temp: float = 27.0


def _canonical(raw: int) -> str:
    return VRF_MODES[raw][1] if raw in VRF_MODES else "fan"


def _int16(v: float) -> int:
    return round(v * 10) & 0xFFFF


class VrfGateway:
    """The gateway's indoor units and the unit bank that serves them (kept in step on every change)."""

    def __init__(self, *, unit_id: int = VRF_UNIT, indoor_units: int = VRF_INDOOR_UNITS) -> None:
        self.units = [IndoorUnit() for _ in range(indoor_units)]
        self.bank = UnitBank(unit_id=unit_id, name="VRF gateway", on_write=self._on_write)
        for n in range(indoor_units):
            base = VRF_BASE + n * VRF_STRIDE
            self.bank.map("holding", base, [0, 0, 0], writable=True)
            self.bank.map("input", base, [0])
        self.refresh()

    def block(self, n: int) -> int:
        """First register of indoor unit ``n`` (0-based)."""
        return VRF_BASE + n * VRF_STRIDE

    def refresh(self) -> None:
        for n, u in enumerate(self.units):
            base = self.block(n)
            self.bank.set("holding", base, [int(u.power), u.mode, _int16(u.setpoint)])
            self.bank.set("input", base + _ROOM, [_int16(u.room_temp)])

    def set_state(
        self,
        n: int,
        *,
        power: bool | None = None,
        mode: int | None = None,
        setpoint: float | None = None,
        room_temp: float | None = None,
    ) -> None:
        """The tests' side (a wall panel, the oil-return cycle): no range checks, registers follow at once."""
        u = self.units[n]
        if power is not None:
            u.power = power
        if mode is not None:
            u.mode = mode
        if setpoint is not None:
            u.setpoint = setpoint
        if room_temp is not None:
            u.room_temp = room_temp
        self.refresh()

    def _on_write(self, table: Table, address: int, values: list[int] | list[bool]) -> None:
        if table != "holding":
            return
        pending: dict[int, dict[int, int]] = {}
        for i, v in enumerate(values):
            n, offset = divmod(address + i - VRF_BASE, VRF_STRIDE)
            pending.setdefault(n, {})[offset] = int(v)
        # Check every value before applying any: a refused FC16 changes nothing.
        for n, regs in pending.items():
            u = self.units[n]
            if _POWER in regs and regs[_POWER] not in (0, 1):
                raise ModbusException(ILLEGAL_DATA_VALUE, f"indoor unit {n}: power {regs[_POWER]} not 0/1")
            mode = regs.get(_MODE, u.mode)
            if mode not in VRF_MODES:
                raise ModbusException(ILLEGAL_DATA_VALUE, f"indoor unit {n}: mode {mode} not in the table")
            if _SETPOINT in regs:
                raw = regs[_SETPOINT]
                sp = (raw - 0x10000 if raw & 0x8000 else raw) / 10
                lo, hi = VRF_SETPOINT_RANGES[_canonical(mode)]
                if not lo <= sp <= hi:
                    raise ModbusException(
                        ILLEGAL_DATA_VALUE, f"indoor unit {n}: setpoint {sp} outside {lo}-{hi} in mode {mode}"
                    )
        for n, regs in pending.items():
            u = self.units[n]
            if _POWER in regs:
                u.power = bool(regs[_POWER])
            if _MODE in regs:
                u.mode = regs[_MODE]
            if _SETPOINT in regs:
                raw = regs[_SETPOINT]
                u.setpoint = (raw - 0x10000 if raw & 0x8000 else raw) / 10
        # The hook runs before the server stores the written words; they are the model's values anyway.


def manual_rows() -> list[str]:
    """The rows of MANUAL.md's VRF gateway table (a test checks the manual lists them)."""
    b, s = VRF_BASE, VRF_STRIDE
    modes = ", ".join(f"{raw} {text}" for raw, (text, _c) in VRF_MODES.items())
    ranges = ", ".join(f"{m} {lo:g}-{hi:g}" for m, (lo, hi) in VRF_SETPOINT_RANGES.items())
    return [
        f"| holding | {b} + n x {s} | {40001 + b} + n x {s} | uint16 | 1 | - | power: 0 off, 1 on | R/W |",
        f"| holding | {b + 1} + n x {s} | {40002 + b} + n x {s} | uint16 | 1 | - | mode: {modes} | R/W |",
        f"| holding | {b + 2} + n x {s} | {40003 + b} + n x {s} | int16 | 0.1 | degC | setpoint, range per "
        f"mode: {ranges} | R/W |",
        f"| input | {b} + n x {s} | {30001 + b} + n x {s} | int16 | 0.1 | degC | room temperature | R |",
    ]

"""Options an integrator writes in site.yaml for a Modbus TCP device and its points."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.base import PointBase, ValueKind
from drivers.modbus.repeat import expand_repeats
from drivers.spec import ExpandedPoint

__all__ = [
    "DATA_TYPES",
    "ModbusDevice",
    "ModbusPoint",
    "ModbusRtuDevice",
    "RepeatBlock",
    "RepeatUnit",
    "expand_device_points",
    "register_count",
    "resolve_ref",
    "write_function_of",
]

Table = Literal["holding", "input", "coil", "discrete"]
DataType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bit", "bool", "string"
]
DATA_TYPES: tuple[str, ...] = DataType.__args__  # type: ignore[attr-defined]
_WIDTH = {
    "int16": 1,
    "uint16": 1,
    "bit": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}


_INT_RANGE: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


def register_count(point: ModbusPoint) -> int:
    """Registers (or bits, for coil/discrete tables) the point occupies."""
    if point.table in ("coil", "discrete"):
        return 1
    if point.type == "string":
        return point.length or 1
    return _WIDTH[point.type]


# Reference ranges of the manuals' numbering (0xxxx coils, 1xxxx discrete inputs, 3xxxx input registers,
# 4xxxx holding registers), 5 and 6 digits: ref = base + protocol address.
_REF_RANGES: tuple[tuple[int, int, Table], ...] = (
    (1, 9999, "coil"),
    (10001, 19999, "discrete"),
    (30001, 39999, "input"),
    (40001, 49999, "holding"),
    (100001, 165536, "discrete"),
    (300001, 365536, "input"),
    (400001, 465536, "holding"),
)
_READ_FC: dict[str, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def resolve_ref(ref: int) -> tuple[Table, int]:
    """(table, 0-based protocol address) of a manual's reference number; ValueError if it is none."""
    for lo, hi, table in _REF_RANGES:
        if lo <= ref <= hi:
            return table, ref - lo
    raise ValueError(
        f"ref {ref} is not a Modbus reference: 1-9999 coils, 10001-19999 discrete inputs, 30001-39999 "
        "input registers, 40001-49999 holding registers (or the 6-digit 1xxxxx/3xxxxx/4xxxxx forms)"
    )


def _schema_address_or_ref(schema: dict[str, Any]) -> None:
    required = [r for r in schema.get("required", []) if r != "address"]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    schema["anyOf"] = [{"required": ["address"]}, {"required": ["ref"]}, {"required": ["sum_of"]}]


class ModbusPoint(PointBase):
    model_config = ConfigDict(json_schema_extra=_schema_address_or_ref)

    table: Table = Field(default="holding", description="holding, input (registers); coil, discrete (bits)")
    address: int = Field(
        ge=0,
        le=65535,
        description=(
            "Protocol address, 0-based (register 40001 is address 0); 1-based when the device sets "
            "`address_base: 1`. Or give `ref:` instead"
        ),
    )
    ref: int | None = Field(
        default=None,
        description=(
            "The manual's reference number instead of `address:` (40001 = holding 0, 30001 = input 0, "
            "10001 = discrete 0, 1 = coil 0; 6-digit 400001 forms too): sets table and address"
        ),
    )
    type: DataType = Field(default="uint16", description="How the registers decode; `bool` for coil/discrete")
    bit: int | None = Field(default=None, ge=0, le=15, description="Bit of the register, for type `bit`")
    length: int | None = Field(
        default=None, ge=1, le=125, description="Registers of a `string` (2 chars each)"
    )
    byte_order: Literal["big", "little"] = Field(default="big", description="Byte order inside each register")
    word_order: Literal["big", "little"] = Field(
        default="big", description="Register order of 32/64-bit values: big = high word first"
    )
    scale: float = Field(
        default=1.0, allow_inf_nan=False, description="value = raw * scale + offset; never 0"
    )
    offset: float = Field(default=0.0, allow_inf_nan=False)

    def value_kind(self) -> ValueKind:
        if self.type in ("bool", "bit"):
            return "bool"
        return super().value_kind()

    def quantize(self, value: float) -> float:
        """What the registers hold after a write of ``value``, as the codec encodes and decodes it: whole
        steps of ``scale`` (after ``offset``) for integer types, the nearest float32 for float32.
        ValueError when the type cannot hold it. (A unit test holds this equal to the codec's round trip.)"""
        identity = self.scale == 1.0 and self.offset == 0.0
        raw = value if identity else (float(value) - self.offset) / self.scale
        if not math.isfinite(raw):
            raise ValueError(f"{value!r} gives raw {raw} for point {self.id}")
        if self.type in _INT_RANGE:
            lo, hi = _INT_RANGE[self.type]
            held_raw: float = round(raw)
            if not lo <= held_raw <= hi:
                raise ValueError(f"{value!r} (raw {held_raw}) is outside {self.type} range {lo}..{hi}")
        elif self.type == "float32":
            try:
                (held_raw,) = struct.unpack(">f", struct.pack(">f", raw))
            except (OverflowError, struct.error) as exc:
                raise ValueError(f"{value!r} does not fit float32: {exc}") from exc
        elif self.type == "float64":
            held_raw = raw
        else:
            raise ValueError(f"{self.type} point {self.id} does not hold a number")
        return float(held_raw) if identity else held_raw * self.scale + self.offset

    @field_validator("scale")
    @classmethod
    def _check_scale(cls, v: float) -> float:
        if v == 0:
            raise ValueError("scale 0 maps every raw value to the offset; give the register's real scale")
        return v

    write_function: Literal[5, 6, 15, 16] | None = Field(
        default=None,
        description=(
            "Function code of writes: 6 or 16 for holding registers, 5 or 15 for coils. Default: 6 for one "
            "register (16 once the device answers exception 1), 16 for several, 5 for a coil"
        ),
    )
    sum_of: dict[str, float] | None = Field(
        default=None,
        description=(
            "A composite point: the sum of other points of the same device, each times its factor, e.g. "
            "{water.m3: 1, water.litres: 0.001} for a total split over two registers. No address of its own; "
            "bad when any part is bad"
        ),
    )
    invalid_raw: tuple[int, ...] = Field(
        default=(),
        description=(
            "Raw register patterns that mean 'no value' (e.g. [0x8000, 0xFFFF] for 'no sensor'): the point's "
            "registers as one unsigned number, high word first, before sign and scale; the reading is bad "
            "with code no_value"
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _resolve_ref(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        ref = data.get("ref")
        if data.get("sum_of") is not None:
            if "address" in data or ref is not None:
                raise ValueError("a `sum_of:` point has no `address:` or `ref:` of its own")
            return {**data, "address": 0, "type": data.get("type", "float64")}
        if ref is None:
            if "address" not in data:
                raise ValueError("a point needs `address:` (0-based), `ref:` (e.g. 40001) or `sum_of:`")
            return data
        if "address" in data:
            raise ValueError("give `address:` or `ref:`, not both")
        if isinstance(ref, bool) or not isinstance(ref, int):
            raise ValueError(f"ref {ref!r} is not a number")
        table, address = resolve_ref(ref)
        if "table" in data and data["table"] != table:
            raise ValueError(f"ref {ref} is a {table} reference, but `table:` says {data['table']}")
        return {**data, "table": table, "address": address}

    def describe_address(self) -> str:
        """How the driver reads (and writes) the point: ``holding 0 (40001) read FC3, write FC6``."""
        if self.sum_of is not None:
            return "sum of " + " + ".join(f"{pid} x {f:g}" for pid, f in self.sum_of.items())
        lo = {t: lo for lo, _hi, t in _REF_RANGES[:4]}[self.table]
        text = f"{self.table} {self.address} ({lo + self.address}) read FC{_READ_FC[self.table]}"
        if self.writable:
            text += f", write FC{write_function_of(self)}"
        return text

    @model_validator(mode="after")
    def _check_layout(self) -> ModbusPoint:
        if self.sum_of is not None:
            if not self.sum_of:
                raise ValueError("`sum_of:` names at least one point")
            if self.writable:
                raise ValueError("a `sum_of:` point is computed, not writable")
            if self.invalid_raw or self.write_function is not None:
                raise ValueError("`invalid_raw:`, `write_function:` belong on the parts of a `sum_of:` point")
            return self
        bits = self.table in ("coil", "discrete")
        if bits and self.type != "bool":
            raise ValueError(f"a {self.table} point has type bool, not {self.type}")
        if not bits and self.type == "bool":
            raise ValueError(
                "type bool is for coil/discrete tables; use type bit with `bit:` for a register bit"
            )
        if self.type == "bit" and self.bit is None:
            raise ValueError("type bit needs `bit:` (0-15)")
        if self.type != "bit" and self.bit is not None:
            raise ValueError("`bit:` only applies to type bit")
        if self.type == "string" and self.length is None:
            raise ValueError("type string needs `length:` in registers")
        if self.writable and self.table in ("input", "discrete"):
            raise ValueError(f"{self.table} points are read-only in Modbus; set writable: false")
        if self.write_function is not None:
            if not self.writable:
                raise ValueError("`write_function:` is for writable points; set writable: true")
            allowed = (5, 15) if self.table == "coil" else (6, 16)
            if self.write_function not in allowed:
                raise ValueError(
                    f"write_function {self.write_function} does not write a {self.table} point; "
                    f"use {allowed[0]} or {allowed[1]}"
                )
            if self.write_function == 6 and register_count(self) > 1:
                raise ValueError(
                    f"write_function 6 writes one register; a {self.type} takes "
                    f"{register_count(self)}: use 16"
                )
        if self.invalid_raw:
            if self.type in ("bool", "bit", "string"):
                raise ValueError(f"`invalid_raw:` applies to numeric types, not {self.type}")
            top = 2 ** (16 * register_count(self)) - 1
            for raw in self.invalid_raw:
                if not 0 <= raw <= top:
                    raise ValueError(
                        f"invalid_raw {raw} is outside 0..{top:#x} for {register_count(self)} register(s)"
                    )
        if self.address + register_count(self) - 1 > 65535:
            raise ValueError(f"address {self.address} + {register_count(self)} registers runs past 65535")
        return self


def write_function_of(point: ModbusPoint, *, refused_single: bool = False) -> int:
    """The function code a write of ``point`` uses: its ``write_function``; else FC5 for a coil, FC6 for
    one register, FC16 for several; FC15/FC16 once the device refused FC5/FC6 (``refused_single``)."""
    if point.write_function is not None:
        return point.write_function
    if point.table == "coil":
        return 15 if refused_single else 5
    return 16 if refused_single or register_count(point) > 1 else 6


_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class RepeatUnit(BaseModel):
    """One copy of a `repeat:` block: an indoor unit of a VRF/AC gateway."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: str = Field(
        pattern=_ID,
        max_length=32,
        description="The indoor unit's id: its points are `{device}.{unit}.{point}`, `ac_unit: {unit}`",
    )
    zone: str | None = Field(default=None, description="The unit's zone (defaults to the device's)")
    name: str | None = Field(default=None, description="Prefixes the names of the unit's points")
    index: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Block number on the gateway (addresses move by index x stride); defaults to the "
        "entry's position in `units:` (0, 1, 2...), so leave it out unless units are missing in between",
    )


def _template_span(points: list[ModbusPoint]) -> dict[str, tuple[int, int]]:
    """Per table, the lowest and highest register (bit) the templates occupy."""
    span: dict[str, tuple[int, int]] = {}
    for p in points:
        if p.sum_of is not None:
            continue
        lo, hi = p.address, p.address + register_count(p) - 1
        a, b = span.get(p.table, (lo, hi))
        span[p.table] = (min(a, lo), max(b, hi))
    return span


class RepeatBlock(BaseModel):
    """A template of points repeated once per unit at a register stride (VRF/AC gateways)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stride: int = Field(ge=1, le=65535, description="Registers (bits) from one unit's block to the next")
    units: list[RepeatUnit] = Field(min_length=1, description="One entry per copy: the indoor units")
    points: list[ModbusPoint] = Field(
        min_length=1,
        description="The template: the points of block 0, with plain point options; short ids (`setpoint`) "
        "become `{device}.{unit}.{id}`; no `zone:` or `ac_unit:` (they come from the unit)",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_unit_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("points"), list):
            for p in data["points"]:
                if isinstance(p, dict) and ({"zone", "ac_unit"} & set(p)):
                    raise ValueError(
                        f"template point {p.get('id')!r}: `zone:` and `ac_unit:` come from each entry of "
                        "`units:`, not the template"
                    )
        return data

    @model_validator(mode="after")
    def _check_units(self) -> RepeatBlock:
        seen: dict[str, int] = {}
        slots: dict[int, str] = {}
        for i, u in enumerate(self.units):
            if u.unit in seen:
                raise ValueError(f"unit {u.unit!r} is listed twice (entries {seen[u.unit]} and {i})")
            seen[u.unit] = i
            index = i if u.index is None else u.index
            if index in slots:
                raise ValueError(f"units {slots[index]!r} and {u.unit!r} both take block {index}")
            slots[index] = u.unit
        for table, (lo, hi) in _template_span(self.points).items():
            if hi - lo + 1 > self.stride and len(self.units) > 1:
                raise ValueError(
                    f"stride {self.stride} is shorter than the template's {table} block {lo}-{hi} "
                    f"({hi - lo + 1} registers): the units' registers would overlap"
                )
        return self


def _template_ok(data: Mapping[str, Any]) -> bool:
    try:
        ModbusPoint.model_validate(data)
    except ValueError:  # pydantic's ValidationError is one: the schema reports it at the template
        return False
    return True


def expand_device_points(device: Mapping[str, Any]) -> list[ExpandedPoint]:
    """The points a raw Modbus device mapping's `repeat:` blocks add (drivers.spec.PointExpander)."""
    return expand_repeats(device, _template_ok)


def _schema_points_or_repeat(schema: dict[str, Any]) -> None:
    schema["required"] = [r for r in schema.get("required", []) if r != "points"]
    schema["anyOf"] = [{"required": ["points"]}, {"required": ["repeat"]}]


class _ModbusUnit(BaseModel):
    """What every Modbus device has, however it is reached (TCP, RTU over TCP, RTU on a serial port)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, json_schema_extra=_schema_points_or_repeat
    )

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any) -> Any:
        """`repeat:` blocks expanded into points, then ``address_base: 1`` applied to every address."""
        if isinstance(data, dict) and data.get("repeat"):
            extra = [e.data for e in expand_device_points(data)]
            if extra:
                points = data.get("points")
                data = {**data, "points": [*(points if isinstance(points, list) else []), *extra]}
        return cls._one_based(data)

    @staticmethod
    def _one_based(data: Any) -> Any:
        """``address_base: 1``: the device's ``address:`` values count from 1, as its manual does."""
        if not isinstance(data, dict) or data.get("address_base") != 1:
            return data
        if not isinstance(data.get("points"), list):
            return data
        points = []
        for p in data["points"]:
            address = p.get("address") if isinstance(p, dict) else None
            if isinstance(address, int) and not isinstance(address, bool):
                if address < 1:
                    raise ValueError(
                        f"point {p.get('id')}: address {address} with address_base 1 (addresses start at 1)"
                    )
                p = {**p, "address": p["address"] - 1}
            points.append(p)
        return {**data, "points": points}

    address_base: Literal[0, 1] = Field(
        default=0, description="1 when the manual numbers registers from 1: `address:` is then 1-based"
    )
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=64)
    name: str | None = None
    zone: str | None = Field(default=None, description="Default zone of the device's points")
    unit_id: int = Field(
        default=1, ge=0, le=255, description="Unit (slave) id; devices behind one gateway or bus share it"
    )
    interval_s: float = Field(default=10.0, gt=0, le=86400, description="Poll interval")
    timeout_s: float = Field(default=1.0, gt=0, le=60, description="Per-request timeout")
    max_registers: int = Field(
        default=125, ge=1, le=125, description="Largest register read this device accepts"
    )
    max_bits: int = Field(default=2000, ge=1, le=2000, description="Largest coil/discrete read")
    max_gap: int = Field(
        default=8, ge=0, le=120, description="Unused registers a read may bridge to save a request"
    )
    readback_delay_s: float = Field(default=0.2, ge=0, le=30, description="Wait before reading a write back")
    dead_after: int = Field(
        default=3, ge=1, le=1000,
        description=(
            "Polls in a row without an answer (timeout, or gateway exception 10/11) before the unit is "
            "backed off: then polled once per backoff, so it stops holding a shared gateway's connection"
        ),
    )  # fmt: skip
    dead_backoff_max_s: float = Field(
        default=300.0, gt=0, le=86400, description="Longest backoff of a silent unit (doubling from 2 polls)"
    )
    points: list[ModbusPoint] = Field(
        min_length=1, description="The device's points; those of `repeat:` blocks are added to them"
    )
    repeat: list[RepeatBlock] = Field(
        default_factory=list,
        exclude=True,  # already expanded into `points`: a dump validated again must not add them twice
        description="Point templates repeated per indoor unit at a register stride (VRF/AC gateways): "
        "each unit's copy gets ids `{device}.{unit}.{point}`, `ac_unit: {unit}`, the unit's zone, and "
        "addresses (or refs) + index x stride",
    )

    @model_validator(mode="after")
    def _check_sums(self) -> Self:
        by_id = {p.id: p for p in self.points}
        for p in self.points:
            for part in p.sum_of or {}:
                other = by_id.get(part)
                if other is None:
                    raise ValueError(f"point {p.id}: sum_of names {part!r}, not a point of device {self.id}")
                if other.sum_of is not None:
                    raise ValueError(f"point {p.id}: sum_of names {part!r}, itself a sum_of point")
        return self


class ModbusDevice(_ModbusUnit):
    """A Modbus TCP device, or an RS-485 slave behind a serial device server (``framer: rtu``)."""

    protocol: Literal["modbus"]
    host: str = Field(description="IP address or host name of the device or its Modbus gateway")
    port: int = Field(default=502, ge=1, le=65535)
    framer: Literal["tcp", "rtu"] = Field(
        default="tcp",
        description=(
            "tcp: Modbus TCP (MBAP header). rtu: RTU frames (unit id, PDU, CRC) carried over TCP, as a "
            "serial device server in transparent mode forwards them to its RS-485 bus"
        ),
    )


class ModbusRtuDevice(_ModbusUnit):
    """A Modbus RTU slave on an RS-485 bus at a serial port of the gateway (a USB-RS485 adapter)."""

    protocol: Literal["modbus_rtu"]
    port: str = Field(
        pattern=r"^/",
        description=(
            "Serial device path, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...; its devices share the bus"
        ),
    )
    baudrate: int = Field(default=9600, ge=300, le=921600, description="Bits per second of the bus")
    parity: Literal["N", "E", "O"] = Field(
        default="E", description="N, E or O; the Modbus serial line's default is even (8E1)"
    )
    stopbits: Literal[1, 2] = Field(default=1, description="1, or 2 with parity N (8N2) as the spec asks")
    bytesize: Literal[7, 8] = Field(default=8)
    timeout_s: float = Field(default=0.5, gt=0, le=60, description="Per-request timeout")

    def char_time_s(self) -> float:
        """Seconds one character takes on the line: start bit, data bits, parity, stop bits."""
        bits = 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits
        return bits / self.baudrate

    def silence_s(self) -> float:
        """The serial line's inter-frame silence: 3.5 characters, and 1.75 ms above 19200 bit/s."""
        return 0.00175 if self.baudrate > 19200 else 3.5 * self.char_time_s()

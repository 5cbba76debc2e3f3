"""Options an integrator writes in site.yaml for a Modbus TCP device and its points."""

from __future__ import annotations

import math
import struct
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.base import PointBase, ValueKind

__all__ = ["DATA_TYPES", "ModbusDevice", "ModbusPoint", "register_count"]

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


class ModbusPoint(PointBase):
    table: Table = Field(default="holding", description="holding, input (registers); coil, discrete (bits)")
    address: int = Field(
        ge=0, le=65535, description="Protocol address, 0-based (register 40001 is address 0)"
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

    @model_validator(mode="after")
    def _check_layout(self) -> ModbusPoint:
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
        if self.address + register_count(self) - 1 > 65535:
            raise ValueError(f"address {self.address} + {register_count(self)} registers runs past 65535")
        return self


class ModbusDevice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    protocol: Literal["modbus"]
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=64)
    name: str | None = None
    zone: str | None = Field(default=None, description="Default zone of the device's points")
    host: str = Field(description="IP address or host name of the device or its Modbus gateway")
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(
        default=1, ge=0, le=255, description="Unit (slave) id; devices behind one gateway share it"
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
    points: list[ModbusPoint] = Field(min_length=1)

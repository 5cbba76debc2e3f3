"""Options an integrator writes in site.yaml for a Modbus TCP device and its points."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.base import PointBase

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
    scale: float = Field(default=1.0, description="value = raw * scale + offset")
    offset: float = 0.0
    write_function: Literal[5, 6, 15, 16] | None = Field(
        default=None,
        description=(
            "Function code of writes: 6 or 16 for holding registers, 5 or 15 for coils. Default: 6 for one "
            "register (16 once the device answers exception 1), 16 for several, 5 for a coil"
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


class ModbusDevice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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
    points: list[ModbusPoint] = Field(min_length=1)

"""Options an integrator writes in site.yaml for a DL/T 645-2007 meter on an RS-485 bus and its points."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.base import PointBase

__all__ = ["Dlt645Device", "Dlt645Point"]


class Dlt645Point(PointBase):
    """One data identifier of the meter (read-only)."""

    di: str = Field(
        pattern=r"^[0-9A-Fa-f]{8}$",
        description=(
            "Data identifier, 8 hex digits as the standard writes it: 00010000 forward active energy (kWh), "
            "02010100 phase-A voltage (V), 02020100 phase-A current (A), 02030000 active power (kW)"
        ),
    )
    scale: float = Field(
        default=1.0,
        allow_inf_nan=False,
        description="value = meter value * scale: the CT x PT ratio of a meter that reports secondary values",
    )

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("scale 0 makes every value 0")
        return v

    @model_validator(mode="after")
    def _read_only(self) -> Dlt645Point:
        if self.writable:
            raise ValueError("DL/T 645 points are read-only here (no writes to electricity meters)")
        return self

    @property
    def code(self) -> int:
        return int(self.di, 16)


class Dlt645Device(BaseModel):
    """One meter: its address on a serial bus shared with the other meters on that port."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    protocol: Literal["dlt645"]
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=64)
    name: str | None = None
    zone: str | None = Field(default=None, description="Default zone of the device's points")
    port: str = Field(pattern=r"^/", description="Serial device path, e.g. /dev/serial/by-id/...")
    address: str = Field(
        pattern=r"^[0-9]{12}$", description="The meter's 12-digit address as printed on its plate"
    )
    baudrate: int = Field(default=2400, ge=300, le=115200, description="Usually 2400 (older meters 1200)")
    parity: Literal["N", "E", "O"] = Field(default="E", description="DL/T 645 meters use 8E1")
    stopbits: Literal[1, 2] = 1
    interval_s: float = Field(default=60.0, gt=0, le=86400, description="Poll interval")
    timeout_s: float = Field(
        default=1.0, gt=0, le=30, description="Per-request timeout; meters may take 500 ms to answer"
    )
    dead_after: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Polls in a row without an answer before the meter is backed off",
    )
    dead_backoff_max_s: float = Field(default=600.0, gt=0, le=86400)
    points: list[Dlt645Point] = Field(min_length=1)

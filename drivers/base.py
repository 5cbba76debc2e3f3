"""The small interface every protocol driver implements, and the data it exchanges.

Drivers are leaves: they import neither ``edge_agent`` nor ``policies``. Each driver owns the
pydantic models of its own device and point options (``drivers/<protocol>/options.py``);
``edge_agent.config`` composes them into the site schema as a discriminated union on ``protocol``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal, NamedTuple, Protocol, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ENERGY_ROLES",
    "MODE_LABELS",
    "Driver",
    "DriverError",
    "PermanentError",
    "PointBase",
    "Quality",
    "Reading",
    "Role",
    "TransientError",
    "UtcClock",
    "Value",
    "WriteResult",
    "utc_now",
]

Value: TypeAlias = float | int | bool | str | None
UtcClock: TypeAlias = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Quality(StrEnum):
    GOOD = "good"
    BAD = "bad"  # no usable value: exception reply, timeout, unreachable, decode failure
    UNCERTAIN = "uncertain"  # a value, but the device flags it (BACnet fault/overridden, NaN)


class Reading(NamedTuple):
    """One point's value at one moment, as the device gave it (after scale and offset).

    A NamedTuple rather than a frozen dataclass: a poll builds thousands, and this is 3-4x cheaper.
    """

    point_id: str
    value: Value
    ts: datetime  # UTC, from the injected clock
    quality: Quality
    code: str | None = None  # machine-readable failure: "modbus:2", "timeout", "unreachable", ...
    detail: str | None = None  # human-readable reason

    @property
    def ok(self) -> bool:
        return self.quality is not Quality.BAD


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A write and its read-back. ``ok`` only when the device reports the value we wrote."""

    point_id: str
    requested: Value
    readback: Value
    ok: bool
    code: str | None = None
    detail: str | None = None


class DriverError(Exception):
    """Base of every driver failure; carries the device, the point and a machine-readable code."""

    def __init__(self, message: str, *, device: str, point: str | None = None, code: str) -> None:
        super().__init__(message)
        self.device = device
        self.point = point
        self.code = code


class TransientError(DriverError):
    """Worth retrying: timeout, connection refused or reset."""


class PermanentError(DriverError):
    """Retrying will not help: illegal address, unknown object, value out of the device's range."""


# Roles let policies name points by meaning and zone, never by register.
Role = Literal[
    "cooling_setpoint",  # setpoint used only in cooling
    "heating_setpoint",  # setpoint used only in heating
    "setpoint",  # single setpoint whose meaning follows the unit's mode (most split/VRF units)
    "room_temperature",
    "ac_mode",  # enumerated; map raw values with `states`
    "ac_power",  # on/off command or status of an AC unit
    "light_relay",
    "window_contact",  # true/1 = open
    "illuminance",  # lux, from a daylight sensor
    "outdoor_temperature",
    "power",  # kW
    "energy",  # kWh (or the unit of the energy code), usually a cumulative counter
    "water_volume",  # m³
    "other",
]
ENERGY_ROLES: frozenset[str] = frozenset({"energy", "water_volume"})
MODE_LABELS: frozenset[str] = frozenset({"off", "cool", "heat", "fan", "auto", "dry"})


class PointBase(BaseModel):
    """Options every point has, whatever its protocol. Protocol models add the address."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=64, description="Unique across the site"
    )
    name: str | None = None
    unit: str | None = Field(default=None, description="Engineering unit, e.g. kWh, degC, m3")
    role: Role = "other"
    zone: str | None = Field(default=None, description="Zone id from `zones:`; defaults to the device's zone")
    energy_code: str | None = Field(
        default=None,
        pattern=r"^[0-9]{2}[A-Z0][0-9A-Z][0-9A-Z]$",
        description="MOHURD energy item code, e.g. 01A00 (lighting and sockets); meters only",
    )
    cumulative: bool = Field(default=False, description="A counter that only grows (energy, volume)")
    rollover: float | None = Field(default=None, gt=0, description="Counter value at which it wraps to 0")
    writable: bool = False
    min: float | None = None
    max: float | None = None
    states: dict[int, str] | None = Field(
        default=None, description="Raw value -> label, e.g. {0: off, 1: cool, 2: heat, 3: fan} for ac_mode"
    )

    @model_validator(mode="after")
    def _check_common(self) -> PointBase:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.role == "ac_mode":
            if not self.states:
                raise ValueError(
                    "an ac_mode point needs `states` mapping raw values to off/cool/heat/fan/auto/dry"
                )
            bad = sorted(set(self.states.values()) - MODE_LABELS)
            if bad:
                raise ValueError(f"ac_mode states {bad} are not among {sorted(MODE_LABELS)}")
        if self.rollover is not None and not self.cumulative:
            raise ValueError("rollover only applies to a cumulative counter (set cumulative: true)")
        return self


class Driver(Protocol):
    """What the runtime needs from a protocol adapter. Batching and protocol quirks stay inside."""

    device_id: str

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def read(self, points: Sequence[PointBase]) -> list[Reading]:
        """One reading per point, in order. Failures are ``bad`` readings, never exceptions."""
        ...

    async def write(self, point: PointBase, value: Value, *, priority: int | None = None) -> WriteResult:
        """Write, wait the device's read-back delay, read back, compare."""
        ...

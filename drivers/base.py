"""The small interface every protocol driver implements, and the data it exchanges.

Drivers are leaves: they import neither ``edge_agent`` nor ``policies``. Each driver owns the
pydantic models of its own device and point options (``drivers/<protocol>/options.py``);
``edge_agent.config`` composes them into the site schema as a discriminated union on ``protocol``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal, NamedTuple, Protocol, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BACNET_ERROR_CLASSES",
    "ENERGY_ROLES",
    "MODE_LABELS",
    "DeviceRejectedError",
    "Driver",
    "DriverError",
    "FailureCode",
    "ModeLimits",
    "PermanentError",
    "PointBase",
    "Quality",
    "Reading",
    "Role",
    "TransientError",
    "UtcClock",
    "Value",
    "ValueKind",
    "WriteResult",
    "bacnet_error",
    "is_failure_code",
    "modbus_exception",
    "unknown_state",
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


class FailureCode(StrEnum):
    """The one failure vocabulary: every code a driver or the actuator produces, one spelling each.

    Codes travel upstream unchanged (reading ``code``, audit ``result``, uplink events), so a value here
    never changes meaning. Besides these members, two parameterised forms name a device's own reply:
    :func:`modbus_exception` (``modbus:<n>``) and :func:`bacnet_error` (``bacnet:<class>:<code>``).
    ``docs/uplink-schema.md`` lists the same codes; a test keeps the two equal.
    """

    # Reaching the device (transient: worth retrying)
    TIMEOUT = "timeout"  # no reply within the device's timeout
    UNREACHABLE = "unreachable"  # connection refused or lost, or the endpoint is in reconnect backoff
    # Understanding the reply
    PROTOCOL = "protocol"  # a reply that cannot be matched or parsed, or of the wrong shape
    REQUEST_FAILED = "request_failed"  # the local stack could not build or send the request (socket error)
    DECODE = "decode"  # the reply's data does not form a value of the point's type
    NO_VALUE = "no_value"  # the reply holds no value for the point
    # A value the device flags (quality ``uncertain``)
    NAN = "nan"  # the device reports NaN; or NaN cannot be written to an integer point
    INF = "inf"  # the device reports +/- infinity
    FAULT = "fault"  # BACnet status-flags: fault
    OUT_OF_SERVICE = "out_of_service"  # BACnet status-flags: out-of-service
    OVERRIDDEN = "overridden"  # BACnet status-flags: overridden (a local override holds the value)
    # Configuration
    CONFIG = "config"  # the point or request does not fit this driver as configured
    WRONG_DEVICE = "wrong_device"  # BACnet: the device at the address is not site.yaml's device_instance
    # Writes (driver)
    NOT_WRITABLE = "not_writable"  # not writable in site.yaml, or the register/object takes no writes
    TYPE = "type"  # the value is the wrong kind for the point (a string for a number, 2 for a binary)
    RANGE = "range"  # the value does not fit the point's data type
    SCALE = "scale"  # the point's scale is 0: no raw value gives the requested one
    READBACK_MISMATCH = "readback_mismatch"  # written; the read-back differs
    MASKED = "masked"  # BACnet: written, a higher priority holds another value (see holding_priority)
    RELINQUISH_FAILED = "relinquish_failed"  # BACnet: our priority slot still holds a value
    SLOT_NOT_OURS = "slot_not_ours"  # BACnet: our priority slot holds someone else's value; left alone
    WRITE_FAILED = "write_failed"  # the driver reported a failed write without a code
    # Refusals by the actuator's safety envelope (nothing was sent)
    UNKNOWN_POINT = "unknown_point"  # not a point of site.yaml
    NO_DRIVER = "no_driver"  # the point's device has no driver
    EXEMPT_ZONE = "exempt_zone"  # the point's zone is exempt from enforcement
    RELINQUISH_UNSUPPORTED = "relinquish_unsupported"  # relinquish asked of a driver without priorities
    NOT_BOOLEAN = "not_boolean"  # an on/off point asked for something else
    NOT_A_NUMBER = "not_a_number"  # a numeric point asked for a non-number
    NOT_FINITE = "not_finite"  # NaN or infinity asked for
    # An enumerated point asked for, or read as (quality uncertain), a raw value not in its `states`
    UNKNOWN_STATE = "unknown_state"
    NO_BOUNDS = "no_bounds"  # a numeric point without both min and max is never written
    BELOW_MIN = "below_min"  # below the point's min (never clamped)
    ABOVE_MAX = "above_max"  # above the point's max (never clamped)
    RATE_LIMITED = "rate_limited"  # the point's writes per hour are used up
    # Other outcomes of a write attempt
    INTERNAL_ERROR = "internal_error"  # the driver raised something other than a DriverError (a bug)
    CANCELLED = "cancelled"  # shutdown cancelled the write before its read-back: it may have landed
    # The BACnet/IP local address (at startup; no device involved)
    ADDRESS_NOT_LOCAL = "address_not_local"  # the address is not one of this host's
    PORT_IN_USE = "port_in_use"  # another process holds the UDP port
    BIND_FAILED = "bind_failed"  # any other bind failure


# ASHRAE 135 Error Class names (proprietary classes are numbers), and Reject/Abort as pseudo-classes.
BACNET_ERROR_CLASSES: frozenset[str] = frozenset(
    {"device", "object", "property", "resources", "security", "services", "vt", "communication"}
)
_BACNET_CLASS = "|".join(sorted(BACNET_ERROR_CLASSES | {"reject", "abort"})) + r"|[0-9]+"
_MODBUS_RE = re.compile(r"modbus:([1-9][0-9]{0,2})")
_BACNET_RE = re.compile(rf"bacnet:(?:{_BACNET_CLASS}):[a-z0-9]+(?:-[a-z0-9]+)*")
_CODES: frozenset[str] = frozenset(FailureCode)


def modbus_exception(n: int) -> str:
    """``modbus:<n>`` for a Modbus exception reply with exception code ``n`` (1-255), e.g. ``modbus:2``."""
    if isinstance(n, bool) or not 1 <= n <= 255:
        raise ValueError(f"Modbus exception code {n!r} is not in 1..255")
    return f"modbus:{int(n)}"


def _bacnet_name(text: object) -> str:
    """A BACnet enumeration name as the standard's tools spell it: lower-case words joined by ``-``.

    bacpypes3 already gives ``unknown-object``; camelCase (``unknownObject``), spaces and underscores are
    folded into the same form, so one error always has one spelling. None gives "" (not a name)."""
    if text is None:
        return ""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", str(text))
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def bacnet_error(error_class: object, error_code: object) -> str:
    """``bacnet:<class>:<code>`` for a BACnet Error reply, e.g. ``bacnet:object:unknown-object``.

    Reject and Abort replies use ``reject`` and ``abort`` as the class and their reason as the code
    (``bacnet:reject:unrecognized-service``). Names are the BACnet enumeration names in bacpypes3's
    spelling (kebab-case), which is how the standard's tools and device manuals show them; proprietary
    values are numbers. Raises ValueError for a class that is none of these."""
    code = f"bacnet:{_bacnet_name(error_class)}:{_bacnet_name(error_code)}"
    if _BACNET_RE.fullmatch(code) is None:
        raise ValueError(f"{error_class!r}:{error_code!r} is not a BACnet error class and code")
    return code


def is_failure_code(code: object) -> bool:
    """Whether ``code`` belongs to the vocabulary: a :class:`FailureCode` or one of the two device forms."""
    if not isinstance(code, str):
        return False
    if code in _CODES:
        return True
    m = _MODBUS_RE.fullmatch(code)
    if m is not None:
        return int(m.group(1)) <= 255
    return _BACNET_RE.fullmatch(code) is not None


def unknown_state(value: Value, states: Mapping[int, str]) -> str | None:
    """Why ``value`` is not one of an enumerated point's ``states`` (None when it is). Every driver reads
    such a value as uncertain with code ``unknown_state``: a value, but no known state to decide on."""
    # a bool counts as 0/1 (a binary object with a states table); NaN and inf are never a state
    finite = isinstance(value, int | float) and math.isfinite(value)
    if finite and value == int(value) and int(value) in states:  # type: ignore[arg-type]
        return None
    known = ", ".join(f"{k}={lab}" for k, lab in sorted(states.items()))
    return f"raw {value!r} is not among the point's states ({known})"


class Reading(NamedTuple):
    """One point's value at one moment, as the device gave it (after scale and offset).

    A NamedTuple rather than a frozen dataclass: a poll builds thousands, and this is 3-4x cheaper.
    """

    point_id: str
    value: Value
    ts: datetime  # UTC, from the injected clock
    quality: Quality
    code: str | None = None  # bad/uncertain: a FailureCode, ``modbus:<n>`` or ``bacnet:<class>:<code>``
    detail: str | None = None  # human-readable reason

    @property
    def ok(self) -> bool:
        return self.quality is not Quality.BAD


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A write and its read-back. ``ok`` only when the device reports the value we wrote.

    ``code`` (when not ok) is a code of the vocabulary (checked here). ``holding_priority`` is the BACnet
    priority that holds the point when a write is ``masked``; None otherwise."""

    point_id: str
    requested: Value
    readback: Value
    ok: bool
    code: str | None = None
    detail: str | None = None
    holding_priority: int | None = None

    def __post_init__(self) -> None:
        if self.code is not None and not is_failure_code(self.code):
            raise ValueError(f"write result code {self.code!r} is not in the failure vocabulary")


class DriverError(Exception):
    """Base of every driver failure; carries the device, the point and a code of the vocabulary."""

    def __init__(self, message: str, *, device: str, point: str | None = None, code: str) -> None:
        if not is_failure_code(code):
            raise ValueError(f"driver error code {code!r} is not in the failure vocabulary")
        super().__init__(message)
        self.device = device
        self.point = point
        self.code = code


class TransientError(DriverError):
    """Worth retrying: timeout, connection refused or reset (``timeout``, ``unreachable``)."""


class PermanentError(DriverError):
    """Retrying will not help: an answer that holds no value, a request the stack cannot make."""


class DeviceRejectedError(PermanentError):
    """The device answered with an error reply: ``modbus:<n>`` or ``bacnet:<class>:<code>``."""


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
_BOOL_ROLES: frozenset[str] = frozenset({"light_relay", "ac_power", "window_contact"})
ValueKind: TypeAlias = Literal["enum", "bool", "number"]
MODE_LABELS: frozenset[str] = frozenset({"off", "cool", "heat", "fan", "auto", "dry"})
ModeLabel = Literal["off", "cool", "heat", "fan", "auto", "dry"]


class ModeLimits(BaseModel):
    """The range a numeric point takes while its AC unit is in one mode (a setpoint's cooling range)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> ModeLimits:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class PointBase(BaseModel):
    """Options every point has, whatever its protocol. Protocol models add the address."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=64, description="Unique across the site"
    )
    name: str | None = None
    unit: str | None = Field(default=None, description="Engineering unit, e.g. kWh, degC, m3")
    role: Role = "other"
    zone: str | None = Field(default=None, description="Zone id from `zones:`; defaults to the device's zone")
    ac_unit: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        max_length=64,
        description="The AC unit (indoor unit) this point belongs to, when one device carries several (a VRF "
        "or split-unit gateway): its setpoint, mode, power and room points share one id. Policies decide per "
        "unit; without it the device (per zone) is one unit",
    )
    energy_code: str | None = Field(
        default=None,
        pattern=r"^[0-9]{2}[A-Z0][0-9A-Z][0-9A-Z]$",
        description="MOHURD energy item code, e.g. 01A00 (lighting and sockets); meters only",
    )
    cumulative: bool = Field(default=False, description="A counter that only grows (energy, volume)")
    rollover: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Counter value at which it wraps to 0"
    )
    writable: bool = False
    min: float | None = Field(
        default=None, allow_inf_nan=False, description="Lowest value; writable numeric points need both"
    )
    max: float | None = Field(
        default=None, allow_inf_nan=False, description="Highest value; writable numeric points need both"
    )
    states: dict[int, str] | None = Field(
        default=None,
        description="Raw value -> label, e.g. {0: off, 1: cool, 2: heat, 3: fan} for ac_mode; several raw "
        "values may share a label (auxiliary heat -> heat). A raw value not listed reads as uncertain "
        "(code unknown_state)",
    )
    limits: dict[ModeLabel, ModeLimits] | None = Field(
        default=None,
        description="Narrower min/max per mode of the point's AC unit, e.g. {cool: {min: 18, max: 32}, heat: "
        "{min: 16, max: 30}}, each inside min..max. Writes use the range of the unit's current mode (its "
        "ac_mode point); a mode not listed uses min..max; while the mode is unknown or its reading not "
        "good or older than 2 poll intervals, the range common to every listed mode",
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
        if self.limits is not None:
            if self.value_kind() != "number" or self.min is None or self.max is None:
                raise ValueError("`limits:` narrows a numeric point's min..max per mode; give `min:`, `max:`")
            for mode, lim in self.limits.items():
                if lim.min < self.min or lim.max > self.max:
                    raise ValueError(
                        f"limits of {mode} ({lim.min:g}..{lim.max:g}) reach outside min..max "
                        f"({self.min:g}..{self.max:g})"
                    )
        if self.rollover is not None and not self.cumulative:
            raise ValueError("rollover only applies to a cumulative counter (set cumulative: true)")
        if self.writable and self.value_kind() == "number" and (self.min is None or self.max is None):
            raise ValueError(
                "a writable numeric point needs both `min:` and `max:` (the safety envelope of every write)"
            )
        return self

    def envelope(self, mode: str | None) -> tuple[float, float] | None:
        """[lo, hi] a write must stay inside while the point's AC unit is in ``mode`` (None: unknown):
        the mode's `limits`, min..max for a mode without its own, the intersection of every listed mode's
        when the mode is unknown or `auto` without its own (an auto unit cools or heats as it decides).
        None when there is no such range (no min/max, or the listed modes' ranges have nothing in
        common)."""
        if self.min is None or self.max is None:
            return None
        if not self.limits:
            return self.min, self.max
        if mode is not None:
            lim = self.limits.get(mode)  # type: ignore[call-overload]
            if lim is not None:
                return lim.min, lim.max
            if mode != "auto":
                return self.min, self.max
        lo = max(lim.min for lim in self.limits.values())
        hi = min(lim.max for lim in self.limits.values())
        return (lo, hi) if lo <= hi else None

    def value_kind(self) -> ValueKind:
        """What a write to this point takes: ``enum`` (a raw value of `states`), ``bool`` (on/off) or
        ``number`` (inside min/max). Protocols whose data type makes a point on/off extend this."""
        if self.states:
            return "enum"
        if self.role in _BOOL_ROLES:
            return "bool"
        return "number"

    def quantize(self, value: float) -> float:
        """The value the device holds after a write of ``value``: the protocol's rounding to what its
        register or property can represent (a Modbus integer register holds whole steps of ``scale``).
        Raises ValueError when no raw value holds it. Here: the value itself (a property that takes any
        float); protocols with coarser storage override this."""
        return float(value)


class Driver(Protocol):
    """What the runtime needs from a protocol adapter. Batching and protocol quirks stay inside."""

    device_id: str

    async def connect(self) -> None:
        """Open the connection (or bind the shared port). DriverError or OSError when that fails; the
        device's readings then say why."""
        ...

    async def run(self) -> None:
        """Background work while the device is configured (BACnet: COV subscriptions and their renewal),
        run by the agent as a named task of its TaskGroup and cancelled when the device goes. Returns
        at once for a driver that has none."""
        ...

    async def close(self) -> None:
        """Release the connection and the driver's subscriptions on the device. Called after run() has
        been cancelled; bounded in time by the caller. Priorities are not released here: a driver that
        holds them (BACnet) offers ``relinquish(point)``, which the service calls, and audits, before."""
        ...

    async def read(self, points: Sequence[PointBase]) -> list[Reading]:
        """One reading per point, in order. Failures are ``bad`` readings, never exceptions."""
        ...

    async def write(self, point: PointBase, value: Value, *, priority: int | None = None) -> WriteResult:
        """Write, wait the device's read-back delay, read back, compare."""
        ...

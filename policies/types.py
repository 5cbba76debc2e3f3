"""What policies take in and give out. Plain frozen data; the shell converts its snapshot to this."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = ["Decision", "Finding", "FindingKind", "PointState", "Snapshot", "WriteIntent"]


@dataclass(frozen=True, slots=True)
class PointState:
    """The latest known state of one point, as policies see it."""

    point_id: str
    role: str  # drivers.base.Role values: "setpoint", "cooling_setpoint", "ac_mode", "light_relay", ...
    zone: str | None
    value: float | int | bool | str | None  # engineering value (after scale/offset)
    ok: bool  # False when the latest reading is bad: policies never act on it
    ts: datetime  # aware UTC time of the reading
    since: datetime  # aware UTC time the point was first seen at its current value
    writable: bool = False
    min: float | None = None
    max: float | None = None
    states: Mapping[int, str] | None = None  # raw -> label for enumerations (ac_mode: off/cool/heat/fan/auto)
    device_id: str | None = None
    # False while the point still holds the value it had when the agent first saw it (after a start or
    # reload): `since` is then only "first seen", not when it changed, so it must not count as a switch-on.
    since_known: bool = True
    # The reading's quality ("good", "uncertain", "bad") and failure code (drivers.base.FailureCode values,
    # e.g. "no_value", "overridden", "timeout"). Only a good, in-range, fresh reading decides anything.
    quality: str = "good"
    ac_unit: str | None = None  # the AC unit within its device (site.yaml `ac_unit`), when it has several
    code: str | None = None


Snapshot = Mapping[str, PointState]  # point id -> state


@dataclass(frozen=True, slots=True)
class WriteIntent:
    point_id: str
    value: float | int | bool
    rule: str  # e.g. "hvac.summer_min_cooling", "lighting.after_hours_sweep"
    reason: str  # one sentence a facilities engineer understands
    zone: str | None = None
    relinquish: bool = False  # BACnet: release our priority instead of writing a value


# data_quality: a reading that decides something (setpoint, mode, power, window, illuminance) has not been
# good for 3 poll intervals (bad, uncertain, out of range, no value, or stale); nothing acts on it.
FindingKind = Literal[
    "violation", "tamper", "masked_write", "window_open", "exempt", "stale", "data_quality", "info"
]


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    subject: str  # point or zone id
    rule: str
    reason: str
    zone: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    intents: tuple[WriteIntent, ...] = ()
    findings: tuple[Finding, ...] = ()
    explanations: tuple[str, ...] = field(default=())  # why, per zone and rule, for `policy explain`

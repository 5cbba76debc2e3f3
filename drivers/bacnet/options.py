"""Options an integrator writes in site.yaml for BACnet/IP devices, their points and the gateway's own port.

Write priority (ASHRAE 135 clause 19.2.2): the agent writes at priority 8 ("manual operator") unless told
otherwise. Supervisory energy-saving writes sit with the operator: above the building's own schedules and
programs (9-16), below life safety (1-2), critical equipment control (5) and minimum on/off (6), which a
supervisory agent must never use and which this schema refuses.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.base import PointBase, ValueKind

__all__ = [
    "COMMANDABLE_TYPES",
    "DEFAULT_PORT",
    "OBJECT_TYPES",
    "READ_ONLY_TYPES",
    "BacnetDevice",
    "BacnetNetworkOptions",
    "BacnetPoint",
    "check_priority",
    "parse_address",
]

DEFAULT_PORT = 47808  # 0xBAC0
ObjectType = Literal[
    "analog-input",
    "analog-output",
    "analog-value",
    "binary-input",
    "binary-output",
    "binary-value",
    "multi-state-input",
    "multi-state-output",
    "multi-state-value",
    "accumulator",
    "lighting-output",  # level 0-100 %, commandable; a light_relay role writes on = 100, off = 0
    "binary-lighting-output",  # on/off (BACnetBinaryLightingPV), commandable
]
OBJECT_TYPES: tuple[str, ...] = ObjectType.__args__  # type: ignore[attr-defined]
# Outputs are always commandable (priority-array); values may be; inputs and accumulators never take writes.
COMMANDABLE_TYPES: frozenset[str] = frozenset(
    {"analog-output", "binary-output", "multi-state-output", "lighting-output", "binary-lighting-output"}
)
READ_ONLY_TYPES: frozenset[str] = frozenset(
    {"analog-input", "binary-input", "multi-state-input", "accumulator"}
)
# 1-2 life safety, 5 critical equipment control, 6 minimum on/off (reserved for the object itself).
FORBIDDEN_PRIORITIES: frozenset[int] = frozenset({1, 2, 5, 6})
MAX_INSTANCE = 4194302  # 2^22 - 2; 4194303 is the "unconfigured" wildcard

_ADDR = re.compile(r"^(?P<ip>\d{1,3}(?:\.\d{1,3}){3})(?:/(?P<prefix>\d{1,2}))?(?::(?P<port>\d{1,5}))?$")


def parse_address(text: str) -> tuple[str, int | None, int]:
    """``"IP[/prefix][:port]"`` -> (ip, prefix or None, port). Raises ValueError with the reason."""
    m = _ADDR.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not IPv4[/prefix][:port], e.g. 192.168.1.20 or 127.0.0.2/24:47808")
    ip = str(ipaddress.IPv4Address(m["ip"]))  # raises on 300.1.1.1
    prefix = int(m["prefix"]) if m["prefix"] else None
    if prefix is not None and not 0 <= prefix <= 32:
        raise ValueError(f"{text!r}: prefix /{prefix} outside 0-32")
    port = int(m["port"]) if m["port"] else DEFAULT_PORT
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} outside 1-65535")
    return ip, prefix, port


def check_priority(value: int | None) -> int | None:
    if value is not None and value in FORBIDDEN_PRIORITIES:
        raise ValueError(
            f"priority {value} is reserved (1-2 life safety, 5 critical equipment, 6 minimum on/off); "
            "supervisory writes use 8 (manual operator) or 9-16"
        )
    return value


class BacnetPoint(PointBase):
    object_type: ObjectType = Field(description="BACnet object type, e.g. analog-value, binary-output")
    instance: int = Field(ge=0, le=MAX_INSTANCE, description="Object instance number")
    property: str = Field(
        default="present-value",
        pattern=r"^[a-z][a-z0-9\-]*$",
        description="Property to read, e.g. present-value",
    )
    priority: int | None = Field(
        default=None, ge=1, le=16, description="Write priority; default: the device's"
    )
    cov: bool | None = Field(
        default=None, description="Subscribe to COV for this point; default: the device's"
    )

    _check_priority = field_validator("priority")(classmethod(lambda cls, v: check_priority(v)))

    @model_validator(mode="after")
    def _check_object(self) -> BacnetPoint:
        if self.writable and self.object_type in READ_ONLY_TYPES:
            raise ValueError(f"{self.object_type} objects do not take writes; set writable: false")
        if self.writable and self.property != "present-value":
            raise ValueError("only present-value is written; set writable: false for other properties")
        return self

    def describe_address(self) -> str:
        """How the driver reads and writes the point (`check --explain-addresses`)."""
        text = f"{self.object_type},{self.instance} {self.property} read RPM"
        if self.cov is not None:
            text += ", COV" if self.cov else ", no COV"
        if self.writable:
            text += f", write priority {self.priority}" if self.priority else ", write at the device's"
        return text

    def value_kind(self) -> ValueKind:
        if self.object_type.startswith("binary-"):
            return "bool"
        return super().value_kind()


class BacnetDevice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["bacnet"]
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=64)
    name: str | None = None
    zone: str | None = Field(default=None, description="Default zone of the device's points")
    address: str = Field(description="BACnet/IP address of the device: IP[:port], port 47808 by default")
    device_instance: int = Field(ge=0, le=MAX_INSTANCE, description="Device object instance")
    interval_s: float = Field(default=10.0, gt=0, le=86400, description="Poll interval")
    timeout_s: float = Field(default=3.0, gt=0, le=60, description="Per-request timeout")
    max_rpm_properties: int = Field(
        default=20,
        ge=1,
        le=200,
        description="Property references per ReadPropertyMultiple; a present-value point uses 2 "
        "(value and status-flags), any other property 1",
    )
    use_rpm: bool = Field(
        default=True, description="Use ReadPropertyMultiple; false for devices that lack it"
    )
    write_priority: int = Field(default=8, ge=1, le=16, description="8 = manual operator (ASHRAE 135)")
    relinquish_on_shutdown: bool = Field(
        default=False,
        description="On shutdown, release (write Null at) the priorities this agent wrote, where the slot "
        "still holds the value it wrote; each release is audited",
    )
    cov: bool = Field(default=False, description="Subscribe to COV for every point (points may override)")
    cov_lifetime_s: int = Field(
        default=300, ge=10, le=86400, description="Subscription lifetime; renewed at half"
    )
    cov_confirmed: bool = Field(default=False, description="Ask for confirmed COV notifications")
    readback_delay_s: float = Field(default=0.5, ge=0, le=30, description="Wait before reading a write back")
    points: list[BacnetPoint] = Field(min_length=1)

    _check_priority = field_validator("write_priority")(classmethod(lambda cls, v: check_priority(v)))

    @field_validator("address")
    @classmethod
    def _check_address(cls, v: str) -> str:
        ip, prefix, _port = parse_address(v)
        if prefix is not None:
            raise ValueError("a device address takes no /prefix; write IP[:port]")
        if ip in ("0.0.0.0", "255.255.255.255"):
            raise ValueError(f"{ip} is not a device address")
        return v.strip()


class BacnetNetworkOptions(BaseModel):
    """The gateway's own BACnet/IP port (site.yaml top level `bacnet:`), shared by every BACnet device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    local_address: str = Field(
        default="0.0.0.0:47808",
        description="Local IP[/prefix][:port] to bind; give the prefix (e.g. 192.168.1.5/24:47808) to allow "
        "broadcast Who-Is. Must be an address of this host. On loopback use a port other than the devices'",
    )
    device_instance: int = Field(
        default=4194000,
        ge=0,
        le=MAX_INSTANCE,
        description="The agent's own device instance; unique on the network",
    )
    device_name: str = Field(default="edge-agent", min_length=1, max_length=64)
    vendor_identifier: int = Field(default=999, ge=0, le=65535, description="999: unregistered/test vendor")
    max_apdu: Literal[50, 128, 206, 480, 1024, 1476] = Field(
        default=1476, description="Largest APDU accepted"
    )
    segmentation: bool = Field(default=True, description="Accept segmented replies (large RPM answers)")
    apdu_timeout_s: float = Field(default=3.0, gt=0, le=60, description="Stack-level APDU timeout")
    apdu_retries: int = Field(
        default=0, ge=0, le=5, description="Stack-level retries; the next poll retries anyway"
    )

    @field_validator("local_address")
    @classmethod
    def _check_local(cls, v: str) -> str:
        parse_address(v)
        return v.strip()

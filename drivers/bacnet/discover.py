"""Find BACnet/IP devices and draft their `devices:` block for site.yaml.

``target`` is a device address (unicast Who-Is: works everywhere, loopback included) or ``*`` for a
global broadcast (needs a local address with a /prefix on a real or virtual LAN; broadcast does not work
on loopback). Each device's object-list, names, units, state texts and priority-array (commandable or not)
are read; the YAML names a guessed role per point for the integrator to check.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

from bacpypes3.apdu import ErrorRejectAbortNack
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import ObjectIdentifier

from drivers.bacnet.errors import kebab, request_error
from drivers.bacnet.network import BacnetNetwork
from drivers.bacnet.options import COMMANDABLE_TYPES, OBJECT_TYPES, BacnetNetworkOptions
from drivers.base import DriverError, FailureCode

__all__ = ["DiscoveredDevice", "DiscoveredObject", "discover", "render_devices_yaml"]

_VALUE_TYPES = {"analog-value", "binary-value", "multi-state-value"}
_ABBREV = {
    "analog-input": "ai",
    "analog-output": "ao",
    "analog-value": "av",
    "binary-input": "bi",
    "binary-output": "bo",
    "binary-value": "bv",
    "multi-state-input": "msi",
    "multi-state-output": "mso",
    "multi-state-value": "msv",
    "accumulator": "acc",
    "lighting-output": "lo",
    "binary-lighting-output": "blo",
}
# Writable objects whose present value is a number: the envelope writes them only between min and max.
_NUMERIC = ("analog-", "lighting-output")
_UNITS = {
    "degrees-celsius": "degC",
    "kilowatts": "kW",
    "kilowatt-hours": "kWh",
    "cubic-meters": "m3",
    "cubic-meters-per-hour": "m3/h",
    "luxes": "lx",
    "percent": "%",
    "watts": "W",
}


@dataclass
class DiscoveredObject:
    object_type: str
    instance: int
    name: str | None = None
    units: str | None = None
    states: list[str] | None = None
    commandable: bool = False


@dataclass
class DiscoveredDevice:
    address: str
    device_instance: int
    name: str | None = None
    vendor_id: int | None = None
    objects: list[DiscoveredObject] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what could not be read, with codes; never dropped


async def _rp(
    net: BacnetNetwork, addr: Address, objid: Any, prop: str, timeout: float, index: int | None = None
) -> Any:
    try:
        return await asyncio.wait_for(net.app.read_property(addr, objid, prop, index), timeout)
    except (TimeoutError, ErrorRejectAbortNack) as exc:
        raise request_error(exc, device=str(addr), what=f"{objid} {prop}", timeout_s=timeout) from None


async def _object_list(net: BacnetNetwork, addr: Address, dev: Any, timeout: float) -> list[Any]:
    try:
        return list(await _rp(net, addr, dev, "object-list", timeout))
    except DriverError as f:
        if f.code == FailureCode.TIMEOUT:
            raise
    # A device that cannot segment the whole list answers it element by element.
    n = int(await _rp(net, addr, dev, "object-list", timeout, 0))
    return [await _rp(net, addr, dev, "object-list", timeout, i) for i in range(1, n + 1)]


async def _describe(net: BacnetNetwork, addr: Address, objid: Any, timeout: float) -> DiscoveredObject | None:
    otype = kebab(objid[0])
    if otype not in OBJECT_TYPES:
        return None
    obj = DiscoveredObject(otype, int(objid[1]))
    try:
        obj.name = str(await _rp(net, addr, objid, "object-name", timeout))
    except DriverError:
        pass
    if otype.startswith(("analog-", "accumulator")):
        try:
            obj.units = kebab(await _rp(net, addr, objid, "units", timeout))
        except DriverError:
            pass
    if otype.startswith("multi-state-"):
        try:
            obj.states = [str(s) for s in await _rp(net, addr, objid, "state-text", timeout)]
        except DriverError:
            pass
    if otype in COMMANDABLE_TYPES:
        obj.commandable = True
    elif otype in _VALUE_TYPES:
        try:
            await _rp(net, addr, objid, "priority-array", timeout)
            obj.commandable = True
        except DriverError:
            obj.commandable = False
    return obj


async def discover(target: str, local: str, timeout: float = 3.0) -> list[DiscoveredDevice]:
    """Who-Is to ``target`` (an address, or ``*`` to broadcast) from ``local``; describe every answer."""
    net = BacnetNetwork(
        options=BacnetNetworkOptions(
            local_address=local, device_instance=4194301, device_name="edge-agent-discover"
        )
    )
    await net.start()
    try:
        broadcast = target.strip() in ("*", "broadcast")
        addr = None if broadcast else Address(target if ":" in target else f"{target}:47808")
        i_ams = await net.app.who_is(address=addr, timeout=max(1, round(timeout)))
        devices: list[DiscoveredDevice] = []
        seen: set[tuple[str, int]] = set()
        for iam in i_ams or []:
            dev_id = iam.iAmDeviceIdentifier
            source = iam.pduSource
            key = (str(source), int(dev_id[1]))
            if key in seen:
                continue
            seen.add(key)
            found = DiscoveredDevice(
                address=str(source), device_instance=int(dev_id[1]), vendor_id=int(iam.vendorID)
            )
            try:
                found.name = str(await _rp(net, source, dev_id, "object-name", timeout))
                for objid in await _object_list(net, source, dev_id, timeout):
                    try:
                        described = await _describe(net, source, ObjectIdentifier(objid), timeout)
                    except DriverError as f:
                        found.errors.append(f"{objid}: {f.code}")
                        continue
                    if described is not None:
                        found.objects.append(described)
            except DriverError as f:
                found.errors.append(f"{f} ({f.code})")
            devices.append(found)
        return sorted(devices, key=lambda d: d.device_instance)
    finally:
        await net.close()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-").lower() or "x"


def _guess_role(obj: DiscoveredObject) -> tuple[str, dict[int, str] | None]:
    name = (obj.name or "").lower()
    if obj.units == "degrees-celsius":
        if any(w in name for w in ("setpoint", "set point", "sp", "设定")):
            return "setpoint", None
        if "outdoor" in name or "室外" in name:
            return "outdoor_temperature", None
        return "room_temperature", None
    if obj.units in ("kilowatts", "watts"):
        return "power", None
    if obj.units == "luxes" or any(w in name for w in ("lux", "illuminance", "照度")):
        return "illuminance", None
    if obj.units == "kilowatt-hours":
        return "energy", None
    if obj.units == "cubic-meters":
        return "water_volume", None
    if obj.object_type.startswith("multi-state-") and obj.states:
        states = {i: s.lower() for i, s in enumerate(obj.states, start=1)}
        if "mode" in name and set(states.values()) <= {"off", "cool", "heat", "fan", "auto", "dry"}:
            return "ac_mode", states
        return "other", dict(enumerate(obj.states, start=1))  # the device's own state texts
    if obj.object_type == "binary-lighting-output":
        return "light_relay", None
    if obj.object_type.startswith("binary-"):
        if any(w in name for w in ("light", "lamp", "relay", "照明", "灯")):
            return "light_relay", None
        if any(w in name for w in ("on-off", "on/off", "power", "run", "开关")):
            return "ac_power", None
        if "window" in name or "窗" in name:
            return "window_contact", None
    return "other", None


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_devices_yaml(devices: list[DiscoveredDevice]) -> str:
    """A draft `devices:` block for site.yaml. Roles are guesses: check each before use."""
    lines = ["devices:"]
    for d in devices:
        dev_id = _slug(d.name or f"bacnet-{d.device_instance}")
        lines += [
            "  - protocol: bacnet",
            f"    id: {dev_id}",
            f"    name: {_q(d.name or '')}",
            f"    address: {_q(d.address)}",
            f"    device_instance: {d.device_instance}",
        ]
        for err in d.errors:
            lines.append(f"    # could not read: {err}")
        lines.append("    points:" if d.objects else "    points: []  # no supported objects found")
        for o in d.objects:
            role, states = _guess_role(o)
            lines += [
                f"      - id: {dev_id}-{_ABBREV[o.object_type]}{o.instance}",
                f"        name: {_q(o.name or '')}",
                f"        object_type: {o.object_type}",
                f"        instance: {o.instance}",
                f"        role: {role}  # guessed from name/units: check",
            ]
            if o.units in _UNITS:
                lines.append(f"        unit: {_q(_UNITS[o.units])}")
            if role in ("energy", "water_volume") or o.object_type == "accumulator":
                lines.append("        cumulative: true")
            if states:
                lines.append(
                    "        states: {" + ", ".join(f"{k}: {_q(v)}" for k, v in states.items()) + "}"
                )
            if o.commandable:
                lines.append("        writable: true  # commandable (priority-array)")
                if o.object_type.startswith(_NUMERIC) and role != "light_relay":
                    # No default range is safe: `check` refuses a writable number without both bounds.
                    low, high = ("16", "32") if o.units == "degrees-celsius" else ("<low>", "<high>")
                    lines += [
                        f"        # min: {low}  # required before the agent writes this point",
                        f"        # max: {high}",
                    ]
    return "\n".join(lines) + "\n"

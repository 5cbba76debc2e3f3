"""Protocol-neutral checks of how site.yaml's HVAC points form AC units (issue 13).

Policies decide per AC unit: the setpoint, mode and power points of one device in one zone, or of one
`ac_unit` id of the device when it carries several indoor units (a VRF or split-unit gateway). A point
that would make two units one (a second ac_mode point in the same unit) is refused here, with its place
in site.yaml, instead of letting one unit's state decide for another at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from policies.hvac import HVAC_ROLES, SERVER_ZONE_KINDS
from policies.model import Policy

__all__ = ["check_ac_units", "server_zone_warnings"]

Add = Callable[[Sequence[str | int], str], None]
Where = Callable[[Sequence[str | int]], str]


def _dict(v: object) -> Mapping[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: object) -> list[Any]:
    return v if isinstance(v, list) else []


def check_ac_units(data: Mapping[str, Any], add: Add, where: Where) -> None:
    """Refuse HVAC points that cannot be assigned to exactly one AC unit."""
    for d, device in enumerate(_list(data.get("devices"))):
        dev = _dict(device)
        did = dev.get("id") if isinstance(dev.get("id"), str) else f"devices[{d}]"
        seen: dict[tuple[object, object, object], tuple[str | int, ...]] = {}  # (zone, unit, role) -> path
        unit_zone: dict[object, tuple[object, tuple[str | int, ...]]] = {}  # ac_unit -> (zone, first path)
        for p, point in enumerate(_list(dev.get("points"))):
            pt = _dict(point)
            role = pt.get("role")
            if role not in HVAC_ROLES:
                continue
            path: tuple[str | int, ...] = ("devices", d, "points", p)
            zone = pt.get("zone") or dev.get("zone")
            unit = pt.get("ac_unit")
            if unit is not None:
                first_zone = unit_zone.setdefault(unit, (zone, path))
                if first_zone[0] != zone:
                    add(
                        [*path, "zone"],
                        f"AC unit {unit!r} of device {did} is in zone {first_zone[0]!r} at "
                        f"{where(first_zone[1])} but this point is in zone {zone!r}: one unit, one zone",
                    )
                    continue
            key = (zone, unit, role)
            if key in seen:
                name = f"AC unit {unit!r} of device {did}" if unit is not None else f"device {did}"
                add(
                    [*path, "role"],
                    f"a second {role} point for {name} in zone {zone!r} (first at {where(seen[key])}): "
                    "cannot tell which AC unit it belongs to; give each indoor unit's points their own "
                    "`ac_unit` id (e.g. ac_unit: iu1)",
                )
            else:
                seen[key] = path


def server_zone_warnings(policy: Policy, data: Mapping[str, Any], warn: Add) -> None:
    """Warn (not an error) for each server_room/data_centre zone with HVAC points about which policy.yaml
    says nothing: its units are never switched off and its setpoints not limited, which may be a surprise."""
    hv = policy.hvac
    stance = {e.zone for e in hv.exemptions} | set(hv.server_room_limits)
    with_hvac: set[object] = set()
    for device in _list(data.get("devices")):
        dev = _dict(device)
        for point in _list(dev.get("points")):
            pt = _dict(point)
            if pt.get("role") in HVAC_ROLES:
                with_hvac.add(pt.get("zone") or dev.get("zone"))
    for i, zone in enumerate(_list(data.get("zones"))):
        z = _dict(zone)
        zid, kind = z.get("id"), z.get("kind")
        if kind in SERVER_ZONE_KINDS and zid in with_hvac and zid not in stance:
            warn(
                ["zones", i, "kind"],
                f"zone {zid!r} is a {kind} with AC units and policy.yaml takes no stance on it: its "
                "units are never switched off and their setpoints are not limited. List it under "
                "hvac.server_room_limits to apply the cooling floor and heating cap, or under "
                "hvac.exemptions (with a reason) to leave it alone",
            )

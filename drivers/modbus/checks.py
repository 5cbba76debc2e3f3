"""Modbus cross-checks over a site's raw `devices:` data, run by edge_agent.config through the registry.

Two devices on one endpoint and unit id, and points whose registers overlap but decode differently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from drivers.modbus.options import ModbusDevice, ModbusPoint, ModbusRtuDevice, register_count
from drivers.spec import DeviceEntry, SiteIssues, YamlPath

__all__ = ["check_rtu_site", "check_site"]


def check_site(devices: Sequence[DeviceEntry], out: SiteIssues) -> None:
    endpoints: dict[tuple[str, int, int], YamlPath] = {}
    framers: dict[tuple[str, int], tuple[str, YamlPath]] = {}
    for entry in devices:
        _check_modbus_endpoint(out, entry.data, entry.path, endpoints)
        _check_framer(out, entry.data, entry.path, framers)
        points = [(p, pt) for p, pt in entry.points if isinstance(pt, ModbusPoint)]
        _check_modbus_overlaps(out, entry.path, points)
        _check_repeat_zones(out, entry.data, entry.path)


def _check_modbus_endpoint(
    out: SiteIssues, dev: Mapping[str, Any], dpath: YamlPath, seen: dict[tuple[str, int, int], YamlPath]
) -> None:
    host = dev.get("host")
    port = dev.get("port", ModbusDevice.model_fields["port"].default)
    unit = dev.get("unit_id", ModbusDevice.model_fields["unit_id"].default)
    if not isinstance(host, str) or not isinstance(port, int) or not isinstance(unit, int):
        return
    key = (host.strip().lower(), port, unit)
    if key in seen:
        out.add(
            [*dpath, "host"],
            f"{host}:{port} unit {unit} is already polled as {out.where(seen[key])}; "
            "two devices on one endpoint read the same registers",
        )
    else:
        seen[key] = (*dpath, "host")


def _check_framer(
    out: SiteIssues,
    dev: Mapping[str, Any],
    dpath: YamlPath,
    seen: dict[tuple[str, int], tuple[str, YamlPath]],
) -> None:
    """One TCP endpoint speaks one framing: Modbus TCP, or RTU frames to a serial device server."""
    host = dev.get("host")
    port = dev.get("port", ModbusDevice.model_fields["port"].default)
    framer = dev.get("framer", ModbusDevice.model_fields["framer"].default)
    if not isinstance(host, str) or not isinstance(port, int) or not isinstance(framer, str):
        return
    key = (host.strip().lower(), port)
    first = seen.get(key)
    if first is None:
        seen[key] = (framer, (*dpath, "framer"))
    elif first[0] != framer:
        out.add(
            [*dpath, "framer"],
            f"{host}:{port} is framed {first[0]!r} by {out.where(first[1])}; one endpoint speaks one framing",
        )


def _check_repeat_zones(out: SiteIssues, dev: Mapping[str, Any], dpath: YamlPath) -> None:
    """Each indoor unit of a `repeat:` block is an AC unit the policy decides for in its zone: one
    without a zone (its own or the device's) would be decided for with no zone's rules."""
    if isinstance(dev.get("zone"), str):
        return
    blocks = dev.get("repeat")
    for b, block in enumerate(blocks if isinstance(blocks, list) else []):
        units = block.get("units") if isinstance(block, dict) else None
        for u, unit in enumerate(units if isinstance(units, list) else []):
            if isinstance(unit, dict) and unit.get("zone") is None:
                out.add(
                    [*dpath, "repeat", b, "units", u],
                    f"zone missing: unit {unit.get('unit')!r} has no `zone:` and device {dev.get('id')!r} "
                    "none to inherit; give each unit (or the device) its zone",
                )


_ONE_REGISTER = frozenset({"int16", "uint16", "bit"})


def _layout(point: ModbusPoint) -> tuple[object, ...]:
    width = register_count(point)
    # Word order means nothing for one register; a bit of a 16-bit register agrees with the register.
    return (
        "reg16" if point.type in _ONE_REGISTER and point.type != "int16" else point.type,
        point.word_order if width > 1 else None,
        point.byte_order,
        width,
    )


def _check_modbus_overlaps(out: SiteIssues, dpath: YamlPath, points: list[tuple[int, ModbusPoint]]) -> None:
    by_table: dict[str, list[tuple[int, ModbusPoint]]] = {}
    for p, pt in points:
        if pt.table in ("holding", "input") and pt.sum_of is None:  # a sum_of point has no registers
            by_table.setdefault(pt.table, []).append((p, pt))
    for table, entries in by_table.items():
        entries.sort(key=lambda e: e[1].address)
        for a_index, (pa, a) in enumerate(entries):
            a_end = a.address + register_count(a)
            for pb, b in entries[a_index + 1 :]:
                if b.address >= a_end:
                    break
                if a.address == b.address and _layout(a) == _layout(b):
                    continue  # the same registers read the same way (e.g. two bits of one register)
                first, second = sorted(((pa, a), (pb, b)), key=lambda e: e[0])
                out.add(
                    [*dpath, "points", second[0], "address"],
                    f"{table} registers {_span(second[1])} ({_desc(second[1])}) overlap point "
                    f"{first[1].id!r} at {out.where([*dpath, 'points', first[0]])}, registers "
                    f"{_span(first[1])} ({_desc(first[1])}), decoded differently",
                )


def _span(p: ModbusPoint) -> str:
    n = register_count(p)
    return str(p.address) if n == 1 else f"{p.address}-{p.address + n - 1}"


def _desc(p: ModbusPoint) -> str:
    parts: list[str] = [p.type]
    if register_count(p) > 1:
        parts.append(f"word_order {p.word_order}")
    parts.append(f"byte_order {p.byte_order}")
    return ", ".join(parts)


def check_rtu_site(devices: Sequence[DeviceEntry], out: SiteIssues) -> None:
    """Serial buses: one unit id once per port (the port itself and its line settings, for every serial
    protocol together: edge_agent/config/load.py)."""
    units: dict[tuple[str, int], YamlPath] = {}
    for entry in devices:
        dev, dpath = entry.data, entry.path
        port = dev.get("port")
        unit = dev.get("unit_id", ModbusRtuDevice.model_fields["unit_id"].default)
        if not isinstance(port, str) or not isinstance(unit, int):
            continue
        if (port, unit) in units:
            out.add(
                [*dpath, "unit_id"],
                f"unit {unit} on {port} is already polled as {out.where(units[(port, unit)])}; "
                "two slaves with one address on a bus answer at once and garble each other",
            )
        else:
            units[(port, unit)] = (*dpath, "unit_id")
        points = [(p, pt) for p, pt in entry.points if isinstance(pt, ModbusPoint)]
        _check_modbus_overlaps(out, dpath, points)
        _check_repeat_zones(out, dev, dpath)

"""Repeated point blocks (`repeat:`): one template of points, one copy per indoor unit at a register stride.

A VRF or AC gateway serves 16-64 indoor units on one unit id, each unit's registers the same layout at
``first + index * stride``. site.yaml declares the layout once::

    repeat:
      - stride: 10
        units:
          - {unit: iu01, zone: f1}
          - {unit: iu02, zone: f2}
        points:
          - {id: setpoint, address: 102, role: setpoint, ...}

and the expansion (here, pure, on the raw YAML mapping) gives plain points: id ``{device}.{unit}.{id}``,
``ac_unit: {unit}``, the unit's zone, addresses (or refs) moved by ``index * stride``. The device model
appends them to its points, so the rest of the agent never sees a template; ``edge-agent check`` runs
the same expansion to position every problem of an expanded point at its template (or unit) line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from drivers.spec import ExpandedPoint

__all__ = ["expand_repeats", "expanded_id"]


def expanded_id(device: str, unit: str, point: str) -> str:
    """The id of template point ``point`` for indoor unit ``unit`` of ``device``."""
    return f"{device}.{unit}.{point}"


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def expand_repeats(
    device: Mapping[str, Any], template_ok: Callable[[Mapping[str, Any]], bool]
) -> list[ExpandedPoint]:
    """The points the device's `repeat:` blocks expand to, in block, unit, template order.

    Malformed parts (a block without a stride, a unit without an id, a template that does not validate
    as a point by ``template_ok``) expand to nothing: the schema reports them at their own place."""
    blocks = device.get("repeat")
    did = device.get("id")
    if not isinstance(blocks, list) or not isinstance(did, str):
        return []
    out: list[ExpandedPoint] = []
    for b, block in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        stride = _int(block.get("stride"))
        units, templates = block.get("units"), block.get("points")
        if stride is None or not isinstance(units, list) or not isinstance(templates, list):
            continue
        good = [(t, tp) for t, tp in enumerate(templates) if isinstance(tp, dict) and template_ok(tp)]
        ids = {tp.get("id") for _t, tp in good}
        for u, unit in enumerate(units):
            if not isinstance(unit, dict) or not isinstance(unit.get("unit"), str):
                continue
            index = u if unit.get("index") is None else _int(unit.get("index"))
            if index is None:
                continue
            shift = index * stride
            uid: str = unit["unit"]
            upath = ("repeat", b, "units", u)
            for t, tp in good:
                out.append(
                    ExpandedPoint(
                        data=_copy(tp, did, uid, unit, shift, ids),
                        path=("repeat", b, "points", t),
                        keys={"zone": (*upath, "zone"), "ac_unit": (*upath, "unit")},
                    )
                )
    return out


def _copy(
    tp: Mapping[str, Any], did: str, uid: str, unit: Mapping[str, Any], shift: int, ids: set[object]
) -> dict[str, Any]:
    data = {**tp, "id": expanded_id(did, uid, str(tp.get("id"))), "ac_unit": uid}
    if isinstance(unit.get("zone"), str):
        data["zone"] = unit["zone"]
    if isinstance(unit.get("name"), str):
        data["name"] = f"{unit['name']} {tp['name']}" if isinstance(tp.get("name"), str) else unit["name"]
    for key in ("address", "ref"):
        if _int(tp.get(key)) is not None:
            data[key] = tp[key] + shift
    parts = tp.get("sum_of")
    if isinstance(parts, dict):  # a sum of the same unit's points names them by template id
        data["sum_of"] = {expanded_id(did, uid, p) if p in ids else p: f for p, f in parts.items()}
    return data

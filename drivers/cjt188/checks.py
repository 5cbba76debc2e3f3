"""CJ/T 188 cross-checks over a site's devices: the bus rules every serial meter shares
(drivers.serialbus.check_meters) and each point's quantity against its meter's type, at the point's line."""

from __future__ import annotations

from collections.abc import Sequence

from drivers.cjt188.options import HEAT_ONLY, WATER_ONLY, Cjt188Point
from drivers.serialbus import check_meters
from drivers.spec import DeviceEntry, SiteIssues

__all__ = ["check_site"]


def check_site(devices: Sequence[DeviceEntry], out: SiteIssues) -> None:
    check_meters(devices, out)
    for entry in devices:
        meter_type = entry.data.get("meter_type")
        if not isinstance(meter_type, str):
            continue  # reported on meter_type by the schema
        heat = meter_type.startswith("heat")
        for index, point in entry.points:
            if not isinstance(point, Cjt188Point):
                continue
            where = [*entry.path, "points", index, "quantity"]
            if not heat and point.quantity in HEAT_ONLY:
                out.add(
                    where,
                    f"{point.quantity} is a heat meter's quantity; a {meter_type} meter sends flow and "
                    "settlement_flow",
                )
            elif heat and point.quantity in WATER_ONLY:
                out.add(where, f"a heat meter sends settlement_heat, not {point.quantity}")

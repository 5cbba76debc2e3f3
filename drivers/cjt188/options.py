"""Options an integrator writes in site.yaml for a CJ/T 188 water, gas or heat meter and its points."""

from __future__ import annotations

import typing
from typing import Literal

from pydantic import Field

from drivers.serialbus import MeterOnBus, MeterPoint

__all__ = ["HEAT_ONLY", "QUANTITIES", "WATER_ONLY", "Cjt188Device", "Cjt188Point", "MeterType", "Quantity"]

Quantity = Literal[
    "flow",
    "settlement_flow",
    "heat",
    "settlement_heat",
    "heat_power",
    "flow_rate",
    "supply_temp",
    "return_temp",
    "hours",
]
QUANTITIES: tuple[str, ...] = typing.get_args(Quantity)
# Quantities only a heat meter's 901F block carries (a water or gas meter sends flow and settlement_flow).
HEAT_ONLY = frozenset(QUANTITIES) - {"flow", "settlement_flow"}
WATER_ONLY = frozenset({"settlement_flow"})  # a heat meter's block has settlement heat, not flow
MeterType = Literal["cold_water", "hot_water", "heat", "heat_cooling", "gas"]


class Cjt188Point(MeterPoint):
    """One quantity of the meter's 901F reading (read-only)."""

    quantity: Quantity = Field(
        description=(
            "From the 901F block: flow (cumulative, m3), settlement_flow (m3 at the last settlement day); "
            "heat meters also heat and settlement_heat (kWh: MWh, GJ and MJ are converted), heat_power (kW), "
            "flow_rate (m3/h), supply_temp and return_temp (degC), hours (working hours)"
        )
    )

    def describe_address(self) -> str:
        """How the driver reads the point (`check --explain-addresses`): one 901F read serves them all."""
        return f"DI 901F {self.quantity} read C 01H"


class Cjt188Device(MeterOnBus):
    """One meter: its type and 14-digit address on a serial bus shared with the other meters on that port."""

    protocol: Literal["cjt188"]
    meter_type: MeterType = Field(
        description="cold_water (T 10), hot_water (11), heat (20), heat_cooling (21), gas (30)"
    )
    address: str = Field(
        pattern=r"^[0-9]{14}$", description="The meter's 14-digit address as printed on its plate"
    )
    di_order: Literal["high_first", "low_first"] = Field(
        default="high_first",
        description="How the meter sends DI 901F: high_first 90 1F (most meters), low_first 1F 90",
    )
    points: list[Cjt188Point] = Field(min_length=1)

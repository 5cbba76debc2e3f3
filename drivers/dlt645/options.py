"""Options an integrator writes in site.yaml for a DL/T 645-2007 meter on an RS-485 bus and its points."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drivers.dlt645.codec import DATA_IDS
from drivers.serialbus import MeterOnBus, MeterPoint

__all__ = ["Dlt645Device", "Dlt645Point"]


class Dlt645Point(MeterPoint):
    """One data identifier of the meter (read-only)."""

    di: str = Field(
        pattern=r"^[0-9A-Fa-f]{8}$",
        description=(
            "Data identifier, 8 hex digits as the standard writes it: 00010000 forward active energy (kWh), "
            "02010100 phase-A voltage (V), 02020100 phase-A current (A), 02030000 active power (kW)"
        ),
    )

    @property
    def code(self) -> int:
        return int(self.di, 16)

    def describe_address(self) -> str:
        """How the driver reads the point (`check --explain-addresses`): the DI, its value's layout."""
        spec = DATA_IDS.get(self.code)
        if spec is None:
            return f"DI {self.di.upper()} read C 11H"
        unit = f", {spec.unit}" if spec.unit else ""
        sign = ", signed" if spec.signed else ""
        return (
            f"DI {self.di.upper()} {spec.name} ({spec.size} BCD bytes, {spec.decimals} decimals{sign}{unit}) "
            "read C 11H"
        )


class Dlt645Device(MeterOnBus):
    """One meter: its address on a serial bus shared with the other meters on that port."""

    protocol: Literal["dlt645"]
    address: str = Field(
        pattern=r"^[0-9]{12}$", description="The meter's 12-digit address as printed on its plate"
    )
    points: list[Dlt645Point] = Field(min_length=1)

"""CJ/T 188's entry in drivers.registry: options models, one meter pool per site, site checks."""

from __future__ import annotations

from drivers.base import Driver, UtcClock
from drivers.cjt188.checks import check_site
from drivers.cjt188.options import Cjt188Device, Cjt188Point
from drivers.serialbus import MeterPool, meter_pool
from drivers.spec import ProtocolSpec, PushCallback

__all__ = ["SPEC"]


def _driver(device: Cjt188Device, pool: MeterPool, /, *, clock: UtcClock, on_push: PushCallback) -> Driver:
    from drivers.cjt188.driver import Cjt188Driver

    return Cjt188Driver(device=device, pool=pool, clock=clock)


SPEC = ProtocolSpec(
    name="cjt188",
    device_model=Cjt188Device,
    point_model=Cjt188Point,
    make_shared=meter_pool,
    make_driver=_driver,
    check_site=check_site,
    serial_bus="drivers.serialbus",
)

"""DL/T 645-2007's entry in drivers.registry: options models, one bus pool per site, site checks."""

from __future__ import annotations

from drivers.base import Driver, UtcClock
from drivers.dlt645.checks import check_site
from drivers.dlt645.options import Dlt645Device, Dlt645Point
from drivers.serialbus import MeterPool, meter_pool
from drivers.spec import ProtocolSpec, PushCallback

__all__ = ["SPEC"]


def _driver(device: Dlt645Device, pool: MeterPool, /, *, clock: UtcClock, on_push: PushCallback) -> Driver:
    from drivers.dlt645.driver import Dlt645Driver

    return Dlt645Driver(device=device, pool=pool, clock=clock)


SPEC = ProtocolSpec(
    name="dlt645",
    device_model=Dlt645Device,
    point_model=Dlt645Point,
    make_shared=meter_pool,
    make_driver=_driver,
    check_site=check_site,
    serial_bus="drivers.serialbus",
)

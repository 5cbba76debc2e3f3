"""CJ/T 188's entry in drivers.registry: options models, one meter pool per site, site checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.base import Driver, UtcClock
from drivers.cjt188.options import Cjt188Device, Cjt188Point
from drivers.serialbus import check_meters
from drivers.spec import ProtocolSpec, PushCallback

if TYPE_CHECKING:
    from drivers.serialbus import MeterPool

__all__ = ["SPEC"]


def _pool(options: Any, /, *, clock: UtcClock) -> MeterPool:
    from drivers.serialbus import MeterPool

    return MeterPool()


def _driver(device: Cjt188Device, pool: MeterPool, /, *, clock: UtcClock, on_push: PushCallback) -> Driver:
    from drivers.cjt188.driver import Cjt188Driver

    return Cjt188Driver(device=device, pool=pool, clock=clock)


SPEC = ProtocolSpec(
    name="cjt188",
    device_model=Cjt188Device,
    point_model=Cjt188Point,
    make_shared=_pool,
    make_driver=_driver,
    check_site=check_meters,
    serial_bus="drivers.serialbus",
)

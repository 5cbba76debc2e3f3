"""Modbus TCP's entry in drivers.registry: options models, one connection pool per site, site checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.base import Driver, UtcClock
from drivers.modbus.checks import check_site
from drivers.modbus.options import ModbusDevice, ModbusPoint
from drivers.spec import ProtocolSpec, PushCallback

if TYPE_CHECKING:
    from drivers.modbus.driver import EndpointPool

__all__ = ["SPEC"]


def _pool(options: Any, /, *, clock: UtcClock) -> EndpointPool:
    from drivers.modbus.driver import EndpointPool

    return EndpointPool()  # no site-wide options; backoff runs on the monotonic clock


def _driver(device: ModbusDevice, pool: EndpointPool, /, *, clock: UtcClock, on_push: PushCallback) -> Driver:
    from drivers.modbus.driver import ModbusTcpDriver

    return ModbusTcpDriver(device=device, pool=pool, clock=clock)  # polls only: nothing to push


SPEC = ProtocolSpec(
    name="modbus",
    device_model=ModbusDevice,
    point_model=ModbusPoint,
    make_shared=_pool,
    make_driver=_driver,
    check_site=check_site,
)

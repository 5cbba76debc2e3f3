"""Modbus's entries in drivers.registry: Modbus TCP (and RTU over TCP), and Modbus RTU on a serial port."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.base import Driver, UtcClock
from drivers.modbus.checks import check_rtu_site, check_site
from drivers.modbus.options import ModbusDevice, ModbusPoint, ModbusRtuDevice, expand_device_points
from drivers.spec import ProtocolSpec, PushCallback

if TYPE_CHECKING:
    from drivers.modbus.driver import EndpointPool

__all__ = ["SPEC", "SPEC_RTU"]


def _pool(options: Any, /, *, clock: UtcClock) -> EndpointPool:
    from drivers.modbus.driver import EndpointPool

    return EndpointPool()  # no site-wide options; backoff runs on the monotonic clock


def _driver(
    device: ModbusDevice | ModbusRtuDevice, pool: EndpointPool, /, *, clock: UtcClock, on_push: PushCallback
) -> Driver:
    from drivers.modbus.driver import ModbusTcpDriver

    return ModbusTcpDriver(device=device, pool=pool, clock=clock)  # polls only: nothing to push


SPEC = ProtocolSpec(
    name="modbus",
    device_model=ModbusDevice,
    point_model=ModbusPoint,
    make_shared=_pool,
    make_driver=_driver,
    check_site=check_site,
    expand_points=expand_device_points,
)

# One pool per site for the serial buses too: one client and one lock per port, shared by its devices.
SPEC_RTU = ProtocolSpec(
    name="modbus_rtu",
    device_model=ModbusRtuDevice,
    point_model=ModbusPoint,
    make_shared=_pool,
    make_driver=_driver,
    check_site=check_rtu_site,
    expand_points=expand_device_points,
    serial_bus="pymodbus",  # its own serial client: the port is not shared with the meter protocols
)

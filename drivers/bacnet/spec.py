"""BACnet/IP's entry in drivers.registry: options models, the gateway's own port (site.yaml `bacnet:`),
and the per-device driver with its COV notifications pushed to the agent.

bacpypes3 is imported when the first network or driver is built, not here (see __init__.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.bacnet.options import BacnetDevice, BacnetNetworkOptions, BacnetPoint
from drivers.base import Driver, UtcClock
from drivers.spec import ProtocolSpec, PushCallback

if TYPE_CHECKING:
    from drivers.bacnet.network import BacnetNetwork

__all__ = ["SPEC"]


def _network(options: BacnetNetworkOptions | None, /, *, clock: UtcClock) -> BacnetNetwork:
    from drivers.bacnet.network import BacnetNetwork

    return BacnetNetwork(options=options or BacnetNetworkOptions(), clock=clock)


def _driver(
    device: BacnetDevice, network: BacnetNetwork, /, *, clock: UtcClock, on_push: PushCallback
) -> Driver:
    from drivers.bacnet.driver import BacnetDriver

    driver = BacnetDriver(device=device, network=network, clock=clock)
    driver.on_cov = on_push  # COV notifications arrive in bacpypes3's callbacks, between polls
    return driver


SPEC = ProtocolSpec(
    name="bacnet",
    device_model=BacnetDevice,
    point_model=BacnetPoint,
    make_shared=_network,
    make_driver=_driver,
    network_key="bacnet",
    network_model=BacnetNetworkOptions,
    network_description="The gateway's own BACnet/IP port; needed when a device has protocol bacnet",
)

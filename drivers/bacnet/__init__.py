"""BACnet/IP driver on bacpypes3: options, the shared network port, the per-device driver, discovery."""

from drivers.bacnet.driver import BacnetDriver, BacnetStats
from drivers.bacnet.network import BacnetNetwork, LocalAddressError
from drivers.bacnet.options import BacnetDevice, BacnetNetworkOptions, BacnetPoint

__all__ = [
    "BacnetDevice",
    "BacnetDriver",
    "BacnetNetwork",
    "BacnetNetworkOptions",
    "BacnetPoint",
    "BacnetStats",
    "LocalAddressError",
]

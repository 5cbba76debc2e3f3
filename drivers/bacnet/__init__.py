"""BACnet/IP driver on bacpypes3: options (options.py), the shared network port (network.py), the
per-device driver (driver.py), discovery (discover.py).

Import the submodules directly: options.py must stay free of bacpypes3, which takes half a second to
import, so `edge-agent check` stays quick on a gateway.
"""

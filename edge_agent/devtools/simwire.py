"""Point a site at the bundled simulator: the demo, the benchmarks, `policy explain --sim` and tests use it.

BACnet on loopback needs one UDP port free on 127.0.0.1-5 (the simulator's devices sit at 127.0.0.2-5);
the agent binds its own port on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import socket
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel

from edge_agent.config.load import LoadedConfig

__all__ = [
    "free_tcp_port",
    "free_udp_port",
    "retarget_bacnet",
    "retarget_modbus",
    "retarget_serial",
    "retarget_to_sim",
    "simulated_site",
    "uses_bacnet",
    "uses_serial",
]
# The simulator's buses by protocol: the meter protocols share its meter bus, Modbus RTU has its own.
_SIM_BUS = {"dlt645": "meter_bus", "cjt188": "meter_bus", "modbus_rtu": "rtu_bus"}
_LOOPBACK_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")


def retarget_modbus(cfg: LoadedConfig, host: str, port: int) -> LoadedConfig:
    """The same site with every Modbus device pointed at one endpoint (the in-process simulator)."""
    from drivers.modbus.options import ModbusDevice

    devices = [
        d.model_copy(update={"host": host, "port": port}) if isinstance(d, ModbusDevice) else d
        for d in cfg.site.devices
    ]
    return dataclasses.replace(cfg, site=cfg.site.model_copy(update={"devices": devices}))


def retarget_bacnet(cfg: LoadedConfig, *, local_address: str, device_port: int) -> LoadedConfig:
    """The same site with every BACnet device moved to ``device_port`` (host kept: the simulator's
    devices sit at 127.0.0.2-.5) and the gateway's own port bound at ``local_address``."""
    from drivers.bacnet.options import BacnetDevice, BacnetNetworkOptions, parse_address

    devices = []
    for d in cfg.site.devices:
        if isinstance(d, BacnetDevice):
            ip, _prefix, _port = parse_address(d.address)
            d = d.model_copy(update={"address": f"{ip}:{device_port}"})
        devices.append(d)
    net = cfg.site.network_options("bacnet")
    if not isinstance(net, BacnetNetworkOptions):
        net = BacnetNetworkOptions()
    net = net.model_copy(update={"local_address": local_address})
    return dataclasses.replace(cfg, site=cfg.site.model_copy(update={"devices": devices, "bacnet": net}))


def uses_serial(cfg: LoadedConfig) -> bool:
    return any(d.protocol in _SIM_BUS for d in cfg.site.devices)


def retarget_serial(cfg: LoadedConfig, paths: dict[str, str]) -> LoadedConfig:
    """The same site with every serial device on the simulator's bus for its protocol (``paths``:
    meter_bus, rtu_bus -> pty path), at parity N (a pty carries none)."""
    devices = [
        cast(BaseModel, d).model_copy(update={"port": paths[_SIM_BUS[d.protocol]], "parity": "N"})
        if d.protocol in _SIM_BUS
        else d
        for d in cfg.site.devices
    ]
    return dataclasses.replace(cfg, site=cfg.site.model_copy(update={"devices": devices}))


def free_udp_port(hosts: tuple[str, ...] = _LOOPBACK_HOSTS) -> int:
    """A UDP port free on every loopback host the simulator and the agent use (BACnet needs one port on
    all of them, so port 0 does not do)."""
    for _ in range(200):
        port = random.randint(20000, 60000)
        socks: list[socket.socket] = []
        try:
            for h in hosts:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((h, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return port
    raise OSError("no free UDP port found on 127.0.0.1-5")


def uses_bacnet(cfg: LoadedConfig) -> bool:
    return any(d.protocol == "bacnet" for d in cfg.site.devices)


def retarget_to_sim(cfg: LoadedConfig, sim: Any, *, local_port: int | None = None) -> LoadedConfig:
    """Point the site at a started simulator: Modbus at its endpoint, BACnet at its device port with the
    agent bound on 127.0.0.1 (``local_port``, default: a free one), serial devices at its ptys."""
    assert sim.modbus_port is not None
    out = retarget_modbus(cfg, sim.modbus_host or "127.0.0.1", sim.modbus_port)
    if sim.bacnet is not None and uses_bacnet(cfg):
        port = local_port if local_port is not None else free_udp_port(("127.0.0.1",))
        out = retarget_bacnet(out, local_address=f"127.0.0.1:{port}", device_port=sim.bacnet.port)
    if sim.serial is not None and uses_serial(cfg):
        out = retarget_serial(out, sim.serial.paths)
    return out


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def simulated_site(cfg: LoadedConfig, at: datetime, *, seed: int = 1) -> AsyncIterator[LoadedConfig]:
    """The bundled simulator started in-process, frozen at ``at``; yields ``cfg`` pointed at it."""
    from sim.runner import Simulator

    sim = Simulator(seed=seed, start=at, speed=0.0)
    bacnet = uses_bacnet(cfg)
    # BACnet needs one fixed UDP port on 127.0.0.2-.5; pick a free one so a running demo does not collide.
    await sim.start(
        modbus_host="127.0.0.1",
        modbus_port=0,
        bacnet=bacnet,
        bacnet_port=free_udp_port() if bacnet else 47808,
        serial=uses_serial(cfg),
    )
    try:
        yield retarget_to_sim(cfg, sim)
    finally:
        await sim.stop()

"""`edge-agent policy explain`: a dry run of policy.yaml against the devices' current values.

Writes nothing. With ``--sim`` the bundled simulator (Modbus TCP and BACnet/IP) is started in-process."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.config.load import LoadedConfig
from edge_agent.core.clock import FakeClock
from edge_agent.enforce.loop import build_calendar, build_params
from edge_agent.service.agent import Agent
from policies.evaluate import explain

__all__ = [
    "explain_main",
    "free_udp_port",
    "parse_at",
    "retarget_bacnet",
    "retarget_modbus",
    "retarget_to_sim",
    "uses_bacnet",
]
_LOOPBACK_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")


def parse_at(text: str | None, tz: str) -> datetime:
    if not text:
        return datetime.now(ZoneInfo(tz))
    at = datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=ZoneInfo(tz))


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


def free_udp_port(hosts: tuple[str, ...] = _LOOPBACK_HOSTS) -> int:
    """A UDP port free on every loopback host the simulator and the agent use (BACnet needs one port on
    all of them, so port 0 does not do)."""
    import random
    import socket

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
    agent bound on 127.0.0.1 (``local_port``, default: a free one)."""
    assert sim.modbus_port is not None
    out = retarget_modbus(cfg, sim.modbus_host or "127.0.0.1", sim.modbus_port)
    if sim.bacnet is not None and uses_bacnet(cfg):
        port = local_port if local_port is not None else free_udp_port(("127.0.0.1",))
        out = retarget_bacnet(out, local_address=f"127.0.0.1:{port}", device_port=sim.bacnet.port)
    return out


async def _read_all(cfg: LoadedConfig, at: datetime) -> Agent:
    agent = Agent(config=cfg, clock=FakeClock(at))
    try:
        for rt in agent.devices.values():
            try:
                await rt.driver.connect()
            except Exception:  # shows as bad readings below
                pass
        await asyncio.gather(*(agent.poll_once(dev_id) for dev_id in agent.devices))
    finally:
        await agent.close()
    return agent


async def _snapshot(cfg: LoadedConfig, at: datetime, use_sim: bool) -> Agent:
    if not use_sim:
        return await _read_all(cfg, at)
    from sim.runner import Simulator

    sim = Simulator(seed=1, start=at, speed=0.0)
    bacnet = uses_bacnet(cfg)
    # BACnet needs one fixed UDP port on 127.0.0.2-.5; pick a free one so a running demo does not collide.
    await sim.start(
        modbus_host="127.0.0.1",
        modbus_port=0,
        bacnet=bacnet,
        bacnet_port=free_udp_port() if bacnet else 47808,
    )
    try:
        return await _read_all(retarget_to_sim(cfg, sim), at)
    finally:
        await sim.stop()


def explain_main(cfg: LoadedConfig, args: argparse.Namespace) -> int:
    site = cfg.site
    try:
        at = parse_at(args.at, site.timezone)
    except ValueError as exc:
        print(f"--at {args.at!r}: {exc}; use ISO time such as 2026-07-15T14:00", file=sys.stderr)
        return 2
    if args.zone and args.zone not in {z.id for z in site.zones}:
        print(f"--zone {args.zone!r}: no such zone in {cfg.site_path}", file=sys.stderr)
        return 2
    agent = asyncio.run(_snapshot(cfg, at, args.sim))
    calendar = build_calendar(cfg, at.year)
    lines = explain(agent.snapshot.for_policy(), at, calendar, build_params(cfg), zone=args.zone)
    bad = [e.reading for e in agent.snapshot if e.reading is not None and not e.reading.ok]
    local = at.astimezone(ZoneInfo(site.timezone))
    day = calendar.day_info(local.date())
    if args.json:
        doc: dict[str, Any] = {
            "at": local.isoformat(),
            "day": {"kind": day.kind, "name": day.name, "working": day.working},
            "source": "simulator" if args.sim else "devices",
            "unreadable_points": [{"point": r.point_id, "code": r.code} for r in bad],
            "explanations": [x.as_dict() for x in lines],
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2, default=str))
        return 0
    print(
        f"policy explain · {local:%Y-%m-%d %H:%M %Z} · {day.describe()} · "
        f"values from {'the simulator' if args.sim else 'the devices'}"
    )
    if bad:
        print(
            f"  {len(bad)} point(s) unreadable (policies leave them alone): "
            + ", ".join(f"{r.point_id} ({r.code})" for r in bad[:6])
            + (" ..." if len(bad) > 6 else "")
        )
    zone = object()
    for x in sorted(lines, key=lambda x: (x.zone or "", x.rule, x.point or "")):
        if x.zone != zone:
            zone = x.zone
            print(f"\n[{x.zone or 'site'}]")
        print(f"  {x.decision:<7} {x.rule:<32} {x.text}")
    return 0

"""`edge-agent policy explain`: a dry run of policy.yaml against the devices' current values. Writes nothing."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.clock import FakeClock
from edge_agent.config import LoadedConfig
from edge_agent.enforce import build_calendar, build_params
from edge_agent.runtime import Agent
from policies.evaluate import explain

__all__ = ["explain_main", "parse_at", "retarget_modbus"]


def parse_at(text: str | None, tz: str) -> datetime:
    if not text:
        return datetime.now(ZoneInfo(tz))
    at = datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=ZoneInfo(tz))


def retarget_modbus(cfg: LoadedConfig, host: str, port: int) -> LoadedConfig:
    """The same site with every Modbus device pointed at one endpoint (the in-process simulator)."""
    devices = [
        d.model_copy(update={"host": host, "port": port}) if d.protocol == "modbus" else d
        for d in cfg.site.devices
    ]
    return dataclasses.replace(cfg, site=cfg.site.model_copy(update={"devices": devices}))


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
    await sim.start(modbus_host="127.0.0.1", modbus_port=0)
    try:
        assert sim.modbus_port is not None
        return await _read_all(retarget_modbus(cfg, "127.0.0.1", sim.modbus_port), at)
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

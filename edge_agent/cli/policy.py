"""`edge-agent policy explain`: a dry run of policy.yaml against the devices' current values.

Writes nothing. With ``--sim`` the bundled simulator (Modbus TCP and BACnet/IP) is started in-process."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from edge_agent.cli.common import add_config, load_or_exit

if TYPE_CHECKING:  # the command's own imports wait until it runs: `edge-agent check` stays quick
    from edge_agent.config.load import LoadedConfig
    from edge_agent.service.agent import Agent

__all__ = ["explain_main", "register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "policy",
        help="policy tools: explain what the policy decides and why",
        description="Policy tools. `policy explain` is a dry run of policy.yaml on live (or simulated) "
        "readings: what each rule decides for each zone, and why; nothing is written.",
    )
    psub = p.add_subparsers(dest="policy_cmd", metavar="ACTION", required=True)
    e = psub.add_parser(
        "explain",
        help="dry run: what policy.yaml decides for each zone and rule, and why",
        description="Read every device once (or the bundled simulator with --sim), evaluate "
        "the policy at --at, and print per zone and rule what it would do and why: season, "
        "holiday or make-up working day, schedule window, exemption, rate limit. Writes nothing.",
    )
    add_config(e)
    e.add_argument(
        "--at", metavar="TIME", help="ISO time to evaluate at (default: now); site timezone if none"
    )
    e.add_argument("--zone", help="only this zone")
    e.add_argument(
        "--sim",
        action="store_true",
        help="read from the bundled simulator started in-process at --at, not the real devices",
    )
    e.add_argument("--json", action="store_true", help="JSON output")
    e.set_defaults(func=lambda args: explain_main(load_or_exit(args.config), args))


async def _snapshot(cfg: LoadedConfig, at: datetime, use_sim: bool) -> Agent:
    from edge_agent.core.clock import FakeClock
    from edge_agent.service.agent import read_once

    if not use_sim:
        return await read_once(cfg, FakeClock(at))
    from edge_agent.devtools.simwire import simulated_site

    async with simulated_site(cfg, at) as sim_cfg:
        return await read_once(sim_cfg, FakeClock(at))


def explain_main(cfg: LoadedConfig, args: argparse.Namespace) -> int:
    from edge_agent.core.clock import parse_at
    from edge_agent.enforce.loop import build_calendar, build_params
    from policies.evaluate import explain

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
    from edge_agent.config.calendarcheck import calendar_warnings

    gaps = calendar_warnings(cfg, local.date())
    if args.json:
        doc: dict[str, Any] = {
            "at": local.isoformat(),
            "day": {"kind": day.kind, "name": day.name, "working": day.working},
            "source": "simulator" if args.sim else "devices",
            "unreadable_points": [{"point": r.point_id, "code": r.code} for r in bad],
            "calendar_warnings": gaps,
            "explanations": [x.as_dict() for x in lines],
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2, default=str))
        return 0
    print(
        f"policy explain · {local:%Y-%m-%d %H:%M %Z} · {day.describe()} · "
        f"values from {'the simulator' if args.sim else 'the devices'}"
    )
    for gap in gaps:
        print(f"  warning: {gap}")
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

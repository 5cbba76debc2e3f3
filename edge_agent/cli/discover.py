"""`edge-agent discover bacnet`: find devices and print a draft `devices:` block for site.yaml."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("discover", help="find BACnet devices and print a draft devices: block")
    dsub = p.add_subparsers(dest="proto", metavar="PROTOCOL", required=True)
    d = dsub.add_parser(
        "bacnet",
        help="Who-Is, then read object lists, names and units",
        description="Send Who-Is (unicast to --target, or broadcast with --target '*' where the "
        "network allows), read each device's object list, names and units, and print a draft "
        "`devices:` block ready to paste into site.yaml.",
    )
    d.add_argument("--target", required=True, help="device address (IP[:port]) or '*' for broadcast")
    d.add_argument(
        "--local",
        default="0.0.0.0:47808",
        help="local address[/prefix]:port to bind (default the standard BACnet port 47808, where broadcast "
        "I-Am answers arrive; where the agent holds it, give another port and --target a device)",
    )
    d.add_argument("--timeout", type=float, default=3.0)
    d.set_defaults(func=_discover)


def _discover(args: argparse.Namespace) -> int:
    from drivers.bacnet.discover import discover, render_devices_yaml

    try:
        found = asyncio.run(discover(args.target, args.local, timeout=args.timeout))
    except OSError as exc:
        print(f"discover: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        code = getattr(exc, "code", type(exc).__name__)
        print(f"discover: {code}: {exc}", file=sys.stderr)
        return 1
    if not found:
        print(
            f"discover: no BACnet device answered Who-Is at {args.target} within {args.timeout:g} s",
            file=sys.stderr,
        )
        return 1
    print(
        f"# {len(found)} device(s) found; paste under `devices:` in site.yaml and review roles, zones, "
        "min/max",
        file=sys.stderr,
    )
    print(render_devices_yaml(found))
    return 0

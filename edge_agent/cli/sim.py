"""`edge-agent sim`: the bundled building simulator alone (sim/MANUAL.md is its register and object map)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sim",
        help="run the bundled building simulator (Modbus TCP + BACnet/IP) until Ctrl-C",
        description="Run the bundled simulator of a small office building: meters, AC units and lighting "
        "relays on one Modbus TCP endpoint, and AC units and lighting as BACnet/IP devices on 127.0.0.2-5 "
        "(--no-bacnet to leave them out). sim/MANUAL.md is the register and object map.",
    )
    from sim.runner import add_arguments

    add_arguments(p)
    p.set_defaults(func=_sim, sets_up_logging=True)


def _sim(args: argparse.Namespace) -> int:
    from sim.runner import run_from_args

    try:
        asyncio.run(run_from_args(args))
    except KeyboardInterrupt:
        pass
    return 0

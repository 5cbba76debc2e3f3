"""`edge-agent demo`: the bundled simulator and the agent in one process, with a live table."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from edge_agent.cli.common import add_config, load_or_exit

__all__ = ["DEMO_START", "register"]

DEMO_START = "2026-07-15T13:59:30+08:00"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="simulator + agent on the example config, with a live table",
        description="Start the bundled simulator and the agent on config/site.yaml in one "
        "process and show live readings until Ctrl-C. No outside service is needed.",
    )
    add_config(p)
    p.add_argument(
        "--duration", type=float, metavar="SECONDS", help="stop after SECONDS (non-interactive run)"
    )
    p.add_argument("--refresh", type=float, default=1.0, metavar="SECONDS", help="table refresh period")
    p.add_argument(
        "--at",
        default=DEMO_START,
        metavar="TIME",
        help=f"simulated start time (default {DEMO_START}: a July working afternoon); 'now' for today",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=300.0,
        help="simulated seconds per real second (default 300: 14:00 to 22:00 in about 100 s); 1 = real time",
    )
    p.add_argument(
        "--state-dir", metavar="DIR", help="keep the demo's state database here (default: a new temp dir)"
    )
    p.set_defaults(func=_demo, sets_up_logging=True)


def _demo(args: argparse.Namespace) -> int:
    from edge_agent.core.logs import configure_logging
    from edge_agent.devtools.demo import run_demo

    configure_logging(level="warning")
    cfg = load_or_exit(args.config)  # no ttyUSB warnings: the demo serves the buses on ptys
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(
            run_demo(
                cfg,
                at=args.at,
                speed=args.speed,
                state_dir=args.state_dir,
                refresh=args.refresh,
                duration=args.duration,
                out=sys.stdout,
                err=sys.stderr,
            )
        )
    return 0

"""`edge-agent run`: the service in the foreground, as systemd runs it."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from edge_agent.cli.common import add_config, load_or_exit

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the agent (polling, enforcement, outbox, uplink) until SIGINT/SIGTERM",
        description="Run the agent in the foreground. Under systemd it reports READY and pings "
        "the watchdog; SIGHUP reloads the configuration.",
    )
    add_config(p)
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the state database lives (overrides storage.path's "
        "directory; systemd passes /var/lib/edge-agent)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--json-logs", action="store_true", help="JSON log lines even on a terminal")
    p.set_defaults(func=_run, sets_up_logging=True)


def _run(args: argparse.Namespace) -> int:
    from edge_agent.core.logs import configure_logging
    from edge_agent.service.service import run_service

    configure_logging(level=args.log_level, json=True if args.json_logs else None)
    cfg = load_or_exit(args.config)
    return asyncio.run(run_service(cfg, state_dir=args.state_dir))

"""`edge-agent`: one entry point. Exit codes: 0 ok, 1 runtime failure or check failed, 2 bad input/usage.

Each command is a module of this package with ``register(subparsers)``; they import their heavy modules
lazily so `edge-agent check` stays quick on a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import os
import sys

from edge_agent.cli import (
    audit,
    bench,
    check,
    decode,
    demo,
    discover,
    ledger,
    meter,
    platform,
    policy,
    report,
    run,
    sim,
    status,
    tail,
)

__all__ = ["build_parser", "main"]

COMMANDS = (
    check, run, sim, demo, status, tail, decode, audit, policy, discover, report, ledger, meter, platform,
    bench,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description=(
            "Building gateway agent: polls Modbus TCP/BACnet meters, AC and lighting controllers and RS-485 "
            "meters (Modbus RTU, DL/T 645, CJ/T 188), enforces the 26 °C summer / 20 °C winter limits and "
            "lighting schedules, forwards audited readings upstream."
        ),
        epilog="Run `edge-agent demo` to see it against the bundled simulator. Exit codes: 0 ok, "
        "1 runtime failure or failed check, 2 bad input or usage.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # run and demo set up logging themselves; sim's startup lines (stdlib, INFO) are its only output
    if not getattr(args, "sets_up_logging", False):
        from edge_agent.core.logs import configure_logging

        configure_logging(level="warning")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge-agent ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0

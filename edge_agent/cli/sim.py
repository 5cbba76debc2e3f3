"""`edge-agent sim`: the bundled building simulator alone (sim/MANUAL.md is its register and object map)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sim",
        help="run the bundled building simulator (Modbus TCP + BACnet/IP, --serial RS-485) until Ctrl-C",
        description="Run the bundled simulator of a small office building: meters, AC units and lighting "
        "relays on one Modbus TCP endpoint, and AC units and lighting as BACnet/IP devices on 127.0.0.2-5 "
        "(--no-bacnet to leave them out); with --serial also the example site's two RS-485 buses on "
        "pseudo-terminals whose paths it logs (DL/T 645 and CJ/T 188 meters on one, Modbus RTU units on "
        "the other). sim/MANUAL.md is the register and object map.",
    )
    from sim.platform_server import add_platform_arguments
    from sim.runner import add_arguments

    add_arguments(p)
    add_platform_arguments(p)
    p.set_defaults(func=_sim, sets_up_logging=True)


def _sim(args: argparse.Namespace) -> int:
    from sim.runner import run_from_args

    if args.platform is not None:
        return _platform(args)
    try:
        asyncio.run(run_from_args(args))
    except KeyboardInterrupt:
        pass
    return 0


def _platform(args: argparse.Namespace) -> int:
    import sys

    from sim.platform_server import PlatformServer, options_from_args

    try:
        options = options_from_args(args)
    except (OSError, ValueError) as exc:
        print(f"sim --platform: {exc}", file=sys.stderr)
        return 2

    async def serve() -> None:
        async with PlatformServer(options) as server:
            try:
                port = await server.start(args.host, args.platform)
            except OSError as exc:
                print(
                    f"sim --platform: cannot listen on {args.host}:{args.platform}: {exc.strerror}",
                    file=sys.stderr,
                )
                raise SystemExit(1) from None
            print(
                f"platform simulator on {args.host}:{port} ({options.framing}, "
                f"AES-128-{options.cipher.upper()}, md5 {options.md5_order}); Ctrl-C stops it",
                flush=True,
            )
            await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0

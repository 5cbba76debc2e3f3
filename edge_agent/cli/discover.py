"""`edge-agent discover bacnet | dlt645 | modbus-rtu`: find devices and print a draft `devices:` block for
site.yaml (on stdout; progress and problems on stderr)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import sys
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "discover",
        help="find BACnet devices or RS-485 meters and print a draft devices: block",
        description="Find devices and print a draft `devices:` block for site.yaml on stdout (progress and "
        "problems on stderr): BACnet by Who-Is, DL/T 645 meters by the wildcard read address or given "
        "addresses, Modbus RTU units by a short-timeout scan.",
    )
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
    d.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for I-Am answers (default 3)")
    d.set_defaults(func=_discover)

    m = dsub.add_parser(
        "dlt645",
        help="DL/T 645 meter by the wildcard read address (or given addresses), then its energy",
        description="Send the DL/T 645-2007 read address (C 13H) to the wildcard address AA..AA, then read "
        "each answering meter's forward active energy, and print a draft `devices:` block. The wildcard "
        "only works with one meter on the bus: several answer at once and their replies collide. On a "
        "bus of several meters give their addresses (from the plates) with --addresses: each is asked "
        "for its energy and the ones that answer go into the draft.",
    )
    _serial_args(m, baudrate=2400, timeout=1.0)
    m.add_argument(
        "--addresses",
        metavar="ADDRS",
        help="12-digit meter addresses instead of the wildcard: 000012345678,000012345679 or a range "
        "000000000002-000000000004 (at most 256)",
    )
    m.set_defaults(func=_discover_dlt645)

    r = dsub.add_parser(
        "modbus-rtu",
        help="scan unit ids on a Modbus RTU bus",
        description="Send each unit id in --units one short request (function 03, holding register 0) and "
        "print a draft `devices:` block of the units that answered (an exception reply counts).",
    )
    _serial_args(r, baudrate=9600, timeout=0.1)
    r.add_argument("--units", default="1-247", help="unit ids: 1-247, or 1,2,10-20 (default 1-247)")
    r.set_defaults(func=_discover_rtu)


def _serial_args(p: Any, *, baudrate: int, timeout: float) -> None:
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    p.add_argument("--baud", type=int, default=baudrate, help=f"bits per second (default {baudrate})")
    p.add_argument("--parity", choices=("N", "E", "O"), default="E", help="default E (8E1)")
    p.add_argument("--stopbits", type=int, choices=(1, 2), default=1, help="default 1")
    p.add_argument(
        "--timeout", type=float, default=timeout, help=f"seconds per request (default {timeout:g})"
    )


def _discover_dlt645(args: argparse.Namespace) -> int:
    from drivers.dlt645.discover import discover, parse_addresses, render_devices_yaml

    addresses = None
    if args.addresses is not None:
        try:
            addresses = parse_addresses(args.addresses)
        except ValueError as exc:
            print(f"discover: --addresses: {exc}", file=sys.stderr)
            return 2
    try:
        found = asyncio.run(
            discover(
                args.port,
                baudrate=args.baud,
                parity=args.parity,
                stopbits=args.stopbits,
                timeout=args.timeout,
                addresses=addresses,
            )
        )
    except (OSError, ValueError) as exc:
        print(f"discover: {args.port}: {_port_error(exc)}", file=sys.stderr)
        return 1
    none = (
        f"no DL/T 645 meter answered the read address on {args.port}"
        if addresses is None
        else f"none of the {len(addresses)} address(es) answered on {args.port}"
    )
    if addresses is None and any("several meters" in p for p in found.problems):
        none += "; give the meters' addresses (from their plates) with --addresses"
    return _draft(found.problems, len(found.meters), "meter", none, render_devices_yaml(found))


def _discover_rtu(args: argparse.Namespace) -> int:
    from drivers.modbus.discover_rtu import parse_units, render_devices_yaml, scan

    try:
        units = parse_units(args.units)
    except ValueError as exc:
        print(f"discover: --units: {exc}", file=sys.stderr)
        return 2

    def progress(unit: int, found: int) -> None:
        if unit % 16 == 0 or unit == units[-1]:
            print(f"discover: unit {unit} of {units[0]}-{units[-1]}, {found} answered", file=sys.stderr)

    try:
        found = asyncio.run(
            scan(args.port, units, baudrate=args.baud, parity=args.parity, stopbits=args.stopbits,
                 timeout=args.timeout, progress=progress)
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        print(f"discover: {args.port}: {_port_error(exc)}", file=sys.stderr)
        return 1
    none = f"no unit answered on {args.port}"
    return _draft(found.problems, len(found.units), "unit", none, render_devices_yaml(found))


def _port_error(exc: Exception) -> str:
    """pyserial's text names the port and the errno twice; the reason alone, with what to do about it."""
    if not isinstance(exc, OSError) or not exc.errno:
        return str(exc)
    reason = f"cannot open the serial port: {os.strerror(exc.errno)}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        reason += " (add yourself to the port's group, usually dialout, and log in again)"
    return reason


def _draft(problems: list[str], count: int, what: str, none: str, block: str) -> int:
    for problem in problems:
        print(f"discover: {problem}", file=sys.stderr)
    if not count:
        print(f"discover: {none}", file=sys.stderr)
        return 1
    print(f"# {count} {what}(s) found; paste under `devices:` in site.yaml", file=sys.stderr)
    print(block, end="")
    return 0


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

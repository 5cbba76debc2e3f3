"""`edge-agent meter replace POINT --old-final X --new-initial Y [--at TIME]`: record a meter swap.

The ledger books the old meter up to its final reading, excludes only the jump to the new meter's first
reading (reason ``meter_replaced``, in ledger_exclusion) and takes the new reading as the baseline; the
operation is also appended to the audit chain. Run it with the agent stopped (the agent keeps the
ledger's baselines in memory). Exit codes: 0 recorded, 1 database failure, 2 bad input.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.cli.common import add_config, db_path, load_or_exit

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "meter",
        help="meter operations recorded in the ledger (replace)",
        description="Meter operations the ledger must know about to keep its totals honest.",
    )
    msub = p.add_subparsers(dest="meter_command", metavar="OPERATION", required=True)
    r = msub.add_parser(
        "replace",
        help="record a meter replacement: book the old meter to its final reading, exclude the jump",
        description="Record that the meter of POINT was replaced: its last reading OLD_FINAL is booked, "
        "the new meter starts at NEW_INITIAL; the difference is excluded (not energy) and audited. "
        "Stop the agent first.",
    )
    add_config(r)
    r.add_argument("point", metavar="POINT", help="point id of the meter (a cumulative point with a code)")
    r.add_argument("--old-final", type=float, required=True, metavar="X", help="old meter's final reading")
    r.add_argument("--new-initial", type=float, required=True, metavar="Y", help="new meter's first reading")
    r.add_argument(
        "--at",
        metavar="TIME",
        help="when the swap happened, ISO 8601 (site time zone if none given); default now. Must be after "
        "the last reading the ledger booked for the meter",
    )
    r.add_argument("--db", metavar="PATH", help="state database (default: storage.path of site.yaml)")
    r.set_defaults(func=replace_main)


def replace_main(args: argparse.Namespace) -> int:
    from edge_agent.core.clock import SystemClock
    from edge_agent.store.audit import AuditKind, AuditLog
    from edge_agent.store.db import open_state_db
    from edge_agent.store.ledger import Ledger, LedgerError

    cfg = load_or_exit(args.config)
    tz = ZoneInfo(cfg.site.timezone)
    if args.at:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            print(
                f"meter replace: --at {args.at!r} is not an ISO 8601 time (2026-03-02T09:30)", file=sys.stderr
            )
            return 2
        if at.tzinfo is None:
            at = at.replace(tzinfo=tz)
    else:
        at = SystemClock().now()
    path = db_path(args)
    if not path.exists():
        print(f"meter replace: no state database at {path} (give --db)", file=sys.stderr)
        return 2
    try:
        conn = open_state_db(path)
        try:
            ledger = Ledger.from_config(cfg, conn)
            try:
                ex = ledger.replace_meter(
                    args.point, old_final=args.old_final, new_initial=args.new_initial, at=at
                )
            except LedgerError as exc:
                print(f"meter replace: {exc}", file=sys.stderr)
                return 2
            ex_unit = ledger.meters[args.point].unit
            AuditLog(conn=conn, clock=SystemClock()).append(
                AuditKind.METER,
                subject=args.point,
                before=args.old_final,
                after=args.new_initial,
                rule="ledger.meter_replaced",
                reason=f"replaced at {at.isoformat()}; {ex.amount:+.3f} {ex_unit} excluded",
                result="recorded",
            )
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        print(f"meter replace: {path}: {exc}", file=sys.stderr)
        return 1
    unit = ledger.meters[args.point].unit
    print(
        f"{args.point}: replaced at {at.astimezone(tz).isoformat()}; old meter booked to {args.old_final:g}, "
        f"new meter from {args.new_initial:g}; {ex.amount:+.3f} {unit} excluded (not energy), audited"
    )
    return 0

"""`edge-agent meter replace|steps|confirm|book`: meter operations the ledger must know about.

``replace POINT --old-final X --new-initial Y [--at TIME]`` records a swap: the ledger books the old meter
up to its final reading, excludes only the jump to the new meter's first reading (reason
``meter_replaced``, in ledger_exclusion) and takes the new reading as the baseline.

A counter step the ledger detected by itself (the validator re-baselined it) is excluded and held as a
finding in the audit chain until an operator decides: ``steps`` lists the pending ones, ``confirm POINT
[--at TIME]`` says it was not energy (a swap, a CT ratio change: the exclusion stands), ``book POINT
[--at TIME] [--since TIME]`` says it was energy (a meter catching up): it is booked as estimated over
[since, at] and leaves the exclusions.

Each operation is appended to the audit chain (with the site's audit key when it has one). Run ``replace``
with the agent stopped (the agent keeps the ledger's baselines in memory); ``confirm`` and ``book`` move
no baseline and may run beside it. Exit codes: 0 done, 1 database failure, 2 bad input.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from edge_agent.cli.common import add_config, db_path, load_or_exit

if TYPE_CHECKING:
    from edge_agent.config.load import LoadedConfig
    from edge_agent.store.audit import AuditLog

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "meter",
        help="meter operations recorded in the ledger (replace, steps, confirm, book)",
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

    s = msub.add_parser(
        "steps",
        help="list the counter steps the ledger detected and holds as findings (pending)",
        description="List the pending step findings: counter steps the ledger excluded by itself, waiting "
        "for `meter confirm` or `meter book`.",
    )
    add_config(s)
    s.add_argument("--db", metavar="PATH", help="state database (default: storage.path of site.yaml)")
    s.set_defaults(func=steps_main)
    for name, text in (
        ("confirm", "confirm a detected step was not energy (swap, CT ratio change): the exclusion stands"),
        ("book", "book a detected step as energy after all (a meter catching up), estimated over a span"),
    ):
        c = msub.add_parser(
            name,
            help=text,
            description=text[0].upper() + text[1:] + "; audited. Moves no baseline: the agent may run.",
        )
        add_config(c)
        c.add_argument("point", metavar="POINT", help="point id of the meter")
        c.add_argument(
            "--at",
            metavar="TIME",
            help="the step's time as `meter steps` shows it, ISO 8601 (site time zone if none given); "
            "optional when the meter has one pending step",
        )
        if name == "book":
            c.add_argument(
                "--since",
                metavar="TIME",
                help="start of the span the energy is spread over (default: the reading before the step)",
            )
        c.add_argument("--db", metavar="PATH", help="state database (default: storage.path of site.yaml)")
        c.set_defaults(func=resolve_main, action=name)


def replace_main(args: argparse.Namespace) -> int:
    from edge_agent.core.clock import SystemClock
    from edge_agent.store.audit import AuditKind
    from edge_agent.store.db import open_state_db
    from edge_agent.store.ledger import Ledger, LedgerError

    cfg = load_or_exit(args.config)
    tz = ZoneInfo(cfg.site.timezone)
    try:
        at = _time_arg("replace", "--at", args.at, tz) or SystemClock().now()
    except ValueError:
        return 2
    path = _existing_db("replace", args)
    if path is None:
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
            _audit_log(cfg, conn).append(
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


def _time_arg(command: str, option: str, text: str | None, tz: ZoneInfo) -> datetime | None:
    """An ISO 8601 option in the site's time zone when it has none; prints and raises ValueError."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        print(
            f"meter {command}: {option} {text!r} is not an ISO 8601 time (2026-03-02T09:30)", file=sys.stderr
        )
        raise
    return at.replace(tzinfo=tz) if at.tzinfo is None else at


def _existing_db(command: str, args: argparse.Namespace) -> Path | None:
    path = db_path(args)
    if not path.exists():
        print(f"meter {command}: no state database at {path} (give --db)", file=sys.stderr)
        return None
    return path


def _audit_log(cfg: LoadedConfig, conn: sqlite3.Connection) -> AuditLog:
    """The audit chain as the agent writes it: keyed with the site's audit key file when it has one."""
    from edge_agent.core.clock import SystemClock
    from edge_agent.store.audit import AuditLog, load_key

    key_file = cfg.site.storage.audit_key_file
    return AuditLog(
        conn=conn, clock=SystemClock(), hmac_key=load_key(cfg.resolve(key_file)) if key_file else None
    )


def steps_main(args: argparse.Namespace) -> int:
    from edge_agent.store.db import open_state_db
    from edge_agent.store.ledger import Ledger

    cfg = load_or_exit(args.config)
    path = _existing_db("steps", args)
    if path is None:
        return 2
    try:
        conn = open_state_db(path)
        try:
            ledger = Ledger.from_config(cfg, conn)
            steps = ledger.pending_steps()
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        print(f"meter steps: {path}: {exc}", file=sys.stderr)
        return 1
    if not steps:
        print("no pending counter steps")
    for ex in steps:
        unit = ledger.meters[ex.point_id].unit if ex.point_id in ledger.meters else ""
        print(
            f"{ex.point_id}  at {ex.ts.isoformat()}  {ex.from_value:g} -> {ex.to_value:g}"
            f"  {ex.amount:.3f} {unit} excluded, pending"
            f" (meter confirm|book {ex.point_id} --at {ex.ts.isoformat()})"
        )
    return 0


def resolve_main(args: argparse.Namespace) -> int:
    from edge_agent.store.audit import AuditKind
    from edge_agent.store.db import open_state_db
    from edge_agent.store.ledger import Ledger, LedgerError

    cfg = load_or_exit(args.config)
    tz = ZoneInfo(cfg.site.timezone)
    action = args.action
    try:
        at = _time_arg(action, "--at", args.at, tz)
        since = _time_arg(action, "--since", getattr(args, "since", None), tz)
    except ValueError:
        return 2
    path = _existing_db(action, args)
    if path is None:
        return 2
    try:
        conn = open_state_db(path)
        try:
            ledger = Ledger.from_config(cfg, conn)
            if args.point not in ledger.meters:
                print(f"meter {action}: meter {args.point}: not a ledger meter", file=sys.stderr)
                return 2
            audit = _audit_log(cfg, conn)
            ledger.audit_steps(audit)  # a step found while nothing audited it (the demo, an old database)
            try:
                ex = ledger.resolve_step(args.point, action=action, at=at, since=since)
            except LedgerError as exc:
                print(f"meter {action}: {exc}", file=sys.stderr)
                return 2
            unit = ledger.meters[args.point].unit
            what = (
                "not energy: stays excluded"
                if action == "confirm"
                else f"energy: booked as estimated from {(since or ex.since or ex.ts).isoformat()}"
            )
            audit.append(
                AuditKind.METER,
                subject=args.point,
                before=ex.from_value,
                after=ex.to_value,
                rule=f"ledger.step_{ex.status}",
                reason=f"counter step at {ex.ts.isoformat()}, {ex.amount:.3f} {unit}: {what}",
                result=ex.status,
            )
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        print(f"meter {action}: {path}: {exc}", file=sys.stderr)
        return 1
    print(
        f"{args.point}: step at {ex.ts.astimezone(tz).isoformat()} ({ex.amount:+.3f} {unit}) {ex.status};"
        f" {what}; audited"
    )
    return 0

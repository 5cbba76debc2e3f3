"""`edge-agent report`: the energy analysis report of a period (HTML, CSV, JSON) from the ledger.

Exit codes: 0 written, 1 runtime failure, 2 bad input (period, format, config, database). With
``--demo`` the period is first simulated into a new database (edge_agent/devtools/report_sim.py).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.cli.common import add_config

__all__ = ["add_report_arguments", "register", "report_main"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="quarterly/annual energy analysis report (HTML, CSV, JSON)",
        description="Build the energy analysis report for a period from the ledger: totals by "
        "category and end use, same period last year, KPIs against targets, data-centre PUE, "
        "enforcement summary and data quality.",
    )
    add_config(p)
    add_report_arguments(p)
    p.set_defaults(func=report_main)


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edge-agent report` (the CLI adds -c/--config itself or lets this do it)."""
    if not any("--config" in a.option_strings for a in p._actions):
        p.add_argument("-c", "--config", default="config/site.yaml", metavar="SITE_YAML")
    p.add_argument("--period", required=True, help="2026 (year), 2026Q3 (quarter) or 2026-07 (month)")
    p.add_argument(
        "--format",
        default="html",
        help="html, csv, json, pdf (printed by headless Chromium), or several: html,csv,json,pdf",
    )
    p.add_argument(
        "--public",
        action="store_true",
        help="also write the one-page public summary (定期公示): public-<building>-<period>.html and .png "
        "(the PNG needs headless Chromium) for a lobby screen or the website",
    )
    p.add_argument(
        "--fill",
        action="store_true",
        help="history analysis: estimate missing and implausible months first (same month of the nearest "
        "year scaled by the trend, else interpolation); every estimate is marked in every output",
    )
    p.add_argument("--out", default="reports", metavar="DIR", help="output directory (default reports/)")
    p.add_argument("--db", metavar="PATH", help="state database (default: storage.path of site.yaml)")
    p.add_argument(
        "--demo",
        action="store_true",
        help="first simulate the period with the bundled building model into the database "
        "(default database reports/demo-<period>.db); deterministic for --seed",
    )
    p.add_argument("--seed", type=int, default=0, help="simulation seed for --demo (default 0)")


def report_main(args: argparse.Namespace) -> int:
    """`edge-agent report`: 0 written, 1 runtime failure, 2 bad input (period, format, config, database)."""
    from edge_agent.config.load import ConfigError, load_config
    from edge_agent.core.clock import SystemClock
    from edge_agent.report.build import build_report
    from edge_agent.report.pdf import PdfUnavailable
    from edge_agent.report.write import FORMATS, write_public, write_reports
    from edge_agent.store.audit import AuditLog
    from edge_agent.store.db import open_state_db
    from edge_agent.store.ledger import Ledger, parse_period

    try:
        period = parse_period(args.period)
    except ValueError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    formats = [f.strip().lower() for f in str(args.format).split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        unknown = ", ".join(bad) or "(none)"
        print(f"report: unknown format {unknown}; use html, csv, json or pdf", file=sys.stderr)
        return 2
    config = getattr(args, "config", None) or "config/site.yaml"
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    demo = bool(getattr(args, "demo", False))
    if args.db:
        db_path = Path(args.db)
    elif demo:
        db_path = out_dir / f"demo-{period.label}.db"
    else:
        db_path = cfg.resolve(cfg.site.storage.path)
    if demo:
        if db_path.exists():
            print(f"report: {db_path} exists; --demo writes a new database, remove it first", file=sys.stderr)
            return 2
        from edge_agent.devtools.report_sim import simulate_into  # the simulator: only for --demo

        conn = open_state_db(db_path)
        try:
            n = simulate_into(cfg, conn, period, seed=int(getattr(args, "seed", 0) or 0))
        finally:
            conn.close()
        print(f"simulated {period.label} into {db_path} ({n} readings)", file=sys.stderr)
    elif not db_path.exists():
        print(f"report: no state database at {db_path} (give --db, or --demo to simulate)", file=sys.stderr)
        return 2
    try:
        conn = open_state_db(db_path)
        try:
            ledger = Ledger.from_config(cfg, conn)
            audit = AuditLog(conn=conn, clock=SystemClock())
            start, end = period.bounds(ZoneInfo(cfg.site.timezone))
            records = [r for r in audit.records(start) if r.time < end]
            report = build_report(
                cfg=cfg,
                ledger=ledger,
                period=period,
                audit_records=records,
                fill_history=bool(getattr(args, "fill", False)),
            )
            try:
                paths = write_reports(report, ledger, out_dir, formats)
                if getattr(args, "public", False):
                    paths += write_public(report, out_dir)
            except PdfUnavailable as exc:
                print(f"report: {exc}", file=sys.stderr)
                return 1
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        print(f"report: {db_path}: {exc}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0

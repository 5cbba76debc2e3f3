"""`edge-agent ledger import|template|export`: bills and history of past years in the state database.

``import FILE.csv|FILE.xlsx...``: monthly or periodic quantities per energy type and account (columns in
edge_agent/store/history.py, written with examples by ``template``). All or nothing per file: every bad
cell is reported as FILE:ROW:COLUMN and the command exits 2 with nothing written. Re-importing the same
rows replaces them. ``export``: every entry with its provenance (file, row, import time) as CSV, in the
template's columns so the export can be imported again.
Exit codes: 0 done, 1 database failure, 2 bad input.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from datetime import date
from pathlib import Path
from typing import Any

from edge_agent.cli.common import add_config, db_path

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "ledger",
        help="bills and history: import CSV/XLSX, write the template, export",
        description="Bills, manual readings and past years' data in the statistics ledger.",
    )
    lsub = p.add_subparsers(dest="ledger_command", metavar="OPERATION", required=True)

    imp = lsub.add_parser(
        "import",
        help="import bills or history from CSV or XLSX (same rows replace, never add)",
        description="Import periodic quantities per energy type and account. Errors as FILE:ROW:COLUMN, "
        "exit 2, nothing written. Columns: `edge-agent ledger template`.",
    )
    add_config(imp)
    imp.add_argument("files", nargs="+", metavar="FILE", help="a .csv (UTF-8) or .xlsx file (first sheet)")
    imp.add_argument("--db", metavar="PATH", help="state database (default: storage.path of site.yaml)")
    imp.set_defaults(func=import_main)

    tpl = lsub.add_parser(
        "template",
        help="write the import template (columns and example rows) as CSV or XLSX",
        description="Write the import template: stdout as CSV, or -o FILE.csv / FILE.xlsx.",
    )
    tpl.add_argument("-o", "--out", metavar="FILE", help="FILE.csv or FILE.xlsx (default: CSV on stdout)")
    tpl.set_defaults(func=template_main)

    exp = lsub.add_parser(
        "export",
        help="export the imported entries with their provenance as CSV",
        description="Every entry (type, account, vehicle, period, quantity, unit, source) with the file, "
        "row and time it was imported from. Re-importable.",
    )
    add_config(exp)
    exp.add_argument("--db", metavar="PATH", help="state database (default: storage.path of site.yaml)")
    exp.add_argument("--from", dest="start", metavar="DATE", help="only entries ending after DATE")
    exp.add_argument("--to", dest="end", metavar="DATE", help="only entries starting before DATE")
    exp.add_argument("-o", "--out", metavar="FILE", help="write to FILE (default: stdout)")
    exp.set_defaults(func=export_main)


def import_main(args: argparse.Namespace) -> int:
    from edge_agent.core.clock import SystemClock
    from edge_agent.store.db import open_state_db
    from edge_agent.store.history import ImportError_, import_file

    path = db_path(args)
    bad = 0
    try:
        conn = open_state_db(path)
    except (sqlite3.Error, OSError) as exc:
        print(f"ledger import: {path}: {exc}", file=sys.stderr)
        return 1
    try:
        for name in args.files:
            try:
                res = import_file(conn, Path(name), now=SystemClock().now())
            except ImportError_ as exc:
                for e in exc.errors:
                    print(str(e), file=sys.stderr)
                print(f"{name}: not imported ({len(exc.errors)} error(s)); nothing written", file=sys.stderr)
                bad += 1
                continue
            print(f"{name}: {res.rows} rows imported ({res.added} new, {res.replaced} replaced)")
    except sqlite3.Error as exc:
        print(f"ledger import: {path}: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 2 if bad else 0


def template_main(args: argparse.Namespace) -> int:
    from edge_agent.store.history import TEMPLATE_COLUMNS, template_csv

    text = template_csv()
    if not args.out:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    if out.suffix.lower() == ".csv":
        out.write_text(text, encoding="utf-8")
    elif out.suffix.lower() == ".xlsx":
        import csv

        import openpyxl

        wb = openpyxl.Workbook()
        ws = wb.active
        assert ws is not None
        ws.title = "ledger"
        for i, row in enumerate(csv.reader(text.splitlines())):
            ws.append(
                [
                    _typed(c) if i and col == "quantity" else c
                    for col, c in zip(TEMPLATE_COLUMNS, row, strict=True)
                ]
            )
        wb.save(out)
    else:
        print(f"ledger template: {out}: give a .csv or .xlsx file name", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def _typed(cell: str) -> float | str:
    try:
        return float(cell)
    except ValueError:
        return cell


def _date(text: str | None, flag: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text if len(text) > 7 else f"{text}-01")
    except ValueError:
        print(f"ledger export: {flag} {text!r} is not a date (YYYY-MM-DD or YYYY-MM)", file=sys.stderr)
        raise SystemExit(2) from None


def export_main(args: argparse.Namespace) -> int:
    from edge_agent.store.db import open_state_db
    from edge_agent.store.history import export_csv, list_entries

    start, end = _date(args.start, "--from"), _date(args.end, "--to")
    path = db_path(args)
    if not path.exists():
        print(f"ledger export: no state database at {path} (give --db)", file=sys.stderr)
        return 2
    try:
        conn = open_state_db(path)
        try:
            text = export_csv(list_entries(conn, start=start, end=end))
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        print(f"ledger export: {path}: {exc}", file=sys.stderr)
        return 1
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0

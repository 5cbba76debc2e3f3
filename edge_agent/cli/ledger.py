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

from edge_agent.cli.common import add_config, db_path, load_or_exit

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

    ana = lsub.add_parser(
        "analysis",
        help="year-over-year and vs-baseline analysis of the imported history",
        description="Per energy type and in kgce: the year's figures by year, quarter and month against last "
        "year and a baseline year, with per-m² and per-person figures "
        "(method: edge_agent/report/analysis.py). "
        "A change is shown only between two complete periods.",
    )
    add_config(ana)
    ana.add_argument("--db", metavar="PATH", help="state database (default: storage.path of site.yaml)")
    ana.add_argument("--year", type=int, required=True, help="the year analysed, e.g. 2025")
    ana.add_argument(
        "--baseline",
        type=int,
        metavar="YEAR",
        help="baseline year, e.g. 2023 (default: ledger.baseline_year of site.yaml; 0: none)",
    )
    ana.add_argument(
        "--by", choices=("year", "quarter", "month"), default="quarter", help="granularity (default quarter)"
    )
    ana.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    ana.add_argument(
        "--fill",
        action="store_true",
        help="estimate missing months first (same month of the nearest year scaled by the trend, else "
        "interpolation); estimated figures are marked ~",
    )
    ana.set_defaults(func=analysis_main)

    frm = lsub.add_parser(
        "form",
        help="the programme's consumption form of a year (能源资源消耗统计表) as XLSX or CSV",
        description="Write the year's energy and resource consumption form from the imported history: per "
        "energy type quantity, unit, coal factor, kgce, change on last year; totals, floor area, persons, "
        "per-m² and per-person figures, water per person; fuel per official vehicle.",
    )
    add_config(frm)
    frm.add_argument("--db", metavar="PATH", help="state database (default: storage.path of site.yaml)")
    frm.add_argument("--year", type=int, required=True, help="the year of the form, e.g. 2025")
    frm.add_argument("-o", "--out", required=True, metavar="FILE", help="FILE.xlsx or FILE.csv")
    frm.add_argument(
        "--fill", action="store_true", help="estimate missing months first (marked 估算 in the form)"
    )
    frm.set_defaults(func=form_main)


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


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:+.1f}%"


def _q(v: float | None, complete: bool = True, estimated: bool = False) -> str:
    return "—" if v is None else f"{v:,.1f}" + ("" if complete else "*") + ("~" if estimated else "")


def _history(args: argparse.Namespace, command: str) -> list[Any] | int:
    """The imported entries of the state database, or an exit code after a message."""
    from edge_agent.store.db import open_state_db
    from edge_agent.store.history import list_entries

    path = db_path(args)
    if not path.exists():
        print(f"ledger {command}: no state database at {path} (give --db)", file=sys.stderr)
        return 2
    try:
        conn = open_state_db(path, readonly=True)
        try:
            return list(list_entries(conn))
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        print(f"ledger {command}: {path}: {exc}", file=sys.stderr)
        return 1


def form_main(args: argparse.Namespace) -> int:
    from edge_agent.report.analysis import analyse, fuel_density
    from edge_agent.report.form import build_form, form_csv, write_xlsx
    from edge_agent.report.kpi import coal_table

    out = Path(args.out)
    if out.suffix.lower() not in (".xlsx", ".csv"):
        print(f"ledger form: {out}: give a .xlsx or .csv file name", file=sys.stderr)
        return 2
    cfg = load_or_exit(args.config)
    entries = _history(args, "form")
    if isinstance(entries, int):
        return entries
    site = cfg.site
    factors = coal_table(site.coal_factors)
    analysis = analyse(
        entries,
        year=args.year,
        baseline_year=None,
        floor_area_m2=site.floor_area_m2,
        occupants=site.occupants,
        factors=factors,
        fill=args.fill,
        fuel_density_kg_per_l=fuel_density(site),
    )
    form = build_form(
        analysis,
        entries,
        building_id=site.building_id,
        name=site.name or site.building_id,
        factors=factors,
        persons=(site.persons.establishment, site.persons.others) if site.persons else None,
        density_source=site.ledger.fuel_density_kg_per_l.source,
    )
    try:
        if out.suffix.lower() == ".xlsx":
            write_xlsx(form, out)
        else:
            out.write_text(form_csv(form), encoding="utf-8")
    except OSError as exc:
        print(f"ledger form: {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}: {form.year}, {form.total_kgce:,.1f} kgce, {form.kgce_per_m2:.3f} kgce/m²")
    return 0


def analysis_main(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from edge_agent.report.analysis import analyse, fuel_density
    from edge_agent.report.kpi import coal_table

    cfg = load_or_exit(args.config)
    entries = _history(args, "analysis")
    if isinstance(entries, int):
        return entries
    site = cfg.site
    # as the report: site.yaml's baseline year unless one is given; 0 or the year itself is none
    baseline = site.ledger.baseline_year if args.baseline is None else args.baseline
    if baseline in (0, args.year):
        baseline = None
    result = analyse(
        entries,
        year=args.year,
        baseline_year=baseline,
        floor_area_m2=site.floor_area_m2,
        occupants=site.occupants,
        factors=coal_table(site.coal_factors),
        fill=args.fill,
        fuel_density_kg_per_l=fuel_density(site),
    )
    rows = [r for r in result.rows if r.granularity == args.by]
    if args.json:
        for r in rows:
            print(json.dumps(dataclasses.asdict(r), ensure_ascii=False))
        return 0
    base = f"{baseline}" if baseline else "baseline"
    print(
        f"{'period':<9} {'type':<12} {'unit':<5} {'this':>13} {'kgce':>12} {'last year':>13} {'change':>8} "
        f"{base:>13} {'change':>8} {'/m²':>8} {'/person':>9}"
    )
    for r in rows:
        print(
            f"{r.period:<9} {r.energy_type:<12} {r.unit:<5} "
            f"{_q(r.quantity, r.complete, 'this' in r.estimated_in):>13} {_q(r.kgce):>12} "
            f"{_q(r.last_year, r.last_year_complete, 'last_year' in r.estimated_in):>13} {_pct(r.change):>8} "
            f"{_q(r.baseline, r.baseline_complete, 'baseline' in r.estimated_in):>13} "
            f"{_pct(r.change_vs_baseline):>8} "
            f"{'' if r.per_m2 is None else f'{r.per_m2:.3f}':>8} "
            f"{'' if r.per_person is None else f'{r.per_person:.2f}':>9}"
        )
    print("* incomplete: a month without data; no change is computed against it")
    methods = sorted({m for r in rows for m in r.methods})
    if methods:
        print(f"~ includes estimated months ({', '.join(methods)}; edge_agent/report/analysis.py fill_gaps)")
    if result.left_out_of_kgce:
        print(f"not in kgce (no coal factor for the unit): {', '.join(result.left_out_of_kgce)}")
    for t, d in sorted(result.fuel_density_kg_per_l.items()):
        print(f"{t} in L converted to kg at {d:g} kg/L ({site.ledger.fuel_density_kg_per_l.source})")
    return 0

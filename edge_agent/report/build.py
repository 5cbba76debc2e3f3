"""`edge-agent report`: quarterly / annual / monthly energy analysis report (能耗分析报告) from the ledger.

``build_report`` gathers everything into one JSON-ready dict (the JSON output is exactly that dict);
the HTML (self-contained, inline SVG charts, labels Chinese first with English) and the CSV ledger
are rendered from it, so the three formats cannot disagree.

Contents: totals by category and by end-use code (the main meter split over its end-use sub-meters,
the remainder shown as unmetered), the same period last year where the ledger has it, KPIs against
the annual targets (year to the end of the period, linear projection), the data centre and its PUE,
meter balance and metering coverage, the enforcement summary read from the audit trail, and data
quality (gaps, estimated share, outliers, rollovers, resets, invalid readings).

``simulate_into`` fills a state database with a simulated period (sim/season.py) through the agent's
own path: register words as the simulator serves them -> the Modbus codec -> Validator -> Ledger.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sqlite3
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.config.codes import code_table
from edge_agent.config.load import ConfigError, LoadedConfig, load_config
from edge_agent.core.clock import SystemClock
from edge_agent.report.kpi import (
    PUE_TARGETS,
    annual_kpis,
    coal_table,
    covered_days,
    pue,
    to_kgce,
)
from edge_agent.store.audit import AuditKind, AuditLog, AuditRecord
from edge_agent.store.db import open_state_db
from edge_agent.store.ledger import Ledger, MeterTotals, Period, parse_period

__all__ = [
    "FORMATS",
    "REPORT_SCHEMA",
    "add_report_arguments",
    "build_report",
    "enforcement_summary",
    "render_csv",
    "render_html",
    "report_main",
    "simulate_into",
    "write_reports",
]

REPORT_SCHEMA = "edge-agent.report/1"
FORMATS = ("html", "csv", "json")
SETPOINT_RULES = {"hvac.summer_min_cooling": "summer_26", "hvac.winter_max_heating": "winter_20"}


# ----------------------------------------------------------------------------------------------- build


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def _meter_row(ledger: Ledger, pid: str, t: MeterTotals) -> dict[str, Any]:
    m = ledger.meters[pid]
    return {
        "point": pid,
        "name": m.name,
        "code": m.code,
        "unit": m.unit,
        "zone": m.zone,
        "institution": m.institution,
        "parent": m.parent,
        "in_tree": m.in_tree,
        "it_load": m.it_load,
        "total": _r(t.total),
        "measured": _r(t.measured),
        "estimated": _r(t.estimated),
        "outlier_kept": _r(t.outlier_kept),
        "outlier_excluded": _r(t.outlier_excluded),
        "unallocated": _r(t.unallocated),
        "slots": t.slots,
        "events": dict(sorted(t.counts.items())),
    }


def _category_totals(ledger: Ledger, totals: Mapping[str, MeterTotals]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for m in ledger.roots():
        c = out.setdefault(m.category, {"total": 0.0, "measured": 0.0, "estimated": 0.0, "outlier_kept": 0.0})
        t = totals[m.point_id]
        c["total"] += t.total
        c["measured"] += t.measured
        c["estimated"] += t.estimated
        c["outlier_kept"] += t.outlier_kept
    return out


def _units(ledger: Ledger) -> dict[str, str]:
    return {m.category: m.unit for m in ledger.roots()}


def enforcement_summary(
    records: Iterable[AuditRecord], *, cfg: LoadedConfig, period: Period
) -> dict[str, Any]:
    """What the agent did and found in the period, from the audit trail."""

    def zone_of(pid: str) -> str:
        try:
            return cfg.point_zone(pid) or "-"
        except KeyError:
            return "-"

    setpoints: dict[str, dict[str, int]] = {}
    lights: dict[str, int] = {}
    hvac_other: dict[str, int] = {}
    findings: dict[str, int] = {}
    tamper: list[dict[str, Any]] = []
    refused: dict[str, int] = {}
    failed = 0
    n = 0
    for rec in records:
        n += 1
        if rec.kind == AuditKind.WRITE:
            if rec.result not in ("ok", "relinquished"):
                failed += 1
                continue
            if rec.rule in SETPOINT_RULES:
                z = setpoints.setdefault(zone_of(rec.subject), {"summer_26": 0, "winter_20": 0})
                z[SETPOINT_RULES[rec.rule]] += 1
            elif rec.rule.startswith("lighting.") and rec.after in (False, 0):
                lights[zone_of(rec.subject)] = lights.get(zone_of(rec.subject), 0) + 1
            elif rec.rule.startswith("hvac."):
                hvac_other[rec.rule] = hvac_other.get(rec.rule, 0) + 1
        elif rec.kind == AuditKind.FINDING:
            findings[rec.result] = findings.get(rec.result, 0) + 1
            if rec.result == "tamper":
                tamper.append(
                    {"ts": rec.ts, "point": rec.subject, "zone": zone_of(rec.subject), "reason": rec.reason}
                )
        elif rec.kind == AuditKind.REFUSED:
            refused[rec.result] = refused.get(rec.result, 0) + 1
    exemptions = [
        {"zone": e.zone, "reason": e.reason, "until": e.until.isoformat() if e.until else None}
        for e in cfg.policy.hvac.exemptions
        if e.until is None or e.until >= period.start
    ]
    return {
        "records": n,
        "setpoint_corrections": [{"zone": z, **v} for z, v in sorted(setpoints.items())],
        "setpoint_corrections_total": sum(v["summer_26"] + v["winter_20"] for v in setpoints.values()),
        "lights_off": [{"zone": z, "count": c} for z, c in sorted(lights.items())],
        "lights_off_total": sum(lights.values()),
        "hvac_other": dict(sorted(hvac_other.items())),
        "findings": dict(sorted(findings.items())),
        "tamper": tamper,
        "refused": dict(sorted(refused.items())),
        "failed_writes": failed,
        "exemptions": exemptions,
    }


def build_report(
    *,
    cfg: LoadedConfig,
    ledger: Ledger,
    period: Period,
    audit_records: Iterable[AuditRecord] = (),
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    tz = ZoneInfo(cfg.site.timezone)
    start, end = period.bounds(tz)
    codes = code_table(cfg.site.energy_codes)
    factors = coal_table(cfg.site.coal_factors)
    totals = ledger.totals(start, end)
    units = _units(ledger)
    cats = _category_totals(ledger, totals)

    def label(code: str) -> dict[str, str]:
        c = codes.get(code)
        return {"zh": c.zh, "en": c.en} if c else {"zh": code, "en": code}

    # Totals by category, with standard coal
    kg = to_kgce({c: v["total"] for c, v in cats.items()}, units, factors)
    by_category = [
        {
            "code": c,
            **label(c),
            "unit": units.get(c, ""),
            **{k: _r(v) for k, v in vals.items()},
            "kgce": _r(kg.by_category.get(c)),
        }
        for c, vals in sorted(cats.items())
    ]

    # End use: each main meter split over its end-use meters; the rest is unmetered
    end_use: dict[str, float] = {}
    unmetered: dict[str, float] = {}
    coverage: list[dict[str, Any]] = []
    for root in ledger.roots():
        split = ledger.end_use_split(root.point_id, totals)
        if root.end_use:
            split = {root.code: totals[root.point_id].total}
        for code, v in split.items():
            end_use[code] = end_use.get(code, 0.0) + v
        main_total = totals[root.point_id].total
        covered = sum(split.values())
        if not root.end_use:
            unmetered[root.category] = unmetered.get(root.category, 0.0) + (main_total - covered)
            coverage.append(
                {
                    "point": root.point_id,
                    "code": root.code,
                    "main_total": _r(main_total),
                    "end_use_total": _r(covered),
                    "coverage": _r(covered / main_total if main_total > 0 else None, 4),
                }
            )
    by_end_use = []
    for code, v in sorted(end_use.items()):
        cat_total = cats.get(code[:2] + "000", {}).get("total", 0.0)
        by_end_use.append(
            {"code": code, **label(code), "unit": units.get(code[:2] + "000", ""), "total": _r(v)}
            | {"share": _r(v / cat_total if cat_total > 0 else None, 4)}
        )

    # Balance: every meter with children
    balance = []
    for pid, m in ledger.meters.items():
        kids = ledger.children(pid)
        if not kids:
            continue
        parent_total = totals[pid].total
        child_total = sum(totals[k.point_id].total for k in kids)
        balance.append(
            {
                "point": pid,
                "code": m.code,
                "children": [k.point_id for k in kids],
                "parent_total": _r(parent_total),
                "children_total": _r(child_total),
                "unmetered": _r(parent_total - child_total),
                "unmetered_share": _r(
                    (parent_total - child_total) / parent_total if parent_total else None, 4
                ),
            }
        )

    # Last year
    ly = period.last_year()
    ly_start, ly_end = ly.bounds(tz)
    ly_totals = ledger.totals(ly_start, ly_end)
    ly_cats = _category_totals(ledger, ly_totals)
    ly_rows = []
    for c, vals in sorted(cats.items()):
        prev = ly_cats.get(c, {}).get("total", 0.0)
        has = any(ly_totals[m.point_id].slots for m in ledger.roots() if m.category == c)
        ly_rows.append(
            {
                "code": c,
                **label(c),
                "this_year": _r(vals["total"]),
                "last_year": _r(prev) if has else None,
                "change": _r((vals["total"] - prev) / prev if has and prev > 0 else None, 4),
            }
        )

    # KPIs: year to the end of the period
    year = period.start.year
    y_start = datetime(year, 1, 1, tzinfo=tz).astimezone(UTC)
    ytd = ledger.totals(y_start, end)
    ytd_cats = _category_totals(ledger, ytd)
    ytd_kg = to_kgce({c: v["total"] for c, v in ytd_cats.items()}, units, factors)
    span = ledger.data_span(y_start, end)
    days = covered_days(span[0].date() if span else None, period.end, span[1].date() if span else None)
    if span is not None and span[1].time() != datetime.min.time():
        days = covered_days(span[0].date(), period.end, span[1].date() + timedelta(days=1))
    water = ytd_cats.get("02000", {}).get("total") if "02000" in ytd_cats else None
    kpis = annual_kpis(
        kgce_to_date=ytd_kg.total,
        water_m3_to_date=water,
        floor_area_m2=cfg.site.floor_area_m2,
        occupants=cfg.site.occupants,
        targets=cfg.site.targets,
        year=year,
        days_covered=days,
    )
    period_kgce = kg.total
    kpi = {
        "year": year,
        "ytd_start": date(year, 1, 1).isoformat(),
        "ytd_end": period.end.isoformat(),
        "days_covered": days,
        "projection_method": "linear by days with data: to_date x days_in_year / days_covered",
        "kgce_to_date": _r(ytd_kg.total),
        "period_kgce": _r(period_kgce),
        "period_kgce_per_m2": _r(period_kgce / cfg.site.floor_area_m2, 4),
        "period_kgce_per_person": _r(period_kgce / cfg.site.occupants, 4),
        "floor_area_m2": cfg.site.floor_area_m2,
        "occupants": cfg.site.occupants,
        "targets_source": cfg.site.targets.source if cfg.site.targets else None,
        "no_factor": kg.no_factor,
        "unit_mismatch": kg.unit_mismatch,
        "factors": [
            {"code": f.category, "zh": f.zh, "en": f.en, "unit": f.unit, "kgce_per_unit": f.kgce_per_unit}
            | {"source": f.source}
            for f in factors.values()
            if f.category in cats
        ],
        "rows": [
            {
                "key": k.key,
                "zh": k.zh,
                "en": k.en,
                "unit": k.unit,
                "to_date": _r(k.to_date, 4),
                "target": k.target,
                "share_of_target": _r(k.share_of_target, 4),
                "projection": _r(k.projection, 4),
                "projected_share": _r(k.projected_share, 4),
                "on_track": k.on_track,
            }
            for k in kpis
        ],
    }

    # Data centre: 01D1x end-use meters; PUE from the IT-load meter under one of them
    dc_meters = [m for m in ledger.meters.values() if m.code.startswith("01D1") and not m.it_load]
    dc_meters = [
        m for m in dc_meters if m.parent is None or not ledger.meters[m.parent].code.startswith("01D1")
    ]
    it_meters = [m for m in ledger.meters.values() if m.it_load]
    dc_total = sum(totals[m.point_id].total for m in dc_meters)
    it_total = sum(totals[m.point_id].total for m in it_meters)
    months: dict[str, dict[str, float]] = {}
    for b in ledger.series(start, end, "month", points=[m.point_id for m in dc_meters + it_meters]):
        key = b.start.strftime("%Y-%m")
        slot = months.setdefault(key, {"dc": 0.0, "it": 0.0})
        slot["it" if ledger.meters[b.point_id].it_load else "dc"] += b.total
    data_centre = {
        "meters": [m.point_id for m in dc_meters],
        "it_meters": [m.point_id for m in it_meters],
        "total_kwh": _r(dc_total),
        "it_kwh": _r(it_total) if it_meters else None,
        "pue": _r(pue(dc_total, it_total), 4) if it_meters else None,
        "share_of_electricity": _r(dc_total / cats["01000"]["total"], 4)
        if cats.get("01000", {}).get("total")
        else None,
        "pue_targets": dict(PUE_TARGETS),
        "monthly": [
            {"month": k, "total_kwh": _r(v["dc"]), "it_kwh": _r(v["it"]), "pue": _r(pue(v["dc"], v["it"]), 4)}
            for k, v in sorted(months.items())
        ],
    }

    # Daily series by end-use code (electricity) and daily water, for charts and the CSV
    daily: dict[str, dict[str, float]] = {}
    meters_by_code: dict[str, list[str]] = {}
    for root in ledger.roots():
        for child in _end_use_meters(ledger, root.point_id):
            meters_by_code.setdefault(child.code, []).append(child.point_id)
    code_of = {pid: code for code, pids in meters_by_code.items() for pid in pids}
    root_ids = {m.point_id for m in ledger.roots()}
    for b in ledger.series(start, end, "day"):
        d = b.start.date().isoformat()
        row = daily.setdefault(d, {})
        if b.point_id in code_of:
            row[code_of[b.point_id]] = row.get(code_of[b.point_id], 0.0) + b.total
        if b.point_id in root_ids:
            cat = ledger.meters[b.point_id].category
            row["total:" + cat] = row.get("total:" + cat, 0.0) + b.total

    # Data quality
    mt = {pid: _meter_row(ledger, pid, t) for pid, t in totals.items() if pid in ledger.meters}
    expected_slots = int((end - start).total_seconds() // 900)
    events: dict[str, int] = {}
    for t in totals.values():
        for k, v in t.counts.items():
            events[k] = events.get(k, 0) + v
    # Over every meter, so an estimated stretch on a sub-meter shows too (roots alone would hide it).
    booked = sum(t.total for pid, t in totals.items() if pid in ledger.meters)
    est = sum(t.estimated for pid, t in totals.items() if pid in ledger.meters)
    gaps = ledger.gaps(start, end)
    quality = {
        "expected_slots_per_meter": expected_slots,
        "slot_coverage": {pid: _r(t.slots / expected_slots, 4) for pid, t in sorted(totals.items())},
        "estimated_share": _r(est / booked if booked > 0 else 0.0, 6),
        "events": dict(sorted(events.items())),
        "outliers": events.get("outlier", 0),
        "outlier_energy_excluded": _r(sum(t.outlier_excluded for t in totals.values())),
        "outlier_energy_kept": _r(sum(t.outlier_kept for t in totals.values())),
        "outlier_policy": ledger.outliers,
        "max_gap_intervals": ledger.max_gap_intervals,
        "gaps_filled": sum(1 for g in gaps if g.filled),
        "gaps_unfilled": sum(1 for g in gaps if not g.filled),
        "unallocated_energy": {pid: _r(t.unallocated) for pid, t in sorted(totals.items()) if t.unallocated},
        "gaps": [
            {
                "point": g.point_id,
                "start": g.start.isoformat(),
                "end": g.end.isoformat(),
                "missing_intervals": g.missing,
                "energy": _r(g.energy),
                "filled": g.filled,
            }
            for g in gaps[:200]
        ],
    }

    site = cfg.site
    return {
        "schema": REPORT_SCHEMA,
        "generated_at": (generated_at or datetime.now(UTC)).isoformat(timespec="seconds"),
        "building": {
            "building_id": site.building_id,
            "gateway_id": site.gateway_id,
            "name": site.name,
            "timezone": site.timezone,
            "floor_area_m2": site.floor_area_m2,
            "occupants": site.occupants,
        },
        "period": {
            "label": period.label,
            "kind": period.kind,
            "start": period.start.isoformat(),
            "end": period.end.isoformat(),
            "days": period.days,
        },
        "totals": {
            "by_category": by_category,
            "kgce": _r(kg.total),
            "by_end_use": by_end_use,
            "unmetered": {c: _r(v) for c, v in sorted(unmetered.items())},
        },
        "last_year": {"period": ly.label, "by_category": ly_rows},
        "kpi": kpi,
        "data_centre": data_centre,
        "balance": balance,
        "coverage": coverage,
        "meters": [mt[pid] for pid in ledger.meters if pid in mt],
        "daily": [
            {"date": d, **{k: _r(v) for k, v in sorted(row.items())}} for d, row in sorted(daily.items())
        ],
        "enforcement": enforcement_summary(audit_records, cfg=cfg, period=period),
        "quality": quality,
    }


def _end_use_meters(ledger: Ledger, pid: str) -> list[Any]:
    root = ledger.meters[pid]
    if root.end_use:
        return [root]
    out: list[Any] = []
    for child in ledger.children(pid):
        out += [child] if child.end_use else _end_use_meters(ledger, child.point_id)
    return out


# ----------------------------------------------------------------------------------------------- CSV


def render_csv(report: Mapping[str, Any], ledger: Ledger, cfg: LoadedConfig) -> str:
    """The ledger of the period: one row per meter per local day, every column of the interval table."""
    period = parse_period(report["period"]["label"])
    start, end = period.bounds(ZoneInfo(cfg.site.timezone))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            *("date", "point", "code", "zone", "institution", "unit"),
            *("total", "measured", "estimated", "outlier_kept", "outlier_excluded"),
        ]
    )
    for b in sorted(ledger.series(start, end, "day"), key=lambda b: (b.start, b.point_id)):
        m = ledger.meters.get(b.point_id)
        if m is None:
            continue
        w.writerow(
            [b.start.date().isoformat(), b.point_id, m.code, m.zone or "", m.institution or "", m.unit]
            + [f"{x:.3f}" for x in (b.total, b.measured, b.estimated, b.outlier_kept, b.outlier_excluded)]
        )
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- main


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edge-agent report` (the CLI adds -c/--config itself or lets this do it)."""
    if not any("--config" in a.option_strings for a in p._actions):
        p.add_argument("-c", "--config", default="config/site.yaml", metavar="SITE_YAML")
    p.add_argument("--period", required=True, help="2026 (year), 2026Q3 (quarter) or 2026-07 (month)")
    p.add_argument("--format", default="html", help="html, csv, json, or several: html,csv,json")
    p.add_argument("--out", default="reports", metavar="DIR", help="output directory (default reports/)")
    p.add_argument("--db", metavar="PATH", help="state database (default: storage.path of site.yaml)")
    p.add_argument(
        "--demo",
        action="store_true",
        help="first simulate the period with the bundled building model into the database "
        "(default database reports/demo-<period>.db); deterministic for --seed",
    )
    p.add_argument("--seed", type=int, default=0, help="simulation seed for --demo (default 0)")


def write_reports(
    report: Mapping[str, Any], ledger: Ledger, cfg: LoadedConfig, out_dir: Path, formats: Sequence[str]
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"report-{report['building']['building_id']}-{report['period']['label']}"
    written: list[Path] = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        if fmt == "json":
            text = json.dumps(report, ensure_ascii=False, indent=1) + "\n"
        elif fmt == "csv":
            text = render_csv(report, ledger, cfg)
        else:
            from edge_agent.report.html import render_html

            text = render_html(report)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def render_html(report: Mapping[str, Any]) -> str:
    from edge_agent.report.html import render_html as _render

    return _render(report)


def report_main(args: argparse.Namespace) -> int:
    """`edge-agent report`: 0 written, 1 runtime failure, 2 bad input (period, format, config, database)."""
    try:
        period = parse_period(args.period)
    except ValueError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    formats = [f.strip().lower() for f in str(args.format).split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        print(f"report: unknown format {', '.join(bad) or '(none)'}; use html, csv or json", file=sys.stderr)
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
            tz = ZoneInfo(cfg.site.timezone)
            start, end = period.bounds(tz)
            records = [r for r in audit.records(start) if r.time < end]
            report = build_report(cfg=cfg, ledger=ledger, period=period, audit_records=records)
            paths = write_reports(report, ledger, cfg, out_dir, formats)
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        print(f"report: {db_path}: {exc}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0


# ----------------------------------------------------------------------------------------------- demo data


def simulate_into(
    cfg: LoadedConfig,
    conn: sqlite3.Connection,
    period: Period,
    *,
    seed: int = 0,
    step_s: float = 900.0,
    substep_s: float = 900.0,
) -> int:
    """Simulate ``period`` with the bundled building model and book it in the ledger. Returns readings.

    Each step takes the register words the simulator would serve for every Modbus meter point of
    ``cfg`` (unit id and address matched against sim.modbus_map.REGISTER_MAP), decodes them with the
    agent's codec, validates them and ingests them: the agent's path without the sockets. Meter points
    the simulator does not serve are skipped.
    """
    from drivers.base import Quality, Reading
    from drivers.modbus.codec import decode
    from drivers.modbus.options import ModbusDevice, ModbusPoint
    from edge_agent.core.validate import Validator
    from sim.modbus_map import REGISTER_MAP
    from sim.season import season

    tz = ZoneInfo(cfg.site.timezone)
    start, end = period.bounds(tz)
    regs = {(r.unit, r.table, r.address): r for r in REGISTER_MAP}
    plan: list[tuple[ModbusPoint, Any]] = []
    for dev in cfg.site.devices:
        if not isinstance(dev, ModbusDevice):
            continue
        for p in dev.points:
            if isinstance(p, ModbusPoint) and p.cumulative and p.energy_code:
                reg = regs.get((dev.unit_id, p.table, p.address))
                if reg is not None:
                    plan.append((p, reg))
    ledger = Ledger.from_config(cfg, conn)
    validator = Validator(points=[p for p, _ in plan])
    n = 0
    batch: list[Any] = []
    for b in season(start=start, end=end, seed=seed, step_s=step_s, substep_s=substep_s):
        ts = b.now.astimezone(UTC)
        for p, reg in plan:
            words = [int(w) for w in reg.raw(b)]
            batch.append(validator.validate(Reading(p.id, decode(words, p), ts, Quality.GOOD)))
        if len(batch) >= 2000:
            ledger.ingest(batch)
            n += len(batch)
            batch = []
    ledger.ingest(batch)
    return n + len(batch)

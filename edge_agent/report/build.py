"""The energy analysis report (能耗分析报告) of a period, built from the ledger and the audit trail.

``build_report`` returns a typed ``Report`` (report/model.py), one small function per section; the HTML
(report/html.py), the CSV (report/csv.py) and the JSON (``Report.to_json``) are rendered from it, so the
formats cannot disagree. The KPI arithmetic (standard coal, per m², per person, water per person,
projection, PUE) is report/kpi.py's; this module gathers the quantities and rounds the figures.

Contents: totals by category and by end-use code (the main meter split over its end-use sub-meters,
the remainder shown as unmetered), the same period last year where the ledger has it, KPIs against
the annual targets (year to the end of the period, linear projection), the data centre and its PUE,
meter balance and metering coverage, the enforcement summary read from the audit trail, and data
quality (gaps, estimated share, outliers, rollovers, resets, invalid readings). With imported history
(``edge-agent ledger import``) or whole months of meter data: the history analysis (year over year and
against ``ledger.baseline_year``, report/analysis.py); an annual report also gets the data section of the
annual work summary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal, overload
from zoneinfo import ZoneInfo

from edge_agent.config.codes import EnergyCode, code_table
from edge_agent.config.load import LoadedConfig
from edge_agent.report.analysis import analyse, fuel_density, to_factor_unit, to_history_unit
from edge_agent.report.form import ENERGY_ZH
from edge_agent.report.kpi import (
    PROJECTION_METHOD,
    PUE_TARGETS,
    CoalFactorRow,
    KgceResult,
    annual_kpis,
    coal_table,
    days_with_data,
    kgce_per_m2,
    per_person,
    pue,
    to_kgce,
)
from edge_agent.report.model import (
    Balance,
    Building,
    CategoryTotal,
    CoalFactor,
    Coverage,
    DailyRow,
    DataCentre,
    DataCentreMonth,
    DataQuality,
    EndUseTotal,
    Enforcement,
    Exemption,
    Gap,
    History,
    HistoryRow,
    KpiFigure,
    Kpis,
    LastYear,
    LeftOut,
    LightsOff,
    Measure,
    MeterFigures,
    PueTargets,
    Report,
    ReportPeriod,
    SetpointCorrections,
    SourceRow,
    Sources,
    StepFinding,
    TamperFinding,
    TargetRow,
    Totals,
    UnitQuality,
    WorkSummary,
    YearOnYear,
)
from edge_agent.store.audit import AuditKind, AuditRecord
from edge_agent.store.history import (
    CATEGORY_OF,
    HistoryEntry,
    SourceSum,
    list_entries,
    source_sums,
)
from edge_agent.store.ledger import Ledger, MeterInfo, MeterTotals, Period

__all__ = ["build_report", "enforcement_summary"]

SETPOINT_RULES = {"hvac.summer_min_cooling": "summer_26", "hvac.winter_max_heating": "winter_20"}
MAX_GAPS_LISTED = 200


@overload
def _r(x: float, nd: int = 3) -> float: ...
@overload
def _r(x: float | None, nd: int = 3) -> float | None: ...
def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


# Per category: the main meters' measured, estimated and kept-outlier energy and their total.
_CategorySums = dict[str, dict[str, float]]


def _category_totals(ledger: Ledger, totals: Mapping[str, MeterTotals]) -> _CategorySums:
    out: _CategorySums = {}
    for m in ledger.roots():
        c = out.setdefault(m.category, {"total": 0.0, "measured": 0.0, "estimated": 0.0, "outlier_kept": 0.0})
        t = totals[m.point_id]
        c["total"] += t.total
        c["measured"] += t.measured
        c["estimated"] += t.estimated
        c["outlier_kept"] += t.outlier_kept
    return out


@dataclass(frozen=True, slots=True)
class _Inputs:
    """What every section reads: the configuration, the ledger and the period's totals."""

    cfg: LoadedConfig
    ledger: Ledger
    period: Period
    tz: ZoneInfo
    start: datetime  # UTC bounds of the period
    end: datetime
    codes: Mapping[str, EnergyCode]
    factors: Mapping[str, CoalFactorRow]
    totals: Mapping[str, MeterTotals]  # per meter over the period
    units: Mapping[str, str]  # category code -> ledger unit
    cats: _CategorySums  # what the statistics use: meters, or bills where ledger.statistics_source says
    meter_cats: _CategorySums  # the meters' own sums
    meter_coverage: Mapping[str, float]  # category -> share of the period its least-covered main meter booked
    bills: Mapping[str, SourceSum]  # imported bills over the period, per category
    density: Mapping[str, float]  # kg/L of fuel entered in litres, by energy type

    def label(self, code: str) -> tuple[str, str]:
        c = self.codes.get(code)
        return (c.zh, c.en) if c else (code, code)

    def kgce(self, cats: _CategorySums) -> KgceResult:
        """Standard coal of the category sums; bills of heat in GJ and fuel in litres are converted to their
        factor's unit first (``to_factor_unit``)."""
        qty: dict[str, float] = {}
        units: dict[str, str] = {}
        for c, v in cats.items():
            unit, mult = (
                to_factor_unit(c, self.units[c], self.factors, self.density) if c in self.units else ("", 1.0)
            )
            qty[c] = v["total"] * mult
            if unit:
                units[c] = unit
        return to_kgce(qty, units, self.factors)


def build_report(
    *,
    cfg: LoadedConfig,
    ledger: Ledger,
    period: Period,
    audit_records: Iterable[AuditRecord] = (),
    generated_at: datetime | None = None,
    fill_history: bool = False,
) -> Report:
    """The report of ``period``; ``fill_history`` estimates missing and implausible months of the history
    analysis first (analysis.fill_gaps), each estimate marked in every output."""
    records = list(audit_records)
    tz = ZoneInfo(cfg.site.timezone)
    start, end = period.bounds(tz)
    totals = ledger.totals(start, end)
    units = {m.category: m.unit for m in ledger.roots()}
    meter_cats = _category_totals(ledger, totals)
    coverage_of = _meter_coverage(ledger, totals, start, end)
    bills = source_sums(ledger.conn, period.start, period.end)
    for c, b in bills.items():
        units.setdefault(c, b.unit)
    inp = _Inputs(
        cfg=cfg,
        ledger=ledger,
        period=period,
        tz=tz,
        start=start,
        end=end,
        codes=code_table(cfg.site.energy_codes),
        factors=coal_table(cfg.site.coal_factors),
        totals=totals,
        units=units,
        cats=_statistics(cfg, meter_cats, bills, units, coverage_of),
        meter_cats=meter_cats,
        meter_coverage=coverage_of,
        bills=bills,
        density=fuel_density(cfg.site),
    )
    kg = inp.kgce(inp.cats)
    by_end_use, unmetered, coverage = _end_use(inp)
    kpis = _kpis(inp, kg)
    history = _history(inp, fill_history)
    return Report(
        generated_at=generated_at or datetime.now(UTC),
        building=_building(cfg),
        period=ReportPeriod(
            label=period.label, kind=period.kind, start=period.start, end=period.end, days=period.days
        ),
        totals=Totals(
            by_category=_by_category(inp, kg),
            kgce=_r(kg.total),
            left_out=tuple(
                LeftOut(
                    code=c,
                    zh=inp.label(c)[0],
                    en=inp.label(c)[1],
                    quantity=_r(inp.cats[c]["total"]),  # in its own unit, as entered
                    unit=inp.units.get(c, ""),
                    reason="no_factor" if c in kg.no_factor else "unit_mismatch",
                )
                for c in kg.left_out
            ),
            by_end_use=by_end_use,
            unmetered=unmetered,
        ),
        last_year=_last_year(inp),
        kpi=kpis,
        data_centre=_data_centre(inp),
        balance=_balance(inp),
        coverage=coverage,
        meters=_meters(inp),
        daily=_daily(inp),
        enforcement=enforcement_summary(records, cfg=cfg, period=period),
        quality=_quality(inp),
        sources=_sources(inp),
        history=history,
        work_summary=_work_summary(inp, kpis, history, records) if period.kind == "year" else None,
    )


# A category's meters stand for the period only when every main meter of it booked (measured or
# estimated) nearly all of the period's 15-minute slots; otherwise a bill for the period is the better figure.
METER_COVERAGE_MIN = 0.95


def _meter_coverage(
    ledger: Ledger, totals: Mapping[str, MeterTotals], start: datetime, end: datetime
) -> dict[str, float]:
    expected = max(1, round((end - start).total_seconds() / 900))
    out: dict[str, float] = {}
    for m in ledger.roots():
        share = min(1.0, totals[m.point_id].slots / expected)
        out[m.category] = min(out.get(m.category, 1.0), share)
    return out


def _bill_wins(
    cfg: LoadedConfig, code: str, meter_cats: Mapping[str, object], coverage: Mapping[str, float]
) -> bool:
    return (
        code not in meter_cats
        or cfg.site.ledger.statistics_source == "bill"
        or coverage.get(code, 0.0) < METER_COVERAGE_MIN
    )


def _statistics(
    cfg: LoadedConfig,
    meter_cats: _CategorySums,
    bills: Mapping[str, SourceSum],
    units: Mapping[str, str],
    coverage: Mapping[str, float],
) -> _CategorySums:
    """The category sums the statistics use: a category's bills replace its meters where
    ``ledger.statistics_source: bill`` says so, where it has no meter, or where its meters booked less than
    METER_COVERAGE_MIN of the period (a gateway installed mid-year must not report the bills' year as the
    meters' few months) - each only when the units agree."""
    out = {c: dict(v) for c, v in meter_cats.items()}
    for c, b in bills.items():
        if units.get(c, b.unit) != b.unit:
            continue
        if _bill_wins(cfg, c, meter_cats, coverage):
            out[c] = {"total": b.quantity, "measured": b.quantity, "estimated": 0.0, "outlier_kept": 0.0}
    return out


def _sources(inp: _Inputs) -> Sources:
    """Meters and bills side by side for every category with a bill in the period."""
    rows = []
    for c, b in sorted(inp.bills.items()):
        meter = inp.meter_cats[c]["total"] if c in inp.meter_cats else None
        zh, en = inp.label(c)
        bill_wins = _bill_wins(inp.cfg, c, inp.meter_cats, inp.meter_coverage)
        used: Literal["meter", "bill"] = "bill" if bill_wins and inp.units.get(c) == b.unit else "meter"
        rows.append(
            SourceRow(
                code=c,
                zh=zh,
                en=en,
                unit=b.unit,
                meter=_r(meter),
                bill=_r(b.quantity),
                bill_entries=b.entries,
                difference=_r(meter - b.quantity) if meter is not None else None,
                difference_share=_r((meter - b.quantity) / b.quantity, 4)
                if meter is not None and b.quantity > 0
                else None,
                used=used,
                meter_coverage=_r(inp.meter_coverage[c], 4) if c in inp.meter_coverage else None,
            )
        )
    return Sources(statistics_source=inp.cfg.site.ledger.statistics_source, rows=tuple(rows))


def _building(cfg: LoadedConfig) -> Building:
    site = cfg.site
    return Building(
        building_id=site.building_id,
        gateway_id=site.gateway_id,
        name=site.name,
        timezone=site.timezone,
        floor_area_m2=site.floor_area_m2,
        occupants=site.occupants,
        establishment=site.persons.establishment if site.persons else None,
        others=site.persons.others if site.persons else None,
    )


# ----------------------------------------------------------------------------------------------- totals


def _by_category(inp: _Inputs, kg: KgceResult) -> tuple[CategoryTotal, ...]:
    """Totals by category, with standard coal."""
    rows = []
    for c, vals in sorted(inp.cats.items()):
        zh, en = inp.label(c)
        rows.append(
            CategoryTotal(
                code=c,
                zh=zh,
                en=en,
                unit=inp.units.get(c, ""),
                total=_r(vals["total"]),
                measured=_r(vals["measured"]),
                estimated=_r(vals["estimated"]),
                outlier_kept=_r(vals["outlier_kept"]),
                kgce=_r(kg.by_category.get(c)),
            )
        )
    return tuple(rows)


def _end_use(inp: _Inputs) -> tuple[tuple[EndUseTotal, ...], dict[str, float], tuple[Coverage, ...]]:
    """Each main meter split over its end-use meters; the rest is unmetered. And how much is covered."""
    ledger, totals = inp.ledger, inp.totals
    end_use: dict[str, float] = {}
    unmetered: dict[str, float] = {}
    coverage: list[Coverage] = []
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
                Coverage(
                    point=root.point_id,
                    code=root.code,
                    main_total=_r(main_total),
                    end_use_total=_r(covered),
                    coverage=_r(covered / main_total if main_total > 0 else None, 4),
                )
            )
    rows = []
    for code, v in sorted(end_use.items()):
        category = code[:2] + "000"
        cat_total = inp.cats.get(category, {}).get("total", 0.0)
        zh, en = inp.label(code)
        rows.append(
            EndUseTotal(
                code=code,
                zh=zh,
                en=en,
                unit=inp.units.get(category, ""),
                total=_r(v),
                share=_r(v / cat_total if cat_total > 0 else None, 4),
            )
        )
    return tuple(rows), {c: _r(v) for c, v in sorted(unmetered.items())}, tuple(coverage)


def _last_year(inp: _Inputs) -> LastYear:
    """The same period last year, by category, where the ledger has data for it."""
    ledger = inp.ledger
    ly = inp.period.last_year()
    ly_bounds = ly.bounds(inp.tz)
    ly_totals = ledger.totals(*ly_bounds)
    ly_bills = source_sums(ledger.conn, ly.start, ly.end)
    ly_cats = _statistics(
        inp.cfg,
        _category_totals(ledger, ly_totals),
        ly_bills,
        inp.units,
        _meter_coverage(ledger, ly_totals, *ly_bounds),
    )
    rows = []
    for c, vals in sorted(inp.cats.items()):
        prev = ly_cats.get(c, {}).get("total", 0.0)
        has = c in ly_bills or any(ly_totals[m.point_id].slots for m in ledger.roots() if m.category == c)
        zh, en = inp.label(c)
        rows.append(
            YearOnYear(
                code=c,
                zh=zh,
                en=en,
                this_year=_r(vals["total"]),
                last_year=_r(prev) if has else None,
                change=_r((vals["total"] - prev) / prev if has and prev > 0 else None, 4),
            )
        )
    return LastYear(period=ly.label, by_category=tuple(rows))


# ----------------------------------------------------------------------------------------------- KPIs


def _kpis(inp: _Inputs, period_kg: KgceResult) -> Kpis:
    """The checklist KPIs for the year to the end of the period, and the period's own intensities."""
    site, ledger = inp.cfg.site, inp.ledger
    year = inp.period.start.year
    y_start = datetime(year, 1, 1, tzinfo=inp.tz).astimezone(UTC)
    ytd_bills = source_sums(ledger.conn, date(year, 1, 1), inp.period.end)
    ytd_totals = ledger.totals(y_start, inp.end)
    ytd_cats = _statistics(
        inp.cfg,
        _category_totals(ledger, ytd_totals),
        ytd_bills,
        inp.units,
        _meter_coverage(ledger, ytd_totals, y_start, inp.end),
    )
    ytd_kg = inp.kgce(ytd_cats)
    days = days_with_data(ledger.data_span(y_start, inp.end), inp.period.end)
    rows = annual_kpis(
        kgce_to_date=ytd_kg.total,
        water_m3_to_date=ytd_cats["02000"]["total"] if "02000" in ytd_cats else None,
        floor_area_m2=site.floor_area_m2,
        occupants=site.occupants,
        targets=site.targets,
        year=year,
        days_covered=days,
    )
    return Kpis(
        year=year,
        ytd_start=date(year, 1, 1),
        ytd_end=inp.period.end,
        days_covered=days,
        projection_method=PROJECTION_METHOD,
        kgce_to_date=_r(ytd_kg.total),
        period_kgce=_r(period_kg.total),
        period_kgce_per_m2=_r(kgce_per_m2(period_kg.total, site.floor_area_m2), 4),
        period_kgce_per_person=_r(per_person(period_kg.total, site.occupants), 4),
        floor_area_m2=site.floor_area_m2,
        occupants=site.occupants,
        targets_source=site.targets.source if site.targets else None,
        no_factor=tuple(period_kg.no_factor),
        unit_mismatch=tuple(period_kg.unit_mismatch),
        factors=tuple(
            CoalFactor(
                code=f.category,
                zh=f.zh,
                en=f.en,
                unit=f.unit,
                kgce_per_unit=f.kgce_per_unit,
                source=f.source,
                edition=f.edition,
            )
            for f in inp.factors.values()
            if f.category in inp.cats
        ),
        rows=tuple(
            KpiFigure(
                key=k.key,
                zh=k.zh,
                en=k.en,
                unit=k.unit,
                to_date=_r(k.to_date, 4),
                target=k.target,
                share_of_target=_r(k.share_of_target, 4),
                projection=_r(k.projection, 4),
                projected_share=_r(k.projected_share, 4),
                on_track=k.on_track,
            )
            for k in rows
        ),
    )


def _data_centre(inp: _Inputs) -> DataCentre:
    """The 01D1x end-use meters (not one under another) and PUE from the IT-load meters."""
    ledger, totals = inp.ledger, inp.totals
    dc_meters = [m for m in ledger.meters.values() if m.code.startswith("01D1") and not m.it_load]
    dc_meters = [
        m for m in dc_meters if m.parent is None or not ledger.meters[m.parent].code.startswith("01D1")
    ]
    it_meters = [m for m in ledger.meters.values() if m.it_load]
    dc_total = sum(totals[m.point_id].total for m in dc_meters)
    it_total = sum(totals[m.point_id].total for m in it_meters)
    months: dict[str, dict[str, float]] = {}
    for b in ledger.series(inp.start, inp.end, "month", points=[m.point_id for m in dc_meters + it_meters]):
        slot = months.setdefault(b.start.strftime("%Y-%m"), {"dc": 0.0, "it": 0.0})
        slot["it" if ledger.meters[b.point_id].it_load else "dc"] += b.total
    electricity = inp.cats.get("01000", {}).get("total")
    return DataCentre(
        meters=tuple(m.point_id for m in dc_meters),
        it_meters=tuple(m.point_id for m in it_meters),
        total_kwh=_r(dc_total),
        it_kwh=_r(it_total) if it_meters else None,
        pue=_r(pue(dc_total, it_total), 4) if it_meters else None,
        share_of_electricity=_r(dc_total / electricity, 4) if electricity else None,
        pue_targets=PueTargets(
            national_average=PUE_TARGETS["national_average"], new_large=PUE_TARGETS["new_large"]
        ),
        monthly=tuple(
            DataCentreMonth(
                month=k, total_kwh=_r(v["dc"]), it_kwh=_r(v["it"]), pue=_r(pue(v["dc"], v["it"]), 4)
            )
            for k, v in sorted(months.items())
        ),
    )


# ----------------------------------------------------------------------------------------------- meters


def _balance(inp: _Inputs) -> tuple[Balance, ...]:
    """Every meter with sub-meters against their sum."""
    ledger, totals = inp.ledger, inp.totals
    rows = []
    for pid, m in ledger.meters.items():
        kids = ledger.children(pid)
        if not kids:
            continue
        parent_total = totals[pid].total
        child_total = sum(totals[k.point_id].total for k in kids)
        rows.append(
            Balance(
                point=pid,
                code=m.code,
                children=tuple(k.point_id for k in kids),
                parent_total=_r(parent_total),
                children_total=_r(child_total),
                unmetered=_r(parent_total - child_total),
                unmetered_share=_r((parent_total - child_total) / parent_total if parent_total else None, 4),
            )
        )
    return tuple(rows)


def _meters(inp: _Inputs) -> tuple[MeterFigures, ...]:
    """Every meter's figures, in site.yaml order."""
    rows = []
    for pid, m in inp.ledger.meters.items():
        t = inp.totals.get(pid)
        if t is None:
            continue
        rows.append(
            MeterFigures(
                point=pid,
                name=m.name,
                code=m.code,
                unit=m.unit,
                zone=m.zone,
                institution=m.institution,
                parent=m.parent,
                in_tree=m.in_tree,
                it_load=m.it_load,
                total=_r(t.total),
                measured=_r(t.measured),
                estimated=_r(t.estimated),
                outlier_kept=_r(t.outlier_kept),
                outlier_excluded=_r(t.outlier_excluded),
                unallocated=_r(t.unallocated),
                estimated_share=_r(t.estimated_share, 6),
                excluded=_r(t.excluded),
                rebased=_r(t.rebased),
                held=_r(t.held),
                slots=t.slots,
                events=dict(sorted(t.counts.items())),
                pending_steps=_r(t.pending_steps),
            )
        )
    return tuple(rows)


def _end_use_meters(ledger: Ledger, pid: str) -> list[MeterInfo]:
    root = ledger.meters[pid]
    if root.end_use:
        return [root]
    out: list[MeterInfo] = []
    for child in ledger.children(pid):
        out += [child] if child.end_use else _end_use_meters(ledger, child.point_id)
    return out


def _daily(inp: _Inputs) -> tuple[DailyRow, ...]:
    """Daily figures by end-use code, and each category's main meters (``total:<category>``)."""
    ledger = inp.ledger
    code_of = {
        child.point_id: child.code
        for root in ledger.roots()
        for child in _end_use_meters(ledger, root.point_id)
    }
    root_ids = {m.point_id for m in ledger.roots()}
    daily: dict[date, dict[str, float]] = {}
    for b in ledger.series(inp.start, inp.end, "day"):
        row = daily.setdefault(b.start.date(), {})
        if b.point_id in code_of:
            row[code_of[b.point_id]] = row.get(code_of[b.point_id], 0.0) + b.total
        if b.point_id in root_ids:
            key = "total:" + ledger.meters[b.point_id].category
            row[key] = row.get(key, 0.0) + b.total
    return tuple(
        DailyRow(date=d, values={k: _r(v) for k, v in sorted(row.items())})
        for d, row in sorted(daily.items())
    )


# ----------------------------------------------------------------------------------------------- quality


def _quality(inp: _Inputs) -> DataQuality:
    """Slot coverage, estimated share, ledger events, outliers and gaps."""
    ledger, totals = inp.ledger, inp.totals
    expected_slots = int((inp.end - inp.start).total_seconds() // 900)
    events: dict[str, int] = {}
    for t in totals.values():
        for k, v in t.counts.items():
            events[k] = events.get(k, 0) + v
    by_unit: dict[str, list[float]] = {}
    for m in ledger.roots():  # each unit of energy once: the main meters, never sub-meters on top
        mt = totals.get(m.point_id)
        if mt is not None:
            acc = by_unit.setdefault(m.unit, [0.0, 0.0, 0.0])
            acc[0] += mt.total
            acc[1] += mt.estimated
    for pid, t in totals.items():
        if pid in ledger.meters and t.excluded:
            by_unit.setdefault(ledger.meters[pid].unit, [0.0, 0.0, 0.0])[2] += t.excluded
    gaps = ledger.gaps(inp.start, inp.end)
    long = [g for g in gaps if g.missing > ledger.max_gap_intervals]
    long_energy: dict[str, float] = {}
    for g in long:
        long_energy[g.point_id] = long_energy.get(g.point_id, 0.0) + g.energy
    return DataQuality(
        expected_slots_per_meter=expected_slots,
        slot_coverage={pid: _r(t.slots / expected_slots, 4) for pid, t in sorted(totals.items())},
        by_unit={
            unit: UnitQuality(
                unit=unit,
                booked=_r(b),
                estimated=_r(e),
                estimated_share=_r(e / b if b > 0 else 0.0, 6),
                excluded=_r(x),
            )
            for unit, (b, e, x) in sorted(by_unit.items())
        },
        events=dict(sorted(events.items())),
        outliers=events.get("outlier", 0),
        outlier_energy_kept=_r(sum(t.outlier_kept for t in totals.values())),
        outlier_policy=ledger.outliers,
        max_gap_intervals=ledger.max_gap_intervals,
        gaps_filled=sum(1 for g in gaps if g.filled),
        long_gaps=len(long),
        long_gap_energy={pid: _r(e) for pid, e in sorted(long_energy.items())},
        unallocated_energy={pid: _r(t.unallocated) for pid, t in sorted(totals.items()) if t.unallocated},
        gaps=tuple(
            Gap(
                point=g.point_id,
                start=g.start,
                end=g.end,
                missing_intervals=g.missing,
                energy=_r(g.energy),
                filled=g.filled,
                method=g.method,
            )
            for g in gaps[:MAX_GAPS_LISTED]
        ),
        steps=tuple(
            StepFinding(
                point=x.point_id,
                at=x.ts,
                from_value=x.from_value,
                to_value=x.to_value,
                amount=_r(x.amount),
                unit=ledger.meters[x.point_id].unit if x.point_id in ledger.meters else "",
                status=x.status,
            )
            for x in sorted(
                (x for x in ledger.exclusions(inp.start, inp.end) if x.status),
                key=lambda x: (x.status != "pending", x.ts),
            )
        ),
    )


# ----------------------------------------------------------------------------------------------- history


def _meter_months(inp: _Inputs, years: Iterable[int], imported: Iterable[HistoryEntry]) -> list[HistoryEntry]:
    """The main meters' whole months as entries of source ``meter``, for the months of ``years`` up to the
    end of the period that no imported entry of the same type covers (imported bills and history come
    first; two sources of one consumption are never added). A month counts only when every main meter of
    the category has a figure for each of its 15-minute slots (gaps allocated by the ledger count, and are
    in its estimated share). A ledger unit other than the analysis unit is converted to it (heat: MJ ->
    GJ, ``to_history_unit``); a category whose unit does not convert is left out."""
    ledger = inp.ledger
    covered = set()
    for e in imported:
        d = date(e.period_start.year, e.period_start.month, 1)
        while d < e.period_end:
            covered.add((e.energy_type, d.year, d.month))
            d = (d.replace(day=28) + timedelta(days=4)).replace(day=1)
    type_of = {code: t for t, code in CATEGORY_OF.items()}
    roots: dict[str, list[MeterInfo]] = {}
    units: dict[str, tuple[str, float]] = {}  # type -> (the history's unit, multiplier from the ledger's)
    for m in ledger.roots():
        t = type_of.get(m.category)
        conv = to_history_unit(t, m.unit) if t is not None else None
        if t is not None and conv is not None and units.setdefault(t, conv) == conv:
            roots.setdefault(t, []).append(m)
    out: list[HistoryEntry] = []
    if not roots:
        return out
    for y in sorted(set(years)):
        span = ledger.data_span(
            datetime(y, 1, 1, tzinfo=inp.tz).astimezone(UTC),
            datetime(y + 1, 1, 1, tzinfo=inp.tz).astimezone(UTC),
        )
        if span is None:
            continue
        for mo in range(span[0].month, 13):
            first = date(y, mo, 1)
            nxt = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
            if nxt > inp.period.end:
                break
            lo = datetime(y, mo, 1, tzinfo=inp.tz).astimezone(UTC)
            hi = datetime(nxt.year, nxt.month, 1, tzinfo=inp.tz).astimezone(UTC)
            if lo >= span[1]:
                break
            slots = int((hi - lo).total_seconds() // 900)
            totals = ledger.totals(lo, hi)
            for t, meters in roots.items():
                if (t, y, mo) in covered or any(totals[m.point_id].slots < slots for m in meters):
                    continue
                out.append(
                    HistoryEntry(
                        energy_type=t,
                        account="meters:" + meters[0].category,
                        vehicle="",
                        period_start=first,
                        period_end=nxt,
                        source="meter",
                        quantity=sum(totals[m.point_id].total for m in meters) * units[t][1],
                        unit=units[t][0],
                        note="",
                        file="ledger",
                        row=0,
                    )
                )
    return out


def _history(inp: _Inputs, fill: bool) -> History | None:
    """The period in the history analysis (report/analysis.py) with its quarters (a year) or its months
    (a quarter); None when there is neither imported history nor a whole month of meter data."""
    site = inp.cfg.site
    year = inp.period.start.year
    base = site.ledger.baseline_year if site.ledger.baseline_year != year else None
    imported = list_entries(inp.ledger.conn)  # all of it, as `ledger analysis`: --fill uses later years too
    years = [year, year - 1] + ([base] if base is not None else [])
    entries = imported + _meter_months(inp, years, imported)
    if not entries:
        return None
    density = fuel_density(site)
    a = analyse(
        entries,
        year=year,
        baseline_year=base,
        floor_area_m2=site.floor_area_m2,
        occupants=site.occupants,
        factors=inp.factors,
        fill=fill,
        fuel_density_kg_per_l=density,
    )
    label, kind = inp.period.label, inp.period.kind
    if kind == "year":
        wanted = {label} | {f"{year}Q{q}" for q in range(1, 5)}
    elif kind == "quarter":
        q = int(label[-1])
        wanted = {label} | {f"{year}-{m:02d}" for m in range(3 * q - 2, 3 * q + 1)}
    else:
        wanted = {label}
    rows = [r for r in a.rows if r.period in wanted and (r.quantity, r.last_year, r.baseline) != (None,) * 3]
    if not rows:
        return None

    def per(v: float | None, d: float) -> float | None:
        return None if v is None else _r(v / d, 4)

    area, people = site.floor_area_m2, site.occupants
    out = tuple(
        HistoryRow(
            granularity=r.granularity,
            period=r.period,
            energy_type=r.energy_type,
            zh="综合能耗" if r.energy_type == "total" else ENERGY_ZH.get(r.energy_type, r.energy_type),
            unit=r.unit,
            quantity=r.quantity,
            complete=r.complete,
            kgce=r.kgce,
            last_year=r.last_year,
            last_year_complete=r.last_year_complete,
            last_year_kgce=r.last_year_kgce,
            change=r.change,
            change_kgce=r.change_kgce,
            baseline=r.baseline,
            baseline_complete=r.baseline_complete,
            baseline_kgce=r.baseline_kgce,
            change_vs_baseline=r.change_vs_baseline,
            change_vs_baseline_kgce=r.change_vs_baseline_kgce,
            per_m2=r.per_m2,
            per_person=r.per_person,
            # past years over today's floor area and persons (site.yaml keeps one figure of each)
            last_year_per_m2=per(r.last_year, area) if r.energy_type == "total" else None,
            last_year_per_person=per(r.last_year, people) if r.energy_type in ("total", "water") else None,
            baseline_per_m2=per(r.baseline, area) if r.energy_type == "total" else None,
            baseline_per_person=per(r.baseline, people) if r.energy_type in ("total", "water") else None,
            estimated_in=r.estimated_in,
            methods=r.methods,
        )
        for r in sorted(rows, key=lambda r: ("yqm".index(r.granularity[0]), r.period))
    )
    return History(
        year=year,
        baseline_year=base,
        filled=fill,
        imported_entries=len(imported),
        meter_months=len(entries) - len(imported),
        fuel_density=a.fuel_density_kg_per_l,
        density_source=site.ledger.fuel_density_kg_per_l.source if a.fuel_density_kg_per_l else "",
        left_out=a.left_out_of_kgce,
        methods=tuple(sorted({m for r in out for m in r.methods})),
        rows=out,
    )


# ----------------------------------------------------------------------------------------------- work summary

# the measures the annual work summary lists: (key, zh, en, audit rules); only successful writes count
_MEASURE_KINDS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "setpoint_summer_26",
        "夏季设定温度纠正至26 °C",
        "Summer setpoints raised to 26 °C",
        ("hvac.summer_min_cooling",),
    ),
    (
        "setpoint_winter_20",
        "冬季设定温度纠正至20 °C",
        "Winter setpoints lowered to 20 °C",
        ("hvac.winter_max_heating",),
    ),
    (
        "hvac_after_hours",
        "下班后关闭空调",
        "AC switched off after hours",
        ("hvac.after_hours", "hvac.after_hours_off"),
    ),
    ("hvac_window_open", "开窗时关闭空调", "AC switched off with a window open", ("hvac.window_open",)),
    ("lighting_sweep", "下班后巡检关灯", "Lights off by after-hours sweeps", ("lighting.after_hours_sweep",)),
    (
        "lighting_daylight",
        "白天自然采光关灯",
        "Lights off in daylight",
        ("lighting.sun", "lighting.daylight"),
    ),
)
_MEASURES = {rule: key for key, _zh, _en, rules in _MEASURE_KINDS for rule in rules}
NOT_ESTIMATED = (
    "未估算 not estimated: the ledger measures the meters, not what a unit would have used had the agent "
    "not acted; a saving per action needs a per-unit baseline model the agent does not have"
)


def _measures(records: Iterable[AuditRecord]) -> tuple[Measure, ...]:
    counts: dict[str, int] = {}
    for rec in records:
        if (
            rec.kind != AuditKind.WRITE
            or rec.result not in ("ok", "relinquished")
            or rec.rule not in _MEASURES
        ):
            continue
        if rec.rule.startswith("lighting.") and rec.after not in (False, 0):
            continue  # a light switched on is not a saving (the hvac rules here only switch off)
        key = _MEASURES[rec.rule]
        counts[key] = counts.get(key, 0) + 1
    return tuple(
        Measure(
            key=key, zh=zh, en=en, count=counts.get(key, 0), saving_kgce=None, saving_method=NOT_ESTIMATED
        )
        for key, zh, en, _rules in _MEASURE_KINDS
    )


def _work_summary(
    inp: _Inputs, kpis: Kpis, history: History | None, records: list[AuditRecord]
) -> WorkSummary:
    """Targets and achieved (the history analysis's year where it has one, else section 4's year to
    date), the year's kgce and water against last year and the baseline, and the agent's measures from
    the audit trail."""
    label = inp.period.label
    rows = {r.energy_type: r for r in (history.rows if history else ()) if r.period == label}
    own = {
        "kgce_per_m2": (rows.get("total"), "per_m2"),
        "kgce_per_person": (rows.get("total"), "per_person"),
        "water_m3_per_person": (rows.get("water"), "per_person"),
    }
    targets = []
    source: Literal["history", "ledger"]
    for k in kpis.rows:
        row, attr = own.get(k.key, (None, ""))
        if row is not None and getattr(row, attr) is not None:
            achieved: float | None = getattr(row, attr)
            complete, estimated, source = row.complete, "this" in row.estimated_in, "history"
        else:
            achieved, complete, estimated, source = (
                k.to_date,
                kpis.days_covered >= inp.period.days,
                False,
                "ledger",
            )
        targets.append(
            TargetRow(
                key=k.key,
                zh=k.zh,
                en=k.en,
                unit=k.unit,
                target=k.target,
                achieved=achieved,
                share_of_target=_r(achieved / k.target, 4) if achieved is not None and k.target else None,
                # a year with a month missing says nothing about the target yet
                met=achieved <= k.target if achieved is not None and k.target and complete else None,
                complete=complete,
                estimated=estimated,
                source=source,
            )
        )
    return WorkSummary(
        year=inp.period.start.year,
        baseline_year=history.baseline_year if history else inp.cfg.site.ledger.baseline_year,
        targets=tuple(targets),
        total=rows.get("total"),
        water=rows.get("water"),
        measures=_measures(records),
        audit_records=len(records),
    )


# ----------------------------------------------------------------------------------------------- enforcement


def enforcement_summary(records: Iterable[AuditRecord], *, cfg: LoadedConfig, period: Period) -> Enforcement:
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
    tamper: list[TamperFinding] = []
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
                    TamperFinding(ts=rec.ts, point=rec.subject, zone=zone_of(rec.subject), reason=rec.reason)
                )
        elif rec.kind == AuditKind.REFUSED:
            refused[rec.result] = refused.get(rec.result, 0) + 1
    return Enforcement(
        records=n,
        setpoint_corrections=tuple(
            SetpointCorrections(zone=z, summer_26=v["summer_26"], winter_20=v["winter_20"])
            for z, v in sorted(setpoints.items())
        ),
        setpoint_corrections_total=sum(v["summer_26"] + v["winter_20"] for v in setpoints.values()),
        lights_off=tuple(LightsOff(zone=z, count=c) for z, c in sorted(lights.items())),
        lights_off_total=sum(lights.values()),
        hvac_other=dict(sorted(hvac_other.items())),
        findings=dict(sorted(findings.items())),
        tamper=tuple(tamper),
        refused=dict(sorted(refused.items())),
        failed_writes=failed,
        exemptions=tuple(
            Exemption(zone=e.zone, reason=e.reason, until=e.until)
            for e in cfg.policy.hvac.exemptions
            if e.until is None or e.until >= period.start
        ),
    )

"""The energy report as typed data: what ``build_report`` returns and every renderer reads.

The JSON document (schema ``edge-agent.report/1``) is ``Report.as_dict()``: each dataclass becomes an
object whose keys are its field names in declaration order, so **field order here is the key order of
the document** and a renamed or reordered field changes the wire format
(tests/unit/test_report_document.py holds it against a stored document). Dates and datetimes become ISO
text; tuples become arrays; ``DailyRow`` flattens its values next to its date.

Figures are rounded when the report is built (3 decimals for quantities, 4 for shares and KPIs), so the
JSON, the HTML and anything else rendered from one ``Report`` show the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, datetime
from typing import Any, Literal

__all__ = [
    "REPORT_SCHEMA",
    "Balance",
    "Building",
    "CategoryTotal",
    "CoalFactor",
    "Coverage",
    "DailyRow",
    "DataCentre",
    "DataCentreMonth",
    "DataQuality",
    "EndUseTotal",
    "Enforcement",
    "Exemption",
    "Gap",
    "History",
    "HistoryRow",
    "KpiFigure",
    "Kpis",
    "LastYear",
    "LeftOut",
    "LightsOff",
    "Measure",
    "MeterFigures",
    "PueTargets",
    "Report",
    "ReportPeriod",
    "SetpointCorrections",
    "SourceRow",
    "Sources",
    "StepFinding",
    "TamperFinding",
    "TargetRow",
    "Totals",
    "UnitQuality",
    "WorkSummary",
    "YearOnYear",
]

REPORT_SCHEMA = "edge-agent.report/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Building:
    building_id: str  # MOHURD building code
    gateway_id: str
    name: str | None
    timezone: str
    floor_area_m2: float
    occupants: int
    establishment: int | None = None  # 编制人数 when site.yaml splits the persons (occupants = both)
    others: int | None = None  # 其他人员


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportPeriod:
    label: str  # 2026, 2026Q3, 2026-07
    kind: Literal["year", "quarter", "month"]
    start: date
    end: date  # exclusive
    days: int


# ----------------------------------------------------------------------------------------------- totals


@dataclass(frozen=True, slots=True, kw_only=True)
class CategoryTotal:
    """One energy category (01000 electricity, 02000 water...): its main meters added up."""

    code: str
    zh: str
    en: str
    unit: str
    total: float  # measured + estimated + outlier_kept
    measured: float
    estimated: float
    outlier_kept: float
    kgce: float | None  # None: no coal factor (water is never energy), or a unit mismatch


@dataclass(frozen=True, slots=True, kw_only=True)
class EndUseTotal:
    code: str  # end-use item code, e.g. 01A00
    zh: str
    en: str
    unit: str
    total: float
    share: float | None  # of its category's total


@dataclass(frozen=True, slots=True, kw_only=True)
class Totals:
    by_category: tuple[CategoryTotal, ...]
    kgce: float  # standard coal of all categories with a factor
    left_out: tuple[LeftOut, ...]  # energy not converted: shown as a warning with its quantity
    by_end_use: tuple[EndUseTotal, ...]
    unmetered: Mapping[str, float]  # category code -> main meters minus their end-use meters


@dataclass(frozen=True, slots=True, kw_only=True)
class YearOnYear:
    code: str
    zh: str
    en: str
    this_year: float
    last_year: float | None  # None: the ledger has no data for last year's period
    change: float | None  # (this - last) / last


@dataclass(frozen=True, slots=True, kw_only=True)
class LastYear:
    period: str  # label of the same period last year
    by_category: tuple[YearOnYear, ...]


# ----------------------------------------------------------------------------------------------- KPIs


@dataclass(frozen=True, slots=True, kw_only=True)
class CoalFactor:
    code: str  # category code
    zh: str
    en: str
    unit: str
    kgce_per_unit: float
    source: str
    edition: str  # the standard and edition of the value ("site.yaml coal_factors" for an override)


@dataclass(frozen=True, slots=True, kw_only=True)
class LeftOut:
    """Energy of the period that is not in 综合能耗 (no factor, or a unit the factor does not take)."""

    code: str
    zh: str
    en: str
    quantity: float
    unit: str
    reason: Literal["no_factor", "unit_mismatch"]


@dataclass(frozen=True, slots=True, kw_only=True)
class KpiFigure:
    """One checklist KPI, year to the end of the period (see report.kpi.annual_kpis)."""

    key: str  # kgce_per_m2, kgce_per_person, water_m3_per_person
    zh: str
    en: str
    unit: str
    to_date: float
    target: float | None
    share_of_target: float | None
    projection: float | None
    projected_share: float | None
    on_track: bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Kpis:
    year: int
    ytd_start: date
    ytd_end: date  # exclusive: the end of the period
    days_covered: int
    projection_method: str
    kgce_to_date: float
    period_kgce: float
    period_kgce_per_m2: float
    period_kgce_per_person: float
    floor_area_m2: float
    occupants: int
    targets_source: str | None
    no_factor: tuple[str, ...]  # categories with a quantity but no coal factor (left out of kgce)
    unit_mismatch: tuple[str, ...]  # categories whose unit differs from their factor's (left out)
    factors: tuple[CoalFactor, ...]  # the factors of the categories in the report
    rows: tuple[KpiFigure, ...]


# ----------------------------------------------------------------------------------------------- data centre


@dataclass(frozen=True, slots=True, kw_only=True)
class PueTargets:
    national_average: float
    new_large: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DataCentreMonth:
    month: str  # YYYY-MM
    total_kwh: float
    it_kwh: float
    pue: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DataCentre:
    meters: tuple[str, ...]  # the data-centre (01D1x) meters counted
    it_meters: tuple[str, ...]
    total_kwh: float
    it_kwh: float | None  # None: no IT-load meter
    pue: float | None
    share_of_electricity: float | None
    pue_targets: PueTargets
    monthly: tuple[DataCentreMonth, ...]


# ----------------------------------------------------------------------------------------------- meters


@dataclass(frozen=True, slots=True, kw_only=True)
class Balance:
    """A meter with sub-meters against their sum."""

    point: str
    code: str
    children: tuple[str, ...]
    parent_total: float
    children_total: float
    unmetered: float
    unmetered_share: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Coverage:
    """How much of a main meter its end-use meters account for."""

    point: str
    code: str
    main_total: float
    end_use_total: float
    coverage: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterFigures:
    point: str
    name: str | None
    code: str
    unit: str
    zone: str | None
    institution: str | None
    parent: str | None
    in_tree: bool
    it_load: bool
    total: float
    measured: float
    estimated: float
    outlier_kept: float
    outlier_excluded: float  # old databases only: excluded outliers are no longer booked
    unallocated: float  # old databases only: gaps of any length are now allocated (estimated)
    estimated_share: float  # estimated / total of this meter
    excluded: float  # counter increase not booked (a step re-baselined, a meter swap), this meter's unit
    rebased: float  # counter decreases not booked (resets, re-baselines), <= 0
    held: float  # read under an untrusted clock, not booked yet (booked when the clock is trusted again)
    slots: int
    events: Mapping[str, int]  # ledger quality event -> count
    pending_steps: float = 0.0  # of ``excluded``: detected counter steps awaiting `meter confirm|book`


@dataclass(frozen=True, slots=True, kw_only=True)
class DailyRow:
    """One local day. In the document the values sit beside ``date`` as keys of their own."""

    date: date
    values: Mapping[str, float]  # end-use code, or "total:<category code>" -> quantity

    def as_dict(self) -> dict[str, Any]:
        return {"date": self.date.isoformat(), **self.values}


# ----------------------------------------------------------------------------------------------- enforcement


@dataclass(frozen=True, slots=True, kw_only=True)
class SetpointCorrections:
    zone: str
    summer_26: int
    winter_20: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LightsOff:
    zone: str
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TamperFinding:
    ts: str  # the audit record's UTC timestamp text
    point: str
    zone: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Exemption:
    zone: str
    reason: str
    until: date | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Enforcement:
    """What the agent did and found in the period, from the audit trail."""

    records: int
    setpoint_corrections: tuple[SetpointCorrections, ...]
    setpoint_corrections_total: int
    lights_off: tuple[LightsOff, ...]
    lights_off_total: int
    hvac_other: Mapping[str, int]  # other hvac rules -> successful writes
    findings: Mapping[str, int]  # finding kind -> count
    tamper: tuple[TamperFinding, ...]
    refused: Mapping[str, int]  # refusal reason code -> count
    failed_writes: int
    exemptions: tuple[Exemption, ...]  # in force during the period


# ----------------------------------------------------------------------------------------------- quality


@dataclass(frozen=True, slots=True, kw_only=True)
class Gap:
    point: str
    start: datetime
    end: datetime
    missing_intervals: int
    energy: float
    filled: bool
    method: str = "linear"  # "profile" (the meter's comparable days) or "linear"


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFinding:
    """A counter step the ledger detected and excluded by itself, and what an operator made of it."""

    point: str
    at: datetime
    from_value: float
    to_value: float
    amount: float  # the meter's ledger unit
    unit: str
    status: str  # pending (awaiting `meter confirm|book`), confirmed (not energy), booked (counted)


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitQuality:
    """One unit's main meters (each unit of energy once): never kWh and m³ added together."""

    unit: str
    booked: float
    estimated: float
    estimated_share: float
    excluded: float  # counter increase not booked (steps, swaps), all meters of the unit


@dataclass(frozen=True, slots=True, kw_only=True)
class DataQuality:
    expected_slots_per_meter: int
    slot_coverage: Mapping[str, float]  # point -> share of the period's slots with a figure
    by_unit: Mapping[str, UnitQuality]  # ledger unit -> main meters' figures (per meter: MeterFigures)
    events: Mapping[str, int]
    outliers: int
    outlier_energy_kept: float
    outlier_policy: str
    max_gap_intervals: int  # a gap longer than this is listed as a data-quality item
    gaps_filled: int  # every gap is allocated (estimated)
    long_gaps: int
    long_gap_energy: Mapping[str, float]  # point -> energy carried by its long gaps (estimated, counted)
    unallocated_energy: Mapping[str, float]  # old databases only: unfilled gaps
    gaps: tuple[Gap, ...]  # the first 200
    steps: tuple[StepFinding, ...] = ()  # detected counter steps in the period, pending ones first


# ----------------------------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceRow:
    """One category in a period with both meters and bills (or bills only): both figures and the gap."""

    code: str
    zh: str
    en: str
    unit: str
    meter: float | None  # None: no meter of this category
    bill: float
    bill_entries: int
    difference: float | None  # meter - bill
    difference_share: float | None  # (meter - bill) / bill
    used: Literal["meter", "bill"]  # what the statistics of this report use
    meter_coverage: float | None = None  # share of the period the category's least-covered main meter booked


@dataclass(frozen=True, slots=True, kw_only=True)
class Sources:
    statistics_source: Literal["meter", "bill"]  # ledger.statistics_source of site.yaml
    rows: tuple[SourceRow, ...]


# ----------------------------------------------------------------------------------------------- history


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryRow:
    """One energy type (or ``total``, kgce) in one period against the same period last year and the
    baseline year (edge_agent/report/analysis.py). A change is given only between complete periods;
    ``estimated_in`` names the sides holding filled months and ``methods`` how they were filled."""

    granularity: Literal["year", "quarter", "month"]
    period: str  # 2025, 2025Q1, 2025-01
    energy_type: str  # electricity, water, ..., or total
    zh: str
    unit: str
    quantity: float | None
    complete: bool
    kgce: float | None
    last_year: float | None
    last_year_complete: bool
    last_year_kgce: float | None
    change: float | None
    change_kgce: float | None
    baseline: float | None
    baseline_complete: bool
    baseline_kgce: float | None
    change_vs_baseline: float | None
    change_vs_baseline_kgce: float | None
    per_m2: float | None  # total: kgce/m² of the period
    per_person: float | None  # total: kgce/person; water: m³/person
    last_year_per_m2: float | None
    last_year_per_person: float | None
    baseline_per_m2: float | None
    baseline_per_person: float | None
    estimated_in: tuple[str, ...]  # "this", "last_year", "baseline"
    methods: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    """Year over year and against the baseline, from imported bills and history and whole months of meter
    data (a meter month counts only where no imported entry of its type covers that month)."""

    year: int
    baseline_year: int | None  # ledger.baseline_year of site.yaml
    filled: bool  # missing and implausible months estimated (`report --fill`)
    imported_entries: int
    meter_months: int  # (type, month) figures taken from the meters
    fuel_density: Mapping[str, float]  # kg/L applied to fuel in litres
    density_source: str
    left_out: tuple[str, ...]  # "gasoline L": no kgce
    methods: tuple[str, ...]  # every estimation method used in the rows
    rows: tuple[HistoryRow, ...]  # the period and its quarters (a year) or months (a quarter)


@dataclass(frozen=True, slots=True, kw_only=True)
class Measure:
    """One kind of energy-saving action the agent took, counted from the audit trail."""

    key: str  # setpoint_summer_26, setpoint_winter_20, hvac_after_hours, hvac_window_open, lighting_sweep...
    zh: str
    en: str
    count: int  # successful writes
    saving_kgce: float | None  # None: not estimated
    saving_method: str  # how it was estimated, or why it was not


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetRow:
    """One annual target against the year's figure: from the history analysis (bills, history and whole
    months of meters) when it has the year, else from the ledger's year to date (section 4)."""

    key: str  # kgce_per_m2, kgce_per_person, water_m3_per_person
    zh: str
    en: str
    unit: str
    target: float | None
    achieved: float | None
    share_of_target: float | None
    met: bool | None  # achieved <= target; None without a target, a figure or a complete year
    complete: bool  # every month of the year has data
    estimated: bool  # holds estimated months
    source: Literal["history", "ledger"]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkSummary:
    """The data section of the annual work summary (年度工作总结): targets and what was achieved, the change
    on last year and the baseline year, and the measures recorded by the agent."""

    year: int
    baseline_year: int | None
    targets: tuple[TargetRow, ...]
    total: HistoryRow | None  # the year's kgce against last year and the baseline (None: no history)
    water: HistoryRow | None
    measures: tuple[Measure, ...]
    audit_records: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    schema: str = field(default=REPORT_SCHEMA, init=False)
    generated_at: datetime
    building: Building
    period: ReportPeriod
    totals: Totals
    last_year: LastYear
    kpi: Kpis
    data_centre: DataCentre
    balance: tuple[Balance, ...]
    coverage: tuple[Coverage, ...]
    meters: tuple[MeterFigures, ...]
    daily: tuple[DailyRow, ...]
    enforcement: Enforcement
    quality: DataQuality
    sources: Sources
    history: History | None = None  # None: no imported history and no whole month of meter data
    work_summary: WorkSummary | None = None  # annual reports only

    def __post_init__(self) -> None:  # the document gives the time to the second
        object.__setattr__(self, "generated_at", self.generated_at.replace(microsecond=0))

    def as_dict(self) -> dict[str, Any]:
        """The JSON document, as plain dicts, lists, strings, numbers, booleans and None."""
        doc = _plain(self)
        assert isinstance(doc, dict)
        return doc

    def to_json(self) -> str:
        """The document as written to ``report-<building>-<period>.json``."""
        return json.dumps(self.as_dict(), ensure_ascii=False, indent=1) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, DailyRow):
        return value.as_dict()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, date):  # and datetime
        return value.isoformat()
    return value

"""KPIs of the public-institution checklist (节约型机关), as pure arithmetic over ledger totals.

- Standard coal (kgce) = Σ quantity x factor, by energy category, with the factor table of
  GB/T 2589-2020 as default (each factor carries its ``source``; site.yaml ``coal_factors:`` overrides).
  Only electricity's 0.1229 kgce/kWh (equivalent value) is confirmed in the project's references; the
  others are marked unconfirmed in their source text. Water is reported in m³, never folded into kgce.
- Per m² of floor area (单位建筑面积能耗), per person (人均综合能耗), water per person (人均用水量):
  ``kgce_per_m2`` and ``per_person``, the only places these divisions happen (for the period and for
  the year to date alike).
- Against annual targets: share of the target used to date, and a projection for the year.
  Projection: linear by days with data, ``to_date x days_in_year / covered_days``, where covered days
  run from the first ledger data of the year to the end of the period (or the last data, if earlier;
  a day with data up to some time in it counts whole): ``days_with_data``.
  Linear is a plain rule a reviewer can redo by hand; it ignores seasons (a summer quarter projects
  high, a spring one low), so the report prints the method next to the figure.
- Data centre: its energy on its own, and PUE = data-centre total / IT load when an IT meter exists.

Nothing here reads the clock, the database or the configuration files.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from types import MappingProxyType
from typing import Protocol

__all__ = [
    "DEFAULT_COAL_FACTORS",
    "MIN_PROJECTION_DAYS",
    "PROJECTION_METHOD",
    "PUE_TARGETS",
    "CoalFactorRow",
    "KgceResult",
    "KpiRow",
    "TargetsLike",
    "annual_kpis",
    "coal_table",
    "covered_days",
    "days_in_year",
    "days_with_data",
    "kgce_per_m2",
    "per_person",
    "pue",
    "to_kgce",
]


@dataclass(frozen=True, slots=True)
class CoalFactorRow:
    category: str  # category code, e.g. 01000
    zh: str
    en: str
    unit: str  # ledger unit of the category
    kgce_per_unit: float
    source: str
    edition: str = ""  # the standard and edition the value is taken from ("site" for an override)


# The defaults, each with the edition its value comes from. Values as quoted in STANDARDS.md (to be checked
# against the standard's text before relying on the edition): GB/T 2589-2020 keeps the 2008 reference values
# for these fuels; natural gas is the exception (a range by heating value in 2020, 1.2143 is the 2008 value).
_GB20 = "GB/T 2589-2020"
_GB08 = "GB/T 2589-2008"
DEFAULT_COAL_FACTORS: Mapping[str, CoalFactorRow] = MappingProxyType(
    {
        row.category: row
        for row in (
            CoalFactorRow("01000", "电力", "electricity", "kWh", 0.1229, "equivalent value 当量值", _GB20),
            CoalFactorRow(
                "03000",
                "天然气",
                "natural gas",
                "m3",
                1.2143,
                "reference value of the 2008 edition; GB/T 2589-2020 gives 1.1000-1.3300 by heating value:"
                " set the supplier's (coal_factors)",
                _GB08,
            ),
            CoalFactorRow("04000", "热力", "district heat", "MJ", 0.03412, "heat 热力", _GB20),
            CoalFactorRow("07000", "煤", "coal", "kg", 0.7143, "raw coal 原煤", _GB20),
            CoalFactorRow("08000", "液化石油气", "liquefied petroleum gas", "kg", 1.7143, "LPG", _GB20),
            CoalFactorRow("10000", "汽油", "gasoline", "kg", 1.4714, "by mass (about 0.73 kg/L)", _GB20),
            CoalFactorRow("11000", "煤油", "kerosene", "kg", 1.4714, "by mass", _GB20),
            CoalFactorRow("12000", "柴油", "diesel", "kg", 1.4571, "by mass (about 0.84 kg/L)", _GB20),
        )
    }
)

# How annual_kpis projects the year; the report prints it next to the figures.
PROJECTION_METHOD = "linear by days with data: to_date x days_in_year / days_covered"
# Fewer days than this and there is no projection (a 10-hour demo day is not a year).
MIN_PROJECTION_DAYS = 14

# GB/T 51161 / national policy figures quoted in STANDARDS.md: national average, new large centres.
PUE_TARGETS: Mapping[str, float] = MappingProxyType({"national_average": 1.5, "new_large": 1.3})


class _FactorLike(Protocol):
    @property
    def kgce_per_unit(self) -> float: ...

    @property
    def unit(self) -> str: ...

    @property
    def source(self) -> str: ...


class TargetsLike(Protocol):
    @property
    def kgce_per_m2(self) -> float | None: ...

    @property
    def kgce_per_person(self) -> float | None: ...

    @property
    def water_m3_per_person(self) -> float | None: ...


def coal_table(overrides: Mapping[str, _FactorLike] | None = None) -> dict[str, CoalFactorRow]:
    """The default table with a site's overrides (config.CoalFactor) applied."""
    table = dict(DEFAULT_COAL_FACTORS)
    for code, f in (overrides or {}).items():
        base = table.get(code)
        zh, en = (base.zh, base.en) if base is not None else (code, code)
        table[code] = CoalFactorRow(code, zh, en, f.unit, f.kgce_per_unit, f.source, "site.yaml coal_factors")
    return table


@dataclass(frozen=True, slots=True)
class KgceResult:
    total: float
    by_category: dict[str, float]  # category code -> kgce
    no_factor: list[str]  # energy categories with a quantity but no factor (left out, listed)
    unit_mismatch: list[str]  # categories whose ledger unit differs from the factor's (left out)
    left_out: dict[str, float]  # category code -> quantity not in the total (no factor, unit mismatch)


def to_kgce(
    quantities: Mapping[str, float], units: Mapping[str, str], table: Mapping[str, CoalFactorRow]
) -> KgceResult:
    """kgce of category quantities (``{"01000": kWh, "03000": m3}``); water (02000) is never energy."""
    by: dict[str, float] = {}
    missing: list[str] = []
    mismatch: list[str] = []
    left: dict[str, float] = {}
    for code, qty in sorted(quantities.items()):
        if code.startswith("02"):
            continue
        f = table.get(code)
        if f is None:
            if qty:
                missing.append(code)
                left[code] = qty
            continue
        if units.get(code, f.unit).lower() != f.unit.lower():
            mismatch.append(code)
            left[code] = qty
            continue
        by[code] = qty * f.kgce_per_unit
    return KgceResult(sum(by.values()), by, missing, mismatch, left)


def days_in_year(year: int) -> int:
    return 366 if calendar.isleap(year) else 365


def covered_days(first_data: date | None, period_end: date, last_data_end: date | None) -> int:
    """Days from the first data of the year to the period end (or the end of the data, if earlier)."""
    if first_data is None:
        return 0
    end = min(period_end, last_data_end) if last_data_end is not None else period_end
    return max(0, (end - first_data).days)


def days_with_data(span: tuple[datetime, datetime] | None, period_end: date) -> int:
    """``covered_days`` of a ledger data span (local start of the first slot, end of the last one).

    A span ending inside a day counts that day whole.
    """
    if span is None:
        return covered_days(None, period_end, None)
    first, last_end = span
    last_day = last_end.date() if last_end.time() == time.min else last_end.date() + timedelta(days=1)
    return covered_days(first.date(), period_end, last_day)


def kgce_per_m2(kgce: float, floor_area_m2: float) -> float:
    """单位建筑面积能耗: standard coal per m² of floor area."""
    if floor_area_m2 <= 0:
        raise ValueError(f"floor area {floor_area_m2} must be positive")
    return kgce / floor_area_m2


def per_person(quantity: float, occupants: int) -> float:
    """人均综合能耗 (kgce) and 人均用水量 (m³): a quantity per occupant."""
    if occupants <= 0:
        raise ValueError(f"occupants {occupants} must be positive")
    return quantity / occupants


@dataclass(frozen=True, slots=True)
class KpiRow:
    key: str  # kgce_per_m2, kgce_per_person, water_m3_per_person
    zh: str
    en: str
    unit: str
    to_date: float  # year to the end of the period
    target: float | None  # annual
    share_of_target: float | None  # to_date / target
    projection: float | None  # for the whole year (linear by covered days)
    projected_share: float | None  # projection / target
    on_track: bool | None  # projection <= target


def annual_kpis(
    *,
    kgce_to_date: float,
    water_m3_to_date: float | None,
    floor_area_m2: float,
    occupants: int,
    targets: TargetsLike | None,
    year: int,
    days_covered: int,
) -> list[KpiRow]:
    """The three checklist KPIs, year to date, against annual targets, with a linear projection (only
    from ``MIN_PROJECTION_DAYS`` days of data on; before that projection and on_track are None)."""
    if floor_area_m2 <= 0 or occupants <= 0:
        raise ValueError(f"floor area {floor_area_m2} and occupants {occupants} must be positive")
    scale = days_in_year(year) / days_covered if days_covered >= MIN_PROJECTION_DAYS else None
    rows = [
        (
            "kgce_per_m2",
            "单位建筑面积综合能耗",
            "energy per floor area",
            "kgce/m²",
            kgce_per_m2(kgce_to_date, floor_area_m2),
        ),
        (
            "kgce_per_person",
            "人均综合能耗",
            "energy per person",
            "kgce/person",
            per_person(kgce_to_date, occupants),
        ),
    ]
    if water_m3_to_date is not None:
        rows.append(
            (
                "water_m3_per_person",
                "人均用水量",
                "water per person",
                "m³/person",
                per_person(water_m3_to_date, occupants),
            )
        )
    out: list[KpiRow] = []
    for key, zh, en, unit, value in rows:
        target = getattr(targets, key, None) if targets is not None else None
        projection = value * scale if scale is not None else None
        out.append(
            KpiRow(
                key=key,
                zh=zh,
                en=en,
                unit=unit,
                to_date=value,
                target=target,
                share_of_target=value / target if target else None,
                projection=projection,
                projected_share=projection / target if target and projection is not None else None,
                on_track=projection <= target if target and projection is not None else None,
            )
        )
    return out


def pue(data_centre_total: float, it_total: float) -> float | None:
    """Power usage effectiveness; None without IT energy (no meter, or no data)."""
    if it_total <= 0:
        return None
    return data_centre_total / it_total

"""Year-over-year analysis of the statistics ledger's imported history (bills, manual readings).

Method, so a reader can redo every figure by hand:

- Months. An entry counts in each calendar month it overlaps, in proportion to its days in that month
  (a water bill from 5 Jan to 4 Feb gives 27/31 to January and 4/31 to February; a year's fuel statement
  gives each month its days / 365).
- Sources. For one account (and vehicle) and month, the bill counts if there is one, else the manual
  reading, else an imported meter figure: two sources of the same consumption are never added.
- Completeness. A month has data for an energy type when an entry of that type overlaps it; a quarter or
  a year is complete when all its months have data. A change (year over year, or against the baseline
  year) is given only between two complete periods with a last figure above zero; otherwise it is None
  and the row says which side is incomplete. With ``fill`` missing months are estimated first
  (``fill_gaps``) and every row using an estimate names the side and the method.
- kgce with the report's coal factors (edge_agent/report/kpi.py); heat bills in GJ are converted to the
  factor's MJ (x 1000). Fuel in litres is converted to kg with ``fuel_density_kg_per_l`` (site.yaml
  ``ledger.fuel_density_kg_per_l``); without a density for it, it is listed as left out of kgce.
- Change in kgce: this period's kgce minus last year's (or the baseline's), between complete periods only.
- Per m² and per person: the building's kgce of the period over site.yaml's floor area and occupants
  (kpi.kgce_per_m2, kpi.per_person); water per person in m³.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal, Protocol

from edge_agent.report.kpi import CoalFactorRow, kgce_per_m2, per_person, to_kgce
from edge_agent.store.history import CATEGORY_OF, ENERGY_TYPES, HistoryEntry

__all__ = [
    "IMPLAUSIBLE_RATIO",
    "MIN_COMMON_MONTHS",
    "Analysis",
    "AnalysisRow",
    "Granularity",
    "analyse",
    "factor_for",
    "fill_gaps",
    "fuel_density",
    "monthly_quantities",
    "to_factor_unit",
    "to_history_unit",
]

MIN_COMMON_MONTHS = 6  # months both years must have to scale one year's month to the other
IMPLAUSIBLE_RATIO = 3.0  # a month this many times off every other year's estimate is replaced

Granularity = Literal["month", "quarter", "year"]
_SOURCE_RANK = {"bill": 0, "manual": 1, "meter": 2}
# units a bill may carry -> (the coal factor's unit, multiplier)
_TO_FACTOR_UNIT = {("04000", "GJ"): ("MJ", 1000.0)}


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalysisRow:
    granularity: Granularity
    period: str  # 2025, 2025Q1, 2025-01
    energy_type: str  # an ENERGY_TYPES key, or "total" (kgce of all types)
    unit: str  # the type's unit, "kgce" for total
    quantity: float | None  # None: no data in the period
    complete: bool
    kgce: float | None
    last_year: float | None
    last_year_complete: bool
    change: float | None  # (this - last) / last, both complete
    baseline: float | None
    baseline_complete: bool
    change_vs_baseline: float | None
    per_m2: float | None  # total rows: kgce per m²
    per_person: float | None  # total rows: kgce per person; water rows: m³ per person
    last_year_kgce: float | None = None
    baseline_kgce: float | None = None
    change_kgce: float | None = None  # kgce this - last year, both complete
    change_vs_baseline_kgce: float | None = None
    estimated_in: tuple[str, ...] = ()  # sides holding filled months: "this", "last_year", "baseline"
    methods: tuple[str, ...] = ()  # how those months were filled (see fill_gaps)


@dataclass(frozen=True, slots=True, kw_only=True)
class Analysis:
    year: int
    baseline_year: int | None
    floor_area_m2: float
    occupants: int
    left_out_of_kgce: tuple[str, ...]  # "gasoline L": types whose unit has no factor
    rows: tuple[AnalysisRow, ...]
    fuel_density_kg_per_l: Mapping[str, float] = field(default_factory=dict)  # the densities used


_MonthKey = tuple[str, str, int, int]  # energy_type, unit, year, month


def monthly_quantities(entries: Sequence[HistoryEntry]) -> dict[_MonthKey, float]:
    """Per (type, unit, year, month) the quantity, by the rules of the module docstring."""
    # (type, unit, account, vehicle, year, month) -> {source rank: quantity}
    per: dict[tuple[str, str, str, str, int, int], dict[int, float]] = {}
    for e in entries:
        days = (e.period_end - e.period_start).days
        if days <= 0:
            continue
        d = date(e.period_start.year, e.period_start.month, 1)
        while d < e.period_end:
            nxt = d.replace(day=calendar.monthrange(d.year, d.month)[1]) + timedelta(days=1)
            inside = (min(nxt, e.period_end) - max(d, e.period_start)).days
            if inside > 0:
                key = (e.energy_type, e.unit, e.account, e.vehicle, d.year, d.month)
                by_rank = per.setdefault(key, {})
                rank = _SOURCE_RANK.get(e.source, 9)
                by_rank[rank] = by_rank.get(rank, 0.0) + e.quantity * inside / days
            d = nxt
    out: dict[_MonthKey, float] = {}
    for (etype, unit, _acct, _veh, y, m), by_rank in per.items():
        k = (etype, unit, y, m)
        out[k] = out.get(k, 0.0) + by_rank[min(by_rank)]
    return out


def _trend(have: Mapping[tuple[int, int], float], y: int, m: int, other: int) -> float | None:
    """Month m of year y from the same month of ``other`` scaled by the ratio (None: too few months)."""
    if (other, m) not in have:
        return None
    common = [mm for mm in range(1, 13) if mm != m and (y, mm) in have and (other, mm) in have]
    den = sum(have[(other, mm)] for mm in common)
    if len(common) < MIN_COMMON_MONTHS or den <= 0:
        return None
    return have[(other, m)] * sum(have[(y, mm)] for mm in common) / den


def _implausible(have: Mapping[tuple[int, int], float], y: int, m: int) -> bool:
    """More than IMPLAUSIBLE_RATIO times off the trend estimate from every other year with that month (at
    least two such years: with one, nobody can tell which of the two is wrong)."""
    q = have[(y, m)]
    ests = [_trend(have, y, m, yy) for yy in sorted({yy for yy, mm in have if mm == m and yy != y})]
    usable = [e for e in ests if e is not None and e > 0]
    if len(usable) < 2:
        return False
    return all(q > IMPLAUSIBLE_RATIO * e or q < e / IMPLAUSIBLE_RATIO for e in usable)


def fill_gaps(monthly: Mapping[_MonthKey, float]) -> tuple[dict[_MonthKey, float], dict[_MonthKey, str]]:
    """Fill the months missing between a type's first and last month with data, after replacing implausible
    ones; (filled, method per month).

    Implausible: a month more than ``IMPLAUSIBLE_RATIO`` times above or below what each of at least two other
    years gives for it (their same month scaled by the trend, as below): a bill typed with a digit too many,
    a meter figure in Wh. It is replaced like a missing month; its method reads
    ``implausible(<imported value>)→<method>``.

    Methods, in order of preference:
    - ``same_month_trend:<Y>``: the same month of the nearest other year Y with data in that month (the
      earlier on a tie), scaled by the two years' ratio over the months both have (at least
      ``MIN_COMMON_MONTHS``; the missing month excluded). May 2024 from May 2023 x (2024 / 2023 over the
      other eleven months).
    - ``interpolation``: linear between the nearest months with data before and after.
    Nothing is extrapolated before the first or after the last month with data. Filled months count as
    data for completeness; every row that uses one says so (``estimated_in``, ``methods``).
    """
    out = dict(monthly)
    methods: dict[_MonthKey, str] = {}
    for t, u in {(t, u) for t, u, _y, _m in monthly}:
        have = {(y, m): q for (tt, uu, y, m), q in monthly.items() if (tt, uu) == (t, u)}
        bad = {ym: have[ym] for ym in have if _implausible(have, *ym)}
        for ym in bad:
            del have[ym]
        idx = sorted(y * 12 + m - 1 for y, m in have)
        if not idx:
            continue
        for i in range(idx[0], idx[-1] + 1):
            y, m = divmod(i, 12)
            m += 1
            if (y, m) in have:
                continue
            est: float | None = None
            how = ""
            for _dist, other in sorted((abs(yy - y), yy) for yy, mm in have if mm == m and yy != y)[:1]:
                est = _trend(have, y, m, other)
                how = f"same_month_trend:{other}"
            if est is None:
                before = max(j for j in idx if j < i)
                after = min(j for j in idx if j > i)
                qb, qa = (
                    have[divmod(before, 12)[0], before % 12 + 1],
                    have[divmod(after, 12)[0], after % 12 + 1],
                )
                est = qb + (qa - qb) * (i - before) / (after - before)
                how = "interpolation"
            if (y, m) in bad:
                how = f"implausible({bad[(y, m)]:g})→{how}"
            out[(t, u, y, m)] = est
            methods[(t, u, y, m)] = how
    return out, methods


def _estimated(
    methods: Mapping[_MonthKey, str],
    t: str,
    u: str,
    sides: Sequence[tuple[str, int | None]],
    months: Sequence[int],
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    where: list[str] = []
    how: set[str] = set()
    for name, y in sides:
        if y is None:
            continue
        found = [methods[(t, u, y, m)] for m in months if (t, u, y, m) in methods]
        if found:
            where.append(name)
            how.update(found)
    return tuple(where), tuple(sorted(how))


def _months(granularity: Granularity, year: int) -> list[tuple[str, list[int]]]:
    if granularity == "year":
        return [(str(year), list(range(1, 13)))]
    if granularity == "quarter":
        return [(f"{year}Q{q}", [3 * q - 2, 3 * q - 1, 3 * q]) for q in range(1, 5)]
    return [(f"{year}-{m:02d}", [m]) for m in range(1, 13)]


def _sum(
    monthly: Mapping[_MonthKey, float], etype: str, unit: str, year: int, months: Sequence[int]
) -> tuple[float | None, bool]:
    vals = [monthly.get((etype, unit, year, m)) for m in months]
    have = [v for v in vals if v is not None]
    return (sum(have) if have else None), len(have) == len(vals)


def _change(this: float | None, this_ok: bool, last: float | None, last_ok: bool) -> float | None:
    if this is None or last is None or not (this_ok and last_ok) or last <= 0:
        return None
    return round((this - last) / last, 6)


def _delta(this: float | None, this_ok: bool, other: float | None, other_ok: bool) -> float | None:
    """this - other in kgce, between two complete periods (as ``_change``)."""
    if this is None or other is None or not (this_ok and other_ok):
        return None
    return round(this - other, 3)


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


class _SiteLike(Protocol):
    @property
    def ledger(self) -> Any: ...


def fuel_density(site: _SiteLike) -> dict[str, float]:
    """site.yaml's ``ledger.fuel_density_kg_per_l`` as type -> kg/L."""
    d = site.ledger.fuel_density_kg_per_l
    return {"gasoline": float(d.gasoline), "diesel": float(d.diesel)}


def factor_for(
    etype: str,
    unit: str,
    factors: Mapping[str, CoalFactorRow],
    density: Mapping[str, float] | None = None,
) -> float | None:
    """kgce per ``unit`` of ``etype`` (None: no factor for that unit, e.g. fuel in litres without a
    density; water)."""
    return None if etype == "water" else _kgce(etype, unit, 1.0, factors, density)


def to_factor_unit(
    code: str,
    unit: str,
    factors: Mapping[str, CoalFactorRow],
    density: Mapping[str, float] | None = None,
) -> tuple[str, float]:
    """(the coal factor's unit, multiplier to it) of a quantity of category ``code`` in ``unit``: heat in
    GJ to MJ (x 1000), fuel in litres to kg with its density (``density``: energy type -> kg/L; the
    default factors of liquid fuels are per kg); as it is when the factor is already in ``unit`` (a site's
    own factor per litre) or nothing converts it."""
    f = factors.get(code)
    if f is not None and f.unit.lower() == unit.lower():
        return unit, 1.0
    if unit == "L" and density:
        etype = next((t for t, c in CATEGORY_OF.items() if c == code), "")
        if etype in density:
            return "kg", density[etype]
    return _TO_FACTOR_UNIT.get((code, unit), (unit, 1.0))


def to_history_unit(etype: str, unit: str) -> tuple[str, float] | None:
    """(the unit the history counts ``etype`` in, multiplier) for a quantity in ``unit``; None when it does
    not convert. The ledger books heat in MJ (its coal factor's unit), bills and the history in GJ: the
    inverse of ``to_factor_unit``'s GJ -> MJ, so a heat meter's months enter the history as GJ."""
    if unit in ENERGY_TYPES[etype]:
        return unit, 1.0
    code = CATEGORY_OF[etype]
    for (c, history_unit), (factor_unit, mult) in _TO_FACTOR_UNIT.items():
        if c == code and factor_unit == unit:
            return history_unit, 1.0 / mult
    return None


def _kgce(
    etype: str,
    unit: str,
    qty: float,
    factors: Mapping[str, CoalFactorRow],
    density: Mapping[str, float] | None = None,
) -> float | None:
    code = CATEGORY_OF[etype]
    f_unit, mult = to_factor_unit(code, unit, factors, density)
    res = to_kgce({code: qty * mult}, {code: f_unit}, factors)
    return res.by_category.get(code)


def _total(tot: Mapping[int, tuple[float, bool, bool]], y: int | None) -> tuple[float | None, bool]:
    """(kgce, complete) of one side; a type with data on some side of the comparison must be complete on
    every side for the total to be."""
    if y is None or y not in tot or not tot[y][2]:
        return None, False
    return tot[y][0], tot[y][1]


def analyse(
    entries: Sequence[HistoryEntry],
    *,
    year: int,
    baseline_year: int | None,
    floor_area_m2: float,
    occupants: int,
    factors: Mapping[str, CoalFactorRow],
    fill: bool = False,
    fuel_density_kg_per_l: Mapping[str, float] | None = None,
) -> Analysis:
    """The analysis of ``year``; with ``fill`` missing months are estimated first (``fill_gaps``); fuel in
    litres gets kgce through ``fuel_density_kg_per_l`` (type -> kg/L)."""
    density = dict(fuel_density_kg_per_l or {})

    def kgce(t: str, u: str, q: float) -> float | None:
        return _kgce(t, u, q, factors, density)

    monthly = monthly_quantities(entries)
    methods: dict[_MonthKey, str] = {}
    if fill:
        monthly, methods = fill_gaps(monthly)
    types = sorted(
        {(t, u) for t, u, _y, _m in monthly}, key=lambda tu: (list(ENERGY_TYPES).index(tu[0]), tu[1])
    )
    left_out = tuple(f"{t} {u}" for t, u in types if t != "water" and kgce(t, u, 1.0) is None)
    rows: list[AnalysisRow] = []
    for gran in ("year", "quarter", "month"):
        g: Granularity = gran  # type: ignore[assignment]
        for label, months in _months(g, year):
            tot: dict[int, tuple[float, bool, bool]] = {}  # year -> (kgce, complete, any)
            tot_est: set[str] = set()
            tot_how: set[str] = set()
            for t, u in types:
                this, ok = _sum(monthly, t, u, year, months)
                last, last_ok = _sum(monthly, t, u, year - 1, months)
                base, base_ok = (
                    _sum(monthly, t, u, baseline_year, months) if baseline_year is not None else (None, False)
                )
                kg = kgce(t, u, this) if this is not None else None
                last_kg = kgce(t, u, last) if last is not None else None
                base_kg = kgce(t, u, base) if base is not None else None
                est_in, est_how = _estimated(
                    methods,
                    t,
                    u,
                    (("this", year), ("last_year", year - 1), ("baseline", baseline_year)),
                    months,
                )
                if t != "water" and kgce(t, u, 1.0) is not None:
                    tot_est.update(est_in)
                    tot_how.update(est_how)
                if t != "water" and (this, last, base) != (None, None, None):
                    sides = {year: (this, ok), year - 1: (last, last_ok)}
                    if baseline_year is not None:
                        sides[baseline_year] = (base, base_ok)
                    for y, (q, q_ok) in sides.items():
                        k = kgce(t, u, q if q is not None else 0.0)
                        if k is None:
                            continue  # no factor: listed in left_out_of_kgce
                        acc, acc_ok, acc_any = tot.get(y, (0.0, True, False))
                        tot[y] = (acc + k, acc_ok and q_ok, acc_any or q is not None)
                rows.append(
                    AnalysisRow(
                        granularity=g,
                        period=label,
                        energy_type=t,
                        unit=u,
                        quantity=_r(this),
                        complete=ok,
                        kgce=_r(kg),
                        last_year=_r(last),
                        last_year_complete=last_ok,
                        change=_change(this, ok, last, last_ok),
                        baseline=_r(base),
                        baseline_complete=base_ok,
                        change_vs_baseline=_change(this, ok, base, base_ok),
                        per_m2=None,
                        per_person=_r(per_person(this, occupants), 4)
                        if t == "water" and this is not None
                        else None,
                        last_year_kgce=_r(last_kg),
                        baseline_kgce=_r(base_kg),
                        change_kgce=_delta(kg, ok, last_kg, last_ok),
                        change_vs_baseline_kgce=_delta(kg, ok, base_kg, base_ok),
                        estimated_in=est_in,
                        methods=est_how,
                    )
                )

            this_t, ok_t = _total(tot, year)
            last_t, last_ok_t = _total(tot, year - 1)
            base_t, base_ok_t = _total(tot, baseline_year)
            rows.append(
                AnalysisRow(
                    granularity=g,
                    period=label,
                    energy_type="total",
                    unit="kgce",
                    quantity=_r(this_t),
                    complete=ok_t,
                    kgce=_r(this_t),
                    last_year=_r(last_t),
                    last_year_complete=last_ok_t,
                    change=_change(this_t, ok_t, last_t, last_ok_t),
                    baseline=_r(base_t),
                    baseline_complete=base_ok_t,
                    change_vs_baseline=_change(this_t, ok_t, base_t, base_ok_t),
                    per_m2=_r(kgce_per_m2(this_t, floor_area_m2), 4) if this_t is not None else None,
                    per_person=_r(per_person(this_t, occupants), 4) if this_t is not None else None,
                    last_year_kgce=_r(last_t),
                    baseline_kgce=_r(base_t),
                    change_kgce=_delta(this_t, ok_t, last_t, last_ok_t),
                    change_vs_baseline_kgce=_delta(this_t, ok_t, base_t, base_ok_t),
                    estimated_in=tuple(x for x in ("this", "last_year", "baseline") if x in tot_est),
                    methods=tuple(sorted(tot_how)),
                )
            )
    return Analysis(
        year=year,
        baseline_year=baseline_year,
        floor_area_m2=floor_area_m2,
        occupants=occupants,
        left_out_of_kgce=left_out,
        rows=tuple(rows),
        fuel_density_kg_per_l={t: d for t, d in density.items() if any(tt == t for tt, _u in types)},
    )

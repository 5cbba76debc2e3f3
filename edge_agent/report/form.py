"""The programme's energy and resource consumption form (能源资源消耗统计表) of one year, as XLSX and CSV.

Built from the year's analysis (edge_agent/report/analysis.py: the same months, sources and coal factors)
and the imported entries (fuel per vehicle). Sheet and column names are in Chinese, as the form asks.
Sheet 1 ``能源资源消耗统计表``: per energy type the quantity, unit, coal factor, kgce and the change on last
year; the total; floor area, persons (and their split into establishment and others when site.yaml gives
``persons:``), kgce per m² and per person (persons of both kinds, as the programme counts), water per
person; the fuel densities used for litres. Sheet 2 ``公务用车燃油``: fuel per official vehicle with its
kgce. The CSV holds the same rows (both tables, one after the other).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from edge_agent.report.analysis import Analysis, factor_for
from edge_agent.report.kpi import CoalFactorRow
from edge_agent.store.history import HistoryEntry

__all__ = [
    "ENERGY_ZH",
    "FORM_COLUMNS",
    "VEHICLE_COLUMNS",
    "ConsumptionForm",
    "FormRow",
    "build_form",
    "form_csv",
    "write_xlsx",
]

ENERGY_ZH: dict[str, str] = {
    "electricity": "电力",
    "water": "水",
    "natural_gas": "天然气",
    "heat": "热力",
    "lpg": "液化石油气",
    "gasoline": "汽油",
    "diesel": "柴油",
}
FORM_COLUMNS: tuple[str, ...] = (
    "能源品种",
    "计量单位",
    "实物量",
    "折标系数",
    "折标准煤(kgce)",
    "同比变化(%)",
    "数据完整",
)
VEHICLE_COLUMNS: tuple[str, ...] = ("车辆号牌", "燃料品种", "计量单位", "用量", "折标准煤(kgce)", "账户")


@dataclass(frozen=True, slots=True, kw_only=True)
class FormRow:
    energy_type: str
    name_zh: str
    unit: str
    quantity: float
    factor: float | None  # kgce per unit; None: not converted (water; fuel in litres)
    kgce: float | None
    change: float | None  # on last year, both years complete
    complete: bool
    estimated: tuple[str, ...] = ()  # methods of months filled in this year's figure


@dataclass(frozen=True, slots=True, kw_only=True)
class VehicleRow:
    vehicle: str
    fuel_zh: str
    unit: str
    quantity: float
    kgce: float | None  # None: litres without a density
    account: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumptionForm:
    year: int
    building_id: str
    name: str
    rows: tuple[FormRow, ...]
    total_kgce: float
    total_change: float | None
    floor_area_m2: float
    occupants: int
    establishment: int | None  # 编制人数, when site.yaml splits the persons
    others: int | None  # 其他人员
    kgce_per_m2: float
    kgce_per_person: float
    water_per_person: float | None
    left_out: tuple[str, ...]
    vehicles: tuple[VehicleRow, ...]
    fuel_density: Mapping[str, float]  # kg/L used for fuel in litres, by type
    density_source: str = ""


def build_form(
    analysis: Analysis,
    entries: Sequence[HistoryEntry],
    *,
    building_id: str,
    name: str,
    factors: Mapping[str, CoalFactorRow],
    persons: tuple[int, int] | None = None,
    density_source: str = "",
) -> ConsumptionForm:
    """The form of ``analysis.year``; ``persons`` = (establishment, others) when site.yaml splits them."""
    density = analysis.fuel_density_kg_per_l
    year_rows = [r for r in analysis.rows if r.granularity == "year" and r.quantity is not None]
    rows = tuple(
        FormRow(
            energy_type=r.energy_type,
            name_zh=ENERGY_ZH[r.energy_type],
            unit=r.unit,
            quantity=r.quantity,
            factor=factor_for(r.energy_type, r.unit, factors, density),
            kgce=r.kgce,
            change=r.change,
            complete=r.complete,
            estimated=r.methods if "this" in r.estimated_in else (),
        )
        for r in year_rows
        if r.energy_type != "total" and r.quantity is not None
    )
    total = next((r for r in year_rows if r.energy_type == "total"), None)
    water = next((r for r in year_rows if r.energy_type == "water"), None)
    vehicles: dict[tuple[str, str, str, str], float] = {}
    for e in entries:
        if e.vehicle and e.period_start.year <= analysis.year and e.period_end.year >= analysis.year:
            days = (e.period_end - e.period_start).days
            lo, hi = date(analysis.year, 1, 1), date(analysis.year + 1, 1, 1)
            inside = (min(e.period_end, hi) - max(e.period_start, lo)).days
            if inside > 0 and days > 0:
                k = (e.vehicle, e.energy_type, e.unit, e.account)
                vehicles[k] = vehicles.get(k, 0.0) + e.quantity * inside / days
    total_kgce = total.quantity if total is not None and total.quantity is not None else 0.0
    return ConsumptionForm(
        year=analysis.year,
        building_id=building_id,
        name=name,
        rows=rows,
        total_kgce=total_kgce,
        total_change=total.change if total is not None else None,
        floor_area_m2=analysis.floor_area_m2,
        occupants=analysis.occupants,
        establishment=persons[0] if persons else None,
        others=persons[1] if persons else None,
        kgce_per_m2=round(total_kgce / analysis.floor_area_m2, 4),
        kgce_per_person=round(total_kgce / analysis.occupants, 4),
        water_per_person=water.per_person if water is not None else None,
        left_out=analysis.left_out_of_kgce,
        vehicles=tuple(
            VehicleRow(
                vehicle=v,
                fuel_zh=ENERGY_ZH[t],
                unit=u,
                quantity=round(q, 3),
                kgce=_kg(factor_for(t, u, factors, density), q),
                account=a,
            )
            for (v, t, u, a), q in sorted(vehicles.items())
        ),
        fuel_density=density,
        density_source=density_source if density else "",
    )


def _kg(factor: float | None, q: float) -> float | None:
    return None if factor is None else round(q * factor, 3)


def _pct(v: float | None) -> float | None:
    return None if v is None else round(v * 100, 2)


def _table(form: ConsumptionForm) -> list[list[object]]:
    """Sheet 1 as rows of cells (numbers stay numbers)."""
    out: list[list[object]] = [
        [f"公共机构能源资源消耗统计表（{form.year}年）"],
        ["建筑编码", form.building_id, "单位名称", form.name],
        list(FORM_COLUMNS),
    ]
    for r in form.rows:
        done = ("估算(" + "、".join(r.estimated) + ")") if r.estimated else ("是" if r.complete else "否")
        out.append([r.name_zh, r.unit, r.quantity, r.factor, r.kgce, _pct(r.change), done])
    out.append(["综合能耗合计", "kgce", None, None, form.total_kgce, _pct(form.total_change), None])
    out.append([])
    out.append(["建筑面积(m²)", form.floor_area_m2])
    out.append(["用能人数(人，含编外人员)", form.occupants])
    out.append(["其中：编制人数(人)", form.establishment])
    out.append(["其中：其他人员(人)", form.others])
    out.append(["单位建筑面积能耗(kgce/m²)", form.kgce_per_m2])
    out.append(["人均综合能耗(kgce/人)", form.kgce_per_person])
    out.append(["人均用水量(m³/人)", form.water_per_person])
    if form.fuel_density:
        text = "、".join(f"{ENERGY_ZH.get(t, t)} {d:g}" for t, d in sorted(form.fuel_density.items()))
        out.append(["燃油密度(kg/L，升折千克)", text, form.density_source])
    if form.left_out:
        names = [f"{ENERGY_ZH.get(t, t)}({u})" for t, _, u in (x.partition(" ") for x in form.left_out)]
        out.append(["未折标准煤(无该计量单位的折标系数)", "、".join(names)])
    return out


def _vehicles(form: ConsumptionForm) -> list[list[object]]:
    rows: list[list[object]] = [list(VEHICLE_COLUMNS)]
    rows += [[v.vehicle, v.fuel_zh, v.unit, v.quantity, v.kgce, v.account] for v in form.vehicles]
    return rows


def form_csv(form: ConsumptionForm) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for row in _table(form):
        w.writerow(["" if c is None else c for c in row])
    w.writerow([])
    w.writerow(["公务用车燃油"])
    for row in _vehicles(form):
        w.writerow(row)
    return buf.getvalue()


def write_xlsx(form: ConsumptionForm, path: Path) -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "能源资源消耗统计表"
    for row in _table(form):
        ws.append(row)
    ws.column_dimensions["A"].width = 30
    for col in "BCDEFG":
        ws.column_dimensions[col].width = 16
    vs = wb.create_sheet("公务用车燃油")
    for row in _vehicles(form):
        vs.append(row)
    wb.save(path)

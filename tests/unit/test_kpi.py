"""KPI arithmetic against hand-computed figures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from edge_agent.report.kpi import (
    DEFAULT_COAL_FACTORS,
    annual_kpis,
    coal_table,
    covered_days,
    days_with_data,
    kgce_per_m2,
    per_person,
    pue,
    to_kgce,
)


@dataclass(frozen=True)
class T:
    kgce_per_m2: float | None = 18.0
    kgce_per_person: float | None = 300.0
    water_m3_per_person: float | None = None


@dataclass(frozen=True)
class F:
    kgce_per_unit: float
    unit: str
    source: str


def test_default_factors_carry_sources() -> None:
    assert DEFAULT_COAL_FACTORS["01000"].kgce_per_unit == 0.1229
    assert all(f.source for f in DEFAULT_COAL_FACTORS.values())


def test_default_factors_cover_the_fuels_with_their_editions() -> None:
    f = DEFAULT_COAL_FACTORS
    assert {c: f[c].kgce_per_unit for c in ("07000", "08000", "10000", "11000", "12000", "04000")} == {
        "07000": 0.7143,  # raw coal, kg
        "08000": 1.7143,  # LPG, kg
        "10000": 1.4714,  # gasoline, kg
        "11000": 1.4714,  # kerosene, kg
        "12000": 1.4571,  # diesel, kg
        "04000": 0.03412,  # heat, MJ
    }
    # 1.2143 kgce/m3 is the 2008 edition's natural gas value, and labelled so (2020 gives a range)
    assert f["03000"].kgce_per_unit == 1.2143 and f["03000"].edition == "GB/T 2589-2008"
    assert all(row.edition.startswith("GB/T 2589-") for row in f.values())
    r = to_kgce({"08000": 10.0, "09000": 3.0}, {"08000": "t"}, f)  # LPG in tonnes; town gas: no factor
    assert r.total == 0 and r.left_out == {"08000": 10.0, "09000": 3.0}
    assert (r.unit_mismatch, r.no_factor) == (["08000"], ["09000"])


def test_kgce_by_category_water_never_energy() -> None:
    table = coal_table({"03000": F(1.1, "m3", "supplier 2026 heating value")})
    r = to_kgce(
        {"01000": 100_000.0, "03000": 2_000.0, "02000": 999.0, "06000": 5.0},
        {"01000": "kWh", "03000": "m3"},
        table,
    )
    assert r.by_category == {"01000": pytest.approx(12_290.0), "03000": pytest.approx(2_200.0)}
    assert r.total == pytest.approx(14_490.0)
    assert r.no_factor == ["06000"]
    assert r.left_out == {"06000": 5.0}  # not silently gone: the report warns with the quantity
    assert table["03000"].source == "supplier 2026 heating value"
    assert to_kgce({"01000": 1.0}, {"01000": "MWh"}, table).unit_mismatch == ["01000"]


def test_annual_kpis_share_and_linear_projection() -> None:
    # 73 days of 2026 (365 days) used 86_000 kgce in an 8_600 m2 building of 320 people
    rows = {
        r.key: r
        for r in annual_kpis(
            kgce_to_date=86_000.0,
            water_m3_to_date=1_600.0,
            floor_area_m2=8_600,
            occupants=320,
            targets=T(),
            year=2026,
            days_covered=73,
        )
    }
    a = rows["kgce_per_m2"]
    assert a.to_date == pytest.approx(10.0)
    assert a.share_of_target == pytest.approx(10 / 18)
    assert a.projection == pytest.approx(50.0)  # x 365/73 = 5
    assert a.on_track is False
    p = rows["kgce_per_person"]
    assert p.to_date == pytest.approx(268.75) and p.projection == pytest.approx(1343.75)
    w = rows["water_m3_per_person"]
    assert w.to_date == pytest.approx(5.0) and w.target is None and w.on_track is None
    with pytest.raises(ValueError):
        annual_kpis(
            kgce_to_date=1,
            water_m3_to_date=None,
            floor_area_m2=0,
            occupants=1,
            targets=None,
            year=2026,
            days_covered=1,
        )


def test_no_days_no_projection_and_leap_year() -> None:
    (r, _) = annual_kpis(
        kgce_to_date=0.0,
        water_m3_to_date=None,
        floor_area_m2=100,
        occupants=2,
        targets=T(),
        year=2028,
        days_covered=0,
    )
    assert r.projection is None and r.on_track is None
    (r, _) = annual_kpis(
        kgce_to_date=100.0,
        water_m3_to_date=None,
        floor_area_m2=100,
        occupants=2,
        targets=T(),
        year=2028,
        days_covered=183,
    )
    assert r.projection == pytest.approx(1.0 * 366 / 183)


def test_covered_days_and_pue() -> None:
    assert covered_days(date(2026, 7, 1), date(2026, 10, 1), None) == 92
    assert covered_days(date(2026, 7, 1), date(2026, 10, 1), date(2026, 8, 1)) == 31
    assert covered_days(None, date(2026, 10, 1), None) == 0
    assert pue(140.0, 100.0) == pytest.approx(1.4)
    assert pue(140.0, 0.0) is None


def test_days_with_data_counts_a_started_day_whole() -> None:
    tz = ZoneInfo("Asia/Shanghai")
    first = datetime(2026, 7, 1, tzinfo=tz)
    assert days_with_data(None, date(2026, 10, 1)) == 0
    assert days_with_data((first, datetime(2026, 8, 1, tzinfo=tz)), date(2026, 10, 1)) == 31
    assert days_with_data((first, datetime(2026, 8, 1, 0, 15, tzinfo=tz)), date(2026, 10, 1)) == 32
    assert days_with_data((first, datetime(2026, 11, 5, tzinfo=tz)), date(2026, 10, 1)) == 92


def test_intensities_per_m2_and_per_person() -> None:
    assert kgce_per_m2(86_000.0, 8_600) == pytest.approx(10.0)
    assert per_person(1_600.0, 320) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        kgce_per_m2(1.0, 0)
    with pytest.raises(ValueError):
        per_person(1.0, 0)


def test_fewer_than_fourteen_days_no_projection_and_no_verdict() -> None:
    def first(days: int) -> object:
        return annual_kpis(
            kgce_to_date=5.0,
            water_m3_to_date=None,
            floor_area_m2=100,
            occupants=2,
            targets=T(),
            year=2026,
            days_covered=days,
        )[0]

    demo_day = first(1)  # a 10-hour demo day is not a year, and is not "on track"
    assert demo_day.projection is None and demo_day.on_track is None  # type: ignore[attr-defined]
    assert first(13).projection is None  # type: ignore[attr-defined]
    assert first(14).projection == pytest.approx(0.05 * 365 / 14)  # type: ignore[attr-defined]

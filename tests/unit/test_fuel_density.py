"""Fuel in litres through the density setting (issue 17): the same fuel entered in L or in kg gives the
same kgce, and a year's total is the sum of its types' kgce (property tests over random months)."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.report.analysis import analyse, factor_for
from edge_agent.report.kpi import coal_table
from edge_agent.store.history import HistoryEntry

FACTORS = coal_table()


def _month(etype: str, unit: str, m: int, q: float, account: str = "A") -> HistoryEntry:
    end = date(2025, m + 1, 1) if m < 12 else date(2026, 1, 1)
    return HistoryEntry(
        energy_type=etype,
        account=account,
        vehicle="",
        period_start=date(2025, m, 1),
        period_end=end,
        source="bill",
        quantity=q,
        unit=unit,
        note="",
        file="t.csv",
        row=m + 1,
    )


def test_factor_per_litre_is_density_times_factor_per_kg() -> None:
    assert factor_for("gasoline", "L", FACTORS) is None  # no density: no kgce
    assert factor_for("gasoline", "L", FACTORS, {"gasoline": 0.73}) == 0.73 * 1.4714
    assert factor_for("diesel", "L", FACTORS, {"gasoline": 0.73, "diesel": 0.84}) == 0.84 * 1.4571
    assert factor_for("diesel", "kg", FACTORS, {"diesel": 0.84}) == 1.4571  # kg needs no density


litres = st.lists(st.floats(min_value=0, max_value=5000, allow_nan=False), min_size=12, max_size=12)


@settings(max_examples=50, deadline=None)
@given(
    fuel=st.sampled_from(["gasoline", "diesel"]),
    density=st.floats(min_value=0.6, max_value=0.95),
    months=litres,
    kwh=litres,
)
def test_litres_and_kilograms_give_the_same_kgce_and_the_total_adds_up(
    fuel: str, density: float, months: list[float], kwh: list[float]
) -> None:
    elec = [_month("electricity", "kWh", m, q, "E") for m, q in enumerate(kwh, start=1)]
    in_l = [_month(fuel, "L", m, q) for m, q in enumerate(months, start=1)]
    in_kg = [_month(fuel, "kg", m, q * density) for m, q in enumerate(months, start=1)]

    def year(entries: list[HistoryEntry]) -> dict[str, float | None]:
        a = analyse(
            entries,
            year=2025,
            baseline_year=None,
            floor_area_m2=1000,
            occupants=10,
            factors=FACTORS,
            fuel_density_kg_per_l={fuel: density},
        )
        assert a.left_out_of_kgce == ()
        return {r.energy_type: r.kgce for r in a.rows if r.granularity == "year"}

    by_l, by_kg = year(elec + in_l), year(elec + in_kg)
    assert by_l[fuel] is not None and by_kg[fuel] is not None
    assert abs(by_l[fuel] - by_kg[fuel]) <= 0.002  # each rounded to 3 decimals
    assert by_l["total"] is not None and by_l["electricity"] is not None
    assert abs(by_l["total"] - (by_l["electricity"] + by_l[fuel])) <= 0.002

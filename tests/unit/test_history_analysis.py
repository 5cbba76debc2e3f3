"""Year-over-year analysis of imported history (issue 17 item 4) against figures computed by hand.

The fixture tests/fixtures/ledger/bills-2023-2025.csv: 2023 monthly bills; 2024 = 2023 x 0.96 and 2025 =
2023 x 0.9312 (0.96 x 0.97), each rounded to 1 kWh / m3; May 2024 has no electricity, water or gas bill,
November 2023 no gas bill; two vehicles' yearly gasoline in litres; one heat bill in December 2025.
Coal factors (the report's defaults): electricity 0.1229 kgce/kWh, natural gas 1.2143 kgce/m3,
heat 0.03412 kgce/MJ.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.report.analysis import Analysis, AnalysisRow, analyse
from edge_agent.report.kpi import coal_table
from edge_agent.store.history import parse_rows, read_table

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ledger" / "bills-2023-2025.csv"


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    header, rows = read_table(FIXTURE)
    entries = parse_rows(FIXTURE.name, header, rows)
    return analyse(
        entries, year=2025, baseline_year=2023, floor_area_m2=12000, occupants=400, factors=coal_table()
    )


def _row(a: Analysis, period: str, etype: str) -> AnalysisRow:
    (row,) = [r for r in a.rows if r.period == period and r.energy_type == etype]
    return row


def test_quarter_electricity_year_over_year_and_vs_baseline(analysis: Analysis) -> None:
    r = _row(analysis, "2025Q1", "electricity")
    # 2025: 48422 + 43766 + 40042; 2024: 49920 + 45120 + 41280; 2023: 52000 + 47000 + 43000
    assert (r.quantity, r.last_year, r.baseline) == (132230.0, 136320.0, 142000.0)
    assert r.change == -0.030003  # -4090 / 136320
    assert r.change_vs_baseline == -0.068803  # -9770 / 142000
    assert r.kgce == 16251.067  # 132230 x 0.1229


def test_quarter_total_kgce_per_m2_and_per_person(analysis: Analysis) -> None:
    r = _row(analysis, "2025Q1", "total")
    # gas 2025Q1: 3911 + 3632 + 2607 = 10150 m3 x 1.2143 = 12325.145; electricity 16251.067
    assert r.quantity == 28576.212 and r.complete
    # 2024Q1: 136320 x 0.1229 = 16753.728; gas 4032 + 3744 + 2688 = 10464 x 1.2143 = 12706.4352
    assert r.last_year == 29460.163
    assert r.change == -0.030005  # (28576.212 - 29460.1632) / 29460.1632
    assert r.per_m2 == 2.3814  # 28576.212 / 12000
    assert r.per_person == 71.4405  # 28576.212 / 400


def test_a_missing_bill_gives_no_change_instead_of_a_false_one(analysis: Analysis) -> None:
    may = _row(analysis, "2025-05", "electricity")
    assert may.quantity == 42835.0 and may.last_year is None and may.change is None
    assert may.change_vs_baseline == -0.068804  # (42835 - 46000) / 46000
    q2 = _row(analysis, "2025Q2", "electricity")
    assert q2.last_year == 95040.0 and not q2.last_year_complete and q2.change is None  # April + June only
    year = _row(analysis, "2025", "natural_gas")
    assert year.baseline_complete is False and year.change_vs_baseline is None  # Nov 2023 missing


def test_water_per_person_and_fuel_left_out_of_kgce(analysis: Analysis) -> None:
    w = _row(analysis, "2025", "water")
    assert (
        w.quantity == 7212.0 and w.per_person == 18.03 and w.kgce is None
    )  # 7212 / 400; water is not energy
    fuel = _row(analysis, "2025", "gasoline")
    # 1680.5 x 0.9312 = 1564.8816 -> 1564.9 and 1222.0 x 0.9312 = 1137.9264 -> 1137.9 (rounded in the file)
    assert fuel.quantity == 2702.8 and fuel.kgce is None
    assert analysis.left_out_of_kgce == ("gasoline L",)
    heat = _row(analysis, "2025", "heat")
    assert heat.kgce == 13996.024 and not heat.complete  # 410.2 GJ = 410200 MJ x 0.03412; December only


@pytest.fixture(scope="module")
def filled() -> Analysis:
    header, rows = read_table(FIXTURE)
    entries = parse_rows(FIXTURE.name, header, rows)
    return analyse(
        entries,
        year=2025,
        baseline_year=2023,
        floor_area_m2=12000,
        occupants=400,
        factors=coal_table(),
        fill=True,
    )


def test_a_missing_month_is_filled_from_the_same_month_scaled_by_the_trend(filled: Analysis) -> None:
    q2 = _row(filled, "2025Q2", "electricity")
    # May 2024 = May 2023 46000 x (2024 / 2023 over the other eleven months: 547200 / 570000 = 0.96) = 44160;
    # 2024 and 2025 are equally near 2024: the earlier year is used
    assert q2.last_year == 39360.0 + 44160.0 + 55680.0
    assert q2.last_year_complete and q2.change == -0.03  # (135024 - 139200) / 139200
    assert q2.estimated_in == ("last_year",) and q2.methods == ("same_month_trend:2023",)
    q1 = _row(filled, "2025Q1", "electricity")
    assert q1.estimated_in == () and q1.methods == ()  # nothing filled there: unchanged
    assert q1 == _row(
        analyse(
            parse_rows(FIXTURE.name, *read_table(FIXTURE)),
            year=2025,
            baseline_year=2023,
            floor_area_m2=12000,
            occupants=400,
            factors=coal_table(),
        ),
        "2025Q1",
        "electricity",
    )


def test_filled_months_mark_every_total_that_uses_them(filled: Analysis) -> None:
    q4 = _row(filled, "2025Q4", "total")
    assert "baseline" in q4.estimated_in  # November 2023's gas bill is estimated
    gas = _row(filled, "2025Q4", "natural_gas")
    assert gas.baseline_complete and gas.methods == ("same_month_trend:2024",)


def test_interpolation_when_no_other_year_has_the_month() -> None:
    from datetime import date

    from edge_agent.report.analysis import fill_gaps, monthly_quantities
    from edge_agent.store.history import HistoryEntry

    def e(m: int, q: float) -> HistoryEntry:
        start = date(2025, m, 1)
        end = date(2025, m + 1, 1)
        return HistoryEntry(
            energy_type="water", account="W", vehicle="", period_start=start, period_end=end, source="bill",
            quantity=q, unit="m3", note="", file="f.csv", row=m,
        )  # fmt: skip

    monthly = monthly_quantities([e(1, 100.0), e(4, 400.0)])
    out, methods = fill_gaps(monthly)
    assert out[("water", "m3", 2025, 2)] == 200.0 and out[("water", "m3", 2025, 3)] == 300.0
    assert methods == {("water", "m3", 2025, 2): "interpolation", ("water", "m3", 2025, 3): "interpolation"}
    assert ("water", "m3", 2025, 5) not in out  # never extrapolated past the last month with data


def test_an_implausible_month_is_replaced_and_says_what_it_was() -> None:
    from datetime import date

    from edge_agent.report.analysis import fill_gaps, monthly_quantities
    from edge_agent.store.history import HistoryEntry

    def e(y: int, m: int, q: float) -> HistoryEntry:
        end = date(y + 1, 1, 1) if m == 12 else date(y, m + 1, 1)
        return HistoryEntry(
            energy_type="electricity", account="E", vehicle="", period_start=date(y, m, 1), period_end=end,
            source="bill", quantity=q, unit="kWh", note="", file="f.csv", row=m,
        )  # fmt: skip

    entries = [e(y, m, 1000.0 * f) for y, f in ((2023, 1.0), (2024, 0.9), (2025, 0.8)) for m in range(1, 13)]
    entries[12 + 6] = e(2024, 7, 9000.0)  # July 2024 typed with a digit too many (900 -> 9000)
    out, methods = fill_gaps(monthly_quantities(entries))
    # July 2024 from July 2023 (nearest, earlier on the tie) x 9900 / 11000 over the other eleven months
    assert out[("electricity", "kWh", 2024, 7)] == pytest.approx(900.0)
    assert methods == {("electricity", "kWh", 2024, 7): "implausible(9000)→same_month_trend:2023"}
    # two years only: nobody can tell which one is wrong, so nothing is replaced
    _, methods2 = fill_gaps(monthly_quantities([x for x in entries if x.period_start.year < 2025]))
    assert methods2 == {}


def test_ledger_units_convert_to_the_history_units() -> None:
    """The ledger's heat unit (MJ, the coal factor's) converts to the history's GJ; others stay or do not
    convert."""
    from edge_agent.report.analysis import to_history_unit

    assert to_history_unit("heat", "MJ") == ("GJ", 0.001)
    assert to_history_unit("heat", "GJ") == ("GJ", 1.0)
    assert to_history_unit("electricity", "kWh") == ("kWh", 1.0)
    assert to_history_unit("electricity", "MJ") is None

"""`edge-agent ledger import|template|export`: bills and history of past years, from real files into a real
state database: errors as FILE:ROW:COLUMN with exit 2, all or nothing, idempotent, provenance, export."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from pathlib import Path

import openpyxl
import pytest

from edge_agent.cli.app import main
from edge_agent.config.load import load_config
from edge_agent.store.db import open_state_db
from edge_agent.store.history import TEMPLATE_COLUMNS, HistoryEntry, list_entries

ROOT = Path(__file__).resolve().parents[2]
SITE = str(ROOT / "config" / "site.yaml")
FIX = ROOT / "tests" / "fixtures" / "ledger"
HISTORY = FIX / "bills-2023-2025.csv"
ERRORS = FIX / "bills-errors.csv"


def _key(e: HistoryEntry) -> tuple[object, ...]:
    return (e.energy_type, e.account, e.vehicle, e.period_start, e.period_end, e.source, e.quantity)


def _import(db: Path, *files: Path) -> int:
    return main(["ledger", "import", "-c", SITE, "--db", str(db), *map(str, files)])


def test_three_years_of_bills_import_with_provenance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "state.db"
    assert _import(db, HISTORY) == 0
    assert "111 rows imported (111 new, 0 replaced)" in capsys.readouterr().out
    conn = open_state_db(db)
    try:
        entries = list_entries(conn)
    finally:
        conn.close()
    assert len(entries) == 111
    elec = [e for e in entries if e.energy_type == "electricity"]
    assert len(elec) == 35  # 36 months, May 2024's bill is missing
    assert date(2024, 5, 1) not in {e.period_start for e in elec}
    jan23 = next(e for e in elec if e.period_start == date(2023, 1, 1))
    assert (jan23.period_end, jan23.quantity, jan23.unit, jan23.source) == (
        date(2023, 2, 1),
        52000.0,
        "kWh",
        "bill",
    )
    assert (jan23.file, jan23.row) == ("bills-2023-2025.csv", 2)  # the spreadsheet's row, header is row 1
    assert jan23.imported_at
    fuel = [e for e in entries if e.energy_type == "gasoline"]
    assert {e.vehicle for e in fuel} == {"粤A12345", "粤A67890"}
    assert all(
        e.period_end - e.period_start == (date(e.period_start.year + 1, 1, 1) - e.period_start) for e in fuel
    )


def test_reimport_replaces_rows_instead_of_adding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "state.db"
    assert _import(db, HISTORY) == 0
    # a corrected copy of the same file, under another name: one figure changed
    corrected = tmp_path / "bills-corrected.csv"
    text = HISTORY.read_text(encoding="utf-8").replace(
        "2023-01,,electricity,52000,", "2023-01,,electricity,52100,"
    )
    corrected.write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert _import(db, corrected) == 0
    assert "111 rows imported (0 new, 111 replaced)" in capsys.readouterr().out
    conn = open_state_db(db)
    try:
        entries = list_entries(conn)
    finally:
        conn.close()
    assert len(entries) == 111
    jan23 = next(e for e in entries if e.energy_type == "electricity" and e.period_start == date(2023, 1, 1))
    assert jan23.quantity == 52100.0 and jan23.file == "bills-corrected.csv"


def test_bad_rows_are_reported_by_file_row_column_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "state.db"
    assert _import(db, ERRORS) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    expected = [
        "bills-errors.csv:3:period_start: '2024-13' is not a date (YYYY-MM or YYYY-MM-DD)",
        "bills-errors.csv:4:energy_type: 'electricty' is not one of electricity, water, natural_gas, heat, "
        "lpg, gasoline, diesel",
        "bills-errors.csv:5:quantity: -12 is negative",
        "bills-errors.csv:6:unit: 'kWh' is not a unit of water (m3)",
        "bills-errors.csv:7:quantity: '4 800' is not a number",
        "bills-errors.csv:8:period_end: 2024-05-01 is before period_start 2024-05-10",
        "bills-errors.csv:9:account: required, empty",
        "bills-errors.csv:9:source: 'invoice' is not one of bill, manual, meter",
        "bills-errors.csv:10:period_start: the same entry as row 2",
        "bills-errors.csv:11:vehicle: a vehicle is given for water: only fuel rows name a vehicle",
    ]
    for line in expected:
        assert line in err, line
    assert "bills-errors.csv:2:" not in err  # the good row has no error
    assert "not imported (10 error(s)); nothing written" in err
    conn = open_state_db(db)
    try:
        assert list_entries(conn) == []
    finally:
        conn.close()


def test_unknown_and_missing_columns_name_the_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "odd.csv"
    bad.write_text(
        "month,energy_type,quantity,unit,account,source\n2024-01,water,1,m3,W,bill\n", encoding="utf-8"
    )
    assert _import(tmp_path / "s.db", bad) == 2
    err = capsys.readouterr().err
    assert "odd.csv:1:month: unknown column" in err
    assert "odd.csv:1:period_start: required column missing" in err
    other = tmp_path / "bills.txt"
    other.write_text("x", encoding="utf-8")
    assert _import(tmp_path / "s.db", other) == 2
    assert "bills.txt:1:-: unknown file type '.txt'" in capsys.readouterr().err


def test_xlsx_import_reads_dates_and_numbers_as_cells(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import datetime

    path = tmp_path / "bills.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(list(TEMPLATE_COLUMNS))
    ws.append(["2024-01", None, "electricity", 50112, "kWh", "3301-0042-77", None, "bill", None])
    ws.append(
        [
            datetime(2024, 1, 5),
            datetime(2024, 2, 4),
            "water",
            612.5,
            "m³",
            "W-118",
            None,
            "bill",
            "as printed",
        ]
    )
    ws.append(["2024-02", None, "heat", "lots", "GJ", "HEAT-1", None, "bill", None])
    wb.save(path)
    assert _import(tmp_path / "s.db", path) == 2
    assert "bills.xlsx:4:quantity: 'lots' is not a number" in capsys.readouterr().err
    ws.delete_rows(4)
    wb.save(path)
    assert _import(tmp_path / "s.db", path) == 0
    conn = open_state_db(tmp_path / "s.db")
    try:
        (elec, water) = list_entries(conn)
    finally:
        conn.close()
    assert (elec.quantity, elec.period_start, elec.period_end) == (
        50112.0,
        date(2024, 1, 1),
        date(2024, 2, 1),
    )
    assert (water.quantity, water.unit, water.period_start, water.period_end, water.row) == (
        612.5,
        "m3",
        date(2024, 1, 5),
        date(2024, 2, 5),  # the bill's last day is included
        3,
    )


def test_template_is_importable_as_csv_and_xlsx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ledger", "template"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ",".join(TEMPLATE_COLUMNS)
    (tmp_path / "t.csv").write_text(out, encoding="utf-8")
    assert main(["ledger", "template", "-o", str(tmp_path / "t.xlsx")]) == 0
    ws = openpyxl.load_workbook(tmp_path / "t.xlsx").active
    assert ws is not None
    assert [c.value for c in ws[1]] == list(TEMPLATE_COLUMNS)
    capsys.readouterr()
    assert _import(tmp_path / "a.db", tmp_path / "t.csv") == 0
    assert _import(tmp_path / "b.db", tmp_path / "t.xlsx") == 0
    assert "5 rows imported (5 new, 0 replaced)" in capsys.readouterr().out


def test_export_round_trips_with_provenance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "state.db"
    assert _import(db, HISTORY) == 0
    capsys.readouterr()
    assert (
        main(["ledger", "export", "-c", SITE, "--db", str(db), "--from", "2025-01", "--to", "2026-01"]) == 0
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 12 * 3 + 2 + 1  # 2025: electricity, water, gas monthly, two vehicles, heat
    gas = next(r for r in rows if r["energy_type"] == "gasoline" and r["vehicle"] == "粤A12345")
    assert (gas["period_start"], gas["period_end"], gas["source"], gas["file"]) == (
        "2025-01-01",
        "2025-12-31",
        "manual",
        "bills-2023-2025.csv",
    )
    assert gas["row"] and gas["imported_at"]
    # the export imports again into a fresh database and gives the same entries
    out = tmp_path / "export.csv"
    assert main(["ledger", "export", "-c", SITE, "--db", str(db), "-o", str(out)]) == 0
    db2 = tmp_path / "copy.db"
    assert _import(db2, out) == 0
    conn, conn2 = open_state_db(db), open_state_db(db2)
    try:
        assert [_key(e) for e in list_entries(conn)] == [_key(e) for e in list_entries(conn2)]
    finally:
        conn.close()
        conn2.close()


def test_export_without_database_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ledger", "export", "-c", SITE, "--db", str(tmp_path / "none.db")]) == 2
    assert "no state database" in capsys.readouterr().err


def test_analysis_command_prints_the_year_over_year_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "state.db"
    assert _import(db, HISTORY) == 0
    capsys.readouterr()
    argv = ["ledger", "analysis", "-c", SITE, "--db", str(db), "--year", "2025", "--baseline", "2023"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2025Q1    electricity  kWh       132,230.0     16,251.1     136,320.0    -3.0%" in out
    assert "95,040.0*" in out  # Q2 2024 misses May: marked, no change computed
    assert "not in kgce" not in out  # fuel in litres: converted with the density setting
    assert "gasoline in L converted to kg at 0.73 kg/L" in out
    assert main([*argv, "--by", "month", "--json"]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert main([*argv, "--by", "year", "--json"]) == 0
    years = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    fuel = next(r for r in years if r["energy_type"] == "gasoline")
    assert fuel["kgce"] == 2903.137  # 2702.8 L x 0.73 kg/L x 1.4714 kgce/kg
    may = next(r for r in lines if r["period"] == "2025-05" and r["energy_type"] == "electricity")
    assert (may["quantity"], may["last_year"], may["change"], may["change_vs_baseline"]) == (
        42835.0,
        None,
        None,
        -0.068804,
    )


def test_analysis_baseline_defaults_to_the_sites_baseline_year(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.yaml"
    for name in ("site.yaml", "policy.yaml"):
        (tmp_path / name).write_text((ROOT / "config" / name).read_text(encoding="utf-8"), encoding="utf-8")
    site.write_text(site.read_text(encoding="utf-8") + "\nledger:\n  baseline_year: 2023\n", encoding="utf-8")
    db = tmp_path / "state.db"
    assert _import(db, HISTORY) == 0
    capsys.readouterr()
    argv = ["ledger", "analysis", "-c", str(site), "--db", str(db), "--year", "2025", "--by", "year"]

    def electricity(*extra: str) -> dict[str, object]:
        assert main([*argv, "--json", *extra]) == 0
        rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
        return next(r for r in rows if r["energy_type"] == "electricity")

    by_site = electricity()
    assert by_site == electricity("--baseline", "2023")  # site.yaml's ledger.baseline_year
    assert by_site["baseline"] is not None and by_site["change_vs_baseline"] is not None
    assert electricity("--baseline", "2024")["baseline"] == by_site["last_year"]  # the flag still wins
    none = electricity("--baseline", "0")
    assert (none["baseline"], none["change_vs_baseline"]) == (None, None)
    assert main(argv) == 0
    assert capsys.readouterr().out.split("\n")[0].split()[-4] == "2023"  # the table's header names it


def test_consumption_form_xlsx_read_back_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "state.db"
    assert _import(db, HISTORY) == 0
    xlsx = tmp_path / "form.xlsx"
    assert main(["ledger", "form", "-c", SITE, "--db", str(db), "--year", "2025", "-o", str(xlsx)]) == 0
    wb = openpyxl.load_workbook(xlsx)
    assert wb.sheetnames == ["能源资源消耗统计表", "公务用车燃油"]
    ws = wb["能源资源消耗统计表"]
    cells = [[c.value for c in row] for row in ws.iter_rows()]
    assert cells[0][0] == "公共机构能源资源消耗统计表（2025年）"
    assert cells[2] == [
        "能源品种",
        "计量单位",
        "实物量",
        "折标系数",
        "折标准煤(kgce)",
        "同比变化(%)",
        "数据完整",
    ]
    by_name = {row[0]: row for row in cells if row and row[0]}
    # 2025 electricity: the 12 monthly bills, 52000 ... x 0.9312 rounded = 573619 kWh x 0.1229
    assert by_name["电力"][1:6] == ["kWh", 573619.0, 0.1229, 70497.775, None]  # 2024 misses May: no change
    # litres x 0.73 kg/L x 1.4714 kgce/kg: 1.074122 kgce/L; 2702.8 L -> 2903.137 kgce
    assert by_name["汽油"][1:6] == ["L", 2702.8, pytest.approx(1.074122), 2903.137, -3.0]
    assert by_name["热力"][3] == pytest.approx(34.12) and by_name["热力"][6] == "否"  # GJ; December only
    assert by_name["综合能耗合计"][4] == 113868.676  # 70497.775 + 26471.74 + 13996.024 + 2903.137
    site = load_config(SITE).site
    assert by_name["建筑面积(m²)"][1] == site.floor_area_m2
    assert by_name["用能人数(人，含编外人员)"][1] == site.occupants
    assert by_name["单位建筑面积能耗(kgce/m²)"][1] == round(113868.676 / site.floor_area_m2, 4)
    assert by_name["人均用水量(m³/人)"][1] == round(7212 / site.occupants, 4)
    assert "未折标准煤(无该计量单位的折标系数)" not in by_name
    assert by_name["燃油密度(kg/L，升折千克)"][1] == "汽油 0.73"  # only the fuels in litres
    assert by_name["其中：编制人数(人)"][1] is None  # config/site.yaml gives a single count
    vehicles = [[c.value for c in row] for row in wb["公务用车燃油"].iter_rows()]
    assert vehicles == [
        ["车辆号牌", "燃料品种", "计量单位", "用量", "折标准煤(kgce)", "账户"],
        ["粤A12345", "汽油", "L", 1564.9, 1680.894, "fuel-card"],  # 1564.9 x 1.074122
        ["粤A67890", "汽油", "L", 1137.9, 1222.243, "fuel-card"],
    ]
    out_csv = tmp_path / "form.csv"
    assert main(["ledger", "form", "-c", SITE, "--db", str(db), "--year", "2025", "-o", str(out_csv)]) == 0
    rows = list(csv.reader(out_csv.read_text(encoding="utf-8").splitlines()))
    assert ["电力", "kWh", "573619.0", "0.1229", "70497.775", "", "是"] in rows
    assert ["粤A67890", "汽油", "L", "1137.9", "1222.243", "fuel-card"] in rows
    assert (
        main(["ledger", "form", "-c", SITE, "--db", str(db), "--year", "2025", "-o", str(tmp_path / "f.pdf")])
        == 2
    )


def test_form_with_fill_marks_the_estimated_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "state.db"
    assert _import(db, HISTORY) == 0
    out = tmp_path / "form-2024.csv"
    argv = ["ledger", "form", "-c", SITE, "--db", str(db), "--year", "2024", "-o", str(out)]
    assert main([*argv, "--fill"]) == 0
    rows = list(csv.reader(out.read_text(encoding="utf-8").splitlines()))
    elec = next(r for r in rows if r and r[0] == "电力")
    # 2024 without May (547200) + May estimated as 46000 x 0.96 = 44160
    assert elec[2] == "591360.0" and elec[6] == "估算(same_month_trend:2023)"
    assert main(argv) == 0  # without --fill: the year is incomplete, nothing estimated
    rows = list(csv.reader(out.read_text(encoding="utf-8").splitlines()))
    elec = next(r for r in rows if r and r[0] == "电力")
    assert elec[2] == "547200.0" and elec[6] == "否"

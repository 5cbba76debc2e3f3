"""The report's history analysis and the annual work summary (issue 17 leftovers), from the 3-year bill
fixture imported into a real state database, checked against figures computed by hand.

tests/fixtures/ledger/bills-2023-2025.csv: 2023 monthly bills; 2024 = 2023 x 0.96 and 2025 = 2023 x 0.9312,
each rounded to 1 kWh / m3; May 2024 has no electricity, water or gas bill, November 2023 no gas bill; two
vehicles' yearly gasoline in litres (2023: 2902.5 L, 2024: 2786.4 L, 2025: 2702.8 L); one heat bill in
December 2025. Factors: electricity 0.1229 kgce/kWh, natural gas 1.2143 kgce/m3, gasoline 0.73 kg/L x
1.4714 kgce/kg = 1.074122 kgce/L. The site: config/site.yaml (8600 m², 320 persons) with
``ledger.baseline_year: 2023`` and ``persons: {establishment: 280, others: 40}``.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge_agent.cli.app import main
from edge_agent.core.clock import FakeClock
from edge_agent.store.audit import AuditKind, AuditLog
from edge_agent.store.db import open_state_db

ROOT = Path(__file__).resolve().parents[2]
HISTORY = ROOT / "tests" / "fixtures" / "ledger" / "bills-2023-2025.csv"
TZ = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    conf = tmp_path / "config"
    shutil.copytree(ROOT / "config", conf)
    path = conf / "site.yaml"
    text = path.read_text(encoding="utf-8").replace(
        "occupants: 320\n", "occupants: 320\npersons: {establishment: 280, others: 40}\n", 1
    )
    path.write_text(text + "\nledger:\n  baseline_year: 2023\n", encoding="utf-8")
    return path


@pytest.fixture
def db(tmp_path: Path, site: Path) -> Path:
    path = tmp_path / "state.db"
    assert main(["ledger", "import", "-c", str(site), "--db", str(path), str(HISTORY)]) == 0
    return path


def _report(site: Path, db: Path, out: Path, period: str, fmt: str, *extra: str) -> dict[str, Path]:
    argv = ["report", "-c", str(site), "--db", str(db), "--period", period, "--format", fmt]
    assert main([*argv, "--out", str(out), *extra]) == 0
    return {p.name.split(period)[-1]: p for p in out.iterdir()}


def _rows(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["period"], r["energy_type"]): r for r in doc["history"]["rows"]}


def test_quarter_report_year_over_year_and_vs_baseline_match_the_hand_computed_figures(
    site: Path, db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _report(site, db, tmp_path / "out", "2025Q1", "json,csv,html")
    doc = json.loads(files[".json"].read_text(encoding="utf-8"))
    assert (doc["history"]["year"], doc["history"]["baseline_year"], doc["history"]["filled"]) == (
        2025,
        2023,
        False,
    )
    assert doc["history"]["meter_months"] == 0  # no meter data in this database
    assert doc["history"]["fuel_density"] == {"gasoline": 0.73}
    rows = _rows(doc)
    assert {p for p, _ in rows} == {"2025Q1", "2025-01", "2025-02", "2025-03"}  # the quarter and its months
    e = rows[("2025Q1", "electricity")]
    # 2025: 48422 + 43766 + 40042; 2024: 49920 + 45120 + 41280; 2023: 52000 + 47000 + 43000
    assert (e["quantity"], e["last_year"], e["baseline"]) == (132230.0, 136320.0, 142000.0)
    assert (e["change"], e["change_vs_baseline"]) == (-0.030003, -0.068803)  # -4090/136320, -9770/142000
    assert e["kgce"] == 16251.067  # 132230 x 0.1229
    assert e["change_kgce"] == -502.661  # (132230 - 136320) x 0.1229
    assert e["change_vs_baseline_kgce"] == -1200.733  # (132230 - 142000) x 0.1229
    fuel = rows[("2025Q1", "gasoline")]
    # the year's statement spread by days: 2702.8 x 90/365 = 666.444 L x 1.074122 = 715.842 kgce
    assert (fuel["quantity"], fuel["kgce"]) == (666.444, 715.842)
    t = rows[("2025Q1", "total")]
    # electricity 16251.067 + gas 10150 m3 x 1.2143 = 12325.145 + gasoline 715.842
    assert t["quantity"] == 29292.054 and t["complete"]
    # 2024Q1: 136320 x 0.1229 = 16753.728 + 10464 x 1.2143 = 12706.435 + 2786.4 x 91/366 x 1.074122 = 744.145
    assert t["last_year"] == 30204.308
    assert t["change"] == -0.030203 and t["change_kgce"] == -912.254
    assert (t["per_m2"], t["per_person"]) == (3.4061, 91.5377)  # 29292.054 / 8600, / 320
    assert t["last_year_per_m2"] == 3.5121  # 30204.308 / 8600
    water = rows[("2025Q1", "water")]
    assert water["per_person"] == 5.1188 and water["kgce"] is None  # 1638 m3 / 320; water is not energy
    assert doc["building"]["establishment"] == 280 and doc["building"]["others"] == 40
    assert doc["work_summary"] is None  # quarterly report

    got = {
        (r["period"], r["energy_type"]): r
        for r in csv.DictReader(files["-history.csv"].open(encoding="utf-8"))
    }
    assert got[("2025Q1", "electricity")]["change_kgce"] == "-502.661"
    assert got[("2025Q1", "total")]["quantity"] == "29292.054"
    html = files[".html"].read_text(encoding="utf-8")
    assert "3a 历史数据同比分析 History: year over year (2025)" in html
    assert 'data-key="history.2025Q1.total.change_kgce" data-value="-912.254"' in html
    assert "编制 establishment 280 + 其他 others 40" in html


def test_a_missing_month_marks_the_figures_incomplete_and_fill_marks_them_estimated(
    site: Path, db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _report(site, db, tmp_path / "plain", "2024Q2", "json,csv,html")
    may = _rows(json.loads(files[".json"].read_text(encoding="utf-8")))[("2024Q2", "electricity")]
    assert may["quantity"] == 39360.0 + 55680.0 and not may["complete"] and may["change"] is None
    assert may["estimated_in"] == []
    assert (
        'data-key="history.2024Q2.electricity.quantity" data-value="95040.0" data-estimated="0">95,040.0*<'
        in (files[".html"].read_text(encoding="utf-8"))
    )

    files = _report(site, db, tmp_path / "filled", "2024Q2", "json,csv,html", "--fill")
    doc = json.loads(files[".json"].read_text(encoding="utf-8"))
    q2 = _rows(doc)[("2024Q2", "electricity")]
    # May 2024 = May 2023 46000 x (2024 / 2023 over the other eleven months = 0.96) = 44160
    assert q2["quantity"] == 39360.0 + 44160.0 + 55680.0 and q2["complete"]
    assert q2["change_vs_baseline"] == -0.04  # 139200 / 145000 - 1
    assert (q2["estimated_in"], q2["methods"]) == (["this"], ["same_month_trend:2023"])
    assert doc["history"]["filled"] and "same_month_trend:2023" in doc["history"]["methods"]
    got = {
        (r["period"], r["energy_type"]): r
        for r in csv.DictReader(files["-history.csv"].open(encoding="utf-8"))
    }
    assert got[("2024-05", "electricity")]["estimated"] == "1"
    assert got[("2024-05", "electricity")]["methods"] == "same_month_trend:2023"
    assert got[("2024-04", "electricity")]["estimated"] == "0"
    html = files[".html"].read_text(encoding="utf-8")
    assert (
        '<td class="n est" data-key="history.2024Q2.electricity.quantity" data-value="139200.0" '
        'data-estimated="1">139,200.0~</td>'
    ) in html
    assert "~ 含估算月份 includes estimated months (shaded): same_month_trend:2023" in html


def _audit_2025(db: Path) -> None:
    conn = open_state_db(db)
    try:
        clock = FakeClock(datetime(2025, 7, 15, 19, 0, tzinfo=TZ))
        log = AuditLog(conn=conn, clock=clock)
        for subject, rule, before, after, result in (
            ("f2-ac1.setpoint", "hvac.summer_min_cooling", 22.0, 26.0, "ok"),
            ("f2-ac2.setpoint", "hvac.summer_min_cooling", 24.0, 26.0, "ok"),
            ("f1-ac1.power", "hvac.after_hours", True, False, "ok"),
            ("f3-l2", "lighting.after_hours_sweep", True, False, "ok"),
            ("f3-l1", "lighting.after_hours_sweep", True, None, "timeout"),  # failed: not a measure
        ):
            log.append(AuditKind.WRITE, subject=subject, before=before, after=after, rule=rule,
                       reason="test", result=result)  # fmt: skip
            clock.advance(600)
    finally:
        conn.close()


def test_annual_report_has_the_work_summary_data_section(
    site: Path, db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _audit_2025(db)
    files = _report(site, db, tmp_path / "out", "2025", "json,html")
    doc = json.loads(files[".json"].read_text(encoding="utf-8"))
    ws = doc["work_summary"]
    assert (ws["year"], ws["baseline_year"], ws["audit_records"]) == (2025, 2023, 5)
    total = ws["total"]
    # 2025: electricity 573619 x 0.1229 = 70497.775, gas 21800 x 1.2143 = 26471.74, heat 410.2 GJ x 1000 x
    # 0.03412 = 13996.024 (December only: incomplete), gasoline 2702.8 x 1.074122 = 2903.137
    assert total["quantity"] == 113868.676 and not total["complete"] and total["change"] is None
    targets = {t["key"]: t for t in ws["targets"]}
    assert targets["kgce_per_m2"]["achieved"] == 13.2405  # 113868.676 / 8600
    assert targets["kgce_per_m2"]["source"] == "history" and not targets["kgce_per_m2"]["complete"]
    # heat has December only: the year is incomplete and "met" is not decided
    assert targets["kgce_per_m2"]["target"] == 18.0 and targets["kgce_per_m2"]["met"] is None
    water_target = targets["water_m3_per_person"]
    assert (water_target["achieved"], water_target["complete"]) == (22.5375, True)  # 7212 / 320
    assert water_target["met"] is False  # target 20 m3 per person
    water = ws["water"]
    assert water["change_vs_baseline"] == -0.068819  # 7212 / 7745 - 1
    # section 1 (bills only): the heat bill in GJ is converted to the factor's MJ, nothing left out
    cats = {c["code"]: c for c in doc["totals"]["by_category"]}
    assert (cats["04000"]["unit"], cats["04000"]["kgce"]) == ("GJ", 13996.024)
    assert doc["totals"]["left_out"] == []
    measures = {m["key"]: m for m in ws["measures"]}
    assert measures["setpoint_summer_26"]["count"] == 2
    assert measures["hvac_after_hours"]["count"] == 1
    assert measures["lighting_sweep"]["count"] == 1
    assert measures["setpoint_winter_20"]["count"] == 0
    assert all(
        m["saving_kgce"] is None and m["saving_method"].startswith("未估算 not estimated")
        for m in measures.values()
    )
    html = files[".html"].read_text(encoding="utf-8")
    assert "9 年度工作总结（数据部分）Annual work summary: data (2025)" in html
    assert 'data-key="summary.measure.setpoint_summer_26" data-value="2"' in html
    assert 'data-key="summary.total.baseline" data-value="104093.622"' in html


def test_meter_months_enter_the_history_where_nothing_was_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["report", "-c", str(ROOT / "config" / "site.yaml"), "--demo", "--period", "2026-07"]
    assert main([*argv, "--format", "json", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    doc = json.loads(path.read_text(encoding="utf-8"))
    cats = {c["code"]: c for c in doc["totals"]["by_category"]}
    rows = _rows(doc)
    assert doc["history"]["imported_entries"] == 0 and doc["history"]["meter_months"] == 2  # kWh and m3
    assert rows[("2026-07", "electricity")]["quantity"] == pytest.approx(cats["01000"]["total"], abs=0.001)
    assert rows[("2026-07", "water")]["quantity"] == pytest.approx(cats["02000"]["total"], abs=0.001)
    assert rows[("2026-07", "electricity")]["last_year"] is None  # the demo has no last year


CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed (make system-deps installs it as root: "
    "apt-get install chromium fonts-noto-cjk)",
)


@needs_chromium
def test_pdf_text_layer_holds_the_new_headings_and_totals(
    site: Path, db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pypdf import PdfReader

    _audit_2025(db)
    files = _report(site, db, tmp_path / "out", "2025", "json,pdf", "--fill")
    doc = json.loads(files[".json"].read_text(encoding="utf-8"))
    # Noto CJK maps some ideographs to Kangxi radical code points in the text layer: NFKC folds them back
    text = unicodedata.normalize("NFKC", "\n".join(p.extract_text() for p in PdfReader(files[".pdf"]).pages))
    for heading in (
        "3a 历史数据同比分析 History: year over year (2025)",
        "较基准年 Against the baseline year 2023",
        "单位面积与人均 Per m2 and per person",
        "9 年度工作总结(数据部分)Annual work summary: data (2025)",
        "目标与完成 Targets and achieved",
        "节能措施(审计记录)Measures recorded by the agent",
        "未估算 not estimated",
        "燃油按密度折算 gasoline in litres at 0.73 kg/L",
    ):
        assert heading in text, heading
    total = doc["work_summary"]["total"]
    # with --fill the year's missing heat months are still missing (one bill: nothing to scale or
    # interpolate from), so the total stays incomplete (*)
    assert f"{total['quantity']:,.1f}*" in text
    assert f"{total['baseline']:,.1f}" in text
    for r in doc["history"]["rows"]:
        if r["period"] == "2025" and r["kgce"] is not None:
            assert f"{r['kgce']:,.1f}" in text, r["energy_type"]


_OVERFLOW_PROBE = """
<script>
window.addEventListener('load', () => {
  const body = document.body.getBoundingClientRect();
  const out = [];
  document.querySelectorAll('[data-key^="history."], [data-key^="summary."]').forEach((td) => {
    const table = td.closest('table');
    if (table && table.getBoundingClientRect().right > body.right + 1) out.push(td.dataset.key);
  });
  const pre = document.createElement('pre');
  pre.id = 'overflow';
  pre.textContent = JSON.stringify({
    cells: document.querySelectorAll('[data-key^="history."], [data-key^="summary."]').length,
    out, page: document.documentElement.scrollWidth > window.innerWidth});
  document.body.appendChild(pre);
});
</script>
"""


@needs_chromium
def test_history_and_work_summary_tables_fit_the_page_in_a_browser(
    site: Path, db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess

    assert CHROMIUM is not None
    files = _report(site, db, tmp_path / "out", "2025", "html")
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1200,900",
    ]

    def probe(page: str) -> dict[str, Any]:
        path = tmp_path / "probe.html"
        path.write_text(page.replace("</body>", _OVERFLOW_PROBE + "</body>"), encoding="utf-8")
        done = subprocess.run(
            [*cmd, "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        m = re.search(r'<pre id="overflow">(.*?)</pre>', done.stdout, re.S)
        assert m is not None, done.stdout[-2000:]
        got: dict[str, Any] = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
        return got

    html = files[".html"].read_text(encoding="utf-8")
    got = probe(html)
    assert got["cells"] > 100  # the sections are there
    assert got["out"] == [] and got["page"] is False
    # control: squeezed to 500 px the same tables stick out, and the probe sees it
    squeezed = probe(html.replace("max-width:1100px", "max-width:500px"))
    assert squeezed["out"] != []


def test_form_shows_the_persons_split_and_the_fuel_in_kgce(
    site: Path, db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import openpyxl

    xlsx = tmp_path / "form.xlsx"
    assert (
        main(
            ["ledger", "form", "-c", str(site), "--db", str(db), "--year", "2024", "--fill", "-o", str(xlsx)]
        )
        == 0
    )
    wb = openpyxl.load_workbook(xlsx)
    by_name = {
        row[0]: row for row in ([c.value for c in r] for r in wb["能源资源消耗统计表"].iter_rows()) if row[0]
    }
    assert by_name["用能人数(人，含编外人员)"][1] == 320
    assert (by_name["其中：编制人数(人)"][1], by_name["其中：其他人员(人)"][1]) == (280, 40)
    # per person counts everyone (STANDARDS.md: including non-establishment staff)
    assert by_name["人均综合能耗(kgce/人)"][1] == round(by_name["综合能耗合计"][4] / 320, 4)
    # 2024 gasoline 2786.4 L x 0.73 x 1.4714 = 2992.934 kgce; May's electricity estimated and marked
    assert by_name["汽油"][4] == 2992.934
    assert by_name["电力"][2] == 591360.0 and by_name["电力"][6] == "估算(same_month_trend:2023)"
    assert by_name["燃油密度(kg/L，升折千克)"][1:3] == [
        "汽油 0.73",
        "typical densities (STANDARDS.md; GB/T 2589-2020 gives the factors per kg)",
    ]


def test_a_fuel_bill_in_litres_gets_kgce_in_the_totals_and_the_history(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bill = tmp_path / "diesel.csv"
    bill.write_text(
        "period_start,period_end,energy_type,quantity,unit,account,vehicle,source,note\n"
        "2025-03,,diesel,100,L,card-2,,bill,\n",
        encoding="utf-8",
    )
    db = tmp_path / "fuel.db"
    assert main(["ledger", "import", "-c", str(site), "--db", str(db), str(bill)]) == 0
    files = _report(site, db, tmp_path / "out", "2025Q1", "json")
    doc = json.loads(files[".json"].read_text(encoding="utf-8"))
    diesel = {c["code"]: c for c in doc["totals"]["by_category"]}["12000"]
    # 100 L x 0.84 kg/L x 1.4571 kgce/kg = 122.3964
    assert (diesel["unit"], diesel["total"], diesel["kgce"]) == ("L", 100.0, 122.396)
    assert doc["totals"]["left_out"] == []
    assert _rows(doc)[("2025-03", "diesel")]["kgce"] == 122.396
    assert doc["history"]["fuel_density"] == {"diesel": 0.84}


def test_a_heat_meter_in_mj_enters_the_history_in_gj(tmp_path: Path) -> None:
    """The ledger books heat in MJ (its coal factor's unit); the history counts heat in GJ, as bills do: a
    heat meter's whole month enters it converted (it used to be left out)."""
    from drivers.base import Quality, Reading
    from edge_agent.config.load import load_config
    from edge_agent.core.validate import ValidatedReading
    from edge_agent.store.ledger import Ledger

    conf = tmp_path / "config"
    shutil.copytree(ROOT / "config", conf)
    site = conf / "site.yaml"
    heat = (
        "devices:\n"
        "  - protocol: modbus\n"
        "    id: heat-meter\n"
        "    host: 127.0.0.1\n"
        "    port: 15099\n"
        "    unit_id: 1\n"
        "    points:\n"
        '      - {id: heat.energy, name: "热量表 Heat meter", table: input, address: 0, type: float32, '
        'unit: GJ, role: energy, energy_code: "04000", cumulative: true}\n'
    )
    text = site.read_text(encoding="utf-8").replace("\ndevices:\n", "\n" + heat, 1)
    site.write_text(text, encoding="utf-8")
    cfg = load_config(site)
    db = tmp_path / "state.db"
    conn = open_state_db(db)
    try:
        # July 2026 (local) every 15 minutes, 0.0025 GJ a slot: 2976 slots = 7.44 GJ = 7440 MJ
        t0 = datetime(2026, 7, 1, tzinfo=TZ).astimezone(UTC)
        n = 31 * 96
        Ledger.from_config(cfg, conn).ingest(
            ValidatedReading(
                Reading("heat.energy", 100 + 0.0025 * i, t0 + timedelta(minutes=15 * i), Quality.GOOD)
            )
            for i in range(n + 1)
        )
    finally:
        conn.close()
    files = _report(site, db, tmp_path / "out", "2026-07", "json")
    doc = json.loads(files[".json"].read_text(encoding="utf-8"))
    assert {c["code"]: c["unit"] for c in doc["totals"]["by_category"]}["04000"] == "MJ"
    row = _rows(doc)[("2026-07", "heat")]
    assert row["unit"] == "GJ" and row["quantity"] == pytest.approx(7.44, abs=1e-6)
    assert row["kgce"] == pytest.approx(7440 * 0.03412, abs=1e-3)  # GJ back to the factor's MJ
    assert doc["history"]["meter_months"] == 1 and doc["history"]["left_out"] == []

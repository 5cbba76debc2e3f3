"""Reconciling sources (issue 17 item 2): where a period has meter data and an imported bill, the report
shows both and the difference; ``ledger.statistics_source: bill`` makes the bill the statistics' figure; a
category with bills and no meter (gas here), or whose meters booked less than 95 % of the period (water here,
and electricity when the gateway saw one day of the month), uses its bills either way. Real files, a real
state database."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from drivers.base import Quality, Reading
from edge_agent.config.load import load_config
from edge_agent.report.build import build_report
from edge_agent.report.html import render_html
from edge_agent.report.model import Report
from edge_agent.store.db import open_state_db
from edge_agent.store.history import import_file
from edge_agent.store.ledger import Ledger, parse_period

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
TZ = ZoneInfo("Asia/Shanghai")

BILLS = """period_start,period_end,energy_type,quantity,unit,account,vehicle,source,note
2026-07,,electricity,30000,kWh,3301-0042-77,,bill,
2026-07,,natural_gas,310,m3,G-9,,bill,no gas meter on the gateway
2026-06-16,2026-07-15,water,300,m3,W-118,,bill,half of it in July
"""


@dataclass(frozen=True)
class _VR:  # the ledger takes anything with .reading and .flags
    reading: Reading
    flags: tuple[str, ...] = ()


def _report(tmp_path: Path, statistics_source: str | None, days: int = 31) -> Report:
    shutil.copy(FIXTURES / "config" / "modbus_site.yaml", tmp_path / "site.yaml")
    shutil.copy(FIXTURES / "config" / "modbus_policy.yaml", tmp_path / "modbus_policy.yaml")
    if statistics_source:
        with (tmp_path / "site.yaml").open("a", encoding="utf-8") as fh:
            fh.write(f"ledger:\n  statistics_source: {statistics_source}\n")
    cfg = load_config(tmp_path / "site.yaml")
    (tmp_path / "bills.csv").write_text(BILLS, encoding="utf-8")
    conn = open_state_db(tmp_path / "state.db")
    try:
        ledger = Ledger.from_config(cfg, conn)
        t0 = datetime(2026, 7, 1, tzinfo=TZ)
        # the main meter over `days` days of July: 10 kWh per 15 minutes = 960 kWh a day
        ledger.ingest(
            [
                _VR(Reading("main.energy", 5000.0 + 10 * i, t0 + timedelta(minutes=15 * i), Quality.GOOD))
                for i in range(96 * days + 1)
            ]
        )
        import_file(conn, tmp_path / "bills.csv", now=datetime(2026, 8, 1, tzinfo=TZ))
        return build_report(cfg=cfg, ledger=ledger, period=parse_period("2026-07"))
    finally:
        conn.close()


def test_meters_and_bills_side_by_side_meter_wins_by_default(tmp_path: Path) -> None:
    report = _report(tmp_path, None)
    assert report.sources.statistics_source == "meter"
    rows = {r.code: r for r in report.sources.rows}
    elec = rows["01000"]
    figures = (elec.meter, elec.bill, elec.difference, elec.difference_share, elec.used, elec.meter_coverage)
    assert figures == (
        29760.0,
        30000.0,
        -240.0,
        -0.008,
        "meter",
        1.0,
    )
    gas = rows["03000"]
    assert (gas.meter, gas.bill, gas.difference, gas.used) == (None, 310.0, None, "bill")
    water = rows["02000"]
    assert water.bill == pytest.approx(150.0)  # 15 of the bill's 30 days fall in July
    # the water meter booked nothing in July: its 0 m3 must not stand for the month
    assert (water.meter, water.meter_coverage, water.used) == (0.0, 0.0, "bill")
    totals = {c.code: c.total for c in report.totals.by_category}
    assert totals["01000"] == 29760.0 and totals["03000"] == 310.0
    assert totals["02000"] == pytest.approx(150.0)


def test_meters_covering_a_day_of_the_month_do_not_stand_for_it(tmp_path: Path) -> None:
    report = _report(tmp_path, None, days=1)
    elec = {r.code: r for r in report.sources.rows}["01000"]
    assert (elec.meter, elec.used) == (960.0, "bill")
    assert elec.meter_coverage == pytest.approx(96 / 2976, abs=1e-4)
    assert {c.code: c.total for c in report.totals.by_category}["01000"] == 30000.0
    html = render_html(report)
    assert "(表计覆盖 meters cover 3 %)" in html


def test_statistics_source_bill_makes_the_bill_count(tmp_path: Path) -> None:
    report = _report(tmp_path, "bill")
    rows = {r.code: r for r in report.sources.rows}
    assert rows["01000"].used == "bill" and rows["01000"].difference == -240.0
    totals = {c.code: c for c in report.totals.by_category}
    assert totals["01000"].total == 30000.0
    assert totals["02000"].total == pytest.approx(150.0)
    html = render_html(report)
    assert "1a 表计与账单 Meters and bills" in html
    assert 'data-key="sources.01000.bill" data-value="30000.0"' in html
    assert 'data-key="sources.01000.difference" data-value="-240.0"' in html


def test_no_bills_no_section(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "config" / "modbus_site.yaml", tmp_path / "site.yaml")
    shutil.copy(FIXTURES / "config" / "modbus_policy.yaml", tmp_path / "modbus_policy.yaml")
    cfg = load_config(tmp_path / "site.yaml")
    conn = open_state_db(tmp_path / "state.db")
    try:
        report = build_report(cfg=cfg, ledger=Ledger.from_config(cfg, conn), period=parse_period("2026-07"))
    finally:
        conn.close()
    assert report.sources.rows == ()
    assert "Meters and bills" not in render_html(report)


def test_findings_are_named_for_the_reader(tmp_path: Path) -> None:
    """The enforcement table names the audit trail's finding kinds in words (a counter step is a data-quality
    finding, not an enforcement one); a kind the report does not know still prints as it is."""
    from edge_agent.core.clock import FakeClock
    from edge_agent.store.audit import AuditLog

    shutil.copy(FIXTURES / "config" / "modbus_site.yaml", tmp_path / "site.yaml")
    shutil.copy(FIXTURES / "config" / "modbus_policy.yaml", tmp_path / "modbus_policy.yaml")
    cfg = load_config(tmp_path / "site.yaml")
    conn = open_state_db(tmp_path / "state.db")
    try:
        audit = AuditLog(conn=conn, clock=FakeClock(datetime(2026, 7, 3, 9, 0, tzinfo=TZ)))
        audit.append_finding("counter_step", subject="main.energy", rule="ledger", reason="step of 500 kWh")
        audit.append_finding("brand_new_kind", subject="x", rule="test", reason="a future finding")
        ledger = Ledger.from_config(cfg, conn)
        records = list(audit.records())
        report = build_report(cfg=cfg, ledger=ledger, period=parse_period("2026-07"), audit_records=records)
    finally:
        conn.close()
    html = render_html(report)
    assert "发现 Finding: 计量跳变（数据质量） counter step, data quality (counter_step)" in html
    assert "发现 Finding: brand_new_kind" in html

"""A simulated quarter through the agent's path -> ledger -> report; figures checked against the model.

Day 1 is polled over Modbus TCP (bundled simulator on 127.0.0.1, port 0, the real driver); the rest of
the quarter steps the same building with sim.season and decodes the register words the simulator
would serve with the agent's codec (a quarter over sockets would take minutes). Every reading goes
through the Validator and Ledger.ingest, as in the agent.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from drivers.base import Quality, Reading
from drivers.modbus.codec import decode
from drivers.modbus.driver import EndpointPool, ModbusTcpDriver
from drivers.modbus.options import ModbusDevice, ModbusPoint
from edge_agent.cli.report import add_report_arguments, report_main
from edge_agent.config.load import LoadedConfig, load_config
from edge_agent.core.clock import FakeClock
from edge_agent.core.validate import Validator
from edge_agent.store.audit import AuditKind, AuditLog
from edge_agent.store.db import open_state_db
from edge_agent.store.ledger import Ledger
from sim.building import Building
from sim.modbus_map import REGISTER_MAP
from sim.runner import Simulator
from sim.season import season
from tests.sitetext import example_site_without

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")
Q_START = datetime(2026, 7, 1, tzinfo=TZ)
Q_END = datetime(2026, 10, 1, tzinfo=TZ)
DAY1 = Q_START + timedelta(days=1)
SEED = 3
METER_OF = {  # site.yaml point -> the model's meter
    "main.energy": "main",
    "f1.ls.energy": "f1-ls",
    "f2.ls.energy": "f2-ls",
    "f3.ls.energy": "f3-ls",
    "f1.ac.energy": "f1-ac",
    "f2.ac.energy": "f2-ac",
    "f3.ac.energy": "f3-ac",
    "dc.energy": "dc",
    "it.energy": "it",
    "water.volume": "water",
}
# f1.ls misses 2 intervals (filled, estimated); water misses 3 h (too long: left unfilled)
SHORT_GAP = (
    "f1.ls.energy",
    datetime(2026, 8, 10, 10, 0, tzinfo=TZ),
    datetime(2026, 8, 10, 10, 45, tzinfo=TZ),
)
LONG_GAP = ("water.volume", datetime(2026, 8, 12, 9, 0, tzinfo=TZ), datetime(2026, 8, 12, 12, 15, tzinfo=TZ))

TREE = """
meters:
  - {point: main.energy, institution: "示例机关 Demo agency"}
  - {point: f1.ls.energy, parent: main.energy}
  - {point: f2.ls.energy, parent: main.energy}
  - {point: f3.ls.energy, parent: main.energy}
  - {point: f1.ac.energy, parent: main.energy}
  - {point: f2.ac.energy, parent: main.energy}
  - {point: f3.ac.energy, parent: main.energy}
  - {point: dc.energy, parent: main.energy}
  - {point: it.energy, parent: dc.energy, it_load: true}
  - {point: water.volume}
targets: {kgce_per_m2: 18.0, kgce_per_person: 310, water_m3_per_person: 20, source: "test targets"}
ledger: {max_gap_intervals: 4, outliers: exclude}
"""


@dataclass
class Quarter:
    cfg: LoadedConfig
    db: Path
    site: Path
    integrals: dict[str, float]  # model meter id -> exact energy over the quarter
    short_gap_energy: float
    long_gap_energy: float


def _in_gap(pid: str, t: datetime) -> bool:
    return any(pid == g[0] and g[1] < t < g[2] for g in (SHORT_GAP, LONG_GAP))


def _meter_points(cfg: LoadedConfig) -> list[tuple[ModbusDevice, ModbusPoint]]:
    out = []
    for dev in cfg.site.devices:
        assert isinstance(dev, ModbusDevice)
        out += [(dev, p) for p in dev.points if p.id in METER_OF and isinstance(p, ModbusPoint)]
    return out


async def _day_one_over_tcp(cfg: LoadedConfig, validator: Validator, ledger: Ledger) -> Building:
    """Poll every meter device every 15 minutes of sim time for one day, through the Modbus driver."""
    sim = Simulator(seed=SEED, start=Q_START, speed=0)
    await sim.start(modbus_port=0)
    pool = EndpointPool()
    drivers: list[tuple[ModbusTcpDriver, list[ModbusPoint]]] = []
    try:
        now = Q_START
        for dev in cfg.site.devices:
            assert isinstance(dev, ModbusDevice)
            pts = [p for p in dev.points if p.id in METER_OF]
            if pts:
                moved = dev.model_copy(update={"port": sim.modbus_port})
                drivers.append(
                    (ModbusTcpDriver(device=moved, pool=pool, clock=lambda: now.astimezone(UTC)), pts)
                )
        while now <= DAY1:
            sim.step_to(now)
            for drv, pts in drivers:
                readings = await drv.read(pts)
                assert all(r.quality is Quality.GOOD for r in readings), readings
                ledger.ingest(validator.validate_many(readings))
            now += timedelta(minutes=15)
    finally:
        for drv, _ in drivers:
            await drv.close()
        await pool.close()
        await sim.stop()
    return sim.building


@pytest.fixture(scope="module")
def quarter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quarter]:
    d = tmp_path_factory.mktemp("quarter")
    # The all-Modbus variant of the example site: day one is polled over Modbus TCP below.
    fixtures = ROOT / "tests" / "fixtures" / "config"
    shutil.copy(fixtures / "modbus_policy.yaml", d / "modbus_policy.yaml")
    site = d / "site.yaml"
    example = example_site_without({"meters", "targets", "ledger"}, fixtures / "modbus_site.yaml")
    site.write_text(example + TREE, encoding="utf-8")
    cfg = load_config(site)
    db = d / "state.db"
    conn = open_state_db(db)
    ledger = Ledger.from_config(cfg, conn)
    points = _meter_points(cfg)
    validator = Validator(points=[p for _, p in points])
    building = asyncio.run(_day_one_over_tcp(cfg, validator, ledger))
    start_reading = {m: building.meters[m].integral for m in METER_OF.values()}
    # The model's own integrals on day 1 since Q_START: start_reading holds them (integral starts at 0).
    regs = {(r.unit, r.table, r.address): r for r in REGISTER_MAP}
    plan = [(p, regs[(dev.unit_id, p.table, p.address)]) for dev, p in points]
    batch: list[Any] = []
    gap_energy = {SHORT_GAP[0]: 0.0, LONG_GAP[0]: 0.0}
    prev: dict[str, float] = {}
    for b in season(start=DAY1, end=Q_END, building=building, substep_s=900):
        ts = b.now.astimezone(UTC)
        for p, reg in plan:
            value = b.meters[METER_OF[p.id]].integral
            if p.id in gap_energy and _in_gap(p.id, b.now):
                continue
            if (
                p.id in gap_energy
                and p.id in prev
                and any(p.id == g[0] and b.now == g[2] for g in (SHORT_GAP, LONG_GAP))
            ):
                gap_energy[p.id] = value - prev[p.id]
            prev[p.id] = value
            reading = Reading(p.id, decode([int(w) for w in reg.raw(b)], p), ts, Quality.GOOD)
            batch.append(validator.validate(reading))
        if len(batch) >= 3000:
            ledger.ingest(batch)
            batch = []
    ledger.ingest(batch)
    integrals = {m: building.meters[m].integral for m in METER_OF.values()}
    assert start_reading["main"] > 0

    # Enforcement the agent would have audited during the quarter
    clock = FakeClock(datetime(2026, 7, 15, 14, 0, 5, tzinfo=TZ))
    audit = AuditLog(conn=conn, clock=clock)
    for _ in range(3):
        audit.append(
            AuditKind.WRITE,
            subject="f2-ac1.setpoint",
            before=22.0,
            after=26.0,
            rule="hvac.summer_min_cooling",
            reason="below 26",
            result="ok",
        )
        clock.advance(86400)
    audit.append(
        AuditKind.WRITE,
        subject="f1-ac2.setpoint",
        before=24.0,
        after=20.0,
        rule="hvac.winter_max_heating",
        reason="above 20",
        result="ok",
    )
    audit.append(
        AuditKind.WRITE,
        subject="f3-l2",
        before=True,
        after=False,
        rule="lighting.after_hours_sweep",
        reason="sweep",
        result="ok",
    )
    audit.append(
        AuditKind.WRITE,
        subject="f3-l1",
        before=True,
        after=None,
        rule="lighting.after_hours_sweep",
        reason="sweep",
        result="timeout",
    )
    audit.append_finding(
        "tamper",
        subject="f2-ac1.setpoint",
        rule="enforcement.rate_limit",
        reason="rewritten 6 times in an hour",
    )
    clock.advance(120 * 86400)  # after the quarter: must not count
    audit.append(
        AuditKind.WRITE,
        subject="f2-ac1.setpoint",
        before=22.0,
        after=26.0,
        rule="hvac.summer_min_cooling",
        reason="below 26",
        result="ok",
    )
    conn.close()
    yield Quarter(cfg, db, site, integrals, gap_energy[SHORT_GAP[0]], gap_energy[LONG_GAP[0]])


def _totals(q: Quarter) -> dict[str, Any]:
    conn = open_state_db(q.db)
    try:
        led = Ledger.from_config(q.cfg, conn)
        start, end = Q_START.astimezone(UTC), Q_END.astimezone(UTC)
        return {"totals": led.totals(start, end), "gaps": led.gaps(start, end)}
    finally:
        conn.close()


def test_ledger_matches_the_model_integral_within_half_a_percent(quarter: Quarter) -> None:
    got = _totals(quarter)["totals"]
    for pid, meter in METER_OF.items():
        t = got[pid]
        truth = quarter.integrals[meter]
        counted = t.total + t.unallocated
        assert counted == pytest.approx(truth, rel=0.005), (pid, counted, truth)
    # the sub-meters, the data centre and the unmetered common services add up to the main meter
    assert got["main.energy"].total > sum(
        got[p].total for p in METER_OF if p not in ("main.energy", "it.energy", "water.volume")
    )


def test_gaps_of_any_length_are_allocated_counted_and_marked(quarter: Quarter) -> None:
    data = _totals(quarter)
    t = data["totals"]
    short = [
        g for g in data["gaps"] if g.point_id == "f1.ls.energy" and g.start.date() == SHORT_GAP[1].date()
    ]
    assert len(short) == 1 and short[0].filled and short[0].missing == 2
    assert t["f1.ls.energy"].estimated >= quarter.short_gap_energy * 0.99
    long = [g for g in data["gaps"] if g.point_id == "water.volume" and g.missing > 4]
    assert len(long) == 1 and long[0].missing == 12 and long[0].filled
    assert long[0].energy == pytest.approx(quarter.long_gap_energy, rel=1e-3, abs=0.002)
    assert t["water.volume"].unallocated == 0.0
    assert t["water.volume"].estimated >= quarter.long_gap_energy * 0.99  # counted, as estimated
    assert t["main.energy"].estimated == 0  # no gap on the main meter: nothing estimated there


class _Figures(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.svg = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg":
            self.svg += 1
        key = a.get("data-key")
        if key is not None:
            self.values[key] = a.get("data-value") or ""


def _run_report(q: Quarter, out: Path, *argv: str) -> int:
    p = argparse.ArgumentParser()
    add_report_arguments(p)
    return report_main(p.parse_args(["-c", str(q.site), "--db", str(q.db), "--out", str(out), *argv]))


def test_report_html_json_csv_agree_with_the_model(quarter: Quarter, tmp_path: Path) -> None:
    assert _run_report(quarter, tmp_path, "--period", "2026Q3", "--format", "html,json,csv") == 0
    stem = tmp_path / "report-370102A001-2026Q3"
    report = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
    html = stem.with_suffix(".html").read_text(encoding="utf-8")
    assert "总用电量" in html or "电 electricity" in html
    assert "<script" not in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")
    fig = _Figures()
    fig.feed(html)
    v = {k: float(x) for k, x in fig.values.items() if x not in ("", "None")}
    assert fig.svg >= 3

    elec = quarter.integrals["main"]
    assert v["category.01000.total"] == pytest.approx(elec, rel=0.005)
    assert report["totals"]["by_category"][0]["total"] == pytest.approx(v["category.01000.total"], abs=1e-3)
    assert v["kgce.total"] == pytest.approx(elec * 0.1229, rel=0.005)
    ls = sum(quarter.integrals[f"f{f}-ls"] for f in (1, 2, 3))
    assert v["end_use.01A00.total"] == pytest.approx(ls, rel=0.005)
    assert v["end_use.01D10.total"] == pytest.approx(quarter.integrals["dc"], rel=0.005)
    # PUE against the model's own figures
    assert v["dc.pue"] == pytest.approx(quarter.integrals["dc"] / quarter.integrals["it"], rel=0.005)
    # KPIs: the quarter is all the data of 2026 (92 days of 365), figures by hand
    kgce = v["kgce.total"]
    assert v["kpi.kgce_per_m2.to_date"] == pytest.approx(kgce / 8600, rel=1e-3)
    assert v["kpi.kgce_per_m2.projection"] == pytest.approx(kgce / 8600 * 365 / 92, rel=1e-3)
    assert v["kpi.kgce_per_person.share_of_target"] == pytest.approx(kgce / 320 / 310, rel=1e-3)
    water = v["category.02000.total"]
    assert v["kpi.water_m3_per_person.to_date"] == pytest.approx(water / 320, rel=1e-3)
    # meter balance: main minus sub-meters is the model's unmetered common services (+ decoding error)
    subs = sum(quarter.integrals[m] for m in ("f1-ls", "f2-ls", "f3-ls", "f1-ac", "f2-ac", "f3-ac", "dc"))
    assert v["balance.main.energy.unmetered"] == pytest.approx(elec - subs, rel=0.02)
    assert 0.9 < v["coverage.main.energy"] < 1.0
    # enforcement from the audit trail, period only
    assert v["enforcement.zone.f2.summer_26"] == 3
    assert v["enforcement.zone.f1.winter_20"] == 1
    assert v["enforcement.setpoint_corrections_total"] == 4
    assert v["enforcement.lights_off_total"] == 1
    assert v["enforcement.tamper"] == 1 and v["enforcement.failed_writes"] == 1
    assert "exemption.dc" in fig.values
    # data quality: every gap allocated, the long one listed with its energy; shares per unit and meter
    assert v["quality.gaps_filled"] >= 2 and v["quality.long_gaps"] == 1
    assert report["quality"]["long_gap_energy"]["water.volume"] == pytest.approx(
        quarter.long_gap_energy, abs=0.01
    )
    assert set(report["quality"]["by_unit"]) == {"kWh", "m3"}  # never kWh and m³ added together
    assert v["quality.unit.kWh.estimated_share"] == 0  # no gap on the main meter
    assert 0 < v["quality.unit.m3.estimated_share"] < 0.05
    assert 0 < v["meter.f1.ls.energy.estimated_share"] < 0.05
    # no ledger data for 2025: no comparison, said so
    assert report["last_year"]["by_category"][0]["last_year"] is None
    # CSV: the ledger by meter and day sums to the same totals
    text = stem.with_suffix(".csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[-1]["date"].startswith("说明 note: only rows with in_total=1")
    rows = rows[:-1]
    main_rows = [r for r in rows if r["point"] == "main.energy"]
    assert len(main_rows) == 92 and {(r["level"], r["in_total"], r["parent"]) for r in main_rows} == {
        ("0", "1", "")
    }
    assert sum(float(r["total"]) for r in main_rows) == pytest.approx(v["category.01000.total"], abs=0.1)
    # the rows that say they sum to the total do, per code category; summing every kWh row would not
    in_total = [r for r in rows if r["in_total"] == "1" and r["code"].startswith("01")]
    assert sum(float(r["total"]) for r in in_total) == pytest.approx(v["category.01000.total"], abs=0.1)
    assert sum(float(r["total"]) for r in rows if r["unit"] == "kWh") > 1.5 * v["category.01000.total"]
    sub = next(r for r in rows if r["point"] == "f1.ac.energy")
    assert (sub["level"], sub["in_total"]) != ("0", "1") and sub["parent"]


def test_month_report_and_bad_input(quarter: Quarter, tmp_path: Path) -> None:
    assert _run_report(quarter, tmp_path, "--period", "2026-08", "--format", "json") == 0
    r = json.loads((tmp_path / "report-370102A001-2026-08.json").read_text(encoding="utf-8"))
    assert r["period"]["days"] == 31 and len(r["daily"]) == 31
    assert r["enforcement"]["setpoint_corrections_total"] == 0  # all of them were in July
    assert _run_report(quarter, tmp_path, "--period", "2026Q7") == 2
    assert _run_report(quarter, tmp_path, "--period", "2026Q3", "--format", "docx") == 2
    p = argparse.ArgumentParser()
    add_report_arguments(p)
    missing = tmp_path / "nope.db"
    args = p.parse_args(
        ["-c", str(quarter.site), "--db", str(missing), "--period", "2026Q3", "--out", str(tmp_path)]
    )
    assert report_main(args) == 2
    assert not missing.exists()


def test_sqlite_only_holds_our_tables_and_audit(quarter: Quarter) -> None:
    conn = sqlite3.connect(quarter.db)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    assert {"ledger_interval", "ledger_quality", "ledger_gap", "ledger_state", "audit"} <= names

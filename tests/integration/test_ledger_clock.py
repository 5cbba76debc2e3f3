"""A gateway whose clock never synchronises: its meters' energy is held (not booked at untrusted times),
and the report says how much, per meter and in its unit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drivers.base import Quality, Reading
from edge_agent.config.load import load_config
from edge_agent.core.validate import ValidatedReading
from edge_agent.report.build import build_report
from edge_agent.report.html import render_html
from edge_agent.store.db import open_state_db
from edge_agent.store.ledger import Ledger, parse_period

ROOT = Path(__file__).resolve().parents[2]
SITE = str(ROOT / "config" / "site.yaml")
T0 = datetime(2026, 7, 2, 1, 0, tzinfo=UTC)


def test_report_shows_energy_held_under_a_clock_that_never_synchronised(tmp_path: Path) -> None:
    cfg = load_config(SITE)
    conn = open_state_db(tmp_path / "state.db")
    try:
        led = Ledger.from_config(cfg, conn)
        batch = [ValidatedReading(Reading("main.energy", 5000.0, T0, Quality.GOOD))]
        for i in range(1, 97):  # a day of readings, each flagged: the clock is never trusted
            reading = Reading("main.energy", 5000.0 + 2.5 * i, T0 + timedelta(minutes=15 * i), Quality.GOOD)
            batch.append(ValidatedReading(reading, ("clock_unsynced",)))
        led.ingest(batch)
        report = build_report(cfg=cfg, ledger=led, period=parse_period("2026-07"))
    finally:
        conn.close()
    (main,) = [m for m in report.meters if m.point == "main.energy"]
    assert (main.total, main.held, main.unit) == (0.0, pytest.approx(240.0), "kWh")
    assert main.events["clock_held"] == 96
    html = render_html(report)
    assert 'data-key="quality.held.main.energy" data-value="240.0"' in html
    assert "Held, clock untrusted, not booked yet" in html and "(kWh)" in html

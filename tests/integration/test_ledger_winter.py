"""The simulated winter: air conditioners starting after a night, a weekend or the Spring Festival on
standby are not outliers, nothing of their energy is estimated or excluded (issue 16, item 5)."""

from __future__ import annotations

from pathlib import Path

from edge_agent.config.load import load_config
from edge_agent.devtools.report_sim import simulate_into
from edge_agent.store.db import open_state_db
from edge_agent.store.ledger import Ledger, parse_period

ROOT = Path(__file__).resolve().parents[2]


def test_winter_start_ups_are_not_outliers(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "config" / "site.yaml")
    conn = open_state_db(tmp_path / "state.db")
    try:
        period = parse_period("2026Q1")  # 15-minute data, as in the auditor's recomputation
        simulate_into(cfg, conn, period)
        ledger = Ledger.from_config(cfg, conn)
        start, end = period.bounds(ledger.tz)
        totals = ledger.totals(start, end)
    finally:
        conn.close()
    ac = {pid: t for pid, t in totals.items() if pid.endswith(".ac.energy")}
    assert len(ac) == 3
    for pid, t in ac.items():
        assert t.total > 1000, pid
        assert "outlier" not in t.counts, (pid, t.counts)  # was 729 outliers over the quarter
        assert t.estimated == 0 and t.excluded == 0, (pid, t)  # was 16 % of Q1 AC energy estimated
        # the first start of the year has no history to compare with: seen as a start-up, booked
        assert t.counts.get("start_up", 0) <= 1, (pid, t.counts)
    assert all(not t.counts for pid, t in totals.items() if pid not in ac)

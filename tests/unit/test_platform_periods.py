"""Periods aligned in site time, and the period buffer in a real SQLite file."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.config.settings import PlatformMeter
from edge_agent.store.db import open_state_db
from edge_agent.store.platform import PeriodBuffer, PeriodValue
from edge_agent.uplink.platform.periods import (
    ERROR_NO_DATA,
    ERROR_OK,
    due_periods,
    period_bounds,
    period_values,
)

SH = ZoneInfo("Asia/Shanghai")
KOLKATA = ZoneInfo("Asia/Kolkata")  # a half-hour offset: quarter hours of site time are not UTC's


def test_quarter_hours_of_site_time() -> None:
    t = datetime(2026, 7, 1, 10, 7, 30, tzinfo=SH)
    assert period_bounds(t, 900, SH) == (
        datetime(2026, 7, 1, 10, 0, tzinfo=SH).astimezone(UTC),
        datetime(2026, 7, 1, 10, 15, tzinfo=SH).astimezone(UTC),
    )
    hour = period_bounds(datetime(2026, 7, 1, 10, 50, tzinfo=KOLKATA), 3600, KOLKATA)
    assert hour[0] == datetime(2026, 7, 1, 10, 0, tzinfo=KOLKATA)  # not 10:30 local, UTC's hour


@given(
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1)),
    hours=st.integers(2, 48),
    period_min=st.sampled_from([5, 15, 60, 7]),
)
def test_due_periods_tile_time_without_gap_or_overlap(start: datetime, hours: int, period_min: int) -> None:
    s = start.replace(tzinfo=UTC)
    now = s + timedelta(hours=hours)
    got = due_periods(s, now, period_s=period_min * 60, tz=SH, close_delay_s=60)
    assert got, "at least one period ended"
    assert got[0][0] == s
    for (_a, b), (c, _d) in itertools.pairwise(got):
        assert b == c
    assert got[-1][1] + timedelta(seconds=60) <= now
    assert all(b - a <= timedelta(minutes=period_min) for a, b in got)


def test_values_name_the_city_ids_and_flag_a_silent_meter() -> None:
    meters = [
        PlatformMeter(point="m1", meter_id="M1"),
        PlatformMeter(point="m2", meter_id="M2", coding="01B00"),
    ]
    vals = period_values(meters, {"m1": "01A00", "m2": "01000"}, {"m1": (1.23456789, 1)})
    assert vals == (
        PeriodValue("M1", "1", "01A00", 1.234568, ERROR_OK),
        PeriodValue("M2", "1", "01B00", 0.0, ERROR_NO_DATA),
    )


def test_buffer_is_durable_idempotent_and_bounded(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    buf = PeriodBuffer(open_state_db(db))
    t0 = datetime(2026, 7, 1, tzinfo=UTC)
    v = (PeriodValue("M1", "1", "01A00", 2.5, "192"),)
    buf.begin(t0)
    for i in range(5):
        assert buf.close(t0 + timedelta(minutes=15 * i), 900, v, now=t0, max_backlog=10) == []
    assert buf.close(t0, 900, (), now=t0, max_backlog=10) == []  # a second close keeps the first figures
    assert buf.pending()[0].values == v
    assert buf.ack(t0, now=t0) and not buf.ack(t0, now=t0)
    buf.conn.close()
    again = PeriodBuffer(open_state_db(db))
    assert again.backlog() == 4 and again.last_acked() == t0
    assert again.closed_until() == t0 + timedelta(minutes=75)
    dropped = again.close(t0 + timedelta(minutes=75), 900, v, now=t0, max_backlog=2)
    assert dropped == [t0 + timedelta(minutes=15), t0 + timedelta(minutes=30), t0 + timedelta(minutes=45)]
    assert [p.start for p in again.pending()] == [t0 + timedelta(minutes=60), t0 + timedelta(minutes=75)]
    again.conn.close()

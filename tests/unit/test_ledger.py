"""Ledger: interval energy from cumulative counters; rollover, reset, gaps, outliers, local days, restart."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from drivers.base import Quality, Reading
from edge_agent.core.validate import ValidatedReading
from edge_agent.store.db import open_state_db
from edge_agent.store.ledger import Ledger, LedgerError, MeterInfo, canonical_unit, parse_period
from tests.sitetext import example_site_without

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 7, 1, 0, 0, tzinfo=TZ)  # local midnight = 2026-06-30 16:00 UTC


@dataclass(frozen=True)
class _VR:  # any object with .reading and .flags will do (the Protocol), not only ValidatedReading
    reading: Reading
    flags: tuple[str, ...] = ()


def vr(pid: str, minutes: float, value: float | None, *flags: str, quality: Quality = Quality.GOOD) -> _VR:
    ts = (T0 + timedelta(minutes=minutes)).astimezone(UTC)
    return _VR(Reading(pid, value, ts, quality), tuple(flags))


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[object]:
    c = open_state_db(tmp_path / "state.db")
    yield c
    c.close()


def make(conn: object, **kw: object) -> Ledger:
    meters = [
        MeterInfo(point_id="m", code="01000", unit="kWh", rollover=1000.0),
        MeterInfo(point_id="s", code="01A00", unit="kWh", parent="m"),
        MeterInfo(point_id="w", code="02000", unit="m3", scale=0.001),  # a meter in litres
    ]
    return Ledger(conn=conn, meters=meters, timezone="Asia/Shanghai", **kw)  # type: ignore[arg-type]


def day_total(led: Ledger, pid: str, d: date = date(2026, 7, 1)) -> tuple[float, float]:
    start = datetime(d.year, d.month, d.day, tzinfo=TZ)
    t = led.totals(start, start + timedelta(days=1))[pid]
    return t.measured, t.estimated


def test_increments_are_spread_over_slots_by_overlap(conn: object) -> None:
    led = make(conn)
    led.ingest([vr("m", 0, 100.0), vr("m", 10, 101.0), vr("m", 20, 103.0)])
    rows = led.series(T0, T0 + timedelta(hours=1), "15min", points=["m"])
    got = {b.start.strftime("%H:%M"): round(b.measured, 6) for b in rows}
    # 10-20 min carries 2 kWh: half before 00:15, half after
    assert got == {"00:00": 2.0, "00:15": 1.0}
    assert all(b.estimated == 0 for b in rows)


def test_validated_reading_class_is_accepted(conn: object) -> None:
    led = make(conn)
    ts = T0.astimezone(UTC)
    led.ingest([ValidatedReading(Reading("m", 5.0, ts, Quality.GOOD))])
    led.ingest([ValidatedReading(Reading("m", 7.5, ts + timedelta(minutes=5), Quality.GOOD))])
    assert day_total(led, "m") == (2.5, 0.0)


def test_rollover_adds_the_wrapped_increase(conn: object) -> None:
    led = make(conn)
    led.ingest([vr("m", 0, 990.0), vr("m", 5, 998.0), vr("m", 10, 3.0, "rollover"), vr("m", 15, 4.0)])
    measured, _ = day_total(led, "m")
    assert measured == pytest.approx(8 + (1000 - 998 + 3) + 1)
    assert led.totals(T0, T0 + timedelta(days=1))["m"].counts == {"rollover": 1}


def test_reset_starts_a_new_baseline_and_counts_no_negative(conn: object) -> None:
    led = make(conn)
    led.ingest([vr("m", 0, 500.0), vr("m", 5, 510.0), vr("m", 10, 0.5, "counter_reset"), vr("m", 15, 2.5)])
    t = led.totals(T0, T0 + timedelta(days=1))["m"]
    assert t.total == pytest.approx(10 + 2)
    assert t.counts == {"counter_reset": 1}


def test_backwards_glitch_is_ignored_and_unflagged_decrease_rebaselines(conn: object) -> None:
    led = make(conn)
    led.ingest([vr("m", 0, 100.0), vr("m", 5, 90.0, "counter_backwards"), vr("m", 10, 104.0)])
    assert day_total(led, "m") == (4.0, 0.0)
    led.ingest([vr("m", 12, 50.0), vr("m", 14, 51.0)])  # the validator moved on: follow it
    t = led.totals(T0, T0 + timedelta(days=1))["m"]
    assert t.total == pytest.approx(5.0)
    assert t.counts == {"counter_backwards": 1, "rebaseline": 1}


def test_bounded_gap_is_filled_linearly_and_marked_estimated(conn: object) -> None:
    led = make(conn, max_gap_intervals=4)
    # 00:00 -> 01:00: three whole intervals without a reading, 6 kWh
    led.ingest([vr("m", 0, 100.0), vr("m", 60, 106.0), vr("m", 75, 107.0)])
    rows = {
        b.start.strftime("%H:%M"): b for b in led.series(T0, T0 + timedelta(hours=2), "15min", points=["m"])
    }
    assert [round(rows[k].estimated, 6) for k in ("00:00", "00:15", "00:30", "00:45")] == [1.5] * 4
    assert rows["01:00"].measured == pytest.approx(1.0) and rows["01:00"].estimated == 0
    (gap,) = led.gaps(T0, T0 + timedelta(days=1))
    assert (gap.missing, gap.filled, gap.energy) == (3, True, pytest.approx(6.0))
    t = led.totals(T0, T0 + timedelta(days=1))["m"]
    assert t.estimated_share == pytest.approx(6 / 7)
    assert t.counts == {"gap_filled": 1}


def test_long_gap_is_allocated_estimated_and_counted(conn: object) -> None:
    # A gateway off for two hours: the counter says exactly how much was used, not when.
    led = make(conn, max_gap_intervals=2)
    led.ingest([vr("m", 0, 100.0), vr("m", 120, 130.0), vr("m", 130, 131.0)])
    t = led.totals(T0, T0 + timedelta(days=1))["m"]
    assert t.total == pytest.approx(31.0)
    assert (t.measured, t.estimated) == (pytest.approx(1.0), pytest.approx(30.0))
    assert t.unallocated == 0.0
    rows = led.series(T0, T0 + timedelta(hours=2), "15min", points=["m"])
    assert [round(b.estimated, 6) for b in rows] == [3.75] * 8  # linear over the gap
    (gap,) = led.gaps(T0, T0 + timedelta(days=1))
    assert (gap.missing, gap.filled, gap.energy) == (7, True, pytest.approx(30.0))
    assert gap.method == "linear"  # no history of comparable days


def office_kwh(minutes: float) -> float:
    """Energy of the 15-minute slot starting ``minutes`` after T0: 4 kWh in office hours (08:00-18:00) on
    working days, 1 kWh otherwise."""
    local = T0 + timedelta(minutes=minutes)
    office = local.weekday() < 5 and 8 <= local.hour < 18
    return 4.0 if office else 1.0


def feed_office(led: Ledger, start_min: int, end_min: int, counter: float) -> float:
    """A reading every 15 minutes over [start_min, end_min]; returns the last counter value."""
    batch = []
    for minute in range(start_min, end_min + 1, 15):
        batch.append(vr("m", minute, counter))
        counter += office_kwh(minute)
    led.ingest(batch)
    return counter - office_kwh(end_min)


def test_weekend_gap_is_allocated_by_the_meters_profile_of_comparable_days(conn: object) -> None:
    led = make(conn)  # 2026-07-01 is a Wednesday; a gap from Friday 17:00 to Monday 09:00
    day = 24 * 60
    gap_start, gap_end = 2 * day + 17 * 60 + 14 * day, 5 * day + 9 * 60 + 14 * day
    counter = feed_office(led, 0, gap_start, 100.0)
    true = sum(office_kwh(x) for x in range(gap_start, gap_end, 15))
    feed_office(led, gap_end, gap_end + 60, counter + true)
    (gap,) = led.gaps(T0, T0 + timedelta(days=30))
    assert (gap.method, gap.energy) == ("profile", pytest.approx(true))
    start = T0 + timedelta(minutes=gap_start)
    rows = led.series(start, T0 + timedelta(minutes=gap_end), "15min", points=["m"])
    # the profile of the last four Fridays/Mondays and weekend days is the truth here, slot by slot
    got = [round(b.estimated, 6) for b in rows]
    assert got == [office_kwh(x) for x in range(gap_start, gap_end, 15)]
    assert max(got) == 4.0 and min(got) == 1.0  # office hours of Friday and Monday, nights, weekend
    t = led.totals(T0, T0 + timedelta(days=30))["m"]
    assert t.estimated == pytest.approx(true)
    rec = led.reconcile("m")
    assert rec is not None and rec.discrepancy == pytest.approx(0.0, abs=1e-6)


def test_profile_needs_comparable_days_of_each_kind_else_linear(conn: object) -> None:
    # Three working days of history only: a gap over a weekend has no rest-day profile -> linear.
    led = make(conn)
    day = 24 * 60
    counter = feed_office(led, 0, 2 * day + 17 * 60, 100.0)
    feed_office(led, 5 * day + 9 * 60, 5 * day + 10 * 60, counter + 500.0)
    (gap,) = led.gaps(T0, T0 + timedelta(days=30))
    assert gap.method == "linear"
    rows = led.series(gap.start, gap.end, "15min", points=["m"])
    assert len({round(b.estimated, 6) for b in rows[1:-1]}) == 1


def test_a_holiday_gap_takes_the_rest_day_profile(conn: object) -> None:
    # The site calendar makes Wednesday 2026-07-15 a holiday: a gap over it is shaped like a rest day
    # (flat), though it is a weekday.
    holiday = date(2026, 7, 15)
    meters = [MeterInfo(point_id="m", code="01000", unit="kWh")]
    led = Ledger(
        conn=conn,  # type: ignore[arg-type]
        meters=meters,
        timezone="Asia/Shanghai",
        working_day=lambda d: d.weekday() < 5 and d != holiday,
    )
    day = 24 * 60
    counter = feed_office(led, 0, 14 * day, 100.0)  # up to 2026-07-15 00:00
    feed_office(led, 15 * day, 15 * day + 60, counter + 96.0)  # the holiday used 1 kWh per slot
    (gap,) = led.gaps(T0, T0 + timedelta(days=30))
    assert gap.method == "profile"
    rows = led.series(gap.start, gap.end, "15min", points=["m"])
    assert [round(b.estimated, 6) for b in rows] == [1.0] * 96


# Excluded: the glitch is not booked and, as the counter came back, nothing was excluded in the end.
@pytest.mark.parametrize(("policy", "counted", "excluded"), [("exclude", 3.0, 0.0), ("keep", 53.0, 0.0)])
def test_spike_is_counted_and_shown_by_policy(
    conn: object, policy: str, counted: float, excluded: float
) -> None:
    led = make(conn, outliers=policy)
    led.ingest([vr("m", 0, 100.0), vr("m", 5, 101.0), vr("m", 10, 151.0, "spike")])
    if policy == "exclude":
        led.ingest([vr("m", 14, 103.0)])  # the glitch is gone: counted from the old baseline
    else:
        led.ingest([vr("m", 14, 153.0)])
    t = led.totals(T0, T0 + timedelta(days=1))["m"]
    assert t.total == pytest.approx(counted)
    assert t.excluded == pytest.approx(excluded) and t.outlier_excluded == 0.0
    assert t.counts["outlier"] == 1


def test_invalid_and_out_of_order_are_counted_not_booked(conn: object) -> None:
    led = make(conn)
    led.ingest(
        [vr("m", 0, 100.0), vr("m", 5, None, quality=Quality.BAD), vr("m", 6, float("nan"), "not_finite")]
    )
    led.ingest([vr("m", 10, 102.0), vr("m", 8, 101.0), vr("x", 9, 1.0)])
    t = led.totals(T0, T0 + timedelta(days=1))["m"]
    assert t.total == pytest.approx(2.0)
    assert t.counts == {"invalid": 2, "out_of_order": 1}


def test_units_are_converted_to_the_ledger_unit(conn: object) -> None:
    led = make(conn)
    led.ingest([vr("w", 0, 1000.0), vr("w", 10, 3500.0)])  # litres
    assert day_total(led, "w") == (pytest.approx(2.5), 0.0)
    assert canonical_unit("01000", "Wh") == ("kWh", 0.001)
    assert canonical_unit("04000", "GJ") == ("MJ", 1000.0)
    with pytest.raises(LedgerError) as exc:
        canonical_unit("01000", "kW", point="p1")
    assert exc.value.point == "p1"


def test_days_and_months_follow_the_site_time_zone(conn: object) -> None:
    led = make(conn)
    # 23:50 local on 30 June to 00:10 local on 1 July: 1 kWh per 10 min
    led.ingest([vr("m", -10, 0.0), vr("m", 0, 1.0), vr("m", 10, 2.0)])
    days = {
        b.start.date(): b.measured for b in led.series(T0 - timedelta(days=1), T0 + timedelta(days=1), "day")
    }
    assert days == {date(2026, 6, 30): pytest.approx(1.0), date(2026, 7, 1): pytest.approx(1.0)}
    months = {b.start.month for b in led.series(T0 - timedelta(days=1), T0 + timedelta(days=1), "month")}
    assert months == {6, 7}
    hours = led.series(T0 - timedelta(hours=1), T0 + timedelta(hours=1), "hour")
    assert [b.start.hour for b in hours] == [23, 0]


def test_state_survives_a_restart(tmp_path: Path) -> None:
    c = open_state_db(tmp_path / "s.db")
    make(c).ingest([vr("m", 0, 100.0), vr("m", 5, 101.0)])
    c.close()
    c = open_state_db(tmp_path / "s.db")
    led = make(c)
    led.ingest([vr("m", 10, 104.0)])
    assert day_total(led, "m") == (pytest.approx(4.0), 0.0)
    c.close()


def test_end_use_split_and_roots(conn: object) -> None:
    led = make(conn)
    led.ingest([vr("m", 0, 0.0), vr("s", 0, 0.0), vr("m", 10, 10.0), vr("s", 10, 6.0)])
    totals = led.totals(T0, T0 + timedelta(days=1))
    assert {m.point_id for m in led.roots()} == {"m", "w"}
    assert led.end_use_split("m", totals) == {"01A00": pytest.approx(6.0)}


def test_periods() -> None:
    q = parse_period("2026q3")
    assert (q.label, q.start, q.end, q.days) == ("2026Q3", date(2026, 7, 1), date(2026, 10, 1), 92)
    assert parse_period("2026-12").end == date(2027, 1, 1)
    assert parse_period("2026").days == 365
    assert parse_period("2026Q3").last_year().label == "2025Q3"
    start, end = q.bounds(TZ)
    assert start == datetime(2026, 6, 30, 16, tzinfo=UTC) and end == datetime(2026, 9, 30, 16, tzinfo=UTC)
    for bad in ("2026Q5", "2026-13", "26Q1", "Q3"):
        with pytest.raises(ValueError):
            parse_period(bad)


ROOT = Path(__file__).resolve().parents[2]


def _site(tmp_path: Path, extra: str) -> Path:
    (tmp_path / "policy.yaml").write_text((ROOT / "config" / "policy.yaml").read_text(encoding="utf-8"))
    site = tmp_path / "site.yaml"
    text = example_site_without({"meters", "targets", "ledger", "coal_factors"})
    site.write_text(text + extra, encoding="utf-8")
    return site


def test_meter_tree_errors_are_positioned(tmp_path: Path) -> None:
    from edge_agent.config.load import ConfigError, load_config

    site = _site(
        tmp_path,
        "meters:\n"
        "  - {point: main.energy}\n"
        "  - {point: f1.ls.energy, parent: main.enrgy}\n"
        "  - {point: main.power}\n"
        "  - {point: it.energy, it_load: true}\n"
        "coal_factors:\n"
        '  "01A00": {kgce_per_unit: 0.3, unit: kWh, source: "x standard"}\n',
    )
    n = len(example_site_without({"meters", "targets", "ledger", "coal_factors"}).splitlines())
    with pytest.raises(ConfigError) as exc:
        load_config(site)
    text = [str(i) for i in exc.value.errors]
    assert any(f":{n + 3}:" in t and "parent 'main.enrgy' is not listed" in t for t in text), text
    assert any(f":{n + 4}:" in t and "is not a meter" in t for t in text), text
    assert any(f":{n + 5}:" in t and "IT-load meter needs `parent:`" in t for t in text), text
    assert any("not a category code" in t for t in text), text


def test_meters_from_config_places_unlisted_meters(tmp_path: Path) -> None:
    from edge_agent.config.load import load_config
    from edge_agent.store.ledger import meters_from_config

    cfg = load_config(
        _site(
            tmp_path,
            "meters:\n  - {point: main.energy, institution: Agency}\n"
            "  - {point: dc.energy, parent: main.energy}\n"
            "  - {point: it.energy, parent: dc.energy, it_load: true}\n",
        )
    )
    ms = {m.point_id: m for m in meters_from_config(cfg)}
    assert ms["it.energy"].it_load and ms["it.energy"].institution == "Agency"
    assert ms["f1.ls.energy"].parent == "main.energy" and not ms["f1.ls.energy"].in_tree  # assumed
    assert ms["water.volume"].parent is None and ms["water.volume"].unit == "m3"

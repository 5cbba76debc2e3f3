"""Calendar and schedule arithmetic (pure, explicit dates)."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import holidays
import pytest

from policies.calendar import Calendar
from policies.model import LightingGroup, TimeRange
from policies.schedule import last_sweep, schedule_state, sun_times

TZ = ZoneInfo("Asia/Shanghai")
CAL = Calendar(years=[2026])


def at(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=TZ)


def test_calendar_matches_the_package_for_all_of_2026() -> None:
    cn = holidays.China(years=2026)
    d = date(2026, 1, 1)
    while d.year == 2026:
        assert CAL.is_working_day(d) == cn.is_working_day(d), d
        d = date.fromordinal(d.toordinal() + 1)


def test_make_up_days_are_filtered_by_year_and_other_years_are_built_on_demand() -> None:
    cal = Calendar(years=[2026])
    assert cal.day_kind(date(2025, 2, 8)) == "makeup_working"  # 2025 built on first use
    assert cal.years == (2025, 2026)
    assert cal.day_info(date(2026, 1, 1)).name == "元旦 New Year's Day"
    assert cal.day_info(date(2026, 2, 14)).describe() == "make-up working day 调休"


def test_site_overrides_and_conflict() -> None:
    cal = Calendar(
        years=[2026],
        extra_holidays={date(2026, 2, 14): "closure"},
        extra_working_days={date(2026, 10, 1): "inspection"},
    )
    assert cal.day_info(date(2026, 2, 14)).describe() == "holiday closure (site calendar)"
    assert cal.is_working_day(date(2026, 10, 1)) and cal.day_kind(date(2026, 10, 1)) == "working"
    with pytest.raises(ValueError, match="both"):
        Calendar(
            years=[2026], extra_holidays={date(2026, 1, 5): "a"}, extra_working_days={date(2026, 1, 5): "b"}
        )


PERIODS = [TimeRange(time(7, 30), time(12, 0)), TimeRange(time(13, 30), time(18, 0))]


def test_schedule_state() -> None:
    s = schedule_state(at(2026, 7, 15, 10), PERIODS, CAL)
    assert s.in_period == PERIODS[0]
    s = schedule_state(at(2026, 7, 15, 12, 30), PERIODS, CAL)  # lunch
    assert s.in_period is None and s.stretch_start == at(2026, 7, 15, 12)
    s = schedule_state(at(2026, 7, 16, 6), PERIODS, CAL)  # early morning: stretch began yesterday 18:00
    assert s.stretch_start == at(2026, 7, 15, 18)
    s = schedule_state(at(2026, 10, 5, 10), PERIODS, CAL)  # National Day week: back to 09-30 (10-01..)
    assert s.stretch_start == at(2026, 9, 30, 18)


def group(**kw: object) -> LightingGroup:
    base: dict[str, object] = {"name": "g", "zones": ["f1"], "on_periods": ["07:30-12:00", "13:30-18:00"]}
    return LightingGroup.model_validate({**base, **kw})


def test_sweeps_fixed_then_periodic_until_the_day_starts() -> None:
    g = group(sweeps=["12:15", "18:30", "20:00"], sweep_every_min=60)
    start = at(2026, 7, 15, 18)
    assert last_sweep(at(2026, 7, 15, 18, 29), g, CAL, start) is None
    assert last_sweep(at(2026, 7, 15, 19, 59), g, CAL, start) == at(2026, 7, 15, 18, 30)
    assert last_sweep(at(2026, 7, 15, 20, 30), g, CAL, start) == at(2026, 7, 15, 20)
    assert last_sweep(at(2026, 7, 15, 23, 59), g, CAL, start) == at(2026, 7, 15, 23)
    assert last_sweep(at(2026, 7, 16, 7, 29), g, CAL, start) == at(2026, 7, 16, 7)
    lunch = at(2026, 7, 16, 12)
    assert last_sweep(at(2026, 7, 16, 12, 10), g, CAL, lunch) is None
    assert last_sweep(at(2026, 7, 16, 13, 0), g, CAL, lunch) == at(
        2026, 7, 16, 12, 15
    )  # no periodic at lunch
    # Saturday: periodic all day, plus the fixed times
    assert last_sweep(at(2026, 7, 18, 12, 20), g, CAL, start) == at(2026, 7, 18, 12, 15)
    assert last_sweep(at(2026, 7, 18, 14, 20), g, CAL, start) == at(2026, 7, 18, 14)


def test_sweeps_without_periodic() -> None:
    g = group(sweeps=["18:30", "20:00"], sweep_every_min=None)
    start = at(2026, 7, 15, 18)
    assert last_sweep(at(2026, 7, 16, 3), g, CAL, start) == at(2026, 7, 15, 20)
    g = group(sweeps=[], sweep_every_min=30)  # chain anchored at the end of the last period
    assert last_sweep(at(2026, 7, 15, 18, 10), g, CAL, start) is None
    assert last_sweep(at(2026, 7, 15, 18, 45), g, CAL, start) == at(2026, 7, 15, 18, 30)


def test_sun_times_shanghai_and_polar() -> None:
    st = sun_times(date(2026, 7, 15), 31.23, 121.47, TZ)
    assert not isinstance(st, str)
    rise, sset = st
    assert at(2026, 7, 15, 4, 50) < rise < at(2026, 7, 15, 5, 10)
    assert at(2026, 7, 15, 18, 50) < sset < at(2026, 7, 15, 19, 10)
    polar = sun_times(date(2026, 6, 21), 89.0, 0.0, ZoneInfo("UTC"))
    assert isinstance(polar, str) and "no sunrise/sunset" in polar

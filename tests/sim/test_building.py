"""The building model, stepped directly with explicit sim times (no sockets, no sleeping)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sim.building import Building, Change, Mode, OutOfRange, outdoor_temperature

TZ = ZoneInfo("Asia/Shanghai")


def _run(b: Building, until: datetime, step_s: float = 300) -> None:
    t = b.now
    while t < until:
        t = min(until, t + timedelta(seconds=step_s))
        b.step((t - b.now).total_seconds(), t)


def test_outdoor_temperature_by_season_and_hour() -> None:
    july_afternoon = outdoor_temperature(datetime(2026, 7, 15, 15, 0, tzinfo=TZ))
    july_dawn = outdoor_temperature(datetime(2026, 7, 15, 5, 0, tzinfo=TZ))
    january = [outdoor_temperature(datetime(2026, 1, 15, h, 0, tzinfo=TZ)) for h in range(24)]
    assert 31 <= july_afternoon <= 37
    assert july_dawn < july_afternoon - 8
    assert -5 <= sum(january) / 24 <= 1
    assert max(january) < 8


def test_cooling_at_22_drives_room_toward_22() -> None:
    b = Building(seed=1, start=datetime(2026, 7, 15, 13, 0, tzinfo=TZ), script=False)
    assert b.outdoor_temp > 30
    b.set_mode("f1-ac1", Mode.COOL)  # also powers it on
    b.set_setpoint("f1-ac1", 22.0)
    assert b.ac_units["f1-ac1"].power
    other_start = b.ac_units["f1-ac2"].room_temp
    start = b.ac_units["f1-ac1"].room_temp
    assert start > 26
    _run(b, b.now + timedelta(minutes=20))
    mid = b.ac_units["f1-ac1"].room_temp
    _run(b, b.now + timedelta(hours=2))
    end = b.ac_units["f1-ac1"].room_temp
    assert start > mid > end
    assert 22.0 <= end < 22.3
    assert b.ac_units["f1-ac1"].electric_kw > 2.0  # holding 22 against ~34 outdoor costs power
    # the unit that stayed off drifted with the weather, not toward 22
    assert b.ac_units["f1-ac2"].room_temp > 27 and abs(b.ac_units["f1-ac2"].room_temp - other_start) < 4
    assert b.ac_units["f1-ac2"].electric_kw < 0.1


def test_heating_and_off_and_fan() -> None:
    b = Building(seed=2, start=datetime(2026, 1, 15, 9, 0, tzinfo=TZ), script=False)
    b.set_mode("f3-ac1", Mode.HEAT)
    b.set_setpoint("f3-ac1", 24.0)
    b.set_mode("f3-ac2", Mode.FAN)
    _run(b, b.now + timedelta(hours=3))
    assert 23.5 <= b.ac_units["f3-ac1"].room_temp <= 24.0
    assert b.ac_units["f3-ac2"].room_temp < 20 and b.ac_units["f3-ac2"].electric_kw == pytest.approx(0.5)
    b.set_mode("f3-ac1", Mode.OFF)
    assert not b.ac_units["f3-ac1"].power and b.ac_units["f3-ac1"].running_mode == Mode.OFF
    _run(b, b.now + timedelta(hours=3))
    assert b.ac_units["f3-ac1"].room_temp < 22


def test_energy_integrals_consistent() -> None:
    start = datetime(2026, 7, 14, 0, 0, tzinfo=TZ)
    b = Building(seed=3, start=start)
    readings0 = {k: m.reading for k, m in b.meters.items()}
    _run(b, start + timedelta(days=2), step_s=600)
    m = b.meters
    parts = sum(m[f"f{f}-ls"].integral + m[f"f{f}-ac"].integral for f in (1, 2, 3)) + m["dc"].integral
    assert m["main"].integral == pytest.approx(parts + b.common_kwh, rel=1e-12)
    assert abs(b.meter_total_check()) < 1e-6
    assert m["it"].integral < m["dc"].integral < 2 * m["it"].integral  # PUE between 1 and 2
    assert 20 * 48 * 0.9 < m["it"].integral < 20 * 48 * 1.1
    for k, meter in m.items():
        assert meter.reading == pytest.approx(readings0[k] + meter.integral)
        assert meter.integral > 0
    assert 5 < m["water"].integral < 40  # m³ over two days, one of them a working day... both are
    # office hours cost more than the night: one hour around 10:00 vs one around 03:00
    day = Building(seed=3, start=datetime(2026, 7, 15, 10, 0, tzinfo=TZ))
    e0 = day.meters["main"].integral
    _run(day, day.now + timedelta(hours=1))
    night = Building(seed=3, start=datetime(2026, 7, 15, 3, 0, tzinfo=TZ))
    _run(night, night.now + timedelta(hours=1))
    assert day.meters["main"].integral - e0 > 1.5 * night.meters["main"].integral


def test_integral_is_exact_for_known_powers() -> None:
    """Data-centre IT load is a known function: compare the integral against fine numerical quadrature."""
    import math

    start = datetime(2026, 3, 1, 0, 0, tzinfo=TZ)
    b = Building(seed=4, start=start, script=False)
    _run(b, start + timedelta(hours=6), step_s=60)
    phase = b._dc_phase
    h0 = start.timestamp() / 3600
    expected = sum(20.0 + 0.75 * math.sin(2 * math.pi * (h0 + i / 60) / 24 + phase) for i in range(360)) / 60
    assert b.meters["it"].integral == pytest.approx(expected, rel=1e-9)


def test_deterministic_with_seed() -> None:
    def run(seed: int) -> dict[str, object]:
        b = Building(seed=seed, start=datetime(2026, 7, 15, 7, 0, tzinfo=TZ))
        _run(b, b.now + timedelta(hours=10), step_s=450)
        return b.snapshot()

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_occupant_script_fires_at_14_on_15_july() -> None:
    b = Building(seed=0, start=datetime(2026, 7, 15, 13, 0, tzinfo=TZ))
    changes: list[Change] = []
    b.subscribe(changes.append)
    assert b.ac_units["f2-ac1"].setpoint == 26.0  # the morning script set 26 (replayed at construction)
    assert all(a.power and a.mode == Mode.COOL for a in b.ac_units.values())
    b.step(3590, datetime(2026, 7, 15, 13, 59, 50, tzinfo=TZ))
    assert b.ac_units["f2-ac1"].setpoint == 26.0
    b.step(20, datetime(2026, 7, 15, 14, 0, 10, tzinfo=TZ))
    assert b.ac_units["f2-ac1"].setpoint == 22.0
    fired = [(t.astimezone(TZ).strftime("%H:%M"), name) for t, name in b.fired]
    assert fired == [("14:00", "too-warm")]
    sp = [c for c in changes if c.attr == "setpoint"]
    assert len(sp) == 1 and sp[0].id == "f2-ac1" and sp[0].value == 22.0 and sp[0].source == "script:too-warm"
    assert sp[0].at == datetime(2026, 7, 15, 14, 0, tzinfo=TZ)
    # night light at 21:00, ACs off at 18:30, f2-l2 forgotten on
    b.step(8 * 3600, datetime(2026, 7, 15, 22, 0, 10, tzinfo=TZ))
    assert [name for _t, name in b.fired] == ["too-warm", "leave", "night-light"]
    assert not any(a.power for a in b.ac_units.values())
    assert {i for i, li in b.lights.items() if li.on} == {"f2-l2", "f3-l2"}


def test_script_skips_weekends_and_holidays() -> None:
    # 18 July 2026 is a Saturday; 1 October is National Day
    for day in (datetime(2026, 7, 18, 13, 0, tzinfo=TZ), datetime(2026, 10, 1, 13, 0, tzinfo=TZ)):
        b = Building(seed=0, start=day)
        b.step(3 * 3600, day + timedelta(hours=3))
        assert [name for _t, name in b.fired] == []
        assert not any(a.power for a in b.ac_units.values())


def test_winter_occupant_and_setter_validation() -> None:
    b = Building(seed=0, start=datetime(2026, 1, 14, 13, 0, tzinfo=TZ))
    b.step(3600, datetime(2026, 1, 14, 14, 0, tzinfo=TZ))
    assert b.ac_units["f1-ac2"].mode == Mode.HEAT and b.ac_units["f1-ac2"].setpoint == 24.0
    with pytest.raises(OutOfRange) as err:
        b.set_setpoint("f1-ac1", 33)
    assert err.value.target == "f1-ac1" and err.value.attr == "setpoint"
    with pytest.raises(OutOfRange):
        b.set_setpoint("f1-ac1", 15.9)
    with pytest.raises(OutOfRange):
        b.set_mode("f1-ac1", 7)
    with pytest.raises(KeyError):
        b.set_light("f9-l1", True)
    b.set_light("f1-l1", False)
    assert not b.lights["f1-l1"].on


def test_lights_change_power_at_once() -> None:
    b = Building(seed=0, start=datetime(2026, 7, 15, 23, 0, tzinfo=TZ), script=False)
    before = b.meters["f1-ls"].rate
    b.set_light("f1-l1", True)
    assert b.meters["f1-ls"].rate == pytest.approx(before + 4.0)
    e0 = b.meters["f1-ls"].integral
    b.step(3600, b.now + timedelta(hours=1))
    assert b.meters["f1-ls"].integral - e0 == pytest.approx(before + 4.0)


def test_air_conditioning_is_an_office_share_of_a_summer_month() -> None:
    """Air-conditioning is 30-50 % of July's electricity, as in a real office (issue 16); the units heat
    in winter too, on top of the district-heating radiators."""
    for start, end, lo, hi in (
        (datetime(2026, 7, 1, tzinfo=TZ), datetime(2026, 8, 1, tzinfo=TZ), 0.30, 0.50),
        (datetime(2026, 1, 1, tzinfo=TZ), datetime(2026, 2, 1, tzinfo=TZ), 0.15, 0.35),
    ):
        b = Building(seed=0, start=start)
        t = start
        while t < end:
            t = min(end, t + timedelta(seconds=900))
            b.step((t - b.now).total_seconds(), t, max_substep_s=300)
        ac = sum(b.meters[f"f{f}-ac"].integral for f in (1, 2, 3))
        assert lo <= ac / b.meters["main"].integral <= hi

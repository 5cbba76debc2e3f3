"""Scenario tests of policies.evaluate / explain: explicit `now`, site timezone Asia/Shanghai."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from policies.calendar import Calendar
from policies.evaluate import evaluate, explain
from policies.model import Policy
from policies.params import PolicyParams, ZoneFacts
from policies.types import Decision, PointState, Snapshot

TZ = ZoneInfo("Asia/Shanghai")
MODES = {0: "off", 1: "cool", 2: "heat", 3: "fan", 4: "auto"}
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "policy.yaml"
ZONES = {
    "f1": ZoneFacts(id="f1", kind="office", perimeter=True),
    "f2": ZoneFacts(id="f2", kind="office"),
    "f3": ZoneFacts(id="f3", kind="office"),
    "dc": ZoneFacts(id="dc", kind="data_centre"),
    "outdoor": ZoneFacts(id="outdoor", kind="outdoor"),
}


def at(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=TZ)


def pt(
    pid: str,
    role: str,
    zone: str | None,
    value: Any,
    *,
    since: datetime,
    writable: bool = True,
    ok: bool = True,
    device: str | None = None,
    states: Mapping[int, str] | None = None,
    lo: float | None = None,
    hi: float | None = None,
    since_known: bool = True,
) -> PointState:
    return PointState(
        point_id=pid,
        role=role,
        zone=zone,
        value=value,
        ok=ok,
        ts=since,
        since=since,
        writable=writable,
        min=lo,
        max=hi,
        states=states,
        device_id=device,
        since_known=since_known,
    )


def snap(*points: PointState) -> Snapshot:
    return {p.point_id: p for p in points}


def base_policy(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    for dotted, value in overrides.items():
        node = doc
        keys = dotted.split(".")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return doc


def run(
    s: Snapshot, now: datetime, doc: dict[str, Any] | None = None, *, lat: float | None = 31.23
) -> tuple[Decision, Calendar, PolicyParams]:
    policy = Policy.model_validate(doc if doc is not None else base_policy())
    params = PolicyParams(
        policy=policy,
        timezone="Asia/Shanghai",
        latitude=lat,
        longitude=None if lat is None else 121.47,
        zones=ZONES,
    )
    cal = Calendar.from_policy(policy.calendar, years=[now.year])
    return evaluate(s, now, cal, params), cal, params


def intents_by_point(d: Decision) -> dict[str, Any]:
    return {i.point_id: i.value for i in d.intents}


def ac(
    zone: str, dev: str, *, mode: int, sp: float, since: datetime, power: bool | None = True
) -> list[PointState]:
    pts = [
        pt(f"{dev}.mode", "ac_mode", zone, mode, since=since, device=dev, states=MODES),
        pt(f"{dev}.setpoint", "setpoint", zone, sp, since=since, device=dev, lo=16, hi=30),
    ]
    if power is not None:
        pts.append(pt(f"{dev}.power", "ac_power", zone, power, since=since, device=dev))
    return pts


# --- the example file --------------------------------------------------------------------------------


def test_example_policy_validates_and_round_trips() -> None:
    policy = Policy.model_validate(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")))
    assert policy.hvac.exemptions[0].zone == "dc"
    assert str(policy.seasons.winter) == "11-15..03-15"
    assert Policy.model_validate(policy.model_dump(mode="json")) == policy


# --- HVAC limits ----------------------------------------------------------------------------------


def test_summer_cool_22_is_raised_to_26_with_explanation() -> None:
    now = at(2026, 7, 15, 14)
    d, _, _ = run(snap(*ac("f2", "ac-f2-01", mode=1, sp=22.0, since=now - timedelta(hours=2))), now)
    assert intents_by_point(d) == {"ac-f2-01.setpoint": 26.0}
    assert d.intents[0].rule == "hvac.summer_min_cooling" and d.intents[0].zone == "f2"
    assert (
        "f2 hvac: summer (06-01..09-30), working day, ac-f2-01.setpoint 22.0 °C in cool (by mode) < 26.0 "
        "→ write 26.0" in d.explanations
    )


def test_january_heat_24_is_lowered_to_20() -> None:
    now = at(2026, 1, 14, 10)
    d, _, _ = run(snap(*ac("f3", "ac-f3-01", mode=2, sp=24.0, since=now - timedelta(hours=1))), now)
    assert intents_by_point(d) == {"ac-f3-01.setpoint": 20.0}
    assert d.intents[0].rule == "hvac.winter_max_heating"
    assert any("winter (11-15..03-15)" in e and "→ write 20.0" in e for e in d.explanations)


@pytest.mark.parametrize(
    ("mode", "month", "sp", "by_mode", "by_season"),
    [
        (4, 7, 22.0, 26.0, 26.0),  # auto in summer: cooling floor
        (4, 1, 24.0, 20.0, 20.0),  # auto in winter: heating cap
        (4, 10, 18.0, None, None),  # auto on a transition day: the unit may heat or cool, no limit
        (3, 7, 18.0, None, None),  # fan: no setpoint intent
        (0, 7, 18.0, None, None),  # off
        (2, 7, 30.0, 20.0, None),  # heat in summer: the heating cap by mode; the season rule is about cooling
        (
            1,
            1,
            16.0,
            26.0,
            None,
        ),  # cool in winter: the cooling floor by mode; no winter cooling rule by season
        (1, 10, 16.0, 26.0, None),  # cool on a transition day
        (2, 10, 30.0, 20.0, None),  # heat on a transition day
        (1, 7, 26.0, None, None),  # compliant
        (1, 7, 27.5, None, None),  # warmer than the floor is fine
    ],
)
def test_mode_awareness(
    mode: int, month: int, sp: float, by_mode: float | None, by_season: float | None
) -> None:
    now = at(2026, month, 14, 10)
    s = snap(*ac("f2", "u1", mode=mode, sp=sp, since=now - timedelta(hours=1)))
    d, _, _ = run(s, now)
    assert intents_by_point(d) == ({} if by_mode is None else {"u1.setpoint": by_mode})
    d, _, _ = run(s, now, base_policy(**{"hvac.limits_by": "season"}))
    assert intents_by_point(d) == ({} if by_season is None else {"u1.setpoint": by_season})


def test_explain_names_which_limit_basis_applied() -> None:
    now = at(2026, 1, 14, 10)
    s = snap(*ac("f2", "u1", mode=1, sp=16.0, since=now - timedelta(hours=1)))
    _, cal, prm = run(s, now)
    (line,) = [ln for ln in explain(s, now, cal, prm) if ln.point == "u1.setpoint"]
    assert line.decision == "write" and line.why["limits_by"] == "mode"
    assert "in cool (by mode) < 26.0" in line.text
    _, cal, prm = run(s, now, base_policy(**{"hvac.limits_by": "season"}))
    (line,) = [ln for ln in explain(s, now, cal, prm) if ln.point == "u1.setpoint"]
    assert line.decision == "skip" and line.why["limits_by"] == "season"
    assert "in cool, winter: no limit" in line.text


def test_transition_day_has_no_setpoint_limit_by_season() -> None:
    now = at(2026, 10, 20, 10)
    s = snap(*ac("f2", "u1", mode=1, sp=18.0, since=now - timedelta(hours=1)))
    d, _, _ = run(s, now, base_policy(**{"hvac.limits_by": "season"}))
    assert d.intents == ()
    assert any("transition" in e for e in d.explanations)
    d, _, _ = run(s, now)  # by mode: a cooling unit is a cooling unit on a transition day too
    assert intents_by_point(d) == {"u1.setpoint": 26.0}


def test_explicit_cooling_and_heating_setpoint_roles() -> None:
    now = at(2026, 7, 15, 10)
    since = now - timedelta(hours=1)
    s = snap(
        pt("ahu.csp", "cooling_setpoint", "f3", 23.0, since=since, device="ahu"),
        pt("ahu.hsp", "heating_setpoint", "f3", 25.0, since=since, device="ahu"),
    )
    by_season = base_policy(**{"hvac.limits_by": "season"})
    d, _, _ = run(s, now, by_season)
    assert intents_by_point(d) == {"ahu.csp": 26.0}  # heating setpoint not limited in summer
    d, _, _ = run(s, at(2026, 1, 15, 10), by_season)
    assert intents_by_point(d) == {"ahu.hsp": 20.0}
    for when in (now, at(2026, 1, 15, 10), at(2026, 10, 20, 10)):  # by mode: both, every season
        d, _, _ = run(s, when)
        assert intents_by_point(d) == {"ahu.csp": 26.0, "ahu.hsp": 20.0}


def test_deadband_violation_is_value_below_limit_minus_deadband() -> None:
    now = at(2026, 7, 15, 10)
    doc = base_policy(**{"hvac.deadband_c": 0.2})
    for sp, expected in ((25.9, None), (25.8, None), (25.7, 26.0), (25.79, 26.0)):
        d, _, _ = run(snap(*ac("f2", "u1", mode=1, sp=sp, since=now)), now, doc)
        assert intents_by_point(d) == ({} if expected is None else {"u1.setpoint": expected}), sp


def test_stricter_local_limits_are_written_exactly() -> None:
    now = at(2026, 7, 15, 10)
    doc = base_policy(**{"hvac.summer_min_cooling_c": 27, "hvac.winter_max_heating_c": 18})
    d, _, _ = run(snap(*ac("f2", "u1", mode=1, sp=26.0, since=now)), now, doc)
    assert intents_by_point(d) == {"u1.setpoint": 27.0}
    d, _, _ = run(snap(*ac("f2", "u1", mode=2, sp=19.0, since=now)), at(2026, 1, 15, 10), doc)
    assert intents_by_point(d) == {"u1.setpoint": 18.0}


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [("summer_min_cooling_c", 25, "not below 26"), ("winter_max_heating_c", 22, "not above 20")],
)
def test_looser_than_national_limits_are_refused(key: str, value: float, words: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        Policy.model_validate(base_policy(**{f"hvac.{key}": value}))
    msg = str(err.value)
    assert f"hvac.{key}" in msg and "looser than the national rule" in msg and words in msg
    assert "exemptions" in msg  # tells staff what to do instead


def test_not_writable_or_limit_outside_range_gives_finding_not_intent() -> None:
    now = at(2026, 7, 15, 10)
    s = snap(
        pt("ro.sp", "setpoint", "f2", 22.0, since=now, writable=False, device="ro"),
        pt("narrow.sp", "setpoint", "f3", 22.0, since=now, device="narrow", lo=16, hi=25),
    )
    d, _, _ = run(s, now)
    assert d.intents == ()
    kinds = {(f.subject, f.kind) for f in d.findings}
    assert ("ro.sp", "violation") in kinds and ("narrow.sp", "violation") in kinds
    assert any("outside the point's range" in f.reason for f in d.findings if f.subject == "narrow.sp")


def test_bad_readings_and_unknown_modes_are_findings() -> None:
    now = at(2026, 7, 15, 10)
    s = snap(
        pt("a.mode", "ac_mode", "f2", 9, since=now, device="a", states=MODES),  # 9: not in states
        pt("a.sp", "setpoint", "f2", 18.0, since=now, device="a"),
        pt("b.sp", "setpoint", "f3", 18.0, since=now - timedelta(minutes=10), device="b", ok=False),
        pt("c.sp", "setpoint", "f3", "n/a", since=now, device="c"),
        pt("d.sp", "setpoint", "f3", float("nan"), since=now - timedelta(minutes=10), device="d"),
    )
    d, _, _ = run(s, now)
    assert d.intents == ()
    subjects = {(f.subject, f.kind) for f in d.findings}
    assert ("a.mode", "info") in subjects
    assert ("b.sp", "data_quality") in subjects  # bad for 10 minutes: persists
    assert ("c.sp", "info") in subjects and ("d.sp", "data_quality") in subjects


def test_setpoint_without_mode_point_follows_season_or_is_skipped() -> None:
    now = at(2026, 7, 15, 10)
    s = snap(pt("split.sp", "setpoint", "f2", 22.0, since=now, device="split"))
    d, _, _ = run(s, now)
    assert intents_by_point(d) == {"split.sp": 26.0}
    d, _, _ = run(s, now, base_policy(**{"hvac.setpoint_without_mode": "skip"}))
    assert d.intents == () and any(f.subject == "split.sp" for f in d.findings)


# --- exemptions ----------------------------------------------------------------------------------


def test_exempt_server_room_left_alone_and_explained_then_enforced_after_expiry() -> None:
    exemption = [
        {"zone": "dc", "reason": "IT equipment needs 18-22 °C year round", "until": date(2026, 7, 31)}
    ]
    # server_room_limits: the limits apply to this data centre once the exemption ends (item 2)
    doc = base_policy(**{"hvac.exemptions": exemption, "hvac.server_room_limits": ["dc"]})
    since = at(2026, 7, 1, 0)
    s = snap(*ac("dc", "crac-1", mode=1, sp=18.0, since=since))
    now = at(2026, 7, 31, 23, 30)  # last day of the exemption, and after hours
    d, cal, params = run(s, now, doc)
    assert d.intents == ()
    assert any(f.kind == "exempt" and f.subject == "crac-1.setpoint" for f in d.findings)
    lines = explain(s, now, cal, params, zone="dc")
    sp_line = next(x for x in lines if x.point == "crac-1.setpoint")
    assert sp_line.decision == "exempt"
    assert sp_line.why["exemption"] == {
        "reason": "IT equipment needs 18-22 °C year round",
        "until": "2026-07-31",
        "expired": False,
    }
    assert "IT equipment needs 18-22 °C" in sp_line.text

    later = at(2026, 8, 3, 10)
    d, cal, params = run(s, later, doc)
    assert intents_by_point(d) == {"crac-1.setpoint": 26.0}
    lines = explain(s, later, cal, params, zone="dc")
    assert any(x.rule == "hvac.exemption" and "exemption expired on 2026-07-31" in x.text for x in lines)
    assert all(x.zone == "dc" for x in lines)


def test_example_dc_exemption_also_covers_after_hours_and_windows() -> None:
    now = at(2026, 10, 1, 3)  # holiday, night
    s = snap(
        *ac("dc", "crac-1", mode=1, sp=18.0, since=at(2026, 9, 1, 0)),
        pt("dc.win", "window_contact", "dc", True, since=at(2026, 9, 30, 0)),
    )
    d, _, _ = run(s, now)
    assert d.intents == ()
    assert not any(f.kind == "window_open" for f in d.findings)


# --- after-hours AC and windows ------------------------------------------------------------------


def test_after_hours_ac_switched_off_and_setpoint_left_alone() -> None:
    s = snap(*ac("f2", "u1", mode=1, sp=22.0, since=at(2026, 7, 15, 9)))
    d, _, _ = run(s, at(2026, 7, 15, 20))
    assert intents_by_point(d) == {"u1.power": False}
    assert d.intents[0].rule == "hvac.after_hours"
    d, _, _ = run(s, at(2026, 7, 15, 18, 29))  # inside working hours: only the setpoint
    assert intents_by_point(d) == {"u1.setpoint": 26.0}


def test_after_hours_all_day_on_holiday_and_by_mode_when_no_power_point() -> None:
    s = snap(*ac("f3", "u2", mode=2, sp=20.0, since=at(2026, 9, 30, 9), power=None))
    d, _, _ = run(s, at(2026, 10, 1, 10))
    assert intents_by_point(d) == {"u2.mode": 0}  # raw value of "off"


def test_after_hours_manual_override_window() -> None:
    s = snap(*ac("f2", "u1", mode=1, sp=26.0, since=at(2026, 7, 15, 19, 30)))
    d, _, _ = run(s, at(2026, 7, 15, 20, 0))
    assert d.intents == () and any("override until 20:30" in e for e in d.explanations)
    d, _, _ = run(s, at(2026, 7, 15, 20, 31))
    assert intents_by_point(d) == {"u1.power": False}


def test_window_open_switches_zone_ac_off_after_delay() -> None:
    now = at(2026, 7, 15, 14)
    unit = ac("f2", "u1", mode=1, sp=26.0, since=at(2026, 7, 15, 8))
    d, _, _ = run(
        snap(*unit, pt("f2.win", "window_contact", "f2", 1, since=now - timedelta(minutes=10))), now
    )
    assert intents_by_point(d) == {"u1.power": False}
    assert d.intents[0].rule == "hvac.window_open"
    assert [f.subject for f in d.findings if f.kind == "window_open"] == ["f2"]
    d, _, _ = run(snap(*unit, pt("f2.win", "window_contact", "f2", 1, since=now - timedelta(minutes=2))), now)
    assert d.intents == ()
    d, _, _ = run(snap(*unit, pt("f2.win", "window_contact", "f2", 0, since=now - timedelta(hours=2))), now)
    assert d.intents == ()


# --- calendar ------------------------------------------------------------------------------------


def test_2026_makeup_saturday_is_working_and_national_day_is_holiday() -> None:
    import holidays

    cn = holidays.China(years=2026)
    assert cn.is_working_day(date(2026, 2, 14)) is True  # the package agrees (make-up Saturday)
    assert date(2026, 2, 14) in {d for d in cn.weekend_workdays if d.year == 2026}
    cal = Calendar(years=[2026])
    assert cal.day_kind(date(2026, 2, 14)) == "makeup_working"
    assert cal.is_working_day(date(2026, 2, 14))
    info = cal.day_info(date(2026, 10, 1))
    assert info.kind == "holiday" and info.name == "国庆节 National Day" and not info.working
    assert cal.day_kind(date(2026, 7, 15)) == "working"
    assert cal.day_kind(date(2026, 7, 18)) == "weekend"

    lights = snap(pt("f2.l1", "light_relay", "f2", True, since=at(2026, 2, 13, 17)))
    d, _, _ = run(lights, at(2026, 2, 14, 10))  # make-up working day, inside 07:30-12:00
    assert d.intents == ()
    assert any("make-up working day" in e for e in d.explanations)
    lights = snap(pt("f2.l1", "light_relay", "f2", True, since=at(2026, 9, 30, 17)))
    d, _, _ = run(lights, at(2026, 10, 1, 10))  # National Day: after hours all day
    assert intents_by_point(d) == {"f2.l1": False}
    assert any("holiday 国庆节 National Day" in e for e in d.explanations)


def test_site_calendar_overrides_national() -> None:
    doc = base_policy(
        **{
            "calendar.extra_holidays": [{"date": date(2026, 7, 15), "name": "closure"}],
            "calendar.extra_working_days": [date(2026, 7, 18), {"date": date(2026, 10, 1), "name": "audit"}],
        }
    )
    policy = Policy.model_validate(doc)
    cal = Calendar.from_policy(policy.calendar, years=[2026])
    assert cal.day_info(date(2026, 7, 15)).kind == "holiday"
    assert cal.day_info(date(2026, 7, 15)).source == "site"
    assert cal.day_kind(date(2026, 7, 18)) == "makeup_working"
    assert cal.day_kind(date(2026, 10, 1)) == "working"

    light = pt("f2.l1", "light_relay", "f2", True, since=at(2026, 7, 14, 17))
    d, _, _ = run(snap(light), at(2026, 7, 15, 10), doc)  # site holiday on a Wednesday
    assert intents_by_point(d) == {"f2.l1": False}
    d, _, _ = run(snap(light), at(2026, 7, 15, 10))  # national calendar: working day
    assert d.intents == ()
    light = pt("f2.l1", "light_relay", "f2", True, since=at(2026, 7, 18, 9))
    d, _, _ = run(snap(light), at(2026, 7, 18, 11), doc)  # site working Saturday
    assert d.intents == ()
    d, _, _ = run(snap(light), at(2026, 7, 18, 11))  # plain Saturday: swept (on since 09:00 > 60 min)
    assert intents_by_point(d) == {"f2.l1": False}


# --- lighting ------------------------------------------------------------------------------------


def test_lights_on_at_21_on_working_day_are_swept() -> None:
    s = snap(
        pt("f2.l1", "light_relay", "f2", True, since=at(2026, 7, 15, 8)),
        pt("f2.l2", "light_relay", "f2", False, since=at(2026, 7, 15, 8)),
        pt("f3.l1", "light_relay", "f3", 1, since=at(2026, 7, 15, 8), states={0: "off", 1: "on"}),
    )
    d, _, _ = run(s, at(2026, 7, 15, 21))
    assert intents_by_point(d) == {"f2.l1": False, "f3.l1": 0}
    assert all(i.rule == "lighting.after_hours_sweep" for i in d.intents)
    d, _, _ = run(s, at(2026, 7, 15, 17, 59))
    assert d.intents == ()
    d, _, _ = run(s, at(2026, 7, 15, 18, 20))  # after hours but before the 18:30 sweep
    assert d.intents == ()
    d, _, _ = run(s, at(2026, 7, 15, 18, 30))
    assert set(intents_by_point(d)) == {"f2.l1", "f3.l1"}


def test_manual_switch_on_after_hours_respected_then_swept() -> None:
    s = snap(pt("f2.l1", "light_relay", "f2", True, since=at(2026, 7, 15, 20, 10)))
    for hh, mm in ((20, 30), (21, 0), (21, 9)):
        d, _, _ = run(s, at(2026, 7, 15, hh, mm))
        assert d.intents == (), (hh, mm)
    d, _, _ = run(s, at(2026, 7, 15, 21, 30))  # override ended 21:10, but no sweep since
    assert d.intents == ()
    d, _, _ = run(s, at(2026, 7, 15, 22, 0))  # first sweep after the override window
    assert intents_by_point(d) == {"f2.l1": False}
    d, _, _ = run(s, at(2026, 7, 15, 20, 30))
    assert any("override until 21:10" in e for e in d.explanations)


def test_daylight_above_threshold_switches_perimeter_lights_off() -> None:
    now = at(2026, 7, 15, 10)
    since = at(2026, 7, 15, 8)
    s = snap(
        pt("f1.l1", "light_relay", "f1", True, since=since),
        pt("f1.lux", "illuminance", "f1", 1200.0, since=since, writable=False),
        pt("f2.l1", "light_relay", "f2", True, since=since),  # not perimeter
        pt("f2.lux", "illuminance", "f2", 1200.0, since=since, writable=False),
    )
    d, _, _ = run(s, now)
    assert intents_by_point(d) == {"f1.l1": False}
    assert d.intents[0].rule == "lighting.daylight"
    dim = dict(s) | {"f1.lux": pt("f1.lux", "illuminance", "f1", 500.0, since=since, writable=False)}
    d, _, _ = run(dim, now)
    assert d.intents == ()
    d, _, _ = run(s, now, lat=None)  # no sun times: the rule cannot tell day from night
    assert d.intents == () and any("latitude" in f.reason for f in d.findings)


def test_sun_group_outdoor_lights_off_in_daytime_only() -> None:
    groups = [
        {"name": "offices", "zones": ["f1", "f2", "f3"], "on_periods": ["07:30-12:00"]},
        {
            "name": "outdoor",
            "zones": ["outdoor"],
            "sun": {"on_after_sunset_min": 15, "off_before_sunrise_min": 15},
        },
    ]
    doc = base_policy(**{"lighting.groups": groups})
    s = snap(pt("out.l1", "light_relay", "outdoor", True, since=at(2026, 7, 14, 20)))
    d, _, _ = run(s, at(2026, 7, 15, 12), doc)
    assert intents_by_point(d) == {"out.l1": False} and d.intents[0].rule == "lighting.sun"
    d, _, _ = run(s, at(2026, 7, 15, 4, 30), doc)  # Shanghai sunrise ~05:00: still night window
    assert d.intents == ()
    d, _, _ = run(s, at(2026, 7, 15, 4, 50), doc)  # within 15 min of sunrise: off
    assert intents_by_point(d) == {"out.l1": False}


def test_explain_is_json_ready() -> None:
    import json

    now = at(2026, 7, 15, 14)
    policy = Policy.model_validate(base_policy())
    params = PolicyParams(policy=policy, latitude=31.23, longitude=121.47, zones=ZONES)
    s = snap(*ac("f2", "u1", mode=1, sp=22.0, since=now), pt("f2.l1", "light_relay", "f2", True, since=now))
    lines = explain(s, now, Calendar(years=[2026]), params)
    data = json.loads(json.dumps([x.as_dict() for x in lines]))
    sp = next(x for x in data if x["point"] == "u1.setpoint")
    assert sp["decision"] == "write" and sp["why"]["season"] == "summer"
    assert sp["why"]["day_kind"] == "working" and sp["why"]["limit_c"] == 26.0
    light = next(x for x in data if x["point"] == "f2.l1")
    assert light["why"]["schedule"] == "inside working period 13:30-18:00"


def test_light_first_seen_on_after_hours_is_not_taken_for_a_manual_switch_on() -> None:
    """After a restart the agent only knows when it first saw a light on: no override window for it."""
    first_seen = at(2026, 7, 15, 21, 0)
    known = snap(pt("f2.l1", "light_relay", "f2", True, since=first_seen))
    unknown = snap(pt("f2.l1", "light_relay", "f2", True, since=first_seen, since_known=False))
    d, _, _ = run(known, at(2026, 7, 15, 21, 5))
    assert d.intents == ()  # switched on by hand at 21:00: respected for the override window
    d, _, _ = run(unknown, at(2026, 7, 15, 21, 5))
    assert intents_by_point(d) == {"f2.l1": False}  # found on at the 21:00 sweep
    assert not any("by hand" in e for e in d.explanations)


@pytest.mark.parametrize(
    ("on_at", "swept_at"),
    [
        ((21, 0, 0), (22, 0)),  # override until 22:00: the 22:00 sweep takes it
        ((21, 0, 40), (22, 0)),  # seen on 40 s after the switch (a poll): still the 22:00 sweep
        ((21, 10, 0), (23, 0)),  # override until 22:10: the first sweep after that is 23:00
    ],
)
def test_manual_switch_on_is_swept_at_the_first_sweep_after_the_override(
    on_at: tuple[int, int, int], swept_at: tuple[int, int]
) -> None:
    """Issue 13 item 7: override_min 60, sweeps 18:30, 20:00 and hourly after: the README's rule."""
    since = at(2026, 7, 15, on_at[0], on_at[1]) + timedelta(seconds=on_at[2])

    def decide(h: int, m: int) -> Decision:
        s = snap(pt("f2.l1", "light_relay", "f2", True, since=since))
        d, _, _ = run(s, at(2026, 7, 15, h, m))
        return d

    due = at(2026, 7, 15, *swept_at)
    t = since + timedelta(minutes=1)
    while t < due:
        assert decide(t.hour, t.minute).intents == (), f"swept too early at {t:%H:%M}"
        t += timedelta(minutes=5)
    assert intents_by_point(decide(*swept_at)) == {"f2.l1": False}

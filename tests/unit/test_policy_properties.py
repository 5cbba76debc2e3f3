"""Properties of policies.evaluate that must hold for every snapshot, time and policy (hypothesis)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.calendar import Calendar
from policies.evaluate import POLICY_ROLES, evaluate, explain
from policies.model import Policy
from policies.params import PolicyParams, ZoneFacts
from policies.types import Decision, PointState, Snapshot

ZONES = ["f1", "f2", "f3", "dc", "outdoor"]
FACTS = {
    "f1": ZoneFacts(id="f1", perimeter=True),
    "f2": ZoneFacts(id="f2"),
    "f3": ZoneFacts(id="f3", perimeter=True),
    "dc": ZoneFacts(id="dc", kind="data_centre"),
    "outdoor": ZoneFacts(id="outdoor", kind="outdoor"),
}
ROLES = [
    "setpoint",
    "cooling_setpoint",
    "heating_setpoint",
    "ac_mode",
    "ac_power",
    "light_relay",
    "window_contact",
    "illuminance",
    "room_temperature",
    "energy",
]
# Rules fire only when setpoints, modes and relays meet in a unit: draw those more often.
WEIGHTED_ROLES = [
    *ROLES,
    "setpoint",
    "setpoint",
    "cooling_setpoint",
    "ac_power",
    "light_relay",
    "light_relay",
]
MODE_TABLES = [{0: "off", 1: "cool", 2: "heat", 3: "fan", 4: "auto"}, {1: "cool", 2: "heat", 5: "dry"}, None]
# Built once: the calendar is data, and building it per example would dominate the run time.
CAL = Calendar(years=[2025, 2026, 2027])

values = st.one_of(
    st.floats(min_value=5, max_value=40, allow_nan=False),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-2, max_value=6),
    st.booleans(),
    st.sampled_from(["on", "off", "cool", "heat", "auto", "fan", "open", "closed", "??"]),
    st.none(),
)
nows = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC))


def _role_value(role: str) -> st.SearchStrategy[Any]:
    """Mostly plausible values for the role, sometimes anything (the policy must stay total)."""
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "setpoint": st.floats(min_value=10, max_value=35),
        "cooling_setpoint": st.floats(min_value=10, max_value=35),
        "heating_setpoint": st.floats(min_value=10, max_value=35),
        "ac_mode": st.integers(min_value=0, max_value=5),
        "ac_power": st.booleans() | st.integers(min_value=0, max_value=1),
        "light_relay": st.booleans() | st.integers(min_value=0, max_value=1),
        "window_contact": st.booleans(),
        "illuminance": st.floats(min_value=0, max_value=2000),
    }
    good = plausible.get(role, values)
    return st.one_of(good, good, good, values)


@st.composite
def points(draw: st.DrawFn, now: datetime) -> list[PointState]:
    n = draw(st.integers(min_value=0, max_value=12))
    out: list[PointState] = []
    for i in range(n):
        role = draw(st.sampled_from(WEIGHTED_ROLES))
        lo: float | None = None
        hi: float | None = None
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            lo = draw(st.floats(min_value=-1, max_value=30))
            hi = draw(st.floats(min_value=lo, max_value=40))
        states = draw(st.sampled_from(MODE_TABLES)) if role == "ac_mode" else None
        if role == "light_relay" and draw(st.booleans()):
            states = {0: "off", 1: "on"}
        since = now - timedelta(minutes=draw(st.integers(min_value=0, max_value=4000)))
        out.append(
            PointState(
                point_id=f"p{i}.{role}",
                role=role,
                zone=draw(st.sampled_from([*ZONES, "f2", "f2", None])),
                value=draw(_role_value(role)),
                ok=draw(st.integers(min_value=0, max_value=5)) > 0,
                ts=since,
                since=since,
                writable=draw(st.integers(min_value=0, max_value=3)) > 0,
                min=lo,
                max=hi,
                states=states,
                device_id=draw(st.sampled_from(["d1", "d1", "d2", None])),
            )
        )
    return out


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    doc: dict[str, Any] = {
        "seasons": {
            "summer": draw(st.sampled_from(["06-01..09-30", "05-15..10-15", None])),
            "winter": draw(st.sampled_from(["11-15..03-15", "12-01..02-28", None])),
        },
        "hvac": {
            "summer_min_cooling_c": draw(st.sampled_from([26, 26.5, 27, 28])),
            "winter_max_heating_c": draw(st.sampled_from([20, 19, 18])),
            "deadband_c": draw(st.sampled_from([0.0, 0.2, 0.5])),
            "setpoint_without_mode": draw(st.sampled_from(["season", "skip"])),
            "exemptions": draw(
                st.sampled_from([[], [{"zone": "dc", "reason": "servers", "until": "2026-06-30"}]])
            ),
            "after_hours": draw(
                st.sampled_from([None, {"working_hours": ["07:30-18:30"], "override_min": 30}])
            ),
            "window_open": draw(st.sampled_from([None, {"delay_min": 5}])),
        },
        "lighting": {
            "groups": [
                {
                    "name": "offices",
                    "zones": ["f1", "f2", "f3"],
                    "on_periods": ["07:30-12:00", "13:30-18:00"],
                    "sweeps": ["12:15", "18:30", "20:00"],
                    "sweep_every_min": draw(st.sampled_from([None, 30, 60])),
                    "override_min": draw(st.sampled_from([0, 60])),
                    "daylight_off_above_lux": draw(st.sampled_from([None, 500])),
                },
                {"name": "outdoor", "zones": ["outdoor"], "sun": {"on_after_sunset_min": 10}},
            ]
        },
    }
    return Policy.model_validate(doc)


def _params(policy: Policy, with_sun: bool) -> PolicyParams:
    return PolicyParams(
        policy=policy,
        latitude=31.23 if with_sun else None,
        longitude=121.47 if with_sun else None,
        zones=FACTS,
    )


def _check_limits(d: Decision, s: Snapshot, policy: Policy) -> None:
    hv = policy.hvac
    for it in d.intents:
        p = s[it.point_id]
        assert p.writable, it
        assert p.ok, it
        v = float(it.value)
        assert p.min is None or v >= p.min, it
        assert p.max is None or v <= p.max, it
        if p.role in ("setpoint", "cooling_setpoint", "heating_setpoint"):
            assert it.rule in ("hvac.summer_min_cooling", "hvac.winter_max_heating"), it
            if it.rule == "hvac.summer_min_cooling":
                assert v >= hv.summer_min_cooling_c
            else:
                assert v <= hv.winter_max_heating_c
        else:  # everything else the policies write is a switch-off
            assert p.role in ("ac_power", "ac_mode", "light_relay"), it
    assert len({it.point_id for it in d.intents}) == len(d.intents)
    assert not any(f.rule == "policy.internal_error" for f in d.findings), d.findings


def _apply(s: Snapshot, d: Decision, now: datetime) -> dict[str, PointState]:
    out = dict(s)
    for it in d.intents:
        out[it.point_id] = dataclasses.replace(out[it.point_id], value=it.value, ts=now, since=now)
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), policy=policies(), now=nows, with_sun=st.booleans())
def test_intents_respect_limits_and_ranges_and_are_idempotent(
    data: st.DataObject, policy: Policy, now: datetime, with_sun: bool
) -> None:
    s = {p.point_id: p for p in data.draw(points(now))}
    params = _params(policy, with_sun)
    d = evaluate(s, now, CAL, params)
    _check_limits(d, s, policy)
    assert evaluate(s, now, CAL, params) == d  # deterministic
    again = evaluate(_apply(s, d, now), now, CAL, params)
    assert again.intents == (), (d.intents, again.intents)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), policy=policies(), now=nows)
def test_explain_covers_every_explanation_line(data: st.DataObject, policy: Policy, now: datetime) -> None:
    s = {p.point_id: p for p in data.draw(points(now))}
    params = _params(policy, True)
    d = evaluate(s, now, CAL, params)
    lines = explain(s, now, CAL, params)
    assert tuple(x.text for x in lines) == d.explanations
    written = {x.point for x in lines if x.decision == "write"}
    assert written == {it.point_id for it in d.intents}


@st.composite
def other_points(draw: st.DrawFn, now: datetime) -> list[PointState]:
    """Points of roles the policies do not read, in the same zones and devices as the policy points."""
    out: list[PointState] = []
    for i in range(draw(st.integers(min_value=0, max_value=8))):
        role = draw(st.sampled_from(["room_temperature", "energy", "power", "water", "co2", "humidity"]))
        ts = now - timedelta(minutes=draw(st.integers(min_value=0, max_value=4000)))
        out.append(
            PointState(
                point_id=f"p{draw(st.integers(min_value=0, max_value=12))}.{role}.{i}",
                role=role,
                zone=draw(st.sampled_from([*ZONES, None])),
                value=draw(values),
                ok=draw(st.booleans()),
                ts=ts,
                since=ts,
                writable=draw(st.booleans()),
                device_id=draw(st.sampled_from(["d1", "d2", None])),
            )
        )
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), policy=policies(), now=nows, with_sun=st.booleans())
def test_points_of_other_roles_change_no_decision(
    data: st.DataObject, policy: Policy, now: datetime, with_sun: bool
) -> None:
    """The enforcer hands evaluate() only the POLICY_ROLES points (issue 18): the same intents, findings
    and explanations as the whole snapshot gives."""
    s = {p.point_id: p for p in data.draw(points(now)) + data.draw(other_points(now))}
    params = _params(policy, with_sun)
    only = {pid: p for pid, p in s.items() if p.role in POLICY_ROLES}
    assert evaluate(only, now, CAL, params) == evaluate(s, now, CAL, params)

"""Only good data decides (issue 13, item 4): a reading that is bad, uncertain, out of range, a device's
"no value" sentinel or stale produces no write, a line in `explain`, and a data_quality finding once it
persists; a unit whose setpoint, mode or power is not known, good and fresh is never acted on."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.calendar import Calendar
from policies.evaluate import evaluate, explain
from policies.model import Policy
from policies.params import PointFacts, PolicyParams, ZoneFacts
from policies.types import Decision, PointState, Snapshot

TZ = ZoneInfo("Asia/Shanghai")
MODES = {0: "off", 1: "cool", 2: "heat", 3: "fan", 4: "auto"}
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "policy.yaml"
NOW = datetime(2026, 7, 15, 10, 0, tzinfo=TZ)  # a summer working day, in working hours
POLICY = Policy.model_validate(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")))
ZONES = {"f2": ZoneFacts(id="f2", kind="office"), "f3": ZoneFacts(id="f3", kind="office")}


def pt(pid: str, role: str, value: Any, *, device: str = "a", zone: str = "f2", **kw: Any) -> PointState:
    base: dict[str, Any] = {
        "point_id": pid, "role": role, "zone": zone, "value": value, "ok": True, "ts": NOW, "since": NOW,
        "writable": True, "device_id": device,
    }  # fmt: skip
    if role == "ac_mode":
        base["states"] = MODES
    if role == "setpoint":
        base.update(min=16.0, max=32.0)
    base.update(kw)
    return PointState(**base)


def unit(
    device: str = "a", *, sp: Any = 18.0, mode: Any = 1, power: Any = True, zone: str = "f2"
) -> list[PointState]:
    return [
        pt(f"{device}.power", "ac_power", power, device=device, zone=zone),
        pt(f"{device}.mode", "ac_mode", mode, device=device, zone=zone),
        pt(f"{device}.sp", "setpoint", sp, device=device, zone=zone),
    ]


def params(points: Mapping[str, PointFacts] | None = None) -> PolicyParams:
    return PolicyParams(policy=POLICY, zones=ZONES, points=points or {})


def run(s: Snapshot, prm: PolicyParams | None = None, now: datetime = NOW) -> Decision:
    return evaluate(s, now, Calendar.from_policy(POLICY.calendar, years=[now.year]), prm or params())


def snap(*points: PointState) -> Snapshot:
    return {p.point_id: p for p in points}


def with_(points: list[PointState], pid: str, **changes: Any) -> list[PointState]:
    return [dataclasses.replace(p, **changes) if p.point_id == pid else p for p in points]


def test_good_unit_is_corrected() -> None:
    d = run(snap(*unit()))
    assert [(i.point_id, i.value) for i in d.intents] == [("a.sp", 26.0)]


def test_no_value_sentinel_setpoint_is_not_corrected() -> None:
    # A Modbus "no value" sentinel read as -3276.8 °C: the driver marks it bad with code no_value.
    s = snap(*with_(unit(), "a.sp", value=-3276.8, ok=False, quality="bad", code="no_value"))
    d = run(s)
    assert d.intents == ()
    lines = explain(s, NOW, Calendar.from_policy(POLICY.calendar, years=[2026]), params())
    texts = [ln.text for ln in lines if ln.point == "a.sp"]
    assert any("no value (no_value)" in t and "not acted on" in t for t in texts)
    assert any(ln.rule == "hvac.unit_state" and ln.decision == "skip" for ln in lines)


def test_out_of_range_reading_is_not_corrected_even_when_quality_is_good() -> None:
    d = run(snap(*with_(unit(), "a.sp", value=-3276.8)))
    assert d.intents == ()


def test_uncertain_mode_blocks_the_whole_unit() -> None:
    d = run(snap(*with_(unit(), "a.mode", quality="uncertain", code="overridden")))
    assert d.intents == ()


def test_bad_power_blocks_the_after_hours_switch_off() -> None:
    evening = datetime(2026, 7, 15, 21, 0, tzinfo=TZ)
    pts = [dataclasses.replace(p, ts=evening, since=evening - timedelta(hours=3)) for p in unit(sp=26.0)]
    assert {i.point_id for i in run(snap(*pts), now=evening).intents} == {"a.power"}
    d = run(snap(*with_(pts, "a.power", ok=False, quality="bad", code="timeout")), now=evening)
    assert d.intents == ()


def test_configured_point_not_read_yet_makes_the_unit_incomplete() -> None:
    # The start-up race: setpoint read, mode not yet. Without the mode, "summer => cooling" would be a guess.
    facts = {p.point_id: PointFacts(id=p.point_id, role=p.role, zone="f2", device_id="a") for p in unit()}
    s = snap(*[p for p in unit() if p.role != "ac_mode"])
    assert run(s, params(facts)).intents == ()
    lines = explain(s, NOW, Calendar.from_policy(POLICY.calendar, years=[2026]), params(facts))
    assert any("a.mode (not read yet)" in ln.text for ln in lines)
    # once it is read, the unit is enforced
    assert [i.point_id for i in run(snap(*unit()), params(facts)).intents] == ["a.sp"]


def test_stale_reading_decides_nothing() -> None:
    facts = {p.point_id: PointFacts(id=p.point_id, role=p.role, device_id="a", interval_s=10) for p in unit()}
    old = NOW - timedelta(seconds=31)
    s = snap(*with_(unit(), "a.sp", ts=old, since=old))
    d = run(s, params(facts))
    assert d.intents == ()
    assert [(f.kind, f.subject) for f in d.findings] == [("data_quality", "a.sp")]
    fresh = snap(*with_(unit(), "a.sp", ts=NOW - timedelta(seconds=29), since=old))
    assert [i.point_id for i in run(fresh, params(facts)).intents] == ["a.sp"]


def test_data_quality_finding_only_once_it_persists_and_its_reason_is_stable() -> None:
    facts = {p.point_id: PointFacts(id=p.point_id, role=p.role, device_id="a", interval_s=10) for p in unit()}
    bad = {"ok": False, "quality": "bad", "code": "timeout"}
    just = snap(*with_(unit(), "a.sp", since=NOW - timedelta(seconds=20), **bad))
    assert run(just, params(facts)).findings == ()
    later = snap(*with_(unit(), "a.sp", since=NOW - timedelta(seconds=40), **bad))
    f1 = run(later, params(facts)).findings
    f2 = run(later, params(facts), now=NOW + timedelta(seconds=10)).findings
    assert [f.kind for f in f1] == ["data_quality"] and f1 == f2


def test_bad_unit_does_not_stop_a_good_one() -> None:
    s = snap(*with_(unit("a"), "a.sp", quality="uncertain"), *unit("b", zone="f3"))
    assert [i.point_id for i in run(s).intents] == ["b.sp"]


def test_bad_window_contact_does_not_switch_off() -> None:
    open_since = NOW - timedelta(hours=1)
    window = pt("w", "window_contact", True, device="w", since=open_since, ts=open_since, writable=False)
    assert "a.power" in {i.point_id for i in run(snap(*unit(sp=26.0), window)).intents}
    bad_window = dataclasses.replace(window, quality="uncertain", code="fault")
    assert run(snap(*unit(sp=26.0), bad_window)).intents == ()


_QUALITIES = st.sampled_from([
    {}, {"ok": False, "quality": "bad", "code": "timeout"}, {"quality": "uncertain", "code": "overridden"},
    {"ok": False, "quality": "bad", "code": "no_value", "value": -3276.8}, {"value": -3276.8},
    {"value": float("nan")},
])  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    q=st.lists(st.tuples(st.sampled_from(["power", "mode", "sp"]), _QUALITIES), max_size=4),
    sp=st.floats(16, 32),
    mode=st.sampled_from(sorted(MODES)),
    hour=st.sampled_from([10, 21]),
)
def test_no_write_results_from_a_unit_with_a_reading_that_is_not_good(
    q: list[tuple[str, dict[str, Any]]], sp: float, mode: int, hour: int
) -> None:
    now = NOW.replace(hour=hour)
    pts = [dataclasses.replace(p, ts=now, since=now - timedelta(hours=2)) for p in unit(sp=sp, mode=mode)]
    # -3276.8 is only out of range for the setpoint (16..32); the power and mode points have no range
    q = [(n, c) for n, c in q if n == "sp" or c != {"value": -3276.8}]
    for name, change in q:
        pts = with_(pts, f"a.{name}", **change)
    good = snap(*unit("b", sp=sp, mode=mode, zone="f3"))
    d = run({**snap(*pts), **{k: dataclasses.replace(v, ts=now) for k, v in good.items()}}, now=now)
    if any(change for _, change in q):
        assert not [i for i in d.intents if i.point_id.startswith("a.")]
    # the other unit decides as it would alone
    alone = run({k: dataclasses.replace(v, ts=now) for k, v in good.items()}, now=now)
    assert [i for i in d.intents if i.point_id.startswith("b.")] == list(alone.intents)


@settings(max_examples=100, deadline=None)
@given(
    relay=_QUALITIES,
    lux=_QUALITIES,
    minute=st.integers(0, 23 * 60 + 59),
)
def test_no_light_is_switched_off_on_data_that_is_not_good(
    relay: dict[str, Any], lux: dict[str, Any], minute: int
) -> None:
    now = NOW.replace(hour=minute // 60, minute=minute % 60)
    zones = {"f1": ZoneFacts(id="f1", kind="office", perimeter=True)}
    prm = PolicyParams(policy=POLICY, zones=zones, latitude=31.23, longitude=121.47)
    since = now - timedelta(hours=5)
    light = pt("l", "light_relay", True, device="l", zone="f1", ts=now, since=since)
    sensor = pt("x", "illuminance", 5000.0, device="x", zone="f1", ts=now, since=since, writable=False)
    sensor = dataclasses.replace(sensor, min=0.0, max=100000.0)
    relay = {k: v for k, v in relay.items() if k != "value"}  # quality changes only: True stays True
    light = dataclasses.replace(light, **relay)
    d = evaluate(snap(light, dataclasses.replace(sensor, **lux)), now, Calendar.from_policy(
        POLICY.calendar, years=[2026]), prm)  # fmt: skip
    if relay:
        assert d.intents == ()  # the relay's own state is not good: never switched
    elif lux:
        assert all(i.rule != "lighting.daylight" for i in d.intents)  # bad lux never decides daylight

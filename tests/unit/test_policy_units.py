"""AC units are entities (issue 13, item 1): every rule decides per unit, a zone only groups units, and
`check` refuses HVAC points it cannot assign to exactly one unit."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.config.load import ConfigError, load_config
from policies.calendar import Calendar
from policies.evaluate import evaluate, explain
from policies.model import Policy
from policies.params import PolicyParams, ZoneFacts
from policies.types import Decision, PointState, Snapshot
from tests.sitetext import ROOT, example_site_without

TZ = ZoneInfo("Asia/Shanghai")
MODES = {1: "off", 2: "cool", 3: "heat", 4: "fan", 5: "auto"}
POLICY = Policy.model_validate(yaml.safe_load((ROOT / "config" / "policy.yaml").read_text("utf-8")))
PARAMS = PolicyParams(policy=POLICY, zones={"f1": ZoneFacts(id="f1", kind="office")})
CAL = Calendar.from_policy(POLICY.calendar, years=[2026])
NOW = datetime(2026, 7, 15, 10, tzinfo=TZ)


def unit(
    iu: str | None, *, power: bool, mode: int, sp: float, dev: str = "gw", now: datetime = NOW
) -> list[PointState]:
    c: dict[str, Any] = {"zone": "f1", "ok": True, "ts": now, "since": now - timedelta(hours=2),
                         "writable": True, "device_id": dev, "ac_unit": iu}  # fmt: skip
    tag = f"{dev}.{iu}" if iu else dev
    return [
        PointState(point_id=f"{tag}.power", role="ac_power", value=power, **c),
        PointState(point_id=f"{tag}.mode", role="ac_mode", value=mode, states=MODES, **c),
        PointState(point_id=f"{tag}.sp", role="setpoint", value=sp, min=16.0, max=32.0, **c),
    ]


def run(*pts: PointState, now: datetime = NOW) -> Decision:
    return evaluate({p.point_id: p for p in pts}, now, CAL, PARAMS)


def test_two_units_of_one_gateway_in_one_zone_decide_independently() -> None:
    # The issue's case: unit 1 off, unit 2 in auto at 25 °C in summer.
    d = run(*unit("iu1", power=False, mode=1, sp=22.0), *unit("iu2", power=True, mode=5, sp=25.0))
    assert [(i.point_id, i.value) for i in d.intents] == [("gw.iu2.sp", 26.0)]
    s: Snapshot = {p.point_id: p for p in (*unit("iu1", power=False, mode=1, sp=22.0),
                                           *unit("iu2", power=True, mode=5, sp=25.0))}  # fmt: skip
    texts = [ln.text for ln in explain(s, NOW, CAL, PARAMS)]
    assert any("gw.iu1.sp: unit off" in t for t in texts)
    assert any("gw.iu2.sp 25.0 °C in auto" in t and "write 26.0" in t for t in texts)


def test_units_without_ac_unit_ids_on_one_device_are_not_merged_but_left_alone() -> None:
    both = (*unit("iu1", power=False, mode=1, sp=22.0), *unit("iu2", power=True, mode=2, sp=22.0))
    pts = [dataclasses.replace(p, ac_unit=None) for p in both]
    d = run(*pts)
    assert d.intents == ()
    (f,) = [f for f in d.findings if f.rule == "hvac.unit"]
    assert "ac_unit" in f.reason and "2 ac_mode points" in f.reason


def test_after_hours_switches_off_each_running_unit_only() -> None:
    evening = NOW.replace(hour=21)
    d = run(*unit("iu1", power=False, mode=1, sp=26.0, now=evening),
            *unit("iu2", power=True, mode=2, sp=26.0, now=evening), now=evening)  # fmt: skip
    assert [(i.point_id, i.value) for i in d.intents] == [("gw.iu2.power", False)]


@settings(max_examples=150, deadline=None)
@given(
    a=st.tuples(st.booleans(), st.sampled_from(sorted(MODES)), st.floats(16, 32)),
    b=st.tuples(st.booleans(), st.sampled_from(sorted(MODES)), st.floats(16, 32)),
    b2=st.tuples(st.booleans(), st.sampled_from(sorted(MODES)), st.floats(16, 32)),
    hour=st.sampled_from([10, 21]),
)
def test_adding_or_changing_one_unit_never_changes_another_units_intents(
    a: tuple[bool, int, float], b: tuple[bool, int, float], b2: tuple[bool, int, float], hour: int
) -> None:
    now = NOW.replace(hour=hour)
    ua = unit("iu1", power=a[0], mode=a[1], sp=a[2], now=now)

    def mine(d: Decision) -> list[Any]:
        return [(i.point_id, i.value, i.rule) for i in d.intents if i.point_id.startswith("gw.iu1.")]

    alone = mine(run(*ua, now=now))
    assert mine(run(*ua, *unit("iu2", power=b[0], mode=b[1], sp=b[2], now=now), now=now)) == alone
    assert mine(run(*ua, *unit("iu2", power=b2[0], mode=b2[1], sp=b2[2], now=now), now=now)) == alone


def _points(n: int, iu: str) -> str:
    tag, au = "ab"[n - 1], f", ac_unit: {iu}"
    common = f"instance: {n}, writable: true{au}"
    return (
        f"      - {{id: {tag}.power, object_type: binary-value, {common}, role: ac_power}}\n"
        f"      - {{id: {tag}.mode, object_type: multi-state-value, {common}, role: ac_mode,\n"
        f"          states: {{1: 'off', 2: cool}}}}\n"
        f"      - {{id: {tag}.sp, object_type: analog-value, {common}, role: setpoint, min: 16, max: 32}}\n"
    )


TWO_UNITS = (
    "devices:\n  - protocol: bacnet\n    id: fc-1f\n    address: '127.0.0.2:47808'\n"
    "    device_instance: 1001\n    zone: f1\n    points:\n" + _points(1, "iu1") + _points(2, "iu2")
)


def _site(tmp_path: Path, devices: str) -> Path:
    shutil.copy(ROOT / "config" / "policy.yaml", tmp_path / "policy.yaml")
    site = tmp_path / "site.yaml"
    site.write_text(example_site_without({"devices", "meters", "targets", "storage"}) + devices, "utf-8")
    return site


def test_check_accepts_two_units_with_ac_unit_ids(tmp_path: Path) -> None:
    cfg = load_config(_site(tmp_path, TWO_UNITS))
    assert {p.ac_unit for _, p in cfg.points()} == {"iu1", "iu2"}


def test_check_refuses_a_second_mode_point_without_ac_unit(tmp_path: Path) -> None:
    text = TWO_UNITS.replace(", ac_unit: iu2", "").replace(", ac_unit: iu1", "")
    assert "ac_unit" not in text
    with pytest.raises(ConfigError) as err:
        load_config(_site(tmp_path, text))
    msgs = [(i.line, i.path, i.message) for i in err.value.issues]
    assert any(p == "devices[0].points[4].role" and "second ac_mode point" in m and "ac_unit" in m
               for _, p, m in msgs)  # fmt: skip
    lines = (tmp_path / "site.yaml").read_text("utf-8").splitlines()
    (issue,) = [i for i in err.value.issues if i.path == "devices[0].points[4].role"]
    assert "b.mode" in lines[issue.line - 1]


def test_check_refuses_one_unit_in_two_zones(tmp_path: Path) -> None:
    text = TWO_UNITS.replace("role: setpoint, min: 16", "role: setpoint, zone: f2, min: 16", 1)
    with pytest.raises(ConfigError) as err:
        load_config(_site(tmp_path, text))
    assert any("one unit, one zone" in i.message for i in err.value.issues)

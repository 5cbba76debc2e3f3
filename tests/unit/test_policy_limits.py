"""Mode-aware limits (issue 13, item 3): under `hvac.limits_by: mode` (the default) a cooling unit never
goes below the cooling floor and a heating unit never above the heating cap, in any season."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.calendar import Calendar
from policies.evaluate import evaluate
from policies.model import Policy
from policies.params import PolicyParams, ZoneFacts
from policies.types import PointState

TZ = ZoneInfo("Asia/Shanghai")
MODES = {0: "off", 1: "cool", 2: "heat", 3: "fan", 4: "auto", 5: "dry"}
DOC = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "policy.yaml").read_text("utf-8"))
POLICY = Policy.model_validate(DOC)
PARAMS = PolicyParams(policy=POLICY, zones={"f2": ZoneFacts(id="f2", kind="office")})
CAL = Calendar.from_policy(POLICY.calendar, years=[2026])
# Working days at 10:00 in summer, winter and the two transition seasons.
DAYS = [datetime(2026, 7, 15, 10, tzinfo=TZ), datetime(2026, 1, 14, 10, tzinfo=TZ),
        datetime(2026, 4, 15, 10, tzinfo=TZ), datetime(2026, 10, 21, 10, tzinfo=TZ)]  # fmt: skip


def _unit(now: datetime, role: str, mode: int, sp: float) -> dict[str, PointState]:
    since = now - timedelta(hours=1)
    common = {"zone": "f2", "ok": True, "ts": now, "since": since, "writable": True, "device_id": "u"}
    pts = [
        PointState(point_id="u.power", role="ac_power", value=True, **common),  # type: ignore[arg-type]
        PointState(point_id="u.mode", role="ac_mode", value=mode, states=MODES, **common),  # type: ignore[arg-type]
        PointState(point_id="u.sp", role=role, value=sp, min=10.0, max=35.0, **common),  # type: ignore[arg-type]
    ]
    return {p.point_id: p for p in pts}


@settings(max_examples=200, deadline=None)
@given(
    role=st.sampled_from(["setpoint", "cooling_setpoint", "heating_setpoint"]),
    mode=st.sampled_from([1, 2, 5]),
    sp=st.floats(10, 35, allow_nan=False),
)
def test_limits_by_mode_never_loosen_with_the_season(role: str, mode: int, sp: float) -> None:
    results = []
    cooling = role == "cooling_setpoint" or (role == "setpoint" and mode in (1, 5))
    for day in DAYS:
        d = evaluate(_unit(day, role, mode, sp), day, CAL, PARAMS)
        results.append({(i.point_id, i.value) for i in d.intents})
        for i in d.intents:
            assert i.point_id == "u.sp"
            assert i.value == (26.0 if cooling else 20.0)
        # a cooling unit below the floor (or a heating unit above the cap) is corrected on every day
        if (cooling and sp < 26.0) or (not cooling and sp > 20.0):
            assert {(i.point_id, i.value) for i in d.intents} == {("u.sp", 26.0 if cooling else 20.0)}
    assert all(r == results[0] for r in results)

"""Zone kinds mean something (issue 13, item 2): server_room/data_centre units are never switched off by
after-hours, holiday or window rules, and their setpoints are limited only when policy.yaml says so."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from edge_agent.config.load import load_config
from policies.calendar import Calendar
from policies.evaluate import evaluate, explain
from policies.model import Policy
from policies.params import PolicyParams, ZoneFacts
from policies.types import Decision, PointState
from tests.sitetext import ROOT

TZ = ZoneInfo("Asia/Shanghai")
MODES = {1: "off", 2: "cool", 3: "heat", 4: "fan"}
DOC: dict[str, Any] = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text("utf-8"))
DOC["hvac"]["exemptions"] = []  # the example exempts dc explicitly; these tests need it without


def crac(zone: str, now: datetime, sp: float = 22.0) -> list[PointState]:
    c: dict[str, Any] = {"zone": zone, "ok": True, "ts": now, "since": now - timedelta(days=3),
                         "writable": True, "device_id": f"crac-{zone}"}  # fmt: skip
    window = {**c, "writable": False, "device_id": f"w-{zone}"}
    return [
        PointState(point_id=f"{zone}.power", role="ac_power", value=True, **c),
        PointState(point_id=f"{zone}.mode", role="ac_mode", value=2, states=MODES, **c),
        PointState(point_id=f"{zone}.sp", role="setpoint", value=sp, min=16.0, max=32.0, **c),
        PointState(point_id=f"{zone}.window", role="window_contact", value=True, **window),
    ]


def run(now: datetime, *zones: str, doc: dict[str, Any] = DOC) -> Decision:
    policy = Policy.model_validate(doc)
    prm = PolicyParams(
        policy=policy,
        zones={
            "sr": ZoneFacts(id="sr", kind="server_room"),
            "dc": ZoneFacts(id="dc", kind="data_centre"),
            "of": ZoneFacts(id="of", kind="office"),
        },
    )
    s = {p.point_id: p for z in zones for p in crac(z, now)}
    return evaluate(s, now, Calendar.from_policy(policy.calendar, years=[now.year]), prm)


@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 7, 15, 19, 0, tzinfo=TZ),  # working day, after hours
        datetime(2026, 7, 18, 10, 0, tzinfo=TZ),  # Saturday
        datetime(2026, 10, 2, 10, 0, tzinfo=TZ),  # National Day holiday
        datetime(2026, 7, 15, 10, 0, tzinfo=TZ),  # working hours, window open for days
    ],
)
def test_server_rooms_are_never_switched_off_and_not_limited_by_default(now: datetime) -> None:
    d = run(now, "sr", "dc", "of")
    assert {i.point_id for i in d.intents if not i.point_id.startswith("of.")} == set()
    assert any(i.point_id.startswith("of.") for i in d.intents)  # the office is enforced


def test_server_room_limits_apply_the_setpoint_limits_but_never_switch_off() -> None:
    doc = {**DOC, "hvac": {**DOC["hvac"], "server_room_limits": ["sr"]}}
    now = datetime(2026, 7, 15, 19, 0, tzinfo=TZ)
    d = run(now, "sr", "dc", doc=doc)
    assert [(i.point_id, i.value) for i in d.intents] == [("sr.sp", 26.0)]


def test_explain_says_why_a_server_room_is_left_alone() -> None:
    now = datetime(2026, 7, 15, 19, 0, tzinfo=TZ)
    policy = Policy.model_validate(DOC)
    prm = PolicyParams(policy=policy, zones={"sr": ZoneFacts(id="sr", kind="server_room")})
    s = {p.point_id: p for p in crac("sr", now)}
    lines = explain(s, now, Calendar.from_policy(policy.calendar, years=[2026]), prm)
    rules = {(ln.rule, ln.decision) for ln in lines}
    assert ("hvac.server_room", "skip") in rules
    assert any("never switched off" in ln.text for ln in lines)
    assert any("hvac.server_room_limits" in ln.text for ln in lines if ln.point == "sr.sp")


def test_check_warns_about_a_server_zone_without_a_stance(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config" / "site.yaml", tmp_path / "site.yaml")
    site = tmp_path / "site.yaml"
    text = site.read_text("utf-8")
    # a CRAC unit in the data centre, and a policy without the example's dc exemption
    text = text.replace(
        "      - {id: it.power,",
        "      - {id: dc.crac.sp, address: 10, type: int16, role: setpoint}\n      - {id: it.power,",
    )
    site.write_text(text.replace("path: ../state/edge-agent.db", "path: state.db"), "utf-8")
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(DOC, allow_unicode=True), "utf-8")
    cfg = load_config(site)
    (w,) = [w for w in cfg.warnings if "server_room_limits" in w.message]
    assert w.path.endswith(".kind") and "'dc'" in w.message
    assert str(w).startswith(f"{site}:") and "warning:" in str(w)
    doc = {**DOC, "hvac": {**DOC["hvac"], "server_room_limits": ["dc"]}}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    assert not [w for w in load_config(site).warnings if "server_room_limits" in w.message]


def test_server_room_limits_must_name_a_zone_of_the_site(tmp_path: Path) -> None:
    from edge_agent.config.load import ConfigError

    shutil.copy(ROOT / "config" / "site.yaml", tmp_path / "site.yaml")
    doc = {**DOC, "hvac": {**DOC["hvac"], "server_room_limits": ["nope"]}}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "site.yaml")
    (issue,) = err.value.errors
    assert issue.path == "hvac.server_room_limits[0]" and "'nope' is not a zone" in issue.message

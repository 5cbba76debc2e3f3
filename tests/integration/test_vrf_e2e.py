"""Issue 11 items 8, 10, 11 end to end: the Service on a site whose VRF gateway is one `repeat:` block,
against the simulator's VRF gateway (unit 21, sim/vrf.py) over Modbus TCP on 127.0.0.1.

Each indoor unit is its own AC unit for the policy; a mode value the site's `states` does not list
(the outdoor unit's oil-return cycle) reads uncertain and decides nothing; setpoint writes stay inside
the current mode's `limits`. Time is a FakeClock; poll and enforcement cycles are driven directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from drivers.base import FailureCode, Quality
from edge_agent.config.load import load_config
from edge_agent.core.clock import FakeClock
from edge_agent.service.service import Service
from edge_agent.store.audit import AuditKind
from policies.types import WriteIntent
from sim.runner import Simulator
from sim.vrf import VRF_BASE, VRF_OIL_RETURN, VRF_STRIDE, VRF_UNIT

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 7, 15, 14, 0, 0, tzinfo=TZ)  # a working Wednesday in summer

POLICY = """\
version: 1
seasons: {summer: "06-01..09-30", winter: "11-15..03-15"}
hvac: {summer_min_cooling_c: 26, winter_max_heating_c: 20, deadband_c: 0.0}
enforcement: {max_writes_per_point_per_hour: 6}
"""

SITE = """\
gateway_id: gw-vrf-01
building_id: "370102A001"
location: {{lat: 36.65, lon: 117.12}}
floor_area_m2: 8600
occupants: 320
policy: policy.yaml
zones:
  - {{id: f1, name: "1F"}}
  - {{id: f2, name: "2F"}}
  - {{id: f3, name: "3F"}}
devices:
  - protocol: modbus
    id: vrf
    host: 127.0.0.1
    port: {port}
    unit_id: {unit}
    readback_delay_s: 0
    repeat:
      - stride: {stride}
        units:
          - {{unit: iu01, zone: f1}}
          - {{unit: iu02, zone: f2}}
          - {{unit: iu03, zone: f3}}
          - {{unit: iu04, zone: f3}}
        points:
          - {{id: power, address: {base}, role: ac_power, writable: true}}
          - {{id: mode, address: {mode}, role: ac_mode,
             states: {{0: auto, 1: cool, 2: dry, 3: fan, 4: heat, 5: heat, 6: fan, 7: fan}}}}
          - {{id: setpoint, address: {sp}, type: int16, scale: 0.1, unit: degC, role: setpoint,
             writable: true, min: 16, max: 32,
             limits: {{cool: {{min: 18, max: 32}}, heat: {{min: 16, max: 30}}}}}}
          - {{id: room, table: input, address: {base}, type: int16, scale: 0.1, unit: degC,
             role: room_temperature}}
"""


class Rig:
    def __init__(self, sim: Simulator, svc: Service) -> None:
        self.sim, self.svc = sim, svc

    async def poll(self) -> None:
        await self.svc.agent.poll_once("vrf")

    def setpoint_register(self, n: int) -> int:
        return int(self.sim.vrf.bank.holding[VRF_BASE + n * VRF_STRIDE + 2])

    def writes(self, subject: str) -> list[tuple[object, object, str]]:
        return [
            (r.before, r.after, r.result)
            for r in self.svc.audit.records()
            if r.kind == AuditKind.WRITE and r.subject == subject
        ]

    async def intent(self, point: str, value: float) -> tuple[str, str | None, str]:
        [out] = await self.svc.actuator.apply(
            [WriteIntent(point, value, "test.per_mode", "a per-mode bound")],
            self.svc.enforcer.snapshot.for_policy(),
        )
        return out.status, out.code, out.detail


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with Simulator(seed=1, start=START, speed=0.0, script=False) as sim:
        sim.vrf.set_state(0, power=False, mode=1, setpoint=22.0)  # off: nothing to enforce
        sim.vrf.set_state(1, power=True, mode=1, setpoint=22.0)  # cooling at 22 °C
        sim.vrf.set_state(2, power=True, mode=VRF_OIL_RETURN, setpoint=22.0)  # mode not in `states`
        sim.vrf.set_state(3, power=True, mode=5, setpoint=20.0)  # heat (auxiliary heater), at the cap
        (tmp_path / "policy.yaml").write_text(POLICY, encoding="utf-8")
        site = tmp_path / "site.yaml"
        site.write_text(
            SITE.format(
                port=sim.modbus_port, unit=VRF_UNIT, stride=VRF_STRIDE, base=VRF_BASE,
                mode=VRF_BASE + 1, sp=VRF_BASE + 2,
            ),
            encoding="utf-8",
        )  # fmt: skip
        svc = Service(load_config(site), state_dir=tmp_path / "state", clock=FakeClock(START))
        try:
            await svc.agent.devices["vrf"].driver.connect()
            rig = Rig(sim, svc)
            await rig.poll()  # a read bridging the blocks' unmapped offsets (exception 2) is split at once
            yield rig
        finally:
            await svc.agent.close()
            svc.close()


async def test_each_repeat_is_enforced_as_its_own_unit(rig: Rig) -> None:
    snap = rig.svc.agent.snapshot
    assert snap.reading("vrf.iu02.setpoint").quality is Quality.GOOD  # type: ignore[union-attr]
    outcomes = await rig.svc.enforcer.cycle()
    assert [(o.intent.point_id, o.intent.value, o.status) for o in outcomes] == [
        ("vrf.iu02.setpoint", 26.0, "ok")
    ]
    assert rig.setpoint_register(1) == 260  # iu02's own register, x10
    assert rig.setpoint_register(0) == 220  # iu01 is off: left at 22 °C
    assert rig.sim.vrf.units[1].setpoint == 26.0
    assert rig.writes("vrf.iu02.setpoint") == [(22.0, 26.0, "ok")]
    assert rig.writes("vrf.iu01.setpoint") == []


async def test_an_unknown_mode_value_reads_uncertain_and_is_never_acted_on(rig: Rig) -> None:
    mode = rig.svc.agent.snapshot.reading("vrf.iu03.mode")
    assert mode is not None and mode.quality is Quality.UNCERTAIN and mode.code == FailureCode.UNKNOWN_STATE
    assert mode.value == VRF_OIL_RETURN
    await rig.svc.enforcer.cycle()
    assert rig.setpoint_register(2) == 220  # 22 °C cooling, but the mode is not known: no write
    assert rig.writes("vrf.iu03.setpoint") == []
    # the actuator's envelope for an unknown mode is what every listed mode allows: 18..30
    status, code, detail = await rig.intent("vrf.iu03.setpoint", 31)
    assert (status, code) == ("refused", FailureCode.ABOVE_MAX) and "mode is unknown" in detail
    # the oil-return cycle ends: the unit is known to cool again and is enforced
    rig.sim.vrf.set_state(2, mode=1)
    await rig.poll()
    outcomes = await rig.svc.enforcer.cycle()
    assert [(o.intent.point_id, o.status) for o in outcomes] == [("vrf.iu03.setpoint", "ok")]
    assert rig.setpoint_register(2) == 260


async def test_writes_stay_inside_the_current_modes_limits(rig: Rig) -> None:
    # iu04 heats (auxiliary heater, raw 5 -> heat: 16-30 °C): 31 is refused before reaching the device
    status, code, detail = await rig.intent("vrf.iu04.setpoint", 31)
    assert (status, code) == ("refused", FailureCode.ABOVE_MAX) and "in mode heat" in detail
    assert rig.setpoint_register(3) == 200
    # switched to cooling (18-32 °C) at the wall panel: 31 is inside, 17 is not
    rig.sim.vrf.set_state(3, mode=1)
    await rig.poll()
    assert await rig.intent("vrf.iu04.setpoint", 31) == ("ok", None, "")
    assert rig.setpoint_register(3) == 310
    status, code, _ = await rig.intent("vrf.iu04.setpoint", 17)
    assert (status, code) == ("refused", FailureCode.BELOW_MIN)
    assert rig.setpoint_register(3) == 310
    # nothing reached the device but the one write inside the envelope
    assert [w[1:] for w in rig.writes("vrf.iu04.setpoint")] == [(31.0, "ok")]

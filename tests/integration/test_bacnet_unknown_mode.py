"""Issue 11 item 10 on BACnet, end to end: the Service on a one-unit BACnet site against the bundled
BACnet simulator (device 127.0.0.2, agent 127.0.0.1, unicast on loopback).

The site's `states` lacks the unit's fan state (raw 4), as a manual's mode table may. After hours a
running unit is switched off, but not one whose mode reads as a value the site does not know: that
reading is uncertain (unknown_state) and the unit's state incomplete. Once the unit reports a listed
mode the same rule acts. Time is a FakeClock; polls and enforcement cycles are driven directly.
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
from edge_agent.devtools.simwire import free_udp_port
from edge_agent.service.service import Service
from edge_agent.store.audit import AuditKind
from sim.building import Mode
from sim.runner import Simulator

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 7, 15, 22, 0, 0, tzinfo=TZ)  # a working Wednesday in summer, after hours

POLICY = """\
version: 1
seasons: {summer: "06-01..09-30", winter: "11-15..03-15"}
hvac:
  summer_min_cooling_c: 26
  winter_max_heating_c: 20
  after_hours: {working_hours: ["07:30-18:30"]}
"""

SITE = """\
gateway_id: gw-bacnet-mode
building_id: "370102A001"
location: {{lat: 36.65, lon: 117.12}}
floor_area_m2: 8600
occupants: 320
policy: policy.yaml
bacnet: {{local_address: "127.0.0.1:{agent_port}"}}
zones:
  - {{id: f1, name: "1F"}}
devices:
  - protocol: bacnet
    id: f1-ac1
    address: "{sim_address}"
    device_instance: 1001
    zone: f1
    readback_delay_s: 0
    points:
      - {{id: f1-ac1.power, object_type: binary-value, instance: 1, role: ac_power, writable: true}}
      - {{id: f1-ac1.mode, object_type: multi-state-value, instance: 1, role: ac_mode, writable: true,
         states: {{1: "off", 2: cool, 3: heat}}}}
      - {{id: f1-ac1.setpoint, object_type: analog-value, instance: 1, unit: degC, role: setpoint,
         writable: true, min: 16, max: 32}}
"""


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Simulator, Service]]:
    sim = Simulator(seed=1, start=START, speed=0.0, script=False)
    await sim.start(modbus_port=0, bacnet=True, bacnet_port=free_udp_port(), bacnet_refresh_s=60)
    try:
        sim.building.set_mode("f1-ac1", Mode.FAN)  # running, raw 4
        sim.building.set_setpoint("f1-ac1", 22.0)
        assert sim.bacnet is not None
        sim.bacnet.refresh()
        (tmp_path / "policy.yaml").write_text(POLICY, encoding="utf-8")
        site = tmp_path / "site.yaml"
        site.write_text(
            SITE.format(agent_port=free_udp_port(("127.0.0.1",)), sim_address=sim.bacnet_address("FC-1F")),
            encoding="utf-8",
        )
        svc = Service(load_config(site), state_dir=tmp_path / "state", clock=FakeClock(START))
        try:
            await svc.agent.devices["f1-ac1"].driver.connect()
            await svc.agent.poll_once("f1-ac1")
            yield sim, svc
        finally:
            await svc.agent.close()
            svc.close()
    finally:
        await sim.stop()


def _writes(svc: Service) -> list[str]:
    return [r.subject for r in svc.audit.records() if r.kind == AuditKind.WRITE]


async def test_an_unknown_mode_is_uncertain_and_the_unit_is_left_alone(
    rig: tuple[Simulator, Service],
) -> None:
    sim, svc = rig
    mode = svc.agent.snapshot.reading("f1-ac1.mode")
    assert mode is not None and (mode.value, mode.quality, mode.code) == (
        4,
        Quality.UNCERTAIN,
        FailureCode.UNKNOWN_STATE,
    )
    assert await svc.enforcer.cycle() == []
    assert _writes(svc) == []
    assert sim.building.ac_units["f1-ac1"].power is True
    # the unit reports a listed mode (cool, raw 2): now its state is known and after hours switches it off
    sim.building.set_mode("f1-ac1", Mode.COOL)
    await svc.agent.poll_once("f1-ac1")
    assert svc.agent.snapshot.reading("f1-ac1.mode").quality is Quality.GOOD  # type: ignore[union-attr]
    outcomes = await svc.enforcer.cycle()
    assert outcomes and all(o.status == "ok" for o in outcomes)
    assert _writes(svc) and sim.building.ac_units["f1-ac1"].power is False

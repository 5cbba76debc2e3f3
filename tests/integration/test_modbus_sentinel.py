"""Modbus in the field (issue 11) end to end: the Service on the all-Modbus example site against the
simulator, whose AC gateway reads 0x8000 for a missing value. A "no value" sentinel on a setpoint never
causes a write (item 4); a point going bad and back is logged once each and shows in status (item 2)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from drivers.base import Quality
from drivers.modbus.options import ModbusDevice
from edge_agent.config.load import LoadedConfig, load_config
from edge_agent.core.clock import FakeClock
from edge_agent.devtools.simwire import retarget_modbus
from edge_agent.service.service import Service
from sim.runner import Simulator
from tests.integration.test_enforce_e2e import SITE, START, UNIT_OF, Rig


def with_sentinel(cfg: LoadedConfig, *point_ids: str) -> LoadedConfig:
    """The site with ``invalid_raw: [0x8000]`` on the given points (what the gateway's manual says)."""
    devices = []
    for d in cfg.site.devices:
        if isinstance(d, ModbusDevice) and any(p.id in point_ids for p in d.points):
            points = [
                p.model_copy(update={"invalid_raw": (0x8000,)}) if p.id in point_ids else p for p in d.points
            ]
            d = d.model_copy(update={"points": points})
        devices.append(d)
    return dataclasses.replace(cfg, site=cfg.site.model_copy(update={"devices": devices}))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    sim = Simulator(seed=1, start=START, speed=0.0)
    await sim.start(modbus_port=0)
    svc: Service | None = None
    try:
        assert sim.modbus_port is not None
        cfg = retarget_modbus(load_config(SITE), "127.0.0.1", sim.modbus_port)
        cfg = with_sentinel(cfg, "f2-ac1.setpoint", "f2-ac1.room_temp")
        clock = FakeClock(START)
        svc = Service(cfg, state_dir=tmp_path, clock=clock)
        for rt in svc.agent.devices.values():
            await rt.driver.connect()
        r = Rig(sim, svc, clock)
        await r.to(START)
        yield r
    finally:
        if svc is not None:
            await svc.agent.close()
            svc.close()
        await sim.stop()


async def test_a_sentinel_setpoint_reading_never_causes_a_write(rig: Rig) -> None:
    rig.sim.building.set_setpoint("f2-ac1", 22.0)  # below the 26 °C summer minimum: a write is due ...
    rig.sim.modbus.set_no_value(UNIT_OF["f2-ac1"], "holding", 2)  # ... but the gateway reports "no value"
    assert rig.setpoint_register("f2-ac1") == 0x8000
    for _ in range(3):
        await rig.poll("f2-ac1")
        reading = rig.svc.agent.snapshot.reading("f2-ac1.setpoint")
        assert reading is not None and (reading.quality, reading.code) == (Quality.BAD, "no_value")
        outcomes = await rig.svc.enforcer.cycle()
        assert [o for o in outcomes if o.intent.point_id == "f2-ac1.setpoint"] == []
    assert rig.writes("f2-ac1.setpoint") == []
    assert rig.setpoint_register("f2-ac1") == 0x8000
    # the same 22 °C once the gateway reports it again: corrected, so the test above was not vacuous
    rig.sim.modbus.set_no_value(UNIT_OF["f2-ac1"], "holding", 2, on=False)
    await rig.poll("f2-ac1")
    outcomes = await rig.svc.enforcer.cycle()
    assert [(o.intent.point_id, o.status) for o in outcomes if o.intent.point_id == "f2-ac1.setpoint"] == [
        ("f2-ac1.setpoint", "ok")
    ]
    assert rig.setpoint_register("f2-ac1") == 260


async def test_a_point_going_bad_and_back_logs_once_each_and_status_says_degraded(rig: Rig) -> None:
    unit = UNIT_OF["f2-ac1"]
    with capture_logs() as logs:
        rig.sim.modbus.set_no_value(unit, "input", 0)  # the room sensor falls off
        for _ in range(5):
            await rig.poll("f2-ac1")
        status = rig.svc.agent.devices["f2-ac1"].status.as_dict()
        assert (status["up"], status["state"], status["points_bad"]) == (True, "degraded", 1)
        assert status["bad_codes"] == {"no_value": 1}
        rig.sim.modbus.set_no_value(unit, "input", 0, on=False)
        for _ in range(3):
            await rig.poll("f2-ac1")
        assert rig.svc.agent.devices["f2-ac1"].status.as_dict()["state"] == "up"
    events = [(e["event"], e.get("point"), e.get("code")) for e in logs if e["event"].startswith("point_")]
    assert events == [
        ("point_bad", "f2-ac1.room_temp", "no_value"),
        ("point_recovered", "f2-ac1.room_temp", None),
    ]
    assert [e["log_level"] for e in logs if e["event"].startswith("point_")] == ["warning", "info"]

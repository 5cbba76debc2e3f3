"""Issue 13 at agent level, on the bundled simulator over real sockets:

- item 1: two AC units of one BACnet floor controller in ONE device entry (`ac_unit` ids), one off and
  one cooling at 22 °C: the running one is corrected (before, the merged "unit" was off);
- item 2: a server room's unit keeps running after hours and keeps its setpoint, while an office unit
  is switched off (Modbus path, FakeClock stepped with the frozen simulator).

Item 5 (tamper lifecycle) is in test_enforce_e2e.py beside the rate-limit test it extends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge_agent.config.load import LoadedConfig, load_config
from edge_agent.core.clock import FakeClock
from edge_agent.devtools.simwire import free_udp_port, retarget_modbus, retarget_to_sim
from edge_agent.service.service import Service
from edge_agent.store.audit import AuditKind
from sim.runner import Simulator

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")


def _writes(svc: Service, subject: str) -> list[tuple[object, object, str]]:
    return [
        (r.before, r.after, r.result)
        for r in svc.audit.records()
        if r.kind == AuditKind.WRITE and r.subject == subject
    ]


async def _wait_for(cond: Callable[[], object], timeout: float) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


def _one_device_two_units(cfg: LoadedConfig) -> LoadedConfig:
    """config/site.yaml lists f1-ac1 and f1-ac2 as two entries of one controller; make them one entry
    whose points say which indoor unit they belong to."""
    devices = list(cfg.site.devices)
    a = next(d for d in devices if d.id == "f1-ac1")
    b = next(d for d in devices if d.id == "f1-ac2")
    points = [p.model_copy(update={"ac_unit": "iu1"}) for p in a.points]
    points += [p.model_copy(update={"ac_unit": "iu2"}) for p in b.points]
    merged = a.model_copy(update={"id": "fc-1f-ac", "points": points})
    devices = [merged if d is a else d for d in devices if d is not b]
    return dataclasses.replace(cfg, site=cfg.site.model_copy(update={"devices": devices}))


async def test_two_units_in_one_device_entry_decide_independently(tmp_path: Path) -> None:
    start = datetime(2026, 7, 15, 14, 0, tzinfo=TZ)  # a summer working day, staff in, every unit at 26
    sim = Simulator(seed=1, start=start, speed=0.0)
    await sim.start(modbus_port=0, bacnet=True, bacnet_port=free_udp_port(), bacnet_refresh_s=60, serial=True)
    svc: Service | None = None
    task: asyncio.Task[int] | None = None
    try:
        b = sim.building
        b.set_power("f1-ac1", False, source="occupant")  # unit 1 off
        b.set_setpoint("f1-ac2", 22.0, source="occupant")  # unit 2 cooling at 22 °C
        cfg = _one_device_two_units(retarget_to_sim(load_config(ROOT / "config" / "site.yaml"), sim))
        assert {p.ac_unit for d in cfg.site.devices if d.id == "fc-1f-ac" for p in d.points} == {"iu1", "iu2"}
        svc = Service(cfg, state_dir=tmp_path, clock=FakeClock(start), enforce_tick_s=30.0)
        task = asyncio.create_task(svc.run(), name="test:service")
        await asyncio.wait_for(svc.ready.wait(), 10)
        await _wait_for(lambda: _writes(svc, "f1-ac2.setpoint"), 5.0)
        assert _writes(svc, "f1-ac2.setpoint") == [(22.0, 26.0, "ok")]
        assert b.ac_units["f1-ac2"].setpoint == 26.0
        assert not b.ac_units["f1-ac1"].power and _writes(svc, "f1-ac1.power") == []
    finally:
        if svc is not None:
            svc.agent.stop()
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, 10)
            svc.close()
        await sim.stop()


@pytest.fixture
async def modbus_server_room(tmp_path: Path) -> AsyncIterator[tuple[Simulator, Service, FakeClock]]:
    start = datetime(2026, 7, 15, 18, 59, 0, tzinfo=TZ)
    sim = Simulator(seed=1, start=start, speed=0.0)
    await sim.start(modbus_port=0)
    svc: Service | None = None
    try:
        assert sim.modbus_port is not None
        cfg = retarget_modbus(
            load_config(ROOT / "tests" / "fixtures" / "config" / "modbus_site.yaml"),
            "127.0.0.1",
            sim.modbus_port,
        )
        # 3F becomes a server room (no stance in policy.yaml: never off, setpoints not limited)
        zones = [z.model_copy(update={"kind": "server_room"}) if z.id == "f3" else z for z in cfg.site.zones]
        cfg = dataclasses.replace(cfg, site=cfg.site.model_copy(update={"zones": zones}))
        clock = FakeClock(start)
        svc = Service(cfg, state_dir=tmp_path, clock=clock)
        for rt in svc.agent.devices.values():
            await rt.driver.connect()
        yield sim, svc, clock
    finally:
        if svc is not None:
            await svc.agent.close()
            svc.close()
        await sim.stop()


async def test_server_room_unit_is_never_switched_off_after_hours(
    modbus_server_room: tuple[Simulator, Service, FakeClock],
) -> None:
    sim, svc, clock = modbus_server_room

    async def to(t: datetime) -> None:
        sim.step_to(t)
        clock.advance((t - clock.now()).total_seconds())
        for dev in svc.agent.devices:
            await svc.agent.poll_once(dev)
        await svc.enforcer.cycle()

    await to(datetime(2026, 7, 15, 18, 59, 30, tzinfo=TZ))  # staff left at 18:30: everything off
    for uid in ("f2-ac1", "f3-ac1"):  # someone switches an office unit and the server room's unit on
        sim.building.set_mode(uid, 1, source="occupant")
        sim.building.set_setpoint(uid, 22.0, source="occupant")
    t = datetime(2026, 7, 15, 19, 0, 30, tzinfo=TZ)
    while t < datetime(2026, 7, 15, 22, 0, tzinfo=TZ):
        await to(t)
        t += timedelta(minutes=10)
    # the office unit: respected for the override window, then off; the server room's: untouched
    assert not sim.building.ac_units["f2-ac1"].power and _writes(svc, "f2-ac1.power")
    ac = sim.building.ac_units["f3-ac1"]
    assert ac.power and ac.setpoint == 22.0
    assert _writes(svc, "f3-ac1.power") == [] and _writes(svc, "f3-ac1.setpoint") == []

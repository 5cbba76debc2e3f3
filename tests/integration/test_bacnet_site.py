"""The example mixed site (meters on Modbus, AC units and lights on BACnet) end to end: the Service on
config/site.yaml, retargeted to free ports, against the in-process simulators over real sockets.

Expected values come from the simulator's own tables (sim.modbus_map's encoding, the BACnet objects the
simulator built), never from the drivers' codecs, so a decoding bug cannot cancel itself out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from drivers.bacnet.options import BacnetDevice
from drivers.base import Quality
from drivers.cjt188.options import Cjt188Device
from drivers.dlt645.options import Dlt645Device
from drivers.modbus.options import ModbusDevice, ModbusRtuDevice
from edge_agent.config.load import LoadedConfig, load_config
from edge_agent.core.clock import FakeClock
from edge_agent.devtools.simwire import free_udp_port, retarget_to_sim
from edge_agent.service.service import Service
from edge_agent.store.audit import AuditKind, verify
from sim.building import Building
from sim.modbus_map import REGISTER_MAP
from sim.runner import Simulator
from sim.serial_site import DLT645_METERS

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 7, 15, 14, 0, tzinfo=TZ)  # a working Wednesday in summer
POLL_S = 30.0  # long: a correction inside ~2 s can only come from COV, not from the next poll
OUR_PRIORITY = 8


def with_interval(cfg: LoadedConfig, interval_s: float) -> LoadedConfig:
    devices = [d.model_copy(update={"interval_s": interval_s}) for d in cfg.site.devices]
    return dataclasses.replace(cfg, site=cfg.site.model_copy(update={"devices": devices}))


class Rig:
    def __init__(
        self, sim: Simulator, svc: Service, cfg: LoadedConfig, clock: FakeClock, task: asyncio.Task[int]
    ) -> None:
        self.sim, self.svc, self.cfg, self.clock, self.task = sim, svc, cfg, clock, task

    @property
    def building(self) -> Building:
        return self.sim.building

    def sim_object(self, kind: str, item: str, attr: str) -> Any:
        assert self.sim.bacnet is not None
        return self.sim.bacnet._on_change[(kind, item, attr)]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    # speed 0: the model holds still unless the test changes it (values can be compared exactly)
    sim = Simulator(seed=1, start=START, speed=0.0)
    await sim.start(modbus_port=0, bacnet=True, bacnet_port=free_udp_port(), bacnet_refresh_s=60, serial=True)
    svc: Service | None = None
    task: asyncio.Task[int] | None = None
    try:
        cfg = with_interval(retarget_to_sim(load_config(ROOT / "config" / "site.yaml"), sim), POLL_S)
        clock = FakeClock(START)
        svc = Service(cfg, state_dir=tmp_path, clock=clock, enforce_tick_s=POLL_S)
        task = asyncio.create_task(svc.run(), name="test:service")
        await asyncio.wait_for(svc.ready.wait(), 10)
        # The script's 14:00 occupant (f2-ac1 to 22 °C) is corrected on the first cycle: let it settle so
        # the tests compare a model that holds still.
        await wait_for(lambda: _writes(svc, "f2-ac1.setpoint"), 5.0)
        yield Rig(sim, svc, cfg, clock, task)
    finally:
        if svc is not None:
            svc.agent.stop()
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, 10)
            svc.close()
        await sim.stop()


def _modbus_expected(b: Building, dev: ModbusDevice, point: Any) -> Any:
    table = getattr(point, "table", "holding")
    reg = next(r for r in REGISTER_MAP if (r.unit, r.table, r.address) == (dev.unit_id, table, point.address))
    return reg.value_of(reg.raw(b))


def _serial_expected(b: Building, dev: Dlt645Device | Cjt188Device, point: Any) -> float:
    """A serial meter's value as its BCD carries it: counters 2 decimals, DL/T 645 power 4 (kW)."""
    name = {a: m for m, a in DLT645_METERS.items()}.get(dev.address, "water")
    if getattr(point, "di", None) == "02030000":
        return round(b.meters[name].rate, 4)
    return round(b.meters[name].reading, 2)


def _bacnet_expected(rig: Rig, dev: BacnetDevice, point: Any) -> Any:
    assert rig.sim.bacnet is not None
    sim_dev = next(d for d in rig.sim.bacnet.devices if d.instance == dev.device_instance)
    assert rig.sim.bacnet.address_of(sim_dev.name) == dev.address
    obj = next(
        o
        for o in sim_dev.objects
        if tuple(o.objectIdentifier) == (_bacpypes_type(point.object_type), point.instance)
    )
    pv = obj.presentValue
    if point.object_type.startswith("binary-"):
        return str(pv) == "active"
    return float(pv) if point.object_type.startswith("analog-") else int(pv)


def _bacpypes_type(kebab: str) -> Any:
    from bacpypes3.basetypes import ObjectType

    return ObjectType(kebab)


def _writes(svc: Service, subject: str) -> list[Any]:
    return [r for r in svc.audit.records() if r.kind == AuditKind.WRITE and r.subject == subject]


async def wait_for(cond: Any, timeout: float) -> float:
    """Seconds until cond() held (fails after timeout)."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


async def test_every_point_reads_good_and_equals_the_model(rig: Rig) -> None:
    protocols = {d.protocol for d in rig.cfg.site.devices}
    assert protocols == {"modbus", "bacnet", "modbus_rtu", "dlt645", "cjt188"}
    # Startup corrections also switch the 1F lights off (daylight): once they are in, read every device
    # again so the meters reflect the model after them.
    await wait_for(lambda: _writes(rig.svc, "f1-l1") and _writes(rig.svc, "f1-l2"), 5.0)
    await asyncio.gather(*(rig.svc.agent.poll_once(d) for d in rig.svc.agent.devices))
    checked = 0
    for dev in rig.cfg.site.devices:
        for p in dev.points:
            r = rig.svc.agent.snapshot.reading(p.id)
            assert r is not None, p.id
            assert r.quality is Quality.GOOD, (p.id, r.code, r.detail)
            if isinstance(dev, ModbusDevice | ModbusRtuDevice):
                want = _modbus_expected(rig.building, dev, p)
                scale = getattr(p, "scale", 1.0)
                assert r.value == pytest.approx(want, rel=1e-6, abs=scale / 2), p.id
            elif isinstance(dev, Dlt645Device | Cjt188Device):
                assert r.value == pytest.approx(_serial_expected(rig.building, dev, p), abs=1e-9), p.id
            else:
                assert isinstance(dev, BacnetDevice)
                want = _bacnet_expected(rig, dev, p)
                assert r.value == pytest.approx(want, rel=1e-6), p.id
            checked += 1
    assert checked == len(rig.svc.agent.snapshot) == 59
    # the scripted occupant's 22 °C on f2-ac1 (14:00) was corrected on the first cycle
    assert [(w.before, w.after, w.result) for w in _writes(rig.svc, "f2-ac1.setpoint")] == [
        (22.0, 26.0, "ok")
    ]
    # and the BACnet side agrees with the model itself, not only with the objects
    b = rig.building
    for uid, ac in b.ac_units.items():
        snap = rig.svc.agent.snapshot
        assert snap.reading(f"{uid}.setpoint").value == pytest.approx(ac.setpoint)  # type: ignore[union-attr]
        assert snap.reading(f"{uid}.power").value is ac.power  # type: ignore[union-attr]
        assert snap.reading(f"{uid}.mode").value == int(ac.running_mode) + 1  # type: ignore[union-attr]
    for lid, light in b.lights.items():
        assert rig.svc.agent.snapshot.reading(lid).value is light.on  # type: ignore[union-attr]


async def test_occupant_setpoint_is_corrected_over_bacnet_by_cov(rig: Rig) -> None:
    uid = "f2-ac2"
    ac = rig.building.ac_units[uid]
    assert ac.power and ac.mode.name == "COOL" and ac.setpoint == 26.0  # staff arrived at 08:30
    polls_before = {d: rt.status.polls for d, rt in rig.svc.agent.devices.items()}
    obj = rig.sim_object("ac", uid, "setpoint")

    rig.building.set_setpoint(uid, 22.0, source="occupant")  # the remote control, not BACnet
    took = await wait_for(
        lambda: ac.setpoint == 26.0 and obj.priorityArray[OUR_PRIORITY - 1].null is None, 2.0
    )
    assert took < 2.0
    # COV-driven: no device was polled again in between (the poll interval is 30 s)
    assert {d: rt.status.polls for d, rt in rig.svc.agent.devices.items()} == polls_before

    # The priority-array shows our priority holding 26.0, and no higher one
    slots = list(obj.priorityArray)
    active = [i + 1 for i, s in enumerate(slots) if s.null is None]
    assert active == [OUR_PRIORITY]
    assert float(slots[OUR_PRIORITY - 1].real) == 26.0
    assert float(obj.presentValue) == 26.0

    # The audit has the write: before 22, read back 26, the summer rule, ok
    await wait_for(lambda: _writes(rig.svc, f"{uid}.setpoint"), 1.0)
    writes = _writes(rig.svc, f"{uid}.setpoint")
    assert len(writes) == 1
    w = writes[0]
    assert (w.subject, w.before, w.after, w.rule, w.result) == (
        f"{uid}.setpoint",
        22.0,
        26.0,
        "hvac.summer_min_cooling",
        "ok",
    )
    assert rig.svc.agent.snapshot.reading(f"{uid}.setpoint").value == 26.0  # type: ignore[union-attr]
    assert verify(rig.svc._audit_conn).ok


async def test_cov_still_drives_enforcement_after_a_reload_changes_the_device(rig: Rig) -> None:
    """A reload that changes a BACnet device gives it a new driver: it must subscribe again."""
    uid = "f2-ac2"
    bacnet = rig.sim.bacnet
    assert bacnet is not None
    await wait_for(lambda: len(bacnet.subscriptions("FC-2F")) == 6, 3.0)  # 2 units x 3 COV objects
    before = bacnet.subscriptions("FC-2F")
    site = rig.cfg.site
    devices = [d.model_copy(update={"timeout_s": 4.0}) if d.id == uid else d for d in site.devices]
    summary = await rig.svc.apply_config(
        dataclasses.replace(rig.cfg, site=rig.cfg.site.model_copy(update={"devices": devices}))
    )
    assert summary["changed"] == [uid]
    driver = rig.svc.agent.devices[uid].driver
    await wait_for(lambda: bool(driver._spids), 3.0)  # type: ignore[attr-defined]
    # The old driver cancelled its subscriptions: the controller holds as many as before, not more
    await wait_for(lambda: len(bacnet.subscriptions("FC-2F")) == 6, 3.0)
    assert bacnet.subscriptions("FC-2F") != before  # f2-ac2's are new (new process ids)

    ac = rig.building.ac_units[uid]
    rig.building.set_setpoint(uid, 22.0, source="occupant")
    took = await wait_for(lambda: ac.setpoint == 26.0, 2.0)  # poll interval is 30 s: only COV can do it
    assert took < 2.0


async def test_a_higher_priority_holding_a_setpoint_is_one_finding_and_no_fight(rig: Rig) -> None:
    uid = "f2-ac2"
    bacnet = rig.sim.bacnet
    assert bacnet is not None
    # A BMS commands 22 °C at priority 5 (critical equipment control): above our 8.
    await bacnet.command("FC-2F", "analog-value", 2, 22.0, priority=5)
    await wait_for(lambda: any(r.result == "masked_write" for r in rig.svc.audit.records()), 3.0)
    [finding] = [r for r in rig.svc.audit.records() if r.result == "masked_write"]
    assert finding.subject == f"{uid}.setpoint" and "priority 5 holds 22.0" in finding.reason
    await wait_for(lambda: not rig.svc.enforcer._writing, 3.0)  # the background cycle's write is done
    writes = len(_writes(rig.svc, f"{uid}.setpoint"))
    for _ in range(18):  # the field report: 18 futile writes in 3 minutes. Now none.
        rig.clock.advance(10)
        await rig.svc.agent.poll_once(uid)  # fresh readings: stale ones would decide nothing at all
        outcomes = await rig.svc.enforcer.cycle()
        assert [o.status for o in outcomes if o.intent.point_id == f"{uid}.setpoint"] == ["masked"]
    assert len(_writes(rig.svc, f"{uid}.setpoint")) == writes
    assert not [r for r in rig.svc.audit.records() if r.result == "tamper"]
    [masked] = rig.svc.status_doc()["enforcement"]["masked_points"]
    assert (masked["point"], masked["holding_priority"], masked["held_value"]) == (f"{uid}.setpoint", 5, 22.0)
    # The BMS lets go: our 26 °C at priority 8 shows through, and the point is no longer listed.
    await bacnet.command("FC-2F", "analog-value", 2, None, priority=5)
    await wait_for(lambda: rig.building.ac_units[uid].setpoint == 26.0, 3.0)
    await wait_for(lambda: rig.svc.agent.snapshot.reading(f"{uid}.setpoint").value == 26.0, 3.0)  # type: ignore[union-attr]
    await rig.svc.enforcer.cycle()
    assert rig.svc.status_doc()["enforcement"]["masked_points"] == []


async def test_relinquish_on_exit_releases_only_our_own_commands_and_audits_each(rig: Rig) -> None:
    bacnet = rig.sim.bacnet
    assert bacnet is not None
    policy = rig.cfg.policy
    enforcement = policy.enforcement.model_copy(update={"relinquish_on_exit": True})
    await rig.svc.apply_config(
        dataclasses.replace(rig.cfg, policy=policy.model_copy(update={"enforcement": enforcement}))
    )
    await wait_for(lambda: _writes(rig.svc, "f1-l1"), 5.0)  # daylight: the agent switched 1F off
    await wait_for(lambda: rig.svc.agent.snapshot.reading("f1-l1").value is False, 3.0)  # type: ignore[union-attr]
    light = rig.sim_object("light", "f1-l1", "on")
    assert light.priorityArray[OUR_PRIORITY - 1].null is None
    # The occupant's panel writes 27 °C at our own priority 8 on f2-ac1 (which the agent set to 26):
    # allowed by the policy, so the agent leaves it; at shutdown it must stay.
    await bacnet.command("FC-2F", "analog-value", 1, 27.0, priority=OUR_PRIORITY)
    await wait_for(lambda: rig.svc.agent.snapshot.reading("f2-ac1.setpoint").value == 27.0, 3.0)  # type: ignore[union-attr]
    rig.svc.agent.stop()
    await asyncio.wait_for(rig.task, 15)
    sp = rig.sim_object("ac", "f2-ac1", "setpoint")
    assert float(sp.priorityArray[OUR_PRIORITY - 1].real) == 27.0  # the occupant's command stands
    assert rig.building.ac_units["f2-ac1"].setpoint == 27.0
    assert light.priorityArray[OUR_PRIORITY - 1].null is not None  # ours is released
    records = [r for r in rig.svc.audit.records() if r.rule == "shutdown.relinquish"]
    by_point = {r.subject: r for r in records}
    assert by_point["f2-ac1.setpoint"].result == "slot_not_ours"
    assert (by_point["f2-ac1.setpoint"].before, by_point["f2-ac1.setpoint"].after) == (27.0, 27.0)
    assert "we had written 26.0" in by_point["f2-ac1.setpoint"].reason
    assert by_point["f1-l1"].result == "relinquished" and by_point["f1-l1"].before is False
    # only points the agent wrote: nothing for the ones it never touched
    written = {
        r.subject
        for r in rig.svc.audit.records()
        if r.kind == AuditKind.WRITE and r.rule != "shutdown.relinquish"
    }
    assert set(by_point) <= written
    kinds = [r.kind for r in rig.svc.audit.records()]
    assert kinds.index(AuditKind.SHUTDOWN) > max(
        i for i, r in enumerate(rig.svc.audit.records()) if r.rule == "shutdown.relinquish"
    )
    assert verify(rig.svc._audit_conn).ok


async def test_a_cov_value_is_delivered_once_not_again_by_the_next_poll(rig: Rig) -> None:
    uid = "f2-ac2"
    delivered: list[tuple[str, Any, Any]] = []

    def listen(device_id: str, readings: Any, changed: Any) -> None:
        delivered.extend((r.point_id, r.ts, r.value) for r in readings if r.point_id.startswith(uid))

    rig.svc.agent.listeners.append(listen)
    rig.building.set_setpoint(uid, 22.0, source="occupant")
    await wait_for(lambda: (f"{uid}.setpoint", rig.clock.now(), 26.0) in delivered, 3.0)
    for _ in range(3):  # polls inside the interval answer the COV points from their notifications
        await rig.svc.agent.poll_once(uid)
    setpoints = [d for d in delivered if d[0] == f"{uid}.setpoint"]
    assert len(setpoints) == len(set(setpoints)), setpoints  # no reading stored twice
    assert any(d[0] == f"{uid}.room_temp" for d in delivered)  # polled points still delivered


async def test_policy_explain_reads_without_subscribing(rig: Rig) -> None:
    """`policy explain` (a dry run: read_once) must leave no COV subscription behind on the devices."""
    from edge_agent.service.agent import read_once

    bacnet = rig.sim.bacnet
    assert bacnet is not None
    before = {d.name: bacnet.subscriptions(d.name) for d in bacnet.devices}
    # its own BACnet port, as on a gateway where the service runs beside it
    net = rig.cfg.site.network_options("bacnet").model_copy(
        update={"local_address": f"127.0.0.1:{free_udp_port()}"}
    )
    cfg = dataclasses.replace(rig.cfg, site=rig.cfg.site.model_copy(update={"bacnet": net}))
    agent = await read_once(cfg, FakeClock(START))
    drivers = [rt.driver for rt in agent.devices.values() if rt.config.protocol == "bacnet"]
    assert drivers and all(d.stats.subscribe_requests == 0 for d in drivers)  # type: ignore[attr-defined]
    assert {d.name: bacnet.subscriptions(d.name) for d in bacnet.devices} == before
    assert agent.snapshot.reading("f2-ac1.setpoint").value == 26.0  # type: ignore[union-attr]


async def test_relinquish_on_exit_also_releases_what_an_earlier_run_wrote(rig: Rig, tmp_path: Path) -> None:
    """Restarted (an upgrade), then stopped for good: the first run's 26 °C is released by the second."""
    rig.svc.agent.stop()
    await asyncio.wait_for(rig.task, 15)
    rig.svc.close()
    sp = rig.sim_object("ac", "f2-ac1", "setpoint")
    assert float(sp.priorityArray[OUR_PRIORITY - 1].real) == 26.0  # the first run released nothing
    policy = rig.cfg.policy
    enforcement = policy.enforcement.model_copy(update={"relinquish_on_exit": True})
    cfg = dataclasses.replace(rig.cfg, policy=policy.model_copy(update={"enforcement": enforcement}))
    svc = Service(cfg, state_dir=tmp_path, clock=rig.clock, enforce_tick_s=POLL_S)
    task = asyncio.create_task(svc.run(), name="test:service-2")
    try:
        await asyncio.wait_for(svc.ready.wait(), 10)
        svc.agent.stop()
        await asyncio.wait_for(task, 15)
        assert sp.priorityArray[OUR_PRIORITY - 1].null is not None  # released by the second run
        released = [r for r in svc.audit.records() if r.rule == "shutdown.relinquish"]
        assert {r.subject for r in released} >= {"f2-ac1.setpoint"}
        assert all(r.result == "relinquished" for r in released)
    finally:
        if not task.done():
            svc.agent.stop()
            await asyncio.wait_for(task, 15)
        svc.close()

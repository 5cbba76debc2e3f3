"""Enforcement end to end on the Modbus path: the Service on the all-Modbus variant of the example site
(tests/fixtures/config/modbus_site.yaml) against the bundled simulator over Modbus TCP on 127.0.0.1.

Time is a FakeClock the test advances together with the frozen simulator (speed 0, stepped with
``step_to``); poll and evaluation cycles are driven directly (``agent.poll_once``, ``enforcer.cycle``)
instead of waiting for the loops. The register the device holds is read from the simulator's own bank.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from edge_agent.config.load import load_config
from edge_agent.core.clock import FakeClock
from edge_agent.devtools.simwire import retarget_modbus
from edge_agent.enforce.actuator import ActuationOutcome
from edge_agent.service.service import Service
from edge_agent.store.audit import AuditKind, verify
from sim.modbus_map import AC_UNITS
from sim.runner import Simulator

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "tests" / "fixtures" / "config" / "modbus_site.yaml"
TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 7, 15, 13, 59, 30, tzinfo=TZ)  # working Wednesday, summer, just before 14:00
UNIT_OF = {ac: unit for unit, ac in AC_UNITS.items()}


class Rig:
    def __init__(self, sim: Simulator, svc: Service, clock: FakeClock) -> None:
        self.sim, self.svc, self.clock = sim, svc, clock

    async def to(self, t: datetime) -> list[ActuationOutcome]:
        """Move the model and the agent's clock to ``t``, poll every device, run one enforcement cycle."""
        self.sim.step_to(t)
        self.clock.advance((t - self.clock.now()).total_seconds())
        await self.poll()
        return await self.svc.enforcer.cycle()

    async def poll(self, *device_ids: str) -> None:
        for dev in device_ids or tuple(self.svc.agent.devices):
            await self.svc.agent.poll_once(dev)

    def setpoint_register(self, ac: str) -> int:
        return int(self.sim.modbus.banks[UNIT_OF[ac]].table("holding")[2])

    def writes(self, subject: str) -> list[tuple[object, object, str, str]]:
        return [
            (r.before, r.after, r.rule, r.result)
            for r in self.svc.audit.records()
            if r.kind == AuditKind.WRITE and r.subject == subject
        ]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    sim = Simulator(seed=1, start=START, speed=0.0)
    await sim.start(modbus_port=0)
    svc: Service | None = None
    try:
        assert sim.modbus_port is not None
        cfg = retarget_modbus(load_config(SITE), "127.0.0.1", sim.modbus_port)
        assert {d.protocol for d in cfg.site.devices} == {"modbus"}
        clock = FakeClock(START)
        svc = Service(cfg, state_dir=tmp_path, clock=clock)
        for rt in svc.agent.devices.values():
            await rt.driver.connect()
        rig = Rig(sim, svc, clock)
        # 13:59:30: every AC in cool at 26 °C; only the perimeter zone's lights go off (1,878 lx of
        # daylight; on since before the agent started, so no manual-override window applies)
        first = await rig.to(START)
        assert {(o.intent.point_id, o.intent.rule, o.status) for o in first} == {
            ("f1-l1", "lighting.daylight", "ok"), ("f1-l2", "lighting.daylight", "ok"),
        }  # fmt: skip
        yield rig
    finally:
        if svc is not None:
            await svc.agent.close()
            svc.close()
        await sim.stop()


async def test_occupant_22_is_written_back_to_26_and_read_back(rig: Rig) -> None:
    outcomes = await rig.to(START + timedelta(seconds=60))  # 14:00 the script's occupant sets 22 on f2-ac1
    assert rig.sim.building.fired[-1][1] == "too-warm"
    sp = [o for o in outcomes if o.intent.point_id == "f2-ac1.setpoint"]
    assert len(sp) == 1 and sp[0].status == "ok" and sp[0].readback == 26.0
    assert rig.setpoint_register("f2-ac1") == 260  # the device's own register, x10
    assert rig.sim.building.ac_units["f2-ac1"].setpoint == 26.0
    await rig.poll("f2-ac1")
    assert rig.svc.agent.snapshot.reading("f2-ac1.setpoint").value == 26.0  # type: ignore[union-attr]
    assert rig.writes("f2-ac1.setpoint") == [(22.0, 26.0, "hvac.summer_min_cooling", "ok")]
    assert await rig.svc.enforcer.cycle() == []  # corrected: nothing more to do
    result = verify(rig.svc._audit_conn)
    assert result.ok and result.count == len(list(rig.svc.audit.records()))


async def test_light_switched_on_at_night_is_swept_after_the_override(rig: Rig) -> None:
    await rig.to(datetime(2026, 7, 15, 20, 30, tzinfo=TZ))  # 18:30 staff left, f2-l2 forgotten on
    assert not rig.sim.building.lights["f2-l2"].on  # the forgotten light was swept at once
    assert rig.writes("f2-l2") and rig.writes("f2-l2")[0][1] is False
    assert not rig.sim.building.lights["f3-l2"].on
    night = datetime(2026, 7, 15, 21, 0, 30, tzinfo=TZ)
    await rig.to(night)  # 21:00 someone switches f3-l2 on
    assert rig.sim.building.lights["f3-l2"].on
    assert rig.writes("f3-l2") == []  # switched on by hand: the override window (60 min) protects it
    swept_at = None
    t = night
    while t < night + timedelta(hours=3):
        t += timedelta(minutes=5)
        await rig.to(t)
        if not rig.sim.building.lights["f3-l2"].on:
            swept_at = t
            break
    assert swept_at is not None, "f3-l2 was never switched off"
    assert swept_at >= night + timedelta(minutes=60)  # not before the override window ended
    assert swept_at <= night + timedelta(minutes=125)  # by the next hourly sweep after it
    (write,) = rig.writes("f3-l2")
    assert write[1] is False and write[2].startswith("lighting.") and write[3] == "ok"
    assert verify(rig.svc._audit_conn).ok


async def test_rate_limit_trips_on_an_occupant_who_keeps_changing_it(rig: Rig) -> None:
    limit = rig.svc.cfg.policy.enforcement.max_writes_per_point_per_hour
    assert limit == 6
    statuses = []
    t = START + timedelta(seconds=60)
    outcomes = await rig.to(t)  # 14:00: the first 22 °C, corrected
    statuses += [o.status for o in outcomes if o.intent.point_id == "f2-ac1.setpoint"]
    for _ in range(limit + 2):  # and again every 2 minutes
        rig.sim.building.set_setpoint("f2-ac1", 22.0, source="occupant")
        t += timedelta(minutes=2)
        outcomes = await rig.to(t)
        statuses += [o.status for o in outcomes if o.intent.point_id == "f2-ac1.setpoint"]
    assert statuses == ["ok"] * limit + ["rate_limited"] * 3
    assert rig.setpoint_register("f2-ac1") == 220  # the agent stopped fighting: the occupant's 22 stays
    tamper = [
        r
        for r in rig.svc.audit.records()
        if r.kind == AuditKind.FINDING and r.result == "tamper" and r.subject == "f2-ac1.setpoint"
    ]
    assert len(tamper) == 1  # audited once, not on every held-back write
    assert len(rig.writes("f2-ac1.setpoint")) == limit
    assert verify(rig.svc._audit_conn).ok


async def test_tamper_lifecycle_pause_resume_close(rig: Rig) -> None:
    """Issue 13 item 5: after the tamper finding the point pauses for tamper_pause_min (60), then is
    enforced again; the finding closes (audited) once the point complies; status shows it while open."""
    pause = rig.svc.cfg.policy.enforcement.tamper_pause_min
    assert pause == 60
    t = START + timedelta(seconds=60)
    await rig.to(t)
    for _ in range(6):  # the occupant keeps setting 22 every 2 minutes: the 7th write trips the limit
        rig.sim.building.set_setpoint("f2-ac1", 22.0, source="occupant")
        t += timedelta(minutes=2)
        await rig.to(t)
    tripped_at = t
    status = rig.svc.enforcer.as_dict()
    assert status["findings"].get("tamper") == 1 and status["active_findings"] >= 1
    (open_,) = [f for f in status["open_findings"] if f["kind"] == "tamper"]
    assert open_["subject"] == "f2-ac1.setpoint" and open_["age_s"] == 0
    assert status["last"]["current"]["value"] == 22.0  # `last` shows the point as it is now
    assert status["last"]["open_tamper_since"] is not None
    # During the pause the agent leaves the occupant's 22 alone.
    writes = len(rig.writes("f2-ac1.setpoint"))
    t = tripped_at + timedelta(minutes=pause - 1)
    await rig.to(t)
    assert len(rig.writes("f2-ac1.setpoint")) == writes and rig.setpoint_register("f2-ac1") == 220
    (open_,) = [f for f in rig.svc.enforcer.as_dict()["open_findings"] if f["kind"] == "tamper"]
    assert open_["age_s"] == (pause - 1) * 60
    # The pause is over: enforced again, and the point complies, so the finding closes.
    t = tripped_at + timedelta(minutes=pause)
    await rig.to(t)
    assert rig.setpoint_register("f2-ac1") == 260
    assert len(rig.writes("f2-ac1.setpoint")) == writes + 1
    await rig.to(t + timedelta(seconds=30))
    closed = [
        r
        for r in rig.svc.audit.records()
        if r.kind == AuditKind.FINDING and r.result == "tamper_closed" and r.subject == "f2-ac1.setpoint"
    ]
    assert len(closed) == 1 and "complies" in closed[0].reason
    status = rig.svc.enforcer.as_dict()
    assert not [f for f in status["open_findings"] if f["kind"] == "tamper"]
    assert status["findings_closed"] == {"tamper": 1}
    assert status["last"]["current"]["value"] == 26.0 and status["last"]["open_tamper_since"] is None
    assert verify(rig.svc._audit_conn).ok


class _FailingActuator:
    """Stands in for the actuator (the loop's own interface): every batch of writes raises ``exc``."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0
        self.called_twice = asyncio.Event()
        self.tamper_pause_s = 3600.0

    def open_tamper(self) -> dict[str, object]:
        return {}

    async def apply(self, intents: object, snap: object) -> list[ActuationOutcome]:
        self.calls += 1
        if self.calls >= 2:
            self.called_twice.set()
        raise self.exc


class _StackError(BaseException):
    """The shape of bacpypes3's ErrorRejectAbortNack: a BaseException, which `except Exception` misses."""


async def _at_the_occupants_22(rig: Rig) -> None:
    t = START + timedelta(seconds=60)  # 14:00: the occupant's 22 °C on f2-ac1, not yet corrected
    rig.sim.step_to(t)
    rig.clock.advance((t - rig.clock.now()).total_seconds())
    await rig.poll()


async def test_a_write_task_that_dies_unexpectedly_fails_the_enforcement_loop(rig: Rig) -> None:
    await _at_the_occupants_22(rig)
    enforcer = rig.svc.enforcer
    enforcer.actuator = _FailingActuator(_StackError("escaped the driver"))  # type: ignore[assignment]
    enforcer.tick_s = 0.01
    with pytest.raises(BaseExceptionGroup) as info:
        async with asyncio.timeout(10):
            await enforcer.run()
    assert info.group_contains(_StackError)


async def test_a_failed_batch_of_writes_is_logged_and_the_loop_goes_on(rig: Rig) -> None:
    await _at_the_occupants_22(rig)
    enforcer = rig.svc.enforcer
    failing = _FailingActuator(RuntimeError("driver bug"))
    enforcer.actuator = failing  # type: ignore[assignment]
    enforcer.tick_s = 0.01
    with capture_logs() as logs:
        task = asyncio.create_task(enforcer.run(), name="test:enforce")
        try:
            async with asyncio.timeout(10):
                await failing.called_twice.wait()  # the point is free again after the failure: tried again
            assert not task.done()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) >= 2 and all(e.get("exc_info") for e in errors)  # logged with the traceback

"""The actuator against a fake driver (faked at the project's own Driver interface)."""

from __future__ import annotations

import asyncio
import math
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from drivers.base import (
    Driver,
    FailureCode,
    PointBase,
    Reading,
    TransientError,
    Value,
    WriteResult,
    is_failure_code,
)
from drivers.modbus.options import ModbusPoint
from edge_agent.core.clock import FakeClock
from edge_agent.enforce.actuator import ActuationOutcome, Actuator
from edge_agent.store.audit import AuditLog, AuditRecord, verify
from edge_agent.store.db import open_state_db
from policies.types import PointState, WriteIntent

START = datetime(2026, 7, 15, 6, 0, 0, tzinfo=UTC)
EXAMPLE_SITE = Path(__file__).resolve().parents[2] / "config" / "site.yaml"
RULE = "hvac.summer_min_cooling"


class FakeDriver:
    """Implements drivers.base.Driver over an in-memory device.

    ``hold[point] = v`` makes the device keep ``v`` whatever is written (a higher BACnet priority,
    a clamp); ``fail[point] = exc`` makes the write raise; ``result[point] = wr`` makes the write return
    ``wr`` as it is; ``gate`` makes writes wait for an event.
    """

    def __init__(self, device_id: str, *, supports_relinquish: bool = False) -> None:
        self.device_id = device_id
        self.supports_relinquish = supports_relinquish
        self.values: dict[str, Value] = {}
        self.hold: dict[str, Value] = {}
        self.fail: dict[str, BaseException] = {}
        self.result: dict[str, WriteResult] = {}
        self.calls: list[tuple[str, Value, int | None]] = []
        self.gate: asyncio.Barrier | None = None
        self.in_flight: dict[str, int] = {}
        self.max_in_flight = 0
        self.started = asyncio.Event()

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def read(self, points: Sequence[PointBase]) -> list[Reading]:
        raise NotImplementedError  # the actuator never reads; the driver's write reads back

    async def write(self, point: PointBase, value: Value, *, priority: int | None = None) -> WriteResult:
        self.calls.append((point.id, value, priority))
        self.started.set()
        if point.id in self.fail:
            raise self.fail[point.id]
        if point.id in self.result:
            return self.result[point.id]
        self.in_flight[point.id] = self.in_flight.get(point.id, 0) + 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight[point.id])
        try:
            if self.gate is not None:
                async with asyncio.timeout(2):
                    await self.gate.wait()
            for _ in range(3):
                await asyncio.sleep(0)  # the read-back delay, as far as other tasks can tell
            if value is None:  # relinquish: the next priority's value shows through
                self.values[point.id] = self.hold.get(point.id, 22.0)
            else:
                self.values[point.id] = self.hold.get(point.id, value)
            rb = self.values[point.id]
            ok = value is None or rb == value
            return WriteResult(point.id, value, rb, ok, None if ok else FailureCode.READBACK_MISMATCH)
        finally:
            self.in_flight[point.id] -= 1


SETPOINT = PointBase(
    id="ac-f2-01.setpoint", role="cooling_setpoint", zone="f2", writable=True, min=16, max=30
)
ROOM = PointBase(id="ac-f2-01.room", role="room_temperature", zone="f2", writable=False)
MODE = PointBase(
    id="ac-f2-01.mode", role="ac_mode", zone="f2", writable=True, states={0: "off", 1: "cool", 2: "heat"}
)
RELAY = PointBase(id="light-f2.relay", role="light_relay", zone="f2", writable=True)
LAB = PointBase(id="ac-lab-01.setpoint", role="cooling_setpoint", zone="lab", writable=True, min=16, max=30)
# check refuses a writable numeric point without bounds; the envelope still refuses one built around it
UNBOUNDED = PointBase.model_construct(
    id="ac-f2-02.setpoint", role="setpoint", zone="f2", writable=True, min=None, max=None, states=None
)
SET_B = PointBase(id="ac-f3-01.setpoint", role="cooling_setpoint", zone="f3", writable=True, min=16, max=30)
MB_SET = ModbusPoint(
    id="mb-01.setpoint", role="setpoint", zone="f2", writable=True, min=16, max=30, address=10
)


class Rig:
    def __init__(
        self, path: Path, *, max_writes: int = 4, relinquish: bool = False, fsync: bool = True
    ) -> None:
        self.path = path
        self.clock = FakeClock(START)
        self.a = FakeDriver("ac-a", supports_relinquish=relinquish)
        self.b = FakeDriver("ac-b")
        self.m = FakeDriver("mb-1")
        self.points: dict[str, tuple[str, PointBase]] = {
            p.id: ("ac-a", p) for p in (SETPOINT, ROOM, MODE, RELAY, LAB, UNBOUNDED)
        }
        self.points[SET_B.id] = ("ac-b", SET_B)
        self.points[MB_SET.id] = ("mb-1", MB_SET)
        self.max_writes = max_writes
        self.conn = open_state_db(path)
        if not fsync:  # the property test checks logic, not durability: skip the fsyncs
            self.conn.execute("PRAGMA synchronous=OFF")
        self.audit = AuditLog(conn=self.conn, clock=self.clock)
        self.actuator = self.make_actuator()

    def make_actuator(self) -> Actuator:
        drivers: dict[str, Driver] = {"ac-a": self.a, "ac-b": self.b, "mb-1": self.m}
        return Actuator(
            drivers=drivers,
            points=self.points,
            audit=self.audit,
            clock=self.clock,
            max_writes_per_hour=self.max_writes,
            is_exempt=lambda zone: zone == "lab",
        )

    def restart(self) -> None:
        """A new process: new connection, new AuditLog, new Actuator; the clock keeps running."""
        self.conn.close()
        self.conn = open_state_db(self.path)
        self.audit = AuditLog(conn=self.conn, clock=self.clock)
        self.actuator = self.make_actuator()

    def records(self, kind: str | None = None) -> list[AuditRecord]:
        return [r for r in self.audit.records() if kind is None or r.kind == kind]

    def close(self) -> None:
        assert verify(self.conn).ok  # whatever happened, the chain is intact
        self.conn.close()


@pytest.fixture(autouse=True)
def _outcome_codes_in_vocabulary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every outcome's code, in every test here, is a code of the failure vocabulary."""
    original = Actuator.apply

    async def apply(self: Actuator, *args: Any, **kwargs: Any) -> list[ActuationOutcome]:
        outcomes = await original(self, *args, **kwargs)
        bad = [o for o in outcomes if o.code is not None and not is_failure_code(o.code)]
        assert not bad, f"codes outside the vocabulary: {bad}"
        return outcomes

    monkeypatch.setattr(Actuator, "apply", apply)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path / "state.db")
    yield r
    r.close()


def intent(
    point: str = SETPOINT.id,
    value: float | int | bool = 26.0,
    *,
    zone: str | None = None,
    relinquish: bool = False,
) -> WriteIntent:
    return WriteIntent(point, value, RULE, "夏季不低于26°C", zone=zone, relinquish=relinquish)


def snap(value: Value, point: str = SETPOINT.id, zone: str | None = "f2") -> dict[str, PointState]:
    return {point: PointState(point, "cooling_setpoint", zone, value, True, START, START, writable=True)}


# --- accepted writes ----------------------------------------------------------------------------


async def test_write_is_read_back_and_audited(rig: Rig) -> None:
    [out] = await rig.actuator.apply([intent(value=26.0)], snap(24.0))
    assert out.ok and out.status == "ok" and out.readback == 26.0
    assert rig.a.calls == [(SETPOINT.id, 26.0, None)]
    [rec] = rig.records()
    assert (rec.kind, rec.subject, rec.before, rec.after, rec.rule, rec.result) == (
        "write",
        SETPOINT.id,
        24.0,
        26.0,
        RULE,
        "ok",
    )
    assert rec.reason == "夏季不低于26°C" and out.audit_seq == rec.seq


async def test_enum_and_bool_values_pass_sanity(rig: Rig) -> None:
    outs = await rig.actuator.apply([intent(MODE.id, 1.0), intent(RELAY.id, False), intent(RELAY.id, 1)])
    assert [o.status for o in outs] == ["ok", "ok", "ok"]
    assert rig.a.calls == [(MODE.id, 1, None), (RELAY.id, False, None), (RELAY.id, 1, None)]
    assert type(rig.a.calls[0][1]) is int  # the raw state, as the enumeration defines it


async def test_outcomes_keep_intent_order_across_devices(rig: Rig) -> None:
    intents = [intent(SET_B.id, 27.0), intent("nope.point"), intent(SETPOINT.id, 26.0), intent(ROOM.id)]
    outs = await rig.actuator.apply(intents)
    assert [o.intent for o in outs] == intents
    assert [o.status for o in outs] == ["ok", "refused", "ok", "refused"]


# --- the envelope -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("the_intent", "code"),
    [
        (intent(ROOM.id, 26.0), "not_writable"),
        (intent(SETPOINT.id, 30.5), "above_max"),
        (intent(SETPOINT.id, 12.0), "below_min"),
        (intent(LAB.id, 26.0), "exempt_zone"),  # the point's zone is exempt
        (intent(SETPOINT.id, 26.0, zone="lab"), "exempt_zone"),  # the policy says the zone is exempt
        (intent("ac-f9-99.setpoint", 26.0), "unknown_point"),
        (intent(SETPOINT.id, True), "not_a_number"),
        (intent(SETPOINT.id, math.nan), "not_finite"),
        (intent(MODE.id, 7), "unknown_state"),
        (intent(MODE.id, 1.5), "unknown_state"),
        (intent(RELAY.id, 2), "not_boolean"),
        (intent(UNBOUNDED.id, 26.0), "no_bounds"),
        (intent(MB_SET.id, 26.0, relinquish=True), "relinquish_unsupported"),
    ],
)
async def test_envelope_refusals_are_audited_and_never_reach_a_driver(
    rig: Rig, the_intent: WriteIntent, code: str
) -> None:
    with capture_logs() as logs:
        [out] = await rig.actuator.apply([the_intent], snap(24.0, the_intent.point_id))
    assert out.status == "refused" and out.code == code and not out.reached_device
    assert rig.a.calls == rig.b.calls == rig.m.calls == []
    [rec] = rig.records()
    assert rec.kind == "refused" and rec.result == code and rec.subject == the_intent.point_id
    assert rec.rule == RULE and out.audit_seq == rec.seq
    assert "policy wanted: 夏季不低于26°C" in rec.reason
    assert [e["code"] for e in logs if e["event"] == "write_refused"] == [code]


async def test_out_of_range_is_refused_not_clamped(rig: Rig) -> None:
    [out] = await rig.actuator.apply([intent(value=31.0)], snap(24.0))
    [rec] = rig.records("refused")
    assert rec.before == 24.0 and rec.after == 31.0
    assert rec.reason.startswith("31.0 is above max 30.0 of ac-f2-01.setpoint; not clamped")
    assert out.readback is None and rig.a.values == {}


async def test_relinquish_of_modbus_point_says_why(rig: Rig) -> None:
    [out] = await rig.actuator.apply([intent(MB_SET.id, 0, relinquish=True)])
    assert out.status == "refused" and out.detail == "relinquish is a BACnet concept"


async def test_relinquish_calls_write_none_on_a_capable_driver(tmp_path: Path) -> None:
    r = Rig(tmp_path / "s.db", relinquish=True)
    [out] = await r.actuator.apply([intent(LAB.id, 0, relinquish=True)])  # exempt zones may be released
    assert out.ok and r.a.calls == [(LAB.id, None, None)]
    [rec] = r.records()
    assert rec.kind == "write" and rec.result == "relinquished" and rec.after == 22.0
    r.close()


async def test_identical_refusal_is_audited_once_an_hour_with_a_count(rig: Rig) -> None:
    for _ in range(5):
        [out] = await rig.actuator.apply([intent(value=35.0)])
        assert out.status == "refused" and out.code == "above_max"
        rig.clock.advance(60)
    assert len(rig.records("refused")) == 1
    await rig.actuator.apply([intent(value=36.0)])  # a different value is a different refusal
    assert len(rig.records("refused")) == 2
    rig.clock.advance(3600)
    await rig.actuator.apply([intent(value=35.0)])
    last = rig.records("refused")[-1]
    assert last.after == 35.0 and "(4 identical refusals since the last record)" in last.reason


# --- rate limit ---------------------------------------------------------------------------------


async def test_rate_limit_trips_one_tamper_finding_pauses_the_point_then_resumes(rig: Rig) -> None:
    rig.a.hold[SETPOINT.id] = 26.0  # the write lands; someone turns it back between cycles (not modelled)
    for _ in range(4):
        [out] = await rig.actuator.apply([intent()], snap(22.0))
        assert out.ok
        rig.clock.advance(300)
    limited = []
    for _ in range(5):  # 20 more minutes of cycles
        [out] = await rig.actuator.apply([intent()], snap(22.0))
        limited.append(out)
        rig.clock.advance(240)
    assert [o.status for o in limited] == ["rate_limited"] * 5
    assert len(rig.a.calls) == 4 and rig.actuator.writes_in_window(SETPOINT.id) == 4
    findings = rig.records("finding")
    assert [(f.result, f.subject, f.rule) for f in findings] == [("tamper", SETPOINT.id, RULE)]
    assert limited[0].finding_seq == findings[0].seq and all(o.finding_seq is None for o in limited[1:])
    assert "4 writes in the last hour reached the limit of 4" in findings[0].reason
    # The finding (t = 1200) pauses the point for tamper_pause_s (60 min): still held back at t = 4799,
    # even though the first write left the window at t = 3600 (issue 13: a pause, then resume).
    rig.clock.advance(4799 - 2400)
    [out] = await rig.actuator.apply([intent()])
    assert out.status == "rate_limited" and "paused after tamper finding" in (out.detail or "")
    assert SETPOINT.id in rig.actuator.open_tamper()
    rig.clock.advance(1)
    [out] = await rig.actuator.apply([intent()])
    assert out.ok and len(rig.a.calls) == 5  # resumed with a fresh budget of 4
    for _ in range(3):
        rig.clock.advance(60)
        assert (await rig.actuator.apply([intent()]))[0].ok
    # The fight goes on: the limit trips again, a second finding, a second pause.
    rig.clock.advance(60)
    [out] = await rig.actuator.apply([intent()])
    assert out.status == "rate_limited" and out.finding_seq is not None
    second = rig.records("finding")[-1]
    assert second.result == "tamper" and "writes held back before" in second.reason
    assert len(rig.records("finding")) == 2


async def test_tamper_finding_closes_when_the_point_complies(rig: Rig) -> None:
    for _ in range(5):
        await rig.actuator.apply([intent()], snap(22.0))
    assert SETPOINT.id in rig.actuator.open_tamper()
    seq = rig.actuator.close_tamper(SETPOINT.id, value=26.0, reason="ac-f2-01.setpoint complies (26.0)")
    assert seq is not None and rig.actuator.open_tamper() == {}
    closed = rig.records("finding")[-1]
    assert closed.result == "tamper_closed" and closed.subject == SETPOINT.id and closed.rule == RULE
    assert rig.actuator.close_tamper(SETPOINT.id, value=26.0, reason="again") is None  # nothing open
    rig.restart()
    rig.actuator.restore_from_audit()
    assert rig.actuator.open_tamper() == {}  # a closed finding stays closed across a restart


async def test_rate_limit_is_per_point(rig: Rig) -> None:
    for _ in range(4):
        await rig.actuator.apply([intent()])
    [a, b] = await rig.actuator.apply([intent(), intent(SET_B.id, 27.0)])
    assert a.status == "rate_limited" and b.ok


async def test_restore_from_audit_keeps_the_count_across_a_restart(rig: Rig) -> None:
    for _ in range(3):
        assert (await rig.actuator.apply([intent()]))[0].ok
        rig.clock.advance(600)
    rig.restart()
    assert rig.actuator.restore_from_audit() == 3
    assert rig.actuator.writes_in_window(SETPOINT.id) == 3
    assert (await rig.actuator.apply([intent()]))[0].ok  # the fourth
    [out] = await rig.actuator.apply([intent()])
    assert out.status == "rate_limited" and out.finding_seq is not None
    # A second restart within the hour must not report the same fight again.
    rig.restart()
    rig.actuator.restore_from_audit()
    [out] = await rig.actuator.apply([intent()])
    assert out.status == "rate_limited" and out.finding_seq is None
    assert len(rig.records("finding")) == 1
    assert SETPOINT.id in rig.actuator.open_tamper()  # the open finding survives the restart
    # The pause counts from the finding (t = 1800), not from the restart: held back until t = 5400.
    rig.clock.advance(3599)
    rig.restart()
    rig.actuator.restore_from_audit()
    assert (await rig.actuator.apply([intent()]))[0].status == "rate_limited"
    rig.clock.advance(1)
    rig.restart()
    rig.actuator.restore_from_audit()
    assert (await rig.actuator.apply([intent()]))[0].ok


async def test_without_restore_a_restart_would_forget(rig: Rig) -> None:
    for _ in range(4):
        await rig.actuator.apply([intent()])
    rig.restart()
    assert rig.actuator.writes_in_window(SETPOINT.id) == 0  # the reason restore_from_audit exists


# --- read-back and failures ---------------------------------------------------------------------


async def test_masked_write_becomes_a_finding(rig: Rig) -> None:
    rig.a.hold[SETPOINT.id] = 22.0  # something with a higher priority holds 22 °C
    [out] = await rig.actuator.apply([intent(value=26.0)], snap(22.0))
    assert out.status == "readback_mismatch" and out.readback == 22.0 and not out.ok
    write, finding = rig.records()
    assert (write.kind, write.before, write.after, write.result) == ("write", 22.0, 22.0, "readback_mismatch")
    assert "requested 26.0" in write.reason
    assert (finding.kind, finding.result, finding.subject) == ("finding", "masked_write", SETPOINT.id)
    assert (finding.before, finding.after) == (26.0, 22.0)
    assert out.audit_seq == write.seq and out.finding_seq == finding.seq


async def test_masked_write_is_one_finding_naming_the_priority_and_no_retry_until_it_changes(
    rig: Rig,
) -> None:
    # BACnet: priority 5 holds 24 °C above our 8. One finding naming the holder, then no more writes
    # (and no tamper finding from the rate limit) while the holder keeps 24 °C.
    rig.a.result[SETPOINT.id] = WriteResult(
        SETPOINT.id,
        26.0,
        24.0,
        False,
        FailureCode.MASKED,
        "priority 5 holds 24.0 above our 8",
        holding_priority=5,
    )
    [out] = await rig.actuator.apply([intent(value=26.0)], snap(24.0))
    assert (out.status, out.code, out.readback) == ("readback_mismatch", "masked", 24.0)
    write, finding = rig.records()
    assert (write.kind, write.result, write.after) == ("write", "masked", 24.0)
    assert "priority 5 holds 24.0" in write.reason
    assert (finding.result, finding.subject) == ("masked_write", SETPOINT.id)
    assert "priority 5" in finding.reason and out.finding_seq == finding.seq
    for _ in range(3 * rig.max_writes):  # 18 ticks of the field report: nothing sent, nothing audited
        rig.clock.advance(10)
        [held] = await rig.actuator.apply([intent(value=26.0)], snap(24.0))
        assert (held.status, held.code, held.audit_seq) == ("masked", "masked", None)
    assert len(rig.a.calls) == 1 and len(rig.records()) == 2
    [m] = rig.actuator.masked_points()
    assert (m["point"], m["holding_priority"], m["held_value"], m["held_back"]) == (
        SETPOINT.id,
        5,
        24.0,
        3 * rig.max_writes,
    )
    # The holder changes its value (or lets go): the next intent writes again.
    del rig.a.result[SETPOINT.id]
    [again] = await rig.actuator.apply([intent(value=26.0)], snap(23.0))
    assert again.ok and len(rig.a.calls) == 2 and rig.actuator.masked_points() == []


async def test_a_clamped_write_names_the_value_the_device_holds(rig: Rig) -> None:
    rig.a.hold[SETPOINT.id] = 25.0  # the device clamps at 25 °C
    [out] = await rig.actuator.apply([intent(value=26.0)], snap(24.0))
    assert out.status == "readback_mismatch"
    finding = rig.records()[-1]
    assert finding.result == "masked_write" and "holds 25.0" in finding.reason
    [held] = await rig.actuator.apply([intent(value=26.0)], snap(25.0))
    assert held.status == "masked" and len(rig.a.calls) == 1
    # The policy asks for another value: that is tried (the clamp may not apply to it).
    [other] = await rig.actuator.apply([intent(value=24.0)], snap(25.0))
    assert other.status == "readback_mismatch" and len(rig.a.calls) == 2


async def test_readback_mismatch_is_recognised_by_its_one_spelling(rig: Rig) -> None:
    # What the BACnet driver now reports when no higher priority explains the read-back.
    rig.a.result[SETPOINT.id] = WriteResult(
        SETPOINT.id, 26.0, 25.0, False, "readback_mismatch", "wrote 26.0 at priority 8, device reports 25.0"
    )
    [out] = await rig.actuator.apply([intent(value=26.0)], snap(24.0))
    assert out.status == "readback_mismatch" and out.finding_seq is not None
    assert [r.result for r in rig.records()] == ["readback_mismatch", "masked_write"]


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (TransientError("no answer", device="ac-a", point=SETPOINT.id, code="timeout"), "timeout"),
        (RuntimeError("driver bug"), "internal_error"),
    ],
)
async def test_driver_exception_is_audited_and_does_not_escape(rig: Rig, exc: Exception, code: str) -> None:
    rig.a.fail[SETPOINT.id] = exc
    [out, other] = await rig.actuator.apply([intent(), intent(SET_B.id, 27.0)], snap(24.0))
    assert out.status == "error" and out.code == code and out.reached_device
    assert out.detail == ("RuntimeError: driver bug" if code == "internal_error" else "no answer")
    assert other.ok  # another device is not affected
    rec = next(r for r in rig.records() if r.subject == SETPOINT.id)
    assert (rec.kind, rec.result, rec.before, rec.after) == ("write", code, 24.0, None)
    assert "requested 26.0" in rec.reason
    del rig.a.fail[SETPOINT.id]
    assert (await rig.actuator.apply([intent()]))[0].ok


async def test_stray_cancelled_error_from_a_driver_is_a_driver_error(rig: Rig) -> None:
    rig.a.fail[SETPOINT.id] = asyncio.CancelledError()  # raised without anyone cancelling us
    [out] = await rig.actuator.apply([intent()])
    assert out.status == "error" and out.code == "internal_error" and out.detail == "CancelledError"


async def test_real_cancellation_propagates_and_is_audited(rig: Rig) -> None:
    rig.a.gate = asyncio.Barrier(2)  # the write waits for a partner that never comes
    task = asyncio.create_task(rig.actuator.apply([intent()]), name="apply-under-test")
    async with asyncio.timeout(2):
        await rig.a.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [rec] = rig.records()
    assert (rec.kind, rec.result, rec.after) == ("write", "cancelled", None)
    assert "cancelled before read-back" in rec.reason


# --- concurrency --------------------------------------------------------------------------------


async def test_different_devices_write_concurrently(rig: Rig) -> None:
    gate = asyncio.Barrier(2)  # each write waits for the other device's write to start
    rig.a.gate = rig.b.gate = gate
    outs = await rig.actuator.apply([intent(SETPOINT.id, 26.0), intent(SET_B.id, 27.0)])
    assert [o.status for o in outs] == ["ok", "ok"]


async def test_writes_to_one_point_never_overlap(rig: Rig) -> None:
    batches = [[intent(value=v)] for v in (26.0, 27.0, 28.0)]
    results = await asyncio.gather(*(rig.actuator.apply(b) for b in batches))
    assert [r[0].status for r in results] == ["ok", "ok", "ok"]
    assert rig.a.max_in_flight == 1 and len(rig.a.calls) == 3


# --- property: nothing outside the envelope ever reaches a driver -------------------------------

_ALL = [SETPOINT, ROOM, MODE, RELAY, LAB, UNBOUNDED, SET_B, MB_SET]
_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 100), st.booleans())


@settings(max_examples=60, deadline=None)
@given(
    batch=st.lists(
        st.tuples(
            st.sampled_from([p.id for p in _ALL] + ["ghost"]), _values, st.sampled_from([None, "lab", "f2"])
        ),
        max_size=12,
    )
)
def test_no_intent_leaves_the_envelope(batch: list[tuple[str, Value, str | None]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        _check_envelope(Rig(Path(d) / "s.db", max_writes=3, fsync=False), batch)


def _check_envelope(rig: Rig, batch: list[tuple[str, Value, str | None]]) -> None:
    intents = [WriteIntent(point_id=p, value=v, rule=RULE, reason="r", zone=z) for p, v, z in batch]  # type: ignore[arg-type]
    outs: list[ActuationOutcome] = asyncio.run(rig.actuator.apply(intents))
    by_id = {p.id: p for p in _ALL}
    writes_per_point: dict[str, int] = {}
    for pid, value, _prio in rig.a.calls + rig.b.calls + rig.m.calls:
        p = by_id[pid]
        writes_per_point[pid] = writes_per_point.get(pid, 0) + 1
        assert p.writable and p.zone != "lab"
        if p.states:
            assert type(value) is int and value in p.states
        elif p.role == "light_relay":
            assert value in (0, 1) and not isinstance(value, float)
        else:
            assert isinstance(value, int | float) and not isinstance(value, bool)
            assert p.min is not None and p.max is not None and p.min <= value <= p.max
    assert all(n <= 3 for n in writes_per_point.values())
    assert len(outs) == len(intents)
    # every intent left a trace: a write, a refusal (possibly an audited repeat) or a rate-limit outcome
    audited = {r.seq for r in rig.audit.records()}
    for o in outs:
        assert o.audit_seq is None or o.audit_seq in audited
        if o.reached_device:
            assert o.audit_seq is not None
    rig.close()


async def test_exemption_limited_to_roles_leaves_other_writes_alone(rig: Rig) -> None:
    """Policy exemptions are HVAC-only: an exempt zone's lights are still switched, its AC is not."""
    lab_light = PointBase(id="light-lab.relay", role="light_relay", zone="lab", writable=True)
    rig.points[lab_light.id] = ("ac-a", lab_light)
    act = Actuator(
        drivers={"ac-a": rig.a, "ac-b": rig.b, "mb-1": rig.m},
        points=rig.points,
        audit=rig.audit,
        clock=rig.clock,
        max_writes_per_hour=4,
        is_exempt=lambda zone: zone == "lab",
        exempt_roles={"setpoint", "cooling_setpoint", "heating_setpoint", "ac_mode", "ac_power"},
    )
    light, ac = await act.apply([intent(lab_light.id, False), intent(LAB.id, 26.0)])
    assert light.ok and rig.a.values[lab_light.id] is False
    assert ac.status == "refused" and ac.code == "exempt_zone"
    assert LAB.id not in [c[0] for c in rig.a.calls]


# --- per-mode envelopes (issue 11 item 11) --------------------------------------------------------

VRF_SET = PointBase(
    id="vrf.iu1.setpoint", role="setpoint", zone="f2", ac_unit="iu1", writable=True, min=16, max=32,
    limits={"cool": {"min": 18, "max": 32}, "heat": {"min": 16, "max": 30}, "fan": {"min": 20, "max": 24}},
)  # fmt: skip
VRF_MODE = PointBase(
    id="vrf.iu1.mode", role="ac_mode", zone="f2", ac_unit="iu1", writable=True,
    states={0: "off", 1: "cool", 2: "heat", 3: "fan", 4: "heat", 5: "auto", 6: "dry"},
)  # fmt: skip
# Another unit of the same gateway: its mode never decides iu1's envelope.
VRF_MODE_2 = PointBase(
    id="vrf.iu2.mode", role="ac_mode", zone="f2", ac_unit="iu2", writable=True, states={1: "cool", 2: "heat"}
)


MODE_POLL_S = 10.0  # the VRF gateway's poll interval: a mode reading older than 2 of them is unknown


def _expected_envelope(raw: Value, quality: str, age_s: float = 0.0) -> tuple[float, float]:
    """The envelope as issue 11 states it, computed independently of the actuator."""
    assert VRF_SET.limits is not None
    assert VRF_MODE.states is not None
    label: str | None = None
    if isinstance(raw, str):  # a driver that reports the label itself
        label = raw
    elif isinstance(raw, int | float) and math.isfinite(raw) and raw == int(raw):
        label = VRF_MODE.states.get(int(raw))
    if quality != "good" or label is None or age_s > 2 * MODE_POLL_S or label == "auto":
        # every listed mode's range in common (cool 18-32, heat 16-30, fan 20-24); auto, which has no range
        # of its own here, may cool or heat as it decides
        return 20, 24
    lim = VRF_SET.limits.get(label)  # type: ignore[call-overload]
    return (16, 32) if lim is None else (lim.min, lim.max)


def _mode_snap(raw: Value, quality: str, other: Value, age_s: float = 0.0) -> dict[str, PointState]:
    ok = quality != "bad"
    ts = START - timedelta(seconds=age_s)
    return {
        VRF_MODE.id: PointState(
            VRF_MODE.id, "ac_mode", "f2", raw, ok, ts, ts, writable=True, states=VRF_MODE.states,
            device_id="vrf", quality=quality, ac_unit="iu1", code=None if ok else "timeout",
        ),
        VRF_MODE_2.id: PointState(
            VRF_MODE_2.id, "ac_mode", "f2", other, True, START, START, states=VRF_MODE_2.states,
            device_id="vrf", ac_unit="iu2",
        ),
    }  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(
    raw=st.one_of(st.integers(-1, 9), st.none(), st.just("cool"), st.floats(allow_nan=True)),
    quality=st.sampled_from(["good", "good", "uncertain", "bad"]),
    other=st.sampled_from([1, 2]),
    values=st.lists(st.one_of(st.floats(10, 36), st.integers(10, 36)), min_size=1, max_size=6),
    # mostly fresh; else around the limit of 2 poll intervals, or long stale (the gateway went silent)
    age_s=st.one_of(st.just(0.0), st.floats(0, 4 * MODE_POLL_S), st.sampled_from([20.0, 20.001, 3600.0])),
)
def test_no_write_leaves_the_current_modes_envelope(
    raw: Value, quality: str, other: Value, values: list[float], age_s: float
) -> None:
    with tempfile.TemporaryDirectory() as d:
        rig = Rig(Path(d) / "s.db", max_writes=99, fsync=False)
        vrf = FakeDriver("vrf")
        rig.points.update({p.id: ("vrf", p) for p in (VRF_SET, VRF_MODE, VRF_MODE_2)})
        act = Actuator(
            drivers={"vrf": vrf}, points=rig.points, audit=rig.audit, clock=rig.clock, max_writes_per_hour=99,
            intervals={VRF_MODE.id: MODE_POLL_S, VRF_MODE_2.id: MODE_POLL_S},
        )  # fmt: skip
        intents = [WriteIntent(VRF_SET.id, v, RULE, "r") for v in values]
        outs = asyncio.run(act.apply(intents, _mode_snap(raw, quality, other, age_s)))
        lo, hi = _expected_envelope(raw, quality, age_s)
        for pid, value, _prio in vrf.calls:
            assert pid == VRF_SET.id and isinstance(value, int | float)
            assert lo <= value <= hi, (raw, quality, age_s, value)
        for o in outs:  # and everything inside it was written: the envelope is not stricter than stated
            inside = lo <= float(o.intent.value) <= hi
            assert o.reached_device == inside, (raw, quality, age_s, o)
            if not inside:
                assert o.code in (FailureCode.BELOW_MIN, FailureCode.ABOVE_MAX)
        rig.close()


async def test_per_mode_refusal_names_the_mode(rig: Rig) -> None:
    vrf = FakeDriver("vrf")
    rig.points.update({p.id: ("vrf", p) for p in (VRF_SET, VRF_MODE, VRF_MODE_2)})
    act = Actuator(
        drivers={"vrf": vrf}, points=rig.points, audit=rig.audit, clock=rig.clock, max_writes_per_hour=9
    )
    [heat] = await act.apply([intent(VRF_SET.id, 31)], _mode_snap(4, "good", 1))  # 4: auxiliary heat
    assert (
        heat.code == FailureCode.ABOVE_MAX and "above max 30.0" in heat.detail and "mode heat" in heat.detail
    )
    [cool] = await act.apply([intent(VRF_SET.id, 31)], _mode_snap(1, "good", 2))
    assert cool.ok and vrf.calls == [(VRF_SET.id, 31, None)]
    [unknown] = await act.apply([intent(VRF_SET.id, 26)], _mode_snap(9, "uncertain", 1))
    assert unknown.code == FailureCode.ABOVE_MAX and "mode is unknown" in unknown.detail


async def test_a_stale_mode_reading_counts_as_unknown_and_says_why(rig: Rig) -> None:
    """Issue 11 item 11: a cooling reading 25 s old (over 2 polls of 10 s) no longer picks the cool range;
    without a known interval (no enforcer wiring) the reading is not aged."""
    vrf = FakeDriver("vrf")
    rig.points.update({p.id: ("vrf", p) for p in (VRF_SET, VRF_MODE, VRF_MODE_2)})
    act = Actuator(
        drivers={"vrf": vrf}, points=rig.points, audit=rig.audit, clock=rig.clock, max_writes_per_hour=9,
        intervals={VRF_MODE.id: MODE_POLL_S},
    )  # fmt: skip
    [fresh] = await act.apply([intent(VRF_SET.id, 31)], _mode_snap(1, "good", 1, age_s=20))
    assert fresh.ok
    [stale] = await act.apply([intent(VRF_SET.id, 31)], _mode_snap(1, "good", 1, age_s=25))
    assert stale.code == FailureCode.ABOVE_MAX and not stale.reached_device
    assert "mode is unknown (vrf.iu1.mode read 25 s ago, over 2 polls of 10 s; common range)" in stale.detail
    act.intervals = {}
    [unaged] = await act.apply([intent(VRF_SET.id, 31)], _mode_snap(1, "good", 1, age_s=25))
    assert unaged.ok


async def test_the_enforcer_gives_the_actuator_each_points_poll_interval(tmp_path: Path) -> None:
    from edge_agent.config.load import load_config
    from edge_agent.service.service import Service

    cfg = load_config(EXAMPLE_SITE)
    svc = Service(cfg, state_dir=tmp_path, clock=FakeClock(START))
    try:
        assert svc.actuator.intervals["f1-ac1.mode"] == 5.0  # the example site's FC-1F unit polls every 5 s
        assert set(svc.actuator.intervals) >= {p.id for _, p in cfg.points() if p.role == "ac_mode"}
    finally:
        await svc.agent.close()
        svc.close()


def test_limits_must_lie_inside_min_max() -> None:
    with pytest.raises(ValueError, match=r"limits of cool \(18..34\) reach outside min..max"):
        PointBase(
            id="x", role="setpoint", writable=True, min=16, max=32, limits={"cool": {"min": 18, "max": 34}}
        )
    with pytest.raises(ValueError, match="give `min:`, `max:`"):
        PointBase(id="x", role="setpoint", limits={"cool": {"min": 18, "max": 30}})
    with pytest.raises(ValueError, match=r"min 30\.0 is above max 18\.0"):
        PointBase(id="x", role="setpoint", min=16, max=32, limits={"cool": {"min": 30, "max": 18}})


def test_a_reload_that_removes_the_mode_point_mid_batch_leaves_the_common_range(rig: Rig) -> None:
    """The actuator's maps are live: a mode point gone from them while a batch waits on a point lock
    counts as unknown, never a KeyError that would cancel the batch's other writes."""
    rig.points.update({p.id: ("vrf", p) for p in (VRF_SET, VRF_MODE, VRF_MODE_2)})
    act = Actuator(
        drivers={"vrf": FakeDriver("vrf")}, points=rig.points, audit=rig.audit, clock=rig.clock,
        max_writes_per_hour=99,
    )  # fmt: skip
    snap = _mode_snap(1, "good", 1)  # cool: 18..32
    assert act._envelope(VRF_SET.id, VRF_SET, snap).bounds == (18, 32)
    act._mode_point = {VRF_SET.id: VRF_MODE.id}  # what the batch looked up when it started
    del rig.points[VRF_MODE.id]  # then the reload, while the snapshot still has the old mode reading
    assert act._envelope(VRF_SET.id, VRF_SET, snap).bounds == (20, 24)  # the common range

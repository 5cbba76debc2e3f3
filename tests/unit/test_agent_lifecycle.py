"""The agent owns every task it starts: each driver's background work (BACnet: COV) runs as a named task of
its TaskGroup, is cancelled before the driver closes (on reload and on stop), and failures of connect,
background work and close are logged by name instead of suppressed. The drivers here are a probe protocol
registered for these tests only, faking at the project's own Driver interface."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field
from structlog.testing import capture_logs

from drivers.base import (
    FailureCode,
    PointBase,
    Quality,
    Reading,
    TransientError,
    UtcClock,
    Value,
    WriteResult,
)
from drivers.registry import ProtocolSpec, register, unregister
from drivers.spec import PushCallback
from edge_agent.config.load import load_config
from edge_agent.core.clock import FakeClock
from edge_agent.service.agent import Agent

EVENTS: list[str] = []
BEHAVIOUR: dict[str, str] = {}  # device id -> connect_fails | run_fails | close_hangs | read_swallows_cancel


class ProbeDevice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["probe"]
    id: str
    name: str | None = None
    zone: str | None = None
    interval_s: float = Field(default=0.05, gt=0)
    points: list[PointBase] = Field(min_length=1)


class ProbeDriver:
    def __init__(self, device: ProbeDevice) -> None:
        self.device_id = device.id
        self.started = asyncio.Event()
        self.reads = 0

    def _note(self, what: str) -> None:
        EVENTS.append(f"{what}:{self.device_id}")

    async def connect(self) -> None:
        self._note("connect")
        if BEHAVIOUR.get(self.device_id) == "connect_fails":
            raise TransientError("connection refused", device=self.device_id, code=FailureCode.UNREACHABLE)

    async def run(self) -> None:
        self._note("run")
        self.started.set()
        if BEHAVIOUR.get(self.device_id) == "run_fails":
            raise RuntimeError("bug in the background work")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self._note("run-cancelled")
            raise

    async def close(self) -> None:
        self._note("close")
        if BEHAVIOUR.get(self.device_id) == "close_hangs":
            await asyncio.Event().wait()
        self._note("closed")

    async def read(self, points: Sequence[PointBase]) -> list[Reading]:
        now = datetime.now(UTC)
        self.reads += 1
        if BEHAVIOUR.get(self.device_id) == "read_swallows_cancel":
            try:
                await asyncio.sleep(0.2 if self.reads else 0)  # the first read ends the first cycle
            except asyncio.CancelledError:  # what a careless client library does
                self._note("cancel-swallowed")
        return [Reading(p.id, 1.0, now, Quality.GOOD) for p in points]

    async def write(self, point: PointBase, value: Value, *, priority: int | None = None) -> WriteResult:
        return WriteResult(point.id, value, None, ok=False, code=FailureCode.NOT_WRITABLE)


def _driver(device: ProbeDevice, shared: None, /, *, clock: UtcClock, on_push: PushCallback) -> ProbeDriver:
    return ProbeDriver(device)


PROBE = ProtocolSpec(name="probe", device_model=ProbeDevice, point_model=PointBase, make_driver=_driver)

SITE = """\
gateway_id: gw-probe
building_id: "370102A001"
location: {lat: 36.65, lon: 117.12}
floor_area_m2: 1000
occupants: 10
devices:
"""


def _site(tmp_path: Path, ids: Sequence[str], name: str = "site.yaml") -> Path:
    (tmp_path / "policy.yaml").write_text('seasons: {summer: "06-01..09-30", winter: "11-15..03-15"}\n')
    devices = "".join(f"  - {{protocol: probe, id: {i}, points: [{{id: {i}.x}}]}}\n" for i in ids)
    path = tmp_path / name
    path.write_text(SITE + devices)
    return path


@pytest.fixture(autouse=True)
def probe() -> Iterator[None]:
    register(PROBE)
    EVENTS.clear()
    BEHAVIOUR.clear()
    try:
        yield
    finally:
        unregister("probe")


def _agent(tmp_path: Path, ids: Sequence[str]) -> Agent:
    return Agent(config=load_config(_site(tmp_path, ids)), clock=FakeClock(datetime(2026, 7, 1, tzinfo=UTC)))


async def _started(agent: Agent, *ids: str) -> None:
    async with asyncio.timeout(5):
        await agent.first_cycle.wait()
        for i in ids:
            await agent.devices[i].driver.started.wait()  # type: ignore[attr-defined]


def _names() -> set[str]:
    return {t.get_name() for t in asyncio.all_tasks()}


async def test_background_work_runs_as_named_tasks_and_ends_before_close(tmp_path: Path) -> None:
    agent = _agent(tmp_path, ["p1", "p2"])
    run = asyncio.create_task(agent.run(), name="test:agent")
    try:
        await _started(agent, "p1", "p2")
        assert {"driver:p1", "driver:p2", "poll:p1", "poll:p2", "readings:push"} <= _names()
        await agent.reconfigure(load_config(_site(tmp_path, ["p1"], "smaller.yaml")))  # p2 goes
        assert EVENTS.index("run-cancelled:p2") < EVENTS.index("close:p2")
        assert "driver:p2" not in _names()
    finally:
        agent.stop()
        async with asyncio.timeout(5):
            await run
    assert EVENTS.index("run-cancelled:p1") < EVENTS.index("close:p1")
    assert "closed:p1" in EVENTS and "closed:p2" in EVENTS


async def test_connect_and_background_failures_are_logged_and_polling_goes_on(tmp_path: Path) -> None:
    BEHAVIOUR.update({"p1": "connect_fails", "p2": "run_fails"})
    agent = _agent(tmp_path, ["p1", "p2"])
    with capture_logs() as logs:
        run = asyncio.create_task(agent.run(), name="test:agent")
        try:
            await _started(agent, "p1", "p2")
        finally:
            agent.stop()
            async with asyncio.timeout(5):
                await run
    failed = [e for e in logs if e["event"] == "device_connect_failed"]
    assert [(e["device"], e["code"]) for e in failed] == [("p1", "unreachable")]
    background = [e for e in logs if e["event"] == "driver_background_failed"]
    assert [e["device"] for e in background] == ["p2"] and background[0]["exc_info"]
    assert all(rt.status.polls >= 1 for rt in agent.devices.values())  # both devices were polled


async def test_close_is_bounded_when_a_driver_hangs(tmp_path: Path) -> None:
    BEHAVIOUR["p1"] = "close_hangs"
    agent = _agent(tmp_path, ["p1", "p2"])
    with capture_logs() as logs:
        async with asyncio.timeout(5):
            await agent.close(timeout_s=0.2)
    assert "closed:p2" in EVENTS and "closed:p1" not in EVENTS
    (timeout,) = [e for e in logs if e["event"] == "driver_close_timeout"]
    assert timeout["pending"] == ["p1"]
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("close:")]


async def test_a_swallowed_cancel_does_not_keep_a_poll_loop_alive(tmp_path: Path) -> None:
    BEHAVIOUR["p1"] = "read_swallows_cancel"
    agent = _agent(tmp_path, ["p1"])

    async def crash() -> None:  # another loop of the service fails: the TaskGroup cancels the rest
        await agent.first_cycle.wait()
        await asyncio.sleep(0.1)  # the poll loop is inside its second read by now
        raise RuntimeError("flush loop failed")

    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(5):
            await agent.run(extra_tasks=[("test:crash", crash)])
    assert info.group_contains(RuntimeError, match="flush loop failed")
    assert "cancel-swallowed:p1" in EVENTS
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "poll:p1"]


async def test_stop_ends_a_poll_loop_asleep_for_its_interval(tmp_path: Path) -> None:
    """The poll loops sleep on a future stop() resolves (issue 18: no Event waiter and timeout per poll):
    a stop during an hour-long interval ends them now, with no poll more and no sleeper left behind."""
    path = _site(tmp_path, ["p1", "p2"])
    path.write_text(path.read_text().replace("points:", "interval_s: 3600, points:"))
    agent = Agent(config=load_config(path), clock=FakeClock(datetime(2026, 7, 1, tzinfo=UTC)))
    run = asyncio.create_task(agent.run(), name="test:agent")
    await _started(agent, "p1", "p2")
    assert len(agent._sleeping) == 2  # each loop went to sleep for the hour right after its poll
    agent.stop()
    async with asyncio.timeout(5):
        await run
    assert [rt.status.polls for rt in agent.devices.values()] == [1, 1]
    assert not agent._sleeping

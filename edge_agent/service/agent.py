"""The agent's runtime: one poll loop per device under one TaskGroup, the snapshot, clean shutdown."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from drivers.base import Driver, DriverError, Quality, Reading
from drivers.registry import PROTOCOLS
from drivers.spec import SharedResource
from edge_agent.config.load import LoadedConfig
from edge_agent.core.clock import Clock, SystemClock
from edge_agent.core.logs import get_logger
from edge_agent.core.snapshot import Snapshot
from edge_agent.ops.health import Health

__all__ = ["Agent", "DeviceStatus", "ReadingsListener", "read_once"]

ReadingsListener = Callable[[str, Sequence[Reading], Sequence[Reading]], Awaitable[None] | None]


@dataclass(slots=True)
class DeviceStatus:
    device_id: str
    protocol: str
    points: int
    up: bool | None = None  # None until the first poll
    last_success: datetime | None = None
    last_latency_ms: float | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    polls: int = 0
    readings_total: int = 0
    errors_total: int = 0  # bad readings
    bad_points: dict[str, str] = field(default_factory=dict)  # point id -> code, as of the last poll

    @property
    def state(self) -> str | None:
        """``up``, ``degraded`` (up, some points bad), ``down`` (every point bad), None before a poll."""
        if self.up is None:
            return None
        if not self.up:
            return "down"
        return "degraded" if self.bad_points else "up"

    def as_dict(self) -> dict[str, Any]:
        codes: dict[str, int] = {}
        for code in self.bad_points.values():
            codes[code] = codes.get(code, 0) + 1
        return {
            "id": self.device_id,
            "protocol": self.protocol,
            "points": self.points,
            "up": self.up,
            "state": self.state,
            "points_bad": len(self.bad_points),
            "bad_codes": dict(sorted(codes.items())),
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "latency_ms": None if self.last_latency_ms is None else round(self.last_latency_ms, 2),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "polls": self.polls,
            "readings_total": self.readings_total,
            "errors_total": self.errors_total,
        }


@dataclass(slots=True)
class _DeviceRuntime:
    config: Any  # the device's options model
    driver: Driver
    status: DeviceStatus
    poll_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    background: asyncio.Task[None] | None = None  # the driver's run(), a task of the agent's TaskGroup


class Agent:
    """Wires config, drivers and the snapshot; services (outbox, enforcement, uplink) attach as listeners."""

    def __init__(
        self, *, config: LoadedConfig, clock: Clock | None = None, health: Health | None = None
    ) -> None:
        self.config = config
        self.health = health
        self.clock: Clock = clock or SystemClock()
        self.log = get_logger("edge_agent.agent", gateway=config.site.gateway_id)
        self.snapshot = Snapshot((dev.id, p, config.point_zone(p.id)) for dev, p in config.points())
        self._pools: dict[str, SharedResource] = {}  # protocol -> per-site resource: Modbus pool, BACnet port
        self.devices: dict[str, _DeviceRuntime] = {}
        self.listeners: list[ReadingsListener] = []
        # Run when the loops have stopped, before the drivers close (BACnet relinquish at shutdown).
        self.before_close: list[Callable[[], Awaitable[None]]] = []
        self._pushed: asyncio.Queue[tuple[str, list[Reading]]] = asyncio.Queue()
        # The last pushed reading per point: a driver may answer a poll with it again (BACnet serves COV
        # points from their notification); delivered once already, it is not delivered (stored) twice.
        self._last_pushed: dict[str, Reading] = {}
        self.first_cycle = asyncio.Event()
        self._stop = asyncio.Event()
        # The poll loops' sleeps, which stop() ends early: one future and one timer per poll, not an
        # Event waiter plus an asyncio.timeout whose expiry cancels the task (issue 18).
        self._sleeping: set[asyncio.Future[None]] = set()
        self._cycles_done: set[str] = set()
        self._tg: asyncio.TaskGroup | None = None
        for dev in config.site.devices:
            self._add_device(dev)

    def _add_device(self, dev: Any) -> None:
        self.devices[dev.id] = _DeviceRuntime(
            config=dev,
            driver=self._make_driver(dev),
            status=DeviceStatus(device_id=dev.id, protocol=dev.protocol, points=len(dev.points)),
        )
        if self.health is not None:
            # A poll that keeps failing still makes progress; only a hung loop misses its deadline.
            self.health.register(f"poll:{dev.id}", deadline_s=max(3 * dev.interval_s, 30.0))

    def _make_driver(self, dev: Any) -> Driver:
        spec = PROTOCOLS.get(dev.protocol)
        if spec is None:
            raise ValueError(f"device {dev.id}: no driver for protocol {dev.protocol!r}")
        if spec.make_shared is not None and spec.name not in self._pools:
            options = self.config.site.network_options(spec.name)
            self._pools[spec.name] = spec.make_shared(options, clock=self.clock.now)
        device_id: str = dev.id

        def on_push(readings: list[Reading]) -> None:
            # Pushed readings (BACnet COV) arrive in the stack's callbacks; queue them into the same
            # pipeline as polls.
            self._pushed.put_nowait((device_id, readings))

        return spec.make_driver(dev, self._pools.get(spec.name), clock=self.clock.now, on_push=on_push)

    async def reconfigure(self, config: LoadedConfig) -> dict[str, Any]:
        """Swap to a new configuration: only devices whose options changed get a new driver (and so
        reconnect); unchanged devices keep polling on their connection. Returns a summary."""
        old = {d.id: d for d in self.config.site.devices}
        new = {d.id: d for d in config.site.devices}
        added = sorted(new.keys() - old.keys())
        removed = sorted(old.keys() - new.keys())
        changed = sorted(i for i in new.keys() & old.keys() if new[i] != old[i])
        self.config = config
        self.snapshot.reconfigure((dev.id, p, config.point_zone(p.id)) for dev, p in config.points())
        for dev_id in removed + changed:
            rt = self.devices.pop(dev_id)  # its poll loop sees this and ends
            if self.health is not None:
                self.health.unregister(f"poll:{dev_id}")
            if rt.background is not None:
                rt.background.cancel()
                await asyncio.wait([rt.background])
            await self._close_driver(rt)
        for dev_id in added + changed:
            self._add_device(new[dev_id])
            await self._connect(self.devices[dev_id])
            if self._tg is not None:
                self._start_device(self._tg, dev_id)
        return {
            "added": added,
            "removed": removed,
            "changed": changed,
            "unchanged": len(new) - len(added) - len(changed),
        }

    def stop(self) -> None:
        self._stop.set()
        for fut in self._sleeping:
            if not fut.done():
                fut.set_result(None)

    async def _sleep_until(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Sleep until loop time ``when``, or until stop()."""
        fut: asyncio.Future[None] = loop.create_future()
        timer = loop.call_at(when, _wake, fut)
        self._sleeping.add(fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._sleeping.discard(fut)

    async def poll_once(self, device_id: str) -> list[Reading]:
        """Read every point of one device now, update the snapshot, tell the listeners."""
        return await self._poll(self.devices[device_id])

    async def _poll(self, rt: _DeviceRuntime) -> list[Reading]:
        device_id = rt.status.device_id
        async with rt.poll_lock:
            t0 = time.perf_counter()
            readings = await rt.driver.read(rt.config.points)
            latency = (time.perf_counter() - t0) * 1000
        self._note_status(rt.status, readings, latency)
        pushed = self._last_pushed  # empty unless a driver pushes (BACnet COV): no per-reading look-up
        fresh = [r for r in readings if pushed.get(r.point_id) is not r] if pushed else readings
        if fresh:
            await self._deliver(device_id, fresh)
        return readings

    async def _deliver(self, device_id: str, readings: Sequence[Reading]) -> None:
        changed = self.snapshot.update(readings)
        for listener in self.listeners:
            res = listener(device_id, readings, changed)
            if res is not None:
                await res

    async def _push_loop(self) -> None:
        """Readings a driver pushes (BACnet COV) go through the same pipeline as polled ones."""
        while True:
            device_id, readings = await self._pushed.get()
            for r in readings:
                self._last_pushed[r.point_id] = r
            try:
                await self._deliver(device_id, readings)
            except Exception:  # a listener's bug: logged, and the next push is delivered
                self.log.exception("push_delivery_failed", device=device_id)

    async def _connect(self, rt: _DeviceRuntime) -> None:
        """Connect a driver; a failure is logged once here and shows as bad readings in its poll loop."""
        try:
            await rt.driver.connect()
        except (DriverError, OSError) as exc:
            code = getattr(exc, "code", None) or type(exc).__name__
            self.log.warning("device_connect_failed", device=rt.status.device_id, code=code, error=str(exc))

    async def _close_driver(self, rt: _DeviceRuntime) -> None:
        try:
            await rt.driver.close()
        except (DriverError, OSError) as exc:
            code = getattr(exc, "code", None) or type(exc).__name__
            self.log.warning("device_close_failed", device=rt.status.device_id, code=code, error=str(exc))

    async def _driver_background(self, rt: _DeviceRuntime) -> None:
        """The driver's own background work (COV subscriptions); a bug in it stops that device's work
        only, logged with its traceback, not the agent."""
        try:
            await rt.driver.run()
        except Exception:
            self.log.exception("driver_background_failed", device=rt.status.device_id)

    def _start_device(self, tg: asyncio.TaskGroup, dev_id: str) -> None:
        rt = self.devices[dev_id]
        tg.create_task(self._poll_loop(dev_id), name=f"poll:{dev_id}")
        rt.background = tg.create_task(self._driver_background(rt), name=f"driver:{dev_id}")

    def _note_status(self, st: DeviceStatus, readings: Sequence[Reading], latency_ms: float) -> None:
        bad = [r for r in readings if r.quality is Quality.BAD]  # Reading.ok, without a property call each
        st.polls += 1
        st.readings_total += len(readings)
        st.errors_total += len(bad)
        st.last_latency_ms = latency_ms
        if not bad and readings and st.up is True and not st.bad_points:
            st.last_success = readings[0].ts  # all good, as before: nothing to log, no dict to build
            return
        up = len(bad) < len(readings)
        if up:
            st.last_success = readings[0].ts if readings else self.clock.now()
        if bad:
            st.last_error = f"{bad[0].point_id}: {bad[0].code} {bad[0].detail or ''}".strip()
            st.last_error_at = bad[0].ts
        now_bad = {r.point_id: str(r.code or "bad") for r in bad}
        was_up, prev_bad = st.up, st.bad_points
        st.bad_points = now_bad
        if st.up is not up:
            # Log the change of state only, not every failed poll.
            if up:
                self.log.info("device_up", device=st.device_id, latency_ms=round(latency_ms, 1))
            else:
                self.log.warning("device_down", device=st.device_id, error=st.last_error)
            st.up = up
        if not up:
            return  # every point bad: device_down says it once, not once per point
        # One line per point state change while the device answers; points that come back with the
        # device (down -> up) are said by device_up, points still bad are said here.
        for r in bad:
            code = now_bad[r.point_id]
            if prev_bad.get(r.point_id) != code or was_up is not True:
                self.log.warning(
                    "point_bad", device=st.device_id, point=r.point_id, code=code,
                    was=prev_bad.get(r.point_id), detail=r.detail,
                )  # fmt: skip
        if was_up is True:
            for pid in prev_bad.keys() - now_bad.keys():
                self.log.info("point_recovered", device=st.device_id, point=pid, was=prev_bad[pid])

    async def _poll_loop(self, device_id: str) -> None:
        rt = self.devices[device_id]
        interval = float(rt.config.interval_s)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        me = asyncio.current_task()
        assert me is not None
        # Also ends when a cancel was swallowed below us (a client library catching CancelledError):
        # the TaskGroup that cancelled this loop must not wait for it for ever.
        while not self._stop.is_set() and self.devices.get(device_id) is rt and not me.cancelling():
            try:
                await self._poll(rt)
            except Exception as exc:  # a driver bug must not take the other devices down
                rt.status.up = False
                rt.status.last_error = f"internal: {type(exc).__name__}: {exc}"
                self.log.exception("poll_failed", device=device_id)
            if self.health is not None:
                self.health.beat(f"poll:{device_id}")
            if device_id not in self._cycles_done:
                self._cycles_done.add(device_id)
                if len(self._cycles_done) == len(self.devices):
                    self.first_cycle.set()
            next_at += interval
            now = loop.time()
            if next_at < now:  # overran: skip missed slots rather than bursting to catch up
                next_at = now + interval - ((now - next_at) % interval)
            if not self._stop.is_set():
                await self._sleep_until(loop, next_at)

    async def run(
        self, *, extra_tasks: Sequence[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = ()
    ) -> None:
        """Poll until stop() (or SIGINT/SIGTERM when installed); close every driver on the way out."""
        self.log.info(
            "agent_starting",
            devices=len(self.devices),
            points=len(self.snapshot),
            site=str(self.config.site_path),
        )
        try:
            for rt in self.devices.values():
                await self._connect(rt)
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                extras: list[asyncio.Task[None]] = [
                    tg.create_task(factory(), name=name) for name, factory in extra_tasks
                ]
                # Always: a reload may add the site's first device that pushes readings.
                extras.append(tg.create_task(self._push_loop(), name="readings:push"))
                for dev_id in self.devices:
                    self._start_device(tg, dev_id)

                async def cancel_extras_on_stop() -> None:
                    await self._stop.wait()  # the poll loops end by themselves
                    for t in extras:
                        t.cancel()
                    for rt in self.devices.values():
                        if rt.background is not None:
                            rt.background.cancel()

                tg.create_task(cancel_extras_on_stop(), name="stopper")
        finally:
            for hook in self.before_close:
                try:
                    await hook()
                except Exception:  # shutting down: one hook's bug must not keep the drivers open
                    self.log.exception("before_close_failed")
            await self.close()
            self.log.info("agent_stopped")

    async def close(self, *, timeout_s: float = 5.0) -> None:
        """Close every driver at once (BACnet unsubscribes its COV, may relinquish), bounded in time so
        a device that stopped answering cannot hold up a stop that systemd is waiting for."""

        closed: set[str] = set()

        async def close_one(dev_id: str, rt: _DeviceRuntime) -> None:
            await self._close_driver(rt)
            closed.add(dev_id)

        try:
            async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as tg:
                for dev_id, rt in self.devices.items():
                    tg.create_task(close_one(dev_id, rt), name=f"close:{dev_id}")
        except TimeoutError:  # the TaskGroup has cancelled the ones still closing
            pending = sorted(self.devices.keys() - closed)
            self.log.warning("driver_close_timeout", pending=pending, timeout_s=timeout_s)
        for protocol, pool in self._pools.items():
            try:
                await pool.close()
            except (DriverError, OSError) as exc:
                self.log.warning("shared_close_failed", protocol=protocol, error=str(exc))

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self.log.info("signal_received", signal=sig.name, action="stop")
        self.stop()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():  # stop() got there first, or the sleeping task was cancelled
        fut.set_result(None)


async def read_once(config: LoadedConfig, clock: Clock) -> Agent:
    """Connect, read every device once and close: the snapshot a dry run (`policy explain`) evaluates.
    An unreachable device shows as bad readings in the returned agent's snapshot."""
    agent = Agent(config=config, clock=clock)
    try:
        for rt in agent.devices.values():
            await agent._connect(rt)
        await asyncio.gather(*(agent.poll_once(dev_id) for dev_id in agent.devices))
    finally:
        await agent.close()
    return agent

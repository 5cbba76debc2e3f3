"""The agent's runtime: one poll loop per device under one TaskGroup, the snapshot, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from drivers.base import Driver, Reading
from drivers.bacnet.driver import BacnetDriver
from drivers.bacnet.network import BacnetNetwork
from drivers.bacnet.options import BacnetDevice, BacnetNetworkOptions
from drivers.modbus.driver import EndpointPool, ModbusTcpDriver
from drivers.modbus.options import ModbusDevice
from edge_agent.clock import Clock, SystemClock
from edge_agent.config import LoadedConfig
from edge_agent.logs import get_logger
from edge_agent.snapshot import Snapshot

__all__ = ["Agent", "DeviceStatus", "ReadingsListener"]

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
    polls: int = 0
    bad_readings: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device_id,
            "protocol": self.protocol,
            "points": self.points,
            "up": self.up,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "latency_ms": None if self.last_latency_ms is None else round(self.last_latency_ms, 2),
            "last_error": self.last_error,
            "polls": self.polls,
            "bad_readings": self.bad_readings,
        }


@dataclass(slots=True)
class _DeviceRuntime:
    config: Any  # the device's options model
    driver: Driver
    status: DeviceStatus
    poll_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Agent:
    """Wires config, drivers and the snapshot; services (outbox, enforcement, uplink) attach as listeners."""

    def __init__(self, *, config: LoadedConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.log = get_logger(gateway=config.site.gateway_id)
        self.snapshot = Snapshot((dev.id, p, config.point_zone(p.id)) for dev, p in config.points())
        self._pools: dict[str, Any] = {}
        self.devices: dict[str, _DeviceRuntime] = {}
        self.listeners: list[ReadingsListener] = []
        self._cov_queue: asyncio.Queue[tuple[str, list[Reading]]] = asyncio.Queue()
        self.first_cycle = asyncio.Event()
        self._stop = asyncio.Event()
        self._cycles_done: set[str] = set()
        self.started_at = time.monotonic()
        for dev in config.site.devices:
            driver = self._make_driver(dev)
            self.devices[dev.id] = _DeviceRuntime(
                config=dev,
                driver=driver,
                status=DeviceStatus(device_id=dev.id, protocol=dev.protocol, points=len(dev.points)),
            )

    def _make_driver(self, dev: Any) -> Driver:
        if isinstance(dev, ModbusDevice):
            pool = self._pools.setdefault("modbus", EndpointPool())
            return ModbusTcpDriver(device=dev, pool=pool, clock=self.clock.now)
        if isinstance(dev, BacnetDevice):
            if "bacnet" not in self._pools:
                opts = self.config.site.bacnet or BacnetNetworkOptions()
                self._pools["bacnet"] = BacnetNetwork(options=opts, clock=self.clock.now)
            driver = BacnetDriver(device=dev, network=self._pools["bacnet"], clock=self.clock.now)
            # COV notifications arrive in bacpypes3's callbacks; queue them into the same pipeline as polls.
            driver.on_cov = lambda readings, dev_id=dev.id: self._cov_queue.put_nowait((dev_id, readings))
            return driver
        raise ValueError(f"device {dev.id}: no driver for protocol {dev.protocol!r}")

    def driver_for_point(self, point_id: str) -> Driver:
        return self.devices[self.snapshot.entry(point_id).device_id].driver

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def poll_once(self, device_id: str) -> list[Reading]:
        """Read every point of one device now, update the snapshot, tell the listeners."""
        rt = self.devices[device_id]
        async with rt.poll_lock:
            t0 = time.perf_counter()
            readings = await rt.driver.read(rt.config.points)
            latency = (time.perf_counter() - t0) * 1000
        self._note_status(rt.status, readings, latency)
        await self._deliver(device_id, readings)
        return readings

    async def _deliver(self, device_id: str, readings: Sequence[Reading]) -> None:
        changed = self.snapshot.update(readings)
        for listener in self.listeners:
            res = listener(device_id, readings, changed)
            if res is not None:
                await res

    async def _cov_loop(self) -> None:
        while True:
            device_id, readings = await self._cov_queue.get()
            try:
                await self._deliver(device_id, readings)
            except Exception:
                self.log.exception("COV delivery failed", device=device_id)

    def _note_status(self, st: DeviceStatus, readings: Sequence[Reading], latency_ms: float) -> None:
        bad = [r for r in readings if not r.ok]
        st.polls += 1
        st.bad_readings += len(bad)
        st.last_latency_ms = latency_ms
        up = len(bad) < len(readings)
        if up:
            st.last_success = readings[0].ts if readings else self.clock.now()
        if bad:
            st.last_error = f"{bad[0].point_id}: {bad[0].code} {bad[0].detail or ''}".strip()
        if st.up is not up:
            # Log the change of state only, not every failed poll.
            if up:
                self.log.info("device up", device=st.device_id, latency_ms=round(latency_ms, 1))
            else:
                self.log.warning("device down", device=st.device_id, error=st.last_error)
            st.up = up
        elif up and bad and st.polls % 100 == 1:
            self.log.warning("device has bad points", device=st.device_id, bad=len(bad), error=st.last_error)

    async def _poll_loop(self, device_id: str) -> None:
        rt = self.devices[device_id]
        interval = float(rt.config.interval_s)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self._stop.is_set():
            try:
                await self.poll_once(device_id)
            except Exception as exc:  # a driver bug must not take the other devices down
                rt.status.up = False
                rt.status.last_error = f"internal: {type(exc).__name__}: {exc}"
                self.log.exception("poll failed", device=device_id)
            if device_id not in self._cycles_done:
                self._cycles_done.add(device_id)
                if len(self._cycles_done) == len(self.devices):
                    self.first_cycle.set()
            next_at += interval
            now = loop.time()
            if next_at < now:  # overran: skip missed slots rather than bursting to catch up
                next_at = now + interval - ((now - next_at) % interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=next_at - now)

    async def run(self, *, extra_tasks: Sequence[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = ()) -> None:
        """Poll until stop() (or SIGINT/SIGTERM when installed); close every driver on the way out."""
        self.log.info(
            "agent starting",
            devices=len(self.devices),
            points=len(self.snapshot),
            site=str(self.config.site_path),
        )
        try:
            for rt in self.devices.values():
                with contextlib.suppress(Exception):
                    await rt.driver.connect()  # failures show up as bad readings in the loop
            async with asyncio.TaskGroup() as tg:
                extras: list[asyncio.Task[None]] = [tg.create_task(factory(), name=name) for name, factory in extra_tasks]
                if "bacnet" in self._pools:
                    extras.append(tg.create_task(self._cov_loop(), name="bacnet:cov"))
                for dev_id in self.devices:
                    tg.create_task(self._poll_loop(dev_id), name=f"poll:{dev_id}")

                async def cancel_extras_on_stop() -> None:
                    await self._stop.wait()
                    for t in extras:
                        t.cancel()

                tg.create_task(cancel_extras_on_stop(), name="stopper")
        finally:
            await self.close()
            self.log.info("agent stopped")

    async def close(self) -> None:
        for rt in self.devices.values():
            with contextlib.suppress(Exception):
                await rt.driver.close()
        for pool in self._pools.values():
            with contextlib.suppress(Exception):
                await pool.close()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self.log.info("signal received, stopping", signal=sig.name)
        self.stop()

"""One RS-485 bus per serial port, shared by every meter driver on it whatever its protocol.

DL/T 645 and CJ/T 188 meters often hang on one bus (one converter, one baud rate). Each driver brings its
own frame splitter; the bus brings the port, one :class:`asyncio.Lock` held for each whole exchange
(request out, reply in) and the input buffer. Buses live in a process-wide table keyed by port path, so
two protocols' drivers on one port share one open handle and one lock instead of each opening the port.
Modbus RTU (pymodbus's own serial client) does not use it: ``check`` refuses Modbus RTU on a port that a
meter protocol uses.

:class:`Silence` is the dead-meter rule the meter drivers share: after ``dead_after`` silent polls in a
row the meter is backed off (doubling, capped, jittered) and answered at once without bus time.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.base import (
    FailureCode,
    PointBase,
    Quality,
    Reading,
    UtcClock,
    Value,
    WriteResult,
)
from drivers.spec import DeviceEntry, SiteIssues, YamlPath

__all__ = [
    "BusMeter",
    "LineSettings",
    "MeterOnBus",
    "MeterPoint",
    "MeterPool",
    "NoReply",
    "SerialBus",
    "Silence",
    "acquire",
    "check_meters",
    "meter_pool",
    "open_for",
    "open_ports",
    "release",
]

T = TypeVar("T")


class NoReply(Exception):
    """No complete frame within the timeout."""


@dataclass(frozen=True, slots=True)
class LineSettings:
    baudrate: int
    parity: str
    stopbits: int

    def __str__(self) -> str:
        return f"{self.baudrate} 8{self.parity}{self.stopbits}"


class SerialBus:
    """One serial port: opened on first use, one lock for every exchange on it."""

    def __init__(self, path: str, settings: LineSettings) -> None:
        self.path = path
        self.settings = settings
        self.lock = asyncio.Lock()
        self.users = 0
        self._port: Any = None
        self._buf = bytearray()
        self._data = asyncio.Event()
        self._lost: str | None = None  # why the port went away under us (an adapter pulled out)

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> None:
        """Open and configure the port; OSError/serial.SerialException when it cannot be used."""
        if self._port is not None:
            return
        import serial  # type: ignore[import-untyped]  # here: `check` imports this module, not pyserial

        s = self.settings
        port = serial.Serial(
            self.path,
            baudrate=s.baudrate,
            bytesize=8,
            parity=s.parity,
            stopbits=s.stopbits,
            timeout=0,
            exclusive=True,
        )
        self._port = port
        asyncio.get_running_loop().add_reader(port.fileno(), self._readable)

    def close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            asyncio.get_running_loop().remove_reader(port.fileno())
            port.close()

    def _readable(self) -> None:
        try:
            data = self._port.read(4096)
        except OSError as exc:  # serial.SerialException is one: e.g. the USB adapter was pulled out
            # The descriptor stays readable after a hang-up: keeping the reader would spin the loop.
            self._lost = str(exc) or type(exc).__name__
            self.close()
            self._data.set()
            return
        if data:
            self._buf += data
            self._data.set()

    async def exchange(
        self,
        request: bytes,
        split: Callable[[bytes], tuple[int, T | None]],
        timeout: float,
        accept: Callable[[T], bool] | None = None,
    ) -> T:
        """Send ``request``, return the first complete frame ``split`` finds that ``accept`` takes (the
        reply of the meter asked, not an adapter's echo of the request or another meter's late reply).
        The input buffer is emptied first. A broken frame (the splitter's ValueError) is skipped byte by
        byte so a good reply behind line noise is still found; if none comes within ``timeout``, the
        broken frame's error is raised, else the frame ``accept`` refused is returned (the caller says
        whose it was), else NoReply. Hold :attr:`lock`."""
        self._buf.clear()
        self._lost = None
        self._port.write(request)
        broken: ValueError | None = None
        refused: T | None = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        used, frame = split(bytes(self._buf))
                    except ValueError as exc:
                        broken = exc
                        start = self._buf.find(0x68)
                        del self._buf[: start + 1 if start >= 0 else len(self._buf)]
                        continue
                    del self._buf[:used]
                    if frame is not None:
                        if accept is None or accept(frame):
                            return frame
                        refused = frame
                        continue
                    if used:
                        continue  # noise dropped: look again before waiting
                    if self._lost is not None:
                        raise OSError(f"the port went away: {self._lost}")
                    self._data.clear()
                    await self._data.wait()
        except TimeoutError:
            if broken is not None:
                raise broken from None
            if refused is not None:
                return refused
            raise NoReply from None

    async def listen(self, split: Callable[[bytes], tuple[int, T | None]], window: float) -> list[T]:
        """Every frame that arrives within ``window`` seconds (discovery: answers to a wildcard request);
        frames ``split`` rejects are skipped. Hold :attr:`lock`."""
        out: list[T] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        while (left := deadline - loop.time()) > 0:
            try:
                used, frame = split(bytes(self._buf))
            except ValueError:
                self._buf.clear()
                continue
            del self._buf[:used]
            if frame is not None:
                out.append(frame)
                continue
            if used:
                continue
            self._data.clear()
            try:
                async with asyncio.timeout(left):
                    await self._data.wait()
            except TimeoutError:
                break
        return out

    def send(self, request: bytes) -> None:
        """Write without waiting for a reply (the buffer is emptied first). Hold :attr:`lock`."""
        self._buf.clear()
        self._port.write(request)


_buses: dict[str, SerialBus] = {}


def acquire(path: str, settings: LineSettings) -> SerialBus:
    """The bus on ``path``, created on first use; its settings are its first user's (``check`` refuses
    two settings on one port; the driver that finds other settings reads ``config``)."""
    bus = _buses.get(path)
    if bus is None:
        bus = _buses[path] = SerialBus(path, settings)
    bus.users += 1
    return bus


def open_ports() -> list[str]:
    """The paths of the buses in use (status, tests)."""
    return sorted(_buses)


def release(bus: SerialBus) -> None:
    """One user less; the last one closes the port."""
    bus.users -= 1
    if bus.users <= 0:
        bus.close()
        if _buses.get(bus.path) is bus:
            del _buses[bus.path]


def open_for(bus: SerialBus, settings: LineSettings) -> tuple[FailureCode, str] | None:
    """Open the port if needed for a meter set to ``settings``: why it cannot be used (code, detail), or
    None."""
    if bus.settings != settings:
        return (
            FailureCode.CONFIG,
            f"{bus.path} is open at {bus.settings} for another meter, this one is {settings}",
        )
    try:
        bus.open()
    except (OSError, ValueError) as exc:  # serial.SerialException is an OSError
        # pyserial's text names the path twice and the errno twice; the reason alone says it
        reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)
        return FailureCode.UNREACHABLE, f"{bus.path}: cannot open the serial port: {reason}"
    return None


class MeterTiming(Protocol):
    @property
    def interval_s(self) -> float: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def dead_after(self) -> int: ...
    @property
    def dead_backoff_max_s(self) -> float: ...


class Silence:
    """Silent polls in a row and the backoff that follows them, for one meter."""

    def __init__(
        self, timing: MeterTiming, monotonic: Callable[[], float], jitter: Callable[[], float]
    ) -> None:
        self._t = timing
        self._monotonic = monotonic
        self._jitter = jitter
        self.polls = 0
        self._until = 0.0

    def backed_off_for(self) -> float:
        """Seconds until the next probe; 0 or less when the meter may be asked."""
        return self._until - self._monotonic()

    def answered(self) -> None:
        self.polls = 0

    def silent(self) -> float | None:
        """Count one silent poll; the backoff delay when it starts one now or again, else None."""
        self.polls += 1
        over = self.polls - self._t.dead_after
        if over < 0:
            return None
        t = self._t
        base = min(t.dead_backoff_max_s, 2 * max(t.interval_s, t.timeout_s) * 2 ** min(over, 30))
        delay = float(base) * (0.5 + 0.5 * self._jitter())
        self._until = self._monotonic() + delay
        return delay


class MeterPoint(PointBase):
    """What every read-only meter point has: a scale, and no writes (the protocol adds its address)."""

    scale: float = Field(
        default=1.0,
        allow_inf_nan=False,
        description="value = meter value * scale: the CT x PT ratio of a meter that reports secondary values",
    )

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("scale 0 makes every value 0")
        return v

    @model_validator(mode="after")
    def _read_only(self) -> MeterPoint:
        if self.writable:
            raise ValueError("meter points are read-only here (no writes to meters)")
        return self


class MeterOnBus(BaseModel):
    """The options every meter on an RS-485 bus has, whatever its protocol (the protocol's device model
    adds ``protocol``, the address and the points)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=64)
    name: str | None = None
    zone: str | None = Field(default=None, description="Default zone of the device's points")
    port: str = Field(pattern=r"^/", description="Serial device path, e.g. /dev/serial/by-id/...")
    baudrate: int = Field(default=2400, ge=300, le=115200, description="Usually 2400 (older meters 1200)")
    parity: Literal["N", "E", "O"] = Field(default="E", description="DL/T 645 and CJ/T 188 meters use 8E1")
    stopbits: Literal[1, 2] = 1
    interval_s: float = Field(default=60.0, gt=0, le=86400, description="Poll interval")
    timeout_s: float = Field(
        default=1.0, gt=0, le=30, description="Per-request timeout; meters may take 500 ms to answer"
    )
    dead_after: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Polls in a row without an answer before the meter is backed off",
    )
    dead_backoff_max_s: float = Field(default=600.0, gt=0, le=86400)

    @property
    def line(self) -> LineSettings:
        return LineSettings(self.baudrate, self.parity, self.stopbits)


def check_meters(devices: Sequence[DeviceEntry], out: SiteIssues, *, address_key: str = "address") -> None:
    """A protocol's meters over a site's raw `devices:` data: one address once per port. Whether the port
    exists here, its line settings and ports shared with other protocols are the shell's checks
    (edge_agent/config/load.py, once per port, for every serial protocol together)."""
    meters: dict[tuple[str, str], YamlPath] = {}
    for entry in devices:
        dev, dpath = entry.data, entry.path
        port, address = dev.get("port"), dev.get(address_key)
        if not isinstance(port, str) or not isinstance(address, str):
            continue
        if (port, address) in meters:
            out.add(
                [*dpath, address_key],
                f"meter {address} on {port} is already polled as {out.where(meters[(port, address)])}",
            )
        else:
            meters[(port, address)] = (*dpath, address_key)


class MeterPool:
    """One protocol's meters' handle on the process-wide buses, with the clock and jitter of their
    backoff (the protocol's shared resource in drivers.registry)."""

    def __init__(
        self, *, monotonic: Callable[[], float] = time.monotonic, jitter: Callable[[], float] = random.random
    ) -> None:
        self.monotonic = monotonic
        self.jitter = jitter
        self._held: list[SerialBus] = []

    def acquire(self, device: MeterOnBus) -> SerialBus:
        bus = acquire(device.port, device.line)
        self._held.append(bus)
        return bus

    def release(self, bus: SerialBus) -> None:
        if bus in self._held:
            self._held.remove(bus)
            release(bus)

    async def close(self) -> None:
        while self._held:
            release(self._held.pop())


def meter_pool(options: Any, /, *, clock: UtcClock) -> MeterPool:
    """A meter protocol's shared resource (ProtocolSpec.make_shared): no site-wide options."""
    return MeterPool()


class BusMeter:
    """What every read-only meter driver on a shared bus does the same way: share and open the port, the
    dead-meter backoff, one log when a meter fails and one when it answers again, refused writes. The
    protocol's subclass writes :meth:`read`."""

    label = "meter"  # the protocol's name in messages

    def __init__(
        self,
        *,
        device: MeterOnBus,
        address: str,
        pool: MeterPool,
        clock: UtcClock,
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self.device_id = device.id
        self.address = address
        self._line = device
        self._pool = pool
        self._clock = clock
        self._bus: SerialBus | None = pool.acquire(device)
        self._log = log.bind(device=device.id, port=device.port, address=address)
        self._silence = Silence(device, pool.monotonic, pool.jitter)
        self._down: str | None = None

    async def connect(self) -> None:
        """Open (or share) the port. Never raises: a port that cannot be opened reads as unreachable."""
        bus = self._get_bus()
        async with bus.lock:
            self._open(bus)

    async def run(self) -> None:
        """Nothing runs in the background: every read is a poll."""

    async def close(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None:
            async with bus.lock:
                self._pool.release(bus)

    def _get_bus(self) -> SerialBus:
        if self._bus is None:
            raise RuntimeError(f"driver of device {self.device_id} is closed")
        return self._bus

    def _open(self, bus: SerialBus) -> tuple[FailureCode, str] | None:
        """Open the port if needed; why it cannot be used (code, detail), or None."""
        failed = open_for(bus, self._line.line)
        if failed is not None:
            self._state_change(*failed)
        return failed

    def _backed_off(self, points: Sequence[PointBase], out: dict[str, Reading]) -> bool:
        """While the meter is backed off: bad readings for ``points`` at once, no bus time."""
        left = self._silence.backed_off_for()
        if left <= 0:
            return False
        detail = f"meter {self.address} silent, backed off; next probe in {left:.0f} s"
        for p in points:
            out[p.id] = self._bad(p.id, FailureCode.TIMEOUT, detail)
        return True

    def _note_poll(self, silent: bool, out: dict[str, Reading]) -> None:
        if not silent:
            self._silence.answered()
            if any(r.quality is Quality.GOOD for r in out.values()):
                self._state_change(None, None)
            return
        self._state_change(FailureCode.TIMEOUT, f"meter {self.address} does not answer")
        delay = self._silence.silent()
        if delay is not None and self._silence.polls == self._line.dead_after:
            self._log.warning(
                "meter_backed_off", silent_polls=self._silence.polls, next_probe_s=round(delay, 1)
            )

    def _bad(self, pid: str, code: str, detail: str) -> Reading:
        return Reading(pid, None, self._clock(), Quality.BAD, code, detail)

    def _state_change(self, code: str | None, detail: str | None) -> None:
        if code == self._down:
            return
        self._down = code
        if code is None:
            self._log.info("meter_answering")
        else:
            self._log.warning("meter_failed", code=code, detail=detail)

    async def write(self, point: PointBase, value: Value, *, priority: int | None = None) -> WriteResult:
        """Meters are read-only here: refused without touching the bus."""
        return WriteResult(
            point.id, value, None, False, FailureCode.NOT_WRITABLE, f"{self.label} points are read-only"
        )

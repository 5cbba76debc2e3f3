"""DL/T 645-2007 driver: one request per data identifier on a serial bus shared with other meters.

- :class:`BusPool` owns one :class:`SerialBus` per port path: one open port and one :class:`asyncio.Lock`
  held for each whole exchange (request out, reply in), so meters on one bus never talk over each other.
- A meter that does not answer fails the rest of its poll at once (``timeout``) and, after ``dead_after``
  such polls, is backed off (doubling, capped, jittered): while backed off a poll answers at once with bad
  readings and takes no bus time, so one dead meter never stalls the others.
- A reply with a wrong checksum or end byte, another address or another DI is ``protocol``; a value that is
  not BCD is ``decode``; the meter's error reply (D1) is ``no_value``. The input buffer is emptied before
  each request, so late or garbled bytes never reach the next one.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import serial  # type: ignore[import-untyped]
import structlog

from drivers.base import (
    FailureCode,
    PointBase,
    Quality,
    Reading,
    UtcClock,
    Value,
    WriteResult,
    utc_now,
)
from drivers.dlt645.codec import (
    BcdError,
    Frame,
    FrameError,
    MeterErrorReply,
    decode_read_reply,
    read_request,
    split_frame,
)
from drivers.dlt645.options import Dlt645Device, Dlt645Point

__all__ = ["BusPool", "Dlt645Driver", "SerialBus"]

_log = structlog.get_logger("drivers.dlt645")


class _NoReply(Exception):
    pass


class SerialBus:
    """One serial port: opened on first use, one lock for every exchange on it."""

    def __init__(self, device: Dlt645Device) -> None:
        self.path = device.port
        self.settings = (device.baudrate, device.parity, device.stopbits)
        self.lock = asyncio.Lock()
        self.users = 0
        self._port: Any = None
        self._buf = bytearray()
        self._data = asyncio.Event()

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> None:
        """Open and configure the port; OSError/serial.SerialException when it cannot be used."""
        if self._port is not None:
            return
        baud, parity, stop = self.settings
        port = serial.Serial(
            self.path, baudrate=baud, bytesize=8, parity=parity, stopbits=stop, timeout=0, exclusive=True
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
        except (OSError, serial.SerialException):
            data = b""
        if data:
            self._buf += data
            self._data.set()

    async def exchange(self, request: bytes, timeout: float) -> Frame:
        """Send ``request``, return the first complete frame. _NoReply on timeout; FrameError on a frame
        that is complete but wrong. Take :attr:`lock` around it."""
        self._buf.clear()
        self._port.write(request)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    used, frame = split_frame(bytes(self._buf))
                    del self._buf[:used]
                    if frame is not None:
                        return frame
                    if used:
                        continue  # noise dropped: look again before waiting
                    self._data.clear()
                    await self._data.wait()
        except TimeoutError:
            raise _NoReply from None
        except FrameError:
            self._buf.clear()
            raise


class BusPool:
    """One :class:`SerialBus` per port path, shared by the meters on it."""

    def __init__(
        self, *, monotonic: Callable[[], float] = time.monotonic, jitter: Callable[[], float] = random.random
    ) -> None:
        self.monotonic = monotonic
        self.jitter = jitter
        self._buses: dict[str, SerialBus] = {}

    def acquire(self, device: Dlt645Device) -> SerialBus:
        bus = self._buses.get(device.port)
        if bus is None:
            bus = self._buses[device.port] = SerialBus(device)
        bus.users += 1
        return bus

    def release(self, bus: SerialBus) -> None:
        bus.users -= 1
        if bus.users <= 0:
            bus.close()
            self._buses.pop(bus.path, None)

    async def close(self) -> None:
        for bus in self._buses.values():
            bus.close()
        self._buses.clear()


class Dlt645Driver:
    """:class:`drivers.base.Driver` for one DL/T 645-2007 meter (read-only)."""

    def __init__(self, *, device: Dlt645Device, pool: BusPool, clock: UtcClock = utc_now) -> None:
        self.device = device
        self.device_id = device.id
        self._pool = pool
        self._clock = clock
        self._bus: SerialBus | None = pool.acquire(device)
        self._log = _log.bind(device=device.id, port=device.port, address=device.address)
        self._silent_polls = 0
        self._silent_until = 0.0
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

    def _open(self, bus: SerialBus) -> str | None:
        """Open the port if needed; the reason it cannot be used, or None."""
        try:
            bus.open()
        except (OSError, serial.SerialException, ValueError) as exc:
            detail = f"{bus.path}: {exc}"
            self._state_change(FailureCode.UNREACHABLE, detail)
            return detail
        return None

    async def read(self, points: Sequence[PointBase]) -> list[Reading]:
        ours = [p for p in points if isinstance(p, Dlt645Point)]
        out: dict[str, Reading] = {}
        for p in points:
            if not isinstance(p, Dlt645Point):
                out[p.id] = self._bad(p.id, FailureCode.CONFIG, "not a DL/T 645 point")
        left = self._silent_until - self._pool.monotonic()
        if left > 0:
            detail = f"meter {self.device.address} silent, backed off; next probe in {left:.0f} s"
            for p in ours:
                out[p.id] = self._bad(p.id, FailureCode.TIMEOUT, detail)
            return [out[p.id] for p in points]
        bus = self._get_bus()
        answered = False
        async with bus.lock:
            opened = self._open(bus)
            # the rest of a poll after a timeout or a lost port fails at once: no bus time for a dead meter
            failed = None if opened is None else (FailureCode.UNREACHABLE, opened)
            for p in ours:
                if failed is not None:
                    out[p.id] = self._bad(p.id, failed[0], f"skipped: {failed[1]}")
                    continue
                try:
                    frame = await bus.exchange(
                        read_request(self.device.address, p.code), self.device.timeout_s
                    )
                except _NoReply:
                    failed = (FailureCode.TIMEOUT, f"no reply within {self.device.timeout_s} s (DI {p.di})")
                    out[p.id] = self._bad(p.id, *failed)
                    continue
                except FrameError as exc:
                    answered = True
                    out[p.id] = self._bad(p.id, FailureCode.PROTOCOL, f"{exc} (DI {p.di})")
                    continue
                except (OSError, serial.SerialException) as exc:
                    bus.close()
                    failed = (FailureCode.UNREACHABLE, f"{bus.path}: {exc}")
                    out[p.id] = self._bad(p.id, *failed)
                    continue
                answered = True
                out[p.id] = self._decode(p, frame)
        timed_out = not answered and any(r.code == FailureCode.TIMEOUT for r in out.values())
        self._note_poll(timed_out, out)
        return [out[p.id] for p in points]

    def _decode(self, p: Dlt645Point, frame: Frame) -> Reading:
        if frame.address != self.device.address:
            return self._bad(p.id, FailureCode.PROTOCOL, f"reply from meter {frame.address} (DI {p.di})")
        try:
            value = decode_read_reply(frame, p.code)
        except MeterErrorReply as exc:
            return self._bad(p.id, FailureCode.NO_VALUE, str(exc))
        except BcdError as exc:
            return self._bad(p.id, FailureCode.DECODE, f"{exc} (DI {p.di})")
        except FrameError as exc:
            return self._bad(p.id, FailureCode.PROTOCOL, str(exc))
        return Reading(p.id, value * p.scale if p.scale != 1.0 else value, self._clock(), Quality.GOOD)

    def _note_poll(self, silent: bool, out: dict[str, Reading]) -> None:
        if not silent:
            self._silent_polls = 0
            if any(r.quality is Quality.GOOD for r in out.values()):
                self._state_change(None, None)
            return
        self._silent_polls += 1
        self._state_change(FailureCode.TIMEOUT, f"meter {self.device.address} does not answer")
        over = self._silent_polls - self.device.dead_after
        if over < 0:
            return
        dev = self.device
        base = min(dev.dead_backoff_max_s, 2 * max(dev.interval_s, dev.timeout_s) * 2 ** min(over, 30))
        delay = base * (0.5 + 0.5 * self._pool.jitter())
        self._silent_until = self._pool.monotonic() + delay
        if over == 0:
            self._log.warning(
                "meter_backed_off", silent_polls=self._silent_polls, next_probe_s=round(delay, 1)
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
        """Electricity meters are read-only here: refused without touching the bus."""
        return WriteResult(
            point.id, value, None, False, FailureCode.NOT_WRITABLE, "DL/T 645 points are read-only"
        )

"""Modbus TCP driver: planned block reads, shared gateway connections, read-back writes.

Shape:

- :class:`EndpointPool` owns one connection and one :class:`asyncio.Lock` per (host, port): a lean
  link (:mod:`.tcplink`) for Modbus TCP, a pymodbus client for RTU frames (over TCP or serial). Devices
  (unit ids) behind one gateway share both; different endpoints share nothing, so a dead endpoint never
  waits on a live one. Reconnects happen here only, with capped, jittered backoff; while an endpoint is
  in backoff a read answers ``unreachable`` at once instead of waiting.
- :class:`ModbusTcpDriver` reads a device's points with the fewest requests (:mod:`.planner`), decodes
  with precompiled decoders (:mod:`.codec`) and turns every failure into ``bad`` readings with a code of
  the failure vocabulary (:class:`drivers.base.FailureCode`): ``modbus:<n>`` (exception reply),
  ``timeout``, ``unreachable``, ``decode``, ``protocol`` (a reply that cannot be matched or parsed),
  ``config`` (a point this driver cannot read).
- Timeouts are ours (``asyncio.timeout`` with the device's ``timeout_s``); the link has none, pymodbus
  runs with ``retries=0`` and no auto-reconnect: retries and reconnects belong to one place, this module.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import structlog
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from drivers.base import (
    FailureCode,
    PointBase,
    Quality,
    Reading,
    UtcClock,
    Value,
    WriteResult,
    modbus_exception,
    unknown_state,
    utc_now,
)
from drivers.modbus.codec import BlockDecoder, CodecError, block_decoder, encode
from drivers.modbus.options import (
    ModbusDevice,
    ModbusPoint,
    ModbusRtuDevice,
    register_count,
    write_function_of,
)
from drivers.modbus.planner import (
    PROTOCOL_MAX_BITS,
    PROTOCOL_MAX_REGISTERS,
    Block,
    ReadPlan,
    per_point_plan,
)
from drivers.modbus.tcplink import (
    BadReply,
    Reply,
    TcpLink,
    parse_read,
    parse_write,
    read_request,
    write_request,
)

__all__ = [
    "EXCEPTION_NAMES",
    "Endpoint",
    "EndpointPool",
    "ModbusTcpDriver",
    "per_point_plan",
    "read_block_raw",
]

EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
# Replies that mean "the device behind the gateway is not answering": later blocks of the same poll
# would get the same answer after the same wait, so they are not sent.
_DEVICE_DOWN_EXCEPTIONS = frozenset({10, 11})
# Replies the plan learns from: 1 (function not served there) and 2 (address) split the block; 3 (value:
# the request is longer than the device accepts) narrows the request size (planner.ReadPlan.on_refused).
_LEARNED_EXCEPTIONS = frozenset({1, 2, 3})
# A poll that ends in one of these without any good reading counts as the unit being silent.
_SILENT_CODES = frozenset({FailureCode.TIMEOUT, modbus_exception(10), modbus_exception(11)})
_READ_FC = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
# pymodbus waits this long itself; ours (device.timeout_s, at most 60 s) always fires first.
_PYMODBUS_TIMEOUT_S = 120.0
_PLAN_CACHE_SIZE = 16

_log = structlog.get_logger("drivers.modbus")


class _Unreachable(Exception):
    """The endpoint cannot be used now (connect failed, in backoff, connection lost)."""


# A reply that cannot be parsed or matched: one class for the lean TCP link and hardened pymodbus.
_ProtocolReply = BadReply


class Endpoint:
    """One TCP connection (host, port), its lock and its reconnect backoff.

    Take :attr:`lock` around every exchange; :meth:`ensure_connected` and :meth:`mark_failed` assume it.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        pool: EndpointPool,
        quiet: bool = False,
        framer: str = "tcp",
        line: ModbusRtuDevice | None = None,
    ) -> None:
        self.host = host
        self.port = port
        # A serial RS-485 bus (``line``: its port path and settings; host is the path, port 0): one
        # client and one lock for every unit on it, and the line's silence between frames.
        self.line = line
        self.silence_s = line.silence_s() if line is not None else 0.0
        self._last_io = 0.0  # monotonic end of the last exchange, for the inter-frame silence
        # "rtu": RTU frames over TCP to a serial device server; every unit behind it shares one RS-485
        # bus, so one connection and one lock serve them all (no per-unit quarantine connection).
        self.framer = framer
        self.lock = asyncio.Lock()
        self.client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        # Modbus TCP (MBAP) endpoints use the lean link (tcplink); RTU framing and serial lines pymodbus.
        self.lean = framer == "tcp" and line is None
        self.link: TcpLink | None = None
        self.users = 0
        self.failures = 0  # consecutive failed connects/losses, drives the backoff
        self.retry_at = 0.0  # monotonic time before which no connect is attempted
        self.last_error: str | None = None
        self._pool = pool
        self._up = False  # for logging state changes only
        self._quiet = quiet  # a silent unit's own connection: the device's state changes say it all

    @property
    def name(self) -> str:
        """host:port, or the serial port's path."""
        return self.host if self.line is not None else f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        if self.lean:
            return self.link is not None and self.link.connected
        return self.client is not None and self.client.connected

    def _on_connection_change(self, connected: bool) -> None:
        # pymodbus leaves a request waiting for its full timeout when the peer resets the connection:
        # fail it now, so a lost connection reads as "unreachable" at once.
        if not connected and self.client is not None:
            fut = getattr(self.client.ctx, "response_future", None)
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionException("connection lost"))

    def _harden(self, client: AsyncModbusTcpClient | AsyncModbusSerialClient) -> None:
        """Make a reply that cannot be parsed or matched fail its request at once, with the connection
        closed (the stream cannot be resynchronised), instead of a traceback from ``data_received`` or a
        wait for the timeout."""
        ctx = client.ctx  # RTU frames only here (MBAP is tcplink's); pymodbus checks the CRC and unit id
        receive = ctx.data_received

        def fail(exc: Exception) -> None:
            fut = getattr(ctx, "response_future", None)
            if fut is not None and not fut.done():
                fut.set_exception(exc if isinstance(exc, _ProtocolReply) else _ProtocolReply(str(exc)))
            client.close()

        def guarded(data: bytes) -> None:
            # pymodbus silently empties a buffer above its limit: a streaming peer would only time out
            if len(ctx.recv_buffer) + len(data) > ctx.max_buffer_size:
                fail(_ProtocolReply(f"more than {ctx.max_buffer_size} bytes without a complete frame"))
                return
            try:
                receive(data)
            except Exception as exc:  # any parse failure: the stream cannot be resynchronised
                fail(exc)

        setattr(ctx, "data_received", guarded)  # noqa: B010

    async def quiet_line(self) -> None:
        """On a serial bus, wait out the inter-frame silence since the last exchange ended (the wire's
        own time, so the real monotonic clock)."""
        if self.silence_s:
            wait = self._last_io + self.silence_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)

    def note_io(self) -> None:
        self._last_io = time.monotonic()

    def drop(self) -> None:
        """Close the connection without backoff (after a timeout or a bad reply: late or streaming bytes
        must not reach the next request); the next exchange reconnects at once."""
        if self.link is not None:
            self.link.close()
        if self.client is not None:
            self.client.close()

    async def ensure_connected(self, timeout: float) -> None:
        """Connect if needed; raise _Unreachable while in backoff or when the connect fails."""
        if self.connected:
            return
        now = self._pool.monotonic()
        if now < self.retry_at:
            raise _Unreachable(
                f"{self.name} unreachable ({self.last_error}); next attempt in {self.retry_at - now:.1f} s"
            )
        if self.client is None and self.line is not None:
            self.client = AsyncModbusSerialClient(
                self.line.port,
                framer=FramerType.RTU,
                baudrate=self.line.baudrate,
                bytesize=self.line.bytesize,
                parity=self.line.parity,
                stopbits=self.line.stopbits,
                timeout=_PYMODBUS_TIMEOUT_S,
                retries=0,
                reconnect_delay=0,
                trace_connect=self._on_connection_change,
            )
            self._harden(self.client)
        elif self.lean:
            self.link = TcpLink()  # a fresh one per connection: nothing of the old stream survives
        elif self.client is None:
            self.client = AsyncModbusTcpClient(
                self.host,
                port=self.port,
                framer=FramerType.RTU if self.framer == "rtu" else FramerType.SOCKET,
                timeout=_PYMODBUS_TIMEOUT_S,
                retries=0,
                reconnect_delay=0,  # no background reconnect task: we reconnect, with our backoff
                trace_connect=self._on_connection_change,
            )
            self._harden(self.client)
        ok = False
        try:
            async with asyncio.timeout(timeout):
                if self.link is not None and self.lean:
                    await self.link.open(self.host, self.port)
                    ok = True
                else:
                    assert self.client is not None
                    ok = await self.client.connect()
            # pymodbus says only False; "connection refused" would be wrong for a port that is not there
            error = "connection refused" if self.line is None else _serial_open_error(self.line.port)
        except TimeoutError:
            error = f"connect timed out after {timeout} s"
        except ConnectionRefusedError:
            error = "connection refused"  # what the pymodbus client reported for TCP
        except OSError as exc:
            error = f"connect failed: {exc}"
        if ok:
            self.failures = 0
            self.last_error = None
            if not self._up:
                self._up = True
                if self._quiet:
                    return
                self._pool.log.info("endpoint_connected", endpoint=self.name)
            return
        self.mark_failed(error)
        raise _Unreachable(f"{self.name} {error}")

    def mark_failed(self, error: str) -> None:
        """Drop the connection and wait a jittered, doubling delay before the next connect."""
        self.drop()
        self.failures += 1
        base = min(self._pool.backoff_max_s, self._pool.backoff_initial_s * 2 ** min(self.failures - 1, 30))
        # Equal jitter: between half and all of the delay, so endpoints that fell together spread out.
        self.retry_at = self._pool.monotonic() + base * (0.5 + 0.5 * self._pool.jitter())
        self.last_error = error
        if self._up:
            self._up = False
            if self._quiet:
                return
            self._pool.log.warning("endpoint_disconnected", endpoint=self.name, error=error)

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        if self.client is not None:
            self.client.close()
            self.client = None


class EndpointPool:
    """One connection and one lock per (host, port), shared by every device behind it.

    No lock spans endpoints: polls of different endpoints run fully concurrently.
    """

    def __init__(
        self,
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        logger: Any = None,
    ) -> None:
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ValueError(f"backoff {backoff_initial_s}..{backoff_max_s} s is not a rising range")
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.monotonic = monotonic
        self.jitter = jitter
        self.log = logger if logger is not None else _log
        self._endpoints: dict[tuple[str, int], Endpoint] = {}

    def acquire(
        self, host: str, port: int, *, framer: str = "tcp", line: ModbusRtuDevice | None = None
    ) -> Endpoint:
        """The endpoint for (host, port), created on first use; pair with :meth:`release`. ``framer``
        and a serial ``line`` (host = its path, port 0) are taken from the first user (``check``
        refuses devices that disagree on one endpoint)."""
        ep = self._endpoints.get((host, port))
        if ep is None:
            ep = self._endpoints[(host, port)] = Endpoint(
                host=host, port=port, pool=self, framer=framer, line=line
            )
        ep.users += 1
        return ep

    def release(self, ep: Endpoint) -> None:
        """One user fewer; the last one closes the connection."""
        ep.users -= 1
        if ep.users <= 0:
            ep.close()
            if self._endpoints.get((ep.host, ep.port)) is ep:
                del self._endpoints[(ep.host, ep.port)]

    @property
    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints.values())

    async def close(self) -> None:
        for ep in self._endpoints.values():
            ep.close()
        self._endpoints.clear()
        await asyncio.sleep(0)  # let the transports' close callbacks run


async def read_block_raw(
    client: AsyncModbusTcpClient | AsyncModbusSerialClient, block: Block, *, device_id: int
) -> ModbusPDU:
    """One pymodbus read of a block (the bare loop the benchmark measures against)."""
    t = block.table
    if t == "holding":
        return await client.read_holding_registers(block.start, count=block.count, device_id=device_id)
    if t == "input":
        return await client.read_input_registers(block.start, count=block.count, device_id=device_id)
    if t == "coil":
        return await client.read_coils(block.start, count=block.count, device_id=device_id)
    return await client.read_discrete_inputs(block.start, count=block.count, device_id=device_id)


def _serial_open_error(port: str) -> str:
    """Why a serial port did not open, as far as the file system tells (pymodbus only says it did not)."""
    if not os.path.exists(port):
        return f"cannot open the serial port: {os.strerror(errno.ENOENT)}"
    if not os.access(port, os.R_OK | os.W_OK):
        return f"cannot open the serial port: {os.strerror(errno.EACCES)} (the port's group, usually dialout)"
    return "cannot open the serial port"


def _exception_code(rr: ModbusPDU | Reply) -> tuple[int, str]:
    """An exception reply's number and its code (``modbus:<n>``; ``protocol`` if it carries none)."""
    n = int(getattr(rr, "exception_code", 0))
    return n, modbus_exception(n) if 1 <= n <= 255 else FailureCode.PROTOCOL


def _good_reading(pid: str, value: Value, ts: datetime, _good: Quality = Quality.GOOD) -> Reading:
    return Reading(pid, value, ts, _good)


class _PlanState:
    __slots__ = ("decoders", "ids", "plan", "points", "rejected", "sums")

    def __init__(
        self,
        plan: ReadPlan,
        points: tuple[PointBase, ...],
        rejected: dict[str, tuple[str, str]],
        sums: Sequence[ModbusPoint] = (),
    ):
        self.plan = plan
        self.points = points  # keeps the points alive: the cache key is their id()s
        self.ids = [p.id for p in points]
        self.rejected = rejected  # point id -> (code, detail) for points that cannot be planned
        self.sums = tuple(sums)  # `sum_of` points, computed from their parts after the reads
        self.decoders: dict[Block, tuple[BlockDecoder, tuple[str, ...], _Enums]] = {}

    def decoder_of(self, block: Block) -> tuple[BlockDecoder, tuple[str, ...], _Enums]:
        entry = self.decoders.get(block)
        if entry is None:
            entry = self.decoders[block] = (
                block_decoder(block.start, block.count, block.points),
                tuple(p.id for p in block.points),
                tuple((i, p.states) for i, p in enumerate(block.points) if p.states),
            )
        return entry


# (index in the block, the point's states) of each enumerated point of a block
_Enums: TypeAlias = tuple[tuple[int, dict[int, str]], ...]


def _flag_unknown_states(
    out: dict[str, Reading],
    values: Sequence[Value | CodecError],
    pids: Sequence[str],
    enums: _Enums,
    ts: datetime,
) -> None:
    """A raw value an enumerated point's `states` does not list (a mode the manual's map lacks) is read
    as uncertain: a value, but no known state, so nothing decides on it."""
    for i, states in enums:
        v = values[i]
        if isinstance(v, CodecError) or out[pids[i]].quality is not Quality.GOOD:
            continue
        detail = unknown_state(v, states)
        if detail is not None:
            out[pids[i]] = Reading(pids[i], v, ts, Quality.UNCERTAIN, FailureCode.UNKNOWN_STATE, detail)


class ModbusTcpDriver:
    """:class:`drivers.base.Driver` for one Modbus TCP device (one unit id on one endpoint)."""

    def __init__(
        self,
        *,
        device: ModbusDevice | ModbusRtuDevice,
        pool: EndpointPool,
        clock: UtcClock = utc_now,
        logger: Any = None,
        planner: Callable[[Sequence[ModbusPoint]], list[Block]] | None = None,
        retry_bad_every: int = 30,
    ) -> None:
        """``planner`` replaces the block planner (``per_point_plan`` gives the one-request-per-point
        baseline); ``retry_bad_every`` is how many polls pass between retries of a point the device
        refused with exception 2."""
        self.device = device
        self.device_id = device.id
        self._pool = pool
        self._clock = clock
        self._log = (logger if logger is not None else _log).bind(
            device=device.id,
            endpoint=device.port if isinstance(device, ModbusRtuDevice) else f"{device.host}:{device.port}",
        )
        self._planner = planner
        self._retry_bad_every = retry_bad_every
        self._unit = device.unit_id
        self._timeout = device.timeout_s
        if isinstance(device, ModbusRtuDevice):
            self._ep: Endpoint | None = pool.acquire(device.port, 0, framer="rtu", line=device)
        else:
            self._ep = pool.acquire(device.host, device.port, framer=device.framer)
        self._plans: dict[tuple[int, ...], _PlanState] = {}
        self._down: str | None = None  # device-level failure code, for logging state changes only
        # Dead-unit isolation: polls in a row without an answer, and the backoff they earned.
        self._silent_polls = 0
        self._silent_until = 0.0
        self._silent_code: str = FailureCode.TIMEOUT
        self._quarantine: Endpoint | None = None  # this unit's own connection while it is silent
        # Points whose single-value writes the device refused on FC5/FC6 (exception 1): FC15/FC16 now.
        self._multi_write: set[str] = set()
        # Request sizes: the configured ones, narrowed by what the device refuses with exception 3.
        self._max_registers = min(device.max_registers, PROTOCOL_MAX_REGISTERS)
        self._max_bits = min(device.max_bits, PROTOCOL_MAX_BITS)

    # ---- lifecycle ------------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open (or share) the endpoint connection. Never raises: a failed connect reads as unreachable."""
        ep = self._endpoint()
        async with ep.lock:
            try:
                await ep.ensure_connected(self._timeout)
            except _Unreachable as exc:
                self._state_change(FailureCode.UNREACHABLE, str(exc))

    async def run(self) -> None:
        """Nothing runs in the background: every read is a poll."""

    async def close(self) -> None:
        """Give the endpoint back; the pool closes it when no device uses it any more."""
        ep, self._ep = self._ep, None
        self._leave_quarantine()
        if ep is not None:
            async with ep.lock:
                self._pool.release(ep)

    def _read_endpoint(self) -> Endpoint:
        """The connection polls use: the shared one, or this unit's own while it is silent."""
        shared = self._endpoint()
        return self._quarantine if self._quarantine is not None else shared

    def _enter_quarantine(self) -> None:
        """A unit that did not answer polls over its own connection to the same gateway until it answers
        again: its timeouts then hold no lock its neighbours need."""
        if self._quarantine is None and self._endpoint().framer == "tcp":
            # An RTU line has one bus behind the device server: a second connection would not spare
            # the neighbours the dead unit's timeouts, only the backoff does.
            ep = self._endpoint()
            self._quarantine = Endpoint(host=ep.host, port=ep.port, pool=self._pool, quiet=True)

    def _leave_quarantine(self) -> None:
        q, self._quarantine = self._quarantine, None
        if q is not None:
            q.close()

    def _endpoint(self) -> Endpoint:
        if self._ep is None:
            raise RuntimeError(f"driver of device {self.device_id} is closed")
        return self._ep

    # ---- planning -------------------------------------------------------------------------------------

    def _state_for(self, points: Sequence[PointBase]) -> _PlanState:
        key = tuple(map(id, points))
        st = self._plans.get(key)
        if st is not None:
            if len(self._plans) > 1:  # least recently used goes first when the cache is full
                self._plans[key] = self._plans.pop(key)
            return st
        rejected: dict[str, tuple[str, str]] = {}
        usable: list[ModbusPoint] = []
        sums: list[ModbusPoint] = []
        seen: set[str] = set()
        dev = self.device
        by_id = {p.id: p for p in dev.points}
        asked = {p.id for p in points}
        # The parts of a sum_of point are read even when not asked for (their readings are not returned).
        extra = [
            by_id[pid]
            for p in points
            if isinstance(p, ModbusPoint) and p.sum_of
            for pid in p.sum_of
            if pid not in asked and pid in by_id
        ]
        for p in (*points, *extra):
            if p.id in seen:
                continue
            seen.add(p.id)
            if not isinstance(p, ModbusPoint):
                rejected[p.id] = (FailureCode.CONFIG, f"{type(p).__name__} is not a Modbus point")
                continue
            if p.sum_of is not None:
                sums.append(p)
                continue
            limit = (
                min(dev.max_bits, PROTOCOL_MAX_BITS)
                if p.table in ("coil", "discrete")
                else min(dev.max_registers, PROTOCOL_MAX_REGISTERS)
            )
            if register_count(p) > limit:
                rejected[p.id] = (
                    FailureCode.CONFIG,
                    f"{register_count(p)} registers exceed the device's max {limit}",
                )
                continue
            usable.append(p)
        unreadable: set[tuple[str, int]] = set()
        for other in self._plans.values():
            unreadable |= other.plan.unreadable
        if self._planner is not None:
            plan = ReadPlan.from_blocks(self._planner(usable), retry_every=self._retry_bad_every)
        else:
            plan = ReadPlan(
                usable,
                max_registers=self._max_registers,
                max_bits=self._max_bits,
                max_gap=dev.max_gap,
                unreadable=unreadable,
                retry_every=self._retry_bad_every,
            )
        st = _PlanState(plan, tuple(points), rejected, sums)
        if len(self._plans) >= _PLAN_CACHE_SIZE:
            del self._plans[next(iter(self._plans))]
        self._plans[key] = st
        return st

    # ---- reading --------------------------------------------------------------------------------------

    async def read(self, points: Sequence[PointBase]) -> list[Reading]:
        """One reading per point, in order. Failures are ``bad`` readings, never exceptions."""
        if not points:
            return []
        st = self._state_for(points)
        if self._silent_until > self._pool.monotonic():
            return self._silent_readings(st)
        plan = st.plan
        plan.next_cycle()
        out: dict[str, Reading] = {}
        ep = self._read_endpoint()
        failed: tuple[str, str] | None = None  # (code, detail) that makes the rest of this poll fail fast
        any_good = False
        async with ep.lock:
            try:
                await ep.ensure_connected(self._timeout)
            except _Unreachable as exc:
                failed = (FailureCode.UNREACHABLE, str(exc))
            # By index over the live list: a refusal may split or re-cut blocks while the poll runs;
            # splits only add blocks, so an unread one never moves below the index.
            i = 0
            while i < len(plan.blocks):
                block = plan.blocks[i]
                i += 1
                if block.points and block.points[0].id in out:
                    continue  # read already, as a part of a block split during this poll
                if failed is not None:
                    self._fill(out, block, Quality.BAD, failed[0], failed[1])
                elif not plan.due(block):
                    n = plan.bad_exception(block)
                    self._fill(
                        out, block, Quality.BAD, modbus_exception(n),
                        f"{EXCEPTION_NAMES.get(n, 'exception')} "
                        f"(remembered; retried every {plan.retry_every} polls)",
                    )  # fmt: skip
                else:
                    failed, good = await self._read_block(ep, st, block, out)
                    any_good = any_good or good
        for pid, (code, detail) in st.rejected.items():
            out[pid] = Reading(pid, None, self._clock(), Quality.BAD, code, detail)
        for sp in st.sums:
            out[sp.id] = _sum_reading(sp, out, self._clock())
        if failed is not None and not any_good:
            self._state_change(failed[0], failed[1])
            self._note_silence(failed[0])
        elif any_good:
            if self._down is not None:
                self._state_change(None, None)
            self._silent_polls = 0
            self._leave_quarantine()
        return list(map(out.__getitem__, st.ids))

    def _note_silence(self, code: str) -> None:
        """Count polls the unit did not answer; from the ``dead_after``-th on, back it off (capped,
        doubling, jittered): while backed off a poll answers at once and the endpoint lock is left to
        the unit's neighbours; each backoff ends in one probe (a normal poll, which stops at its first
        timeout)."""
        if code not in _SILENT_CODES:
            self._silent_polls = 0
            self._leave_quarantine()
            return
        self._silent_polls += 1
        self._enter_quarantine()
        over = self._silent_polls - self.device.dead_after
        if over < 0:
            return
        dev = self.device
        base = min(dev.dead_backoff_max_s, 2 * max(dev.interval_s, dev.timeout_s) * 2 ** min(over, 30))
        delay = base * (0.5 + 0.5 * self._pool.jitter())
        self._silent_until = self._pool.monotonic() + delay
        self._silent_code = code
        if over == 0:
            self._log.warning(
                "unit_backed_off", code=code, silent_polls=self._silent_polls, next_probe_s=round(delay, 1)
            )

    def _silent_readings(self, st: _PlanState) -> list[Reading]:
        ts = self._clock()
        left = self._silent_until - self._pool.monotonic()
        detail = (
            f"unit {self._unit} silent for {self._silent_polls} polls; backed off, next probe in {left:.1f} s"
        )
        code = self._silent_code
        out = [Reading(pid, None, ts, Quality.BAD, code, detail) for pid in st.ids]
        if st.rejected:
            out = [
                Reading(r.point_id, None, ts, Quality.BAD, *st.rejected[r.point_id])
                if r.point_id in st.rejected else r
                for r in out
            ]  # fmt: skip
        return out

    def _fill(self, out: dict[str, Reading], block: Block, quality: Quality, code: str, detail: str) -> None:
        ts = self._clock()
        for p in block.points:
            out[p.id] = Reading(p.id, None, ts, quality, code, detail)

    async def _request(self, ep: Endpoint, block: Block) -> ModbusPDU | Reply:
        link = ep.link
        if ep.lean:
            if link is None:
                raise ConnectionException("not connected")
            req = read_request(_READ_FC[block.table], block.start, block.count)
            async with asyncio.timeout(self._timeout):
                pdu = await link.request(self._unit, req)
            return parse_read(pdu)
        client = ep.client
        if client is None or not client.connected:
            raise ConnectionException("not connected")
        await ep.quiet_line()
        try:
            async with asyncio.timeout(self._timeout):
                return await read_block_raw(client, block, device_id=self._unit)
        finally:
            ep.note_io()

    async def _read_block(
        self, ep: Endpoint, st: _PlanState, block: Block, out: dict[str, Reading]
    ) -> tuple[tuple[str, str] | None, bool]:
        """Read one block into ``out``. Returns (fail-fast code and detail or None, any good reading)."""
        try:
            rr = await self._request(ep, block)
        except TimeoutError:
            ep.drop()  # a late or endless reply must not reach the next request
            detail = f"no reply within {self._timeout} s ({block.table} {block.start}+{block.count})"
            self._fill(out, block, Quality.BAD, FailureCode.TIMEOUT, detail)
            return (FailureCode.TIMEOUT, f"skipped after a timeout in this poll: {detail}"), False
        except _ProtocolReply as exc:
            ep.drop()
            detail = f"{exc} ({block.table} {block.start}+{block.count})"
            self._fill(out, block, Quality.BAD, FailureCode.PROTOCOL, detail)
            return (FailureCode.PROTOCOL, f"skipped after a bad reply in this poll: {detail}"), False
        except (ConnectionException, OSError) as exc:
            ep.mark_failed(f"connection lost: {exc}")
            self._fill(out, block, Quality.BAD, FailureCode.UNREACHABLE, f"{ep.name} {exc}")
            return (FailureCode.UNREACHABLE, f"{ep.name} connection lost: {exc}"), False
        except ModbusException as exc:
            self._fill(out, block, Quality.BAD, FailureCode.PROTOCOL, str(exc))
            return None, False

        if rr.isError():
            n, code = _exception_code(rr)
            detail = f"{EXCEPTION_NAMES.get(n, 'exception')} ({block.table} {block.start}+{block.count})"
            if n in _LEARNED_EXCEPTIONS:
                parts = st.plan.on_refused(block, n)
                self._learn_limits(st.plan, block, n)
                if parts != [block]:
                    # Read the parts now: the good points of a refused block lose no poll. The plan's
                    # current blocks are asked each time: a part may itself be split or re-cut meanwhile.
                    ids = {p.id for p in block.points}
                    any_good = False
                    failed: tuple[str, str] | None = None
                    while True:
                        part = next(
                            (b for b in st.plan.blocks if b.points and b.points[0].id in ids
                             and b.points[0].id not in out),
                            None,
                        )  # fmt: skip
                        if part is None:
                            return failed, any_good
                        if failed is not None:
                            self._fill(out, part, Quality.BAD, failed[0], failed[1])
                            continue
                        failed, good = await self._read_block(ep, st, part, out)
                        any_good = any_good or good
            self._fill(out, block, Quality.BAD, code, detail)
            if n in _DEVICE_DOWN_EXCEPTIONS:
                return (code, f"skipped after {detail} in this poll"), False
            return None, False

        bits = block.table in ("coil", "discrete")
        data: Sequence[int] = rr.bits if bits else rr.registers
        expected = 8 * ((block.count + 7) // 8) if bits else block.count  # bits come in whole bytes
        if rr.function_code != _READ_FC[block.table] or len(data) != expected:
            ep.drop()
            detail = (
                f"reply of function {rr.function_code} with {len(data)} {'bits' if bits else 'registers'} "
                f"to a read of {block.table} {block.start}+{block.count}"
            )
            self._fill(out, block, Quality.BAD, FailureCode.PROTOCOL, detail)
            return (FailureCode.PROTOCOL, f"skipped after a bad reply in this poll: {detail}"), False
        if st.plan.is_bad(block):
            st.plan.on_success(block)
        ts = self._clock()
        decode, pids, enums = st.decoder_of(block)
        values, clean = decode(data)
        make = _good_reading
        if clean:
            # The common case of every poll: tuple.__new__ skips the NamedTuple's generated __new__.
            new, quality = tuple.__new__, Quality.GOOD
            for pid, value in zip(pids, values, strict=True):
                out[pid] = new(Reading, (pid, value, ts, quality, None, None))
            if enums:
                _flag_unknown_states(out, values, pids, enums, ts)
            return None, True
        for pid, value in zip(pids, values, strict=True):
            if isinstance(value, CodecError):
                out[pid] = Reading(pid, None, ts, Quality.BAD, value.code, str(value))
            elif isinstance(value, float) and not math.isfinite(value):
                code = FailureCode.NAN if math.isnan(value) else FailureCode.INF
                out[pid] = Reading(pid, value, ts, Quality.UNCERTAIN, code, f"device reports {value}")
            else:
                out[pid] = make(pid, value, ts)
        if enums:
            _flag_unknown_states(out, values, pids, enums, ts)
        return None, True

    def _learn_limits(self, plan: ReadPlan, block: Block, n: int) -> None:
        """Keep the request size a device taught with exception 3 for its later plans; log it once."""
        if n != 3:
            return
        if plan.max_registers < self._max_registers:
            self._max_registers = plan.max_registers
            self._log.warning(
                "modbus_request_size_learned", kind="registers", max=plan.max_registers,
                refused=f"{block.table} {block.start}+{block.count}",
            )  # fmt: skip
        if plan.max_bits < self._max_bits:
            self._max_bits = plan.max_bits
            self._log.warning(
                "modbus_request_size_learned", kind="bits", max=plan.max_bits,
                refused=f"{block.table} {block.start}+{block.count}",
            )  # fmt: skip

    def _state_change(self, code: str | None, detail: str | None) -> None:
        """Log only when the device goes down, changes failure, or comes back."""
        if code == self._down:
            return
        if code is None:
            self._log.info("device_recovered", was=self._down)
        else:
            self._log.warning("device_failed", code=code, detail=detail)
        self._down = code

    # ---- writing --------------------------------------------------------------------------------------

    async def write(self, point: PointBase, value: Value, *, priority: int | None = None) -> WriteResult:
        """Write (FC5 coil, FC6 one register, FC16 several; or the point's ``write_function``; FC15/FC16
        after exception 1, remembered), wait ``readback_delay_s``, read back, compare.

        ``priority`` is a BACnet notion and is ignored. A point that is not writable is refused without
        touching the wire (code ``not_writable``).
        """
        if not isinstance(point, ModbusPoint):
            return WriteResult(
                point.id, value, None, False, FailureCode.CONFIG, f"{type(point).__name__} is not Modbus"
            )
        if not point.writable or point.table not in ("holding", "coil"):
            return WriteResult(
                point.id, value, None, False, FailureCode.NOT_WRITABLE,
                f"point {point.id} ({point.table} {point.address}) is not writable",
            )  # fmt: skip
        try:
            regs = encode(value, point)  # early refusal of values the type cannot hold
        except CodecError as exc:
            return WriteResult(point.id, value, None, False, exc.code, str(exc))

        ep = self._endpoint()
        single = Block(point.table, point.address, register_count(point), (point,))
        async with ep.lock:
            try:
                await ep.ensure_connected(self._timeout)
                if point.type == "bit":  # read-modify-write of the register, under the lock
                    rr = await self._request(ep, single)
                    if rr.isError():
                        return self._write_failed(
                            point, value, rr, "reading the register before the bit write"
                        )
                    if rr.function_code != _READ_FC[point.table] or len(rr.registers) != 1:
                        ep.drop()  # not the register asked for: the stream cannot be trusted
                        return WriteResult(
                            point.id, value, None, False, FailureCode.PROTOCOL,
                            f"reading the register before the bit write: reply of function "
                            f"{rr.function_code} with {len(rr.registers)} registers",
                        )  # fmt: skip
                    regs = encode(value, point, current=rr.registers[0])
                fc = self._write_function(point, len(regs))
                wr = await self._send_write(ep, point, regs, fc)
                refused_fc = wr.isError() and _exception_code(wr)[0] == 1
                if refused_fc and point.write_function is None and fc in (5, 6):
                    # The manual wants FC15/16 even for one value: remember it for this point, retry now.
                    fc = 15 if fc == 5 else 16
                    self._multi_write.add(point.id)
                    self._log.warning(
                        "modbus_write_function_learned", point=point.id, function=fc,
                        refused=6 if fc == 16 else 5,
                    )  # fmt: skip
                    wr = await self._send_write(ep, point, regs, fc)
            except _Unreachable as exc:
                return WriteResult(point.id, value, None, False, FailureCode.UNREACHABLE, str(exc))
            except TimeoutError:
                ep.drop()
                return WriteResult(
                    point.id, value, None, False, FailureCode.TIMEOUT, f"no reply within {self._timeout} s"
                )
            except _ProtocolReply as exc:
                ep.drop()
                return WriteResult(point.id, value, None, False, FailureCode.PROTOCOL, str(exc))
            except (ConnectionException, OSError) as exc:
                ep.mark_failed(f"connection lost: {exc}")
                return WriteResult(point.id, value, None, False, FailureCode.UNREACHABLE, str(exc))
            except ModbusException as exc:
                return WriteResult(point.id, value, None, False, FailureCode.PROTOCOL, str(exc))
            if wr.isError():
                return self._write_failed(point, value, wr, "write")

        # The device may apply the value a little later; polls may run meanwhile.
        if self.device.readback_delay_s > 0:
            await asyncio.sleep(self.device.readback_delay_s)
        reading = await self._read_one(point)
        if reading.quality is Quality.BAD:
            return WriteResult(
                point.id, value, None, False, reading.code, f"read-back failed: {reading.detail}"
            )
        if _same(point, value, reading.value):
            return WriteResult(point.id, value, reading.value, True)
        return WriteResult(
            point.id, value, reading.value, False, FailureCode.READBACK_MISMATCH,
            f"wrote {value!r}, device reports {reading.value!r}",
        )  # fmt: skip

    def _write_function(self, point: ModbusPoint, count: int) -> int:
        """The function code of a write: the point's ``write_function``; else FC5 (coil) or FC6 (one
        register), or FC15/FC16 once the device refused those with exception 1; FC16 for several."""
        return write_function_of(point, refused_single=point.id in self._multi_write)

    async def _send_write(
        self, ep: Endpoint, point: ModbusPoint, regs: list[int], fc: int
    ) -> ModbusPDU | Reply:
        if ep.lean:
            if ep.link is None:
                raise ConnectionException("not connected")
            req = write_request(fc, point.address, regs)
            async with asyncio.timeout(self._timeout):
                pdu = await ep.link.request(self._unit, req)
            return parse_write(fc, pdu)
        client = ep.client
        if client is None or not client.connected:
            raise ConnectionException("not connected")
        unit = self._unit
        await ep.quiet_line()
        try:
            async with asyncio.timeout(self._timeout):
                if fc == 5:
                    return await client.write_coil(point.address, bool(regs[0]), device_id=unit)
                if fc == 15:
                    return await client.write_coils(point.address, [bool(regs[0])], device_id=unit)
                if fc == 6:
                    return await client.write_register(point.address, regs[0], device_id=unit)
                return await client.write_registers(point.address, regs, device_id=unit)
        finally:
            ep.note_io()

    async def _read_one(self, point: ModbusPoint) -> Reading:
        """Read one point on its own (a read-back), outside the poll plans and their cache."""
        block = Block(point.table, point.address, register_count(point), (point,))
        st = _PlanState(ReadPlan.from_blocks([block]), (point,), {})
        out: dict[str, Reading] = {}
        ep = self._endpoint()
        async with ep.lock:
            try:
                await ep.ensure_connected(self._timeout)
            except _Unreachable as exc:
                return Reading(point.id, None, self._clock(), Quality.BAD, FailureCode.UNREACHABLE, str(exc))
            await self._read_block(ep, st, block, out)
        return out[point.id]

    @staticmethod
    def _write_failed(point: ModbusPoint, value: Value, rr: ModbusPDU | Reply, what: str) -> WriteResult:
        n, code = _exception_code(rr)
        return WriteResult(
            point.id, value, None, False, code, f"{what}: {EXCEPTION_NAMES.get(n, 'exception')}"
        )


def _sum_reading(point: ModbusPoint, out: dict[str, Reading], ts: datetime) -> Reading:
    """A ``sum_of`` point from its parts' readings of this poll: bad (with the part's code) when a part
    is bad, uncertain when one is, else the sum of value x factor."""
    assert point.sum_of is not None
    total = 0.0
    quality = Quality.GOOD
    flagged: Reading | None = None
    for pid, factor in point.sum_of.items():
        r = out.get(pid)
        if r is None:
            return Reading(point.id, None, ts, Quality.BAD, FailureCode.CONFIG, f"part {pid} was not read")
        if r.quality is Quality.BAD:
            return Reading(point.id, None, ts, Quality.BAD, r.code, f"part {pid}: {r.detail}")
        if not isinstance(r.value, int | float) or isinstance(r.value, bool):
            return Reading(point.id, None, ts, Quality.BAD, FailureCode.TYPE, f"part {pid} is not a number")
        if r.quality is not Quality.GOOD and flagged is None:
            quality, flagged = r.quality, r
        total += float(r.value) * factor
    if flagged is not None:
        detail = f"part {flagged.point_id}: {flagged.detail}"
        return Reading(point.id, total, ts, quality, flagged.code, detail)
    return Reading(point.id, total, ts, Quality.GOOD)


def _same(point: ModbusPoint, wrote: Value, got: Value) -> bool:
    """Whether the read-back equals what was written, within what the register can represent."""
    if point.type in ("bool", "bit"):
        return isinstance(got, bool) and got == bool(wrote)
    if point.type == "string":
        return isinstance(wrote, str) and got == wrote.rstrip("\x00 ")
    if not isinstance(got, int | float) or not isinstance(wrote, int | float):
        return False
    w, g = float(wrote), float(got)
    if math.isnan(w) or math.isnan(g):
        return math.isnan(w) and math.isnan(g)
    if point.type in ("float32", "float64"):
        rel = 1e-6 if point.type == "float32" else 1e-12
        return math.isclose(w, g, rel_tol=rel, abs_tol=1e-12 * abs(point.scale))
    # Integer registers: the write rounded to the nearest step, so half a step apart is still equal.
    return abs(w - g) <= abs(point.scale) / 2 * (1 + 1e-9) + 1e-12 * abs(w)

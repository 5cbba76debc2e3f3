"""The platform uplink: one long-lived TCP connection, id_validate, heartbeats, periods from the buffer.

- Periods are closed (frozen from the ledger into the state database) by the closer task whether or not
  the platform is reachable; they leave the buffer only when the platform acknowledges them.
- One period in the buffer and never sent: ``report``. More (after an outage, or a report that was not
  acknowledged): ``continuous`` with ``total``/``current``, oldest first, each waiting for its
  ``continuous_ack`` before the next.
- Reconnect with capped, jittered exponential backoff in ``_connection_loop`` only; only progress (an
  acknowledged period, or a heartbeat answered after a successful authentication) resets it, so a wrong
  key is retried slowly, not in a tight loop.
- State changes are logged once: platform_connected, platform_authenticated, platform_auth_refused,
  platform_disconnected, platform_clock_offset / platform_clock_agrees, platform_period_changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from edge_agent.config.settings import PlatformUplink
from edge_agent.core.clock import Clock
from edge_agent.core.logs import get_logger
from edge_agent.store.platform import BufferedPeriod, PeriodBuffer
from edge_agent.uplink.platform.crypto import CipherError, auth_md5, decrypt, encrypt
from edge_agent.uplink.platform.framing import FrameError, FrameReader, encode_frame
from edge_agent.uplink.platform.periods import EnergySource, due_periods, period_bounds, period_values
from edge_agent.uplink.platform.protocol import (
    FunctionValue,
    Message,
    MeterValues,
    ProtocolError,
    build,
    data_message,
    parse,
    parse_time,
)

__all__ = [
    "CLOCK_TOLERANCE_S",
    "AuditSink",
    "PlatformAuthRefused",
    "PlatformError",
    "PlatformSession",
    "PlatformUplinkService",
    "load_platform_key",
]

CLOCK_TOLERANCE_S = 60.0  # server time further than this from ours: a clock_offset finding
_CONNECT_TIMEOUT_S = 15.0
_READ_CHUNK = 65536


class PlatformError(Exception):
    """A platform connection failed; ``step`` names where (connect, id_validate, heartbeat, data)."""

    def __init__(self, message: str, *, step: str) -> None:
        super().__init__(message)
        self.step = step


class PlatformAuthRefused(PlatformError):
    """The platform answered id_validate with fail: a wrong key, gateway or building id."""


class AuditSink(Protocol):
    def __call__(self, kind: str, *, subject: str, reason: str, after: Any) -> None: ...


def load_platform_key(path: str) -> bytes:
    """The 16-character key from its file (one line; surrounding whitespace ignored)."""
    try:
        raw = Path(path).read_bytes().strip()
    except OSError as exc:
        raise PlatformError(
            f"{path}: cannot read the platform key: {exc.strerror or exc}", step="key"
        ) from None
    if len(raw) != 16:
        raise PlatformError(
            f"{path}: the platform key must be 16 characters, this one has {len(raw)}", step="key"
        )
    return raw


@dataclass
class _Wire:
    """Frames and ciphers over one stream (settings decide both)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    options: PlatformUplink
    key: bytes
    building_id: str
    gateway_id: str
    seq: int = 0

    def __post_init__(self) -> None:
        self.frames = FrameReader(self.options.framing)
        self.inbox: list[Message] = []

    async def send(self, m: Message) -> None:
        self.seq = (self.seq + 1) % 2**32
        m = Message(m.type, m.operation, self.building_id, self.gateway_id, m.fields, m.meters)
        body = encrypt(build(m), self.key, self.options.cipher)
        self.writer.write(encode_frame(body, self.options.framing, sequence=self.seq))
        await self.writer.drain()

    async def receive(self, timeout: float) -> Message:
        while not self.inbox:
            async with asyncio.timeout(timeout):  # not wait_for: it can swallow a cancel on 3.11
                data = await self.reader.read(_READ_CHUNK)
            if not data:
                raise ConnectionResetError("the platform closed the connection")
            for frame in self.frames.feed(data):
                self.inbox.append(parse(decrypt(frame.body, self.key, self.options.cipher)))
        return self.inbox.pop(0)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(2):
                await self.writer.wait_closed()


class PlatformSession:
    """One connection: connect and authenticate, then messages. Used by the service and `platform check`."""

    def __init__(self, *, options: PlatformUplink, key: bytes, building_id: str, gateway_id: str) -> None:
        self.options = options
        self.key = key
        self.building_id = building_id
        self.gateway_id = gateway_id
        self.wire: _Wire | None = None

    async def connect(self) -> None:
        o = self.options
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(o.host, o.port)
        except (OSError, TimeoutError) as exc:
            raise PlatformError(
                f"cannot connect to {o.host}:{o.port}: {exc or type(exc).__name__}", step="connect"
            ) from None
        self.wire = _Wire(reader, writer, o, self.key, self.building_id, self.gateway_id)

    async def authenticate(self) -> None:
        """id_validate. Everything is encrypted with the key, so a platform that cannot read us (a wrong
        key or cipher setting) hangs up or answers unreadably: refused too, with that hint."""
        try:
            await self._authenticate()
        except (ConnectionError, PlatformError) as exc:
            if isinstance(exc, PlatformAuthRefused) or (
                isinstance(exc, PlatformError) and exc.step != "receive"
            ):
                raise
            raise PlatformAuthRefused(
                f"the platform {'hung up' if isinstance(exc, ConnectionError) else 'answered unreadably'} "
                f"during id_validate ({exc}): check the key and the cipher and framing settings",
                step="id_validate",
            ) from None

    async def _authenticate(self) -> None:
        w = self._w()
        timeout = self.options.ack_timeout_s
        await w.send(Message("id_validate", "request"))
        challenge = await self._expect("id_validate", timeout)
        sequence = challenge.get("sequence")
        if challenge.operation != "sequence" or sequence is None:
            raise PlatformError(
                f"expected a sequence challenge, got operation {challenge.operation!r}", step="id_validate"
            )
        answer = auth_md5(sequence, self.key, self.options.md5_order)
        await w.send(Message("id_validate", "md5", fields={"md5": answer}))
        result = await self._expect("id_validate", timeout)
        verdict = (result.get("result") or "").lower()
        if verdict != "pass":
            raise PlatformAuthRefused(
                f"the platform refused id_validate ({verdict or 'no result'}): check the key, "
                f"md5_order ({self.options.md5_order}), building_id and gateway_id",
                step="id_validate",
            )

    async def heartbeat(self) -> datetime | None:
        """One heart_beat; the server's time (naive, site time) when its answer carries one."""
        w = self._w()
        await w.send(Message("heart_beat", "notify"))
        reply = await self._expect("heart_beat", self.options.ack_timeout_s)
        t = reply.get("time")
        return parse_time(t) if t else None

    async def send(self, m: Message) -> None:
        await self._w().send(m)

    async def receive(self, timeout: float) -> Message:
        try:
            return await self._w().receive(timeout)
        except (FrameError, CipherError, ProtocolError) as exc:
            raise PlatformError(f"unreadable message from the platform: {exc}", step="receive") from None

    async def close(self) -> None:
        if self.wire is not None:
            await self.wire.close()
            self.wire = None

    async def _expect(self, type_: str, timeout: float) -> Message:
        try:
            m = await self.receive(timeout)
        except TimeoutError:
            raise PlatformError(f"no {type_} answer within {timeout:g} s", step=type_) from None
        if m.type != type_:
            raise PlatformError(f"expected a {type_} answer, got {m.type} {m.operation}", step=type_)
        return m

    def _w(self) -> _Wire:
        if self.wire is None:
            raise PlatformError("not connected", step="connect")
        return self.wire


def backoff_delay(attempt: int, *, initial: float, cap: float, rng: random.Random) -> float:
    ceiling = min(cap, initial * 2 ** min(attempt, 30))
    return rng.uniform(0.5 * min(initial, ceiling), ceiling)


class PlatformUplinkService:
    """Runs as a named task of the service: the closer and the connection loop."""

    def __init__(
        self,
        *,
        options: PlatformUplink,
        building_id: str,
        gateway_id: str,
        tz: ZoneInfo,
        buffer: PeriodBuffer,
        energy: EnergySource,
        codes: Mapping[str, str],
        clock: Clock,
        audit: AuditSink | None = None,
        on_clock: Callable[[float, bool], None] | None = None,  # (offset_s, beyond tolerance): reading flags
        logger: Any = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,  # the reconnect backoff's
        rng: random.Random | None = None,
    ) -> None:
        self.options = options
        self.building_id = building_id
        self.gateway_id = gateway_id
        self.tz = tz
        self.buffer = buffer
        self.energy = energy
        self.codes = dict(codes)
        self.clock = clock
        self.audit = audit
        self._on_clock = on_clock
        self._log = (
            logger if logger is not None else get_logger("edge_agent.uplink.platform", gateway=gateway_id)
        )
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.period_s = buffer.period_s() or options.period_min * 60
        self.connected = False
        self.authenticated = False
        self.connects = 0
        self.auth_refusals = 0
        self.last_error: str | None = None
        self.retry_in_s: float | None = None
        self.clock_offset_s: float | None = None
        self.clock_off = False
        self.dropped_periods = 0
        self.sent_periods = 0
        self._wake = asyncio.Event()
        self._waiting: dict[int, datetime] = {}  # data sequence -> period start, awaiting its ack
        self._acked: asyncio.Event = asyncio.Event()
        self._data_seq = 0
        self._heartbeat_answered = asyncio.Event()
        self._session_progress = False

    # --------------------------------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        last = self.buffer.last_acked()
        return {
            "host": f"{self.options.host}:{self.options.port}",
            "connected": self.connected,
            "authenticated": self.authenticated,
            "period_s": self.period_s,
            "last_acked_period": last.astimezone(self.tz).isoformat() if last else None,
            "last_acked_ts": last.timestamp() if last else None,
            "backlog_periods": self.buffer.backlog(),
            "dropped_periods": self.dropped_periods,
            "connects": self.connects,
            "auth_refusals": self.auth_refusals,
            "clock_offset_s": self.clock_offset_s,
            "last_error": self.last_error,
            "retry_in_s": self.retry_in_s,
        }

    # -------------------------------------------------------------------------------------- closing

    def close_due(self) -> int:
        """Freeze every period that has ended into the buffer; returns how many were closed."""
        now = self.clock.now()
        closed_until = self.buffer.closed_until()
        if closed_until is None:
            closed_until = period_bounds(now, self.period_s, self.tz)[0]
            self.buffer.begin(closed_until)
        due = due_periods(
            closed_until,
            now,
            period_s=self.period_s,
            tz=self.tz,
            close_delay_s=self.options.close_delay_s,
        )
        dropped: list[datetime] = []
        for start, end in due:
            values = period_values(self.options.meters, self.codes, self.energy(start, end))
            period_s = int((end - start).total_seconds())
            dropped += self.buffer.close(
                start, period_s, values, now=now, max_backlog=self.options.max_backlog_periods
            )
        if dropped:  # one log line and one audit record per closing round, with the count
            self.dropped_periods += len(dropped)
            first, last = min(dropped).astimezone(self.tz), max(dropped).astimezone(self.tz)
            self._log.warning(
                "platform_periods_dropped", count=len(dropped), first=first.isoformat(), last=last.isoformat()
            )
            if self.audit is not None:
                self.audit(
                    "drop",
                    subject="platform",
                    reason="platform backlog above max_backlog_periods",
                    after={"count": len(dropped), "first": first.isoformat(), "last": last.isoformat()},
                )
        if due:
            self._wake.set()
        return len(due)

    async def _closer(self) -> None:
        failing = False  # a busy or full database is logged when it starts and when it ends
        while True:
            try:
                self.close_due()
            except sqlite3.OperationalError as exc:
                if not failing:
                    self._log.error("platform_close_failed", error=str(exc))
                failing = True
            else:
                if failing:
                    self._log.info("platform_close_recovered")
                failing = False
            await asyncio.sleep(min(10.0, self.period_s / 3))

    # ------------------------------------------------------------------------------------ connection

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._closer(), name="platform_closer")
            tg.create_task(self._connection_loop(), name="platform_connection")

    async def _connection_loop(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        attempt = 0
        down_logged = False  # one outage, one warning
        refused_logged = False
        while True:
            delay = backoff_delay(
                attempt, initial=self.options.backoff_initial_s, cap=self.options.backoff_max_s, rng=self._rng
            )
            session: PlatformSession | None = None
            progressed = False
            self._session_progress = False
            try:
                key = load_platform_key(self.options.key_file)
                session = PlatformSession(
                    options=self.options, key=key, building_id=self.building_id, gateway_id=self.gateway_id
                )
                await session.connect()
                self.connected = True
                self.connects += 1
                await session.authenticate()
                self.authenticated = True
                self.last_error = None
                self.retry_in_s = None
                if refused_logged:
                    refused_logged = False
                self._log.info("platform_authenticated", host=f"{self.options.host}:{self.options.port}")
                down_logged = False
                progressed = await self._session(session)
            except PlatformAuthRefused as exc:
                self.auth_refusals += 1
                self.last_error = str(exc)
                if not refused_logged:
                    refused_logged = True
                    self._log.error("platform_auth_refused", error=str(exc), retry_in_s=round(delay, 2))
            except (
                PlatformError,
                OSError,
                TimeoutError,
                FrameError,
                CipherError,
                ProtocolError,
                sqlite3.OperationalError,
            ) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                was_up = self.authenticated
                self.connected = self.authenticated = False
                self._waiting.clear()
                if session is not None:
                    try:  # close() already absorbs socket errors; anything else is a bug to be seen
                        await asyncio.shield(session.close())
                    except Exception as exc:
                        self._log.error("platform_close_failed", error=f"{type(exc).__name__}: {exc}")
            # Cancelled while a session's TaskGroup was failing: its error came out instead of the
            # cancel (3.11), and the handlers above took it. Stopping wins.
            if me.cancelling():
                raise asyncio.CancelledError
            if progressed or self._session_progress:
                attempt = 0
                delay = backoff_delay(
                    0, initial=self.options.backoff_initial_s, cap=self.options.backoff_max_s, rng=self._rng
                )
            else:
                attempt += 1
            if was_up:
                self._log.warning("platform_disconnected", error=self.last_error, retry_in_s=round(delay, 2))
                down_logged = True
            elif not down_logged and not refused_logged:
                down_logged = True
                self._log.warning(
                    "platform_connect_failed", error=self.last_error, retry_in_s=round(delay, 2)
                )
            self.retry_in_s = round(delay, 3)
            await self._sleep(delay)

    async def _session(self, session: PlatformSession) -> bool:
        self._session_progress = False
        # Not a TaskGroup: on 3.11 a TaskGroup whose child fails while the parent waits in __aexit__
        # leaves the parent's cancelling() count raised, and _connection_loop relies on that count.
        tasks = [
            asyncio.create_task(self._reader(session), name="platform_reader"),
            asyncio.create_task(self._heartbeats(session), name="platform_heartbeat"),
            asyncio.create_task(self._sender(session), name="platform_sender"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc
        return self._session_progress  # pragma: no cover - the tasks end only by raising

    async def _heartbeats(self, session: PlatformSession) -> None:
        while True:
            self._heartbeat_answered = asyncio.Event()
            await session.send(Message("heart_beat", "notify"))
            try:
                async with asyncio.timeout(self.options.ack_timeout_s):
                    await self._heartbeat_answered.wait()
            except TimeoutError:
                raise PlatformError(
                    f"no heart_beat answer within {self.options.ack_timeout_s:g} s", step="heartbeat"
                ) from None
            self._session_progress = True
            await asyncio.sleep(self.options.heartbeat_s)

    async def _reader(self, session: PlatformSession) -> None:
        while True:
            m = await session.receive(timeout=max(3 * self.options.heartbeat_s, self.options.ack_timeout_s))
            if m.type == "heart_beat":
                self._heartbeat_answered.set()
                t = m.get("time")
                if t:
                    self._server_time(parse_time(t))
            elif m.type == "data" and m.operation.endswith("_ack"):
                self._ack(m)
            elif m.type == "config" and m.operation == "period":
                self._config_period(m)
                await session.send(Message("config", "period_ack"))

    def _ack(self, m: Message) -> None:
        start: datetime | None = None
        seq = m.get("sequence")
        if seq is not None and seq.isdigit():
            start = self._waiting.pop(int(seq), None)
        if start is None and m.get("time"):
            with contextlib.suppress(ProtocolError):
                local = parse_time(m.get("time") or "").replace(tzinfo=self.tz)
                start = local.astimezone(UTC)
                self._waiting = {k: v for k, v in self._waiting.items() if v != start}
        if start is None:
            self._log.debug("platform_ack_unmatched", sequence=seq, time=m.get("time"))
            return
        if self.buffer.ack(start, now=self.clock.now()):
            self._session_progress = True
        self._acked.set()

    def _config_period(self, m: Message) -> None:
        text = m.get("period") or ""
        if not text.isdigit() or not 1 <= int(text) <= 1440:
            self._log.warning("platform_config_ignored", period=text, reason="not 1..1440 minutes")
            return
        new = int(text) * 60
        if new != self.period_s:
            self._log.info("platform_period_changed", period_min=new // 60, was_min=self.period_s // 60)
            self.period_s = new
            self.buffer.set_period_s(new)

    def _server_time(self, server_local: datetime) -> None:
        ours = self.clock.now()
        theirs = server_local.replace(tzinfo=self.tz)
        offset = (ours - theirs).total_seconds()
        self.clock_offset_s = round(offset, 1)
        off = abs(offset) > CLOCK_TOLERANCE_S
        if off and not self.clock_off:
            self._log.warning(
                "platform_clock_offset", offset_s=self.clock_offset_s, server_time=theirs.isoformat()
            )
            if self.audit is not None:
                self.audit(
                    "finding",
                    subject="clock",
                    reason=f"the gateway clock is {offset:+.0f} s from the platform's; not changed",
                    after={
                        "offset_s": self.clock_offset_s,
                        "server_time": theirs.isoformat(),
                        "finding": "clock_offset",
                    },
                )
        elif not off and self.clock_off:
            self._log.info("platform_clock_agrees", offset_s=self.clock_offset_s)
        self.clock_off = off
        if self._on_clock is not None:
            self._on_clock(self.clock_offset_s, off)

    async def _sender(self, session: PlatformSession) -> None:
        while True:
            pending = self.buffer.pending(limit=self.options.max_backlog_periods)
            if not pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            live = len(pending) == 1 and pending[0].attempts == 0
            for i, p in enumerate(pending):
                if live:
                    await self._deliver(session, p, "report", None, None)
                else:
                    await self._deliver(session, p, "continuous", len(pending), i + 1)

    async def _deliver(
        self,
        session: PlatformSession,
        p: BufferedPeriod,
        operation: str,
        total: int | None,
        current: int | None,
    ) -> None:
        self._data_seq += 1
        seq = self._data_seq
        meters: dict[str, list[FunctionValue]] = {}
        for v in p.values:
            meters.setdefault(v.meter_id, []).append(FunctionValue(v.function_id, v.coding, v.value, v.error))
        m = data_message(
            building_id=self.building_id,
            gateway_id=self.gateway_id,
            operation=operation,
            sequence=seq,
            period_start=p.start.astimezone(self.tz),
            meters=tuple(MeterValues(mid, tuple(fs)) for mid, fs in meters.items()),
            total=total,
            current=current,
        )
        self._waiting[seq] = p.start
        self._acked.clear()
        self.buffer.sent(p.start)
        await session.send(m)
        self.sent_periods += 1
        if operation == "report" and not self.options.report_ack:
            # No ack for reports in this city: delivered once the platform answers a heartbeat sent after it
            # (one TCP stream, read in order).
            self._heartbeat_answered = asyncio.Event()
            await session.send(Message("heart_beat", "notify"))
            await self._wait(self._heartbeat_answered, "heartbeat")
            self._waiting.pop(seq, None)
            self.buffer.ack(p.start, now=self.clock.now())
            self._session_progress = True
            return
        while seq in self._waiting:
            self._acked.clear()
            await self._wait(self._acked, "data")

    async def _wait(self, event: asyncio.Event, step: str) -> None:
        try:
            async with asyncio.timeout(self.options.ack_timeout_s):
                await event.wait()
        except TimeoutError:
            raise PlatformError(
                f"no {step} acknowledgement within {self.options.ack_timeout_s:g} s", step=step
            ) from None

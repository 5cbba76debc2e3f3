"""MQTT uplink: drains the outbox to the broker in sequence order, QoS 1, nothing lost.

- Readings: batches of up to ``batch_max`` to ``{prefix}/{building}/{gateway}/readings``. A batch leaves
  the outbox only after its PUBACK (aiomqtt 2.5's ``await client.publish(..., qos=1)`` returns when
  paho's on_publish fires, which for QoS 1 is the PUBACK). Up to ``inflight_batches`` are awaiting
  PUBACK at once; they are acknowledged in order, so the cursor never passes an unconfirmed batch.
- After a reconnect or a restart everything after the durable cursor is sent again, in order:
  consumers dedupe on ``(gateway, seq)`` (docs/uplink-schema.md).
- Events (writes, findings, audit records, drops) go through their own outbox table and seq space to
  ``.../events``; ``.../status`` is a retained JSON ``online``/``offline`` with a Last Will ``offline``.
- Reconnect with capped, full-jitter exponential backoff, in ``run`` only.
- Logs state changes (structlog, ``broker=`` bound): ``uplink_connected`` (with ``reconnect``, and
  ``outage_s`` and ``failed_attempts`` after an outage), ``uplink_disconnected`` once when a session
  ends, ``uplink_connect_failed`` once per distinct reason while connecting keeps failing, and
  ``uplink_closed`` at shutdown; the retries themselves are debug lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sqlite3
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import structlog

from edge_agent.config.settings import MqttUplink
from edge_agent.core.clock import Clock
from edge_agent.store.outbox import Outbox, Row, format_ts

__all__ = [
    "SCHEMA_VERSION",
    "MqttUplinkService",
    "UplinkConfigError",
    "backoff_delay",
    "encode_batch",
    "read_credentials",
]

SCHEMA_VERSION = 1


class UplinkConfigError(Exception):
    """A local problem with the uplink's files (credentials, certificates); carries the path."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


def read_credentials(path: str) -> tuple[str, str]:
    """``username:password`` on the first line; the password may itself contain ``:``."""
    try:
        line = Path(path).read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError) as exc:
        raise UplinkConfigError(f"cannot read credentials: {exc or 'empty file'}", path=path) from exc
    user, sep, password = line.partition(":")
    if not sep or not user:
        raise UplinkConfigError("expected `username:password` on the first line", path=path)
    return user, password


def backoff_delay(attempt: int, *, initial: float, cap: float, rng: random.Random | None = None) -> float:
    """Jittered exponential backoff: uniform between initial/2 and min(cap, initial * 2**attempt)."""
    ceiling = min(cap, initial * (2 ** min(attempt, 30)))
    return (rng or random).uniform(0.5 * min(initial, ceiling), ceiling)


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def encode_batch(
    rows: Sequence[Row], *, gateway: str, building: str, audit_head: tuple[int, str] | None
) -> bytes:
    payload = {
        "v": SCHEMA_VERSION,
        "gateway": gateway,
        "building": building,
        "seq_first": rows[0].seq,
        "seq_last": rows[-1].seq,
        "audit_head": None if audit_head is None else {"seq": audit_head[0], "hash": audit_head[1]},
        "readings": [r.as_payload() for r in rows],
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


class _PendingWarningFilter(logging.Filter):
    """aiomqtt warns once >threshold publishes are pending; our window is intentional, so say it at debug
    (and drop it unless the logger is open to debug: the handler may let any level through)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "pending publish calls" in record.getMessage():
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_MAX_REASONS_LOGGED = 5  # distinct connect-failure reasons logged per outage; the rest are debug lines


class MqttUplinkService:
    def __init__(
        self,
        *,
        options: MqttUplink,
        outbox: Outbox,
        gateway_id: str,
        building_id: str,
        audit_head: Callable[[], tuple[int, str]] | None,
        clock: Clock,
        logger: Any = None,
        idle_poll_s: float = 1.0,
    ) -> None:
        self.options = options
        self.outbox = outbox
        self.gateway_id = gateway_id
        self.building_id = building_id
        self.audit_head = audit_head
        self.clock = clock
        self.idle_poll_s = idle_poll_s
        self.broker = f"{options.host}:{options.port}"
        base_log = logger if logger is not None else structlog.get_logger("edge_agent.uplink")
        self._log: Any = base_log.bind(broker=self.broker)
        # aiomqtt (and paho under it) need a stdlib logger; core.logs routes it through structlog's
        # formatter, so its lines come out in the same format as ours.
        self._mqtt_logger = logging.getLogger("edge_agent.uplink.aiomqtt")
        if not any(isinstance(f, _PendingWarningFilter) for f in self._mqtt_logger.filters):
            self._mqtt_logger.addFilter(_PendingWarningFilter())
        base = f"{options.topic_prefix}/{building_id}/{gateway_id}"
        self.topic_readings = f"{base}/readings"
        self.topic_events = f"{base}/events"
        self.topic_status = f"{base}/status"
        self.connected = False
        self.connects = 0
        self.last_error: str | None = None
        self.published_batches = 0
        self.published_readings = 0
        self._wake_readings: asyncio.Event | None = None
        self._wake_events: asyncio.Event | None = None

    # -- public --------------------------------------------------------------------------------------
    async def publish_event(self, event: dict[str, Any]) -> int:
        """Queue an event durably (its own seq); the run loop publishes it. Returns the event seq."""
        seq = await self.outbox.aappend_event(event)
        if self._wake_events is not None:
            self._wake_events.set()
        return seq

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "connects": self.connects,
            "last_error": self.last_error,
            "published_batches": self.published_batches,
            "published_readings": self.published_readings,
        }

    async def run(self) -> None:
        """Connect, drain, reconnect; runs until cancelled. Backoff lives here and only here."""
        loop = asyncio.get_running_loop()
        self._wake_readings = wake_r = asyncio.Event()
        self._wake_events = wake_e = asyncio.Event()

        def on_append() -> None:  # called from the appending thread
            with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                loop.call_soon_threadsafe(wake_r.set)
                loop.call_soon_threadsafe(wake_e.set)

        self.outbox.add_listener(on_append)
        attempt = 0
        # One outage (or a first connect that keeps failing) is logged once when it starts and once
        # when it ends, not at every retry (STYLE.md #10).
        down_since: float | None = None  # monotonic start of the current outage
        failed = 0  # connect attempts that failed in it
        reasons: set[str] = set()  # connect-failure reasons logged during this outage
        try:
            while True:
                was_connected = False
                try:
                    client = self._make_client()
                    async with client:
                        self.connected = was_connected = True
                        self.connects += 1
                        self._connected(failed, down_since)
                        attempt, failed, down_since = 0, 0, None
                        reasons.clear()
                        await self._session(client)
                except* (aiomqtt.MqttError, OSError, UplinkConfigError, sqlite3.OperationalError) as group:
                    exc = _first_leaf(group)
                    self.last_error = f"{type(exc).__name__}: {exc}"
                finally:
                    self.connected = False
                    me = asyncio.current_task()
                    if was_connected and me is not None and me.cancelling():
                        self._log.info("uplink_closed")  # shutting down: not an outage
                    elif was_connected:
                        down_since = time.monotonic()
                        self._log.warning("uplink_disconnected", error=self.last_error)
                if me is not None and me.cancelling():
                    # aiomqtt's __aexit__ may turn our cancellation into an MqttError (its disconnect
                    # wait times out): the cancellation must still win, or shutdown would hang here.
                    raise asyncio.CancelledError
                if not was_connected:
                    failed += 1
                    if down_since is None:
                        down_since = time.monotonic()
                    reason = self.last_error or "unknown"
                    if reason not in reasons and len(reasons) < _MAX_REASONS_LOGGED:
                        reasons.add(reason)
                        self._log.warning("uplink_connect_failed", error=reason, attempt=failed)
                delay = backoff_delay(
                    attempt, initial=self.options.backoff_initial_s, cap=self.options.backoff_max_s
                )
                attempt += 1
                self._log.debug("uplink_retry", delay_s=round(delay, 3), error=self.last_error)
                await asyncio.sleep(delay)
        finally:
            self.outbox.remove_listener(on_append)
            self._wake_readings = self._wake_events = None

    # -- internals -----------------------------------------------------------------------------------
    def _audit_head(self) -> tuple[int, str] | None:
        if self.audit_head is None:
            return None
        try:
            return self.audit_head()
        except Exception as exc:  # the audit chain's trouble must not stop readings going out
            self.last_error = f"audit_head: {type(exc).__name__}: {exc}"
            return None

    def _connected(self, failed: int, down_since: float | None) -> None:
        """The end of an outage (or of a first connect that failed) carries how long and how many tries."""
        extra: dict[str, Any] = {}
        if down_since is not None:
            extra = {"outage_s": round(time.monotonic() - down_since, 1), "failed_attempts": failed}
        self._log.info("uplink_connected", reconnect=self.connects > 1, **extra)

    def _status_payload(self, state: str) -> bytes:
        body = {
            "v": SCHEMA_VERSION,
            "gateway": self.gateway_id,
            "building": self.building_id,
            "state": state,
            "ts": self.clock.now().isoformat().replace("+00:00", "Z"),
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def _make_client(self) -> aiomqtt.Client:
        o = self.options
        username = password = None
        if o.credentials_file:
            username, password = read_credentials(o.credentials_file)
        tls_context = None
        if o.tls is not None:
            tls_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=o.tls.ca_file)
            if o.tls.cert_file:
                tls_context.load_cert_chain(o.tls.cert_file, o.tls.key_file)
            if o.tls.insecure_skip_hostname_check:
                tls_context.check_hostname = False
        # The will is the broker's word when we vanish: retained, so a late subscriber sees it too.
        will = aiomqtt.Will(self.topic_status, self._status_payload("offline"), qos=1, retain=True)
        client = aiomqtt.Client(
            o.host,
            o.port,
            identifier=o.client_id or self.gateway_id,
            username=username,
            password=password,
            keepalive=o.keepalive_s,
            will=will,
            tls_context=tls_context,
            logger=self._mqtt_logger,
            # aiomqtt's default timeout bounds the wait for CONNACK (a TLS 1.3 server rejecting our
            # certificate closes only after the handshake; nothing else would end that wait).
            timeout=o.connect_timeout_s,
            clean_session=True,  # redelivery is ours, from the outbox; no broker-side session needed
            max_inflight_messages=max(20, o.inflight_batches + 8),
        )
        client.pending_calls_threshold = o.inflight_batches + 16
        return client

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.publish(
            self.topic_status,
            self._status_payload("online"),
            qos=1,
            retain=True,
            timeout=self.options.publish_timeout_s,
        )
        # Not a TaskGroup: on 3.11 a TaskGroup whose child fails while the parent waits in __aexit__
        # leaves the parent's cancelling() count raised, and run() relies on that count (see there).
        tasks = [
            asyncio.create_task(self._watch(client), name="uplink-watch"),
            asyncio.create_task(self._pump_readings(client), name="uplink-readings"),
            asyncio.create_task(self._pump_events(client), name="uplink-events"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            await _cancel_all(tasks)
            # Shutting down: say so before the graceful disconnect (a will is only for vanishing).
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(
                    self.topic_status, self._status_payload("offline"), qos=1, retain=True, timeout=2
                )
            raise
        await _cancel_all(tasks)
        for t in done:
            exc = t.exception()
            if exc is not None:
                raise exc
        raise aiomqtt.MqttError("uplink session ended without an error")  # the loops never return

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        """Raise MqttError as soon as the connection drops (the message iterator does so; we subscribe
        to nothing). Without it, publishes waiting for a PUBACK would sit until their timeout."""
        async for _ in client.messages:
            pass

    async def _pump_readings(self, client: aiomqtt.Client) -> None:
        assert self._wake_readings is not None
        wake = self._wake_readings
        o = self.options
        next_after = await asyncio.to_thread(self.outbox.acked_seq)
        inflight: deque[tuple[int, int, asyncio.Task[None]]] = deque()
        try:
            while True:
                wake.clear()
                while len(inflight) < o.inflight_batches:
                    rows = await self.outbox.apending(next_after, o.batch_max)
                    if not rows:
                        break
                    head = self._audit_head()
                    payload = encode_batch(
                        rows, gateway=self.gateway_id, building=self.building_id, audit_head=head
                    )
                    task = asyncio.create_task(
                        client.publish(self.topic_readings, payload, qos=1, timeout=o.publish_timeout_s),
                        name=f"uplink-batch-{rows[-1].seq}",
                    )
                    inflight.append((rows[-1].seq, len(rows), task))
                    next_after = rows[-1].seq
                if inflight:
                    seq_last, n, task = inflight[0]
                    await task  # PUBACK for the oldest batch; MqttError ends the session
                    inflight.popleft()
                    # Coalesce: every finished batch at the head of the window in one ack.
                    while inflight and inflight[0][2].done() and inflight[0][2].exception() is None:
                        s, k, _ = inflight.popleft()
                        seq_last, n = s, n + k
                    await self.outbox.aack(seq_last)
                    self.published_batches += 1
                    self.published_readings += n
                    continue
                with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel on 3.11
                    async with asyncio.timeout(self.idle_poll_s):
                        await wake.wait()
        finally:
            for _, _, t in inflight:
                t.cancel()
            for _, _, t in inflight:
                with contextlib.suppress(BaseException):
                    await t

    async def _pump_events(self, client: aiomqtt.Client) -> None:
        assert self._wake_events is not None
        wake = self._wake_events
        after = await asyncio.to_thread(self.outbox.acked_events_seq)
        while True:
            wake.clear()
            rows = await self.outbox.apending_events(after, 100)
            for ev in rows:
                body = {
                    "v": SCHEMA_VERSION,
                    "gateway": self.gateway_id,
                    "building": self.building_id,
                    "seq": ev.seq,
                    "ts": format_ts(ev.ts_us),
                    "kind": str(ev.body.get("kind", "event")),
                    "event": ev.body,
                }
                await client.publish(
                    self.topic_events,
                    json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
                    qos=1,
                )
                after = ev.seq
            if rows:
                await self.outbox.aack_events(after)
                continue
            with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel on 3.11
                async with asyncio.timeout(self.idle_poll_s):
                    await wake.wait()

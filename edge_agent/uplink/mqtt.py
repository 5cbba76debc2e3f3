"""MQTT uplink: drains the outbox to the broker in sequence order, QoS 1, nothing lost.

- Readings: batches of up to ``batch_max`` to ``{prefix}/{building}/{gateway}/readings``. A batch leaves
  the outbox only after its PUBACK (aiomqtt 2.5's ``await client.publish(..., qos=1)`` returns when
  paho's on_publish fires, which for QoS 1 is the PUBACK). Up to ``inflight_batches`` are awaiting
  PUBACK at once; they are acknowledged in order, so the cursor never passes an unconfirmed batch.
- After a reconnect or a restart everything after the durable cursor is sent again, in order:
  consumers dedupe on ``(gateway, seq)`` (docs/uplink-schema.md).
- Events (writes, findings, audit records, drops) go through their own outbox table and seq space to
  ``.../events``; ``.../status`` is a retained JSON ``online``/``offline`` with a Last Will ``offline``.
- MQTT v5 by default: the PUBACK's reason code is read, and a publish the broker refuses (not authorised,
  quota exceeded, payload format invalid, topic name invalid, ...) is **not** delivered: the batch stays in
  the outbox, the session ends, ``uplink_publish_refused`` is logged once per reason and ``on_finding``
  told, and the uplink backs off and tries again. MQTT 3.1.1 (``mqtt_version: "3.1.1"``) cannot tell: a
  broker acknowledges a publish its ACL drops.
- Batches are bounded by bytes as well as count: ``max_packet_bytes``, or the broker's own
  Maximum-Packet-Size from its v5 CONNACK when smaller. A connection lost while a batch over 4 KiB was
  awaiting its PUBACK (a broker closing on an oversized packet says nothing else) halves the byte cap
  for the rest of the run (``uplink_batch_shrunk``); a single reading that never fits is dropped with a
  drop event naming its seq (``Outbox.drop_unsendable``).
- Payload v2 (``payload: v2``, the default): before the first batch naming a schema version in a session,
  the retained ``.../schema`` message declaring it is published and acknowledged. The schema is the
  configured points (``points``, read at every batch, so a reload that adds points gives a new hash) or,
  without ``points``, the points the uplink has seen so far.
- Reconnect with capped (``max_backoff_s``), full-jitter exponential backoff, in ``run`` only; the
  backoff is reset only by an acknowledged readings batch, not by a connect (a broker that drops us
  right after CONNACK would otherwise be reconnected to about once a second).
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
import paho.mqtt.client as paho
import structlog
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config.settings import MqttUplink
from edge_agent.core.clock import Clock
from edge_agent.store.audit import AuditRecord
from edge_agent.store.outbox import DropEvent, EventRow, Outbox, Row, format_ts
from edge_agent.uplink.payload_v2 import (
    PointSchema,
    PollIndex,
    encode_batch_v2,
    encode_polls_v2,
    encode_schema,
    make_schema,
)

__all__ = [
    "SCHEMA_VERSION",
    "MqttUplinkService",
    "PublishRefusedError",
    "UplinkConfigError",
    "audit_event",
    "backoff_delay",
    "encode_batch",
    "encode_event",
    "publish_packet_bytes",
    "read_credentials",
]

SCHEMA_VERSION = 1


class UplinkConfigError(Exception):
    """A local problem with the uplink's files (credentials, certificates); carries the path."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class PublishRefusedError(Exception):
    """The broker answered a QoS 1 publish with a failure reason code (MQTT v5 PUBACK >= 0x80)."""

    def __init__(self, *, topic: str, reason_code: int, reason: str, seqs: tuple[int, int]) -> None:
        super().__init__(f"broker refused publish to {topic}: {reason} (0x{reason_code:02x})")
        self.topic = topic
        self.reason_code = reason_code
        self.reason = reason
        self.seqs = seqs


class _Client(aiomqtt.Client):
    """aiomqtt 2.5 drops two things paho hands it: the PUBACK reason code and the CONNACK's properties.

    This subclass keeps both (``publish_qos1`` returns the reason code; ``broker_max_packet`` is the
    broker's Maximum-Packet-Size). It relies on aiomqtt 2.5's callback names; tests/integration/
    test_uplink_hardening.py fails if an upgrade changes them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.puback_reasons: dict[int, ReasonCode] = {}
        self.broker_max_packet: int | None = None
        self.socket_error: str | None = None  # paho's last "failed to receive on socket" (TLS alerts)
        self._client.on_log = self._on_paho_log

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        """aiomqtt 2.5's, guarded: it schedules add_writer from paho's thread, and when a TLS failure closes
        the socket before that runs, asyncio logs a traceback (\"Bad file descriptor\") per attempt."""

        def callback() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # a broken connection: end the session (as aiomqtt does)
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        fd = sock.fileno()

        def register() -> None:
            if sock.fileno() != fd:  # closed (or replaced) meanwhile: nothing to watch
                return
            with contextlib.suppress(OSError, ValueError):
                self._loop.add_writer(fd, callback)

        self._loop.call_soon_threadsafe(register)

    def _on_paho_log(self, client: paho.Client, userdata: Any, level: int, buf: str) -> None:
        if level == paho.MQTT_LOG_ERR and buf.startswith("failed to receive on socket: "):
            self.socket_error = buf.removeprefix("failed to receive on socket: ")

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        # Lost before CONNACK (a TLS 1.3 broker rejects our certificate only after the handshake): fail the
        # connect now, with the socket's reason, instead of letting it wait for its timeout.
        if not self._connected.done():
            self._connected.set_exception(
                aiomqtt.MqttError(f"connection lost before CONNACK: {self.socket_error or reason_code}")
            )
            return
        super()._on_disconnect(client, userdata, flags, reason_code, properties)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        if properties is not None:
            size = getattr(properties, "MaximumPacketSize", None)
            self.broker_max_packet = int(size) if size else None
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        self.puback_reasons[mid] = reason_code
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def publish_qos1(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float
    ) -> ReasonCode | None:
        """Publish at QoS 1 and wait for the PUBACK; returns its reason code (None under 3.1.1)."""
        info = self._client.publish(topic, payload, 1, retain)
        try:
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
            if not info.is_published():
                confirmation = asyncio.Event()
                with self._pending_call(info.mid, confirmation, self._pending_publishes):
                    await self._wait_for(confirmation.wait(), timeout=timeout)
            return self.puback_reasons.get(info.mid)
        finally:
            self.puback_reasons.pop(info.mid, None)


def _check_puback(rc: ReasonCode | None, *, topic: str, seqs: tuple[int, int]) -> None:
    if rc is not None and rc.is_failure:
        raise PublishRefusedError(topic=topic, reason_code=rc.value, reason=rc.getName(), seqs=seqs)


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


def audit_event(record: AuditRecord) -> dict[str, Any]:
    """The body an audit record travels upstream as (the ``event`` of an events message)."""
    return {"type": "audit", **record.fields()}


def encode_event(ev: EventRow, *, gateway: str, building: str) -> bytes:
    """One ``.../events`` message (docs/uplink-schema.md)."""
    body = {
        "v": SCHEMA_VERSION,
        "gateway": gateway,
        "building": building,
        "seq": ev.seq,
        "ts": format_ts(ev.ts_us),
        "kind": str(ev.body.get("kind", "event")),
        "event": ev.body,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class _PendingWarningFilter(logging.Filter):
    """aiomqtt warns once >threshold publishes are pending; our window is intentional, so say it at debug
    (and drop it unless the logger is open to debug: the handler may let any level through). paho's
    "failed to receive on socket" (a TLS alert, at every retry) goes the same way: the uplink reports it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "pending publish calls" in record.getMessage():
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        if record.getMessage().startswith("failed to receive on socket"):
            # Once per failed connect: the uplink's own uplink_connect_failed says it once per outage.
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_MAX_REASONS_LOGGED = 5  # distinct connect-failure reasons logged per outage; the rest are debug lines
_SHRINK_ABOVE = 4096  # a connection lost with a batch this large in flight halves the byte cap
_PACKET_OVERHEAD = 64  # fixed header, packet id, v5 properties: bytes of a PUBLISH beyond topic + payload


def publish_packet_bytes(topic: str, payload_len: int, *, v5: bool) -> int:
    """Bytes of a QoS 1 PUBLISH on the wire: fixed header (1 + remaining-length varint), topic (2 + UTF-8),
    packet id (2), under v5 the property length (1: we send no properties), and the payload."""
    remaining = 2 + len(topic.encode()) + 2 + (1 if v5 else 0) + payload_len
    varint = 1 if remaining < 128 else 2 if remaining < 16_384 else 3 if remaining < 2_097_152 else 4
    return 1 + varint + remaining


def fit_batch(
    rows: Sequence[Row], limit: int, encode: Callable[[Sequence[Row]], bytes]
) -> tuple[bytes | None, Sequence[Row]]:
    """The longest prefix of ``rows`` whose encoding is at most ``limit`` bytes, and that encoding.

    ``(None, rows[:1])`` when not even the first row fits on its own. Encodes once in the common case.
    """
    payload = encode(rows)
    while len(payload) > limit and len(rows) > 1:
        keep = max(1, min(len(rows) - 1, int(len(rows) * limit / len(payload) * 0.95)))
        rows = rows[:keep]
        payload = encode(rows)
    if len(payload) > limit:
        return None, rows[:1]
    return payload, rows


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
        on_finding: Callable[[str, dict[str, Any]], None] | None = None,
        points: Callable[[], Sequence[tuple[str, str | None, str | None]]] | None = None,
    ) -> None:
        self.options = options
        self.points = points  # (id, unit, device) in configuration order, read at every batch (v2)
        self._schema: PointSchema | None = None
        self._schema_key: tuple[tuple[str, str | None, str | None], ...] | None = None
        self._learned: dict[str, tuple[str, str | None, str | None]] = {}  # without `points`: seen so far
        self._poll_index: tuple[PointSchema | None, PollIndex] = (None, {})  # encode_polls_v2's memory
        self._schema_sent: str | None = None  # hash of the schema published in this session
        self._schema_logged: str | None = None
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
        self.topic_schema = f"{base}/schema"
        self.connected = False
        self.connects = 0
        self.last_error: str | None = None
        self.published_batches = 0
        self.published_readings = 0
        self.published_bytes = 0  # readings PUBLISH packets acknowledged, as on the wire (resends count)
        self.refused_total = 0
        self.last_refusal: dict[str, Any] | None = None
        self.retry_in_s: float | None = None
        self.backoff_attempt = 0  # grows with every retry; only progress (an acked batch) resets it
        self.bytes_cap = options.max_packet_bytes  # halved after a connection lost under a large batch
        self.broker_max_packet: int | None = None
        self.dropped_too_large = 0
        self.on_finding = on_finding
        self._acked_in_session = False
        self._inflight_bytes_at_end = 0  # largest unacknowledged batch when the last session ended
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
            "published_bytes": self.published_bytes,
            "refused_total": self.refused_total,
            "last_refusal": self.last_refusal,
            "retry_in_s": self.retry_in_s,
            "backoff_attempt": self.backoff_attempt,
            "mqtt_version": self.options.mqtt_version,
            "payload": self.options.payload,
            "schema": None if self._schema is None else self._schema.hash,
            "max_batch_bytes": self._batch_limit(),
            "dropped_too_large": self.dropped_too_large,
        }

    def _batch_limit(self) -> int:
        """Payload bytes a readings batch may have now: ours, halved on trouble, and the broker's."""
        limit = self.bytes_cap
        if self.broker_max_packet:
            limit = min(limit, self.broker_max_packet)
        return max(256, limit - len(self.topic_readings) - _PACKET_OVERHEAD)

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
        refusals: set[tuple[str, str]] = set()  # (topic, reason) refusals logged since the last ack
        try:
            while True:
                was_connected = False
                refused: PublishRefusedError | None = None
                self._acked_in_session = False
                self._inflight_bytes_at_end = 0
                session_start = time.monotonic()
                delay = backoff_delay(
                    attempt, initial=self.options.backoff_initial_s, cap=self.options.max_backoff_s
                )
                try:
                    client = self._make_client()
                    async with client:
                        self.connected = was_connected = True
                        self.connects += 1
                        self.retry_in_s = None
                        self.broker_max_packet = client.broker_max_packet
                        self._connected(failed, down_since)
                        failed, down_since = 0, None
                        reasons.clear()
                        await self._session(client, refusals)
                except* PublishRefusedError as group:
                    exc = refused = _first_leaf(group)  # type: ignore[assignment]
                    self.last_error = f"{type(exc).__name__}: {exc}"
                except* (aiomqtt.MqttError, OSError, UplinkConfigError, sqlite3.OperationalError) as group:
                    exc = _first_leaf(group)
                    self.last_error = self._describe(exc)
                finally:
                    self.connected = False
                    me = asyncio.current_task()
                    if was_connected and me is not None and me.cancelling():
                        self._log.info("uplink_closed")  # shutting down: not an outage
                    elif was_connected:
                        # Progress (an acknowledged batch, or a long healthy session) resets the backoff;
                        # a connect alone does not: a broker that drops us at once must not be hammered.
                        healthy = time.monotonic() - session_start > self.options.max_backoff_s
                        if refused is None and (self._acked_in_session or healthy):
                            attempt = 0
                            delay = backoff_delay(
                                0, initial=self.options.backoff_initial_s, cap=self.options.max_backoff_s
                            )
                        down_since = time.monotonic()
                        if refused is not None:
                            self._refused(refused, refusals, delay)
                        else:
                            self._maybe_shrink()
                        self._log.warning(
                            "uplink_disconnected", error=self.last_error, retry_in_s=round(delay, 2)
                        )
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
                        self._log.warning(
                            "uplink_connect_failed", error=reason, attempt=failed, retry_in_s=round(delay, 2)
                        )
                attempt += 1
                self.backoff_attempt = attempt
                self.retry_in_s = round(delay, 3)
                self._log.debug("uplink_retry", delay_s=round(delay, 3), error=self.last_error)
                await asyncio.sleep(delay)
        finally:
            self.outbox.remove_listener(on_append)
            self._wake_readings = self._wake_events = None

    async def final_drain(self, *, budget_s: float = 2.0) -> dict[str, int]:
        """At shutdown, after the final flush: one connection, bounded by ``budget_s`` in all, to send what
        the run loop had not (the final flush commits after the run loop has stopped). Whatever does not
        make it stays in the outbox for the next start. Returns what was sent."""
        sent = {"readings": 0, "events": 0}
        o = self.options
        error: str | None = None
        try:
            async with asyncio.timeout(budget_s):
                after = await asyncio.to_thread(self.outbox.acked_seq)
                ev_after = await asyncio.to_thread(self.outbox.acked_events_seq)
                if not await self.outbox.apending(after, 1) and not await self.outbox.apending_events(
                    ev_after, 1
                ):
                    return sent
                async with self._make_client() as client:
                    self.broker_max_packet = client.broker_max_packet
                    self._schema_sent = None
                    while rows := await self.outbox.apending(after, o.batch_max):
                        encode = self._encoder(rows)
                        payload, fitted = fit_batch(rows, self._batch_limit(), encode)
                        if payload is None:
                            break  # the run loop drops it (audited) at the next start
                        await self._ensure_schema(client)
                        await self._publish_batch(client, payload, (fitted[0].seq, fitted[-1].seq))
                        after = fitted[-1].seq
                        await self.outbox.aack(after)
                        sent["readings"] += len(fitted)
                    while evs := await self.outbox.apending_events(ev_after, 100):
                        for ev in evs:
                            rc = await client.publish_qos1(
                                self.topic_events,
                                encode_event(ev, gateway=self.gateway_id, building=self.building_id),
                                timeout=o.publish_timeout_s,
                            )
                            _check_puback(rc, topic=self.topic_events, seqs=(ev.seq, ev.seq))
                            ev_after = ev.seq
                        await self.outbox.aack_events(ev_after)
                        sent["events"] += len(evs)
                    await client.publish(
                        self.topic_status, self.status_payload("offline"), qos=1, retain=True, timeout=1
                    )
        except TimeoutError:
            error = f"not finished within {budget_s} s"
        except (aiomqtt.MqttError, OSError, UplinkConfigError, PublishRefusedError, sqlite3.Error) as exc:
            error = self._describe(exc)
        self.published_readings += sent["readings"]
        if error is None:
            self._log.info("uplink_final_drain", **sent)
        else:
            self._log.warning("uplink_final_drain_incomplete", error=error, **sent)
        return sent

    # -- internals -----------------------------------------------------------------------------------
    def _audit_head(self) -> tuple[int, str] | None:
        if self.audit_head is None:
            return None
        try:
            return self.audit_head()
        except Exception as exc:  # the audit chain's trouble must not stop readings going out
            self.last_error = f"audit_head: {type(exc).__name__}: {exc}"
            return None

    def _refused(self, exc: PublishRefusedError, logged: set[tuple[str, str]], delay: float) -> None:
        """A refused publish: counted, logged and reported as a finding once per (topic, reason) until a
        readings batch is acknowledged again; the refused messages stay in the outbox."""
        self.refused_total += 1
        detail: dict[str, Any] = {
            "topic": exc.topic,
            "reason": exc.reason,
            "reason_code": exc.reason_code,
            "seq_first": exc.seqs[0],
            "seq_last": exc.seqs[1],
        }
        self.last_refusal = detail
        key = (exc.topic, exc.reason)
        if key in logged:
            return
        logged.add(key)
        self._log.error("uplink_publish_refused", retry_in_s=round(delay, 2), **detail)
        if self.on_finding is not None:
            try:
                self.on_finding("uplink_refused", detail)
            except Exception as err:  # the audit's trouble must not stop the uplink
                self._log.error("uplink_finding_failed", error=f"{type(err).__name__}: {err}")

    def _maybe_shrink(self) -> None:
        """A broker closes the connection on a packet over its limit and says nothing else (3.1.1, or a
        v5 broker that announces no maximum): halve the byte cap below the batch that was in flight."""
        big = self._inflight_bytes_at_end
        if big <= _SHRINK_ABOVE:
            return
        new_cap = max(_SHRINK_ABOVE, min(self.bytes_cap, big) // 2)
        if new_cap < self.bytes_cap:
            self._log.warning(
                "uplink_batch_shrunk", batch_bytes=big, max_batch_bytes=new_cap, previous=self.bytes_cap
            )
            self.bytes_cap = new_cap

    def _describe(self, exc: BaseException) -> str:
        """The reason a connect failed, in words a technician can act on (aiomqtt hands TLS errors on as
        an MqttError carrying the ssl message, so the message is what there is to read)."""
        text = str(exc)
        if isinstance(exc, MqttConnectError):
            return f"broker refused the connection: {text}"
        if "CERTIFICATE_VERIFY_FAILED" in text:
            detail = text.split("certificate verify failed:", 1)[-1].split("(_ssl.c")[0].strip()
            ca = self.options.tls.ca_file if self.options.tls else "the system CAs"
            return f"TLS: the broker's certificate was not accepted by the CA in {ca}: {detail}"
        if "ALERT" in text and ("CERTIFICATE" in text or "DECRYPT_ERROR" in text or "UNKNOWN_CA" in text):
            detail = text.split("] ", 1)[-1].split("(_ssl.c")[0].strip()
            tls = self.options.tls
            cert = (tls.cert_file if tls else None) or "none configured (tls.cert_file)"
            return f"TLS: the broker rejected our client certificate {cert}: {detail}"
        if "[SSL" in text:
            return f"TLS: {text.split('] ', 1)[-1].split('(_ssl.c')[0].strip()}"
        return f"{type(exc).__name__}: {text}"

    def _connected(self, failed: int, down_since: float | None) -> None:
        """The end of an outage (or of a first connect that failed) carries how long and how many tries."""
        extra: dict[str, Any] = {}
        if down_since is not None:
            extra = {"outage_s": round(time.monotonic() - down_since, 1), "failed_attempts": failed}
        self._log.info("uplink_connected", reconnect=self.connects > 1, **extra)

    def status_payload(self, state: str) -> bytes:
        body = {
            "v": SCHEMA_VERSION,
            "gateway": self.gateway_id,
            "building": self.building_id,
            "state": state,
            "ts": self.clock.now().isoformat().replace("+00:00", "Z"),
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def _make_client(self) -> _Client:
        o = self.options
        username = password = None
        if o.credentials_file:
            username, password = read_credentials(o.credentials_file)
        tls_context = None
        if o.tls is not None:
            try:
                tls_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=o.tls.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise UplinkConfigError(f"cannot load the CA certificate: {exc}", path=o.tls.ca_file) from exc
            if o.tls.cert_file:
                try:
                    tls_context.load_cert_chain(o.tls.cert_file, o.tls.key_file)
                except (OSError, ssl.SSLError) as exc:
                    where = ", ".join(f for f in (o.tls.cert_file, o.tls.key_file) if f)
                    raise UplinkConfigError(
                        f"cannot load the client certificate and key: {exc}", path=where
                    ) from exc
            if o.tls.insecure_skip_hostname_check:
                tls_context.check_hostname = False
        # The will is the broker's word when we vanish: retained, so a late subscriber sees it too.
        will = aiomqtt.Will(self.topic_status, self.status_payload("offline"), qos=1, retain=True)
        v5 = o.mqtt_version == "5"
        session: dict[str, Any] = {"clean_start": True} if v5 else {"clean_session": True}
        assert o.host is not None  # the service starts MQTT only with a broker host
        client = _Client(
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
            # Redelivery is ours, from the outbox: no broker-side session needed.
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            **session,
            max_inflight_messages=max(20, o.inflight_batches + 8),
        )
        client.pending_calls_threshold = o.inflight_batches + 16
        return client

    async def _session(self, client: _Client, refusals: set[tuple[str, str]]) -> None:
        await client.publish(
            self.topic_status,
            self.status_payload("online"),
            qos=1,
            retain=True,
            timeout=self.options.publish_timeout_s,
        )
        # Not a TaskGroup: on 3.11 a TaskGroup whose child fails while the parent waits in __aexit__
        # leaves the parent's cancelling() count raised, and run() relies on that count (see there).
        tasks = [
            asyncio.create_task(self._watch(client), name="uplink-watch"),
            asyncio.create_task(self._pump_readings(client, refusals), name="uplink-readings"),
            asyncio.create_task(self._pump_events(client), name="uplink-events"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            await _cancel_all(tasks)
            # Shutting down: say so before the graceful disconnect (a will is only for vanishing).
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(
                    self.topic_status, self.status_payload("offline"), qos=1, retain=True, timeout=2
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

    def _current_schema(self, rows: Sequence[Row]) -> PointSchema:
        """The configured points now (a reload may have changed them), or the points seen so far."""
        if self.points is not None:
            key = tuple(self.points())
        else:
            for r in rows:
                if self._learned.get(r.point, (r.point, r.unit, None))[1] != r.unit:
                    del self._learned[r.point]  # a unit changed: the point moves to the end
                self._learned.setdefault(r.point, (r.point, r.unit, None))
            key = tuple(self._learned.values())
        if self._schema is None or (key is not self._schema_key and key != self._schema_key):
            self._schema, self._schema_key = make_schema(key), key
        return self._schema

    def _encoder(self, rows: Sequence[Row]) -> Callable[[Sequence[Row]], bytes]:
        """How a batch cut from ``rows`` is encoded, in the configured payload version."""
        head = self._audit_head()
        if self.options.payload == "v1":
            return lambda part: encode_batch(
                part, gateway=self.gateway_id, building=self.building_id, audit_head=head
            )
        schema = self._current_schema(rows)
        return lambda part: encode_batch_v2(
            part,
            schema=schema,
            gateway=self.gateway_id,
            building=self.building_id,
            audit_head=head,
            compress=self.options.compress,
        )

    async def _ensure_schema(self, client: _Client) -> None:
        """v2: the schema the next batch names is on the broker (retained, acknowledged) before it."""
        schema = self._schema
        if self.options.payload != "v2" or schema is None or self._schema_sent == schema.hash:
            return
        limit = self.options.max_packet_bytes
        if self.broker_max_packet:
            limit = min(limit, self.broker_max_packet)
        limit -= len(self.topic_schema) + _PACKET_OVERHEAD
        payload = encode_schema(
            schema, gateway=self.gateway_id, building=self.building_id, compress=self.options.compress
        )
        if len(payload) > limit and not self.options.compress:  # a schema must get through: zlib it anyway
            payload = encode_schema(schema, gateway=self.gateway_id, building=self.building_id, compress=True)
        if len(payload) > limit:  # never publishable: refused here, loudly, as the broker would (0x95)
            raise PublishRefusedError(
                topic=self.topic_schema,
                reason_code=0x95,
                reason=f"schema of {len(schema.points)} points is {len(payload)} bytes, over the packet "
                f"limit of {limit}: raise uplink.max_packet_bytes and the broker's max_packet_size, or use "
                "payload: v1",
                seqs=(0, 0),
            )
        rc = await client.publish_qos1(
            self.topic_schema, payload, retain=True, timeout=self.options.publish_timeout_s
        )
        _check_puback(rc, topic=self.topic_schema, seqs=(0, 0))
        self._schema_sent = schema.hash
        if schema.hash != self._schema_logged:  # a new schema is news; the same one after a reconnect is not
            self._schema_logged = schema.hash
            self._log.info("uplink_schema_published", schema=schema.hash, points=len(schema.points))

    async def _publish_batch(self, client: _Client, payload: bytes, seqs: tuple[int, int]) -> None:
        rc = await client.publish_qos1(self.topic_readings, payload, timeout=self.options.publish_timeout_s)
        _check_puback(rc, topic=self.topic_readings, seqs=seqs)
        self.published_bytes += publish_packet_bytes(
            self.topic_readings, len(payload), v5=self.options.mqtt_version == "5"
        )

    async def _pump_readings(self, client: _Client, refusals: set[tuple[str, str]]) -> None:
        assert self._wake_readings is not None
        wake = self._wake_readings
        o = self.options
        next_after = await asyncio.to_thread(self.outbox.acked_seq)
        self._schema_sent = None  # a new session states its schema again before its first batch
        # (seq_last, readings, payload bytes, PUBACK task)
        inflight: deque[tuple[int, int, int, asyncio.Task[None]]] = deque()
        try:
            while True:
                wake.clear()
                while len(inflight) < o.inflight_batches:
                    limit = self._batch_limit()
                    fast = await self._batch_from_polls(next_after, limit)
                    if fast is not None:
                        payload, first, last, count = fast
                        if not count:
                            break
                    else:
                        fetched = await self.outbox.apending(next_after, o.batch_max)
                        if not fetched:
                            break
                        encoded, rows = fit_batch(fetched, limit, self._encoder(fetched))
                        if encoded is None:
                            if inflight:  # dropped only at the head of the unsent rows: wait for the window
                                break
                            await self._drop_too_large(rows[0], limit)
                            next_after = rows[0].seq
                            continue
                        payload, first, last, count = encoded, rows[0].seq, rows[-1].seq, len(rows)
                    await self._ensure_schema(client)
                    task = asyncio.create_task(
                        self._publish_batch(client, payload, (first, last)), name=f"uplink-batch-{last}"
                    )
                    inflight.append((last, count, len(payload), task))
                    next_after = last
                if inflight:
                    seq_last, n, _, task = inflight[0]
                    await task  # PUBACK for the oldest batch; MqttError or a refusal ends the session
                    inflight.popleft()
                    # Coalesce: every finished batch at the head of the window in one ack.
                    while inflight and inflight[0][3].done() and inflight[0][3].exception() is None:
                        s, k, _, _ = inflight.popleft()
                        seq_last, n = s, n + k
                    await self.outbox.aack(seq_last)
                    self._acked_in_session = True
                    if refusals:
                        refusals.clear()
                        self._log.info("uplink_publish_accepted", seq_last=seq_last)
                    self.published_batches += 1
                    self.published_readings += n
                    continue
                with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel on 3.11
                    async with asyncio.timeout(self.idle_poll_s):
                        await wake.wait()
        finally:
            self._inflight_bytes_at_end = max((b for _, _, b, t in inflight if not t.done()), default=0)
            for _, _, _, t in inflight:
                t.cancel()
            for _, _, _, t in inflight:
                with contextlib.suppress(BaseException):
                    await t

    async def _batch_from_polls(self, after: int, limit: int) -> tuple[bytes, int, int, int] | None:
        """v2 from the stored polls, without a Row per reading: (payload, first seq, last seq, readings),
        with 0 readings when nothing is pending. None: take the Rows path (payload v1, no configured
        point list, a reading outside the schema, or a batch over ``limit`` bytes that must be cut)."""
        o = self.options
        if o.payload != "v2" or self.points is None:
            return None
        polls = await self.outbox.apending_polls(after, o.batch_max)
        if not polls:
            return b"", 0, 0, 0
        schema = self._current_schema(())
        if self._poll_index[0] is not schema or len(self._poll_index[1]) > 50_000:
            self._poll_index = (schema, {})  # its keys are shapes of polls: report by exception varies them
        out = encode_polls_v2(
            polls, after_seq=after, limit=o.batch_max, schema=schema, point_of=self.outbox.point_of,
            state_of=self.outbox.state_of, memo=self._poll_index[1], gateway=self.gateway_id,
            building=self.building_id, audit_head=self._audit_head(), compress=o.compress,
        )  # fmt: skip
        if out is None or len(out[0]) > limit:
            return None
        return out

    async def _drop_too_large(self, row: Row, limit: int) -> None:
        """A reading that does not fit in a message on its own can never be sent: an audited drop."""
        ev: DropEvent | None = await asyncio.to_thread(self.outbox.drop_unsendable, row.seq, "too_large")
        if ev is not None:
            self.dropped_too_large += 1
            self._log.error("reading_too_large", seq=row.seq, point=row.point, max_batch_bytes=limit)

    async def _pump_events(self, client: _Client) -> None:
        assert self._wake_events is not None
        wake = self._wake_events
        after = await asyncio.to_thread(self.outbox.acked_events_seq)
        while True:
            wake.clear()
            rows = await self.outbox.apending_events(after, 100)
            for ev in rows:
                rc = await client.publish_qos1(
                    self.topic_events,
                    encode_event(ev, gateway=self.gateway_id, building=self.building_id),
                    timeout=self.options.publish_timeout_s,
                )
                _check_puback(rc, topic=self.topic_events, seqs=(ev.seq, ev.seq))
                after = ev.seq
            if rows:
                await self.outbox.aack_events(after)
                continue
            with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel on 3.11
                async with asyncio.timeout(self.idle_poll_s):
                    await wake.wait()

"""Payload v2 against a real mosquitto: captured payloads decode to exactly what the outbox held, a
configuration change is a new schema hash published before the batch naming it, and the capped backoff
brings delivery back within max_backoff_s + 2 s of a 20 s broker outage."""

from __future__ import annotations

import asyncio
import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drivers.base import Quality, Reading
from edge_agent.cli.decode import decode_main
from edge_agent.config.settings import MqttUplink
from edge_agent.core.clock import SystemClock
from edge_agent.core.validate import ValidatedReading
from edge_agent.store.outbox import Outbox, Row
from edge_agent.uplink.mqtt import MqttUplinkService
from edge_agent.uplink.payload_v2 import Decoder, load_payload
from tests.integration.conftest import Broker
from tests.integration.test_uplink import (
    BUILDING,
    GATEWAY,
    Subscriber,
    make_outbox,
    running,
    uplink_options,
    wait_until,
)

T0 = datetime(2026, 7, 1, 8, 0, 0, 125000, tzinfo=UTC)
HEAD = (57, "9f" * 32)


def _points(devices: int, per: int) -> list[tuple[str, str | None, str | None]]:
    units = ("kWh", "degC", None, "Pa")
    return [(f"dev-{d}.p{k}", units[k % 4], f"dev-{d}") for d in range(devices) for k in range(per)]


def _vr(point: str, value: object, ts: datetime, unit: str | None, **kw: object) -> ValidatedReading:
    flags = kw.pop("flags", ())
    kw.setdefault("quality", Quality.GOOD)
    reading = Reading(point_id=point, value=value, ts=ts, **kw)  # type: ignore[arg-type]
    return ValidatedReading(reading=reading, flags=flags, unit=unit)  # type: ignore[arg-type]


def _polls(outbox: Outbox, points: list[tuple[str, str | None, str | None]], n: int, t: datetime) -> None:
    """n rounds of device polls: one commit per device, one timestamp per poll, odd readings among them."""
    devices: dict[str | None, list[tuple[str, str | None, str | None]]] = {}
    for p in points:
        devices.setdefault(p[2], []).append(p)
    for i in range(n):
        for j, pts in enumerate(devices.values()):
            ts = t + timedelta(seconds=10 * i, milliseconds=7 * j)
            batch = []
            for k, (pid, unit, _) in enumerate(pts):
                if k == 1 and i % 2:
                    batch.append(_vr(pid, None, ts, unit, quality=Quality.BAD, code="timeout"))
                elif k == 2:
                    batch.append(_vr(pid, bool(i % 2), ts, unit))
                elif k == 3 and i == 1:
                    batch.append(_vr(pid, "fan-fault", ts, unit, quality=Quality.UNCERTAIN, code="fault"))
                else:
                    flags = ("spike",) if (i + k) % 5 == 0 else ()
                    batch.append(_vr(pid, 20.0 + i + k / 7, ts, unit, flags=flags, quality=Quality.GOOD))
            outbox.append(batch)


def _typed(rows: list[Row]) -> list[tuple[Row, type]]:
    return [(r, type(r.value)) for r in rows]


def _uplink(outbox: Outbox, options: MqttUplink, **kw: Any) -> MqttUplinkService:
    return MqttUplinkService(
        options=options, outbox=outbox, gateway_id=GATEWAY, building_id=BUILDING, clock=SystemClock(), **kw
    )


def _decode_all(raw: list[tuple[str, bytes, float]]) -> list[Row]:
    """Every message in arrival order through one decoder (a schema must come before its batches)."""
    decoder, rows = Decoder(), []
    for topic, payload, _ in raw:
        batch = decoder.feed(topic, payload)
        if batch is not None:
            assert (batch.seq_first, batch.seq_last) == (batch.rows[0].seq, batch.rows[-1].seq)
            rows.extend(batch.rows)
    return rows


async def test_captured_v2_payloads_decode_to_exactly_the_outbox(broker: Broker, tmp_path: Path) -> None:
    points = _points(4, 6)
    outbox, conn = make_outbox(tmp_path / "state.db")
    _polls(outbox, points, 5, T0)
    ts = T0 + timedelta(minutes=5)
    # Outside the schema: a point the configuration no longer has, and a unit the schema does not say.
    outbox.append([_vr("gone.p0", 1.5, ts, "kWh"), _vr("dev-0.p0", 7, ts, "MWh", flags=("out_of_range",))])
    _polls(outbox, points, 2, ts)
    held = outbox.pending(0, 10_000)
    sub = Subscriber(broker.port)
    svc = _uplink(
        outbox, uplink_options(broker.port, batch_max=40), audit_head=lambda: HEAD, points=lambda: points
    )
    try:
        async with running(sub.run, "sub"):
            await asyncio.wait_for(sub.subscribed.wait(), 5)
            async with running(svc.run, "uplink"):
                await wait_until(lambda: outbox.stats().backlog == 0, 10, "the outbox drained")
                await wait_until(lambda: sub.seqs and max(sub.seqs) == held[-1].seq, 5, "the last batch")
    finally:
        conn.close()
    readings = [(t, p) for t, p, _ in sub.raw if t.endswith("/readings")]
    assert len(readings) >= 3 and any(p[:1] == b"\x78" for _, p in readings)  # several, compressed
    # The schema came first; decoding what the broker delivered gives back every row, type and all.
    first_schema = next(i for i, (t, _, _) in enumerate(sub.raw) if t.endswith("/schema"))
    first_batch = next(i for i, (t, _, _) in enumerate(sub.raw) if t.endswith("/readings"))
    assert first_schema < first_batch
    decoder = Decoder()
    for topic, payload, _ in sub.raw:
        batch = decoder.feed(topic, payload)
        assert batch is None or (batch.audit_head == HEAD and batch.version == 2)
    assert _typed(_decode_all(sub.raw)) == _typed(held)
    # The same bytes as `mosquitto_sub -v` prints them (TOPIC SPACE raw payload NEWLINE), through the CLI.
    capture = tmp_path / "capture.txt"
    capture.write_bytes(b"".join(t.encode() + b" " + p + b"\n" for t, p, _ in sub.raw))
    out, err = io.StringIO(), io.StringIO()
    assert decode_main(str(capture), out=out, err=err) == 0, err.getvalue()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [{"gateway": GATEWAY, "building": BUILDING, **r.as_payload()} for r in held]
    # Without the schema messages the decoder says what is missing instead of guessing.
    capture.write_bytes(b"".join(t.encode() + b" " + p + b"\n" for t, p, _ in sub.raw if "/schema" not in t))
    out, err = io.StringIO(), io.StringIO()
    assert decode_main(str(capture), out=out, err=err) == 1
    assert "no .../schema message seen so far declared" in err.getvalue() and out.getvalue() == ""


async def test_a_reload_adding_points_publishes_a_new_schema_before_its_batches(
    broker: Broker, tmp_path: Path
) -> None:
    config = _points(2, 4)
    outbox, conn = make_outbox(tmp_path / "state.db")
    sub = Subscriber(broker.port)
    # What the service passes: the running configuration, read per batch.
    svc = _uplink(outbox, uplink_options(broker.port), audit_head=None, points=lambda: config)
    try:
        async with running(sub.run, "sub"):
            await asyncio.wait_for(sub.subscribed.wait(), 5)
            async with running(svc.run, "uplink"):
                _polls(outbox, config, 2, T0)
                await wait_until(lambda: outbox.stats().backlog == 0, 10, "before the reload")
                before = svc.status()["schema"]
                # Rows queued before the reload and sent after it, then the new device's first polls.
                await asyncio.to_thread(outbox._lock.acquire)  # hold the uplink until both are queued
                try:
                    config = [*config, *_points(3, 4)[8:]]  # the reload: dev-2 with 4 points
                finally:
                    outbox._lock.release()
                _polls(outbox, config, 2, T0 + timedelta(minutes=1))
                await wait_until(lambda: outbox.stats().backlog == 0, 10, "after the reload")
        held = outbox.pending(0, 10_000)
    finally:
        conn.close()
    after = svc.status()["schema"]
    assert before != after
    hashes = [load_payload(p)["schema"] for t, p, _ in sub.raw if t.endswith("/schema")]
    assert hashes[0] == before and hashes[-1] == after
    got = _decode_all(sub.raw)
    assert _typed(got) == _typed(held)
    assert {r.point for r in got} >= {"dev-2.p0", "dev-2.p3"}


async def test_delivery_resumes_within_max_backoff_after_a_20s_outage(broker: Broker, tmp_path: Path) -> None:
    outbox, conn = make_outbox(tmp_path / "state.db")
    sub = Subscriber(broker.port)
    options = uplink_options(broker.port, max_backoff_s=5, backoff_initial_s=1)
    assert options.max_backoff_s == 5
    svc = _uplink(outbox, options, audit_head=None)
    pts = _points(1, 4)
    try:
        async with running(sub.run, "sub"), running(svc.run, "uplink"):
            await asyncio.wait_for(sub.subscribed.wait(), 5)
            _polls(outbox, pts, 1, T0)
            await wait_until(lambda: outbox.stats().backlog == 0, 10, "the first readings")
            broker.stop()
            before = outbox.acked_seq()
            deadline = time.monotonic() + 20
            i = 0
            while time.monotonic() < deadline:  # readings keep coming during the outage
                i += 1
                _polls(outbox, pts, 1, T0 + timedelta(seconds=i))
                await asyncio.sleep(1)
            assert not svc.connected and outbox.acked_seq() == before
            # Hold the outbox while the broker comes back until our subscriber is in again: the broker keeps
            # no state, and a batch published before we subscribe would be lost to this test.
            await asyncio.to_thread(outbox._lock.acquire)
            try:
                broker.start()
                restarted = time.monotonic()
                await asyncio.wait_for(sub.subscribed.wait(), 5)
            finally:
                outbox._lock.release()
            await wait_until(lambda: bool(sub.seqs) and max(sub.seqs) > before, 10, "the first batch")
    finally:
        conn.close()
    arrived = next(at for t, p, at in sub.raw if t.endswith("/readings") and at > restarted)
    assert arrived - restarted <= options.max_backoff_s + 2, f"{arrived - restarted:.1f} s after the restart"


def _named_points(n: int) -> list[tuple[str, str | None, str | None]]:
    """Points whose ids zlib cannot shrink much (a site with long, unpatterned names)."""
    import random

    rng = random.Random(7)
    return [(f"m{rng.getrandbits(64):016x}.energy", "kWh", "dev-0") for _ in range(n)]


async def test_a_schema_over_the_packet_limit_is_compressed_or_refused_loudly(
    broker: Broker, tmp_path: Path
) -> None:
    # compress: false, but the uncompressed schema (300 points, ~9 kB) is over max_packet_bytes (4096): the
    # schema goes compressed and delivery works.
    config = _named_points(300)
    outbox, conn = make_outbox(tmp_path / "a.db")
    sub = Subscriber(broker.port)
    opts = uplink_options(broker.port, max_packet_bytes=4096, compress=False)
    svc = _uplink(outbox, opts, audit_head=None, points=lambda: config)
    try:
        async with running(sub.run, "sub"):
            await asyncio.wait_for(sub.subscribed.wait(), 5)
            async with running(svc.run, "uplink"):
                outbox.append([_vr(p, 1.0, T0, u) for p, u, _ in config[:40]])
                await wait_until(lambda: len(sub.seqs) == 40, 10, "delivery")
    finally:
        conn.close()
    (schema,) = [p for t, p, _ in sub.raw if t.endswith("/schema")]
    assert schema[:1] == b"\x78" and len(schema) < 4096
    assert len(_decode_all(sub.raw)) == 40

    # 3,000 such points do not fit even compressed: refused before publishing, logged and a finding, the
    # readings kept (never a silent stall).
    config = _named_points(3000)
    outbox, conn = make_outbox(tmp_path / "b.db")
    findings: list[Any] = []
    svc = _uplink(
        outbox,
        opts,
        audit_head=None,
        points=lambda: config,
        on_finding=lambda kind, detail: findings.append((kind, detail)),
    )
    try:
        async with running(svc.run, "uplink"):
            outbox.append([_vr(p, 1.0, T0, u) for p, u, _ in config[:40]])
            await wait_until(lambda: svc.refused_total >= 1, 10, "the schema refused")
            assert outbox.stats().backlog == 40
    finally:
        conn.close()
    (kind, detail), *_ = findings
    assert kind == "uplink_refused" and detail["reason_code"] == 0x95
    assert "over the packet limit" in detail["reason"] and "payload: v1" in detail["reason"]


async def test_a_default_v2_batch_over_the_brokers_packet_limit_is_cut_not_lost(
    broker: Broker, tmp_path: Path
) -> None:
    """A broker whose max_packet_size is below one batch of the default 2000 readings: the batch from the
    stored polls is too large, so the uplink cuts it from the Rows instead; every reading arrives, in
    order, on one connection (MQTT v5: the limit comes in CONNACK)."""
    broker.stop()
    broker.extra = ["max_packet_size 1200"]
    broker.start()
    points = _points(4, 20)
    outbox, conn = make_outbox(tmp_path / "state.db")
    _polls(outbox, points, 30, T0)  # 2,400 readings of 80 points: about 2,500 bytes a 2000-reading batch
    held = outbox.pending(0, 10_000)
    sub = Subscriber(broker.port)
    svc = _uplink(
        outbox, uplink_options(broker.port, batch_max=2000), audit_head=lambda: HEAD, points=lambda: points
    )
    try:
        async with running(sub.run, "sub"):
            await asyncio.wait_for(sub.subscribed.wait(), 5)
            async with running(svc.run, "uplink"):
                await wait_until(lambda: outbox.stats().backlog == 0, 15, "the outbox drained")
                await wait_until(lambda: sub.seqs and max(sub.seqs) == held[-1].seq, 5, "the last batch")
    finally:
        conn.close()
    assert svc.connects == 1 and svc.broker_max_packet == 1200
    batches = [p for t, p, _ in sub.raw if t.endswith("/readings")]
    assert len(batches) > 2 and max(len(p) for p in batches) < 1200  # cut well below 2000 readings each
    assert _typed(_decode_all(sub.raw)) == _typed(held)

"""The uplink against a real mosquitto: broker outage, TLS with client certificates, storage-limit drops."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.base import Quality, Reading
from edge_agent.config.settings import MqttTls, MqttUplink, StorageOptions
from edge_agent.core.clock import SystemClock
from edge_agent.core.validate import ValidatedReading
from edge_agent.store.db import open_state_db
from edge_agent.store.outbox import Outbox
from edge_agent.uplink.mqtt import MqttUplinkService
from edge_agent.uplink.payload_v2 import Decoder, load_payload
from tests.integration.conftest import Broker

PREFIX = "t"
BUILDING = "110108B0001"
GATEWAY = "gw-test"
BASE = f"{PREFIX}/{BUILDING}/{GATEWAY}"


class Subscriber:
    """A plain QoS 1 subscriber that reconnects by itself and records every payload it gets."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.tls = tls
        self.readings: list[dict[str, Any]] = []  # batch payloads, in arrival order
        self.events: list[dict[str, Any]] = []
        self.status: list[dict[str, Any]] = []
        self.schemas: list[dict[str, Any]] = []
        self.decoder = Decoder()
        self.raw: list[tuple[str, bytes, float]] = []  # (topic, payload as sent, monotonic arrival)
        self.subscribed = asyncio.Event()
        self.connects = 0

    @property
    def seqs(self) -> list[int]:
        return [r["seq"] for batch in self.readings for r in batch["readings"]]

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier=f"sub-{id(self)}", tls_context=self.tls, timeout=5
                ) as client:
                    await client.subscribe(f"{BASE}/#", qos=1)
                    self.connects += 1
                    self.subscribed.set()
                    async for msg in client.messages:
                        raw = bytes(msg.payload)  # type: ignore[arg-type]
                        topic = str(msg.topic)
                        self.raw.append((topic, raw, time.monotonic()))
                        if topic.endswith("/readings"):  # either payload version, as v1 would carry it
                            self.readings.append(self.decoder.decode_batch(raw).as_v1())
                            continue
                        body = load_payload(raw)  # a v2 schema may be zlib-compressed
                        if topic.endswith("/schema"):
                            self.decoder.add_schema(raw)
                            self.schemas.append(body)
                        elif topic.endswith("/events"):
                            self.events.append(body)
                        elif topic.endswith("/status"):
                            self.status.append(body)
            except aiomqtt.MqttError:
                self.subscribed.clear()
                me = asyncio.current_task()
                if me is not None and me.cancelling():  # aiomqtt's __aexit__ may mask our cancellation
                    raise asyncio.CancelledError from None
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(coro_fn: Callable[[], Any], name: str) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.create_task(coro_fn(), name=name)
    try:
        yield task
    finally:
        task.cancel()
        # Bounded: a task that ignores its cancellation fails the test by name instead of hanging it.
        done, _ = await asyncio.wait({task}, timeout=10)
        assert done, f"task {name!r} did not stop within 10 s of being cancelled: {task.get_stack()}"
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def make_batch(n: int, start: int, ts: datetime | None = None) -> list[ValidatedReading]:
    ts = ts or datetime.now(UTC)
    return [
        ValidatedReading(
            reading=Reading(
                point_id=f"m{(start + i) % 7}", value=float(start + i), ts=ts, quality=Quality.GOOD
            ),
            flags=(),
            unit="kWh",
        )
        for i in range(n)
    ]


def uplink_options(port: int, **kw: Any) -> MqttUplink:
    base: dict[str, Any] = dict(
        host="127.0.0.1",
        port=port,
        topic_prefix=PREFIX,
        batch_max=50,
        backoff_initial_s=0.05,
        max_backoff_s=0.2,
        publish_timeout_s=5,
        connect_timeout_s=1,
        keepalive_s=5,
    )
    base.update(kw)
    return MqttUplink(**base)


def make_outbox(path: Path, **kw: Any) -> tuple[Outbox, Any]:
    conn = open_state_db(path)
    return Outbox(conn=conn, options=StorageOptions(**kw), clock=SystemClock(), gateway_id=GATEWAY), conn


def assert_no_gap(seqs: list[int], upto: int) -> None:
    got = set(seqs)
    missing = [s for s in range(1, upto + 1) if s not in got]
    assert not missing, f"missing seqs: {missing[:20]} (of {len(missing)})"


async def test_broker_outage_no_gap_duplicates_only_across_reconnect(broker: Broker, tmp_path: Path) -> None:
    outbox, conn = make_outbox(tmp_path / "state.db")
    sub = Subscriber(broker.port)
    svc = MqttUplinkService(
        options=uplink_options(broker.port),
        outbox=outbox,
        gateway_id=GATEWAY,
        building_id=BUILDING,
        audit_head=lambda: (7, "ab" * 32),
        clock=SystemClock(),
    )
    appended = 0

    async def appender() -> None:
        nonlocal appended
        while True:
            rng = await outbox.aappend(make_batch(13, appended))
            assert rng is not None
            appended = rng[1]
            await asyncio.sleep(0.01)

    try:
        # The subscriber first: the broker keeps nothing for one that subscribes late.
        async with running(sub.run, "sub"):
            await asyncio.wait_for(sub.subscribed.wait(), 5)
            async with running(svc.run, "uplink"), running(appender, "appender"):
                await wait_until(lambda: len(sub.seqs) > 300, 10, "first readings")
                broker.stop()
                outage_start = appended
                await wait_until(
                    lambda: appended > outage_start + 300, 10, "a backlog while the broker is down"
                )
                await wait_until(lambda: not svc.connected, 5, "the uplink to notice the outage")
                # Hold the outbox while the broker comes back so our subscriber is in before the backlog flows
                # (the broker keeps no state: a message published before we subscribe would be lost to us).
                await asyncio.to_thread(outbox._lock.acquire)
                try:
                    broker.start()
                    await asyncio.wait_for(sub.subscribed.wait(), 5)
                finally:
                    outbox._lock.release()
                target = appended + 50
                await wait_until(lambda: bool(sub.seqs) and max(sub.seqs) >= target, 15, "backlog drained")
                await wait_until(lambda: outbox.stats().backlog < 100, 5, "acks")
    finally:
        conn.close()

    seqs = sub.seqs
    assert_no_gap(seqs, target)
    assert svc.connects >= 2
    # Duplicates only across the reconnect: every batch after the first repeat starts where ordering resumes.
    firsts = [b["seq_first"] for b in sub.readings]
    backsteps = [i for i in range(1, len(firsts)) if firsts[i] <= sub.readings[i - 1]["seq_last"]]
    assert len(backsteps) <= 1, f"sequence went back more than once: {backsteps}"
    dup = len(seqs) - len(set(seqs))
    assert dup <= svc.options.batch_max * svc.options.inflight_batches
    # Batches are in seq order and carry the documented envelope.
    b0 = sub.readings[0]
    assert b0["v"] == 2 and b0["gateway"] == GATEWAY and b0["building"] == BUILDING
    assert b0["audit_head"] == {"seq": 7, "hash": "ab" * 32}
    assert [r["seq"] for r in b0["readings"]] == list(range(b0["seq_first"], b0["seq_last"] + 1))
    assert set(b0["readings"][0]) == {"seq", "point", "ts", "value", "unit", "quality", "code", "flags"}
    assert any(s["state"] == "online" for s in sub.status)
    # The schema came before the first batch, again after the reconnect, and names the points seen.
    assert len(sub.schemas) >= 2 and {p[0] for p in sub.schemas[-1]["points"]} == {f"m{i}" for i in range(7)}


async def test_tls_client_certificate_required(tls_broker: Broker, tmp_path: Path) -> None:
    tls = tls_broker.tls
    assert tls is not None
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    ctx.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    sub = Subscriber(tls_broker.port, tls=ctx)
    outbox, conn = make_outbox(tmp_path / "state.db")
    outbox.append(make_batch(120, 0))
    good = MqttUplinkService(
        options=uplink_options(
            tls_broker.port,
            tls=MqttTls(ca_file=str(tls.ca), cert_file=str(tls.client_cert), key_file=str(tls.client_key)),
        ),
        outbox=outbox,
        gateway_id=GATEWAY,
        building_id=BUILDING,
        audit_head=None,
        clock=SystemClock(),
    )
    no_cert = MqttUplinkService(
        options=uplink_options(tls_broker.port, tls=MqttTls(ca_file=str(tls.ca)), client_id="gw-nocert"),
        outbox=outbox,
        gateway_id=GATEWAY,
        building_id=BUILDING,
        audit_head=None,
        clock=SystemClock(),
    )
    try:
        # The subscriber first: the broker keeps nothing for one that subscribes late.
        async with running(sub.run, "sub"):
            await asyncio.wait_for(sub.subscribed.wait(), 5)
            async with running(no_cert.run, "uplink-nocert"):
                await wait_until(lambda: no_cert.last_error is not None, 5, "a refused connection")
                await asyncio.sleep(0.3)
                assert no_cert.connects == 0
            assert sub.seqs == []
            assert outbox.stats().backlog == 120
            async with running(good.run, "uplink"):
                await wait_until(lambda: len(set(sub.seqs)) == 120, 10, "readings over TLS")
                await wait_until(lambda: outbox.stats().backlog == 0, 5, "acks")
    finally:
        conn.close()
    assert good.connects == 1
    assert sorted(set(sub.seqs)) == list(range(1, 121))


async def test_storage_limit_drop_event_published(broker: Broker, tmp_path: Path) -> None:
    outbox, conn = make_outbox(tmp_path / "state.db", max_bytes=1_000_000, retain_acked=0)
    old = datetime.now(UTC) - timedelta(hours=1)
    try:
        # Broker unreachable for the uplink (not started yet): the backlog outgrows 1 MB.
        total = 0
        while not outbox.drops_waiting:  # the commit that crosses 1 MB drops (audited) at once
            rng = outbox.append(make_batch(2000, total, ts=old))
            assert rng is not None
            total = rng[1]
        ev = outbox.enforce_limits()
        assert ev is not None
        assert ev.reason == "max_bytes"
        assert ev.seq_first == 1
        assert ev.count == ev.seq_last - ev.seq_first + 1  # type: ignore[operator]
        st = outbox.stats()
        assert st.bytes_on_disk <= 1_000_000
        assert st.backlog == total - ev.count
        assert outbox.pending(0, 1)[0].seq == ev.seq_last + 1  # type: ignore[operator]
        assert outbox.enforce_limits() is None  # below the limit now: no second drop

        sub = Subscriber(broker.port)
        svc = MqttUplinkService(
            options=uplink_options(broker.port, batch_max=1000),
            outbox=outbox,
            gateway_id=GATEWAY,
            building_id=BUILDING,
            audit_head=None,
            clock=SystemClock(),
        )
        # The subscriber first: the broker keeps nothing for one that subscribes late.
        async with running(sub.run, "sub"):
            await asyncio.wait_for(sub.subscribed.wait(), 5)
            await svc.publish_event(ev.as_event())
            async with running(svc.run, "uplink"):
                await wait_until(lambda: len(sub.events) == 1, 10, "the drop event")
                await wait_until(
                    lambda: bool(sub.seqs) and max(sub.seqs) == total, 15, "the rest of the backlog"
                )
    finally:
        conn.close()
    e = sub.events[0]
    assert e["kind"] == "drop" and e["seq"] == 1 and e["gateway"] == GATEWAY
    assert e["event"]["count"] == ev.count
    assert (e["event"]["seq_first"], e["event"]["seq_last"]) == (ev.seq_first, ev.seq_last)
    assert sorted(set(sub.seqs)) == list(range(ev.seq_last + 1, total + 1))  # type: ignore[operator]


@pytest.mark.parametrize("bad", ["nocolon", ""])
def test_credentials_file_format(tmp_path: Path, bad: str) -> None:
    from edge_agent.uplink.mqtt import UplinkConfigError, read_credentials

    f = tmp_path / "cred"
    f.write_text("user:pa:ss\n")
    assert read_credentials(str(f)) == ("user", "pa:ss")
    f.write_text(bad)
    with pytest.raises(UplinkConfigError):
        read_credentials(str(f))

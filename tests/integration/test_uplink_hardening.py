"""The uplink against a real mosquitto that says no: ACL refusals (MQTT v5 PUBACK reason codes), a packet
size limit below one batch, a reading that can never fit, wrong credentials, TLS trouble."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from drivers.base import Quality, Reading
from edge_agent.config.settings import MqttTls
from edge_agent.core.clock import SystemClock
from edge_agent.core.validate import ValidatedReading
from edge_agent.store.outbox import Outbox
from edge_agent.uplink.mqtt import MqttUplinkService
from tests.integration.conftest import Broker
from tests.integration.test_uplink import (
    BASE,
    BUILDING,
    GATEWAY,
    Subscriber,
    make_batch,
    make_outbox,
    running,
    uplink_options,
    wait_until,
)

DENY_READINGS = f"""
topic read {BASE}/#
topic write {BASE}/status
topic write {BASE}/events
topic write {BASE}/schema
"""
ALLOW_ALL = f"""
topic readwrite {BASE}/#
"""


def _svc(outbox: Outbox, port: int, findings: list[Any] | None = None, **kw: Any) -> MqttUplinkService:
    return MqttUplinkService(
        options=uplink_options(port, **kw),
        outbox=outbox,
        gateway_id=GATEWAY,
        building_id=BUILDING,
        audit_head=None,
        clock=SystemClock(),
        on_finding=None if findings is None else (lambda kind, detail: findings.append((kind, detail))),
    )


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


@pytest.fixture
def acl_broker(broker: Broker) -> Iterator[Broker]:
    acl = broker.workdir / "acl"
    acl.write_text(DENY_READINGS)
    broker.stop()
    broker.extra = [f"acl_file {acl}"]
    broker.start()
    yield broker


async def test_acl_refusal_keeps_the_batch_then_delivery_resumes(acl_broker: Broker, tmp_path: Path) -> None:
    outbox, conn = make_outbox(tmp_path / "state.db")
    outbox.append(make_batch(120, 0))
    sub = Subscriber(acl_broker.port)
    findings: list[Any] = []
    try:
        with capture_logs() as logs:
            svc = _svc(outbox, acl_broker.port, findings)
            # The subscriber first: the broker keeps nothing for one that subscribes late.
            async with running(sub.run, "sub"):
                await asyncio.wait_for(sub.subscribed.wait(), 5)
                async with running(svc.run, "uplink"):
                    await wait_until(lambda: svc.refused_total >= 3, 10, "refusals, retried with backoff")
                    # Nothing was counted as delivered: every reading is still in the outbox, none arrived.
                    assert outbox.stats().backlog == 120 and outbox.acked_seq() == 0
                    assert sub.seqs == []
                    assert svc.status()["last_refusal"]["reason"] == "Not authorized"
                    # Each refused session connected fine, yet the backoff kept growing: a CONNACK is not
                    # progress (before, it reset the backoff, and a refusing broker got a connect a second).
                    assert svc.status()["backoff_attempt"] >= 3
                    (acl_broker.workdir / "acl").write_text(ALLOW_ALL)
                    acl_broker.reload()
                    await wait_until(
                        lambda: len(set(sub.seqs)) == 120, 10, "delivery after the ACL allows it"
                    )
                    await wait_until(lambda: outbox.stats().backlog == 0, 5, "acks")
    finally:
        conn.close()
    refused = _events(logs, "uplink_publish_refused")
    assert len(refused) == 1, refused  # once per reason, not per retry
    assert refused[0]["reason_code"] == 0x87 and refused[0]["topic"] == f"{BASE}/readings"
    assert refused[0]["seq_first"] == 1
    assert [k for k, _ in findings] == ["uplink_refused"]
    assert len(_events(logs, "uplink_publish_accepted")) == 1
    assert sorted(set(sub.seqs)) == list(range(1, 121))


async def test_mqtt_311_cannot_see_a_refusal(acl_broker: Broker, tmp_path: Path) -> None:
    """What the README warns about: under 3.1.1 mosquitto acknowledges the publish it drops."""
    outbox, conn = make_outbox(tmp_path / "state.db")
    outbox.append(make_batch(20, 0))
    try:
        svc = _svc(outbox, acl_broker.port, mqtt_version="3.1.1")
        async with running(svc.run, "uplink"):
            await wait_until(lambda: outbox.stats().backlog == 0, 10, "the (silently dropped) batch acked")
    finally:
        conn.close()
    assert svc.refused_total == 0


@pytest.mark.parametrize("version", ["5", "3.1.1"])
async def test_broker_packet_limit_below_one_batch(broker: Broker, tmp_path: Path, version: str) -> None:
    broker.stop()
    broker.extra = ["max_packet_size 20000"]
    broker.start()
    outbox, conn = make_outbox(tmp_path / "state.db")
    outbox.append(make_batch(2000, 0))  # ~110 bytes a reading: batches of 500 are ~55 kB
    sub = Subscriber(broker.port)
    try:
        with capture_logs() as logs:
            # v1: uncompressed, so 500 readings really are over the broker's limit.
            svc = _svc(outbox, broker.port, batch_max=500, mqtt_version=version, payload="v1")
            # The subscriber first: the broker keeps nothing for one that subscribes late.
            async with running(sub.run, "sub"):
                await asyncio.wait_for(sub.subscribed.wait(), 5)
                async with running(svc.run, "uplink"):
                    await wait_until(
                        lambda: len(set(sub.seqs)) == 2000, 15, "every reading in smaller batches"
                    )
                    await wait_until(lambda: outbox.stats().backlog == 0, 5, "acks")
    finally:
        conn.close()
    assert sorted(set(sub.seqs)) == list(range(1, 2001))
    if version == "5":  # the broker announces its limit in CONNACK: no connection is lost over it
        assert svc.connects == 1 and svc.broker_max_packet == 20000
    else:  # 3.1.1: the broker just closes; the uplink halves its batches until they pass
        shrunk = _events(logs, "uplink_batch_shrunk")
        assert 1 <= len(shrunk) <= 3 and shrunk[-1]["max_batch_bytes"] < 20000
        assert svc.connects <= 4


async def test_a_reading_that_never_fits_is_an_audited_drop(broker: Broker, tmp_path: Path) -> None:
    outbox, conn = make_outbox(tmp_path / "state.db")
    ts = datetime.now(UTC)
    huge = ValidatedReading(
        reading=Reading(point_id="blob", value="x" * 6000, ts=ts, quality=Quality.GOOD), flags=(), unit=None
    )
    outbox.append(make_batch(30, 0, ts))
    outbox.append([huge])
    outbox.append(make_batch(30, 31, ts))
    sub = Subscriber(broker.port)
    try:
        with capture_logs() as logs:
            # v1: zlib would squeeze the 6000 x's under the limit.
            svc = _svc(outbox, broker.port, max_packet_bytes=4096, batch_max=10, payload="v1")
            # The subscriber first: the broker keeps nothing for one that subscribes late.
            async with running(sub.run, "sub"):
                await asyncio.wait_for(sub.subscribed.wait(), 5)
                async with running(svc.run, "uplink"):
                    await wait_until(lambda: len(set(sub.seqs)) == 60, 10, "the readings around it")
                    await wait_until(lambda: outbox.stats().backlog == 0, 5, "acks")
        drop = outbox.enforce_limits()
    finally:
        conn.close()
    assert 31 not in sub.seqs
    assert drop is not None and drop.as_event()["reason"] == "too_large"
    assert (drop.seq_first, drop.seq_last, drop.count) == (31, 31, 1)
    assert _events(logs, "reading_too_large")[0]["seq"] == 31
    assert all(len(b["readings"]) <= 10 for b in sub.readings)


async def test_wrong_password_one_clear_line(broker: Broker, tmp_path: Path) -> None:
    pw = broker.workdir / "passwd"
    await asyncio.to_thread(
        subprocess.run,
        ["mosquitto_passwd", "-b", "-c", str(pw), "gw", "right"],
        check=True,
        capture_output=True,
    )
    broker.stop()
    broker.extra = [f"password_file {pw}"]
    broker.start()
    cred = tmp_path / "cred"
    cred.write_text("gw:wrong\n")
    outbox, conn = make_outbox(tmp_path / "state.db")
    try:
        with capture_logs() as logs:
            svc = _svc(outbox, broker.port, credentials_file=str(cred))
            async with running(svc.run, "uplink"):
                await wait_until(lambda: svc.last_error is not None, 5, "a refused connection")
                await asyncio.sleep(0.5)  # several retries
    finally:
        conn.close()
    failed = _events(logs, "uplink_connect_failed")
    assert len(failed) == 1, failed
    assert "broker refused the connection" in failed[0]["error"]
    assert "authori" in failed[0]["error"].lower()
    assert failed[0]["retry_in_s"] > 0


async def test_tls_wrong_ca_and_rejected_certificate(
    tls_broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tls = tls_broker.tls
    assert tls is not None
    other = tmp_path / "other-ca"
    other.mkdir()
    from tests.integration.conftest import make_tls_files

    wrong = make_tls_files(other)
    outbox, conn = make_outbox(tmp_path / "state.db")
    cases = {
        "wrong_ca": dict(tls=MqttTls(ca_file=str(wrong.ca), cert_file=str(tls.client_cert),
                                     key_file=str(tls.client_key))),
        "no_client_cert": dict(tls=MqttTls(ca_file=str(tls.ca))),
        "foreign_client_cert": dict(tls=MqttTls(ca_file=str(tls.ca), cert_file=str(wrong.client_cert),
                                                key_file=str(wrong.client_key))),
        "missing_ca": dict(tls=MqttTls(ca_file=str(tmp_path / "nope.pem"))),
    }  # fmt: skip
    errors: dict[str, str] = {}
    try:
        for name, kw in cases.items():
            with capture_logs() as logs:
                svc = _svc(outbox, tls_broker.port, client_id=f"gw-{name}", **kw)
                async with running(svc.run, f"uplink-{name}"):
                    await wait_until(lambda: bool(_events(logs, "uplink_connect_failed")), 5, name)
                    await asyncio.sleep(0.3)
            failed = _events(logs, "uplink_connect_failed")
            assert len(failed) == 1, (name, failed)
            errors[name] = failed[0]["error"]
    finally:
        conn.close()
    assert f"broker's certificate was not accepted by the CA in {wrong.ca}" in errors["wrong_ca"]
    assert "none configured" in errors["no_client_cert"]
    assert str(wrong.client_cert) in errors["foreign_client_cert"]
    assert "rejected our client certificate" in errors["no_client_cert"], errors
    assert "rejected our client certificate" in errors["foreign_client_cert"], errors
    assert str(tmp_path / "nope.pem") in errors["missing_ca"]
    assert "Operation timed out" not in " ".join(errors.values())
    # No traceback from a socket closed under a scheduled add_writer (asyncio's "Exception in callback").
    # (aiomqtt sometimes leaves its failed CONNACK future unretrieved, which asyncio reports as "Future
    # exception was never retrieved": aiomqtt's own race, not ours, so only the callback traceback counts.)
    callbacks = [
        r for r in caplog.records if r.name == "asyncio" and "Exception in callback" in r.getMessage()
    ]
    assert not callbacks, caplog.text


async def test_final_drain_sends_the_rest_within_its_budget(broker: Broker, tmp_path: Path) -> None:
    outbox, conn = make_outbox(tmp_path / "state.db")
    outbox.append(make_batch(230, 0))
    await outbox.aappend_event({"kind": "finding", "n": 1})
    sub = Subscriber(broker.port)
    try:
        with capture_logs() as logs:
            svc = _svc(outbox, broker.port)
            # The subscriber first: the broker keeps nothing for one that subscribes late.
            async with running(sub.run, "sub"):
                await asyncio.wait_for(sub.subscribed.wait(), 5)
                sent = await svc.final_drain(budget_s=2.0)
                await wait_until(lambda: len(set(sub.seqs)) == 230, 5, "the drained readings")
            assert sent == {"readings": 230, "events": 1}
            assert outbox.stats().backlog == 0 and outbox.stats().events_backlog == 0
            broker.stop()  # nobody to send to: bounded by the budget, the rest kept
            outbox.append(make_batch(10, 230))
            sent = await asyncio.wait_for(svc.final_drain(budget_s=0.5), 10)  # a hang fails, by name
    finally:
        conn.close()
    assert sent == {"readings": 0, "events": 0}
    assert len(_events(logs, "uplink_final_drain")) == 1
    assert len(_events(logs, "uplink_final_drain_incomplete")) == 1
    assert sub.events and sub.events[0]["kind"] == "finding"

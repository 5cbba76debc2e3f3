"""SIGKILL durability of the real agent: `edge-agent run` against the simulator and a real mosquitto.

Broker down while the agent polls (the backlog grows in the outbox), SIGKILL, broker up, agent again on
the same state directory: a QoS 1 subscriber gets every seq from 1 to N with no gap (duplicates
allowed, but never two different readings under one seq), seqs keep growing across the restart, and
the audit chain still verifies.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edge_agent.cli.audit import verify_main
from edge_agent.ops.status import query_status
from edge_agent.store.outbox import newest_seq, readings_after
from edge_agent.uplink.payload_v2 import Decoder
from tests.integration.conftest import Broker
from tests.integration.test_service import (
    AgentProcess,
    background,
    running_sim,
    wait_until,
    write_site,
)

GATEWAY = "gw-svc-01"  # from tests/fixtures/service/site.yaml
BUILDING = "370102A001"
PREFIX = "svc"

UPLINK = """
uplink:
  host: 127.0.0.1
  port: {port}
  topic_prefix: {prefix}
  batch_max: 50
  backoff_initial_s: 0.1
  max_backoff_s: 0.5
  connect_timeout_s: 2
  keepalive_s: 5
"""


class ReadingsSubscriber:
    """QoS 1 subscriber on {prefix}/{building}/{gateway}/readings; reconnects by itself."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.topic = f"{PREFIX}/{BUILDING}/{GATEWAY}/readings"
        self.readings: list[dict[str, Any]] = []  # every reading object, in arrival order
        self.subscribed = asyncio.Event()
        self.decoder = Decoder()

    @property
    def seqs(self) -> list[int]:
        return [r["seq"] for r in self.readings]

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier=f"svc-sub-{id(self)}", timeout=5
                ) as c:
                    await c.subscribe(self.topic, qos=1)
                    await c.subscribe(self.topic.replace("/readings", "/schema"), qos=1)  # v2: retained
                    self.subscribed.set()
                    async for msg in c.messages:
                        raw = bytes(msg.payload)  # type: ignore[arg-type]
                        if str(msg.topic).endswith("/schema"):
                            self.decoder.add_schema(raw)
                            continue
                        body = self.decoder.decode_batch(raw).as_v1()
                        assert body["gateway"] == GATEWAY and body["building"] == BUILDING
                        self.readings.extend(body["readings"])
            except aiomqtt.MqttError:
                self.subscribed.clear()
                me = asyncio.current_task()
                if me is not None and me.cancelling():
                    raise asyncio.CancelledError from None
                await asyncio.sleep(0.05)


def _agent_env() -> dict[str, str]:
    """The environment without systemd's variables: the agent runs as a plain child here."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "RUNTIME_DIRECTORY")
    }


def max_seq(db: Path) -> int:
    """Newest committed reading seq (0 before the first commit)."""
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        n = newest_seq(conn)
    except sqlite3.OperationalError:  # table not created yet
        return 0
    finally:
        conn.close()
    return int(n)


@pytest.mark.slow
async def test_sigkill_with_backlog_then_restart_loses_no_seq(broker: Broker, tmp_path: Path) -> None:
    broker.stop()  # down from the start: everything the first agent reads stays in the outbox
    env = _agent_env()
    state = tmp_path / "state"
    db = state / "edge-agent.db"
    sub = ReadingsSubscriber(broker.port)
    async with running_sim() as sim:
        assert sim.modbus_port is not None
        site = write_site(
            tmp_path / "etc", sim_port=sim.modbus_port, extra=UPLINK.format(port=broker.port, prefix=PREFIX)
        )
        agent = AgentProcess(site=site, state_dir=state, log=tmp_path / "agent.log", env=env)
        try:
            await agent.start()
            await wait_until(
                lambda: max_seq(db) >= 40, 20, "a backlog of 40 readings while the broker is down"
            )
            doc = await query_status(state / "status.sock")
            assert doc["uplink"]["connected"] is False and doc["uplink"]["published_readings"] == 0
            assert doc["backlog"]["backlog"] > 0
            await agent.kill()  # SIGKILL: no flush, no goodbye
            killed_last = max_seq(db)
            restarted_at = datetime.now(UTC)

            broker.start()
            async with background(sub.run, "subscriber"):
                await asyncio.wait_for(sub.subscribed.wait(), 10)
                await agent.start()  # same state dir, broker up
                await wait_until(
                    lambda: max_seq(db) >= killed_last + 40, 20, "new readings after the restart"
                )
                target = max_seq(db)
                await wait_until(
                    lambda: bool(sub.seqs) and max(sub.seqs) >= target, 20, f"seq {target} upstream"
                )
                agent.send(signal.SIGTERM)
                assert await agent.wait() == 0
                # The final flush's readings left before exit (uplink.final_drain), not at the next start.
                final = max_seq(db)
                await wait_until(lambda: max(sub.seqs) >= final, 5, f"final flush seq {final} upstream")
                target = final
        finally:
            await agent.kill()

    got = set(sub.seqs)
    missing = sorted(set(range(1, target + 1)) - got)
    assert not missing, f"{len(missing)} seqs never arrived, first {missing[:10]} (killed at {killed_last})"
    # Duplicates are allowed (QoS 1, at least once); one seq never names two different readings.
    by_seq: dict[int, dict[str, Any]] = {}
    for r in sub.readings:
        assert by_seq.setdefault(r["seq"], r) == r, f"seq {r['seq']} reused: {by_seq[r['seq']]} vs {r}"
    # Readings taken after the restart continue the sequence instead of starting again.
    after = [r["seq"] for r in sub.readings if datetime.fromisoformat(r["ts"]) > restarted_at]
    assert after and min(after) > killed_last
    # What `edge-agent audit verify --db` runs (in-process: a child interpreter costs over a second).
    report = io.StringIO()
    assert verify_main(db, out=report) == 0, report.getvalue()
    assert "intact" in report.getvalue()


async def test_a_sighup_that_adds_a_point_publishes_a_new_schema(broker: Broker, tmp_path: Path) -> None:
    """Payload v2 through the whole agent: a reload adding a point gives a new schema hash, published before
    the batches naming it, and everything the broker delivered decodes to the rows the outbox held."""
    env = _agent_env()
    state = tmp_path / "state"
    db = state / "edge-agent.db"
    new_point = "f2-ac1.room_temp"
    sub = ReadingsSubscriber(broker.port)
    async with running_sim() as sim, background(sub.run, "subscriber"):
        assert sim.modbus_port is not None
        await asyncio.wait_for(sub.subscribed.wait(), 10)
        uplink = UPLINK.format(port=broker.port, prefix=PREFIX)

        def without_point(text: str) -> str:
            return "\n".join(line for line in text.splitlines() if f"id: {new_point}," not in line)

        site = write_site(tmp_path / "etc", sim_port=sim.modbus_port, edit=without_point, extra=uplink)
        agent = AgentProcess(site=site, state_dir=state, log=tmp_path / "agent.log", env=env)
        try:
            await agent.start()
            await wait_until(lambda: len(sub.seqs) >= 20, 20, "readings under the first schema")
            assert len(sub.decoder.schemas) == 1
            write_site(tmp_path / "etc", sim_port=sim.modbus_port, extra=uplink)  # the point is back
            agent.send(signal.SIGHUP)
            await wait_until(
                lambda: any(r["point"] == new_point for r in sub.readings), 20, f"{new_point} upstream"
            )
            agent.send(signal.SIGTERM)
            assert await agent.wait() == 0
        finally:
            await agent.kill()
    first, second = sub.decoder.schemas.values()  # in arrival order; each came before its batches
    assert new_point not in {p[0] for p in first.points} and new_point in {p[0] for p in second.points}
    assert first.hash != second.hash
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        held = {r.seq: r.as_payload() for r in readings_after(conn, 0, 100_000)}
    finally:
        conn.close()
    assert all(held[r["seq"]] == r for r in sub.readings if r["seq"] in held)
    assert sum(r["seq"] in held for r in sub.readings) >= 20

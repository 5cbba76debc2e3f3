"""`edge-agent decode` behind the real `mosquitto_sub` (mosquitto-clients), not an imitation of its bytes.

1. `mosquitto_sub -v` prints TOPIC SPACE PAYLOAD NEWLINE with the payload written raw: NUL, CR and
   newline bytes inside a zlib payload come out as they are (checked here byte for byte, and the hex form
   `-F '%t %x'` beside it), so the decoder can read a compressed payload on until its zlib stream ends;
   an empty payload (a retained message cleared) is printed "(null)".
2. The whole path: `edge-agent run` against the simulator with payload v2 and compression, a real
   mosquitto, `mosquitto_sub -v -t 'svc/#' | edge-agent decode` as two child processes joined by a pipe;
   the decoded lines arrive while the agent runs and equal the outbox's rows exactly, types included.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edge_agent.cli.decode import decode_main
from edge_agent.store.outbox import readings_after
from edge_agent.uplink.payload_v2 import encode_schema, make_schema
from tests.integration.conftest import Broker
from tests.integration.test_service import (
    AgentProcess,
    edge_agent_cmd,
    running_sim,
    wait_until,
    write_site,
)
from tests.integration.test_service_durability import _agent_env, max_seq

MOSQUITTO_SUB = shutil.which("mosquitto_sub")
pytestmark = pytest.mark.skipif(
    MOSQUITTO_SUB is None,
    reason="mosquitto_sub not found (apt-get install mosquitto-clients, or `make system-deps`)",
)

GATEWAY = "gw-svc-01"  # from tests/fixtures/service/site.yaml
BUILDING = "370102A001"
PREFIX = "svc"

UPLINK = f"""
uplink:
  host: 127.0.0.1
  port: {{port}}
  topic_prefix: {PREFIX}
  payload: v2
  compress: true
  batch_max: 200
  backoff_initial_s: 0.1
  max_backoff_s: 0.5
  connect_timeout_s: 2
  keepalive_s: 5
"""


def _with_subscribe_log(broker: Broker) -> None:
    """Restart the broker logging subscriptions: the test knows when mosquitto_sub is in."""
    broker.extra.append("log_type subscribe")
    broker.stop()
    broker.start()


async def _subscribed(broker: Broker, client_id: str, timeout: float = 10) -> None:
    log = broker.workdir / f"mosquitto-{broker.starts}.log"
    await wait_until(
        lambda: f": {client_id} " in log.read_text(errors="replace"), timeout, f"{client_id} subscribed"
    )


@contextlib.asynccontextmanager
async def _mosquitto_sub(
    broker: Broker, client_id: str, *args: str, stdout: Any
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The real mosquitto_sub as a child; ended by its own PID."""
    assert MOSQUITTO_SUB is not None
    proc = await asyncio.create_subprocess_exec(
        MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(broker.port), "-i", client_id, "-q", "1", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await _subscribed(broker, client_id)
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _binary_payload() -> bytes:
    """A real zlib stream holding NUL, CR and newline bytes, its last byte a newline."""
    for n in range(10_000):
        noise = "".join(hashlib.sha256(f"{n}.{k}".encode()).hexdigest() for k in range(8))
        body = json.dumps({"v": 1, "gateway": GATEWAY, "noise": noise, "readings": []}).encode()
        packed = zlib.compress(body, 9)
        if all(b in packed[2:-1] for b in (b"\x00", b"\r", b"\n")) and packed.endswith(b"\n"):
            return packed
    raise AssertionError("no such stream in 10,000 tries")


async def test_mosquitto_sub_v_prints_raw_binary_payloads_byte_for_byte(
    broker: Broker, tmp_path: Path
) -> None:
    _with_subscribe_log(broker)
    schema = make_schema([(f"m.p{i}", "kWh", "m") for i in range(40)])
    # A schema message compressed (what the agent sends) and a payload full of awkward bytes.
    messages = [
        (f"{PREFIX}/{BUILDING}/{GATEWAY}/schema", encode_schema(schema, gateway=GATEWAY, building=BUILDING)),
        (f"{PREFIX}/{BUILDING}/{GATEWAY}/events", _binary_payload()),
        (f"{PREFIX}/{BUILDING}/{GATEWAY}/status", b'{"v":1,"online":true}'),
        (f"{PREFIX}/{BUILDING}/{GATEWAY}/schema", b""),  # what clearing a retained schema sends
    ]
    assert messages[0][1][:1] == b"\x78"
    raw, hexed = tmp_path / "raw.txt", tmp_path / "hex.txt"
    with raw.open("wb") as raw_out, hexed.open("wb") as hex_out:
        async with (
            _mosquitto_sub(broker, "ft-raw", "-v", "-t", f"{PREFIX}/#", stdout=raw_out),
            _mosquitto_sub(broker, "ft-hex", "-F", "%t %x", "-t", f"{PREFIX}/#", stdout=hex_out),
            aiomqtt.Client("127.0.0.1", broker.port) as pub,
        ):
            for topic, payload in messages:
                await pub.publish(topic, payload, qos=1)
            await wait_until(
                lambda: (
                    raw.stat().st_size >= sum(len(t) + len(p) + 2 for t, p in messages)
                    and hexed.read_bytes().count(b"\n") >= len(messages)
                ),
                10,
                "every message printed",
            )
    # -v prints an empty payload as "(null)"; the decoder reads it as the empty message it is.
    assert raw.read_bytes() == b"".join(t.encode() + b" " + (p or b"(null)") + b"\n" for t, p in messages)
    assert hexed.read_bytes() == b"".join(t.encode() + b" " + p.hex().encode() + b"\n" for t, p in messages)
    # Both forms decode (nothing to print: no readings; exit 0 means every message was understood).
    for capture in (raw, hexed):
        out, err = io.StringIO(), io.StringIO()
        assert decode_main(str(capture), out=out, err=err) == 0, err.getvalue()
        assert out.getvalue() == ""


def _canonical(line: dict[str, Any]) -> str:
    return json.dumps(line, sort_keys=True, ensure_ascii=False)  # True and 1, 1 and 1.0 stay apart


@pytest.mark.slow
async def test_agent_to_mosquitto_sub_piped_through_decode_gives_the_outbox_rows(
    broker: Broker, tmp_path: Path
) -> None:
    _with_subscribe_log(broker)
    state = tmp_path / "state"
    db = state / "edge-agent.db"
    raw = tmp_path / "raw.txt"
    decoded: list[str] = []
    # mosquitto_sub -v ... | edge-agent decode: the two processes share a pipe, as in a shell.
    read_end, write_end = os.pipe()
    async with running_sim() as sim:
        assert sim.modbus_port is not None
        site = write_site(tmp_path / "etc", sim_port=sim.modbus_port, extra=UPLINK.format(port=broker.port))
        # As from a user's shell: a pipe on stdout is block-buffered unless the command flushes.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        decode = await asyncio.create_subprocess_exec(
            *edge_agent_cmd(), "decode", stdin=read_end, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        os.close(read_end)

        async def collect() -> None:
            assert decode.stdout is not None
            while line := await decode.stdout.readline():
                decoded.append(line.decode())

        collector = asyncio.create_task(collect())
        agent = AgentProcess(site=site, state_dir=state, log=tmp_path / "agent.log", env=_agent_env())
        try:
            with raw.open("wb") as raw_out:
                async with (
                    _mosquitto_sub(broker, "ft-decode", "-v", "-t", f"{PREFIX}/#", stdout=write_end),
                    _mosquitto_sub(broker, "ft-raw", "-v", "-t", f"{PREFIX}/#", stdout=raw_out),
                ):
                    os.close(write_end)
                    write_end = -1
                    await agent.start()
                    await wait_until(lambda: len(decoded) >= 40, 30, "40 decoded readings while running")
                    agent.send(signal.SIGTERM)
                    assert await agent.wait() == 0
                    final = max_seq(db)

                    def last_seq() -> int:
                        return max((json.loads(line)["seq"] for line in decoded), default=0)

                    # Every reading is out while mosquitto_sub still runs (no EOF yet): decode flushes.
                    await wait_until(lambda: last_seq() >= final, 10, f"seq {final} decoded")
            # mosquitto_sub ended: decode reads EOF and exits.
            async with asyncio.timeout(10):
                await collector
                assert decode.stderr is not None
                err = (await decode.stderr.read()).decode()
                assert await decode.wait() == 0, err
        finally:
            if write_end >= 0:
                os.close(write_end)
            await agent.kill()
            if decode.returncode is None:
                decode.kill()
                await decode.wait()
            collector.cancel()
    assert err == ""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        held = readings_after(conn, 0, 1_000_000)
    finally:
        conn.close()
    assert held and held[0].seq == 1 and held[-1].seq == final
    expected = [_canonical({"gateway": GATEWAY, "building": BUILDING, **r.as_payload()}) for r in held]
    # At least once: a reconnect on a loaded machine may send a batch again. Dedupe on seq as a consumer
    # does (docs/uplink-schema.md); a repeat must be the same reading.
    by_seq: dict[int, str] = {}
    for line in decoded:
        got = _canonical(json.loads(line))
        assert by_seq.setdefault(json.loads(line)["seq"], got) == got
    assert list(by_seq.values()) == expected
    # v2 with compression really travelled: a compressed schema and compressed readings batches.
    captured = raw.read_bytes()
    assert f"{PREFIX}/{BUILDING}/{GATEWAY}/schema \x78".encode() in captured
    assert f"{PREFIX}/{BUILDING}/{GATEWAY}/readings \x78".encode() in captured

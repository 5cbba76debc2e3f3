"""`edge-agent bench uplink`: backlog drain rate to a real mosquitto, with a one-reading-per-message baseline.

Starts its own mosquitto on a free 127.0.0.1 port (persistence off) and stops exactly that process.
Every run goes through the same path (outbox on a temp file, MqttUplinkService, QoS 1, in-order acks).
The backlog is 20 devices x 40 float32 points polled every 10 s: one timestamp per device poll. The
batched drain runs with payload v2 (the default) and v1 on the same readings, MQTT v5 both, and v2 again
with 3.1.1; the baseline is one v1 message per reading (``batch_max`` 1). ``wire_bytes_per_reading`` is
the readings PUBLISH packets as sent (fixed header, topic, packet id, v5 property length, payload:
``publish_packet_bytes``) over the readings; the retained schema message (once per connection) and the
broker's PUBACKs are not in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drivers.base import Quality, Reading
from edge_agent.config.settings import MqttUplink, StorageOptions
from edge_agent.core.clock import SystemClock
from edge_agent.core.validate import ValidatedReading
from edge_agent.devtools.simwire import free_tcp_port
from edge_agent.store.db import open_state_db
from edge_agent.store.outbox import Outbox
from edge_agent.uplink.mqtt import MqttUplinkService

__all__ = ["BenchError", "bench_uplink", "broker"]


class BenchError(Exception):
    pass


def _mosquitto() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise BenchError("mosquitto not found: apt-get install mosquitto (or `make system-deps`)")
    return found


@contextlib.contextmanager
def broker(workdir: Path) -> Iterator[int]:
    """A mosquitto of our own on a free 127.0.0.1 port (persistence off); yields the port, kills it after."""
    port = free_tcp_port()
    conf = workdir / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false", "log_dest none"]
    if os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [_mosquitto(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise BenchError(f"mosquitto exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError("mosquitto did not start listening") from None
                time.sleep(0.02)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()


DEVICES, POINTS = 20, 40


def _points() -> list[tuple[str, str | None, str | None]]:
    """The bench site's points as the configuration would list them: (id, unit, device)."""
    units = ("kWh", "kW", "degC", "%")
    return [
        (f"dev-{d:02d}.p{k:02d}", units[k % 4], f"dev-{d:02d}") for d in range(DEVICES) for k in range(POINTS)
    ]


def _float32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def _fill(outbox: Outbox, n: int, chunk: int = 1000) -> None:
    """Device polls as a real site makes them: each device's 40 float32 values share one timestamp
    (devices 50 ms apart, a round every 10 s), counters rise, the rest wander; now and then a spike flag."""
    rng = random.Random(42)
    points = _points()
    state = [rng.uniform(100, 50_000) if j % 4 == 0 else rng.uniform(15, 30) for j in range(len(points))]
    t0 = datetime.now(UTC)
    batch: list[ValidatedReading] = []
    for i in range(n):
        poll, j = divmod(i, len(points))
        d = j // POINTS
        state[j] += rng.uniform(0, 2) if j % 4 == 0 else rng.gauss(0, 0.1)
        ts = t0 + timedelta(seconds=10 * poll, milliseconds=50 * d)
        batch.append(
            ValidatedReading(
                reading=Reading(point_id=points[j][0], value=_float32(state[j]), ts=ts, quality=Quality.GOOD),
                flags=("spike",) if i % 997 == 0 else (),
                unit=points[j][1],
            )
        )
        if len(batch) >= chunk:
            outbox.append(batch)
            batch = []
    if batch:
        outbox.append(batch)


async def _drain(
    port: int, db: Path, n: int, batch_max: int, version: str = "5", payload: str = "v2"
) -> tuple[float, int, int]:
    """Seconds to drain, bytes on disk, readings PUBLISH bytes on the wire."""
    conn = open_state_db(db)
    try:
        outbox = Outbox(
            conn=conn, options=StorageOptions(retain_acked=0), clock=SystemClock(), gateway_id="bench"
        )
        await asyncio.to_thread(_fill, outbox, n)
        # Storage cost per reading, the WAL folded in (stats() counts a live WAL too, up to its size limit).
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        size = outbox.stats().bytes_on_disk
        points = _points()
        svc = MqttUplinkService(
            options=MqttUplink(
                host="127.0.0.1",
                port=port,
                batch_max=batch_max,
                backoff_initial_s=0.05,
                mqtt_version=version,  # type: ignore[arg-type]
                payload=payload,  # type: ignore[arg-type]
            ),
            outbox=outbox,
            gateway_id="bench",
            building_id="B0000",
            audit_head=lambda: (1, "0" * 64),
            clock=SystemClock(),
            idle_poll_s=0.05,
            points=lambda: points,
        )
        start = time.perf_counter()
        task = asyncio.create_task(svc.run(), name="bench-uplink")
        try:
            while (await outbox.astats()).backlog > 0:
                if task.done():
                    task.result()
                    raise BenchError("uplink stopped")
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - start
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return elapsed, size, svc.published_bytes
    finally:
        conn.close()


async def bench_uplink(*, n: int = 50_000, baseline_n: int = 5_000, batch_max: int = 500) -> dict[str, Any]:
    """Drain rates (readings/s) and wire bytes per reading for payload v2 and v1, bytes per stored
    reading, and the one-message-per-reading rate."""
    with tempfile.TemporaryDirectory(prefix="edge-bench-uplink-") as tmp:
        d = Path(tmp)
        with broker(d) as port:
            v2_s, size, v2_wire = await _drain(port, d / "v2.db", n, batch_max)
            v1_s, _, v1_wire = await _drain(port, d / "v1.db", n, batch_max, payload="v1")
            v311_s, _, _ = await _drain(port, d / "v2-311.db", n, batch_max, "3.1.1")
            single_s, _, single_wire = await _drain(port, d / "single.db", baseline_n, 1, payload="v1")
    return {
        "readings": n,
        "batch_max": batch_max,
        "mqtt_version": "5",
        "payload": "v2",
        "drain_readings_per_s": round(n / v2_s, 1),
        "drain_v1_readings_per_s": round(n / v1_s, 1),
        "drain_mqtt311_readings_per_s": round(n / v311_s, 1),
        "wire_bytes_per_reading": {"v1": round(v1_wire / n, 1), "v2": round(v2_wire / n, 1)},
        "bytes_per_reading": round(size / n, 1),
        "baseline_readings": baseline_n,
        "per_message_readings_per_s": round(baseline_n / single_s, 1),
        "per_message_wire_bytes_per_reading": round(single_wire / baseline_n, 1),
    }

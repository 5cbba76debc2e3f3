"""`edge-agent bench uplink`: backlog drain rate to a real mosquitto, with a one-reading-per-message baseline.

Starts its own mosquitto on a free 127.0.0.1 port (persistence off) and stops exactly that process.
Both runs go through the same path (outbox on a temp file, MqttUplinkService, QoS 1, in-order acks);
only ``batch_max`` differs, so the ratio is what batching buys. The batched drain runs with MQTT v5 (the
default: PUBACK reason codes read) and again with 3.1.1, in the same run, so the cost of v5 is visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
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


def _fill(outbox: Outbox, n: int, chunk: int = 1000) -> None:
    """Readings shaped like a real site: ~40 points, float values, a unit, some with a flag."""
    t0 = datetime.now(UTC)
    i = 0
    while i < n:
        k = min(chunk, n - i)
        ts = t0 + timedelta(seconds=i // 40)
        outbox.append(
            [
                ValidatedReading(
                    reading=Reading(
                        point_id=f"ahu-{(i + j) % 40:02d}.energy",
                        value=12345.678 + (i + j) * 0.01,
                        ts=ts,
                        quality=Quality.GOOD,
                    ),
                    flags=("spike",) if (i + j) % 997 == 0 else (),
                    unit="kWh",
                )
                for j in range(k)
            ]
        )
        i += k


async def _drain(port: int, db: Path, n: int, batch_max: int, version: str = "5") -> tuple[float, int]:
    conn = open_state_db(db)
    try:
        outbox = Outbox(
            conn=conn, options=StorageOptions(retain_acked=0), clock=SystemClock(), gateway_id="bench"
        )
        await asyncio.to_thread(_fill, outbox, n)
        # Storage cost per reading, the WAL folded in (stats() counts a live WAL too, up to its size limit).
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        size = outbox.stats().bytes_on_disk
        svc = MqttUplinkService(
            options=MqttUplink(
                host="127.0.0.1",
                port=port,
                batch_max=batch_max,
                backoff_initial_s=0.05,
                mqtt_version=version,  # type: ignore[arg-type]
            ),
            outbox=outbox,
            gateway_id="bench",
            building_id="B0000",
            audit_head=lambda: (1, "0" * 64),
            clock=SystemClock(),
            idle_poll_s=0.05,
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
        return elapsed, size
    finally:
        conn.close()


async def bench_uplink(*, n: int = 50_000, baseline_n: int = 5_000, batch_max: int = 500) -> dict[str, Any]:
    """Returns drain rate (readings/s), bytes per stored reading, and the one-message-per-reading rate."""
    with tempfile.TemporaryDirectory(prefix="edge-bench-uplink-") as tmp:
        d = Path(tmp)
        with broker(d) as port:
            batched_s, size = await _drain(port, d / "batched.db", n, batch_max)
            v311_s, _ = await _drain(port, d / "batched311.db", n, batch_max, "3.1.1")
            single_s, _ = await _drain(port, d / "single.db", baseline_n, 1)
    return {
        "readings": n,
        "batch_max": batch_max,
        "mqtt_version": "5",
        "drain_readings_per_s": round(n / batched_s, 1),
        "drain_mqtt311_readings_per_s": round(n / v311_s, 1),
        "bytes_per_reading": round(size / n, 1),
        "baseline_readings": baseline_n,
        "per_message_readings_per_s": round(baseline_n / single_s, 1),
    }

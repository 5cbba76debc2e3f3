"""`edge-agent bench pipeline`: the whole agent (drivers, validation, snapshot, enforcement, outbox, ledger,
MQTT uplink) as a child process against simulator children and a mosquitto of its own.

Two runs in the same invocation, one after the other against the same simulators and broker:
- ``agent``: the site as an integrator writes it (planned Modbus reads, batched uplink messages);
- ``baseline``: how the common gateways work: one request per point (``max_registers: 2``, one float32)
  and one message per reading (``batch_max: 1``).

Figures per run: CPU of the agent process per 1,000 readings stored (end to end: polled, validated,
stored, published), RSS, start to first stored reading, `check` time, outbox table bytes per held
reading and MQTT bytes (topic + payload) per reading acknowledged upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.devtools.bench_uplink import BenchError, broker
from edge_agent.devtools.bigsite import bench_site_yaml
from edge_agent.devtools.measure import wait_port
from edge_agent.devtools.simwire import free_tcp_port

__all__ = ["bench_pipeline"]

_ROOT = Path(__file__).resolve().parents[2]
_POLICY = _ROOT / "config" / "policy.yaml"
_UNITS_PER_SIM = 150  # the simulator serves bench units 100..255
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _query(db: Path, sql: str) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return 0
    try:
        row = conn.execute(sql).fetchone()
        return int(row[0]) if row and row[0] is not None else 0
    except sqlite3.Error:  # tables not created yet
        return 0
    finally:
        conn.close()


def _outbox_bytes(db: Path) -> tuple[float | None, int | None]:
    """(bytes per reading the outbox holds, bytes of its point and state dictionary). SQLite's dbstat:
    page bytes minus unused bytes, so acknowledged and pruned rows do not count. Per reading: the
    readings (the polls table: what grows with the backlog); the dictionary is paid once per point."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None, None

    def used(*tables: str) -> int:
        marks = ", ".join("?" * len(tables))
        sql = f"SELECT coalesce(sum(pgsize - unused), 0) FROM dbstat WHERE name IN ({marks})"
        return int(conn.execute(sql, tables).fetchone()[0])

    try:
        rows = conn.execute("SELECT coalesce(sum(n), 0) FROM outbox_polls").fetchone()[0]
        per_reading = used("outbox_polls")
        dictionary = used("outbox_points", "outbox_points_key", "outbox_states")
    except sqlite3.Error:
        return None, None
    finally:
        conn.close()
    return (round(per_reading / rows, 1) if rows and per_reading else None), dictionary


def _stored(db: Path) -> int:
    return _query(db, "SELECT seq FROM sqlite_sequence WHERE name = 'outbox_readings'")


def _acked(db: Path) -> int:
    return _query(db, "SELECT acked_seq FROM outbox_cursor WHERE stream = 'readings'")


def _site(
    workdir: Path,
    name: str,
    *,
    points: int,
    interval_s: float,
    endpoints: list[tuple[str, int]],
    mqtt: int,
    baseline: bool,
) -> Path:
    per_device = min(points, 40)
    devices = -(-points // per_device)
    text = bench_site_yaml(devices=devices, points=per_device, endpoints=endpoints, interval_s=interval_s)
    if baseline:  # one float32 per request
        text = text.replace("    points:\n", "    max_registers: 2\n    points:\n")
    # The baseline sends one v1 message per reading, as a gateway without batching does.
    uplink = "batch_max: 1, payload: v1" if baseline else "payload: v2"  # the agent: the defaults
    text += (
        f"policy: {_POLICY}\n"
        f"storage: {{path: {workdir / name / 'state.db'}}}\n"
        f"uplink: {{host: 127.0.0.1, port: {mqtt}, {uplink}}}\n"
    )
    (workdir / name).mkdir()
    site = workdir / name / "site.yaml"
    site.write_text(text, encoding="utf-8")
    return site


def _check(site: Path) -> tuple[float, float]:
    """Wall and CPU seconds of `edge-agent check` in a fresh process (imports included)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "check", "-c", str(site)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise BenchError(f"edge-agent check {site} failed with exit code {proc.returncode}")
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


class _Wire:
    """Counts topic + payload bytes of the readings messages the broker delivers to a subscriber."""

    def __init__(self) -> None:
        self.bytes = 0

    async def listen(self, port: int, ready: asyncio.Event) -> None:
        import aiomqtt

        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-pipeline-wire") as client:
            await client.subscribe("edge/+/+/readings", qos=0)
            ready.set()
            async for msg in client.messages:
                payload = msg.payload if isinstance(msg.payload, bytes) else b""
                self.bytes += len(msg.topic.value.encode()) + len(payload)


async def _run_agent(
    site: Path,
    *,
    interval_s: float,
    seconds: float,
    wire: _Wire,
    progress: Callable[[str], None],
    profile: Path | None = None,
) -> dict[str, Any]:
    db = site.parent / "state.db"
    check_wall, check_cpu = await asyncio.to_thread(_check, site)
    t0 = time.perf_counter()
    log = (site.parent / "agent.log").open("wb")
    prefix = [sys.executable] if profile is None else [sys.executable, "-m", "cProfile", "-o", str(profile)]
    proc = subprocess.Popen(  # noqa: ASYNC220
        [*prefix, "-m", "edge_agent.cli", "run", "-c", str(site), "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        start_s = None
        while time.perf_counter() - t0 < 60:
            if proc.poll() is not None:
                tail = (site.parent / "agent.log").read_text(errors="replace")[-2000:]
                raise BenchError(f"edge-agent run exited with code {proc.returncode}: {tail}")
            if _stored(db) > 0:
                start_s = time.perf_counter() - t0
                break
            await asyncio.sleep(0.02)
        if start_s is None:
            raise BenchError("no reading stored within 60 s of start")
        progress(f"  first reading stored {start_s:.2f} s after start; warming up {2 * interval_s:g} s")
        await asyncio.sleep(2 * interval_s)
        cpu0, stored0, acked0, wire0, w0 = (
            _cpu_s(proc.pid),
            _stored(db),
            _acked(db),
            wire.bytes,
            time.perf_counter(),
        )
        progress(f"  measuring {seconds:g} s")
        await asyncio.sleep(seconds)
        cpu1, stored1, acked1, wire1, w1 = (
            _cpu_s(proc.pid),
            _stored(db),
            _acked(db),
            wire.bytes,
            time.perf_counter(),
        )
        rss = _rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 5)
        log.close()
    stored = stored1 - stored0
    acked = acked1 - acked0
    disk, dictionary = _outbox_bytes(db)
    return {
        "cpu_ms_per_1k_points": round((cpu1 - cpu0) / stored * 1e6, 2) if stored else None,
        "cpu_pct_of_core": round((cpu1 - cpu0) / (w1 - w0) * 100, 1),
        "readings_per_s": round(stored / (w1 - w0), 1),
        "rss_mb": round(rss, 1),
        "start_s": round(start_s, 2),
        "check_s": round(check_wall, 2),
        "check_cpu_s": round(check_cpu, 2),
        "disk_bytes_per_reading": disk,
        "disk_dictionary_bytes": dictionary,
        "wire_bytes_per_reading": round((wire1 - wire0) / acked, 1) if acked else None,
        "readings_acked_per_s": round(acked / (w1 - w0), 1),
    }


async def bench_pipeline(
    *,
    points: int,
    interval_s: float,
    seconds: float,
    progress: Callable[[str], None],
    baseline: bool = True,
    profile: Path | None = None,
) -> dict[str, Any]:
    """``profile``: run the agent (not the baseline) under cProfile and write its stats there (the
    profiler's overhead inflates that run's CPU figure)."""
    if not _POLICY.is_file():
        raise BenchError(f"{_POLICY} not found: run the benchmark from a source checkout")
    per_device = min(points, 40)
    devices = -(-points // per_device)
    n_sims = -(-devices // _UNITS_PER_SIM)
    sims: list[subprocess.Popen[bytes]] = []
    endpoints: list[tuple[str, int]] = []
    with tempfile.TemporaryDirectory(prefix="edge-bench-pipeline-") as d, broker(Path(d)) as mqtt:
        workdir = Path(d)
        try:
            units_left = devices
            for _ in range(n_sims):
                port = free_tcp_port()
                units = min(units_left, -(-devices // n_sims))
                units_left -= units
                cmd = [
                    sys.executable,
                    "-m",
                    "sim",
                    "--port",
                    str(port),
                    "--bench-units",
                    str(units),
                    "--bench-points",
                    str(per_device),
                    "--no-script",
                    "--no-bacnet",
                ]
                sims.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # noqa: ASYNC220
                endpoints.append(("127.0.0.1", port))
            for (host, port), proc in zip(endpoints, sims, strict=True):
                await wait_port(host, port, proc)
            progress(f"{devices} devices x {per_device} points on {n_sims} simulator(s), mosquitto on {mqtt}")
            wire = _Wire()
            ready = asyncio.Event()
            runs: dict[str, Any] = {}
            try:
                async with asyncio.TaskGroup() as tg:
                    listener = tg.create_task(wire.listen(mqtt, ready), name="bench-wire-listener")
                    await ready.wait()
                    for name in ("agent", "baseline") if baseline else ("agent",):
                        progress(f"{name}: check, start, measure")
                        site = _site(
                            workdir,
                            name,
                            points=points,
                            interval_s=interval_s,
                            endpoints=endpoints,
                            mqtt=mqtt,
                            baseline=name == "baseline",
                        )
                        runs[name] = await _run_agent(
                            site,
                            interval_s=interval_s,
                            seconds=seconds,
                            wire=wire,
                            progress=progress,
                            profile=profile if name == "agent" else None,
                        )
                    listener.cancel()
            except* BenchError as group:
                raise group.exceptions[0] from None
        finally:
            for proc in sims:
                proc.terminate()
            for proc in sims:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
                if proc.returncode is None:
                    proc.kill()
                    proc.wait(timeout=5)
    out: dict[str, Any] = {"points": devices * per_device, "interval_s": interval_s, **runs["agent"]}
    if baseline:
        out["baseline"] = runs["baseline"]
    return out

"""`edge-agent bench ...`: figures beside a baseline measured in the same run. Tests never time anything."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["bench_modbus", "main"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"simulator exited with code {proc.returncode}")
        with contextlib.suppress(OSError):
            _r, w = await asyncio.open_connection(host, port)
            w.close()
            await w.wait_closed()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"simulator did not listen on {host}:{port} within {timeout:.0f} s")


class _Meter:
    """Accumulates points, wall and CPU time of one method over several interleaved rounds."""

    def __init__(self, cycle: Callable[[], Awaitable[int]]) -> None:
        self.cycle = cycle
        self.points = 0
        self.wall = 0.0
        self.cpu = 0.0

    async def round(self, seconds: float) -> None:
        cpu0, t0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            self.points += await self.cycle()
        self.wall += time.perf_counter() - t0
        self.cpu += time.process_time() - cpu0

    def result(self) -> dict[str, float]:
        return {
            "points_per_s": round(self.points / self.wall, 1),
            "cpu_s_per_1k_points": round(self.cpu / self.points * 1000, 5),
            "points_read": self.points,
        }


async def _interleaved(
    methods: dict[str, Callable[[], Awaitable[int]]],
    seconds: float,
    rounds: int,
    progress: Callable[[str], None],
) -> dict[str, dict[str, float]]:
    """Run the methods in alternating rounds so a noisy neighbour affects all of them alike."""
    meters = {name: _Meter(cycle) for name, cycle in methods.items()}
    for m in meters.values():
        await m.cycle()  # warm-up: connect, plan, first decode
    for i in range(rounds):
        progress(f"round {i + 1}/{rounds}: " + ", ".join(meters))
        for m in meters.values():
            await m.round(seconds / rounds)
    return {name: m.result() for name, m in meters.items()}


async def bench_modbus(
    *, devices: int, points: int, seconds: float, progress: Callable[[str], None], rounds: int = 6
) -> dict[str, Any]:
    from pymodbus.client import AsyncModbusTcpClient

    from drivers.base import Quality
    from drivers.modbus.driver import EndpointPool, ModbusTcpDriver
    from drivers.modbus.options import ModbusDevice, ModbusPoint
    from drivers.modbus.planner import per_point_plan, plan

    host, port = "127.0.0.1", _free_port()
    cmd = [
        sys.executable,
        "-m",
        "sim",
        "--host",
        host,
        "--port",
        str(port),
        "--bench-units",
        str(devices),
        "--bench-points",
        str(points),
        "--no-script",
    ]
    progress(
        f"starting simulator: {devices} devices x {points} float32 points on {host}:{port} (child process)"
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    try:
        await _wait_port(host, port, proc)
        first_unit = 100
        devs = [
            ModbusDevice(
                protocol="modbus",
                id=f"bench-{u}",
                host=host,
                port=port,
                unit_id=u,
                timeout_s=2.0,
                points=[ModbusPoint(id=f"b{u}.p{i}", address=2 * i, type="float32") for i in range(points)],
            )
            for u in range(first_unit, first_unit + devices)
        ]
        results: dict[str, Any] = {"devices": devices, "points": points}

        # (a) the agent's planned reads: every device polled concurrently, as the runtime does.
        pool_a, pool_b = EndpointPool(), EndpointPool()
        planned_drivers = [ModbusTcpDriver(device=d, pool=pool_a) for d in devs]
        # (b) one request per point through the same stack (how ThingsBoard's gateway reads).
        single_drivers = [ModbusTcpDriver(device=d, pool=pool_b, planner=per_point_plan) for d in devs]
        bad = 0

        async def planned() -> int:
            nonlocal bad
            batches = await asyncio.gather(
                *(drv.read(d.points) for drv, d in zip(planned_drivers, devs, strict=True))
            )
            bad += sum(1 for b in batches for r in b if r.quality is Quality.BAD)
            return sum(len(b) for b in batches)

        async def per_point() -> int:
            batches = await asyncio.gather(
                *(drv.read(d.points) for drv, d in zip(single_drivers, devs, strict=True))
            )
            return sum(len(b) for b in batches)

        # (c) the ceiling: bare pymodbus over the same planned blocks, no decoding, no bookkeeping.
        blocks = [
            (d.unit_id, b)
            for d in devs
            for b in plan(d.points, max_registers=d.max_registers, max_bits=d.max_bits, max_gap=d.max_gap)
        ]
        client = AsyncModbusTcpClient(host, port=port, timeout=2.0, retries=0)
        await client.connect()

        async def ceiling() -> int:
            n = 0
            for unit, b in blocks:
                rr = await client.read_holding_registers(b.start, count=b.count, device_id=unit)
                if not rr.isError():
                    n += len(b.points)
            return n

        try:
            measured = await _interleaved(
                {"planned": planned, "per_point": per_point, "ceiling": ceiling},
                seconds * 3,
                rounds,
                progress,
            )
        finally:
            client.close()
            await pool_a.close()
            await pool_b.close()
        results.update(measured)
        results["planned"]["bad_readings"] = bad
        results["planned_vs_per_point"] = round(
            results["planned"]["points_per_s"] / results["per_point"]["points_per_s"], 1
        )
        results["planned_vs_ceiling"] = round(
            results["planned"]["points_per_s"] / results["ceiling"]["points_per_s"], 3
        )
        results["requests_per_cycle"] = {"planned": len(blocks), "per_point": devices * points}
        return results
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _print_table(res: dict[str, Any]) -> None:
    print(
        f"\nModbus TCP on loopback, {res['devices']} devices x {res['points']} float32 points "
        f"(requests per cycle: planned {res['requests_per_cycle']['planned']}, "
        f"per point {res['requests_per_cycle']['per_point']})"
    )
    print(f"{'method':<34} {'points/s':>12} {'CPU s / 1k points':>18}")
    for key, label in (
        ("planned", "(a) edge-agent planned reads"),
        ("per_point", "(b) one request per point"),
        ("ceiling", "(c) bare pymodbus, same blocks"),
    ):
        r = res[key]
        print(f"{label:<34} {r['points_per_s']:>12,.0f} {r['cpu_s_per_1k_points']:>18.4f}")
    print(
        f"planned / per-point: {res['planned_vs_per_point']}x; planned / ceiling: "
        f"{res['planned_vs_ceiling'] * 100:.0f} %; bad readings during (a): {res['planned']['bad_readings']}"
    )


def main(args: argparse.Namespace) -> int:
    def progress(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    if args.bench == "modbus":
        res = asyncio.run(
            bench_modbus(devices=args.devices, points=args.points, seconds=args.seconds, progress=progress)
        )
        if args.json:
            out = {k: res[k] for k in ("devices", "points")}
            for k in ("planned", "per_point", "ceiling"):
                out[k] = {m: res[k][m] for m in ("points_per_s", "cpu_s_per_1k_points")}
            print(json.dumps(out))
        else:
            _print_table(res)
        return 0
    if args.bench == "uplink":
        from edge_agent.devtools.bench_uplink import bench_uplink

        progress(
            f"draining {args.readings:,} readings to mosquitto, then {args.baseline:,} one per message ..."
        )
        res = asyncio.run(bench_uplink(n=args.readings, baseline_n=args.baseline))
        keys = ("drain_readings_per_s", "bytes_per_reading", "per_message_readings_per_s")
        if args.json:
            print(json.dumps({k: res[k] for k in keys}))
        else:
            print(
                f"drain in batches: {res['drain_readings_per_s']:,.0f} readings/s; one message per reading: "
                f"{res['per_message_readings_per_s']:,.0f} readings/s; {res['bytes_per_reading']} bytes on "
                "disk per reading"
            )
        return 0
    print(f"unknown benchmark {args.bench!r}", file=sys.stderr)
    return 2

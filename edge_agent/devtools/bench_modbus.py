"""`edge-agent bench ...`: figures beside a baseline measured in the same run. Tests never time anything."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from edge_agent.devtools.measure import interleaved, wait_port
from edge_agent.devtools.simwire import free_tcp_port

__all__ = ["bench_modbus"]


async def bench_modbus(
    *, devices: int, points: int, seconds: float, progress: Callable[[str], None], rounds: int = 6
) -> dict[str, Any]:
    from pymodbus.client import AsyncModbusTcpClient

    from drivers.base import Quality
    from drivers.modbus.driver import EndpointPool, ModbusTcpDriver
    from drivers.modbus.options import ModbusDevice, ModbusPoint
    from drivers.modbus.planner import per_point_plan, plan

    host, port = "127.0.0.1", free_tcp_port()
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
        await wait_port(host, port, proc)
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
            measured = await interleaved(
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

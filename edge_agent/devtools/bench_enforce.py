"""`edge-agent bench enforce`: time from a violating change at the device to the corrected value read back.

The simulator runs in-process (the bench changes its building model directly, as an occupant's remote
control would), the agent is the full Service with its poll, COV and enforcement loops. Each violation sets
an AC unit in cool to 22 °C in summer (15 July, 14:00, a working day); the latency runs until the agent's
write of 26.0 has been read back (the enforcer's ``ok`` count for that point moved and the device holds
26.0). The six AC units take violations concurrently, one in flight per unit.

The policy copy used here raises ``max_writes_per_point_per_hour`` (to 1,000,000): the real limit (6)
would otherwise stop the agent fighting after six writes per point, which is the point of the limit but
not of this bench. Targets: Modbus p95 <= poll interval + 250 ms; BACnet (COV-driven) p95 <= 500 ms.

``dead_units`` (Modbus) adds units on the AC units' endpoint that never answer, like a dead meter behind
the same gateway; the CLI then runs the bench without and with them, side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["BENCH_WRITE_LIMIT", "SITES", "bench_enforce"]

_ROOT = Path(__file__).resolve().parents[2]
SITES = {
    "bacnet": _ROOT / "config" / "site.yaml",
    "modbus": _ROOT / "tests" / "fixtures" / "config" / "modbus_site.yaml",
}
_START = datetime(2026, 7, 15, 14, 0, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
BENCH_WRITE_LIMIT = 1_000_000


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


_DEAD_UNIT_BASE = 200  # unit ids of the bench's silent units (offline in the simulator: no reply at all)


def _with_dead_units(cfg: Any, ac_devices: list[Any], n: int) -> Any:
    """The site plus ``n`` Modbus units on the AC units' endpoint that never answer (a dead meter behind
    the same gateway), polled as often as the AC units."""
    from drivers.modbus.options import ModbusDevice, ModbusPoint

    ref = ac_devices[0]
    dead = [
        ModbusDevice(
            protocol="modbus",
            id=f"dead-unit-{i + 1}",
            host=ref.host,
            port=ref.port,
            unit_id=_DEAD_UNIT_BASE + i,
            interval_s=ref.interval_s,
            points=[ModbusPoint(id=f"dead-unit-{i + 1}.energy", address=0, type="uint32")],
        )
        for i in range(n)
    ]
    return dataclasses.replace(cfg, site=cfg.site.model_copy(update={"devices": [*cfg.site.devices, *dead]}))


async def bench_enforce(
    *,
    protocol: str,
    violations: int,
    config: Path | None,
    progress: Callable[[str], None],
    dead_units: int = 0,
) -> dict[str, Any]:
    from edge_agent.config.load import load_config
    from edge_agent.core.clock import ScaledClock
    from edge_agent.core.logs import configure_logging
    from edge_agent.devtools.simwire import free_udp_port, retarget_to_sim, uses_serial
    from edge_agent.service.service import Service
    from sim.runner import Simulator

    configure_logging(level="error")
    cfg = load_config(config or SITES[protocol])
    ac_devices = [d for d in cfg.site.devices if any(p.role == "setpoint" for p in d.points)]
    if {d.protocol for d in ac_devices} != {protocol}:
        raise SystemExit(f"bench enforce: the AC units of {cfg.site_path} are not all on {protocol}")
    if dead_units and protocol != "modbus":
        raise SystemExit("bench enforce: --dead-units needs --protocol modbus")
    enforcement = cfg.policy.enforcement.model_copy(
        update={"max_writes_per_point_per_hour": BENCH_WRITE_LIMIT}
    )
    cfg = dataclasses.replace(cfg, policy=cfg.policy.model_copy(update={"enforcement": enforcement}))
    # The model holds still (speed 0) so only the bench's violations change setpoints.
    sim = Simulator(seed=1, start=_START, speed=0.0)
    bacnet = protocol == "bacnet"
    await sim.start(
        modbus_port=0,
        bacnet=bacnet,
        bacnet_port=free_udp_port() if bacnet else 47808,
        serial=uses_serial(cfg),
    )
    state = tempfile.TemporaryDirectory(prefix="edge-agent-bench-")
    svc = None
    task = None
    try:
        cfg = retarget_to_sim(cfg, sim)
        if dead_units:
            ac_now = [d for d in cfg.site.devices if d.id in {a.id for a in ac_devices}]
            cfg = _with_dead_units(cfg, ac_now, dead_units)
            for i in range(dead_units):
                sim.server.set_offline(_DEAD_UNIT_BASE + i)
        svc = Service(cfg, state_dir=state.name, clock=ScaledClock(start=_START, speed=1.0))
        counter = _WriteCounter(svc)
        task = asyncio.create_task(svc.run(), name="bench:service")
        await asyncio.wait_for(svc.ready.wait(), 30)
        await asyncio.sleep(1.0)  # startup corrections (the script's 14:00 occupant) and COV subscriptions
        units = sorted(d.id for d in ac_devices)
        sp_point = {d.id: next(p.id for p in d.points if p.role == "setpoint") for d in ac_devices}
        b = sim.building
        latencies: list[float] = []
        failures = 0
        rng = random.Random(1)
        per_unit = [violations // len(units) + (i < violations % len(units)) for i in range(len(units))]
        # Modbus: a violation may land anywhere in the poll cycle, so spread them over a whole interval
        # (right after a correction would always be just after a poll: the worst case every time).
        spread_s = 0.3 if bacnet else min(float(d.interval_s) for d in ac_devices)
        cpu0 = time.process_time()
        t_all = time.perf_counter()

        async def worker(unit: str, n: int) -> None:
            nonlocal failures
            pid = sp_point[unit]
            for _ in range(n):
                await asyncio.sleep(rng.uniform(0.05, spread_s))  # land anywhere in the poll cycle
                ok_before = counter.ok.get(pid, 0)
                t0 = time.perf_counter()
                b.set_setpoint(unit, 22.0, source="occupant")
                if not bacnet:
                    sim.modbus.refresh()  # the device's registers follow its state at once
                while not (counter.ok.get(pid, 0) > ok_before and b.ac_units[unit].setpoint == 26.0):
                    if time.perf_counter() - t0 > 30:
                        failures += 1
                        break
                    await asyncio.sleep(0.002)
                else:
                    latencies.append((time.perf_counter() - t0) * 1000)
                if len(latencies) % 50 == 0 and latencies:
                    progress(f"{len(latencies)}/{violations} corrected")

        await asyncio.gather(*(worker(u, n) for u, n in zip(units, per_unit, strict=True)))
        wall = time.perf_counter() - t_all
        cpu = time.process_time() - cpu0
    finally:
        if svc is not None:
            svc.agent.stop()
            if task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(task, 15)
            svc.close()
        await sim.stop()
        state.cleanup()
    if not latencies:
        raise RuntimeError("no violation was corrected")
    return {
        "protocol": protocol,
        "dead_units": dead_units,
        "poll_interval_s": min(float(d.interval_s) for d in ac_devices),
        "violations": len(latencies),
        "failed": failures,
        "latency_ms": {
            "p50": round(statistics.median(latencies), 1),
            "p95": round(_pct(latencies, 0.95), 1),
            "max": round(max(latencies), 1),
        },
        "write_limit_per_point_per_hour": BENCH_WRITE_LIMIT,
        "simulator": "in-process",
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


class _WriteCounter:
    """Counts audited ``ok`` writes per point: the record is appended after the read-back matched."""

    def __init__(self, svc: Any) -> None:
        self.ok: dict[str, int] = {}
        self._chained = svc.audit.on_append
        svc.audit.on_append = self

    def __call__(self, record: Any) -> None:
        if record.kind == "write" and record.result == "ok":
            self.ok[record.subject] = self.ok.get(record.subject, 0) + 1
        if self._chained is not None:
            self._chained(record)

"""Demo data for `edge-agent report --demo`: a simulated period booked in the ledger.

The agent's own path without the sockets: register words as the bundled simulator serves them ->
the Modbus codec -> Validator -> Ledger (RS-485 meters: their counters as their BCD carries them).
Lives with the developer tools because it needs the simulator and a driver's codec, which the report
package must not import.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC
from typing import Any
from zoneinfo import ZoneInfo

from drivers.base import PointBase, Quality, Reading, Value
from drivers.modbus.codec import decode
from drivers.modbus.options import ModbusDevice, ModbusPoint, ModbusRtuDevice
from edge_agent.config.load import LoadedConfig
from edge_agent.core.validate import ValidatedReading, Validator
from edge_agent.store.ledger import Ledger, Period
from sim.modbus_map import REGISTER_MAP
from sim.season import season
from sim.serial_site import DLT645_METERS, WATER_ADDRESS

__all__ = ["simulate_into"]


def simulate_into(
    cfg: LoadedConfig,
    conn: sqlite3.Connection,
    period: Period,
    *,
    seed: int = 0,
    step_s: float = 900.0,
    substep_s: float = 900.0,
) -> int:
    """Simulate ``period`` with the bundled building model and book it in the ledger. Returns readings.

    Each step takes the register words the simulator would serve for every Modbus (TCP or RTU) meter
    point of ``cfg`` (unit id and address matched against sim.modbus_map.REGISTER_MAP) and decodes them
    with the agent's codec, or a DL/T 645 / CJ/T 188 meter's counter (address matched against
    sim/serial_site.py), validates them and ingests them: the agent's path without the sockets. Meter
    points the simulator does not serve are skipped.
    """
    tz = ZoneInfo(cfg.site.timezone)
    start, end = period.bounds(tz)
    regs = {(r.unit, r.table, r.address): r for r in REGISTER_MAP}
    # the simulator's serial meters by address (sim/serial_site.py): their counters, 2 decimals of BCD
    serial_meters = {a: m for m, a in DLT645_METERS.items()} | {WATER_ADDRESS: "water"}
    plan: list[tuple[PointBase, Callable[[Any], Value]]] = []
    for dev in cfg.site.devices:
        for p in dev.points:
            if not (p.cumulative and p.energy_code):
                continue
            if isinstance(dev, ModbusDevice | ModbusRtuDevice) and isinstance(p, ModbusPoint):
                reg = regs.get((dev.unit_id, p.table, p.address))
                if reg is not None:
                    plan.append((p, _register_value(reg, p)))
            elif dev.protocol in ("dlt645", "cjt188"):
                meter = serial_meters.get(getattr(dev, "address", ""))
                if meter is not None:
                    plan.append((p, _counter_value(meter)))
    ledger = Ledger.from_config(cfg, conn)
    validator = Validator(points=[p for p, _ in plan])
    n = 0
    batch: list[ValidatedReading] = []
    for b in season(start=start, end=end, seed=seed, step_s=step_s, substep_s=substep_s):
        ts = b.now.astimezone(UTC)
        for p, value in plan:
            batch.append(validator.validate(Reading(p.id, value(b), ts, Quality.GOOD)))
        if len(batch) >= 2000:
            ledger.ingest(batch)
            n += len(batch)
            batch = []
    ledger.ingest(batch)
    return n + len(batch)


def _register_value(reg: Any, p: ModbusPoint) -> Callable[[Any], Value]:
    return lambda b: decode([int(w) for w in reg.raw(b)], p)


def _counter_value(meter: str) -> Callable[[Any], Value]:
    return lambda b: round(b.meters[meter].reading, 2)

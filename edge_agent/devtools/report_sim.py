"""Demo data for `edge-agent report --demo`: a simulated period booked in the ledger.

The agent's own path without the sockets: register words as the bundled simulator serves them ->
the Modbus codec -> Validator -> Ledger. Lives with the developer tools because it needs the simulator
and a driver's codec, which the report package must not import.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC
from typing import Any
from zoneinfo import ZoneInfo

from drivers.base import Quality, Reading
from drivers.modbus.codec import decode
from drivers.modbus.options import ModbusDevice, ModbusPoint
from edge_agent.config.load import LoadedConfig
from edge_agent.core.validate import ValidatedReading, Validator
from edge_agent.store.ledger import Ledger, Period
from sim.modbus_map import REGISTER_MAP
from sim.season import season

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

    Each step takes the register words the simulator would serve for every Modbus meter point of
    ``cfg`` (unit id and address matched against sim.modbus_map.REGISTER_MAP), decodes them with the
    agent's codec, validates them and ingests them: the agent's path without the sockets. Meter points
    the simulator does not serve are skipped.
    """
    tz = ZoneInfo(cfg.site.timezone)
    start, end = period.bounds(tz)
    regs = {(r.unit, r.table, r.address): r for r in REGISTER_MAP}
    plan: list[tuple[ModbusPoint, Any]] = []
    for dev in cfg.site.devices:
        if not isinstance(dev, ModbusDevice):
            continue
        for p in dev.points:
            if isinstance(p, ModbusPoint) and p.cumulative and p.energy_code:
                reg = regs.get((dev.unit_id, p.table, p.address))
                if reg is not None:
                    plan.append((p, reg))
    ledger = Ledger.from_config(cfg, conn)
    validator = Validator(points=[p for p, _ in plan])
    n = 0
    batch: list[ValidatedReading] = []
    for b in season(start=start, end=end, seed=seed, step_s=step_s, substep_s=substep_s):
        ts = b.now.astimezone(UTC)
        for p, reg in plan:
            words = [int(w) for w in reg.raw(b)]
            batch.append(validator.validate(Reading(p.id, decode(words, p), ts, Quality.GOOD)))
        if len(batch) >= 2000:
            ledger.ingest(batch)
            n += len(batch)
            batch = []
    ledger.ingest(batch)
    return n + len(batch)

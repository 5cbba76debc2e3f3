"""The actuator's envelope against the Modbus simulator: the register holds a value inside [min, max].

Issue 14 item 2, as the outsider saw it: ``scale: 2`` and ``min: 21``; a request for 21 used to put raw
10 (20.0) on the device, audited ``ok``. Now the register holds raw 11 (22.0) and the audit says why.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from drivers.base import Driver
from drivers.modbus.driver import EndpointPool, ModbusTcpDriver
from drivers.modbus.options import ModbusDevice, ModbusPoint
from edge_agent.core.clock import FakeClock
from edge_agent.enforce.actuator import Actuator
from edge_agent.store.audit import AuditLog, verify
from edge_agent.store.db import open_state_db
from policies.types import WriteIntent
from sim.modbus_server import ModbusServer
from sim.typebank import SCRATCH_HOLDING, TYPE_TEST_UNIT

START = datetime(2026, 7, 15, 6, 0, 0, tzinfo=UTC)


async def test_the_register_holds_a_value_inside_the_bounds(
    type_server: ModbusServer, pool: EndpointPool, tmp_path: Path
) -> None:
    addr = SCRATCH_HOLDING.start + 30
    sp = ModbusPoint(
        id="sp", address=addr, type="int16", scale=2, role="setpoint", writable=True, min=21, max=30
    )
    assert type_server.port
    dev = ModbusDevice(
        protocol="modbus", id="ac", host="127.0.0.1", port=type_server.port, unit_id=TYPE_TEST_UNIT,
        points=[sp], readback_delay_s=0,
    )  # fmt: skip
    drv = ModbusTcpDriver(device=dev, pool=pool)
    conn = open_state_db(tmp_path / "state.db")
    audit = AuditLog(conn=conn, clock=FakeClock(START))
    drivers: dict[str, Driver] = {"ac": drv}
    act = Actuator(
        drivers=drivers, points={"sp": ("ac", sp)}, audit=audit, clock=FakeClock(START), max_writes_per_hour=9
    )
    try:
        [out] = await act.apply([WriteIntent("sp", 21, "hvac.summer_min_cooling", "夏季不低于26°C")])
    finally:
        await drv.close()
    assert type_server.units[TYPE_TEST_UNIT].get("holding", addr, 1) == [11]  # 22.0, not 20.0
    assert out.ok and out.readback == 22
    [rec] = [r for r in audit.records() if r.kind == "write"]
    assert rec.result == "ok" and "moved inward to 22.0" in rec.reason
    assert verify(conn).ok
    conn.close()

"""The building's RS-485 buses, on pseudo-terminals (MANUAL.md, "14. The building's RS-485 buses"):

- the **meter bus** (2400 baud): the floors' lighting-and-socket sub-meters as DL/T 645-2007 meters
  (addresses 000000000002-4, like their Modbus unit ids 2-4) and the water main as a CJ/T 188 cold-water
  meter (address 00000000000010), one bus, both protocols, as a real retrofit often is;
- the **RTU bus** (9600 baud): the floors' AC sub-meters (units 5-7) with their Modbus register map.

The same building model drives them as the Modbus TCP and BACnet front ends: :meth:`SerialSite.refresh`
copies the meters' present values (the Modbus banks refresh themselves). A pty carries no parity, so
clients open both at 8N1 whatever the site says.
"""

from __future__ import annotations

from collections.abc import Callable

from sim.building import Building
from sim.cjt188_meter import FlowMeter
from sim.dlt645_meter import Meter
from sim.modbus_rtu import RtuSerialBus
from sim.modbus_server import ModbusServer, UnitBank
from sim.rs485 import MeterBus

__all__ = ["DLT645_METERS", "METER_BUS_BAUD", "RTU_BUS_BAUD", "RTU_UNITS", "WATER_ADDRESS", "SerialSite"]

DLT645_METERS: dict[str, str] = {"f1-ls": "000000000002", "f2-ls": "000000000003", "f3-ls": "000000000004"}
WATER_ADDRESS = "00000000000010"
RTU_UNITS = (5, 6, 7)
METER_BUS_BAUD = 2400
RTU_BUS_BAUD = 9600
_ENERGY, _POWER = 0x00010000, 0x02030000


class SerialSite:
    """The two buses; :attr:`meter_bus` ``.path`` and :attr:`rtu_bus` ``.path`` once started."""

    def __init__(self, building: Building, banks: dict[int, UnitBank]) -> None:
        self.building = building
        self.meters = [Meter(address) for address in DLT645_METERS.values()]
        self.water = FlowMeter(WATER_ADDRESS, 0x10)
        self.meter_bus = MeterBus(self.meters, [self.water], baudrate=METER_BUS_BAUD)
        self.rtu_bus = RtuSerialBus(
            ModbusServer(units=[banks[u] for u in RTU_UNITS]), baudrate=RTU_BUS_BAUD, parity="N"
        )
        self._unsubscribe: Callable[[], None] | None = None
        self.refresh()

    @property
    def paths(self) -> dict[str, str]:
        return {"meter_bus": self.meter_bus.path, "rtu_bus": self.rtu_bus.path}

    def refresh(self) -> None:
        m = self.building.meters
        for meter, name in zip(self.meters, DLT645_METERS, strict=True):
            meter.values = {_ENERGY: m[name].reading, _POWER: m[name].rate}
        self.water.values = {"flow": m["water"].reading, "settlement_flow": m["water"].initial}

    async def start(self) -> None:
        self._unsubscribe = self.building.subscribe(lambda _change: self.refresh())  # powers follow state
        await self.meter_bus.start()
        try:
            await self.rtu_bus.start()
        except BaseException:
            await self.meter_bus.stop()
            raise

    async def stop(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        await self.rtu_bus.stop()
        await self.meter_bus.stop()

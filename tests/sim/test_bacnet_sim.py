"""The BACnet simulator, checked with a plain bacpypes3 client (not the driver: a bug must not cancel out)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from bacpypes3.apdu import ErrorRejectAbortNack
from bacpypes3.app import Application
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import Null

from sim.bacnet_server import BacnetSimulator
from sim.building import Building, Mode
from tests.drivers.test_bacnet_driver import free_udp_port


class Rig:
    def __init__(self, building: Building, sim: BacnetSimulator, client: Application) -> None:
        self.building, self.sim, self.client = building, sim, client
        self.fc1 = Address(sim.address_of("FC-1F"))


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    sim_port, client_port = free_udp_port(), free_udp_port()
    building = Building(start=datetime(2025, 7, 15, 2, 0, tzinfo=UTC), script=False)
    sim = BacnetSimulator(building, address=f"127.0.0.2/24:{sim_port}", refresh_s=60)
    await sim.start()
    client = Application.from_object_list(
        [
            DeviceObject(objectIdentifier=("device", 4000), objectName="test-client", vendorIdentifier=999),
            NetworkPortObject(
                f"127.0.0.1:{client_port}", objectIdentifier=("network-port", 1), objectName="NP"
            ),
        ]
    )
    await asyncio.gather(*[t for ll in client.link_layers.values() for t in ll.server._transport_tasks])
    try:
        yield Rig(building, sim, client)
    finally:
        client.close()
        await sim.stop()


async def test_devices_and_instances(rig: Rig) -> None:
    for name, inst in (("FC-1F", 1001), ("FC-2F", 1002), ("FC-3F", 1003), ("METERS", 1010)):
        addr = Address(rig.sim.address_of(name))
        assert str(await rig.client.read_property(addr, f"device,{inst}", "object-name")) == name


async def test_writes_reach_the_model_and_refusals_are_errors(rig: Rig) -> None:
    c, a = rig.client, rig.fc1
    await c.write_property(a, "analog-value,2", "present-value", 25.0, priority=8)
    assert rig.building.ac_units["f1-ac2"].setpoint == 25.0
    await c.write_property(a, "multi-state-value,2", "present-value", 4, priority=8)  # 4 = fan
    assert rig.building.ac_units["f1-ac2"].mode == Mode.FAN and rig.building.ac_units["f1-ac2"].power
    await c.write_property(a, "binary-output,2", "present-value", "active", priority=8)
    assert rig.building.lights["f1-l2"].on
    with pytest.raises(ErrorRejectAbortNack) as err:
        await c.write_property(a, "analog-value,2", "present-value", 15.0, priority=8)
    assert str(err.value.errorCode) == "value-out-of-range"  # type: ignore[attr-defined]
    with pytest.raises(ErrorRejectAbortNack) as err:
        await c.write_property(a, "analog-input,1", "present-value", 20.0, priority=8)
    assert str(err.value.errorCode) == "write-access-denied"  # type: ignore[attr-defined]
    # relinquish: the present value falls back to the relinquish default and the model follows
    await c.write_property(a, "analog-value,2", "present-value", Null(()), priority=8)
    assert rig.building.ac_units["f1-ac2"].setpoint == 26.0


async def test_model_changes_show_and_overrides_are_flagged(rig: Rig) -> None:
    c, a = rig.client, rig.fc1
    rig.building.set_setpoint("f1-ac1", 23.0)  # no command active: becomes the relinquish default
    assert await c.read_property(a, "analog-value,1", "present-value") == 23.0
    assert list(await c.read_property(a, "analog-value,1", "status-flags")) == [0, 0, 0, 0]
    await c.write_property(a, "analog-value,1", "present-value", 26.0, priority=8)
    rig.building.set_setpoint("f1-ac1", 21.0)  # an occupant's remote control contradicts the command
    assert await c.read_property(a, "analog-value,1", "present-value") == 21.0
    assert list(await c.read_property(a, "analog-value,1", "status-flags"))[2] == 1  # overridden
    meter = rig.building.meters["main"]
    rig.building.step(3600)
    rig.sim.refresh()
    got = await c.read_property(Address(rig.sim.address_of("METERS")), "analog-value,1", "present-value")
    assert got == pytest.approx(meter.reading, rel=1e-6)

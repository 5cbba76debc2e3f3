"""Discovery on real pseudo-terminals: a DL/T 645 meter by the wildcard read address (and the collision
when two answer), Modbus RTU units by a short-timeout scan; each draft `devices:` block loads as site.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.dlt645 import discover as dlt645_discover
from drivers.modbus import discover_rtu
from edge_agent.config.load import load_config
from sim.dlt645_meter import Dlt645Bus, Meter
from sim.modbus_rtu import RtuSerialBus
from sim.modbus_server import ModbusServer, UnitBank

HEADER = """\
gateway_id: gw
building_id: "370102A001"
location: {lat: 36.65, lon: 117.12}
floor_area_m2: 1000
occupants: 10
"""


def loads_as_site(tmp_path: Path, devices_yaml: str) -> None:
    (tmp_path / "policy.yaml").write_text('seasons: {summer: "06-01..09-30", winter: "11-15..03-15"}\n')
    site = tmp_path / "site.yaml"
    site.write_text(HEADER + devices_yaml)
    load_config(site)  # raises ConfigError on any error


async def test_one_dlt645_meter_is_found_with_its_energy(tmp_path: Path) -> None:
    async with Dlt645Bus(
        [Meter("000012345678", {0x00010000: 4321.07})], baudrate=9600, turnaround_s=0
    ) as bus:
        found = await dlt645_discover.discover(bus.path, baudrate=9600, parity="N", timeout=0.3)
    assert [(m.address, m.energy_kwh, m.error) for m in found.meters] == [("000012345678", 4321.07, None)]
    assert not found.problems
    text = dlt645_discover.render_devices_yaml(found)
    assert 'address: "000012345678"' in text and "4321.07 kWh" in text
    loads_as_site(tmp_path, text)


async def test_two_dlt645_meters_collide_on_the_wildcard_address() -> None:
    meters = [Meter("000000001234", {0x00010000: 1.0}), Meter("000000005678", {0x00010000: 2.0})]
    async with Dlt645Bus(meters, baudrate=9600, turnaround_s=0) as bus:
        found = await dlt645_discover.discover(bus.path, baudrate=9600, parity="N", timeout=0.3)
    assert found.meters == []
    assert found.problems and "several meters" in found.problems[0]


async def test_modbus_rtu_scan_finds_the_units_that_answer(tmp_path: Path) -> None:
    banks = [UnitBank(unit_id=u) for u in (3, 7)]
    banks[0].map("holding", 0, [42])  # unit 7 has no register 0: an exception reply, still found
    seen: list[int] = []
    async with RtuSerialBus(ModbusServer(units=banks), baudrate=19200, parity="N") as bus:
        found = await discover_rtu.scan(
            bus.path, discover_rtu.parse_units("1-10"), baudrate=19200, parity="N", timeout=0.1,
            progress=lambda unit, n: seen.append(unit),
        )  # fmt: skip
    assert [(u.unit, u.register0) for u in found.units] == [(3, 42), (7, None)]
    assert found.units[1].exception == 2 and seen == list(range(1, 11))
    loads_as_site(tmp_path, discover_rtu.render_devices_yaml(found))


def test_unit_ranges() -> None:
    assert discover_rtu.parse_units("1-3,7,2") == [1, 2, 3, 7]
    with pytest.raises(ValueError, match="1-247"):
        discover_rtu.parse_units("0-5")


async def test_dlt645_meters_by_address_on_a_bus_where_the_wildcard_collides(tmp_path: Path) -> None:
    """The sim --serial meter bus: three DL/T 645 meters; --addresses asks each for its energy and drafts
    the ones that answer (a silent address is left out)."""
    meters = [Meter(f"00000000000{n}", {0x00010000: float(n)}) for n in (2, 3, 4)]
    async with Dlt645Bus(meters, baudrate=9600, turnaround_s=0) as bus:
        found = await dlt645_discover.discover(
            bus.path, baudrate=9600, parity="N", timeout=0.2,
            addresses=dlt645_discover.parse_addresses("000000000002-000000000005"),
        )  # fmt: skip
    assert [(m.address, m.energy_kwh, m.error) for m in found.meters] == [
        ("000000000002", 2.0, None),
        ("000000000003", 3.0, None),
        ("000000000004", 4.0, None),
    ]
    assert not found.problems
    loads_as_site(tmp_path, dlt645_discover.render_devices_yaml(found))


def test_address_lists_and_ranges() -> None:
    parse = dlt645_discover.parse_addresses
    assert parse("000012345678, 000000000002-000000000003") == [
        "000012345678",
        "000000000002",
        "000000000003",
    ]
    for bad in ("12345678", "000000000005-000000000004", "00000000000A", "000000000000-000000000300"):
        with pytest.raises(ValueError):
            parse(bad)

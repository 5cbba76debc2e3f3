"""config/site.yaml describes the simulator as its manual does (checked against the simulator's own map).

The example site is mixed (meters and sensors on Modbus TCP, floor sub-meters and the water meter on the
RS-485 buses, AC units and lights on BACnet); the all-Modbus
variant in tests/fixtures/config/modbus_site.yaml is checked the same way."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.bacnet_server import BacnetSimulator
from sim.building import Building
from sim.modbus_map import AC_UNITS, LIGHTING_UNIT, METER_UNITS, REGISTER_MAP, Reg
from sim.serial_site import DLT645_METERS, METER_BUS_BAUD, RTU_BUS_BAUD, RTU_UNITS, WATER_ADDRESS

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "config" / "site.yaml"
MODBUS_SITE = ROOT / "tests" / "fixtures" / "config" / "modbus_site.yaml"
SITES = pytest.mark.parametrize("path", [SITE, MODBUS_SITE], ids=["mixed", "all-modbus"])
_WIDTH = {"int16": 1, "uint16": 1, "bit": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4, "bool": 1}


def _site(path: Path = SITE) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def _reg(unit: int, table: str, address: int) -> Reg:
    for r in REGISTER_MAP:
        if (r.unit, r.table, r.address) == (unit, table, address):
            return r
    raise AssertionError(f"site.yaml reads unit {unit} {table} {address}, which the manual does not list")


@SITES
def test_every_point_matches_the_register_map(path: Path) -> None:
    site = _site(path)
    building = Building(seed=0, start=datetime(2026, 7, 15, 6, tzinfo=UTC), script=False)
    units = set()
    for dev in site["devices"]:
        if dev["protocol"] in ("bacnet", "dlt645", "cjt188"):
            continue  # test_bacnet_points_match_the_simulator_objects, test_serial_meters_match_...
        if dev["protocol"] == "modbus_rtu":  # the simulator's RTU bus (sim/serial_site.py)
            assert dev["unit_id"] in RTU_UNITS and dev["baudrate"] == RTU_BUS_BAUD, dev["id"]
        else:
            assert dev["protocol"] == "modbus" and dev["host"] == "127.0.0.1" and dev["port"] == 15020
        unit = dev["unit_id"]
        units.add(unit)
        for p in dev["points"]:
            table = p.get("table", "holding")
            reg = _reg(unit, table, p["address"])
            type_ = p.get("type", "uint16")
            where = f"{p['id']} (unit {unit} {table} {p['address']})"
            if type_ == "bit":
                assert reg.type == "uint16" and "bit" in reg.meaning, where
            else:
                assert type_ == reg.type, where
                assert _WIDTH[type_] == reg.count, where
            if reg.count > 1:
                assert p.get("word_order", "big") == reg.word_order, where
            assert p.get("byte_order", "big") == "big", where
            assert abs(p.get("scale", 1.0) - reg.scale) < 1e-12, where
            if p.get("writable"):
                assert reg.set is not None, where
                if reg.min is not None:
                    assert (p.get("min"), p.get("max")) == (reg.min, reg.max), where
            if unit in METER_UNITS and p.get("role") in ("energy", "water_volume"):
                meter = building.meters[METER_UNITS[unit]]
                assert p["energy_code"] == meter.energy_code and p.get("cumulative") is True, where
                assert p.get("unit") == meter.unit, where
            if unit in AC_UNITS:
                assert dev["zone"] == building.ac_units[AC_UNITS[unit]].zone, where
            if p.get("role") == "light_relay":
                light = next(li for li in building.lights.values() if f"relay {li.id} " in reg.meaning + " ")
                assert p["zone"] == light.zone, where
    # every device of the building is configured (AC units and lights over BACnet on the mixed site);
    # the type-test and bench units are not
    if any(d["protocol"] == "bacnet" for d in site["devices"]):
        # the lighting sub-meters (2-4) and the water meter (10) are on the RS-485 meter bus here
        serial = {u for u, m in METER_UNITS.items() if m in DLT645_METERS or m == "water"}
        assert units == {r.unit for r in REGISTER_MAP} - set(AC_UNITS) - {LIGHTING_UNIT} - serial
    else:
        assert units == {r.unit for r in REGISTER_MAP}
    ids = [p["id"] for d in site["devices"] for p in d["points"]]
    assert len(ids) == len(set(ids))


def test_serial_meters_match_the_simulators_meter_bus() -> None:
    """The DL/T 645 and CJ/T 188 meters of the example site are the simulator's (sim/serial_site.py): the
    addresses, the building meter each reads, its energy code and unit; one port, the bus's baud rate."""
    site = _site(SITE)
    building = Building(seed=0, start=datetime(2026, 7, 15, 6, tzinfo=UTC), script=False)
    by_address = {a: m for m, a in DLT645_METERS.items()} | {WATER_ADDRESS: "water"}
    meters = [d for d in site["devices"] if d["protocol"] in ("dlt645", "cjt188")]
    assert {d["address"] for d in meters} == set(by_address)
    assert len({d["port"] for d in meters}) == 1
    for dev in meters:
        assert dev.get("baudrate", 2400) == METER_BUS_BAUD, dev["id"]
        meter = building.meters[by_address[dev["address"]]]
        (counter,) = [p for p in dev["points"] if p.get("cumulative")]
        assert counter.get("di", "00010000") == "00010000" and counter.get("quantity", "flow") == "flow"
        assert (counter["energy_code"], counter["unit"]) == (meter.energy_code, meter.unit), dev["id"]
        assert counter["rollover"] == 1_000_000  # XXXXXX.XX in 4 BCD bytes


async def test_bacnet_points_match_the_simulator_objects() -> None:
    """Each BACnet point names an object the simulator's floor controller has, for the unit or light the
    point id says, with the same writability; every AC unit and light of the building is configured."""
    site = _site(SITE)
    assert site["bacnet"]["local_address"] == "127.0.0.1:47809"  # not the devices' port: loopback rule
    building = Building(seed=0, start=datetime(2026, 7, 15, 6, tzinfo=UTC), script=False)
    front = BacnetSimulator(building)  # not started: only its object table is used
    by_instance = {d.instance: d for d in front.devices}
    seen_units: set[str] = set()
    seen_lights: set[str] = set()
    for dev in (d for d in site["devices"] if d["protocol"] == "bacnet"):
        sim_dev = by_instance[dev["device_instance"]]
        assert dev["address"] == front.address_of(sim_dev.name), dev["id"]
        objects = {(str(o.objectIdentifier[0]), int(o.objectIdentifier[1])): o for o in sim_dev.objects}
        for p in dev["points"]:
            obj = objects.get((p["object_type"], p["instance"]))
            assert obj is not None, f"{p['id']}: {sim_dev.name} has no {p['object_type']} {p['instance']}"
            item = p["id"].split(".")[0]
            assert str(obj.objectName).startswith(item + " "), (p["id"], str(obj.objectName))
            writable = obj._sim_apply is not None and not obj._sim_readonly
            assert bool(p.get("writable")) == writable, p["id"]
            zone = p.get("zone", dev.get("zone"))
            if item in building.ac_units:
                seen_units.add(item)
                assert zone == building.ac_units[item].zone, p["id"]
            else:
                seen_lights.add(item)
                assert zone == building.lights[item].zone, p["id"]
            if p.get("role") == "ac_mode":
                assert {v: k for k, v in p["states"].items()} == {
                    str(t): i for i, t in enumerate(obj.stateText, start=1)
                }, p["id"]
            if p.get("role") == "setpoint":
                assert (p["min"], p["max"]) == (16, 32) and p.get("cov") is True, p["id"]
            if p.get("role") in ("ac_mode", "ac_power"):
                assert p.get("cov") is True, p["id"]  # enforcement reacts to COV, not the next poll
    assert seen_units == set(building.ac_units) and seen_lights == set(building.lights)


@SITES
def test_roles_cover_what_the_policies_need(path: Path) -> None:
    site = _site(path)
    roles: dict[str, set[str]] = {}
    for dev in site["devices"]:
        for p in dev["points"]:
            zone = p.get("zone", dev.get("zone"))
            roles.setdefault(p.get("role", "other"), set()).add(zone)
    assert (
        roles["setpoint"]
        == roles["ac_mode"]
        == roles["ac_power"]
        == roles["room_temperature"]
        == {"f1", "f2", "f3"}
    )
    assert roles["light_relay"] == {"f1", "f2", "f3"}
    assert {"f1"} <= roles["illuminance"] and {"f1"} <= roles["window_contact"]
    codes = {p.get("energy_code") for d in site["devices"] for p in d["points"] if p.get("energy_code")}
    assert codes == {"01000", "01A00", "01B00", "01D10", "01D1A", "02000"}
    assert "01D1A" in site["energy_codes"]
    assert {z["id"] for z in site["zones"]} == {"f1", "f2", "f3", "dc"}

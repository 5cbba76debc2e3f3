"""config/site.yaml describes the simulator as its manual does (checked against the simulator's own map)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from sim.building import Building
from sim.modbus_map import AC_UNITS, METER_UNITS, REGISTER_MAP, Reg

SITE = Path(__file__).resolve().parents[2] / "config" / "site.yaml"
_WIDTH = {"int16": 1, "uint16": 1, "bit": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4, "bool": 1}


def _site() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SITE.read_text(encoding="utf-8"))
    return data


def _reg(unit: int, table: str, address: int) -> Reg:
    for r in REGISTER_MAP:
        if (r.unit, r.table, r.address) == (unit, table, address):
            return r
    raise AssertionError(f"site.yaml reads unit {unit} {table} {address}, which the manual does not list")


def test_every_point_matches_the_register_map() -> None:
    site = _site()
    building = Building(seed=0, start=datetime(2026, 7, 15, 6, tzinfo=UTC), script=False)
    units = set()
    for dev in site["devices"]:
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
    # every device of the building is configured; the type-test and bench units are not
    assert units == {r.unit for r in REGISTER_MAP}
    ids = [p["id"] for d in site["devices"] for p in d["points"]]
    assert len(ids) == len(set(ids))


def test_roles_cover_what_the_policies_need() -> None:
    site = _site()
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

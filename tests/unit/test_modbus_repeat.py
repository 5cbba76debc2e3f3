"""Repeated point blocks (issue 11 item 8): expansion at load, and `check` errors at the template's line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from drivers.modbus.options import ModbusDevice, ModbusPoint
from edge_agent.config.load import ConfigError, LoadedConfig, load_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "config"

HEAD = """\
gateway_id: gw-test-01
building_id: "370102A001"
location: {lat: 36.65, lon: 117.12}
floor_area_m2: 8600
occupants: 320
policy: valid_policy.yaml
zones:
  - {id: f1, name: "1F"}
  - {id: f2, name: "2F"}
  - {id: dc, name: "server room", kind: data_centre}
devices:
"""

# Line numbers below count from the top of HEAD + the device text (HEAD is 11 lines).
VRF = """\
  - protocol: modbus
    id: vrf
    host: 127.0.0.1
    unit_id: 21
    repeat:
      - stride: 10
        units:
          - {unit: iu01, zone: f1, name: "1F east"}
          - {unit: iu02, zone: f2}
          - {unit: iu05, zone: f2, index: 4}
        points:
          - {id: power, address: 100, role: ac_power, writable: true}
          - {id: mode, address: 101, role: ac_mode, states: {0: auto, 1: cool, 4: heat, 5: heat}}
          - {id: setpoint, name: setpoint, address: 102, type: int16, scale: 0.1, role: setpoint,
             writable: true, min: 16, max: 32, limits: {cool: {min: 18, max: 32}, heat: {min: 16, max: 30}}}
          - {id: room, ref: 30101, type: int16, scale: 0.1, role: room_temperature}
"""


def _load(tmp_path: Path, devices: str) -> LoadedConfig:
    shutil.copy(FIXTURES / "valid_policy.yaml", tmp_path / "valid_policy.yaml")
    site = tmp_path / "site.yaml"
    site.write_text(HEAD + devices, encoding="utf-8")
    return load_config(site)


def _errors(tmp_path: Path, devices: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, devices)
    return [f"{i.line}: {i.path}: {i.message}" for i in exc.value.errors]


def test_each_repeat_is_plain_points_of_its_own_ac_unit(tmp_path: Path) -> None:
    cfg = _load(tmp_path, VRF)
    points = {p.id: p for _d, p in cfg.points()}
    assert list(points) == [
        f"vrf.{u}.{p}" for u in ("iu01", "iu02", "iu05") for p in ("power", "mode", "setpoint", "room")
    ]
    iu05 = points["vrf.iu05.setpoint"]
    assert isinstance(iu05, ModbusPoint)
    assert (iu05.address, iu05.ac_unit, iu05.zone) == (142, "iu05", "f2")  # index 4 x stride 10
    assert points["vrf.iu02.room"].describe_address() == "input 110 (30111) read FC4"  # ref moved too
    assert points["vrf.iu01.setpoint"].name == "1F east setpoint"
    assert cfg.point_zone("vrf.iu01.power") == "f1"
    assert iu05.limits is not None and iu05.envelope(None) == (18, 30)


def test_a_dump_validated_again_does_not_expand_twice(tmp_path: Path) -> None:
    # (without `ref:`: a dump holds both ref and address, which no point validates from, repeat or not)
    dev = _load(tmp_path, VRF.replace("ref: 30101", "table: input, address: 100")).site.devices[0]
    assert isinstance(dev, ModbusDevice)
    again = type(dev).model_validate(dev.model_dump())  # the site's model: the protocol's plus `report:`
    assert [p.id for p in again.points] == [p.id for p in dev.points]


def test_address_base_one_applies_to_the_expansions(tmp_path: Path) -> None:
    text = VRF.replace("    unit_id: 21\n", "    unit_id: 21\n    address_base: 1\n")
    points = {p.id: p for _d, p in _load(tmp_path, text).points()}
    assert points["vrf.iu02.power"].address == 109  # type: ignore[attr-defined]
    assert points["vrf.iu02.room"].address == 110  # type: ignore[attr-defined]  # a ref is not 1-based


def test_overlapping_registers_are_reported_at_the_template(tmp_path: Path) -> None:
    # A plain point of the device on iu02's block: it overlaps iu02's setpoint, decoded differently.
    text = VRF.replace(
        "    repeat:\n", "    points:\n      - {id: vrf.raw, address: 112, type: uint32}\n    repeat:\n"
    )
    errors = _errors(tmp_path, text)
    assert len(errors) == 1
    # the template's setpoint line (the plain point is on line 17)
    assert errors[0].startswith("27: devices[0].repeat[0].points[2].address: holding registers 112 (int16"), (
        errors
    )


def test_duplicate_expanded_id_is_reported_at_the_template(tmp_path: Path) -> None:
    text = VRF.replace(
        "    repeat:\n", "    points:\n      - {id: vrf.iu02.mode, address: 500}\n    repeat:\n"
    )
    [error] = _errors(tmp_path, text)
    assert error.startswith(
        "26: devices[0].repeat[0].points[1].id: duplicate point id 'vrf.iu02.mode'; first at "
        "devices[0].points[0].id (line 17)"
    ), error


def test_undeclared_and_missing_zones_are_reported_at_the_unit(tmp_path: Path) -> None:
    text = VRF.replace("{unit: iu02, zone: f2}", "{unit: iu02, zone: f9}").replace(
        "{unit: iu05, zone: f2, ", "{unit: iu05, "
    )
    errors = _errors(tmp_path, text)
    assert any(
        e.startswith("20: devices[0].repeat[0].units[1].zone: zone 'f9' is not declared") for e in errors
    ), errors
    assert any(
        e.startswith("21: devices[0].repeat[0].units[2]: zone missing: unit 'iu05'") for e in errors
    ), errors


def test_template_problems_are_reported_once_at_the_template(tmp_path: Path) -> None:
    text = VRF.replace("address: 100, role: ac_power", "address: 100, rol: ac_power")
    errors = _errors(tmp_path, text)
    assert errors == ["23: devices[0].repeat[0].points[0].rol: unknown key; did you mean 'role'?"], errors


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("index: 4}", "index: 1}", "units 'iu02' and 'iu05' both take block 1"),
        ("{unit: iu05,", "{unit: iu02,", "unit 'iu02' is listed twice"),
        ("stride: 10", "stride: 2", "stride 2 is shorter than the template's holding block 100-102"),
        (
            "{id: power, address: 100,",
            "{id: power, zone: f1, address: 100,",
            "`zone:` and `ac_unit:` come from",
        ),
    ],
)
def test_block_problems_are_reported_at_the_block(tmp_path: Path, old: str, new: str, message: str) -> None:
    errors = _errors(tmp_path, VRF.replace(old, new))
    assert any(e.startswith("17: devices[0].repeat[0]: ") and message in e for e in errors), errors


def test_expansion_past_the_last_register_is_reported_at_the_template(tmp_path: Path) -> None:
    text = VRF.replace("address: 100, role: ac_power", "address: 65520, role: ac_power")
    errors = _errors(tmp_path, text)
    assert any(
        e.startswith("23: devices[0].repeat[0].points[0].address: 65560 is above 65535") for e in errors
    ), errors


def test_explain_addresses_lists_the_expansions(tmp_path: Path) -> None:
    from edge_agent.cli.check import _address_lines

    rows = _address_lines(_load(tmp_path, VRF))
    assert any("vrf.iu05.setpoint" in r and "holding 142 (40143) read FC3, write FC6" in r for r in rows), (
        rows
    )

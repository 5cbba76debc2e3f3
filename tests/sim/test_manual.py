"""MANUAL.md documents exactly what the simulator serves."""

from __future__ import annotations

import re
from pathlib import Path

from sim import modbus_map, typebank
from sim.building import DEFAULT_SCRIPT
from sim.runner import Simulator

MANUAL = (Path(__file__).resolve().parents[2] / "sim" / "MANUAL.md").read_text(encoding="utf-8")


def test_every_register_row_is_in_the_manual() -> None:
    lines = set(MANUAL.splitlines())
    missing = [r for r in modbus_map.manual_rows() + typebank.manual_rows() if r not in lines]
    assert not missing, "MANUAL.md lacks:\n" + "\n".join(missing)


def test_manual_tables_have_no_rows_the_simulator_lacks() -> None:
    documented = set(modbus_map.manual_rows()) | set(typebank.manual_rows())
    table_rows = [
        line
        for line in MANUAL.splitlines()
        if re.match(r"^\| (\d[\d, -]*|holding|input|coil|discrete) \| (holding|input|coil|discrete|\d)", line)
        and line.count("|") in (9, 11)
    ]
    assert table_rows
    extra = [r for r in table_rows if r not in documented]
    assert not extra, extra


def test_unit_plan_and_script_documented() -> None:
    sim = Simulator(seed=0, bench_units=0)
    for unit in sim.units:
        assert re.search(rf"^\| [^|]*\b{unit}\b[^|]* \|", MANUAL, re.M), unit
    for ev in DEFAULT_SCRIPT:
        assert f"| {ev.name} | {ev.at:%H:%M} | {ev.days} | {ev.season} | {ev.description} |" in MANUAL
    sim.modbus.close()

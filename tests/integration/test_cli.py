"""The `edge-agent` command line: check, schema, --help everywhere, tail, policy explain, demo.

Most verbs run in-process through `edge_agent.cli.app` (a child Python costs over a second here);
the console script itself is exercised by `edge-agent --help` and the demo, as child processes.
Our own small site (tests/fixtures/service/) is used wherever config/site.yaml is not the point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from edge_agent.cli.app import build_parser, main
from edge_agent.config.load import load_config
from edge_agent.service.service import Service
from tests.integration.test_service import FIXTURES, ROOT, edge_agent_cmd, running_sim, wait_until, write_site

Cli = Callable[..., tuple[int, str, str]]
EXPLAIN = ("policy", "explain", "--sim", "-c")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """main(argv) in-process: (exit code, stdout, stderr). Restores the logging set-up main() changes."""
    saved = structlog.get_config()
    levels = {n: logging.getLogger(n).level for n in ("pymodbus", "bacpypes3", "aiomqtt")}

    def call(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            rc = main(list(argv))
        except SystemExit as exc:  # argparse: --help, usage errors
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        got = capsys.readouterr()
        return rc, got.out, got.err

    yield call
    structlog.configure(**saved)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _line_col(path: Path, needle: str, *, occurrence: int = 1, at: str | None = None) -> tuple[int, int]:
    """1-based line of the n-th line containing `needle`, and the column of `at` (default: needle) in it."""
    seen = 0
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return i, line.index(at or needle) + 1
    raise AssertionError(f"{needle!r} #{occurrence} not in {path}")


# -- check ---------------------------------------------------------------------------------------


def test_check_example_site_is_valid(cli: Cli) -> None:
    rc, out, err = cli("check", str(ROOT / "config" / "site.yaml"))
    assert rc == 0, out + err
    assert "OK" in out


def test_check_names_every_error_with_file_line_col(cli: Cli) -> None:
    site = FIXTURES / "three_errors_site.yaml"
    rc, out, err = cli("check", str(site))
    assert rc == 2
    text = out + err
    key_line, key_col = _line_col(site, "interval_sec:")
    addr_line, addr_col = _line_col(site, "address: 70000")
    dup_line, dup_col = _line_col(site, "{id: f2.ls.power", occurrence=2, at="id:")
    expected = [
        (f"{site}:{key_line}:{key_col}: devices[0].interval_sec:", "unknown key"),
        (f"{site}:{addr_line}:{addr_col}: devices[0].points[1].address:", "70000"),
        (f"{site}:{dup_line}:{dup_col}: devices[1].points[1].id:", "duplicate point id 'f2.ls.power'"),
    ]
    for where, what in expected:
        hits = [ln for ln in text.splitlines() if ln.startswith(where)]
        assert hits and what in hits[0], f"missing {where} ... {what} in:\n{text}"
    assert "3 error(s)" in text
    rc, out, _ = cli("check", "--json", str(site))
    assert rc == 2
    issues = json.loads(out)["issues"]
    assert [(i["line"], i["col"], i["path"]) for i in issues] == [
        (key_line, key_col, "devices[0].interval_sec"),
        (addr_line, addr_col, "devices[0].points[1].address"),
        (dup_line, dup_col, "devices[1].points[1].id"),
    ]


# -- schema and help -----------------------------------------------------------------------------


def test_schema_prints_the_committed_json_schema(cli: Cli) -> None:
    rc, out, err = cli("schema")
    assert rc == 0, err
    committed = json.loads((ROOT / "config" / "schema.json").read_text(encoding="utf-8"))
    assert json.loads(out) == committed


def _command_paths(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _command_paths(sub, (*prefix, name))


def test_help_of_every_subcommand_exits_0(cli: Cli) -> None:
    paths = list(_command_paths(build_parser()))
    assert {("run",), ("status",), ("tail",), ("audit", "verify"), ("policy", "explain")} <= set(paths)
    for path in paths:
        rc, out, err = cli(*path, "--help")
        assert rc == 0, f"{' '.join(path)} --help: {err}"
        assert out.startswith("usage: edge-agent " + " ".join(path)), out[:200]


def test_console_script_help_exits_0(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*edge_agent_cmd(), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    for verb in ("run", "check", "status", "tail", "audit", "demo", "policy"):
        assert verb in proc.stdout


# -- tail on the database of a short run -----------------------------------------------------------


async def test_tail_shows_readings_of_a_short_run(tmp_path: Path, cli: Cli) -> None:
    async with running_sim() as sim:
        assert sim.modbus_port is not None
        cfg = load_config(write_site(tmp_path / "etc", sim_port=sim.modbus_port))
        svc = Service(cfg, state_dir=tmp_path / "state")
        run = asyncio.create_task(svc.run(), name="service")
        try:
            await wait_until(lambda: svc.outbox.stats().newest_seq >= 20, 10, "20 stored readings")
        finally:
            svc.agent.stop()
            await asyncio.wait_for(run, 10)
            newest = svc.outbox.stats().newest_seq  # after the final flush
            svc.close()
    db = svc.db_path
    point_ids = {p.id for _, p in cfg.points()}

    rc, out, err = cli("tail", "--db", str(db), "-n", "6", "--json")
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in rows] == list(range(newest - 5, newest + 1))
    assert all(r["point"] in point_ids and r["quality"] == "good" for r in rows), rows
    assert all(isinstance(r["value"], int | float) for r in rows), rows

    rc, out, err = cli("tail", "--db", str(db), "-n", "6")
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 6
    for line, row in zip(lines, rows, strict=True):
        assert line.split()[0] == str(row["seq"]) and row["point"] in line and "good" in line

    rc, _, err = cli("tail", "--db", str(tmp_path / "nope.db"))
    assert rc == 2 and "no state database" in err


# -- policy explain --------------------------------------------------------------------------------


def test_policy_explain_sim_decides_write_for_the_22c_unit(cli: Cli) -> None:
    # sim/MANUAL.md 6: at 14:00 on working days in summer an occupant sets f2-ac1 to cool at 22 °C.
    site = FIXTURES / "site.yaml"
    rc, out, err = cli(*EXPLAIN, str(site), "--at", "2026-07-15T14:05", "--zone", "f2", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["source"] == "simulator" and doc["day"]["working"] is True
    assert doc["unreadable_points"] == []
    (hit,) = [x for x in doc["explanations"] if x["point"] == "f2-ac1.setpoint"]
    assert hit["decision"] == "write" and hit["rule"] == "hvac.summer_min_cooling"
    assert hit["why"]["value"] == pytest.approx(22.0) and hit["why"]["limit_c"] == pytest.approx(26.0)
    assert all(x["zone"] == "f2" for x in doc["explanations"])

    # Before the occupant's change the unit sits at the limit: nothing to write.
    rc, out, err = cli(*EXPLAIN, str(site), "--at", "2026-07-15T11:00", "--zone", "f2", "--json")
    assert rc == 0, err
    before = [x for x in json.loads(out)["explanations"] if x["point"] == "f2-ac1.setpoint"]
    assert before and all(x["decision"] != "write" for x in before), before


# -- demo ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_runs_and_prints_the_table(tmp_path: Path) -> None:
    # Uses config/site.yaml, whose BACnet ports are fixed: it fails if another demo or sim holds them.
    proc = subprocess.run(
        [*edge_agent_cmd(), "demo", "--duration", "8", "--state-dir", str(tmp_path / "state")],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The RS-485 buses run on the simulator's ptys: no warning that /dev/ttyUSB0 is missing, but the ptys.
    assert "does not exist on this machine" not in proc.stderr, proc.stderr
    assert re.search(r"RS-485 buses on pseudo-terminals: meter bus .* /dev/pts/\d+", proc.stderr), proc.stderr
    assert f"edge-agent status --state-dir {tmp_path / 'state'}" in proc.stderr  # where it answers
    out = proc.stdout
    assert "edge-agent demo" in out
    assert re.search(r"^zone\s+AC unit\s+power\s+mode\s+setpoint\s+room\s+lights$", out, re.M), out[-3000:]
    assert re.search(r"^meter point\s+code\s+value\s+quality$", out, re.M)
    assert "audit trail (newest last):" in out
    # 2026-07-15 14:00 (sim/MANUAL.md 6): f2-ac1 is set to 22 °C; the agent writes it back to 26.
    assert re.search(r"WRITE\s+\S+: 22\.0 -> 26\.0 \(hvac\.summer_min_cooling\) ok", out), out[-3000:]
    assert f"edge-agent audit verify --db {tmp_path / 'state'}" in out
    # and the month's report from that run carries the correction in its enforcement section
    db = tmp_path / "state" / "edge-agent.db"
    assert f"edge-agent report --period 2026-07 --db {db}" in out
    rep = subprocess.run(
        [*edge_agent_cmd(), "report", "--period", "2026-07", "--db", str(db), "--format", "json",
         "--out", str(tmp_path / "rep")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert rep.returncode == 0, rep.stderr[-2000:]
    doc = json.loads(next((tmp_path / "rep").glob("*.json")).read_text())
    assert doc["enforcement"]["setpoint_corrections_total"] >= 1


async def test_demo_beside_a_running_simulator_says_what_holds_the_ports(tmp_path: Path) -> None:
    """`make demo` while `edge-agent sim` runs: the Modbus port falls back to a free one, the BACnet port
    cannot (devices and agent must agree on it): one line naming it, exit 1, no traceback."""
    import io
    import socket

    from edge_agent.devtools.demo import run_demo
    from edge_agent.devtools.simwire import free_udp_port, retarget_bacnet, retarget_modbus

    udp_port = free_udp_port()
    cfg = retarget_bacnet(
        load_config(ROOT / "config" / "site.yaml"),
        local_address=f"127.0.0.1:{udp_port}",
        device_port=udp_port,
    )
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp.bind(("127.0.0.2", udp_port))  # the first simulated BACnet device's address
        cfg = retarget_modbus(cfg, "127.0.0.1", tcp.getsockname()[1])
        out, err = io.StringIO(), io.StringIO()
        rc = await run_demo(
            cfg, at="2026-07-15T13:59:30+08:00", speed=300, state_dir=str(tmp_path), refresh=1, duration=1,
            out=out, err=err,
        )  # fmt: skip
    assert rc == 1, err.getvalue()
    assert "is taken" in err.getvalue() and "using a free port instead" in err.getvalue()
    assert f"127.0.0.2:{udp_port}" in err.getvalue() and "stop it first" in err.getvalue()


def test_commands_that_read_the_state_say_nothing_of_this_machines_serial_ports(
    tmp_path: Path, cli: Cli
) -> None:
    """config/site.yaml names /dev/ttyUSB0 and 1: check warns when they are missing here; status, tail,
    audit, meter and policy explain do not open them, and their output stays theirs."""
    site = str(ROOT / "config" / "site.yaml")
    assert "serial port /dev/ttyUSB0 does not exist" in cli("check", site)[2]
    for argv in (
        ["status", "-c", site],
        ["tail", "-c", site, "--state-dir", str(tmp_path)],
        ["audit", "verify", "-c", site, "--db", str(tmp_path / "none.db")],
        ["meter", "steps", "-c", site],
        ["policy", "explain", "--sim", "-c", site, "--at", "2026-07-15T14:05", "--zone", "f2"],
    ):
        assert "serial port" not in cli(*argv)[2], argv


def test_explain_addresses_covers_the_rs485_meters(cli: Cli) -> None:
    """config/site.yaml's meter bus: the DI each DL/T 645 point reads, with its value layout, and the
    CJ/T 188 quantity of the 901F read (they printed "-")."""
    rc, out, _ = cli("check", str(ROOT / "config" / "site.yaml"), "--explain-addresses")
    assert rc == 0
    rows = {line.split()[1]: line for line in out.splitlines()[1:] if len(line.split()) > 2}
    assert rows["f1.ls.energy"].endswith(
        "DI 00010000 forward_active_energy (4 BCD bytes, 2 decimals, kWh) read C 11H"
    ), rows
    assert rows["f1.ls.power"].endswith(
        "DI 02030000 active_power (3 BCD bytes, 4 decimals, signed, kW) read C 11H"
    )
    assert rows["water.volume"].endswith("DI 901F flow read C 01H")
    assert rows["f1.ac.energy"].endswith("holding 0 (40001) read FC3")  # Modbus RTU, as over TCP
    assert "  -" not in out  # every protocol says where it reads


def test_every_command_has_a_description_and_every_option_a_help() -> None:
    """`edge-agent X --help` explains X and each of its options (a bare `--units UNITS` does not)."""
    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        if path and not parser.description:
            missing.append(f"{' '.join(path)}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))
            elif not action.help:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}: no help")

    walk(build_parser(), ())
    assert not missing, missing


@pytest.mark.parametrize("proto", ["dlt645", "modbus-rtu"])
def test_discover_on_a_port_that_is_not_there_says_why_once(cli: Cli, tmp_path: Path, proto: str) -> None:
    port = str(tmp_path / "ttyUSB9")
    units = ["--units", "1"] if proto == "modbus-rtu" else []
    rc, out, err = cli("discover", proto, "--port", port, *units)
    assert (rc, out) == (1, "")
    assert err == f"discover: {port}: cannot open the serial port: No such file or directory\n"


def test_tail_reads_a_database_of_the_first_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After an upgrade, before the agent has restarted (and converted it): tail, read-only, reads the old
    table as it is, values of every type included."""
    import json
    import sqlite3

    from edge_agent.cli.tail import tail_main

    db = tmp_path / "edge-agent.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE outbox_readings (seq INTEGER PRIMARY KEY AUTOINCREMENT, point TEXT NOT NULL, "
        "ts_us INTEGER NOT NULL, value NUMERIC, vjson TEXT, unit TEXT, quality TEXT NOT NULL, code TEXT, "
        "flags TEXT);"
        "INSERT INTO outbox_readings VALUES (1, 'p1', 1000000, 1.5, NULL, 'kWh', 'good', NULL, 'spike');"
        "INSERT INTO outbox_readings VALUES (2, 'p2', 2000000, NULL, 'true', NULL, 'good', NULL, NULL);"
        "INSERT INTO outbox_readings VALUES (3, 'p3', 3000000, NULL, NULL, 'degC', 'bad', 'timeout', NULL);"
    )
    conn.commit()
    conn.close()
    assert tail_main(db, lines=5, follow=False, as_json=True) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["seq"], r["point"], r["value"], r["quality"], r["code"], r["flags"]) for r in got] == [
        (1, "p1", 1.5, "good", None, ["spike"]),
        (2, "p2", True, "good", None, []),
        (3, "p3", None, "bad", "timeout", []),
    ]

"""`edge-agent bench rs485 --json` runs end to end over a real pseudo-terminal and prints its figures beside
the bus's limit (the figures themselves are not asserted: tests never time anything)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_rs485_prints_points_per_second_beside_the_bus_limit() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "bench", "rs485", "--units", "2", "--points", "4",
         "--seconds", "0.5", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["bad_readings"] == 0
    assert res["theoretical_points_per_s"] > 0 and res["points_per_s"] > 0
    assert res["reply_bytes"] == 5 + 2 * 4 and res["bits_per_char"] == 11


def test_bench_rs485_refuses_a_read_the_protocol_cannot_make() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "bench", "rs485", "--points", "200", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "--points 1..125" in proc.stderr

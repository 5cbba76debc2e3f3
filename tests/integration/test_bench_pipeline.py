"""`edge-agent bench pipeline --json`: a tiny run prints every documented key, for the agent and the baseline.

No figure is asserted (a shared machine's speed is not a test result); only that each was measured.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.integration.test_service import edge_agent_cmd

KEYS = {
    "cpu_ms_per_1k_points",
    "rss_mb",
    "start_s",
    "check_s",
    "disk_bytes_per_reading",
    "wire_bytes_per_reading",
}


def test_bench_pipeline_json_has_the_figures_and_a_baseline(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            *edge_agent_cmd(),
            "bench",
            "pipeline",
            "--points",
            "80",
            "--interval",
            "0.5",
            "--seconds",
            "2",
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert res["points"] == 80
    assert res["interval_s"] == 0.5
    for run in (res, res["baseline"]):
        assert set(run) >= KEYS
        for key in KEYS:
            assert isinstance(run[key], int | float) and run[key] > 0, (key, run)

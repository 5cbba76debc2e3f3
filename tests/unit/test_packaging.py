"""The wheel must hold all four packages: the demo and `edge-agent sim` need sim/ on a fresh machine."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_contains_all_packages(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheels = list(tmp_path.glob("edge_agent-*.whl"))
    assert len(wheels) == 1, wheels
    names = zipfile.ZipFile(wheels[0]).namelist()
    for pkg in ("edge_agent", "drivers", "policies", "sim"):
        assert f"{pkg}/__init__.py" in names, f"{pkg} missing from the wheel"
        assert f"{pkg}/py.typed" in names
    assert "drivers/modbus/options.py" in names
    assert "sim/MANUAL.md" in names, "the simulator's manual ships with it"
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "edge-agent = edge_agent.cli:main" in zipfile.ZipFile(wheels[0]).read(entry).decode()

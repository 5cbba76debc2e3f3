"""deploy/install.sh for real into a temp root, and the unit file through systemd-analyze.

The install really creates the virtualenv from deploy/requirements.lock and builds the project
(about 20 s on an idle 2-core machine, up to ~45 s under load; the update step builds a second
release). It runs once per module; the tests then inspect, re-run, update, roll back, uninstall.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.sh"
UNIT = REPO / "deploy" / "systemd" / "edge-agent.service"
LOCK = REPO / "deploy" / "requirements.lock"
MAX_EXPOSURE = 2.5

pytestmark = pytest.mark.slow

_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache",
    ".pytest_cache", ".hypothesis", "state", "*.db", "*.db-wal", "*.db-shm",
)  # fmt: skip


@dataclass
class Installed:
    root: Path
    source: Path
    first_output: str
    seconds: float

    @property
    def prefix(self) -> Path:
        return self.root / "opt" / "edge-agent"

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "edge-agent"


def run_install(*args: str | Path, source: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["bash", str(INSTALL), "--source", str(source), "--python", sys._base_executable, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("deploy")
    # A frozen copy of the checkout: others edit the live tree, and the release id hashes the source.
    source = base / "src"
    shutil.copytree(REPO, source, ignore=_IGNORE, symlinks=True)
    for name in ("site.yaml", "policy.yaml"):
        cfg = source / "config" / name
        if not cfg.exists():  # the installer's copy rules are under test here, not the examples
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text(f"# placeholder {name} for the installer test\n")
    root = base / "root"
    t0 = time.monotonic()
    proc = run_install("--root", root, source=source)
    seconds = time.monotonic() - t0
    print(f"\ninstall.sh --root: {seconds:.1f} s")
    yield Installed(root=root, source=source, first_output=proc.stdout + proc.stderr, seconds=seconds)
    shutil.rmtree(base, ignore_errors=True)


def tree_state(path: Path) -> dict[str, tuple[str, int]]:
    """path -> (content hash or link target, mtime_ns) for everything under `path`."""
    out: dict[str, tuple[str, int]] = {}
    for p in sorted(path.rglob("*")):
        st = p.lstat()
        if p.is_symlink():
            out[str(p.relative_to(path))] = ("-> " + os.readlink(p), st.st_mtime_ns)
        elif p.is_file():
            out[str(p.relative_to(path))] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns)
    return out


def test_files_in_place(installed: Installed) -> None:
    root, prefix = installed.root, installed.prefix
    assert (root / "etc/systemd/system/edge-agent.service").read_bytes() == UNIT.read_bytes()
    sysusers = (root / "etc/sysusers.d/edge-agent.conf").read_text()
    assert re.search(r"^u edge-agent - .* /var/lib/edge-agent$", sysusers, re.M)
    for name in ("site.yaml", "policy.yaml"):
        assert (installed.conf / name).read_bytes() == (installed.source / "config" / name).read_bytes()
    # venv -> current/venv -> releases/<id>/venv, relative links (valid under any root)
    assert os.readlink(prefix / "venv") == "current/venv"
    current = os.readlink(prefix / "current")
    assert re.fullmatch(r"releases/[0-9a-f]{12}", current)
    assert (prefix / current / ".complete").exists()
    assert not (prefix / "previous").exists()
    # The scripts name the path they will have on the target system, not the staging root.
    script = (prefix / "venv/bin/edge-agent").read_text()
    assert script.startswith(f"#!/opt/edge-agent/{current}/venv/bin/python\n")
    assert str(root) not in script
    assert "edge_agent.cli" in script
    # Nothing written outside the root's own tree, and no state created by the installer.
    assert not (root / "var/lib/edge-agent").exists()


def test_venv_holds_exactly_the_lock(installed: Installed) -> None:
    py = installed.prefix / "venv/bin/python"
    proc = subprocess.run(
        [str(py), "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True, check=True
    )
    frozen = {ln.strip().lower() for ln in proc.stdout.splitlines() if ln.strip()}
    project = {ln for ln in frozen if ln.startswith("edge-agent")}
    assert len(project) == 1  # the project itself, installed --no-deps
    locked = {
        ln.strip().lower() for ln in LOCK.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    }
    assert frozen - project == locked
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    imp = subprocess.run(
        [
            str(py),
            "-c",
            "import edge_agent.ops.status, edge_agent.ops.sdnotify, edge_agent.ops.health,"
            " drivers, policies, sim",
        ],
        capture_output=True,
        text=True,
    )
    assert imp.returncode == 0, imp.stderr


def test_lock_has_no_dev_tools_and_covers_pyproject() -> None:
    import tomllib

    from packaging.requirements import Requirement

    pins = {}
    for ln in LOCK.read_text().splitlines():
        if ln.strip() and not ln.startswith("#"):
            name, _, ver = ln.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = ver
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        req = Requirement(spec)
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        assert key in pins, f"{req.name} is a runtime dependency but not pinned in {LOCK.name}"
        assert req.specifier.contains(pins[key]), f"{req.name}=={pins[key]} does not satisfy {req.specifier}"
    for spec in project["optional-dependencies"]["dev"]:
        key = re.sub(r"[-_.]+", "-", Requirement(spec).name).lower()
        assert key not in pins, f"dev tool {key} in the runtime lock"


def test_second_run_changes_nothing_and_keeps_staff_edits(installed: Installed) -> None:
    site = installed.conf / "site.yaml"
    edited = site.read_text() + "# changed by facilities staff\n"
    site.write_text(edited)
    etc_before = tree_state(installed.root / "etc")
    opt_before = tree_state(installed.prefix)
    t0 = time.monotonic()
    proc = run_install("--root", installed.root, source=installed.source)
    print(f"\ninstall.sh --root (no-op re-run): {time.monotonic() - t0:.1f} s")
    assert site.read_text() == edited
    assert "already built" in proc.stdout
    assert f"kept {site} (existing file, never overwritten)" in proc.stdout
    assert tree_state(installed.root / "etc") == etc_before
    assert tree_state(installed.prefix) == opt_before


def test_update_then_rollback(installed: Installed) -> None:
    prefix = installed.prefix
    first = os.readlink(prefix / "current")
    marker = installed.source / "edge_agent" / "_deploy_test_marker.py"
    marker.write_text("RELEASE = 'second'\n")
    try:
        proc = run_install("--root", installed.root, source=installed.source)
    finally:
        marker.unlink()
    second = os.readlink(prefix / "current")
    assert second != first
    assert os.readlink(prefix / "previous") == first
    assert f"previous: {first.removeprefix('releases/')}" in proc.stdout
    py = str(prefix / "venv/bin/python")
    code = "import edge_agent._deploy_test_marker as m; print(m.RELEASE)"
    assert subprocess.run([py, "-I", "-c", code], capture_output=True, text=True).stdout.strip() == "second"

    proc = run_install("--rollback", "--root", installed.root, source=installed.source)
    assert os.readlink(prefix / "current") == first
    assert os.readlink(prefix / "previous") == second
    gone = subprocess.run([py, "-I", "-c", code], capture_output=True, text=True)
    assert gone.returncode != 0 and "ModuleNotFoundError" in gone.stderr


def test_uninstall_keeps_config_and_state(installed: Installed) -> None:
    state = installed.root / "var/lib/edge-agent"
    state.mkdir(parents=True)
    (state / "edge-agent.db").write_bytes(b"outbox")
    conf_before = tree_state(installed.conf)
    proc = run_install("--uninstall", "--root", installed.root, source=installed.source)
    assert not (installed.root / "etc/systemd/system/edge-agent.service").exists()
    assert not (installed.root / "etc/sysusers.d/edge-agent.conf").exists()
    assert not installed.prefix.exists()
    assert tree_state(installed.conf) == conf_before
    assert (state / "edge-agent.db").read_bytes() == b"outbox"
    assert str(installed.conf) in proc.stdout and str(state) in proc.stdout
    # Rolling back with nothing installed fails with a clear message.
    rb = run_install("--rollback", "--root", installed.root, source=installed.source, check=False)
    assert rb.returncode == 1 and "no previous release" in rb.stderr


def test_bad_arguments() -> None:
    proc = subprocess.run(["bash", str(INSTALL), "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 1 and "unknown argument: --bogus" in proc.stderr


# --- the unit file -------------------------------------------------------------------------------


def _systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return exe


def test_unit_verifies_clean(tmp_path: Path) -> None:
    """`systemd-analyze verify` checks that Exec*= binaries exist: point them at real executables in
    a temp copy (the unit name must stay edge-agent.service). Any output is a finding."""
    exe = _systemd_analyze()
    fake = tmp_path / "opt/edge-agent/venv/bin/edge-agent"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    text = UNIT.read_text().replace("/opt/edge-agent/", f"{tmp_path}/opt/edge-agent/")
    unit = tmp_path / "edge-agent.service"
    unit.write_text(text)
    proc = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr
    # The check does catch mistakes: a typo in a directive is reported.
    unit.write_text(text.replace("ProtectHome=yes", "ProtectHome=yes\nProtectHomez=yes"))
    bad = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path)
    assert "ProtectHomez" in bad.stderr


def test_unit_settings() -> None:
    text = UNIT.read_text()
    settings = {}
    for ln in text.splitlines():
        if ln and not ln.startswith(("#", "[")) and "=" in ln:
            k, _, v = ln.partition("=")
            settings.setdefault(k, []).append(v)
    one = {k: v[-1] for k, v in settings.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main" and one["WatchdogSec"] == "30"
    assert one["User"] == "edge-agent" and "DynamicUser" not in one
    assert one["ExecStartPre"] == "/opt/edge-agent/venv/bin/edge-agent check -c /etc/edge-agent/site.yaml"
    assert one["ExecStart"] == (
        "/opt/edge-agent/venv/bin/edge-agent run -c /etc/edge-agent/site.yaml --state-dir /var/lib/edge-agent"
    )
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["CapabilityBoundingSet"] == ""
    assert one["MemoryDenyWriteExecute"] == "yes" and one["MemoryMax"] == "256M"
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert settings["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    for key in ("StateDirectory", "ConfigurationDirectory", "RuntimeDirectory"):
        assert one[key] == "edge-agent"


def test_unit_security_exposure() -> None:
    exe = _systemd_analyze()
    proc = subprocess.run(
        [exe, "security", "--offline=true", "--no-pager", str(UNIT)], capture_output=True, text=True
    )
    m = re.search(r"Overall exposure level for edge-agent\.service: (\d+(?:\.\d+)?)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    exposure = float(m.group(1))
    print(f"\nsystemd-analyze security exposure: {exposure}")
    assert exposure <= MAX_EXPOSURE

"""uplink.platform in site.yaml: `check` validates the city's ids, and the service runs the platform task
beside the poll loops and reports it in status (against the Modbus and platform simulators)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.config.files import check_files
from edge_agent.config.load import ConfigError, load_config
from edge_agent.core.clock import FakeClock
from edge_agent.service.service import Service
from sim.platform_server import PlatformServer, PlatformSimOptions
from tests.sitetext import ROOT, example_site_without

KEY = b"0123456789abcdef"


def platform_site(tmp_path: Path, port: int, meters: str) -> Path:
    (tmp_path / "platform.key").write_bytes(KEY + b"\n")
    site = tmp_path / "site.yaml"
    site.write_text(
        example_site_without({"uplink", "policy", "storage"})
        + f"policy: {ROOT / 'config' / 'policy.yaml'}\n"
        + "storage: {path: state/agent.db}\n"
        + "uplink:\n  platform:\n    host: 127.0.0.1\n"
        + f"    port: {port}\n    key_file: platform.key\n    meters:\n{meters}",
        encoding="utf-8",
    )
    return site


def test_check_names_unknown_points_non_meters_bad_codes_and_duplicate_ids(tmp_path: Path) -> None:
    site = platform_site(
        tmp_path,
        9000,
        "      - {point: main.energy, meter_id: M01}\n"
        "      - {point: main.enrgy, meter_id: M02}\n"
        "      - {point: f1.ls.energy, meter_id: M01, coding: 1A}\n",
    )
    with pytest.raises(ConfigError) as exc:
        load_config(site)
    got = {i.path: i.message for i in exc.value.issues}
    assert (
        "no point 'main.enrgy' in devices; did you mean 'main.energy'?"
        in got["uplink.platform.meters[1].point"]
    )
    assert "listed twice; first at" in got["uplink.platform.meters[2].meter_id"]
    assert "not a MOHURD item code" in got["uplink.platform.meters[2].coding"]
    line = {i.path: i.line for i in exc.value.issues}["uplink.platform.meters[1].point"]
    assert site.read_text().splitlines()[line - 1].strip().startswith("- {point: main.enrgy")


def test_the_key_file_is_resolved_and_checked(tmp_path: Path) -> None:
    site = platform_site(tmp_path, 9000, "      - {point: main.energy, meter_id: M01}\n")
    cfg = load_config(site)
    assert cfg.site.uplink is not None and cfg.site.uplink.platform is not None
    assert cfg.site.uplink.platform.key_file == str(tmp_path / "platform.key")
    assert cfg.site.uplink.host is None  # the platform alone: no MQTT
    (tmp_path / "platform.key").unlink()
    (issue,) = check_files(cfg)
    assert issue.path == "uplink.platform.key_file" and "does not exist" in issue.message


async def test_the_service_runs_the_platform_task_and_reports_it(tmp_path: Path) -> None:
    async with PlatformServer(PlatformSimOptions(key=KEY)) as platform:
        port = await platform.start()
        site = platform_site(tmp_path, port, "      - {point: main.energy, meter_id: M01}\n")
        cfg = load_config(site)
        svc = Service(
            cfg, state_dir=tmp_path / "state", clock=FakeClock(datetime(2026, 7, 1, 2, 0, tzinfo=UTC))
        )
        try:
            assert svc.uplink is None and svc.platform is not None
            task = asyncio.create_task(svc.platform.run(), name="platform")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not svc.status_doc()["platform"]["authenticated"]:
                assert loop.time() < deadline, "never authenticated"
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            doc = svc.status_doc()["platform"]
            assert (
                doc["host"] == f"127.0.0.1:{port}" and doc["backlog_periods"] == 0 and doc["period_s"] == 900
            )
        finally:
            svc.close()


def test_platform_check_against_sim_platform(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`edge-agent sim --platform PORT` in a process, `edge-agent platform check` against it."""
    import json
    import select
    import socket
    import subprocess
    import sys

    from edge_agent.cli.app import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "sim", "--platform", str(port), "--platform-cipher", "ecb"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the platform simulator printed nothing in 60 s"
        assert f"platform simulator on 127.0.0.1:{port}" in proc.stdout.readline()
        good = platform_site(tmp_path, port, "      - {point: main.energy, meter_id: M01}\n")
        text = good.read_text()
        good.write_text(text + "    cipher: {mode: ecb}\n")
        state = tmp_path / "state"
        assert main(["platform", "check", "-c", str(good), "--json"]) == 0
        steps = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(s["step"], s["ok"]) for s in steps] == [
            ("key", True),
            ("connect", True),
            ("id_validate", True),
            ("heartbeat", True),
        ]
        (tmp_path / "platform.key").write_bytes(b"fedcba9876543210")
        assert main(["platform", "check", "-c", str(good), "--json"]) == 1
        last = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert last["step"] == "id_validate" and not last["ok"] and "check the key" in last["detail"]
        assert not state.exists()  # a check without --send-test-period touches no state
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_a_platform_clock_that_disagrees_flags_readings_not_the_clock(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 7, 1, 2, 0, tzinfo=UTC))
    opts = PlatformSimOptions(key=KEY, time_offset_s=300)  # the platform's clock is 5 minutes ahead of ours
    async with PlatformServer(opts, now=clock.now) as platform:
        port = await platform.start()
        site = platform_site(tmp_path, port, "      - {point: main.energy, meter_id: M01}\n")
        svc = Service(load_config(site), state_dir=tmp_path / "state", clock=clock)
        try:
            assert svc.monitor.flags(clock.now()) == ()
            assert svc.platform is not None
            task = asyncio.create_task(svc.platform.run(), name="platform")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not svc.monitor.reference_off:
                assert loop.time() < deadline, "no heartbeat answer"
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert clock.now() == datetime(2026, 7, 1, 2, 0, tzinfo=UTC)  # never changed
            assert "clock_offset" in svc.monitor.flags(clock.now())
            doc = svc.status_doc()["clock"]
            assert doc["reference_offset_s"] == -300.0 and doc["reference_off"] is True
        finally:
            svc.close()

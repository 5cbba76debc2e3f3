"""`edge-agent run --json-logs` with a wrong MQTT password: one clear JSON line, not one per retry."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import Broker
from tests.integration.test_json_logs import _events, _records
from tests.integration.test_service import AgentProcess, running_sim, wait_until, write_site

UPLINK = """
uplink:
  host: 127.0.0.1
  port: {port}
  topic_prefix: svc
  credentials_file: {cred}
  backoff_initial_s: 0.1
  max_backoff_s: 0.3
  connect_timeout_s: 2
"""


@pytest.mark.slow
async def test_wrong_password_is_one_json_line(broker: Broker, tmp_path: Path) -> None:
    pw = tmp_path / "passwd"
    await asyncio.to_thread(
        subprocess.run,
        ["mosquitto_passwd", "-b", "-c", str(pw), "gw", "right"],
        check=True,
        capture_output=True,
    )
    broker.stop()
    broker.extra = [f"password_file {pw}"]
    broker.start()
    cred = tmp_path / "mqtt.cred"
    cred.write_text("gw:wrong\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "RUNTIME_DIRECTORY")
    }
    log = tmp_path / "agent.log"
    async with running_sim() as sim:
        assert sim.modbus_port is not None
        site = write_site(
            tmp_path / "etc", sim_port=sim.modbus_port, extra=UPLINK.format(port=broker.port, cred=cred)
        )
        agent = AgentProcess(site=site, state_dir=tmp_path / "state", log=log, env=env)
        try:
            await agent.start()
            await wait_until(lambda: bool(_events(log, "uplink_connect_failed")), 20, "uplink_connect_failed")
            await asyncio.sleep(1.5)  # several more refused attempts (backoff 0.1-0.3 s)
            agent.send(signal.SIGTERM)
            assert await agent.wait() == 0
        finally:
            await agent.kill()
    records = _records(log)  # every line is JSON
    failed = [r for r in records if r["event"] == "uplink_connect_failed"]
    assert len(failed) == 1, failed
    (f,) = failed
    assert f["level"] == "warning" and f["broker"] == f"127.0.0.1:{broker.port}"
    assert f["error"].startswith("broker refused the connection") and "authori" in f["error"].lower()
    assert f["retry_in_s"] > 0
    assert not [r for r in records if r["event"] == "uplink_connected"]
    # At shutdown the final drain tries once, within its budget, and says why it could not.
    (drain,) = [r for r in records if r["event"] == "uplink_final_drain_incomplete"]
    assert "authori" in drain["error"].lower()

"""`edge-agent run --json-logs` through a broker outage: every line it writes is one JSON object.

The real agent (a child process) polls the bundled simulator and uplinks to a real mosquitto. The broker
is SIGKILLed for a couple of seconds and started again on the same port; the agent reconnects and
delivers what it read meanwhile; SIGTERM stops it. Its stdout and stderr (one file) must parse line by
line, and the outage must read as exactly one ``uplink_disconnected`` and one reconnecting
``uplink_connected``, each carrying the bound ``broker`` field, not one line per failed retry.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Broker
from tests.integration.test_service import (
    FIXTURES,
    AgentProcess,
    background,
    run_cli,
    running_sim,
    wait_until,
    write_site,
)
from tests.integration.test_service_durability import ReadingsSubscriber, max_seq

UPLINK = """
uplink:
  host: 127.0.0.1
  port: {port}
  topic_prefix: svc
  batch_max: 50
  backoff_initial_s: 0.1
  max_backoff_s: 0.3
  connect_timeout_s: 2
  keepalive_s: 5
"""


def _records(log: Path) -> list[dict[str, Any]]:
    """Every line of the agent's output as a JSON object; fails on the first line that is not one."""
    out = []
    for n, line in enumerate(log.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            rec = json.loads(line)
        except ValueError:
            pytest.fail(f"{log.name}:{n} is not JSON: {line!r}")
        assert isinstance(rec, dict), f"{log.name}:{n} is not a JSON object: {line!r}"
        out.append(rec)
    return out


def _events(log: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # the final check reports it
        if isinstance(rec, dict) and rec.get("event") == name:
            found.append(rec)
    return found


@pytest.mark.slow
async def test_json_logs_through_a_broker_outage(broker: Broker, tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "RUNTIME_DIRECTORY")
    }
    state = tmp_path / "state"
    db = state / "edge-agent.db"
    log = tmp_path / "agent.log"
    broker_id = f"127.0.0.1:{broker.port}"
    sub = ReadingsSubscriber(broker.port)
    async with running_sim() as sim, background(sub.run, "subscriber"):
        assert sim.modbus_port is not None
        site = write_site(tmp_path / "etc", sim_port=sim.modbus_port, extra=UPLINK.format(port=broker.port))
        agent = AgentProcess(site=site, state_dir=state, log=log, env=env)
        try:
            await agent.start()
            await wait_until(lambda: bool(_events(log, "uplink_connected")), 20, "uplink_connected")
            await wait_until(lambda: bool(sub.seqs), 10, "readings upstream")

            broker.stop(signal.SIGKILL)
            await wait_until(lambda: bool(_events(log, "uplink_disconnected")), 10, "uplink_disconnected")
            at_stop = max_seq(db)
            await asyncio.sleep(2.0)  # several reconnect attempts fail meanwhile (backoff 0.1-0.3 s)
            assert max_seq(db) > at_stop, "the agent kept polling into the outbox during the outage"

            broker.start()
            await wait_until(lambda: len(_events(log, "uplink_connected")) >= 2, 10, "the reconnect")
            target = max_seq(db)
            await wait_until(lambda: bool(sub.seqs) and max(sub.seqs) >= target, 15, f"seq {target} upstream")

            agent.send(signal.SIGTERM)
            assert await agent.wait() == 0
        finally:
            await agent.kill()

    records = _records(log)
    assert records, "the agent wrote nothing"
    for rec in records:
        assert {"event", "level", "timestamp", "logger"} <= rec.keys(), rec
    names = [r["event"] for r in records]

    connected = [r for r in records if r["event"] == "uplink_connected"]
    disconnected = [r for r in records if r["event"] == "uplink_disconnected"]
    assert [c["reconnect"] for c in connected] == [False, True], connected
    assert len(disconnected) == 1, disconnected
    (down,), (_first, up) = disconnected, connected
    assert down["level"] == "warning" and down["broker"] == broker_id and down["error"]
    assert down["logger"] == "edge_agent.uplink"
    assert up["level"] == "info" and up["broker"] == broker_id
    assert up["failed_attempts"] >= 1 and up["outage_s"] >= 1.5
    # The failed retries in between: a reason is logged once, not once per attempt.
    failed = [r for r in records if r["event"] == "uplink_connect_failed"]
    assert 1 <= len(failed) <= up["failed_attempts"], failed
    assert len({f["error"] for f in failed}) == len(failed) and all(f["broker"] == broker_id for f in failed)
    assert "uplink_retry" not in names  # debug, below the default level
    seq = ["uplink_disconnected", "uplink_connect_failed", "uplink_closed", "agent_stopped"]
    at = [names.index(n) for n in seq]
    assert at == sorted(at) and names.index(up["event"], at[0]) < at[2], names

    # Driver and agent lines carry their context as fields, and event names are one style.
    up_devices = {r["device"] for r in records if r["event"] == "device_up"}
    assert up_devices == {"main-meter", "f2-ls-meter", "f2-ac-meter", "f2-ac1"}
    assert all(r["gateway"] == "gw-svc-01" for r in records if r["event"] == "device_up")
    ours = [r for r in records if r["logger"].startswith(("edge_agent", "drivers"))]
    assert all(r["event"].replace("_", "").isalnum() and r["event"].islower() for r in ours), names


async def test_json_logs_for_an_invalid_configuration(tmp_path: Path) -> None:
    """What `run` says before the service starts (here: three config errors) is JSON lines too."""
    site = FIXTURES / "three_errors_site.yaml"
    rc, out, err = await run_cli("run", "-c", str(site), "--json-logs", cwd=tmp_path, timeout=60)
    assert rc == 2 and out == ""
    recs = [json.loads(line) for line in err.splitlines()]
    issues = [r["issue"] for r in recs if r["event"] == "config_issue"]
    assert len(issues) == 3 and all(i.startswith(f"{site}:") for i in issues), issues
    assert recs[-1]["event"] == "config_invalid" and recs[-1]["level"] == "error"

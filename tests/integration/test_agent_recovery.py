"""The agent against the bundled simulator: the simulator dies mid-run and comes back."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from drivers.base import Quality
from edge_agent.config.load import LoadedConfig, load_config
from edge_agent.devtools.simwire import retarget_modbus
from edge_agent.service.agent import Agent
from sim.runner import Simulator

ROOT = Path(__file__).resolve().parents[2]


def fast(cfg: LoadedConfig) -> LoadedConfig:
    devices = [d.model_copy(update={"interval_s": 0.2, "timeout_s": 0.3}) for d in cfg.site.devices]
    return dataclasses.replace(cfg, site=cfg.site.model_copy(update={"devices": devices}))


async def wait_for(cond, timeout: float) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_simulator_stopped_mid_run_gives_bad_readings_then_recovers() -> None:
    sim = Simulator(seed=1, speed=0.0)
    await sim.start(modbus_port=0)
    port = sim.modbus_port
    assert port is not None
    site = load_config(ROOT / "tests/fixtures/config/modbus_site.yaml")
    cfg = fast(retarget_modbus(site, "127.0.0.1", port))
    agent = Agent(config=cfg)
    run = asyncio.create_task(agent.run(), name="agent")
    try:
        await asyncio.wait_for(agent.first_cycle.wait(), 5)
        pid = "main.energy"
        await wait_for(lambda: agent.snapshot.reading(pid) is not None and agent.snapshot.reading(pid).ok, 3)

        await sim.stop()
        await wait_for(lambda: all(rt.status.up is False for rt in agent.devices.values()), 5)
        r = agent.snapshot.reading(pid)
        assert r is not None and r.quality is Quality.BAD
        assert r.code in ("unreachable", "timeout") and r.detail  # a reason, not just "bad"
        assert not run.done()  # the agent did not crash

        await sim.start(modbus_port=port)  # back on the same port
        await wait_for(lambda: all(rt.status.up for rt in agent.devices.values()), 40)
        assert agent.snapshot.reading(pid).ok  # type: ignore[union-attr]
    finally:
        agent.stop()
        await asyncio.wait_for(run, 10)
        await sim.stop()

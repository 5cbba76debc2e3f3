"""Discovery: unicast Who-Is over loopback; broadcast Who-Is between two network namespaces (root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import pytest
import yaml
from pydantic import ValidationError

from drivers.bacnet.discover import discover, render_devices_yaml
from drivers.bacnet.options import BacnetDevice
from sim.bacnet_server import BacnetSimulator
from sim.building import Building
from tests.drivers.test_bacnet_driver import free_udp_port


async def test_unicast_discovery_renders_valid_devices_yaml() -> None:
    sim_port, agent_port = free_udp_port(), free_udp_port()
    building = Building(start=datetime(2025, 7, 15, 2, 0, tzinfo=UTC), script=False)
    sim = BacnetSimulator(building, address=f"127.0.0.2/24:{sim_port}")
    await sim.start()
    try:
        devices = await discover(sim.address_of("FC-2F"), f"127.0.0.1:{agent_port}", timeout=2.0)
    finally:
        await sim.stop()
    assert len(devices) == 1
    dev = devices[0]
    assert dev.device_instance == 1002 and dev.name == "FC-2F" and not dev.errors
    objs = {(o.object_type, o.instance): o for o in dev.objects}
    assert objs[("analog-value", 1)].commandable and objs[("analog-value", 1)].units == "degrees-celsius"
    assert not objs[("analog-value", 101)].commandable  # the energy register is read-only
    assert objs[("multi-state-value", 1)].states == ["off", "cool", "heat", "fan"]
    text = render_devices_yaml(devices)
    # As drafted, writable numbers wait for their bounds: the schema refuses them until the integrator
    # fills in the commented placeholders.
    with pytest.raises(ValidationError, match="needs both `min:` and `max:`"):
        [BacnetDevice.model_validate(d) for d in yaml.safe_load(text)["devices"]]
    filled = (
        text.replace("# min: <low>", "min: 0").replace("# max: <high>", "max: 100")
        .replace("# min: 16", "min: 16").replace("# max: 32", "max: 32")
    )  # fmt: skip
    block = yaml.safe_load(filled)["devices"]
    parsed = [BacnetDevice.model_validate(d) for d in block]  # then the draft validates as site.yaml devices
    points = {p.id: p for p in parsed[0].points}
    assert points["fc-2f-av1"].role == "setpoint" and points["fc-2f-av1"].writable
    assert (points["fc-2f-av1"].min, points["fc-2f-av1"].max) == (16, 32)
    assert points["fc-2f-msv1"].role == "ac_mode" and points["fc-2f-msv1"].states == {
        1: "off",
        2: "cool",
        3: "heat",
        4: "fan",
    }
    assert points["fc-2f-bo1"].role == "light_relay"
    assert points["fc-2f-blo1"].role == "light_relay" and points["fc-2f-blo1"].writable
    assert points["fc-2f-lo1"].object_type == "lighting-output" and points["fc-2f-lo1"].writable
    assert points["fc-2f-acc101"].cumulative
    av1 = text[text.index("id: fc-2f-av1") :].split("- id:")[0]
    assert "# min: 16  # required before the agent writes this point" in av1 and "# max: 32" in av1
    lo1 = text[text.index("id: fc-2f-lo1") :].split("- id:")[0]
    assert "# min: <low>" in lo1


_NETNS_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from datetime import UTC, datetime
    from sim.building import Building
    from sim.bacnet_server import BacnetSimulator
    async def main():
        b = Building(start=datetime(2025, 7, 15, 2, 0, tzinfo=UTC), script=False)
        sim = BacnetSimulator(b, address="10.77.0.2/24:47808")
        await sim.start()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await sim.stop()
    asyncio.run(main())
""")


def _netns_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "broadcast discovery needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "iproute2 `ip` not installed"
    probe = subprocess.run(["ip", "netns", "add", "ea-probe"], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", "ea-probe"], capture_output=True)
    if probe.returncode != 0:
        return f"cannot create network namespaces here: {probe.stderr.strip()}"
    return None


@pytest.mark.root
def test_broadcast_discovery_between_namespaces() -> None:
    reason = _netns_skip_reason()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    tag = f"ea{os.getpid() % 100000}"
    sim_ns, agent_ns = f"{tag}s", f"{tag}a"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    sim_proc = None
    try:
        run("ip", "netns", "add", sim_ns)
        run("ip", "netns", "add", agent_ns)
        run("ip", "link", "add", f"{tag}v0", "type", "veth", "peer", "name", f"{tag}v1")
        run("ip", "link", "set", f"{tag}v0", "netns", sim_ns)
        run("ip", "link", "set", f"{tag}v1", "netns", agent_ns)
        # 10.77.0.2-5: the simulator's four devices; 10.77.0.1: the agent
        for i in range(2, 6):
            run("ip", "-n", sim_ns, "addr", "add", f"10.77.0.{i}/24", "dev", f"{tag}v0")
        run("ip", "-n", agent_ns, "addr", "add", "10.77.0.1/24", "dev", f"{tag}v1")
        for ns, dev in ((sim_ns, f"{tag}v0"), (agent_ns, f"{tag}v1")):
            run("ip", "-n", ns, "link", "set", dev, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
        sim_proc = subprocess.Popen(
            ["ip", "netns", "exec", sim_ns, sys.executable, "-c", _NETNS_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.getcwd(),
        )
        assert sim_proc.stdout is not None and sim_proc.stdout.readline().strip() == "ready"
        code = (  # logging set up as `edge-agent discover` does: log lines on stderr, the YAML on stdout
            "import asyncio; from drivers.bacnet.discover import discover, render_devices_yaml;"
            "from edge_agent.core.logs import configure_logging; configure_logging(level='warning');"
            "print(render_devices_yaml(asyncio.run(discover('*', '10.77.0.1/24:47808', 2.0))))"
        )
        out = subprocess.run(
            ["ip", "netns", "exec", agent_ns, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=os.getcwd(),
        )
        assert out.returncode == 0, out.stderr
        block = yaml.safe_load(out.stdout)["devices"]
        assert sorted(d["device_instance"] for d in block) == [1001, 1002, 1003, 1010]
    finally:
        if sim_proc is not None:
            try:
                sim_proc.communicate("\n", timeout=10)
            except subprocess.TimeoutExpired:
                sim_proc.kill()
                sim_proc.wait()
        for ns in (sim_ns, agent_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

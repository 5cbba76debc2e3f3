"""`edge-agent bench bacnet`: BACnet/IP read throughput three ways, and COV latency.

Throughput: the simulator's BACnet devices (FC-1F..3F, METERS) run in a child process (`python -m sim`),
so the CPU figures are the agent's. Every object of the four devices is read (present-value and
status-flags) three ways in interleaved rounds: (a) the driver's ReadPropertyMultiple batches, (b) the
driver with RPM off (one ReadProperty per property, how a plain poller reads), (c) a bare bacpypes3 RPM
loop over the same object lists, no decoding or bookkeeping (the ceiling).

With ``--response-ms`` (default 10) the same three are measured again against a simulator whose devices
answer each request that much later, as real controllers do: there the number of requests, not the CPU,
sets the pace.

COV latency runs against an in-process simulator (the bench must change the building model itself): a
setpoint changed in the model -> the notification decoded by the driver (its ``on_cov`` callback, which
the runtime queues straight into the snapshot), p50/p95 over ``--changes`` changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

__all__ = ["bench_bacnet"]


def _devices(port: int) -> list[Any]:
    """One BacnetDevice per simulator device with every object as a read-only point (from the simulator's
    own object table, built without starting it)."""
    from drivers.bacnet.options import BacnetDevice, BacnetPoint
    from sim.bacnet_server import BacnetSimulator
    from sim.building import Building

    front = BacnetSimulator(Building(start=datetime(2026, 7, 15, 6, tzinfo=UTC), script=False))
    out = []
    for d in front.devices:
        points = [
            BacnetPoint(
                id=f"{d.name}.{o.objectIdentifier[0]}.{o.objectIdentifier[1]}",
                object_type=str(o.objectIdentifier[0]),  # type: ignore[arg-type]
                instance=int(o.objectIdentifier[1]),
            )
            for o in d.objects
        ]
        out.append(
            BacnetDevice(
                protocol="bacnet",
                id=d.name,
                address=f"{d.address}:{port}",
                device_instance=d.instance,
                points=points,
            )
        )
    return out


async def _wait_bacnet(app: Any, address: str, instance: int, proc: subprocess.Popen[bytes]) -> None:
    from bacpypes3.pdu import Address

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"simulator exited with code {proc.returncode}")
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(
                app.read_property(Address(address), f"device,{instance}", "object-name"), 0.5
            )
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"BACnet simulator did not answer at {address}")


async def _throughput(seconds: float, progress: Any, response_ms: float = 0.0) -> dict[str, Any]:
    from bacpypes3.pdu import Address
    from bacpypes3.primitivedata import ObjectIdentifier

    from drivers.bacnet.driver import BacnetDriver
    from drivers.bacnet.network import BacnetNetwork
    from drivers.bacnet.options import BacnetNetworkOptions
    from edge_agent.devtools.measure import interleaved
    from edge_agent.devtools.simwire import free_udp_port

    sim_port, local_port = free_udp_port(), free_udp_port(("127.0.0.1",))
    cmd = [sys.executable, "-m", "sim", "--port", "0", "--bacnet-port", str(sim_port), "--no-script"]
    cmd += ["--bacnet-response-ms", str(response_ms)]
    progress(
        f"starting simulator (child process): BACnet devices at 127.0.0.2-5:{sim_port}, "
        f"answering {response_ms:g} ms after each request"
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    net = BacnetNetwork(options=BacnetNetworkOptions(local_address=f"127.0.0.1:{local_port}"))
    try:
        await net.start()
        devs = _devices(sim_port)
        await _wait_bacnet(net.app, devs[0].address, devs[0].device_instance, proc)
        rpm = [BacnetDriver(device=d, network=net) for d in devs]
        single = [BacnetDriver(device=d.model_copy(update={"use_rpm": False}), network=net) for d in devs]
        bad = 0

        async def planned() -> int:
            nonlocal bad
            res = await asyncio.gather(*(drv.read(d.points) for drv, d in zip(rpm, devs, strict=True)))
            bad += sum(1 for r in res for x in r if not x.ok)
            return sum(len(r) for r in res)

        async def per_point() -> int:
            res = await asyncio.gather(*(drv.read(d.points) for drv, d in zip(single, devs, strict=True)))
            return sum(len(r) for r in res)

        batches = []
        for d in devs:
            objs = [ObjectIdentifier(f"{p.object_type},{p.instance}") for p in d.points]
            per = d.max_rpm_properties // 2
            for i in range(0, len(objs), per):
                specs: list[Any] = []
                for o in objs[i : i + per]:
                    specs += [o, ["present-value", "status-flags"]]
                batches.append((Address(d.address), specs, len(objs[i : i + per])))

        async def ceiling() -> int:
            async def one(addr: Any, specs: list[Any], n: int) -> int:
                await net.app.read_property_multiple(addr, specs)
                return n

            return sum(await asyncio.gather(*(one(*b) for b in batches)))

        measured = await interleaved(
            {"rpm": planned, "per_point": per_point, "ceiling": ceiling}, seconds * 3, 6, progress
        )
        res: dict[str, Any] = dict(measured)
        res["rpm"]["bad_readings"] = bad
        res["points"] = sum(len(d.points) for d in devs)
        res["rpm_requests_per_cycle"] = len(batches)
        return res
    finally:
        await net.close()
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _cov_latency(changes: int, progress: Any) -> dict[str, float]:
    from drivers.bacnet.driver import BacnetDriver
    from drivers.bacnet.network import BacnetNetwork
    from drivers.bacnet.options import BacnetDevice, BacnetNetworkOptions, BacnetPoint
    from edge_agent.devtools.simwire import free_udp_port
    from sim.runner import Simulator

    sim = Simulator(seed=1, start=datetime(2026, 7, 15, 6, tzinfo=UTC), speed=0.0, script=False)
    await sim.start(modbus_port=0, bacnet=True, bacnet_port=free_udp_port(), bacnet_refresh_s=3600)
    net = BacnetNetwork(
        options=BacnetNetworkOptions(local_address=f"127.0.0.1:{free_udp_port(('127.0.0.1',))}")
    )
    dev = BacnetDevice(
        protocol="bacnet",
        id="fc-1f",
        address=sim.bacnet_address("FC-1F"),
        device_instance=1001,
        points=[BacnetPoint(id="sp", object_type="analog-value", instance=1, cov=True)],
    )
    drv = BacnetDriver(device=dev, network=net)
    arrived: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()

    def on_cov(readings: list[Any]) -> None:
        for r in readings:
            arrived.put_nowait((time.perf_counter(), r.value))

    drv.on_cov = on_cov
    lat: list[float] = []
    background: asyncio.Task[None] | None = None
    try:
        await drv.connect()
        background = asyncio.create_task(drv.run(), name="bench:cov")  # subscribes, as the agent would
        await asyncio.wait_for(arrived.get(), 10)  # the initial notification after subscribing
        progress(f"COV latency: {changes} setpoint changes")
        for i in range(changes):
            value = 20.0 + (i % 2) * 2.5
            t0 = time.perf_counter()
            sim.building.set_setpoint("f1-ac1", value)
            while True:
                t, v = await asyncio.wait_for(arrived.get(), 5)
                if v == value:
                    lat.append((t - t0) * 1000)
                    break
            await asyncio.sleep(0.01)
    finally:
        if background is not None:
            background.cancel()
            await asyncio.gather(background, return_exceptions=True)
        await drv.close()
        await net.close()
        await sim.stop()
    return {"p50": round(statistics.median(lat), 2), "p95": round(sorted(lat)[int(0.95 * (len(lat) - 1))], 2)}


async def bench_bacnet(
    *, seconds: float, changes: int, progress: Any, response_ms: float = 10.0
) -> dict[str, Any]:
    """Throughput with an instant simulator, then (``response_ms`` > 0) with one that answers each
    request ``response_ms`` later, as field controllers do; then COV latency."""
    res = await _throughput(seconds, progress)
    if response_ms > 0:
        res["slow_device"] = await _throughput(seconds, progress, response_ms)
        res["slow_device"]["response_ms"] = response_ms
    res["cov_latency_ms"] = await _cov_latency(changes, progress)
    return res

"""The running simulator: building model + Modbus TCP front end + type-test and bench units, one endpoint,
and (optionally) the BACnet/IP front end (sim/bacnet_server.py) over the same building.

The BACnet devices sit at consecutive loopback addresses from ``bacnet_host_base`` (127.0.0.2: FC-1F,
.3 FC-2F, .4 FC-3F, .5 METERS), all on ``bacnet_port``. bacpypes3 treats a 127.x destination on its own
port as itself, so a BACnet client on loopback must bind another port (the example site uses 47809).

Sim time runs as ``start + speed * elapsed`` (speed 1 = real time; speed 0 = frozen, for tests that step
the model themselves with :meth:`Simulator.step_to`). An asyncio task steps the model every 0.2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sim.bench import BENCH_FIRST_UNIT, build_bench_unit, refresh_bench_unit
from sim.building import Building, ScriptEvent
from sim.modbus_map import BuildingModbus
from sim.modbus_server import ModbusServer, UnitBank
from sim.typebank import TYPE_TEST_UNIT, build_type_unit
from sim.vrf import VrfGateway

if TYPE_CHECKING:  # bacpypes3 takes half a second to import: only when BACnet is served
    from sim.bacnet_server import BacnetSimulator
    from sim.serial_site import SerialSite

__all__ = ["STEP_INTERVAL_S", "BacnetPortBusy", "Simulator", "add_arguments", "main", "run_from_args"]

log = logging.getLogger("sim")

STEP_INTERVAL_S = 0.2
_BENCH_REFRESH_S = 1.0


class Simulator:
    """Building model + Modbus TCP server. ``async with Simulator()`` starts it on an ephemeral port."""

    def __init__(
        self,
        *,
        seed: int = 0,
        start: datetime | None = None,
        speed: float = 1.0,
        bench_units: int = 0,
        bench_points: int = 0,
        script: bool | tuple[ScriptEvent, ...] = True,
        timezone: str = "Asia/Shanghai",
    ) -> None:
        if speed < 0:
            raise ValueError(f"speed {speed} is negative")
        if start is not None and start.tzinfo is None:
            raise ValueError("start must be an aware datetime")
        if bench_units < 0 or bench_units > 256 - BENCH_FIRST_UNIT:
            raise ValueError(f"bench_units {bench_units} outside 0..{256 - BENCH_FIRST_UNIT}")
        if bench_units and not 1 <= bench_points <= 32768:
            raise ValueError(f"bench_points {bench_points} outside 1..32768")
        self.seed = seed
        self.speed = speed
        self.start_time = start or datetime.now(UTC)
        self.bench_units = bench_units
        self.bench_points = bench_points
        self.building = Building(seed=seed, start=self.start_time, script=script, tz=timezone)
        self.modbus = BuildingModbus(building=self.building)
        self.type_unit = build_type_unit()
        self.vrf = VrfGateway()  # unit 21: 16 indoor units at a register stride (MANUAL.md 5.9)
        self.bench: list[UnitBank] = [
            build_bench_unit(unit_id=BENCH_FIRST_UNIT + i, points=bench_points, t=self.start_time.timestamp())
            for i in range(bench_units)
        ]
        self.server = ModbusServer(
            units=[*self.modbus.banks.values(), self.vrf.bank, self.type_unit, *self.bench]
        )
        self._t0: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.modbus_host: str | None = None
        self.modbus_port: int | None = None
        self.bacnet: BacnetSimulator | None = None
        self.serial: SerialSite | None = None

    def now(self) -> datetime:
        """Sim time: start + speed x real time elapsed since start()."""
        if self._t0 is None:
            return self.start_time
        return self.start_time + timedelta(seconds=self.speed * (time.monotonic() - self._t0))

    @property
    def units(self) -> list[int]:
        return sorted(self.server.units)

    def step_to(self, now: datetime) -> None:
        """Advance the model to ``now`` and refresh every register (tests call this with speed=0)."""
        self.building.advance_to(now)
        self.modbus.refresh()
        if self.bacnet is not None:
            self.bacnet.refresh()
        if self.serial is not None:
            self.serial.refresh()
        t = now.timestamp()
        for bank in self.bench:
            refresh_bench_unit(bank, points=self.bench_points, t=t)

    @property
    def bacnet_port(self) -> int | None:
        return self.bacnet.port if self.bacnet is not None else None

    def bacnet_address(self, device: str) -> str:
        """``IP:port`` of a BACnet device by name (FC-1F, FC-2F, FC-3F, METERS)."""
        if self.bacnet is None:
            raise RuntimeError("the BACnet front end is not running (start(bacnet=True))")
        return self.bacnet.address_of(device)

    async def start(
        self,
        *,
        modbus_host: str = "127.0.0.1",
        modbus_port: int = 15020,
        bacnet: bool = False,
        bacnet_host_base: str = "127.0.0.2",
        bacnet_port: int = 47808,
        bacnet_refresh_s: float = 1.0,
        bacnet_response_s: float = 0.0,
        serial: bool = False,
    ) -> None:
        """Listen on Modbus TCP and, with ``bacnet=True``, bind the BACnet/IP devices; with ``serial=True``
        serve the RS-485 buses on pseudo-terminals (:attr:`serial` ``.paths``).

        Raises OSError naming the address when a port is taken (nothing is left listening then)."""
        self.modbus.open()
        if self._task is not None:
            raise RuntimeError("simulator already started")
        await self.server.start(host=modbus_host, port=modbus_port)
        self.modbus_host, self.modbus_port = self.server.host, self.server.port
        if bacnet:
            if not 1 <= bacnet_port <= 65535:
                await self.server.stop()
                raise ValueError(f"bacnet_port {bacnet_port} outside 1-65535 (BACnet needs a fixed port)")
            from sim.bacnet_server import BacnetSimulator

            front = BacnetSimulator(
                self.building,
                address=f"{bacnet_host_base}/24:{bacnet_port}",
                refresh_s=bacnet_refresh_s,
                response_delay_s=bacnet_response_s,
            )
            try:
                _check_udp_free([d.address for d in front.devices], bacnet_port)
                await front.start()
            except BaseException:
                await self.server.stop()
                raise
            self.bacnet = front
        if serial:
            from sim.serial_site import SerialSite

            buses = SerialSite(self.building, self.modbus.banks)
            try:
                await buses.start()
            except BaseException:
                await self._stop_fronts()
                raise
            self.serial = buses
        self._t0 = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="sim:step")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stop_fronts()

    async def _stop_fronts(self) -> None:
        buses, self.serial = self.serial, None
        if buses is not None:
            await buses.stop()
        front, self.bacnet = self.bacnet, None
        if front is not None:
            await front.stop()
        await self.server.stop()
        self.modbus.close()

    async def __aenter__(self) -> Simulator:
        if self._task is None:
            await self.start(modbus_port=0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        last_bench = time.monotonic()
        while True:
            await asyncio.sleep(STEP_INTERVAL_S)
            now = self.now()
            if now > self.building.now:
                self.building.advance_to(now)
                self.modbus.refresh()
                if self.bacnet is not None:
                    self.bacnet.refresh()
                if self.serial is not None:
                    self.serial.refresh()
            if self.bench and time.monotonic() - last_bench >= _BENCH_REFRESH_S:
                last_bench = time.monotonic()
                t = now.timestamp()
                for bank in self.bench:
                    refresh_bench_unit(bank, points=self.bench_points, t=t)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `edge-agent sim` (and `python -m sim`)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=15020, help="Modbus TCP port (default 15020; 0 = any free)"
    )
    parser.add_argument("--speed", type=float, default=1.0, help="sim seconds per real second (default 1)")
    parser.add_argument(
        "--start",
        type=_parse_start,
        default=None,
        metavar="ISO",
        help="sim start time, e.g. 2026-07-15T13:55:00+08:00 (default: now)",
    )
    parser.add_argument("--seed", type=int, default=0, help="model seed (default 0)")
    parser.add_argument(
        "--bench-units",
        type=int,
        default=0,
        metavar="N",
        help="add N benchmark units (ids 100..) of float32 values",
    )
    parser.add_argument(
        "--bench-points", type=int, default=40, metavar="M", help="float32 values per bench unit"
    )
    parser.add_argument(
        "--no-bacnet",
        dest="bacnet",
        action="store_false",
        help="Modbus TCP only (default: also serve BACnet/IP devices at 127.0.0.2-.5)",
    )
    parser.add_argument(
        "--bacnet-port",
        type=int,
        default=47808,
        metavar="PORT",
        help="UDP port of the BACnet/IP devices (default 47808; a client on loopback must bind another)",
    )
    parser.add_argument(
        "--bacnet-response-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="each BACnet read/write answers this many ms later, as a real controller does (default 0)",
    )
    parser.add_argument(
        "--bacnet-host",
        default="127.0.0.2",
        metavar="IP",
        help="address of the first BACnet device; the others follow (default 127.0.0.2: .2-.5)",
    )
    parser.add_argument(
        "--serial",
        action="store_true",
        help="also serve the RS-485 buses on pseudo-terminals (DL/T 645 + CJ/T 188 meter bus, Modbus RTU "
        "bus; their paths are printed): point site.yaml's `port:` at them, parity N",
    )
    parser.add_argument(
        "--no-script",
        dest="script",
        action="store_false",
        help="no scripted occupants (state changes only through Modbus)",
    )


def _parse_start(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    if t.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a UTC offset, e.g. {text}+08:00")
    return t


async def run_from_args(args: argparse.Namespace) -> None:
    """Run the simulator described by ``args`` until cancelled."""
    if not logging.getLogger().handlers:  # the startup lines are the user's only sign of life
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sim = Simulator(
        seed=args.seed,
        start=args.start,
        speed=args.speed,
        bench_units=args.bench_units,
        bench_points=args.bench_points if args.bench_units else 0,
        script=args.script,
    )
    use_bacnet = getattr(args, "bacnet", False)
    await sim.start(
        modbus_host=args.host,
        modbus_port=args.port,
        bacnet=use_bacnet,
        bacnet_host_base=getattr(args, "bacnet_host", "127.0.0.2"),
        bacnet_port=getattr(args, "bacnet_port", 47808),
        bacnet_response_s=getattr(args, "bacnet_response_ms", 0.0) / 1000,
        serial=getattr(args, "serial", False),
    )
    try:
        units = sim.units
        plain = [u for u in units if u < BENCH_FIRST_UNIT]
        log.info(
            "modbus simulator on %s:%s, units %s%s",
            sim.modbus_host,
            sim.modbus_port,
            ",".join(map(str, plain)),
            f" + bench units {BENCH_FIRST_UNIT}..{BENCH_FIRST_UNIT + sim.bench_units - 1}"
            if sim.bench_units
            else "",
        )
        log.info(
            "sim time starts %s, speed x%g, seed %s, script %s; register map: sim/MANUAL.md",
            sim.start_time.isoformat(timespec="seconds"),
            sim.speed,
            sim.seed,
            "on" if args.script else "off",
        )
        log.info("type-test block on unit %s", TYPE_TEST_UNIT)
        if sim.bacnet is not None:
            log.info(
                "bacnet simulator: %s; objects: sim/MANUAL.md, BACnet objects",
                ", ".join(
                    f"device {d.instance} {d.name} at {d.address}:{sim.bacnet.port}"
                    for d in sim.bacnet.devices
                ),
            )
        if sim.serial is not None:
            from sim.serial_site import DLT645_METERS, RTU_UNITS, WATER_ADDRESS

            log.info(
                "rs485 meter bus (DL/T 645 meters %s, CJ/T 188 water meter %s; 2400 baud) on %s",
                ", ".join(DLT645_METERS.values()),
                WATER_ADDRESS,
                sim.serial.meter_bus.path,
            )
            log.info(
                "rs485 rtu bus (Modbus RTU units %s; 9600 baud) on %s",
                ",".join(map(str, RTU_UNITS)),
                sim.serial.rtu_bus.path,
            )
        await asyncio.Event().wait()  # until cancelled
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m sim [options]`: run until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m sim", description="edge-agent's bundled building simulator"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        asyncio.run(_run_until_signal(args))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"sim: {_describe_bind_error(args, exc)}", file=sys.stderr)
        return 1
    return 0


def _describe_bind_error(args: argparse.Namespace, exc: OSError) -> str:
    if isinstance(exc, BacnetPortBusy) or "BACnet" in str(exc):
        return f"{exc} (use --bacnet-port, or --no-bacnet)"
    return f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"


class BacnetPortBusy(OSError):
    """A BACnet device address:port is already bound by another process."""


def _check_udp_free(hosts: list[str], port: int) -> None:
    """Probe each device's UDP address without SO_REUSEPORT: bacpypes3 binds with it, so a second
    simulator (or an agent) on the same port would otherwise share the port silently."""
    for host in hosts:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise BacnetPortBusy(
                exc.errno or 0,
                f"cannot bind BACnet simulator device to {host}:{port}: {exc.strerror or exc}",
            ) from exc
        finally:
            probe.close()


async def _run_until_signal(args: argparse.Namespace) -> None:
    import signal

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run_from_args(args)

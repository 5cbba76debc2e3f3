"""`edge-agent demo`: the bundled simulator and the agent in one process, with a live table."""

from __future__ import annotations

import asyncio
import tempfile
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from drivers.base import Reading
from edge_agent.config.load import LoadedConfig
from edge_agent.core.snapshot import Snapshot

__all__ = ["render_table", "run_demo"]

_AC_ROLES = ("ac_power", "ac_mode", "setpoint", "cooling_setpoint", "heating_setpoint", "room_temperature")
_METER_ROLES = ("energy", "water_volume", "power")


def _bacnet_plan(cfg: LoadedConfig) -> tuple[str, int, str] | None:
    """(first device host, device port, agent local address) for the simulator's BACnet front end, or None
    when the site has no BACnet device. The simulator puts its devices at consecutive hosts from the first."""
    from drivers.bacnet.options import BacnetDevice, BacnetNetworkOptions, parse_address

    addrs = sorted(
        (parse_address(d.address) for d in cfg.site.devices if isinstance(d, BacnetDevice)),
        key=lambda a: tuple(int(x) for x in a[0].split(".")),
    )
    if not addrs:
        return None
    ports = {a[2] for a in addrs}
    if len(ports) != 1:
        raise ValueError(f"the demo's BACnet devices must share one UDP port, site.yaml has {sorted(ports)}")
    net = cfg.site.network_options("bacnet")
    local = (net if isinstance(net, BacnetNetworkOptions) else BacnetNetworkOptions()).local_address
    return addrs[0][0], ports.pop(), local


def _fmt(r: Reading | None, states: dict[int, str] | None = None, unit: str | None = None) -> str:
    if r is None:
        return "…"
    if not r.ok:
        return f"BAD({r.code})"
    v = r.value
    if states is not None and isinstance(v, int | float) and int(v) in states:
        return states[int(v)]
    if isinstance(v, bool):
        return "on" if v else "off"
    text = (f"{v:,.2f}" if abs(v) >= 100 else f"{v:.1f}") if isinstance(v, float) else str(v)
    flag = "" if r.quality == "good" else f" ({r.quality})"
    return f"{text} {unit}{flag}" if unit else text + flag


def render_table(cfg: LoadedConfig, snap: Snapshot, now: datetime) -> str:
    """Zones with their AC units and lights, then the meters; plain text that works in any terminal."""
    tz = ZoneInfo(cfg.site.timezone)
    lines = [
        f"edge-agent demo · {cfg.site.name or cfg.site.gateway_id} · building {cfg.site.building_id} · "
        f"{now.astimezone(tz):%Y-%m-%d %H:%M:%S %Z}",
        "",
        f"{'zone':<8} {'AC unit':<12} {'power':<6} {'mode':<6} {'setpoint':>9} {'room':>7}   lights",
    ]
    by_zone: dict[str | None, list[Any]] = defaultdict(list)
    for e in snap:
        by_zone[e.zone].append(e)
    for zone in [z.id for z in cfg.site.zones]:
        entries = by_zone.get(zone, [])
        units: dict[str, dict[str, Any]] = defaultdict(dict)
        lights = []
        for e in entries:
            if e.point.role in _AC_ROLES:
                units[e.device_id][e.point.role] = e
            elif e.point.role == "light_relay":
                lights.append(f"{e.point.id.split('.')[-1]}={_fmt(e.reading)}")
        light_text = " ".join(lights) or "-"
        if not units:
            lines.append(f"{zone:<8} {'-':<12} {'':<6} {'':<6} {'':>9} {'':>7}   {light_text}")
        for i, (dev, roles) in enumerate(sorted(units.items())):

            def cell(role: str, roles: dict[str, Any] = roles) -> str:
                e = roles.get(role)
                return _fmt(e.reading, e.point.states) if e else "-"

            sp = roles.get("setpoint") or roles.get("cooling_setpoint") or roles.get("heating_setpoint")
            sp_text = _fmt(sp.reading) if sp else "-"
            lines.append(
                f"{zone if i == 0 else '':<8} {dev:<12} {cell('ac_power'):<6} {cell('ac_mode'):<6} "
                f"{sp_text:>9} {cell('room_temperature'):>7}   {light_text if i == 0 else ''}"
            )
    lines += ["", f"{'meter point':<28} {'code':<6} {'value':>20}  quality"]
    for e in snap:
        if e.point.role in _METER_ROLES:
            r = e.reading
            lines.append(
                f"{e.point.id:<28} {e.point.energy_code or '':<6} {_fmt(r, unit=e.point.unit):>20}  "
                f"{r.quality if r else '…'}"
            )
    return "\n".join(lines)


def _recent_events(svc: Any, limit: int = 8) -> list[str]:
    """The newest audit records, as a facilities engineer would read them."""
    tz = ZoneInfo(svc.cfg.site.timezone)
    rows = list(svc.audit.records())[-limit:]
    out = []
    for r in rows:
        if r.kind in ("startup", "config_loaded"):
            continue
        when = r.time.astimezone(tz).strftime("%m-%d %H:%M")
        if r.kind == "write":
            text = f"WRITE   {r.subject}: {r.before} -> {r.after} ({r.rule}) {r.result}"
        else:
            text = f"{r.kind.upper():<7} {r.subject}: {r.reason}"
        out.append(f"  #{r.seq:<4} {when}  {text}"[:150])
    return out


async def run_demo(
    cfg: LoadedConfig,
    *,
    at: str,
    speed: float,
    state_dir: str | None,
    refresh: float,
    duration: float | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """The simulator and the agent until Ctrl-C or ``duration`` seconds; the live table goes to ``out``."""
    from drivers.modbus.options import ModbusDevice
    from edge_agent.core.clock import ScaledClock, parse_at
    from edge_agent.core.timeintegrity import SyncState
    from edge_agent.devtools.simwire import retarget_modbus, retarget_serial, uses_serial
    from edge_agent.service.service import Service
    from sim.runner import BacnetPortBusy, Simulator

    start = parse_at(at if at != "now" else None, cfg.site.timezone)
    sim = Simulator(seed=1, start=start, speed=speed)
    endpoints = {(d.host, d.port) for d in cfg.site.devices if isinstance(d, ModbusDevice)}
    host, port = sorted(endpoints)[0] if endpoints else ("127.0.0.1", 0)
    bacnet = _bacnet_plan(cfg)
    if bacnet is not None:
        # BACnet ports are fixed by the site (devices and the agent must agree): fail clearly, no fallback.
        from drivers.bacnet.network import LocalAddressError, check_local_address

        try:
            check_local_address(bacnet[2])
        except LocalAddressError as exc:
            err.write(f"demo: {exc}; stop the other process or change bacnet.local_address\n")
            return 1
    sim_bacnet: dict[str, Any] = (
        {"bacnet": True, "bacnet_host_base": bacnet[0], "bacnet_port": bacnet[1]} if bacnet else {}
    )
    sim_bacnet["serial"] = uses_serial(cfg)  # the RS-485 buses on ptys, when the site has serial devices
    try:
        try:
            await sim.start(modbus_host=host, modbus_port=port, **sim_bacnet)
        except BacnetPortBusy:
            raise
        except OSError as exc:
            err.write(f"demo: {host}:{port} is taken ({exc.strerror or exc}); using a free port instead\n")
            await sim.start(modbus_host="127.0.0.1", modbus_port=0, **sim_bacnet)
    except BacnetPortBusy as exc:  # also after the Modbus fallback: `edge-agent sim` holds both
        await sim.stop()
        err.write(
            f"demo: {exc}; another simulator (`edge-agent sim`, another demo) or BACnet stack holds it: "
            "stop it first\n"
        )
        return 1
    assert sim.modbus_port is not None
    cfg = retarget_modbus(cfg, "127.0.0.1" if sim.modbus_port != port else host, sim.modbus_port)
    if sim.serial is not None:
        err.write(
            "demo: RS-485 buses on pseudo-terminals: meter bus (DL/T 645 + CJ/T 188) "
            f"{sim.serial.meter_bus.path}, Modbus RTU bus {sim.serial.rtu_bus.path}\n"
        )
        cfg = retarget_serial(cfg, sim.serial.paths)
    state = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    err.write(f"demo: state in {state}; while it runs: edge-agent status --state-dir {state}\n")
    clock = ScaledClock(start=sim.now(), speed=speed) if speed != 1 else None
    # The demo's time is the simulator's: whether this machine's own clock is NTP-synchronised says
    # nothing about it, and an "unsynced" flag would make the ledger hold every reading of the run.
    svc = Service(
        cfg,
        state_dir=state,
        clock=clock,
        enforce_tick_s=max(0.5, 10 / speed),
        sync_source=(lambda: SyncState.SYNCED) if clock is not None else None,
    )
    svc.install_signal_handlers()
    agent = svc.agent
    tty = out.isatty()

    def frame() -> str:
        text = render_table(cfg, agent.snapshot, agent.clock.now())
        events = _recent_events(svc)
        return text + "\n\naudit trail (newest last):\n" + ("\n".join(events) or "  (nothing enforced yet)")

    async def show() -> None:
        while True:
            if tty:
                out.write("\x1b[H\x1b[2J" + frame() + "\n\n(Ctrl-C to stop)\n")
            else:
                out.write(frame() + "\n\n")
            out.flush()
            await asyncio.sleep(refresh)

    async def stop_after(seconds: float) -> None:
        await asyncio.sleep(seconds)
        agent.stop()

    extra: list[tuple[str, Any]] = [("demo:table", show)]
    if duration:
        extra.append(("demo:timer", lambda: stop_after(duration)))
    try:
        await svc.run(extra_tasks=extra)
    finally:
        await sim.stop()
    out.write(frame() + "\n\n")
    svc.close()
    db = svc.db_path
    month = f"{agent.clock.now().astimezone(ZoneInfo(cfg.site.timezone)):%Y-%m}"
    site = f"-c {cfg.site_path} " if cfg.site.storage.audit_key_file else ""  # it names the audit key
    out.write(
        f"state kept in {state}\n  edge-agent audit verify {site}--db {db}\n"
        f"  edge-agent audit show {site}--db {db}\n"
        f"  edge-agent tail --db {db}\n"
        f"  edge-agent report --period {month} --db {db} --out reports/\n"
    )
    return 0

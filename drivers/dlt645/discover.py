"""`edge-agent discover dlt645`: the meter on a bus by the wildcard read address (C 0x13 to AA..AA), then
its forward active energy, as a draft `devices:` block.

The wildcard read address is only valid with one meter on the bus (DL/T 645-2007): every meter answers
it, and with several the replies collide on the line. A collision shows as a garbled reply; the report
says so, and such a bus is discovered meter by meter (disconnect the others) or from the meters' plates:
``addresses`` (the addresses read off the plates, or a range of them) skips the wildcard and keeps the
meters that answer a read of their energy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers import serialbus
from drivers.dlt645.codec import (
    Frame,
    FrameError,
    decode_read_reply,
    read_address_reply,
    read_address_request,
    read_request,
    split_frame,
)
from drivers.serialbus import LineSettings, NoReply

__all__ = ["DiscoveredMeter", "Discovery", "discover", "parse_addresses", "render_devices_yaml"]

ENERGY_DI = 0x00010000
MAX_ADDRESSES = 256  # each silent one costs a timeout


@dataclass
class DiscoveredMeter:
    address: str
    energy_kwh: float | None = None
    error: str | None = None


@dataclass
class Discovery:
    port: str
    settings: LineSettings
    meters: list[DiscoveredMeter] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # garbled replies (collisions), meters that went silent


def parse_addresses(text: str) -> list[str]:
    """``000000000002-000000000004``, ``000012345678,000012345690`` -> the 12-digit addresses, in order;
    ValueError for anything else or more than MAX_ADDRESSES."""
    out: list[str] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        hi = hi or lo
        if not (re.fullmatch(r"[0-9]{12}", lo) and re.fullmatch(r"[0-9]{12}", hi)) or int(lo) > int(hi):
            raise ValueError(f"{part.strip()!r}: give 12-digit addresses as on the plates, or LOW-HIGH")
        if len(out) + int(hi) - int(lo) + 1 > MAX_ADDRESSES:
            raise ValueError(f"more than {MAX_ADDRESSES} addresses (each silent one costs a timeout)")
        out.extend(f"{n:012d}" for n in range(int(lo), int(hi) + 1))
    return list(dict.fromkeys(out))


async def discover(
    port: str,
    *,
    baudrate: int = 2400,
    parity: str = "E",
    stopbits: int = 1,
    timeout: float = 1.0,
    addresses: list[str] | None = None,
) -> Discovery:
    """Ask the bus on ``port`` who is there (wildcard read address), then each meter's energy; with
    ``addresses``, each of those for its energy instead (the ones that do not answer are left out).
    OSError when the port cannot be opened."""
    settings = LineSettings(baudrate, parity, stopbits)
    out = Discovery(port, settings)
    bus = serialbus.acquire(port, settings)
    try:
        async with bus.lock:
            bus.open()
            if addresses is None:
                await _wildcard(bus, out, timeout)
            else:
                out.meters = [DiscoveredMeter(a) for a in addresses]
            for m in list(out.meters):
                try:
                    frame = await bus.exchange(read_request(m.address, ENERGY_DI), split_frame, timeout)
                    m.energy_kwh = float(decode_read_reply(frame, ENERGY_DI))
                except NoReply:
                    m.error = f"no reply to DI 00010000 within {timeout:g} s"
                    if addresses is not None:  # probing: a silent address is no meter
                        out.meters.remove(m)
                except FrameError as exc:
                    m.error = f"DI 00010000: {exc}"
    finally:
        serialbus.release(bus)
    return out


async def _wildcard(bus: serialbus.SerialBus, out: Discovery, timeout: float) -> None:
    bus.send(read_address_request())
    frames: list[Frame] = await bus.listen(_frames_or_garble(out), timeout)
    for f in frames:
        try:
            address = read_address_reply(f)
        except FrameError as exc:
            out.problems.append(f"unexpected reply: {exc}")
            continue
        if address not in {m.address for m in out.meters}:
            out.meters.append(DiscoveredMeter(address))


def _frames_or_garble(out: Discovery) -> Callable[[bytes], tuple[int, Frame | None]]:
    def split(buf: bytes) -> tuple[int, Frame | None]:
        try:
            return split_frame(buf)
        except FrameError as exc:
            out.problems.append(
                f"garbled reply ({exc}): several meters answered the wildcard address at once? It only "
                "works with one meter on the bus"
            )
            raise

    return split


def render_devices_yaml(found: Discovery) -> str:
    """A draft `devices:` block: one dlt645 device per meter with its forward active energy."""
    s = found.settings
    lines = ["devices:"]
    for m in found.meters:
        dev_id = f"meter-{m.address}"
        lines += [
            "  - protocol: dlt645",
            f"    id: {dev_id}",
            f"    port: {found.port}",
            f'    address: "{m.address}"',
            f"    baudrate: {s.baudrate}",
            f"    parity: {s.parity}",
            f"    stopbits: {s.stopbits}",
        ]
        if m.error:
            lines.append(f"    # could not read: {m.error}")
        else:
            lines.append(f"    # forward active energy now: {m.energy_kwh:.2f} kWh")
        lines += [
            "    points:",
            f"      - id: {dev_id}-kwh",
            '        di: "00010000"',
            "        unit: kWh",
            "        role: energy",
            "        cumulative: true",
            "        # energy_code: 01A00  # the MOHURD item code this meter measures",
        ]
    return "\n".join(lines) + "\n"

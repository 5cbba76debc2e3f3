"""`edge-agent discover modbus-rtu`: which unit ids answer on a serial bus, as a draft `devices:` block.

Each unit id in the range gets one short request (function 03, holding register 0, one register); any
well-formed reply counts, an exception reply too (the unit is there, register 0 is not in its map). The
scan runs on :mod:`drivers.serialbus` with raw RTU frames: a short per-unit timeout matters here, and a
scan is not a poll (no planner, no learning).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers import serialbus
from drivers.serialbus import LineSettings, NoReply

__all__ = ["FoundUnit", "RtuScan", "crc16", "parse_units", "render_devices_yaml", "scan"]


def crc16(data: bytes) -> bytes:
    """CRC-16/MODBUS, low byte first as it goes on the line."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def parse_units(text: str) -> list[int]:
    """``1-247``, ``1,2,10-20`` -> the unit ids; ValueError outside 1..247."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        a, b = int(lo), int(hi or lo)
        if not 1 <= a <= b <= 247:
            raise ValueError(f"unit range {part.strip()!r} is not within 1-247")
        out.extend(range(a, b + 1))
    return sorted(set(out))


@dataclass(frozen=True, slots=True)
class FoundUnit:
    unit: int
    register0: int | None  # holding register 0, or None after an exception reply
    exception: int | None = None


@dataclass
class RtuScan:
    port: str
    settings: LineSettings
    units: list[FoundUnit] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _splitter(unit: int) -> Callable[[bytes], tuple[int, bytes | None]]:
    def split(buf: bytes) -> tuple[int, bytes | None]:
        start = buf.find(bytes((unit,)))
        if start < 0:
            return len(buf), None
        if len(buf) < start + 3:
            return start, None
        fc = buf[start + 1]
        if fc == 0x83:
            end = start + 5
        elif fc == 0x03:
            end = start + 5 + buf[start + 2]
        else:
            return start + 1, None
        if len(buf) < end:
            return start, None
        frame = bytes(buf[start:end])
        if crc16(frame[:-2]) != frame[-2:]:
            raise ValueError(f"unit {unit}: reply with a wrong CRC")
        return end, frame

    return split


async def scan(
    port: str,
    units: list[int],
    *,
    baudrate: int = 9600,
    parity: str = "E",
    stopbits: int = 1,
    timeout: float = 0.1,
    progress: Callable[[int, int], None] | None = None,
) -> RtuScan:
    """Probe each unit id in turn; ``progress(unit, found so far)`` after each. OSError when the port
    cannot be opened."""
    settings = LineSettings(baudrate, parity, stopbits)
    out = RtuScan(port, settings)
    char_s = (1 + 8 + (0 if settings.parity == "N" else 1) + settings.stopbits) / settings.baudrate
    silence = 0.00175 if settings.baudrate > 19200 else 3.5 * char_s
    bus = serialbus.acquire(port, settings)
    try:
        async with bus.lock:
            bus.open()
            for unit in units:
                body = bytes((unit, 0x03, 0, 0, 0, 1))
                try:
                    reply = await bus.exchange(body + crc16(body), _splitter(unit), timeout)
                except NoReply:
                    pass
                except ValueError as exc:
                    out.problems.append(str(exc))
                else:
                    if reply[1] == 0x83:
                        out.units.append(FoundUnit(unit, None, reply[2]))
                    else:
                        out.units.append(FoundUnit(unit, int.from_bytes(reply[3:5], "big")))
                await asyncio.sleep(silence)  # the inter-frame silence before the next request
                if progress is not None:
                    progress(unit, len(out.units))
    finally:
        serialbus.release(bus)
    return out


def render_devices_yaml(found: RtuScan) -> str:
    """A draft `devices:` block: one modbus_rtu device per unit, with holding register 0 as a placeholder
    point where it answered (replace it with the points of the device's register map)."""
    s = found.settings
    lines = ["devices:"]
    for u in found.units:
        dev_id = f"rtu-{u.unit}"
        lines += [
            "  - protocol: modbus_rtu",
            f"    id: {dev_id}",
            f"    port: {found.port}",
            f"    unit_id: {u.unit}",
            f"    baudrate: {s.baudrate}",
            f"    parity: {s.parity}",
            f"    stopbits: {s.stopbits}",
            "    points:  # from the device's register map; holding register 0 is only a placeholder",
        ]
        if u.exception is not None:
            lines.append(f"      # holding register 0 answered exception {u.exception}: not in its map")
        else:
            lines.append(f"      # holding register 0 reads {u.register0} now")
        lines += [
            f"      - id: {dev_id}-hr0",
            "        address: 0",
            "        type: uint16",
        ]
    return "\n".join(lines) + "\n"

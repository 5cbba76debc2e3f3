"""`edge-agent bench rs485`: Modbus RTU points/s on a simulated 9600-baud bus beside the bus's own limit.

The bus is the simulator's RS-485 line on a pseudo-terminal (sim/modbus_rtu.py), which paces every byte of
request and reply to the baud rate and keeps the inter-frame silence. The limit is what the wire allows
for the same requests: per exchange, request and reply characters plus two silences of 3.5 characters,
at 11 bits a character (8E1). Nothing else is on the line, so the ratio is the agent's own overhead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["bench_rs485"]


async def bench_rs485(
    *, units: int, points: int, seconds: float, baudrate: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    from drivers.base import Quality
    from drivers.modbus.driver import EndpointPool, ModbusTcpDriver
    from drivers.modbus.options import ModbusPoint, ModbusRtuDevice
    from sim.modbus_rtu import RtuSerialBus
    from sim.modbus_server import ModbusServer, UnitBank

    if not 1 <= points <= 125:
        raise ValueError(f"--points {points}: one read of 1..125 registers per unit")
    banks = []
    for u in range(1, units + 1):
        bank = UnitBank(unit_id=u)
        bank.map("input", 0, [(u * 100 + i) & 0xFFFF for i in range(points)])
        banks.append(bank)
    server = ModbusServer(units=banks)
    # 8E1 on the wire (the pace), 8N1 on the pty (Linux ptys refuse parity)
    bus = RtuSerialBus(server, baudrate=baudrate, parity="E")
    pool = EndpointPool()
    async with bus:
        progress(f"RS-485 bus on {bus.path}: {units} units x {points} input registers at {baudrate} bit/s")
        drivers = []
        for u in range(1, units + 1):
            upts = [ModbusPoint(id=f"u{u}.p{i}", table="input", address=i) for i in range(points)]  # type: ignore[call-arg]
            dev = ModbusRtuDevice(
                protocol="modbus_rtu", id=f"rtu-{u}", port=bus.path, baudrate=baudrate, parity="N",
                unit_id=u, timeout_s=2.0, points=upts,
            )  # fmt: skip
            drivers.append((ModbusTcpDriver(device=dev, pool=pool), upts))
        line_silence = bus.silence_s  # the wire's (8E1)
        try:
            for drv, upts in drivers:  # connect and warm up
                await drv.read(upts)
            good = bad = 0
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                for drv, upts in drivers:
                    for r in await drv.read(upts):
                        if r.quality is Quality.GOOD:
                            good += 1
                        else:
                            bad += 1
            wall = time.perf_counter() - t0
        finally:
            for drv, _ in drivers:
                await drv.close()
            await pool.close()
    request_chars, reply_chars = 8, 5 + 2 * points
    exchange_s = (request_chars + reply_chars) * bus.char_s + 2 * line_silence
    limit = points / exchange_s
    measured = good / wall
    return {
        "baudrate": baudrate,
        "units": units,
        "points_per_unit": points,
        "bits_per_char": round(bus.char_s * baudrate),
        "request_bytes": request_chars,
        "reply_bytes": reply_chars,
        "points_per_s": round(measured, 1),
        "theoretical_points_per_s": round(limit, 1),
        "ratio": round(measured / limit, 3),
        "bad_readings": bad,
        "seconds": round(wall, 2),
    }

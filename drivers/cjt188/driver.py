"""CJ/T 188 driver: one 901F read per poll of a water, gas or heat meter on a shared RS-485 bus.

- The port is a :class:`drivers.serialbus.SerialBus`, shared with every meter on it (DL/T 645 ones too):
  one lock held for each whole exchange, so meters on one bus never talk over each other.
- One request (DI 901F, the meter's DI byte order) answers every point of the poll: the points pick their
  quantity out of the block. Heat arrives in kWh, MWh, GJ or MJ (the meter's unit code): it is read in kWh.
- A meter that does not answer reads ``timeout`` and, after ``dead_after`` such polls, is backed off
  (doubling, capped, jittered) and answered at once without bus time, so one dead meter never stalls the
  others. A wrong checksum or end byte, another address or type is ``protocol``; a value that is not BCD
  or a unit that is not the quantity's is ``decode``; the meter's error reply (C1) is ``no_value``.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from drivers.base import FailureCode, PointBase, Quality, Reading, UtcClock, utc_now
from drivers.cjt188.codec import (
    METER_TYPES,
    BcdError,
    Frame,
    FrameError,
    MeterErrorReply,
    Reading901F,
    decode_901f,
    read_request,
    split_frame,
)
from drivers.cjt188.options import Cjt188Device, Cjt188Point
from drivers.serialbus import BusMeter, MeterPool, NoReply

__all__ = ["CANONICAL_UNITS", "Cjt188Driver"]

_log = structlog.get_logger("drivers.cjt188")

# quantity -> the unit its readings carry; a meter's other units convert by the factor below
CANONICAL_UNITS: dict[str, str] = {
    "flow": "m3",
    "settlement_flow": "m3",
    "heat": "kWh",
    "settlement_heat": "kWh",
    "heat_power": "kW",
    "flow_rate": "m3/h",
    "supply_temp": "degC",
    "return_temp": "degC",
    "hours": "h",
}
_TO_KWH = {"kWh": 1.0, "MWh": 1000.0, "GJ": 1e6 / 3600, "MJ": 1e3 / 3600}


class Cjt188Driver(BusMeter):
    """:class:`drivers.base.Driver` for one CJ/T 188 meter (read-only)."""

    label = "CJ/T 188"

    def __init__(self, *, device: Cjt188Device, pool: MeterPool, clock: UtcClock = utc_now) -> None:
        super().__init__(device=device, address=device.address, pool=pool, clock=clock, log=_log)
        self.device = device
        self._type = METER_TYPES[device.meter_type]
        self._serial = 0

    async def read(self, points: Sequence[PointBase]) -> list[Reading]:
        ours = [p for p in points if isinstance(p, Cjt188Point)]
        out: dict[str, Reading] = {}
        for p in points:
            if not isinstance(p, Cjt188Point):
                out[p.id] = self._bad(p.id, FailureCode.CONFIG, "not a CJ/T 188 point")
        if not ours or self._backed_off(ours, out):
            return [out[p.id] for p in points]
        dev = self.device
        bus = self._get_bus()
        silent = False
        async with bus.lock:
            failed = self._open(bus)
            if failed is None:
                self._serial = (self._serial + 1) & 0xFF
                request = read_request(self._type, dev.address, serial=self._serial, di_order=dev.di_order)
                try:
                    frame = await bus.exchange(request, split_frame, dev.timeout_s, accept=self._ours)
                except NoReply:
                    silent = True
                    failed = (FailureCode.TIMEOUT, f"no reply within {dev.timeout_s} s (901F)")
                except FrameError as exc:
                    failed = (FailureCode.PROTOCOL, f"{exc} (901F)")
                except OSError as exc:  # serial.SerialException is one
                    bus.close()
                    failed = (FailureCode.UNREACHABLE, f"{bus.path}: {exc}")
        if failed is not None:
            for p in ours:
                out[p.id] = self._bad(p.id, *failed)
        else:
            out.update(self._decode(ours, frame))
        self._note_poll(silent, out)
        return [out[p.id] for p in points]

    def _ours(self, frame: Frame) -> bool:
        """This meter's reply (not the request echoed by the adapter, nor another meter's late answer)."""
        mine = frame.address == self.device.address and frame.meter_type == self._type
        return mine and bool(frame.control & 0x80)

    def _decode(self, points: list[Cjt188Point], frame: Frame) -> dict[str, Reading]:
        def all_bad(code: str, detail: str) -> dict[str, Reading]:
            return {p.id: self._bad(p.id, code, detail) for p in points}

        if frame.address != self.device.address or frame.meter_type != self._type:
            return all_bad(FailureCode.PROTOCOL, f"reply from meter {frame.meter_type:02X}/{frame.address}")
        try:
            block = decode_901f(frame, di_order=self.device.di_order)
        except MeterErrorReply as exc:
            return all_bad(FailureCode.NO_VALUE, str(exc))
        except BcdError as exc:
            return all_bad(FailureCode.DECODE, f"{exc} (901F)")
        except FrameError as exc:
            return all_bad(FailureCode.PROTOCOL, f"{exc} (901F)")
        return {p.id: self._reading(p, block) for p in points}

    def _reading(self, p: Cjt188Point, block: Reading901F) -> Reading:
        value = block.values.get(p.quantity)
        if value is None:
            return self._bad(p.id, FailureCode.NO_VALUE, f"the 901F block has no {p.quantity}")
        unit, want = block.units[p.quantity], CANONICAL_UNITS[p.quantity]
        if unit != want:
            factor = _TO_KWH.get(unit) if want == "kWh" else None
            if factor is None:
                return self._bad(p.id, FailureCode.DECODE, f"{p.quantity} in {unit}, expected {want}")
            value *= factor
        return Reading(p.id, value * p.scale if p.scale != 1.0 else value, self._clock(), Quality.GOOD)

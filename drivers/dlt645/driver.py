"""DL/T 645-2007 driver: one request per data identifier on a serial bus shared with other meters.

- The port is a :class:`drivers.serialbus.SerialBus`: one open port and one :class:`asyncio.Lock` held for
  each whole exchange (request out, reply in), shared with every meter on that port (CJ/T 188 ones too),
  so meters on one bus never talk over each other.
- A meter that does not answer fails the rest of its poll at once (``timeout``) and, after ``dead_after``
  such polls, is backed off (doubling, capped, jittered): while backed off a poll answers at once with bad
  readings and takes no bus time, so one dead meter never stalls the others.
- A reply with a wrong checksum or end byte, another address or another DI is ``protocol``; a value that is
  not BCD is ``decode``; the meter's error reply (D1) is ``no_value``. The input buffer is emptied before
  each request, so late or garbled bytes never reach the next one.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from drivers.base import (
    FailureCode,
    PointBase,
    Quality,
    Reading,
    UtcClock,
    utc_now,
)
from drivers.dlt645.codec import (
    BcdError,
    Frame,
    FrameError,
    MeterErrorReply,
    decode_read_reply,
    read_request,
    split_frame,
)
from drivers.dlt645.options import Dlt645Device, Dlt645Point
from drivers.serialbus import BusMeter, MeterPool, NoReply

__all__ = ["BusPool", "Dlt645Driver"]

_log = structlog.get_logger("drivers.dlt645")


BusPool = MeterPool  # the name the DL/T 645 spec and tests know


class Dlt645Driver(BusMeter):
    """:class:`drivers.base.Driver` for one DL/T 645-2007 meter (read-only)."""

    label = "DL/T 645"

    def __init__(self, *, device: Dlt645Device, pool: MeterPool, clock: UtcClock = utc_now) -> None:
        super().__init__(device=device, address=device.address, pool=pool, clock=clock, log=_log)
        self.device: Dlt645Device = device

    async def read(self, points: Sequence[PointBase]) -> list[Reading]:
        ours = [p for p in points if isinstance(p, Dlt645Point)]
        out: dict[str, Reading] = {}
        for p in points:
            if not isinstance(p, Dlt645Point):
                out[p.id] = self._bad(p.id, FailureCode.CONFIG, "not a DL/T 645 point")
        if self._backed_off(ours, out):
            return [out[p.id] for p in points]
        bus = self._get_bus()
        answered = False
        async with bus.lock:
            # the rest of a poll after a timeout or a lost port fails at once: no bus time for a dead meter
            failed = self._open(bus)
            skipped = ""  # a closed port fails every point alike; after a failed point the rest are skipped
            for p in ours:
                if failed is not None:
                    out[p.id] = self._bad(p.id, failed[0], f"{skipped}{failed[1]}")
                    continue
                skipped = "skipped: "
                try:
                    frame = await bus.exchange(
                        read_request(self.device.address, p.code),
                        split_frame,
                        self.device.timeout_s,
                        accept=self._ours,
                    )
                except NoReply:
                    failed = (FailureCode.TIMEOUT, f"no reply within {self.device.timeout_s} s (DI {p.di})")
                    out[p.id] = self._bad(p.id, *failed)
                    continue
                except FrameError as exc:
                    answered = True
                    out[p.id] = self._bad(p.id, FailureCode.PROTOCOL, f"{exc} (DI {p.di})")
                    continue
                except OSError as exc:  # serial.SerialException is one
                    bus.close()
                    failed = (FailureCode.UNREACHABLE, f"{bus.path}: {exc}")
                    out[p.id] = self._bad(p.id, *failed)
                    continue
                answered = True
                out[p.id] = self._decode(p, frame)
        timed_out = not answered and any(r.code == FailureCode.TIMEOUT for r in out.values())
        self._note_poll(timed_out, out)
        return [out[p.id] for p in points]

    def _ours(self, frame: Frame) -> bool:
        """This meter's reply (not the request echoed by the adapter, nor another meter's late answer)."""
        return frame.address == self.device.address and bool(frame.control & 0x80)

    def _decode(self, p: Dlt645Point, frame: Frame) -> Reading:
        if frame.address != self.device.address:
            return self._bad(p.id, FailureCode.PROTOCOL, f"reply from meter {frame.address} (DI {p.di})")
        try:
            value = decode_read_reply(frame, p.code)
        except MeterErrorReply as exc:
            return self._bad(p.id, FailureCode.NO_VALUE, str(exc))
        except BcdError as exc:
            return self._bad(p.id, FailureCode.DECODE, f"{exc} (DI {p.di})")
        except FrameError as exc:
            return self._bad(p.id, FailureCode.PROTOCOL, str(exc))
        return Reading(p.id, value * p.scale if p.scale != 1.0 else value, self._clock(), Quality.GOOD)

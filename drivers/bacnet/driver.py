"""BACnet/IP driver for one device, on a shared :class:`~drivers.bacnet.network.BacnetNetwork`.

Reads: ReadPropertyMultiple in batches of ``max_rpm_properties`` property references (present-value and
status-flags together), falling back to one ReadProperty per point when the device rejects RPM or cannot
segment the answer; the fallback is remembered for the device. Status flags turn a value ``uncertain``
(fault > out-of-service > overridden). Failures are ``bad`` readings with a code of the failure vocabulary
(:class:`drivers.base.FailureCode`): the device's ``bacnet:<class>:<code>`` (``reject`` and ``abort`` as
the class for Reject/Abort replies), ``timeout``, ``decode``, ``no_value``, ``protocol``, ...

COV: points marked ``cov`` are subscribed by ``run()`` and renewed in place at half their lifetime (one
subscriber process id per object for the driver's life, so the device replaces its entry); ``close()``
cancels them (shutdown, and a reload that changes the device). A timeout (ours or the stack's abort
no-response) drops the subscriptions to polling and re-subscribes as soon as a poll succeeds. While a point's
subscription is healthy and has delivered a value, ``read`` answers it from that value (timestamped when it
arrived) without traffic, and every notification is also pushed to ``on_cov``; a subscription that fails,
or any timeout on the device, puts its points back on polling until a re-subscription succeeds.

Writes: WriteProperty at the point's priority (else the device's), wait ``readback_delay_s``, read
present-value and priority-array back. ``None`` relinquishes (Null at that priority). A value held by a
higher priority is ``masked`` (``WriteResult.holding_priority`` says which); another read-back value is
``readback_mismatch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from bacpypes3.apdu import ErrorRejectAbortNack, SubscribeCOVRequest
from bacpypes3.basetypes import ErrorType, PriorityArray
from bacpypes3.constructeddata import AnyAtomic
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import (
    BitString,
    Boolean,
    CharacterString,
    Enumerated,
    Integer,
    Null,
    ObjectIdentifier,
    Real,
    Unsigned,
)
from bacpypes3.vendor import get_vendor_info

from drivers.bacnet.errors import kebab, request_error
from drivers.bacnet.network import BacnetNetwork
from drivers.bacnet.options import BacnetDevice, BacnetPoint
from drivers.base import (
    DriverError,
    FailureCode,
    PermanentError,
    PointBase,
    Quality,
    Reading,
    UtcClock,
    Value,
    WriteResult,
    bacnet_error,
    unknown_state,
    utc_now,
)

__all__ = ["BacnetDriver", "BacnetStats"]

_log = structlog.get_logger("drivers.bacnet")

_IN_FLIGHT = 4  # requests in flight per device (STACK.md: 5-20 in flight doubles throughput)
_COV_RETRY_S = 30.0  # a failed subscription is retried this often (reads poll meanwhile)
_UNKNOWN_OBJECT = bacnet_error("object", "unknown-object")
# Answers to ReadPropertyMultiple that mean "read one property at a time instead".
_RPM_UNSUPPORTED = frozenset(
    {
        bacnet_error("reject", "unrecognized-service"),
        bacnet_error("services", "service-request-denied"),
        *(
            bacnet_error("abort", r)
            for r in ("segmentation-not-supported", "buffer-overflow", "apdu-too-long")
        ),
    }
)


@dataclass
class BacnetStats:
    """Request counters, for tests and the bench (requests sent, not answers)."""

    rpm_requests: int = 0
    rp_requests: int = 0
    wp_requests: int = 0
    subscribe_requests: int = 0
    cov_notifications: int = 0
    cov_served: int = 0  # readings answered from COV values without a request
    timeouts: int = 0


class _CodecFailure(ValueError):
    """A value that does not convert either way (pure, no device known); the driver turns it into a bad
    reading, a failed WriteResult or a PermanentError with the same code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _objid(point: BacnetPoint) -> ObjectIdentifier:
    return ObjectIdentifier(f"{point.object_type},{point.instance}")


def _convert(raw: Any) -> Value:
    """A decoded bacpypes3 value -> a plain value: binary active -> True, multi-state/unsigned -> int."""
    if isinstance(raw, str) and raw.startswith("-no "):  # bacpypes3 reports some failures as strings
        raise _CodecFailure(FailureCode.DECODE, raw)
    if raw is None:
        raise _CodecFailure(FailureCode.NO_VALUE, "no value in the reply")
    if isinstance(raw, ErrorType):  # the device's error for this one property
        try:
            code = bacnet_error(raw.errorClass, raw.errorCode)
        except ValueError:
            code = FailureCode.PROTOCOL
        raise _CodecFailure(code, f"{raw.errorClass}: {raw.errorCode}")
    if isinstance(raw, Null):
        return None
    if isinstance(raw, AnyAtomic):
        raw = raw.get_value()
    if isinstance(raw, Enumerated):
        name = str(raw)
        if name in ("active", "inactive") and type(raw).__name__ == "BinaryPV":
            return name == "active"
        if name in ("on", "off") and type(raw).__name__ == "BinaryLightingPV":
            return name == "on"
        return int(raw)
    if isinstance(raw, Boolean):
        return bool(raw)
    if isinstance(raw, Real | float):
        return float(raw)
    if isinstance(raw, Unsigned | Integer) or (isinstance(raw, int) and not isinstance(raw, bool)):
        return int(raw)
    if isinstance(raw, CharacterString | str):
        return str(raw)
    if isinstance(raw, bool):
        return raw
    raise _CodecFailure(FailureCode.DECODE, f"cannot map {type(raw).__name__} to a value")


_FLAG_CODES = (
    ("fault", FailureCode.FAULT),
    ("out-of-service", FailureCode.OUT_OF_SERVICE),
    ("overridden", FailureCode.OVERRIDDEN),
)


def _flags_quality(flags: Any) -> tuple[Quality, str | None, str | None]:
    """status-flags [in-alarm, fault, overridden, out-of-service] -> quality, code, detail."""
    if not isinstance(flags, BitString | list):
        return Quality.GOOD, None, None
    bits = [int(b) for b in list(flags)[:4]] + [0] * (4 - min(4, len(list(flags))))
    names = [n for n, b in zip(("in-alarm", "fault", "overridden", "out-of-service"), bits, strict=True) if b]
    detail = "status-flags: " + ", ".join(names) if names else None
    for name, code in _FLAG_CODES:
        if name in names:
            return Quality.UNCERTAIN, code, detail
    return Quality.GOOD, None, detail


def _first_active(pa: Any) -> int | None:
    for i, slot in enumerate(pa or []):
        if getattr(slot, "null", None) is None:
            return i + 1
    return None


def _slot_empty(pa: Any, priority: int) -> bool:
    slot = pa[priority - 1]
    if getattr(slot, "null", None) is not None:
        return True
    try:
        return _convert(getattr(slot, slot._choice)) is None
    except _CodecFailure:
        return False  # something we cannot read sits in the slot: not relinquished


def _equal(a: Value, b: Value) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is not None and b is not None and bool(a) == bool(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)  # Real is float32
    return a == b


class BacnetDriver:
    """One BACnet/IP device. Implements :class:`drivers.base.Driver`."""

    supports_relinquish = True  # write(point, None, priority=p) releases slot p

    def __init__(self, *, device: BacnetDevice, network: BacnetNetwork, clock: UtcClock = utc_now) -> None:
        self.device = device
        self.device_id = device.id
        self.network = network
        self.clock = clock
        endpoint = device.address if ":" in device.address else f"{device.address}:47808"
        self.address = Address(endpoint)
        self._log = _log.bind(device=device.id, endpoint=endpoint)
        self.on_cov: Callable[[list[Reading]], None] | None = None
        self.stats = BacnetStats()
        self.rpm_supported = device.use_rpm  # turns False, for good, when the device rejects RPM
        self._sem = asyncio.Semaphore(_IN_FLIGHT)
        self._written: dict[str, dict[int, Value]] = {}  # point id -> {priority: the value we wrote there}
        self._cov_points = [p for p in device.points if (p.cov if p.cov is not None else device.cov)]
        self._by_objid: dict[tuple[str, int], list[BacnetPoint]] = {}
        for p in self._cov_points:
            self._by_objid.setdefault((p.object_type, p.instance), []).append(p)
        self._spids: dict[tuple[str, int], int] = {}  # healthy subscriptions
        # One subscriber process id per object for the driver's life: a renewal (or a re-subscription
        # after a timeout) replaces the device's entry instead of adding one (ASHRAE 135 13.14.1.3).
        self._spid_of: dict[tuple[str, int], int] = {}
        self._cov_lost = False  # subscriptions dropped on a timeout: re-subscribe when the device answers
        self._cov_failing: set[tuple[str, int]] = set()  # objects whose subscription fails (logged once)
        self._cov_values: dict[str, Reading] = {}  # point id -> last COV reading (healthy subscriptions only)
        self._cov_flags: dict[tuple[str, int], Any] = {}
        self._cov_wake = asyncio.Event()
        self._identity_ok = False  # the device at the address has our device_instance (checked once
        # per connection: again after any timeout, the device may have been replaced or restarted)
        self._wrong_device: str | None = None  # the mismatch being reported (logged once when it starts)

    # ---- lifecycle ----

    async def connect(self) -> None:
        await self.network.start()

    async def run(self) -> None:
        """Subscribe the COV points and renew the subscriptions until cancelled (none: return)."""
        if self._cov_points:
            await self._cov_loop()

    async def _check_identity(self) -> DriverError | None:
        """Make sure the device at the address is site.yaml's ``device_instance`` before anything is read
        or written: a wrong instance at the right address would read, and write, another device.

        Reads the Device object's object-identifier at that instance; ``unknown-object`` means another
        device answers (``wrong_device``; the wildcard instance 4194303 then names it, where the device
        supports it). A timeout or local failure is returned as it is (not checked yet). Any other error
        reply cannot tell, and is taken as the right device."""
        if self._identity_ok:
            return None
        inst = self.device.device_instance
        try:
            await self._rp(ObjectIdentifier(f"device,{inst}"), "object-identifier")
        except DriverError as f:
            if f.code != _UNKNOWN_OBJECT:
                if f.code.startswith("bacnet:"):
                    self._identity_ok = True
                    return None
                return f
            actual = "another device"
            with contextlib.suppress(DriverError):
                got = await self._rp(ObjectIdentifier("device,4194303"), "object-identifier")
                actual = f"device {int(got[1])}"
            detail = (
                f"{self.device.address} is {actual}, not device {inst} (site.yaml device_instance): "
                "nothing is read from or written to it"
            )
            if self._wrong_device != detail:
                self._wrong_device = detail
                self._log.error("device_instance_mismatch", expected=inst, found=actual)
            return PermanentError(detail, device=self.device_id, code=FailureCode.WRONG_DEVICE)
        if self._wrong_device is not None:
            self._log.info("device_instance_confirmed", instance=inst)
            self._wrong_device = None
        self._identity_ok = True
        return None

    async def close(self) -> None:
        """Cancel the COV subscriptions. Relinquishing is not done here: the service does it before the
        network closes, through :meth:`relinquish`, and audits each one."""
        if self.network.started:
            await self._unsubscribe_all()

    # ---- requests (every bacpypes3 failure is caught here, at the edge) ----

    async def _request(self, coro: Any, kind: str) -> Any:
        """Await one bacpypes3 request; every failure leaves as a DriverError (see errors.request_error).
        A timeout, ours or the stack's abort no-response, puts COV back on polling until re-subscribed."""
        what = f"{kind} to {self.device.address}"
        async with self._sem:
            try:
                return await asyncio.wait_for(coro, self.device.timeout_s)
            except TimeoutError as exc:
                error = self._error(exc, what)
            except ErrorRejectAbortNack as exc:  # BaseException in bacpypes3
                error = self._error(exc, what)
            except (OSError, ValueError, TypeError, RuntimeError) as exc:
                raise self._error(exc, what) from exc
        if error.code == FailureCode.TIMEOUT:
            self.stats.timeouts += 1
            self._cov_suspect()
        raise error

    def _error(self, exc: BaseException, what: str) -> DriverError:
        return request_error(exc, device=self.device_id, what=what, timeout_s=self.device.timeout_s)

    async def _rp(self, objid: ObjectIdentifier, prop: str) -> Any:
        self.stats.rp_requests += 1
        return await self._request(self.network.app.read_property(self.address, objid, prop), "read-property")

    async def _rpm(self, specs: list[Any]) -> list[tuple[Any, Any, Any, Any]]:
        self.stats.rpm_requests += 1
        result = await self._request(
            self.network.app.read_property_multiple(self.address, specs), "read-property-multiple"
        )
        if not isinstance(result, list):
            raise PermanentError(
                f"read-property-multiple answered {result!r}",
                device=self.device_id,
                code=FailureCode.PROTOCOL,
            )
        return result

    # ---- reads ----

    async def read(self, points: Sequence[PointBase]) -> list[Reading]:
        pts = [self._bacnet_point(p) for p in points]
        if not self.network.started:  # the local port could not be bound (connect logged why)
            return [self._bad(p, FailureCode.UNREACHABLE, "the BACnet/IP port is not bound") for p in pts]
        wrong = await self._check_identity()
        if wrong is not None:
            return [self._bad(p, wrong.code, str(wrong)) for p in pts]
        out: dict[int, Reading] = {}
        to_poll: list[int] = []
        now = self.clock()
        for i, p in enumerate(pts):
            cached = self._cov_values.get(p.id)
            # A notification newer than one poll interval stands in for a read. Older ones do not: a
            # device that restarted and forgot our subscription goes quiet, and must not go stale.
            if (
                cached is not None
                and (p.object_type, p.instance) in self._spids
                and (now - cached.ts).total_seconds() < self.device.interval_s
            ):
                out[i] = cached
                self.stats.cov_served += 1
            else:
                to_poll.append(i)
        if to_poll:
            polled = await self._poll([pts[i] for i in to_poll])
            out.update(zip(to_poll, polled, strict=True))
            if self._cov_lost and any(r.ok for r in polled):
                # The device answers again (after a restart it has forgotten our subscriptions):
                # subscribe now, not at the next retry or renewal.
                self._cov_lost = False
                self._cov_wake.set()
        return [out[i] for i in range(len(pts))]

    def _bacnet_point(self, point: PointBase) -> BacnetPoint:
        if not isinstance(point, BacnetPoint):
            raise TypeError(f"BACnet device {self.device_id} got a {type(point).__name__}, not a BacnetPoint")
        return point

    @staticmethod
    def _props(point: BacnetPoint) -> list[str]:
        return [point.property, "status-flags"] if point.property == "present-value" else [point.property]

    def _batches(self, points: list[BacnetPoint]) -> list[list[BacnetPoint]]:
        batches: list[list[BacnetPoint]] = []
        current: list[BacnetPoint] = []
        used = 0
        for p in points:
            n = len(self._props(p))
            if current and used + n > self.device.max_rpm_properties:
                batches.append(current)
                current, used = [], 0
            current.append(p)
            used += n
        if current:
            batches.append(current)
        return batches

    async def _poll(self, points: list[BacnetPoint]) -> list[Reading]:
        if not self.rpm_supported:
            return list(await asyncio.gather(*(self._read_one(p) for p in points)))
        results = await asyncio.gather(*(self._read_batch(b) for b in self._batches(points)))
        return [r for batch in results for r in batch]

    async def _read_batch(self, batch: list[BacnetPoint]) -> list[Reading]:
        specs: list[Any] = []
        for p in batch:
            specs += [_objid(p), self._props(p)]
        if not self.rpm_supported:  # another batch found out meanwhile
            return list(await asyncio.gather(*(self._read_one(p) for p in batch)))
        try:
            results = await self._rpm(specs)
        except DriverError as f:
            if f.code in _RPM_UNSUPPORTED:
                if self.rpm_supported:  # once: the fallback is for good
                    self._log.warning("rpm_unsupported", code=f.code, fallback="read-property")
                self.rpm_supported = False
                return list(await asyncio.gather(*(self._read_one(p) for p in batch)))
            if f.code in (FailureCode.TIMEOUT, FailureCode.REQUEST_FAILED) or f.code.startswith(
                "bacnet:abort:"
            ):
                return [self._bad(p, f.code, str(f)) for p in batch]
            # A whole-request error (some devices answer RPM with one Error when any object is unknown):
            # ask point by point so each gets its own answer.
            return list(await asyncio.gather(*(self._read_one(p) for p in batch)))
        ts = self.clock()
        values: dict[tuple[str, int, str], Any] = {}
        for objid, prop, _index, value in results:
            values[(kebab(objid[0]), int(objid[1]), kebab(prop))] = value
        out = []
        for p in batch:
            key = (p.object_type, p.instance)
            if (*key, p.property) not in values:
                out.append(self._bad(p, FailureCode.NO_VALUE, "property missing from the RPM answer", ts))
                continue
            out.append(self._reading(p, values[(*key, p.property)], values.get((*key, "status-flags")), ts))
        return out

    async def _read_one(self, p: BacnetPoint) -> Reading:
        try:
            raw = await self._rp(_objid(p), p.property)
        except DriverError as f:
            return self._bad(p, f.code, str(f))
        flags = None
        if p.property == "present-value":
            # Status flags are optional on some objects; their absence leaves the value good.
            with contextlib.suppress(DriverError):
                flags = await self._rp(_objid(p), "status-flags")
        return self._reading(p, raw, flags, self.clock())

    def _reading(self, p: BacnetPoint, raw: Any, flags: Any, ts: Any) -> Reading:
        try:
            value = _convert(raw)
        except _CodecFailure as f:
            return self._bad(p, f.code, f.detail, ts)
        quality, code, detail = (
            _flags_quality(flags) if not isinstance(flags, ErrorType) else (Quality.GOOD, None, None)
        )
        if quality is Quality.GOOD and p.states and value is not None:
            # a state the site's `states` lacks (as on Modbus): a value, but no mode to decide on
            unknown = unknown_state(value, p.states)
            if unknown is not None:
                return Reading(p.id, value, ts, Quality.UNCERTAIN, FailureCode.UNKNOWN_STATE, unknown)
        return Reading(p.id, value, ts, quality, code, detail)

    def _bad(self, p: BacnetPoint, code: str, detail: str, ts: Any = None) -> Reading:
        return Reading(
            p.id, None, ts or self.clock(), Quality.BAD, code, f"{self.device_id}/{p.id}: {detail}"
        )

    # ---- writes ----

    async def write(self, point: PointBase, value: Value, *, priority: int | None = None) -> WriteResult:
        p = self._bacnet_point(point)
        prio = priority or p.priority or self.device.write_priority
        if not p.writable:
            return WriteResult(
                p.id, value, None, False, FailureCode.NOT_WRITABLE, f"{p.id} is not writable in site.yaml"
            )
        if not 1 <= prio <= 16:
            return WriteResult(p.id, value, None, False, FailureCode.CONFIG, f"priority {prio} outside 1-16")
        try:
            encoded = self._encode(p, value)
        except _CodecFailure as f:
            return WriteResult(p.id, value, None, False, f.code, f.detail)
        except (TypeError, ValueError) as exc:  # bacpypes3 refused the value (e.g. too large)
            return WriteResult(p.id, value, None, False, FailureCode.RANGE, str(exc))
        if not self.network.started:
            return WriteResult(
                p.id, value, None, False, FailureCode.UNREACHABLE, "the BACnet/IP port is not bound"
            )
        wrong = await self._check_identity()
        if wrong is not None:
            return WriteResult(p.id, value, None, False, wrong.code, str(wrong))
        self.stats.wp_requests += 1
        try:
            await self._request(
                self.network.app.write_property(self.address, _objid(p), p.property, encoded, priority=prio),
                "write-property",
            )
        except DriverError as f:
            return WriteResult(p.id, value, None, False, f.code, str(f))
        if value is None:
            self._written.get(p.id, {}).pop(prio, None)
        else:
            self._written.setdefault(p.id, {})[prio] = value
        if self.device.readback_delay_s:
            await asyncio.sleep(self.device.readback_delay_s)
        try:
            readback_raw, pa = await self._read_back(p)
            readback = _convert(readback_raw)
        except DriverError as f:
            return WriteResult(p.id, value, None, False, f.code, f"written, read-back failed: {f}")
        except _CodecFailure as f:
            return WriteResult(p.id, value, None, False, f.code, f"written, read-back failed: {f.detail}")
        active = _first_active(pa) if pa is not None else None
        if value is None:
            ok = pa is None or _slot_empty(pa, prio)
            return WriteResult(
                p.id,
                None,
                readback,
                ok,
                None if ok else FailureCode.RELINQUISH_FAILED,
                f"relinquished priority {prio}; active priority {active}",
            )
        if _equal(readback, value):
            return WriteResult(
                p.id, value, readback, True, None, f"priority {prio}; active priority {active}"
            )
        if active is not None and active < prio:
            return WriteResult(
                p.id,
                value,
                readback,
                False,
                FailureCode.MASKED,
                f"priority {active} holds {readback!r} above our {prio}",
                holding_priority=active,
            )
        return WriteResult(
            p.id,
            value,
            readback,
            False,
            FailureCode.READBACK_MISMATCH,
            f"wrote {value!r} at priority {prio}, device reports {readback!r}",
        )

    def _encode(self, p: BacnetPoint, value: Value) -> Any:
        if value is None:
            return Null(())
        if p.object_type == "binary-lighting-output":
            if isinstance(value, str):
                if value not in ("on", "off"):
                    raise _CodecFailure(FailureCode.TYPE, f"binary lighting value {value!r} is not on/off")
                return value
            if value not in (0, 1, True, False):
                raise _CodecFailure(
                    FailureCode.TYPE, f"binary lighting value {value!r} is not 0/1/true/false"
                )
            return "on" if value else "off"
        if p.object_type == "lighting-output" and isinstance(value, bool):
            return Real(100.0 if value else 0.0)  # a dimmer used as a relay: on is full level
        if p.object_type.startswith("binary-"):
            if isinstance(value, str):
                if value not in ("active", "inactive"):
                    raise _CodecFailure(FailureCode.TYPE, f"binary value {value!r} is not active/inactive")
                return value
            if value not in (0, 1, True, False):
                raise _CodecFailure(FailureCode.TYPE, f"binary value {value!r} is not 0/1/true/false")
            return "active" if value else "inactive"
        if p.object_type.startswith("multi-state-"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _CodecFailure(FailureCode.TYPE, f"multi-state value {value!r} is not an integer >= 1")
            if not math.isfinite(value) or value != int(value) or value < 1:
                raise _CodecFailure(FailureCode.RANGE, f"multi-state value {value!r} is not an integer >= 1")
            return Unsigned(int(value))
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _CodecFailure(FailureCode.TYPE, f"analog value {value!r} is not a number")
        if math.isnan(float(value)):
            raise _CodecFailure(FailureCode.NAN, "NaN is not written")
        return Real(float(value))

    async def _read_back(self, p: BacnetPoint) -> tuple[Any, Any]:
        """present-value and priority-array (None when the object is not commandable)."""
        objid = _objid(p)
        if self.rpm_supported:
            try:
                results = await self._rpm([objid, [p.property, "priority-array"]])
            except DriverError as f:
                if f.code == FailureCode.TIMEOUT:
                    raise
            else:
                got = {kebab(prop): v for _o, prop, _i, v in results}
                pa = got.get("priority-array")
                return got.get(p.property), pa if isinstance(pa, list) else None
        pv = await self._rp(objid, p.property)
        try:
            pa = await self._rp(objid, "priority-array")
        except DriverError:
            pa = None
        return pv, pa if isinstance(pa, list) else None

    def remember(self, point: PointBase, value: Value, *, priority: int | None = None) -> None:
        """Note that an earlier run of the agent wrote ``value`` at ``priority`` (default: the point's or
        the device's) and did not release it, so :meth:`relinquish` may release it too (after checking
        the slot still holds that value). The service calls this at startup, from the audit trail."""
        p = self._bacnet_point(point)
        if value is not None:
            self._written.setdefault(p.id, {})[priority or p.priority or self.device.write_priority] = value

    def held(self, point: PointBase) -> dict[int, Value]:
        """The priorities at which this driver wrote ``point`` (and did not relinquish since), with the
        value it wrote at each."""
        return dict(self._written.get(point.id, {}))

    async def relinquish(self, point: PointBase) -> list[WriteResult]:
        """Release the priority slots this driver wrote, but only those that still hold our value.

        Reads the priority-array first. A slot that is empty (the device restarted and forgot) is
        forgotten without traffic; a slot holding another value (an occupant or another controller
        wrote at our priority since) is left alone: ``slot_not_ours``. Otherwise Null is written there
        and read back (``relinquish_failed`` when the slot still holds a value). One result per slot
        acted on or left alone; ``requested`` is the value we had written, ``readback`` the present
        value after (or the other party's value for ``slot_not_ours``). BACnet has no compare-and-swap:
        a write landing between the read and the Null is not seen."""
        p = self._bacnet_point(point)
        held = self._written.get(p.id, {})
        if not held:
            return []
        try:
            pa = await self._rp(_objid(p), "priority-array")
        except DriverError as f:
            return [
                WriteResult(p.id, v, None, False, f.code, f"priority {prio}: priority-array read failed: {f}")
                for prio, v in sorted(held.items())
            ]
        out: list[WriteResult] = []
        for prio, ours in sorted(held.items()):
            if not isinstance(pa, list) or len(pa) < prio or _slot_empty(pa, prio):
                held.pop(prio, None)
                self._log.info("relinquish_not_needed", point=p.id, priority=prio, reason="slot empty")
                continue
            slot = pa[prio - 1]
            try:
                there = _convert(getattr(slot, slot._choice))
            except _CodecFailure:
                there = None
            if not _equal(there, ours):
                held.pop(prio, None)
                out.append(
                    WriteResult(
                        p.id,
                        ours,
                        there,
                        False,
                        FailureCode.SLOT_NOT_OURS,
                        f"priority {prio} holds {there!r}, not the {ours!r} we wrote: someone else's "
                        "command, left alone",
                    )
                )
                continue
            result = await self.write(p, None, priority=prio)
            out.append(
                WriteResult(
                    p.id,
                    ours,
                    result.readback,
                    result.ok,
                    result.code,
                    result.detail,
                    result.holding_priority,
                )
            )
        return out

    async def active_priority(self, point: PointBase) -> int | None:
        """Which priority holds the present value (first non-null slot), None when all are relinquished.

        Raises TransientError on timeout, PermanentError (DeviceRejectedError when the device said so)
        when it has no priority-array for it."""
        p = self._bacnet_point(point)
        try:
            pa = await self._rp(_objid(p), "priority-array")
        except DriverError as f:
            raise type(f)(str(f), device=self.device_id, point=p.id, code=f.code) from None
        if not isinstance(pa, list | PriorityArray):
            raise PermanentError(
                f"priority-array read gave {pa!r}", device=self.device_id, point=p.id, code=FailureCode.DECODE
            )
        return _first_active(pa)

    # ---- COV ----

    def _cov_suspect(self) -> None:
        """A timeout: the device may have restarted and forgotten us (or been replaced: check its
        instance again). Poll until re-subscribed."""
        self._identity_ok = False
        if self._spids:
            self._spids.clear()
            self._cov_values.clear()
            self._cov_lost = True  # the first good poll asks the COV loop to subscribe again
            self._cov_wake.set()

    async def _subscribe(self, key: tuple[str, int]) -> bool:
        spid = self._spid_of.get(key)
        if spid is None:

            def handler(objid: Any, values: list[Any]) -> None:
                self._on_notification(key, objid, values)

            spid = self._spid_of[key] = self.network.register_cov(handler)
        req = SubscribeCOVRequest(
            subscriberProcessIdentifier=spid,
            monitoredObjectIdentifier=ObjectIdentifier(f"{key[0]},{key[1]}"),
            issueConfirmedNotifications=self.device.cov_confirmed,
            lifetime=self.device.cov_lifetime_s,
            destination=self.address,
        )
        self.stats.subscribe_requests += 1
        try:
            await self._request(self.network.app.request(req), "subscribe-cov")
        except DriverError as f:
            if key not in self._cov_failing:  # the failure starts; cov_subscribe_recovered ends it
                self._cov_failing.add(key)
                self._log.warning(
                    "cov_subscribe_failed", object=f"{key[0]},{key[1]}", code=f.code, fallback="polling"
                )
            return False
        if key in self._cov_failing:
            self._cov_failing.discard(key)
            self._log.info("cov_subscribe_recovered", object=f"{key[0]},{key[1]}")
        self._spids[key] = spid
        return True

    async def _cov_loop(self) -> None:
        renew_s = max(1.0, self.device.cov_lifetime_s / 2)
        while True:
            # Cleared before the round, not after: a wake-up asked for while subscribing (a device back
            # after a timeout) must start another round, not be lost until the next renewal.
            self._cov_wake.clear()
            failed = False
            if await self._check_identity() is not None:  # not our device (yet): subscribe nothing
                keys: list[tuple[str, int]] = []
                failed = True
            else:
                keys = list(self._by_objid)
            for key in keys:
                if not await self._subscribe(key):
                    failed = True
                    self._spids.pop(key, None)
                    for p in self._by_objid[key]:
                        self._cov_values.pop(p.id, None)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as the
            # event is set, and close() would then wait on this task for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(renew_s, _COV_RETRY_S) if failed else renew_s):
                    await self._cov_wake.wait()

    async def _unsubscribe_all(self) -> None:
        """Cancel every subscription this driver made (healthy or not: a device that missed a renewal may
        still hold one); a subscription the device no longer knows is not an error."""
        for key, spid in list(self._spid_of.items()):
            req = SubscribeCOVRequest(
                subscriberProcessIdentifier=spid,
                monitoredObjectIdentifier=ObjectIdentifier(f"{key[0]},{key[1]}"),
                destination=self.address,
            )
            with contextlib.suppress(DriverError):
                await self._request(self.network.app.request(req), "unsubscribe-cov")
            self.network.unregister_cov(spid)
        self._spid_of.clear()
        self._spids.clear()
        self._cov_values.clear()

    def _on_notification(self, key: tuple[str, int], objid: Any, values: list[Any]) -> None:
        self.stats.cov_notifications += 1
        ts = self.clock()
        cls = get_vendor_info(0).get_object_class(objid[0])
        decoded: dict[str, Any] = {}
        for pv in values:
            prop = pv.propertyIdentifier
            ptype = cls.get_property_type(prop) if cls else None
            try:
                decoded[kebab(prop)] = pv.value.cast_out(ptype) if ptype else None
            except Exception as exc:  # a malformed notification is a bad reading, not a crash
                decoded[kebab(prop)] = f"-no decode: {exc}-"
        if "status-flags" in decoded:
            self._cov_flags[key] = decoded["status-flags"]
        readings = []
        for p in self._by_objid.get(key, []):
            if p.property in decoded:
                r = self._reading(p, decoded[p.property], self._cov_flags.get(key), ts)
                if key in self._spids:
                    self._cov_values[p.id] = r
                readings.append(r)
        if readings and self.on_cov is not None:
            self.on_cov(readings)

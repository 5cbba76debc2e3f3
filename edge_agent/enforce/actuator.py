"""The actuator: the last safety envelope, the write, the read-back, and the audit record of each.

Policies propose ``WriteIntent``s; nothing reaches a device except through ``Actuator.apply``, and
the checks here run last and have no switch to turn them off:

1. the point exists, its device has a driver, and site.yaml marks it ``writable`` (the allowlist);
2. the point's zone is not exempt (hospital wards, labs: ``is_exempt``);
3. the value fits the point: booleans for relays, a known raw state for enumerations, a finite
   number inside the point's ``min``/``max`` for everything else (a numeric point without both
   bounds is not written at all). Out of range is refused and audited, never clamped;
4. at most ``max_writes_per_hour`` writes per point in any sliding hour. Past it the actuator stops
   writing that point and records ONE ``tamper`` finding per point per hour: a policy that has to
   write the same point again and again is fighting someone (a wall panel, another controller).

Every accepted write is read back by the driver; the audit ``write`` record holds the snapshot value
before, the read-back after, the rule, the reason and the result (``ok``, ``readback_mismatch`` or
the driver's error code). A write the device did not take as asked (``masked``: a higher BACnet
priority holds the point; ``readback_mismatch``: the device clamped or overrode it) is ONE
``masked_write`` finding naming the holder (the priority, or the value the device shows). The point
is then not written again while the holder is unchanged (the snapshot still shows the held value and
the policy still asks for the same value): those intents end ``masked`` without traffic, counted in
``masked_points()`` (shown by ``status``). When the held value changes, the next intent writes again.
Refusals, driver codes and results share one vocabulary,
:class:`drivers.base.FailureCode`. A driver exception never escapes; an audit-store failure does (as
an ExceptionGroup from the task group): the actuator does not keep writing when it can no longer
record what it writes.

Rate-limit state lives in memory and is rebuilt from the audit trail by ``restore_from_audit()``
at startup, so a restart does not reset the count.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import structlog

from drivers.base import Driver, DriverError, FailureCode, PointBase, Value, WriteResult
from edge_agent.core.clock import Clock
from edge_agent.store.audit import AuditKind, AuditLog
from policies.types import PointState, WriteIntent

__all__ = [
    "RATE_WINDOW_S",
    "REFUSAL_REPEAT_S",
    "ActuationOutcome",
    "Actuator",
    "MaskedPoint",
    "OutcomeStatus",
    "supports_relinquish",
]

RATE_WINDOW_S = 3600.0  # the sliding hour of the rate limit, and the tamper-finding repeat interval
REFUSAL_REPEAT_S = 3600.0  # an identical refusal is audited again only after this long (counted meanwhile)

OutcomeStatus = Literal["ok", "readback_mismatch", "masked", "error", "refused", "rate_limited"]

_BOOL_ROLES = frozenset({"light_relay", "ac_power", "window_contact"})
_BOOL_TYPES = frozenset({"bool", "bit"})


def supports_relinquish(driver: Driver) -> bool:
    """The relinquish hook: a driver that can release its write priority (BACnet) sets
    ``supports_relinquish = True`` and treats ``write(point, None, priority=p)`` as "relinquish p"."""
    return getattr(driver, "supports_relinquish", False) is True


@dataclass(frozen=True, slots=True)
class ActuationOutcome:
    """What became of one intent."""

    intent: WriteIntent
    status: OutcomeStatus
    code: str | None = None  # a FailureCode (above_max, not_writable, rate_limited, ...) or modbus:2, ...
    detail: str = ""
    readback: Value = None
    audit_seq: int | None = None  # the write/refused record; None when not re-audited (repeat, rate limit)
    finding_seq: int | None = None  # the masked_write or tamper finding this intent caused

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def reached_device(self) -> bool:
        return self.status in ("ok", "readback_mismatch", "error")


@dataclass(slots=True)
class MaskedPoint:
    """A point whose last write someone else holds: the holder, and the intents held back since."""

    point_id: str
    requested: Value  # what we wrote
    held_value: Value  # what the device shows instead
    holding_priority: int | None  # the BACnet priority holding it; None: the device clamps/overrides
    since: str  # ISO time of the masked write
    finding_seq: int
    held_back: int = 0  # intents not written since, the holder being unchanged

    def as_dict(self) -> dict[str, Any]:
        return {
            "point": self.point_id,
            "requested": self.requested,
            "held_value": self.held_value,
            "holding_priority": self.holding_priority,
            "since": self.since,
            "finding_seq": self.finding_seq,
            "held_back": self.held_back,
        }


@dataclass(slots=True)
class _Refusal:
    code: FailureCode
    reason: str


class Actuator:
    def __init__(
        self,
        *,
        drivers: Mapping[str, Driver],
        points: Mapping[str, tuple[str, PointBase]],
        audit: AuditLog,
        clock: Clock,
        max_writes_per_hour: int,
        is_exempt: Callable[[str | None], bool] = lambda zone: False,
        exempt_roles: Collection[str] | None = None,
        logger: Any = None,
        write_priority: int | None = None,
    ) -> None:
        if max_writes_per_hour < 1:
            raise ValueError(f"max_writes_per_hour must be at least 1, not {max_writes_per_hour}")
        self._drivers = drivers
        self._points = points
        self._audit = audit
        self._clock = clock
        self._max = max_writes_per_hour
        self._is_exempt = is_exempt
        # Roles an exemption covers (None: every role). Policy exemptions are HVAC-only: an exempt
        # server room's lights are still swept.
        self._exempt_roles = None if exempt_roles is None else frozenset(exempt_roles)
        self._log = logger if logger is not None else structlog.get_logger("edge_agent.actuator")
        self._priority = write_priority  # BACnet priority (None: the driver's default); Modbus ignores it
        self._writes: dict[str, deque[float]] = defaultdict(deque)  # monotonic times of writes per point
        self._tamper_at: dict[str, float] = {}  # monotonic time of the last tamper finding per point
        self._rate_suppressed: dict[str, int] = defaultdict(int)  # writes held back since that finding
        self._refused_at: dict[tuple[str, str, str, str], tuple[float, int]] = {}  # -> (audited at, repeats)
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._masked: dict[str, MaskedPoint] = {}  # points someone else holds (no retry until that changes)

    # --- public -------------------------------------------------------------------------------

    def reconfigure(self, *, max_writes_per_hour: int, is_exempt: Callable[[str | None], bool]) -> None:
        """On reload: new limits and exemptions; the write history (the fight counter) is kept."""
        if max_writes_per_hour < 1:
            raise ValueError(f"max_writes_per_hour must be at least 1, not {max_writes_per_hour}")
        self._max = max_writes_per_hour
        self._is_exempt = is_exempt

    async def apply(
        self, intents: Sequence[WriteIntent], snapshot: Mapping[str, PointState] | None = None
    ) -> list[ActuationOutcome]:
        """Check, write, read back and audit each intent; outcomes in the order of ``intents``.

        One task per device (different devices write concurrently); a device's intents run in
        order, and a per-point lock keeps writes to one point from overlapping across calls.
        """
        snap: Mapping[str, PointState] = snapshot or {}
        outcomes: list[ActuationOutcome | None] = [None] * len(intents)
        by_device: dict[str, list[int]] = {}
        for i, intent in enumerate(intents):
            entry = self._points.get(intent.point_id)
            if entry is None:
                outcomes[i] = self._refuse(
                    intent,
                    snap,
                    _Refusal(FailureCode.UNKNOWN_POINT, f"{intent.point_id} is not a point in site.yaml"),
                )
            elif entry[0] not in self._drivers:
                outcomes[i] = self._refuse(
                    intent,
                    snap,
                    _Refusal(FailureCode.NO_DRIVER, f"device {entry[0]} of {intent.point_id} has no driver"),
                )
            else:
                by_device.setdefault(entry[0], []).append(i)

        async def run_device(indices: list[int]) -> None:
            for i in indices:
                outcomes[i] = await self._apply_one(intents[i], snap)

        async with asyncio.TaskGroup() as tg:
            for device_id, indices in by_device.items():
                tg.create_task(run_device(indices), name=f"actuate:{device_id}")
        done = [o for o in outcomes if o is not None]
        if len(done) != len(intents):  # cannot happen unless a task ended without an outcome: say so
            raise RuntimeError(f"actuator lost {len(intents) - len(done)} of {len(intents)} outcomes")
        return done

    def restore_from_audit(self) -> int:
        """Rebuild the rate-limit state from the last hour of the audit trail; returns the writes found.

        Call once at startup, before ``apply``. Record times are wall-clock: a record stamped in
        the future (the clock stepped back) counts as "just now", except beyond one window ahead.
        """
        now_wall, now_mono = self._clock.now(), self._clock.monotonic()
        writes: dict[str, list[float]] = defaultdict(list)
        tamper: dict[str, float] = {}
        since = now_wall - timedelta(seconds=RATE_WINDOW_S)
        for rec in self._audit.records(since, kinds=[AuditKind.WRITE, AuditKind.FINDING]):
            if rec.subject not in self._points:
                continue
            try:
                age = (now_wall - rec.time).total_seconds()
            except ValueError:  # a damaged time stamp: verify() reports it; do not crash the startup
                self._log.warning("rate_window_bad_ts", seq=rec.seq, ts=rec.ts)
                continue
            if age < -RATE_WINDOW_S:
                continue
            t = now_mono - max(age, 0.0)
            if rec.kind == AuditKind.WRITE:
                writes[rec.subject].append(t)
            elif rec.result == "tamper":
                tamper[rec.subject] = max(t, tamper.get(rec.subject, t))
        self._writes = defaultdict(deque, {pid: deque(sorted(ts)) for pid, ts in writes.items()})
        self._tamper_at = tamper
        self._rate_suppressed = defaultdict(int)
        restored = sum(len(v) for v in writes.values())
        self._log.info(
            "rate_window_restored", writes=restored, points=len(writes), tamper_open=sorted(tamper)
        )
        return restored

    def masked_points(self, snapshot: Mapping[str, PointState] | None = None) -> list[dict[str, Any]]:
        """Points whose last write someone else holds (for ``status``), by point id. With the current
        ``snapshot``, masks whose holder let go (the point no longer shows the held value) are
        forgotten first."""
        for pid, m in list(self._masked.items()):
            state = (snapshot or {}).get(pid)
            if state is not None and state.ok and not _same(state.value, m.held_value):
                del self._masked[pid]
                self._log.info("write_unmasked", point=pid, held_back=m.held_back, now=state.value)
        return [m.as_dict() for _pid, m in sorted(self._masked.items())]

    def writes_in_window(self, point_id: str) -> int:
        """Writes to ``point_id`` counted against the rate limit right now."""
        dq = self._writes.get(point_id)
        if not dq:
            return 0
        self._expire(dq, self._clock.monotonic())
        return len(dq)

    # --- the envelope -------------------------------------------------------------------------

    def _check(
        self, intent: WriteIntent, point: PointBase, snap: Mapping[str, PointState]
    ) -> _Refusal | None:
        pid = intent.point_id
        if not point.writable:
            return _Refusal(FailureCode.NOT_WRITABLE, f"{pid} is not writable in site.yaml")
        if intent.relinquish:
            return None  # releasing our own command imposes nothing: no zone or value checks
        state = snap.get(pid)
        # Exempt if any zone the point is known by is exempt (site.yaml, the intent, the snapshot).
        known = sorted({z for z in (intent.zone, point.zone, state.zone if state else None) if z is not None})
        candidates: list[str | None] = [*known] if known else [None]
        covered = self._exempt_roles is None or point.role in self._exempt_roles
        for zone in candidates if covered else ():
            if self._is_exempt(zone):
                return _Refusal(FailureCode.EXEMPT_ZONE, f"zone {zone} of {pid} is exempt from enforcement")
        return _check_value(pid, point, intent.value)

    # --- one intent ---------------------------------------------------------------------------

    async def _apply_one(self, intent: WriteIntent, snap: Mapping[str, PointState]) -> ActuationOutcome:
        pid = intent.point_id
        device_id, point = self._points[pid]
        driver = self._drivers[device_id]
        async with self._locks[pid]:
            refusal = self._check(intent, point, snap)
            if refusal is None and intent.relinquish and not supports_relinquish(driver):
                refusal = _Refusal(FailureCode.RELINQUISH_UNSUPPORTED, "relinquish is a BACnet concept")
            if refusal is not None:
                return self._refuse(intent, snap, refusal)
            value: Value = None if intent.relinquish else _normalise(point, intent.value)
            held = self._still_masked(intent, value, snap)
            if held is not None:
                return held
            limited = self._rate_limit(intent, snap)
            if limited is not None:
                return limited
            return await self._write(intent, driver, device_id, point, value, snap)

    def _still_masked(
        self, intent: WriteIntent, value: Value, snap: Mapping[str, PointState]
    ) -> ActuationOutcome | None:
        """Hold back a write to a point someone else holds, while the holder is unchanged: the policy
        asks for the same value and the snapshot still shows the held one. Otherwise forget the mask."""
        pid = intent.point_id
        m = self._masked.get(pid)
        if m is None:
            return None
        state = snap.get(pid)
        if (
            not intent.relinquish
            and state is not None
            and state.ok
            and _same(state.value, m.held_value)
            and _same(value, m.requested)
        ):
            m.held_back += 1
            holder = f"priority {m.holding_priority}" if m.holding_priority else "the device"
            return ActuationOutcome(
                intent,
                "masked",
                FailureCode.MASKED,
                f"{pid}: {holder} holds {m.held_value!r} (finding {m.finding_seq}); not written again "
                "until that changes",
                m.held_value,
            )
        del self._masked[pid]
        self._log.info("write_unmasked", point=pid, held_back=m.held_back, now=state.value if state else None)
        return None

    def _rate_limit(self, intent: WriteIntent, snap: Mapping[str, PointState]) -> ActuationOutcome | None:
        """Count this write, or hold it back. No await in here: check and count are one step."""
        pid = intent.point_id
        now = self._clock.monotonic()
        dq = self._writes[pid]
        self._expire(dq, now)
        if len(dq) < self._max:
            dq.append(now)
            return None
        detail = (
            f"{pid}: {len(dq)} writes in the last hour reached the limit of {self._max}; something keeps "
            "changing it back (a wall panel, another controller?). Writes resume when the oldest is an "
            "hour old"
        )
        last = self._tamper_at.get(pid)
        finding_seq = None
        if last is None or now - last >= RATE_WINDOW_S:
            held = self._rate_suppressed.pop(pid, 0)
            rec = self._audit.append_finding(
                "tamper",
                subject=pid,
                rule=intent.rule,
                reason=detail + (f" ({held} writes held back since the previous finding)" if held else ""),
                before=_before(snap, pid),
                after=intent.value,
            )
            self._tamper_at[pid] = now
            finding_seq = rec.seq
            self._log.warning(
                "write_rate_limited", point=pid, writes=len(dq), limit=self._max, rule=intent.rule
            )
        else:
            self._rate_suppressed[pid] += 1
        return ActuationOutcome(
            intent, "rate_limited", FailureCode.RATE_LIMITED, detail, finding_seq=finding_seq
        )

    async def _write(
        self,
        intent: WriteIntent,
        driver: Driver,
        device_id: str,
        point: PointBase,
        value: Value,
        snap: Mapping[str, PointState],
    ) -> ActuationOutcome:
        pid = intent.point_id
        log = self._log.bind(device=device_id, point=pid)
        wr: WriteResult | None = None
        code: str
        try:
            wr = await driver.write(point, value, priority=self._priority)
        except DriverError as e:
            code, detail = e.code, str(e)
        except Exception as e:
            code, detail = FailureCode.INTERNAL_ERROR, _describe(e)
        except BaseException as e:
            # bacpypes3's ErrorRejectAbortNack derives from BaseException: a driver error all the same.
            if isinstance(e, KeyboardInterrupt | SystemExit | GeneratorExit):
                raise
            task = asyncio.current_task()
            if isinstance(e, asyncio.CancelledError) and (task is None or task.cancelling()):
                # Really cancelled (shutdown): the write may have reached the device, so say so, then go.
                self._audit.append(
                    AuditKind.WRITE,
                    subject=pid,
                    before=_before(snap, pid),
                    rule=intent.rule,
                    reason=f"{intent.reason} (requested {_show(value, intent)}; cancelled before read-back)",
                    result=FailureCode.CANCELLED,
                )
                raise
            code, detail = FailureCode.INTERNAL_ERROR, _describe(e)

        if wr is None:
            rec = self._audit.append(
                AuditKind.WRITE,
                subject=pid,
                before=_before(snap, pid),
                after=None,
                rule=intent.rule,
                reason=f"{intent.reason} (requested {_show(value, intent)}; {detail})",
                result=code,
            )
            log.warning("write_failed", code=code, detail=detail, rule=intent.rule)
            return ActuationOutcome(intent, "error", code, detail, audit_seq=rec.seq)

        if wr.ok:
            self._masked.pop(pid, None)
            result = "relinquished" if intent.relinquish else "ok"
            rec = self._audit.append(
                AuditKind.WRITE,
                subject=pid,
                before=_before(snap, pid),
                after=wr.readback,
                rule=intent.rule,
                reason=intent.reason,
                result=result,
            )
            log.info("write_applied", value=value, readback=wr.readback, rule=intent.rule, result=result)
            return ActuationOutcome(intent, "ok", None, wr.detail or "", wr.readback, audit_seq=rec.seq)

        # Written, but the device shows another value: a higher BACnet priority holds the point
        # (``masked``), or the device clamped or overrode it (``readback_mismatch``).
        masked = (
            not intent.relinquish
            and wr.readback is not None
            and wr.code in (None, FailureCode.READBACK_MISMATCH, FailureCode.MASKED)
        )
        if masked:
            result = FailureCode.MASKED if wr.code == FailureCode.MASKED else FailureCode.READBACK_MISMATCH
        else:
            result = wr.code or FailureCode.WRITE_FAILED
        rec = self._audit.append(
            AuditKind.WRITE,
            subject=pid,
            before=_before(snap, pid),
            after=wr.readback,
            rule=intent.rule,
            reason=f"{intent.reason} (requested {_show(value, intent)}"
            + (f"; {wr.detail})" if wr.detail else ")"),
            result=result,
        )
        if not masked:
            log.warning("write_failed", code=result, detail=wr.detail, rule=intent.rule)
            return ActuationOutcome(intent, "error", result, wr.detail or "", wr.readback, audit_seq=rec.seq)
        prio = wr.holding_priority
        holder = (
            f"BACnet priority {prio} holds {wr.readback!r}"
            if prio is not None
            else f"the device holds {wr.readback!r} (it clamps the value, or a local override holds it)"
        )
        reason = f"wrote {value!r} to {pid}, but {holder}; not written again until the holder changes"
        finding = self._audit.append_finding(
            "masked_write", subject=pid, rule=intent.rule, reason=reason, before=value, after=wr.readback
        )
        self._masked[pid] = MaskedPoint(
            point_id=pid,
            requested=value,
            held_value=wr.readback,
            holding_priority=prio,
            since=self._clock.now().isoformat(),
            finding_seq=finding.seq,
        )
        log.warning(
            "write_masked", value=value, readback=wr.readback, holding_priority=prio, rule=intent.rule
        )
        return ActuationOutcome(
            intent,
            "readback_mismatch",
            result,
            reason,
            wr.readback,
            rec.seq,
            finding.seq,
        )

    def _refuse(
        self, intent: WriteIntent, snap: Mapping[str, PointState], refusal: _Refusal
    ) -> ActuationOutcome:
        """Audit a refusal; an identical one (point, code, value, rule) only once per REFUSAL_REPEAT_S."""
        pid = intent.point_id
        key = (
            pid,
            refusal.code,
            repr(intent.value) + ("/relinquish" if intent.relinquish else ""),
            intent.rule,
        )
        now = self._clock.monotonic()
        seen = self._refused_at.get(key)
        if seen is not None and now - seen[0] < REFUSAL_REPEAT_S:
            self._refused_at[key] = (seen[0], seen[1] + 1)
            return ActuationOutcome(intent, "refused", refusal.code, refusal.reason)
        repeats = seen[1] if seen is not None else 0
        reason = f"{refusal.reason}; policy wanted: {intent.reason}"
        if repeats:
            reason += f" ({repeats} identical refusals since the last record)"
        rec = self._audit.append(
            AuditKind.REFUSED,
            subject=pid,
            before=_before(snap, pid),
            after=None if intent.relinquish else intent.value,
            rule=intent.rule,
            reason=reason,
            result=refusal.code,
        )
        self._refused_at[key] = (now, 0)
        self._log.warning(
            "write_refused", point=pid, code=refusal.code, reason=refusal.reason, rule=intent.rule
        )
        return ActuationOutcome(intent, "refused", refusal.code, refusal.reason, audit_seq=rec.seq)

    @staticmethod
    def _expire(dq: deque[float], now: float) -> None:
        while dq and dq[0] <= now - RATE_WINDOW_S:
            dq.popleft()


# --- value checks (pure) ------------------------------------------------------------------------


def _value_kind(point: PointBase) -> Literal["enum", "bool", "number"]:
    if point.states:
        return "enum"
    if getattr(point, "type", None) in _BOOL_TYPES or point.role in _BOOL_ROLES:
        return "bool"
    return "number"


def _check_value(pid: str, point: PointBase, value: object) -> _Refusal | None:
    kind = _value_kind(point)
    if kind == "bool":
        if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
            return None
        return _Refusal(FailureCode.NOT_BOOLEAN, f"{value!r} is not on/off (true/false, 1/0) for {pid}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _Refusal(FailureCode.NOT_A_NUMBER, f"{value!r} is not a number for {pid}")
    if not math.isfinite(value):
        return _Refusal(FailureCode.NOT_FINITE, f"{value!r} is not a finite value for {pid}")
    if kind == "enum":
        assert point.states is not None
        if value != int(value) or int(value) not in point.states:
            known = ", ".join(f"{k}={v}" for k, v in sorted(point.states.items()))
            return _Refusal(FailureCode.UNKNOWN_STATE, f"{value!r} is not a state of {pid} ({known})")
        return None
    if point.min is None or point.max is None:
        return _Refusal(
            FailureCode.NO_BOUNDS, f"{pid} has no min/max in site.yaml; numeric writes need both bounds"
        )
    if value < point.min:
        return _Refusal(FailureCode.BELOW_MIN, f"{value!r} is below min {point.min} of {pid}; not clamped")
    if value > point.max:
        return _Refusal(FailureCode.ABOVE_MAX, f"{value!r} is above max {point.max} of {pid}; not clamped")
    return None


def _normalise(point: PointBase, value: float | int | bool) -> Value:
    # An enumeration takes its raw integer: 2.0 from YAML means state 2 (checked integral above).
    if _value_kind(point) == "enum" and isinstance(value, float):
        return int(value)
    return value


def _describe(exc: BaseException) -> str:
    """An unexpected exception as the detail of ``internal_error``: its type, then its message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _before(snap: Mapping[str, PointState], pid: str) -> Value:
    state = snap.get(pid)
    return state.value if state is not None else None


def _same(a: Value, b: Value) -> bool:
    """Equal as device values: numbers within float32 precision, booleans as booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is not None and b is not None and bool(a) == bool(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)
    return a == b


def _show(value: Value, intent: WriteIntent) -> str:
    return "relinquish" if intent.relinquish else repr(value)

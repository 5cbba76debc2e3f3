"""The actuator: the last safety envelope, the write, the read-back, and the audit record of each.

Policies propose ``WriteIntent``s; nothing reaches a device except through ``Actuator.apply``, and
the checks here run last and have no switch to turn them off:

1. the point exists, its device has a driver, and site.yaml marks it ``writable`` (the allowlist);
2. the point's zone is not exempt (hospital wards, labs: ``is_exempt``);
3. the value fits the point: booleans for relays, a known raw state for enumerations, a finite
   number inside the point's ``min``/``max`` for everything else (a numeric point without both
   bounds is not written at all; ``check`` refuses such a site). Out of range is refused and audited,
   never clamped. A point with per-mode `limits` uses the range of its AC unit's current mode (the
   snapshot's good reading of the unit's ac_mode point), and the range common to every listed mode
   while that mode is unknown, not good, ambiguous or stale (older than ``MODE_STALE_INTERVALS`` poll
   intervals of its device: a unit switched from cooling to heating since must not get the cool range).
   The bounds hold for the value the device will actually hold: when the protocol's rounding to the
   register's step (``PointBase.quantize``) would put an in-range request outside them, the nearest
   value the register holds inside them is written instead (the audit record says so), or the write is
   refused when there is none;
4. at most ``max_writes_per_hour`` writes per point in any sliding hour. Past it the actuator records
   a ``tamper`` finding and pauses that point for ``tamper_pause_s`` (policy.yaml
   ``enforcement.tamper_pause_min``, 60 by default): a policy that has to write the same point again and
   again is fighting someone (a wall panel, another controller). After the pause the point gets a fresh
   budget and enforcement resumes; the finding stays open until the point complies, when the enforcer
   calls ``close_tamper`` and a ``tamper_closed`` finding record is audited.

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
at startup, so a restart does not reset the count, and open tamper findings (a ``tamper`` record with no
later ``tamper_closed``) stay open, their pause measured from the finding's time.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog

from drivers.base import MODE_LABELS, Driver, DriverError, FailureCode, PointBase, Value, WriteResult
from edge_agent.core.clock import Clock
from edge_agent.store.audit import AuditKind, AuditLog
from policies.types import PointState, WriteIntent

__all__ = [
    "MODE_STALE_INTERVALS",
    "RATE_WINDOW_S",
    "REFUSAL_REPEAT_S",
    "TAMPER_PAUSE_S",
    "ActuationOutcome",
    "Actuator",
    "MaskedPoint",
    "OpenTamper",
    "OutcomeStatus",
    "supports_relinquish",
]

RATE_WINDOW_S = 3600.0  # the sliding hour of the rate limit
TAMPER_PAUSE_S = 3600.0  # default pause of a point after a tamper finding (enforcement.tamper_pause_min)
REFUSAL_REPEAT_S = 3600.0  # an identical refusal is audited again only after this long (counted meanwhile)
# An ac_mode reading older than this many poll intervals of its device does not pick a per-mode envelope
# (stricter than the policies' 3: the envelope is the last check, and a poll may simply be late once).
MODE_STALE_INTERVALS = 2

OutcomeStatus = Literal["ok", "readback_mismatch", "masked", "error", "refused", "rate_limited"]


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
class OpenTamper:
    """A tamper finding not yet closed: the point is paused until ``opened_mono + pause``, then resumes;
    the finding closes when the point complies."""

    point_id: str
    rule: str
    opened: datetime  # wall clock of the finding
    opened_mono: float
    seq: int | None  # the audit record of the finding
    resumed: bool = False  # the pause is over and the point got a fresh write budget


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


@dataclass(frozen=True, slots=True)
class _Envelope:
    bounds: tuple[float, float] | None
    mode: str | None  # the unit's mode the bounds were taken for; None: unknown
    per_mode: bool  # the point has per-mode limits
    note: str | None = None  # why a mode reading did not count (too old)

    def describe(self) -> str:
        if not self.per_mode:
            return ""
        if self.mode:
            return f" in mode {self.mode}"
        why = f"{self.note}; " if self.note else ""
        return f" while the unit's mode is unknown ({why}common range)"


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
        intervals: Mapping[str, float] | None = None,
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
        self._tamper_open: dict[str, OpenTamper] = {}  # point -> its open tamper finding
        self.tamper_pause_s = TAMPER_PAUSE_S  # set from policy.yaml by the enforcer
        self._rate_suppressed: dict[str, int] = defaultdict(int)  # writes held back since that finding
        self._refused_at: dict[tuple[str, str, str, str], tuple[float, int]] = {}  # -> (audited at, repeats)
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._masked: dict[str, MaskedPoint] = {}  # points someone else holds (no retry until that changes)
        # Point with per-mode limits -> its unit's ac_mode point; rebuilt per apply() (the service
        # refills ``points`` in place on reload), and only when a point with limits is written.
        self._mode_point: dict[str, str] | None = None
        # Point id -> its device's poll interval in clock seconds (the enforcer sets it from the site):
        # how old an ac_mode reading may be and still pick the envelope. A point not listed is not aged.
        self.intervals: Mapping[str, float] = intervals if intervals is not None else {}

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
        self._mode_point = None
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
        since = now_wall - timedelta(seconds=RATE_WINDOW_S)
        tamper = self._restore_tamper(now_wall, now_mono)
        for rec in self._audit.records(since, kinds=[AuditKind.WRITE]):
            if rec.subject not in self._points:
                continue
            try:
                age = (now_wall - rec.time).total_seconds()
            except ValueError:  # a damaged time stamp: verify() reports it; do not crash the startup
                self._log.warning("rate_window_bad_ts", seq=rec.seq, ts=rec.ts)
                continue
            if age < -RATE_WINDOW_S:
                continue
            writes[rec.subject].append(now_mono - max(age, 0.0))
        self._writes = defaultdict(deque, {pid: deque(sorted(ts)) for pid, ts in writes.items()})
        self._tamper_open = tamper
        self._rate_suppressed = defaultdict(int)
        restored = sum(len(v) for v in writes.values())
        self._log.info(
            "rate_window_restored", writes=restored, points=len(writes), tamper_open=sorted(tamper)
        )
        return restored

    def _restore_tamper(self, now_wall: datetime, now_mono: float) -> dict[str, OpenTamper]:
        """Open tamper findings from the whole audit trail: the last ``tamper`` of a point without a later
        ``tamper_closed``. Its pause counts from the finding's time (a restart does not extend it)."""
        found: dict[str, OpenTamper] = {}
        for rec in self._audit.records(kinds=[AuditKind.FINDING]):
            if rec.subject not in self._points or rec.result not in ("tamper", "tamper_closed"):
                continue
            if rec.result == "tamper_closed":
                found.pop(rec.subject, None)
                continue
            try:
                opened = rec.time
                age = max((now_wall - opened).total_seconds(), 0.0)
            except ValueError:
                self._log.warning("rate_window_bad_ts", seq=rec.seq, ts=rec.ts)
                continue
            found[rec.subject] = OpenTamper(rec.subject, rec.rule, opened, now_mono - age, rec.seq)
        return found

    def open_tamper(self) -> dict[str, OpenTamper]:
        """Open tamper findings by point (a copy)."""
        return dict(self._tamper_open)

    def close_tamper(self, point_id: str, *, value: Value, reason: str) -> int | None:
        """The point complies: close its open tamper finding (audited); returns the record's seq."""
        t = self._tamper_open.pop(point_id, None)
        if t is None:
            return None
        held = self._rate_suppressed.pop(point_id, 0)
        rec = self._audit.append_finding(
            "tamper_closed",
            subject=point_id,
            rule=t.rule,
            reason=f"{reason}; tamper finding #{t.seq} of {t.opened.isoformat(timespec='seconds')} closed"
            + (f" ({held} writes held back while it was open)" if held else ""),
            after=value,
        )
        age = (self._clock.now() - t.opened).total_seconds()
        self._log.info("tamper_closed", point=point_id, finding_seq=t.seq, open_s=round(age))
        return rec.seq

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
        return _check_value(pid, point, intent.value, self._envelope(pid, point, snap))

    def _envelope(self, pid: str, point: PointBase, snap: Mapping[str, PointState]) -> _Envelope:
        """The point's [lo, hi] in its unit's current mode, and the mode it was taken for (None: unknown)."""
        mode: str | None = None
        if point.limits is None:
            return _Envelope(point.envelope(None), None, False)
        if self._mode_point is None:
            self._mode_point = _mode_points(self._points)
        mode_pid = self._mode_point.get(pid)
        state = snap.get(mode_pid) if mode_pid is not None else None
        note: str | None = None
        if state is not None and state.ok and state.quality == "good":
            interval = self.intervals.get(state.point_id)
            age = (self._clock.now() - state.ts).total_seconds()
            if interval is not None and age > MODE_STALE_INTERVALS * interval:
                polls = f"{MODE_STALE_INTERVALS} polls of {interval:g} s"
                note = f"{state.point_id} read {age:.0f} s ago, over {polls}"
            elif (entry := self._points.get(state.point_id)) is not None:  # a reload may have removed it
                mode = _mode_label(entry[1], state.value)
        return _Envelope(point.envelope(mode), mode, True, note)

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
            note = ""
            if not intent.relinquish and point.value_kind() == "number":
                assert isinstance(intent.value, int | float)  # checked by _check_value
                bounds = self._envelope(pid, point, snap).bounds
                assert bounds is not None  # checked by _check_value
                device_value = _to_device(pid, point, intent.value, bounds)
                if isinstance(device_value, _Refusal):
                    return self._refuse(intent, snap, device_value)
                value, note = device_value
            held = self._still_masked(intent, value, snap)
            if held is not None:
                return held
            limited = self._rate_limit(intent, snap)
            if limited is not None:
                return limited
            return await self._write(intent, driver, device_id, point, value, snap, note)

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
        open_ = self._tamper_open.get(pid)
        if open_ is not None and not open_.resumed:
            if now - open_.opened_mono < self.tamper_pause_s:
                self._rate_suppressed[pid] += 1
                left = open_.opened_mono + self.tamper_pause_s - now
                detail = (
                    f"{pid}: enforcement paused after tamper finding #{open_.seq} "
                    f"({left / 60:.0f} min left of the {self.tamper_pause_s / 60:g} min pause)"
                )
                return ActuationOutcome(intent, "rate_limited", FailureCode.RATE_LIMITED, detail)
            # The pause is over: a fresh budget, so the point is enforced again (the finding stays open
            # until the point complies).
            open_.resumed = True
            dq.clear()
            self._log.info("tamper_pause_ended", point=pid, finding_seq=open_.seq)
        self._expire(dq, now)
        if len(dq) < self._max:
            dq.append(now)
            return None
        detail = (
            f"{pid}: {len(dq)} writes in the last hour reached the limit of {self._max}; something keeps "
            f"changing it back (a wall panel, another controller?). Enforcement of the point pauses for "
            f"{self.tamper_pause_s / 60:g} min"
        )
        held = self._rate_suppressed.pop(pid, 0)
        rec = self._audit.append_finding(
            "tamper",
            subject=pid,
            rule=intent.rule,
            reason=detail + (f" ({held} writes held back before)" if held else ""),
            before=_before(snap, pid),
            after=intent.value,
        )
        self._tamper_open[pid] = OpenTamper(pid, intent.rule, self._clock.now(), now, rec.seq)
        self._log.warning(
            "tamper_pause_started", point=pid, writes=len(dq), limit=self._max, rule=intent.rule,
            pause_s=self.tamper_pause_s, finding_seq=rec.seq,
        )  # fmt: skip
        return ActuationOutcome(intent, "rate_limited", FailureCode.RATE_LIMITED, detail, finding_seq=rec.seq)

    async def _write(
        self,
        intent: WriteIntent,
        driver: Driver,
        device_id: str,
        point: PointBase,
        value: Value,
        snap: Mapping[str, PointState],
        note: str = "",
    ) -> ActuationOutcome:
        """``note`` says why ``value`` differs from the intent's (moved inward to what the register holds)."""
        pid = intent.point_id
        log = self._log.bind(device=device_id, point=pid)
        if note:
            intent = replace(intent, reason=f"{intent.reason} ({note})")
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


def _check_value(pid: str, point: PointBase, value: object, env: _Envelope) -> _Refusal | None:
    kind = point.value_kind()
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
    if env.bounds is None:
        if env.per_mode and point.min is not None and point.max is not None:
            return _Refusal(
                FailureCode.NO_BOUNDS,
                f"the unit's mode of {pid} is unknown and its per-mode limits share no range; not written",
            )
        return _Refusal(
            FailureCode.NO_BOUNDS, f"{pid} has no min/max in site.yaml; numeric writes need both bounds"
        )
    lo, hi = env.bounds
    where = env.describe()
    if value < lo:
        return _Refusal(FailureCode.BELOW_MIN, f"{value!r} is below min {lo} of {pid}{where}; not clamped")
    if value > hi:
        return _Refusal(FailureCode.ABOVE_MAX, f"{value!r} is above max {hi} of {pid}{where}; not clamped")
    return None


def _mode_points(points: Mapping[str, tuple[str, PointBase]]) -> dict[str, str]:
    """Each point with per-mode limits -> the ac_mode point of its AC unit (same device, `ac_unit` and
    zone); left out when the unit has none or several (its mode is then unknown)."""
    modes: dict[tuple[str, str | None, str | None], list[str]] = defaultdict(list)
    for pid, (device, p) in points.items():
        if p.role == "ac_mode":
            modes[(device, p.ac_unit, p.zone)].append(pid)
    out: dict[str, str] = {}
    for pid, (device, p) in points.items():
        if p.limits is not None:
            found = modes.get((device, p.ac_unit, p.zone), [])
            if len(found) == 1:
                out[pid] = found[0]
    return out


def _mode_label(mode_point: PointBase, value: Value) -> str | None:
    """The canonical mode (cool, heat...) a reading of an ac_mode point shows; None when it shows none."""
    if isinstance(value, str):
        label: str | None = value.strip().lower()
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        if value != int(value) or not mode_point.states:
            return None
        label = mode_point.states.get(int(value))
    else:
        return None
    return label if label in MODE_LABELS else None


def _to_device(
    pid: str, point: PointBase, value: float, bounds: tuple[float, float]
) -> tuple[Value, str] | _Refusal:
    """What to send so that the value the device holds (after the protocol rounds it to its register's
    step, ``point.quantize``) lies inside [min, max]: ``value`` itself when it does, else the nearest value
    the register can hold inside the bounds ("moved inward", with a note for the audit record), else a
    refusal. ``value`` is already inside ``bounds`` (the point's [min, max] or its mode's, checked by
    ``_check_value``).

    ``quantize`` is monotonic (rounding to steps, float32) and the values a register can hold form one
    interval, so bisection finds the boundary whatever the scale's sign, offset or type."""
    lo, hi = bounds
    q = point.quantize
    try:
        held = q(value)
    except ValueError as exc:
        return _Refusal(FailureCode.RANGE, f"{value!r} does not fit the register of {pid}: {exc}")
    if lo <= held <= hi:
        return value, ""
    up = held < lo  # rounding went below min: look upwards, towards max (else downwards, towards min)

    def past(x: float) -> bool:  # on the far side of the bound we are moving off (or not representable)
        try:
            h = q(x)
        except ValueError:
            return True
        return h >= lo if up else h <= hi

    a, b = (value, hi) if up else (value, lo)
    target: float | None = None
    if past(b):
        for _ in range(2100):  # halving a float interval ends well within this
            m = a + (b - a) / 2
            if m in (a, b):
                break
            if past(m):
                b = m
            else:
                a = m
        target = _held_inside(q, b, lo, hi)
    side = f"below min {lo}" if up else f"above max {hi}"
    if target is None:
        return _Refusal(
            FailureCode.BELOW_MIN if up else FailureCode.ABOVE_MAX,
            f"{value!r} becomes {held!r} on the device ({side} after rounding to the register's step) and "
            f"no value the register holds lies inside {lo}..{hi} of {pid}; not written",
        )
    return target, (
        f"requested {value!r} would become {held!r} on the device, {side}; moved inward to {target!r}"
    )


def _held_inside(q: Callable[[float], float], x: float, lo: float, hi: float) -> float | None:
    """The value to send for the boundary point ``x``: what the register holds for it (so the audit shows
    the device's own value), provided writing that gives itself back inside [lo, hi]; else ``x``."""
    for candidate in _candidates(q, x):
        try:
            if lo <= q(candidate) <= hi:
                return candidate
        except ValueError:
            continue
    return None


def _candidates(q: Callable[[float], float], x: float) -> list[float]:
    try:
        return [q(x), x]
    except ValueError:
        return [x]


def _normalise(point: PointBase, value: float | int | bool) -> Value:
    # An enumeration takes its raw integer: 2.0 from YAML means state 2 (checked integral above).
    if point.value_kind() == "enum" and isinstance(value, float):
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

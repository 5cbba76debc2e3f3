"""Enforcement loop: snapshot -> policies.evaluate -> actuator, on every relevant change and on a tick.

Policies are pure and stateless, so the same finding comes back every cycle while a condition lasts;
this loop audits a finding when it appears (or its reason changes), not on every evaluation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from drivers.base import Quality, Reading
from edge_agent.config.load import LoadedConfig
from edge_agent.core.clock import Clock
from edge_agent.core.logs import get_logger
from edge_agent.core.snapshot import Snapshot
from edge_agent.enforce.actuator import ActuationOutcome, Actuator
from edge_agent.store.audit import AuditLog
from policies.calendar import Calendar, calendar_gaps
from policies.evaluate import POLICY_ROLES, evaluate
from policies.params import PointFacts, PolicyParams, ZoneFacts
from policies.types import Finding, PointState, WriteIntent

__all__ = ["ENFORCED_ROLES", "Enforcer", "build_calendar", "build_params", "exemption_check"]

# Roles whose change can make a policy act; meters changing every poll must not trigger evaluations,
# and the snapshot the policies get holds only these points.
ENFORCED_ROLES = POLICY_ROLES
# Findings the actuator audits itself (it knows the write that caused them).
_ACTUATOR_FINDINGS = frozenset({"tamper", "masked_write"})


def build_params(cfg: LoadedConfig) -> PolicyParams:
    site = cfg.site
    return PolicyParams(
        policy=cfg.policy,
        timezone=site.timezone,
        latitude=site.location.lat,
        longitude=site.location.lon,
        zones={z.id: ZoneFacts(id=z.id, kind=z.kind, perimeter=z.perimeter, name=z.name) for z in site.zones},
        # Policies learn which points a unit has before their first reading (a unit missing one is not
        # acted on) and each device's poll interval (a reading older than 3 intervals is stale).
        points={
            p.id: PointFacts(
                id=p.id,
                role=p.role,
                zone=cfg.point_zone(p.id),
                device_id=d.id,
                ac_unit=p.ac_unit,
                interval_s=d.interval_s,
            )
            for d, p in cfg.points()
            if p.role in ENFORCED_ROLES
        },
    )


def build_calendar(cfg: LoadedConfig, year: int) -> Calendar:
    return Calendar.from_policy(cfg.policy.calendar, years=range(year - 1, year + 2))


def exemption_check(cfg: LoadedConfig, clock: Clock) -> Any:
    """The actuator's envelope asks this on every write, so an expiry takes effect at midnight (site time)."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(cfg.site.timezone)
    exemptions = {e.zone: e for e in cfg.policy.hvac.exemptions}

    def is_exempt(zone: str | None) -> bool:
        e = exemptions.get(zone) if zone else None
        return e is not None and (e.until is None or clock.now().astimezone(tz).date() <= e.until)

    return is_exempt


def _clock_scaled(params: PolicyParams, clock: Clock) -> PolicyParams:
    """Poll loops sleep in real seconds; readings carry the clock's time. Under a clock that runs faster
    (the demo's ScaledClock) a poll interval spans `speed` times as many clock seconds, and the policies'
    staleness limit (3 poll intervals) must be counted in those."""
    speed = float(getattr(clock, "speed", 1.0))
    if speed == 1.0:
        return params
    points = {
        pid: dataclasses.replace(f, interval_s=None if f.interval_s is None else f.interval_s * speed)
        for pid, f in params.points.items()
    }
    return dataclasses.replace(params, points=points)


class Enforcer:
    def __init__(
        self,
        *,
        snapshot: Snapshot,
        actuator: Actuator,
        audit: AuditLog,
        params: PolicyParams,
        calendar: Calendar,
        clock: Clock,
        tick_s: float = 10.0,
    ) -> None:
        self.snapshot = snapshot
        self.actuator = actuator
        self.audit = audit
        self.clock = clock
        self.params = _clock_scaled(params, clock)
        self.calendar = calendar
        self.tick_s = tick_s
        self.log = get_logger("edge_agent.enforce")
        self._wake = asyncio.Event()
        self._writing: set[str] = set()  # points with a write in flight
        self._active: dict[tuple[str, str, str], str] = {}  # (kind, subject, rule) -> reason
        self.counts: Counter[str] = Counter()
        self.last_enforcement: dict[str, Any] | None = None
        self.last_cycle: datetime | None = None
        self.cycles = 0
        self._since: dict[tuple[str, str, str], datetime] = {}  # active finding -> when it opened
        self._set_tamper_pause()

    def _set_tamper_pause(self) -> None:
        self.actuator.tamper_pause_s = self.params.policy.enforcement.tamper_pause_min * 60.0
        # the poll intervals (in clock seconds) by which the actuator ages a unit's mode reading
        self.actuator.intervals = {
            pid: f.interval_s for pid, f in self.params.points.items() if f.interval_s is not None
        }

    def reconfigure(self, *, params: PolicyParams, calendar: Calendar) -> None:
        self.params, self.calendar = _clock_scaled(params, self.clock), calendar
        self._set_tamper_pause()
        self._wake.set()

    def notify(self, device_id: str, readings: Sequence[Reading], changed: Sequence[Reading]) -> None:
        """Readings listener: wake the loop when an enforced point changed (from any source)."""
        enforced = self.snapshot.ids_with_roles(ENFORCED_ROLES)
        if enforced and not enforced.isdisjoint(r.point_id for r in changed):
            self._wake.set()

    async def run(self, *, beat: Any = None) -> None:
        """Evaluate on every wake-up or tick. Writes run as tasks of this loop's own TaskGroup, so one
        device's read-back delay never holds up a correction on another, and a write task that fails
        in a way _apply does not expect fails the loop (and the service) instead of vanishing."""
        async with asyncio.TaskGroup() as writes:
            while True:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as
                # the event is set, and this loop would then outlive the shutdown.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.tick_s):
                        await self._wake.wait()
                self._wake.clear()
                try:
                    intents, snap, now = self._evaluate()
                except Exception:  # a policy bug: logged each cycle, and polling and the uplink go on
                    self.log.exception("enforce_cycle_failed")
                    continue
                if intents:
                    names = ",".join(sorted({i.point_id for i in intents}))
                    writes.create_task(self._apply(intents, snap, now), name=f"enforce:write:{names}"[:120])
                if beat is not None:
                    beat()

    async def cycle(self) -> list[ActuationOutcome]:
        """One evaluation and its writes, awaited (tests and tools drive the loop this way)."""
        intents, snap, now = self._evaluate()
        return await self._apply(intents, snap, now) if intents else []

    def _evaluate(self) -> tuple[list[WriteIntent], Mapping[str, PointState], datetime]:
        now = self.clock.now()
        snap = self.snapshot.for_policy(ENFORCED_ROLES)
        decision = evaluate(snap, now, self.calendar, self.params)
        self.cycles += 1
        self.last_cycle = now
        self._record_findings(decision.findings, now)
        self._close_complied(decision.intents, snap)
        # A point whose write is still waiting for its read-back is not written again meanwhile.
        intents = [i for i in decision.intents if i.point_id not in self._writing]
        self._writing.update(i.point_id for i in intents)
        return intents, snap, now

    async def _apply(
        self, intents: list[WriteIntent], snap: Mapping[str, PointState], now: datetime
    ) -> list[ActuationOutcome]:
        try:
            outcomes = await self.actuator.apply(intents, snap)
        except Exception:
            self.log.exception("enforce_writes_failed")
            return []
        finally:
            self._writing.difference_update(i.point_id for i in intents)
        for o in outcomes:
            self.counts[o.status] += 1
            if o.ok or o.status == "readback_mismatch":
                # The read-back is what the device holds now: put it in the snapshot so the next
                # evaluation does not write again before the next poll.
                self.snapshot.update([Reading(o.intent.point_id, o.readback, self.clock.now(), Quality.GOOD)])
            if o.finding_seq is not None:
                self.counts[f"finding:{'tamper' if o.status == 'rate_limited' else 'masked_write'}"] += 1
            if o.reached_device:
                before = snap[o.intent.point_id].value if o.intent.point_id in snap else None
                self.last_enforcement = {
                    "ts": now.isoformat(), "point": o.intent.point_id, "before": before,
                    "after": o.readback, "rule": o.intent.rule, "result": o.status,
                }  # fmt: skip
                self.log.info(
                    "enforced", point=o.intent.point_id, before=before, after=o.readback,
                    rule=o.intent.rule, result=o.status, reason=o.intent.reason,
                )  # fmt: skip
        return outcomes

    def _close_complied(self, intents: Sequence[WriteIntent], snap: Mapping[str, PointState]) -> None:
        """Close the open tamper finding of each point the policy no longer wants to write, judged on a
        good reading of the point itself (a point with bad data has not been shown to comply)."""
        wanted = {i.point_id for i in intents}
        for pid in self.actuator.open_tamper():
            p = snap.get(pid)
            if pid in wanted or pid in self._writing or p is None or not p.ok or p.quality != "good":
                continue
            self.actuator.close_tamper(pid, value=p.value, reason=f"{pid} complies now (value {p.value!r})")
            self.counts["finding_closed:tamper"] += 1

    def _record_findings(self, findings: Sequence[Finding], now: datetime | None = None) -> None:
        seen: set[tuple[str, str, str]] = set()
        for f in findings:
            key: tuple[str, str, str] = (str(f.kind), f.subject, f.rule)
            seen.add(key)
            if f.kind in _ACTUATOR_FINDINGS or self._active.get(key) == f.reason:
                continue
            if key not in self._active and now is not None:
                self._since[key] = now
            self._active[key] = f.reason
            self.counts[f"finding:{f.kind}"] += 1
            self.audit.append_finding(f.kind, subject=f.subject, rule=f.rule, reason=f.reason)
            if f.kind != "exempt":
                self.log.info("finding", kind=f.kind, subject=f.subject, rule=f.rule, reason=f.reason)
        for key in list(self._active):
            if key not in seen:
                del self._active[key]  # condition over: audit it again if it comes back
                self._since.pop(key, None)

    def open_findings(self) -> list[dict[str, Any]]:
        """Findings open now with their age: the policy's (while the condition lasts) and the actuator's
        tamper findings (until the point complies)."""
        now = self.clock.now()
        out: list[dict[str, Any]] = []
        for (kind, subject, rule), reason in sorted(self._active.items()):
            since = self._since.get((kind, subject, rule))
            out.append({
                "kind": kind, "subject": subject, "rule": rule, "reason": reason,
                "since": since.isoformat() if since else None,
                "age_s": round((now - since).total_seconds()) if since else None,
            })  # fmt: skip
        for pid, t in sorted(self.actuator.open_tamper().items()):
            out.append({
                "kind": "tamper", "subject": pid, "rule": t.rule, "reason": f"audit #{t.seq}",
                "since": t.opened.isoformat(), "age_s": round((now - t.opened).total_seconds()),
            })  # fmt: skip
        return out

    def _last(self) -> dict[str, Any] | None:
        """The last write that reached a device, and the point's state now (it may have been changed
        back since: the write's own result is history)."""
        if self.last_enforcement is None:
            return None
        pid = self.last_enforcement["point"]
        r = self.snapshot.reading(pid) if pid in self.snapshot else None
        current = None if r is None else {"value": r.value, "quality": str(r.quality), "ts": r.ts.isoformat()}
        tamper = self.actuator.open_tamper().get(pid)
        return {**self.last_enforcement, "current": current, "open_tamper_since": (
            tamper.opened.isoformat() if tamper else None)}  # fmt: skip

    def calendar_warnings(self) -> list[str]:
        """This and next year (site time) when their national calendar lacks make-up working days."""
        year = self.clock.now().astimezone(self.params.tz).year
        return calendar_gaps(self.calendar, (year, year + 1))

    def as_dict(self) -> dict[str, Any]:
        opened = self.open_findings()
        return {
            "cycles": self.cycles,
            "writes_ok": self.counts["ok"],
            "readback_mismatch": self.counts["readback_mismatch"],
            "refused": self.counts["refused"],
            "rate_limited": self.counts["rate_limited"],
            "masked": self.counts["masked"],  # intents held back: someone else holds the point
            "masked_points": self.actuator.masked_points(self.snapshot.for_policy(ENFORCED_ROLES)),
            "errors": self.counts["error"],
            "findings": {k.split(":", 1)[1]: v for k, v in self.counts.items() if k.startswith("finding:")},
            "active_findings": len(opened),
            "findings_closed": {
                k.split(":", 1)[1]: v for k, v in self.counts.items() if k.startswith("finding_closed:")
            },
            "open_findings": opened,
            "last": self._last(),
            "calendar_warnings": self.calendar_warnings(),
        }

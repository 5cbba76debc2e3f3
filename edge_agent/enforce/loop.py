"""Enforcement loop: snapshot -> policies.evaluate -> actuator, on every relevant change and on a tick.

Policies are pure and stateless, so the same finding comes back every cycle while a condition lasts;
this loop audits a finding when it appears (or its reason changes), not on every evaluation.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from policies.calendar import Calendar
from policies.evaluate import evaluate
from policies.params import PolicyParams, ZoneFacts
from policies.types import Finding, PointState, WriteIntent

__all__ = ["ENFORCED_ROLES", "Enforcer", "build_calendar", "build_params", "exemption_check"]

# Roles whose change can make a policy act; meters changing every poll must not trigger evaluations.
ENFORCED_ROLES = frozenset({
    "setpoint", "cooling_setpoint", "heating_setpoint", "ac_mode", "ac_power", "light_relay",
    "window_contact", "illuminance",
})  # fmt: skip
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
        self.params = params
        self.calendar = calendar
        self.clock = clock
        self.tick_s = tick_s
        self.log = get_logger("edge_agent.enforce")
        self._wake = asyncio.Event()
        self._writing: set[str] = set()  # points with a write in flight
        self._active: dict[tuple[str, str, str], str] = {}  # (kind, subject, rule) -> reason
        self.counts: Counter[str] = Counter()
        self.last_enforcement: dict[str, Any] | None = None
        self.last_cycle: datetime | None = None
        self.cycles = 0

    def reconfigure(self, *, params: PolicyParams, calendar: Calendar) -> None:
        self.params, self.calendar = params, calendar
        self._wake.set()

    def notify(self, device_id: str, readings: Sequence[Reading], changed: Sequence[Reading]) -> None:
        """Readings listener: wake the loop when an enforced point changed (from any source)."""
        for r in changed:
            if r.point_id in self.snapshot and self.snapshot.entry(r.point_id).point.role in ENFORCED_ROLES:
                self._wake.set()
                return

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
        snap = self.snapshot.for_policy()
        decision = evaluate(snap, now, self.calendar, self.params)
        self.cycles += 1
        self.last_cycle = now
        self._record_findings(decision.findings)
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

    def _record_findings(self, findings: Sequence[Finding]) -> None:
        seen: set[tuple[str, str, str]] = set()
        for f in findings:
            key: tuple[str, str, str] = (str(f.kind), f.subject, f.rule)
            seen.add(key)
            if f.kind in _ACTUATOR_FINDINGS or self._active.get(key) == f.reason:
                continue
            self._active[key] = f.reason
            self.counts[f"finding:{f.kind}"] += 1
            self.audit.append_finding(f.kind, subject=f.subject, rule=f.rule, reason=f.reason)
            if f.kind != "exempt":
                self.log.info("finding", kind=f.kind, subject=f.subject, rule=f.rule, reason=f.reason)
        for key in list(self._active):
            if key not in seen:
                del self._active[key]  # condition over: audit it again if it comes back

    def as_dict(self) -> dict[str, Any]:
        return {
            "cycles": self.cycles,
            "writes_ok": self.counts["ok"],
            "readback_mismatch": self.counts["readback_mismatch"],
            "refused": self.counts["refused"],
            "rate_limited": self.counts["rate_limited"],
            "masked": self.counts["masked"],  # intents held back: someone else holds the point
            "masked_points": self.actuator.masked_points(self.snapshot.for_policy()),
            "errors": self.counts["error"],
            "findings": {k.split(":", 1)[1]: v for k, v in self.counts.items() if k.startswith("finding:")},
            "active_findings": len(self._active),
            "last": self.last_enforcement,
        }

"""evaluate(): the pure policy entry point, and explain() for `edge-agent policy explain`.

Deterministic and total: bad readings, missing points and unknown mode labels become findings; a bug
in one rule family becomes an `info` finding and drops only that family's intents.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from policies._common import Context, Out, within_range
from policies.calendar import Calendar
from policies.enforcement import rate_limited, tamper_finding
from policies.explain import ZoneExplanation
from policies.hvac import HVAC_ROLES, evaluate_hvac
from policies.lighting import evaluate_lighting
from policies.params import PolicyParams, ZoneFacts
from policies.types import Decision, Finding, Snapshot, WriteIntent

__all__ = [
    "POLICY_ROLES",
    "Calendar",
    "PolicyParams",
    "ZoneExplanation",
    "ZoneFacts",
    "evaluate",
    "explain",
    "rate_limited",
    "tamper_finding",
]

# The roles evaluate() reads. A point with any other role decides nothing, so a caller may leave it out of
# the snapshot (10,000 meter points need not become PointStates every cycle: issue 18).
POLICY_ROLES = frozenset({*HVAC_ROLES, "window_contact", "illuminance", "light_relay"})

_Rule = Callable[[Snapshot, Context, Out], None]
_RULES: tuple[tuple[str, _Rule], ...] = (("hvac", evaluate_hvac), ("lighting", evaluate_lighting))


def _context(now: datetime, calendar: Calendar, params: PolicyParams, out: Out) -> Context:
    if now.tzinfo is None:
        out.find("info", "now", "policy.clock", "evaluate() got a naive `now`; taken as UTC", None)
        now = now.replace(tzinfo=UTC)
    tz = params.tz
    local = now.astimezone(tz)
    seasons = params.policy.seasons
    season = seasons.season_of(local.date())
    rng = seasons.summer if season == "summer" else seasons.winter if season == "winter" else None
    return Context(
        now=now,
        local=local,
        tz=tz,
        day=calendar.day_info(local.date()),
        season=season,
        season_range=rng,
        calendar=calendar,
        params=params,
    )


def _safety(snapshot: Snapshot, out: Out) -> None:
    """Last line: one intent per point, only writable points, only inside the point's min/max."""
    kept: list[WriteIntent] = []
    seen: set[str] = set()
    for it in out.intents:
        p = snapshot.get(it.point_id)
        problem = None
        if p is None:
            problem = "unknown point"
        elif not p.writable:
            problem = "point not writable"
        elif not within_range(p, it.value):
            problem = f"value {it.value!r} outside {p.min}..{p.max}"
        elif it.point_id in seen:
            problem = "second intent for the same point"
        if problem is not None:
            out.find(
                "info",
                it.point_id,
                "policy.internal_error",
                f"intent dropped by the safety pass: {problem}",
                it.zone,
            )
            continue
        seen.add(it.point_id)
        kept.append(it)
    out.intents = kept


def _run(snapshot: Snapshot, now: datetime, calendar: Calendar, params: PolicyParams) -> Out:
    out = Out()
    ctx = _context(now, calendar, params, out)
    for name, rule in _RULES:
        mark = len(out.intents)
        try:
            rule(snapshot, ctx, out)
        except Exception as exc:  # totality: one broken rule family must not stop the others
            del out.intents[mark:]
            out.findings.append(
                Finding(
                    kind="info",
                    subject=name,
                    rule="policy.internal_error",
                    reason=f"{name} rules failed ({type(exc).__name__}: {exc}); no {name} intents this cycle",
                )
            )
    _safety(snapshot, out)
    return out


def evaluate(snapshot: Snapshot, now: datetime, calendar: Calendar, params: PolicyParams) -> Decision:
    """Intended writes, findings and human explanations for this snapshot at `now`. Pure."""
    out = _run(snapshot, now, calendar, params)
    return Decision(
        intents=tuple(out.intents),
        findings=tuple(out.findings),
        explanations=tuple(line.text for line in out.lines),
    )


def explain(
    snapshot: Snapshot,
    now: datetime,
    calendar: Calendar,
    params: PolicyParams,
    zone: str | None = None,
) -> list[ZoneExplanation]:
    """Structured explanations (zone, rule, decision, why) for every rule and point; one zone if given."""
    out = _run(snapshot, now, calendar, params)
    return [line for line in out.lines if zone is None or line.zone == zone]

"""Shared pieces of the rules: the context of one evaluation, value decoding, the output collector."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import Any, Literal

from policies.calendar import Calendar, DayInfo
from policies.explain import ExplainDecision, ZoneExplanation
from policies.model import Exemption, MonthDayRange, Policy
from policies.params import STALE_INTERVALS, PolicyParams
from policies.types import Finding, FindingKind, PointState, WriteIntent

__all__ = [
    "MODE_LABELS",
    "Context",
    "Out",
    "data_problem",
    "decode_mode",
    "decode_switch",
    "fmt",
    "number",
    "off_value",
    "raw_for_label",
    "report_bad_data",
    "within_range",
]

MODE_LABELS = frozenset({"off", "cool", "heat", "fan", "auto", "dry"})
# The poll interval assumed for persistence when site.yaml's is not known (policies built directly).
_DEFAULT_INTERVAL_S = 60.0
_ON = frozenset({"on", "true", "open", "1", "yes", "开"})
_OFF = frozenset({"off", "false", "closed", "close", "0", "no", "关"})

Season = Literal["summer", "winter", "transition"]


@dataclass(frozen=True, slots=True)
class Context:
    """Everything one evaluation knows about `now`, computed once."""

    now: datetime  # aware
    local: datetime  # now in the site's timezone
    tz: tzinfo
    day: DayInfo
    season: Season
    season_range: MonthDayRange | None
    calendar: Calendar
    params: PolicyParams
    # Per-evaluation memo (schedule state, last sweep): same inputs, same answer, computed once.
    memo: dict[object, Any] = field(default_factory=dict, compare=False)

    @property
    def policy(self) -> Policy:
        return self.params.policy

    @property
    def today(self) -> date:
        return self.local.date()

    def season_text(self) -> str:
        if self.season_range is None:
            return "transition season"
        return f"{self.season} ({self.season_range})"

    def why(self) -> dict[str, Any]:
        return {
            "season": self.season,
            "season_range": None if self.season_range is None else str(self.season_range),
            "local_time": self.local.isoformat(timespec="minutes"),
            "day_kind": self.day.kind,
            "day_name": self.day.name,
            "day_source": self.day.source,
        }

    def exemption(self, zone: str | None) -> tuple[Exemption | None, bool]:
        """(the zone's exemption, whether it applies today)."""
        if zone is None:
            return None, False
        for e in self.policy.hvac.exemptions:
            if e.zone == zone:
                return e, e.until is None or self.today <= e.until
        return None, False


@dataclass(slots=True)
class Out:
    intents: list[WriteIntent] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    lines: list[ZoneExplanation] = field(default_factory=list)

    def find(self, kind: FindingKind, subject: str, rule: str, reason: str, zone: str | None) -> None:
        self.findings.append(Finding(kind=kind, subject=subject, rule=rule, reason=reason, zone=zone))

    def line(
        self,
        zone: str | None,
        area: str,
        rule: str,
        decision: ExplainDecision,
        text: str,
        *,
        point: str | None = None,
        why: dict[str, Any],
    ) -> None:
        self.lines.append(
            ZoneExplanation(
                zone=zone,
                rule=rule,
                decision=decision,
                point=point,
                text=f"{zone or '-'} {area}: {text}",
                why=why,
            )
        )


def fmt(v: float) -> str:
    return f"{v:.1f}"


def number(v: object) -> float | None:
    """A finite float from a reading, or None (bool, text, NaN and inf are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _label(p: PointState) -> str | None:
    v = p.value
    if isinstance(v, str):
        return v.strip().lower()
    if (
        p.states
        and not isinstance(v, bool)
        and isinstance(v, int | float)
        and math.isfinite(v)
        and v == int(v)
    ):
        lab = p.states.get(int(v))
        return None if lab is None else lab.strip().lower()
    return None


def decode_mode(p: PointState) -> str | None:
    """The ac_mode label (off/cool/heat/fan/auto/dry), or None when it cannot be read."""
    lab = _label(p)
    return lab if lab in MODE_LABELS else None


def decode_switch(p: PointState) -> bool | None:
    """On/open = True, off/closed = False, None when unreadable."""
    v = p.value
    if isinstance(v, bool):
        return v
    lab = _label(p)
    if lab is None and p.states and not isinstance(v, str):
        return None  # a raw value the point's state table does not know
    if lab is not None:
        if lab in _ON:
            return True
        if lab in _OFF:
            return False
        return None
    n = number(v)
    if n is None:
        return None
    return n != 0


def raw_for_label(p: PointState, label: str) -> int | None:
    if not p.states:
        return None
    for raw, lab in sorted(p.states.items()):
        if lab.strip().lower() == label:
            return raw
    return None


def off_value(p: PointState) -> float | int | bool | None:
    """The value that switches a relay/power point off, in the point's own representation.

    None when the point has a state table without an 'off' label: guessing 0 could mean anything."""
    if p.states:
        return raw_for_label(p, "off")
    if isinstance(p.value, bool):
        return False
    return 0


def within_range(p: PointState, v: float | int | bool) -> bool:
    f = float(v)
    if p.min is not None and f < p.min:
        return False
    return not (p.max is not None and f > p.max)


def data_problem(p: PointState, ctx: Context) -> tuple[str, str] | None:
    """(a stable short label, a sentence) saying why this reading must not decide anything; None when
    it is good, in range and fresh.

    Bad, uncertain, a device's "no value" sentinel, not a finite number, outside the point's min..max,
    or older than 3 poll intervals of its device."""
    code = f" ({p.code})" if p.code else ""
    if p.code == "no_value":
        return "no_value", "the device reports no value (no_value)"
    if not p.ok or p.quality == "bad":
        return f"bad{code}", f"latest reading is bad{code}"
    if p.quality != "good":
        return f"{p.quality}{code}", f"latest reading is {p.quality}{code}"
    v = p.value
    if isinstance(v, float) and not math.isfinite(v):
        return "not_finite", f"value {v!r} is not a finite number"
    n = number(v)
    if n is not None and not within_range(p, n):
        return "out_of_range", f"value {n:g} is outside the point's range {p.min}..{p.max}"
    facts = ctx.params.points.get(p.point_id)
    if facts is not None and facts.interval_s:
        age = (ctx.now - p.ts).total_seconds()
        if age > STALE_INTERVALS * facts.interval_s:
            return "stale", (
                f"latest reading is {age:.0f} s old (stale: more than {STALE_INTERVALS} polls of "
                f"{facts.interval_s:g} s)"
            )
    return None


def report_bad_data(p: PointState, problem: tuple[str, str], area: str, ctx: Context, out: Out) -> None:
    """One `explain` line for a reading that decides nothing; a data_quality finding once it persists
    (not good for 3 poll intervals). The finding's reason is stable while the problem lasts."""
    label, text = problem
    out.line(
        p.zone,
        area,
        f"{area}.data_quality",
        "skip",
        f"{p.point_id} ({p.role}): {text}; not acted on",
        point=p.point_id,
        why={**ctx.why(), "problem": label, "quality": p.quality, "code": p.code},
    )
    facts = ctx.params.points.get(p.point_id)
    interval = facts.interval_s if facts is not None and facts.interval_s else _DEFAULT_INTERVAL_S
    if (ctx.now - min(p.since, p.ts)).total_seconds() >= STALE_INTERVALS * interval:
        out.find(
            "data_quality",
            p.point_id,
            f"{area}.data_quality",
            f"{p.role} reading not good ({label}) for {STALE_INTERVALS}+ polls: nothing acts on it",
            p.zone,
        )

"""Structured explanations: one per zone, rule and point, for `edge-agent policy explain` (JSON or text)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ExplainDecision", "ZoneExplanation"]

# write: an intent was produced; ok: compliant, nothing to do; exempt: left alone by an exemption;
# skip: the rule does not apply now (season, mode, schedule, override window); report: a finding only
ExplainDecision = Literal["write", "ok", "exempt", "skip", "report"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneExplanation:
    zone: str | None
    rule: str  # "hvac.summer_min_cooling", "lighting.after_hours_sweep", ...
    decision: ExplainDecision
    text: str  # the human line, as in Decision.explanations
    point: str | None = None
    why: Mapping[str, Any] = field(default_factory=dict)  # season, day_kind, schedule, exemption, deadband...

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (dates and times already strings)."""
        return {
            "zone": self.zone,
            "rule": self.rule,
            "decision": self.decision,
            "point": self.point,
            "text": self.text,
            "why": dict(self.why),
        }

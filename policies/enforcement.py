"""Write-rate limit: past N writes to one point in an hour, stop writing and report tampering.

The actuator (edge_agent) keeps the write times and asks here; the count itself is policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from policies.model import EnforcementPolicy, Policy
from policies.params import PolicyParams
from policies.types import Finding

__all__ = ["RATE_WINDOW", "rate_limited", "tamper_finding", "writes_in_window"]

RATE_WINDOW = timedelta(hours=1)


def _enforcement(params: PolicyParams | Policy | EnforcementPolicy) -> EnforcementPolicy:
    if isinstance(params, PolicyParams):
        return params.policy.enforcement
    if isinstance(params, Policy):
        return params.enforcement
    return params


def writes_in_window(write_times: Sequence[datetime], now: datetime) -> int:
    """Writes in the hour up to `now`. Writes stamped after `now` (a wall clock stepped back) count too:
    a clock step must not reset the limit."""
    start = now - RATE_WINDOW
    return sum(1 for t in write_times if t > start)


def rate_limited(
    write_times: Sequence[datetime], now: datetime, params: PolicyParams | Policy | EnforcementPolicy
) -> bool:
    """True when one more write to the point would exceed max_writes_per_point_per_hour."""
    return writes_in_window(write_times, now) >= _enforcement(params).max_writes_per_point_per_hour


def tamper_finding(
    point_id: str,
    *,
    zone: str | None,
    write_times: Sequence[datetime],
    now: datetime,
    params: PolicyParams | Policy | EnforcementPolicy,
    rule: str = "enforcement.rate_limit",
) -> Finding:
    """The finding the actuator raises instead of writing a rate-limited point."""
    limit = _enforcement(params).max_writes_per_point_per_hour
    n = writes_in_window(write_times, now)
    return Finding(
        kind="tamper",
        subject=point_id,
        rule=rule,
        reason=f"{point_id} was written {n} times in the last hour (limit {limit}) and keeps changing back: "
        "someone or another controller overrides it; the agent pauses writing it for "
        f"{_enforcement(params).tamper_pause_min} min, then enforces it again",
        zone=zone,
    )

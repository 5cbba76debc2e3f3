"""What evaluate() needs besides the snapshot: the policy plus a few site facts the shell copies in."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from types import MappingProxyType
from zoneinfo import ZoneInfo

from policies.model import Policy

__all__ = ["STALE_INTERVALS", "PointFacts", "PolicyParams", "ZoneFacts"]

# A reading older than this many poll intervals of its device is stale: it decides nothing.
STALE_INTERVALS = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneFacts:
    """One zone of site.yaml, as policies see it."""

    id: str
    kind: str | None = None  # "office", "data_centre", "corridor", "outdoor", ...
    perimeter: bool = False  # has windows to the outside: the daylight (lux) rule applies
    name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PointFacts:
    """One configured point a policy reads, as site.yaml declares it (known before its first reading)."""

    id: str
    role: str
    zone: str | None = None
    device_id: str | None = None
    ac_unit: str | None = None
    interval_s: float | None = None  # the device's poll interval: a reading older than 3 of them is stale


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyParams:
    """Built once by the shell from policy.yaml and site.yaml; rebuilt on reload."""

    policy: Policy
    timezone: str = "Asia/Shanghai"
    latitude: float | None = None
    longitude: float | None = None
    zones: Mapping[str, ZoneFacts] = field(default_factory=dict)
    # The configured points policies read (HVAC and lighting roles). A configured point with no reading
    # yet makes its unit incomplete; absent here, a point is known only from the snapshot.
    points: Mapping[str, PointFacts] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ZoneInfo(self.timezone)  # fail at build time, never inside evaluate()
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("give both latitude and longitude, or neither")
        if self.latitude is not None and not (math.isfinite(self.latitude) and -90 <= self.latitude <= 90):
            raise ValueError(f"latitude {self.latitude} is out of range")
        if self.longitude is not None and not (
            math.isfinite(self.longitude) and -180 <= self.longitude <= 180
        ):
            raise ValueError(f"longitude {self.longitude} is out of range")
        object.__setattr__(self, "zones", MappingProxyType(dict(self.zones)))
        object.__setattr__(self, "points", MappingProxyType(dict(self.points)))

    @property
    def tz(self) -> tzinfo:
        return ZoneInfo(self.timezone)  # ZoneInfo caches instances per key

    def zone(self, zone_id: str | None) -> ZoneFacts | None:
        return None if zone_id is None else self.zones.get(zone_id)

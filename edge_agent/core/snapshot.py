"""The latest reading per point, and when each point reached its current value."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from drivers.base import PointBase, Quality, Reading
from policies.types import PointState

__all__ = ["Entry", "Snapshot"]

_BAD = Quality.BAD  # `r.quality is not _BAD` is Reading.ok without a property call per reading


@dataclass(slots=True)
class Entry:
    device_id: str
    point: PointBase
    zone: str | None
    reading: Reading | None = None
    since: datetime | None = None  # first time the current value was seen
    since_known: bool = False  # True once the value changed under our eyes (since = the change)
    last_good: datetime | None = None


class Snapshot:
    def __init__(self, points: Iterable[tuple[str, PointBase, str | None]]) -> None:
        self._entries: dict[str, Entry] = {
            p.id: Entry(device_id=dev, point=p, zone=zone) for dev, p, zone in points
        }
        self._with_roles: dict[frozenset[str], frozenset[str]] = {}
        self._entries_with_roles: dict[frozenset[str], tuple[tuple[str, Entry], ...]] = {}

    def reconfigure(self, points: Iterable[tuple[str, PointBase, str | None]]) -> None:
        """On reload: keep what is known of unchanged points, start afresh for changed or new ones."""
        old = self._entries
        self._entries = {}
        self._with_roles = {}
        self._entries_with_roles = {}
        for dev, p, zone in points:
            e = old.get(p.id)
            if e is not None and e.device_id == dev and e.point == p and e.zone == zone:
                self._entries[p.id] = e
            else:
                self._entries[p.id] = Entry(device_id=dev, point=p, zone=zone)

    def __contains__(self, point_id: object) -> bool:
        return point_id in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, point_id: str) -> Entry:
        return self._entries[point_id]

    def ids_with_roles(self, roles: frozenset[str]) -> frozenset[str]:
        """The ids of the points whose role is one of ``roles`` (kept until the next reconfigure)."""
        ids = self._with_roles.get(roles)
        if ids is None:
            ids = self._with_roles[roles] = frozenset(
                pid for pid, e in self._entries.items() if e.point.role in roles
            )
        return ids

    def reading(self, point_id: str) -> Reading | None:
        e = self._entries.get(point_id)
        return e.reading if e else None

    def update(self, readings: Iterable[Reading]) -> list[Reading]:
        """Store readings; return those whose value or quality changed (what enforcement reacts to)."""
        changed: list[Reading] = []
        get = self._entries.get
        for r in readings:
            e = get(r.point_id)
            if e is None:
                continue
            prev = e.reading
            ts = r.ts
            if prev is None:
                e.since, e.since_known = ts, False
                changed.append(r)
            else:
                if ts < prev.ts:
                    continue  # a poll that read before a write's read-back must not undo it
                value, quality = r.value, r.quality
                if prev.value != value:
                    e.since = ts
                    # Only a change between two good readings tells when it happened.
                    e.since_known = prev.quality is not _BAD and quality is not _BAD
                    changed.append(r)
                elif prev.quality != quality:
                    e.since, e.since_known = ts, False
                    changed.append(r)
            e.reading = r
            if r.quality is not _BAD:
                e.last_good = ts
        return changed

    def for_policy(self, roles: frozenset[str] | None = None) -> Mapping[str, PointState]:
        """The points with a reading as policies see them; with ``roles``, only the points with one of
        them (in the same order): policies.evaluate reads POLICY_ROLES only."""
        entries: Iterable[tuple[str, Entry]] = self._entries.items()
        if roles is not None:
            found = self._entries_with_roles.get(roles)
            if found is None:
                found = self._entries_with_roles[roles] = tuple(
                    (pid, e) for pid, e in self._entries.items() if e.point.role in roles
                )
            entries = found
        out: dict[str, PointState] = {}
        for pid, e in entries:
            r = e.reading
            if r is None or e.since is None:
                continue
            p = e.point
            out[pid] = PointState(
                point_id=pid,
                role=p.role,
                zone=e.zone,
                value=r.value,
                ok=r.quality is not _BAD,
                ts=r.ts,
                since=e.since,
                writable=p.writable,
                min=p.min,
                max=p.max,
                states=p.states,
                device_id=e.device_id,
                since_known=e.since_known,
                ac_unit=p.ac_unit,
                quality=str(r.quality),
                code=r.code,
            )
        return out

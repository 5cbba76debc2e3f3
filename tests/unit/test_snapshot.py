"""The snapshot: latest reading per point, and whether we know when its value last changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from drivers.base import PointBase, Quality, Reading
from edge_agent.core.snapshot import Snapshot

T0 = datetime(2026, 7, 15, 13, 0, tzinfo=UTC)
LIGHT = PointBase(id="l1", role="light_relay", zone="f1", writable=True)


def rd(value: object, minute: int, quality: Quality = Quality.GOOD) -> Reading:
    return Reading("l1", value, T0 + timedelta(minutes=minute), quality)  # type: ignore[arg-type]


def test_since_is_known_only_after_a_change_between_good_readings() -> None:
    snap = Snapshot([("dev", LIGHT, "f1")])
    assert snap.update([rd(True, 0)])  # first sight: a change for the listeners ...
    first = snap.for_policy()["l1"]
    assert first.since == T0 and not first.since_known  # ... but not a known switch-on time
    snap.update([rd(True, 1)])
    assert snap.for_policy()["l1"].since == T0  # same value: since stays
    snap.update([rd(False, 2)])
    off = snap.for_policy()["l1"]
    assert off.since == T0 + timedelta(minutes=2) and off.since_known
    snap.update([rd(None, 3, Quality.BAD)])
    snap.update([rd(True, 4)])  # back from an outage: when it came on is not known
    assert not snap.for_policy()["l1"].since_known


def test_an_older_reading_never_replaces_a_newer_one() -> None:
    snap = Snapshot([("dev", LIGHT, "f1")])
    snap.update([rd(False, 5)])  # e.g. a write's read-back
    assert snap.update([rd(True, 4)]) == []  # a poll that read before the write
    assert snap.reading("l1").value is False  # type: ignore[union-attr]


def test_ids_with_roles_follow_a_reconfigure() -> None:
    meter = PointBase(id="m1", role="power")
    snap = Snapshot([("dev", LIGHT, "f1"), ("dev", meter, None)])
    lights = frozenset({"light_relay"})
    assert snap.ids_with_roles(lights) == {"l1"}
    snap.reconfigure([("dev", meter, None), ("dev", PointBase(id="l2", role="light_relay"), None)])
    assert snap.ids_with_roles(lights) == {"l2"}  # not the answer kept from before the reload

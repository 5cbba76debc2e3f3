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


def test_for_policy_with_roles_is_the_full_snapshot_filtered_in_order_and_follows_a_reconfigure() -> None:
    meters = [PointBase(id=f"m{i}", role="power") for i in range(3)]
    l2 = PointBase(id="l0", role="light_relay", zone="f2", writable=True)
    snap = Snapshot(
        [("dev", meters[0], None), ("dev", LIGHT, "f1"), ("dev", meters[1], None), ("d2", l2, "f2")]
    )
    lights = frozenset({"light_relay"})
    snap.update([Reading(p.id, 1.0, T0, Quality.GOOD) for p in (*meters[:2], LIGHT, l2)])

    def filtered() -> list[tuple[str, object]]:
        return [(k, v) for k, v in snap.for_policy().items() if v.role in lights]

    assert list(snap.for_policy(lights).items()) == filtered() and [k for k, _ in filtered()] == ["l1", "l0"]
    snap.update([Reading("l1", 0.0, T0 + timedelta(minutes=1), Quality.BAD)])  # a new reading shows at once
    assert list(snap.for_policy(lights).items()) == filtered() and not snap.for_policy(lights)["l1"].ok
    snap.reconfigure([("dev", meters[2], None), ("dev", PointBase(id="l2", role="light_relay"), None)])
    snap.update([Reading("l2", True, T0, Quality.GOOD), Reading("m2", 2.0, T0, Quality.GOOD)])
    assert list(snap.for_policy(lights)) == ["l2"]  # not the entries kept from before the reload

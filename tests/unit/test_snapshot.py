"""The snapshot: latest reading per point, and whether we know when its value last changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

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


def _update_before_issue_18(entries: dict[str, list[Any]], readings: list[Reading]) -> list[Reading]:
    """Snapshot.update as it was before issue 18 (entries: point -> [reading, since, since_known,
    last_good]): the reference the faster one must match."""
    changed: list[Reading] = []
    for r in readings:
        e = entries.get(r.point_id)
        if e is None:
            continue
        prev = e[0]
        if prev is not None and r.ts < prev.ts:
            continue
        if prev is None or prev.value != r.value or prev.quality != r.quality:
            e[1] = r.ts
            e[2] = (
                prev is not None
                and prev.quality is not Quality.BAD
                and r.quality is not Quality.BAD
                and prev.value != r.value
            )
            changed.append(r)
        e[0] = r
        if r.quality is not Quality.BAD:
            e[3] = r.ts
    return changed


@given(
    st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(["a", "b", "c", "ghost"]),
                st.one_of(st.sampled_from([0.0, 1.0, True, False, None, "x"]), st.floats(width=16)),
                st.sampled_from(list(Quality)),
                st.integers(-2, 3),  # minutes: older readings than the stored one come too
            ),
            max_size=8,
        ),
        max_size=8,
    )
)
def test_update_matches_the_reference(polls: list[list[tuple[str, object, Quality, int]]]) -> None:
    points = [PointBase(id=i) for i in "abc"]
    snap = Snapshot([("dev", p, None) for p in points])
    ref: dict[str, list[Any]] = {p.id: [None, None, False, None] for p in points}
    for n, poll in enumerate(polls):
        readings = [
            Reading(pid, value, T0 + timedelta(minutes=n + dt), q)  # type: ignore[arg-type]
            for pid, value, q, dt in poll
        ]
        assert snap.update(readings) == _update_before_issue_18(ref, readings)
        for pid, (reading, since, since_known, last_good) in ref.items():
            e = snap.entry(pid)
            assert (e.reading, e.since, e.since_known, e.last_good) == (
                reading,
                since,
                since_known,
                last_good,
            )

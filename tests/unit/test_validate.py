from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from drivers.base import PointBase, Quality, Reading
from edge_agent.core.validate import Validator

T0 = datetime(2025, 7, 1, tzinfo=UTC)


def pt(**kw: object) -> PointBase:
    base: dict[str, object] = {"id": "m1", "unit": "kWh", "cumulative": True}
    base.update(kw)
    return PointBase(**base)  # type: ignore[arg-type]


def rd(value: object, minute: float, point: str = "m1", quality: Quality = Quality.GOOD) -> Reading:
    return Reading(point_id=point, value=value, ts=T0 + timedelta(minutes=minute), quality=quality)  # type: ignore[arg-type]


def flags(v: Validator, values: list[float]) -> list[tuple[str, ...]]:
    return [v.validate(rd(x, i)).flags for i, x in enumerate(values)]


def test_steady_counter_no_flags_and_unit() -> None:
    v = Validator(points=[pt()])
    out = [v.validate(rd(100.0 + i, i)) for i in range(10)]
    assert all(o.flags == () for o in out)
    assert all(o.unit == "kWh" for o in out)


def test_range() -> None:
    v = Validator(points=[pt(id="t", cumulative=False, min=10, max=35, unit="degC")])
    assert v.validate(rd(36.0, 0, "t")).flags == ("out_of_range",)
    assert v.validate(rd(9.9, 1, "t")).flags == ("out_of_range",)
    assert v.validate(rd(26.0, 2, "t")).flags == ()


def test_backwards_keeps_baseline_until_persistent() -> None:
    v = Validator(points=[pt()])
    assert flags(v, [100, 101, 99.5, 102]) == [(), (), ("counter_backwards",), ()]
    # three readings in a row below the baseline (and not near zero): the new level is adopted
    v2 = Validator(points=[pt()])
    got = flags(v2, [1000, 1001, 500, 501, 502, 503])
    assert got == [
        (),
        (),
        ("counter_backwards",),
        ("counter_backwards",),
        ("counter_backwards", "rebaseline"),  # the ledger excludes the step instead of booking it
        (),
    ]


def test_rollover() -> None:
    v = Validator(points=[pt(rollover=10000)])
    assert flags(v, [9990, 9995, 3, 8]) == [(), (), ("rollover",), ()]


def test_reset_near_zero() -> None:
    v = Validator(points=[pt()])
    assert flags(v, [50000, 50010, 2, 5]) == [(), (), ("counter_reset",), ()]
    # with a rollover configured, a drop far from the wrap point is a reset, not a rollover
    v2 = Validator(points=[pt(rollover=100000)])
    assert flags(v2, [40000, 40010, 1]) == [(), (), ("counter_reset",)]


def test_spike_against_recent_peak_rate() -> None:
    v = Validator(points=[pt()])
    got = flags(v, [100, 101, 102, 103, 104, 400, 105])
    assert got[5] == ("spike",)
    assert got[6] == ()  # the spike did not become the baseline
    # a load switching on (standby to full AC: a 30x step that stays) is not a spike
    v3 = Validator(points=[pt()])
    assert flags(v3, [100, 101, 102, 103, 133, 163, 193]) == [(), (), (), (), (), (), ()]
    # a missed poll (twice the interval, twice the delta) is the same rate: no spike
    v2 = Validator(points=[pt()])
    ts = [0, 1, 2, 3, 5]
    out = [v2.validate(rd(100 + t, t)).flags for t in ts]
    assert out == [(), (), (), (), ()]


def test_value_never_altered_and_bad_passes() -> None:
    v = Validator(points=[pt(), pt(id="s", cumulative=False)])
    r = rd(None, 0, quality=Quality.BAD)
    out = v.validate(r)
    assert out.reading is r and out.flags == ()
    nan = v.validate(rd(float("nan"), 1, "s"))
    assert nan.flags == ("not_finite",)
    assert v.validate(rd(1.0, 0, "nope")).flags == ("unknown_point",)
    assert v.validate(rd(True, 2, "s")).flags == ()


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=40))
def test_flags_never_change_readings(values: list[float]) -> None:
    v = Validator(points=[pt(rollover=1e6, min=0, max=1e6)])
    for i, x in enumerate(values):
        r = rd(x, i)
        out = v.validate(r)
        assert out.reading is r
        allowed = {"rollover", "counter_reset", "counter_backwards", "spike", "rebaseline", "load_change"}
        assert set(out.flags) <= allowed


def test_seeded_baseline_checks_the_first_reading_after_a_restart() -> None:
    fresh = Validator(points=[pt()])
    assert fresh.validate(rd(90.0, 10)).flags == ()  # no baseline: nothing to compare with
    seeded = Validator(points=[pt(), pt(id="s", cumulative=False)])
    seeded.seed("m1", 100.0, T0)
    seeded.seed("s", 5.0, T0)  # not a counter: ignored
    assert seeded.validate(rd(90.0, 10)).flags == ("counter_backwards",)
    assert seeded.validate(rd(3.0, 11, "s")).flags == ()


def test_start_up_after_standby_is_a_load_change_not_a_spike() -> None:
    v = Validator(points=[pt()])
    day = [0.01] * 40 + [5.0] * 40 + [0.01] * 16  # 15-minute increments: standby, full AC, standby
    out: list[tuple[str, ...]] = []
    value, minute = 1000.0, 0
    for _day in range(3):
        for inc in day:
            value += inc
            minute += 15
            out.append(v.validate(rd(value, minute)).flags)
    first_start = out[40:42]
    # no history yet: the jump is a suspect until the next reading shows the load stayed
    assert first_start == [("spike",), ("load_change",)]
    # the next mornings: yesterday's peak is the meter's own history, nothing is flagged
    assert all(f == () for f in out[96:])


def test_a_step_that_stays_is_rebaselined_not_a_load_change() -> None:
    v = Validator(points=[pt()])
    values = [100.0 + i for i in range(10)] + [5000.0 + i for i in range(10, 14)]
    got = flags(v, values)
    assert got[10:13] == [("spike",), ("spike",), ("spike", "rebaseline")]
    assert got[13] == ()


_VALUES = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.floats(min_value=0, max_value=1e4),
    st.integers(-5, 5),
    st.booleans(),
    st.none(),
    st.sampled_from(["on", ""]),
)
_POINTS = [
    PointBase(id="plain", unit="kW"),  # nothing to check: validate_many's fast path
    PointBase(id="bounded", unit="degC", min=0, max=40),
    pt(id="meter", rollover=1e4),
]


@given(
    st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(["plain", "bounded", "meter", "ghost"]),
                _VALUES,
                st.sampled_from(list(Quality)),
            ),
            max_size=8,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_validate_many_is_validate_of_each_reading(polls: list[list[tuple[str, object, Quality]]]) -> None:
    """Issue 18: the per-poll fast path gives the flags, unit and reading validate() gives, in order,
    and leaves the counters' state where validate() leaves it; with ``extra`` (the clock's flags), those
    follow the checks' own, by each reading's timestamp."""

    def clock(ts: datetime) -> tuple[str, ...]:
        return (("clock_unsynced",) if ts.second else ()) + (("clock_step",) if ts.minute % 2 else ())

    for extra in (None, clock):
        many, one = Validator(points=_POINTS), Validator(points=_POINTS)
        for n, poll in enumerate(polls):
            # two timestamps in one poll: two blocks read at different moments
            readings = [
                rd(value, n + (i % 2) / 2, point=pid, quality=q) for i, (pid, value, q) in enumerate(poll)
            ]
            got = many.validate_many(readings, extra)
            want = [one.validate(r) for r in readings]
            if extra is not None:
                want = [w._replace(flags=w.flags + extra(r.ts)) for w, r in zip(want, readings, strict=True)]
            assert got == want
            assert [type(vr) for vr in got] == [type(vr) for vr in want]
            assert all(vr.reading is r for vr, r in zip(got, readings, strict=True))
        assert many._state == one._state

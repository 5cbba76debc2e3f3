"""Report by exception: the reconstruction matches the polled series; counters keep every bucket."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.core.report_filter import COUNTER_RULE, ReportFilter, ReportRule

T0 = datetime(2026, 7, 15, 6, 0, tzinfo=UTC)

rules = st.builds(
    ReportRule,
    on_change=st.just(True),
    deadband=st.sampled_from([0.0, 0.1, 0.5, 2.0]),
    deadband_pct=st.sampled_from([0.0, 1.0, 5.0]),
    max_interval_s=st.sampled_from([30.0, 300.0, 900.0]),
)
series = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=120),  # seconds since the previous poll
        st.floats(min_value=-1000, max_value=1000, allow_nan=False),
        st.sampled_from(["good", "good", "good", "bad"]),
    ),
    min_size=1,
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(rule=rules, polls=series)
def test_reconstruction_is_within_deadband_and_never_older_than_max_interval(
    rule: ReportRule, polls: list[tuple[int, float, str]]
) -> None:
    f = ReportFilter()
    t = T0
    received: tuple[float, str, datetime] | None = None  # what the consumer holds: last value received
    for gap, value, quality in polls:
        t += timedelta(seconds=gap)
        if f.keep("p", rule, value=value, ts=t, quality=quality, code=None):
            received = (value, quality, t)
        assert received is not None  # the first reading is always reported
        last_value, last_quality, last_ts = received
        assert last_quality == quality  # a quality change is always reported
        assert abs(value - last_value) <= rule.band(last_value) + 1e-9
        assert (t - last_ts).total_seconds() < rule.max_interval_s or last_ts == t


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.integers(min_value=1, max_value=1200), min_size=1, max_size=200))
def test_counters_report_the_first_reading_of_every_15_minute_bucket(gaps: list[int]) -> None:
    f = ReportFilter()
    t, energy = T0, 1000.0
    polled: dict[int, datetime] = {}
    sent: dict[int, datetime] = {}
    for gap in gaps:
        t += timedelta(seconds=gap)
        energy += gap / 3600
        bucket = math.floor(t.timestamp() / 900)
        polled.setdefault(bucket, t)
        if f.keep("e", COUNTER_RULE, value=energy, ts=t, quality="good", code=None):
            sent.setdefault(bucket, t)
    assert sent == polled  # the ledger sees the first reading of every bucket it has a poll in


def test_a_steady_value_is_sent_once_per_max_interval() -> None:
    f = ReportFilter()
    rule = ReportRule(deadband=0.5, max_interval_s=60)
    kept = [
        f.keep(
            "p", rule, value=21.0 + 0.1 * (i % 2), ts=T0 + timedelta(seconds=5 * i), quality="good", code=None
        )
        for i in range(60)
    ]
    assert sum(kept) == 5  # 0 s, 60 s, 120 s, 180 s, 240 s of a 300 s series

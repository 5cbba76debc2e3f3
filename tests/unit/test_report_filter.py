"""Report by exception: the reconstruction matches the polled series; counters keep every bucket."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.config.settings import ReportOptions
from edge_agent.core.report_filter import COUNTER_RULE, ReportFilter, ReportRule, rule_for

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


# -- rules from site.yaml's `report:` and the consumer's view of several points -------------------------

report_options = st.builds(
    ReportOptions,
    on_change=st.booleans(),
    deadband=st.sampled_from([None, 0.0, 0.5, 3.0]),
    max_interval_s=st.sampled_from([30.0, 120.0, 900.0]),
) | st.builds(
    ReportOptions,
    deadband_pct=st.sampled_from([0.5, 1.0, 10.0]),
    max_interval_s=st.sampled_from([60.0, 600.0]),
)
# Per point: (point's report, cumulative); one device report for all of them.
point_setups = st.lists(st.tuples(st.none() | report_options, st.booleans()), min_size=1, max_size=4)
polls = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=400),  # seconds to the next poll of every point
        st.lists(st.floats(min_value=-50, max_value=50, allow_nan=False), min_size=4, max_size=4),
        st.sampled_from([("good", None, ()), ("good", None, ()), ("good", None, ("out_of_range",)),
                         ("bad", "timeout", ())]),
    ),
    min_size=1,
    max_size=150,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(device=st.none() | report_options, setups=point_setups, series=polls)
def test_consumer_reconstruction_holds_at_every_max_interval_boundary_and_counters_keep_every_slot(
    device: ReportOptions | None, setups: list[tuple[ReportOptions | None, bool]], series: list[Any]
) -> None:
    """Several points polled together, each under the rule its options give it. The consumer holds the
    last reading received per point. At every poll (so at every max_interval boundary too) it is within
    the deadband of the polled value, with the same quality, code and flags, and no older than
    max_interval_s; a point without a rule is received at every poll; a counter is received at the first
    poll of every 15-minute slot, so the consumer books the ledger's slots from what it receives."""
    f = ReportFilter()
    rules = [rule_for(own, device, cumulative=cum) for own, cum in setups]
    held: dict[int, tuple[float, str, str | None, tuple[str, ...], float]] = {}
    counters = [0.0] * len(setups)
    polled_slots: dict[int, dict[int, float]] = {i: {} for i in range(len(setups))}
    sent_slots: dict[int, dict[int, float]] = {i: {} for i in range(len(setups))}
    t = T0
    for gap, values, (quality, code, flags) in series:
        t += timedelta(seconds=gap)
        ts = t.timestamp()
        slot = math.floor(ts / 900)
        for i, ((_, cumulative), rule) in enumerate(zip(setups, rules, strict=True)):
            if cumulative:
                counters[i] += abs(values[i])
            value = counters[i] if cumulative else values[i]
            sent = rule is None or f.keep(
                str(i), rule, value=value, ts=t, quality=quality, code=code, flags=flags
            )
            if rule is None:
                assert sent
            if sent:
                held[i] = (value, quality, code, flags, ts)
            got_value, got_quality, got_code, got_flags, got_ts = held[i]
            assert (got_quality, got_code, got_flags) == (quality, code, flags)
            if rule is not None:
                assert ts - got_ts < rule.max_interval_s or got_ts == ts
                if rule.on_change:
                    assert abs(value - got_value) <= rule.band(got_value) + 1e-9
            if cumulative:
                polled_slots[i].setdefault(slot, value)
                if sent:
                    sent_slots[i].setdefault(slot, value)
    for i, (_, cumulative) in enumerate(setups):
        if cumulative:
            assert sent_slots[i] == polled_slots[i]  # the first reading of every slot with a poll


def test_rule_for_point_wins_and_counters_default_to_the_periodic_report() -> None:
    dev = ReportOptions(deadband=0.5, max_interval_s=300)
    own = ReportOptions(deadband_pct=1, max_interval_s=60)
    assert rule_for(None, None, cumulative=False) is None  # no `report`: every poll
    assert rule_for(None, None, cumulative=True) is None
    assert rule_for(None, dev, cumulative=False) == ReportRule(deadband=0.5, max_interval_s=300)
    assert rule_for(own, dev, cumulative=False) == ReportRule(deadband_pct=1, max_interval_s=60)
    assert rule_for(None, dev, cumulative=True) == ReportRule(
        on_change=False, max_interval_s=300, align_s=900
    )
    assert rule_for(own, dev, cumulative=True) == ReportRule(deadband_pct=1, max_interval_s=60, align_s=900)


def test_forget_starts_a_point_afresh() -> None:
    f = ReportFilter()
    rule = ReportRule(deadband=10, max_interval_s=900)
    assert f.keep("p", rule, value=1.0, ts=T0, quality="good", code=None)
    assert not f.keep("p", rule, value=2.0, ts=T0 + timedelta(seconds=5), quality="good", code=None)
    f.forget(["p"])
    assert "p" not in f
    assert f.keep("p", rule, value=2.0, ts=T0 + timedelta(seconds=10), quality="good", code=None)

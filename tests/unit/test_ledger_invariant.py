"""The auditor's invariant: booked + held + excluded = counter difference (swaps, gaps, clock faults),
also after detected steps are booked.

The readings go through the real Validator and the real Ledger on a real SQLite file, as in the agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from drivers.base import PointBase, Quality, Reading
from edge_agent.core.clock import FakeClock
from edge_agent.core.validate import ValidatedReading, Validator
from edge_agent.store.audit import AuditLog, verify
from edge_agent.store.db import open_state_db
from edge_agent.store.ledger import Ledger, LedgerError, MeterInfo

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
R = 100_000.0  # the counter's range
STEP_S = 300


@dataclass(frozen=True)
class _VR:
    reading: Reading
    flags: tuple[str, ...] = ()


def make(path: Path) -> tuple[Ledger, Validator]:
    conn = open_state_db(path)
    led = Ledger(conn=conn, meters=[MeterInfo(point_id="m", code="01000", unit="kWh", rollover=R)])
    val = Validator(points=[PointBase(id="m", unit="kWh", cumulative=True, rollover=R)])
    return led, val


def feed(
    led: Ledger, val: Validator, minute: float, value: float, *extra: str, clock: float | None = None
) -> None:
    """One reading taken at true time ``minute``; ``clock`` is the (wrong) time the gateway stamps on it."""
    ts = T0 + timedelta(minutes=minute if clock is None else clock)
    v = val.validate(Reading("m", value, ts, Quality.GOOD))
    led.ingest([ValidatedReading(v.reading, v.flags + extra)])


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[tuple[Ledger, Validator]]:
    led, val = make(tmp_path / "state.db")
    yield led, val
    led.conn.close()


def test_meter_swapped_for_one_reading_higher_books_no_phantom_energy(
    ledger: tuple[Ledger, Validator],
) -> None:
    led, val = ledger
    counter = 1000.0
    for i in range(12):  # 1 kWh per 5 minutes
        feed(led, val, 5 * i, counter)
        counter += 1.0
    counter += 4840.0  # the new meter reads 4,840 kWh higher
    for i in range(12, 24):
        feed(led, val, 5 * i, counter)
        counter += 1.0
    t = led.totals(T0, T0 + timedelta(days=1))["m"]
    # 23 intervals of 1 kWh; the swap interval's is inside the excluded step (not known apart from it)
    assert t.total == pytest.approx(23 - 1)
    assert t.excluded == pytest.approx(4840 + 1)
    (ex,) = led.exclusions(T0, T0 + timedelta(days=1))
    assert ex.reason == "step" and ex.amount == pytest.approx(4841)
    assert ex.ts == T0 + timedelta(minutes=60)  # at the first reading of the new meter
    rec = led.reconcile("m")
    assert rec is not None and rec.discrepancy == pytest.approx(0, abs=1e-9)


def swapped(led: Ledger, val: Validator) -> None:
    """A meter read every 5 minutes (1 kWh each) that steps up 4,840 kWh at minute 60."""
    counter = 1000.0
    for i in range(24):
        if i == 12:
            counter += 4840.0
        feed(led, val, 5 * i, counter)
        counter += 1.0


def test_detected_step_is_an_audited_finding_until_confirmed(ledger: tuple[Ledger, Validator]) -> None:
    led, val = ledger
    swapped(led, val)
    (ex,) = led.pending_steps()
    assert (ex.status, ex.amount, ex.since) == ("pending", pytest.approx(4841), T0 + timedelta(minutes=55))
    audit = AuditLog(conn=led.conn, clock=FakeClock(T0 + timedelta(hours=3)))
    (found,) = led.audit_steps(audit)
    assert found.point_id == "m"
    assert led.audit_steps(audit) == []  # once
    (rec,) = list(audit.records())
    assert (rec.kind, rec.result, rec.subject, rec.rule) == ("finding", "counter_step", "m", "ledger.step")
    assert (rec.before, rec.after) == (ex.from_value, ex.to_value) and "4841.000 kWh excluded" in rec.reason
    assert verify(led.conn).ok
    assert led.totals(T0, T0 + timedelta(days=1))["m"].pending_steps == pytest.approx(4841)
    done = led.resolve_step("m", action="confirm", at=ex.ts)
    assert done.status == "confirmed" and led.pending_steps() == []
    t = led.totals(T0, T0 + timedelta(days=1))["m"]
    assert (t.total, t.excluded, t.pending_steps) == (pytest.approx(22), pytest.approx(4841), 0.0)
    with pytest.raises(LedgerError, match="no pending step"):
        led.resolve_step("m", action="book")


def test_booking_a_detected_step_moves_its_energy_into_the_totals(ledger: tuple[Ledger, Validator]) -> None:
    led, val = ledger
    swapped(led, val)
    assert len(led.pending_steps()) == 1
    booked = led.resolve_step("m", action="book", since=T0 + timedelta(minutes=40))
    assert booked.status == "booked"
    t = led.totals(T0, T0 + timedelta(days=1))["m"]
    assert t.total == pytest.approx(22 + 4841) and t.estimated == pytest.approx(4841)
    assert (t.excluded, t.pending_steps, t.counts["step_booked"]) == (0.0, 0.0, 1)
    slots = led.series(T0, T0 + timedelta(days=1), "15min", points=["m"])
    # spread over 40..60 min (no history of comparable days: linearly), not in one slot
    assert {b.start.minute: round(b.estimated, 3) for b in slots if b.estimated} == {
        30: pytest.approx(4841 * 5 / 20, abs=1e-3),
        45: pytest.approx(4841 * 15 / 20, abs=1e-3),
    }
    (row,) = led.exclusions(T0, T0 + timedelta(days=1))
    assert row.status == "booked"  # still listed, with what was done
    rec = led.reconcile("m")
    assert rec is not None and rec.discrepancy == pytest.approx(0, abs=1e-9)
    assert rec.excluded == 0.0


def test_recorded_meter_replacement_keeps_the_energy_of_the_swap_interval(
    ledger: tuple[Ledger, Validator],
) -> None:
    led, val = ledger
    for i in range(6):
        feed(led, val, 5 * i, 500.0 + i)
    ex = led.replace_meter("m", old_final=505.5, new_initial=20.0, at=T0 + timedelta(minutes=27))
    assert (ex.reason, ex.amount) == ("meter_replaced", pytest.approx(-485.5))
    led.ingest([_VR(Reading("m", 21.0, T0 + timedelta(minutes=32), Quality.GOOD))])
    t = led.totals(T0, T0 + timedelta(days=1))["m"]
    assert t.total == pytest.approx(5 + 0.5 + 1.0)
    assert t.rebased == pytest.approx(-485.5)
    rec = led.reconcile("m")
    assert rec is not None and rec.discrepancy == pytest.approx(0, abs=1e-9)
    with pytest.raises(LedgerError, match="not after the last booked"):
        led.replace_meter("m", old_final=30.0, new_initial=0.0, at=T0 + timedelta(minutes=10))


def test_stale_clock_after_a_weekend_off_is_held_and_booked_over_the_gap(
    ledger: tuple[Ledger, Validator],
) -> None:
    led, val = ledger
    for i in range(4):
        feed(led, val, 5 * i, 100.0 + i)  # shutdown after minute 15, counter 103
    off = 3 * 24 * 60  # three days off; the counter ran on at 1 kWh per 5 minutes
    with capture_logs() as logs:
        for j in range(1, 4):  # boots with the shutdown time (fake-hwclock): stamped 3 days too early
            m = 15 + off + 5 * j
            feed(led, val, m, 100.0 + m / 5, "clock_unsynced", clock=15 + 5 * j)
        held = led.totals(T0, T0 + timedelta(days=5))["m"]
        assert held.total == pytest.approx(3.0)  # nothing booked at the wrong (stale) times
        assert held.held == pytest.approx((off + 15) / 5)  # shown as held until the clock is trusted
        t_sync = 15 + off + 20
        feed(led, val, t_sync, 100.0 + t_sync / 5)  # NTP synchronised: trusted again
    events = [e["event"] for e in logs if e["event"].startswith("ledger_")]
    assert events == ["ledger_clock_hold_started", "ledger_clock_hold_released"]  # once each
    day1 = led.totals(T0, T0 + timedelta(days=1))["m"]
    assert day1.total == pytest.approx(3 + (24 * 60 - 15) / 5, rel=1e-9)  # not 864 kWh in one slot
    slots = led.series(T0, T0 + timedelta(days=4), "15min", points=["m"])
    assert max(b.total for b in slots) == pytest.approx(3.0)  # spread over the gap: 1 kWh per 5 min
    everything = led.totals(T0, T0 + timedelta(days=5))["m"]
    assert everything.total == pytest.approx(t_sync / 5)
    assert everything.counts["clock_held"] == 3
    assert everything.estimated == pytest.approx(t_sync / 5 - 3)


def test_held_energy_survives_a_restart_and_is_booked_once_a_clock_step_is_past(tmp_path: Path) -> None:
    led, val = make(tmp_path / "state.db")
    for i in range(4):
        feed(led, val, 5 * i, 100.0 + i)
    for j in range(1, 7):  # a clock step is detected: six readings inside its window, mis-dated
        feed(led, val, 15 + 5 * j, 103.0 + j, "clock_step", clock=15 + 5 * j - 600)
    assert led.totals(T0, T0 + timedelta(days=1))["m"].held == pytest.approx(6.0)
    led.conn.close()
    led, val = make(tmp_path / "state.db")  # the agent restarts: the held energy is in the database
    assert led.totals(T0, T0 + timedelta(days=1))["m"].held == pytest.approx(6.0)
    led.ingest([_VR(Reading("m", 110.0, T0 + timedelta(minutes=50), Quality.GOOD))])  # trusted again
    t = led.totals(T0, T0 + timedelta(days=1))["m"]
    assert (t.total, t.held, t.estimated) == (pytest.approx(10.0), 0.0, pytest.approx(7.0))
    (gap,) = led.gaps(T0, T0 + timedelta(days=1))
    assert (gap.start, gap.end) == (T0 + timedelta(minutes=15), T0 + timedelta(minutes=50))
    rec = led.reconcile("m")
    assert rec is not None and rec.discrepancy == pytest.approx(0, abs=1e-9) and rec.held == 0.0
    led.conn.close()


def test_a_clock_that_never_synchronises_holds_the_energy_and_shows_it(
    ledger: tuple[Ledger, Validator],
) -> None:
    # A gateway without NTP: every reading after the first trusted ones is flagged. Nothing is booked at
    # an untrusted time and nothing is lost: the counter difference is held, shown, and reconciles.
    led, val = ledger
    for i in range(3):
        feed(led, val, 5 * i, 100.0 + i)
    for j in range(1, 200):
        feed(led, val, 10 + 5 * j, 102.0 + 2 * j, "clock_unsynced")
    t = led.totals(T0, T0 + timedelta(days=2))["m"]
    assert (t.total, t.held, t.counts["clock_held"]) == (pytest.approx(2.0), pytest.approx(398.0), 199)
    rec = led.reconcile("m")
    assert rec is not None and (rec.booked, rec.held) == (pytest.approx(2.0), pytest.approx(398.0))
    assert rec.discrepancy == pytest.approx(0, abs=1e-9)


EVENTS = st.sampled_from(["normal"] * 12 + ["gap", "long_gap", "swap_up", "reset", "clock", "glitch"])


# Found by the property: a glitch that is also a rollover; the rollover must be counted only when followed.
@example(
    start=99998.0,
    rates=[2.0] + [1.0] * 9,
    events=["glitch", "normal", "normal", "normal", "normal"],
    steps=[20_000.0] * 60,
)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=st.floats(min_value=1000.0, max_value=R - 1.0),
    rates=st.lists(st.floats(min_value=0.5, max_value=2.0), min_size=10, max_size=10),
    events=st.lists(EVENTS, min_size=5, max_size=60),
    steps=st.lists(st.floats(min_value=20_000.0, max_value=60_000.0), min_size=60, max_size=60),
)
def test_booked_equals_counter_difference_minus_exclusions(
    tmp_path_factory: pytest.TempPathFactory,
    start: float,
    rates: list[float],
    events: list[str],
    steps: list[float],
) -> None:
    led, val = make(tmp_path_factory.mktemp("inv") / "state.db")
    minute, counter, true_total, lost_bound, i, warm = 0.0, start, 0.0, 0.0, 0, 0
    unconfirmed = 0.0  # energy since the last reading the ledger followed (excluded outliers since)

    def advance(n: int) -> float:
        nonlocal minute, counter
        e = sum(rates[(int(minute) // 5 + k) % len(rates)] for k in range(n))
        minute += 5 * n
        counter = (counter + e) % R
        return e

    feed(led, val, minute, counter)
    for ev in events:
        i += 1
        if ev == "gap":
            e = advance(4)
        elif ev == "long_gap":
            e = advance(40)
        else:
            e = advance(1)
        true_total += e
        # A step is told from consumption by the recent rates: the validator needs a few intervals of
        # history (spike_min_samples), so a swap follows at least four ordinary readings.
        if ev == "swap_up" and counter + steps[i] < R and warm >= 4:
            counter += steps[i]  # the new meter reads higher: its step is not energy
            lost_bound += e + unconfirmed  # the swap interval and an ignored glitch before it
            warm = -3
        elif ev == "reset" and 1000.0 <= counter < 0.8 * R and warm >= 4:  # (near zero: a glitch)
            counter = counter * 0.01  # a new meter near zero
            lost_bound += e + unconfirmed  # since the last reading the ledger followed
            warm = 0
        warm += 1
        # (A clock fault inside a swap's suspect readings is left out: under an untrusted clock the ledger
        # follows the counter and cannot tell a step from a weekend of consumption. Not solved yet.)
        if ev == "clock" and warm >= 1:
            for _ in range(3):  # stamped with a stale clock, three hours early
                e2 = advance(1)
                true_total += e2
                feed(led, val, minute, counter, "clock_unsynced", clock=minute - 180)
        elif ev == "glitch":
            feed(led, val, minute, counter, "spike")  # an outlier that the counter does not confirm
            unconfirmed += e
            continue
        unconfirmed = 0.0
        feed(led, val, minute, counter)
    for _ in range(4):  # a quiet tail, so a last swap gets re-baselined inside the trace
        true_total += advance(1)
        feed(led, val, minute, counter)

    rec = led.reconcile("m")
    assert rec is not None
    assert rec.discrepancy == pytest.approx(0.0, abs=1e-6 * max(1.0, rec.counter_difference))
    total = led.totals(T0 - timedelta(days=1), T0 + timedelta(days=30))["m"].total
    assert total == pytest.approx(rec.booked, rel=1e-9, abs=1e-6)
    # and the booking is honest: no phantom energy, and only what a swap hides is lost
    assert total <= true_total + 1e-6
    assert total >= true_total - lost_bound - 1e-6
    # An operator books every detected step as energy: the invariant still holds, the totals grow by it.
    steps = led.pending_steps("m")
    for ex in steps:
        led.resolve_step("m", action="book", at=ex.ts)
    rec = led.reconcile("m")
    assert rec is not None
    assert rec.discrepancy == pytest.approx(0.0, abs=1e-6 * max(1.0, rec.counter_difference))
    after = led.totals(T0 - timedelta(days=1), T0 + timedelta(days=30))["m"].total
    assert after == pytest.approx(total + sum(ex.amount for ex in steps), rel=1e-9, abs=1e-6)
    led.conn.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    days=st.integers(min_value=0, max_value=16),
    shape=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=96, max_size=96),
    gap_start=st.integers(min_value=1, max_value=400),
    gap_slots=st.integers(min_value=2, max_value=400),
    gap_energy=st.floats(min_value=0.0, max_value=5000.0),
)
def test_a_gap_allocated_by_profile_books_exactly_the_counter_difference(
    tmp_path_factory: pytest.TempPathFactory,
    days: int,
    shape: list[float],
    gap_start: int,
    gap_slots: int,
    gap_energy: float,
) -> None:
    led, _val = make(tmp_path_factory.mktemp("gap") / "state.db")
    counter, batch = 1000.0, []
    n = days * 96 + gap_start
    for k in range(n + 1):  # a reading every 15 minutes with a daily shape (zeros allowed)
        batch.append(_VR(Reading("m", counter, T0 + timedelta(minutes=15 * k), Quality.GOOD)))
        counter += shape[k % 96]
    counter -= shape[n % 96]
    end = n + gap_slots
    batch.append(_VR(Reading("m", counter + gap_energy, T0 + timedelta(minutes=15 * end), Quality.GOOD)))
    led.ingest(batch)
    (gap,) = led.gaps(T0, T0 + timedelta(days=40))
    assert gap.method in ("profile", "linear") and gap.energy == pytest.approx(gap_energy)
    rows = led.series(T0, T0 + timedelta(days=40), "15min", points=["m"])
    assert all(b.estimated >= 0.0 for b in rows)
    assert sum(b.estimated for b in rows) == pytest.approx(gap_energy, rel=1e-9, abs=1e-6)
    rec = led.reconcile("m")
    assert rec is not None and rec.discrepancy == pytest.approx(0.0, abs=1e-6 * max(1.0, counter))
    led.conn.close()

from __future__ import annotations

import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.base import Quality, Reading
from edge_agent.config.settings import StorageOptions
from edge_agent.core.clock import FakeClock
from edge_agent.core.validate import ValidatedReading
from edge_agent.store.db import open_state_db
from edge_agent.store.outbox import Outbox, readings_after

T0 = datetime(2025, 7, 1, 8, 0, tzinfo=UTC)


def vr(i: int, ts: datetime = T0, value: object = None, flags: tuple[str, ...] = ()) -> ValidatedReading:
    v = float(i) if value is None else value
    return ValidatedReading(
        reading=Reading(point_id=f"p{i % 5}", value=v, ts=ts, quality=Quality.GOOD),  # type: ignore[arg-type]
        flags=flags,
        unit="kWh",
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def opened(db: Path, clock: FakeClock) -> Iterator[tuple[Outbox, sqlite3.Connection]]:
    conn = open_state_db(db)
    yield Outbox(conn=conn, options=StorageOptions(retain_acked=0), clock=clock, gateway_id="gw"), conn
    conn.close()


def test_sequence_survives_reopen_and_deletes(db: Path, clock: FakeClock) -> None:
    conn = open_state_db(db)
    ob = Outbox(conn=conn, options=StorageOptions(retain_acked=0), clock=clock, gateway_id="gw")
    assert ob.append([vr(i) for i in range(10)]) == (1, 10)
    ob.ack(10)  # every row deleted
    assert ob.pending(0, 100) == []
    conn.close()
    conn = open_state_db(db)
    ob = Outbox(conn=conn, options=StorageOptions(), clock=clock, gateway_id="gw")
    assert ob.acked_seq() == 10
    assert ob.append([vr(1)]) == (11, 11)  # never reused
    assert ob.stats().newest_seq == 11
    conn.close()


def test_roundtrip_types_flags_and_order(opened: tuple[Outbox, sqlite3.Connection]) -> None:
    ob, _ = opened
    ts = T0 + timedelta(microseconds=123456)
    batch = [vr(0, ts, 1.5, ("spike",)), vr(1, ts, 7), vr(2, ts, True), vr(3, ts, "cool", ("a", "b"))]
    assert ob.append(batch) == (1, 4)
    rows = ob.pending(0, 10)
    assert [r.value for r in rows] == [1.5, 7, True, "cool"]
    assert type(rows[1].value) is int and type(rows[2].value) is bool
    assert rows[0].flags == ("spike",) and rows[1].flags == () and rows[3].flags == ("a", "b")
    assert rows[0].ts == "2025-07-01T08:00:00.123456Z"
    assert rows[0].as_payload()["quality"] == "good"
    assert [r.seq for r in ob.pending(2, 10)] == [3, 4]
    assert [r.seq for r in ob.pending(0, 2)] == [1, 2]


def test_ack_backlog_and_recent(db: Path, clock: FakeClock) -> None:
    conn = open_state_db(db)
    ob = Outbox(conn=conn, options=StorageOptions(retain_acked=5), clock=clock, gateway_id="gw")
    ob.append([vr(i) for i in range(10)])  # one poll
    ob.append([vr(i, ts=T0 + timedelta(seconds=i)) for i in range(10, 20)])  # ten polls of one reading
    st = ob.stats()
    assert (st.backlog, st.acked_seq, st.newest_seq) == (20, 0, 20)
    assert st.oldest_ts == T0
    ob.ack(12)
    ob.ack(3)  # the cursor never goes back
    st = ob.stats()
    assert (st.backlog, st.acked_seq) == (8, 12)
    assert [r.seq for r in ob.recent(10)] == list(range(11, 21))  # acked rows kept for tail
    assert ob.pending(12, 100)[0].seq == 13
    # polls that end before the retention window are gone: the 10-reading poll of seqs 1..10 stays
    # while any of its readings is inside it, the single readings go one by one
    assert conn.execute("SELECT min(seq) FROM outbox_reading_rows").fetchone()[0] == 1
    ob.ack(16)
    assert conn.execute("SELECT min(seq) FROM outbox_reading_rows").fetchone()[0] == 16 - 5 + 1
    assert [r.seq for r in ob.recent(3)] == [18, 19, 20]
    conn.close()


Opened = tuple[Outbox, sqlite3.Connection]


def test_age_limit_drops_oldest_unsent_prefix(opened: Opened, clock: FakeClock) -> None:
    ob, _ = opened
    ob.append([vr(i, T0) for i in range(30)])  # seq 1..30, old
    ob.append([vr(i, T0 + timedelta(days=5)) for i in range(10)])  # seq 31..40
    ob.ack(10)
    assert ob.enforce_limits() is None
    clock.advance(timedelta(days=91).total_seconds())
    ev = ob.enforce_limits()
    assert ev is not None
    assert (ev.reason, ev.count, ev.seq_first, ev.seq_last) == ("max_age_days", 20, 11, 30)
    assert ev.ts_first == ev.ts_last == "2025-07-01T08:00:00Z"
    assert ob.stats().backlog == 10
    assert ob.pending(10, 1)[0].seq == 31
    assert ob.enforce_limits() is None
    assert ob.stats().dropped_total == 20
    assert ev.as_event()["kind"] == "drop"


def _size_on_disk(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def test_byte_limit_drop_is_exact_and_made_at_the_commit(db: Path, clock: FakeClock) -> None:
    conn = open_state_db(db)
    opts = StorageOptions(max_bytes=1_000_000, retain_acked=0)
    ob = Outbox(conn=conn, options=opts, clock=clock, gateway_id="gw")
    n = 0
    peak = 0
    while not ob.drops_waiting:  # the commit that crosses the limit drops at once (no 30 s wait)
        rng = ob.append([vr(i) for i in range(3000)])
        assert rng is not None
        n = rng[1]
        peak = max(peak, _size_on_disk(db))
        if n == 9000:
            ob.ack(100)
    ev = ob.enforce_limits()  # hands out the queued drop
    assert ev is not None and ev.reason == "max_bytes"
    assert ev.seq_first == 101 and ev.seq_last is not None
    assert ev.count == ev.seq_last - 100
    assert ob.stats().backlog == n - ev.seq_last
    # The bound is the database file and its WAL together, as the disk sees them.
    assert ob.stats().bytes_on_disk <= 1_000_000
    assert _size_on_disk(db) <= 1_000_000 * 1.1
    assert peak <= 1_000_000 * 1.5, peak  # one 3000-reading commit beyond the limit at most
    assert ob.enforce_limits() is None
    conn.close()


def test_byte_limit_counts_the_wal(db: Path, clock: FakeClock) -> None:
    """A reader holding an old snapshot keeps the WAL from being checkpointed: it still counts."""
    conn = open_state_db(db)
    ob = Outbox(
        conn=conn, options=StorageOptions(max_bytes=1_000_000, retain_acked=0), clock=clock, gateway_id="gw"
    )
    ob.append([vr(i) for i in range(100)])
    reader = open_state_db(db)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM outbox_polls").fetchone()  # pins the snapshot
    try:
        while not ob.drops_waiting:
            assert ob.append([vr(i) for i in range(500)]) is not None
        wal = db.with_name(db.name + "-wal").stat().st_size
        st = ob.stats()
        assert wal > 0 and st.bytes_on_disk >= wal
    finally:
        reader.execute("COMMIT")
        reader.close()
    ev = ob.enforce_limits()
    assert ev is not None and ev.reason == "max_bytes"
    ob.enforce_limits()
    assert _size_on_disk(db) <= 1_000_000 * 1.1
    conn.close()


def test_event_limit_drops_oldest_events_reported(db: Path, clock: FakeClock) -> None:
    conn = open_state_db(db)
    ob = Outbox(conn=conn, options=StorageOptions(max_events=100), clock=clock, gateway_id="gw")
    for i in range(101):
        ob.append_event({"kind": "finding", "i": i})
    assert ob.drops_waiting
    ev = ob.enforce_limits()
    assert ev is not None
    e = ev.as_event()
    assert (e["stream"], e["reason"], e["seq_first"], e["seq_last"], e["count"]) == (
        "events",
        "max_events",
        1,
        11,
        11,
    )
    assert [r.seq for r in ob.pending_events(0, 1000)] == list(range(12, 102))
    assert ob.stats().events_backlog == 90
    conn.close()


def test_drop_unsendable_only_at_the_head(opened: Opened) -> None:
    ob, _ = opened
    ob.append([vr(i) for i in range(5)])
    ob.ack(2)
    assert ob.drop_unsendable(4, "too_large") is None  # not the head: unsent rows stay contiguous
    ev = ob.drop_unsendable(3, "too_large")
    assert ev is not None and (ev.seq_first, ev.seq_last, ev.count, ev.reason) == (3, 3, 1, "too_large")
    assert [r.seq for r in ob.pending(2, 10)] == [4, 5]
    assert ob.stats().backlog == 2
    assert ob.enforce_limits() == ev


def test_disk_full_is_survived_and_retried(db: Path, clock: FakeClock) -> None:
    conn = open_state_db(db)
    ob = Outbox(conn=conn, options=StorageOptions(memory_buffer_max=250), clock=clock, gateway_id="gw")
    assert ob.append([vr(i) for i in range(10)]) == (1, 10)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # no room to grow: SQLITE_FULL
    big = [vr(i, value="x" * 2000) for i in range(100)]
    assert ob.append(big) is None
    st = ob.stats()
    assert st.held_in_memory == 100
    assert st.storage_error is not None and "full" in st.storage_error.lower()
    assert ob.append(big) is None
    assert ob.append(big) is None  # 300 held > 250: the oldest 50 dropped, recorded
    st = ob.stats()
    assert (st.held_in_memory, st.dropped_total) == (250, 50)
    ev = ob.enforce_limits()
    assert ev is not None
    assert (ev.reason, ev.count, ev.seq_first) == ("memory_buffer_full", 50, None)
    conn.execute("PRAGMA max_page_count = 1000000")  # space again
    assert ob.append([vr(0)]) == (11, 261)  # held readings first, in order, then the new one
    st = ob.stats()
    assert (st.held_in_memory, st.storage_error, st.backlog) == (0, None, 261)
    conn.close()


async def test_async_wrappers_and_events(opened: tuple[Outbox, sqlite3.Connection]) -> None:
    ob, _ = opened
    woke: list[int] = []
    ob.add_listener(lambda: woke.append(1))
    assert await ob.aappend([vr(1), vr(2)]) == (1, 2)
    assert [r.seq for r in await ob.apending(0, 10)] == [1, 2]
    await ob.aack(2)
    assert (await ob.astats()).backlog == 0
    s1 = await ob.aappend_event({"kind": "write", "point": "sp1", "value": 26})
    s2 = await ob.aappend_event({"kind": "drop", "count": 3})
    assert (s1, s2) == (1, 2)
    evs = await ob.apending_events(0, 10)
    assert [e.body["kind"] for e in evs] == ["write", "drop"]
    await ob.aack_events(1)
    assert [e.seq for e in await ob.apending_events(ob.acked_events_seq(), 10)] == [2]
    assert ob.stats().events_backlog == 1
    assert len(woke) == 3


# -- storage layout (issue 18): ids for points, times and states; the first layout migrated -------------

_V1_DDL = """
CREATE TABLE outbox_readings (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, point TEXT NOT NULL, ts_us INTEGER NOT NULL, value NUMERIC,
    vjson TEXT, unit TEXT, quality TEXT NOT NULL, code TEXT, flags TEXT
);
CREATE TABLE outbox_cursor (stream TEXT PRIMARY KEY, acked_seq INTEGER NOT NULL);
INSERT INTO outbox_cursor VALUES ('readings', 3), ('events', 0);
"""


def test_a_database_of_the_first_layout_opens_with_its_seqs_and_high_water_mark(
    db: Path, clock: FakeClock
) -> None:
    conn = open_state_db(db)
    conn.executescript(_V1_DDL)
    rows = [
        (2, "p1", 1_000_000, 1.5, None, "kWh", "good", None, "spike"),
        (3, "p2", 1_000_000, None, "true", None, "good", None, None),
        (4, "p2", 2_000_007, None, '"cool"', None, "uncertain", "fault", "a,b"),
        (5, "p1", 1_500_000, None, None, "kWh", "bad", "timeout", None),
        (6, "p1", 3_000_000, 7, None, "kWh", "good", None, None),
    ]
    conn.executemany("INSERT INTO outbox_readings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("UPDATE sqlite_sequence SET seq = 9 WHERE name = 'outbox_readings'")  # 7..9 acked, deleted
    conn.commit()
    conn.close()

    conn = open_state_db(db)
    ob = Outbox(conn=conn, options=StorageOptions(retain_acked=0), clock=clock, gateway_id="gw")
    got = ob.pending(0, 100)
    assert [(r.seq, r.point, r.ts_us, r.value, r.unit, r.quality, r.code, r.flags) for r in got] == [
        (2, "p1", 1_000_000, 1.5, "kWh", "good", None, ("spike",)),
        (3, "p2", 1_000_000, True, None, "good", None, ()),
        (4, "p2", 2_000_007, "cool", None, "uncertain", "fault", ("a", "b")),
        (5, "p1", 1_500_000, None, "kWh", "bad", "timeout", ()),
        (6, "p1", 3_000_000, 7, "kWh", "good", None, ()),
    ]
    assert ob.acked_seq() == 3
    assert ob.append([vr(1)]) == (10, 10)  # the high-water mark survived: 7..9 never reused
    ob.ack(10)
    assert ob.pending(0, 100) == []
    assert conn.execute("SELECT count(*) FROM outbox_polls").fetchone()[0] == 0
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not tables & {"outbox_readings", "outbox_readings_old", "outbox_times"}
    conn.close()
    conn = open_state_db(db)  # opening again: nothing left to migrate
    assert Outbox(conn=conn, options=StorageOptions(), clock=clock, gateway_id="gw").stats().newest_seq == 10
    conn.close()


def test_a_large_first_layout_conversion_reports_progress_and_keeps_secure_delete(
    db: Path, clock: FakeClock
) -> None:
    """The conversion runs before READY: it says how far it is (the service tells systemd to wait), and
    drops the old table without secure_delete's second copy of every page, then sets the pragma back."""
    conn = open_state_db(db)
    conn.executescript(_V1_DDL)
    conn.executemany(
        "INSERT INTO outbox_readings VALUES (?, 'p', ?, ?, NULL, 'kWh', 'good', NULL, NULL)",
        [(i, 1_000_000 + i, float(i)) for i in range(4, 25_004)],
    )
    conn.commit()
    conn.execute("PRAGMA secure_delete = ON")
    told: list[tuple[int, int]] = []
    ob = Outbox(
        conn=conn,
        options=StorageOptions(),
        clock=clock,
        gateway_id="gw",
        on_migrate=lambda moved, total: told.append((moved, total)),
    )
    assert told == [(10_000, 25_000), (20_000, 25_000), (25_000, 25_000)]
    assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
    assert ob.stats().backlog == 25_000 and ob.pending(0, 1)[0].seq == 4
    conn.close()


def test_a_float_reading_takes_at_most_30_bytes(db: Path, clock: FakeClock) -> None:
    """250 devices x 40 float32 points polled 20 times, each device at its own time: the bench site."""
    import random

    conn = open_state_db(db)
    ob = Outbox(conn=conn, options=StorageOptions(), clock=clock, gateway_id="gw")
    rnd = random.Random(1)
    for k in range(20):
        batch = []
        for dev in range(250):
            ts = T0 + timedelta(seconds=5 * k, microseconds=137 * dev)
            batch += [
                ValidatedReading(Reading(f"b{dev}.p{i}", rnd.uniform(-1e3, 1e3), ts, Quality.GOOD), (), "kW")
                for i in range(40)
            ]
        ob.append(batch)
    used = conn.execute(
        "SELECT sum(pgsize - unused) FROM dbstat WHERE name IN"
        " ('outbox_polls', 'outbox_points', 'outbox_points_key', 'outbox_states')"
    ).fetchone()[0]
    assert used / 200_000 <= 30, used / 200_000
    conn.close()


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
    st.text(max_size=8),
)
readings = st.lists(
    st.tuples(
        st.sampled_from(["p0", "p1", "a.b-c"]),
        st.sampled_from([None, "kWh", ""]),
        st.integers(min_value=0, max_value=3),  # time index
        values,
        st.sampled_from(list(Quality)),
        st.sampled_from([None, "timeout", "modbus:2"]),
        st.sampled_from([(), ("spike",), ("out_of_range", "clock_unsynced")]),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(readings, min_size=1, max_size=4), reopen=st.booleans())
def test_every_reading_round_trips_in_order(tmp_path: Path, batches: list[Any], reopen: bool) -> None:
    """Whatever the points, units, times, values and states: read back as written, seqs consecutive,
    through the id caches of one Outbox and through a fresh one on the same file; an Outbox opened
    before the writes (its id maps know none of the points) and the joining view read the same."""
    db = tmp_path / f"rt-{uuid.uuid4().hex}.db"
    clock = FakeClock(T0)
    conn = open_state_db(db)
    ob = Outbox(conn=conn, options=StorageOptions(), clock=clock, gateway_id="gw")
    reader_conn = open_state_db(db)
    reader = Outbox(conn=reader_conn, options=StorageOptions(), clock=clock, gateway_id="gw")
    written = []
    for batch in batches:
        if reopen:
            conn.close()
            conn = open_state_db(db)
            ob = Outbox(conn=conn, options=StorageOptions(), clock=clock, gateway_id="gw")
        vrs = [
            ValidatedReading(Reading(p, v, T0 + timedelta(microseconds=7 * t), q, code), flags, unit)
            for p, unit, t, v, q, code, flags in batch
        ]
        ob.append(vrs)
        written += [
            (p, 7 * t + int(T0.timestamp()) * 1_000_000, v, unit, str(q), code, flags)
            for p, unit, t, v, q, code, flags in batch
        ]
    got = ob.pending(0, 10_000)
    assert readings_after(conn, 0, 10_000) == got
    conn.close()
    assert reader.pending(0, 10_000) == got
    reader_conn.close()
    assert [r.seq for r in got] == list(range(1, len(written) + 1))
    assert [(r.point, r.ts_us, r.value, r.unit, r.quality, r.code, r.flags) for r in got] == written
    assert [type(r.value) for r in got] == [type(w[2]) for w in written]


# -- one row per poll: every operation that cuts inside a poll keeps every other reading ----------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(st.tuples(st.integers(0, 3), st.integers(1, 5)), max_size=4)),
        st.tuples(st.just("ack"), st.integers(0, 40)),
        st.tuples(st.just("unsendable"), st.just(0)),
        st.tuples(st.just("age"), st.integers(0, 6)),
    ),
    max_size=12,
)


@settings(max_examples=120, deadline=None)
@given(ops=_ops, retain=st.integers(0, 6))
def test_polls_cut_by_acks_drops_and_ages_lose_nothing_else(ops: list[tuple[str, Any]], retain: int) -> None:
    """Against a model of one entry per reading: after any appends (polls of several readings, some at
    the same time), acknowledgements, too-large drops of the head and age drops, the unsent readings
    read back are exactly the model's, in order, each drop event names exactly the readings it took,
    and the backlog and oldest time agree."""
    with tempfile.TemporaryDirectory() as d:
        clock = FakeClock(T0)
        conn = open_state_db(Path(d) / "state.db")
        ob = Outbox(conn=conn, options=StorageOptions(retain_acked=retain, max_age_days=2), clock=clock,
                    gateway_id="gw")  # fmt: skip
        model: list[tuple[int, str, float, datetime]] = []  # unsent: seq, point, value, time
        acked = newest = 0
        for op, arg in ops:
            if op == "append":
                batch = []
                for day, n in arg:
                    ts = T0 + timedelta(days=day)
                    batch += [
                        ValidatedReading(Reading(f"d{day}.p{k}", float(newest + k), ts, Quality.GOOD),
                                         ("clock_unsynced",) if day == 2 else (), "kW")
                        for k in range(n)
                    ]  # fmt: skip
                span = ob.append(batch)
                for i, v in enumerate(batch):
                    model.append((newest + 1 + i, v.reading.point_id, float(v.reading.value), v.reading.ts))  # type: ignore[arg-type]
                if batch:
                    assert span == (newest + 1, newest + len(batch))
                    newest += len(batch)
            elif op == "ack":
                upto = min(acked + arg, newest)
                ob.ack(upto)
                acked = max(acked, upto)
                model = [m for m in model if m[0] > acked]
            elif op == "unsendable" and model:
                ev = ob.drop_unsendable(model[0][0], "too_large")
                assert ev is not None and (ev.seq_first, ev.seq_last, ev.count) == (model[0][0],) * 2 + (1,)
                assert ob.take_drop_events() == [ev]
                model.pop(0)
            elif op == "age":
                clock.step_wall((T0 + timedelta(days=arg, hours=1) - clock.now()).total_seconds())
                cutoff = clock.now() - timedelta(days=2)
                gone = 0
                while gone < len(model) and model[gone][3] < cutoff:
                    gone += 1
                ev = ob.enforce_limits()
                if gone:
                    assert ev is not None and (ev.seq_first, ev.seq_last) == (model[0][0], model[gone - 1][0])
                    assert ev.count == gone
                else:
                    assert ev is None
                model = model[gone:]
            got = ob.pending(ob.acked_seq(), 10_000)
            assert [(r.seq, r.point, r.value, r.flags) for r in got] == [
                (s, p, v, ("clock_unsynced",) if ts == T0 + timedelta(days=2) else ())
                for s, p, v, ts in model
            ]
            assert readings_after(conn, ob.acked_seq(), 10_000) == got
            st_ = ob.stats()
            assert st_.backlog == len(model) and st_.newest_seq == newest
            assert st_.oldest_ts == (model[0][3] if model else None)
        conn.close()


# The layout of the first issue-18 round: one row per reading with ids for its point, time and state.
_IDS_DDL = """
CREATE TABLE outbox_readings (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, pid INTEGER NOT NULL, tid INTEGER NOT NULL, value NUMERIC,
    sid INTEGER NOT NULL
);
CREATE TABLE outbox_points (id INTEGER PRIMARY KEY, point TEXT NOT NULL, unit TEXT);
CREATE INDEX outbox_points_key ON outbox_points(point, unit);
CREATE TABLE outbox_times (id INTEGER PRIMARY KEY, ts_us INTEGER NOT NULL);
CREATE TABLE outbox_states (
    id INTEGER PRIMARY KEY, quality TEXT NOT NULL, code TEXT, flags TEXT, json INTEGER NOT NULL
);
CREATE VIEW outbox_reading_rows AS
    SELECT r.seq AS seq, p.point AS point, t.ts_us AS ts_us, r.value AS value, p.unit AS unit,
           s.quality AS quality, s.code AS code, s.flags AS flags, s.json AS json
    FROM outbox_readings r JOIN outbox_points p ON p.id = r.pid JOIN outbox_times t ON t.id = r.tid
    JOIN outbox_states s ON s.id = r.sid;
CREATE TABLE outbox_cursor (stream TEXT PRIMARY KEY, acked_seq INTEGER NOT NULL);
INSERT INTO outbox_cursor VALUES ('readings', 3), ('events', 0);
INSERT INTO outbox_points VALUES (1, 'p1', 'kWh'), (2, 'p2', NULL);
INSERT INTO outbox_times VALUES (1, 1000000), (2, 2000007), (3, 1500000);
INSERT INTO outbox_states VALUES (0, 'good', NULL, NULL, 0), (1, 'good', NULL, 'spike', 0),
    (2, 'good', NULL, NULL, 1), (3, 'uncertain', 'fault', 'a,b', 1), (4, 'bad', 'timeout', NULL, 0);
INSERT INTO outbox_readings VALUES (4, 1, 1, 1.5, 1), (5, 2, 1, 'true', 2), (6, 1, 1, 2.5, 0),
    (7, 2, 2, '"cool"', 3), (8, 1, 3, NULL, 4), (9, 1, 3, 7, 0);
"""


def test_a_database_of_the_ids_layout_is_converted_to_polls(db: Path, clock: FakeClock) -> None:
    """Same seqs, values of every type, states and high-water mark; `tail` reads it before and after."""
    conn = open_state_db(db)
    conn.executescript(_IDS_DDL)
    conn.execute("UPDATE sqlite_sequence SET seq = 11 WHERE name = 'outbox_readings'")  # 10..11 deleted
    conn.commit()
    expected = [
        (4, "p1", 1_000_000, 1.5, "kWh", "good", None, ("spike",)),
        (5, "p2", 1_000_000, True, None, "good", None, ()),
        (6, "p1", 1_000_000, 2.5, "kWh", "good", None, ()),
        (7, "p2", 2_000_007, "cool", None, "uncertain", "fault", ("a", "b")),
        (8, "p1", 1_500_000, None, "kWh", "bad", "timeout", ()),
        (9, "p1", 1_500_000, 7, "kWh", "good", None, ()),
    ]
    assert [tuple(r) for r in readings_after(conn, 0, 100)] == expected  # unconverted, as `tail` reads it
    told: list[tuple[int, int]] = []
    ob = Outbox(
        conn=conn, options=StorageOptions(retain_acked=0), clock=clock, gateway_id="gw",
        on_migrate=lambda moved, total: told.append((moved, total)),
    )  # fmt: skip
    assert told == [(6, 6)]
    assert [tuple(r) for r in ob.pending(0, 100)] == expected
    assert [tuple(r) for r in readings_after(conn, 0, 100)] == expected
    assert conn.execute("SELECT count(*) FROM outbox_polls").fetchone()[0] == 3  # three times, in seq runs
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not tables & {"outbox_readings", "outbox_readings_old", "outbox_times"}
    assert ob.append([vr(1)]) == (12, 12)
    conn.close()


def test_an_acknowledgement_commits_without_fsync_and_appends_keep_it(db: Path, clock: FakeClock) -> None:
    """Acks run with synchronous=NORMAL (losing one to a power cut only sends readings again); the
    connection is back at FULL afterwards, a failed ack included, so stored readings stay durable."""
    conn = open_state_db(db)
    ob = Outbox(conn=conn, options=StorageOptions(retain_acked=0), clock=clock, gateway_id="gw")
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    ob.append([vr(i) for i in range(10)])
    ob.ack(4)
    ob.ack_events(0)
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    conn.execute("DROP TABLE outbox_cursor")  # the ack's UPDATE fails
    with pytest.raises(sqlite3.OperationalError):
        ob.ack(6)
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert [r.seq for r in ob.pending(4, 100)] == [5, 6, 7, 8, 9, 10]
    conn.close()

"""Payload v2: any outbox content -> v2 batches -> the reference decoder -> exactly the same rows."""

from __future__ import annotations

import json
import tempfile
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import Quality, Reading
from edge_agent.config.settings import StorageOptions
from edge_agent.core.clock import FakeClock
from edge_agent.core.validate import ValidatedReading
from edge_agent.store.db import open_state_db
from edge_agent.store.outbox import Outbox, Row
from edge_agent.uplink.mqtt import encode_batch, fit_batch
from edge_agent.uplink.payload_v2 import (
    Decoder,
    PayloadError,
    UnknownSchemaError,
    encode_batch_v2,
    encode_polls_v2,
    encode_schema,
    load_payload,
    make_schema,
)

POINTS = [
    (f"dev-{d}.p{k}", unit, f"dev-{d}") for d in range(3) for k, unit in enumerate(("kWh", "degC", None))
]
SCHEMA = make_schema(POINTS)

_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**53), 2**53),
    st.booleans(),
    st.text(max_size=8),
    st.none(),
)
_row_parts = st.tuples(
    st.integers(1, 3),  # seq step: gaps happen (drops announced elsewhere)
    st.one_of(st.sampled_from([p[0] for p in POINTS]), st.sampled_from(["gone.p0", "new.p1"])),
    st.sampled_from([1_700_000_000_000_000, 1_700_000_000_000_001, 1_700_000_010_123_456]),
    _values,
    st.sampled_from(["kWh", "degC", None, "Pa"]),
    st.sampled_from(["good", "good", "good", "uncertain", "bad"]),
    st.sampled_from([None, None, "timeout", "modbus:2", "bacnet:object:unknown-object"]),
    st.lists(st.sampled_from(["out_of_range", "spike", "rollover", "not_finite"]), max_size=2, unique=True),
)


def _rows(parts: Sequence[tuple[object, ...]], start: int) -> list[Row]:
    rows, seq = [], start
    for step, point, ts_us, value, unit, quality, code, flags in parts:
        seq += step  # type: ignore[operator]
        rows.append(Row(seq, point, ts_us, value, unit, quality, code, tuple(flags)))  # type: ignore[arg-type]
    return rows


def _typed(rows: Sequence[Row]) -> list[tuple[Row, type]]:
    return [(r, type(r.value)) for r in rows]  # True == 1 for Row equality: the type must survive too


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(_row_parts, min_size=1, max_size=80),
    start=st.integers(0, 10**12),
    head=st.one_of(
        st.none(), st.tuples(st.integers(1, 10**9), st.text("0123456789abcdef", min_size=64, max_size=64))
    ),
    limit=st.integers(600, 20_000),
    compress=st.booleans(),
)
def test_v2_round_trip(
    parts: list[tuple[object, ...]], start: int, head: tuple[int, str] | None, limit: int, compress: bool
) -> None:
    rows = _rows(parts, start)
    decoder = Decoder()
    decoder.add_schema(encode_schema(SCHEMA, gateway="gw", building="b"))

    def encode(part: Sequence[Row]) -> bytes:
        return encode_batch_v2(
            part, schema=SCHEMA, gateway="gw", building="b", audit_head=head, compress=compress
        )

    # Cut into batches the way the uplink does (fit_batch under a byte limit), then decode each.
    got: list[Row] = []
    rest: Sequence[Row] = rows
    while rest:
        payload, kept = fit_batch(rest, limit, encode)
        if payload is None:  # one row over the limit: the uplink drops it (audited); skip it here too
            rest = rest[1:]
            rows.remove(kept[0])
            continue
        batch = decoder.decode_batch(payload)
        assert (batch.seq_first, batch.seq_last) == (kept[0].seq, kept[-1].seq)
        assert batch.audit_head == head and batch.gateway == "gw" and batch.schema == SCHEMA.hash
        assert _typed(batch.rows) == _typed(kept)
        got.extend(batch.rows)
        rest = rest[len(kept) :]
    assert _typed(got) == _typed(rows)


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(_row_parts, min_size=1, max_size=40))
def test_decoder_reads_v1_too(parts: list[tuple[object, ...]]) -> None:
    rows = _rows(parts, 0)
    batch = Decoder().decode_batch(encode_batch(rows, gateway="gw", building="b", audit_head=(3, "ab" * 32)))
    assert _typed(batch.rows) == _typed(rows) and batch.audit_head == (3, "ab" * 32) and batch.version == 1


def _poll(seq0: int, ts_us: int, points: Sequence[tuple[str, str | None, str | None]]) -> list[Row]:
    return [Row(seq0 + i, p[0], ts_us, 20.5 + i, p[1], "good", None, ()) for i, p in enumerate(points)]


def test_a_reload_that_adds_points_is_a_new_hash_and_old_batches_still_decode() -> None:
    before = make_schema(POINTS)
    added = [("dev-3.p0", "kWh", "dev-3"), ("dev-3.p1", "degC", "dev-3")]
    after = make_schema([*POINTS, *added])
    assert before.hash != after.hash
    assert make_schema(list(POINTS)).hash == before.hash  # the hash is the content's: stable across runs
    old = encode_batch_v2(_poll(1, 1, POINTS), schema=before, gateway="gw", building="b", audit_head=None)
    backlog = _poll(10, 2, POINTS)  # queued before the reload, sent after it: the new schema holds them
    new = encode_batch_v2(
        [*backlog, *_poll(19, 3, added)], schema=after, gateway="gw", building="b", audit_head=None
    )
    decoder = Decoder()
    with pytest.raises(UnknownSchemaError, match=before.hash):
        decoder.decode_batch(old)
    decoder.add_schema(encode_schema(before, gateway="gw", building="b"))
    decoder.add_schema(encode_schema(after, gateway="gw", building="b"))
    assert decoder.decode_batch(old).rows == _poll(1, 1, POINTS)  # older hash: still known
    assert decoder.decode_batch(new).rows == [*backlog, *_poll(19, 3, added)]
    assert "readings" not in json.loads(zlib.decompress(new))  # every row in the new schema: no fallback


def test_a_removed_point_travels_as_a_v1_entry() -> None:
    smaller = make_schema(POINTS[1:])
    rows = _poll(1, 5, POINTS)
    payload = encode_batch_v2(
        rows, schema=smaller, gateway="gw", building="b", audit_head=None, compress=False
    )
    body = json.loads(payload)
    assert [e["point"] for e in body["readings"]] == [POINTS[0][0]]
    decoder = Decoder()
    decoder.add_schema(encode_schema(smaller, gateway="gw", building="b"))
    assert decoder.decode_batch(payload).rows == rows


def test_a_device_poll_is_one_group_with_a_start_index() -> None:
    rows = _poll(7, 1_700_000_000_000_000, POINTS[3:6])
    body = json.loads(
        encode_batch_v2(rows, schema=SCHEMA, gateway="gw", building="b", audit_head=None, compress=False)
    )
    assert body["groups"] == [{"t": 1_700_000_000_000_000, "s": 7, "p": 3, "v": [20.5, 21.5, 22.5]}]


def test_a_tampered_schema_message_is_refused() -> None:
    body = load_payload(encode_schema(SCHEMA, gateway="gw", building="b"))
    body["points"][0][1] = "MWh"
    with pytest.raises(PayloadError, match="hash"):
        Decoder().add_schema(json.dumps(body).encode())


_poll_strategy = st.lists(  # one device poll: a timestamp offset and its readings
    st.tuples(
        st.sampled_from([p[0] for p in POINTS] + ["gone.p0"]),
        _values,
        st.sampled_from(["kWh", "degC", None]),
        st.sampled_from(list(Quality)),
        st.sampled_from([None, "timeout", "modbus:2"]),
        st.lists(st.sampled_from(["out_of_range", "spike", "counter_reset"]), max_size=2, unique=True),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(polls=st.lists(_poll_strategy, min_size=1, max_size=8), acked=st.integers(0, 20))
def test_v2_round_trip_through_a_real_outbox(polls: list[list[tuple[object, ...]]], acked: int) -> None:
    """What SQLite gives back (NUMERIC affinity, JSON-kept bools and strings) survives v2 unchanged."""
    t0 = datetime(2026, 7, 1, 8, 0, 0, 125000, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as d:
        conn = open_state_db(Path(d) / "state.db")
        try:
            outbox = Outbox(conn=conn, options=StorageOptions(), clock=FakeClock(t0), gateway_id="gw")
            for i, poll in enumerate(polls):
                ts = t0 + timedelta(seconds=5 * i, microseconds=i)
                outbox.append(
                    [
                        ValidatedReading(Reading(pid, v, ts, q, code), tuple(flags), unit)  # type: ignore[arg-type]
                        for pid, v, unit, q, code, flags in poll
                    ]
                )
            outbox.ack(min(acked, outbox.stats().newest_seq))  # a restart: only what was not acknowledged
            held = outbox.pending(outbox.acked_seq(), 10_000)
        finally:
            conn.close()
    if not held:
        return
    payload = encode_batch_v2(held, schema=SCHEMA, gateway="gw", building="b", audit_head=(9, "c" * 64))
    decoder = Decoder()
    decoder.add_schema(encode_schema(SCHEMA, gateway="gw", building="b"))
    batch = decoder.decode_batch(payload)
    assert _typed(batch.rows) == _typed(held) and batch.audit_head == (9, "c" * 64)


# -- encode_polls_v2: the uplink's path from stored polls, byte for byte what encode_batch_v2 makes ----

_T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
_stored_poll = st.tuples(
    st.integers(0, 2),  # device
    st.integers(0, 2),  # time index: polls of one append may share a time and merge into one stored poll
    st.lists(st.integers(0, 2), min_size=1, max_size=3),  # which of the device's points, in order
    st.lists(_values, min_size=3, max_size=3),
    st.sampled_from(["good", "good", "uncertain", "bad"]),
    st.sampled_from([None, None, "timeout"]),
    st.sampled_from([(), (), ("clock_unsynced",), ("spike", "clock_unsynced")]),
    st.booleans(),  # every reading of the poll in that state (clock flags), or only the first
    st.sampled_from(["configured", "configured", "unknown", "unit_changed"]),
)


@settings(max_examples=120, deadline=None)
@given(
    batches=st.lists(st.lists(_stored_poll, min_size=1, max_size=4), min_size=1, max_size=4),
    after=st.integers(0, 30),
    limit=st.integers(1, 40),
    unsend=st.booleans(),
)
def test_stored_polls_encode_exactly_as_their_rows(
    batches: list[list[tuple[object, ...]]], after: int, limit: int, unsend: bool
) -> None:
    """Any outbox content, cut anywhere (a batch starting inside a poll, a limit ending inside one, a poll
    split by a dropped reading): the payload from the stored polls is the bytes encode_batch_v2 makes
    of the same readings as Rows, or None exactly when one of them is not in the schema as it is."""
    with tempfile.TemporaryDirectory() as d:
        conn = open_state_db(Path(d) / "state.db")
        ob = Outbox(conn=conn, options=StorageOptions(), clock=FakeClock(_T0), gateway_id="gw")
        for batch in batches:
            vrs = []
            for dev, t, which, vals, quality, code, flags, all_same, kind in batch:
                ts = _T0 + timedelta(seconds=int(t))  # type: ignore[call-overload]
                for j, k in enumerate(which):  # type: ignore[arg-type]
                    point, unit, _ = POINTS[3 * int(dev) + k]  # type: ignore[call-overload]
                    if kind == "unknown":
                        point = f"gone.{point}"
                    elif kind == "unit_changed" and unit is not None:
                        unit = "MWh"
                    state = (quality, code, flags) if all_same or j == 0 else ("good", None, ())
                    r = Reading(point, vals[k], ts, Quality(state[0]), state[1])  # type: ignore[index]
                    vrs.append(ValidatedReading(r, state[2], unit))  # type: ignore[arg-type]
            ob.append(vrs)
        if unsend:  # the head reading dropped: its poll is cut in two
            ob.drop_unsendable(1, "too_large")
        rows = ob.pending(after, limit)
        polls = ob.pending_polls(after, limit)
        fast = encode_polls_v2(
            polls, after_seq=after, limit=limit, schema=SCHEMA, point_of=ob.point_of, state_of=ob.state_of,
            memo={}, gateway="gw", building="b", audit_head=(3, "ab"), compress=False,
        )  # fmt: skip
        conn.close()
    if not rows:
        assert fast is None
        return
    if any(SCHEMA.index.get(r.point) is None or POINTS[SCHEMA.index[r.point]][1] != r.unit for r in rows):
        assert fast is None
        return
    slow = encode_batch_v2(
        rows, schema=SCHEMA, gateway="gw", building="b", audit_head=(3, "ab"), compress=False
    )
    assert fast == (slow, rows[0].seq, rows[-1].seq, len(rows))

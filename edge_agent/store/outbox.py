"""The durable outbox: validated readings and events, each with a sequence number, waiting for the uplink.

Lives in the shared state database (tables ``outbox_polls``, ``outbox_points``, ``outbox_states``,
``outbox_events``, ``outbox_cursor``; the view ``outbox_reading_rows`` shows one row per reading).

- Storage layout (issue 18): one ``outbox_polls`` row per run of readings that share a time (a device
  poll) and follow each other in seq order: its first seq and count, the time, the point ids (only the
  first when they follow each other, as a device's points do), the values as one JSON array (JSON keeps
  int, float, bool, str and null apart) and the state ids (NULL when all are 0, the common good-and-clean
  state). A poll of 40 floats is one SQLite row instead of 40: the insert, the uplink's read and the
  delete after the acknowledgement cost per poll, not per reading. About 20 bytes a float reading.
  Readings keep their own seqs (``seq .. seq + n - 1``); a run is split in two where an operation must
  cut inside it (a limit drop, a reading too large to send). Databases of the two earlier layouts (one
  row per reading: with TEXT names, then with ids) are converted when the Outbox opens them (same seqs,
  same high-water mark, one transaction, with progress for systemd).

- One ``append`` call is one transaction (the runtime calls it once per poll cycle: a group commit).
- Sequence numbers are gateway-wide, increasing across restarts and never reused, even after rows are
  deleted: the high-water mark stays where the first layout's AUTOINCREMENT kept it (``sqlite_sequence``,
  name ``outbox_readings``), now written by ``append`` in the same transaction as the readings.
- Unsent readings are always one contiguous seq range: they leave only by ``ack`` (a prefix up to the
  cursor) or by a limit drop (a prefix of the unsent ones). So a drop event's ``seq_first..seq_last``
  names exactly the readings that will never be sent, and ``count == seq_last - seq_first + 1``.
- ``max_bytes`` bounds the disk the state database takes: its used pages plus its WAL file, checked after
  every commit (page counts and a stat: cheap). Over the limit, the WAL is checkpointed (TRUNCATE) and,
  if that is not enough, the oldest unsent readings are dropped down to 90 %. The WAL is also kept small
  by ``journal_size_limit`` and an auto-checkpoint scaled to the limit. Events have their own limit,
  ``max_events`` unsent, with drops reported the same way (``stream: "events"``).
- Acknowledged readings are kept (about ``StorageOptions.retain_acked`` of them: whole polls) for
  ``edge-agent tail``.
- A failing write (disk full, database locked, I/O error) never raises into the poll loop: the batch is
  held in memory (at most ``StorageOptions.memory_buffer_max`` readings, oldest dropped first with a
  recorded drop event), ``append`` returns ``None``, ``stats().storage_error`` says why, and the next
  ``append`` (or ``flush_held``) writes the held readings first, so order is kept.

Threading: one ``threading.Lock`` guards the connection, so the ``a*`` async wrappers may run the work in
``asyncio.to_thread`` without two threads using the connection at once. Give the Outbox its own
connection (``open_state_db`` on the same file; WAL lets connections coexist) when other modules use
theirs from other threads: the lock only covers this object.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

import structlog

from drivers.base import Quality, Value
from edge_agent.config.settings import StorageOptions
from edge_agent.core.clock import Clock
from edge_agent.core.validate import ValidatedReading
from edge_agent.store.db import ensure_schema

__all__ = [
    "DDL",
    "DropEvent",
    "EventRow",
    "Outbox",
    "OutboxStats",
    "PollRow",
    "Row",
    "format_ts",
    "newest_seq",
    "poll_point_ids",
    "poll_state_ids",
    "readings_after",
]

DDL = """
CREATE TABLE IF NOT EXISTS outbox_polls (
    seq     INTEGER PRIMARY KEY,       -- seq of the first reading; the others follow, seq + 1 .. seq + n - 1
    n       INTEGER NOT NULL,          -- readings in the run
    ts_us   INTEGER NOT NULL,          -- their time, microseconds since the Unix epoch, UTC
    pid0    INTEGER NOT NULL,          -- outbox_points.id of the first reading
    pids    TEXT,                      -- JSON array of the readings' point ids; NULL: pid0, pid0 + 1, ...
    vals    TEXT NOT NULL,             -- JSON array of the values
    sids    TEXT                       -- JSON array of outbox_states ids, or one id for all; NULL: all 0
);
CREATE TABLE IF NOT EXISTS outbox_points (
    id      INTEGER PRIMARY KEY,
    point   TEXT NOT NULL,
    unit    TEXT
);
CREATE INDEX IF NOT EXISTS outbox_points_key ON outbox_points(point, unit);
CREATE TABLE IF NOT EXISTS outbox_states (
    id      INTEGER PRIMARY KEY,
    quality TEXT NOT NULL,
    code    TEXT,
    flags   TEXT,                      -- comma-separated validation flags, NULL when none
    json    INTEGER NOT NULL           -- the earlier layout's value-is-JSON mark (JSON holds every value now)
);
INSERT OR IGNORE INTO outbox_states(id, quality, code, flags, json) VALUES (0, 'good', NULL, NULL, 0);
CREATE VIEW IF NOT EXISTS outbox_reading_rows AS
    SELECT g.seq + v.key AS seq, p.point AS point, g.ts_us AS ts_us,
           CASE WHEN v.type IN ('true', 'false') THEN v.type
                WHEN v.type = 'text' THEN json_quote(v.value) ELSE v.value END AS value,
           p.unit AS unit, s.quality AS quality, s.code AS code, s.flags AS flags,
           v.type IN ('true', 'false', 'text') AS json
    FROM outbox_polls g, json_each(g.vals) v
    JOIN outbox_points p ON p.id = CASE WHEN g.pids IS NULL THEN g.pid0 + v.key
                                        ELSE json_extract(g.pids, '$[' || v.key || ']') END
    JOIN outbox_states s ON s.id = CASE WHEN g.sids IS NULL THEN 0
                                        WHEN json_type(g.sids) = 'integer' THEN g.sids
                                        ELSE json_extract(g.sids, '$[' || v.key || ']') END;
CREATE TABLE IF NOT EXISTS outbox_events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_us   INTEGER NOT NULL,
    body    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_cursor (
    stream    TEXT PRIMARY KEY,        -- 'readings' | 'events'
    acked_seq INTEGER NOT NULL
);
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_T = TypeVar("_T")
_log = structlog.get_logger("edge_agent.outbox")


def _to_us(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError(f"naive timestamp {ts!r}: readings carry aware UTC times")
    return (ts - _EPOCH) // timedelta(microseconds=1)


@functools.lru_cache(maxsize=4096)  # a batch's readings share a few timestamps: format each once
def format_ts(ts_us: int) -> str:
    """ISO 8601 UTC with a ``Z``; microseconds only when present."""
    return (_EPOCH + timedelta(microseconds=ts_us)).isoformat().replace("+00:00", "Z")


class Row(NamedTuple):
    """One stored reading as the uplink reads it back (a NamedTuple: 2,000 of them a second at 10,000
    points are built 3-4x faster than a frozen dataclass)."""

    seq: int
    point: str
    ts_us: int
    value: Value
    unit: str | None
    quality: str
    code: str | None
    flags: tuple[str, ...]

    @property
    def ts(self) -> str:
        return format_ts(self.ts_us)

    def as_payload(self) -> dict[str, Any]:
        """One entry of the uplink's ``readings`` array (docs/uplink-schema.md)."""
        return {
            "seq": self.seq,
            "point": self.point,
            "ts": self.ts,
            "value": self.value,
            "unit": self.unit,
            "quality": self.quality,
            "code": self.code,
            "flags": list(self.flags),
        }


@dataclass(frozen=True, slots=True)
class EventRow:
    seq: int
    ts_us: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutboxStats:
    backlog: int  # readings stored and not yet acknowledged
    oldest_ts: datetime | None  # reading time of the oldest unacknowledged reading
    newest_seq: int  # highest seq ever given (0 when none)
    acked_seq: int
    bytes_on_disk: int  # used pages of the state database plus its WAL: what max_bytes bounds
    held_in_memory: int = 0  # readings waiting for the disk to accept them
    dropped_total: int = 0  # readings dropped by limits since this process started
    events_backlog: int = 0
    storage_error: str | None = None  # the last write failure, until a write succeeds again

    def as_dict(self) -> dict[str, Any]:
        return {
            "backlog": self.backlog,
            "oldest_ts": self.oldest_ts.isoformat() if self.oldest_ts else None,
            "newest_seq": self.newest_seq,
            "acked_seq": self.acked_seq,
            "bytes_on_disk": self.bytes_on_disk,
            "held_in_memory": self.held_in_memory,
            "dropped_total": self.dropped_total,
            "events_backlog": self.events_backlog,
            "storage_error": self.storage_error,
        }


@dataclass(frozen=True, slots=True)
class DropEvent:
    """Readings removed before they were acknowledged. The caller audits it and publishes it."""

    reason: str  # "max_age_days", "max_bytes", "max_age_days+max_bytes", "memory_buffer_full",
    # "too_large" (one reading larger than an uplink message may be) or "max_events"
    count: int
    seq_first: int | None  # None for readings that never got a seq (dropped from the memory buffer)
    seq_last: int | None
    ts_first: str | None  # reading times of the oldest and newest dropped reading
    ts_last: str | None
    at: str  # when the drop happened
    stream: str = "readings"  # "events": seqs are event seqs (the events' own sequence)

    def as_event(self) -> dict[str, Any]:
        return {
            "kind": "drop",
            "stream": self.stream,
            "reason": self.reason,
            "count": self.count,
            "seq_first": self.seq_first,
            "seq_last": self.seq_last,
            "ts_first": self.ts_first,
            "ts_last": self.ts_last,
            "at": self.at,
        }


def _drop_fields(ev: DropEvent) -> dict[str, Any]:
    return {k: v for k, v in ev.as_event().items() if k not in ("kind", "at")}


_StateKey = tuple[str, str | None, tuple[str, ...]]  # quality, code, flags
_COMMON_STATE: _StateKey = ("good", None, ())  # outbox_states id 0
_GOOD = Quality.GOOD
_HW = "outbox_readings"  # the sqlite_sequence name of the readings' high-water mark (see module doc)

# Values: float repr round-trips exactly; SQLite's JSON has no NaN or Infinity, so a non-finite float is
# stored as null (the earlier layouts' NUMERIC column turned NaN into NULL as well).
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_loads = json.loads


def _vals_json(values: list[Any]) -> str:
    text = _dumps(values)
    if "NaN" in text or "Infinity" in text:  # or a string holding those letters: the slow path is exact too
        text = _dumps([None if type(v) is float and not math.isfinite(v) else v for v in values])
    return text


PollRow = tuple[int, int, int, int, str | None, str, str | None]  # seq, n, ts_us, pid0, pids, vals, sids
_INSERT_POLL = "INSERT INTO outbox_polls(seq, n, ts_us, pid0, pids, vals, sids) VALUES (?, ?, ?, ?, ?, ?, ?)"


def _pack_run(seq: int, ts_us: int, pids: list[int], values: list[Any], sids: list[int] | None) -> PollRow:
    """One outbox_polls row for readings seq, seq + 1, ... sharing ts_us."""
    n = len(values)
    p0 = pids[0]
    consecutive = pids[-1] - p0 == n - 1 and pids == list(range(p0, p0 + n))
    if sids is None or not any(sids):
        states = None
    elif sids.count(sids[0]) == n:  # one state for the whole poll (every reading clock_unsynced, say)
        states = str(sids[0])
    else:
        states = _dumps(sids)
    return (seq, n, ts_us, p0, None if consecutive else _dumps(pids), _vals_json(values), states)


def poll_point_ids(pid0: int, n: int, pids: str | None) -> Sequence[int]:
    """The outbox point ids of a stored poll's readings, in order."""
    return range(pid0, pid0 + n) if pids is None else _loads(pids)  # type: ignore[no-any-return]


def poll_state_ids(sids: str | None) -> int | list[int]:
    """The outbox state ids of a stored poll: one id for all its readings (0: good, no code, no flags),
    or a list with one per reading."""
    return 0 if sids is None else _loads(sids)  # type: ignore[no-any-return]


class _Lookup(dict[int, Any]):
    """Id -> row map of outbox_points or outbox_states that reads an id it does not hold (another Outbox on
    the same database, or an earlier run, added it) from the table, once."""

    def __init__(self, conn: sqlite3.Connection, sql: str, make: Callable[[tuple[Any, ...]], Any]) -> None:
        super().__init__()
        self._conn, self._sql, self._make = conn, sql, make

    def __missing__(self, key: int) -> Any:
        row = self._conn.execute(self._sql, (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        value = self[key] = self._make(row)
        return value


def _point_lookup(conn: sqlite3.Connection) -> _Lookup:
    return _Lookup(conn, "SELECT point, unit FROM outbox_points WHERE id = ?", lambda r: (r[0], r[1]))


def _state_lookup(conn: sqlite3.Connection) -> _Lookup:
    return _Lookup(
        conn,
        "SELECT quality, code, flags FROM outbox_states WHERE id = ?",
        lambda r: (r[0], r[1], _split_flags(r[2])),
    )


# The polls holding readings seq > ?1 - 1, in order: the one holding seq ?1 (or the last one before it,
# skipped by the reader when it ends earlier) and every one after. Through the primary key only.
_POLLS_FROM = (
    "SELECT seq, n, ts_us, pid0, pids, vals, sids FROM outbox_polls"
    " WHERE seq >= coalesce((SELECT max(seq) FROM outbox_polls WHERE seq <= ?1), 0) ORDER BY seq"
)


def _poll_rows(
    polls: Iterable[PollRow], after_seq: int, limit: int, points: dict[int, Any], states: dict[int, Any]
) -> list[Row]:
    """Readings with seq > after_seq, at most ``limit``, from polls in seq order."""
    out: list[Row] = []
    append = out.append
    for seq, n, ts_us, pid0, pids, vals, sids in polls:
        skip = after_seq + 1 - seq
        if skip < 0:
            skip = 0
        if skip >= n:
            continue
        end = min(n, skip + limit - len(out))
        values = _loads(vals)
        pid_list = poll_point_ids(pid0, n, pids)
        sid_list = poll_state_ids(sids)
        if isinstance(sid_list, int):  # one state for the whole poll: the common case
            quality, code, flags = states[sid_list]
            for k in range(skip, end):
                p = points[pid_list[k]]
                append(Row(seq + k, p[0], ts_us, values[k], p[1], quality, code, flags))
        else:
            for k in range(skip, end):
                p = points[pid_list[k]]
                quality, code, flags = states[sid_list[k]]
                append(Row(seq + k, p[0], ts_us, values[k], p[1], quality, code, flags))
        if len(out) >= limit:
            break
    return out


@functools.lru_cache(maxsize=256)
def _split_flags(flags: str | None) -> tuple[str, ...]:
    return tuple(flags.split(",")) if flags else ()


def _decode(t: tuple[Any, ...]) -> Row:
    seq, point, ts_us, num, unit, quality, code, flags, is_json = t
    return Row(
        seq=seq,
        point=point,
        ts_us=ts_us,
        value=_loads(num) if is_json else num,
        unit=unit,
        quality=quality,
        code=code,
        flags=_split_flags(flags),
    )


def _layout(conn: sqlite3.Connection) -> str:
    """'polls' (the current layout, or a new database), 'ids' (one row per reading with ids) or 'first'
    (one row per reading with TEXT names): the layouts the outbox has had."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(outbox_readings)").fetchall()}
    if "point" in cols:
        return "first"
    if "pid" in cols:
        return "ids"
    return "polls"


# The earlier layouts' readings in the shape _decode takes (a database the agent has not converted yet:
# `edge-agent tail` after an upgrade, read-only; and the conversion itself), from ``table``.
_EARLIER = {
    "first": "SELECT seq, point, ts_us, CASE WHEN vjson IS NULL THEN value ELSE vjson END, unit, quality,"
    " code, flags, vjson IS NOT NULL FROM {table} WHERE seq > ? ORDER BY seq LIMIT ?",
    "ids": "SELECT r.seq, p.point, t.ts_us, r.value, p.unit, s.quality, s.code, s.flags, s.json"
    " FROM {table} r JOIN outbox_points p ON p.id = r.pid JOIN outbox_times t ON t.id = r.tid"
    " JOIN outbox_states s ON s.id = r.sid WHERE r.seq > ? ORDER BY r.seq LIMIT ?",
}


def readings_after(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[Row]:
    """Stored readings with seq > after_seq, in seq order, from any connection (a read-only one too),
    in any layout."""
    layout = _layout(conn)
    if layout != "polls":
        rows = conn.execute(_EARLIER[layout].format(table="outbox_readings"), (after_seq, limit)).fetchall()
        return [_decode(t) for t in rows]
    cur = conn.execute(_POLLS_FROM, (after_seq + 1,))
    try:
        return _poll_rows(cur, after_seq, limit, _point_lookup(conn), _state_lookup(conn))
    finally:
        cur.close()


def newest_seq(conn: sqlite3.Connection) -> int:
    """The highest reading seq ever given, in any layout (0 when none)."""
    row = conn.execute("SELECT max(seq) FROM sqlite_sequence WHERE name = ?", (_HW,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _set_hw(c: sqlite3.Connection, seq: int) -> None:
    if c.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (seq, _HW)).rowcount == 0:
        c.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", (_HW, seq))


def _head(c: sqlite3.Connection, after: int) -> tuple[int, int] | None:
    """(seq, time) of the first stored reading with seq > after."""
    for seq, n, ts_us in c.execute(
        "SELECT seq, n, ts_us FROM outbox_polls"
        " WHERE seq >= coalesce((SELECT max(seq) FROM outbox_polls WHERE seq <= ?1), 0) ORDER BY seq LIMIT 2",
        (after + 1,),
    ):
        if seq + n - 1 > after:
            return max(seq, after + 1), int(ts_us)
    return None


def _span(c: sqlite3.Connection, lo: int, hi: int) -> tuple[int, int]:
    """Oldest and newest reading time of the readings lo..hi."""
    row = c.execute(
        "SELECT min(ts_us), max(ts_us) FROM outbox_polls"
        " WHERE seq >= coalesce((SELECT max(seq) FROM outbox_polls WHERE seq <= ?1), 0) AND seq <= ?2",
        (lo, hi),
    ).fetchone()
    return int(row[0]), int(row[1])


def _cut(c: sqlite3.Connection, at: int) -> None:
    """Split the poll holding reading ``at`` (unless it starts there) so that a poll starts at it."""
    row = c.execute(
        "SELECT seq, n, ts_us, pid0, pids, vals, sids FROM outbox_polls"
        " WHERE seq < ? ORDER BY seq DESC LIMIT 1",
        (at,),
    ).fetchone()
    if row is None or row[0] + row[1] <= at:
        return
    seq, n, ts_us, pid0, pids, vals, sids = row
    k = at - seq
    pid_list = list(poll_point_ids(pid0, n, pids))
    values = _loads(vals)
    states = poll_state_ids(sids)
    sid_list = [states] * n if isinstance(states, int) else states
    c.execute("DELETE FROM outbox_polls WHERE seq = ?", (seq,))
    c.executemany(
        _INSERT_POLL,
        [
            _pack_run(seq, ts_us, pid_list[:k], values[:k], sid_list[:k]),
            _pack_run(at, ts_us, pid_list[k:], values[k:], sid_list[k:]),
        ],
    )


def _delete_upto(c: sqlite3.Connection, upto: int) -> None:
    """Delete every reading with seq <= upto (whole polls, the one holding upto cut first)."""
    _cut(c, upto + 1)
    c.execute("DELETE FROM outbox_polls WHERE seq <= ?", (upto,))


def _convert(conn: sqlite3.Connection, progress: Callable[[int, int], None] | None = None) -> int:
    """An outbox_readings table of an earlier layout becomes outbox_polls in one transaction: same seqs,
    same high-water mark. ``progress(moved, total)`` after every 10,000 readings: a large backlog takes a
    while, and systemd must hear that start-up is still going."""
    if _layout(conn) == "polls":
        return 0
    # secure_delete would write every dropped page of the old table again, zeroed, through the WAL.
    secure = conn.execute("PRAGMA secure_delete").fetchone()[0]
    conn.execute("PRAGMA secure_delete = OFF")
    conn.execute("BEGIN IMMEDIATE")
    try:
        layout = _layout(conn)
        if layout == "polls":  # another process converted it while we waited for the lock
            conn.execute("ROLLBACK")
            return 0
        total = int(conn.execute("SELECT count(*) FROM outbox_readings").fetchone()[0])
        _log.info("outbox_migrating", readings=total, layout="one row per poll", was=layout)
        hw = newest_seq(conn)
        conn.execute("DROP VIEW IF EXISTS outbox_reading_rows")
        conn.execute("ALTER TABLE outbox_readings RENAME TO outbox_readings_old")
        for stmt in DDL.split(";\n"):  # statements end a line; executescript would commit
            if stmt.strip():
                conn.execute(stmt)
        select = _EARLIER[layout].format(table="outbox_readings_old")
        writer = _Writer(conn)
        moved = 0
        after = -1
        run: list[Row] = []
        while chunk := conn.execute(select, (after, 10_000)).fetchall():
            polls: list[PollRow] = []
            for r in map(_decode, chunk):
                if run and (r.seq != run[-1].seq + 1 or r.ts_us != run[0].ts_us):
                    polls.append(_pack_rows(writer, run))
                    run = []
                run.append(r)
            conn.executemany(_INSERT_POLL, polls)
            moved += len(chunk)
            after = chunk[-1][0]
            if progress is not None:
                progress(moved, total)
        if run:
            conn.execute(_INSERT_POLL, _pack_rows(writer, run))
        conn.execute("DROP TABLE outbox_readings_old")
        conn.execute("DROP TABLE IF EXISTS outbox_times")
        _set_hw(conn, hw)  # dropping an AUTOINCREMENT table took its high-water mark with it
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.execute(f"PRAGMA secure_delete = {int(secure)}")
    return moved


def _pack_rows(writer: _Writer, run: list[Row]) -> PollRow:
    return _pack_run(
        run[0].seq,
        run[0].ts_us,
        [writer.pid(r.point, r.unit) for r in run],
        [r.value for r in run],
        [writer.sid((r.quality, r.code, r.flags)) for r in run],
    )


class _Writer:
    """Ids of points and states inside one write transaction. New points and states are cached by the
    Outbox only after the commit (``new_points``, ``new_states``): a rollback forgets them."""

    __slots__ = ("_c", "_points", "_states", "new_points", "new_states")

    def __init__(
        self,
        c: sqlite3.Connection,
        points: dict[tuple[str, str | None], int] | None = None,
        states: dict[_StateKey, int] | None = None,
    ) -> None:
        self._c = c
        self._points = points if points is not None else {}
        self._states = states if states is not None else {_COMMON_STATE: 0}
        self.new_points: dict[tuple[str, str | None], int] = {}
        self.new_states: dict[_StateKey, int] = {}

    def pid(self, point: str, unit: str | None) -> int:
        key = (point, unit)
        pid = self._points.get(key)
        if pid is None:
            pid = self.new_points.get(key)
        if pid is None:
            pid = self.new_points[key] = self._intern(
                "SELECT id FROM outbox_points WHERE point = ? AND unit IS ? ORDER BY id LIMIT 1",
                "INSERT INTO outbox_points(point, unit) VALUES (?, ?)",
                key,
            )
        return pid

    def sid(self, key: _StateKey) -> int:
        sid = self._states.get(key)
        if sid is None:
            sid = self.new_states.get(key)
        if sid is None:
            quality, code, flags = key
            sid = self.new_states[key] = self._intern(
                "SELECT id FROM outbox_states WHERE quality = ? AND code IS ? AND flags IS ?"
                " ORDER BY id LIMIT 1",
                "INSERT INTO outbox_states(quality, code, flags, json) VALUES (?, ?, ?, 0)",
                (quality, code, ",".join(flags) or None),
            )
        return sid

    def _intern(self, select: str, insert: str, params: tuple[Any, ...]) -> int:
        """The id of a row another Outbox (or an earlier run) may have added already, else a new one."""
        row = self._c.execute(select, params).fetchone()
        if row is not None:
            return int(row[0])
        cur = self._c.execute(insert, params)
        assert cur.lastrowid is not None
        return cur.lastrowid


class Outbox:
    def __init__(
        self,
        *,
        conn: sqlite3.Connection,
        options: StorageOptions,
        clock: Clock,
        gateway_id: str,
        on_migrate: Callable[[int, int], None] | None = None,  # (moved, total) while converting a layout
    ) -> None:
        self._conn = conn
        self.options = options
        self.clock = clock
        self.gateway_id = gateway_id
        self._lock = threading.Lock()
        self._held: deque[ValidatedReading] = deque()
        self._pending_drops: deque[DropEvent] = deque()
        self._dropped_total = 0
        self._storage_error: str | None = None
        self._limits_failing = False  # log the start and the end of a run of failures, not each one
        self._listeners: list[Callable[[], None]] = []
        with self._lock:
            migrated = _convert(conn, on_migrate)
            if migrated:
                _log.info("outbox_migrated", readings=migrated, layout="one row per poll")
            ensure_schema(conn, DDL)
            self._point_ids: dict[tuple[str, str | None], int] = {
                (point, unit): int(i)
                for i, point, unit in conn.execute("SELECT id, point, unit FROM outbox_points ORDER BY id")
            }
            self._state_ids: dict[_StateKey, int] = {}
            self._points_by_id = _point_lookup(conn)
            self._states_by_id = _state_lookup(conn)
            for i, q, code, flags in conn.execute(
                "SELECT id, quality, code, flags FROM outbox_states ORDER BY id"
            ):
                key = (q, code, _split_flags(flags))
                self._state_ids.setdefault(key, int(i))  # an earlier layout may hold one per value type
                self._states_by_id[int(i)] = key
            self._points_by_id.update((i, key) for key, i in self._point_ids.items())
            conn.execute(
                "INSERT OR IGNORE INTO outbox_cursor(stream, acked_seq) VALUES ('readings', 0), ('events', 0)"
            )
            self._has_dbstat = self._probe_dbstat()
            self._wal_path = self._find_wal()
            page = int(conn.execute("PRAGMA page_size").fetchone()[0])
            # A WAL grows to the auto-checkpoint size (4 MB by default) and is never truncated without a
            # limit: on a small max_bytes that was 4.4 MB of WAL beside a 1 MB database.
            wal_cap = max(256 * 1024, min(4 * 1024 * 1024, options.max_bytes // 20))
            conn.execute(f"PRAGMA journal_size_limit = {wal_cap}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {max(64, wal_cap // page)}")

    # -- listeners: the uplink wakes up on new rows instead of polling -------------------------------
    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called (from whichever thread appended) after each successful commit. Must be thread-safe."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def _notify(self) -> None:
        for cb in list(self._listeners):
            try:
                cb()
            except Exception:  # a listener's bug must not fail the poll loop's append
                _log.exception("outbox_listener_failed", listener=getattr(cb, "__qualname__", repr(cb)))

    # -- writing -------------------------------------------------------------------------------------
    def append(self, readings: Sequence[ValidatedReading]) -> tuple[int, int] | None:
        """Store a batch in one transaction; returns the seq range written (held readings included).

        ``None`` when nothing was written: an empty batch, or a storage failure (see ``stats()``).
        """
        with self._lock:
            batch = [*self._held, *readings]
            if not batch:
                return None
            try:
                first, last = self._insert(batch)
            except sqlite3.OperationalError as exc:
                self._hold(batch, exc)
                return None
            recovered = len(self._held)
            self._held.clear()
            self._storage_error = None
            if self.disk_bytes() > self.options.max_bytes:  # every commit: two pragmas and a stat
                self._limit(check_age=False)
        if recovered:
            _log.info("outbox_write_recovered", written=last - first + 1, held=recovered)
        self._notify()
        return first, last

    def flush_held(self) -> tuple[int, int] | None:
        """Retry the readings held in memory after a storage failure."""
        return self.append(())

    def _insert(self, batch: Sequence[ValidatedReading]) -> tuple[int, int]:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            before = newest_seq(c)
            w = _Writer(c, self._point_ids, self._state_ids)
            known, pid, sid, to_us = self._point_ids, w.pid, w.sid, _to_us
            polls: list[PollRow] = []
            seq = before + 1
            last_ts: datetime | None = None
            ts_us = -1
            pids: list[int] = []
            values: list[Any] = []
            sids: list[int] = []
            last_q: Quality | None = None
            last_code: str | None = None
            last_flags: tuple[str, ...] = ()
            last_sid = 0
            for (point, value, ts, quality, code, _), flags, unit in batch:  # unpacked: no attribute look-ups
                if ts is not last_ts:  # a poll's readings share their datetime object
                    last_ts = ts
                    t = to_us(ts)
                    if t != ts_us:
                        if values:
                            polls.append(_pack_run(seq, ts_us, pids, values, sids))
                            seq += len(values)
                            pids, values, sids = [], [], []
                        ts_us = t
                p = known.get((point, unit))
                pids.append(pid(point, unit) if p is None else p)
                values.append(value)
                if quality is _GOOD and code is None and not flags:
                    sids.append(0)  # the common case, state 0
                elif quality is last_q and code == last_code and flags == last_flags:
                    sids.append(last_sid)  # a poll's readings often share one state (clock_unsynced)
                else:
                    last_q, last_code, last_flags = quality, code, flags
                    last_sid = sid((quality, code, flags))
                    sids.append(last_sid)
            if values:
                polls.append(_pack_run(seq, ts_us, pids, values, sids))
            c.executemany(_INSERT_POLL, polls)
            after = before + len(batch)
            _set_hw(c, after)
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        self._point_ids.update(w.new_points)
        self._state_ids.update(w.new_states)
        self._points_by_id.update((i, key) for key, i in w.new_points.items())
        self._states_by_id.update((i, key) for key, i in w.new_states.items())
        return before + 1, after

    def _hold(self, batch: list[ValidatedReading], exc: sqlite3.OperationalError) -> None:
        code = getattr(exc, "sqlite_errorname", None) or "sqlite_error"
        self._storage_error = f"{code}: {exc}"
        if not self._held:  # the failure starts; outbox_write_recovered ends it
            _log.error("outbox_write_failed", error=self._storage_error, held=len(batch))
        self._held = deque(batch)
        over = len(self._held) - self.options.memory_buffer_max
        if over > 0:
            dropped = [self._held.popleft() for _ in range(over)]
            self._dropped_total += over
            ts = sorted(vr.reading.ts for vr in dropped)
            ev = DropEvent(
                reason="memory_buffer_full",
                count=over,
                seq_first=None,
                seq_last=None,
                ts_first=format_ts(_to_us(ts[0])),
                ts_last=format_ts(_to_us(ts[-1])),
                at=self.clock.now().isoformat(),
            )
            _log.error("readings_dropped", **_drop_fields(ev))
            self._pending_drops.append(ev)

    # -- events (writes, findings, audit records, drops): their own seq space -----------------------
    def append_event(self, body: dict[str, Any]) -> int:
        """Store one event durably; returns its event seq. Raises sqlite3.Error when it cannot."""
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                cur = c.execute(
                    "INSERT INTO outbox_events(ts_us, body) VALUES (?, ?)", (_to_us(self.clock.now()), text)
                )
                seq = cur.lastrowid
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
            assert seq is not None
            if seq - self._cursor("events") > self.options.max_events:  # cheap: the backlog is at most this
                self._limit_events(seq)
        self._notify()
        return seq

    def _limit_events(self, newest: int) -> None:
        """More than ``max_events`` unsent events: drop the oldest down to 90 %, reported like readings."""
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            head = c.execute("SELECT min(seq) FROM outbox_events").fetchone()[0]
            if head is None or newest - head + 1 <= self.options.max_events:
                c.execute("COMMIT")
                return
            upto = newest - int(0.9 * self.options.max_events)
            lo, hi = c.execute(
                "SELECT min(ts_us), max(ts_us) FROM outbox_events WHERE seq BETWEEN ? AND ?", (head, upto)
            ).fetchone()
            c.execute("DELETE FROM outbox_events WHERE seq <= ?", (upto,))
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        ev = DropEvent(
            reason="max_events", count=upto - head + 1, seq_first=head, seq_last=upto,
            ts_first=format_ts(int(lo)), ts_last=format_ts(int(hi)), at=self.clock.now().isoformat(),
            stream="events",
        )  # fmt: skip
        self._pending_drops.append(ev)
        _log.warning("events_dropped", **_drop_fields(ev))

    def pending_events(self, after_seq: int, limit: int) -> list[EventRow]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, ts_us, body FROM outbox_events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [EventRow(seq=s, ts_us=t, body=json.loads(b)) for s, t, b in rows]

    def ack_events(self, upto_seq: int) -> None:
        with self._lock, self._without_fsync():
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute(
                    "UPDATE outbox_cursor SET acked_seq = max(acked_seq, ?) WHERE stream = 'events'",
                    (upto_seq,),
                )
                c.execute("DELETE FROM outbox_events WHERE seq <= ?", (upto_seq,))
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise

    def acked_events_seq(self) -> int:
        with self._lock:
            return self._cursor("events")

    # -- reading back ----------------------------------------------------------------------------------
    def pending(self, after_seq: int, limit: int) -> list[Row]:
        """Stored readings with seq > after_seq, in seq order. Start from ``acked_seq()`` for unsent ones.

        What ``readings_after`` returns, with the points and states from this Outbox's id maps."""
        with self._lock:
            cur = self._conn.execute(_POLLS_FROM, (after_seq + 1,))
            try:
                return _poll_rows(cur, after_seq, limit, self._points_by_id, self._states_by_id)
            finally:
                cur.close()

    def pending_polls(self, after_seq: int, limit: int) -> list[PollRow]:
        """The stored polls holding the readings ``pending(after_seq, limit)`` returns, as stored: the
        uplink encodes them without a Row per reading (the first may start before after_seq + 1 and the
        last may hold more than ``limit`` readings: the reader cuts them)."""
        with self._lock:
            out: list[PollRow] = []
            count = 0
            cur = self._conn.execute(_POLLS_FROM, (after_seq + 1,))
            try:
                for poll in cur:
                    held = poll[1] - max(0, after_seq + 1 - poll[0])
                    if held <= 0:
                        continue
                    out.append(poll)
                    count += held
                    if count >= limit:
                        break
            finally:
                cur.close()
            return out

    def point_of(self, pid: int) -> tuple[str, str | None]:
        """(point id, unit) of an outbox point id."""
        p = self._points_by_id.get(pid)
        if p is None:
            with self._lock:
                p = self._points_by_id[pid]
        return p  # type: ignore[no-any-return]

    def state_of(self, sid: int) -> tuple[str, str | None, tuple[str, ...]]:
        """(quality, code, flags) of an outbox state id."""
        st = self._states_by_id.get(sid)
        if st is None:
            with self._lock:
                st = self._states_by_id[sid]
        return st  # type: ignore[no-any-return]

    def recent(self, limit: int) -> list[Row]:
        """The newest ``limit`` stored readings (sent or not), oldest first: for ``edge-agent tail``."""
        with self._lock:
            polls: list[PollRow] = []
            count = 0
            for poll in self._conn.execute(
                "SELECT seq, n, ts_us, pid0, pids, vals, sids FROM outbox_polls ORDER BY seq DESC"
            ):
                polls.append(poll)
                count += poll[1]
                if count >= limit:
                    break
            if not polls:
                return []
            polls.reverse()
            last = polls[-1][0] + polls[-1][1] - 1
            return _poll_rows(polls, last - limit, limit, self._points_by_id, self._states_by_id)

    def acked_seq(self) -> int:
        with self._lock:
            return self._cursor("readings")

    def ack(self, upto_seq: int) -> None:
        """Everything up to ``upto_seq`` reached the broker. Old acknowledged rows beyond retention go."""
        with self._lock, self._without_fsync():
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute(
                    "UPDATE outbox_cursor SET acked_seq = max(acked_seq, ?) WHERE stream = 'readings'",
                    (upto_seq,),
                )
                # Keep the newest `retain_acked` delivered rows for `edge-agent tail`.
                acked = self._cursor("readings")
                keep_from = acked - self.options.retain_acked
                c.execute("DELETE FROM outbox_polls WHERE seq <= ?1 AND seq + n - 1 <= ?1", (keep_from,))
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _without_fsync(self) -> Iterator[None]:
        """An acknowledgement's commit without its own fsync of the WAL (about 0.2 ms of a batch of 500
        readings, issue 18). A power cut may lose it: those readings are sent again (at least once). The
        WAL stays in order, so the next commit's fsync (every append's, synchronous=FULL) covers it too."""
        c = self._conn
        level = int(c.execute("PRAGMA synchronous").fetchone()[0])
        if level < 2:  # NORMAL or OFF already
            yield
            return
        c.execute("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            c.execute(f"PRAGMA synchronous = {level}")

    def stats(self) -> OutboxStats:
        with self._lock:
            c = self._conn
            acked = self._cursor("readings")
            newest = newest_seq(c)
            head = _head(c, acked)
            ev_acked = self._cursor("events")
            ev_newest = self._sequence(c, "outbox_events")
            ev_first = c.execute("SELECT min(seq) FROM outbox_events WHERE seq > ?", (ev_acked,)).fetchone()[
                0
            ]
            return OutboxStats(
                # Unsent rows are contiguous (see module doc), so the count needs no table scan.
                backlog=0 if head is None else newest - head[0] + 1,
                oldest_ts=None if head is None else _EPOCH + timedelta(microseconds=head[1]),
                newest_seq=newest,
                acked_seq=acked,
                bytes_on_disk=self.disk_bytes(),
                held_in_memory=len(self._held),
                dropped_total=self._dropped_total,
                events_backlog=0 if ev_first is None else ev_newest - ev_first + 1,
                storage_error=self._storage_error,
            )

    # -- limits ----------------------------------------------------------------------------------------
    def enforce_limits(self) -> DropEvent | None:
        """Apply max_age_days and max_bytes by dropping the oldest unsent readings; report what went.

        Returns one event per call: a drop made now, or one still queued from the memory buffer (call
        again until ``None`` to collect all). Acknowledged rows kept for ``tail`` go first, silently:
        they were delivered. A byte-limit drop brings the outbox down to 90 % of max_bytes so it does
        not drop a few rows on every call.
        """
        with self._lock:
            self._limit(check_age=True)
            return self._pending_drops.popleft() if self._pending_drops else None

    def _limit(self, *, check_age: bool) -> None:
        """Run the limits (the lock held); a drop is queued for ``enforce_limits`` to hand out."""
        try:
            if self.disk_bytes() > 0.9 * self.options.max_bytes:
                self._checkpoint()
            ev = self._enforce(check_age=check_age)
            if ev is not None:
                self._checkpoint()  # the deletes went to the WAL: fold them in and truncate it
        except sqlite3.OperationalError as exc:
            self._storage_error = f"{getattr(exc, 'sqlite_errorname', 'sqlite_error')}: {exc}"
            if not self._limits_failing:
                _log.error("outbox_limits_failed", error=self._storage_error)
            self._limits_failing = True
            return
        if self._limits_failing:
            _log.info("outbox_limits_recovered")
        self._limits_failing = False
        if ev is not None:
            self._dropped_total += ev.count
            self._pending_drops.append(ev)

    def _checkpoint(self) -> None:
        # TRUNCATE waits for no one: with a reader on an older snapshot it does what it can (busy=1).
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _enforce(self, *, check_age: bool = True) -> DropEvent | None:
        c = self._conn
        now = self.clock.now()
        cutoff = _to_us(now - timedelta(days=self.options.max_age_days))
        c.execute("BEGIN IMMEDIATE")
        try:
            acked = self._cursor("readings")
            first = _head(c, acked)
            if first is None:
                c.execute("COMMIT")
                return None
            head, head_ts = first
            reasons: list[str] = []
            spans: list[tuple[int, int]] = []
            drop_upto: int | None = None  # unsent readings head..drop_upto are dropped
            # Age: the prefix of unsent readings before the first poll that is recent enough.
            if check_age and head_ts < cutoff:
                fresh = c.execute(
                    "SELECT min(seq) FROM outbox_polls WHERE seq > ? AND ts_us >= ?", (head, cutoff)
                ).fetchone()[0]
                drop_upto = newest_seq(c) if fresh is None else fresh - 1
                spans.append(_span(c, head, drop_upto))
                _delete_upto(c, drop_upto)
                reasons.append("max_age_days")
            limit = self.options.max_bytes
            if self.disk_bytes() > limit:
                _delete_upto(c, acked)  # delivered ones go first
            total = self.disk_bytes()  # the whole database and its WAL: what the disk holds
            if total > limit:
                rows = c.execute("SELECT coalesce(sum(n), 0) FROM outbox_polls").fetchone()[0]
                start = _head(c, acked)
                per_row = self._bytes(exact=True) / max(rows, 1)  # bytes one reading takes, pages included
                n = min(rows, math.ceil((total - 0.9 * limit) / max(per_row, 1.0)))
                if n > 0 and start is not None:
                    drop_upto = min(start[0] + n - 1, newest_seq(c))
                    spans.append(_span(c, start[0], drop_upto))
                    _delete_upto(c, drop_upto)
                    reasons.append("max_bytes")
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        if drop_upto is None:
            return None
        # The dropped readings are head..drop_upto, contiguous: the count is exact.
        ev = DropEvent(
            reason="+".join(reasons),
            count=drop_upto - head + 1,
            seq_first=head,
            seq_last=drop_upto,
            ts_first=format_ts(min(s[0] for s in spans)),
            ts_last=format_ts(max(s[1] for s in spans)),
            at=now.isoformat(),
        )
        _log.warning("readings_dropped", **_drop_fields(ev))
        return ev

    def drop_unsendable(self, seq: int, reason: str) -> DropEvent | None:
        """Drop the oldest unsent reading, ``seq``, which the uplink can never send (larger than a message
        may be). Only the head of the unsent readings, so they stay one contiguous range. The event is
        queued like the limit drops (``enforce_limits`` hands it out) and returned; None when ``seq`` is not
        the head (already acknowledged or dropped)."""
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                first = _head(c, self._cursor("readings"))
                if first is None or first[0] != seq:
                    c.execute("COMMIT")
                    return None
                _cut(c, seq)
                _cut(c, seq + 1)
                c.execute("DELETE FROM outbox_polls WHERE seq = ?", (seq,))
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
            ts = format_ts(int(first[1]))
            ev = DropEvent(
                reason=reason, count=1, seq_first=seq, seq_last=seq, ts_first=ts, ts_last=ts,
                at=self.clock.now().isoformat(),
            )  # fmt: skip
            self._dropped_total += 1
            self._pending_drops.append(ev)
        _log.error("readings_dropped", **_drop_fields(ev))
        return ev

    @property
    def drops_waiting(self) -> bool:
        """Drops made at a commit (byte limit, event limit, too-large readings) wait to be audited."""
        return bool(self._pending_drops)

    def take_drop_events(self) -> list[DropEvent]:
        """Queued drop events (memory buffer overflows) without running the limits."""
        with self._lock:
            out = list(self._pending_drops)
            self._pending_drops.clear()
            return out

    # -- helpers ---------------------------------------------------------------------------------------
    def _cursor(self, stream: str) -> int:
        row = self._conn.execute("SELECT acked_seq FROM outbox_cursor WHERE stream = ?", (stream,)).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _sequence(c: sqlite3.Connection, table: str) -> int:
        row = c.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        return int(row[0]) if row else 0

    def _probe_dbstat(self) -> bool:
        try:
            self._conn.execute("SELECT 1 FROM dbstat WHERE aggregate = TRUE LIMIT 1").fetchall()
        except sqlite3.OperationalError:
            return False
        return True

    def _find_wal(self) -> str | None:
        for _, name, file in self._conn.execute("PRAGMA database_list").fetchall():
            if name == "main" and file:
                return f"{file}-wal"
        return None

    def disk_bytes(self) -> int:
        """What ``max_bytes`` bounds: used pages of the state database plus its WAL file. O(1)."""
        wal = 0
        if self._wal_path is not None:
            try:
                wal = os.stat(self._wal_path).st_size
            except OSError:
                wal = 0
        return self._bytes() + wal

    def _bytes(self, *, exact: bool = False) -> int:
        """Used pages of the whole state database: O(1), and an upper bound of the outbox's share.

        ``exact`` counts only the outbox tables' pages through dbstat, which walks every page of
        them: used only once the cheap figure is over the limit, to decide how much to drop.
        """
        c = self._conn
        if exact and self._has_dbstat:
            row = c.execute(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE aggregate = TRUE AND name IN"
                " ('outbox_polls', 'outbox_events')"
            ).fetchone()
            return int(row[0])
        page = int(c.execute("PRAGMA page_size").fetchone()[0])
        count = int(c.execute("PRAGMA page_count").fetchone()[0])
        free = int(c.execute("PRAGMA freelist_count").fetchone()[0])
        return (count - free) * page

    # -- async wrappers: SQLite work off the event loop, one thread at a time (the lock) -------------
    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.to_thread(fn, *args)

    async def aappend(self, readings: Sequence[ValidatedReading]) -> tuple[int, int] | None:
        return await self._run(self.append, readings)

    async def apending(self, after_seq: int, limit: int) -> list[Row]:
        return await self._run(self.pending, after_seq, limit)

    async def apending_polls(self, after_seq: int, limit: int) -> list[PollRow]:
        return await self._run(self.pending_polls, after_seq, limit)

    async def aack(self, upto_seq: int) -> None:
        await self._run(self.ack, upto_seq)

    async def astats(self) -> OutboxStats:
        return await self._run(self.stats)

    async def aenforce_limits(self) -> DropEvent | None:
        return await self._run(self.enforce_limits)

    async def aappend_event(self, body: dict[str, Any]) -> int:
        return await self._run(self.append_event, body)

    async def apending_events(self, after_seq: int, limit: int) -> list[EventRow]:
        return await self._run(self.pending_events, after_seq, limit)

    async def aack_events(self, upto_seq: int) -> None:
        await self._run(self.ack_events, upto_seq)

"""The durable outbox: validated readings and events, each with a sequence number, waiting for the uplink.

Lives in the shared state database (tables ``outbox_readings``, ``outbox_points``, ``outbox_times``,
``outbox_states``, ``outbox_events``, ``outbox_cursor``; the view ``outbox_reading_rows`` joins them).

- Storage layout (issue 18): a reading row holds small integers and its value only: the point and its
  unit, the time (one ``outbox_times`` row per run of consecutive readings with the same time: a device
  poll) and the quality/code/flags (``outbox_states``; id 0, the common good-and-clean state, takes no
  bytes in a SQLite record) are ids into their own tables. About 22-26 bytes a float reading instead of
  53-60 with the names and times in every row. A database of the first layout is converted when the
  Outbox opens it (same seqs, same AUTOINCREMENT high-water mark, one transaction; about 3.5 s CPU per
  million readings here, so a gateway upgraded with a full 1 GB backlog starts a minute later once).

- One ``append`` call is one transaction (the runtime calls it once per poll cycle: a group commit).
- Sequence numbers come from ``INTEGER PRIMARY KEY AUTOINCREMENT``: gateway-wide, increasing across
  restarts and never reused, even after rows are deleted (SQLite keeps the high-water mark in
  ``sqlite_sequence``).
- Unsent rows are always one contiguous seq range: rows leave only by ``ack`` (a prefix up to the
  cursor) or by a limit drop (a prefix of the unsent rows). So a drop event's ``seq_first..seq_last``
  names exactly the readings that will never be sent, and ``count == seq_last - seq_first + 1``.
- ``max_bytes`` bounds the disk the state database takes: its used pages plus its WAL file, checked after
  every commit (page counts and a stat: cheap). Over the limit, the WAL is checkpointed (TRUNCATE) and,
  if that is not enough, the oldest unsent readings are dropped down to 90 %. The WAL is also kept small
  by ``journal_size_limit`` and an auto-checkpoint scaled to the limit. Events have their own limit,
  ``max_events`` unsent, with drops reported the same way (``stream: "events"``).
- Acknowledged rows are kept (``StorageOptions.retain_acked`` of them) for ``edge-agent tail``.
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
import functools
import json
import math
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

import structlog

from drivers.base import Quality, Value
from edge_agent.config.settings import StorageOptions
from edge_agent.core.clock import Clock
from edge_agent.core.validate import ValidatedReading
from edge_agent.store.db import ensure_schema

__all__ = ["DDL", "DropEvent", "EventRow", "Outbox", "OutboxStats", "Row", "format_ts", "readings_after"]

DDL = """
CREATE TABLE IF NOT EXISTS outbox_readings (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    pid     INTEGER NOT NULL,          -- outbox_points.id: the point and its unit
    tid     INTEGER NOT NULL,          -- outbox_times.id: the reading time; never decreases with seq
    value   NUMERIC,                   -- int and float as they are, bool and str as JSON (see sid)
    sid     INTEGER NOT NULL           -- outbox_states.id: quality, code, flags; 0 = good, none, none
);
CREATE TABLE IF NOT EXISTS outbox_points (
    id      INTEGER PRIMARY KEY,
    point   TEXT NOT NULL,
    unit    TEXT
);
CREATE INDEX IF NOT EXISTS outbox_points_key ON outbox_points(point, unit);
CREATE TABLE IF NOT EXISTS outbox_times (
    id      INTEGER PRIMARY KEY,       -- one row per run of consecutive readings sharing a time
    ts_us   INTEGER NOT NULL           -- reading time, microseconds since the Unix epoch, UTC
);
CREATE TABLE IF NOT EXISTS outbox_states (
    id      INTEGER PRIMARY KEY,
    quality TEXT NOT NULL,
    code    TEXT,
    flags   TEXT,                      -- comma-separated validation flags, NULL when none
    json    INTEGER NOT NULL           -- 1: the value column holds JSON (bool, str)
);
INSERT OR IGNORE INTO outbox_states(id, quality, code, flags, json) VALUES (0, 'good', NULL, NULL, 0);
CREATE VIEW IF NOT EXISTS outbox_reading_rows AS
    SELECT r.seq AS seq, p.point AS point, t.ts_us AS ts_us, r.value AS value, p.unit AS unit,
           s.quality AS quality, s.code AS code, s.flags AS flags, s.json AS json
    FROM outbox_readings r
    JOIN outbox_points p ON p.id = r.pid
    JOIN outbox_times t ON t.id = r.tid
    JOIN outbox_states s ON s.id = r.sid;
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


_StateKey = tuple[str, str | None, tuple[str, ...], bool]  # quality, code, flags, JSON value
_COMMON_STATE: _StateKey = ("good", None, (), False)  # outbox_states id 0
_GOOD = Quality.GOOD


def _encode_value(v: Value) -> tuple[Any, bool]:
    """(what the value column stores, whether it is JSON): bool and str keep their type as JSON."""
    if isinstance(v, bool | str):
        return json.dumps(v, ensure_ascii=False), True
    return v, False


@functools.lru_cache(maxsize=256)
def _split_flags(flags: str | None) -> tuple[str, ...]:
    return tuple(flags.split(",")) if flags else ()


def _decode(t: tuple[Any, ...]) -> Row:
    seq, point, ts_us, num, unit, quality, code, flags, is_json = t
    return Row(
        seq=seq,
        point=point,
        ts_us=ts_us,
        value=json.loads(num) if is_json else num,
        unit=unit,
        quality=quality,
        code=code,
        flags=_split_flags(flags),
    )


_COLS = "seq, point, ts_us, value, unit, quality, code, flags, json"
_ROWS = "outbox_reading_rows"  # the view joining a reading with its point, time and state


# The first layout's columns in the shape _decode takes, for a database the agent has not converted yet
# (`edge-agent tail` after an upgrade, read-only, before the agent's next start).
_COLS_V1 = (
    "seq, point, ts_us, CASE WHEN vjson IS NULL THEN value ELSE vjson END, unit, quality, code, flags, "
    "vjson IS NOT NULL"
)


def readings_after(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[Row]:
    """Stored readings with seq > after_seq, in seq order, from any connection (a read-only one too),
    in either layout."""
    try:
        rows = conn.execute(
            f"SELECT {_COLS} FROM {_ROWS} WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        ).fetchall()
    except sqlite3.OperationalError:
        cols = {r[1] for r in conn.execute("PRAGMA table_info(outbox_readings)").fetchall()}
        if "point" not in cols:
            raise
        rows = conn.execute(
            f"SELECT {_COLS_V1} FROM outbox_readings WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        ).fetchall()
    return [_decode(t) for t in rows]


def _prune_times(c: sqlite3.Connection) -> None:
    """Times no reading refers to any more: tids never decrease with seq, and rows leave by seq prefix."""
    c.execute(
        "DELETE FROM outbox_times WHERE id < coalesce("
        "(SELECT tid FROM outbox_readings ORDER BY seq LIMIT 1), (SELECT max(id) + 1 FROM outbox_times))"
    )


def _first_layout(conn: sqlite3.Connection) -> bool:
    return "point" in {r[1] for r in conn.execute("PRAGMA table_info(outbox_readings)").fetchall()}


def _migrate_v1(conn: sqlite3.Connection, progress: Callable[[int, int], None] | None = None) -> int:
    """An outbox_readings table of the first layout (one TEXT point, unit, quality... per row, about 55
    bytes a reading) becomes the current one in one transaction: same seqs, same high-water mark.
    ``progress(moved, total)`` after every 10,000 readings: a large backlog takes a while (about 3 s per
    million here), and systemd must hear that start-up is still going."""
    if not _first_layout(conn):
        return 0
    # secure_delete would write every dropped page of the old table again, zeroed, through the WAL.
    secure = conn.execute("PRAGMA secure_delete").fetchone()[0]
    conn.execute("PRAGMA secure_delete = OFF")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not _first_layout(conn):  # another process converted it while we waited for the lock
            conn.execute("ROLLBACK")
            return 0
        total = int(conn.execute("SELECT count(*) FROM outbox_readings").fetchone()[0])
        _log.info("outbox_migrating", readings=total, layout="points, times and states tables")
        hw = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox_readings'").fetchone()
        conn.execute("DROP VIEW IF EXISTS outbox_reading_rows")
        conn.execute("ALTER TABLE outbox_readings RENAME TO outbox_readings_v1")
        for stmt in DDL.split(";\n"):  # statements end a line; executescript would commit
            if stmt.strip():
                conn.execute(stmt)
        writer = _Writer(conn)
        moved = 0
        after = -1
        while True:
            chunk = conn.execute(
                "SELECT seq, point, ts_us, value, vjson, unit, quality, code, flags FROM outbox_readings_v1"
                " WHERE seq > ? ORDER BY seq LIMIT 10000",
                (after,),
            ).fetchall()
            if not chunk:
                break
            rows = []
            for seq, point, ts_us, num, vj, unit, quality, code, flags in chunk:
                key = (quality, code, _split_flags(flags), vj is not None)
                rows.append(
                    (
                        seq,
                        writer.pid(point, unit),
                        writer.tid(ts_us),
                        num if vj is None else vj,
                        writer.sid(key),
                    )
                )
            conn.executemany(
                "INSERT INTO outbox_readings(seq, pid, tid, value, sid) VALUES (?, ?, ?, ?, ?)", rows
            )
            moved += len(rows)
            after = chunk[-1][0]
            if progress is not None:
                progress(moved, total)
        conn.execute("DROP TABLE outbox_readings_v1")
        if hw is not None:  # AUTOINCREMENT's high-water mark: seqs of deleted rows are never reused
            conn.execute("DELETE FROM sqlite_sequence WHERE name = 'outbox_readings'")
            conn.execute(
                "INSERT INTO sqlite_sequence(name, seq) VALUES ('outbox_readings', ?)", (int(hw[0]),)
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.execute(f"PRAGMA secure_delete = {int(secure)}")
    return moved


class _Writer:
    """Ids of points, times and states inside one write transaction. New points and states are cached
    by the Outbox only after the commit (``new_points``, ``new_states``): a rollback forgets them."""

    __slots__ = ("_c", "_last_tid", "_last_ts", "_points", "_states", "new_points", "new_states")

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
        self._last_ts: int | None = None
        self._last_tid = 0

    def pid(self, point: str, unit: str | None) -> int:
        key = (point, unit)
        pid = self._points.get(key)
        if pid is None:
            pid = self.new_points.get(key)
        if pid is None:
            pid = self.new_points[key] = self._intern(
                "SELECT id FROM outbox_points WHERE point = ? AND unit IS ?",
                "INSERT INTO outbox_points(point, unit) VALUES (?, ?)",
                key,
            )
        return pid

    def sid(self, key: _StateKey) -> int:
        sid = self._states.get(key)
        if sid is None:
            sid = self.new_states.get(key)
        if sid is None:
            quality, code, flags, is_json = key
            sid = self.new_states[key] = self._intern(
                "SELECT id FROM outbox_states WHERE quality = ? AND code IS ? AND flags IS ? AND json = ?",
                "INSERT INTO outbox_states(quality, code, flags, json) VALUES (?, ?, ?, ?)",
                (quality, code, ",".join(flags) or None, int(is_json)),
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

    def tid(self, ts_us: int) -> int:
        """One times row per run of readings with the same time, so tids never decrease with seq."""
        if ts_us != self._last_ts:
            cur = self._c.execute("INSERT INTO outbox_times(ts_us) VALUES (?)", (ts_us,))
            assert cur.lastrowid is not None
            self._last_ts, self._last_tid = ts_us, cur.lastrowid
        return self._last_tid


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
            migrated = _migrate_v1(conn, on_migrate)
            if migrated:
                _log.info("outbox_migrated", readings=migrated, layout="points, times and states tables")
            ensure_schema(conn, DDL)
            self._point_ids: dict[tuple[str, str | None], int] = {
                (point, unit): int(i)
                for i, point, unit in conn.execute("SELECT id, point, unit FROM outbox_points")
            }
            self._state_ids: dict[_StateKey, int] = {
                (q, code, _split_flags(flags), bool(js)): int(i)
                for i, q, code, flags, js in conn.execute(
                    "SELECT id, quality, code, flags, json FROM outbox_states"
                )
            }
            self._points_by_id = {i: key for key, i in self._point_ids.items()}
            self._states_by_id = {i: key for key, i in self._state_ids.items()}
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
            before = self._sequence(c, "outbox_readings")
            w = _Writer(c, self._point_ids, self._state_ids)
            pid, tid, sid, to_us, encode = w.pid, w.tid, w.sid, _to_us, _encode_value
            rows = []
            last_ts: datetime | None = None
            t = 0
            for r, flags, unit in batch:
                if r.ts is not last_ts:  # a poll's readings share their datetime object
                    last_ts, t = r.ts, tid(to_us(r.ts))
                value = r.value
                if type(value) is float and r.quality is _GOOD and r.code is None and not flags:
                    rows.append((pid(r.point_id, unit), t, value, 0))  # the common case, state 0
                    continue
                value, is_json = encode(value)
                rows.append((pid(r.point_id, unit), t, value, sid((r.quality, r.code, flags, is_json))))
            c.executemany("INSERT INTO outbox_readings(pid, tid, value, sid) VALUES (?, ?, ?, ?)", rows)
            after = self._sequence(c, "outbox_readings")
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        self._point_ids.update(w.new_points)
        self._state_ids.update(w.new_states)
        self._points_by_id.update((i, key) for key, i in w.new_points.items())
        self._states_by_id.update((i, key) for key, i in w.new_states.items())
        # One writer inside one transaction: AUTOINCREMENT hands out before+1 .. after.
        assert after - before == len(batch), (before, after, len(batch))
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
        with self._lock:
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

        What ``readings_after`` returns, with the points and states from this Outbox's id maps instead
        of joining their tables for every row (the uplink reads every reading once: issue 18)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT r.seq, r.pid, t.ts_us, r.value, r.sid FROM outbox_readings r"
                " JOIN outbox_times t ON t.id = r.tid WHERE r.seq > ? ORDER BY r.seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
            points, states = self._points_by_id, self._states_by_id
            out: list[Row] = []
            append = out.append
            for seq, pid, ts_us, value, sid in rows:
                p = points.get(pid) or self._load_ids(pid, sid)[0]
                if sid == 0:  # the common state: good, no code, no flags, a number
                    append(Row(seq, p[0], ts_us, value, p[1], "good", None, ()))
                    continue
                quality, code, flags, is_json = states.get(sid) or self._load_ids(pid, sid)[1]
                append(
                    Row(seq, p[0], ts_us, json.loads(value) if is_json else value, p[1], quality, code, flags)
                )
            return out

    def _load_ids(self, pid: int, sid: int) -> tuple[tuple[str, str | None], _StateKey]:
        """A point or state another Outbox on this database added: read it (and keep it)."""
        p = self._points_by_id.get(pid)
        if p is None:
            point, unit = self._conn.execute(
                "SELECT point, unit FROM outbox_points WHERE id = ?", (pid,)
            ).fetchone()
            p = self._points_by_id[pid] = (point, unit)
        st = self._states_by_id.get(sid)
        if st is None:
            q, code, flags, js = self._conn.execute(
                "SELECT quality, code, flags, json FROM outbox_states WHERE id = ?", (sid,)
            ).fetchone()
            st = self._states_by_id[sid] = (q, code, _split_flags(flags), bool(js))
        return p, st

    def recent(self, limit: int) -> list[Row]:
        """The newest ``limit`` stored readings (sent or not), oldest first: for ``edge-agent tail``."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLS} FROM {_ROWS} ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_decode(t) for t in reversed(rows)]

    def acked_seq(self) -> int:
        with self._lock:
            return self._cursor("readings")

    def ack(self, upto_seq: int) -> None:
        """Everything up to ``upto_seq`` reached the broker. Old acknowledged rows beyond retention go."""
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute(
                    "UPDATE outbox_cursor SET acked_seq = max(acked_seq, ?) WHERE stream = 'readings'",
                    (upto_seq,),
                )
                # Keep the newest `retain_acked` delivered rows for `edge-agent tail`.
                acked = self._cursor("readings")
                c.execute("DELETE FROM outbox_readings WHERE seq <= ?", (acked - self.options.retain_acked,))
                _prune_times(c)
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise

    def stats(self) -> OutboxStats:
        with self._lock:
            c = self._conn
            acked = self._cursor("readings")
            newest = self._sequence(c, "outbox_readings")
            first = c.execute(f"SELECT seq, ts_us FROM {_ROWS} WHERE seq > ? ORDER BY seq LIMIT 1", (acked,))
            head = first.fetchone()
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
            head = c.execute("SELECT min(seq) FROM outbox_readings WHERE seq > ?", (acked,)).fetchone()[0]
            if head is None:
                c.execute("COMMIT")
                return None
            reasons: list[str] = []
            spans: list[tuple[int, int]] = []
            drop_upto: int | None = None  # unsent rows head..drop_upto are dropped
            # Age: the prefix of unsent rows before the first one that is recent enough.
            old = c.execute(f"SELECT ts_us < ? FROM {_ROWS} WHERE seq = ?", (cutoff, head)).fetchone()[0]
            if check_age and old:
                fresh = c.execute(
                    f"SELECT min(seq) FROM {_ROWS} WHERE seq > ? AND ts_us >= ?", (acked, cutoff)
                ).fetchone()[0]
                drop_upto = self._sequence(c, "outbox_readings") if fresh is None else fresh - 1
                spans.append(self._span(head, drop_upto))
                c.execute("DELETE FROM outbox_readings WHERE seq <= ?", (drop_upto,))
                reasons.append("max_age_days")
            limit = self.options.max_bytes
            if self.disk_bytes() > limit:
                c.execute("DELETE FROM outbox_readings WHERE seq <= ?", (acked,))  # delivered ones go first
            total = self.disk_bytes()  # the whole database and its WAL: what the disk holds
            if total > limit:
                rows = c.execute("SELECT count(*) FROM outbox_readings").fetchone()[0]
                start = c.execute("SELECT min(seq) FROM outbox_readings WHERE seq > ?", (acked,)).fetchone()[
                    0
                ]
                per_row = self._bytes(exact=True) / max(rows, 1)  # bytes one reading takes, pages included
                n = min(rows, math.ceil((total - 0.9 * limit) / max(per_row, 1.0)))
                if n > 0 and start is not None:
                    drop_upto = start + n - 1
                    spans.append(self._span(start, drop_upto))
                    c.execute("DELETE FROM outbox_readings WHERE seq <= ?", (drop_upto,))
                    reasons.append("max_bytes")
            _prune_times(c)
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        if drop_upto is None:
            return None
        # The dropped rows are head..drop_upto, contiguous: the count is exact.
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

    def _span(self, lo: int, hi: int) -> tuple[int, int]:
        row = self._conn.execute(
            f"SELECT min(ts_us), max(ts_us) FROM {_ROWS} WHERE seq BETWEEN ? AND ?", (lo, hi)
        ).fetchone()
        return int(row[0]), int(row[1])

    def drop_unsendable(self, seq: int, reason: str) -> DropEvent | None:
        """Drop the oldest unsent reading, ``seq``, which the uplink can never send (larger than a message
        may be). Only the head of the unsent rows, so they stay one contiguous range. The event is queued
        like the limit drops (``enforce_limits`` hands it out) and returned; None when ``seq`` is not the
        head (already acknowledged or dropped)."""
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                acked = self._cursor("readings")
                row = c.execute(
                    f"SELECT seq, ts_us FROM {_ROWS} WHERE seq > ? ORDER BY seq LIMIT 1", (acked,)
                ).fetchone()
                if row is None or row[0] != seq:
                    c.execute("COMMIT")
                    return None
                c.execute("DELETE FROM outbox_readings WHERE seq = ?", (seq,))
                _prune_times(c)
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
            ts = format_ts(int(row[1]))
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
                " ('outbox_readings', 'outbox_times', 'outbox_events')"
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

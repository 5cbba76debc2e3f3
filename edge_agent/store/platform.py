"""The municipal platform's period buffer, in the state database: what was closed, sent and acknowledged.

A period (15 minutes by default) is closed once its end has passed: the ledger's energy per configured
meter/function is frozen into ``platform_period`` and stays there until the platform acknowledges it, so a
restart or an outage loses nothing. Beyond ``max_backlog_periods`` the oldest unacknowledged periods are
dropped, and the caller audits the drop. ``platform_state`` keeps where closing stopped, so a restart
resumes from the next period instead of skipping or repeating one.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from edge_agent.store.db import ensure_schema

__all__ = ["BufferedPeriod", "PeriodBuffer", "PeriodValue"]

_DDL = """
CREATE TABLE IF NOT EXISTS platform_period (
    start_ts  INTEGER PRIMARY KEY,  -- UTC epoch seconds of the period's start
    period_s  INTEGER NOT NULL,
    meters    TEXT NOT NULL,        -- JSON: [[meter_id, function_id, coding, value, error], ...]
    closed_ts REAL NOT NULL,
    attempts  INTEGER NOT NULL DEFAULT 0,
    acked_ts  REAL
);
CREATE INDEX IF NOT EXISTS platform_period_unacked ON platform_period (acked_ts, start_ts);
CREATE TABLE IF NOT EXISTS platform_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
_RETAIN_ACKED = 200  # acknowledged periods kept for `status` and a look back; older ones deleted


@dataclass(frozen=True, slots=True)
class PeriodValue:
    meter_id: str
    function_id: str
    coding: str
    value: float
    error: str


@dataclass(frozen=True, slots=True)
class BufferedPeriod:
    start: datetime  # UTC
    period_s: int
    values: tuple[PeriodValue, ...]
    attempts: int


class PeriodBuffer:
    """One connection's view of the buffer; every method is one short transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        ensure_schema(conn, _DDL)

    # -------------------------------------------------------------------------------------- closing

    def closed_until(self) -> datetime | None:
        row = self.conn.execute("SELECT value FROM platform_state WHERE key = 'closed_until'").fetchone()
        return datetime.fromtimestamp(float(row[0]), UTC) if row else None

    def begin(self, start: datetime) -> None:
        """The first run: closing starts at ``start`` (the period in progress); no-op once set."""
        with self.conn:
            self.conn.execute(
                "INSERT OR IGNORE INTO platform_state (key, value) VALUES ('closed_until', ?)",
                (str(int(start.timestamp())),),
            )

    def close(
        self,
        start: datetime,
        period_s: int,
        values: tuple[PeriodValue, ...],
        *,
        now: datetime,
        max_backlog: int,
    ) -> list[datetime]:
        """Freeze one period (idempotent: a period already closed keeps its first figures) and move
        ``closed_until`` to its end. Returns the starts of periods dropped to stay within ``max_backlog``."""
        start_ts = int(start.timestamp())
        meters = json.dumps([[v.meter_id, v.function_id, v.coding, v.value, v.error] for v in values])
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "INSERT OR IGNORE INTO platform_period (start_ts, period_s, meters, closed_ts)"
                " VALUES (?, ?, ?, ?)",
                (start_ts, period_s, meters, now.timestamp()),
            )
            self.conn.execute(
                "INSERT INTO platform_state (key, value) VALUES ('closed_until', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                " WHERE CAST(excluded.value AS INTEGER) > CAST(value AS INTEGER)",  # only forward
                (str(start_ts + period_s),),
            )
            dropped = [
                int(r[0])
                for r in self.conn.execute(
                    "SELECT start_ts FROM platform_period WHERE acked_ts IS NULL ORDER BY start_ts DESC"
                    " LIMIT -1 OFFSET ?",
                    (max_backlog,),
                )
            ]
            if dropped:
                self.conn.executemany(
                    "DELETE FROM platform_period WHERE start_ts = ?", [(d,) for d in dropped]
                )
        return [datetime.fromtimestamp(d, UTC) for d in sorted(dropped)]

    def period_s(self) -> int | None:
        """The period the platform's last `config` message set, kept across restarts."""
        row = self.conn.execute("SELECT value FROM platform_state WHERE key = 'period_s'").fetchone()
        return int(row[0]) if row else None

    def set_period_s(self, period_s: int) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO platform_state (key, value) VALUES ('period_s', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(period_s),),
            )

    # ------------------------------------------------------------------------------------- sending

    def pending(self, limit: int = 1000) -> list[BufferedPeriod]:
        """Unacknowledged periods, oldest first."""
        rows = self.conn.execute(
            "SELECT start_ts, period_s, meters, attempts FROM platform_period WHERE acked_ts IS NULL"
            " ORDER BY start_ts LIMIT ?",
            (limit,),
        ).fetchall()
        out = []
        for start_ts, period_s, meters, attempts in rows:
            values = tuple(
                PeriodValue(str(m), str(f), str(c), float(v), str(e)) for m, f, c, v, e in json.loads(meters)
            )
            out.append(
                BufferedPeriod(datetime.fromtimestamp(start_ts, UTC), int(period_s), values, int(attempts))
            )
        return out

    def sent(self, start: datetime) -> None:
        with self.conn:
            self.conn.execute(
                "UPDATE platform_period SET attempts = attempts + 1 WHERE start_ts = ?",
                (int(start.timestamp()),),
            )

    def ack(self, start: datetime, *, now: datetime) -> bool:
        """Mark one period acknowledged; False when it was not waiting (a duplicate or unknown ack)."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            cur = self.conn.execute(
                "UPDATE platform_period SET acked_ts = ? WHERE start_ts = ? AND acked_ts IS NULL",
                (now.timestamp(), int(start.timestamp())),
            )
            self.conn.execute(
                "DELETE FROM platform_period WHERE acked_ts IS NOT NULL AND start_ts NOT IN"
                " (SELECT start_ts FROM platform_period WHERE acked_ts IS NOT NULL"
                " ORDER BY start_ts DESC LIMIT ?)",
                (_RETAIN_ACKED,),
            )
        return cur.rowcount == 1

    # -------------------------------------------------------------------------------------- status

    def backlog(self) -> int:
        row = self.conn.execute("SELECT COUNT(*) FROM platform_period WHERE acked_ts IS NULL").fetchone()
        return int(row[0])

    def last_acked(self) -> datetime | None:
        row = self.conn.execute(
            "SELECT MAX(start_ts) FROM platform_period WHERE acked_ts IS NOT NULL"
        ).fetchone()
        return datetime.fromtimestamp(row[0], UTC) if row and row[0] is not None else None

"""The energy ledger: interval energy per meter from validated cumulative counters, in the state database.

Base interval 15 minutes (the municipal platform's period). A row of ``ledger_interval`` is one meter's
energy in one 15-minute slot (UTC epoch seconds of its start), split in four columns that are never
mixed: ``measured`` (between two readings at most one interval apart), ``estimated`` (a bounded gap
filled linearly), ``outlier_kept`` (a spike/out-of-range step kept by ``ledger.outliers: keep``; it
counts) and ``outlier_excluded`` (the same, excluded: shown, not counted). Hourly, daily and monthly
figures are computed on query by summing slots grouped in the site's time zone (so day and month
boundaries are local, and a zone with a half-hour offset still gets its own hours right).

How a reading becomes energy (``Ledger.ingest``):

- The first reading of a meter only sets its baseline (kept in ``ledger_state``, so a restart resumes).
- Increase ``new - last``, spread over the time between the two readings in proportion to the overlap
  with each slot (a 5-second pair across a slot boundary is split, as every ledger of this kind does).
- ``rollover`` flag: ``rollover - last + new``.
- ``counter_reset`` flag: the new value is the new baseline; nothing is counted (never a negative).
- ``counter_backwards`` flag: ignored, the baseline stays (the validator does the same).
- Any other decrease (the validator re-baselined after a persistent step): re-baseline, count nothing.
- ``spike`` / ``out_of_range`` flags: an outlier, booked in the outlier columns by ``ledger.outliers``.
  Excluded, the baseline does not move: if the counter was right after all, the energy is counted
  with the next good reading, so a cumulative counter never loses energy for good.
- Readings more than one interval apart are a gap. With at most ``max_gap_intervals`` whole intervals
  missing the increase is spread linearly and booked as ``estimated``; a longer gap is not filled: its
  energy stays in ``ledger_gap`` (reported as unallocated), never in the interval figures.
- Bad readings, non-numbers and ``not_finite`` readings are counted as ``invalid``.

Every event (rollover, reset, backwards, rebaseline, outlier, gap, invalid, out-of-order) is counted per
slot in ``ledger_quality`` with the energy involved, so the report can show what was done to the data.

Give the ledger its own connection (``open_state_db``): an ingest is one transaction.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Literal, Protocol
from zoneinfo import ZoneInfo

from drivers.base import PointBase, Quality, Reading
from edge_agent.config.codes import category
from edge_agent.store.db import ensure_schema

if TYPE_CHECKING:
    from edge_agent.config.load import LedgerOptions, LoadedConfig

__all__ = [
    "INTERVAL_S",
    "QUALITY_KINDS",
    "Bucket",
    "GapRow",
    "IngestStats",
    "Ledger",
    "LedgerError",
    "MeterInfo",
    "MeterTotals",
    "Period",
    "Resolution",
    "ValidatedLike",
    "canonical_unit",
    "meters_from_config",
    "parse_period",
]

INTERVAL_S = 900
Resolution = Literal["15min", "hour", "day", "month"]
QUALITY_KINDS: tuple[str, ...] = (
    "rollover",
    "counter_reset",
    "counter_backwards",
    "rebaseline",
    "outlier",
    "gap_filled",
    "gap_unfilled",
    "invalid",
    "out_of_order",
)
_OUTLIER_FLAGS = frozenset({"spike", "out_of_range"})

_DDL = """
CREATE TABLE IF NOT EXISTS ledger_interval (
    point_id         TEXT NOT NULL,
    slot             INTEGER NOT NULL,
    measured         REAL NOT NULL DEFAULT 0,
    estimated        REAL NOT NULL DEFAULT 0,
    outlier_kept     REAL NOT NULL DEFAULT 0,
    outlier_excluded REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (point_id, slot)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_interval_slot ON ledger_interval (slot);
CREATE TABLE IF NOT EXISTS ledger_quality (
    point_id TEXT NOT NULL,
    slot     INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    count    INTEGER NOT NULL,
    energy   REAL NOT NULL,
    PRIMARY KEY (point_id, slot, kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_gap (
    point_id TEXT NOT NULL,
    start_ts REAL NOT NULL,
    end_ts   REAL NOT NULL,
    missing  INTEGER NOT NULL,
    energy   REAL NOT NULL,
    filled   INTEGER NOT NULL,
    PRIMARY KEY (point_id, start_ts)
);
CREATE TABLE IF NOT EXISTS ledger_state (
    point_id TEXT PRIMARY KEY,
    value    REAL NOT NULL,
    ts       REAL NOT NULL
);
"""


class LedgerError(ValueError):
    """A meter the ledger cannot account (unknown unit, ...). Carries the point and a code."""

    def __init__(self, message: str, *, point: str, code: str) -> None:
        super().__init__(message)
        self.point = point
        self.code = code


class ValidatedLike(Protocol):
    """What ``ingest`` needs: edge_agent.validate.ValidatedReading has this shape."""

    @property
    def reading(self) -> Reading: ...

    @property
    def flags(self) -> Sequence[str]: ...


# ----------------------------------------------------------------------------------------------- units

# Ledger unit per category (first two digits of the code) and the multipliers from units meters use.
_UNITS: dict[str, tuple[str, dict[str, float]]] = {
    "01": ("kWh", {"kwh": 1.0, "wh": 0.001, "mwh": 1000.0}),
    "02": ("m3", {"m3": 1.0, "m³": 1.0, "l": 0.001}),
    "03": ("m3", {"m3": 1.0, "m³": 1.0, "nm3": 1.0}),
    "04": ("MJ", {"mj": 1.0, "gj": 1000.0, "kwh": 3.6}),
    "05": ("MJ", {"mj": 1.0, "gj": 1000.0, "kwh": 3.6}),
    "09": ("m3", {"m3": 1.0, "m³": 1.0}),
}


def canonical_unit(code: str, unit: str | None, *, point: str = "") -> tuple[str, float]:
    """(ledger unit, multiplier) for a meter of energy code ``code`` reading in ``unit``."""
    spec = _UNITS.get(code[:2])
    if spec is None:
        return (unit or "", 1.0)  # coal, oil...: kept in the meter's own unit
    ledger_unit, table = spec
    if unit is None:
        return ledger_unit, 1.0
    factor = table.get(unit.strip().lower())
    if factor is None:
        raise LedgerError(
            f"meter {point}: unit {unit!r} of code {code} is not one of {sorted(table)}",
            point=point,
            code="unit",
        )
    return ledger_unit, factor


# ----------------------------------------------------------------------------------------------- meters


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """One meter as the ledger and the report see it."""

    point_id: str
    code: str  # MOHURD energy item code
    unit: str  # ledger unit (kWh, m3, MJ...)
    scale: float = 1.0  # meter unit -> ledger unit
    rollover: float | None = None  # in the meter's unit
    name: str | None = None
    device_id: str | None = None
    zone: str | None = None
    institution: str | None = None
    parent: str | None = None  # the meter upstream (point id)
    it_load: bool = False
    in_tree: bool = True  # False: not listed under `meters:` (its place was assumed)

    @property
    def category(self) -> str:
        return category(self.code)

    @property
    def end_use(self) -> bool:
        """An item code (01A00, 01D10...), not a whole category (01000)."""
        return not self.code.endswith("000")


def meters_from_config(cfg: LoadedConfig) -> list[MeterInfo]:
    """Every cumulative point with an energy code, placed in the `meters:` tree of site.yaml.

    A meter missing from the tree is a main meter of its category, unless that category has a meter with
    the category code (01000...): then it is assumed to sit under that one (``in_tree=False`` says so).
    """
    nodes = {n.point: n for n in cfg.site.meters}
    found: list[tuple[str | None, PointBase]] = []
    for device, point in cfg.points():
        if point.cumulative and point.energy_code:
            found.append((device.id, point))
    mains_by_category: dict[str, str] = {}
    for _dev, p in found:
        assert p.energy_code is not None
        if p.energy_code.endswith("000") and ((p.id in nodes and nodes[p.id].parent is None) or not nodes):
            mains_by_category.setdefault(category(p.energy_code), p.id)

    def institution(pid: str) -> str | None:
        seen: set[str] = set()
        node = nodes.get(pid)
        while node is not None and pid not in seen:
            seen.add(pid)
            if node.institution:
                return node.institution
            if node.parent is None:
                return None
            pid = node.parent
            node = nodes.get(pid)
        return None

    out: list[MeterInfo] = []
    for dev_id, p in found:
        assert p.energy_code is not None
        unit, scale = canonical_unit(p.energy_code, p.unit, point=p.id)
        node = nodes.get(p.id)
        if node is not None:
            parent, it_load, in_tree = node.parent, node.it_load, True
        else:
            main = mains_by_category.get(category(p.energy_code))
            parent = main if main is not None and main != p.id else None
            it_load, in_tree = False, not nodes and parent is None
        out.append(
            MeterInfo(
                point_id=p.id,
                code=p.energy_code,
                unit=unit,
                scale=scale,
                rollover=p.rollover,
                name=p.name,
                device_id=dev_id,
                zone=cfg.point_zone(p.id),
                institution=institution(p.id) if node is not None else None,
                parent=parent,
                it_load=it_load,
                in_tree=in_tree,
            )
        )
    return out


# ----------------------------------------------------------------------------------------------- periods


@dataclass(frozen=True, slots=True)
class Period:
    """A report period in local dates: [start, end)."""

    label: str  # "2026Q3", "2026", "2026-07"
    kind: Literal["year", "quarter", "month"]
    start: date
    end: date  # exclusive

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """UTC start and end (exclusive) of the period in the site's time zone."""
        return _local_midnight(self.start, tz), _local_midnight(self.end, tz)

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def last_year(self) -> Period:
        y = self.start.year - 1
        return parse_period(self.label.replace(str(self.start.year), str(y), 1))


_PERIOD_RE = re.compile(r"^(\d{4})(?:Q([1-4])|-(\d{2}))?$")


def parse_period(text: str) -> Period:
    """``2026`` (year), ``2026Q3`` (quarter), ``2026-07`` (month). ValueError otherwise."""
    m = _PERIOD_RE.match(text.strip().upper())
    if m is None:
        raise ValueError(f"period {text!r}: expected YYYY, YYYYQn or YYYY-MM, e.g. 2026Q3")
    year = int(m.group(1))
    if m.group(2):
        q = int(m.group(2))
        start = date(year, 3 * q - 2, 1)
        end = date(year + 1, 1, 1) if q == 4 else date(year, 3 * q + 1, 1)
        return Period(f"{year}Q{q}", "quarter", start, end)
    if m.group(3):
        month = int(m.group(3))
        if not 1 <= month <= 12:
            raise ValueError(f"period {text!r}: month {month} is not 01-12")
        end = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
        return Period(f"{year}-{month:02d}", "month", date(year, month, 1), end)
    return Period(str(year), "year", date(year, 1, 1), date(year + 1, 1, 1))


def _local_midnight(d: date, tz: ZoneInfo) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC)


# ----------------------------------------------------------------------------------------------- results


@dataclass(slots=True)
class MeterTotals:
    """One meter's figures over a time range, in its ledger unit."""

    measured: float = 0.0
    estimated: float = 0.0
    outlier_kept: float = 0.0
    outlier_excluded: float = 0.0
    unallocated: float = 0.0  # energy of unfilled long gaps ending in the range (not in ``total``)
    slots: int = 0  # 15-minute slots with a figure
    counts: dict[str, int] = field(default_factory=dict)  # quality kind -> events

    @property
    def total(self) -> float:
        """What the ledger counts: measured + estimated + kept outliers."""
        return self.measured + self.estimated + self.outlier_kept

    @property
    def estimated_share(self) -> float:
        t = self.total
        return self.estimated / t if t > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Bucket:
    point_id: str
    start: datetime  # local start of the bucket
    measured: float
    estimated: float
    outlier_kept: float
    outlier_excluded: float

    @property
    def total(self) -> float:
        return self.measured + self.estimated + self.outlier_kept


@dataclass(frozen=True, slots=True)
class GapRow:
    point_id: str
    start: datetime
    end: datetime
    missing: int  # whole intervals without a reading
    energy: float  # ledger unit
    filled: bool


@dataclass(slots=True)
class _State:
    value: float  # the baseline: last reading booked
    ts: float
    seen_value: float = 0.0  # last excluded outlier after the baseline (not persisted)
    seen_ts: float = float("-inf")


@dataclass(slots=True)
class IngestStats:
    readings: int = 0
    booked: int = 0
    ignored: int = 0  # not a ledger meter


# ----------------------------------------------------------------------------------------------- ledger


class Ledger:
    """Interval energy per meter. Not thread-safe: call it from one task (the poll listener)."""

    def __init__(
        self,
        *,
        conn: sqlite3.Connection,
        meters: Sequence[MeterInfo],
        timezone: str = "Asia/Shanghai",
        max_gap_intervals: int = 4,
        outliers: Literal["exclude", "keep"] = "exclude",
    ) -> None:
        self.conn = conn
        self.tz = ZoneInfo(timezone)
        self.meters: dict[str, MeterInfo] = {m.point_id: m for m in meters}
        self.max_gap_intervals = max_gap_intervals
        self.outliers = outliers
        ensure_schema(conn, _DDL)
        self._state: dict[str, _State] = {
            pid: _State(value, ts)
            for pid, value, ts in conn.execute("SELECT point_id, value, ts FROM ledger_state").fetchall()
        }
        self._intervals: dict[tuple[str, int], list[float]] = {}
        self._quality: dict[tuple[str, int, str], list[float]] = {}
        self._gaps: list[tuple[str, float, float, int, float, int]] = []
        self._dirty: set[str] = set()

    def baselines(self) -> dict[str, tuple[float, datetime]]:
        """The last booked counter value and its time, per meter (persisted across restarts)."""
        return {pid: (st.value, datetime.fromtimestamp(st.ts, UTC)) for pid, st in self._state.items()}

    @classmethod
    def from_config(cls, cfg: LoadedConfig, conn: sqlite3.Connection) -> Ledger:
        opts: LedgerOptions = cfg.site.ledger
        return cls(
            conn=conn,
            meters=meters_from_config(cfg),
            timezone=cfg.site.timezone,
            max_gap_intervals=opts.max_gap_intervals,
            outliers=opts.outliers,
        )

    # ------------------------------------------------------------------------------------------ ingest

    def ingest(self, readings: Iterable[ValidatedLike]) -> IngestStats:
        """Book a batch of validated readings (any points; non-meters are skipped) in one transaction."""
        stats = IngestStats()
        for vr in readings:
            stats.readings += 1
            r = vr.reading
            meter = self.meters.get(r.point_id)
            if meter is None:
                stats.ignored += 1
                continue
            if self._one(meter, r, frozenset(vr.flags)):
                stats.booked += 1
        self._flush()
        return stats

    def _one(self, m: MeterInfo, r: Reading, flags: frozenset[str]) -> bool:
        pid = m.point_id
        t = r.ts.timestamp()
        v = r.value
        if (
            r.quality is Quality.BAD
            or isinstance(v, bool)
            or not isinstance(v, int | float)
            or not math.isfinite(v)
            or "not_finite" in flags
        ):
            self._q(pid, t, "invalid", 0.0)
            return False
        v = float(v)
        st = self._state.get(pid)
        if st is None:
            self._set_state(pid, v, t)
            return False
        if t <= st.ts:
            if not (t == st.ts and v == st.value):  # an exact repeat is harmless
                self._q(pid, t, "out_of_order", 0.0)
            return False
        if "rollover" in flags and m.rollover is not None and v < st.value:
            delta = m.rollover - st.value + v
            self._q(pid, t, "rollover", delta * m.scale)
        elif v < st.value:
            if "counter_reset" in flags:
                self._q(pid, t, "counter_reset", 0.0)
                self._set_state(pid, v, t)
            elif "counter_backwards" in flags:
                self._q(pid, t, "counter_backwards", (st.value - v) * m.scale)
            else:
                self._q(pid, t, "rebaseline", (st.value - v) * m.scale)
                self._set_state(pid, v, t)
            return False
        else:
            delta = v - st.value
        energy = delta * m.scale
        t0 = st.ts
        if flags & _OUTLIER_FLAGS:
            if self.outliers == "exclude":
                # The baseline stays: a glitch is never counted, and a true step is counted (as a gap)
                # by the next good reading. Booked as excluded: only what this reading adds to the last
                # one seen, so a run of suspect readings is not shown several times over.
                since_v, since_t = (st.seen_value, st.seen_ts) if st.seen_ts > st.ts else (st.value, st.ts)
                claimed = max(0.0, v - since_v) * m.scale
                self._q(pid, t, "outlier", claimed)
                self._book(pid, since_t, t, claimed, 3)
                st.seen_value, st.seen_ts = v, t
                return False
            self._q(pid, t, "outlier", energy)
            self._book(pid, t0, t, energy, 2)
            self._set_state(pid, v, t)
            return True
        span = t - t0
        missing = math.ceil(span / INTERVAL_S - 1e-9) - 1
        if missing <= 0:
            self._book(pid, t0, t, energy, 0)
        elif missing <= self.max_gap_intervals:
            self._book(pid, t0, t, energy, 1)
            self._q(pid, t, "gap_filled", energy)
            self._gaps.append((pid, t0, t, missing, energy, 1))
        else:
            self._q(pid, t, "gap_unfilled", energy)
            self._gaps.append((pid, t0, t, missing, energy, 0))
        self._set_state(pid, v, t)
        return True

    def _set_state(self, pid: str, v: float, t: float) -> None:
        self._state[pid] = _State(v, t)
        self._dirty.add(pid)

    def _q(self, pid: str, t: float, kind: str, energy: float) -> None:
        key = (pid, _slot(t), kind)
        acc = self._quality.get(key)
        if acc is None:
            self._quality[key] = [1.0, energy]
        else:
            acc[0] += 1
            acc[1] += energy

    def _book(self, pid: str, t0: float, t1: float, energy: float, column: int) -> None:
        """Spread ``energy`` over [t0, t1] in proportion to each slot's overlap."""
        if t1 <= t0:
            self._add(pid, _slot(t1), column, energy)
            return
        span = t1 - t0
        k = _slot(t0)
        last = _slot(t1 - 1e-6)
        while k <= last:
            lo, hi = max(t0, k), min(t1, k + INTERVAL_S)
            self._add(pid, k, column, energy * (hi - lo) / span)
            k += INTERVAL_S

    def _add(self, pid: str, slot: int, column: int, energy: float) -> None:
        acc = self._intervals.get((pid, slot))
        if acc is None:
            acc = self._intervals[(pid, slot)] = [0.0, 0.0, 0.0, 0.0]
        acc[column] += energy

    def _flush(self) -> None:
        if not (self._intervals or self._quality or self._gaps or self._dirty):
            return
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.executemany(
                "INSERT INTO ledger_interval"
                " (point_id, slot, measured, estimated, outlier_kept, outlier_excluded)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (point_id, slot) DO UPDATE SET"
                " measured = measured + excluded.measured, estimated = estimated + excluded.estimated,"
                " outlier_kept = outlier_kept + excluded.outlier_kept,"
                " outlier_excluded = outlier_excluded + excluded.outlier_excluded",
                [(p, s, *v) for (p, s), v in self._intervals.items()],
            )
            c.executemany(
                "INSERT INTO ledger_quality (point_id, slot, kind, count, energy) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (point_id, slot, kind) DO UPDATE SET count = count + excluded.count,"
                " energy = energy + excluded.energy",
                [(p, s, k, int(v[0]), v[1]) for (p, s, k), v in self._quality.items()],
            )
            c.executemany("INSERT OR REPLACE INTO ledger_gap VALUES (?, ?, ?, ?, ?, ?)", self._gaps)
            c.executemany(
                "INSERT OR REPLACE INTO ledger_state (point_id, value, ts) VALUES (?, ?, ?)",
                [(p, self._state[p].value, self._state[p].ts) for p in self._dirty],
            )
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        self._intervals.clear()
        self._quality.clear()
        self._gaps.clear()
        self._dirty.clear()

    # ------------------------------------------------------------------------------------------ queries

    def totals(self, start: datetime, end: datetime) -> dict[str, MeterTotals]:
        """Per meter (every configured meter, zero when silent), over UTC [start, end)."""
        lo, hi = _slot_bound(start), _slot_bound(end)
        out = {pid: MeterTotals() for pid in self.meters}
        for pid, m, e, ok, ox, n in self.conn.execute(
            "SELECT point_id, SUM(measured), SUM(estimated), SUM(outlier_kept), SUM(outlier_excluded),"
            " COUNT(*) FROM ledger_interval WHERE slot >= ? AND slot < ? GROUP BY point_id",
            (lo, hi),
        ):
            t = out.setdefault(pid, MeterTotals())
            t.measured, t.estimated, t.outlier_kept, t.outlier_excluded, t.slots = m, e, ok, ox, n
        for pid, kind, n in self.conn.execute(
            "SELECT point_id, kind, SUM(count) FROM ledger_quality WHERE slot >= ? AND slot < ?"
            " GROUP BY point_id, kind",
            (lo, hi),
        ):
            out.setdefault(pid, MeterTotals()).counts[kind] = int(n)
        for pid, energy in self.conn.execute(
            "SELECT point_id, SUM(energy) FROM ledger_gap WHERE filled = 0 AND end_ts >= ? AND end_ts < ?"
            " GROUP BY point_id",
            (start.timestamp(), end.timestamp()),
        ):
            out.setdefault(pid, MeterTotals()).unallocated = energy
        return out

    def series(
        self, start: datetime, end: datetime, resolution: Resolution, *, points: Iterable[str] | None = None
    ) -> list[Bucket]:
        """Buckets per meter in local time, ordered by meter then time; only buckets with data."""
        lo, hi = _slot_bound(start), _slot_bound(end)
        wanted = set(points) if points is not None else None
        acc: dict[tuple[str, datetime], list[float]] = {}
        keys: dict[int, datetime] = {}
        for pid, slot, m, e, ok, ox in self.conn.execute(
            "SELECT point_id, slot, measured, estimated, outlier_kept, outlier_excluded FROM ledger_interval"
            " WHERE slot >= ? AND slot < ? ORDER BY point_id, slot",
            (lo, hi),
        ):
            if wanted is not None and pid not in wanted:
                continue
            key = keys.get(slot)
            if key is None:
                key = keys[slot] = self._bucket_start(slot, resolution)
            a = acc.get((pid, key))
            if a is None:
                acc[(pid, key)] = [m, e, ok, ox]
            else:
                a[0] += m
                a[1] += e
                a[2] += ok
                a[3] += ox
        return [Bucket(pid, k, *v) for (pid, k), v in acc.items()]

    def _bucket_start(self, slot: int, resolution: Resolution) -> datetime:
        local = datetime.fromtimestamp(slot, self.tz)
        if resolution == "15min":
            return local
        if resolution == "hour":
            return local.replace(minute=0)
        if resolution == "day":
            return local.replace(hour=0, minute=0)
        return local.replace(day=1, hour=0, minute=0)

    def gaps(self, start: datetime, end: datetime) -> list[GapRow]:
        rows = self.conn.execute(
            "SELECT point_id, start_ts, end_ts, missing, energy, filled FROM ledger_gap"
            " WHERE end_ts >= ? AND end_ts < ? ORDER BY start_ts, point_id",
            (start.timestamp(), end.timestamp()),
        ).fetchall()
        return [
            GapRow(
                pid,
                datetime.fromtimestamp(s, self.tz),
                datetime.fromtimestamp(e, self.tz),
                int(n),
                float(en),
                bool(f),
            )
            for pid, s, e, n, en, f in rows
        ]

    def data_span(self, start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
        """Local start of the first and end of the last slot with data in [start, end), any meter."""
        row = self.conn.execute(
            "SELECT MIN(slot), MAX(slot) FROM ledger_interval WHERE slot >= ? AND slot < ?",
            (_slot_bound(start), _slot_bound(end)),
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return (
            datetime.fromtimestamp(row[0], self.tz),
            datetime.fromtimestamp(row[1] + INTERVAL_S, self.tz),
        )

    # ------------------------------------------------------------------------------------------ the tree

    def children(self, pid: str) -> list[MeterInfo]:
        return [m for m in self.meters.values() if m.parent == pid]

    def roots(self) -> list[MeterInfo]:
        """Main meters: what category totals add up (each unit of energy once)."""
        return [m for m in self.meters.values() if m.parent is None or m.parent not in self.meters]

    def end_use_split(self, pid: str, totals: Mapping[str, MeterTotals]) -> dict[str, float]:
        """The end-use meters below ``pid`` (first item-coded level), summed by code.

        A sub-main with a category code is looked through; a meter below an end-use meter (the IT load
        under the data centre) is part of it and not counted again.
        """
        out: dict[str, float] = {}
        for child in self.children(pid):
            if child.end_use:
                out[child.code] = out.get(child.code, 0.0) + totals[child.point_id].total
            else:
                for code, v in self.end_use_split(child.point_id, totals).items():
                    out[code] = out.get(code, 0.0) + v
        return out


def _slot(t: float) -> int:
    return int(t // INTERVAL_S) * INTERVAL_S


def _slot_bound(dt: datetime) -> int:
    """First slot at or after ``dt``."""
    t = dt.timestamp()
    return math.ceil(t / INTERVAL_S) * INTERVAL_S

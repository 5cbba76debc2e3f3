"""The energy ledger: interval energy per meter from validated cumulative counters, in the state database.

Base interval 15 minutes (the municipal platform's period). A row of ``ledger_interval`` is one meter's
energy in one 15-minute slot (UTC epoch seconds of its start), split in four columns that are never
mixed: ``measured`` (between two readings at most one interval apart), ``estimated`` (a gap or held
readings, allocated), ``outlier_kept`` (a spike/out-of-range step kept by ``ledger.outliers: keep``; it
counts) and ``outlier_excluded`` (the same, excluded: shown, not counted). Hourly, daily and monthly
figures are computed on query by summing slots grouped in the site's time zone (so day and month
boundaries are local, and a zone with a half-hour offset still gets its own hours right).

How a reading becomes energy (``Ledger.ingest``). The invariant an auditor checks (``Ledger.reconcile``):
for every meter, booked energy + energy held + audited exclusions = the counter difference (with
rollovers) since its first reading. Nothing the counter shows is dropped without an exclusion row
(``ledger_exclusion``: time, counter values before and after, amount, reason), and nothing is booked that
the counter does not show.

- The first reading of a meter only sets its baseline (kept in ``ledger_state``, so a restart resumes;
  its origin in ``ledger_origin`` for the reconciliation).
- Increase ``new - last``, spread over the time between the two readings in proportion to the overlap
  with each slot (a 5-second pair across a slot boundary is split, as every ledger of this kind does).
- ``rollover`` flag: ``rollover - last + new``.
- ``counter_reset`` flag: the new value is the new baseline; nothing is booked, the (negative) difference
  is an exclusion with reason ``counter_reset``.
- ``counter_backwards`` flag: ignored, the baseline stays (the validator does the same).
- ``rebaseline`` flag (the validator accepted a persistent step: a meter swapped for one reading higher,
  a CT ratio change...): the step up to the first suspect reading is an exclusion with reason ``step``,
  never booked as energy; what the counter added from that first suspect reading on is booked. Such a
  step is a finding: ``pending`` until an operator confirms it (not energy) or books it (energy after
  all: allocated like a gap over the time since the reading before it, and no longer excluded), with
  ``edge-agent meter confirm|book``; ``audit_steps`` puts each one into the audit chain.
- Any other decrease (the validator re-baselined after a persistent step): re-baseline, book nothing,
  exclusion with reason ``rebaseline``.
- ``spike`` / ``out_of_range`` flags: an outlier, handled by ``ledger.outliers``. ``keep``: booked in
  the ``outlier_kept`` column (it counts). ``exclude``: not booked and the baseline does not move: if the
  counter was right after all, the energy is counted with the next good reading (so it was not
  excluded: only the event is counted in ``ledger_quality``); if it stays, the validator re-baselines
  and the step becomes an exclusion. When the validator confirms the suspects were a change of load
  (``load_change``: an air conditioner starting), they are re-counted as ``start_up``, not outliers.
- Readings more than one interval apart are a gap. The increase over a gap of any length is booked as
  ``estimated``, spread by the meter's own profile of comparable days (the mean of each local
  time-of-day slot over its last PROFILE_DAYS complete working days, or rest days, from the site's
  calendar) or linearly when there is no such history (``ledger_gap`` keeps the gap, its energy and the
  method; the report lists gaps longer than ``max_gap_intervals`` as data-quality items).
- ``clock_unsynced`` / ``clock_step`` flags (the gateway's clock cannot be trusted): the reading is held,
  never booked at its timestamp. Its increase is kept in ``ledger_hold`` and booked, with the next
  reading taken on a trusted clock, over the time from the last trusted reading to it (as a gap:
  estimated). A meter's first reading under such a flag is skipped (no baseline at a wrong time). The
  validator's spike and step flags on such readings are ignored (they come from rates over wrong times).
- Bad readings, non-numbers and ``not_finite`` readings are counted as ``invalid``.

Every event (rollover, reset, backwards, rebaseline, step, outlier, gap, clock hold, invalid,
out-of-order) is counted per slot in ``ledger_quality`` with the energy involved, so the report can show
what was done to the data.

Give the ledger its own connection (``open_state_db``): an ingest is one transaction.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol
from zoneinfo import ZoneInfo

from drivers.base import PointBase, Quality, Reading
from edge_agent.config.codes import category
from edge_agent.core.logs import get_logger
from edge_agent.store.db import ensure_schema

if TYPE_CHECKING:
    from edge_agent.config.load import LedgerOptions, LoadedConfig
    from edge_agent.store.audit import AuditLog

__all__ = [
    "INTERVAL_S",
    "QUALITY_KINDS",
    "Bucket",
    "Exclusion",
    "GapRow",
    "IngestStats",
    "Ledger",
    "LedgerError",
    "MeterInfo",
    "MeterTotals",
    "Period",
    "Reconciliation",
    "Resolution",
    "ValidatedLike",
    "canonical_unit",
    "meters_from_config",
    "parse_period",
]

INTERVAL_S = 900


def _log() -> Any:
    # Looked up at each use, not bound at import: a logger bound before configure_logging() would keep
    # structlog's default console renderer (plain text on stdout, not the agent's JSON lines).
    return get_logger("edge_agent.ledger")


Resolution = Literal["15min", "hour", "day", "month"]
QUALITY_KINDS: tuple[str, ...] = (
    "rollover",
    "counter_reset",
    "counter_backwards",
    "rebaseline",
    "step",
    "meter_replaced",
    "outlier",
    "start_up",
    "gap_filled",
    "step_booked",
    "gap_unfilled",  # only in databases written before gaps of any length were allocated
    "clock_held",
    "invalid",
    "out_of_order",
)
_OUTLIER_FLAGS = frozenset({"spike", "out_of_range"})
_CLOCK_FLAGS = frozenset({"clock_unsynced", "clock_step"})

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
    method   TEXT NOT NULL DEFAULT 'linear',
    PRIMARY KEY (point_id, start_ts)
);
CREATE TABLE IF NOT EXISTS ledger_state (
    point_id TEXT PRIMARY KEY,
    value    REAL NOT NULL,
    ts       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_origin (
    point_id TEXT PRIMARY KEY,
    value    REAL NOT NULL,
    ts       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_hold (
    point_id TEXT PRIMARY KEY,
    pending  REAL NOT NULL,
    count    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_exclusion (
    point_id   TEXT NOT NULL,
    ts         REAL NOT NULL,
    from_value REAL NOT NULL,
    to_value   REAL NOT NULL,
    amount     REAL NOT NULL,
    reason     TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT '',
    since_ts   REAL,
    audited    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (point_id, ts, reason)
);
"""
# Columns added after the first release: (table, column, declaration) for databases created before them.
_ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("ledger_gap", "method", "TEXT NOT NULL DEFAULT 'linear'"),
    ("ledger_exclusion", "status", "TEXT NOT NULL DEFAULT ''"),
    ("ledger_exclusion", "since_ts", "REAL"),
    ("ledger_exclusion", "audited", "INTEGER NOT NULL DEFAULT 0"),
)

_EXCLUSION_COLUMNS = "point_id, ts, from_value, to_value, amount, reason, status, since_ts"

# A gap is spread by the meter's own profile: the mean of each local time-of-day slot over the last
# PROFILE_DAYS complete days of the same kind (working / rest day) within PROFILE_LOOKBACK_DAYS.
PROFILE_DAYS = 4
PROFILE_LOOKBACK_DAYS = 42
_COMPLETE_DAY = 0.9  # share of a day's slots measured (not estimated) for it to count as history


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
    outlier_excluded: float = 0.0  # only in databases written before excluded outliers stopped being booked
    unallocated: float = 0.0  # energy of unfilled long gaps ending in the range (old databases only)
    excluded: float = 0.0  # counter increase not booked: steps re-baselined, meter swaps (ledger unit)
    rebased: float = 0.0  # counter decreases not booked: resets, re-baselines (ledger unit, <= 0)
    held: float = 0.0  # increase held under an untrusted clock, not yet booked (now, not per range)
    pending_steps: float = 0.0  # of ``excluded``: detected steps not yet confirmed or booked by an operator
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
    method: str = "linear"  # how the energy was spread: "profile" (comparable days) or "linear"


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A counter difference the ledger did not book, and why."""

    point_id: str
    ts: datetime
    from_value: float  # counter values, the meter's unit
    to_value: float
    amount: float  # ledger unit; > 0: energy the counter shows that was not booked
    reason: str  # step | counter_reset | rebaseline | meter_replaced
    # A step the ledger detected by itself is a finding: "pending" until an operator confirms it
    # ("confirmed": not energy) or books it ("booked": energy after all, allocated over since..ts).
    status: str = ""
    since: datetime | None = None  # the last reading before the step


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """One meter's whole history: booked + held + excluded must equal the counter difference."""

    point_id: str
    counter_difference: float  # (last - first + rollovers x range) x scale, ledger unit
    booked: float
    held: float
    excluded: float  # signed sum of the exclusions

    @property
    def discrepancy(self) -> float:
        return self.counter_difference - (self.booked + self.held + self.excluded)


@dataclass(slots=True)
class _State:
    value: float  # the baseline: last counter value followed (booked, held or re-baselined)
    ts: float  # end of the last booking: the next one starts here
    pending: float = 0.0  # ledger-unit increase held under an untrusted clock
    held: int = 0
    # excluded outliers (value, time) since the baseline, not persisted
    suspects: list[tuple[float, float]] = field(default_factory=list)


@dataclass(slots=True)
class IngestStats:
    readings: int = 0
    booked: int = 0
    ignored: int = 0  # not a ledger meter
    steps: int = 0  # counter steps detected (excluded, pending until confirmed or booked)


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
        working_day: Callable[[date], bool] | None = None,
    ) -> None:
        self.conn = conn
        self.tz = ZoneInfo(timezone)
        self.meters: dict[str, MeterInfo] = {m.point_id: m for m in meters}
        self.max_gap_intervals = max_gap_intervals
        self.outliers = outliers
        # Which days are comparable for a gap's profile: the site's calendar (from_config), else weekdays.
        self._working_day = working_day or (lambda d: d.weekday() < 5)
        self._day_kinds: dict[date, bool] = {}
        ensure_schema(conn, _DDL)
        _add_missing_columns(conn)
        self._state: dict[str, _State] = {
            pid: _State(value, ts)
            for pid, value, ts in conn.execute("SELECT point_id, value, ts FROM ledger_state").fetchall()
        }
        for pid, pending, count in conn.execute("SELECT point_id, pending, count FROM ledger_hold"):
            if pid in self._state:
                self._state[pid].pending, self._state[pid].held = pending, count
        self._origins: list[tuple[str, float, float]] = []
        self._exclusions: list[tuple[str, float, float, float, float, str, str, float | None]] = []
        self._intervals: dict[tuple[str, int], list[float]] = {}
        self._quality: dict[tuple[str, int, str], list[float]] = {}
        self._gaps: list[tuple[str, float, float, int, float, int, str]] = []
        self._dirty: set[str] = set()
        self._pending_status: tuple[str, float, str, str] | None = None

    def baselines(self) -> dict[str, tuple[float, datetime]]:
        """The last booked counter value and its time, per meter (persisted across restarts)."""
        return {pid: (st.value, datetime.fromtimestamp(st.ts, UTC)) for pid, st in self._state.items()}

    @classmethod
    def from_config(cls, cfg: LoadedConfig, conn: sqlite3.Connection) -> Ledger:
        from edge_agent.config.calendarcheck import working_days

        opts: LedgerOptions = cfg.site.ledger
        return cls(
            conn=conn,
            meters=meters_from_config(cfg),
            timezone=cfg.site.timezone,
            max_gap_intervals=opts.max_gap_intervals,
            outliers=opts.outliers,
            working_day=working_days(cfg),
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
        stats.steps = sum(1 for x in self._exclusions if x[6] == "pending")
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
        held = bool(flags & _CLOCK_FLAGS)
        if held:
            # The validator judged spikes and steps by rates over timestamps we cannot trust: a stale
            # clock compresses a weekend into five minutes. Follow the counter; book it to the gap later.
            flags = flags - _OUTLIER_FLAGS - {"rebaseline"}
        st = self._state.get(pid)
        if st is None:
            if held:  # no baseline at a time we cannot trust
                self._q(pid, t, "clock_held", 0.0)
                return False
            self._set_state(pid, v, t)
            self._origins.append((pid, v, t))
            return False
        # A held reading's timestamp is not trusted, so it is not compared with the baseline's; its slot
        # in ledger_quality is the baseline's (the last trusted time), never a wrong one.
        at = st.ts if held else t
        if not held and t <= st.ts:
            if not (t == st.ts and v == st.value):  # an exact repeat is harmless
                self._q(pid, t, "out_of_order", 0.0)
            return False
        if "rebaseline" in flags:
            # The validator accepted a persistent step: the counter is somewhere else now. Not energy.
            if not held and self._split_step(m, st, v, t):
                return True
            self._exclude(m, st, at, v, "step" if v >= st.value else "rebaseline")
            self._advance(st, pid, v, t, held)
            return False
        rolled = False
        if (
            m.rollover is not None
            and v < st.value
            and (
                "rollover" in flags
                # the validator's baseline moved past an excluded reading: judge the wrap from ours
                or (
                    not flags & {"counter_reset", "counter_backwards"}
                    and m.rollover - st.value + v <= 0.1 * m.rollover
                )
            )
        ):
            delta = m.rollover - st.value + v
            rolled = True
        elif v < st.value:
            if "counter_reset" in flags:
                self._exclude(m, st, at, v, "counter_reset")
                self._advance(st, pid, v, t, held)
            elif "counter_backwards" in flags:
                self._q(pid, at, "counter_backwards", (st.value - v) * m.scale)
            else:
                self._exclude(m, st, at, v, "rebaseline")
                self._advance(st, pid, v, t, held)
            return False
        else:
            delta = v - st.value
        energy = delta * m.scale
        outlier = bool(flags & _OUTLIER_FLAGS)
        if outlier:
            # Counted as an event with the increase it claims. Excluded: the baseline stays, a glitch is
            # never counted, and a true step is counted by the next good reading or re-baselined.
            self._q(pid, at, "outlier", energy)
            if self.outliers == "exclude":
                if len(st.suspects) < 64:
                    st.suspects.append((v, t))
                return False
        if rolled:  # counted only now that the reading is followed (the reconciliation adds a range each)
            self._q(pid, at, "rollover", energy)
        if held:
            if st.held == 0:
                _log().warning("ledger_clock_hold_started", point=pid, value=v)
            st.pending += energy
            st.held += 1
            self._q(pid, at, "clock_held", energy)
            self._advance(st, pid, v, t, held)
            return False
        if "load_change" in flags:
            # The validator saw the suspect readings before this one confirmed by a sustained new rate
            # (an air conditioner starting): they were a start-up, not outliers. Re-counted as such.
            for sv, sts in st.suspects:
                claimed = (sv - st.value) * m.scale
                self._q(pid, sts, "outlier", -claimed, count=-1)
                self._q(pid, sts, "start_up", claimed)
        self._book_span(m, st, t, energy, outlier, [x for _, x in st.suspects])
        self._advance(st, pid, v, t, held)
        return True

    def _book_span(
        self, m: MeterInfo, st: _State, t: float, energy: float, outlier: bool, via: Sequence[float] = ()
    ) -> None:
        """Book ``energy`` (and what was held) over [baseline time, t]: measured, or a gap's estimate.

        ``via``: times of readings in between that were not followed (excluded outliers): the counter was
        read then, so the span is not a gap unless its readings are more than an interval apart."""
        pid, t0 = m.point_id, st.ts
        times = [t0, *sorted(x for x in via if t0 < x < t), t]
        widest = max(b - a for a, b in itertools.pairwise(times))
        missing = math.ceil(widest / INTERVAL_S - 1e-9) - 1
        pending, held, st.pending, st.held = st.pending, st.held, 0.0, 0
        if held:
            _log().info("ledger_clock_hold_released", point=pid, readings=held, energy=pending, unit=m.unit)
        if missing <= 0 and pending == 0.0:
            self._book(pid, t0, t, energy, 2 if outlier else 0)
            return
        # A gap (of any length) or readings held under an untrusted clock: the counter says how much was
        # used, not when. Spread linearly over the span and marked estimated.
        if outlier:
            self._book(pid, t0, t, energy, 2)
            energy = 0.0
        total = energy + pending
        method = self._allocate(pid, t0, t, total)
        self._q(pid, t, "gap_filled", total)
        self._gaps.append((pid, t0, t, max(missing, 0), total, 1, method))

    def _split_step(self, m: MeterInfo, st: _State, v: float, t: float) -> bool:
        """A step up the validator re-baselined after suspect readings: exclude only the largest jump
        between consecutive readings (the swap, with its own interval's energy, unknowable apart from it)
        and book what the counter added before and after it. False when the readings do not rise steadily
        (then the whole difference is excluded)."""
        seq = [(st.value, st.ts), *((sv, sts) for sv, sts in st.suspects if st.ts < sts < t), (v, t)]
        if len(seq) < 3 or any(b[0] < a[0] or b[1] <= a[1] for a, b in itertools.pairwise(seq)):
            return False
        k = max(range(1, len(seq)), key=lambda i: seq[i][0] - seq[i - 1][0])
        pid = m.point_id
        via = [x for _, x in seq]
        if k > 1:
            self._book_span(m, st, seq[k - 1][1], (seq[k - 1][0] - st.value) * m.scale, False, via)
            self._advance(st, pid, seq[k - 1][0], seq[k - 1][1], False)
        self._exclude(m, st, seq[k][1], seq[k][0], "step")
        self._advance(st, pid, seq[k][0], seq[k][1], False)
        if k < len(seq) - 1:
            self._book_span(m, st, t, (v - st.value) * m.scale, False, via)
            self._advance(st, pid, v, t, False)
        return True

    def _advance(self, st: _State, pid: str, v: float, t: float, held: bool) -> None:
        if st.ts < t and not held:
            st.suspects.clear()
        st.value = v
        if not held:
            st.ts = t
        self._dirty.add(pid)

    def _exclude(self, m: MeterInfo, st: _State, t: float, v: float, reason: str) -> None:
        amount = (v - st.value) * m.scale
        # A step up found by the ledger itself may be a swap or energy the meter caught up on: a finding
        # for an operator (audited by audit_steps), held until confirmed or booked.
        status = "pending" if reason == "step" and amount > 0 else ""
        _log().info(
            "ledger_counter_excluded", point=m.point_id, reason=reason, before=st.value, after=v,
            amount=amount, unit=m.unit, status=status or None,
        )  # fmt: skip
        self._q(m.point_id, t, reason, amount)
        self._exclusions.append((m.point_id, t, st.value, v, amount, reason, status, st.ts))

    def replace_meter(
        self, point_id: str, *, old_final: float, new_initial: float, at: datetime
    ) -> Exclusion:
        """Record a meter swap: the old meter's last reading is booked up to ``at``, the jump to the new
        meter's first reading is excluded (reason ``meter_replaced``) and becomes the baseline.

        ``at`` must be after the ledger's last booking of this meter (LedgerError otherwise: a swap
        earlier than readings already booked cannot be placed without a rebuild).
        """
        m = self.meters.get(point_id)
        if m is None:
            raise LedgerError(f"meter {point_id}: not a ledger meter", point=point_id, code="unknown_meter")
        t = at.timestamp()
        st = self._state.get(point_id)
        if st is None:
            self._set_state(point_id, new_initial, t)
            self._origins.append((point_id, new_initial, t))
        else:
            if t <= st.ts:
                raise LedgerError(
                    f"meter {point_id}: replacement at {at.isoformat()} is not after the last booked reading"
                    f" ({datetime.fromtimestamp(st.ts, UTC).isoformat()})",
                    point=point_id,
                    code="replace_before_baseline",
                )
            if old_final < st.value:
                raise LedgerError(
                    f"meter {point_id}: old final reading {old_final:g} is below the last booked"
                    f" {st.value:g}",
                    point=point_id,
                    code="replace_old_final",
                )
            self._book_span(m, st, t, (old_final - st.value) * m.scale, False)
            self._advance(st, point_id, old_final, t, False)
            self._exclude(m, st, t, new_initial, "meter_replaced")
            self._advance(st, point_id, new_initial, t, False)
        self._flush()
        return Exclusion(
            point_id, at, old_final, new_initial, (new_initial - old_final) * m.scale, "meter_replaced"
        )

    def _set_state(self, pid: str, v: float, t: float) -> None:
        old = self._state.get(pid)
        self._state[pid] = _State(v, t, old.pending, old.held) if old is not None else _State(v, t)
        self._dirty.add(pid)

    def _q(self, pid: str, t: float, kind: str, energy: float, count: int = 1) -> None:
        key = (pid, _slot(t), kind)
        acc = self._quality.get(key)
        if acc is None:
            self._quality[key] = [float(count), energy]
        else:
            acc[0] += count
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

    def _allocate(self, pid: str, t0: float, t1: float, energy: float) -> str:
        """Book estimated ``energy`` over [t0, t1]: shaped by the meter's profile of comparable days when
        it has one ("profile"), else linearly ("linear"). Either way the whole amount is booked."""
        weights = self._profile_weights(pid, t0, t1)
        if weights is None:
            self._book(pid, t0, t1, energy, 1)
            return "linear"
        total = sum(weights.values())
        for slot, w in weights.items():
            self._add(pid, slot, 1, energy * w / total)
        return "profile"

    def _is_working(self, d: date) -> bool:
        known = self._day_kinds.get(d)
        if known is None:
            known = self._day_kinds[d] = bool(self._working_day(d))
        return known

    def _profile_weights(self, pid: str, t0: float, t1: float) -> dict[int, float] | None:
        """Weight per slot of [t0, t1] from the booked history of the same meter: the mean of the same
        local time-of-day slot over the last PROFILE_DAYS complete days of the same kind (working or
        rest day), times the slot's overlap with the span. None when a kind of day in the span has no
        such history, or the profile is flat zero (then the caller goes linear)."""
        if t1 - t0 < 2 * INTERVAL_S:
            return None
        first = datetime.fromtimestamp(t0, self.tz).date()
        lo = _local_midnight(first - timedelta(days=PROFILE_LOOKBACK_DAYS), self.tz).timestamp()
        hi = _slot(t0)  # history ends where the span starts; that day is incomplete, so never counted
        days: dict[date, dict[tuple[int, int], list[float]]] = {}

        def take(slot: int, measured: float, estimated: float, kept: float) -> None:
            local = datetime.fromtimestamp(slot, self.tz)
            acc = days.setdefault(local.date(), {}).setdefault((local.hour, local.minute), [0.0, 0.0])
            acc[0] += measured + kept
            acc[1] += estimated

        for slot, measured, estimated, kept in self.conn.execute(
            "SELECT slot, measured, estimated, outlier_kept FROM ledger_interval"
            " WHERE point_id = ? AND slot >= ? AND slot < ?",
            (pid, lo, hi),
        ):
            take(slot, measured, estimated, kept)
        for (p, slot), v in self._intervals.items():  # this batch, not flushed yet
            if p == pid and lo <= slot < hi:
                take(slot, v[0], v[1], v[2])
        profiles: dict[bool, dict[tuple[int, int], float]] = {}
        used: dict[bool, int] = {}
        for d in sorted(days, reverse=True):
            if d >= first:
                continue
            kind = self._is_working(d)
            if used.get(kind, 0) >= PROFILE_DAYS:
                continue
            slots = days[d]
            span = _local_midnight(d + timedelta(days=1), self.tz) - _local_midnight(d, self.tz)
            day_slots = span.total_seconds() / INTERVAL_S
            if sum(1 for v in slots.values() if v[1] == 0.0) < _COMPLETE_DAY * day_slots:
                continue  # a day with its own gap: not a profile
            used[kind] = used.get(kind, 0) + 1
            sums = profiles.setdefault(kind, {})
            for tod, v in slots.items():
                sums[tod] = sums.get(tod, 0.0) + v[0]
        weights: dict[int, float] = {}
        k = _slot(t0)
        while k < t1:
            local = datetime.fromtimestamp(k, self.tz)
            kind = self._is_working(local.date())
            prof = profiles.get(kind)
            if prof is None:
                return None
            overlap = (min(t1, k + INTERVAL_S) - max(t0, k)) / INTERVAL_S
            weights[k] = max(0.0, prof.get((local.hour, local.minute), 0.0)) / used[kind] * overlap
            k += INTERVAL_S
        if sum(weights.values()) <= 0.0:
            return None
        return weights

    def _add(self, pid: str, slot: int, column: int, energy: float) -> None:
        acc = self._intervals.get((pid, slot))
        if acc is None:
            acc = self._intervals[(pid, slot)] = [0.0, 0.0, 0.0, 0.0]
        acc[column] += energy

    def _flush(self) -> None:
        if not (
            self._intervals
            or self._quality
            or self._gaps
            or self._dirty
            or self._exclusions
            or self._pending_status
        ):
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
            c.executemany(
                "INSERT OR REPLACE INTO ledger_gap"
                " (point_id, start_ts, end_ts, missing, energy, filled, method) VALUES (?, ?, ?, ?, ?, ?, ?)",
                self._gaps,
            )
            c.executemany(
                "INSERT OR REPLACE INTO ledger_state (point_id, value, ts) VALUES (?, ?, ?)",
                [(p, self._state[p].value, self._state[p].ts) for p in self._dirty],
            )
            c.executemany(
                "INSERT OR REPLACE INTO ledger_hold (point_id, pending, count) VALUES (?, ?, ?)",
                [(p, self._state[p].pending, self._state[p].held) for p in self._dirty],
            )
            c.executemany("INSERT OR IGNORE INTO ledger_origin VALUES (?, ?, ?)", self._origins)
            c.executemany(
                "INSERT INTO ledger_exclusion"
                " (point_id, ts, from_value, to_value, amount, reason, status, since_ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (point_id, ts, reason)"
                " DO UPDATE SET to_value = excluded.to_value, amount = amount + excluded.amount",
                self._exclusions,
            )
            if self._pending_status is not None:
                pid, ts, reason, status = self._pending_status
                c.execute(
                    "UPDATE ledger_exclusion SET status = ? WHERE point_id = ? AND ts = ? AND reason = ?",
                    (status, pid, ts, reason),
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
        self._origins.clear()
        self._exclusions.clear()
        self._pending_status = None

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
            " GROUP BY point_id, kind HAVING SUM(count) != 0",
            (lo, hi),
        ):
            out.setdefault(pid, MeterTotals()).counts[kind] = int(n)
        for pid, energy in self.conn.execute(
            "SELECT point_id, SUM(energy) FROM ledger_gap WHERE filled = 0 AND end_ts >= ? AND end_ts < ?"
            " GROUP BY point_id",
            (start.timestamp(), end.timestamp()),
        ):
            out.setdefault(pid, MeterTotals()).unallocated = energy
        for pid, up, down, pending in self.conn.execute(
            "SELECT point_id, SUM(MAX(amount, 0)), SUM(MIN(amount, 0)),"
            " SUM(CASE WHEN status = 'pending' THEN amount ELSE 0 END) FROM ledger_exclusion"
            " WHERE ts >= ? AND ts < ? AND status != 'booked' GROUP BY point_id",
            (start.timestamp(), end.timestamp()),
        ):
            t = out.setdefault(pid, MeterTotals())
            t.excluded, t.rebased, t.pending_steps = float(up), float(down), float(pending)
        for pid, st in self._state.items():
            if st.pending and pid in out:
                out[pid].held = st.pending
        return out

    def exclusions(
        self, start: datetime, end: datetime, *, status: str | None = None, point_id: str | None = None
    ) -> list[Exclusion]:
        """Every counter difference the ledger excluded in UTC [start, end), oldest first (booked steps
        included, with status "booked"); only those of ``status`` / ``point_id`` when given."""
        sql = f"SELECT {_EXCLUSION_COLUMNS} FROM ledger_exclusion WHERE ts >= ? AND ts < ?"
        args: list[Any] = [start.timestamp(), end.timestamp()]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        if point_id is not None:
            sql += " AND point_id = ?"
            args.append(point_id)
        return [self._exclusion_row(row) for row in self.conn.execute(sql + " ORDER BY ts, point_id", args)]

    def _exclusion_row(self, row: Sequence[Any]) -> Exclusion:
        pid, ts, fv, tv, amount, reason, status, since = row
        return Exclusion(
            pid,
            datetime.fromtimestamp(ts, self.tz),
            fv,
            tv,
            amount,
            reason,
            status,
            None if since is None else datetime.fromtimestamp(since, self.tz),
        )

    def pending_steps(self, point_id: str | None = None) -> list[Exclusion]:
        """Detected steps not yet confirmed or booked, oldest first."""
        return self.exclusions(datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC),
                               status="pending", point_id=point_id)  # fmt: skip

    def resolve_step(
        self,
        point_id: str,
        *,
        action: Literal["confirm", "book"],
        at: datetime | None = None,
        since: datetime | None = None,
    ) -> Exclusion:
        """Close a pending step finding. ``confirm``: it was not energy (a swap, a CT change), the
        exclusion stands. ``book``: it was energy (a meter catching up): the amount is booked as estimated
        over [since, at] (default since: the last reading before the step), shaped like a gap, and leaves
        the exclusions. ``at`` picks the step (its time, to the second); optional when the meter has one.
        LedgerError when there is no such pending step."""
        steps = self.pending_steps(point_id)
        if at is not None:
            steps = [x for x in steps if abs(x.ts.timestamp() - at.timestamp()) < 1.0]
        if len(steps) != 1:
            which = "" if at is None else f" at {at.isoformat()}"
            known = ", ".join(x.ts.isoformat() for x in self.pending_steps(point_id)) or "none"
            raise LedgerError(
                f"meter {point_id}: {'no' if not steps else 'more than one'} pending step{which}"
                f" (pending: {known})",
                point=point_id,
                code="no_pending_step" if not steps else "ambiguous_step",
            )
        ex = steps[0]
        t = ex.ts.timestamp()
        status = "confirmed" if action == "confirm" else "booked"
        method = None
        if action == "book":
            t0 = (since or ex.since or ex.ts).timestamp()
            if t0 > t:
                raise LedgerError(
                    f"meter {point_id}: --since {since} is after the step ({ex.ts.isoformat()})",
                    point=point_id,
                    code="since_after_step",
                )
            method = self._allocate(point_id, t0, t, ex.amount)
            self._q(point_id, t, "step_booked", ex.amount)
        # The exclusion row is written in the same transaction as the booking (the invariant holds).
        self._pending_status = (point_id, t, ex.reason, status)
        self._flush()
        _log().info(
            "ledger_step_resolved", point=point_id, at=ex.ts.isoformat(), status=status, amount=ex.amount,
            unit=self.meters[point_id].unit if point_id in self.meters else None, method=method,
        )  # fmt: skip
        return dataclasses.replace(ex, status=status)

    def audit_steps(self, audit: AuditLog) -> list[Exclusion]:
        """Put every detected step not in the audit chain yet into it (a ``counter_step`` finding) and
        mark it audited. At least once: a crash between the two repeats the finding after a restart."""
        rows = self.conn.execute(
            f"SELECT {_EXCLUSION_COLUMNS} FROM ledger_exclusion WHERE status = 'pending' AND audited = 0"
            " ORDER BY ts, point_id"
        ).fetchall()
        out = []
        for row in rows:
            ex = self._exclusion_row(row)
            unit = self.meters[ex.point_id].unit if ex.point_id in self.meters else ""
            audit.append_finding(
                "counter_step",
                subject=ex.point_id,
                before=ex.from_value,
                after=ex.to_value,
                rule="ledger.step",
                reason=f"counter stepped at {ex.ts.isoformat()}; {ex.amount:.3f} {unit} excluded, pending:"
                f" edge-agent meter confirm|book {ex.point_id} --at {ex.ts.isoformat()}",
            )
            self.conn.execute(
                "UPDATE ledger_exclusion SET audited = 1 WHERE point_id = ? AND ts = ? AND reason = ?",
                (row[0], row[1], row[5]),
            )
            out.append(ex)
        return out

    def reconcile(self, point_id: str) -> Reconciliation | None:
        """The auditor's check over a meter's whole history (None before its first reading)."""
        m = self.meters[point_id]
        origin = self.conn.execute(
            "SELECT value FROM ledger_origin WHERE point_id = ?", (point_id,)
        ).fetchone()
        st = self._state.get(point_id)
        if origin is None or st is None:
            return None
        (rollovers,) = self.conn.execute(
            "SELECT COALESCE(SUM(count), 0) FROM ledger_quality WHERE point_id = ? AND kind = 'rollover'",
            (point_id,),
        ).fetchone()
        (booked,) = self.conn.execute(
            "SELECT COALESCE(SUM(measured + estimated + outlier_kept), 0) FROM ledger_interval"
            " WHERE point_id = ?",
            (point_id,),
        ).fetchone()
        (excluded,) = self.conn.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM ledger_exclusion WHERE point_id = ? AND status != 'booked'",
            (point_id,),
        ).fetchone()
        diff = (st.value - origin[0] + int(rollovers) * (m.rollover or 0.0)) * m.scale
        return Reconciliation(point_id, diff, float(booked), st.pending, float(excluded))

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
            "SELECT point_id, start_ts, end_ts, missing, energy, filled, method FROM ledger_gap"
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
                str(method),
            )
            for pid, s, e, n, en, f, method in rows
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


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a database written by an older version up to the current columns (ALTER TABLE ADD)."""
    for table, column, decl in _ADDED_COLUMNS:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


def _slot(t: float) -> int:
    return int(t // INTERVAL_S) * INTERVAL_S


def _slot_bound(dt: datetime) -> int:
    """First slot at or after ``dt``."""
    t = dt.timestamp()
    return math.ceil(t / INTERVAL_S) * INTERVAL_S

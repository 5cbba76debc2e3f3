"""Bills and history in the ledger: periodic quantities per energy type and account, imported from CSV/XLSX.

The gateway's meters only know what they saw since installation; the programme asks for past years, for
bills (electricity, water, gas, heat) and for official-vehicle fuel. One row of ``ledger_entry`` is one
quantity over one period (``period_start`` inclusive, ``period_end`` exclusive, local dates) for one energy
type and one account (a meter number, a utility account, a vehicle plate), from one source (``bill``,
``manual`` or ``meter``), with its provenance (the file's name, the row in it, when it was imported).

Idempotence: an entry's identity is (energy type, account, vehicle, period, source). Importing the same
file again replaces its rows (the provenance moves to the newest import) instead of adding them; a
corrected bill for the same period replaces the old figure. An import is all or nothing: one bad row and
nothing is written, every error listed as ``FILE:ROW:COLUMN: message``.

The file's columns (``TEMPLATE_COLUMNS``; ``edge-agent ledger template`` writes them with examples):

- ``period_start``: ``YYYY-MM`` (a whole month) or ``YYYY-MM-DD``.
- ``period_end``: empty for a whole month; else the last day included (``YYYY-MM-DD``), as bills print it.
- ``energy_type``: one of ``ENERGY_TYPES`` (electricity, water, natural_gas, heat, lpg, gasoline, diesel).
- ``quantity``: a number >= 0.
- ``unit``: the type's unit (kWh, m3, m3, GJ, kg, L or kg, L or kg); ``m³`` and case are accepted.
- ``account``: meter or account number (required).
- ``vehicle``: the plate of an official vehicle (fuel rows only; optional).
- ``source``: ``bill``, ``manual`` or ``meter``.
- ``note``: free text.
"""

from __future__ import annotations

import calendar
import csv
import io
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from edge_agent.core.logs import get_logger
from edge_agent.store.db import ensure_schema

__all__ = [
    "CATEGORY_OF",
    "ENERGY_TYPES",
    "EXPORT_COLUMNS",
    "SOURCES",
    "TEMPLATE_COLUMNS",
    "HistoryEntry",
    "ImportError_",
    "ImportResult",
    "RowError",
    "SourceSum",
    "export_csv",
    "import_file",
    "list_entries",
    "parse_rows",
    "read_table",
    "source_sums",
    "template_csv",
]

Source = Literal["bill", "manual", "meter"]
SOURCES: tuple[str, ...] = ("bill", "manual", "meter")

# energy type -> allowed units (the first is the canonical spelling)
ENERGY_TYPES: dict[str, tuple[str, ...]] = {
    "electricity": ("kWh",),
    "water": ("m3",),
    "natural_gas": ("m3",),
    "heat": ("GJ",),
    "lpg": ("kg",),
    "gasoline": ("L", "kg"),
    "diesel": ("L", "kg"),
}
# energy type -> the national category code of the ledger (edge_agent/config/codes.py)
CATEGORY_OF: dict[str, str] = {
    "electricity": "01000",
    "water": "02000",
    "natural_gas": "03000",
    "heat": "04000",
    "lpg": "08000",
    "gasoline": "10000",
    "diesel": "12000",
}
_VEHICLE_TYPES = frozenset({"gasoline", "diesel", "lpg", "natural_gas"})

TEMPLATE_COLUMNS: tuple[str, ...] = (
    "period_start",
    "period_end",
    "energy_type",
    "quantity",
    "unit",
    "account",
    "vehicle",
    "source",
    "note",
)
_PROVENANCE_COLUMNS = ("file", "row", "imported_at")  # an export's; ignored on import
_REQUIRED = ("period_start", "energy_type", "quantity", "unit", "account", "source")

_TEMPLATE_EXAMPLES: tuple[tuple[str, ...], ...] = (
    ("2025-01", "", "electricity", "48210.5", "kWh", "3301-0042-77", "", "bill", "State Grid bill"),
    ("2025-01-05", "2025-02-04", "water", "612", "m3", "W-118", "", "bill", "bill period as printed"),
    ("2025-01", "", "natural_gas", "3120", "m3", "G-9", "", "bill", ""),
    ("2025-01", "", "heat", "410.2", "GJ", "HEAT-1", "", "bill", "district heating"),
    ("2025-01", "", "gasoline", "265.4", "L", "fuel-card-01", "粤A12345", "manual", "fuel card statement"),
)

_DDL = """
CREATE TABLE IF NOT EXISTS ledger_entry (
    energy_type TEXT NOT NULL,
    account TEXT NOT NULL,
    vehicle TEXT NOT NULL DEFAULT '',
    period_start TEXT NOT NULL,      -- local date, inclusive
    period_end TEXT NOT NULL,        -- local date, exclusive
    source TEXT NOT NULL,
    quantity REAL NOT NULL,
    unit TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    file TEXT NOT NULL,
    row INTEGER NOT NULL,
    imported_at TEXT NOT NULL,
    PRIMARY KEY (energy_type, account, vehicle, period_start, period_end, source)
);
"""


def _log() -> Any:
    return get_logger("edge_agent.ledger")


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEntry:
    energy_type: str
    account: str
    vehicle: str
    period_start: date
    period_end: date  # exclusive
    source: str
    quantity: float
    unit: str
    note: str
    file: str
    row: int
    imported_at: str = ""


@dataclass(frozen=True, slots=True)
class RowError:
    file: str
    row: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.row}:{self.column}: {self.message}"


class ImportError_(ValueError):
    """The file could not be imported; ``errors`` lists every bad cell (nothing was written)."""

    def __init__(self, errors: Sequence[RowError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = list(errors)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportResult:
    file: str
    rows: int
    added: int
    replaced: int


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def read_table(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (row number, cells) of a CSV or XLSX file; row numbers as a spreadsheet shows them.

    Raises ImportError_ (row 1) for an unreadable file or an unknown extension.
    """
    name = path.name
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            text = path.read_text(encoding="utf-8-sig")
            raw = [(i, row) for i, row in enumerate(csv.reader(io.StringIO(text)), start=1)]
        elif suffix == ".xlsx":
            import openpyxl

            wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
            try:
                ws = wb.worksheets[0]
                raw = [
                    (i, [_cell(v) for v in values])
                    for i, values in enumerate(ws.iter_rows(values_only=True), start=1)
                ]
            finally:
                wb.close()
        else:
            raise ImportError_(
                [RowError(name, 1, "-", f"unknown file type {suffix!r}: give a .csv or .xlsx")]
            )
    except ImportError_:
        raise
    except UnicodeDecodeError:
        raise ImportError_([RowError(name, 1, "-", "not UTF-8 text: save the CSV as UTF-8")]) from None
    except OSError as exc:
        raise ImportError_([RowError(name, 1, "-", f"cannot read: {exc.strerror or exc}")]) from None
    except Exception as exc:
        raise ImportError_([RowError(name, 1, "-", f"cannot read: {type(exc).__name__}: {exc}")]) from None
    rows = [(i, [c.strip() for c in cells]) for i, cells in raw if any(c.strip() for c in cells)]
    if not rows:
        raise ImportError_([RowError(name, 1, "-", "the file is empty: expected a header row")])
    _header_row, header = rows[0]
    return [h.strip().lower() for h in header], rows[1:]


def _parse_start(text: str) -> tuple[date, bool]:
    """(date, whole_month)."""
    if len(text) == 7:
        d = datetime.strptime(text, "%Y-%m").date()
        return d, True
    return date.fromisoformat(text), False


def _month_end(d: date) -> date:
    return d.replace(day=calendar.monthrange(d.year, d.month)[1]) + timedelta(days=1)


def _unit(energy_type: str, text: str) -> str | None:
    t = text.replace("³", "3").replace(" ", "").lower()
    for u in ENERGY_TYPES[energy_type]:
        if t == u.lower() or (u == "L" and t in {"l", "litre", "liter", "升"}):
            return u
    return None


def parse_rows(
    file: str, header: Sequence[str], rows: Iterable[tuple[int, Sequence[str]]]
) -> list[HistoryEntry]:
    """Entries of the rows, or ImportError_ with every bad cell as FILE:ROW:COLUMN."""
    errors: list[RowError] = []
    unknown = [h for h in header if h and h not in TEMPLATE_COLUMNS and h not in _PROVENANCE_COLUMNS]
    for h in unknown:
        errors.append(RowError(file, 1, h, f"unknown column (expected: {', '.join(TEMPLATE_COLUMNS)})"))
    for col in _REQUIRED:
        if col not in header:
            errors.append(RowError(file, 1, col, "required column missing"))
    if errors:
        raise ImportError_(errors)
    index = {h: i for i, h in enumerate(header)}
    out: list[HistoryEntry] = []
    seen: dict[tuple[str, str, str, date, date, str], int] = {}
    for row_no, cells in rows:

        def get(col: str, cells: Sequence[str] = cells) -> str:
            i = index.get(col)
            return cells[i].strip() if i is not None and i < len(cells) else ""

        row_errors: list[RowError] = []

        def err(col: str, msg: str, row_no: int = row_no, row_errors: list[RowError] = row_errors) -> None:
            row_errors.append(RowError(file, row_no, col, msg))

        for col in _REQUIRED:
            if not get(col):
                err(col, "required, empty")
        etype = get("energy_type").lower()
        if etype and etype not in ENERGY_TYPES:
            err("energy_type", f"{etype!r} is not one of {', '.join(ENERGY_TYPES)}")
        start: date | None = None
        end: date | None = None
        whole_month = False
        if get("period_start"):
            try:
                start, whole_month = _parse_start(get("period_start"))
            except ValueError:
                err("period_start", f"{get('period_start')!r} is not a date (YYYY-MM or YYYY-MM-DD)")
        if start is not None:
            if get("period_end"):
                try:
                    end = date.fromisoformat(get("period_end")) + timedelta(days=1)
                except ValueError:
                    err("period_end", f"{get('period_end')!r} is not a date (YYYY-MM-DD, last day included)")
                else:
                    if end <= start:
                        err("period_end", f"{get('period_end')} is before period_start {get('period_start')}")
            else:
                end = _month_end(start) if whole_month else start + timedelta(days=1)
        quantity = 0.0
        if get("quantity"):
            try:
                quantity = float(get("quantity").replace(",", ""))
            except ValueError:
                err("quantity", f"{get('quantity')!r} is not a number")
            else:
                if quantity != quantity or quantity in (float("inf"), float("-inf")):
                    err("quantity", f"{get('quantity')!r} is not a finite number")
                elif quantity < 0:
                    err(
                        "quantity",
                        f"{quantity:g} is negative (a credit note: enter the corrected bill instead)",
                    )
        unit = ""
        if etype in ENERGY_TYPES and get("unit"):
            u = _unit(etype, get("unit"))
            if u is None:
                err("unit", f"{get('unit')!r} is not a unit of {etype} ({' or '.join(ENERGY_TYPES[etype])})")
            else:
                unit = u
        source = get("source").lower()
        if source and source not in SOURCES:
            err("source", f"{source!r} is not one of {', '.join(SOURCES)}")
        vehicle = get("vehicle")
        if vehicle and etype in ENERGY_TYPES and etype not in _VEHICLE_TYPES:
            err("vehicle", f"a vehicle is given for {etype}: only fuel rows name a vehicle")
        if row_errors:
            errors.extend(row_errors)
            continue
        assert start is not None and end is not None
        key = (etype, get("account"), vehicle, start, end, source)
        if key in seen:
            errors.append(
                RowError(
                    file,
                    row_no,
                    "period_start",
                    f"the same entry as row {seen[key]} (type, account, "
                    "vehicle, period and source): keep one",
                )
            )
            continue
        seen[key] = row_no
        out.append(
            HistoryEntry(
                energy_type=etype,
                account=get("account"),
                vehicle=vehicle,
                period_start=start,
                period_end=end,
                source=source,
                quantity=quantity,
                unit=unit,
                note=get("note"),
                file=file,
                row=row_no,
            )
        )
    if errors:
        raise ImportError_(errors)
    return out


def import_file(conn: sqlite3.Connection, path: Path, *, now: datetime) -> ImportResult:
    """Parse ``path`` and write its entries in one transaction (same identity: replaced)."""
    header, rows = read_table(path)
    entries = parse_rows(path.name, header, rows)
    ensure_schema(conn, _DDL)
    added = replaced = 0
    stamp = now.isoformat(timespec="seconds")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for e in entries:
            key = (
                e.energy_type,
                e.account,
                e.vehicle,
                e.period_start.isoformat(),
                e.period_end.isoformat(),
                e.source,
            )
            exists = conn.execute(
                "SELECT 1 FROM ledger_entry WHERE energy_type=? AND account=? AND vehicle=?"
                " AND period_start=? AND period_end=? AND source=?",
                key,
            ).fetchone()
            conn.execute(
                "INSERT OR REPLACE INTO ledger_entry (energy_type, account, vehicle, period_start,"
                " period_end, source, quantity, unit, note, file, row, imported_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (*key, e.quantity, e.unit, e.note, e.file, e.row, stamp),
            )
            if exists:
                replaced += 1
            else:
                added += 1
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    _log().info("ledger_import", file=path.name, rows=len(entries), added=added, replaced=replaced)
    return ImportResult(file=path.name, rows=len(entries), added=added, replaced=replaced)


def list_entries(
    conn: sqlite3.Connection, *, start: date | None = None, end: date | None = None
) -> list[HistoryEntry]:
    """Entries overlapping [start, end), ordered by type, account, vehicle, period, source.

    Reads only: a database that never had an import (or is opened read-only) has no entries.
    """
    if (
        conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='ledger_entry'").fetchone()
        is None
    ):
        return []
    sql = (
        "SELECT energy_type, account, vehicle, period_start, period_end, source, quantity, unit, note, file,"
        " row, imported_at FROM ledger_entry WHERE 1=1"
    )
    args: list[str] = []
    if start is not None:
        sql += " AND period_end > ?"
        args.append(start.isoformat())
    if end is not None:
        sql += " AND period_start < ?"
        args.append(end.isoformat())
    sql += " ORDER BY energy_type, account, vehicle, period_start, period_end, source"
    return [
        HistoryEntry(
            energy_type=r[0],
            account=r[1],
            vehicle=r[2],
            period_start=date.fromisoformat(r[3]),
            period_end=date.fromisoformat(r[4]),
            source=r[5],
            quantity=float(r[6]),
            unit=r[7],
            note=r[8],
            file=r[9],
            row=int(r[10]),
            imported_at=r[11],
        )
        for r in conn.execute(sql, args)
    ]


EXPORT_COLUMNS: tuple[str, ...] = (*TEMPLATE_COLUMNS, *_PROVENANCE_COLUMNS)


def export_csv(entries: Sequence[HistoryEntry]) -> str:
    """The entries as CSV in the template's columns (so an export imports again) plus their provenance.

    ``period_end`` is written as the last day included, like the template asks.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EXPORT_COLUMNS)
    for e in entries:
        w.writerow(
            (
                e.period_start.isoformat(),
                (e.period_end - timedelta(days=1)).isoformat(),
                e.energy_type,
                _number(e.quantity),
                e.unit,
                e.account,
                e.vehicle,
                e.source,
                e.note,
                e.file,
                e.row,
                e.imported_at,
            )
        )
    return buf.getvalue()


def _number(q: float) -> str:
    text = repr(q)
    return text[:-2] if text.endswith(".0") else text


def template_csv() -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TEMPLATE_COLUMNS)
    for row in _TEMPLATE_EXAMPLES:
        w.writerow(row)
    return buf.getvalue()


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceSum:
    """One category's imported quantity over a period from one source."""

    code: str  # category code
    unit: str
    quantity: float
    entries: int


def source_sums(
    conn: sqlite3.Connection, start: date, end: date, *, source: str = "bill"
) -> dict[str, SourceSum]:
    """Per category code, the entries of ``source`` over [start, end).

    An entry that crosses a bound of the period (a water bill from the 5th to the 4th) counts in proportion
    to the days of it inside the period. Quantities of one category in different units (fuel in L and kg)
    are not added: the first unit in ``ENERGY_TYPES`` order wins and the others are left out (a later
    version converts with a density).
    """
    acc: dict[str, tuple[str, float, int]] = {}
    for e in list_entries(conn, start=start, end=end):
        if e.source != source:
            continue
        code = CATEGORY_OF[e.energy_type]
        days = (e.period_end - e.period_start).days
        inside = (min(e.period_end, end) - max(e.period_start, start)).days
        if days <= 0 or inside <= 0:
            continue
        q = e.quantity * inside / days
        unit, total, n = acc.get(code, (e.unit, 0.0, 0))
        if unit != e.unit:
            continue
        acc[code] = (unit, total + q, n + 1)
    return {c: SourceSum(code=c, unit=u, quantity=q, entries=n) for c, (u, q, n) in acc.items()}

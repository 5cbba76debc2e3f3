"""The CSV form of the report: the ledger of the period, one row per meter per local day.

Each row names its meter, its parent meter and its level in the meter tree (0: a main meter). Only the
rows with ``in_total`` = 1 (the main meters) add up to a category's total: a sub-meter's energy is
already in its parent's, so summing every electricity row counts it twice or three times. The last row
says so for a reader who opens the file without this note.
"""

from __future__ import annotations

import csv
import io
from zoneinfo import ZoneInfo

from edge_agent.report.model import Report
from edge_agent.store.ledger import Ledger, parse_period

__all__ = ["HEADER", "HISTORY_HEADER", "render_csv", "render_history_csv"]

_VALUES = ("total", "measured", "estimated", "outlier_kept")
HEADER = (
    *("date", "point", "name", "code", "parent", "level", "in_total", "zone", "institution", "unit"),
    *_VALUES,
)
NOTE = (
    "说明 note: only rows with in_total=1 (level 0, main meters) add up to each category's total, per unit;"
    " rows of level 1+ are parts of their parent meter"
)


def render_csv(report: Report, ledger: Ledger) -> str:
    """The interval table summed by local day, for the report's period and meters, with the tree."""
    start, end = parse_period(report.period.label).bounds(ZoneInfo(report.building.timezone))
    roots = {m.point_id for m in ledger.roots()}

    def level(pid: str) -> int:
        depth, seen = 0, {pid}
        m = ledger.meters[pid]
        while m.parent is not None and m.parent in ledger.meters and m.parent not in seen:
            seen.add(m.parent)
            m = ledger.meters[m.parent]
            depth += 1
        return depth

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    for b in sorted(ledger.series(start, end, "day"), key=lambda b: (b.start, b.point_id)):
        m = ledger.meters.get(b.point_id)
        if m is None:
            continue
        w.writerow(
            [b.start.date().isoformat(), b.point_id, m.name or "", m.code, m.parent or "", level(m.point_id)]
            + [1 if m.point_id in roots else 0, m.zone or "", m.institution or "", m.unit]
            + [f"{x:.3f}" for x in (b.total, b.measured, b.estimated, b.outlier_kept)]
        )
    w.writerow([NOTE])
    return buf.getvalue()


HISTORY_HEADER = (
    *("granularity", "period", "energy_type", "name_zh", "unit", "quantity", "complete", "kgce"),
    *("last_year", "last_year_complete", "last_year_kgce", "change", "change_kgce"),
    *("baseline", "baseline_complete", "baseline_kgce", "change_vs_baseline", "change_vs_baseline_kgce"),
    *("per_m2", "per_person", "estimated", "estimated_in", "methods"),
)


def render_history_csv(report: Report) -> str:
    """The report's history analysis (``report-<building>-<period>-history.csv``): one row per period and
    energy type; ``estimated`` is 1 when any side holds estimated months (``estimated_in`` names the sides,
    ``methods`` how they were filled); a change is empty unless both periods are complete."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HISTORY_HEADER)
    hist = report.history
    for r in hist.rows if hist is not None else ():
        w.writerow(
            (
                *(r.granularity, r.period, r.energy_type, r.zh, r.unit, _c(r.quantity), int(r.complete)),
                *(_c(r.kgce), _c(r.last_year), int(r.last_year_complete), _c(r.last_year_kgce)),
                *(_c(r.change), _c(r.change_kgce), _c(r.baseline), int(r.baseline_complete)),
                *(_c(r.baseline_kgce), _c(r.change_vs_baseline), _c(r.change_vs_baseline_kgce)),
                *(_c(r.per_m2), _c(r.per_person), int(bool(r.estimated_in))),
                *(" ".join(r.estimated_in), "; ".join(r.methods)),
            )
        )
    return buf.getvalue()


def _c(v: float | None) -> str:
    return "" if v is None else repr(v)

"""The CSV form of the report: the ledger of the period, one row per meter per local day."""

from __future__ import annotations

import csv
import io
from zoneinfo import ZoneInfo

from edge_agent.report.model import Report
from edge_agent.store.ledger import Ledger, parse_period

__all__ = ["render_csv"]

_VALUES = ("total", "measured", "estimated", "outlier_kept", "outlier_excluded")


def render_csv(report: Report, ledger: Ledger) -> str:
    """Every column of the interval table, summed by local day, for the report's period and meters."""
    start, end = parse_period(report.period.label).bounds(ZoneInfo(report.building.timezone))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["date", "point", "code", "zone", "institution", "unit", *_VALUES])
    for b in sorted(ledger.series(start, end, "day"), key=lambda b: (b.start, b.point_id)):
        m = ledger.meters.get(b.point_id)
        if m is None:
            continue
        w.writerow(
            [b.start.date().isoformat(), b.point_id, m.code, m.zone or "", m.institution or "", m.unit]
            + [f"{x:.3f}" for x in (b.total, b.measured, b.estimated, b.outlier_kept, b.outlier_excluded)]
        )
    return buf.getvalue()

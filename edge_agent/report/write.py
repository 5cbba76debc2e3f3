"""Write a report's files: ``report-<building id>-<period>.<format>`` for each format asked for."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edge_agent.report.csv import render_csv, render_history_csv
from edge_agent.report.html import render_html
from edge_agent.report.model import Report
from edge_agent.report.pdf import html_to_pdf, html_to_png
from edge_agent.report.public import PUBLIC_SIZE, render_public
from edge_agent.store.ledger import Ledger

__all__ = ["FORMATS", "write_public", "write_reports"]

FORMATS = ("html", "csv", "json", "pdf")


def write_reports(report: Report, ledger: Ledger, out_dir: Path, formats: Sequence[str]) -> list[Path]:
    """One file per format (html, csv, json or pdf) under ``out_dir``; the paths written, in that order.

    csv also writes ``<stem>-history.csv`` (the history analysis) when the report has one.

    pdf prints the HTML with headless Chromium (edge_agent/report/pdf.py); raises PdfUnavailable without it.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown report format {', '.join(bad)}; use {', '.join(FORMATS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"report-{report.building.building_id}-{report.period.label}"
    written: list[Path] = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        if fmt == "pdf":
            html_to_pdf(render_html(report), path)
            written.append(path)
            continue
        if fmt == "json":
            text = report.to_json()
        elif fmt == "csv":
            text = render_csv(report, ledger)
        else:
            text = render_html(report)
        path.write_text(text, encoding="utf-8")
        written.append(path)
        if fmt == "csv" and report.history is not None:  # the history analysis: its own columns
            extra = out_dir / f"{stem}-history.csv"
            extra.write_text(render_history_csv(report), encoding="utf-8")
            written.append(extra)
    return written


def write_public(report: Report, out_dir: Path) -> list[Path]:
    """The public summary: ``public-<building id>-<period>.html`` and its ``.png`` (headless Chromium)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"public-{report.building.building_id}-{report.period.label}"
    html = render_public(report)
    page = out_dir / f"{stem}.html"
    page.write_text(html, encoding="utf-8")
    png = html_to_png(html, out_dir / f"{stem}.png", size=PUBLIC_SIZE)
    return [page, png]

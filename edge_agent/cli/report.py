"""`edge-agent report`: the quarterly/annual/monthly energy analysis report (HTML, CSV, JSON)."""

from __future__ import annotations

import argparse
from typing import Any

from edge_agent.cli.common import add_config

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="quarterly/annual energy analysis report (HTML, CSV, JSON)",
        description="Build the energy analysis report for a period from the ledger: totals by "
        "category and end use, same period last year, KPIs against targets, data-centre PUE, "
        "enforcement summary and data quality.",
    )
    add_config(p)
    from edge_agent.report.build import add_report_arguments

    add_report_arguments(p)
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from edge_agent.report.build import report_main

    return report_main(args)

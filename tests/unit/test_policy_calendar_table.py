"""The national calendar table (policies/china_days.py) answers exactly as the `holidays` package does,
and an agent's calendar for the years around now no longer imports the package (issue 18: 17 MB)."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta

from edge_agent.devtools.china_days import TABLE_PATH
from policies import china_days
from policies.calendar import (
    TABLE_YEARS,
    Calendar,
    _table,
    installed_holidays,
    national_year,
    render_table,
)


def test_the_table_is_what_the_installed_package_says() -> None:
    if installed_holidays() == china_days.HOLIDAYS_VERSION:
        assert render_table() == TABLE_PATH.read_text("utf-8"), (
            "stale: run `python -m edge_agent.devtools.china_days`"
        )
        assert _table() is not None
    else:  # another holidays version: the table is not used, every year asks the package
        assert _table() is None
    for year in TABLE_YEARS:
        assert Calendar._build_year(year) == national_year(year), year


def test_every_day_is_classified_as_the_package_classifies_it() -> None:
    years = range(TABLE_YEARS.start - 1, TABLE_YEARS.stop + 1)  # one year on either side asks the package
    table = Calendar(years=years)
    package = {y: national_year(y) for y in years}
    d = date(years.start, 1, 1)
    while d.year < years.stop:
        info = table.day_info(d)
        y = package[d.year]
        if d in y.holidays:
            assert (info.kind, info.name, info.source) == ("holiday", y.holidays[d], "national"), d
        elif d in y.workdays:
            assert (info.kind, info.name) == ("makeup_working", "调休"), d
        else:
            assert info.kind == ("weekend" if d.weekday() >= 5 else "working"), d
        d += timedelta(days=1)


def test_a_calendar_around_now_does_not_import_holidays() -> None:
    code = (
        "import sys\n"
        "from policies.calendar import Calendar\n"
        "cal = Calendar(years=range(2025, 2028))\n"
        "assert cal.day_info(__import__('datetime').date(2026, 10, 1)).name == '国庆节 National Day'\n"
        "print('holidays' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(installed_holidays() != china_days.HOLIDAYS_VERSION)

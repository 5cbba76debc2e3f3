"""Calendar completeness (issue 13, item 6) and Chinese holiday names first (item 8)."""

from __future__ import annotations

import io
import shutil
from datetime import date
from pathlib import Path

from edge_agent.cli.check import check_main
from edge_agent.config.calendarcheck import calendar_issues, calendar_warnings
from edge_agent.config.load import load_config
from policies.calendar import Calendar, calendar_gaps
from tests.sitetext import ROOT


def test_a_year_without_published_makeup_days_is_reported() -> None:
    cal = Calendar(years=[2026, 2027])
    assert cal.makeup_days_missing(2026) == 0  # published: 2026-01-04, 2026-02-14, ...
    assert cal.makeup_days_missing(2027) > 0  # the holidays package has no 调休 for 2027 yet
    (gap,) = calendar_gaps(cal, [2026, 2027])
    assert "2027" in gap and "calendar.extra_working_days" in gap and "调休" in gap


def test_site_makeup_days_complete_the_year() -> None:
    cal = Calendar(years=[2027], extra_working_days={date(2027, 2, 20): "调休 (State Council notice)"})
    assert calendar_gaps(cal, [2027]) == []


def test_holiday_names_are_chinese_first() -> None:
    cal = Calendar(years=[2026])
    info = cal.day_info(date(2026, 10, 1))
    assert info.name == "国庆节 National Day"
    assert cal.day_info(date(2026, 2, 17)).describe().startswith("holiday 春节 ")


def test_check_warns_with_the_policy_file_position(tmp_path: Path) -> None:
    # the serial ports on ports that exist here, so the policy's warning is the only one
    site = (ROOT / "config" / "site.yaml").read_text("utf-8")
    site = site.replace("/dev/ttyUSB0", "/dev/null").replace("/dev/ttyUSB1", "/dev/zero")
    (tmp_path / "site.yaml").write_text(site, "utf-8")
    shutil.copy(ROOT / "config" / "policy.yaml", tmp_path / "policy.yaml")
    cfg = load_config(tmp_path / "site.yaml")
    assert calendar_warnings(cfg, date(2026, 11, 30)) and not calendar_warnings(cfg, date(2025, 6, 1))
    (issue,) = calendar_issues(cfg, date(2026, 11, 30))
    assert issue.severity == "warning" and issue.path == "calendar.extra_working_days"
    lines = (tmp_path / "policy.yaml").read_text("utf-8").splitlines()
    assert "extra_working_days" in lines[issue.line - 1]
    out, err = io.StringIO(), io.StringIO()
    assert check_main(tmp_path / "site.yaml", out=out, err=err, today=date(2026, 11, 30)) == 0
    assert "1 warning(s)" in out.getvalue() and "no make-up working days" in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    assert check_main(tmp_path / "site.yaml", out=out, err=err, today=date(2025, 6, 1)) == 0
    assert "warning" not in out.getvalue() + err.getvalue()

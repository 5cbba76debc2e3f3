"""The typed report model: renderers read attributes and the document is its plain form. That report/
keeps to its layer is tests/unit/test_architecture.py's to check."""

from __future__ import annotations

import dataclasses
import json
from html import escape

import pytest

from edge_agent.report.html import render_html
from edge_agent.report.model import REPORT_SCHEMA, Report
from tests.unit.test_report_document import synthetic_report


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return synthetic_report(tmp_path_factory.mktemp("report"))


def test_json_round_trips_to_the_models_plain_form(report: Report) -> None:
    doc = json.loads(report.to_json())
    assert doc == report.as_dict()
    assert list(doc) == [f.name for f in dataclasses.fields(Report)]
    assert doc["schema"] == REPORT_SCHEMA == report.schema


def test_attributes_and_the_document_carry_the_same_figures(report: Report) -> None:
    doc = report.as_dict()
    assert doc["generated_at"] == "2026-08-01T09:30:15+00:00"  # to the second
    assert report.period.start.isoformat() == doc["period"]["start"] == "2026-07-01"
    elec = report.totals.by_category[0]
    assert (elec.code, elec.total, elec.kgce) == ("01000", 4920.0, 604.668)
    assert doc["totals"]["by_category"][0]["kgce"] == elec.kgce
    per_m2 = report.kpi.rows[0]
    assert per_m2.key == "kgce_per_m2" and doc["kpi"]["rows"][0]["to_date"] == per_m2.to_date
    assert report.kpi.period_kgce_per_m2 == round(604.668 / 8600, 4)
    assert report.data_centre.pue == doc["data_centre"]["pue"] == 1.3333
    day = report.daily[1]
    assert doc["daily"][1] == {"date": day.date.isoformat(), **day.values}
    assert report.enforcement.exemptions[1].until is not None
    assert doc["enforcement"]["exemptions"][1]["until"] == "2026-09-30"
    assert doc["quality"]["gaps"][0]["start"] == report.quality.gaps[0].start.isoformat()


def test_the_model_is_frozen_and_keyword_only(report: Report) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.kpi.year = 2027  # type: ignore[misc]
    with pytest.raises(TypeError):
        type(report.building)("370102A001", "gw", None, "Asia/Shanghai", 1.0, 1)  # type: ignore[misc]


def test_html_renders_from_the_model(report: Report) -> None:
    html = render_html(report)
    assert 'data-key="category.01000.total" data-value="4920.0"' in html
    assert "data-key='exemption.f3'" in html and "2026-09-30" in html
    assert "生成 Generated 2026-08-01T17:30:15+08:00" in html  # in site time, not UTC


def test_energy_without_a_factor_is_a_warning_with_its_quantity(report: Report) -> None:
    from edge_agent.report.model import LeftOut

    assert report.totals.left_out == ()  # electricity and water only: nothing left out
    lpg = LeftOut(
        code="09000", zh="人工煤气", en="manufactured gas", quantity=12.5, unit="m3", reason="no_factor"
    )
    html = render_html(
        dataclasses.replace(report, totals=dataclasses.replace(report.totals, left_out=(lpg,)))
    )
    assert 'data-key="kgce.left_out.09000" data-value="12.5"' in html
    assert "未计入综合能耗 Not in the total: 09000 人工煤气" in html and "12.50 m³" in html
    assert "综合能耗（折标煤）" in html
    assert "GB/T 2589-2020" in render_html(report)  # each factor with its edition


def test_enforcement_table_totals_each_season_and_shows_after_hours_switch_offs(report: Report) -> None:
    html = render_html(report)
    enf = report.enforcement
    summer = sum(z.summer_26 for z in enf.setpoint_corrections)
    winter = sum(z.winter_20 for z in enf.setpoint_corrections)
    assert (summer, winter) == (2, 1)  # the synthetic audit trail: two summer, one winter correction
    assert f'data-key="enforcement.summer_26_total" data-value="{summer}"' in html
    assert f'data-key="enforcement.winter_20_total" data-value="{winter}"' in html
    assert f'data-key="enforcement.setpoint_corrections_total" data-value="{summer + winter}"' in html
    assert enf.hvac_other == {"hvac.after_hours_off": 1}
    assert "下班后关闭空调 AC switched off after hours" in html
    assert 'data-key="enforcement.hvac.hvac.after_hours_off" data-value="1"' in html


def test_html_names_meters_and_says_what_a_remainder_is(report: Report) -> None:
    html = render_html(report)
    assert "非IT负荷 non-IT load" in html  # the data centre's rest is not "unmetered"
    assert "02000 未分项" not in html and 'data-key="coverage.water.volume"' not in html  # water: no split
    assert "m³" in html and "<td>m3</td>" not in html
    named = [m for m in report.meters if m.name]
    assert named and all(escape(m.name) in html for m in named if m.name)

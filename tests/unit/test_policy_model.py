"""policy.yaml schema: defaults, formats, refusals with clear messages."""

from __future__ import annotations

from datetime import date, time
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from policies.model import Policy, site_problems

BASE: dict[str, Any] = {"seasons": {"summer": "06-01..09-30", "winter": "11-15..03-15"}}


def with_(**parts: Any) -> dict[str, Any]:
    return {**BASE, **parts}


def refused(doc: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as err:
        Policy.model_validate(doc)
    return str(err.value)


def test_defaults_are_the_national_rule() -> None:
    p = Policy.model_validate(BASE)
    assert p.hvac.summer_min_cooling_c == 26.0 and p.hvac.winter_max_heating_c == 20.0
    assert p.hvac.deadband_c == 0.0 and p.hvac.exemptions == []
    assert p.enforcement.max_writes_per_point_per_hour == 6
    assert p.lighting.groups == [] and p.hvac.after_hours is None


def test_seasons_are_required_and_may_wrap_new_year() -> None:
    assert "seasons" in refused({})
    p = Policy.model_validate(BASE)
    assert p.seasons.season_of(date(2026, 1, 10)) == "winter"
    assert p.seasons.season_of(date(2026, 3, 15)) == "winter"
    assert p.seasons.season_of(date(2026, 3, 16)) == "transition"
    assert p.seasons.season_of(date(2026, 11, 15)) == "winter"
    assert p.seasons.season_of(date(2026, 6, 1)) == "summer"
    assert p.seasons.season_of(date(2026, 9, 30)) == "summer"
    assert p.seasons.season_of(date(2026, 10, 1)) == "transition"
    south = Policy.model_validate({"seasons": {"summer": "05-01..10-31", "winter": None}})
    assert south.seasons.season_of(date(2026, 1, 10)) == "transition"


@pytest.mark.parametrize(
    ("seasons", "words"),
    [
        ({"summer": "06-01..09-30", "winter": "09-15..03-15"}, "overlap on 09-15"),
        ({"summer": "06-31..09-30", "winter": None}, "not a day of the year"),
        ({"summer": "June..Sept", "winter": None}, "not a month-day"),
        ({"summer": "06-01", "winter": None}, "not a season range"),
    ],
)
def test_bad_seasons_refused(seasons: dict[str, Any], words: str) -> None:
    assert words in refused({"seasons": seasons})


def test_feb_29_is_a_valid_bound() -> None:
    p = Policy.model_validate({"seasons": {"summer": None, "winter": "12-01..02-29"}})
    assert p.seasons.season_of(date(2028, 2, 29)) == "winter"
    assert p.seasons.season_of(date(2027, 3, 1)) == "transition"


def test_unknown_keys_are_errors_everywhere() -> None:
    assert "extra" in refused(with_(hvac={"summer_min_cooling": 27}))  # typo of summer_min_cooling_c
    assert "extra" in refused(with_(enforcement={"max_writes": 3}))
    assert "extra" in refused(with_(typo=1))


def test_exemption_needs_reason_and_unique_zone() -> None:
    assert "reason" in refused(with_(hvac={"exemptions": [{"zone": "dc"}]}))
    assert "reason" in refused(with_(hvac={"exemptions": [{"zone": "dc", "reason": "   "}]}))
    two = [{"zone": "dc", "reason": "servers"}, {"zone": "dc", "reason": "again"}]
    assert "exempted twice" in refused(with_(hvac={"exemptions": two}))
    p = Policy.model_validate(
        with_(hvac={"exemptions": [{"zone": "dc", "reason": "servers", "until": "2026-12-31"}]})
    )
    assert p.hvac.exemptions[0].until == date(2026, 12, 31)


def test_deadband_bounds() -> None:
    assert "deadband_c" in refused(with_(hvac={"deadband_c": 0.6}))
    assert "deadband_c" in refused(with_(hvac={"deadband_c": -0.1}))


def test_time_formats_and_the_yaml_sexagesimal_trap() -> None:
    doc = yaml.safe_load(
        """
seasons: {summer: "06-01..09-30", winter: null}
lighting:
  groups:
    - name: offices
      zones: [f1]
      on_periods: ["07:30-12:00", "13:30-18:00"]
      sweeps: [18:30]
"""
    )
    assert doc["lighting"]["groups"][0]["sweeps"] == [1110]  # what YAML 1.1 does to 18:30
    assert "quote times of day" in refused(doc)
    doc["lighting"]["groups"][0]["sweeps"] = ["18:30"]
    g = Policy.model_validate(doc).lighting.groups[0]
    assert g.sweeps == [time(18, 30)] and str(g.on_periods[1]) == "13:30-18:00"
    dumped = Policy.model_validate(doc).model_dump(mode="json")
    assert dumped["lighting"]["groups"][0]["sweeps"] == ["18:30"]


@pytest.mark.parametrize(
    ("group", "words"),
    [
        ({"on_periods": ["18:00-07:00"]}, "start must be before end"),
        ({"on_periods": ["07:30-12:00", "11:00-13:00"]}, "overlap"),
        ({"on_periods": ["07:30-12:00"], "sweeps": ["11:00"]}, "inside on period"),
        ({"sweep_every_min": 7}, "must divide 1440"),
        ({"on_periods": ["07:30-12:00"], "sun": {}}, "not both"),
        ({"zones": []}, "zones"),
        ({"zones": ["f1", "f1"]}, "listed twice"),
    ],
)
def test_bad_lighting_groups_refused(group: dict[str, Any], words: str) -> None:
    g = {"name": "g", "zones": ["f1"], **group}
    assert words in refused(with_(lighting={"groups": [g]}))


def test_zone_in_two_lighting_groups_refused() -> None:
    groups = [{"name": "a", "zones": ["f1"]}, {"name": "b", "zones": ["f1", "f2"]}]
    assert "pick one" in refused(with_(lighting={"groups": groups}))


def test_calendar_date_in_both_lists_refused() -> None:
    cal = {"extra_holidays": ["2026-07-15"], "extra_working_days": [{"date": "2026-07-15", "name": "x"}]}
    assert "listed in extra_holidays and extra_working_days" in refused(with_(calendar=cal))


def test_site_problems_names_unknown_zones() -> None:
    p = Policy.model_validate(
        with_(
            hvac={
                "exemptions": [{"zone": "dc", "reason": "servers"}],
                "after_hours": {"working_hours": ["08:00-18:00"], "zones": ["f9"]},
            },
            lighting={"groups": [{"name": "g", "zones": ["f1", "roof"]}]},
        )
    )
    assert site_problems(p, {"f1", "dc"}) == [
        "hvac.after_hours.zones[0]: 'f9' is not a zone in site.yaml",
        "lighting.groups[0].zones[1]: 'roof' is not a zone in site.yaml",
    ]


def test_json_schema_shows_strings_for_times() -> None:
    schema = Policy.model_json_schema()
    text = str(schema)
    assert "07:30-12:00" in text and "06-01..09-30" in text

"""site.yaml `persons:` (establishment and others, issue 17) and `ledger.fuel_density_kg_per_l`: a
single `occupants` stays valid, the split may replace it, and a split that does not add up is an error at
its line."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from edge_agent.config.load import ConfigError, load_config

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "config"


def _site(tmp_path: Path, occupants_lines: str, extra: str = "") -> Path:
    shutil.copy(FIX / "valid_policy.yaml", tmp_path / "valid_policy.yaml")
    text = (FIX / "valid_site.yaml").read_text(encoding="utf-8")
    text = re.sub(r"^occupants: .*\n", occupants_lines, text, count=1, flags=re.M)
    path = tmp_path / "site.yaml"
    path.write_text(text + extra, encoding="utf-8")
    return path


def test_a_single_occupants_count_stays_valid(tmp_path: Path) -> None:
    site = load_config(_site(tmp_path, "occupants: 320\n")).site
    assert site.occupants == 320 and site.persons is None
    d = site.ledger.fuel_density_kg_per_l
    assert (d.gasoline, d.diesel, site.ledger.baseline_year) == (0.73, 0.84, None)


def test_persons_split_alone_gives_the_occupants(tmp_path: Path) -> None:
    site = load_config(_site(tmp_path, "persons: {establishment: 280, others: 40}\n")).site
    assert site.occupants == 320
    assert site.persons is not None and (site.persons.establishment, site.persons.others) == (280, 40)


def test_persons_and_occupants_must_agree(tmp_path: Path) -> None:
    ok = _site(tmp_path, "occupants: 320\npersons: {establishment: 280, others: 40}\n")
    assert load_config(ok).site.occupants == 320
    bad = _site(tmp_path, "occupants: 320\npersons: {establishment: 280, others: 30}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    (issue,) = exc.value.issues
    assert (issue.path, issue.line) == ("persons", 9)
    assert "establishment 280 + others 30 = 310, but occupants is 320" in issue.message


def test_fuel_density_and_baseline_year_are_settings(tmp_path: Path) -> None:
    extra = (
        "ledger:\n  baseline_year: 2023\n"
        "  fuel_density_kg_per_l: {diesel: 0.835, source: 中石化 supplier sheet}\n"
    )
    site = load_config(_site(tmp_path, "occupants: 320\n", extra)).site
    d = site.ledger.fuel_density_kg_per_l
    assert (d.gasoline, d.diesel, d.source) == (0.73, 0.835, "中石化 supplier sheet")
    assert site.ledger.baseline_year == 2023
    bad = _site(tmp_path, "occupants: 320\n", "ledger:\n  fuel_density_kg_per_l: {gasoline: 730}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    assert [i.path for i in exc.value.issues] == ["ledger.fuel_density_kg_per_l.gasoline"]

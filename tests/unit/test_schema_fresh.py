"""config/schema.json and config/policy.schema.json must match the pydantic models (editors read them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config.load import (
    POLICY_SCHEMA_FILE,
    SITE_SCHEMA_FILE,
    policy_json_schema,
    render_schema,
    site_json_schema,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
HOW = (
    "regenerate with `edge-agent schema --write`, or "
    '`python -c "from pathlib import Path; from edge_agent.config.load import write_schema_files; '
    "write_schema_files(Path('config'))\"` from the repository root"
)


@pytest.mark.parametrize(
    ("name", "make"), [(SITE_SCHEMA_FILE, site_json_schema), (POLICY_SCHEMA_FILE, policy_json_schema)]
)
def test_schema_file_is_fresh(name: str, make: object) -> None:
    path = CONFIG_DIR / name
    assert path.exists(), f"config/{name} is missing: {HOW}"
    expected = render_schema(make())  # type: ignore[operator]
    assert path.read_text(encoding="utf-8") == expected, f"config/{name} differs from the models: {HOW}"

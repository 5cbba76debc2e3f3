"""site.yaml / policy.yaml loading: every problem reported at once, each with FILE:LINE:COL and YAML path.

Line and column numbers below are read off the fixture files in tests/fixtures/config/; if you edit
a fixture, update the numbers here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.options import ModbusDevice, ModbusPoint
from edge_agent.cli.check import check_main
from edge_agent.config import codes
from edge_agent.config.load import (
    ConfigError,
    ConfigIssue,
    LoadedConfig,
    load_config,
    policy_json_schema,
    site_json_schema,
    write_schema_files,
)
from edge_agent.config.yamlmarks import Mark, YamlSyntaxError, format_path, parse_path, parse_yaml

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "config"


def issues_of(name: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as exc:
        load_config(FIX / name)
    return exc.value.issues


def where(issues: list[ConfigIssue]) -> dict[str, tuple[int, int]]:
    """YAML path -> (line, col)."""
    return {i.path: (i.line, i.col) for i in issues}


def run_check(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check_main(path, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------------------ valid site


def test_valid_fixture_loads() -> None:
    cfg = load_config(FIX / "valid_site.yaml")
    assert isinstance(cfg, LoadedConfig)
    assert cfg.warnings == []
    site = cfg.site
    assert (site.gateway_id, site.building_id, site.timezone) == ("gw-test-01", "370102A001", "Asia/Shanghai")
    assert [z.id for z in site.zones] == ["f1", "f2", "dc"]
    assert site.zones[0].perimeter is True and site.zones[2].kind == "data_centre"
    assert all(isinstance(d, ModbusDevice) for d in site.devices)
    assert [p.id for _, p in cfg.points()][:3] == ["f1.setpoint", "f2.setpoint", "f1.status"]
    assert sum(1 for _ in cfg.points()) == 10
    assert site.uplink is None  # no broker configured is valid
    assert site.energy_codes == {"01D1A": "IT equipment 信息设备"}
    assert cfg.policy_path == (FIX / "valid_policy.yaml").absolute()
    assert cfg.site_path == (FIX / "valid_site.yaml").absolute()


def test_effective_zone_is_point_then_device() -> None:
    cfg = load_config(FIX / "valid_site.yaml")
    assert cfg.point_zone("f1.status") == "f1"  # from the device
    assert cfg.point_zone("f2.setpoint") == "f2"  # the point's own zone wins
    assert cfg.point_zone("it.kwh") == "dc"
    assert cfg.point_zone("main.kwh") is None  # neither has one
    with pytest.raises(KeyError):
        cfg.point_zone("no-such-point")


def test_paths_resolve_relative_to_site_yaml() -> None:
    cfg = load_config(FIX / "valid_site.yaml")
    assert cfg.resolve(cfg.site.storage.path) == FIX / "state" / "test.db"
    assert cfg.resolve("/var/lib/x.db") == Path("/var/lib/x.db")


def test_yaml_1_2_scalars_keep_codes_states_and_times_as_written() -> None:
    # `off` is not False, `01000` is not octal 512: both appear unquoted in valid_site.yaml.
    cfg = load_config(FIX / "valid_site.yaml")
    points = {p.id: p for _, p in cfg.points()}
    assert points["f1.mode"].states == {0: "off", 1: "cool", 2: "heat", 3: "fan"}
    assert points["main.kwh"].energy_code == "01000"
    assert points["it.kwh"].energy_code == "01D1A"  # a site addition


def test_check_main_ok_summary() -> None:
    code, out, err = run_check(FIX / "valid_site.yaml")
    assert code == 0
    assert err == ""
    assert "OK, 2 device(s), 10 point(s), 3 zone(s)" in out
    assert out.count("\n") == 1


# ------------------------------------------------------------------------------------------ the three errors


def test_typo_range_and_duplicate_reported_together_with_positions() -> None:
    path = FIX / "three_errors_site.yaml"
    code, out, err = run_check(path)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert lines[:3] == [
        f"{path}:16:5: devices[0].poinst: unknown key; did you mean 'points'?",
        f"{path}:27:9: devices[1].points[1].address: 70000 is above 65535",
        f"{path}:28:9: devices[1].points[2].id: duplicate point id 'kwh'; "
        "first at devices[1].points[0].id (line 23)",
    ]
    assert "INVALID, 3 error(s)" in lines[3]
    # The misspelt `points` is reported once, as the typo, not again as a missing key.
    assert len(issues_of("three_errors_site.yaml")) == 3


def test_config_error_str_lists_every_issue() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(FIX / "three_errors_site.yaml")
    assert str(exc.value).count("\n") == 2
    assert all(i.severity == "error" for i in exc.value.issues)
    assert exc.value.errors == exc.value.issues


def test_issue_format() -> None:
    issue = ConfigIssue("site.yaml", 88, 9, "devices[3].points[7].address", "70000 is above 65535")
    assert str(issue) == "site.yaml:88:9: devices[3].points[7].address: 70000 is above 65535"
    warn = ConfigIssue("site.yaml", 2, 1, "building_id", "odd", severity="warning")
    assert str(warn) == "site.yaml:2:1: building_id: warning: odd"
    assert str(ConfigIssue("p.yaml", 3, 5, "", "bad YAML")) == "p.yaml:3:5: bad YAML"


# ------------------------------------------------------------------------------------------ cross checks


def test_missing_zones_are_errors() -> None:
    issues = where(issues_of("cross_site.yaml"))
    assert issues["devices[0].zone"] == (16, 5)  # device zone f3
    assert issues["devices[0].points[5].zone"] == (23, 47)  # point zone f9


def test_duplicate_zone_and_device_ids() -> None:
    got = {i.path: i for i in issues_of("cross_site.yaml")}
    assert (got["zones[2].id"].line, got["zones[2].id"].col) == (11, 6)
    assert "line 9" in got["zones[2].id"].message
    assert (got["devices[2].id"].line, got["devices[2].id"].col) == (40, 5)
    assert "'ahu-1'" in got["devices[2].id"].message and "line 14" in got["devices[2].id"].message


def test_conflicting_overlapping_registers() -> None:
    got = {i.path: i for i in issues_of("cross_site.yaml")}
    # uint16 at 101 inside float32 at 100-101
    low = got["devices[0].points[1].address"]
    assert (low.line, low.col) == (19, 22)
    assert "'sp'" in low.message and "line 18" in low.message
    # the same float32 registers with another word order
    e2 = got["devices[0].points[8].address"]
    assert (e2.line, e2.col) == (26, 18)
    assert "'e1'" in e2.message and "word_order little" in e2.message
    # Allowed: bits of a register beside the register itself, the same float read twice identically,
    # the same address in another table.
    overlap_paths = {p for p, i in got.items() if "overlap" in i.message}
    assert overlap_paths == {"devices[0].points[1].address", "devices[0].points[8].address"}


def test_same_endpoint_twice_is_an_error() -> None:
    got = {i.path: i for i in issues_of("cross_site.yaml")}
    dup = got["devices[1].host"]
    assert (dup.line, dup.col) == (31, 5)
    assert "127.0.0.1:502 unit 1" in dup.message and "line 15" in dup.message


def test_energy_codes() -> None:
    issues = issues_of("cross_site.yaml")
    got = {i.path: i for i in issues}
    unknown = got["devices[1].points[0].energy_code"]
    assert (unknown.line, unknown.col, unknown.severity) == (34, 94, "error")
    assert "'01Z90'" in unknown.message
    no_code = got["devices[1].points[1].role"]
    assert (no_code.line, no_code.severity) == (35, "warning")
    # 01E00 is added by the site, 02000 is water on a water point, cumulative: false is allowed.
    assert not [i for i in issues if i.line in (36, 37, 38)]
    assert [i.path for i in issues if i.severity == "warning"] == ["devices[1].points[1].role"]


def test_building_id_bad_shape_is_error() -> None:
    (issue,) = issues_of("building_bad_shape_site.yaml")
    assert (issue.path, issue.line, issue.col, issue.severity) == ("building_id", 2, 1, "error")
    assert "370102A001" in issue.message  # shows the expected shape


def test_building_type_letter_outside_a_to_h_is_only_a_warning() -> None:
    path = FIX / "building_letter_site.yaml"
    cfg = load_config(path)
    (warn,) = cfg.warnings
    assert (warn.path, warn.line, warn.severity) == ("building_id", 2, "warning")
    assert "'K'" in warn.message
    code, out, err = run_check(path)
    assert code == 0
    assert err == f"{warn}\n"
    assert "OK" in out and "1 warning(s)" in out


# ------------------------------------------------------------------------------------------ YAML level


def test_yaml_syntax_error_has_position() -> None:
    (issue,) = issues_of("syntax_error_site.yaml")
    assert (issue.file, issue.line, issue.col) == (str(FIX / "syntax_error_site.yaml"), 8, 4)
    assert "indentation" in issue.message
    code, _, err = run_check(FIX / "syntax_error_site.yaml")
    assert code == 2 and ":8:4:" in err


def test_duplicate_mapping_keys_are_errors() -> None:
    issues = issues_of("duplicate_key_site.yaml")
    assert [(i.path, i.line, i.col) for i in issues] == [
        ("devices[0].points[0].address", 16, 9),
        ("occupants", 17, 1),
    ]
    assert "first at line 14" in issues[0].message
    assert "first at line 5" in issues[1].message


def test_merge_keys_are_not_duplicates() -> None:
    doc = parse_yaml("base: &b {port: 502, unit_id: 1}\ndev: {<<: *b, unit_id: 2}\n", file="x.yaml")
    assert doc.data["dev"] == {"port": 502, "unit_id": 2}
    assert doc.duplicates == []
    assert doc.mark(("dev", "unit_id")) == Mark(2, 15)
    assert doc.mark(("dev", "port")) == Mark(1, 11)  # where the merged value is written


def test_yaml_1_2_scalars() -> None:
    doc = parse_yaml("[off, yes, true, 01000, 01E00, 18:30, 0x10, 1.5, 1e3, 2025-10-01, ~]", file="x")
    assert doc.data[:9] == ["off", "yes", True, "01000", "01E00", "18:30", 16, 1.5, "1e3"]
    assert str(doc.data[9]) == "2025-10-01" and doc.data[10] is None


def test_yaml_errors_carry_position() -> None:
    with pytest.raises(YamlSyntaxError) as exc:
        parse_yaml("a: 1\nb: [1, 2\n", file="f.yaml")
    assert exc.value.file == "f.yaml" and exc.value.mark.line >= 2


def test_not_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_bytes(b"gateway_id: gw\nname: \xb2\xe2\xca\xd4\n")  # GBK, not UTF-8
    (issue,) = issues_of(str(bad))
    assert (issue.line, issue.col) == (2, 7) and "UTF-8" in issue.message


def test_empty_and_missing_site_file(tmp_path: Path) -> None:
    empty = tmp_path / "site.yaml"
    empty.write_text("# nothing yet\n")
    (issue,) = issues_of(str(empty))
    assert "empty" in issue.message
    (missing,) = issues_of(str(tmp_path / "nope.yaml"))
    assert "cannot read" in missing.message


def test_path_format_round_trip() -> None:
    for path in [("devices", 3, "points", 7, "address"), ("energy_codes", "01D1A"), ("a", "b.c", 2)]:
        assert parse_path(format_path(path)) == path
    assert format_path(("devices", 3, "points", 7, "address")) == "devices[3].points[7].address"


# ------------------------------------------------------------------------------------------ shapes


def test_schema_errors_are_positioned_and_readable() -> None:
    got = {i.path: i for i in issues_of("shapes_site.yaml")}
    expect = {
        "gateway_id": (1, 1),
        "timezone": (3, 1),
        "location.lat": (4, 12),
        "floor_area_m2": (5, 1),
        "policy": (7, 1),  # missing policy file: reported where the fix goes
        "zones[0].kind": (8, 28),
        "devices[0].protocol": (10, 6),
        "devices[1].protocol": (11, 5),  # missing key: position of the mapping that lacks it
        "devices[2].points[0]": (16, 9),  # model-level check of the point
        "devices[2].points[1]": (17, 9),
        "devices[2].points[2].address": (18, 18),
        "uplink": (19, 1),  # neither a broker host nor the municipal platform: the whole block is wrong
        "energy_codes.1A": (20, 16),
    }
    assert {p: (i.line, i.col) for p, i in got.items()} == expect
    assert "Asia/Shangai" in got["timezone"].message
    assert got["location.lat"].message == "136.65 is above 90"
    assert "'bacnet'" in got["devices[0].protocol"].message
    assert "states" in got["devices[2].points[0]"].message
    assert "`host`" in got["uplink"].message and "`platform`" in got["uplink"].message


# ------------------------------------------------------------------------------------------ policy.yaml


def test_policy_unknown_key_reported_in_policy_file() -> None:
    (issue,) = issues_of("policy_errors_site.yaml")
    assert issue.file == str(FIX / "policy_errors.yaml")
    assert (issue.line, issue.col, issue.path) == (4, 3, "hvac.sumer_min_cooling_c")
    assert "did you mean 'summer_min_cooling_c'?" in issue.message


def test_policy_zone_missing_from_site_is_positioned_in_policy_file() -> None:
    # policy_zone_site.yaml has no `policy:` key, so the default policy.yaml next to it is used.
    (issue,) = issues_of("policy_zone_site.yaml")
    assert issue.file == str(FIX / "policy.yaml")
    assert (issue.line, issue.col, issue.path) == (7, 7, "hvac.exemptions[1].zone")
    assert "'server'" in issue.message


# ------------------------------------------------------------------------------------------ codes and schema


def test_code_table() -> None:
    for code, entry in codes.NATIONAL_CODES.items():
        assert codes.is_code(code) and entry.code == code and entry.zh and entry.en
        up = codes.parent(code)
        assert up is None or up in codes.NATIONAL_CODES  # the tree has no holes
    assert list(codes.ancestors("01B1A")) == ["01B10", "01B00", "01000"]
    table = codes.code_table({"01D1A": "IT equipment 信息设备", "01A00": "照明 lighting"})
    assert table["01D1A"].source == "site" and table["01D1A"].label == "IT equipment 信息设备"
    assert table["01A00"].source == "site"  # a site may relabel
    assert codes.NATIONAL_CODES["01A00"].label == "照明插座用电 lighting and sockets"
    with pytest.raises(ValueError):
        codes.code_table({"1A": "x"})


def test_schemas_and_writer(tmp_path: Path) -> None:
    site = site_json_schema()
    assert {"gateway_id", "building_id", "devices", "zones", "energy_codes"} <= set(site["properties"])
    assert site["additionalProperties"] is False
    assert "properties" in policy_json_schema()
    written = write_schema_files(tmp_path / "cfg")
    assert [p.name for p in written] == ["schema.json", "policy.schema.json"]
    assert json.loads(written[0].read_text()) == json.loads(json.dumps(site))


def test_point_models_come_from_the_registry() -> None:
    from drivers.bacnet.options import BacnetPoint
    from drivers.cjt188.options import Cjt188Point
    from drivers.dlt645.options import Dlt645Point
    from drivers.registry import PROTOCOLS

    assert {name: spec.point_model for name, spec in PROTOCOLS.items()} == {
        "modbus": ModbusPoint,
        "modbus_rtu": ModbusPoint,  # the same points on a serial bus
        "bacnet": BacnetPoint,
        "dlt645": Dlt645Point,
        "cjt188": Cjt188Point,
    }


def test_policy_syntax_error_names_policy_file(tmp_path: Path) -> None:
    site = (FIX / "building_letter_site.yaml").read_text().replace("valid_policy.yaml", "p.yaml")
    (tmp_path / "site.yaml").write_text(site)
    (tmp_path / "p.yaml").write_text("seasons:\n  summer: [06-01\n")
    issues = issues_of(str(tmp_path / "site.yaml"))
    errors = [i for i in issues if i.severity == "error"]
    assert [(i.file, i.line) for i in errors] == [(str(tmp_path / "p.yaml"), 3)]
    assert [i.path for i in issues if i.severity == "warning"] == ["building_id"]  # still reported


@given(
    st.lists(
        st.one_of(
            st.integers(min_value=0, max_value=10_000), st.text("abcXYZ09_-. :/", min_size=1, max_size=8)
        ),
        min_size=1,
        max_size=6,
    )
)
def test_format_path_round_trips(parts: list[str | int]) -> None:
    path = tuple(parts)
    assert parse_path(format_path(path)) == path


def test_error_mapping_through_a_two_protocol_union() -> None:
    """What adding a second protocol to `Device` looks like: tags are skipped, suggestions follow the arm."""
    from typing import Annotated, Literal, Union

    from pydantic import BaseModel, ConfigDict, Field

    from drivers.base import PointBase
    from edge_agent.config.load import _Collector, _validate

    class FakePoint(PointBase):
        channel: int = Field(ge=0, le=7)

    class FakeDevice(BaseModel):
        model_config = ConfigDict(extra="forbid")
        protocol: Literal["fake"]
        id: str
        points: list[FakePoint]

    class TwoSite(BaseModel):
        model_config = ConfigDict(extra="forbid")
        devices: list[Annotated[Union[ModbusDevice, FakeDevice], Field(discriminator="protocol")]]  # noqa: UP007

    doc = parse_yaml(
        "devices:\n"
        "  - {protocol: fake, id: f, points: [{id: p, chanel: 3}]}\n"
        "  - {protocol: modbus, id: m, host: h, points: [{id: q, address: 1, tabel: input}]}\n"
        "  - {protocol: knx, id: k}\n",
        file="s.yaml",
    )
    out = _Collector(doc)
    assert _validate(TwoSite, out) is None
    assert [str(i) for i in out.issues] == [
        "s.yaml:2:46: devices[0].points[0].chanel: unknown key; did you mean 'channel'?",
        "s.yaml:3:69: devices[1].points[0].tabel: unknown key; did you mean 'table'?",
        "s.yaml:4:6: devices[2].protocol: unknown protocol 'knx'; expected one of 'modbus', 'fake'",
    ]


def test_uplink_backoff_old_name_is_read_and_both_names_are_an_error() -> None:
    from edge_agent.config.settings import MqttUplink

    assert MqttUplink(host="h").max_backoff_s == 5 and MqttUplink(host="h").payload == "v2"
    old = MqttUplink.model_validate({"host": "h", "backoff_max_s": 30})
    assert old.max_backoff_s == 30 and old.backoff_max_s is None
    with pytest.raises(ValueError, match="keep only `max_backoff_s`"):
        MqttUplink.model_validate({"host": "h", "backoff_max_s": 30, "max_backoff_s": 5})


def test_batch_max_defaults_by_payload_and_a_given_one_is_kept() -> None:
    """v2 batches of 2000 readings (a v2 reading is ~10 bytes); v1 keeps 500, under max_packet_bytes."""
    from edge_agent.config.settings import MqttUplink

    assert MqttUplink(host="h").batch_max == 2000
    assert MqttUplink.model_validate({"host": "h", "payload": "v1"}).batch_max == 500
    assert MqttUplink.model_validate({"host": "h", "payload": "v1", "batch_max": 50}).batch_max == 50
    assert MqttUplink.model_validate({"host": "h", "batch_max": 100}).batch_max == 100


def test_the_old_backoff_name_is_a_warning_that_says_what_to_write(tmp_path: Path) -> None:
    import shutil

    shutil.copy(FIX / "valid_policy.yaml", tmp_path / "valid_policy.yaml")
    site = tmp_path / "site.yaml"
    text = (FIX / "valid_site.yaml").read_text(encoding="utf-8")
    site.write_text(text + "uplink:\n  host: 127.0.0.1\n  backoff_max_s: 30\n", encoding="utf-8")
    cfg = load_config(site)
    assert cfg.site.uplink is not None and cfg.site.uplink.max_backoff_s == 30
    (warn,) = [w for w in cfg.warnings if w.path.startswith("uplink")]
    assert warn.path == "uplink.backoff_max_s" and "rename it to `max_backoff_s`" in warn.message


@pytest.mark.parametrize("prefix", ["city/+/edge", "edge/#", "my edge", "edge//b", "/edge", "edge/"])
def test_topic_prefix_refuses_wildcards_spaces_and_empty_levels(tmp_path: Path, prefix: str) -> None:
    for name in ("modbus_site.yaml", "modbus_policy.yaml"):
        (tmp_path / name).write_text((FIX / name).read_text(encoding="utf-8"), encoding="utf-8")
    site = tmp_path / "modbus_site.yaml"
    with site.open("a", encoding="utf-8") as fh:
        fh.write(f'uplink:\n  host: 127.0.0.1\n  topic_prefix: "{prefix}"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(site)
    (issue,) = exc.value.issues
    assert issue.path == "uplink.topic_prefix" and "no '+', '#', spaces or empty levels" in issue.message
    assert site.read_text(encoding="utf-8").splitlines()[issue.line - 1].strip().startswith("topic_prefix:")


def test_topic_prefix_may_have_several_levels(tmp_path: Path) -> None:
    for name in ("modbus_site.yaml", "modbus_policy.yaml"):
        (tmp_path / name).write_text((FIX / name).read_text(encoding="utf-8"), encoding="utf-8")
    site = tmp_path / "modbus_site.yaml"
    with site.open("a", encoding="utf-8") as fh:
        fh.write("uplink:\n  host: 127.0.0.1\n  topic_prefix: city-7/energy.v2/edge_gw\n")
    cfg = load_config(site)
    assert cfg.site.uplink is not None and cfg.site.uplink.topic_prefix == "city-7/energy.v2/edge_gw"

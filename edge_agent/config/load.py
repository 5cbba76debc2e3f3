"""site.yaml and policy.yaml: load, validate, and report every problem with FILE:LINE:COL and YAML path.

The schema is composed, not re-declared: devices and site-wide protocol options (``bacnet:``) come
from the drivers' options models through ``drivers.registry`` (a discriminated union on ``protocol``),
storage/uplink/status from ``edge_agent.settings`` and the policy from ``policies.model.Policy``. This
module adds the site's own fields (identity, zones, energy code additions) and the protocol-neutral
checks that span several entries (unique ids, zone references, energy codes, the metering tree); each
protocol's own checks (Modbus: overlapping registers, duplicate endpoints) run through the registry.

Cross checks run on the raw YAML data, not on the validated models, so one run reports a typo in
one device and a duplicate point id in another together; an entry that does not validate is
simply skipped by the checks that need its typed form.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

import policies.model as policy_model
from drivers.base import ENERGY_ROLES, PointBase
from drivers.registry import PROTOCOLS, ProtocolSpec
from drivers.spec import DeviceEntry, DeviceOptions
from edge_agent.config.codes import BUILDING_TYPES, CODE_PATTERN, PROVINCE_PREFIXES, code_table, is_code
from edge_agent.config.settings import (
    TOPIC_PREFIX_PATTERN,
    MqttUplink,
    ReportOptions,
    StatusOptions,
    StorageOptions,
)
from edge_agent.config.units import check_ac_units, server_zone_warnings
from edge_agent.config.yamlmarks import YamlDoc, YamlPath, YamlSyntaxError, format_path, load_yaml, parse_path
from policies.model import Policy

__all__ = [
    "POLICY_SCHEMA_FILE",
    "SITE_SCHEMA_FILE",
    "CoalFactor",
    "ConfigError",
    "ConfigIssue",
    "Device",
    "LedgerOptions",
    "LoadedConfig",
    "Location",
    "MeterNode",
    "Site",
    "Targets",
    "Zone",
    "load_config",
    "policy_json_schema",
    "render_schema",
    "site_json_schema",
    "site_model",
    "write_schema_files",
]

SITE_SCHEMA_FILE = "schema.json"
POLICY_SCHEMA_FILE = "policy.schema.json"

# A validated `devices:` entry, as the shell sees it. Validation uses the union of the registered
# protocols' device models (discriminated on `protocol`): see site_model().
Device: TypeAlias = DeviceOptions

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
_BUILDING_ID = re.compile(r"^[0-9]{6}[A-Z][0-9]{3}$")


# --------------------------------------------------------------------------------------------- issues


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in one file. Lines and columns are 1-based."""

    file: str
    line: int
    col: int
    path: str  # YAML path, e.g. devices[3].points[7].address; "" for the file as a whole
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        # Warnings keep the "file:line:col: path: " prefix; only the message says it is a warning.
        message = f"warning: {self.message}" if self.severity == "warning" else self.message
        where = f"{self.file}:{self.line}:{self.col}:"
        return f"{where} {self.path}: {message}" if self.path else f"{where} {message}"


class ConfigError(Exception):
    """The configuration is invalid. ``issues`` holds every error and warning found, in file order."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))

    @property
    def errors(self) -> list[ConfigIssue]:
        return [i for i in self.issues if i.severity == "error"]


# --------------------------------------------------------------------------------------------- models


class _Strict(BaseModel):
    # Infinity and NaN mean nothing in site.yaml (an infinite floor area, a NaN latitude): refused.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Location(_Strict):
    lat: float = Field(ge=-90, le=90, description="Latitude, degrees north (for sunrise/sunset)")
    lon: float = Field(ge=-180, le=180, description="Longitude, degrees east")


class Zone(_Strict):
    id: str = Field(pattern=_ID, max_length=64, description="Referenced by points, devices and policy.yaml")
    name: str = Field(min_length=1, description="Human name, e.g. `3F 东区 east wing`")
    perimeter: bool = Field(default=False, description="Has outside walls and windows (daylight, contacts)")
    kind: Literal["office", "data_centre", "server_room", "corridor", "other"] | None = Field(
        default=None, description="Lets policies treat data centres and corridors differently"
    )


class MeterNode(_Strict):
    """One meter of the metering tree (分户、分区、分项计量): a cumulative energy point and where it sits."""

    point: str = Field(pattern=_ID, max_length=64, description="Id of a cumulative point with an energy_code")
    parent: str | None = Field(
        default=None,
        pattern=_ID,
        max_length=64,
        description="The meter (point id, listed here too) upstream of this one; absent = a main meter",
    )
    institution: str | None = Field(
        default=None, description="Institution (户) this meter bills to; sub-meters inherit their parent's"
    )
    it_load: bool = Field(
        default=False,
        description="The data centre's IT-load meter (UPS output): PUE = its parent's energy / its energy",
    )


class Targets(_Strict):
    """Annual targets (年度目标) of the scoring checklist; any may be left out."""

    kgce_per_m2: float | None = Field(default=None, gt=0, description="单位建筑面积能耗 kgce/(m²·a)")
    kgce_per_person: float | None = Field(default=None, gt=0, description="人均综合能耗 kgce/(person·a)")
    water_m3_per_person: float | None = Field(default=None, gt=0, description="人均用水量 m³/(person·a)")
    source: str | None = Field(default=None, description="Where the targets come from (document, year)")


class CoalFactor(_Strict):
    """Standard-coal factor of one energy category, overriding the GB/T 2589-2020 default."""

    kgce_per_unit: float = Field(gt=0, description="kgce per unit of the category's ledger unit")
    unit: str = Field(min_length=1, description="The ledger unit the factor applies to: kWh, m3, MJ, kg")
    source: str = Field(
        min_length=3, description="Where the factor comes from (standard, supplier's heating value)"
    )


class FuelDensity(_Strict):
    """kg per litre of vehicle fuel. The defaults are the typical densities STANDARDS.md quotes next to
    GB/T 2589-2020's factors by mass (gasoline 1.4714, diesel 1.4571 kgce/kg); set the supplier's figure."""

    gasoline: float = Field(default=0.73, gt=0.5, lt=1.0, description="Gasoline kg/L (default 0.73)")
    diesel: float = Field(default=0.84, gt=0.5, lt=1.0, description="Diesel kg/L (default 0.84)")
    source: str = Field(
        default="typical densities (STANDARDS.md; GB/T 2589-2020 gives the factors per kg)",
        min_length=3,
        description="Where the densities come from (shown in the report and the form)",
    )


class Persons(_Strict):
    """用能人数 as the statistics form splits it; per-person KPIs divide by both together (STANDARDS.md:
    per person including non-establishment staff)."""

    establishment: int = Field(ge=0, description="编制人数: establishment staff")
    others: int = Field(ge=0, description="其他人员: contract, outsourced and other staff in the building")


class LedgerOptions(_Strict):
    interval_min: Literal[15] = Field(default=15, description="Base interval of the ledger (minutes)")
    max_gap_intervals: int = Field(
        default=4,
        ge=0,
        le=96,
        description="Every gap is allocated and counted (marked estimated: by the meter's profile of "
        "comparable days, linearly without one); a gap of more than this many missing intervals is also "
        "listed in the report as a data-quality item with its energy",
    )
    outliers: Literal["exclude", "keep"] = Field(
        default="exclude",
        description="Spike / out-of-range counter steps: exclude from totals (default) or keep; "
        "counted and shown either way",
    )
    statistics_source: Literal["meter", "bill"] = Field(
        default="meter",
        description="Where a period has both meter data and an imported bill (`edge-agent ledger import`): "
        "which one the statistics (totals, kgce, KPIs) use. The report shows both and the difference either "
        "way; a category with bills but no meter uses its bills",
    )
    fuel_density_kg_per_l: FuelDensity = Field(
        default_factory=lambda: FuelDensity(),
        description="Density of official-vehicle fuel imported in litres, so it gets kgce (the coal factors "
        "are per kg): kgce = L x density x kgce/kg",
    )
    baseline_year: int | None = Field(
        default=None,
        ge=2000,
        le=2100,
        description="Baseline year (基准年) of the report's history analysis and the annual work summary: "
        "each figure is also compared with this year's (absent: last year only)",
    )


EnergyCodeKey = Annotated[str, StringConstraints(pattern=CODE_PATTERN)]


# Site is declared in two parts because pydantic orders fields base-first along the MRO: site_model()
# slots the registered protocols' site-wide options (`bacnet:`) between _SiteHead and _SiteTail, where
# they have always been in the schema and in "expected one of: ..." messages.


class _SiteHead(_Strict):
    gateway_id: str = Field(pattern=r"^[A-Za-z0-9._\-]+$", max_length=64, description="This gateway's id")
    building_id: str = Field(
        pattern=r"^[0-9]{6}[A-Z][0-9]{3}$",
        description="MOHURD building id: 6-digit administrative division + type letter A-H + 3-digit serial",
    )
    name: str | None = Field(default=None, description="Building name, e.g. `示例办公楼 Demo office`")
    timezone: str = Field(default="Asia/Shanghai", description="IANA time zone of the building")
    location: Location
    floor_area_m2: float = Field(gt=0, description="Floor area for kgce/m² (单位建筑面积能耗)")
    occupants: int = Field(gt=0, description="People, including non-establishment staff, for per-person KPIs")
    persons: Persons | None = Field(
        default=None,
        description="The occupants split into establishment (编制) and others (其他) for the statistics "
        "form; "
        "their sum is `occupants` (which may then be left out)",
    )
    policy: str = Field(default="policy.yaml", description="policy.yaml path, relative to this file")
    zones: list[Zone] = Field(default_factory=list)
    if TYPE_CHECKING:
        devices: list[Device]
    else:
        devices: list[Any] = Field(min_length=1)  # site_model() puts the registered protocols' union here
    storage: StorageOptions = Field(default_factory=StorageOptions)
    uplink: MqttUplink | None = Field(default=None, description="Absent: readings stay in the local outbox")
    status: StatusOptions = Field(default_factory=StatusOptions)

    @model_validator(mode="before")
    @classmethod
    def _occupants_from_persons(cls, data: object) -> object:
        # `persons:` alone is enough: occupants is their sum
        if isinstance(data, dict) and "occupants" not in data and isinstance(data.get("persons"), dict):
            parts = [data["persons"].get(k) for k in ("establishment", "others")]
            if all(isinstance(v, int) and not isinstance(v, bool) for v in parts):
                return {**data, "occupants": sum(parts)}
        return data

    @field_validator("persons")
    @classmethod
    def _persons_add_up(cls, p: Persons | None, info: ValidationInfo) -> Persons | None:
        occupants = info.data.get("occupants")
        if p is not None and isinstance(occupants, int) and p.establishment + p.others != occupants:
            raise ValueError(
                f"establishment {p.establishment} + others {p.others} = {p.establishment + p.others}, "
                f"but occupants is {occupants}: make them agree (or leave occupants out)"
            )
        return p

    @field_validator("building_id", mode="before")
    @classmethod
    def _building_id_shape(cls, value: object) -> object:
        if isinstance(value, str) and not _BUILDING_ID.match(value):
            raise ValueError(
                f"{value!r} is not a MOHURD building id: 6-digit administrative division + "
                "type letter A-H + 3-digit serial, e.g. 370102A001"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Asia/Shanghai") from None
        return value


class _SiteTail(_Strict):
    energy_codes: dict[EnergyCodeKey, str] = Field(
        default_factory=dict, description="Additions to the MOHURD code table, e.g. {01D1A: IT equipment}"
    )
    meters: list[MeterNode] = Field(
        default_factory=list,
        description="Metering tree: main meters, their sub-meters and scope, for balance, coverage and PUE",
    )
    targets: Targets | None = Field(default=None, description="Annual KPI targets for reports")
    coal_factors: dict[EnergyCodeKey, CoalFactor] = Field(
        default_factory=dict,
        description="Standard-coal factors by category code (01000, 03000...), overriding GB/T 2589-2020",
    )
    ledger: LedgerOptions = Field(default_factory=LedgerOptions)


class Site(_SiteTail, _SiteHead):
    """The site as the shell reads it. Validate with ``site_model()``, the subclass that adds the
    registered protocols' device union and site-wide options (this class checks no device)."""

    def network_options(self, protocol: str) -> BaseModel | None:
        """The site-wide options ``protocol`` registered (e.g. `bacnet:`); None when absent or it has none."""
        spec = PROTOCOLS.get(protocol)
        if spec is None or spec.network_key is None:
            return None
        options = getattr(self, spec.network_key, None)
        return options if isinstance(options, BaseModel) else None


def site_model() -> type[Site]:
    """The Site model for the protocols registered in drivers.registry now (composed once per registry)."""
    return _compose_site(tuple(PROTOCOLS.values()))


_REPORT_DESCRIPTION = (
    "Report by exception: readings go to the outbox and uplink on change beyond a deadband or every "
    "max_interval_s; absent: every poll. A point's `report` wins over its device's"
)


@functools.cache
def reporting_models(spec: ProtocolSpec) -> tuple[type[BaseModel], type[PointBase]]:
    """The protocol's device and point models with the shell's `report:` option added: report by
    exception is the outbox's business, so the drivers' own models do not know it."""
    report: Any = (ReportOptions | None, Field(default=None, description=_REPORT_DESCRIPTION))
    point = create_model(
        spec.point_model.__name__, __base__=spec.point_model, __module__=spec.point_model.__module__,
        __doc__=spec.point_model.__doc__, report=report,
    )  # fmt: skip
    points = spec.device_model.model_fields["points"]
    device = create_model(
        spec.device_model.__name__, __base__=spec.device_model, __module__=spec.device_model.__module__,
        __doc__=spec.device_model.__doc__, points=(list[point], points), report=report,  # type: ignore[valid-type]
    )  # fmt: skip
    return device, point


@functools.cache
def _compose_site(specs: tuple[ProtocolSpec, ...]) -> type[Site]:
    if not specs:
        raise ValueError("no protocol is registered in drivers.registry")
    models = tuple(reporting_models(spec)[0] for spec in specs)
    union: Any = Union[models] if len(models) > 1 else models[0]  # noqa: UP007
    device = Annotated[union, Field(discriminator="protocol")]
    options: dict[str, Any] = {}
    for spec in specs:
        if spec.network_key is None or spec.network_model is None:
            continue
        if spec.network_key in Site.model_fields:
            raise ValueError(f"protocol {spec.name!r}: site.yaml key {spec.network_key!r} is the site's own")
        options[spec.network_key] = (
            spec.network_model | None,
            Field(default=None, description=spec.network_description),
        )
    # MRO: Site, _SiteTail, networks, _SiteHead -> fields: head, the protocols' options, tail.
    networks = create_model("_SiteNetworks", __base__=_SiteHead, __module__=__name__, **options)
    model = create_model(
        "Site", __base__=(Site, networks), __module__=__name__, devices=(list[device], Field(min_length=1))
    )
    return cast(type[Site], model)


# --------------------------------------------------------------------------------------------- result


@dataclass(frozen=True)
class LoadedConfig:
    site: Site
    policy: Policy
    site_path: Path  # absolute
    policy_path: Path  # absolute
    warnings: list[ConfigIssue] = field(default_factory=list)
    _zones: Mapping[str, str | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        zones: dict[str, str | None] = {}
        for device, point in self.points():
            zones[point.id] = point.zone or device.zone
        object.__setattr__(self, "_zones", types.MappingProxyType(zones))

    def points(self) -> Iterator[tuple[Device, PointBase]]:
        """Every (device, point), in file order."""
        for device in self.site.devices:
            for point in device.points:
                yield device, point

    def point_zone(self, point_id: str) -> str | None:
        """The point's zone, else its device's; None when neither has one. KeyError for an unknown id."""
        return self._zones[point_id]

    def resolve(self, path_str: str) -> Path:
        """A path written in site.yaml, relative to site.yaml's directory unless absolute."""
        p = Path(path_str).expanduser()
        return p if p.is_absolute() else self.site_path.parent / p


# --------------------------------------------------------------------------------------------- loading


class _Collector:
    """Collects issues for one file, positioned from its marks.

    ``data`` is what the checks read: the file's data, with the points devices declare other than in
    `points:` (Modbus `repeat:` blocks) appended to their `points:`; ``aliases`` sends the path of such
    a point to its template (or unit) in the file, so every problem lands on a line that exists."""

    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.issues: list[ConfigIssue] = []
        self.data, self.aliases = _expand_points(doc.data)

    def _place(self, path: Sequence[str | int]) -> YamlPath:
        p = tuple(path)
        hit = self.aliases.get(p[:4]) if len(p) >= 4 else None
        if hit is None:
            return p
        template, keys = hit
        rest = p[4:]
        if rest and isinstance(rest[0], str) and rest[0] in keys:
            return (*keys[rest[0]], *rest[1:])
        return (*template, *rest)

    def add(
        self,
        path: Sequence[str | int],
        message: str,
        *,
        severity: Literal["error", "warning"] = "error",
        container: bool = False,
    ) -> None:
        path = self._place(path)
        mark = self.doc.container_mark(path[:-1]) if container else self.doc.mark(path)
        self.issues.append(
            ConfigIssue(self.doc.file, mark.line, mark.col, format_path(path), message, severity=severity)
        )

    def where(self, path: Sequence[str | int]) -> str:
        """Another entry of the same file, for messages that name two places."""
        path = self._place(path)
        mark = self.doc.mark(path)
        return f"{format_path(path)} (line {mark.line})"


_Aliases: TypeAlias = dict[YamlPath, tuple[YamlPath, Mapping[str, YamlPath]]]


def _expand_points(data: object) -> tuple[object, _Aliases]:
    """``data`` with each device's expanded points (drivers.spec.ExpandedPoint) appended to its `points:`,
    as its model appends them, and where each came from. ``data`` itself is left as it is."""
    aliases: _Aliases = {}
    devices = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(devices, list):
        return data, aliases
    out: list[Any] = []
    for d, dev in enumerate(devices):
        spec = PROTOCOLS.get(dev.get("protocol")) if isinstance(dev, dict) else None  # type: ignore[arg-type]
        extra = spec.expand_points(dev) if spec is not None and spec.expand_points is not None else ()
        if not extra:
            out.append(dev)
            continue
        assert isinstance(dev, dict)
        points = _as_list(dev.get("points"))
        for i, e in enumerate(extra):
            keys = {k: ("devices", d, *v) for k, v in e.keys.items()}
            aliases[("devices", d, "points", len(points) + i)] = (("devices", d, *e.path), keys)
        out.append({**dev, "points": [*points, *(dict(e.data) for e in extra)]})
    return {**data, "devices": out}, aliases  # type: ignore[dict-item]


def load_config(site_path: str | Path) -> LoadedConfig:
    """Load and validate site.yaml and the policy file it names. Raises ConfigError listing everything."""
    site_file = str(site_path)
    issues: list[ConfigIssue] = []
    try:
        doc = load_yaml(site_path, file=site_file)
    except OSError as exc:
        raise ConfigError([ConfigIssue(site_file, 1, 1, "", f"cannot read: {exc.strerror or exc}")]) from None
    except YamlSyntaxError as exc:
        raise ConfigError([ConfigIssue(site_file, exc.mark.line, exc.mark.col, "", exc.message)]) from None

    site_out = _Collector(doc)
    _duplicate_keys(site_out)
    site = _validate(site_model(), site_out)
    _cross_check(site_out, site)

    policy: Policy | None = None
    policy_path: Path | None = None
    raw_policy = doc.data.get("policy", "policy.yaml") if isinstance(doc.data, dict) else None
    if isinstance(raw_policy, str) and raw_policy:
        policy_path = Path(raw_policy).expanduser()
        if not policy_path.is_absolute():
            policy_path = Path(site_path).parent / policy_path
        policy, policy_out = _load_policy(policy_path, site_out, "policy" in doc.data)
        if policy_out is not None:
            if policy is not None:
                _policy_site_problems(policy, policy_out, doc.data)
                server_zone_warnings(
                    policy,
                    _as_dict(site_out.data),
                    lambda path, msg: site_out.add(path, msg, severity="warning"),
                )
            issues += policy_out.issues
    elif isinstance(doc.data, dict):  # `policy: ''`, `policy: 3`: say so rather than fail without a reason
        site_out.add(
            ["policy"],
            f"expected the path of policy.yaml (relative to this file's folder), got {raw_policy!r}",
        )

    issues = _ordered(site_out.issues + issues, site_file)
    if site is None or policy is None or policy_path is None or any(i.severity == "error" for i in issues):
        raise ConfigError(issues)
    site = _resolve_files(site, Path(site_path).absolute().parent)
    return LoadedConfig(
        site=site,
        policy=policy,
        site_path=Path(site_path).absolute(),
        policy_path=policy_path.absolute(),
        warnings=[i for i in issues if i.severity == "warning"],
    )


def _resolve(base: Path, path: str | None) -> str | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base / p)


def _resolve_files(site: Site, base: Path) -> Site:
    """The uplink's files (credentials, TLS) as absolute paths against site.yaml's folder, like every other
    path in site.yaml: the service runs in another working directory (the unit's WorkingDirectory)."""
    up = site.uplink
    if up is None:
        return site
    tls = up.tls
    if tls is not None:
        tls = tls.model_copy(
            update={
                "ca_file": _resolve(base, tls.ca_file),
                "cert_file": _resolve(base, tls.cert_file),
                "key_file": _resolve(base, tls.key_file),
            }
        )
    platform = up.platform
    if platform is not None:
        platform = platform.model_copy(update={"key_file": _resolve(base, platform.key_file)})
    up = up.model_copy(
        update={"credentials_file": _resolve(base, up.credentials_file), "tls": tls, "platform": platform}
    )
    return site.model_copy(update={"uplink": up})


def _load_policy(path: Path, site_out: _Collector, named: bool) -> tuple[Policy | None, _Collector | None]:
    name = os.path.normpath(path)
    try:
        doc = load_yaml(path, file=name)
    except OSError as exc:
        # Reported against site.yaml's `policy:` key: that is where the fix goes.
        reason = exc.strerror or str(exc)
        site_out.add(["policy"], f"cannot read policy file {name}: {reason}", container=not named)
        return None, None
    except YamlSyntaxError as exc:
        site_out.issues.append(ConfigIssue(name, exc.mark.line, exc.mark.col, "", exc.message))
        return None, None
    out = _Collector(doc)
    if doc.data is None:  # Policy has required keys (seasons): an empty file cannot mean "all defaults"
        out.add([], "the policy file is empty; it needs at least `seasons:` (see config/policy.yaml)")
        return None, out
    _duplicate_keys(out)
    return _validate(Policy, out), out


def _policy_site_problems(policy: Policy, out: _Collector, site_data: Mapping[str, Any]) -> None:
    """Zones (and whatever else) policy.yaml names that site.yaml lacks, via policies.model.site_problems.

    The hook is looked up by name because policies/ owns it and may rename or drop it; each problem
    is a "yaml.path: message" string that we position in policy.yaml.
    """
    hook = getattr(policy_model, "site_problems", None)
    if hook is None or not isinstance(site_data.get("zones", []), list):
        return
    zones = [_as_dict(z).get("id") for z in _as_list(site_data.get("zones"))]
    zone_ids = frozenset(z for z in zones if isinstance(z, str))
    for problem in hook(policy, zone_ids):
        text = str(problem)
        path_text, sep, message = text.partition(": ")
        if sep:
            out.add(parse_path(path_text), message)
        else:
            out.add([], text)


def _ordered(issues: list[ConfigIssue], first_file: str) -> list[ConfigIssue]:
    unique = list(dict.fromkeys(issues))  # a union can report the same problem twice
    return sorted(unique, key=lambda i: (i.file != first_file, i.file, i.line, i.col))


def _duplicate_keys(out: _Collector) -> None:
    for dup in out.doc.duplicates:
        mark = dup.again
        out.issues.append(
            ConfigIssue(
                out.doc.file,
                mark.line,
                mark.col,
                format_path(dup.path),
                f"duplicate key (first at line {dup.first.line}); YAML would silently keep only the last",
            )
        )


# ------------------------------------------------------------------------------------- pydantic errors

_M = typing.TypeVar("_M", bound=BaseModel)


def _validate(model: type[_M], out: _Collector) -> _M | None:
    if out.doc.data is None:
        out.add([], "the file is empty; expected a mapping of keys")
        return None
    try:
        return model.model_validate(out.doc.data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    # A misspelt required key shows up twice, as unknown and as missing: report it once, as the typo.
    typo_targets: set[YamlPath] = set()
    for err in errors:
        if err["type"] == "extra_forbidden":
            path, _ = _data_path(out.data, tuple(err["loc"]))
            close = _suggest(model, tuple(err["loc"]), path)
            if close:
                typo_targets.add((*path[:-1], close))
    for err in errors:
        _report(model, err, out, typo_targets)
    return None


def _suggest(model: type[BaseModel], loc: tuple[str | int, ...], path: YamlPath) -> str | None:
    key = str(path[-1]) if path else ""
    close = difflib.get_close_matches(key, _allowed_keys(model, loc[:-1]), n=1, cutoff=0.6)
    return close[0] if close else None


def _report(model: type[BaseModel], err: ErrorDetails, out: _Collector, typo_targets: set[YamlPath]) -> None:
    loc = tuple(err["loc"])
    path, state = _data_path(out.data, loc)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")

    if kind == "missing" or state == "missing":
        if path not in typo_targets:
            out.add(path, "required key missing", container=True)
        return
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        close = _suggest(model, loc, path)
        if close:
            out.add(path, f"unknown key; did you mean {close!r}?")
        elif allowed:
            out.add(path, f"unknown key; expected one of: {', '.join(allowed)}")
        else:
            out.add(path, "unknown key")
        return
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        disc = str(ctx.get("discriminator", "")).strip("'\"")
        expected = ctx.get("expected_tags") or ", ".join(repr(t) for t in _tags(model, loc))
        if kind == "union_tag_invalid" and disc:
            out.add([*path, disc], f"unknown {disc} {ctx.get('tag')!r}; expected one of {expected}")
        else:
            out.add(
                [*path, disc],
                f"required key missing (one of {expected})" if disc else err["msg"],
                container=True,
            )
        return
    if state == "dict_key":
        key = loc[loc.index("[key]") - 1] if loc.index("[key]") > 0 else ""
        out.add(path, f"key {key!r}: {_message(kind, err['msg'], ctx, value)}")
        return
    out.add(path, _message(kind, err["msg"], ctx, value))


# The patterns of the site's string fields, in words: "should match pattern '^[0-9]{12}$'" is for a regex
# engine, not for whoever reads the meter's plate.
_PATTERN_WORDS = {
    _ID: "a letter or digit, then letters, digits, '_', '.' or '-'",
    r"^[A-Za-z0-9._\-]+$": "letters, digits, '.', '_' or '-' only",
    r"^[0-9A-Fa-f]{8}$": "8 hex digits",
    r"^[0-9]{12}$": "12 digits, as on the meter's plate",
    r"^[0-9]{14}$": "14 digits, as on the meter's plate",
    r"^([0-9A-Fa-f]{2})*$": "hex bytes: an even number of hex digits",
    r"^/": "an absolute path (starting with /)",
    r"^[a-z][a-z0-9\-]*$": "a lower-case letter, then lower-case letters, digits or '-'",
    CODE_PATTERN: "an energy item code like 01A00",
    TOPIC_PREFIX_PATTERN: "topic levels of letters, digits, '.', '_' or '-' separated by '/' "
    "(no '+', '#', spaces or empty levels)",
}


def _message(kind: str, msg: str, ctx: Mapping[str, Any], value: object) -> str:
    if isinstance(value, float) and not math.isfinite(value):  # not "nan is above 86400"
        return f"{value} is not a finite number; give one"
    if kind == "string_pattern_mismatch" and str(ctx.get("pattern")) in _PATTERN_WORDS:
        got = f"{value!r}, {len(value)} characters" if isinstance(value, str) else repr(value)
        return f"expected {_PATTERN_WORDS[str(ctx['pattern'])]} (got {got})"
    if kind == "less_than_equal":
        return f"{_num(value)} is above {_num(ctx['le'])}"
    if kind == "greater_than_equal":
        return f"{_num(value)} is below {_num(ctx['ge'])}"
    if kind == "less_than":
        return f"{_num(value)} is not below {_num(ctx['lt'])}"
    if kind == "greater_than":
        return f"{_num(value)} is not above {_num(ctx['gt'])}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys, got {_yaml_kind(value)}"
    if kind == "list_type":
        return f"expected a list, got {_yaml_kind(value)}"
    if kind.startswith("value_error") or kind == "assertion_error":
        return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "string_type" and isinstance(value, int | float) and not isinstance(value, bool):
        return f"expected text, got the number {value!r}; quote it: '{value}'"
    text = msg[:1].lower() + msg[1:]
    if isinstance(value, str | int | float | bool) or value is None:
        return f"{text} (got {value!r})"
    return text


def _num(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _yaml_kind(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def _data_path(data: object, loc: tuple[str | int, ...]) -> tuple[YamlPath, str]:
    """Turn a pydantic error location into a path through the YAML data.

    pydantic inserts union tags (``devices.0.modbus.points``) and ``[key]`` markers that are not in
    the data: an element the data does not have is dropped, unless it is the last one (then the
    key is missing). Returns the path and "ok", "missing" or "dict_key".
    """
    path: list[str | int] = []
    cur: object = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if part == "[key]":
            return tuple(path), "dict_key"
        found = (isinstance(cur, dict) and part in cur) or (
            isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        )
        if found:
            path.append(part)
            cur = cur[part]  # type: ignore[index]
        elif last and isinstance(cur, dict):
            path.append(part)
            return tuple(path), "missing"
        # else: a union tag or a model name pydantic put in the location; not in the data
    return tuple(path), "ok"


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_arms(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [_unwrap(a) for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _tag_of(model: type[BaseModel]) -> list[str]:
    tags: list[str] = []
    for f in model.model_fields.values():
        ann = _unwrap(f.annotation)
        if typing.get_origin(ann) is Literal and f.is_required():
            tags += [str(a) for a in typing.get_args(ann)]
    return tags


def _type_at(root: type[BaseModel], loc: Sequence[str | int]) -> Any:
    """The annotated type at a pydantic error location (following union tags), or None."""
    tp: Any = root
    parts = list(loc)
    while parts:
        tp = _unwrap(tp)
        arms = _union_arms(tp)
        if len(arms) > 1:
            models = [a for a in arms if isinstance(a, type) and issubclass(a, BaseModel)]
            pick = [m for m in models if str(parts[0]) in (*_tag_of(m), m.__name__)]
            if pick:
                tp = pick[0]
                parts.pop(0)
                continue
            if len(models) == 1:
                tp = models[0]
                continue
            return None
        tp = arms[0]
        origin = typing.get_origin(tp)
        part = parts.pop(0)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = tp.model_fields
            name = next((n for n, f in fields.items() if part in (n, f.alias)), None)
            if name is None:
                continue  # a tag pydantic added for a single-arm union
            tp = fields[name].annotation
        elif origin in (list, tuple, set, frozenset, Sequence):
            args = typing.get_args(tp)
            tp = args[0] if args else None
        elif origin in (dict, Mapping):
            args = typing.get_args(tp)
            tp = args[1] if len(args) == 2 else None
        else:
            return None
    return _unwrap(tp)


def _allowed_keys(root: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    tp = _type_at(root, loc)
    models = [a for a in _union_arms(tp) if isinstance(a, type) and issubclass(a, BaseModel)] if tp else []
    if len(models) != 1:
        return []
    return [f.alias or n for n, f in models[0].model_fields.items()]


def _tags(root: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    tp = _type_at(root, loc)
    tags: list[str] = []
    for arm in _union_arms(tp) if tp else []:
        if isinstance(arm, type) and issubclass(arm, BaseModel):
            tags += _tag_of(arm)
    return tags


# --------------------------------------------------------------------------------------------- cross checks


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _cross_check(out: _Collector, site: Site | None = None) -> None:
    """``site``: the validated site when it validated; its points are the protocols' checks' typed points
    (validating 10,000 points a second time was a tenth of `check`)."""
    data = _as_dict(out.data)
    _check_building_id(out, data)
    uplink = _as_dict(data.get("uplink"))
    if "backoff_max_s" in uplink and "max_backoff_s" not in uplink:
        out.add(
            ["uplink", "backoff_max_s"],
            "the old name of `max_backoff_s` (read as it): rename it to `max_backoff_s`",
            severity="warning",
        )

    zones: dict[str, YamlPath] = {}
    zones_ok = isinstance(data.get("zones", []), list)  # else the schema error is enough; no echoes
    for i, zone in enumerate(_as_list(data.get("zones"))):
        zid = _as_dict(zone).get("id")
        if isinstance(zid, str):
            if zid in zones:
                out.add(["zones", i, "id"], f"duplicate zone id {zid!r}; first at {out.where(zones[zid])}")
            else:
                zones[zid] = ("zones", i, "id")

    # A malformed key is the schema's to report; the well-formed ones still count here.
    raw_codes = _as_dict(data.get("energy_codes")).items()
    site_codes = {k: str(v) for k, v in raw_codes if isinstance(k, str) and is_code(k)}
    table = code_table(site_codes)

    device_ids: dict[str, YamlPath] = {}
    point_ids: dict[str, YamlPath] = {}
    point_data: dict[str, Mapping[str, Any]] = {}
    by_protocol: dict[str, list[DeviceEntry]] = {}  # for the protocols' own checks (drivers.registry)
    for d, device in enumerate(_as_list(data.get("devices"))):
        dev = _as_dict(device)
        dpath: YamlPath = ("devices", d)
        did = dev.get("id")
        if isinstance(did, str):
            if did in device_ids:
                out.add([*dpath, "id"], f"duplicate device id {did!r}; first at {out.where(device_ids[did])}")
            else:
                device_ids[did] = (*dpath, "id")
        if zones_ok:
            _check_zone_ref(out, zones, dev.get("zone"), [*dpath, "zone"])
        protocol = dev.get("protocol")
        spec = PROTOCOLS.get(protocol) if isinstance(protocol, str) else None
        point_model = reporting_models(spec)[1] if spec is not None and spec.check_site is not None else None
        if point_model is not None and site is not None:
            typed: list[tuple[int, PointBase]] = list(enumerate(site.devices[d].points))
            point_model = None  # typed already
        else:
            typed = []
        for p, point in enumerate(_as_list(dev.get("points"))):
            pt = _as_dict(point)
            ppath: YamlPath = (*dpath, "points", p)
            pid = pt.get("id")
            if isinstance(pid, str):
                if pid in point_ids:
                    first = out.where(point_ids[pid])
                    out.add([*ppath, "id"], f"duplicate point id {pid!r}; first at {first}")
                else:
                    point_ids[pid] = (*ppath, "id")
                    point_data[pid] = pt
            if zones_ok:
                _check_zone_ref(out, zones, pt.get("zone"), [*ppath, "zone"])
            _check_energy(out, table, pt, ppath)
            if point_model is not None:
                try:
                    typed.append((p, point_model.model_validate(pt)))
                except ValidationError:
                    pass  # reported by the site schema; the protocol's checks need a valid point
        if spec is not None and spec.check_site is not None:
            by_protocol.setdefault(spec.name, []).append(DeviceEntry(path=dpath, data=dev, points=typed))
    for name, entries in by_protocol.items():
        check = PROTOCOLS[name].check_site
        if check is not None:
            check(entries, out)
    _check_shared_ports(out, by_protocol)
    _check_meters(out, data, point_data)
    _check_platform_meters(out, data, point_data)
    _check_coal_factors(out, data)
    check_ac_units(data, out.add, out.where)


_LINE_KEYS = ("baudrate", "parity", "stopbits", "bytesize")


def _line(settings: tuple[object, ...]) -> str:
    baud, parity, stop, size = settings
    return f"{baud} {size}{parity}{stop}"


def _check_shared_ports(out: _Collector, by_protocol: Mapping[str, Sequence[DeviceEntry]]) -> None:
    """Serial ports (`port:` of the protocols with a ProtocolSpec.serial_bus): a warning, once per port,
    when it does not exist here or this user cannot open it (`check` may run on another machine than the
    gateway). Every device on one port uses one set of line settings, whatever its protocol; several
    protocols on one port only when they open it through the same code (ProtocolSpec.serial_bus)."""
    first: dict[str, tuple[str, tuple[object, ...], YamlPath]] = {}  # port -> (protocol, settings, path)
    for name, entries in by_protocol.items():
        spec = PROTOCOLS[name]
        if spec.serial_bus is None:
            continue
        fields = spec.device_model.model_fields
        for entry in entries:
            port = entry.data.get("port")
            if not isinstance(port, str):
                continue
            settings = tuple(
                entry.data.get(k, fields[k].default if k in fields else 8) for k in _LINE_KEYS
            )  # bytesize: 8 where the protocol fixes it
            if port not in first:
                _check_port_here(out, port, (*entry.path, "port"))
            seen = first.setdefault(port, (name, settings, (*entry.path, "port")))
            other, other_settings, where = seen
            if where == (*entry.path, "port"):
                continue
            if other != name and PROTOCOLS[other].serial_bus != spec.serial_bus:
                out.add(
                    [*entry.path, "port"],
                    f"{port} is used by protocol {other} ({out.where(where)}): {name} and {other} each open "
                    "the port their own way and cannot share it; put them on separate ports (adapters)",
                )
            elif other_settings != settings:
                by = f"{out.where(where)}" + (f" ({other})" if other != name else "")
                out.add(
                    [*entry.path, "port"],
                    f"{port} is set to {_line(other_settings)} by {by}, here {_line(settings)}: "
                    "every device on one bus uses the same line settings",
                )


def _check_port_here(out: _Collector, port: str, path: YamlPath) -> None:
    if not os.path.exists(port):
        out.add(path, f"serial port {port} does not exist on this machine", severity="warning")
    elif not os.access(port, os.R_OK | os.W_OK):
        out.add(
            path,
            f"serial port {port} is not readable and writable by this user: add the service user to "
            "the port's group (dialout) and enable deploy/systemd's serial drop-in",
            severity="warning",
        )


def _check_meters(out: _Collector, data: Mapping[str, Any], points: Mapping[str, Mapping[str, Any]]) -> None:
    """The metering tree: known cumulative energy points, listed parents, no loops, one IT meter each."""
    nodes: dict[str, int] = {}
    entries = _as_list(data.get("meters"))
    for i, node in enumerate(entries):
        pid = _as_dict(node).get("point")
        if not isinstance(pid, str):
            continue
        if pid in nodes:
            first = out.where(("meters", nodes[pid], "point"))
            out.add(["meters", i, "point"], f"meter {pid!r} listed twice; first at {first}")
            continue
        nodes[pid] = i
        pt = points.get(pid)
        if pt is None:
            close = difflib.get_close_matches(pid, list(points), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            out.add(["meters", i, "point"], f"no point {pid!r} in devices{hint}")
        elif not isinstance(pt.get("energy_code"), str) or pt.get("cumulative") is not True:
            out.add(
                ["meters", i, "point"],
                f"point {pid!r} is not a meter: the ledger needs `cumulative: true` and an energy_code",
            )
    parents: dict[str, str | None] = {}
    it_children: dict[str, str] = {}
    for pid, i in nodes.items():
        node = _as_dict(entries[i])
        parent = node.get("parent")
        parents[pid] = parent if isinstance(parent, str) else None
        if isinstance(parent, str) and parent not in nodes:
            out.add(["meters", i, "parent"], f"parent {parent!r} is not listed under meters:")
            parents[pid] = None
        if node.get("it_load") is True:
            if not isinstance(parent, str):
                message = "an IT-load meter needs `parent:` (the data-centre meter) for PUE"
                out.add(["meters", i, "it_load"], message)
            elif parent in it_children:
                message = f"{parent!r} already has the IT-load meter {it_children[parent]!r}"
                out.add(["meters", i, "it_load"], message)
            else:
                it_children[parent] = pid
        if isinstance(parent, str) and parent in points and pid in points:
            pc, cc = points[parent].get("energy_code"), points[pid].get("energy_code")
            if isinstance(pc, str) and isinstance(cc, str) and pc[:2] != cc[:2]:
                message = f"parent {parent!r} ({pc}) meters another category than {cc}"
                out.add(["meters", i, "parent"], message)
    for pid in parents:
        seen = [pid]
        up = parents[pid]
        while up is not None:
            if up in seen:
                out.add(["meters", nodes[pid], "parent"], f"meter loop: {' -> '.join([*seen, up])}")
                break
            seen.append(up)
            up = parents.get(up)


def _check_platform_meters(
    out: _Collector, data: Mapping[str, Any], points: Mapping[str, Mapping[str, Any]]
) -> None:
    """uplink.platform.meters: ledger meters, each (meter_id, function_id) once, a known item code."""
    platform = _as_dict(_as_dict(data.get("uplink")).get("platform"))
    ids: dict[tuple[str, str], YamlPath] = {}
    for i, entry in enumerate(_as_list(platform.get("meters"))):
        e = _as_dict(entry)
        path: YamlPath = ("uplink", "platform", "meters", i)
        pid = e.get("point")
        if isinstance(pid, str):
            pt = points.get(pid)
            if pt is None:
                close = difflib.get_close_matches(pid, list(points), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                out.add([*path, "point"], f"no point {pid!r} in devices{hint}")
            elif not isinstance(pt.get("energy_code"), str) or pt.get("cumulative") is not True:
                message = (
                    f"point {pid!r} is not a ledger meter: it needs `cumulative: true` and an energy_code"
                )
                out.add([*path, "point"], message)
        coding = e.get("coding")
        if isinstance(coding, str) and not is_code(coding):
            out.add([*path, "coding"], f"{coding!r} is not a MOHURD item code such as 01A00")
        mid, fid = e.get("meter_id"), e.get("function_id", "1")
        if isinstance(mid, (str, int)) and isinstance(fid, (str, int)):
            key = (str(mid), str(fid))
            if key in ids:
                first = out.where(ids[key])
                out.add(
                    [*path, "meter_id"],
                    f"meter {key[0]!r} function {key[1]!r} is listed twice; first at {first}",
                )
            else:
                ids[key] = (*path, "meter_id")


def _check_coal_factors(out: _Collector, data: Mapping[str, Any]) -> None:
    for code in _as_dict(data.get("coal_factors")):
        if isinstance(code, str) and is_code(code) and not code.endswith("000"):
            message = f"{code!r} is not a category code; factors apply per category, e.g. {code[:2]}000"
            out.add(["coal_factors", code], message)


def _check_building_id(out: _Collector, data: Mapping[str, Any]) -> None:
    bid = data.get("building_id")
    if not isinstance(bid, str) or not _BUILDING_ID.match(bid):
        return  # the schema reports the shape
    letter = bid[6]
    if letter not in BUILDING_TYPES:
        kinds = ", ".join(f"{k} {v.split(' ', 1)[1]}" for k, v in BUILDING_TYPES.items())
        message = f"building type letter {letter!r} is not one of A-H ({kinds})"
        out.add(["building_id"], message, severity="warning")
    if bid[:2] not in PROVINCE_PREFIXES:
        out.add(
            ["building_id"],
            f"administrative division {bid[:6]} does not start with a known province code",
            severity="warning",
        )


def _check_zone_ref(
    out: _Collector, zones: Mapping[str, YamlPath], zone: object, path: list[str | int]
) -> None:
    if isinstance(zone, str) and zone not in zones:
        known = ", ".join(zones) or "none declared"
        close = difflib.get_close_matches(zone, list(zones), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f" (zones: {known})"
        out.add(path, f"zone {zone!r} is not declared in zones{hint}")


def _check_energy(
    out: _Collector, table: Mapping[str, object], pt: Mapping[str, Any], path: YamlPath
) -> None:
    code = pt.get("energy_code")
    role = pt.get("role")
    if isinstance(code, str):
        if code not in table:
            # Shape errors are the schema's; here only codes that have the shape but no entry.
            if is_code(code):
                out.add(
                    [*path, "energy_code"],
                    f"energy code {code!r} is not in the MOHURD table; "
                    "a regional code must be added under energy_codes:",
                )
        elif role == "water_volume" and not code.startswith("02"):
            message = f"a water_volume point with the non-water code {code!r}"
            out.add([*path, "energy_code"], message, severity="warning")
        elif role == "energy" and code.startswith("02"):
            out.add(
                [*path, "energy_code"], f"an energy point with the water code {code!r}", severity="warning"
            )
    elif code is None and role in ENERGY_ROLES:
        out.add(
            [*path, "role"],
            f"{'an' if role == 'energy' else 'a'} {role} point without energy_code is left out of the "
            "itemized ledger (分项计量)",
            severity="warning",
        )


# --------------------------------------------------------------------------------------------- schema


def site_json_schema() -> dict[str, Any]:
    schema = site_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema.setdefault("title", "edge-agent site.yaml")
    return schema


def policy_json_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def render_schema(schema: Mapping[str, Any]) -> str:
    """The exact text written to disk (stable, so a freshness test can compare files)."""
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def write_schema_files(config_dir: Path) -> list[Path]:
    """Write schema.json (site) and policy.schema.json into ``config_dir``; returns their paths."""
    config_dir = Path(config_dir)
    config_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in ((SITE_SCHEMA_FILE, site_json_schema()), (POLICY_SCHEMA_FILE, policy_json_schema())):
        path = config_dir / name
        path.write_text(render_schema(schema), encoding="utf-8")
        written.append(path)
    return written

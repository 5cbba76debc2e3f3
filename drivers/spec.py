"""What a protocol hands the shell: :class:`ProtocolSpec`, and the small types its hooks exchange.

A protocol package (``drivers/<protocol>/``) builds one ``ProtocolSpec`` in its ``spec.py``;
``drivers.registry`` lists them. The shell (``edge_agent``) composes the site schema, runs the
protocol's site checks and builds drivers through these specs only, so it never names a protocol.

Like the rest of ``drivers``, nothing here imports ``edge_agent`` or ``policies``.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias

from pydantic import BaseModel

from drivers.base import Driver, PointBase, Reading, UtcClock

__all__ = [
    "DeviceEntry",
    "DeviceOptions",
    "DriverFactory",
    "ExpandedPoint",
    "PointExpander",
    "ProtocolSpec",
    "PushCallback",
    "SharedFactory",
    "SharedResource",
    "SiteCheck",
    "SiteIssues",
    "YamlPath",
]

YamlPath: TypeAlias = tuple[str | int, ...]  # ("devices", 3, "points", 7, "address")
Severity: TypeAlias = Literal["error", "warning"]

# Readings a driver produces on its own (BACnet COV notifications), delivered like a poll's.
PushCallback: TypeAlias = Callable[[list[Reading]], None]


class DeviceOptions(Protocol):
    """What the shell reads off any device model (the rest is the protocol's own business)."""

    @property
    def protocol(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def zone(self) -> str | None: ...
    @property
    def interval_s(self) -> float: ...
    @property
    def points(self) -> Sequence[PointBase]: ...


class SharedResource(Protocol):
    """One per site and protocol, shared by its devices (Modbus connection pool, BACnet/IP port)."""

    async def close(self) -> None: ...


class SharedFactory(Protocol):
    """Builds the shared resource from the site-wide options (None when site.yaml leaves them out)."""

    def __call__(self, options: Any, /, *, clock: UtcClock) -> SharedResource: ...


class DriverFactory(Protocol):
    """Builds one device's driver. ``shared`` is the protocol's shared resource (None if it has none);
    a driver that produces readings between polls hands them to ``on_push``."""

    def __call__(self, device: Any, shared: Any, /, *, clock: UtcClock, on_push: PushCallback) -> Driver: ...


class SiteIssues(Protocol):
    """Where a site check reports: positioned by YAML path; ``where`` names another entry with its line."""

    def add(self, path: Sequence[str | int], message: str, *, severity: Severity = "error") -> None: ...

    def where(self, path: Sequence[str | int]) -> str: ...


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """One `devices:` entry of site.yaml, as a protocol's site check sees it."""

    path: YamlPath  # ("devices", 3)
    data: Mapping[str, Any]  # the raw YAML mapping: checks run even when the device does not validate
    points: Sequence[tuple[int, PointBase]]  # (index under points:, validated point); invalid ones left out


@dataclass(frozen=True, slots=True)
class ExpandedPoint:
    """A point a device declares other than as an entry of its `points:` list (a Modbus `repeat:`
    template, once per indoor unit), as the raw mapping the device model appends to its points.

    ``path`` is where its problems belong, relative to the device (``("repeat", 0, "points", 2)``);
    ``keys`` names keys whose value comes from another place (``{"zone": ("repeat", 0, "units", 3,
    "zone")}``)."""

    data: Mapping[str, Any]
    path: YamlPath
    keys: Mapping[str, YamlPath]


# The raw device mapping -> its expanded points, in the order its model appends them after `points:`.
PointExpander: TypeAlias = Callable[[Mapping[str, Any]], Sequence[ExpandedPoint]]

# Cross-checks over every device of one protocol in the site (raw YAML data, so one run reports all).
SiteCheck: TypeAlias = Callable[[Sequence[DeviceEntry], SiteIssues], None]

_DEVICE_FIELDS = ("protocol", "id", "name", "zone", "interval_s", "points")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolSpec:
    """One protocol, as the shell needs it.

    ``device_model`` is the pydantic model of a `devices:` entry: a required ``protocol:
    Literal[name]`` (the union's discriminator), the fields of :class:`DeviceOptions` and ``points:
    list[point_model]``. ``network_key`` / ``network_model`` declare optional site-wide options at the
    top level of site.yaml (``bacnet:`` for the gateway's own BACnet/IP port), handed to ``make_shared``.
    ``expand_points`` gives the points a device model adds to its `points:` (Modbus `repeat:` blocks),
    so the site's checks see them and place their problems at the template.
    """

    name: str
    device_model: type[BaseModel]
    point_model: type[PointBase]
    make_driver: DriverFactory
    make_shared: SharedFactory | None = None
    network_key: str | None = None
    network_model: type[BaseModel] | None = None
    network_description: str | None = None  # the `network_key:` description in the JSON Schema
    check_site: SiteCheck | None = None
    expand_points: PointExpander | None = None
    # The code that opens its devices' serial `port:`; devices of protocols with the same value may share
    # a port (drivers.serialbus: DL/T 645 and CJ/T 188 meters), others may not (`check` refuses it).
    serial_bus: str | None = None

    def __post_init__(self) -> None:
        fields = self.device_model.model_fields
        missing = [f for f in _DEVICE_FIELDS if f not in fields]
        if missing:
            raise ValueError(f"protocol {self.name!r}: {self.device_model.__name__} lacks {missing}")
        tag = fields["protocol"]
        if not tag.is_required() or typing.get_args(tag.annotation) != (self.name,):
            raise ValueError(
                f"protocol {self.name!r}: {self.device_model.__name__}.protocol must be a required "
                f"Literal[{self.name!r}]"
            )
        if typing.get_args(fields["points"].annotation) != (self.point_model,):
            raise ValueError(
                f"protocol {self.name!r}: {self.device_model.__name__}.points must be "
                f"list[{self.point_model.__name__}]"
            )
        if (self.network_key is None) != (self.network_model is None):
            raise ValueError(f"protocol {self.name!r}: network_key and network_model go together")

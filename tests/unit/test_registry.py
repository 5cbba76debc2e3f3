"""drivers.registry: a protocol is one registry entry. A fake in-memory protocol, registered here only,
validates in site.yaml (with its own site-wide options and site checks) and is polled by the agent,
with no change to edge_agent; the built-in protocols' checks run through the same entries."""

from __future__ import annotations

import asyncio
import dataclasses
import textwrap
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from drivers import registry
from drivers.base import PointBase, Quality, Reading, UtcClock, Value, WriteResult
from drivers.modbus.checks import check_site as modbus_check_site
from drivers.modbus.options import ModbusDevice, ModbusPoint
from drivers.registry import PROTOCOLS, ProtocolSpec, register, unregister
from drivers.spec import DeviceEntry, PushCallback, SiteIssues
from edge_agent.config.load import ConfigError, load_config, site_json_schema
from edge_agent.core.clock import FakeClock
from edge_agent.service.agent import Agent

# ------------------------------------------------------------------------------------- the fake protocol


class FakePoint(PointBase):
    channel: int = Field(ge=0, le=7, description="Input channel of the fake bus")


class FakeDevice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["fake"]
    id: str
    name: str | None = None
    zone: str | None = None
    interval_s: float = Field(default=10.0, gt=0)
    points: list[FakePoint] = Field(min_length=1)


class FakeBusOptions(BaseModel):
    """Site-wide options of the fake bus (site.yaml top level `fakebus:`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gain: float = Field(default=1.0, gt=0, le=100)


class FakeBus:
    """The shared resource: one per site, whatever the number of fake devices."""

    built: ClassVar[list[FakeBus]] = []

    def __init__(self, options: FakeBusOptions | None, clock: UtcClock) -> None:
        self.gain = (options or FakeBusOptions()).gain
        self.clock = clock
        self.closed = False
        FakeBus.built.append(self)

    async def close(self) -> None:
        self.closed = True


class FakeDriver:
    """Reads channel * gain; its background work pushes one reading of its first point (like COV)."""

    def __init__(self, device: FakeDevice, bus: FakeBus, on_push: PushCallback) -> None:
        self.device_id = device.id
        self.device = device
        self.bus = bus
        self.on_push = on_push
        self.reads = 0

    async def connect(self) -> None:
        pass

    async def run(self) -> None:
        p = self.device.points[0]
        self.on_push([Reading(p.id, -1.0, self.bus.clock(), Quality.GOOD, detail="pushed")])

    async def close(self) -> None:
        pass

    async def read(self, points: Sequence[PointBase]) -> list[Reading]:
        self.reads += 1
        now = self.bus.clock()
        return [
            Reading(p.id, p.channel * self.bus.gain, now, Quality.GOOD)
            for p in points
            if isinstance(p, FakePoint)
        ]

    async def write(self, point: PointBase, value: Value, *, priority: int | None = None) -> WriteResult:
        return WriteResult(point.id, value, None, ok=False, code="read-only")


def _fake_bus(options: FakeBusOptions | None, /, *, clock: UtcClock) -> FakeBus:
    return FakeBus(options, clock)


def _fake_driver(
    device: FakeDevice, bus: FakeBus, /, *, clock: UtcClock, on_push: PushCallback
) -> FakeDriver:
    return FakeDriver(device, bus, on_push)


def _fake_checks(devices: Sequence[DeviceEntry], out: SiteIssues) -> None:
    """Two points of one device on one channel: an error naming the first."""
    for entry in devices:
        seen: dict[int, int] = {}
        for p, point in entry.points:
            assert isinstance(point, FakePoint)
            if point.channel in seen:
                first = out.where([*entry.path, "points", seen[point.channel]])
                out.add(
                    [*entry.path, "points", p, "channel"],
                    f"channel {point.channel} is already read by {first}",
                )
            else:
                seen[point.channel] = p


FAKE = ProtocolSpec(
    name="fake",
    device_model=FakeDevice,
    point_model=FakePoint,
    make_shared=_fake_bus,
    make_driver=_fake_driver,
    network_key="fakebus",
    network_model=FakeBusOptions,
    network_description="The fake bus",
    check_site=_fake_checks,
)


@pytest.fixture
def fake_protocol() -> Iterator[ProtocolSpec]:
    register(FAKE)
    FakeBus.built.clear()
    try:
        yield FAKE
    finally:
        unregister("fake")


SITE = """\
gateway_id: gw-fake
building_id: "370102A001"
location: {lat: 36.65, lon: 117.12}
floor_area_m2: 1000
occupants: 10
zones:
  - {id: lab, name: Lab}
fakebus:
  gain: 2.5
devices:
  - protocol: fake
    id: bench-1
    zone: lab
    interval_s: 0.05
    points:
      - {id: bench.a, channel: 1}
      - {id: bench.b, channel: 2, unit: V}
  - protocol: fake
    id: bench-2
    interval_s: 0.05
    points:
      - {id: bench.c, channel: 3}
  - protocol: modbus
    id: meter
    host: 127.0.0.1
    port: 1502
    points:
      - {id: meter.power, address: 0, type: float32, role: power}
"""


def write_site(tmp_path: Path, text: str = SITE) -> Path:
    (tmp_path / "policy.yaml").write_text('seasons: {summer: "06-01..09-30", winter: "11-15..03-15"}\n')
    site = tmp_path / "site.yaml"
    site.write_text(text)
    return site


def issues_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return [str(i).removeprefix(f"{path}:") for i in exc.value.issues]


# ----------------------------------------------------------------------------------------- the tests


def test_built_in_protocols_in_union_order() -> None:
    assert list(PROTOCOLS) == ["modbus", "modbus_rtu", "bacnet", "dlt645", "cjt188"]
    assert PROTOCOLS["modbus"].point_model is ModbusPoint
    assert PROTOCOLS["modbus"].check_site is modbus_check_site
    assert PROTOCOLS["bacnet"].network_key == "bacnet"


def test_fake_protocol_validates_in_site_yaml(tmp_path: Path, fake_protocol: ProtocolSpec) -> None:
    cfg = load_config(write_site(tmp_path))
    fake = [d for d in cfg.site.devices if d.protocol == "fake"]
    # The shell's subclass of the protocol's model (it adds `report:`): still a FakeDevice.
    assert len(fake) == 2 and all(isinstance(d, FakeDevice) for d in fake)
    assert isinstance(cfg.site.devices[2], ModbusDevice)
    assert cfg.site.network_options("fakebus") is None  # looked up by protocol, not by key
    assert cfg.site.network_options("fake") == FakeBusOptions(gain=2.5)
    assert cfg.site.network_options("bacnet") is None  # registered, left out of site.yaml
    assert cfg.point_zone("bench.a") == "lab"
    schema = site_json_schema()
    assert schema["properties"]["fakebus"]["description"] == "The fake bus"
    assert set(schema["properties"]["devices"]["items"]["discriminator"]["mapping"]) == {
        "modbus",
        "modbus_rtu",
        "bacnet",
        "dlt645",
        "cjt188",
        "fake",
    }


def test_fake_protocol_errors_and_checks_are_positioned(tmp_path: Path, fake_protocol: ProtocolSpec) -> None:
    text = (
        SITE.replace("gain: 2.5", "gain: 500")
        .replace("{id: bench.b, channel: 2, unit: V}", "{id: bench.b, chanel: 2}")
        .replace("{id: bench.c, channel: 3}", "{id: bench.c, channel: 3}\n      - {id: bench.d, channel: 3}")
    ) + "  - {protocol: knx, id: k}\n"
    assert issues_of(write_site(tmp_path, text)) == [
        "9:3: fakebus.gain: 500 is above 100",
        "17:23: devices[0].points[1].chanel: unknown key; did you mean 'channel'?",
        "23:23: devices[1].points[1].channel: channel 3 is already read by devices[1].points[0] (line 22)",
        "30:6: devices[3].protocol: unknown protocol 'knx'; "
        "expected one of 'modbus', 'modbus_rtu', 'bacnet', 'dlt645', 'cjt188', 'fake'",
    ]


def test_unregistered_protocol_is_unknown_again(tmp_path: Path) -> None:
    register(FAKE)
    unregister("fake")
    assert issues_of(write_site(tmp_path)) == [
        "8:1: fakebus: unknown key; expected one of: gateway_id, building_id, name, timezone, location, "
        "floor_area_m2, occupants, persons, policy, zones, devices, storage, uplink, status, bacnet, "
        "energy_codes, meters, targets, coal_factors, ledger",
        "11:5: devices[0].protocol: unknown protocol 'fake'; "
        "expected one of 'modbus', 'modbus_rtu', 'bacnet', 'dlt645', 'cjt188'",
        "18:5: devices[1].protocol: unknown protocol 'fake'; "
        "expected one of 'modbus', 'modbus_rtu', 'bacnet', 'dlt645', 'cjt188'",
    ]


async def test_agent_polls_the_fake_protocol(tmp_path: Path, fake_protocol: ProtocolSpec) -> None:
    text = SITE[: SITE.index("  - protocol: modbus")]  # no socket: the fake devices only
    cfg = load_config(write_site(tmp_path, text))
    clock = FakeClock(datetime(2025, 7, 1, 10, 0, tzinfo=UTC))
    agent = Agent(config=cfg, clock=clock)
    assert len(FakeBus.built) == 1  # one shared resource per site and protocol

    seen: list[tuple[str, list[Reading]]] = []
    pushed = asyncio.Event()

    def listener(device_id: str, readings: Sequence[Reading], _changed: Sequence[Reading]) -> None:
        seen.append((device_id, list(readings)))
        if any(r.detail == "pushed" for r in readings):
            pushed.set()

    agent.listeners.append(listener)
    run = asyncio.create_task(agent.run(), name="agent")
    try:
        await asyncio.wait_for(agent.first_cycle.wait(), 5)
        await asyncio.wait_for(pushed.wait(), 5)
    finally:
        agent.stop()
        await asyncio.wait_for(run, 5)

    assert FakeBus.built[0].closed  # the agent closed it on the way out
    reading = agent.snapshot.reading("bench.b")
    assert reading is not None and reading.value == 5.0 and reading.ts == clock.now()
    assert agent.snapshot.reading("bench.c") is not None
    assert ("bench-1", [Reading("bench.a", -1.0, clock.now(), Quality.GOOD, detail="pushed")]) in seen
    assert {rt.status.protocol for rt in agent.devices.values()} == {"fake"}
    assert all(rt.status.up for rt in agent.devices.values())


class Issues:
    """A SiteIssues without edge_agent: what a protocol's checks see."""

    def __init__(self) -> None:
        self.added: list[tuple[tuple[str | int, ...], str, str]] = []

    def add(
        self, path: Sequence[str | int], message: str, *, severity: Literal["error", "warning"] = "error"
    ) -> None:
        self.added.append((tuple(path), message, severity))

    def where(self, path: Sequence[str | int]) -> str:
        return "/".join(map(str, path))


def _modbus_entry(d: int, data: dict[str, Any]) -> DeviceEntry:
    points = [(p, ModbusPoint.model_validate(pt)) for p, pt in enumerate(data["points"])]
    return DeviceEntry(path=("devices", d), data=data, points=points)


def test_modbus_checks_work_on_raw_data_without_the_shell() -> None:
    a = {
        "protocol": "modbus",
        "id": "a",
        "host": "10.0.0.1",
        "points": [{"id": "x", "address": 0, "type": "uint32"}],
    }
    b = {
        "protocol": "modbus",
        "id": "b",
        "host": "10.0.0.1 ",  # default port and unit: the same endpoint as a
        "points": [
            {"id": "y", "address": 4},
            {"id": "z", "address": 5, "type": "float32"},
            {"id": "w", "address": 5},
        ],
    }
    out = Issues()
    PROTOCOLS["modbus"].check_site([_modbus_entry(0, a), _modbus_entry(1, b)], out)  # type: ignore[misc]
    assert out.added == [
        (
            ("devices", 1, "host"),
            "10.0.0.1 :502 unit 1 is already polled as devices/0/host; "
            "two devices on one endpoint read the same registers",
            "error",
        ),
        (
            ("devices", 1, "points", 2, "address"),
            "holding registers 5 (uint16, byte_order big) overlap point 'z' at devices/1/points/1, "
            "registers 5-6 (float32, word_order big, byte_order big), decoded differently",
            "error",
        ),
    ]


def test_modbus_checks_fire_through_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = textwrap.dedent(
        """\
        gateway_id: gw
        building_id: "370102A001"
        location: {lat: 36.65, lon: 117.12}
        floor_area_m2: 1000
        occupants: 10
        devices:
          - {protocol: modbus, id: a, host: h, points: [{id: x, address: 0, type: uint32}]}
          - {protocol: modbus, id: b, host: h, points: [{id: y, address: 1}]}
        """
    )
    assert issues_of(write_site(tmp_path, text)) == [
        "8:31: devices[1].host: h:502 unit 1 is already polled as devices[0].host (line 7); "
        "two devices on one endpoint read the same registers",
    ]
    # Swap the registry's Modbus check for a recorder: the error goes, so the shell holds no Modbus check.
    calls: list[list[DeviceEntry]] = []
    spy = dataclasses.replace(
        PROTOCOLS["modbus"], check_site=lambda entries, _out: calls.append(list(entries))
    )
    monkeypatch.setitem(registry._registry, "modbus", spy)
    cfg = load_config(write_site(tmp_path, text))
    assert [d.id for d in cfg.site.devices] == ["a", "b"]
    assert [[(e.path, [p for p, _ in e.points]) for e in c] for c in calls] == [
        [(("devices", 0), [0]), (("devices", 1), [0])]
    ]


def test_register_refuses_clashes_and_malformed_specs() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(PROTOCOLS["modbus"])
    with pytest.raises(ValueError, match="'bacnet' already belongs to protocol 'bacnet'"):
        register(dataclasses.replace(FAKE, network_key="bacnet"))
    with pytest.raises(ValueError, match=r"FakeDevice.protocol must be a required Literal\['other'\]"):
        dataclasses.replace(FAKE, name="other")
    with pytest.raises(ValueError, match=r"points must be list\[ModbusPoint\]"):
        dataclasses.replace(FAKE, point_model=ModbusPoint)
    with pytest.raises(ValueError, match="go together"):
        dataclasses.replace(FAKE, network_model=None)
    assert list(PROTOCOLS) == ["modbus", "modbus_rtu", "bacnet", "dlt645", "cjt188"]


def test_one_modbus_endpoint_speaks_one_framing(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        gateway_id: gw
        building_id: "370102A001"
        location: {lat: 36.65, lon: 117.12}
        floor_area_m2: 1000
        occupants: 10
        devices:
          - {protocol: modbus, id: a, host: ds, framer: rtu, unit_id: 1, points: [{id: x, address: 0}]}
          - {protocol: modbus, id: b, host: ds, framer: rtu, unit_id: 2, points: [{id: y, address: 0}]}
          - {protocol: modbus, id: c, host: ds, unit_id: 3, points: [{id: z, address: 0}]}
        """
    )
    assert issues_of(write_site(tmp_path, text)) == [
        "9:5: devices[2].framer: ds:502 is framed 'rtu' by devices[0].framer (line 7); "
        "one endpoint speaks one framing",
    ]


def test_a_serial_bus_holds_one_address_once_and_one_set_of_line_settings(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        gateway_id: gw
        building_id: "370102A001"
        location: {lat: 36.65, lon: 117.12}
        floor_area_m2: 1000
        occupants: 10
        devices:
          - {protocol: modbus_rtu, id: a, port: /dev/no-rs485, unit_id: 1, points: [{id: x, address: 0}]}
          - {protocol: modbus_rtu, id: b, port: /dev/no-rs485, unit_id: 1, points: [{id: y, address: 0}]}
          - protocol: modbus_rtu
            id: c
            port: /dev/no-rs485
            baudrate: 19200
            unit_id: 2
            points: [{id: z, address: 0}]
        """
    )
    assert issues_of(write_site(tmp_path, text)) == [
        "7:35: devices[0].port: warning: serial port /dev/no-rs485 does not exist on this machine",
        "8:56: devices[1].unit_id: unit 1 on /dev/no-rs485 is already polled as devices[0].unit_id "
        "(line 7); two slaves with one address on a bus answer at once and garble each other",
        "11:5: devices[2].port: /dev/no-rs485 is set to 9600 8E1 by devices[0].port (line 7), "
        "here 19200 8E1: every device on one bus uses the same line settings",
    ]


def test_dlt645_meters_validate_and_one_address_is_polled_once_per_bus(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        gateway_id: gw
        building_id: "370102A001"
        location: {lat: 36.65, lon: 117.12}
        floor_area_m2: 1000
        occupants: 10
        devices:
          - {protocol: dlt645, id: a, port: /dev/no-rs485, address: "000000001234",
             points: [{id: x, di: "00010000"}]}
          - {protocol: dlt645, id: b, port: /dev/no-rs485, address: "000000001234",
             points: [{id: y, di: 02010100}]}
          - {protocol: dlt645, id: c, port: /dev/no-rs485, address: "12", points: [{id: z, di: "0201"}]}
          - {protocol: dlt645, id: d, port: /dev/no-rs485, address: "000000000001",
             points: [{id: w, di: "00010000", writable: true, min: 0, max: 1}]}
        """
    )
    assert issues_of(write_site(tmp_path, text)) == [
        "7:31: devices[0].port: warning: serial port /dev/no-rs485 does not exist on this machine",
        "9:52: devices[1].address: meter 000000001234 on /dev/no-rs485 is already polled as "
        "devices[0].address (line 7)",
        "11:52: devices[2].address: expected 12 digits, as on the meter's plate (got '12', 2 characters)",
        "11:84: devices[2].points[0].di: expected 8 hex digits (got '0201', 4 characters)",
        "13:15: devices[3].points[0]: meter points are read-only here (no writes to meters)",
    ]


def test_cjt188_meters_share_a_port_with_dlt645_but_not_with_modbus_rtu(tmp_path: Path) -> None:
    # a missing port is one warning, at its first device, whichever protocols use it
    text = textwrap.dedent(
        """\
        gateway_id: gw
        building_id: "370102A001"
        location: {lat: 36.65, lon: 117.12}
        floor_area_m2: 1000
        occupants: 10
        devices:
          - {protocol: dlt645, id: a, port: /dev/no-rs485, address: "000000001234",
             points: [{id: x, di: "00010000"}]}
          - {protocol: cjt188, id: w, port: /dev/no-rs485, address: "00000000005678", meter_type: cold_water,
             points: [{id: y, quantity: flow}]}
          - {protocol: cjt188, id: h, port: /dev/no-rs485, address: "00000000005679", meter_type: heat,
             baudrate: 9600, points: [{id: z, quantity: heat}]}
          - {protocol: modbus_rtu, id: m, port: /dev/no-rs485, unit_id: 1,
             points: [{id: v, address: 0, type: uint16}]}
          - {protocol: cjt188, id: g, port: /dev/no-rs485b, address: "00000000005680", meter_type: gas,
             points: [{id: u, quantity: heat_power}]}
        """
    )
    assert issues_of(write_site(tmp_path, text)) == [
        "7:31: devices[0].port: warning: serial port /dev/no-rs485 does not exist on this machine",
        # one report of the 9600 baud meter, however many protocols share the bus
        "11:31: devices[2].port: /dev/no-rs485 is set to 2400 8E1 by devices[0].port (line 7) "
        "(dlt645), here 9600 8E1: every device on one bus uses the same line settings",
        "13:35: devices[3].port: /dev/no-rs485 is used by protocol dlt645 (devices[0].port (line 7)): "
        "modbus_rtu and dlt645 each open the port their own way and cannot share it; put them on separate "
        "ports (adapters)",
        "15:31: devices[4].port: warning: serial port /dev/no-rs485b does not exist on this machine",
        "16:23: devices[4].points[0].quantity: heat_power is a heat meter's quantity; a gas meter sends "
        "flow and settlement_flow",
    ]

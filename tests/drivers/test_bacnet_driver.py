"""BACnet driver against the bundled BACnet simulator over loopback (sim 127.0.0.2-5, agent 127.0.0.1)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from drivers.bacnet.driver import BacnetDriver
from drivers.bacnet.network import BacnetNetwork, LocalAddressError
from drivers.bacnet.options import BacnetDevice, BacnetNetworkOptions, BacnetPoint
from drivers.base import FailureCode, Quality, Reading
from sim.bacnet_server import BacnetSimulator
from sim.building import Building, Mode

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")


def free_udp_port() -> int:
    """A random UDP port free on every loopback host we use (parallel runs pick different ones)."""
    for _ in range(200):
        port = random.randint(20000, 60000)
        socks = []
        try:
            for h in HOSTS:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((h, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port")


def ac_points() -> list[BacnetPoint]:
    return [
        BacnetPoint(
            id="sp", object_type="analog-value", instance=1, writable=True, role="setpoint", min=16, max=30
        ),
        BacnetPoint(
            id="mode",
            object_type="multi-state-value",
            instance=1,
            writable=True,
            role="ac_mode",
            states={1: "off", 2: "cool", 3: "heat", 4: "fan"},
        ),
        BacnetPoint(id="power", object_type="binary-value", instance=1, writable=True, role="ac_power"),
        BacnetPoint(id="room", object_type="analog-input", instance=1, role="room_temperature"),
        BacnetPoint(id="light", object_type="binary-output", instance=1, writable=True, role="light_relay"),
        BacnetPoint(id="energy", object_type="analog-value", instance=101, role="energy"),
        BacnetPoint(id="counter", object_type="accumulator", instance=101, role="energy"),
    ]


class Rig:
    def __init__(
        self, building: Building, sim: BacnetSimulator, net: BacnetNetwork, sim_address: str
    ) -> None:
        self.building, self.sim, self.net, self.sim_address = building, sim, net, sim_address
        self.drivers: list[BacnetDriver] = []
        self.background: list[asyncio.Task[None]] = []

    async def driver(self, points: list[BacnetPoint] | None = None, **kw: object) -> BacnetDriver:
        opts: dict[str, object] = {"readback_delay_s": 0, "timeout_s": 0.5, "device_instance": 1001}
        opts.update(kw)
        dev = BacnetDevice(
            protocol="bacnet",
            id="fc1",
            address=self.sim.address_of("FC-1F"),
            points=points or ac_points(),
            **opts,
        )  # type: ignore[arg-type]
        d = BacnetDriver(device=dev, network=self.net)
        await d.connect()
        # What the agent does: the driver's background work (COV) runs as a task it owns.
        self.background.append(asyncio.create_task(d.run(), name=f"driver:{dev.id}"))
        self.drivers.append(d)
        return d


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    sim_port, agent_port = free_udp_port(), free_udp_port()
    building = Building(start=datetime(2025, 7, 15, 2, 0, tzinfo=UTC), script=False)  # 10:00 local
    sim = BacnetSimulator(building, address=f"127.0.0.2/24:{sim_port}", refresh_s=0.05)
    await sim.start()
    net = BacnetNetwork(options=BacnetNetworkOptions(local_address=f"127.0.0.1:{agent_port}"))
    r = Rig(building, sim, net, f"127.0.0.2:{sim_port}")
    try:
        yield r
    finally:
        for task in r.background:
            task.cancel()
        await asyncio.gather(*r.background, return_exceptions=True)
        for d in r.drivers:
            await d.close()
        await net.close()
        await sim.stop()


async def test_reads_every_object_type(rig: Rig) -> None:
    ac = rig.building.ac_units["f1-ac1"]
    rig.building.set_mode("f1-ac1", Mode.COOL)
    rig.building.set_setpoint("f1-ac1", 27.5)
    rig.building.set_light("f1-l1", True)
    rig.sim.refresh()
    d = await rig.driver()
    readings = await d.read(d.device.points)
    by = {r.point_id: r for r in readings}
    assert [r.point_id for r in readings] == [p.id for p in d.device.points]
    assert all(r.quality is Quality.GOOD for r in readings), readings
    assert by["sp"].value == 27.5
    assert by["mode"].value == 2 and isinstance(by["mode"].value, int)  # cool, 1-based
    assert by["power"].value is True
    assert by["room"].value == pytest.approx(round(ac.room_temp, 2), abs=1e-3)
    assert by["light"].value is True
    meter = rig.building.meters["f1-ls"]
    assert by["energy"].value == pytest.approx(meter.reading, rel=1e-6)
    assert by["counter"].value == int(meter.reading)
    assert d.stats.rpm_requests == 1 and d.stats.rp_requests == 1  # the device_instance check


async def test_rpm_batches_by_property_count(rig: Rig) -> None:
    d = await rig.driver(max_rpm_properties=4)  # 2 points (value + status-flags) per request
    readings = await d.read(d.device.points)
    assert all(r.ok for r in readings)
    assert d.stats.rpm_requests == 4  # 7 points -> 2+2+2+1


async def test_unknown_objects_are_bad_readings(rig: Rig) -> None:
    pts = [
        *ac_points()[:2],
        BacnetPoint(id="ghost", object_type="analog-value", instance=77),
        BacnetPoint(id="ghost-bo", object_type="binary-output", instance=9),
    ]
    d = await rig.driver(pts)
    by = {r.point_id: r for r in await d.read(pts)}
    assert by["ghost"].quality is Quality.BAD and by["ghost"].code == "bacnet:object:unknown-object"
    assert by["ghost-bo"].code == "bacnet:object:unknown-object"
    assert by["sp"].ok and by["mode"].ok
    d2 = await rig.driver(pts, use_rpm=False)
    by2 = {r.point_id: r for r in await d2.read(pts)}
    assert by2["ghost"].code == "bacnet:object:unknown-object" and by2["sp"].value == by["sp"].value


async def test_falls_back_to_read_property_when_rpm_is_rejected(rig: Rig) -> None:
    app = rig.sim.device("FC-1F").app
    assert app is not None
    app.do_ReadPropertyMultipleRequest = None  # this device now rejects RPM (unrecognized-service)
    d = await rig.driver()
    readings = await d.read(d.device.points)
    assert all(r.ok for r in readings), readings
    assert d.rpm_supported is False
    assert d.stats.rpm_requests == 1
    rp = d.stats.rp_requests
    assert rp >= len(readings)
    await d.read(d.device.points)
    assert d.stats.rpm_requests == 1  # remembered: no second RPM attempt
    assert d.stats.rp_requests > rp


async def test_write_at_priority_priority_array_and_relinquish(rig: Rig) -> None:
    d = await rig.driver()
    sp = d.device.points[0]
    result = await d.write(sp, 26.5)
    assert result.ok and result.readback == 26.5
    assert rig.building.ac_units["f1-ac1"].setpoint == 26.5  # the model followed
    assert await d.active_priority(sp) == 8
    # a lower priority is masked by ours
    masked = await d.write(sp, 24.0, priority=12)
    assert not masked.ok and masked.code == "masked" and masked.readback == 26.5
    assert masked.holding_priority == 8 and "priority 8" in (masked.detail or "")
    # relinquish 8: the value at 12 takes over
    rel = await d.write(sp, None)
    assert rel.ok and rel.readback == 24.0
    assert await d.active_priority(sp) == 12
    assert rig.building.ac_units["f1-ac1"].setpoint == 24.0
    await d.write(sp, None, priority=12)
    assert await d.active_priority(sp) is None
    # refused by the device: value out of range
    bad = await d.write(sp, 40.0)
    assert not bad.ok and bad.code == "bacnet:property:value-out-of-range"
    # binary and multi-state writes map consistently
    assert (await d.write(d.device.points[4], False)).ok
    assert rig.building.lights["f1-l1"].on is False
    assert (await d.write(d.device.points[1], 3)).ok
    assert rig.building.ac_units["f1-ac1"].mode == Mode.HEAT


async def test_read_only_points_refuse_writes(rig: Rig) -> None:
    d = await rig.driver()
    result = await d.write(d.device.points[3], 20.0)  # writable: false in the config
    assert not result.ok and result.code == "not_writable"


async def test_values_an_object_cannot_take_are_refused_before_sending(rig: Rig) -> None:
    d = await rig.driver()
    sp, mode, power = d.device.points[:3]
    assert (await d.write(power, "on")).code == "type"
    assert (await d.write(power, 2)).code == "type"
    assert (await d.write(mode, 2.5)).code == "range"
    assert (await d.write(mode, "cool")).code == "type"
    assert (await d.write(sp, float("nan"))).code == "nan"
    assert (await d.write(sp, 26.0, priority=17)).code == "config"
    assert d.stats.wp_requests == 0


async def test_cov_update_arrives_without_a_poll(rig: Rig) -> None:
    pts = [
        BacnetPoint(id="power", object_type="binary-value", instance=1, cov=True),
        BacnetPoint(id="sp", object_type="analog-value", instance=1),
    ]
    d = await rig.driver(pts, cov_lifetime_s=60)
    pushed: list[Reading] = []
    d.on_cov = pushed.extend
    for _ in range(100):
        if d.stats.cov_notifications:
            break
        await asyncio.sleep(0.01)
    rig.building.set_power("f1-ac1", not rig.building.ac_units["f1-ac1"].power)
    want = rig.building.ac_units["f1-ac1"].power
    rpm_before = d.stats.rpm_requests
    for _ in range(200):
        if any(r.value is want for r in pushed):
            break
        await asyncio.sleep(0.01)
    assert any(r.point_id == "power" and r.value is want for r in pushed)
    assert d.stats.rpm_requests == rpm_before  # nothing was polled
    # a read answers the COV point from its notification and polls the other
    readings = await d.read(pts)
    assert readings[0].value is want and d.stats.cov_served == 1
    assert d.stats.rpm_requests == rpm_before + 1
    # a notification older than one poll interval is not trusted: the point is polled again (a device
    # that restarted and forgot the subscription goes quiet and must not go stale)
    d.clock = lambda: readings[0].ts + timedelta(seconds=d.device.interval_s + 1)
    again = await d.read(pts)
    assert again[0].value is want and d.stats.cov_served == 1
    assert d.stats.rpm_requests == rpm_before + 2


async def test_recovers_after_simulator_restart(rig: Rig) -> None:
    d = await rig.driver()
    assert all(r.ok for r in await d.read(d.device.points))
    await rig.sim.stop()
    down = await d.read(d.device.points)
    assert all(r.quality is Quality.BAD and r.code == "timeout" for r in down)
    await rig.sim.start()
    up = await d.read(d.device.points)
    assert all(r.ok for r in up), up


async def test_local_address_not_on_this_host_is_a_clear_error() -> None:
    net = BacnetNetwork(options=BacnetNetworkOptions(local_address="192.0.2.77:47808"))
    with pytest.raises(LocalAddressError) as info:
        await net.start()
    assert info.value.code == "address_not_local"
    assert not net.started


async def test_local_port_in_use_is_a_clear_error(rig: Rig) -> None:
    await rig.net.start()
    other = BacnetNetwork(options=rig.net.options)
    with pytest.raises(LocalAddressError) as info:
        await other.start()
    assert info.value.code == "port_in_use"


async def test_a_higher_priority_holding_the_point_is_masked_naming_it(rig: Rig) -> None:
    d = await rig.driver()
    sp = d.device.points[0]
    await rig.sim.command("FC-1F", "analog-value", 1, 22.0, priority=5)  # a BMS at critical equipment
    result = await d.write(sp, 26.0)
    assert (result.ok, result.code, result.readback, result.holding_priority) == (False, "masked", 22.0, 5)
    assert rig.building.ac_units["f1-ac1"].setpoint == 22.0
    await rig.sim.command("FC-1F", "analog-value", 1, None, priority=5)  # it lets go: ours shows
    assert (await d.read([sp]))[0].value == 26.0


async def test_a_device_that_clamps_is_a_readback_mismatch_without_a_holder(rig: Rig) -> None:
    d = await rig.driver()
    sp = d.device.points[0]
    rig.sim.clamp("FC-1F", "analog-value", 1, 16.0, 25.0)
    result = await d.write(sp, 26.0)
    assert (result.ok, result.code, result.readback, result.holding_priority) == (
        False,
        "readback_mismatch",
        25.0,
        None,
    )


async def test_relinquish_releases_only_slots_that_still_hold_our_value(rig: Rig) -> None:
    d = await rig.driver()
    sp, _mode, power = d.device.points[:3]
    assert (await d.write(sp, 26.0)).ok and (await d.write(power, False)).ok
    assert d.held(sp) == {8: 26.0}
    # The device restarts and forgets its commands; an occupant's panel then writes at our priority 8.
    rig.sim.forget_commands("FC-1F")
    await rig.sim.command("FC-1F", "analog-value", 1, 22.0, priority=8)
    [left] = await d.relinquish(sp)
    assert (left.ok, left.code, left.requested, left.readback) == (False, "slot_not_ours", 26.0, 22.0)
    assert "priority 8 holds 22.0" in (left.detail or "")
    assert await d.active_priority(sp) == 8 and rig.building.ac_units["f1-ac1"].setpoint == 22.0
    assert d.held(sp) == {}
    # The power slot was forgotten by the restart: nothing to release, nothing written.
    wp = d.stats.wp_requests
    assert await d.relinquish(power) == []
    assert d.stats.wp_requests == wp
    # Our own value still in its slot: released, and the present value falls back.
    assert (await d.write(sp, 26.0)).ok
    [done] = await d.relinquish(sp)
    assert done.ok and done.requested == 26.0 and await d.active_priority(sp) is None
    assert await d.relinquish(sp) == []  # released once


async def test_close_cancels_subscriptions_and_writes_nothing(rig: Rig) -> None:
    d = await rig.driver(relinquish_on_shutdown=True)
    sp = d.device.points[0]
    assert (await d.write(sp, 26.0)).ok
    wp = d.stats.wp_requests
    await d.close()  # relinquishing is the service's (audited) job, before close
    assert d.stats.wp_requests == wp and await d.active_priority(sp) == 8


async def test_a_wrong_device_instance_at_the_address_is_neither_read_nor_written(rig: Rig) -> None:
    d = await rig.driver(device_instance=1002)  # FC-1F answers at this address; 1002 is FC-2F
    readings = await d.read(d.device.points)
    assert {r.code for r in readings} == {"wrong_device"} and all(r.quality is Quality.BAD for r in readings)
    assert "is device 1001, not device 1002" in (readings[0].detail or "")
    wp = d.stats.wp_requests
    result = await d.write(d.device.points[0], 26.0)
    assert (result.ok, result.code) == (False, "wrong_device") and d.stats.wp_requests == wp
    assert d.stats.rpm_requests == 0 and d.stats.subscribe_requests == 0


async def test_the_right_device_instance_is_checked_once(rig: Rig) -> None:
    d = await rig.driver()
    await d.read(d.device.points)
    rp = d.stats.rp_requests
    await d.read(d.device.points)
    assert d.stats.rp_requests == rp  # confirmed: no further identity reads


async def _until(cond: object, timeout: float = 3.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met")


def cov_points() -> list[BacnetPoint]:
    return [
        BacnetPoint(id="sp", object_type="analog-value", instance=1, cov=True),
        BacnetPoint(id="power", object_type="binary-value", instance=1, cov=True),
    ]


async def test_cov_renewal_keeps_one_subscription_per_object_and_close_cancels_it(rig: Rig) -> None:
    d = await rig.driver(cov_points(), cov_lifetime_s=60)
    await _until(lambda: len(rig.sim.subscriptions("FC-1F")) == 2)
    first = rig.sim.subscriptions("FC-1F")
    for n in (4, 6):  # two renewals
        d._cov_wake.set()
        await _until(lambda n=n: d.stats.subscribe_requests >= n)
    assert rig.sim.subscriptions("FC-1F") == first  # renewed in place: same process ids, no additions
    pushed: list[Reading] = []
    d.on_cov = pushed.extend
    before = d.stats.cov_notifications
    rig.building.set_setpoint("f1-ac1", 24.5, source="occupant")
    await _until(lambda: any(r.point_id == "sp" and r.value == 24.5 for r in pushed))
    await asyncio.sleep(0.2)
    assert d.stats.cov_notifications - before == 1  # one change, one notification
    await d.close()
    assert rig.sim.subscriptions("FC-1F") == []


async def test_a_no_response_abort_is_a_timeout_and_cov_returns_when_the_device_does(rig: Rig) -> None:
    # The stack's APDU timeout (0.2 s) fires before the driver's (1 s): bacpypes3 aborts no-response.
    net = BacnetNetwork(
        options=BacnetNetworkOptions(local_address=f"127.0.0.1:{free_udp_port()}", apdu_timeout_s=0.2)
    )
    dev = BacnetDevice(
        protocol="bacnet",
        id="fc1",
        address=rig.sim.address_of("FC-1F"),
        device_instance=1001,
        points=[*cov_points(), BacnetPoint(id="room", object_type="analog-input", instance=1)],
        timeout_s=1.0,
        cov_lifetime_s=3600,  # renewal far away: only the timeout handling can bring COV back
    )
    d = BacnetDriver(device=dev, network=net)
    await d.connect()
    task = asyncio.create_task(d.run(), name="driver:fc1")
    try:
        await _until(lambda: len(rig.sim.subscriptions("FC-1F")) == 2)
        await rig.sim.stop()
        assert (await d.read(dev.points))[2].code == "timeout"  # the polled point notices at once
        down = await d.read(dev.points)  # and the COV points are polled again from then on
        assert {r.code for r in down} == {"timeout"} and d.stats.timeouts >= 1
        await rig.sim.restart()  # back, with no subscriptions and no commands
        assert rig.sim.subscriptions("FC-1F") == []
        up = await d.read(dev.points)
        assert all(r.ok for r in up)
        await _until(lambda: len(rig.sim.subscriptions("FC-1F")) == 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await d.close()
        await net.close()


async def test_a_port_that_could_not_be_bound_gives_bad_readings_not_an_exception(rig: Rig) -> None:
    net = BacnetNetwork(options=BacnetNetworkOptions(local_address=f"127.0.0.1:{free_udp_port()}"))
    dev = BacnetDevice(
        protocol="bacnet",
        id="fc1",
        address=rig.sim.address_of("FC-1F"),
        device_instance=1001,
        points=ac_points(),
    )
    d = BacnetDriver(device=dev, network=net)  # connect() never succeeded
    readings = await d.read(dev.points)
    assert {r.code for r in readings} == {"unreachable"}
    assert (await d.write(dev.points[0], 26.0)).code == "unreachable"


async def test_lighting_outputs_read_write_and_follow_the_circuit(rig: Rig) -> None:
    pts = [
        BacnetPoint(
            id="blo", object_type="binary-lighting-output", instance=1, writable=True, role="light_relay"
        ),
        BacnetPoint(id="lo", object_type="lighting-output", instance=1, writable=True, role="light_relay"),
        BacnetPoint(
            id="level", object_type="lighting-output", instance=2, writable=True, unit="%", min=0, max=100
        ),
        BacnetPoint(id="relay", object_type="binary-output", instance=1),
    ]
    light = rig.building.lights["f1-l1"]
    rig.building.set_light("f1-l1", True)  # switched at the panel: every object of the circuit shows it
    d = await rig.driver(pts)
    first = await d.read(pts)
    assert [r.value for r in first[:2]] == [True, 100.0] and all(r.ok for r in first)
    off = await d.write(pts[0], False)  # binary lighting output: off
    assert off.ok and off.readback is False and light.on is False
    assert [r.value for r in await d.read(pts)][:2] == [False, 0.0]  # the dimmer follows the circuit
    on = await d.write(pts[1], True)  # a dimmer as a relay: on = 100 %
    assert on.ok and on.readback == 100.0 and light.on is True
    assert (await d.read(pts))[3].value is True  # and the relay object shows it too
    dim = await d.write(pts[2], 40.0)
    assert dim.ok and dim.readback == 40.0 and rig.building.lights["f1-l2"].on is True
    assert await d.active_priority(pts[2]) == 8
    assert (await d.write(pts[0], 2)).code == "type"
    [released] = await d.relinquish(pts[1])
    assert released.ok


async def test_a_mode_value_not_in_states_reads_uncertain_polled_and_by_cov(rig: Rig) -> None:
    """Issue 11 item 10 on BACnet: the site's `states` lacks the unit's fan state (raw 4, as a manual's
    mode table may), so that value reads uncertain/unknown_state, whether polled or notified by COV."""
    states = {1: "off", 2: "cool", 3: "heat"}
    pts = [
        BacnetPoint(
            id="mode", object_type="multi-state-value", instance=1, role="ac_mode", states=states, cov=True
        ),
        BacnetPoint(id="polled", object_type="multi-state-value", instance=1, role="ac_mode", states=states),
    ]
    rig.building.set_mode("f1-ac1", Mode.COOL)
    rig.sim.refresh()
    d = await rig.driver(pts, cov_lifetime_s=60)
    pushed: list[Reading] = []
    d.on_cov = pushed.extend
    readings = await d.read(pts)
    assert [(r.value, r.quality, r.code) for r in readings] == [(2, Quality.GOOD, None)] * 2
    await _until(lambda: d.stats.cov_notifications > 0)
    rig.building.set_mode("f1-ac1", Mode.FAN)  # raw 4: a real state of the device, not of the site
    await _until(lambda: any(r.value == 4 for r in pushed))
    [cov] = [r for r in pushed if r.value == 4]
    assert (cov.quality, cov.code) == (Quality.UNCERTAIN, FailureCode.UNKNOWN_STATE)
    assert cov.detail is not None and "raw 4" in cov.detail and "2=cool" in cov.detail
    polled = (await d.read(pts[1:]))[0]
    assert (polled.value, polled.quality, polled.code) == (4, Quality.UNCERTAIN, FailureCode.UNKNOWN_STATE)
    # the same raw value with the state listed is an ordinary good reading
    listed = pts[1].model_copy(update={"states": {**states, 4: "fan"}})
    assert (await d.read([listed]))[0].quality is Quality.GOOD

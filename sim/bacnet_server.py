"""BACnet/IP front end over the shared building model (sim/building.py), on bacpypes3.

One BACnet device per floor controller, each at its own IP (as real floor controllers are), plus one
device for the building meters. With ``address="127.0.0.2/24:47808"`` and ``instance_base=1000``:

  device 1001 "FC-1F" at 127.0.0.2, 1002 "FC-2F" at 127.0.0.3, 1003 "FC-3F" at 127.0.0.4,
  device 1010 "METERS" at 127.0.0.5, all on the same UDP port.

Objects of floor controller f (unit n = 1, 2 is AC unit f<f>-ac<n>, light n is f<f>-l<n>):
  analog-value n       setpoint °C, commandable (priority-array), 16-32 else value-out-of-range
  multi-state-value n  mode, commandable: 1 off, 2 cool, 3 heat, 4 fan (BACnet multistate is 1-based)
  binary-value n       on/off, commandable (active = on)
  analog-input n       room temperature °C (read-only)
  analog-input 10+n    AC unit electric power kW
  binary-output n      light relay, commandable
  binary-lighting-output n  the same circuit, on/off, commandable
  lighting-output n    the same circuit as a level 0-100 % (100 on, 0 off; any level above 0 is on)
  analog-input 100+k   power kW of floor meter k (1 lighting+sockets f<f>-ls, 2 air conditioning f<f>-ac)
  analog-value 100+k   energy kWh of that meter (read-only; float)
  accumulator 100+k    energy kWh of that meter, whole kWh (read-only)
METERS: analog-input/analog-value/accumulator 1 main, 2 dc, 3 it, 4 water (m³, m³/h), same meaning.

Values flow both ways: a write changes the model through its setters (refused values answer
property:value-out-of-range; writes to inputs, meters and accumulators property:write-access-denied), and
model changes update the present values (so subscribers get COV notifications). A model change that
contradicts an active command (an occupant's remote control) shows as the new present value with the
status-flags OVERRIDDEN bit set, until the next BACnet write or relinquish applies the command again.
Analog values (temperatures, powers, meters) are refreshed every ``refresh_s`` and by :meth:`refresh`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
from collections.abc import Callable
from typing import Any

from bacpypes3.app import Application
from bacpypes3.basetypes import PriorityValue, StatusFlags
from bacpypes3.errors import PropertyError
from bacpypes3.local.analog import AnalogInputObject, AnalogValueObject
from bacpypes3.local.binary import BinaryOutputObject, BinaryValueObject
from bacpypes3.local.cmd import Commandable
from bacpypes3.local.cov import GenericCriteria
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.multistate import MultiStateValueObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.local.object import Object as LocalObject
from bacpypes3.object import AccumulatorObject, BinaryLightingOutputObject, LightingOutputObject
from bacpypes3.primitivedata import Null

from sim.building import AcUnit, Building, Change, Mode, OutOfRange

__all__ = ["BacnetSimulator", "SimDevice"]

VENDOR_ID = 999


class _SimMixin:
    """Read-only enforcement, write hooks into the model, and an OVERRIDDEN status flag."""

    _sim_readonly: bool = False
    _sim_apply: Callable[[Any], None] | None = None  # called with the new present value after a write
    _sim_check: Callable[[Any], None] | None = None  # raise OutOfRange to refuse a value
    _sim_overridden: bool = False
    _sim_clamp: tuple[float, float] | None = None  # a device that clamps instead of refusing

    async def write_property(self, attr: Any, value: Any, index: Any = None, priority: Any = None) -> None:
        name = attr if isinstance(attr, str) else self._property_identifier_class(attr).attr  # type: ignore[attr-defined]
        if name == "presentValue":
            if self._sim_readonly:
                raise PropertyError("writeAccessDenied")
            if self._sim_check is not None and not isinstance(value, Null):
                try:
                    self._sim_check(value)
                except OutOfRange:
                    raise PropertyError("valueOutOfRange") from None
        await super().write_property(attr, value, index, priority)  # type: ignore[misc]
        if name == "presentValue" and self._sim_clamp is not None:
            # The command stays in the priority array; the output shows the clamped value.
            lo, hi = self._sim_clamp
            pv = float(self.presentValue)  # type: ignore[attr-defined]
            LocalObject.__setattr__(self, "presentValue", min(max(pv, lo), hi))
        if name == "presentValue":
            self._sim_overridden = False
            if self._sim_apply is not None:
                self._sim_apply(self.presentValue)  # type: ignore[attr-defined]

    @property
    def statusFlags(self) -> StatusFlags:
        flags = list(LocalObject.statusFlags.fget(self))  # type: ignore[attr-defined]
        flags[2] = int(self._sim_overridden)
        return StatusFlags(flags)

    @statusFlags.setter
    def statusFlags(self, value: Any) -> None:
        pass  # computed, as in bacpypes3's local Object


class SimAI(_SimMixin, AnalogInputObject):
    _sim_readonly = True


class SimAV(_SimMixin, AnalogValueObject):
    _sim_readonly = True


class SimAVCmd(_SimMixin, Commandable, AnalogValueObject):
    _required = ("priorityArray",)


class SimMSVCmd(_SimMixin, Commandable, MultiStateValueObject):
    # bacpypes3 0.0.110 gives multi-state objects COVIncrementCriteria, which needs a covIncrement they do
    # not have (SubscribeCOV fails with AttributeError); ASHRAE 135 13.1 uses the generic criteria here.
    _cov_criteria = GenericCriteria


class SimBVCmd(_SimMixin, Commandable, BinaryValueObject):
    pass


class SimBO(_SimMixin, BinaryOutputObject):
    pass


class SimBLO(_SimMixin, Commandable, LocalObject, BinaryLightingOutputObject):
    _cov_criteria = GenericCriteria


class SimLO(_SimMixin, Commandable, LocalObject, LightingOutputObject):
    _cov_criteria = GenericCriteria
    # bacpypes3's local Object looks this up after start; the lighting output has no such property.
    notificationClass = None


class SimAccumulator(_SimMixin, LocalObject, AccumulatorObject):
    _sim_readonly = True
    _cov_criteria = GenericCriteria


_COMMON = {"eventState": "normal", "outOfService": False, "statusFlags": [0, 0, 0, 0]}
_LIGHTING = {"outOfService": False, "statusFlags": [0, 0, 0, 0]}  # these objects have no eventState


def _set_model_value(obj: Any, value: Any) -> None:
    """Push a model value into an object; a commandable one keeps its command but shows the override."""
    if not isinstance(obj, Commandable):
        obj.presentValue = value
        return
    active = any(slot.null is None for slot in obj.priorityArray)
    if not active:
        LocalObject.__setattr__(obj, "relinquishDefault", value)
        obj.recalculating()
        obj._sim_overridden = False
    else:
        current = obj.presentValue
        LocalObject.__setattr__(obj, "presentValue", value)
        obj._sim_overridden = obj.presentValue != current or obj._sim_overridden


class _SimApplication(Application):  # type: ignore[misc]
    """A device's application. ASHRAE 135 (ReadProperty): Device object instance 4194303 means "the
    device that receives this"; bacpypes3 0.0.110 compares the identifier with a plain tuple, which
    never matches, and answers unknown-object, so the wildcard is resolved here.

    ``response_delay_s`` makes each read and write take that long before its answer, one request at a
    time, as a real controller's processing does (field controllers answer in about 5-20 ms)."""

    response_delay_s: float = 0.0
    _busy: asyncio.Lock | None = None

    async def _respond_later(self) -> None:
        if self.response_delay_s > 0:
            if self._busy is None:
                self._busy = asyncio.Lock()
            async with self._busy:  # one request at a time, like the controller's single task
                await asyncio.sleep(self.response_delay_s)

    async def do_ReadPropertyRequest(self, apdu: Any) -> None:
        await self._respond_later()
        oid = apdu.objectIdentifier
        if str(oid[0]) == "device" and int(oid[1]) == 4194303 and self.device_object is not None:
            apdu.objectIdentifier = self.device_object.objectIdentifier
        await super().do_ReadPropertyRequest(apdu)

    async def do_ReadPropertyMultipleRequest(self, apdu: Any) -> None:
        await self._respond_later()
        await super().do_ReadPropertyMultipleRequest(apdu)

    async def do_WritePropertyRequest(self, apdu: Any) -> None:
        await self._respond_later()
        await super().do_WritePropertyRequest(apdu)


class SimDevice:
    """One simulated BACnet device: its address, instance and objects (keyed by the model item they show)."""

    def __init__(self, *, name: str, instance: int, address: str) -> None:
        self.name = name
        self.instance = instance
        self.address = address
        self.objects: list[Any] = []
        self.app: Application | None = None


class BacnetSimulator:
    """BACnet/IP devices over ``building``. ``await start()``; ``await stop()``."""

    def __init__(
        self,
        building: Building,
        *,
        address: str = "127.0.0.2/24:47808",
        instance_base: int = 1000,
        refresh_s: float = 1.0,
        response_delay_s: float = 0.0,
    ) -> None:
        host_prefix, _, port = address.partition(":")
        host, _, prefix = host_prefix.partition("/")
        self.building = building
        self.port = int(port or 47808)
        self.prefix = int(prefix or 24)
        self.refresh_s = refresh_s
        self.response_delay_s = response_delay_s  # each read/write answers this much later
        first = ipaddress.IPv4Address(host)
        floors = sorted({ac.floor for ac in building.ac_units.values()})
        self.devices: list[SimDevice] = []
        self._refreshers: list[Callable[[], None]] = []
        self._on_change: dict[tuple[str, str, str], Any] = {}  # (kind, id, attr) -> object
        self._lighting: dict[
            str, tuple[Any, Any]
        ] = {}  # light id -> (binary-lighting-output, lighting-output)
        for i, f in enumerate(floors):
            dev = SimDevice(name=f"FC-{f}F", instance=instance_base + f, address=str(first + i))
            self._build_floor(dev, f)
            self.devices.append(dev)
        meters = SimDevice(name="METERS", instance=instance_base + 10, address=str(first + len(floors)))
        for k, mid in enumerate(("main", "dc", "it", "water"), start=1):
            self._meter_objects(meters, mid, k)
        self.devices.append(meters)
        self._unsubscribe: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None

    # ---- object tables ----

    def device(self, name: str) -> SimDevice:
        return next(d for d in self.devices if d.name == name)

    def address_of(self, name: str) -> str:
        return f"{self.device(name).address}:{self.port}"

    def _build_floor(self, dev: SimDevice, floor: int) -> None:
        b = self.building
        units = sorted((a for a in b.ac_units.values() if a.floor == floor), key=lambda a: a.id)
        for n, ac in enumerate(units, start=1):
            uid = ac.id
            sp = SimAVCmd(
                objectIdentifier=("analog-value", n),
                objectName=f"{uid} setpoint",
                presentValue=ac.setpoint,
                units="degreesCelsius",
                covIncrement=0.1,
                **_COMMON,
            )
            sp._sim_check = lambda v, uid=uid: _check_setpoint(float(v), uid)
            sp._sim_apply = lambda v, uid=uid: b.set_setpoint(uid, float(v), source="bacnet")
            mode = SimMSVCmd(
                objectIdentifier=("multi-state-value", n),
                objectName=f"{uid} mode",
                presentValue=int(ac.running_mode) + 1,
                numberOfStates=4,
                stateText=["off", "cool", "heat", "fan"],
                **_COMMON,
            )
            mode._sim_check = lambda v, uid=uid: _check_mode(int(v), uid)
            mode._sim_apply = lambda v, uid=uid: b.set_mode(uid, Mode(int(v) - 1), source="bacnet")
            power = SimBVCmd(
                objectIdentifier=("binary-value", n),
                objectName=f"{uid} on-off",
                presentValue="active" if ac.power else "inactive",
                **_COMMON,
            )
            power._sim_apply = lambda v, uid=uid: b.set_power(uid, str(v) == "active", source="bacnet")
            room = SimAI(
                objectIdentifier=("analog-input", n),
                objectName=f"{uid} room temperature",
                presentValue=round(ac.room_temp, 2),
                units="degreesCelsius",
                covIncrement=0.1,
                **_COMMON,
            )
            kw = SimAI(
                objectIdentifier=("analog-input", 10 + n),
                objectName=f"{uid} power",
                presentValue=ac.electric_kw,
                units="kilowatts",
                covIncrement=0.1,
                **_COMMON,
            )
            dev.objects += [sp, mode, power, room, kw]
            self._on_change[("ac", uid, "setpoint")] = sp
            self._on_change[("ac", uid, "mode")] = mode
            self._on_change[("ac", uid, "power")] = power
            self._refreshers.append(lambda ac=ac, room=room, kw=kw: _refresh_ac(ac, room, kw))
        lights = sorted((li for li in b.lights.values() if li.floor == floor), key=lambda li: li.id)
        for n, li in enumerate(lights, start=1):
            lid = li.id
            bo = SimBO(
                objectIdentifier=("binary-output", n),
                objectName=f"{lid} relay",
                presentValue="active" if li.on else "inactive",
                polarity="normal",
                **_COMMON,
            )
            bo._sim_apply = lambda v, lid=lid: b.set_light(lid, str(v) == "active", source="bacnet")
            # The same circuit as a lighting controller shows it: a binary lighting output and a dimmer.
            blo = SimBLO(
                objectIdentifier=("binary-lighting-output", n),
                objectName=f"{lid} binary lighting output",
                presentValue="on" if li.on else "off",
                **_LIGHTING,
            )
            blo._sim_apply = lambda v, lid=lid: b.set_light(lid, str(v) == "on", source="bacnet")
            lo = SimLO(
                objectIdentifier=("lighting-output", n),
                objectName=f"{lid} lighting output",
                presentValue=100.0 if li.on else 0.0,
                **_LIGHTING,
            )
            lo._sim_apply = lambda v, lid=lid: b.set_light(lid, float(v) > 0, source="bacnet")
            dev.objects += [bo, blo, lo]
            self._on_change[("light", lid, "on")] = bo
            self._lighting[lid] = (blo, lo)
        for k, mid in enumerate((f"f{floor}-ls", f"f{floor}-ac"), start=1):
            self._meter_objects(dev, mid, 100 + k)

    def _meter_objects(self, dev: SimDevice, mid: str, inst: int) -> None:
        m = self.building.meters[mid]
        water = m.unit == "m3"
        rate_units, energy_units = (
            ("cubicMetersPerHour", "cubicMeters") if water else ("kilowatts", "kilowattHours")
        )
        ai = SimAI(
            objectIdentifier=("analog-input", inst),
            objectName=f"{mid} {'flow' if water else 'power'}",
            presentValue=m.rate,
            units=rate_units,
            covIncrement=0.1,
            **_COMMON,
        )
        av = SimAV(
            objectIdentifier=("analog-value", inst),
            objectName=f"{mid} {'volume' if water else 'energy'}",
            presentValue=m.reading,
            units=energy_units,
            covIncrement=1.0,
            **_COMMON,
        )
        acc = SimAccumulator(
            objectIdentifier=("accumulator", inst),
            objectName=f"{mid} counter",
            presentValue=int(m.reading),
            units=energy_units,
            scale={"floatScale": 1.0},
            maxPresValue=4294967295,
            **_COMMON,
        )
        dev.objects += [ai, av, acc]

        def refresh() -> None:
            ai.presentValue = m.rate
            av.presentValue = m.reading
            acc.presentValue = int(m.reading)

        self._refreshers.append(refresh)

    def object(self, name: str, object_type: str, instance: int) -> Any:
        """The object ``object_type,instance`` of device ``name``."""
        want = (object_type, instance)
        for obj in self.device(name).objects:
            otype, inst = obj.objectIdentifier
            if (str(otype), int(inst)) == want:
                return obj
        raise KeyError(f"{name} has no {object_type},{instance}")

    async def command(self, name: str, object_type: str, instance: int, value: Any, *, priority: int) -> None:
        """Another party's WriteProperty (a BMS at priority 5, an occupant's panel at 8): ``value`` None
        relinquishes that priority. Goes through the same checks and model hooks as a network write."""
        obj = self.object(name, object_type, instance)
        typed = Null(()) if value is None else obj._elements["presentValue"](value)
        await obj.write_property("presentValue", typed, priority=priority)

    def clamp(self, name: str, object_type: str, instance: int, low: float, high: float) -> None:
        """Make one analog object clamp written values into ``low..high`` instead of refusing them
        (some controllers do: the write succeeds and the present value is the nearest limit)."""
        self.object(name, object_type, instance)._sim_clamp = (low, high)

    def subscriptions(self, name: str) -> list[tuple[str, int, int]]:
        """The COV subscriptions device ``name`` holds: (object, subscriber process id, lifetime)."""
        app = self.device(name).app
        if app is None:
            return []
        out = []
        for objid, detection in app._cov_detections.items():
            for sub in detection.cov_subscriptions:
                out.append((f"{objid[0]},{objid[1]}", int(sub.proc_id), int(sub.lifetime)))
        return sorted(out)

    def forget_commands(self, name: str) -> None:
        """What a device restart does to a controller without persistent commands: every priority slot
        of every commandable object is empty again (its subscriptions go when the app restarts)."""
        for obj in self.device(name).objects:
            if isinstance(obj, Commandable):
                for i in range(16):
                    obj.priorityArray[i] = PriorityValue(null=())
                obj.recalculating()
                if obj._sim_apply is not None:  # the equipment follows its output
                    obj._sim_apply(obj.presentValue)

    async def restart(self, *, forget_commands: bool = True) -> None:
        """Stop and start every device: COV subscriptions are forgotten (a new app), and with
        ``forget_commands`` so are the priority arrays."""
        await self.stop()
        if forget_commands:
            for dev in self.devices:
                self.forget_commands(dev.name)
        await self.start()

    # ---- model -> objects ----

    def _changed(self, change: Change) -> None:
        if change.kind == "light" and change.id in self._lighting:
            # Three objects show one circuit: whichever was written (or the model) switched it, the
            # others follow.
            blo, lo = self._lighting[change.id]
            bo = self._on_change[("light", change.id, "on")]
            on = bool(change.value)
            for obj, value in (
                (bo, "active" if on else "inactive"),
                (blo, "on" if on else "off"),
                (lo, 100.0 if on else 0.0),
            ):
                if _shows_on(obj.presentValue) != on:
                    _set_model_value(obj, value)
            return
        if change.source == "bacnet":
            return  # the object already shows it
        obj = self._on_change.get((change.kind, change.id, change.attr))
        if obj is None:
            return
        if change.attr == "mode" or (change.kind == "ac" and change.attr == "power"):
            ac = self.building.ac_units[change.id]
            _set_model_value(self._on_change[("ac", ac.id, "mode")], int(ac.running_mode) + 1)
            _set_model_value(self._on_change[("ac", ac.id, "power")], "active" if ac.power else "inactive")
        elif change.attr == "setpoint":
            _set_model_value(obj, float(change.value))
        else:
            _set_model_value(obj, "active" if change.value else "inactive")

    def refresh(self) -> None:
        """Copy the model's analog values (temperatures, powers, meters) into the objects now."""
        for fn in self._refreshers:
            fn()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            self.refresh()

    # ---- lifecycle ----

    async def start(self) -> None:
        self._unsubscribe = self.building.subscribe(self._changed)
        try:
            for dev in self.devices:
                device = DeviceObject(
                    objectIdentifier=("device", dev.instance),
                    objectName=dev.name,
                    vendorIdentifier=VENDOR_ID,
                    vendorName="edge-agent sim",
                    modelName="floor controller" if dev.name != "METERS" else "meters",
                    segmentationSupported="segmented-both",
                    maxApduLengthAccepted=1476,
                )
                port = NetworkPortObject(
                    f"{dev.address}/{self.prefix}:{self.port}",
                    objectIdentifier=("network-port", 1),
                    objectName="NP-1",
                )
                dev.app = _SimApplication.from_object_list([device, port, *dev.objects])
                dev.app.response_delay_s = self.response_delay_s
                tasks = [t for ll in dev.app.link_layers.values() for t in ll.server._transport_tasks]
                # bacpypes3 retries a failed bind forever; give up after a few seconds, then close cleanly.
                try:
                    await asyncio.wait_for(asyncio.gather(*tasks), 5.0)
                except TimeoutError:
                    for t in tasks:
                        t.cancel()
                    raise OSError(
                        f"cannot bind BACnet simulator device {dev.name} to {dev.address}:{self.port}"
                    ) from None
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._refresh_loop(), name="bacnet-sim-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for dev in self.devices:
            if dev.app is not None:
                dev.app.close()
                dev.app = None
        await asyncio.sleep(0)


def _shows_on(present_value: Any) -> bool:
    """A light object's present value as on/off: active/on, or a level above 0 %."""
    if str(present_value) in ("active", "on"):
        return True
    if str(present_value) in ("inactive", "off"):
        return False
    return float(present_value) > 0


def _check_setpoint(v: float, uid: str) -> None:
    if math.isnan(v) or not 16.0 <= v <= 32.0:
        raise OutOfRange(f"setpoint {v}", target=uid, attr="setpoint", value=v)


def _check_mode(v: int, uid: str) -> None:
    if not 1 <= v <= 4:
        raise OutOfRange(f"mode {v}", target=uid, attr="mode", value=v)


def _refresh_ac(ac: AcUnit, room: Any, kw: Any) -> None:
    room.presentValue = round(ac.room_temp, 2)
    kw.presentValue = ac.electric_kw

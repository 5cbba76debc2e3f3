"""A small office building: weather, 3 office floors + a data centre, AC units, lights, meters, occupants.

Protocol-free: front ends (Modbus today, BACnet later) read plain attributes, call the setter methods and
subscribe to changes with :meth:`Building.subscribe`. Everything is deterministic for a given seed and
sequence of ``step`` calls; the model never reads the clock (the runner passes sim time in).

Physics (deliberately simple, first order):

- Outdoor temperature: a seasonal mean (January about -2 °C, July about 27 °C, a northern Chinese city
  such as Jinan) plus a daily swing peaking at 15:00 (July afternoons about 34 °C) plus a smooth
  seeded wobble of a degree or two. A pure function of time and seed.
- Each AC unit conditions its half floor. The room drifts toward a "free" temperature (18 °C + 0.6 x
  (outdoor - 18), plus internal gains, higher in office hours; at least 15 °C in the heating season, when
  district-heating radiators run) with a 4 h time constant; a unit in cool (heat) mode whose
  free temperature is above (below) its setpoint pulls the room toward the setpoint with a 30 min time
  constant. Each sub-step uses the exact exponential, so results barely depend on the step size.
- Electrical power: AC fan 0.5 kW when running, compressor power proportional to the load it holds
  (|free - room|: 8 kW/K cooling, 2.5 kW/K heating on top of the radiators) and to the pull-down still to
  do (|room - setpoint|: 4 kW/K), capped at the unit's 45 kW rating (a unit stands for a half floor's
  system); standby 0.02 kW when off. So air-conditioning is about 40 % of July's electricity (33 % in
  June and August, about a quarter in mid-winter, when the units heat), as in a real office. Lights 4 kW
  per relay. Sockets and office equipment 20 kW per floor in office hours on working days, 4 kW
  otherwise. Common services (lifts, pumps, corridors; not sub-metered) 8 kW in office hours, 2 kW
  otherwise. Server room: IT load about 20 kW, its cooling 30-45 % of IT depending on outdoor
  temperature.
- Meters integrate power over each sub-step exactly (rectangle rule on piecewise-constant power):
  ``Meter.integral_kwh`` is the model's exact energy since the start, ``Meter.reading`` what the meter
  shows (initial reading + integral). Main = every floor's lighting+socket and AC sub-meters + data
  centre meter + common services, by construction.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import IntEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo

import holidays

__all__ = [
    "AC_UNIT_IDS",
    "DEFAULT_SCRIPT",
    "LIGHT_IDS",
    "AcUnit",
    "Action",
    "Building",
    "Change",
    "Light",
    "Meter",
    "Mode",
    "OutOfRange",
    "ScriptEvent",
    "is_summer",
    "is_winter",
    "outdoor_temperature",
]

FLOORS = 3
SETPOINT_MIN = 16.0
SETPOINT_MAX = 32.0
MAX_SUBSTEP_S = 60.0
# Electric kW per kelvin of load a unit holds (|free - room|) or still has to pull down (|room - setpoint|):
# the half floor's envelope, fresh air and gains over the unit's COP, so that air-conditioning is about
# 30-50 % of a summer month's electricity, as in an office of this size (8,600 m²).
COOL_KW_PER_K = 8.0
HEAT_KW_PER_K = 2.5
PULL_KW_PER_K = 4.0
IT_KW = 20.0  # the server room's IT load (mean); its cooling is 30-45 % of it


class Mode(IntEnum):
    OFF = 0
    COOL = 1
    HEAT = 2
    FAN = 3


class OutOfRange(ValueError):
    """A value the device would refuse (Modbus exception 3, BACnet value-out-of-range)."""

    def __init__(self, message: str, *, target: str, attr: str, value: object) -> None:
        super().__init__(message)
        self.target = target
        self.attr = attr
        self.value = value


@dataclass
class AcUnit:
    id: str  # "f1-ac1"
    floor: int
    zone: str  # "f1"
    rated_kw: float = 45.0  # a half floor's VRF system (about 1,400 m²), electric
    power: bool = False
    mode: Mode = Mode.COOL  # the mode the unit runs in when powered (a split unit remembers it)
    setpoint: float = 26.0
    room_temp: float = 20.0
    electric_kw: float = 0.02

    @property
    def running_mode(self) -> Mode:
        """What the unit is doing: OFF when powered off, else its mode."""
        return self.mode if self.power else Mode.OFF


@dataclass
class Light:
    id: str  # "f1-l1"
    floor: int
    zone: str
    on: bool = False
    rated_kw: float = 4.0


@dataclass
class Meter:
    id: str
    name: str
    energy_code: str
    unit: str  # "kWh" or "m3"
    initial: float
    integral: float = 0.0  # exact energy (kWh) or volume (m³) since the model started
    rate: float = 0.0  # kW (or m³/h) averaged over the last sub-step

    @property
    def reading(self) -> float:
        """What the meter's counter shows."""
        return self.initial + self.integral

    @property
    def integral_kwh(self) -> float:
        return self.integral


@dataclass(frozen=True, slots=True)
class Change:
    """A state change a front end may want to push (BACnet COV) or log."""

    kind: Literal["ac", "light", "window"]
    id: str
    attr: str  # "power", "mode", "setpoint", "on"
    value: Any
    source: str  # "script:<event name>", "api"
    at: datetime


@dataclass(frozen=True, slots=True)
class Action:
    attr: Literal["power", "mode", "setpoint", "light"]
    target: str  # AC unit id, or light id for "light"
    value: Any


@dataclass(frozen=True, slots=True)
class ScriptEvent:
    """Something an occupant does at a local time on matching days."""

    name: str
    at: time  # local time of the building
    days: Literal["working", "all"]
    season: Literal["summer", "winter", "shoulder", "any"]
    actions: tuple[Action, ...]
    description: str = ""


def is_summer(d: date) -> bool:
    """Cooling season: 1 June - 30 September."""
    return 6 <= d.month <= 9


def is_winter(d: date) -> bool:
    """Heating season: 15 November - 15 March (northern China's district-heating period)."""
    return (d.month, d.day) >= (11, 15) or (d.month, d.day) <= (3, 15)


def _season_matches(season: str, d: date) -> bool:
    if season == "any":
        return True
    if season == "summer":
        return is_summer(d)
    if season == "winter":
        return is_winter(d)
    return not is_summer(d) and not is_winter(d)


AC_UNIT_IDS: tuple[str, ...] = tuple(f"f{f}-ac{i}" for f in range(1, FLOORS + 1) for i in (1, 2))
LIGHT_IDS: tuple[str, ...] = tuple(f"f{f}-l{i}" for f in range(1, FLOORS + 1) for i in (1, 2))
_AC_IDS = AC_UNIT_IDS
_LIGHT_IDS = LIGHT_IDS


Attr = Literal["power", "mode", "setpoint", "light"]


def _all(attr: Attr, ids: tuple[str, ...], value: Any) -> tuple[Action, ...]:
    return tuple(Action(attr, i, value) for i in ids)


DEFAULT_SCRIPT: tuple[ScriptEvent, ...] = (
    ScriptEvent(
        "arrive-summer",
        time(8, 30),
        "working",
        "summer",
        _all("light", _LIGHT_IDS, True)
        + _all("mode", _AC_IDS, Mode.COOL)
        + _all("setpoint", _AC_IDS, 26.0)
        + _all("power", _AC_IDS, True),
        "staff arrive: all lights on, every AC unit on in cool at 26 °C",
    ),
    ScriptEvent(
        "arrive-winter",
        time(8, 30),
        "working",
        "winter",
        _all("light", _LIGHT_IDS, True)
        + _all("mode", _AC_IDS, Mode.HEAT)
        + _all("setpoint", _AC_IDS, 20.0)
        + _all("power", _AC_IDS, True),
        "staff arrive: all lights on, every AC unit on in heat at 20 °C",
    ),
    ScriptEvent(
        "arrive-shoulder",
        time(8, 30),
        "working",
        "shoulder",
        _all("light", _LIGHT_IDS, True),
        "staff arrive: all lights on, AC stays off",
    ),
    ScriptEvent(
        "too-warm",
        time(14, 0),
        "working",
        "summer",
        (
            Action("power", "f2-ac1", True),
            Action("mode", "f2-ac1", Mode.COOL),
            Action("setpoint", "f2-ac1", 22.0),
        ),
        "an occupant on 2F sets f2-ac1 to cool at 22 °C (below the 26 °C limit)",
    ),
    ScriptEvent(
        "too-cold",
        time(14, 0),
        "working",
        "winter",
        (
            Action("power", "f1-ac2", True),
            Action("mode", "f1-ac2", Mode.HEAT),
            Action("setpoint", "f1-ac2", 24.0),
        ),
        "an occupant on 1F sets f1-ac2 to heat at 24 °C (above the 20 °C limit)",
    ),
    ScriptEvent(
        "leave",
        time(18, 30),
        "working",
        "any",
        _all("power", _AC_IDS, False) + _all("light", tuple(i for i in _LIGHT_IDS if i != "f2-l2"), False),
        "staff leave: AC units off, lights off except f2-l2 (forgotten)",
    ),
    ScriptEvent(
        "night-light",
        time(21, 0),
        "all",
        "any",
        (Action("light", "f3-l2", True),),
        "someone switches f3-l2 on at night and leaves it on",
    ),
)


def outdoor_temperature(t: datetime, *, seed: int = 0, tz: tzinfo | None = None) -> float:
    """Outdoor air temperature (°C) at ``t`` (aware). Pure function of time and seed."""
    local = t.astimezone(tz or ZoneInfo("Asia/Shanghai"))
    doy = local.timetuple().tm_yday + (local.hour + local.minute / 60) / 24
    mean = 12.5 - 14.5 * math.cos(2 * math.pi * (doy - 15) / 365.25)  # -2 mid-January, 27 mid-July
    swing = 6.0 + 1.0 * math.sin(2 * math.pi * (doy - 105) / 365.25)  # wider daily swing in summer
    hour = local.hour + local.minute / 60 + local.second / 3600
    daily = swing * math.cos(2 * math.pi * (hour - 15) / 24)
    rng = random.Random(seed * 7919 + 17)
    wobble = 0.0
    epoch_days = t.timestamp() / 86400
    for period, amp in ((2.7, 0.5), (5.3, 0.4), (11.1, 0.3)):
        wobble += amp * math.sin(2 * math.pi * epoch_days / period + rng.uniform(0, 2 * math.pi))
    return mean + daily + wobble


Listener = Callable[[Change], None]


class Building:
    """The model. Attributes are plain data; change state only through the setters."""

    def __init__(
        self,
        *,
        seed: int = 0,
        start: datetime,
        script: bool | tuple[ScriptEvent, ...] = True,
        tz: str = "Asia/Shanghai",
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be an aware datetime")
        self.seed = seed
        self.tz = ZoneInfo(tz)
        self.now = start
        self.script: tuple[ScriptEvent, ...] = DEFAULT_SCRIPT if script is True else (script or ())
        self._calendars: dict[int, holidays.HolidayBase] = {}
        self._work_days: dict[date, bool] = {}
        self._listeners: list[Listener] = []
        self.fired: list[tuple[datetime, str]] = []  # (sim time, event name), for tests and logs
        rng = random.Random(seed)
        self.ac_units: dict[str, AcUnit] = {
            i: AcUnit(id=i, floor=int(i[1]), zone=f"f{i[1]}") for i in _AC_IDS
        }
        self.lights: dict[str, Light] = {i: Light(id=i, floor=int(i[1]), zone=f"f{i[1]}") for i in _LIGHT_IDS}

        def initial(lo: float, hi: float, digits: int = 2) -> float:
            return round(rng.uniform(lo, hi), digits)

        meters = [Meter("main", "Main incoming meter", "01000", "kWh", initial(120_000, 180_000))]
        for f in range(1, FLOORS + 1):
            meters.append(
                Meter(f"f{f}-ls", f"{f}F lighting and sockets", "01A00", "kWh", initial(20_000, 40_000))
            )
        for f in range(1, FLOORS + 1):
            meters.append(
                Meter(f"f{f}-ac", f"{f}F air conditioning", "01B00", "kWh", initial(15_000, 35_000))
            )
        meters.append(Meter("dc", "Data centre", "01D10", "kWh", initial(60_000, 90_000)))
        meters.append(Meter("it", "Data centre IT load", "01D1A", "kWh", initial(40_000, 60_000)))
        meters.append(Meter("water", "Water main", "02000", "m3", initial(5_000, 9_000, 3)))
        self.meters: dict[str, Meter] = {m.id: m for m in meters}
        self.windows: dict[str, bool] = {"f1": False}  # window contact of 1F (perimeter zone); True = open
        self.illuminance: dict[str, float] = {"f1": 0.0}  # lux at the 1F daylight sensor
        self.common_kwh = 0.0  # unmetered common services, so the main-meter balance can be checked
        self.common_kw = 0.0
        self.it_kw = 0.0
        self.dc_cooling_kw = 0.0
        self.outdoor_temp = outdoor_temperature(start, seed=seed, tz=self.tz)
        self._unit_offsets = {i: rng.uniform(-0.6, 0.6) for i in _AC_IDS}
        self._dc_phase = rng.uniform(0, 2 * math.pi)
        self._replay_today(start)
        for ac in self.ac_units.values():
            # Start near steady state: a running unit has already pulled its room close to the setpoint.
            ac.room_temp = self._free_temp(ac, start)
            if ac.running_mode == Mode.COOL and ac.room_temp > ac.setpoint:
                ac.room_temp = ac.setpoint + 0.5
            elif ac.running_mode == Mode.HEAT and ac.room_temp < ac.setpoint:
                ac.room_temp = ac.setpoint - 0.5
        self._update_powers(start)

    # ---- calendar ----------------------------------------------------------------------------------------

    def local(self, t: datetime | None = None) -> datetime:
        return (t or self.now).astimezone(self.tz)

    def is_working_day(self, d: date) -> bool:
        known = self._work_days.get(d)
        if known is None:
            cal = self._calendars.get(d.year)
            if cal is None:
                cal = self._calendars[d.year] = holidays.country_holidays("CN", years=[d.year])
            known = self._work_days[d] = bool(cal.is_working_day(d))
        return known

    def office_hours(self, t: datetime) -> bool:
        lt = self.local(t)
        return self.is_working_day(lt.date()) and time(8, 0) <= lt.time() < time(18, 30)

    # ---- listeners and setters -----------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(change)`` after every state change; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _emit(self, change: Change) -> None:
        for listener in list(self._listeners):
            listener(change)

    def _ac(self, unit_id: str) -> AcUnit:
        try:
            return self.ac_units[unit_id]
        except KeyError:
            raise KeyError(f"no AC unit {unit_id!r}; known: {sorted(self.ac_units)}") from None

    def set_setpoint(self, unit_id: str, value: float, *, source: str = "api") -> None:
        ac = self._ac(unit_id)
        v = float(value)
        if not (SETPOINT_MIN <= v <= SETPOINT_MAX) or math.isnan(v):
            raise OutOfRange(
                f"setpoint {v} outside {SETPOINT_MIN}-{SETPOINT_MAX} °C",
                target=unit_id,
                attr="setpoint",
                value=value,
            )
        if ac.setpoint != v:
            ac.setpoint = v
            self._update_powers(self.now)
            self._emit(Change("ac", unit_id, "setpoint", v, source, self.now))

    def set_mode(self, unit_id: str, mode: Mode | int, *, source: str = "api") -> None:
        """Mode OFF powers the unit off; COOL, HEAT or FAN select the mode and power it on (the one
        enumeration most VRF/split-unit gateways expose)."""
        ac = self._ac(unit_id)
        try:
            m = Mode(int(mode))
        except ValueError:
            raise OutOfRange(
                f"mode {mode} not one of 0 off, 1 cool, 2 heat, 3 fan",
                target=unit_id,
                attr="mode",
                value=mode,
            ) from None
        # Mode 0 (off) on the mode register powers the unit off, as many split-unit gateways do.
        if m == Mode.OFF:
            self.set_power(unit_id, False, source=source)
            return
        if ac.mode != m:
            ac.mode = m
            self._update_powers(self.now)
            self._emit(Change("ac", unit_id, "mode", m, source, self.now))
        self.set_power(unit_id, True, source=source)

    def set_power(self, unit_id: str, on: bool, *, source: str = "api") -> None:
        ac = self._ac(unit_id)
        if ac.power != bool(on):
            ac.power = bool(on)
            self._update_powers(self.now)  # before listeners, so they see the new power figures
            self._emit(Change("ac", unit_id, "power", ac.power, source, self.now))

    def set_light(self, light_id: str, on: bool, *, source: str = "api") -> None:
        try:
            light = self.lights[light_id]
        except KeyError:
            raise KeyError(f"no light {light_id!r}; known: {sorted(self.lights)}") from None
        if light.on != bool(on):
            light.on = bool(on)
            self._update_powers(self.now)
            self._emit(Change("light", light_id, "on", light.on, source, self.now))

    def set_window(self, zone: str, open_: bool, *, source: str = "api") -> None:
        if zone not in self.windows:
            raise KeyError(f"no window contact in zone {zone!r}; known: {sorted(self.windows)}")
        if self.windows[zone] != bool(open_):
            self.windows[zone] = bool(open_)
            self._emit(Change("window", zone, "open", bool(open_), source, self.now))

    def _apply(self, action: Action, source: str) -> None:
        if action.attr == "light":
            self.set_light(action.target, bool(action.value), source=source)
        elif action.attr == "power":
            self.set_power(action.target, bool(action.value), source=source)
        elif action.attr == "mode":
            self.set_mode(action.target, action.value, source=source)
        else:
            self.set_setpoint(action.target, float(action.value), source=source)

    # ---- script ------------------------------------------------------------------------------------------

    def _events_between(self, t0: datetime, t1: datetime) -> list[tuple[datetime, ScriptEvent]]:
        """Script events due in (t0, t1], in time order (script order for equal times)."""
        out: list[tuple[datetime, ScriptEvent]] = []
        if not self.script or t1 <= t0:
            return out
        d = self.local(t0).date()
        last = self.local(t1).date()
        while d <= last:
            for ev in self.script:
                if ev.days == "working" and not self.is_working_day(d):
                    continue
                if not _season_matches(ev.season, d):
                    continue
                when = datetime.combine(d, ev.at, tzinfo=self.tz)
                if t0 < when <= t1:
                    out.append((when, ev))
            d += timedelta(days=1)
        out.sort(key=lambda x: x[0])  # stable: script order kept for equal times
        return out

    def _replay_today(self, start: datetime) -> None:
        """Put the building in the state the script would have left it in at ``start`` (no energy)."""
        if not self.script:
            return
        # Last night's light is still on after midnight; replay from yesterday's morning.
        midnight = datetime.combine(self.local(start).date() - timedelta(days=1), time(0), tzinfo=self.tz)
        for _when, ev in self._events_between(midnight, start):
            for action in ev.actions:
                self._apply(action, f"replay:{ev.name}")

    # ---- physics -----------------------------------------------------------------------------------------

    def _free_temp(self, ac: AcUnit, t: datetime) -> float:
        """Where the room drifts without its AC unit: the envelope damps the outdoor swing, people and
        equipment add heat, and in the heating season the district-heating radiators keep it above 15 °C."""
        return self._free_temps(t)[ac.id]

    def _free_temps(self, t: datetime) -> dict[str, float]:
        gains = 3.0 if self.office_hours(t) else 1.0
        base = 18.0 + 0.6 * (self.outdoor_temp - 18.0) + gains
        floor = 15.0 if is_winter(self.local(t).date()) else -100.0
        return {i: max(base + off, floor + off) for i, off in self._unit_offsets.items()}

    def _ac_power(self, ac: AcUnit, free: float) -> float:
        mode = ac.running_mode
        if mode == Mode.OFF:
            return 0.02
        if mode == Mode.FAN:
            return 0.5
        if mode == Mode.COOL:
            hold, pull = max(0.0, free - ac.room_temp), max(0.0, ac.room_temp - ac.setpoint)
            if free <= ac.setpoint and ac.room_temp <= ac.setpoint:
                return 0.5  # compressor idle
            return min(ac.rated_kw, 0.5 + COOL_KW_PER_K * hold + PULL_KW_PER_K * pull)
        hold, pull = max(0.0, ac.room_temp - free), max(0.0, ac.setpoint - ac.room_temp)
        if free >= ac.setpoint and ac.room_temp >= ac.setpoint:
            return 0.5
        return min(ac.rated_kw, 0.5 + HEAT_KW_PER_K * hold + PULL_KW_PER_K * pull)

    def _update_powers(self, t: datetime) -> None:
        """Instantaneous powers for the state at ``t`` (used for the next sub-step and for display)."""
        office = self.office_hours(t)
        free = self._free_temps(t)
        for ac in self.ac_units.values():
            ac.electric_kw = self._ac_power(ac, free[ac.id])
        hours = t.timestamp() / 3600
        self.it_kw = IT_KW + 0.75 * math.sin(2 * math.pi * hours / 24 + self._dc_phase)
        self.dc_cooling_kw = self.it_kw * (0.30 + 0.01 * min(15.0, max(0.0, self.outdoor_temp - 15.0)))
        self.common_kw = 8.0 if office else 2.0
        sockets = 20.0 if office else 4.0
        m = self.meters
        total = 0.0
        for f in range(1, FLOORS + 1):
            ls = sockets + sum(li.rated_kw for li in self.lights.values() if li.floor == f and li.on)
            ac_kw = sum(a.electric_kw for a in self.ac_units.values() if a.floor == f)
            m[f"f{f}-ls"].rate = ls
            m[f"f{f}-ac"].rate = ac_kw
            total += ls + ac_kw
        self.illuminance["f1"] = self._daylight(t) + 250.0 * sum(
            1 for li in self.lights.values() if li.floor == 1 and li.on
        )
        m["it"].rate = self.it_kw
        m["dc"].rate = self.it_kw + self.dc_cooling_kw + 0.3  # + DC lighting
        total += m["dc"].rate + self.common_kw
        m["main"].rate = total
        m["water"].rate = 0.9 if office else 0.05  # m³/h
        if office:
            lt = self.local(t)
            m["water"].rate += 0.4 * max(0.0, math.sin(math.pi * (lt.hour + lt.minute / 60 - 8) / 10.5))

    def _daylight(self, t: datetime) -> float:
        """Daylight (lux) at the 1F perimeter sensor: a sun arc between sunrise and sunset (about 36.7° N,
        solar noon 12:12 local) times a slowly varying cloud factor."""
        lt = self.local(t)
        doy = lt.timetuple().tm_yday
        day_h = 12.0 + 2.3 * math.sin(2 * math.pi * (doy - 80) / 365.25)
        sunrise = 12.2 - day_h / 2
        h = lt.hour + lt.minute / 60 + lt.second / 3600
        if not sunrise < h < sunrise + day_h:
            return 0.0
        cloud = 0.8 + 0.2 * math.sin(2 * math.pi * t.timestamp() / (3.1 * 86400) + self._dc_phase)
        return 1500.0 * math.sin(math.pi * (h - sunrise) / day_h) * cloud

    def _integrate(self, t0: datetime, dt: float) -> None:
        """Advance physics from t0 by dt seconds (no events inside)."""
        t1 = t0 + timedelta(seconds=dt)
        self._update_powers(t0)
        h = dt / 3600
        for meter in self.meters.values():
            meter.integral += meter.rate * h
        self.common_kwh += self.common_kw * h
        # temperatures: exact exponential toward the target over the sub-step
        free_temps = self._free_temps(t0)
        for ac in self.ac_units.values():
            free = free_temps[ac.id]
            mode = ac.running_mode
            target, tau = free, 4 * 3600.0
            if (mode == Mode.COOL and free > ac.setpoint) or (mode == Mode.HEAT and free < ac.setpoint):
                target, tau = ac.setpoint, 1800.0
            elif mode == Mode.FAN:
                tau = 3 * 3600.0
            ac.room_temp = target + (ac.room_temp - target) * math.exp(-dt / tau)
        self.outdoor_temp = outdoor_temperature(t1, seed=self.seed, tz=self.tz)

    def step(self, dt_s: float, now: datetime | None = None, *, max_substep_s: float = MAX_SUBSTEP_S) -> None:
        """Advance the model by ``dt_s`` seconds, ending at ``now`` (default: previous time + dt_s).

        Firing script events due in the interval at their own times, and sub-stepping at most
        ``max_substep_s`` (60 s; a season replay may take coarser steps).
        """
        if max_substep_s <= 0:
            raise ValueError(f"max_substep_s {max_substep_s} must be positive")
        if dt_s < 0:
            raise ValueError(f"dt_s {dt_s} is negative")
        end = now if now is not None else self.now + timedelta(seconds=dt_s)
        if end.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        t = end - timedelta(seconds=dt_s)
        events = self._events_between(max(t, self.now), end)
        for when, ev in [*events, (end, None)]:
            while t < when:
                sub = min(max_substep_s, (when - t).total_seconds())
                self._integrate(t, sub)
                t = min(when, t + timedelta(seconds=sub))
            self.now = when
            if ev is not None:
                self.fired.append((when, ev.name))
                for action in ev.actions:
                    self._apply(action, f"script:{ev.name}")
        self.now = end
        self._update_powers(end)

    def advance_to(self, now: datetime, *, max_substep_s: float = MAX_SUBSTEP_S) -> None:
        """Step from the model's current time to ``now``."""
        self.step(max(0.0, (now - self.now).total_seconds()), now, max_substep_s=max_substep_s)

    # ---- convenience for front ends and tests -----------------------------------------------------------

    def meter_total_check(self) -> float:
        """Main-meter integral minus the sum of its parts (should be 0 up to float rounding)."""
        m = self.meters
        parts = sum(m[f"f{f}-ls"].integral + m[f"f{f}-ac"].integral for f in range(1, FLOORS + 1))
        return m["main"].integral - (parts + m["dc"].integral + self.common_kwh)

    def snapshot(self) -> dict[str, Any]:
        """A plain dict of the whole state (for logs and the CLI)."""
        return {
            "now": self.now.astimezone(UTC).isoformat(),
            "outdoor_temp": round(self.outdoor_temp, 2),
            "ac": {
                i: {
                    "power": a.power,
                    "mode": a.mode.name.lower(),
                    "setpoint": a.setpoint,
                    "room_temp": round(a.room_temp, 2),
                    "kw": round(a.electric_kw, 2),
                }
                for i, a in self.ac_units.items()
            },
            "lights": {i: li.on for i, li in self.lights.items()},
            "windows": dict(self.windows),
            "illuminance": {z: round(v, 1) for z, v in self.illuminance.items()},
            "meters": {
                i: {"reading": round(m.reading, 3), "rate": round(m.rate, 3)} for i, m in self.meters.items()
            },
        }

"""policy.yaml schema: what facilities staff write. Owned by policies/; composed by edge_agent.config.

Every model forbids unknown keys (a typo must fail `edge-agent check`, never be ignored). Times of day
are strings "HH:MM" (quote them in YAML: an unquoted 18:30 is read by YAML 1.1 as the number 1110),
time ranges "HH:MM-HH:MM", season ranges "MM-DD..MM-DD" (may wrap the new year).
"""

from __future__ import annotations

import datetime as _dt
import itertools
import re
from dataclasses import dataclass
from datetime import date, time
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)

__all__ = [
    "NATIONAL_MAX_HEATING_C",
    "NATIONAL_MIN_COOLING_C",
    "AfterHoursRule",
    "CalendarPolicy",
    "ClockTime",
    "EnforcementPolicy",
    "Exemption",
    "HvacPolicy",
    "LightingGroup",
    "LightingPolicy",
    "MonthDay",
    "MonthDayRange",
    "Policy",
    "Seasons",
    "SiteDay",
    "SunWindow",
    "TimeRange",
    "WindowOpenRule",
    "site_problems",
]

# State Council General Office notice of June 2007: public buildings, summer not below 26 °C, winter
# not above 20 °C. Localities may be stricter, never looser (exempt zones aside).
NATIONAL_MIN_COOLING_C = 26.0
NATIONAL_MAX_HEATING_C = 20.0

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- small value types, written as strings in YAML -------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class MonthDay:
    month: int
    day: int

    def __str__(self) -> str:
        return f"{self.month:02d}-{self.day:02d}"

    @classmethod
    def of(cls, d: date) -> MonthDay:
        return cls(d.month, d.day)


@dataclass(frozen=True, slots=True)
class MonthDayRange:
    """Inclusive month-day range; wraps the new year when start > end (11-15..03-15)."""

    start: MonthDay
    end: MonthDay

    def __str__(self) -> str:
        return f"{self.start}..{self.end}"

    def contains(self, d: date) -> bool:
        md = MonthDay.of(d)
        if self.start <= self.end:
            return self.start <= md <= self.end
        return md >= self.start or md <= self.end


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Half-open local time range [start, end) within one day; start < end."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def contains(self, t: time) -> bool:
        return self.start <= t < self.end


_MD_RE = re.compile(r"^\s*(\d{1,2})-(\d{1,2})\s*$")
_HM_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


def _month_day(text: str) -> MonthDay:
    m = _MD_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a month-day like 06-01")
    month, day = int(m.group(1)), int(m.group(2))
    try:
        date(2000, month, day)  # a leap year, so 02-29 is accepted
    except ValueError:
        raise ValueError(f"{text!r} is not a day of the year") from None
    return MonthDay(month, day)


def _clock(value: Any) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        if isinstance(value, int):  # YAML 1.1 read an unquoted 18:30 as 1110 (base 60)
            raise ValueError(f"{value!r} is a number: quote times of day in YAML, e.g. '18:30'")
        raise ValueError(f"{value!r} is not a time of day like '18:30'")
    m = _HM_RE.match(value)
    if not m or not (0 <= int(m.group(1)) <= 23 and 0 <= int(m.group(2)) <= 59):
        if value.strip() == "24:00":
            raise ValueError("'24:00' is not allowed: end a range at '23:59' or split it")
        raise ValueError(f"{value!r} is not a time of day like '18:30'")
    return time(int(m.group(1)), int(m.group(2)))


def _parse_md_range(value: Any) -> Any:
    if isinstance(value, MonthDayRange):
        return value
    if isinstance(value, dict) and set(value) == {"start", "end"}:
        return MonthDayRange(_month_day(str(value["start"])), _month_day(str(value["end"])))
    if not isinstance(value, str) or ".." not in value:
        raise ValueError(f"{value!r} is not a season range like '06-01..09-30'")
    a, b = value.split("..", 1)
    return MonthDayRange(_month_day(a), _month_day(b))


def _parse_time_range(value: Any) -> Any:
    if isinstance(value, TimeRange):
        return value
    if isinstance(value, dict) and set(value) == {"start", "end"}:
        a, b = _clock(value["start"]), _clock(value["end"])
    elif isinstance(value, str) and value.count("-") == 1:
        sa, sb = value.split("-")
        a, b = _clock(sa), _clock(sb)
    else:
        raise ValueError(f"{value!r} is not a time range like '07:30-12:00'")
    if not a < b:
        raise ValueError(f"{value!r}: start must be before end (ranges do not cross midnight)")
    return TimeRange(a, b)


SeasonRange = Annotated[
    MonthDayRange,
    BeforeValidator(_parse_md_range),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": r"^\d{2}-\d{2}\.\.\d{2}-\d{2}$", "examples": ["06-01..09-30"]}
    ),
]
Period = Annotated[
    TimeRange,
    BeforeValidator(_parse_time_range),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": r"^\d{1,2}:\d{2}-\d{1,2}:\d{2}$", "examples": ["07:30-12:00"]}
    ),
]
ClockTime = Annotated[
    time,
    BeforeValidator(_clock),
    PlainSerializer(lambda t: f"{t:%H:%M}", return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d{1,2}:\d{2}$", "examples": ["18:30"]}),
]


def _check_periods(periods: list[TimeRange], what: str) -> None:
    ordered = sorted(periods, key=lambda p: p.start)
    for a, b in itertools.pairwise(ordered):
        if b.start < a.end:
            raise ValueError(f"{what}: {a} and {b} overlap")


# --- seasons ----------------------------------------------------------------------------------------


class Seasons(_Strict):
    """Per-site season dates. Days in neither season are transition days (no setpoint limit applies)."""

    summer: SeasonRange | None = Field(
        description="Cooling season, e.g. '06-01..09-30'; the 26 °C cooling floor applies on these days"
    )
    winter: SeasonRange | None = Field(
        description="Heating season, e.g. '11-15..03-15' (may wrap the new year); "
        "the 20 °C heating cap applies"
    )

    @model_validator(mode="after")
    def _no_overlap(self) -> Seasons:
        if self.summer is None or self.winter is None:
            return self
        d = date(2000, 1, 1)
        for _ in range(366):
            if self.summer.contains(d) and self.winter.contains(d):
                raise ValueError(f"summer {self.summer} and winter {self.winter} overlap on {MonthDay.of(d)}")
            d = date.fromordinal(d.toordinal() + 1)
        return self

    def season_of(self, d: date) -> Literal["summer", "winter", "transition"]:
        if self.summer is not None and self.summer.contains(d):
            return "summer"
        if self.winter is not None and self.winter.contains(d):
            return "winter"
        return "transition"


# --- HVAC -------------------------------------------------------------------------------------------


class Exemption(_Strict):
    zone: str = Field(pattern=_ID, description="Zone id from site.yaml")
    reason: str = Field(
        min_length=3, description="Why the zone is exempt (shown in `policy explain` and audit)"
    )
    until: date | None = Field(
        default=None,
        description="Last day the exemption applies (inclusive); enforced again from the next day",
    )

    @field_validator("reason")
    @classmethod
    def _reason_not_blank(cls, v: str) -> str:
        if len(v.strip()) < 3:
            raise ValueError("an exemption needs a reason a person can read")
        return v.strip()


class AfterHoursRule(_Strict):
    enabled: bool = True
    working_hours: list[Period] = Field(
        min_length=1, description="Local periods on working days when AC may run, e.g. ['07:30-18:30']"
    )
    zones: list[Annotated[str, Field(pattern=_ID)]] | None = Field(
        default=None, description="Zones this applies to; omitted = every zone that is not exempt"
    )
    override_min: int = Field(
        default=0,
        ge=0,
        le=720,
        description="A unit switched on by hand after hours is left running this many minutes "
        "before it is switched off",
    )

    @model_validator(mode="after")
    def _periods(self) -> AfterHoursRule:
        _check_periods(self.working_hours, "working_hours")
        return self


class WindowOpenRule(_Strict):
    enabled: bool = True
    delay_min: int = Field(
        default=5,
        ge=0,
        le=240,
        description="A window must be open this long before the zone's AC is switched off",
    )


class HvacPolicy(_Strict):
    summer_min_cooling_c: float = Field(
        default=NATIONAL_MIN_COOLING_C,
        le=30,
        description="Cooling setpoints are kept at or above this in summer. "
        "National floor 26; stricter (27) allowed",
    )
    winter_max_heating_c: float = Field(
        default=NATIONAL_MAX_HEATING_C,
        ge=10,
        description="Heating setpoints are kept at or below this in winter. "
        "National cap 20; stricter (18) allowed",
    )
    deadband_c: float = Field(
        default=0.0,
        ge=0.0,
        le=0.5,
        description="Tolerance: a violation is value < limit - deadband (cooling) or "
        "value > limit + deadband (heating); the write is always exactly the limit",
    )
    setpoint_without_mode: Literal["season", "skip"] = Field(
        default="season",
        description="A `setpoint` point whose unit has no ac_mode point: 'season' treats it as cooling in "
        "summer and heating in winter; 'skip' leaves it alone (reported)",
    )
    limits_by: Literal["mode", "season"] = Field(
        default="mode",
        description="'mode' (default): a unit cooling never below the cooling floor and a unit heating never "
        "above the heating cap, in every season; 'season': the cooling floor only in summer, the heating cap "
        "only in winter, no limit on transition days",
    )
    exemptions: list[Exemption] = Field(
        default_factory=list, description="Zones left alone by every HVAC rule"
    )
    server_room_limits: list[str] = Field(
        default_factory=list,
        description="Zones of kind server_room or data_centre whose setpoints the cooling floor and heating "
        "cap apply to. Such zones' units are never switched off by after-hours, holiday or window rules, and "
        "their setpoints are left alone unless listed here (or the zone is exempt)",
    )
    after_hours: AfterHoursRule | None = Field(
        default=None, description="Switch AC units off outside working hours and all day on non-working days"
    )
    window_open: WindowOpenRule | None = Field(
        default=None, description="Switch a zone's AC off while a window_contact in the zone reports open"
    )

    @field_validator("summer_min_cooling_c")
    @classmethod
    def _not_looser_cooling(cls, v: float) -> float:
        if v < NATIONAL_MIN_COOLING_C:
            raise ValueError(
                f"summer_min_cooling_c {v} is looser than the national rule (cooling setpoint not below "
                f"{NATIONAL_MIN_COOLING_C:g} °C in public buildings); "
                "a stricter value such as 27 is allowed. "
                "To let one zone run cooler, list it under hvac.exemptions with a reason"
            )
        return v

    @field_validator("winter_max_heating_c")
    @classmethod
    def _not_looser_heating(cls, v: float) -> float:
        if v > NATIONAL_MAX_HEATING_C:
            raise ValueError(
                f"winter_max_heating_c {v} is looser than the national rule (heating setpoint not above "
                f"{NATIONAL_MAX_HEATING_C:g} °C in public buildings); "
                "a stricter value such as 18 is allowed. "
                "To let one zone run warmer, list it under hvac.exemptions with a reason"
            )
        return v

    @model_validator(mode="after")
    def _unique_exemptions(self) -> HvacPolicy:
        seen: set[str] = set()
        for e in self.exemptions:
            if e.zone in seen:
                raise ValueError(f"zone {e.zone!r} is exempted twice; keep one entry")
            seen.add(e.zone)
        return self


# --- lighting ---------------------------------------------------------------------------------------


class SunWindow(_Strict):
    """Lights allowed only at night: from sunset + on_after_sunset_min to sunrise - off_before_sunrise_min."""

    on_after_sunset_min: int = Field(default=0, ge=-180, le=180)
    off_before_sunrise_min: int = Field(default=0, ge=-180, le=180)


class LightingGroup(_Strict):
    name: str = Field(pattern=_ID)
    zones: list[Annotated[str, Field(pattern=_ID)]] = Field(min_length=1)
    on_periods: list[Period] = Field(
        default_factory=list,
        description="Working-day periods when lights may be on, e.g. ['07:30-12:00', '13:30-18:00']; "
        "everything else (and all of every non-working day) is after hours",
    )
    sweeps: list[ClockTime] = Field(
        default_factory=list, description="Local times after hours when lights found on are switched off"
    )
    sweep_every_min: int | None = Field(
        default=60,
        ge=5,
        le=720,
        description="After the day's last sweep, sweep again every N minutes until the next working period "
        "starts (N must divide 1440); null = only the listed sweeps",
    )
    override_min: int = Field(
        default=60,
        ge=0,
        le=720,
        description="A light switched on by hand after hours (or in daylight) stays on this long before a "
        "sweep may switch it off",
    )
    sun: SunWindow | None = Field(
        default=None,
        description="Outdoor/corridor lights: allowed only between sunset and sunrise (site lat/lon); "
        "lights found on in daytime are switched off. Excludes on_periods/sweeps",
    )
    daylight_off_above_lux: float | None = Field(
        default=None,
        gt=0,
        description="Perimeter zones (site.yaml) only: in daytime, lights off while the zone's illuminance "
        "sensor reads above this many lux",
    )

    @model_validator(mode="after")
    def _shape(self) -> LightingGroup:
        _check_periods(self.on_periods, f"lighting group {self.name} on_periods")
        if self.sun is not None and (self.on_periods or self.sweeps):
            raise ValueError(f"lighting group {self.name}: use either `sun` or on_periods/sweeps, not both")
        for s in self.sweeps:
            for p in self.on_periods:
                if p.contains(s):
                    raise ValueError(
                        f"lighting group {self.name}: sweep {s:%H:%M} falls inside on period {p}; "
                        "sweeps run only after hours"
                    )
        if self.sweep_every_min is not None and 1440 % self.sweep_every_min:
            raise ValueError(
                f"lighting group {self.name}: sweep_every_min {self.sweep_every_min} must divide 1440 "
                "(e.g. 15, 30, 60, 120)"
            )
        if len(set(self.zones)) != len(self.zones):
            raise ValueError(f"lighting group {self.name}: a zone is listed twice")
        return self


class LightingPolicy(_Strict):
    groups: list[LightingGroup] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> LightingPolicy:
        names: set[str] = set()
        owner: dict[str, str] = {}
        for g in self.groups:
            if g.name in names:
                raise ValueError(f"lighting group name {g.name!r} is used twice")
            names.add(g.name)
            for z in g.zones:
                if z in owner:
                    raise ValueError(
                        f"zone {z!r} is in lighting groups {owner[z]!r} and {g.name!r}; pick one"
                    )
                owner[z] = g.name
        return self


# --- calendar and enforcement -----------------------------------------------------------------------


def _site_day(value: Any) -> Any:
    if isinstance(value, date | str):  # a bare date in the list (YAML date, or JSON string)
        return {"date": value}
    return value


class SiteDay(_Strict):
    date: _dt.date
    name: str = Field(default="site calendar", min_length=1)


SiteDayEntry = Annotated[SiteDay, BeforeValidator(_site_day)]


class CalendarPolicy(_Strict):
    """China's statutory holidays and make-up working days (holidays package), overridden by these lists."""

    extra_holidays: list[SiteDayEntry] = Field(
        default_factory=list,
        description="Days off at this site only (closures); override the national calendar",
    )
    extra_working_days: list[SiteDayEntry] = Field(
        default_factory=list,
        description="Days worked at this site (or a newly published make-up day the package lacks)",
    )

    @model_validator(mode="after")
    def _no_conflicts(self) -> CalendarPolicy:
        seen: dict[date, str] = {}
        for what, days in (
            ("extra_holidays", self.extra_holidays),
            ("extra_working_days", self.extra_working_days),
        ):
            for d in days:
                if d.date in seen:
                    raise ValueError(f"{d.date.isoformat()} is listed in {seen[d.date]} and {what}")
                seen[d.date] = what
        return self


class EnforcementPolicy(_Strict):
    max_writes_per_point_per_hour: int = Field(
        default=6,
        ge=1,
        le=60,
        description="Past this many writes to one point in an hour the agent stops writing it and reports "
        "tampering instead of fighting the occupant or a BMS",
    )
    tamper_pause_min: int = Field(
        default=60,
        ge=1,
        le=1440,
        description="After a tamper finding the agent stops writing that point for this many minutes, then "
        "enforces it again; the finding closes (audited) when the point complies",
    )
    relinquish_on_exit: bool = Field(
        default=False, description="BACnet: release the agent's priority-array entries when the agent stops"
    )


class Policy(_Strict):
    """Top level of policy.yaml."""

    version: Literal[1] = 1
    seasons: Seasons
    hvac: HvacPolicy = Field(default_factory=HvacPolicy)
    lighting: LightingPolicy = Field(default_factory=LightingPolicy)
    calendar: CalendarPolicy = Field(default_factory=CalendarPolicy)
    enforcement: EnforcementPolicy = Field(default_factory=EnforcementPolicy)


def site_problems(policy: Policy, zone_ids: set[str] | frozenset[str]) -> list[str]:
    """Zones policy.yaml names that site.yaml lacks (for `edge-agent check`; the shell reports them)."""
    problems: list[str] = []
    for i, e in enumerate(policy.hvac.exemptions):
        if e.zone not in zone_ids:
            problems.append(f"hvac.exemptions[{i}].zone: {e.zone!r} is not a zone in site.yaml")
    for i, z in enumerate(policy.hvac.server_room_limits):
        if z not in zone_ids:
            problems.append(f"hvac.server_room_limits[{i}]: {z!r} is not a zone in site.yaml")
    ah = policy.hvac.after_hours
    if ah is not None and ah.zones is not None:
        for i, z in enumerate(ah.zones):
            if z not in zone_ids:
                problems.append(f"hvac.after_hours.zones[{i}]: {z!r} is not a zone in site.yaml")
    for gi, g in enumerate(policy.lighting.groups):
        for i, z in enumerate(g.zones):
            if z not in zone_ids:
                problems.append(f"lighting.groups[{gi}].zones[{i}]: {z!r} is not a zone in site.yaml")
    return problems

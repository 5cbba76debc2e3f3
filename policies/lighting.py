"""Lighting rules per zone group: after-hours sweeps with a manual-override window, sun-based
outdoor/corridor lights, daylight (lux) switch-off in perimeter zones. The agent only switches lights
off; it never switches them on."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from policies._common import (
    Context,
    Out,
    data_problem,
    decode_switch,
    number,
    off_value,
    report_bad_data,
    within_range,
)
from policies.model import LightingGroup
from policies.schedule import last_sweep, schedule_state, sun_times
from policies.types import PointState, Snapshot, WriteIntent

__all__ = ["evaluate_lighting"]


class _Sun:
    """Sun times of today, computed at most once per evaluation."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._value: tuple[datetime, datetime] | str | None = None

    def get(self) -> tuple[datetime, datetime] | str:
        if self._value is None:
            prm = self._ctx.params
            if prm.latitude is None or prm.longitude is None:
                self._value = "site has no latitude/longitude (site.yaml): sun-based rules cannot run"
            else:
                self._value = sun_times(self._ctx.today, prm.latitude, prm.longitude, self._ctx.tz)
        return self._value


def _minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def _hm(t: datetime, ctx: Context) -> str:
    return f"{t.astimezone(ctx.tz):%H:%M}"


def evaluate_lighting(snapshot: Snapshot, ctx: Context, out: Out) -> None:
    groups = ctx.policy.lighting.groups
    if not groups:
        return
    group_of: dict[str, LightingGroup] = {z: g for g in groups for z in g.zones}
    lux: dict[str, list[float]] = {}
    for pid in sorted(snapshot):
        p = snapshot[pid]
        if p.role == "illuminance" and p.zone in group_of:
            problem = data_problem(p, ctx)
            v = number(p.value) if problem is None else None
            if v is not None:
                lux.setdefault(p.zone, []).append(v)
            elif problem is not None:
                report_bad_data(p, problem, "lighting", ctx, out)
            else:
                out.find(
                    "info",
                    p.point_id,
                    "lighting.daylight",
                    f"illuminance {p.value!r} is not a number",
                    p.zone,
                )
    sun = _Sun(ctx)
    sun_said: set[str] = set()
    for pid in sorted(snapshot):
        p = snapshot[pid]
        if p.role != "light_relay" or p.zone is None or p.zone not in group_of:
            continue
        g = group_of[p.zone]
        problem = data_problem(p, ctx)
        if problem is not None:
            report_bad_data(p, problem, "lighting", ctx, out)
            continue
        on = decode_switch(p)
        if on is None:
            out.find(
                "info",
                p.point_id,
                "lighting.reading",
                f"light value {p.value!r} is neither on nor off",
                p.zone,
            )
            continue
        _light(p, on, g, lux.get(p.zone, []), sun, sun_said, ctx, out)


def _why(ctx: Context, g: LightingGroup, **extra: Any) -> dict[str, Any]:
    why = ctx.why()
    why["group"] = g.name
    why.update(extra)
    return why


def _light(
    p: PointState,
    on: bool,
    g: LightingGroup,
    lux_values: list[float],
    sun: _Sun,
    sun_said: set[str],
    ctx: Context,
    out: Out,
) -> None:
    zone = p.zone
    head = f"group {g.name}, {ctx.day.describe()}"
    if not on:
        out.line(
            zone,
            "lighting",
            "lighting.state",
            "ok",
            f"{head}, {p.point_id} off",
            point=p.point_id,
            why=_why(ctx, g),
        )
        return
    override = timedelta(minutes=g.override_min)
    demands: list[tuple[str, str, dict[str, Any]]] = []  # (rule, reason, why)

    def sun_or_report(rule: str) -> tuple[datetime, datetime] | None:
        st = sun.get()
        if isinstance(st, str):
            if g.name not in sun_said:
                sun_said.add(g.name)
                out.find("info", g.name, rule, st, zone)
            out.line(
                zone,
                "lighting",
                rule,
                "report",
                f"{head}, {p.point_id}: {st}",
                point=p.point_id,
                why=_why(ctx, g),
            )
            return None
        return st

    if g.sun is not None:
        st = sun_or_report("lighting.sun")
        if st is not None:
            sunrise, sunset = st
            day_start = sunrise - timedelta(minutes=g.sun.off_before_sunrise_min)
            day_end = sunset + timedelta(minutes=g.sun.on_after_sunset_min)
            window = (
                f"lights allowed {_hm(day_end, ctx)}-{_hm(day_start, ctx)} "
                f"(sunset {_hm(sunset, ctx)}, sunrise {_hm(sunrise, ctx)})"
            )
            why = _why(ctx, g, schedule=window, sunrise=sunrise.isoformat(), sunset=sunset.isoformat())
            if not (day_start <= ctx.now < day_end):
                out.line(
                    zone,
                    "lighting",
                    "lighting.sun",
                    "ok",
                    f"{head}, {p.point_id} on, night: {window}",
                    point=p.point_id,
                    why=why,
                )
            elif p.since_known and p.since >= day_start and ctx.now < p.since + override:
                out.line(
                    zone,
                    "lighting",
                    "lighting.sun",
                    "skip",
                    f"{head}, {p.point_id} switched on by hand at {_hm(p.since, ctx)}, override until "
                    f"{_hm(p.since + override, ctx)}; {window}",
                    point=p.point_id,
                    why=why,
                )
            else:
                demands.append(("lighting.sun", f"daytime, {window}: light off", why))
    else:
        key = ("lighting.schedule", g.name)
        if key not in ctx.memo:
            st0 = schedule_state(ctx.local, g.on_periods, ctx.calendar)
            sw0 = (
                None
                if st0.stretch_start is None
                else last_sweep(ctx.local, g, ctx.calendar, st0.stretch_start)
            )
            ctx.memo[key] = (st0, sw0)
        sched, sweep = ctx.memo[key]
        why = _why(ctx, g, schedule=sched.describe(), on_periods=[str(x) for x in g.on_periods])
        if sched.in_period is not None:
            out.line(
                zone,
                "lighting",
                "lighting.after_hours_sweep",
                "ok",
                f"{head}, {p.point_id} on {sched.describe()}: allowed",
                point=p.point_id,
                why=why,
            )
        else:
            assert sched.stretch_start is not None
            manual = p.since_known and p.since >= sched.stretch_start
            # On since before this stretch began, or unknown (first seen): the next sweep takes it.
            on_since = p.since if p.since_known else sched.stretch_start
            # A manual switch-on is respected for override_min from the minute it was seen on (sweeps are
            # whole minutes, and a poll sees the switch seconds late), then swept at the first sweep time
            # at or after that: on at 21:00, override 60 -> the 22:00 sweep, not the one after it.
            due = _minute(p.since) + override if manual else on_since
            why["last_sweep"] = None if sweep is None else sweep.isoformat()
            if sweep is not None and sweep >= due:
                demands.append(
                    (
                        "lighting.after_hours_sweep",
                        f"{head}, {sched.describe()}: after-hours sweep at {_hm(sweep, ctx)} found it on",
                        why,
                    )
                )
            elif manual and ctx.now < due:
                out.line(
                    zone,
                    "lighting",
                    "lighting.after_hours_sweep",
                    "skip",
                    f"{head}, {p.point_id} switched on by hand at {_hm(p.since, ctx)} after hours, "
                    "override until "
                    f"{_hm(due, ctx)}; swept at the first sweep after that",
                    point=p.point_id,
                    why=why,
                )
            else:
                out.line(
                    zone,
                    "lighting",
                    "lighting.after_hours_sweep",
                    "skip",
                    f"{head}, {p.point_id} on, {sched.describe()}: "
                    f"no sweep since it {'came on' if p.since_known else 'was first seen on'} at "
                    f"{_hm(p.since, ctx)}",
                    point=p.point_id,
                    why=why,
                )
    fz = ctx.params.zone(zone)
    if g.daylight_off_above_lux is not None and fz is not None and fz.perimeter:
        _daylight(p, g, lux_values, sun_or_report, override, demands, ctx, out)

    if not demands:
        return
    rule, reason, why = demands[0]
    if len(demands) > 1:
        reason += "; also " + "; ".join(r for _, r, _ in demands[1:])
    value = off_value(p)
    if value is None:
        out.find("info", p.point_id, rule, f"{reason}; but the point's states have no 'off' label", zone)
        out.line(zone, "lighting", rule, "report", f"{reason}; no 'off' state", point=p.point_id, why=why)
        return
    if not p.writable:
        out.find("violation", p.point_id, rule, f"{reason}; but the point is not writable", zone)
        out.line(
            zone,
            "lighting",
            rule,
            "report",
            f"{reason}; {p.point_id} not writable, reported",
            point=p.point_id,
            why=why,
        )
        return
    if not within_range(p, value):
        out.find(
            "violation", p.point_id, rule, f"{reason}; but off ({value!r}) is outside {p.min}..{p.max}", zone
        )
        out.line(
            zone,
            "lighting",
            rule,
            "report",
            f"{reason}; off value outside the point's range",
            point=p.point_id,
            why=why,
        )
        return
    out.intents.append(WriteIntent(point_id=p.point_id, value=value, rule=rule, reason=reason, zone=zone))
    out.line(
        zone, "lighting", rule, "write", f"{reason} → switch {p.point_id} off", point=p.point_id, why=why
    )


def _daylight(
    p: PointState,
    g: LightingGroup,
    values: list[float],
    sun_or_report: Any,
    override: timedelta,
    demands: list[tuple[str, str, dict[str, Any]]],
    ctx: Context,
    out: Out,
) -> None:
    threshold = g.daylight_off_above_lux
    assert threshold is not None
    zone = p.zone
    rule = "lighting.daylight"
    if not values:
        why = _why(ctx, g, threshold_lux=threshold)
        out.line(
            zone,
            "lighting",
            rule,
            "skip",
            f"{p.point_id}: no usable illuminance reading in zone {zone}",
            point=p.point_id,
            why=why,
        )
        return
    st = sun_or_report(rule)
    if st is None:
        return
    sunrise, sunset = st
    lux = min(values)  # every sensor must agree it is bright
    why = _why(
        ctx, g, threshold_lux=threshold, lux=lux, sunrise=sunrise.isoformat(), sunset=sunset.isoformat()
    )
    if not (sunrise <= ctx.now < sunset):
        out.line(
            zone,
            "lighting",
            rule,
            "skip",
            f"{p.point_id}: night, daylight rule off",
            point=p.point_id,
            why=why,
        )
    elif lux <= threshold:
        out.line(
            zone,
            "lighting",
            rule,
            "ok",
            f"{p.point_id}: daylight {lux:g} lx ≤ {threshold:g} lx, lights allowed",
            point=p.point_id,
            why=why,
        )
    elif p.since_known and ctx.now < p.since + override:
        out.line(
            zone,
            "lighting",
            rule,
            "skip",
            f"{p.point_id}: daylight {lux:g} lx > {threshold:g} lx but switched on at {_hm(p.since, ctx)}, "
            f"override until {_hm(p.since + override, ctx)}",
            point=p.point_id,
            why=why,
        )
    else:
        demands.append(
            (rule, f"daylight {lux:g} lx > {threshold:g} lx in perimeter zone {zone}: light off", why)
        )

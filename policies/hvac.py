"""HVAC rules: 26 °C summer cooling floor, 20 °C winter heating cap (mode-aware), after-hours off,
off while a window is open. Pure: snapshot + context in, intents/findings/explanations out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from policies._common import (
    Context,
    Out,
    data_problem,
    decode_mode,
    decode_switch,
    fmt,
    number,
    off_value,
    raw_for_label,
    report_bad_data,
    within_range,
)
from policies.schedule import schedule_state
from policies.types import PointState, Snapshot, WriteIntent

__all__ = ["HVAC_ROLES", "SERVER_ZONE_KINDS", "evaluate_hvac"]

SETPOINT_ROLES = ("setpoint", "cooling_setpoint", "heating_setpoint")
# Zones whose cooling must never stop: no after-hours, holiday or window switch-off; setpoints limited
# only when policy.yaml lists the zone under hvac.server_room_limits.
SERVER_ZONE_KINDS = frozenset({"server_room", "data_centre"})
HVAC_ROLES = frozenset({"ac_power", "ac_mode", *SETPOINT_ROLES})
_RUNNING_MODES = frozenset({"cool", "heat", "auto", "dry", "fan"})
# Float noise from scaled registers (25.999999 for 26.0) must not count as a violation.
_EPS = 1e-6

LimitKind = Literal["cool", "heat"]


@dataclass(slots=True)
class _Unit:
    """One AC unit: the HVAC points of one device (and `ac_unit` id, when the device has several units)
    in one zone. Every rule decides per unit; a zone only groups units."""

    zone: str | None
    device: str | None
    ac_unit: str | None = None
    power: list[PointState] = field(default_factory=list)
    modes: list[PointState] = field(default_factory=list)
    setpoints: list[PointState] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)  # configured points with no reading yet

    @property
    def name(self) -> str:
        base = self.device or f"zone {self.zone or '-'}"
        return f"{base}/{self.ac_unit}" if self.ac_unit else base


def _why(ctx: Context, zone: str | None, **extra: Any) -> dict[str, Any]:
    why = ctx.why()
    why["deadband_c"] = ctx.policy.hvac.deadband_c
    ex, active = ctx.exemption(zone)
    if ex is not None:
        why["exemption"] = {
            "reason": ex.reason,
            "until": None if ex.until is None else ex.until.isoformat(),
            "expired": not active,
        }
    why.update(extra)
    return why


def evaluate_hvac(snapshot: Snapshot, ctx: Context, out: Out) -> None:
    units: dict[tuple[str, str, str], _Unit] = {}
    windows: dict[str | None, list[PointState]] = {}
    for pid in sorted(snapshot):
        p = snapshot[pid]
        if p.role == "window_contact":
            windows.setdefault(p.zone, []).append(p)
            continue
        if p.role not in HVAC_ROLES:
            continue
        key = (p.zone or "", p.device_id or "", p.ac_unit or "")
        u = units.setdefault(key, _Unit(p.zone, p.device_id, p.ac_unit))
        if p.role == "ac_power":
            u.power.append(p)
        elif p.role == "ac_mode":
            u.modes.append(p)
        else:
            u.setpoints.append(p)

    for pid in sorted(ctx.params.points):
        f = ctx.params.points[pid]
        if f.role in HVAC_ROLES and pid not in snapshot:
            key = (f.zone or "", f.device_id or "", f.ac_unit or "")
            units.setdefault(key, _Unit(f.zone, f.device_id, f.ac_unit)).unread.append(pid)

    for zone, contacts in list(windows.items()):
        good: list[PointState] = []
        for c in contacts:
            problem = data_problem(c, ctx)
            if problem is None:
                good.append(c)
            else:
                report_bad_data(c, problem, "hvac", ctx, out)
        windows[zone] = good

    expired_said: set[str] = set()
    window_said: set[str | None] = set()
    for key in sorted(units):
        u = units[key]
        ex, active = ctx.exemption(u.zone)
        if ex is not None and not active and u.zone not in expired_said:
            assert ex.until is not None and u.zone is not None
            expired_said.add(u.zone)
            out.line(
                u.zone,
                "hvac",
                "hvac.exemption",
                "skip",
                f"exemption expired on {ex.until.isoformat()} ({ex.reason}): the zone is enforced again",
                why=_why(ctx, u.zone),
            )
        _evaluate_unit(
            u, windows.get(u.zone, []), ctx, out, exempt=ex is not None and active, window_said=window_said
        )


def _server_zone(zone: str | None, ctx: Context) -> str | None:
    """The zone's kind when it is a server room or data centre, else None."""
    fz = ctx.params.zone(zone)
    return fz.kind if fz is not None and fz.kind in SERVER_ZONE_KINDS else None


def _one_unit(u: _Unit, ctx: Context, out: Out) -> bool:
    """Whether the points really are one unit: at most one power, one mode and one setpoint per role.
    Two indoor units merged into one would let one unit's state decide for the other: neither is acted on
    (`edge-agent check` refuses such a site.yaml)."""
    roles: dict[str, list[str]] = {}
    for p in (*u.power, *u.modes, *u.setpoints):
        roles.setdefault(p.role, []).append(p.point_id)
    dup = {r: ids for r, ids in roles.items() if len(ids) > 1}
    if not dup:
        return True
    text = "; ".join(f"{len(ids)} {r} points ({', '.join(ids)})" for r, ids in sorted(dup.items()))
    reason = (
        f"{u.name} in zone {u.zone or '-'} has {text}: cannot tell which points form one AC unit; "
        "give each indoor unit's points their own `ac_unit` id in site.yaml"
    )
    first = sorted(ids[0] for ids in dup.values())[0]
    out.find("info", first, "hvac.unit", reason, u.zone)
    out.line(
        u.zone, "hvac", "hvac.unit", "report", f"{reason}; not acted on", why={**ctx.why(), "roles": dup}
    )
    return False


def _complete(u: _Unit, ctx: Context, out: Out) -> bool:
    """Whether every setpoint, mode and power point of the unit has a good, in-range, fresh reading.
    An incomplete unit is never acted on: a write decided on half a state may be the wrong one."""
    bad = [(p, pr) for p in (*u.power, *u.modes, *u.setpoints) if (pr := data_problem(p, ctx)) is not None]
    for p, problem in bad:
        report_bad_data(p, problem, "hvac", ctx, out)
    if not bad and not u.unread:
        return True
    missing = [p.point_id for p, _ in bad] + [f"{pid} (not read yet)" for pid in u.unread]
    out.line(
        u.zone,
        "hvac",
        "hvac.unit_state",
        "skip",
        f"{u.name}: state incomplete ({', '.join(missing)}): no write until setpoint, mode and power "
        "are known, good and fresh",
        why={**ctx.why(), "incomplete": missing},
    )
    return False


def _unit_state(u: _Unit, out: Out) -> tuple[str | None, PointState | None, bool | None, PointState | None]:
    """(mode label, mode point, power on/off, the point that shows the unit on). None = unknown."""
    mode_point: PointState | None = None
    label: str | None = None
    if u.modes and u.modes[0].ok:
        mode_point = u.modes[0]
        label = decode_mode(mode_point)
        if label is None:
            out.find(
                "info",
                mode_point.point_id,
                "hvac.mode",
                f"ac_mode value {mode_point.value!r} is not a known mode (off/cool/heat/fan/auto/dry)",
                u.zone,
            )
    power: bool | None = None
    on_point: PointState | None = None
    for p in u.power:
        if not p.ok:
            continue
        v = decode_switch(p)
        if v is None:
            out.find(
                "info", p.point_id, "hvac.power", f"ac_power value {p.value!r} is neither on nor off", u.zone
            )
        elif v is False:
            power = False
        elif power is None:
            power, on_point = True, p
    if power is False:
        on_point = None
    if label == "off":
        power, on_point = False, None
    elif power is None and label in _RUNNING_MODES:
        power, on_point = True, mode_point
    return label, mode_point, power, on_point


def _evaluate_unit(
    u: _Unit,
    contacts: list[PointState],
    ctx: Context,
    out: Out,
    *,
    exempt: bool,
    window_said: set[str | None],
) -> None:
    if not _one_unit(u, ctx, out) or not _complete(u, ctx, out):
        return
    label, mode_point, running, on_point = _unit_state(u, out)
    switching_off = False
    if exempt:
        ex, _ = ctx.exemption(u.zone)
        assert ex is not None
        until = f" until {ex.until.isoformat()}" if ex.until else ""
        if running:
            out.line(
                u.zone,
                "hvac",
                "hvac.exemption",
                "exempt",
                f"exempt{until} ({ex.reason}): {u.name} left alone "
                "(after-hours and window rules do not apply)",
                why=_why(ctx, u.zone),
            )
    elif running and _server_zone(u.zone, ctx):
        out.line(
            u.zone,
            "hvac",
            "hvac.server_room",
            "skip",
            f"{u.name} in a {_server_zone(u.zone, ctx)} zone: never switched off by after-hours, holiday "
            "or window rules",
            why=_why(ctx, u.zone, zone_kind=_server_zone(u.zone, ctx)),
        )
    elif running:
        switching_off = _switch_off_rules(u, contacts, ctx, out, label, mode_point, on_point, window_said)

    if running is False or label == "fan" or switching_off:
        state = "being switched off" if switching_off else ("in fan mode" if label == "fan" else "off")
        for p in u.setpoints:
            if p.ok:
                out.line(
                    u.zone,
                    "hvac",
                    "hvac.setpoint",
                    "skip",
                    f"{ctx.season_text()}, {p.point_id}: unit {state}, no setpoint limit to enforce",
                    point=p.point_id,
                    why=_why(ctx, u.zone, mode=label),
                )
        return
    kind = _server_zone(u.zone, ctx)
    if kind and not exempt and u.zone not in ctx.policy.hvac.server_room_limits:
        for p in u.setpoints:
            out.line(
                u.zone,
                "hvac",
                "hvac.server_room",
                "skip",
                f"{p.point_id}: {kind} zone, setpoint limits do not apply (list the zone under "
                "hvac.server_room_limits to apply them)",
                point=p.point_id,
                why=_why(ctx, u.zone, zone_kind=kind, value=p.value),
            )
        return
    for p in u.setpoints:
        if p.ok:
            _setpoint(p, u, label, bool(u.modes), ctx, out, exempt=exempt)


def _switch_off_rules(
    u: _Unit,
    contacts: list[PointState],
    ctx: Context,
    out: Out,
    label: str | None,
    mode_point: PointState | None,
    on_point: PointState | None,
    window_said: set[str | None],
) -> bool:
    """After-hours and window-open rules for a running unit. True when an off intent was produced."""
    hv = ctx.policy.hvac
    demand: list[tuple[str, str]] = []  # (rule, reason)
    ah = hv.after_hours
    if ah is not None and ah.enabled and (ah.zones is None or (u.zone is not None and u.zone in ah.zones)):
        st = ctx.memo.get("hvac.after_hours")
        if st is None:
            st = ctx.memo["hvac.after_hours"] = schedule_state(ctx.local, ah.working_hours, ctx.calendar)
        why = _why(ctx, u.zone, schedule=st.describe(), working_hours=[str(p) for p in ah.working_hours])
        if st.in_period is not None:
            out.line(
                u.zone,
                "hvac",
                "hvac.after_hours",
                "ok",
                f"{u.name} running {st.describe()}: allowed",
                why=why,
            )
        else:
            assert st.stretch_start is not None
            since = on_point.since if on_point is not None else None
            keep_until = None
            known = on_point is not None and on_point.since_known
            if since is not None and known and ah.override_min and since >= st.stretch_start:
                keep_until = since + timedelta(minutes=ah.override_min)
            if keep_until is not None and ctx.now < keep_until:
                local_until = keep_until.astimezone(ctx.tz)
                out.line(
                    u.zone,
                    "hvac",
                    "hvac.after_hours",
                    "skip",
                    f"{ctx.day.describe()}, {st.describe()}: {u.name} switched on by hand, "
                    f"override until {local_until:%H:%M}",
                    why=why,
                )
            else:
                demand.append(
                    (
                        "hvac.after_hours",
                        f"{ctx.day.describe()}, {st.describe()}: AC off outside working hours",
                    )
                )
    wo = hv.window_open
    if wo is not None and wo.enabled:
        delay = timedelta(minutes=wo.delay_min)
        open_now = [c for c in contacts if c.ok and decode_switch(c) is True]
        long_open = [c for c in open_now if ctx.now - c.since >= delay]
        if long_open:
            names = ", ".join(c.point_id for c in long_open)
            if u.zone not in window_said:
                window_said.add(u.zone)
                out.find(
                    "window_open",
                    u.zone or long_open[0].point_id,
                    "hvac.window_open",
                    f"window open ({names}) while AC runs in zone {u.zone}",
                    u.zone,
                )
            demand.append(("hvac.window_open", f"window open ({names}) for {wo.delay_min}+ min: AC off"))
        elif open_now:
            out.line(
                u.zone,
                "hvac",
                "hvac.window_open",
                "skip",
                f"window open for less than {wo.delay_min} min: waiting",
                why=_why(ctx, u.zone),
            )
    if not demand:
        return False
    rule, reason = demand[0]
    if len(demand) > 1:
        reason += "; also " + "; ".join(r for _, r in demand[1:])
    why = _why(ctx, u.zone, rules=[r for r, _ in demand])
    targets: list[tuple[PointState, float | int | bool]] = []
    for p in u.power:
        if p.ok and p.writable and decode_switch(p) is True:
            v_off = off_value(p)
            if v_off is None:
                out.find("info", p.point_id, rule, "ac_power states lack 'off': cannot switch off", u.zone)
            else:
                targets.append((p, v_off))
    if not targets and mode_point is not None and mode_point.writable and label != "off":
        raw = raw_for_label(mode_point, "off")
        if raw is not None:
            targets.append((mode_point, raw))
    wrote = False
    for p, v in targets:
        if not within_range(p, v):
            out.find(
                "violation",
                p.point_id,
                rule,
                f"{reason}; but the off value {v!r} is outside the point's range {p.min}..{p.max}",
                u.zone,
            )
            continue
        out.intents.append(WriteIntent(point_id=p.point_id, value=v, rule=rule, reason=reason, zone=u.zone))
        out.line(
            u.zone, "hvac", rule, "write", f"{reason} → write {p.point_id} = {v!r}", point=p.point_id, why=why
        )
        wrote = True
    if not targets:
        subject = on_point.point_id if on_point is not None else (u.device or u.zone or "-")
        out.find(
            "violation",
            subject,
            rule,
            f"{reason}; but {u.name} has no writable ac_power point (or ac_mode point with an 'off' state)",
            u.zone,
        )
        out.line(u.zone, "hvac", rule, "report", f"{reason}; {u.name} cannot be switched off", why=why)
    return wrote


def _limit_kind(
    p: PointState, label: str | None, has_mode: bool, ctx: Context, out: Out
) -> tuple[LimitKind | None, str]:
    """Which limit applies to setpoint `p` now, and how its meaning was decided.

    limits_by mode (default): what the unit does decides, in every season: a cooling setpoint or a unit
    in cool/dry gets the cooling floor, a heating setpoint or a unit in heat the heating cap. Only what
    the unit does not say (auto, or no ac_mode point) follows the season. limits_by season: the cooling
    floor only in summer, the heating cap only in winter."""
    season = ctx.season
    by_mode = ctx.policy.hvac.limits_by == "mode"
    if p.role == "cooling_setpoint":
        if by_mode:
            return "cool", "cooling setpoint (by mode)"
        return (
            ("cool", "cooling setpoint")
            if season == "summer"
            else (None, f"cooling setpoint, {season}: no limit")
        )
    if p.role == "heating_setpoint":
        if by_mode:
            return "heat", "heating setpoint (by mode)"
        return (
            ("heat", "heating setpoint")
            if season == "winter"
            else (None, f"heating setpoint, {season}: no limit")
        )
    # role "setpoint": its meaning follows the unit's mode
    if label in ("cool", "dry"):
        if by_mode:
            return "cool", f"in {label} (by mode)"
        return ("cool", f"in {label}") if season == "summer" else (None, f"in {label}, {season}: no limit")
    if label == "heat":
        if by_mode:
            return "heat", "in heat (by mode)"
        return ("heat", "in heat") if season == "winter" else (None, f"in heat, {season}: no limit")
    if season == "transition" and (label == "auto" or label is None):
        return None, "transition day: the unit's mode does not say cooling or heating, no setpoint limit"
    if label == "auto":
        return (
            ("cool", "in auto (summer: cooling)")
            if season == "summer"
            else ("heat", "in auto (winter: heating)")
        )
    if label is not None:
        return None, f"in {label}: no setpoint limit"
    if has_mode:
        return None, "ac_mode unreadable: setpoint meaning unknown"
    if ctx.policy.hvac.setpoint_without_mode == "skip":
        out.find(
            "info",
            p.point_id,
            "hvac.mode",
            "setpoint without an ac_mode point in its unit; not enforced (setpoint_without_mode: skip)",
            p.zone,
        )
        return None, "no ac_mode point: skipped"
    return (
        ("cool", "in cool (assumed in summer: no ac_mode point)")
        if season == "summer"
        else ("heat", "in heat (assumed in winter: no ac_mode point)")
    )


def _setpoint(
    p: PointState,
    u: _Unit,
    label: str | None,
    has_mode: bool,
    ctx: Context,
    out: Out,
    *,
    exempt: bool,
) -> None:
    hv = ctx.policy.hvac
    kind, meaning = _limit_kind(p, label, has_mode, ctx, out)
    head = f"{ctx.season_text()}, {ctx.day.describe()}"
    base_why = _why(ctx, u.zone, mode=label, meaning=meaning, limits_by=hv.limits_by)
    if kind is None:
        out.line(
            u.zone,
            "hvac",
            "hvac.setpoint",
            "skip",
            f"{head}, {p.point_id} {meaning}",
            point=p.point_id,
            why=base_why,
        )
        return
    v = number(p.value)
    rule = "hvac.summer_min_cooling" if kind == "cool" else "hvac.winter_max_heating"
    if v is None:
        out.find("info", p.point_id, rule, f"setpoint value {p.value!r} is not a number", u.zone)
        out.line(
            u.zone,
            "hvac",
            rule,
            "report",
            f"{head}, {p.point_id} unreadable value {p.value!r}",
            point=p.point_id,
            why=base_why,
        )
        return
    limit = hv.summer_min_cooling_c if kind == "cool" else hv.winter_max_heating_c
    db = hv.deadband_c
    violated = v < limit - db - _EPS if kind == "cool" else v > limit + db + _EPS
    op = "<" if kind == "cool" else ">"
    why = {**base_why, "value": v, "limit_c": limit}
    desc = f"{head}, {p.point_id} {fmt(v)} °C {meaning}"
    if not violated:
        ok_op = "≥" if kind == "cool" else "≤"
        bound = limit - db if kind == "cool" else limit + db
        dbtxt = f" (deadband {db:g})" if db else ""
        out.line(
            u.zone, "hvac", rule, "ok", f"{desc} {ok_op} {fmt(bound)}{dbtxt}: ok", point=p.point_id, why=why
        )
        return
    season_word = "cooling floor" if kind == "cool" else "heating cap"
    if exempt:
        ex, _ = ctx.exemption(u.zone)
        assert ex is not None
        until = f" until {ex.until.isoformat()}" if ex.until else ""
        out.find(
            "exempt",
            p.point_id,
            rule,
            f"setpoint {fmt(v)} °C breaks the {fmt(limit)} °C {season_word}, "
            f"but zone {u.zone} is exempt{until}: "
            f"{ex.reason}",
            u.zone,
        )
        out.line(
            u.zone,
            "hvac",
            rule,
            "exempt",
            f"{desc} {op} {fmt(limit)}, exempt{until} ({ex.reason}): left alone",
            point=p.point_id,
            why=why,
        )
        return
    reason = (
        f"{ctx.season_text()}, {meaning}: setpoint {fmt(v)} °C {op} {season_word} {fmt(limit)} °C; "
        f"set to {fmt(limit)}"
    )
    if not p.writable:
        out.find("violation", p.point_id, rule, f"{reason}, but the point is not writable", u.zone)
        out.line(
            u.zone,
            "hvac",
            rule,
            "report",
            f"{desc} {op} {fmt(limit)}: not writable, reported",
            point=p.point_id,
            why=why,
        )
        return
    if not within_range(p, limit):
        out.find(
            "violation",
            p.point_id,
            rule,
            f"{reason}, but {fmt(limit)} is outside the point's range {p.min}..{p.max}",
            u.zone,
        )
        out.line(
            u.zone,
            "hvac",
            rule,
            "report",
            f"{desc} {op} {fmt(limit)}: limit outside point range {p.min}..{p.max}, reported",
            point=p.point_id,
            why=why,
        )
        return
    out.intents.append(
        WriteIntent(point_id=p.point_id, value=float(limit), rule=rule, reason=reason, zone=u.zone)
    )
    out.line(
        u.zone,
        "hvac",
        rule,
        "write",
        f"{desc} {op} {fmt(limit)} → write {fmt(limit)}",
        point=p.point_id,
        why=why,
    )

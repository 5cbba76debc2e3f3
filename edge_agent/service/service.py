"""`edge-agent run`: the agent with its services wired together, as systemd runs it.

poll -> validate (+ clock flags) -> outbox (group commit) -> uplink
     -> snapshot -> enforcer -> actuator -> audit -> uplink events
Health feeds the systemd watchdog only while every loop makes progress; SIGHUP reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import hashlib
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from drivers.base import DriverError, FailureCode, Reading, WriteResult
from edge_agent import __version__
from edge_agent.config.load import ConfigError, LoadedConfig, load_config
from edge_agent.core.clock import Clock, SystemClock
from edge_agent.core.logs import get_logger
from edge_agent.core.report_filter import ReportFilter, ReportRule, rule_for
from edge_agent.core.timeintegrity import ClockMonitor, ClockStep, SyncState
from edge_agent.core.validate import ValidatedReading, Validator
from edge_agent.enforce.actuator import Actuator, supports_relinquish
from edge_agent.enforce.loop import Enforcer, build_calendar, build_params, exemption_check
from edge_agent.ops.health import Health
from edge_agent.ops.sdnotify import SdNotifier, watchdog_interval
from edge_agent.ops.status import PrometheusServer, StatusServer
from edge_agent.service.agent import Agent
from edge_agent.store.audit import AuditKind, AuditLog, AuditRecord, load_key
from edge_agent.store.db import open_state_db
from edge_agent.store.ledger import Ledger
from edge_agent.store.outbox import Outbox
from policies.hvac import HVAC_ROLES  # what a policy exemption covers: not lighting

__all__ = ["RELOAD_BUDGET_S", "Service", "run_service", "state_paths", "state_socket"]

RELOAD_BUDGET_S = 20.0  # longest a reload may spend reading and validating the files (in a thread)
MIGRATE_EXTEND_S = 60  # each report of a layout conversion buys start-up this much more time from systemd
# site.yaml sections that hold open resources (MQTT connection, the database, the status socket): a
# reload does not swap them under a running service; it says they need a restart.
_RESTART_SECTIONS = ("uplink", "storage", "status")


def state_socket(state_dir: str | Path) -> Path:
    """The status socket of an agent run with --state-dir: systemd's RUNTIME_DIRECTORY (its first
    entry) wins, else the state dir. site.yaml plays no part, so `status --state-dir` needs none."""
    runtime_dir = os.environ.get("RUNTIME_DIRECTORY")
    return Path(runtime_dir.split(":")[0] if runtime_dir else state_dir) / "status.sock"


def state_paths(cfg: LoadedConfig, state_dir: str | Path | None) -> tuple[Path, Path]:
    """(database, status socket). --state-dir and systemd's RUNTIME_DIRECTORY win over site.yaml,
    because /etc/edge-agent is read-only under the unit's ProtectSystem=strict."""
    if state_dir is not None:
        return Path(state_dir) / Path(cfg.site.storage.path).name, state_socket(state_dir)
    return cfg.resolve(cfg.site.storage.path), cfg.resolve(cfg.site.status.socket)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Service:
    """Everything `edge-agent run` runs, built from one LoadedConfig; tests drive it with a fake clock."""

    def __init__(
        self,
        cfg: LoadedConfig,
        *,
        state_dir: str | Path | None = None,
        clock: Clock | None = None,
        notifier: SdNotifier | None = None,
        enforce_tick_s: float = 10.0,
        sync_source: Callable[[], SyncState] | None = None,
    ) -> None:
        """``sync_source`` says whether ``clock`` is synchronised (default: the system's NTP state)."""
        self.cfg = cfg
        self.clock: Clock = clock or SystemClock()
        self.log = get_logger("edge_agent.service", gateway=cfg.site.gateway_id)
        self.db_path, self.socket_path = state_paths(cfg, state_dir)
        self.notifier = notifier or SdNotifier()
        self._migrate_told = -1e9
        self.health = Health(clock=self.clock)
        self.agent = Agent(config=cfg, clock=self.clock, health=self.health)
        self._audit_conn = open_state_db(self.db_path)
        self._outbox_conn = open_state_db(self.db_path)
        key_file = cfg.site.storage.audit_key_file
        self.audit = AuditLog(
            conn=self._audit_conn,
            clock=self.clock,
            hmac_key=load_key(cfg.resolve(key_file)) if key_file else None,
        )
        self.outbox = Outbox(
            conn=self._outbox_conn,
            options=cfg.site.storage,
            clock=self.clock,
            gateway_id=cfg.site.gateway_id,
            on_migrate=self._migrating,
        )
        self.audit.on_append = self._audit_to_events
        self._ledger_conn = open_state_db(self.db_path)
        self.ledger = Ledger.from_config(cfg, self._ledger_conn)
        self.validator = self._make_validator(cfg)
        self.monitor = (
            ClockMonitor(clock=self.clock)
            if sync_source is None
            else ClockMonitor(clock=self.clock, sync_source=sync_source)
        )
        self._pending: list[ValidatedReading] = []
        self._ledger_pending: list[ValidatedReading] = []
        self._ledger_failing = False
        self._flush_wake = asyncio.Event()
        self.readings_total = 0
        self.readings_unreported = 0  # held back by report by exception (the snapshot and ledger saw them)
        self.report_filter = ReportFilter()
        self._report_rules = _report_rules(cfg)
        self._points: dict[str, Any] = {}
        self._drivers: dict[str, Any] = {}
        self._refresh_maps()
        self.actuator = Actuator(
            drivers=self._drivers,
            points=self._points,
            audit=self.audit,
            clock=self.clock,
            max_writes_per_hour=cfg.policy.enforcement.max_writes_per_point_per_hour,
            is_exempt=exemption_check(cfg, self.clock),
            exempt_roles=HVAC_ROLES,
            logger=get_logger("edge_agent.actuator", gateway=cfg.site.gateway_id),
        )
        self.enforcer = Enforcer(
            snapshot=self.agent.snapshot,
            actuator=self.actuator,
            audit=self.audit,
            params=build_params(cfg),
            calendar=build_calendar(cfg, self.clock.now().year),
            clock=self.clock,
            tick_s=enforce_tick_s,
        )
        self.uplink: Any = None
        self._metered_cache: tuple[LoadedConfig, object, dict[str, bool]] | None = None
        self._uplink_points_cache: (
            tuple[LoadedConfig, tuple[tuple[str, str | None, str | None], ...]] | None
        ) = None
        if cfg.site.uplink is not None and cfg.site.uplink.host is not None:
            from edge_agent.uplink.mqtt import MqttUplinkService

            self.uplink = MqttUplinkService(
                options=cfg.site.uplink,
                outbox=self.outbox,
                gateway_id=cfg.site.gateway_id,
                building_id=cfg.site.building_id,
                audit_head=self.audit.head,
                clock=self.clock,
                logger=get_logger("edge_agent.uplink", gateway=cfg.site.gateway_id),
                on_finding=self._uplink_finding,
                points=self._uplink_points,
            )
        self.platform: Any = None
        self._platform_conn: sqlite3.Connection | None = None
        if cfg.site.uplink is not None and cfg.site.uplink.platform is not None:
            from edge_agent.store.platform import PeriodBuffer
            from edge_agent.uplink.platform.client import PlatformUplinkService
            from edge_agent.uplink.platform.periods import ledger_source

            self._platform_conn = open_state_db(self.db_path)
            self.platform = PlatformUplinkService(
                options=cfg.site.uplink.platform,
                building_id=cfg.site.building_id,
                gateway_id=cfg.site.gateway_id,
                tz=ZoneInfo(cfg.site.timezone),
                buffer=PeriodBuffer(self._platform_conn),
                energy=ledger_source(self.ledger),
                codes={m.point_id: m.code for m in self.ledger.meters.values()},
                clock=self.clock,
                audit=self._platform_audit,
                on_clock=lambda offset_s, off: self.monitor.set_reference(offset_s, off=off),
                logger=get_logger("edge_agent.uplink.platform", gateway=cfg.site.gateway_id),
            )
        self.agent.listeners.append(self._on_readings)
        self.agent.listeners.append(self.enforcer.notify)
        self.agent.before_close.append(self._relinquish_on_exit)  # while the BACnet port is still open
        self.ready = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self.started = self.clock.now()

    def _migrating(self, moved: int, total: int) -> None:
        """A state database of an older layout being converted before READY: tell systemd start-up goes on
        (its TimeoutStartSec would otherwise end it, and the rolled-back retry would start over)."""
        now = time.monotonic()
        if moved < total and now - self._migrate_told < 5:
            return
        self._migrate_told = now
        self.notifier.extend_timeout(
            MIGRATE_EXTEND_S, f"converting the outbox to the new layout: {moved:,} of {total:,} readings"
        )

    # -- wiring ----------------------------------------------------------------------------------

    def _make_validator(self, cfg: LoadedConfig) -> Validator:
        """Counters resume from the ledger's persisted baselines, so a meter that went backwards while
        the agent was stopped (or across a reload) is flagged on its first reading."""
        validator = Validator(points=[p for _, p in cfg.points()])
        for pid, (value, ts) in self.ledger.baselines().items():
            validator.seed(pid, value, ts)
        return validator

    def _refresh_maps(self) -> None:
        """Actuator maps are live dicts, updated in place on reload."""
        self._points.clear()
        self._points.update({p.id: (dev.id, p) for dev, p in self.cfg.points()})
        self._drivers.clear()
        self._drivers.update({dev_id: rt.driver for dev_id, rt in self.agent.devices.items()})

    def _on_readings(self, device_id: str, readings: Sequence[Reading], changed: Sequence[Reading]) -> None:
        self.readings_total += len(readings)
        # Clock flags come from the monitor only while one can apply (unsynchronised, a step remembered)
        validated = self.validator.validate_many(
            readings, self.monitor.flags if self.monitor.may_flag() else None
        )
        self._pending.extend(self._to_report(validated) if self._report_rules else validated)
        if self._has_meters(device_id):  # the ledger skips every other point, one by one
            self._ledger_pending.extend(validated)
        self._flush_wake.set()

    def _has_meters(self, device_id: str) -> bool:
        """Whether a device has a point the ledger books (a device not configured: let the ledger say)."""
        # The agent's configuration, not self.cfg: during a reload the agent polls the new devices
        # (reconfigure) before apply_config swaps self.cfg, and a meter may have moved between them.
        cfg, cached, meters = self.agent.config, self._metered_cache, self.ledger.meters
        if cached is None or cached[0] is not cfg or cached[1] is not meters:
            cached = self._metered_cache = (
                cfg,
                meters,
                {d.id: any(p.id in meters for p in d.points) for d in cfg.site.devices},
            )
        return cached[2].get(device_id, True)

    def _to_report(self, validated: list[ValidatedReading]) -> list[ValidatedReading]:
        """Report by exception: the readings of this poll the outbox keeps."""
        rules, keep = self._report_rules, self.report_filter.keep
        out = []
        for vr in validated:
            r = vr.reading
            rule = rules.get(r.point_id)
            if rule is None or keep(
                r.point_id, rule, value=r.value, ts=r.ts, quality=r.quality, code=r.code, flags=vr.flags
            ):
                out.append(vr)
        self.readings_unreported += len(validated) - len(out)
        return out

    def _platform_audit(self, kind: str, *, subject: str, reason: str, after: Any) -> None:
        # The platform uplink's drops (backlog above its limit) and findings (clock offset).
        if kind == "finding":
            self.audit.append_finding(
                str(after.get("finding", kind)), subject=subject, rule="platform", reason=reason, after=after
            )
        else:
            self.audit.append(AuditKind.DROP, subject=subject, after=after, reason=reason)

    def _audit_to_events(self, record: AuditRecord) -> None:
        # Every audit record also travels upstream on .../events (durably: the outbox's event table).
        if self.uplink is not None:
            from edge_agent.uplink.mqtt import audit_event

            self.outbox.append_event(audit_event(record))

    def _uplink_points(self) -> tuple[tuple[str, str | None, str | None], ...]:
        """The v2 payload's schema: the running configuration's points (a reload's new ones included).
        Built once per configuration: the uplink asks at every batch."""
        cached = self._uplink_points_cache
        if cached is None or cached[0] is not self.cfg:
            cached = self._uplink_points_cache = (
                self.cfg,
                tuple((p.id, p.unit, d.id) for d, p in self.cfg.points()),
            )
        return cached[1]

    def _uplink_finding(self, kind: str, detail: dict[str, Any]) -> None:
        """The broker refused a publish (MQTT v5 PUBACK): the readings stay in the outbox; say so."""
        self.audit.append_finding(
            kind, subject=str(detail.get("topic", "uplink")), rule="uplink", after=detail,
            reason=f"broker refused the publish: {detail.get('reason')}; kept in the outbox, retrying",
        )  # fmt: skip

    async def _flush_loop(self) -> None:
        """Group commit: one durable transaction per poll burst, at most every commit_interval_s."""
        interval = self.cfg.site.storage.commit_interval_s
        self.health.register("outbox", deadline_s=max(30.0, 5 * interval))
        last_limits = 0.0
        while True:
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: see Enforcer.run
                async with asyncio.timeout(interval):
                    await self._flush_wake.wait()
            self._flush_wake.clear()
            await self.flush()
            if time.monotonic() - last_limits > 30 or self.outbox.drops_waiting:
                last_limits = time.monotonic()
                await self._enforce_limits()
            self.health.beat("outbox")
            await asyncio.sleep(min(interval, 0.2))  # let a burst of device polls land in one commit

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            await self.outbox.aappend(batch)
        metered, self._ledger_pending = self._ledger_pending, []
        if metered:
            try:
                stats = await asyncio.to_thread(self.ledger.ingest, metered)
                if stats.steps or self._ledger_failing:
                    # A counter step the ledger excluded by itself is a finding in the audit chain (also
                    # one left unaudited by a failure or a crash: audit_steps takes every one not yet in).
                    self.ledger.audit_steps(self.audit)
            except sqlite3.Error as exc:  # the outbox still holds the readings; the ledger can be rebuilt
                if not self._ledger_failing:  # logged when the failure starts and when it ends
                    self.log.error("ledger_ingest_failed", error=str(exc), readings=len(metered))
                self._ledger_failing = True
            else:
                if self._ledger_failing:
                    self.log.info("ledger_ingest_recovered", readings=len(metered))
                self._ledger_failing = False

    async def _enforce_limits(self) -> None:
        while (drop := await self.outbox.aenforce_limits()) is not None:
            ev = drop.as_event()
            self.audit.append(AuditKind.DROP, subject="outbox", after=ev, reason=str(ev.get("reason", "")))

    async def _on_clock_step(self, step: ClockStep) -> None:
        ev = step.event()
        self.audit.append(AuditKind.CLOCK_STEP, subject="clock", after=ev, reason="wall clock step detected")

    def status_doc(self) -> dict[str, Any]:
        stats = self.outbox.stats()
        oldest = stats.oldest_ts
        backlog = {
            "readings": stats.backlog,
            "oldest": oldest.isoformat() if oldest else None,
            "age_s": round((self.clock.now() - oldest).total_seconds(), 1) if oldest else None,
            "bytes": stats.bytes_on_disk,
            **stats.as_dict(),
        }
        uplink: dict[str, Any] = {"configured": False}
        if self.uplink is not None:
            uplink = self.uplink.status()
            uplink["published_total"] = uplink.get("published_readings")
        return {
            "agent": {
                "gateway_id": self.cfg.site.gateway_id,
                "building_id": self.cfg.site.building_id,
                "version": __version__,
                "pid": os.getpid(),
                "started": self.started.isoformat(),
                "uptime_s": round((self.clock.now() - self.started).total_seconds(), 1),
                "config": str(self.cfg.site_path),
                "db": str(self.db_path),
            },
            "devices": [rt.status.as_dict() for rt in self.agent.devices.values()],
            "backlog": backlog,
            "uplink": uplink,
            "platform": self.platform.status() if self.platform is not None else {"configured": False},
            "enforcement": self.enforcer.as_dict(),
            "clock": self.monitor.as_dict(),
            "health": self.health.as_dict(),
            "readings_total": self.readings_total,
            "readings_unreported": self.readings_unreported,
        }

    def status_line(self) -> str:
        devs = list(self.agent.devices.values())
        up = sum(1 for rt in devs if rt.status.up)
        backlog = self.outbox.stats().backlog
        last = self.enforcer.last_enforcement
        tail = f", last enforcement {last['point']} -> {last['after']}" if last else ""
        return f"{up}/{len(devs)} devices up, backlog {backlog}{tail}"

    # -- reload ----------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """SIGHUP: validate the files again; swap on success, keep running on the old config on error.

        The files are parsed in a worker thread within RELOAD_BUDGET_S, so a hostile file never stalls
        polling or the watchdog. Every outcome ends with a log line, a ``reload`` audit record and
        READY=1. Changes to ``uplink``, ``storage`` and ``status`` are not applied while running (they
        hold open connections, the database and the socket): the rest is applied and the record says
        which sections need a restart (result ``needs_restart``), never a plain ``ok``."""
        self.notifier.reloading()
        path = self.cfg.site_path
        try:
            async with asyncio.timeout(RELOAD_BUDGET_S):  # not wait_for: on 3.11 it can swallow a cancel
                new = await asyncio.to_thread(load_config, path)
        except Exception as exc:  # ConfigError, OSError, the time budget, or a bug in the loader
            if isinstance(exc, TimeoutError):
                text = f"reading the configuration took longer than {RELOAD_BUDGET_S:g} s"
            elif isinstance(exc, ConfigError | OSError):
                text = str(exc) or type(exc).__name__
            else:  # a bug in the loader: still refused, still said
                text = f"internal error while loading ({type(exc).__name__}: {exc})"
            for line in text.splitlines():
                self.log.error("reload_refused", issue=line)
            self.audit.append(
                AuditKind.RELOAD, subject=str(path), result="refused",
                reason=f"invalid configuration, kept the running one: {text.splitlines()[0]}",
            )  # fmt: skip
            self.notifier.ready(self.status_line())
            return False
        held = [k for k in _RESTART_SECTIONS if getattr(new.site, k) != getattr(self.cfg.site, k)]
        if held:  # run on with the sections as they are; apply everything else
            keep = {k: getattr(self.cfg.site, k) for k in held}
            new = dataclasses.replace(new, site=new.site.model_copy(update=keep))
        summary = await self.apply_config(new)
        summary["needs_restart"] = held
        reason = "configuration reloaded on SIGHUP"
        if held:
            reason += (
                f"; NOT applied: {', '.join(held)} changed and need a restart "
                "(systemctl restart edge-agent); the running values stay"
            )
            self.log.warning("reload_needs_restart", sections=held)
        self.audit.append(
            AuditKind.RELOAD, subject=str(path), after=summary,
            result="needs_restart" if held else "ok", reason=reason,
        )  # fmt: skip
        if summary["policy_changed"]:
            self.audit.append(
                AuditKind.POLICY_CHANGED, subject=str(new.policy_path),
                after={"sha256": _digest(new.policy_path)}, reason="policy.yaml changed on reload",
            )  # fmt: skip
        self.log.info("config_reloaded", **summary)
        _settle_heap()
        self.notifier.ready(self.status_line())
        return True

    async def _reload_loop(self) -> None:
        """Reloads run here, one at a time, inside the service's TaskGroup: SIGHUP only asks for one."""
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            try:
                await self.reload()
            except Exception as exc:  # the audit write of the reload itself failed, or a bug: say so
                self.log.error("reload_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
                with contextlib.suppress(sqlite3.Error, OSError):  # the trail itself may be what failed
                    self.audit.append(
                        AuditKind.RELOAD, subject=str(self.cfg.site_path), result="failed",
                        reason=f"reload failed, kept the running configuration: {type(exc).__name__}: {exc}",
                    )  # fmt: skip
                self.notifier.ready(self.status_line())

    def request_reload(self) -> None:
        """What SIGHUP does: ask the reload loop for a reload (several signals in a row make one)."""
        self._reload_requested.set()

    async def apply_config(self, new: LoadedConfig) -> dict[str, Any]:
        """Swap to a validated configuration; only changed devices reconnect. Returns what changed."""
        summary = await self.agent.reconfigure(new)
        old_policy = self.cfg.policy
        self.cfg = new
        self._refresh_maps()
        self.validator = self._make_validator(new)
        rules = _report_rules(new)
        # A point whose rule is the same keeps its last report (no burst of reports after a reload).
        self.report_filter.forget(
            p for p in self._report_rules.keys() | rules.keys() if self._report_rules.get(p) != rules.get(p)
        )
        self._report_rules = rules
        self.actuator.reconfigure(
            max_writes_per_hour=new.policy.enforcement.max_writes_per_point_per_hour,
            is_exempt=exemption_check(new, self.clock),
        )
        self.enforcer.reconfigure(
            params=build_params(new), calendar=build_calendar(new, self.clock.now().year)
        )
        summary["policy_changed"] = new.policy != old_policy
        return summary

    # -- run -------------------------------------------------------------------------------------

    async def run(self, *, extra_tasks: Sequence[tuple[str, Any]] = ()) -> int:
        cfg = self.cfg
        self.audit.append(
            AuditKind.STARTUP, subject=cfg.site.gateway_id, reason=f"edge-agent {__version__} starting",
            after={"devices": len(self.agent.devices), "points": len(self.agent.snapshot),
                   "pid": os.getpid()},
        )  # fmt: skip
        self.audit.append(
            AuditKind.CONFIG_LOADED, subject=str(cfg.site_path),
            after={"site_sha256": _digest(cfg.site_path), "policy_sha256": _digest(cfg.policy_path)},
            reason="configuration validated and loaded",
        )  # fmt: skip
        self.actuator.restore_from_audit()  # logs rate_window_restored
        self._restore_held()
        self.ledger.audit_steps(self.audit)  # steps found before a crash that did not reach the chain
        status = StatusServer(path=self.socket_path, provider=self.status_doc)
        await status.start()
        prom = None
        if cfg.site.status.prometheus_port is not None:
            prom = PrometheusServer(port=cfg.site.status.prometheus_port, provider=self.status_doc)
            await prom.start()
        self.health.register("enforce", deadline_s=max(60.0, 3 * self.enforcer.tick_s))
        self.health.register("clock", deadline_s=30.0)
        tasks: list[tuple[str, Any]] = [
            ("outbox:flush", self._flush_loop),
            ("enforce", lambda: self.enforcer.run(beat=lambda: self.health.beat("enforce"))),
            ("clock", lambda: self.monitor.run(self._on_clock_step, beat=lambda: self.health.beat("clock"))),
            ("ready", self._announce_ready),
            ("reload", self._reload_loop),
        ]
        if self.uplink is not None:
            tasks.append(("uplink", self.uplink.run))
        if self.platform is not None:
            tasks.append(("platform", self.platform.run))
        wd = watchdog_interval()
        if wd is not None:
            tasks.append(
                ("watchdog", lambda: self.health.watchdog_loop(self.notifier, wd, status=self.status_line))
            )
        try:
            await self.agent.run(extra_tasks=[*tasks, *extra_tasks])
        finally:
            self.notifier.stopping("flushing the outbox")
            await self.flush()
            self.audit.append(
                AuditKind.SHUTDOWN, subject=cfg.site.gateway_id, reason="edge-agent stopped",
                after={"readings_total": self.readings_total, "backlog": self.outbox.stats().backlog},
            )  # fmt: skip
            if self.uplink is not None:  # what the final flush committed: a short, bounded chance to leave
                await self.uplink.final_drain(budget_s=2.0)
            await status.close()
            if prom is not None:
                await prom.close()
        return 0

    def close(self) -> None:
        for conn in (self._audit_conn, self._outbox_conn, self._ledger_conn):
            conn.close()
        if self._platform_conn is not None:
            self._platform_conn.close()

    async def _announce_ready(self) -> None:
        await self.agent.first_cycle.wait()
        _settle_heap()
        self.ready.set()
        self.notifier.ready(self.status_line())
        self.log.info("ready", status=self.status_line())
        while True:  # a fresh STATUS line for `systemctl status`
            await asyncio.sleep(10)
            self.notifier.status(self.status_line())

    def _restore_held(self) -> int:
        """BACnet: the commands earlier runs wrote and did not release (the last audited write of each
        point was ``ok``), handed to the drivers so that relinquish at exit can release them too; the
        driver still releases a slot only while it holds that value. Returns the points restored."""
        last: dict[str, Any] = {}
        for rec in self.audit.records(kinds=[AuditKind.WRITE]):
            if rec.result == "ok" and rec.after is not None:
                last[rec.subject] = rec.after
            elif rec.result in ("relinquished", FailureCode.SLOT_NOT_OURS):
                last.pop(rec.subject, None)
        restored = 0
        for rt in self.agent.devices.values():
            remember = getattr(rt.driver, "remember", None)
            if remember is None:
                continue
            for p in rt.config.points:
                if p.writable and p.id in last:
                    remember(p, last[p.id])
                    restored += 1
        if restored:
            self.log.info("held_priorities_restored", points=restored)
        return restored

    async def _relinquish_on_exit(self, *, timeout_s: float = 10.0) -> None:
        """BACnet: release the priority slots this agent wrote, where policy.yaml
        (``enforcement.relinquish_on_exit``) or the device (``relinquish_on_shutdown``) asks for it.

        Runs after the loops stop and before the drivers and the BACnet port close (an Agent
        ``before_close`` hook). The driver reads each priority-array first and releases only slots still
        holding the value we wrote; every slot released, failed or left alone (``slot_not_ours``) is an
        audit ``write`` record with the present value before and after. Devices run at once, bounded
        by ``timeout_s`` in all: a device that stopped answering cannot hold up the stop."""
        policy_wide = self.cfg.policy.enforcement.relinquish_on_exit

        async def device(dev_id: str, rt: Any) -> None:
            relinquish = getattr(rt.driver, "relinquish", None)
            for p in rt.config.points:
                if not p.writable or relinquish is None:
                    continue
                reading = self.agent.snapshot.reading(p.id)
                before = reading.value if reading is not None else None
                try:
                    results: list[WriteResult] = await relinquish(p)
                except DriverError as exc:
                    self.log.warning("relinquish_failed", device=dev_id, point=p.id, code=exc.code)
                    continue
                for r in results:
                    result = "relinquished" if r.ok else (r.code or FailureCode.WRITE_FAILED)
                    self.audit.append(
                        AuditKind.WRITE,
                        subject=p.id,
                        before=before,
                        after=r.readback,
                        rule="shutdown.relinquish",
                        reason=f"release our priority at shutdown (we had written {r.requested!r}): "
                        f"{r.detail or result}",
                        result=result,
                    )
                    if r.ok:
                        self.log.info(
                            "relinquished", device=dev_id, point=p.id, before=before, after=r.readback
                        )
                    else:
                        self.log.warning(
                            "relinquish_failed"
                            if r.code != FailureCode.SLOT_NOT_OURS
                            else "relinquish_skipped",
                            device=dev_id,
                            point=p.id,
                            code=result,
                            detail=r.detail,
                        )

        wanted = {
            dev_id: rt
            for dev_id, rt in self.agent.devices.items()
            if (policy_wide or getattr(rt.config, "relinquish_on_shutdown", False))
            and supports_relinquish(rt.driver)
        }
        if not wanted:
            return
        try:
            async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as tg:
                for dev_id, rt in wanted.items():
                    tg.create_task(device(dev_id, rt), name=f"relinquish:{dev_id}")
        except TimeoutError:
            self.log.warning("relinquish_timeout", devices=sorted(wanted), timeout_s=timeout_s)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        self.agent.install_signal_handlers()
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)


def _report_rules(cfg: LoadedConfig) -> dict[str, ReportRule]:
    """Point id -> report-by-exception rule, for the points site.yaml gives one (directly or by device)."""
    rules = {}
    for dev, p in cfg.points():
        rule = rule_for(getattr(p, "report", None), getattr(dev, "report", None), cumulative=p.cumulative)
        if rule is not None:
            rules[p.id] = rule
    return rules


def _settle_heap() -> None:
    """What start-up (or a reload) built lives as long as the configuration: move it out of the cyclic
    collector's way. Without this every full collection walked the whole heap (the 10,000 points' models
    and snapshot: about 70 ms each, about a quarter of the agent's CPU at 10,000 points; issue 18). A
    reload unfreezes first, so the configuration it replaced can be collected. A young generation of
    10,000 objects instead of 700: a poll's readings mostly die before a collection, so fewer survive
    into the older generations (gen1 collections 80 -> 14 in a one-minute run at 10,000 points)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


async def run_service(
    cfg: LoadedConfig, *, state_dir: str | Path | None = None, clock: Clock | None = None
) -> int:
    try:
        svc = Service(cfg, state_dir=state_dir, clock=clock)
    except (ValueError, OSError, sqlite3.Error) as exc:  # unreadable key file, no state dir, disk full
        get_logger("edge_agent.service").error("start_failed", error=f"{type(exc).__name__}: {exc}")
        return 2
    svc.install_signal_handlers()
    try:
        return await svc.run()
    finally:
        svc.close()

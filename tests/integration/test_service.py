"""`edge-agent run` as systemd runs it: sd_notify (READY, STATUS, WATCHDOG, RELOADING, STOPPING), SIGHUP
reloads (good and bad), the status socket, SIGTERM; and the watchdog withheld while a poll loop hangs.

The agent is a real child process (`.venv/bin/edge-agent run`) against the bundled simulator, started
in the test's own event loop on a free port; NOTIFY_SOCKET is a UNIX datagram socket in tmp_path.
The site is tests/fixtures/service/site.yaml (our own small site, not config/site.yaml).
The helpers here are shared by test_service_durability.py and test_cli.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from drivers.base import PointBase, Quality, Reading, Value, WriteResult
from edge_agent.config.load import load_config
from edge_agent.ops.status import query_status
from edge_agent.service.service import Service
from sim.runner import Simulator

__all__ = [
    "FIXTURES",
    "AgentProcess",
    "NotifyListener",
    "audit_rows",
    "edge_agent_cmd",
    "run_cli",
    "running_sim",
    "wait_until",
    "write_site",
]

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "service"
FIXTURE_PORT = "15020"  # the placeholder port in the fixture site.yaml files
SIM_START = datetime(2026, 7, 15, 13, 55, tzinfo=ZoneInfo("Asia/Shanghai"))


# -- helpers -------------------------------------------------------------------------------------


def edge_agent_cmd() -> list[str]:
    """The installed console script beside this interpreter (.venv/bin/edge-agent), else `-m`."""
    script = Path(sys.executable).parent / "edge-agent"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "edge_agent.cli"]


def write_site(
    dst: Path,
    *,
    sim_port: int,
    name: str = "site.yaml",
    edit: Callable[[str], str] | None = None,
    extra: str = "",
) -> Path:
    """Copy the fixture site (and its policy) into `dst`, pointed at the simulator's port."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "policy.yaml", dst / "policy.yaml")
    text = (FIXTURES / name).read_text(encoding="utf-8").replace(f"port: {FIXTURE_PORT}", f"port: {sim_port}")
    if edit is not None:
        text = edit(text)
    path = dst / "site.yaml"
    path.write_text(text + extra, encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def running_sim(start: datetime = SIM_START, speed: float = 1.0) -> AsyncIterator[Simulator]:
    """The bundled simulator in this event loop on a free 127.0.0.1 port (no thread, no process)."""
    sim = Simulator(seed=1, start=start, speed=speed)
    await sim.start(modbus_host="127.0.0.1", modbus_port=0)
    try:
        yield sim
    finally:
        await sim.stop()


async def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


async def run_cli(*args: str, cwd: Path, timeout: float = 60) -> tuple[int, str, str]:
    """`edge-agent ARGS...` as a child process; (exit code, stdout, stderr). Killed by PID on timeout."""
    proc = await asyncio.create_subprocess_exec(
        *edge_agent_cmd(), *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def audit_rows(db: Path) -> list[dict[str, Any]]:
    """The audit table, read-only (WAL: safe beside the running agent)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT seq, kind, subject, after, result, reason FROM audit ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    return [
        {"seq": s, "kind": k, "subject": sub, "after": json.loads(a), "result": r, "reason": why}
        for s, k, sub, a, r, why in rows
    ]


@dataclass
class NotifyListener:
    """systemd's side of sd_notify: a datagram socket that records every notification with its time."""

    path: Path
    messages: list[tuple[float, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 65536)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((loop.time(), fields))

    def close(self) -> None:
        self.sock.close()

    def find(self, key: str, value: str | None = None, *, after: int = 0) -> int | None:
        """Index of the first message at or after `after` carrying key (with that value)."""
        for i in range(after, len(self.messages)):
            fields = self.messages[i][1]
            if key in fields and (value is None or fields[key] == value):
                return i
        return None

    async def expect(self, key: str, value: str | None = None, *, after: int = 0, timeout: float = 10) -> int:
        await wait_until(lambda: self.find(key, value, after=after) is not None, timeout, f"{key}={value}")
        found = self.find(key, value, after=after)
        assert found is not None
        return found

    def statuses(self, after: int = 0) -> list[str]:
        return [f["STATUS"] for _, f in self.messages[after:] if "STATUS" in f]


class AgentProcess:
    """`edge-agent run` as a child process; stderr (JSON logs) goes to a file. Ends only its own PID."""

    def __init__(self, *, site: Path, state_dir: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.site, self.state_dir, self.log = site, state_dir, log
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        assert self.proc is None
        with self.log.open("ab") as log:  # the child keeps its own descriptor
            self.proc = await asyncio.create_subprocess_exec(
                *edge_agent_cmd(), "run", "-c", str(self.site), "--state-dir", str(self.state_dir),
                "--json-logs", cwd=self.state_dir.parent, env=self.env,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 15) -> int:
        assert self.proc is not None
        rc = await asyncio.wait_for(self.proc.wait(), timeout)
        self.proc = None
        return rc

    async def kill(self) -> None:
        """SIGKILL our child (if still running) and reap it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out


@contextlib.asynccontextmanager
async def background(coro_fn: Callable[[], Any], name: str) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.create_task(coro_fn(), name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- 1. the whole life of a service under a (fake) systemd --------------------------------------


def _change_interval(device_id: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        head, sep, tail = text.partition(f"id: {device_id}\n")
        assert sep, f"{device_id} not in the fixture"
        assert "interval_s: 0.5" in tail
        return head + sep + tail.replace("interval_s: 0.5", f"interval_s: {new}", 1)

    return edit


@pytest.mark.slow
async def test_notify_watchdog_status_reload_and_stop(tmp_path: Path) -> None:
    state = tmp_path / "state"
    listener = NotifyListener(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    env.pop("RUNTIME_DIRECTORY", None)
    async with running_sim() as sim, background(listener.run, "notify-listener"):
        assert sim.modbus_port is not None
        site = write_site(tmp_path / "etc", sim_port=sim.modbus_port)
        agent = AgentProcess(site=site, state_dir=state, log=tmp_path / "agent.log", env=env)
        try:
            await agent.start()

            # READY=1 once every device has been polled once; the STATUS line says so.
            ready = await listener.expect("READY", "1", timeout=20)
            t_ready, fields = listener.messages[ready]
            assert re.fullmatch(r"4/4 devices up, backlog \d+.*", fields.get("STATUS", "")), fields
            assert listener.find("STOPPING") is None and agent.proc is not None

            # WATCHDOG_USEC=1 s: pinged every 0.5 s while the loops progress.
            await wait_until(
                lambda: (
                    sum(1 for t, f in listener.messages[ready:] if "WATCHDOG" in f and t - t_ready <= 3) >= 2
                ),
                3.5,
                "two WATCHDOG=1 within 3 s of READY",
            )
            assert all(f["WATCHDOG"] == "1" for _, f in listener.messages if "WATCHDOG" in f)
            assert any("devices up" in s for s in listener.statuses(ready))

            # `edge-agent status --state-dir` from a directory without any config/site.yaml.
            rc, out, err = await run_cli("status", "--json", "--state-dir", str(state), cwd=tmp_path)
            assert rc == 0, err
            doc = json.loads(out)
            assert doc["agent"]["pid"] == agent.pid
            assert {d["id"]: d["up"] for d in doc["devices"]} == {
                "main-meter": True, "f2-ls-meter": True, "f2-ac-meter": True, "f2-ac1": True,
            }  # fmt: skip
            assert doc["health"]["stalled"] == [] and doc["health"]["watchdog_pings"] >= 1
            # the backlog under the keys the human view and the Prometheus page read (no broker configured)
            assert doc["backlog"]["readings"] > 0 and doc["backlog"]["age_s"] >= 0
            assert doc["uplink"] == {"configured": False}

            # SIGHUP with a good change (one device's interval): RELOADING=1, then READY=1, audited.
            db = state / "edge-agent.db"
            write_site(site.parent, sim_port=sim.modbus_port, edit=_change_interval("f2-ls-meter", "1.0"))
            mark = len(listener.messages)
            agent.send(signal.SIGHUP)
            reloading = await listener.expect("RELOADING", "1", after=mark)
            assert "MONOTONIC_USEC" in listener.messages[reloading][1]
            await listener.expect("READY", "1", after=reloading + 1)
            await wait_until(lambda: any(r["kind"] == "reload" for r in audit_rows(db)), 5, "reload record")
            (good,) = [r for r in audit_rows(db) if r["kind"] == "reload"]
            assert good["result"] == "ok"
            assert good["after"]["changed"] == ["f2-ls-meter"]
            assert good["after"]["added"] == [] and good["after"]["removed"] == []
            assert good["after"]["policy_changed"] is False

            # SIGHUP with a bad file (unknown key): refused, the old config keeps running.
            bad_key = "    intervall_s: 3\n"
            write_site(
                site.parent, sim_port=sim.modbus_port,
                edit=lambda t: _change_interval("f2-ls-meter", "1.0")(t).replace(
                    "    id: f2-ac1\n", "    id: f2-ac1\n" + bad_key),
            )  # fmt: skip
            bad_line = site.read_text().splitlines().index(bad_key.rstrip("\n")) + 1
            mark = len(listener.messages)
            agent.send(signal.SIGHUP)
            reloading = await listener.expect("RELOADING", "1", after=mark)
            await listener.expect("READY", "1", after=reloading + 1)
            await wait_until(
                lambda: sum(r["kind"] == "reload" for r in audit_rows(db)) == 2, 5, "refused reload record"
            )
            refused = [r for r in audit_rows(db) if r["kind"] == "reload"][-1]
            assert refused["result"] == "refused"
            assert f"{site}:{bad_line}:5" in refused["reason"] and "intervall_s" in refused["reason"]
            issues = [e.get("issue", "") for e in agent.log_lines() if e.get("event") == "reload_refused"]
            assert any(f"{site}:{bad_line}:5" in i and "intervall_s" in i for i in issues), issues
            # Still alive, still polling every device and still feeding the watchdog.
            after_bad = len(listener.messages)
            await listener.expect("WATCHDOG", "1", after=after_bad, timeout=3)
            assert agent.proc is not None and agent.proc.returncode is None
            doc = await query_status(state / "status.sock")
            polls = {d["id"]: (d["up"], d["polls"]) for d in doc["devices"]}
            assert len(polls) == 4 and all(up and n > 0 for up, n in polls.values()), polls

            # SIGTERM: STOPPING=1, exit 0, the socket is gone and `status` says nobody runs.
            mark = len(listener.messages)
            agent.send(signal.SIGTERM)
            assert await agent.wait() == 0
            assert listener.find("STOPPING", "1", after=mark) is not None
        finally:
            await agent.kill()
    assert not (state / "status.sock").exists()
    (rc_status, _, err_status), (rc_verify, out_verify, err_verify) = await asyncio.gather(
        run_cli("status", "--state-dir", str(state), cwd=tmp_path),
        run_cli("audit", "verify", "--db", str(state / "edge-agent.db"), cwd=tmp_path),
    )
    assert rc_status == 1 and "no edge-agent is running" in err_status
    assert rc_verify == 0, out_verify + err_verify
    kinds = [r["kind"] for r in audit_rows(state / "edge-agent.db")]
    assert kinds[:2] == ["startup", "config_loaded"] and kinds[-1] == "shutdown"
    listener.close()


# -- 2. the watchdog is withheld while a poll loop hangs -----------------------------------------


@dataclass
class FakeNotifier:
    """Records what the service tells systemd (the project's Notifier interface, plus the extras)."""

    calls: list[tuple[str, str | None]] = field(default_factory=list)

    def _note(self, kind: str, text: str | None = None) -> bool:
        self.calls.append((kind, text))
        return True

    def ready(self, status: str | None = None) -> bool:
        return self._note("ready", status)

    def status(self, text: str) -> bool:
        return self._note("status", text)

    def watchdog(self) -> bool:
        return self._note("watchdog")

    def extend_timeout(self, seconds: float, status: str) -> bool:
        return self._note("extend", f"{seconds:g} s: {status}")

    def reloading(self, status: str | None = None) -> bool:
        return self._note("reloading", status)

    def stopping(self, status: str | None = None) -> bool:
        return self._note("stopping", status)

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.calls if k == kind)


class FakeMeter:
    """A drivers.base.Driver whose every point reads a growing counter."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.reads = 0

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def read(self, points: Sequence[PointBase]) -> list[Reading]:
        self.reads += 1
        now = datetime.now(UTC)
        return [Reading(point_id=p.id, value=float(self.reads), ts=now, quality=Quality.GOOD) for p in points]

    async def write(self, point: PointBase, value: Value, *, priority: int | None = None) -> WriteResult:
        raise AssertionError(f"nothing is writable in this site, yet {point.id} was written")


class HangingMeter(FakeMeter):
    """Answers `good_reads` polls, then hangs inside read() until released (a wedged driver)."""

    def __init__(self, device_id: str, good_reads: int) -> None:
        super().__init__(device_id)
        self.good_reads = good_reads
        self.hanging = asyncio.Event()
        self.release = asyncio.Event()

    async def read(self, points: Sequence[PointBase]) -> list[Reading]:
        if self.reads >= self.good_reads and not self.release.is_set():
            self.hanging.set()
            await self.release.wait()
        return await super().read(points)


async def test_watchdog_withheld_while_a_poll_loop_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping decision every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    cfg = load_config(write_site(tmp_path / "etc", sim_port=1, name="watchdog_site.yaml"))
    notifier = FakeNotifier()
    svc = Service(cfg, state_dir=tmp_path / "state", notifier=notifier)  # type: ignore[arg-type]
    good = FakeMeter("meter-a")
    wedged = HangingMeter("meter-b", good_reads=10)
    svc.agent.devices["meter-a"].driver = good
    svc.agent.devices["meter-b"].driver = wedged
    # The service registers poll loops with max(3 x interval, 30 s); re-register with a short deadline.
    for dev_id in svc.agent.devices:
        svc.health.register(f"poll:{dev_id}", deadline_s=0.4)
    run = asyncio.create_task(svc.run(), name="service")
    try:
        await wait_until(lambda: notifier.count("ready") == 1, 5, "READY")
        await asyncio.wait_for(wedged.hanging.wait(), 5)
        assert notifier.count("watchdog") >= 2, "pings flow while every loop progresses"
        assert svc.health.stalled() == []

        # Past the 0.4 s deadline the hung loop is reported and pings stop, though other loops run on.
        await wait_until(lambda: svc.health.stalled() == ["poll:meter-b"], 5, "poll:meter-b stalled")
        await asyncio.sleep(0.1)  # let an in-flight tick finish
        pings, reads = notifier.count("watchdog"), good.reads
        await asyncio.sleep(0.5)  # ten ticks of the watchdog loop
        assert notifier.count("watchdog") == pings, "no WATCHDOG=1 while a loop is stalled"
        assert good.reads > reads, "the other device kept polling"
        assert svc.health.withheld >= 3
        assert ("status", "stalled: poll:meter-b") in notifier.calls

        # The driver comes back: the loop beats again and pings resume.
        wedged.release.set()
        await wait_until(lambda: notifier.count("watchdog") >= pings + 2, 5, "pings after recovery")
        assert svc.health.stalled() == []
    finally:
        wedged.release.set()
        svc.agent.stop()
        await asyncio.wait_for(run, 10)
        svc.close()
    assert run.result() == 0
    assert notifier.calls[-1][0] == "stopping"


async def test_counter_baseline_survives_a_restart(tmp_path: Path) -> None:
    """A meter that went backwards while the agent was stopped is flagged on its first reading after."""
    from edge_agent.core.validate import ValidatedReading

    cfg = load_config(write_site(tmp_path / "cfg", sim_port=1))
    t0 = datetime(2026, 7, 15, 6, 0, tzinfo=UTC)
    first = Service(cfg, state_dir=tmp_path / "state")
    first.ledger.ingest([ValidatedReading(Reading("main.energy", 1000.0, t0, Quality.GOOD))])
    first.close()

    second = Service(cfg, state_dir=tmp_path / "state")  # a new process on the same state database
    try:
        later = Reading("main.energy", 990.0, t0 + timedelta(minutes=5), Quality.GOOD)
        assert second.validator.validate(later).flags == ("counter_backwards",)
    finally:
        second.close()


def keyed_site(tmp_path: Path) -> tuple[Path, Path]:
    """A site whose audit chain is HMAC-keyed (storage.audit_key_file); (site.yaml, key file)."""
    key = tmp_path / "cfg" / "audit.key"
    key.parent.mkdir(parents=True)
    key.write_text("0123456789abcdef0123456789abcdef\n")
    site = write_site(
        tmp_path / "cfg",
        sim_port=1,
        edit=lambda t: t.replace(
            "storage: {path: state/edge-agent.db, commit_interval_s: 0.2}",
            "storage: {path: state/edge-agent.db, commit_interval_s: 0.2, audit_key_file: audit.key}",
        ),
    )
    return site, key


async def test_audit_key_file_signs_the_chain(tmp_path: Path) -> None:
    """storage.audit_key_file: records are HMAC-signed; verify needs the key and finds it via site.yaml."""
    from edge_agent.cli.audit import verify_main
    from edge_agent.store.audit import AuditKind

    site, key = keyed_site(tmp_path)
    svc = Service(load_config(site), state_dir=tmp_path / "state")
    try:
        rec = svc.audit.append(AuditKind.STARTUP, subject="gw", reason="test")
        assert rec.alg == "hmac-sha256"
    finally:
        svc.close()
    db = tmp_path / "state" / "edge-agent.db"
    assert verify_main(db, None) == 1  # keyed chain, no key: refused ("give the key"), not "tampered"
    assert verify_main(db, key) == 0
    rc, _out, err = await run_cli(
        "audit", "verify", "-c", str(site), "--state-dir", str(tmp_path / "state"), cwd=tmp_path
    )
    assert rc == 0, err  # the CLI takes the key file site.yaml names


async def test_a_counter_step_the_ledger_detects_reaches_the_audit_chain(tmp_path: Path) -> None:
    """The service's flush books readings and audits each detected step once, in the keyed chain."""
    from edge_agent.store.audit import verify

    site, key = keyed_site(tmp_path)
    svc = Service(load_config(site), state_dir=tmp_path / "state")
    try:
        t0 = datetime(2026, 7, 15, 1, 0, tzinfo=UTC)
        counter = 1000.0
        for i in range(24):  # a flush per reading, as polls arrive; the counter steps 4,840 kWh at i = 12
            counter += 4840.0 if i == 12 else 1.0
            reading = Reading("main.energy", counter, t0 + timedelta(minutes=5 * i), Quality.GOOD)
            svc._ledger_pending.append(svc.validator.validate(reading))
            await svc.flush()
        findings = [r for r in svc.audit.records() if r.kind == "finding" and r.result == "counter_step"]
        assert [(r.subject, r.after) for r in findings] == [("main.energy", counter - 11)]
        assert findings[0].alg == "hmac-sha256"
        assert verify(svc._audit_conn, key.read_bytes().strip()).ok
        (pending,) = svc.ledger.pending_steps()
        assert pending.amount == pytest.approx(4840)
    finally:
        svc.close()


def test_an_outbox_of_the_first_layout_is_converted_with_systemd_told_to_wait(tmp_path: Path) -> None:
    """After an upgrade the conversion runs before READY: the service asks systemd for more start-up time
    (EXTEND_TIMEOUT_USEC) with a status line, so a large backlog is not killed and retried for ever."""
    import sqlite3

    cfg = load_config(write_site(tmp_path / "etc", sim_port=1))
    state = tmp_path / "state"
    state.mkdir()
    conn = sqlite3.connect(state / "edge-agent.db")
    conn.executescript(
        "CREATE TABLE outbox_readings (seq INTEGER PRIMARY KEY AUTOINCREMENT, point TEXT NOT NULL, "
        "ts_us INTEGER NOT NULL, value NUMERIC, vjson TEXT, unit TEXT, quality TEXT NOT NULL, code TEXT, "
        "flags TEXT);"
    )
    conn.executemany(
        "INSERT INTO outbox_readings VALUES (?, 'meter-a.energy', ?, ?, NULL, 'kWh', 'good', NULL, NULL)",
        [(i, 1_000_000 * i, float(i)) for i in range(1, 12_001)],
    )
    conn.commit()
    conn.close()
    notifier = FakeNotifier()
    svc = Service(cfg, state_dir=state, notifier=notifier)  # type: ignore[arg-type]
    try:
        assert svc.outbox.stats().backlog == 12_000
    finally:
        svc.close()
    told = [text for kind, text in notifier.calls if kind == "extend"]
    assert told and told[-1] == "60 s: converting the outbox to the new layout: 12,000 of 12,000 readings"


def test_every_meter_reading_reaches_the_ledger_queue_and_only_devices_with_one(tmp_path: Path) -> None:
    """Issue 18: a device without a ledger meter is not queued for Ledger.ingest (which skipped its
    readings one by one in the SQLite thread); every reading of a meter still is, flags included."""
    svc = Service(load_config(write_site(tmp_path / "cfg", sim_port=1)), state_dir=tmp_path / "state")
    try:
        t0 = datetime(2026, 7, 15, 6, 0, tzinfo=UTC)
        meters = svc.ledger.meters
        with_meter = {d.id for d in svc.cfg.site.devices if any(p.id in meters for p in d.points)}
        assert meters and with_meter and with_meter != {d.id for d in svc.cfg.site.devices}
        sent: list[Reading] = []
        expected: list[Reading] = []
        for i, dev in enumerate(svc.cfg.site.devices):
            readings = [Reading(p.id, 100.0 + i, t0, Quality.GOOD) for p in dev.points]
            sent += readings
            expected += readings if dev.id in with_meter else []
            svc._on_readings(dev.id, readings, readings)
        queued = [vr.reading for vr in svc._ledger_pending]
        assert {r.point_id for r in queued} >= meters.keys()
        assert queued == expected
        assert len(svc._pending) == len(sent)  # the outbox still gets every reading
    finally:
        svc.close()


async def test_a_meter_moved_to_another_device_by_a_reload_reaches_the_ledger_queue(tmp_path: Path) -> None:
    """Review of issue 18: while a reload connects devices (Agent.reconfigure), the new poll loops
    already run on the new device list but Service.cfg is still the old one: a meter point moved to a
    device that had none must still reach the ledger queue from its first poll."""
    svc = Service(load_config(write_site(tmp_path / "cfg", sim_port=1)), state_dir=tmp_path / "state")
    try:
        meters = svc.ledger.meters
        devs = list(svc.cfg.site.devices)
        src = next(d for d in devs if any(p.id in meters for p in d.points))
        dst = next(d for d in devs if not any(p.id in meters for p in d.points))
        moved = next(p for p in src.points if p.id in meters)
        svc._on_readings(dst.id, [], [])  # the cache of devices with meters, from the running config
        new_devs = [
            d.model_copy(update={"points": [p for p in d.points if p is not moved]})
            if d is src
            else d.model_copy(update={"points": [*d.points, moved]})
            if d is dst
            else d
            for d in devs
        ]
        new = dataclasses.replace(svc.cfg, site=svc.cfg.site.model_copy(update={"devices": new_devs}))
        await svc.agent.reconfigure(new)  # what apply_config does first; the poll loops start here
        r = Reading(moved.id, 123.0, datetime(2026, 7, 15, 6, 0, tzinfo=UTC), Quality.GOOD)
        svc._on_readings(dst.id, [r], [r])
        assert [vr.reading for vr in svc._ledger_pending] == [r]
    finally:
        await svc.agent.close()
        svc.close()

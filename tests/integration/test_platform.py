"""The platform uplink over TCP against the bundled platform simulator (sim/platform_server.py).

Real sockets on 127.0.0.1, a real ledger and period buffer in a SQLite file, a FakeClock for the periods.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from drivers.base import Quality, Reading
from edge_agent.config.settings import PlatformCipher, PlatformFraming, PlatformMeter, PlatformUplink
from edge_agent.core.clock import FakeClock
from edge_agent.store.db import open_state_db
from edge_agent.store.ledger import Ledger, MeterInfo
from edge_agent.store.platform import PeriodBuffer
from edge_agent.uplink.platform.client import PlatformAuthRefused, PlatformSession, PlatformUplinkService
from edge_agent.uplink.platform.periods import ledger_source
from sim.platform_server import PlatformServer, PlatformSimOptions

KEY = b"0123456789abcdef"
TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 7, 1, 0, 0, tzinfo=TZ)
METERS = [
    MeterInfo(point_id="main_kwh", code="01000", unit="kWh"),
    MeterInfo(point_id="ac_kwh", code="01A00", unit="kWh"),
]
PLATFORM_METERS = [
    PlatformMeter(point="main_kwh", meter_id="370102A001-M01", function_id="1"),
    PlatformMeter(point="ac_kwh", meter_id="370102A001-M02", function_id="1"),
]


@dataclass(frozen=True)
class _Validated:
    reading: Reading
    flags: tuple[str, ...] = ()


async def until(
    cond: Callable[[], bool], what: str, sim: PlatformServer | None = None, limit_s: float = 30
) -> None:
    """Wait for a condition the system under test must reach (a hang fails with ``what``, not a timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


class Rig:
    def __init__(self, tmp_path: Path, port: int, *, sleep: Any = asyncio.sleep, **options: Any) -> None:
        self.sleep = sleep
        key_file = tmp_path / "platform.key"
        if not key_file.exists():
            key_file.write_bytes(KEY + b"\n")
        base: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "key_file": str(key_file),
            "meters": PLATFORM_METERS,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.2,
            "ack_timeout_s": 60,  # a loaded CI machine must not turn into a resend
        }
        base.update(options)
        self.options = PlatformUplink(**base)
        self.db = tmp_path / "state.db"
        self.clock = FakeClock(START)
        self.counters = {"main_kwh": 1000.0, "ac_kwh": 400.0}
        self.audits: list[tuple[str, str, Any]] = []
        self.conns: list[Any] = []
        self.open()

    def open(self) -> None:
        lconn, bconn = open_state_db(self.db), open_state_db(self.db)
        self.conns += [lconn, bconn]
        self.ledger = Ledger(conn=lconn, meters=METERS)
        self.buffer = PeriodBuffer(bconn)
        self.service = PlatformUplinkService(
            options=self.options,
            building_id="370102A001",
            gateway_id="gw-test",
            tz=TZ,
            buffer=self.buffer,
            energy=ledger_source(self.ledger),
            codes={m.point_id: m.code for m in METERS},
            clock=self.clock,
            audit=lambda kind, *, subject, reason, after: self.audits.append((kind, reason, after)),
            rng=random.Random(1),
            sleep=self.sleep,
        )

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.conns.clear()

    def minute(self, minute_index: int) -> None:
        """One reading per meter, then one minute passes; consumption varies through the day."""
        hour = (minute_index // 60) % 24
        load = 2.0 if 8 <= hour < 18 else 0.5
        self.counters["main_kwh"] += load + 0.01 * (minute_index % 7)
        self.counters["ac_kwh"] += load / 2
        now = self.clock.now()
        self.ledger.ingest(
            _Validated(Reading(pid, value, now, Quality.GOOD)) for pid, value in self.counters.items()
        )
        self.clock.advance(60)

    def expected(self) -> dict[str, dict[str, dict[str, float]]]:
        """What the server should hold: per period (local yyyyMMddHHmmss) the ledger's energy per meter."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for p in self.buffer.conn.execute("SELECT start_ts, period_s FROM platform_period ORDER BY start_ts"):
            start = datetime.fromtimestamp(p[0], UTC)
            totals = self.ledger.totals(start, start + timedelta(seconds=p[1]))
            out[start.astimezone(TZ).strftime("%Y%m%d%H%M%S")] = {
                m.meter_id: {m.function_id: round(totals[m.point].total, 6)} for m in PLATFORM_METERS
            }
        return out


@pytest.fixture
async def sim() -> AsyncIterator[PlatformServer]:
    server = PlatformServer(PlatformSimOptions(key=KEY))
    server.port = await server.start()  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        await server.stop()


async def run_service(rig: Rig) -> asyncio.Task[None]:
    return asyncio.create_task(rig.service.run(), name="platform_under_test")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# ------------------------------------------------------------------------------------- authentication


async def test_authentication_passes_and_a_wrong_key_is_refused(sim: PlatformServer) -> None:
    port = sim.port  # type: ignore[attr-defined]
    opts = PlatformUplink(host="127.0.0.1", port=port, key_file="unused")
    good = PlatformSession(options=opts, key=KEY, building_id="370102A001", gateway_id="gw")
    await good.connect()
    await good.authenticate()
    assert await good.heartbeat() is not None
    await good.close()
    bad = PlatformSession(options=opts, key=b"fedcba9876543210", building_id="370102A001", gateway_id="gw")
    await bad.connect()
    # Everything is encrypted with the key: a platform that cannot read the request hangs up.
    with pytest.raises(PlatformAuthRefused, match=r"hung up during id_validate .*check the key"):
        await bad.authenticate()
    await bad.close()
    assert (sim.auth_attempts, sim.auth_passed) == (1, 1)


async def test_a_refused_key_backs_off_and_is_logged_once(sim: PlatformServer, tmp_path: Path) -> None:
    sim.options.refuse_auth = True
    delays: list[float] = []

    async def sleep(s: float) -> None:  # the backoff's sleep: recorded, not waited
        delays.append(s)
        await asyncio.sleep(0)

    rig = Rig(tmp_path, sim.port, sleep=sleep)  # type: ignore[attr-defined]
    with capture_logs() as logs:
        task = await run_service(rig)
        await until(lambda: len(delays) >= 6, "six refused attempts")
        await stop(task)
    rig.close()
    refused = [e for e in logs if e["event"] == "platform_auth_refused"]
    assert len(refused) == 1 and "check the key" in refused[0]["error"]
    assert all(d >= rig.options.backoff_initial_s / 2 for d in delays)  # never a tight loop
    assert rig.service.auth_refusals >= 6 and "refused id_validate" in (rig.service.last_error or "")
    assert sim.auth_passed == 0


# ------------------------------------------------------------------------------------------------- data


async def test_a_day_of_periods_is_reported_and_acknowledged_with_the_ledgers_values(
    sim: PlatformServer, tmp_path: Path
) -> None:
    rig = Rig(tmp_path, sim.port)  # type: ignore[attr-defined]
    task = await run_service(rig)
    for minute in range(24 * 60 + 2):
        rig.minute(minute)
        if rig.service.close_due():
            await until(lambda: rig.buffer.backlog() == 0, f"period acknowledged at minute {minute}")
    await stop(task)
    expected = rig.expected()
    rig.close()
    assert len(expected) == 96
    assert sim.accepted == expected
    assert sim.duplicates == 0
    assert {r["operation"] for r in sim.received} == {"report"}
    assert next(iter(sim.received))["codes"] == {"370102A001-M01/1": "01000", "370102A001-M02/1": "01A00"}
    day = sum(v["370102A001-M01"]["1"] for v in expected.values())
    assert day == pytest.approx(rig.counters["main_kwh"] - 1000.0, abs=3.0)  # the last minutes are not closed


async def test_a_six_hour_outage_is_resent_as_continuous_without_loss_or_duplicates(
    sim: PlatformServer, tmp_path: Path
) -> None:
    rig = Rig(tmp_path, sim.port)  # type: ignore[attr-defined]
    task = await run_service(rig)
    await until(lambda: rig.service.authenticated, "authenticated")
    sim.offline = True
    sim.drop_all()
    await until(lambda: not rig.service.connected, "disconnected")
    for minute in range(6 * 60 + 2):
        rig.minute(minute)
        rig.service.close_due()
    assert rig.buffer.backlog() == 24
    assert sim.received == []
    sim.offline = False
    await until(lambda: rig.buffer.backlog() == 0, "backlog delivered")
    await stop(task)
    expected = rig.expected()
    rig.close()
    assert sim.accepted == expected and len(expected) == 24
    assert sim.duplicates == 0
    ops = [(r["operation"], r["total"], r["current"]) for r in sim.received]
    assert ops == [("continuous", "24", str(i)) for i in range(1, 25)]
    times = [r["time"] for r in sim.received]
    assert times == sorted(times)


async def test_a_restart_during_the_backlog_resumes_from_the_database(
    sim: PlatformServer, tmp_path: Path
) -> None:
    rig = Rig(tmp_path, sim.port)  # type: ignore[attr-defined]
    sim.offline = True
    for minute in range(6 * 60 + 2):
        rig.minute(minute)
        rig.service.close_due()
    assert rig.buffer.backlog() == 24
    sim.offline = False
    sim.options.ack_delay_s = 0.02
    task = await run_service(rig)
    await until(lambda: sim.data_seen >= 10, "ten periods sent")
    await stop(task)  # the agent stops in the middle of the backlog
    left = rig.buffer.backlog()
    assert 0 < left < 24
    expected = rig.expected()
    closed_until = rig.buffer.closed_until()
    rig.close()
    rig.open()  # a new process: everything from the state database
    assert rig.buffer.backlog() == left and rig.buffer.closed_until() == closed_until
    sim.options.ack_delay_s = 0
    task = await run_service(rig)
    await until(lambda: rig.buffer.backlog() == 0, "the rest delivered after the restart")
    await stop(task)
    rig.close()
    assert sim.accepted == expected
    assert sim.duplicates <= 1  # at most the period whose ack the stop cut off, sent again (at least once)


async def test_a_dropped_connection_before_the_ack_resends_the_period(
    sim: PlatformServer, tmp_path: Path
) -> None:
    rig = Rig(tmp_path, sim.port)  # type: ignore[attr-defined]
    sim.options.drop_after_data = 3
    task = await run_service(rig)
    for minute in range(16 * 4 + 2):
        rig.minute(minute)
        if rig.service.close_due():
            await until(lambda: rig.buffer.backlog() == 0, f"period acknowledged at minute {minute}")
    await stop(task)
    expected = rig.expected()
    rig.close()
    assert sim.accepted == expected and len(expected) == 4
    assert sim.duplicates == 1  # the third period, whose ack never came, was sent again
    assert [r["operation"] for r in sim.received][2:4] == ["report", "continuous"]


@pytest.mark.parametrize(
    ("sim_opts", "framing", "cipher", "md5_order"),
    [
        (
            {"framing": "hex", "cipher": "ecb", "md5_order": "key_sequence"},
            PlatformFraming(kind="hex", length_bytes=4),
            PlatformCipher(mode="ecb"),
            "key_sequence",
        ),
        ({"framing": "binary", "cipher": "cbc"}, PlatformFraming(), PlatformCipher(), "sequence_key"),
    ],
    ids=["hex-ecb-key-first", "binary-cbc-sequence-first"],
)
async def test_two_framing_and_cipher_variants(
    tmp_path: Path, sim_opts: dict[str, Any], framing: PlatformFraming, cipher: PlatformCipher, md5_order: str
) -> None:
    async with PlatformServer(PlatformSimOptions(key=KEY, **sim_opts)) as sim:
        port = await sim.start()
        rig = Rig(tmp_path, port, framing=framing, cipher=cipher, md5_order=md5_order)
        task = await run_service(rig)
        for minute in range(32):
            rig.minute(minute)
            if rig.service.close_due():
                await until(lambda: rig.buffer.backlog() == 0, "period acknowledged")
        await stop(task)
        expected = rig.expected()
        rig.close()
        assert sim.auth_passed >= 1 and sim.accepted == expected and len(expected) == 2


# --------------------------------------------------------------------------------- config and heartbeat


async def test_config_period_and_server_time(tmp_path: Path) -> None:
    clock_holder: list[FakeClock] = []
    opts = PlatformSimOptions(key=KEY, period_min=60, time_offset_s=300)
    async with PlatformServer(opts, now=lambda: clock_holder[0].now()) as sim:
        port = await sim.start()
        rig = Rig(tmp_path, port, heartbeat_s=5)
        clock_holder.append(rig.clock)
        with capture_logs() as logs:
            task = await run_service(rig)
            await until(lambda: rig.service.period_s == 3600, "period set by config")
            await until(lambda: rig.service.clock_offset_s is not None, "a heartbeat answered")
            for minute in range(62):
                rig.minute(minute)
            rig.service.close_due()
            await until(lambda: rig.buffer.backlog() == 0, "the hour acknowledged")
            await stop(task)
        expected = rig.expected()
        service = rig.service
        rig.close()
        rig.open()
        assert rig.service.period_s == 3600  # kept across restarts
        rig.close()
    assert list(expected) == ["20260701000000"]
    assert sim.accepted == expected
    assert service.clock_offset_s == -300.0
    assert [e["event"] for e in logs].count("platform_clock_offset") == 1
    (finding,) = [a for a in rig.audits if a[0] == "finding"]
    assert finding[2]["finding"] == "clock_offset" and "not changed" in finding[1]


async def test_backlog_beyond_the_limit_drops_the_oldest_audited(tmp_path: Path) -> None:
    rig = Rig(tmp_path, 1, max_backlog_periods=4)
    assert rig.service.close_due() == 0  # the first run: closing begins with the period in progress
    for minute in range(6 * 15 + 2):
        rig.minute(minute)
    assert rig.service.close_due() == 6
    assert rig.buffer.backlog() == 4
    rig.close()
    assert rig.service.dropped_periods == 2
    (drop,) = [a for a in rig.audits if a[0] == "drop"]
    assert drop[2]["count"] == 2 and drop[2]["first"].startswith("2026-07-01T00:00")

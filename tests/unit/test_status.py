"""The status socket and the Prometheus page, over real sockets in temp dirs / on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from edge_agent.cli.status import format_status, status_main
from edge_agent.ops.status import (
    AgentNotRunningError,
    PrometheusServer,
    StatusServer,
    StatusSocketInUseError,
    default_status_socket,
    query_status,
    render_metrics,
)

DOC: dict[str, Any] = {
    "agent": {"gateway_id": "gw-bj-001", "version": "0.1.0", "pid": 4242, "uptime_s": 5400.0},
    "devices": [
        {
            "id": "meter-1",
            "protocol": "modbus",
            "up": True,
            "last_success": "2025-07-01T08:00:00+00:00",
            "latency_ms": 12.5,
            "last_error": None,
            "readings_total": 1200,
            "errors_total": 0,
        },
        {
            "id": 'ahu "north"',
            "protocol": "bacnet",
            "up": False,
            "last_success": None,
            "latency_ms": None,
            "last_error": "timeout",
            "last_error_at": "2025-07-01T07:59:30+00:00",
            "readings_total": 0,
            "errors_total": 17,
        },
    ],
    "backlog": {"readings": 345, "oldest": "2025-07-01T07:00:00+00:00", "age_s": 3600.0, "bytes": 90000},
    "uplink": {"connected": False, "last_publish": None, "published_total": 10},
    "enforcement": {"written": 4, "refused": 1},
    "clock": {"sync": "unsynced", "steps_total": 1, "last_step": {"step_s": 3600.0, "wall_after": "x"}},
    "health": {"loops": {"poll": {"stalled": False}, "uplink": {"stalled": True}}, "stalled": ["uplink"]},
    "readings_total": 1200,
}


async def test_one_document_per_connection(tmp_path: Path) -> None:
    path = tmp_path / "status.sock"
    calls = 0

    def provider() -> Mapping[str, Any]:
        nonlocal calls
        calls += 1
        return {**DOC, "calls": calls}

    async with StatusServer(path=path, provider=provider) as server:
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        first = await query_status(path)
        second = await query_status(path)
        assert first["devices"][0]["id"] == "meter-1"
        assert (first["calls"], second["calls"]) == (1, 2)  # fresh document each time
        assert server.served == 2
    assert not path.exists()  # removed on close


async def test_provider_failure_is_reported_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"

    def broken() -> Mapping[str, Any]:
        raise RuntimeError("snapshot locked")

    async with StatusServer(path=path, provider=broken):
        doc = await query_status(path)
        assert "snapshot locked" in doc["error"]
        assert "agent error" in format_status(doc)


async def test_no_agent(tmp_path: Path) -> None:
    with pytest.raises(AgentNotRunningError) as ei:
        await query_status(tmp_path / "absent.sock")
    assert ei.value.path == tmp_path / "absent.sock" and "does not exist" in str(ei.value)

    # A socket file left behind by a crashed agent: refused.
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()
    with pytest.raises(AgentNotRunningError, match="refused"):
        await query_status(stale)


async def test_stale_socket_is_replaced_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    async with StatusServer(path=path, provider=lambda: {"n": 1}):
        assert (await query_status(path)) == {"n": 1}
        with pytest.raises(StatusSocketInUseError):
            await StatusServer(path=path, provider=lambda: {"n": 2}).start()
        assert (await query_status(path)) == {"n": 1}  # the live one kept answering


async def test_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    path.write_text("not a socket")
    with pytest.raises(FileExistsError):
        await StatusServer(path=path, provider=dict).start()
    assert path.read_text() == "not a socket"


def test_socket_path_length_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="longer"):
        StatusServer(path=tmp_path / ("x" * 120), provider=dict)


def test_default_socket() -> None:
    assert default_status_socket({"RUNTIME_DIRECTORY": "/run/edge-agent"}) == Path(
        "/run/edge-agent/status.sock"
    )
    assert default_status_socket({}) == Path("/run/edge-agent/status.sock")
    assert default_status_socket({"RUNTIME_DIRECTORY": "/tmp/r:/tmp/q"}) == Path("/tmp/r/status.sock")


def test_format_status_human_view() -> None:
    text = format_status(DOC)
    assert "gateway gw-bj-001" in text and "up 90 min" in text
    lines = text.splitlines()
    meter = next(ln for ln in lines if "meter-1" in ln)
    assert "yes" in meter and "2025-07-01T08:00:00+00:00" in meter and "12 ms" in meter
    ahu = next(ln for ln in lines if "north" in ln)
    assert "no" in ahu and "timeout (2025-07-01T07:59:30+00:00)" in ahu
    assert "backlog: 345 readings, oldest 2025-07-01T07:00:00+00:00 (age 60 min)" in text
    assert "enforcement: refused 1, written 4" in text
    assert "clock: unsynced, steps 1" in text
    assert "stalled: uplink" in text
    # An empty document still renders.
    assert "devices (0)" in format_status({})


def test_format_status_names_the_holder_of_a_masked_point() -> None:
    masked = {
        "point": "f1-ac1-sp", "requested": 26.0, "held_value": 22.0, "holding_priority": 5,
        "since": "2025-07-01T08:00:00+00:00", "finding_seq": 7, "held_back": 17,
    }  # fmt: skip
    doc = {**DOC, "enforcement": {"written": 1, "masked": 17, "masked_points": [masked]}}
    text = format_status(doc)
    assert "enforcement: masked 17, written 1" in text
    assert "masked: f1-ac1-sp: priority 5 holds 22.0 (we wrote 26.0 at 2025-07-01T08:00:00+00:00; " in text
    assert "17 writes held back" in text


# --- status_main (sync: it runs its own event loop), agent served from a thread --------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "status.sock"
    loop = asyncio.new_event_loop()
    started: Future[None] = Future()
    stop = asyncio.Event()

    async def serve() -> None:
        try:
            async with StatusServer(path=path, provider=lambda: DOC):
                started.set_result(None)
                await stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    t = threading.Thread(target=loop.run_until_complete, args=(serve(),), name="status-server")
    t.start()
    try:
        started.result(timeout=5)
        yield path
    finally:
        loop.call_soon_threadsafe(stop.set)
        t.join(timeout=5)
        loop.close()


def test_status_main_human_and_json(served: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert status_main(served, False, out=out, err=err) == 0
    assert "meter-1" in out.getvalue() and err.getvalue() == ""
    out = io.StringIO()
    assert status_main(served, True, out=out, err=err) == 0
    assert json.loads(out.getvalue()) == DOC


def test_status_main_without_agent(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert status_main(tmp_path / "none.sock", False, out=out, err=err) == 1
    assert out.getvalue() == ""
    assert f"no edge-agent is running at {tmp_path / 'none.sock'}" in err.getvalue()
    assert "--state-dir" in err.getvalue()  # where a `run` or `demo` answers, not only systemd


def test_status_json_without_agent_is_still_a_json_document(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert status_main(tmp_path / "none.sock", True, out=out, err=err) == 1
    doc = json.loads(out.getvalue())
    assert doc == {
        "running": False,
        "socket": str(tmp_path / "none.sock"),
        "error": "the socket does not exist",
    }


# --- Prometheus --------------------------------------------------------------------------------


def test_render_metrics() -> None:
    text = render_metrics(DOC)
    assert text.endswith("\n")
    lines = text.splitlines()
    assert 'edge_agent_device_up{device="meter-1"} 1' in lines
    assert 'edge_agent_device_up{device="ahu \\"north\\""} 0' in lines
    assert 'edge_agent_device_latency_seconds{device="meter-1"} 0.0125' in lines
    assert 'edge_agent_device_errors_total{device="ahu \\"north\\""} 17' in lines
    assert "edge_agent_backlog_readings 345" in lines
    assert "edge_agent_backlog_age_seconds 3600" in lines
    assert "edge_agent_readings_total 1200" in lines
    assert 'edge_agent_enforcement_total{result="written"} 4' in lines
    assert 'edge_agent_clock_sync_state{state="unsynced"} 1' in lines
    assert 'edge_agent_clock_sync_state{state="synced"} 0' in lines
    assert 'edge_agent_loop_stalled{loop="uplink"} 1' in lines
    assert "edge_agent_uplink_connected 0" in lines
    # Each metric is declared once, and its samples follow its declaration contiguously.
    types = [ln.split()[2] for ln in lines if ln.startswith("# TYPE")]
    assert len(types) == len(set(types))
    names = [ln.split("{")[0].split(" ")[0] for ln in lines if not ln.startswith("#")]
    seen: list[str] = []
    for n in names:
        if not seen or seen[-1] != n:
            assert n not in seen, f"{n} is split"
            seen.append(n)
    # A null latency is omitted, not reported as 0.
    assert not any(ln.startswith('edge_agent_device_latency_seconds{device="ahu') for ln in lines)


async def _http(port: int, request: bytes) -> tuple[str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


async def test_prometheus_endpoint_on_loopback() -> None:
    async with PrometheusServer(port=0, provider=lambda: DOC) as srv:
        assert srv.port > 0
        status, body = await _http(srv.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        assert b'edge_agent_device_up{device="meter-1"} 1\n' in body
        assert body.decode() == render_metrics(DOC)
        status, _ = await _http(srv.port, b"GET / HTTP/1.1\r\n\r\n")
        assert status.startswith("HTTP/1.1 404")
        status, _ = await _http(srv.port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert status.startswith("HTTP/1.1 405")


def test_prometheus_refuses_non_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        PrometheusServer(port=9100, provider=dict, host="0.0.0.0")


def test_socket_permissions_follow_mode(tmp_path: Path) -> None:
    async def go() -> int:
        async with StatusServer(path=tmp_path / "m.sock", provider=dict, mode=0o600):
            return stat.S_IMODE(os.stat(tmp_path / "m.sock").st_mode)

    assert asyncio.run(go()) == 0o600


def test_format_status_lists_open_findings_with_age_and_calendar_warnings() -> None:
    finding = {
        "kind": "tamper", "subject": "f2-ac1.setpoint", "rule": "hvac.summer_min_cooling",
        "reason": "audit #9", "since": "2026-07-15T06:10:00+00:00", "age_s": 1500,
    }  # fmt: skip
    gap = "the national calendar for 2027 has 19 holidays but no make-up working days"
    doc = {
        "enforcement": {
            "cycles": 3, "findings": {"tamper": 1}, "active_findings": 1,
            "open_findings": [finding], "calendar_warnings": [gap],
        }
    }  # fmt: skip
    text = format_status(doc)
    assert "open finding: tamper f2-ac1.setpoint (hvac.summer_min_cooling), open " in text
    assert "calendar warning: the national calendar for 2027" in text
    assert "open_findings" not in text  # listed one per line, not as a raw list


def test_a_degraded_device_shows_its_bad_points_and_codes() -> None:
    doc = {
        "devices": [
            {"id": "ac-gw", "points": 5, "up": True, "state": "degraded", "points_bad": 2,
             "bad_codes": {"modbus:2": 1, "no_value": 1}},
            {"id": "meter", "points": 3, "up": True, "state": "up", "points_bad": 0, "bad_codes": {}},
        ]
    }  # fmt: skip
    lines = format_status(doc).splitlines()
    assert "degraded (2 of 5 bad: modbus:2 x1, no_value x1)" in next(ln for ln in lines if "ac-gw" in ln)
    assert " up " in next(ln for ln in lines if "meter" in ln) + " "
    assert 'edge_agent_device_points_bad{device="ac-gw"} 2' in render_metrics(doc).splitlines()


def test_platform_connection_last_acked_period_and_backlog_in_status_and_metrics() -> None:
    doc = {
        **DOC,
        "platform": {
            "host": "10.0.0.5:9000",
            "connected": False,
            "authenticated": False,
            "last_acked_period": "2026-07-01T10:00:00+08:00",
            "last_acked_ts": 1782871200.0,
            "backlog_periods": 24,
            "dropped_periods": 0,
            "last_error": "PlatformError: cannot connect to 10.0.0.5:9000",
            "retry_in_s": 4.2,
        },
    }
    text = format_status(doc)
    assert (
        "platform 能耗平台 10.0.0.5:9000: authenticated no, last acknowledged period "
        "2026-07-01T10:00:00+08:00, backlog 24 periods" in text
    )
    assert "  last error: PlatformError: cannot connect to 10.0.0.5:9000 (retry in 4.2 s)" in text
    lines = render_metrics(doc).splitlines()
    assert "edge_agent_platform_connected 0" in lines
    assert "edge_agent_platform_backlog_periods 24" in lines
    assert "edge_agent_platform_last_acked_period_timestamp_seconds 1782871200" in lines
    # Not configured: no platform lines at all.
    assert "platform" not in format_status({**DOC, "platform": {"configured": False}})
    assert "edge_agent_platform" not in render_metrics({**DOC, "platform": {"configured": False}})

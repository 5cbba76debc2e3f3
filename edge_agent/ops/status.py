"""`edge-agent status`: a UNIX socket that answers one JSON document, and an optional Prometheus page.

The running agent serves ``StatusServer(path=..., provider=...)``; a client connects, reads one JSON
document to EOF, and the server closes. No request, no protocol, nothing to parse on the agent
side: the socket cannot be used to change anything. Under systemd the socket lives in the
RuntimeDirectory (``/run/edge-agent/status.sock``), group ``edge-agent``, mode 0660.

The document (the provider builds it; every key is optional, the human view prints "-"):

    agent:       {gateway_id, version, pid, started, uptime_s, config}
    devices:     [{id, protocol, up, state (up/degraded/down), points_bad, bad_codes, last_success,
                   latency_ms, last_error, last_error_at, readings_total, errors_total}]
    backlog:     {readings, oldest, age_s, bytes}
    uplink:      {connected, last_publish, published_total}
    platform:    {configured: false} or {connected, authenticated, last_acked_period, backlog_periods, ...}
    enforcement: {<result>: count, ...}      e.g. written, failed, refused, exempt
    clock:       ClockMonitor.as_dict()      {sync, sync_checked, steps_total, last_step}
    health:      Health.as_dict()            {loops, stalled, watchdog_pings, watchdog_withheld}
    readings_total: int

``PrometheusServer(port=..., provider=...)`` renders the same document as Prometheus text on
127.0.0.1 only (off unless ``status.prometheus_port`` is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

__all__ = [
    "SYSTEM_STATUS_SOCKET",
    "AgentNotRunningError",
    "PrometheusServer",
    "StatusServer",
    "StatusSocketInUseError",
    "default_status_socket",
    "query_status",
    "render_metrics",
]

_log = structlog.get_logger("edge_agent.status")

SYSTEM_STATUS_SOCKET = Path("/run/edge-agent/status.sock")
_MAX_UNIX_PATH = 107  # sun_path is 108 bytes including the NUL

Provider = Callable[[], Mapping[str, Any]]


class AgentNotRunningError(Exception):
    """Nothing answers at the status socket."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"no edge-agent is running at {path}: {reason}")
        self.path = path
        self.reason = reason


class StatusSocketInUseError(Exception):
    """Another live agent already answers at this socket path."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"another edge-agent already answers at {path}")
        self.path = path


def default_status_socket(environ: Mapping[str, str] | None = None) -> Path:
    """$RUNTIME_DIRECTORY/status.sock inside the unit (systemd sets it), else /run/edge-agent/status.sock."""
    env = os.environ if environ is None else environ
    runtime_dir = env.get("RUNTIME_DIRECTORY")
    if runtime_dir:
        # RuntimeDirectory= may list several; the first is ours.
        return Path(runtime_dir.split(":")[0]) / "status.sock"
    return SYSTEM_STATUS_SOCKET


def _dumps(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(doc, default=str, ensure_ascii=False, sort_keys=True) + "\n").encode()


class StatusServer:
    """Serves `provider()` as one JSON document per connection on a UNIX socket.

    Use ``async with StatusServer(path=..., provider=...):`` or start()/close().
    """

    def __init__(self, *, path: str | Path, provider: Provider, mode: int = 0o660) -> None:
        self.path = Path(path)
        if len(os.fsencode(self.path)) > _MAX_UNIX_PATH:
            raise ValueError(f"status socket path is longer than {_MAX_UNIX_PATH} bytes: {self.path}")
        self._provider = provider
        self._mode = mode
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self.served = 0

    async def start(self) -> None:
        await self._clear_stale()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        st = self.path.stat()
        self._inode = st.st_ino
        # Members of the service's group may ask; others may not (UMask=0077 would give 0600).
        os.chmod(self.path, self._mode)
        _log.info("status_socket_listening", path=str(self.path))

    async def _clear_stale(self) -> None:
        """A socket file left by a crashed agent is removed; a live agent's is not touched."""
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(f"{self.path} exists and is not a socket; refusing to replace it")
        try:
            _r, w = await asyncio.wait_for(asyncio.open_unix_connection(str(self.path)), 1.0)
        except (ConnectionRefusedError, FileNotFoundError, TimeoutError):
            self.path.unlink(missing_ok=True)
            _log.info("status_socket_stale_removed", path=str(self.path))
            return
        w.close()
        with contextlib.suppress(OSError):
            await w.wait_closed()
        raise StatusSocketInUseError(self.path)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                payload = _dumps(self._provider())
            except Exception as exc:  # a broken provider must not kill the server
                _log.exception("status_provider_failed")
                payload = _dumps({"error": f"status provider failed: {exc!r}"})
            writer.write(payload)
            await asyncio.wait_for(writer.drain(), 5.0)
            self.served += 1
        except (OSError, TimeoutError):
            pass  # the client went away; nothing to do
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        # Remove the file only if it is still ours (a successor may have replaced it).
        with contextlib.suppress(OSError):
            if self._inode is not None and self.path.lstat().st_ino == self._inode:
                self.path.unlink()
        self._inode = None

    async def __aenter__(self) -> StatusServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def query_status(path: str | Path, *, timeout_s: float = 5.0) -> dict[str, Any]:
    """Connect, read the document to EOF, decode it. AgentNotRunningError when nobody answers."""
    p = Path(path)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(p)), timeout_s)
    except FileNotFoundError as exc:
        raise AgentNotRunningError(p, "the socket does not exist") from exc
    except ConnectionRefusedError as exc:
        raise AgentNotRunningError(p, "connection refused (stale socket)") from exc
    except PermissionError as exc:
        raise AgentNotRunningError(
            p, "permission denied (run as root or as a member of the edge-agent group)"
        ) from exc
    except TimeoutError as exc:
        raise AgentNotRunningError(p, f"no answer within {timeout_s} s") from exc
    except OSError as exc:
        raise AgentNotRunningError(p, str(exc)) from exc
    try:
        data = await asyncio.wait_for(reader.read(), timeout_s)
    except TimeoutError as exc:
        raise AgentNotRunningError(p, f"no complete answer within {timeout_s} s") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise AgentNotRunningError(p, f"the answer is not JSON ({len(data)} bytes)") from exc
    if not isinstance(doc, dict):
        raise AgentNotRunningError(p, "the answer is not a JSON object")
    return doc


# --- Prometheus ------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _fmt(v: float) -> str:
    return str(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)


def _ts(value: Any) -> float | None:
    from datetime import datetime  # local: only the metrics page parses timestamps

    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


class _Metrics:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._declared: set[str] = set()

    def add(self, name: str, kind: str, help_: str, value: float | None, **labels: Any) -> None:
        if value is None:
            return
        if name not in self._declared:
            self.lines.append(f"# HELP {name} {help_}")
            self.lines.append(f"# TYPE {name} {kind}")
            self._declared.add(name)
        lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{lab}}} {_fmt(value)}" if lab else f"{name} {_fmt(value)}")


def render_metrics(doc: Mapping[str, Any]) -> str:
    """Prometheus text exposition (0.0.4) of a status document. Metrics of one name stay together."""
    m = _Metrics()
    m.add("edge_agent_up", "gauge", "1 while the agent answers", 1.0)
    devices = [d for d in (doc.get("devices") or []) if isinstance(d, Mapping) and d.get("id")]
    per_device: tuple[tuple[str, str, str, Callable[[Mapping[str, Any]], float | None]], ...] = (
        ("edge_agent_device_up", "gauge", "1 when the last poll of the device succeeded",
         lambda d: _num(d.get("up"))),
        ("edge_agent_device_latency_seconds", "gauge", "Duration of the last poll cycle of the device",
         lambda d: None if (lat := _num(d.get("latency_ms"))) is None else lat / 1000),
        ("edge_agent_device_last_success_timestamp_seconds", "gauge", "Unix time of the last successful poll",
         lambda d: _ts(d.get("last_success"))),
        ("edge_agent_device_readings_total", "counter", "Readings taken from the device",
         lambda d: _num(d.get("readings_total"))),
        ("edge_agent_device_errors_total", "counter", "Failed reads of the device",
         lambda d: _num(d.get("errors_total"))),
        ("edge_agent_device_points_bad", "gauge", "Points of the device bad in its last poll",
         lambda d: _num(d.get("points_bad"))),
    )  # fmt: skip
    for name, kind, help_text, value in per_device:  # metrics of one name stay together
        for d in devices:
            m.add(name, kind, help_text, value(d), device=d["id"])
    m.add(
        "edge_agent_readings_total", "counter", "Readings taken since start", _num(doc.get("readings_total"))
    )
    backlog = doc.get("backlog") or {}
    m.add(
        "edge_agent_backlog_readings",
        "gauge",
        "Readings waiting in the outbox",
        _num(backlog.get("readings")),
    )
    m.add(
        "edge_agent_backlog_age_seconds",
        "gauge",
        "Age of the oldest reading in the outbox",
        _num(backlog.get("age_s")),
    )
    m.add("edge_agent_backlog_bytes", "gauge", "Size of the outbox", _num(backlog.get("bytes")))
    uplink = doc.get("uplink") or {}
    m.add(
        "edge_agent_uplink_connected",
        "gauge",
        "1 while the uplink is connected",
        _num(uplink.get("connected")),
    )
    m.add(
        "edge_agent_uplink_published_total",
        "counter",
        "Readings acknowledged by the broker",
        _num(uplink.get("published_total")),
    )
    m.add(
        "edge_agent_uplink_published_bytes_total",
        "counter",
        "Bytes of the readings messages acknowledged by the broker, as on the wire (MQTT PUBLISH packets)",
        _num(uplink.get("published_bytes")),
    )
    m.add(
        "edge_agent_uplink_refused_total",
        "counter",
        "Publishes the broker refused (MQTT v5 PUBACK reason code); they stay in the outbox",
        _num(uplink.get("refused_total")),
    )
    m.add(
        "edge_agent_uplink_retry_in_seconds",
        "gauge",
        "Backoff before the next connect attempt (absent while connected)",
        _num(uplink.get("retry_in_s")),
    )
    platform = doc.get("platform")
    if isinstance(platform, dict) and platform.get("configured", True):
        m.add(
            "edge_agent_platform_connected",
            "gauge",
            "1 while the municipal platform connection is authenticated",
            _num(platform.get("authenticated")),
        )
        m.add(
            "edge_agent_platform_backlog_periods",
            "gauge",
            "Closed periods the municipal platform has not acknowledged",
            _num(platform.get("backlog_periods")),
        )
        last = platform.get("last_acked_ts")
        m.add(
            "edge_agent_platform_last_acked_period_timestamp_seconds",
            "gauge",
            "Start of the newest period the municipal platform acknowledged (Unix time)",
            _num(last),
        )
        m.add(
            "edge_agent_platform_dropped_periods_total",
            "counter",
            "Periods dropped (oldest first) beyond uplink.platform.max_backlog_periods, audited",
            _num(platform.get("dropped_periods")),
        )
    for result, count in sorted((doc.get("enforcement") or {}).items()):
        m.add(
            "edge_agent_enforcement_total",
            "counter",
            "Enforcement actions by result",
            _num(count),
            result=result,
        )
    clock = doc.get("clock") or {}
    if clock.get("sync"):
        for state in ("synced", "unsynced", "unknown"):
            m.add(
                "edge_agent_clock_sync_state",
                "gauge",
                "Clock synchronisation state (one is 1)",
                1.0 if clock.get("sync") == state else 0.0,
                state=state,
            )
    m.add(
        "edge_agent_clock_steps_total", "counter", "Wall-clock steps detected", _num(clock.get("steps_total"))
    )
    health = doc.get("health") or {}
    for name, loop in sorted((health.get("loops") or {}).items()):
        if isinstance(loop, Mapping):
            m.add(
                "edge_agent_loop_stalled",
                "gauge",
                "1 while a loop is past its deadline",
                _num(loop.get("stalled")),
                loop=name,
            )
    return "\n".join(m.lines) + "\n"


class PrometheusServer:
    """GET /metrics on 127.0.0.1:`port` (0 picks a free port; see `.port` after start())."""

    def __init__(self, *, port: int, provider: Provider, host: str = "127.0.0.1") -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            # Metrics reveal the building's devices; exposing them is a decision for a proxy, not us.
            raise ValueError(f"the metrics endpoint binds to loopback only, not {host!r}")
        self._host = host
        self._port = port
        self._provider = provider
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        sock: socket.socket = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, host=self._host, port=self._port)
        _log.info("metrics_listening", host=self._host, port=self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            parts = head.split(b"\r\n", 1)[0].split()
            method, target = (parts[0], parts[1]) if len(parts) >= 2 else (b"", b"")
            if method not in (b"GET", b"HEAD"):
                status, body, ctype = "405 Method Not Allowed", b"only GET\n", "text/plain"
            elif target.split(b"?", 1)[0] != b"/metrics":
                status, body, ctype = "404 Not Found", b"try /metrics\n", "text/plain"
            else:
                try:
                    body = render_metrics(self._provider()).encode()
                    status, ctype = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
                except Exception as exc:
                    _log.exception("metrics_provider_failed")
                    status, body, ctype = "500 Internal Server Error", f"{exc!r}\n".encode(), "text/plain"
            header = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            writer.write(header if method == b"HEAD" else header + body)
            await asyncio.wait_for(writer.drain(), 5.0)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that sends garbage or nothing gets nothing
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> PrometheusServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

"""`edge-agent status`: ask the running agent over its status socket and print the answer."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from edge_agent.cli.common import add_config, load_or_exit
from edge_agent.ops.status import AgentNotRunningError, default_status_socket, query_status

__all__ = ["format_status", "register", "status_main"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="ask the running agent how it is doing (devices, backlog, enforcement)",
        description="Connect to the running agent's status socket and print devices with "
        "last success, latency and last error; backlog size and age; enforcement counts; clock "
        "state. Exit 1 when no agent answers.",
    )
    add_config(p)
    p.add_argument("--socket", help="status socket (default: from site.yaml, --state-dir or /run/edge-agent)")
    p.add_argument("--state-dir", metavar="DIR", help="the --state-dir the agent runs with")
    p.add_argument("--json", action="store_true", help="print the status document as JSON")
    p.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    sock = args.socket
    if sock is None and args.state_dir:
        # The socket under --state-dir does not depend on site.yaml: do not load (or need) one.
        from edge_agent.service.service import state_socket

        sock = str(state_socket(args.state_dir))
    elif sock is None and Path(args.config).exists():
        from edge_agent.service.service import state_paths

        sock = str(state_paths(load_or_exit(args.config), None)[1])
    return status_main(sock, args.json)


def _s(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _age(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "-"
    s = float(seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def format_status(doc: Mapping[str, Any]) -> str:
    """The terminal view of a status document; tolerant of missing parts."""
    out: list[str] = []
    if "error" in doc:
        out.append(f"agent error: {doc['error']}")
    agent = doc.get("agent") or {}
    out.append(
        f"edge-agent {_s(agent.get('version'))}  gateway {_s(agent.get('gateway_id'))}  "
        f"pid {_s(agent.get('pid'))}  up {_age(agent.get('uptime_s'))}"
    )
    devices = doc.get("devices") or []
    out.append(f"devices ({len(devices)}):")
    if devices:
        rows = [["DEVICE", "STATE", "LAST SUCCESS", "LATENCY", "LAST ERROR"]]
        for d in devices:
            lat = d.get("latency_ms")
            err = d.get("last_error")
            if err and d.get("last_error_at"):
                err = f"{err} ({d['last_error_at']})"
            rows.append(
                [
                    _s(d.get("id")),
                    _device_state(d),
                    _s(d.get("last_success")),
                    f"{lat:.0f} ms" if isinstance(lat, int | float) else "-",
                    _s(err),
                ]
            )
        out.extend(_table(rows))
    backlog = doc.get("backlog") or {}
    out.append(
        f"backlog: {_s(backlog.get('readings'))} readings, oldest {_s(backlog.get('oldest'))} "
        f"(age {_age(backlog.get('age_s'))})"
    )
    uplink = doc.get("uplink")
    if uplink:
        out.append(
            f"uplink: connected {_s(uplink.get('connected'))}, "
            f"last publish {_s(uplink.get('last_publish'))}, published {_s(uplink.get('published_total'))}"
            + (
                f" ({uplink['published_bytes']:,} bytes, payload {uplink.get('payload')})"
                if isinstance(uplink.get("published_bytes"), int)
                else ""
            )
        )
        if not uplink.get("connected") and uplink.get("last_error"):
            retry = uplink.get("retry_in_s")
            out.append(f"  last error: {uplink['last_error']}" + (f" (retry in {retry} s)" if retry else ""))
        refusal = uplink.get("last_refusal")
        if isinstance(refusal, Mapping):
            out.append(
                f"  broker refused {_s(uplink.get('refused_total'))} publishes, last {refusal.get('reason')} "
                f"on {refusal.get('topic')} (seq {refusal.get('seq_first')}..{refusal.get('seq_last')}, kept)"
            )
    platform = doc.get("platform")
    if isinstance(platform, Mapping) and platform.get("configured", True):
        out.append(
            f"platform 能耗平台 {_s(platform.get('host'))}: "
            f"authenticated {_s(platform.get('authenticated'))}, "
            f"last acknowledged period {_s(platform.get('last_acked_period'))}, "
            f"backlog {_s(platform.get('backlog_periods'))} periods"
        )
        if not platform.get("authenticated") and platform.get("last_error"):
            retry = platform.get("retry_in_s")
            out.append(
                f"  last error: {platform['last_error']}" + (f" (retry in {retry} s)" if retry else "")
            )
    enforcement = dict(doc.get("enforcement") or {})
    masked = enforcement.pop("masked_points", None) or []
    opened = enforcement.pop("open_findings", None) or []
    gaps = enforcement.pop("calendar_warnings", None) or []
    counts = ", ".join(f"{k} {v}" for k, v in sorted(enforcement.items())) or "-"
    out.append(f"enforcement: {counts}")
    for f in opened if isinstance(opened, list) else []:
        if isinstance(f, Mapping):
            out.append(
                f"  open finding: {_s(f.get('kind'))} {_s(f.get('subject'))} ({_s(f.get('rule'))}), "
                f"open {_age(f.get('age_s'))}"
            )
    for m in masked if isinstance(masked, list) else []:
        if not isinstance(m, Mapping):
            continue
        prio = m.get("holding_priority")
        holder = f"priority {prio}" if prio else "the device"
        out.append(
            f"  masked: {_s(m.get('point'))}: {holder} holds {_s(m.get('held_value'))} "
            f"(we wrote {_s(m.get('requested'))} at {_s(m.get('since'))}; "
            f"{_s(m.get('held_back'))} writes held back)"
        )
    for gap in gaps if isinstance(gaps, list) else []:
        out.append(f"  calendar warning: {gap}")
    clock = doc.get("clock") or {}
    clock_line = f"clock: {_s(clock.get('sync'))}, steps {_s(clock.get('steps_total'))}"
    last_step = clock.get("last_step")
    if isinstance(last_step, Mapping):
        clock_line += f" (last {last_step.get('step_s')} s at {last_step.get('wall_after')})"
    out.append(clock_line)
    health = doc.get("health") or {}
    stalled = health.get("stalled") or []
    out.append(f"loops: {'stalled: ' + ', '.join(stalled) if stalled else 'all making progress'}")
    return "\n".join(out)


def status_main(
    path: str | Path | None, as_json: bool, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """`edge-agent status [--json]`: 0 with the document printed, 1 when no agent answers (with --json
    also ``{"running": false, "socket", "error"}`` on stdout)."""
    stdout = sys.stdout if out is None else out
    stderr = sys.stderr if err is None else err
    p = default_status_socket() if path is None else Path(path)
    try:
        doc = asyncio.run(query_status(p))
    except AgentNotRunningError as exc:
        print(f"edge-agent status: {exc}", file=stderr)
        print(
            "  is it running?  systemctl status edge-agent (the service); an `edge-agent run` or `demo` "
            "answers at its --state-dir (status --state-dir DIR)",
            file=stderr,
        )
        if as_json:  # `status --json | jq` still gets a document
            doc = {"running": False, "socket": str(exc.path), "error": exc.reason}
            stdout.write(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n")
        return 1
    if as_json:
        stdout.write(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n")
    else:
        stdout.write(format_status(doc) + "\n")
    return 0


def _device_state(d: Mapping[str, Any]) -> str:
    """``up``, ``down``, or ``degraded (2 of 5 bad: modbus:2 x1, no_value x1)``; older agents: yes/no."""
    state = d.get("state")
    if state is None:
        return _s(d.get("up"))
    if state != "degraded":
        return str(state)
    codes = ", ".join(f"{c} x{n}" for c, n in (d.get("bad_codes") or {}).items())
    return f"degraded ({_s(d.get('points_bad'))} of {_s(d.get('points'))} bad: {codes})"

"""`edge-agent`: one entry point. Exit codes: 0 ok, 1 runtime failure or check failed, 2 bad input/usage.

Subcommands import their modules lazily so `edge-agent check` stays quick on a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]

DEFAULT_SITE = "config/site.yaml"
DEMO_START = "2026-07-15T13:59:30+08:00"


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        default=DEFAULT_SITE,
        metavar="SITE_YAML",
        help=f"site.yaml to use (default: {DEFAULT_SITE}); it names its policy.yaml",
    )


def _cmd_check(args: argparse.Namespace) -> int:
    from edge_agent.config.load import check_main

    path = args.site or args.config
    if not args.json:
        return check_main(path)
    import dataclasses
    import json

    from edge_agent.config.load import ConfigError, load_config

    doc: dict[str, Any]
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        doc = {"ok": False, "issues": [dataclasses.asdict(i) for i in exc.issues]}
    except OSError as exc:
        doc = {"ok": False, "issues": [{"file": path, "line": 0, "col": 0, "path": "",
                                        "message": exc.strerror or str(exc), "severity": "error"}]}
    else:
        doc = {
            "ok": True, "devices": len(cfg.site.devices), "points": sum(1 for _ in cfg.points()),
            "zones": len(cfg.site.zones), "issues": [dataclasses.asdict(i) for i in cfg.warnings],
        }  # fmt: skip
    print(json.dumps(doc, ensure_ascii=False))
    return 0 if doc["ok"] else 2


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from edge_agent.config.load import policy_json_schema, site_json_schema, write_schema_files

    if args.write:
        for path in write_schema_files(Path(args.write)):
            print(f"wrote {path}")
        return 0
    schema = policy_json_schema() if args.policy else site_json_schema()
    print(json.dumps(schema, indent=2, ensure_ascii=False))
    return 0


def _load_or_exit(path: str) -> Any:
    from edge_agent.config.load import ConfigError, load_config

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print(f"{path}: configuration invalid; run `edge-agent check -c {path}`", file=sys.stderr)
        raise SystemExit(2) from None
    except FileNotFoundError as exc:
        print(f"{path}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for w in cfg.warnings:
        print(str(w), file=sys.stderr)
    return cfg


def _cmd_run(args: argparse.Namespace) -> int:
    from edge_agent.core.logs import configure_logging
    from edge_agent.service.service import run_service

    configure_logging(level=args.log_level, json=True if args.json_logs else None)
    cfg = _load_or_exit(args.config)
    return asyncio.run(run_service(cfg, state_dir=args.state_dir))


def _cmd_sim(args: argparse.Namespace) -> int:
    from sim.runner import run_from_args

    try:
        asyncio.run(run_from_args(args))
    except KeyboardInterrupt:
        pass
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from edge_agent.devtools.demo import run_demo

    return run_demo(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from edge_agent.devtools import bench_modbus as bench

    return bench.main(args)


def _cmd_bench_bacnet(args: argparse.Namespace) -> int:
    from edge_agent.devtools.bench_bacnet import bench_bacnet_main

    return bench_bacnet_main(args)


def _cmd_bench_enforce(args: argparse.Namespace) -> int:
    from edge_agent.devtools.bench_enforce import bench_enforce_main

    return bench_enforce_main(args)


def _db_path(args: argparse.Namespace) -> Path:
    """--db wins; else the state database site.yaml names (or the one under --state-dir)."""
    if getattr(args, "db", None):
        return Path(args.db)
    from edge_agent.service.service import state_paths

    return state_paths(_load_or_exit(args.config), getattr(args, "state_dir", None))[0]


def _cmd_status(args: argparse.Namespace) -> int:
    from edge_agent.ops.status import status_main

    sock = args.socket
    if sock is None and args.state_dir:
        # The socket under --state-dir does not depend on site.yaml: do not load (or need) one.
        from edge_agent.service.service import state_socket

        sock = str(state_socket(args.state_dir))
    elif sock is None and Path(args.config).exists():
        from edge_agent.service.service import state_paths

        sock = str(state_paths(_load_or_exit(args.config), None)[1])
    return status_main(sock, args.json)


def _cmd_tail(args: argparse.Namespace) -> int:
    from edge_agent.cli.tail import tail_main

    return tail_main(_db_path(args), lines=args.lines, follow=args.follow, as_json=args.json)


def _cmd_audit(args: argparse.Namespace) -> int:
    from edge_agent.store.audit import show_main, verify_main

    db = _db_path(args)
    key_file = args.key_file
    if key_file is None and not args.db and Path(args.config).exists():
        cfg = _load_or_exit(args.config)  # the key site.yaml names signs the chain
        if cfg.site.storage.audit_key_file:
            key_file = str(cfg.resolve(cfg.site.storage.audit_key_file))
    if args.audit == "verify":
        return verify_main(db, key_file, as_json=args.json)
    return show_main(db, args.since, args.json, key_file)


def _cmd_explain(args: argparse.Namespace) -> int:
    from edge_agent.cli.policy import explain_main

    return explain_main(_load_or_exit(args.config), args)


def _cmd_discover(args: argparse.Namespace) -> int:
    from drivers.bacnet.discover import discover, render_devices_yaml

    try:
        found = asyncio.run(discover(args.target, args.local, timeout=args.timeout))
    except OSError as exc:
        print(f"discover: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        code = getattr(exc, "code", type(exc).__name__)
        print(f"discover: {code}: {exc}", file=sys.stderr)
        return 1
    if not found:
        print(
            f"discover: no BACnet device answered Who-Is at {args.target} within {args.timeout:g} s",
            file=sys.stderr,
        )
        return 1
    print(
        f"# {len(found)} device(s) found; paste under `devices:` in site.yaml and review roles, zones, "
        "min/max",
        file=sys.stderr,
    )
    print(render_devices_yaml(found))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from edge_agent.cli.report import report_main

    return report_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description=(
            "Building gateway agent: polls Modbus/BACnet meters, AC and lighting controllers, enforces the "
            "26 °C summer / 20 °C winter limits and lighting schedules, forwards audited readings upstream."
        ),
        epilog="Run `edge-agent demo` to see it against the bundled simulator. Exit codes: 0 ok, "
        "1 runtime failure or failed check, 2 bad input or usage.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "check",
        help="validate site.yaml and its policy.yaml (exit 0 valid, 2 invalid)",
        description="Validate site.yaml and the policy.yaml it names. Every problem is "
        "printed as FILE:LINE:COL: yaml.path: message, all of them in one run.",
    )
    _add_config(p)
    p.add_argument("site", nargs="?", help="site.yaml (same as -c)")
    p.add_argument("--json", action="store_true", help="one JSON object: ok, counts and every issue")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of site.yaml (or policy.yaml)",
        description="Print the JSON Schema editors use for completion and checks.",
    )
    p.add_argument("--policy", action="store_true", help="the policy.yaml schema instead of site.yaml's")
    p.add_argument("--write", metavar="DIR", help="write schema.json and policy.schema.json into DIR")
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser(
        "run",
        help="run the agent (polling, enforcement, outbox, uplink) until SIGINT/SIGTERM",
        description="Run the agent in the foreground. Under systemd it reports READY and pings "
        "the watchdog; SIGHUP reloads the configuration.",
    )
    _add_config(p)
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the state database lives (overrides storage.path's "
        "directory; systemd passes /var/lib/edge-agent)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--json-logs", action="store_true", help="JSON log lines even on a terminal")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "sim",
        help="run the bundled building simulator (Modbus TCP + BACnet/IP) until Ctrl-C",
        description="Run the bundled simulator of a small office building: meters, AC units and lighting "
        "relays on one Modbus TCP endpoint, and AC units and lighting as BACnet/IP devices on 127.0.0.2-5 "
        "(--no-bacnet to leave them out). sim/MANUAL.md is the register and object map.",
    )
    from sim.runner import add_arguments

    add_arguments(p)
    p.set_defaults(func=_cmd_sim)

    p = sub.add_parser(
        "demo",
        help="simulator + agent on the example config, with a live table",
        description="Start the bundled simulator and the agent on config/site.yaml in one "
        "process and show live readings until Ctrl-C. No outside service is needed.",
    )
    _add_config(p)
    p.add_argument(
        "--duration", type=float, metavar="SECONDS", help="stop after SECONDS (non-interactive run)"
    )
    p.add_argument("--refresh", type=float, default=1.0, metavar="SECONDS", help="table refresh period")
    p.add_argument(
        "--at",
        default=DEMO_START,
        metavar="TIME",
        help=f"simulated start time (default {DEMO_START}: a July working afternoon); 'now' for today",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=300.0,
        help="simulated seconds per real second (default 300: 14:00 to 22:00 in about 100 s); 1 = real time",
    )
    p.add_argument(
        "--state-dir", metavar="DIR", help="keep the demo's state database here (default: a new temp dir)"
    )
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "status",
        help="ask the running agent how it is doing (devices, backlog, enforcement)",
        description="Connect to the running agent's status socket and print devices with "
        "last success, latency and last error; backlog size and age; enforcement counts; clock "
        "state. Exit 1 when no agent answers.",
    )
    _add_config(p)
    p.add_argument("--socket", help="status socket (default: from site.yaml, --state-dir or /run/edge-agent)")
    p.add_argument("--state-dir", metavar="DIR", help="the --state-dir the agent runs with")
    p.add_argument("--json", action="store_true", help="print the status document as JSON")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser(
        "tail",
        help="show the newest readings in the outbox (works with no broker configured)",
        description="Print the newest stored readings (seq, time, point, value, quality, flags) "
        "from the state database; --follow keeps printing new ones.",
    )
    _add_config(p)
    p.add_argument("--db", help="state database (default: storage.path from site.yaml)")
    p.add_argument("--state-dir", metavar="DIR", help="the --state-dir the agent runs with")
    p.add_argument("-n", "--lines", type=int, default=20, help="how many readings to show first (default 20)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new readings until Ctrl-C")
    p.add_argument("--json", action="store_true", help="JSON lines (the uplink payload's reading objects)")
    p.set_defaults(func=_cmd_tail)

    p = sub.add_parser("audit", help="verify or show the tamper-evident audit trail")
    asub = p.add_subparsers(dest="audit", metavar="ACTION", required=True)
    for name, text in (
        ("verify", "check the hash chain: exit 0 intact, 1 naming the first bad record"),
        ("show", "list audit records (writes, refusals, findings, reloads, clock steps)"),
    ):
        a = asub.add_parser(name, help=text, description=text)
        _add_config(a)
        a.add_argument("--db", help="state database (default: storage.path from site.yaml)")
        a.add_argument("--state-dir", metavar="DIR", help="the --state-dir the agent runs with")
        a.add_argument("--key-file", help="HMAC key file, when the chain is signed")
        a.add_argument("--json", action="store_true", help="JSON output")
        if name == "show":
            a.add_argument("--since", metavar="TIME", help="ISO time, or an age such as 90m, 2h, 7d")
        a.set_defaults(func=_cmd_audit)

    p = sub.add_parser("policy", help="policy tools: explain what the policy decides and why")
    psub = p.add_subparsers(dest="policy_cmd", metavar="ACTION", required=True)
    e = psub.add_parser(
        "explain",
        help="dry run: what policy.yaml decides for each zone and rule, and why",
        description="Read every device once (or the bundled simulator with --sim), evaluate "
        "the policy at --at, and print per zone and rule what it would do and why: season, "
        "holiday or make-up working day, schedule window, exemption, rate limit. Writes nothing.",
    )
    _add_config(e)
    e.add_argument(
        "--at", metavar="TIME", help="ISO time to evaluate at (default: now); site timezone if none"
    )
    e.add_argument("--zone", help="only this zone")
    e.add_argument(
        "--sim",
        action="store_true",
        help="read from the bundled simulator started in-process at --at, not the real devices",
    )
    e.add_argument("--json", action="store_true", help="JSON output")
    e.set_defaults(func=_cmd_explain)

    p = sub.add_parser("discover", help="find BACnet devices and print a draft devices: block")
    dsub = p.add_subparsers(dest="proto", metavar="PROTOCOL", required=True)
    d = dsub.add_parser(
        "bacnet",
        help="Who-Is, then read object lists, names and units",
        description="Send Who-Is (unicast to --target, or broadcast with --target '*' where the "
        "network allows), read each device's object list, names and units, and print a draft "
        "`devices:` block ready to paste into site.yaml.",
    )
    d.add_argument("--target", required=True, help="device address (IP[:port]) or '*' for broadcast")
    d.add_argument("--local", default="0.0.0.0:47809", help="local address[/prefix]:port to bind")
    d.add_argument("--timeout", type=float, default=3.0)
    d.set_defaults(func=_cmd_discover)

    p = sub.add_parser(
        "report",
        help="quarterly/annual energy analysis report (HTML, CSV, JSON)",
        description="Build the energy analysis report for a period from the ledger: totals by "
        "category and end use, same period last year, KPIs against targets, data-centre PUE, "
        "enforcement summary and data quality.",
    )
    _add_config(p)
    from edge_agent.cli.report import add_report_arguments

    add_report_arguments(p)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "bench", help="benchmarks that print figures beside a baseline measured in the same run"
    )
    bsub = p.add_subparsers(dest="bench", metavar="WHAT", required=True)
    b = bsub.add_parser(
        "modbus",
        help="planned reads vs one request per point vs a bare pymodbus loop",
        description="Start the simulator in a child process with N devices x M float32 points "
        "and poll it three ways: the agent's planned reads, one request per point (how "
        "ThingsBoard's gateway reads) and a bare pymodbus loop over the same planned blocks.",
    )
    b.add_argument("--devices", type=int, default=50)
    b.add_argument("--points", type=int, default=40)
    b.add_argument(
        "--seconds", type=float, default=6.0, help="measuring time per method, in interleaved rounds"
    )
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_cmd_bench)
    b = bsub.add_parser(
        "bacnet",
        help="ReadPropertyMultiple vs one ReadProperty per point vs bare bacpypes3, and COV latency",
        description="Start the BACnet simulator in a child process and read its objects three ways: the "
        "agent's RPM batches, one ReadProperty per point, and a bare bacpypes3 RPM loop; then measure COV "
        "latency (change at the simulator to value in the agent).",
    )
    from edge_agent.devtools.bench_bacnet import add_arguments as add_bacnet_arguments

    add_bacnet_arguments(b)
    b.set_defaults(func=_cmd_bench_bacnet)
    b = bsub.add_parser(
        "enforce",
        help="time from a violating setpoint change at the simulator to the corrected value read back",
        description="Make at least 200 violations (22 °C in cool on a July working day) at the simulator and "
        "time each until the agent has written 26 °C and read it back.",
    )
    from edge_agent.devtools.bench_enforce import add_arguments as add_enforce_arguments

    add_enforce_arguments(b)
    b.set_defaults(func=_cmd_bench_enforce)
    b = bsub.add_parser(
        "uplink",
        help="backlog drain rate to mosquitto vs one MQTT message per reading",
        description="Start mosquitto on a free loopback port, fill an outbox with N readings, and measure "
        "the drain rate in batches, the bytes on disk per reading, and one message per reading (the same "
        "uplink with batch_max 1) as the baseline.",
    )
    b.add_argument("--readings", type=int, default=50_000, help="backlog size (default 50,000)")
    b.add_argument("--baseline", type=int, default=5_000, help="readings for the per-message baseline")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command not in ("run", "demo"):  # those two set up logging themselves
        from edge_agent.core.logs import configure_logging

        configure_logging(level="warning")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

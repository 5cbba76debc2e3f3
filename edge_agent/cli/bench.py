"""`edge-agent bench modbus|bacnet|enforce|uplink|rs485`: figures beside a baseline measured in the same run.

The measuring lives in edge_agent/devtools; this module parses the options and prints the figures.
Tests never time anything."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks that print figures beside a baseline measured in the same run",
        description="Benchmarks against the bundled simulators (and mosquitto for uplink and pipeline): each "
        "prints its figures beside a baseline measured in the same run; --json for one JSON object.",
    )
    bsub = p.add_subparsers(dest="bench", metavar="WHAT", required=True)
    b = bsub.add_parser(
        "modbus",
        help="planned reads vs one request per point vs a bare pymodbus loop",
        description="Start the simulator in a child process with N devices x M float32 points "
        "and poll it three ways: the agent's planned reads, one request per point (how "
        "ThingsBoard's gateway reads) and a bare pymodbus loop over the same planned blocks.",
    )
    b.add_argument("--devices", type=int, default=50, help="simulated Modbus devices (default 50)")
    b.add_argument("--points", type=int, default=40, help="float32 points per device (default 40)")
    b.add_argument(
        "--seconds", type=float, default=6.0, help="measuring time per method, in interleaved rounds"
    )
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_modbus_or_uplink)
    b = bsub.add_parser(
        "bacnet",
        help="ReadPropertyMultiple vs one ReadProperty per point vs bare bacpypes3, and COV latency",
        description="Start the BACnet simulator in a child process and read its objects three ways: the "
        "agent's RPM batches, one ReadProperty per point, and a bare bacpypes3 RPM loop; then measure COV "
        "latency (change at the simulator to value in the agent).",
    )
    _bacnet_arguments(b)
    b.set_defaults(func=_bacnet)
    b = bsub.add_parser(
        "enforce",
        help="time from a violating setpoint change at the simulator to the corrected value read back",
        description="Make at least 200 violations (22 °C in cool on a July working day) at the simulator and "
        "time each until the agent has written 26 °C and read it back.",
    )
    _enforce_arguments(b)
    b.set_defaults(func=_enforce)
    b = bsub.add_parser(
        "rs485",
        help="Modbus RTU points/s on a simulated 9600-baud RS-485 bus beside the bus's theoretical limit",
        description="Put N Modbus RTU units on the simulator's RS-485 bus (a pseudo-terminal paced to the "
        "baud rate, 8E1, with the inter-frame silence), poll them with the agent's driver, and print "
        "points/s beside what the wire allows for the same requests (request and reply characters plus two "
        "silences of 3.5 characters per exchange).",
    )
    b.add_argument("--units", type=int, default=4, help="Modbus RTU units on the bus (default 4)")
    b.add_argument(
        "--points", type=int, default=20, help="input registers per unit, one read each (default 20)"
    )
    b.add_argument("--baudrate", type=int, default=9600, help="the bus's bits per second (default 9600)")
    b.add_argument("--seconds", type=float, default=10.0, help="measuring time (default 10)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_rs485)
    b = bsub.add_parser(
        "uplink",
        help="backlog drain rate and wire bytes per reading (payload v2 and v1) vs one message per reading",
        description="Start mosquitto on a free loopback port, fill an outbox with N readings (20 devices "
        "x 40 float32 points, one timestamp per device poll), and measure the drain rate in batches and the "
        "readings PUBLISH bytes per reading for payload v2 and v1, the bytes on disk per reading, and one "
        "v1 message per reading (the same uplink with batch_max 1) as the baseline.",
    )
    b.add_argument("--readings", type=int, default=50_000, help="backlog size (default 50,000)")
    b.add_argument("--baseline", type=int, default=5_000, help="readings for the per-message baseline")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_modbus_or_uplink)
    b = bsub.add_parser(
        "pipeline",
        help="the whole agent end to end (CPU, RSS, start-up, check, bytes) vs a per-point baseline",
        description="Start simulators, mosquitto and the agent (`edge-agent run`) as child processes on a "
        "generated site of N float32 points (40 per device), and measure the agent process: CPU per 1,000 "
        "readings stored end to end, RSS, start to first stored reading, `check` time, outbox table "
        "bytes per reading and MQTT bytes per reading. Then the same with one request per point and one "
        "message per reading (how the common gateways work), in the same run.",
    )
    b.add_argument("--points", type=int, default=10_000, help="points in the site (default 10,000)")
    b.add_argument("--interval", type=float, default=5.0, help="poll interval in seconds (default 5)")
    b.add_argument("--seconds", type=float, default=30.0, help="measuring window per run (default 30)")
    b.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the baseline run")
    b.add_argument(
        "--profile",
        metavar="FILE",
        type=Path,
        help="run the agent under cProfile and write its stats to FILE (inflates its CPU figure)",
    )
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_pipeline)


_PIPELINE_ROWS = (
    ("cpu_ms_per_1k_points", "CPU ms per 1,000 readings"),
    ("cpu_pct_of_core", "CPU % of one core"),
    ("readings_per_s", "readings stored per s"),
    ("rss_mb", "RSS MB"),
    ("start_s", "start to first stored reading s"),
    ("check_s", "check s (wall)"),
    ("check_cpu_s", "check s (CPU)"),
    ("disk_bytes_per_reading", "outbox bytes per reading held"),
    ("disk_dictionary_bytes", "outbox point/state dictionary bytes"),
    ("wire_bytes_per_reading", "MQTT bytes per reading"),
    ("readings_acked_per_s", "readings acked upstream per s"),
)


def _pipeline(args: argparse.Namespace) -> int:
    from edge_agent.devtools.bench_pipeline import bench_pipeline
    from edge_agent.devtools.bench_uplink import BenchError

    def progress(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    if args.points < 1 or args.interval <= 0 or args.seconds <= 0:
        print("--points, --interval and --seconds must be positive", file=sys.stderr)
        return 2
    try:
        res = asyncio.run(
            bench_pipeline(
                points=args.points,
                interval_s=args.interval,
                seconds=args.seconds,
                progress=progress,
                baseline=args.baseline,
                profile=args.profile.resolve() if args.profile else None,
            )
        )
    except BenchError as exc:
        print(f"bench pipeline: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res))
        return 0
    base = res.get("baseline", {})
    print(f"\nthe whole agent, {res['points']:,} points every {res['interval_s']:g} s")
    print(f"{'figure':<34} {'edge-agent':>12} {'baseline':>12}")
    for key, label in _PIPELINE_ROWS:
        a, b = res.get(key), base.get(key)
        print(f"{label:<34} {'-' if a is None else a:>12} {'-' if b is None else b:>12}")
    print("baseline: the same agent with one request per point and one MQTT message per reading")
    return 0


def _bacnet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per method, interleaved")
    parser.add_argument("--changes", type=int, default=100, help="COV changes timed (default 100)")
    parser.add_argument(
        "--response-ms",
        type=float,
        default=10.0,
        metavar="MS",
        help="also measure against devices that answer each request MS later, as real controllers do "
        "(default 10; 0 skips it)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _enforce_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--protocol", choices=["modbus", "bacnet"], default="bacnet",
        help="bacnet: COV-driven (default); modbus: polled every 2 s",
    )  # fmt: skip
    parser.add_argument(
        "--dead-units", type=int, default=0, metavar="N",
        help="Modbus: also run with N silent units on the AC units' endpoint, beside the run without",
    )  # fmt: skip
    parser.add_argument("--violations", type=int, default=200, metavar="N", help="violations (default 200)")
    parser.add_argument(
        "--config", type=Path, default=None, help="site.yaml (default: the example site for --protocol)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _print_table(res: dict[str, Any]) -> None:
    print(
        f"\nModbus TCP on loopback, {res['devices']} devices x {res['points']} float32 points "
        f"(requests per cycle: planned {res['requests_per_cycle']['planned']}, "
        f"per point {res['requests_per_cycle']['per_point']})"
    )
    print(f"{'method':<34} {'points/s':>12} {'CPU s / 1k points':>18}")
    for key, label in (
        ("planned", "(a) edge-agent planned reads"),
        ("per_point", "(b) one request per point"),
        ("ceiling", "(c) bare pymodbus, same blocks"),
    ):
        r = res[key]
        print(f"{label:<34} {r['points_per_s']:>12,.0f} {r['cpu_s_per_1k_points']:>18.4f}")
    print(
        f"planned / per-point: {res['planned_vs_per_point']}x; planned / ceiling: "
        f"{res['planned_vs_ceiling'] * 100:.0f} %; bad readings during (a): {res['planned']['bad_readings']}"
    )


def _rs485(args: argparse.Namespace) -> int:
    from edge_agent.devtools.bench_rs485 import bench_rs485

    def progress(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    if not 1 <= args.points <= 125 or args.units < 1 or args.seconds <= 0:
        print("bench rs485: --points 1..125, --units >= 1, --seconds > 0", file=sys.stderr)
        return 2
    res = asyncio.run(
        bench_rs485(
            units=args.units, points=args.points, seconds=args.seconds, baudrate=args.baudrate,
            progress=progress,
        )
    )  # fmt: skip
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"Modbus RTU, {res['units']} units x {res['points_per_unit']} registers at "
            f"{res['baudrate']} bit/s ({res['bits_per_char']} bits a character): "
            f"{res['points_per_s']:,.1f} points/s; the bus allows "
            f"{res['theoretical_points_per_s']:,.1f} ({res['ratio'] * 100:.0f} %); "
            f"bad readings: {res['bad_readings']}"
        )
    return 0


def _modbus_or_uplink(args: argparse.Namespace) -> int:
    def progress(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    if args.bench == "modbus":
        from edge_agent.devtools.bench_modbus import bench_modbus

        res = asyncio.run(
            bench_modbus(devices=args.devices, points=args.points, seconds=args.seconds, progress=progress)
        )
        if args.json:
            out = {k: res[k] for k in ("devices", "points")}
            for k in ("planned", "per_point", "ceiling"):
                out[k] = {m: res[k][m] for m in ("points_per_s", "cpu_s_per_1k_points")}
            print(json.dumps(out))
        else:
            _print_table(res)
        return 0
    if args.bench == "uplink":
        from edge_agent.devtools.bench_uplink import bench_uplink

        progress(
            f"draining {args.readings:,} readings to mosquitto, then {args.baseline:,} one per message ..."
        )
        res = asyncio.run(bench_uplink(n=args.readings, baseline_n=args.baseline))
        keys = (
            "mqtt_version",
            "payload",
            "drain_readings_per_s",
            "drain_v1_readings_per_s",
            "drain_mqtt311_readings_per_s",
            "wire_bytes_per_reading",
            "bytes_per_reading",
            "per_message_readings_per_s",
            "per_message_wire_bytes_per_reading",
        )
        if args.json:
            print(json.dumps({k: res[k] for k in keys}))
        else:
            wire = res["wire_bytes_per_reading"]
            print(
                f"drain in batches (MQTT v5): payload v2 {res['drain_readings_per_s']:,.0f} readings/s, "
                f"{wire['v2']} wire bytes per reading; payload v1 {res['drain_v1_readings_per_s']:,.0f} "
                f"readings/s, {wire['v1']} wire bytes per reading (3.1.1, v2: "
                f"{res['drain_mqtt311_readings_per_s']:,.0f} readings/s); one v1 message per reading: "
                f"{res['per_message_readings_per_s']:,.0f} readings/s, "
                f"{res['per_message_wire_bytes_per_reading']} wire bytes per reading; "
                f"{res['bytes_per_reading']} bytes on disk per reading"
            )
        return 0
    print(f"unknown benchmark {args.bench!r}", file=sys.stderr)
    return 2


def _bacnet(args: argparse.Namespace) -> int:
    from edge_agent.core.logs import configure_logging

    configure_logging(level="error")

    def progress(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    from edge_agent.devtools.bench_bacnet import bench_bacnet

    if args.response_ms < 0:
        print("--response-ms must not be negative", file=sys.stderr)
        return 2
    res = asyncio.run(
        bench_bacnet(
            seconds=args.seconds, changes=args.changes, progress=progress, response_ms=args.response_ms
        )
    )
    keys = ("rpm", "per_point", "ceiling")
    if args.json:
        out: dict[str, Any] = {
            k: {m: res[k][m] for m in ("points_per_s", "cpu_s_per_1k_points")} for k in keys
        }
        if "slow_device" in res:
            slow = res["slow_device"]
            out["slow_device"] = {
                "response_ms": slow["response_ms"],
                **{k: {m: slow[k][m] for m in ("points_per_s", "cpu_s_per_1k_points")} for k in keys},
            }
        print(json.dumps({**out, "cov_latency_ms": res["cov_latency_ms"]}))
        return 0
    runs = [("devices answer at once", res)]
    if "slow_device" in res:
        runs.append(
            (
                f"devices answer {res['slow_device']['response_ms']:g} ms after each request",
                res["slow_device"],
            )
        )
    for title, r0 in runs:
        print(
            f"\nBACnet/IP on loopback, {r0['points']} objects on 4 devices "
            f"(simulator in a child process), {title}"
        )
        print(f"{'method':<40} {'points/s':>10} {'CPU s / 1k points':>18}")
        for key, label in (
            ("rpm", "(a) edge-agent RPM batches"),
            ("per_point", "(b) one ReadProperty per property"),
            ("ceiling", "(c) bare bacpypes3 RPM, same objects"),
        ):
            r = r0[key]
            print(f"{label:<40} {r['points_per_s']:>10,.0f} {r['cpu_s_per_1k_points']:>18.4f}")
    cov = res["cov_latency_ms"]
    print(
        f"bad readings during (a): {res['rpm']['bad_readings']}; COV latency (model change -> driver, "
        f"in-process simulator): p50 {cov['p50']} ms, p95 {cov['p95']} ms"
    )
    return 0


def _enforce(args: argparse.Namespace) -> int:
    def progress(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    if args.violations < 1:
        print("--violations must be at least 1", file=sys.stderr)
        return 2
    if args.dead_units < 0 or (args.dead_units and args.protocol != "modbus"):
        print("--dead-units takes a count >= 0 and needs --protocol modbus", file=sys.stderr)
        return 2
    from edge_agent.devtools.bench_enforce import BENCH_WRITE_LIMIT, bench_enforce

    runs = [0, args.dead_units] if args.dead_units else [0]
    results = []
    for n in runs:
        results.append(
            asyncio.run(
                bench_enforce(
                    protocol=args.protocol,
                    violations=args.violations,
                    config=args.config,
                    progress=progress,
                    dead_units=n,
                )
            )
        )
    keys = ("protocol", "dead_units", "poll_interval_s", "violations", "latency_ms")
    if args.json:
        for res in results:
            print(json.dumps({k: res[k] for k in keys}))
        return 0
    for res in results:
        target = 500.0 if res["protocol"] == "bacnet" else res["poll_interval_s"] * 1000 + 250
        lat = res["latency_ms"]
        dead = f", {res['dead_units']} silent units on the same endpoint" if res["dead_units"] else ""
        print(
            f"\nenforcement latency, {res['protocol']}{dead}: {res['violations']} violations "
            f"({res['failed']} not corrected within 30 s), AC poll interval {res['poll_interval_s']} s\n"
            f"  p50 {lat['p50']} ms   p95 {lat['p95']} ms   max {lat['max']} ms   "
            f"(target p95 <= {target:.0f} ms: {'met' if lat['p95'] <= target else 'MISSED'})\n"
            f"  simulator in-process; policy copy with max_writes_per_point_per_hour={BENCH_WRITE_LIMIT}; "
            f"wall {res['wall_s']} s, CPU {res['cpu_s']} s, load average {res['load_avg_1m']}"
        )
    return 0

"""`edge-agent platform check`: commissioning against the municipal energy platform, step by step.

Connect, authenticate (id_validate), one heartbeat (and the clock offset it shows), and with
``--send-test-period`` the last ended period from the ledger, waiting for its acknowledgement. Each step's
result is printed in Chinese and English; exit 0 when every step passed, 1 at the first failure, 2 for a
bad configuration or a site without uplink.platform.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.cli.common import add_config, db_path, load_or_exit

__all__ = ["check_main", "register"]

STEPS = {
    "key": "读取密钥 key file",
    "connect": "连接 connect",
    "id_validate": "身份认证 authentication (id_validate)",
    "heartbeat": "心跳 heartbeat",
    "data": "上报测试数据 test period (report)",
}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "platform",
        help="the municipal energy platform (能耗监测平台): commissioning check",
        description="Commands for the municipal energy-monitoring platform of uplink.platform in site.yaml.",
    )
    psub = p.add_subparsers(dest="platform_command", metavar="SUBCOMMAND", required=True)
    c = psub.add_parser(
        "check",
        help="connect, authenticate, heartbeat and optionally send one test period; print each step",
        description="Commissioning: connect to uplink.platform, authenticate with the key, send one "
        "heartbeat (showing the platform's clock against ours), and with --send-test-period send the last "
        "ended period from the ledger and wait for its acknowledgement. Each step in Chinese and English.",
    )
    add_config(c)
    c.add_argument("--send-test-period", action="store_true", help="also send the last ended period")
    c.add_argument("--db", help="state database for --send-test-period (default: storage.path of site.yaml)")
    c.add_argument("--json", action="store_true", help="one JSON object per step")
    c.set_defaults(func=check_main)


def check_main(args: argparse.Namespace) -> int:
    cfg = load_or_exit(args.config)
    up = cfg.site.uplink
    if up is None or up.platform is None:
        print(f"{args.config}: no uplink.platform in site.yaml; nothing to check", file=sys.stderr)
        return 2
    as_json = args.json or not sys.stdout.isatty()

    def show(step: str, ok: bool, detail: str) -> None:
        if as_json:
            print(json.dumps({"step": step, "ok": ok, "detail": detail}, ensure_ascii=False), flush=True)
        else:
            mark = "通过 ok  " if ok else "失败 FAIL"
            print(f"{mark}  {STEPS[step]}: {detail}", flush=True)

    energy = None
    if args.send_test_period:
        energy = _test_period(cfg, args)
    return asyncio.run(_check(cfg, up.platform, show, energy))


def _test_period(cfg: Any, args: argparse.Namespace) -> Any:
    from edge_agent.store.db import open_state_db
    from edge_agent.store.ledger import Ledger
    from edge_agent.uplink.platform.periods import ledger_source

    path = db_path(args)
    if not path.exists():
        print(
            f"{path}: no state database; the test period would be empty (has the agent run?)", file=sys.stderr
        )
        raise SystemExit(2)
    return ledger_source(Ledger.from_config(cfg, open_state_db(path)))


async def _check(cfg: Any, options: Any, show: Any, energy: Any) -> int:
    from edge_agent.store.ledger import meters_from_config
    from edge_agent.uplink.platform.client import PlatformError, PlatformSession, load_platform_key
    from edge_agent.uplink.platform.periods import period_bounds, period_values
    from edge_agent.uplink.platform.protocol import FunctionValue, MeterValues, data_message

    tz = ZoneInfo(cfg.site.timezone)
    step = "key"
    session = None
    try:
        key = load_platform_key(options.key_file)
        show("key", True, f"{options.key_file} (16 characters)")
        session = PlatformSession(
            options=options, key=key, building_id=cfg.site.building_id, gateway_id=cfg.site.gateway_id
        )
        step = "connect"
        await session.connect()
        show("connect", True, f"{options.host}:{options.port}")
        step = "id_validate"
        await session.authenticate()
        show("id_validate", True, f"pass (building {cfg.site.building_id}, gateway {cfg.site.gateway_id})")
        step = "heartbeat"
        server = await session.heartbeat()
        if server is None:
            show("heartbeat", True, "answered, without a time")
        else:
            offset = (datetime.now(tz) - server.replace(tzinfo=tz)).total_seconds()
            show(
                "heartbeat",
                True,
                f"platform time {server:%Y-%m-%d %H:%M:%S}, our clock {offset:+.0f} s from it",
            )
        if energy is not None:
            step = "data"
            period_s = options.period_min * 60
            end = period_bounds(datetime.now(tz), period_s, tz)[0]
            start = period_bounds(end - timedelta(seconds=1), period_s, tz)[0]
            codes = {m.point_id: m.code for m in meters_from_config(cfg)}
            values = period_values(options.meters, codes, energy(start, end))
            meters: dict[str, list[FunctionValue]] = {}
            for v in values:
                meters.setdefault(v.meter_id, []).append(
                    FunctionValue(v.function_id, v.coding, v.value, v.error)
                )
            await session.send(
                data_message(
                    building_id=cfg.site.building_id,
                    gateway_id=cfg.site.gateway_id,
                    operation="report",
                    sequence=1,
                    period_start=start.astimezone(tz),
                    meters=tuple(MeterValues(k, tuple(fs)) for k, fs in meters.items()),
                )
            )
            while True:
                reply = await session.receive(options.ack_timeout_s)
                if reply.type == "data" and reply.operation.endswith("_ack"):
                    break
            summary = (
                ", ".join(f"{v.meter_id}/{v.function_id} {v.coding} {v.value:g}" for v in values)
                or "no meters"
            )
            show("data", True, f"period {start.astimezone(tz):%Y-%m-%d %H:%M} acknowledged: {summary}")
        return 0
    except PlatformError as exc:
        show(exc.step if exc.step in STEPS else step, False, str(exc))
        return 1
    except (OSError, TimeoutError) as exc:
        show(step, False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return 1
    finally:
        if session is not None:
            await session.close()

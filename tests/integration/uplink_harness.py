"""A stand-in agent for the SIGKILL test: opens the state DB, appends readings in a loop, runs the uplink.

    python -m tests.integration.uplink_harness --db PATH --port N [--batch 20] [--interval 0.01]

Prints one JSON line per committed batch: {"first": seq, "last": seq} (after the commit, so a line
printed means the batch is durable). Logs go to stderr, as the agent's do. Runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime

from drivers.base import Quality, Reading
from edge_agent.config.settings import MqttUplink, StorageOptions
from edge_agent.core.clock import SystemClock
from edge_agent.core.logs import configure_logging
from edge_agent.core.validate import ValidatedReading
from edge_agent.store.db import open_state_db
from edge_agent.store.outbox import Outbox
from edge_agent.uplink.mqtt import MqttUplinkService


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--prefix", default="t")
    ap.add_argument("--building", default="110108B0001")
    ap.add_argument("--gateway", default="gw-test")
    args = ap.parse_args(argv)
    configure_logging(json=True)  # stderr: stdout carries the seq ranges
    clock = SystemClock()
    conn = open_state_db(args.db)
    outbox = Outbox(conn=conn, options=StorageOptions(), clock=clock, gateway_id=args.gateway)
    svc = MqttUplinkService(
        options=MqttUplink(
            host="127.0.0.1",
            port=args.port,
            topic_prefix=args.prefix,
            batch_max=50,
            backoff_initial_s=0.05,
            max_backoff_s=0.2,
            connect_timeout_s=2,
            publish_timeout_s=5,
            keepalive_s=5,
        ),
        outbox=outbox,
        gateway_id=args.gateway,
        building_id=args.building,
        audit_head=None,
        clock=clock,
    )

    async def appender() -> None:
        n = 0
        while True:
            ts = datetime.now(UTC)
            batch = [
                ValidatedReading(
                    reading=Reading(point_id=f"p{i}", value=float(n + i), ts=ts, quality=Quality.GOOD),
                    flags=(),
                    unit="kWh",
                )
                for i in range(args.batch)
            ]
            n += args.batch
            rng = await outbox.aappend(batch)
            if rng is not None:
                sys.stdout.write(json.dumps({"first": rng[0], "last": rng[1]}) + "\n")
                sys.stdout.flush()
            await asyncio.sleep(args.interval)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(svc.run(), name="uplink")
        tg.create_task(appender(), name="appender")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

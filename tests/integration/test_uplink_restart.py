"""SIGKILL while holding a backlog: after a restart every seq arrives, with no gap, and seqs keep growing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

from tests.integration.conftest import Broker
from tests.integration.test_uplink import Subscriber, assert_no_gap, running, wait_until

ROOT = Path(__file__).resolve().parents[2]


class Harness:
    def __init__(self, db: Path, port: int) -> None:
        self.db, self.port = db, port
        self.ranges: list[tuple[int, int]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def last(self) -> int:
        return self.ranges[-1][1] if self.ranges else 0

    async def start(self) -> None:
        self.ranges = []
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.integration.uplink_harness", "--db", str(self.db),
            "--port", str(self.port), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read(), name="harness-stdout")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            d = json.loads(line)
            self.ranges.append((d["first"], d["last"]))

    async def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)


async def test_sigkill_with_backlog_then_restart(broker: Broker, tmp_path: Path) -> None:
    sub = Subscriber(broker.port)
    h = Harness(tmp_path / "state.db", broker.port)
    try:
        async with running(sub.run, "sub"):
            await asyncio.wait_for(sub.subscribed.wait(), 5)
            await h.start()
            await wait_until(lambda: len(set(sub.seqs)) > 200, 15, "readings from the harness")
            broker.stop()
            at_stop = h.last
            await wait_until(lambda: h.last > at_stop + 400, 15, "a backlog while the broker is down")
            await h.kill()  # SIGKILL, backlog unsent
            before_kill = h.ranges
            killed_last = before_kill[-1][1]
            broker.start()
            await asyncio.wait_for(sub.subscribed.wait(), 5)
            await h.start()  # same DB, broker up
            await wait_until(lambda: len(h.ranges) >= 10, 15, "appends after the restart")
            target = h.ranges[9][1]
            await wait_until(lambda: bool(sub.seqs) and max(sub.seqs) >= target, 20, "backlog and new ones")
            after_restart = h.ranges
    finally:
        await h.kill()

    assert after_restart[0][0] > killed_last, "seqs continue to grow across the restart"
    assert_no_gap(sub.seqs, target)
    got = set(sub.seqs)
    assert all(s in got for first, last in before_kill for s in range(first, last + 1))

"""Suite-wide guard: a test that leaks threads or child processes fails (as pymodbus checks its own)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from edge_agent.core.logs import LIBRARY_FLOORS


def _children() -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        try:
            kids.update(int(x) for x in (task / "children").read_text().split())
        except OSError:
            pass
    # Zombies reaped later still count as leaks only if they keep running.
    alive = set()
    for pid in kids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    threads_before = set(threading.enumerate())
    kids_before = _children()
    yield
    deadline = time.monotonic() + 2.0
    while True:
        extra_threads = [
            t for t in set(threading.enumerate()) - threads_before if t.is_alive() and not t.daemon
        ]
        extra_kids = _children() - kids_before
        if not extra_threads and not extra_kids:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    # Module/session fixtures (a shared broker) legitimately outlive a test: they are started before.
    msg = []
    if extra_threads:
        msg.append(f"leaked threads: {[t.name for t in extra_threads]}")
    if extra_kids:
        msg.append(f"leaked child processes: {sorted(extra_kids)}")
    pytest.fail("; ".join(msg))


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A test that calls configure_logging (main(), the demo, a bench) must not leave its handler, bound to
    a captured stream that closes with the test, on the root logger for the tests after it."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    floors = {name: logging.getLogger(name).level for name in LIBRARY_FLOORS}
    yield
    structlog.configure(**saved)
    for h in list(root.handlers):
        if h not in handlers and type(h).__module__ == "edge_agent.core.logs":
            root.removeHandler(h)
    root.setLevel(level)
    for name, lvl in floors.items():
        logging.getLogger(name).setLevel(lvl)
    logging.captureWarnings(False)

"""core.logs: structlog and stdlib records leave through one handler, as JSON lines or console lines."""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import structlog

from edge_agent.core.logs import configure_logging, get_logger
from edge_agent.uplink.mqtt import _PendingWarningFilter


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    text = buf.getvalue()
    out = [json.loads(line) for line in text.splitlines()]  # raises on a line that is not JSON
    assert all(isinstance(o, dict) for o in out)
    return out


def test_json_lines_for_structlog_stdlib_warnings_and_tracebacks() -> None:
    buf = io.StringIO()
    configure_logging(level="info", json=True, stream=buf)
    log = get_logger("edge_agent.test", device="dev-1")
    log.info("device_up", latency_ms=1.5)
    log.debug("too_quiet")
    logging.getLogger("bacpypes3.app").info("packet noise")  # below the library floor
    logging.getLogger("pymodbus.logging").error("per-request noise")  # pymodbus floor: CRITICAL
    logging.getLogger("aiomqtt").warning("broker %s said no", "127.0.0.1:1883")
    logging.getLogger("some.lib").info("plain %d", 3, extra={"endpoint": "10.0.0.9:502"})
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old API", DeprecationWarning, stacklevel=1)
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        log.exception("poll_failed")
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    recs = _lines(buf)
    assert [r["event"] for r in recs] == [
        "device_up",
        "broker 127.0.0.1:1883 said no",
        "plain 3",
        recs[3]["event"],
        "poll_failed",
        "Task exception was never retrieved",
    ]
    first = recs[0]
    assert list(first)[:4] == ["timestamp", "level", "logger", "event"]
    assert first["device"] == "dev-1" and first["latency_ms"] == 1.5 and first["logger"] == "edge_agent.test"
    assert (recs[1]["level"], recs[1]["logger"]) == ("warning", "aiomqtt")
    assert recs[2]["endpoint"] == "10.0.0.9:502"
    assert recs[3]["logger"] == "py.warnings" and "old API" in recs[3]["event"]
    for r in recs[4:]:
        assert r["level"] == "error" and "ValueError: bad\nvalue" in r["exception"]


def test_the_level_applies_to_stdlib_records_too_and_reconfiguring_replaces_the_handler() -> None:
    buf = io.StringIO()
    configure_logging(level="info", json=True, stream=io.StringIO())
    configure_logging(level="warning", json=True, stream=buf)
    ours = [h for h in logging.getLogger().handlers if type(h).__module__ == "edge_agent.core.logs"]
    assert len(ours) == 1
    get_logger("edge_agent.test").info("not_shown")
    logging.getLogger("edge_agent.x").info("not shown either")
    get_logger("edge_agent.test").warning("shown")
    logging.getLogger("edge_agent.x").warning("shown too")
    assert [r["event"] for r in _lines(buf)] == ["shown", "shown too"]


def test_json_is_the_default_off_a_terminal_and_console_lines_otherwise() -> None:
    buf = io.StringIO()  # not a TTY
    configure_logging(stream=buf)
    structlog.get_logger("edge_agent.test").info("uplink_connected", broker="b:1883")
    assert _lines(buf)[0]["broker"] == "b:1883"

    console = io.StringIO()
    configure_logging(json=False, stream=console)
    structlog.get_logger("edge_agent.test").info("uplink_connected", broker="b:1883")
    logging.getLogger("aiomqtt").warning("from a library")
    text = console.getvalue()
    assert "uplink_connected" in text and "broker=b:1883" in text and "from a library" in text
    assert not text.lstrip().startswith("{")


def test_aiomqtt_pending_publish_warning_is_demoted_and_dropped() -> None:
    buf = io.StringIO()
    configure_logging(level="info", json=True, stream=buf)
    mqtt_log = logging.getLogger("edge_agent.uplink.aiomqtt")
    flt = _PendingWarningFilter()
    mqtt_log.addFilter(flt)
    try:
        mqtt_log.warning("There are %d pending publish calls.", 20)
        mqtt_log.warning("Message queue is full. Discarding message.")
    finally:
        mqtt_log.removeFilter(flt)
    assert [r["event"] for r in _lines(buf)] == ["Message queue is full. Discarding message."]


def test_journald_stream_gets_priority_prefixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with (tmp_path / "journal").open("w+", encoding="utf-8") as f:
        st = os.fstat(f.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        configure_logging(level="info", stream=f)
        get_logger("edge_agent.test").info("uplink_connected")
        logging.getLogger("aiomqtt").error("from a library")
        get_logger("edge_agent.test").warning("uplink_disconnected")
        f.flush()
        lines = (tmp_path / "journal").read_text(encoding="utf-8").splitlines()
    assert [line[:4] for line in lines] == ["<6>{", "<3>{", "<4>{"]
    assert [json.loads(line[3:])["event"] for line in lines][2] == "uplink_disconnected"
    other = io.StringIO()  # the variable inherited, but this stream is not the journal's
    configure_logging(level="info", stream=other)
    get_logger("edge_agent.test").info("uplink_connected")
    assert other.getvalue().startswith("{")

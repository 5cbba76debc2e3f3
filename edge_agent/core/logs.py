"""One logging path: structlog events and stdlib records alike leave through one handler.

Our code logs with structlog (snake_case event names, context bound as fields: ``device=``, ``point=``,
``endpoint=``, ``broker=``). Libraries log through stdlib ``logging`` (pymodbus, bacpypes3, aiomqtt and
paho, asyncio, ``warnings``); structlog is set up on top of stdlib logging, so both reach the same
handler, whose :class:`structlog.stdlib.ProcessorFormatter` renders every record the same way: one JSON
object per line (``--json-logs``, journald, pipes), or readable console lines on a terminal. One level
applies to both; a few chatty libraries get a floor above it. On the journald stream each line carries
a ``<N>`` priority prefix, which journald strips (``journalctl -o cat`` shows the bare JSON).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

__all__ = ["LIBRARY_FLOORS", "configure_logging", "get_logger"]

# Libraries that log per request or per packet: only what is at least this severe gets through.
# pymodbus logs an ERROR for every failed request; the drivers log the state change instead.
LIBRARY_FLOORS: dict[str, int] = {
    "pymodbus": logging.CRITICAL,
    "bacpypes3": logging.WARNING,
    "aiomqtt": logging.WARNING,
    "mqtt": logging.WARNING,  # aiomqtt's default logger name
    "edge_agent.uplink.aiomqtt": logging.WARNING,  # the logger the uplink hands aiomqtt (and paho)
}


# sd-daemon(3) priority prefixes: journald strips "<N>" and files the line at that priority, so
# `journalctl -p warning` works; without it every line of the service is filed as info.
_SYSLOG_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure_logging installs on the root logger (found again and replaced on reconfigure)."""

    def __init__(self, stream: TextIO, *, journald: bool) -> None:
        super().__init__(stream)
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.journald:
            return text
        prio = next((p for level, p in _SYSLOG_PRIORITY if record.levelno >= level), 7)
        return f"<{prio}>{text}"


def configure_logging(*, level: str = "info", json: bool | None = None, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (default stderr) at ``level``.

    ``json=None`` picks JSON when ``stream`` is not a terminal. Calling it again replaces the set-up.
    """
    out: TextIO = stream if stream is not None else sys.stderr
    tty = _isatty(out)
    if json is None:
        json = not tty
    threshold = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if json:
        # Tracebacks become one string field: a record stays one line.
        final += [
            structlog.processors.format_exc_info,
            _lead_with_when_and_what,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ]
    else:
        final.append(structlog.dev.ConsoleRenderer(colors=tty))
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=final,
    )
    handler = _OurHandler(out, journald=_is_journal_stream(out))
    handler.setFormatter(formatter)
    handler.setLevel(threshold)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    for name, floor in LIBRARY_FLOORS.items():
        logging.getLogger(name).setLevel(max(floor, threshold))
    logging.captureWarnings(True)  # warnings.warn(...) as records too, not bare lines on stderr


_LEAD = ("timestamp", "level", "logger", "event")


def _lead_with_when_and_what(_logger: Any, _name: str, event_dict: Any) -> Any:
    """Key order for a reader of raw JSON lines: time, level, logger and event first, then the fields."""
    lead = {k: event_dict.pop(k) for k in _LEAD if k in event_dict}
    return {**lead, **event_dict}


def _is_journal_stream(stream: Any) -> bool:
    """True when ``stream`` is the journald stream systemd connected (``$JOURNAL_STREAM`` is its
    ``device:inode``; a child that inherited the variable but writes elsewhere does not match)."""
    try:
        dev, ino = (int(x) for x in os.environ["JOURNAL_STREAM"].split(":"))
        st = os.fstat(stream.fileno())
    except (KeyError, ValueError, OSError, AttributeError):  # io.UnsupportedOperation is an OSError
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def get_logger(name: str = "edge_agent", **bind: Any) -> Any:
    """A structlog logger named ``name`` (the ``logger`` field) with ``bind`` as context."""
    return structlog.get_logger(name).bind(**bind)

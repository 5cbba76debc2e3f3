"""sd_notify(3) in a few lines of stdlib: datagrams to $NOTIFY_SOCKET.

Under systemd (Type=notify) the service says READY=1 once it serves, WATCHDOG=1 while its loops make
progress, STATUS=... for `systemctl status`, RELOADING=1 around a SIGHUP reload and STOPPING=1 on the
way out. Outside systemd $NOTIFY_SOCKET is unset and every call is a cheap no-op. A notification is a
courtesy to the service manager: a failure to send is logged once and never raised into the caller,
so a broken socket can never take the agent down (the watchdog will, if it matters).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Protocol

import structlog

__all__ = ["Notifier", "SdNotifier", "watchdog_interval"]

_log = structlog.get_logger("edge_agent.sdnotify")


class Notifier(Protocol):
    """What Health's watchdog loop and the runtime need; SdNotifier and test fakes implement it."""

    def watchdog(self) -> bool: ...

    def status(self, text: str) -> bool: ...


class SdNotifier:
    """Sends notifications to the socket named by $NOTIFY_SOCKET (or `socket_path`).

    `socket_path` starting with '@' names an abstract socket (Linux), as systemd writes it.
    Every method returns True when the datagram left, False when disabled or the send failed.
    """

    def __init__(self, *, socket_path: str | None = None, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = socket_path if socket_path is not None else env.get("NOTIFY_SOCKET")
        self._address: str | bytes | None = None
        if path:
            # Abstract namespace: systemd writes '@name', the kernel wants a leading NUL byte.
            self._address = "\0" + path[1:] if path.startswith("@") else path
        self._path = path or None
        self._sock: socket.socket | None = None
        self._failing = False  # log the first failure of a run of failures, not each one

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def socket_path(self) -> str | None:
        return self._path

    def notify(self, *fields: str) -> bool:
        """Send `fields` ('KEY=value' each) as one datagram. Never raises."""
        if self._address is None or not fields:
            return False
        payload = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # A full receive queue must not stall the event loop; a lost ping is retried next tick.
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._failing:
                _log.warning("sd_notify_failed", socket=self._path, fields=list(fields), error=repr(exc))
            self._failing = True
            return False
        if self._failing:
            _log.info("sd_notify_recovered", socket=self._path)
            self._failing = False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields = ["READY=1"]
        if status is not None:
            fields.append(_status_field(status))
        return self.notify(*fields)

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(_status_field(text))

    def extend_timeout(self, seconds: float, status: str) -> bool:
        """Start-up (or stopping) needs ``seconds`` more than the unit's timeout allows, from now."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}", _status_field(status))

    def stopping(self, status: str | None = None) -> bool:
        fields = ["STOPPING=1"]
        if status is not None:
            fields.append(_status_field(status))
        return self.notify(*fields)

    def reloading(self, status: str | None = None) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (which Type=notify-reload, systemd >= 253, requires).

        Send ready() once the reload finished, whatever its outcome.
        """
        fields = ["RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"]
        if status is not None:
            fields.append(_status_field(status))
        return self.notify(*fields)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status_field(text: str) -> str:
    # The protocol is newline-separated KEY=VALUE: a newline inside STATUS would start a bogus field.
    return "STATUS=" + " ".join(text.splitlines())


def watchdog_interval(environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when no watchdog is armed.

    Like sd_watchdog_enabled(3): $WATCHDOG_PID, when set, must name this process (a child that
    inherited the environment must not ping for its parent).
    """
    env = os.environ if environ is None else environ
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        _log.warning("watchdog_usec_invalid", value=raw)
        return None
    if usec <= 0:
        return None
    wd_pid = env.get("WATCHDOG_PID")
    if wd_pid:
        try:
            if int(wd_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            _log.warning("watchdog_pid_invalid", value=wd_pid)
            return None
    return usec / 1_000_000 / 2

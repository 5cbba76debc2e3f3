"""DL/T 645 cross-checks over a site's raw `devices:` data: one address once per port, one set of line
settings per port, and the port itself (a warning: `check` may run on another machine than the gateway)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from drivers.dlt645.options import Dlt645Device
from drivers.spec import DeviceEntry, SiteIssues, YamlPath

__all__ = ["check_site"]

_LINE_KEYS = ("baudrate", "parity", "stopbits")


def check_site(devices: Sequence[DeviceEntry], out: SiteIssues) -> None:
    meters: dict[tuple[str, str], YamlPath] = {}
    lines: dict[str, tuple[tuple[object, ...], YamlPath]] = {}
    for entry in devices:
        dev, dpath = entry.data, entry.path
        port, address = dev.get("port"), dev.get("address")
        if not isinstance(port, str) or not isinstance(address, str):
            continue
        if (port, address) in meters:
            out.add(
                [*dpath, "address"],
                f"meter {address} on {port} is already polled as {out.where(meters[(port, address)])}",
            )
        else:
            meters[(port, address)] = (*dpath, "address")
        settings = tuple(dev.get(k, Dlt645Device.model_fields[k].default) for k in _LINE_KEYS)
        first = lines.get(port)
        if first is None:
            lines[port] = (settings, (*dpath, "port"))
            if not os.path.exists(port):
                out.add(
                    [*dpath, "port"], f"serial port {port} does not exist on this machine", severity="warning"
                )
            elif not os.access(port, os.R_OK | os.W_OK):
                out.add(
                    [*dpath, "port"],
                    f"serial port {port} is not readable and writable by this user: add the service user to "
                    "the port's group (dialout) and enable deploy/systemd's serial drop-in",
                    severity="warning",
                )
        elif first[0] != settings:
            out.add(
                [*dpath, "port"],
                f"{port} is set to {first[0]} by {out.where(first[1])}, here {settings}: "
                "every meter on one bus uses the same line settings",
            )

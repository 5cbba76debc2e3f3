"""DL/T 645 cross-checks over a site's raw `devices:` data: one address once per port, one set of line
settings per port, and the port itself (drivers.serialbus.check_meters, shared with CJ/T 188)."""

from __future__ import annotations

from drivers.serialbus import check_meters as check_site

__all__ = ["check_site"]

"""edge-agent: the building gateway's agent (wiring, runtime loops, store, uplink, audit, CLI)."""

__version__ = "0.1.0"

"""What the command modules share: the -c/--config option, loading a site or exiting 2, the state database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_SITE", "add_config", "db_path", "load_or_exit"]

DEFAULT_SITE = "config/site.yaml"


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        default=DEFAULT_SITE,
        metavar="SITE_YAML",
        help=f"site.yaml to use (default: {DEFAULT_SITE}); it names its policy.yaml",
    )


def _port_warning(issue: Any) -> bool:
    """A warning about this machine's serial ports (edge_agent/config/load.py, _check_port_here)."""
    return bool(issue.severity == "warning" and issue.message.startswith("serial port "))


def load_or_exit(path: str) -> Any:
    """The LoadedConfig of ``path``, its warnings on stderr; exit 2 with every error when it is invalid.
    Not the warnings about this machine's serial ports: beside the point for the commands that come here
    (state database tools, status, the demo on its ptys); check and run load the site themselves and
    say them."""
    from edge_agent.config.load import ConfigError, load_config

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print(f"{path}: configuration invalid; run `edge-agent check -c {path}`", file=sys.stderr)
        raise SystemExit(2) from None
    except FileNotFoundError as exc:
        print(f"{path}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for w in cfg.warnings:
        if not _port_warning(w):
            print(str(w), file=sys.stderr)
    return cfg


def db_path(args: argparse.Namespace) -> Path:
    """--db wins; else the state database site.yaml names (or the one under --state-dir)."""
    if getattr(args, "db", None):
        return Path(args.db)
    from edge_agent.service.service import state_paths

    return state_paths(load_or_exit(args.config), getattr(args, "state_dir", None))[0]

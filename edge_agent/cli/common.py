"""What the command modules share: the -c/--config option, loading a site or exiting 2, the state database."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_SITE", "add_config", "db_path", "load_or_exit", "port_warning"]

DEFAULT_SITE = "config/site.yaml"


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        default=DEFAULT_SITE,
        metavar="SITE_YAML",
        help=f"site.yaml to use (default: {DEFAULT_SITE}); it names its policy.yaml",
    )


def load_or_exit(path: str, *, hide: Callable[[Any, Any], bool] | None = None) -> Any:
    """The LoadedConfig of ``path``, its warnings on stderr (but those ``hide(cfg, issue)`` is true of);
    exit 2 with every error when it is invalid."""
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
        if hide is None or not hide(cfg, w):
            print(str(w), file=sys.stderr)
    return cfg


def port_warning(_cfg: Any, issue: Any) -> bool:
    """A warning about this machine's serial ports (edge_agent/config/load.py, _check_port_here): beside
    the point for commands that only read the state database or ask the agent; check and run say it."""
    return bool(issue.severity == "warning" and issue.message.startswith("serial port "))


def db_path(args: argparse.Namespace) -> Path:
    """--db wins; else the state database site.yaml names (or the one under --state-dir)."""
    if getattr(args, "db", None):
        return Path(args.db)
    from edge_agent.service.service import state_paths

    return state_paths(load_or_exit(args.config, hide=port_warning), getattr(args, "state_dir", None))[0]

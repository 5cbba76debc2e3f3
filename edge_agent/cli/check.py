"""`edge-agent check` and `edge-agent schema`: validate site.yaml and policy.yaml; print the JSON Schemas."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

from edge_agent.cli.common import add_config

__all__ = ["check_main", "register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="validate site.yaml and its policy.yaml (exit 0 valid, 2 invalid)",
        description="Validate site.yaml and the policy.yaml it names. Every problem is "
        "printed as FILE:LINE:COL: yaml.path: message, all of them in one run.",
    )
    add_config(p)
    p.add_argument("site", nargs="?", help="site.yaml (same as -c)")
    p.add_argument("--json", action="store_true", help="one JSON object: ok, counts and every issue")
    p.add_argument(
        "--as-service",
        nargs="?",
        const="edge-agent",
        metavar="USER",
        help="judge whether USER (default edge-agent, the unit's User=) can read the credentials, TLS and "
        "key files site.yaml names, from their modes and owners, and open its serial ports with the groups "
        "and DeviceAllow= of the unit's drop-ins (run as root)",
    )
    p.add_argument(
        "--explain-addresses",
        action="store_true",
        help="also print every point's resolved protocol address and function codes (after `ref:` and "
        "`address_base:`)",
    )
    p.set_defaults(func=_check)

    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of site.yaml (or policy.yaml)",
        description="Print the JSON Schema editors use for completion and checks.",
    )
    p.add_argument("--policy", action="store_true", help="the policy.yaml schema instead of site.yaml's")
    p.add_argument("--write", metavar="DIR", help="write schema.json and policy.schema.json into DIR")
    p.set_defaults(func=_schema)


def check_main(
    path: str | Path,
    *,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    as_user: str | None = None,
    today: date | None = None,
    explain: bool = False,
) -> int:
    """`edge-agent check`: issues to stderr, a one-line summary to stdout; 0 valid, 2 invalid.

    With ``today``, also warns when this or next year's calendar lacks make-up working days."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    from edge_agent.config.load import ConfigError, load_config

    try:
        cfg = load_config(path)
        _raise_file_problems(cfg, str(path), as_user)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=err)
        n_err, n_warn = len(exc.errors), len(exc.issues) - len(exc.errors)
        print(f"{path}: INVALID, {n_err} error(s), {n_warn} warning(s)", file=err)
        return 2
    warnings = [*cfg.warnings, *_calendar(cfg, today)]
    for issue in warnings:
        print(issue, file=err)
    n_points = sum(1 for _ in cfg.points())
    warn = f", {len(warnings)} warning(s)" if warnings else ""
    print(
        f"{path}: OK, {len(cfg.site.devices)} device(s), {n_points} point(s), {len(cfg.site.zones)} zone(s), "
        f"policy {os.path.normpath(Path(path).parent / cfg.site.policy)}{warn}",
        file=out,
    )
    if explain:
        for line in _address_lines(cfg):
            print(line, file=out)
    return 0


def _raise_file_problems(cfg: Any, path: str, as_user: str | None) -> None:
    """The credentials, TLS and key files site.yaml names: missing or unreadable ones are errors."""
    from edge_agent.config.files import check_files
    from edge_agent.config.load import ConfigError, ConfigIssue

    try:
        issues = check_files(cfg, as_user=as_user, file=path)
    except KeyError:
        issues = [ConfigIssue(path, 1, 1, "", f"--as-service: no user {as_user!r} on this system")]
    if issues:
        raise ConfigError([*issues, *cfg.warnings])


def _calendar(cfg: Any, today: date | None) -> list[Any]:
    if today is None:
        return []
    from edge_agent.config.calendarcheck import calendar_issues

    return calendar_issues(cfg, today)


def _address_lines(cfg: Any) -> list[str]:
    """One row per point: device, point, and where its driver reads it (protocols that can say so)."""
    rows = [["DEVICE", "POINT", "ADDRESS"]]
    for device, point in cfg.points():
        describe = getattr(point, "describe_address", None)
        rows.append([device.id, point.id, describe() if callable(describe) else "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}" for r in rows]


def _check(args: argparse.Namespace) -> int:
    path = args.site or args.config
    today = datetime.now(UTC).date()
    if not args.json:
        return check_main(path, as_user=args.as_service, today=today, explain=args.explain_addresses)
    import dataclasses
    import json

    from edge_agent.config.load import ConfigError, load_config

    doc: dict[str, Any]
    try:
        cfg = load_config(path)
        _raise_file_problems(cfg, str(path), args.as_service)
    except ConfigError as exc:
        doc = {"ok": False, "issues": [dataclasses.asdict(i) for i in exc.issues]}
    except OSError as exc:
        doc = {
            "ok": False,
            "issues": [
                {
                    "file": path,
                    "line": 0,
                    "col": 0,
                    "path": "",
                    "message": exc.strerror or str(exc),
                    "severity": "error",
                }
            ],
        }
    else:
        doc = {
            "ok": True, "devices": len(cfg.site.devices), "points": sum(1 for _ in cfg.points()),
            "zones": len(cfg.site.zones),
            "issues": [dataclasses.asdict(i) for i in (*cfg.warnings, *_calendar(cfg, today))],
        }  # fmt: skip
    print(json.dumps(doc, ensure_ascii=False))
    return 0 if doc["ok"] else 2


def _schema(args: argparse.Namespace) -> int:
    import json

    from edge_agent.config.load import policy_json_schema, site_json_schema, write_schema_files

    if args.write:
        for path in write_schema_files(Path(args.write)):
            print(f"wrote {path}")
        return 0
    schema = policy_json_schema() if args.policy else site_json_schema()
    print(json.dumps(schema, indent=2, ensure_ascii=False))
    return 0

"""`edge-agent audit verify|show`: check the hash chain of the audit trail, list its records."""

from __future__ import annotations

import argparse
import dataclasses
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from edge_agent.cli.common import DEFAULT_SITE, add_config, db_path, load_or_exit
from edge_agent.store.audit import (
    AuditInputError,
    JsonValue,
    dump_json,
    load_key,
    open_existing,
    parse_heads,
    records_since,
    short_ts,
    verify,
    verify_heads,
)

__all__ = ["parse_since", "register", "show_main", "verify_main"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "audit",
        help="verify or show the tamper-evident audit trail",
        description="Verify or show the audit trail (a hash chain in the state database) of enforcement "
        "writes, findings, configuration loads, starts and stops.",
    )
    asub = p.add_subparsers(dest="audit", metavar="ACTION", required=True)
    for name, text in (
        ("verify", "check the hash chain: exit 0 intact, 1 naming the first bad record"),
        ("show", "list audit records (writes, refusals, findings, reloads, clock steps)"),
    ):
        a = asub.add_parser(name, help=text, description=text)
        add_config(a)
        a.set_defaults(config=None)  # given or not: with --db, only a -c that was given supplies the key
        a.add_argument("--db", help="state database (default: storage.path from site.yaml)")
        a.add_argument("--state-dir", metavar="DIR", help="the --state-dir the agent runs with")
        a.add_argument("--key-file", help="HMAC key file, when the chain is signed")
        a.add_argument("--json", action="store_true", help="JSON output")
        if name == "show":
            a.add_argument("--since", metavar="TIME", help="ISO time, or an age such as 90m, 2h, 7d")
        else:
            a.add_argument(
                "--heads",
                metavar="FILE",
                help="also compare the chain with audit heads recorded upstream: uplink batches or audit "
                "events as JSON lines (mosquitto_sub -v output works), or SEQ HASH lines",
            )
        a.set_defaults(func=_audit)


def _audit(args: argparse.Namespace) -> int:
    given = args.config is not None
    if not given:
        args.config = DEFAULT_SITE
    db = db_path(args)
    key_file = args.key_file
    # The key site.yaml names signs the chain: read it whenever -c is given (with --db too: a keyed site's
    # chain rewritten with plain SHA-256 must not pass), and from the default site.yaml without --db.
    if key_file is None and (given or (not args.db and Path(args.config).exists())):
        cfg = load_or_exit(args.config)
        if cfg.site.storage.audit_key_file:
            key_file = str(cfg.resolve(cfg.site.storage.audit_key_file))
    if args.audit == "verify":
        return verify_main(db, key_file, as_json=args.json, heads_file=args.heads)
    return show_main(db, args.since, args.json, key_file)


def verify_main(
    db_path: str | Path,
    key_file: str | Path | None = None,
    *,
    as_json: bool = False,
    out: TextIO | None = None,
    heads_file: str | Path | None = None,
) -> int:
    """`edge-agent audit verify`: 0 intact; 1 tampered, broken, erased, or keyed and no key given;
    2 missing/unreadable DB, key file or heads file. With ``heads_file`` the chain must also hold every
    head recorded upstream (the one check that catches a tail deleted together with its anchor)."""
    out = out or sys.stdout
    try:
        key = load_key(key_file) if key_file is not None else None
        heads = _read_heads(heads_file) if heads_file is not None else None
        conn = open_existing(db_path)
    except AuditInputError as e:
        print(f"audit verify: {e}", file=sys.stderr)
        return 2
    try:
        res = verify(conn, key)
        if heads is not None and (res.ok or res.needs_key):
            against = verify_heads(conn, heads)
            if not against.ok:
                res = against
            elif res.ok:
                res = dataclasses.replace(res, message=f"{res.message}; {against.message}")
    except sqlite3.Error as e:
        print(f"audit verify: cannot read state database {db_path}: {e}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    if as_json:
        print(
            dump_json(
                {
                    "ok": res.ok,
                    "count": res.count,
                    "first_bad_seq": res.first_bad_seq,
                    "message": res.message,
                    "needs_key": res.needs_key,
                }
            ),
            file=out,
        )
    elif res.needs_key:
        print(
            "audit verify: keyed chain: give the key (--key-file, or -c with the site.yaml whose "
            f"storage.audit_key_file signs it); not verified. {res.message}",
            file=out,
        )
    else:
        print(res.message if res.ok else f"audit chain BROKEN: {res.message}", file=out)
    return 0 if res.ok else 1


def _read_heads(path: str | Path) -> list[tuple[int, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise AuditInputError(f"cannot read heads file {path}: {e.strerror or e}") from e
    heads = parse_heads(text)
    if not heads:
        raise AuditInputError(
            f"no audit heads in {path}: expected JSON lines with audit_head (or audit events), "
            "or SEQ HASH lines"
        )
    return heads


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``2026-07-15T06:00:00Z``, ``2026-07-15`` (naive times taken as UTC) or ``90m``/``2h``/``7d`` ago."""
    t = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if t and t[-1] in units and t[:-1].replace(".", "", 1).isdigit():
        return (now or datetime.now(UTC)) - timedelta(seconds=float(t[:-1]) * units[t[-1]])
    try:
        dt = datetime.fromisoformat(t)
    except ValueError as e:
        raise AuditInputError(
            f"--since {text!r}: expected an ISO time like 2026-07-15T06:00:00Z, or 90m/2h/7d"
        ) from e
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def _cell(value: JsonValue) -> str:
    return "-" if value is None else value if isinstance(value, str) else dump_json(value)


def show_main(
    db_path: str | Path,
    since: str | None,
    as_json: bool,
    key_file: str | Path | None = None,
    *,
    out: TextIO | None = None,
) -> int:
    """`edge-agent audit show`: the records (a table on a terminal, JSON lines with --json or when piped),
    then the chain's verification. 0 shown and intact, 1 shown but the chain is broken, 2 bad input."""
    out = out or sys.stdout
    try:
        start = parse_since(since) if since else None
        key = load_key(key_file) if key_file is not None else None
        conn = open_existing(db_path)
    except AuditInputError as e:
        print(f"audit show: {e}", file=sys.stderr)
        return 2
    json_lines = as_json or not out.isatty()
    try:
        recs = records_since(conn, start)
        if json_lines:
            for r in recs:
                print(dump_json(r.fields()), file=out)
        else:
            print(
                f"{'seq':>6}  {'time (UTC)':<20}  {'kind':<14}  {'subject':<24}  {'before → after':<20}  "
                f"{'result':<18}  {'rule':<28}  reason",
                file=out,
            )
            for r in recs:
                change = (
                    f"{_cell(r.before)} → {_cell(r.after)}" if (r.before, r.after) != (None, None) else ""
                )
                print(
                    f"{r.seq:>6}  {short_ts(r.ts):<20}  {r.kind:<14}  {r.subject:<24}  {change:<20}  "
                    f"{r.result:<18}  {r.rule:<28}  {r.reason}",
                    file=out,
                )
        res = verify(conn, key)
    except sqlite3.Error as e:
        print(f"audit show: cannot read state database {db_path}: {e}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    if res.needs_key:
        status = f"audit chain not verified: {res.message}"
    else:
        status = res.message if res.ok else f"audit chain BROKEN: {res.message}"
    print(status, file=sys.stderr if json_lines else out)
    return 0 if res.ok or res.needs_key else 1

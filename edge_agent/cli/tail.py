"""`edge-agent tail [--follow]`: the newest readings in the outbox, read-only, beside a running agent."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from edge_agent.cli.common import add_config, db_path
from edge_agent.store.db import open_state_db
from edge_agent.store.outbox import Row, newest_seq, readings_after

__all__ = ["register", "tail_main"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "tail",
        help="show the newest readings in the outbox (works with no broker configured)",
        description="Print the newest stored readings (seq, time, point, value, quality, flags) "
        "from the state database; --follow keeps printing new ones.",
    )
    add_config(p)
    p.add_argument("--db", help="state database (default: storage.path from site.yaml)")
    p.add_argument("--state-dir", metavar="DIR", help="the --state-dir the agent runs with")
    p.add_argument("-n", "--lines", type=int, default=20, help="how many readings to show first (default 20)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new readings until Ctrl-C")
    p.add_argument("--json", action="store_true", help="JSON lines (the uplink payload's reading objects)")
    p.set_defaults(
        func=lambda args: tail_main(db_path(args), lines=args.lines, follow=args.follow, as_json=args.json)
    )


def _print(rows: list[Row], as_json: bool, out: TextIO) -> None:
    for r in rows:
        if as_json:
            out.write(json.dumps(r.as_payload(), ensure_ascii=False) + "\n")
        else:
            flags = f" [{','.join(r.flags)}]" if r.flags else ""
            code = f" {r.code}" if r.code else ""
            value = "-" if r.value is None else r.value
            out.write(
                f"{r.seq:>10}  {r.ts}  {r.point:<28} {value} {r.unit or ''}  {r.quality}{code}{flags}\n"
            )
    out.flush()


def tail_main(db: str | Path, *, lines: int, follow: bool, as_json: bool, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    path = Path(db)
    if not path.exists():
        print(f"{path}: no state database (has the agent run with this config?)", file=sys.stderr)
        return 2
    conn = open_state_db(path, readonly=True)
    try:
        try:
            last = newest_seq(conn)
        except sqlite3.OperationalError as exc:
            print(f"{path}: not an edge-agent state database ({exc})", file=sys.stderr)
            return 2
        try:
            rows = readings_after(conn, max(0, last - lines), lines)
        except sqlite3.OperationalError as exc:  # neither layout this version knows
            print(f"{path}: cannot read the outbox's readings ({exc})", file=sys.stderr)
            return 2
        _print(rows, as_json, out)
        last = rows[-1].seq if rows else last
        while follow:
            time.sleep(0.5)
            rows = readings_after(conn, last, 1000)
            if rows:
                _print(rows, as_json, out)
                last = rows[-1].seq
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()
    return 0

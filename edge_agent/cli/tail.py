"""`edge-agent tail [--follow]`: the newest readings in the outbox, read-only, beside a running agent."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import TextIO

from edge_agent.store.db import open_state_db
from edge_agent.store.outbox import _COLS, Row, _decode

__all__ = ["tail_main"]


def _rows_after(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[Row]:
    rows = conn.execute(
        f"SELECT {_COLS} FROM outbox_readings WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
    ).fetchall()
    return [_decode(t) for t in rows]


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
            (last,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox_readings").fetchone()
        except sqlite3.OperationalError as exc:
            print(f"{path}: not an edge-agent state database ({exc})", file=sys.stderr)
            return 2
        rows = _rows_after(conn, max(0, last - lines), lines)
        _print(rows, as_json, out)
        last = rows[-1].seq if rows else last
        while follow:
            time.sleep(0.5)
            rows = _rows_after(conn, last, 1000)
            if rows:
                _print(rows, as_json, out)
                last = rows[-1].seq
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()
    return 0

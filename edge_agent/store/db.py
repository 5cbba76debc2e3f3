"""The state SQLite database: one file holding the outbox, the audit chain and the ledger.

WAL journal so readers never block the writer; each module creates its own tables with
CREATE TABLE IF NOT EXISTS through ``ensure_schema``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["ensure_schema", "open_state_db"]


def open_state_db(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    p = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, check_same_thread=False)
    else:
        p.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(p, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed group survives a power cut, which is the promise of the outbox.
        conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def ensure_schema(conn: sqlite3.Connection, ddl: str) -> None:
    conn.executescript(ddl)

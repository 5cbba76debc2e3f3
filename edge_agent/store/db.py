"""The state SQLite database: one file holding the outbox, the audit chain and the ledger.

WAL journal so readers never block the writer; each module creates its own tables with
CREATE TABLE IF NOT EXISTS through ``ensure_schema``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

__all__ = ["STATE_DIR_MODE", "STATE_FILE_MODE", "ensure_schema", "open_state_db"]

STATE_DIR_MODE = 0o750
STATE_FILE_MODE = 0o640


def open_state_db(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    p = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, check_same_thread=False)
    else:
        # Readings, the audit trail and config paths are not for every local user: a directory the agent
        # creates is 0750 and a database file it creates 0640 (SQLite gives its -wal/-shm files the
        # database's mode). Existing files keep theirs; the group is the service's own.
        p.parent.mkdir(parents=True, exist_ok=True, mode=STATE_DIR_MODE)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, STATE_FILE_MODE))
        conn = sqlite3.connect(p, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed group survives a power cut, which is the promise of the outbox.
        conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def ensure_schema(conn: sqlite3.Connection, ddl: str) -> None:
    conn.executescript(ddl)

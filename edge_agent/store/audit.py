"""The tamper-evident audit trail: an append-only hash chain in the state database.

Every record carries ``seq`` (1, 2, 3 ... without gaps), ``prev_hash`` (the previous record's hash;
64 zeros for the first) and ``hash``, computed over a canonical encoding of the whole record:
JSON with sorted keys, no whitespace, UTF-8 (``ensure_ascii=False``), holding ``seq``, ``ts``,
``kind``, ``subject``, ``before``, ``after`` (as JSON values), ``rule``, ``reason``, ``result``,
``prev_hash`` and ``alg``; numbers as Python's json writes them (26.0 stays ``26.0``, NaN is
``NaN``), which an upstream verifier in another language must reproduce. ``alg`` is ``"sha256"``
(hash = SHA-256 of the encoding) or ``"hmac-sha256"`` (hash = HMAC-SHA256(key, encoding)) when the
agent was given a key file; verifying such a chain then needs the same key (``--key-file``).

What the chain proves, and what it cannot:

* An edited field, a deleted record, an inserted record and a reordered pair all break the chain:
  ``verify`` names the first record that no longer fits.
* Without a key anyone who can write the file can also recompute SHA-256 for a forged tail. With
  an HMAC key (kept off the database, readable by the agent only) they cannot; ``verify`` then
  needs the same key, and says so when it is not given.
* Each append also stores the head (seq, hash) in the one-row table ``audit_head``, in the same
  transaction. A truncated tail is detected while that anchor survives; records without an anchor,
  an anchor without records, and an empty or missing trail in a database whose outbox or ledger
  show the agent ran all fail too. An attacker who truncates the chain AND rewrites the anchor is
  only caught upstream, because the head is also published with every uplink batch
  (``AuditLog.head()``): ``audit verify --heads`` compares the chain with heads recorded there.

Appends are one ``BEGIN IMMEDIATE`` transaction each (the database is in WAL mode with
``synchronous=FULL``), so two processes appending to the same file serialize instead of forking
the chain, and a returned record has reached the disk. An append blocks for one fsync: audit
events are rare (writes, refusals, findings, lifecycle), so it is called synchronously.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeAlias

from edge_agent.core.clock import Clock
from edge_agent.store.db import ensure_schema, open_state_db

__all__ = [
    "ALG_HMAC",
    "ALG_SHA256",
    "GENESIS_HASH",
    "AuditInputError",
    "AuditKind",
    "AuditLog",
    "AuditRecord",
    "JsonValue",
    "VerifyResult",
    "agent_activity",
    "canonical_bytes",
    "dump_json",
    "format_ts",
    "load_key",
    "open_existing",
    "parse_heads",
    "records_since",
    "short_ts",
    "verify",
    "verify_heads",
]

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None

GENESIS_HASH = "0" * 64
ALG_SHA256 = "sha256"
ALG_HMAC = "hmac-sha256"
_MIN_KEY_BYTES = 16


class AuditKind(StrEnum):
    """What a record is about. Add members here; stored as their string value."""

    WRITE = "write"  # a write reached the driver: before, read-back, result
    REFUSED = "refused"  # the safety envelope refused an intent
    FINDING = "finding"  # a finding; its kind (tamper, masked_write, ...) is in `result`
    CONFIG_LOADED = "config_loaded"
    POLICY_CHANGED = "policy_changed"
    STARTUP = "startup"
    SHUTDOWN = "shutdown"
    CLOCK_STEP = "clock_step"
    RELOAD = "reload"
    DROP = "drop"  # data that could not be kept (outbox full, too old), with a count
    METER = "meter"  # an operator's meter operation (replacement): counter values, the excluded jump


_DDL = """
CREATE TABLE IF NOT EXISTS audit (
    seq       INTEGER PRIMARY KEY,
    ts        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    subject   TEXT NOT NULL,
    before    TEXT NOT NULL,
    after     TEXT NOT NULL,
    rule      TEXT NOT NULL,
    reason    TEXT NOT NULL,
    result    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    alg       TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE TABLE IF NOT EXISTS audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL,
    ts   TEXT NOT NULL
);
"""

_COLUMNS = "seq, ts, kind, subject, before, after, rule, reason, result, prev_hash, alg, hash"


def format_ts(dt: datetime) -> str:
    """Fixed-width UTC ISO time (millisecond precision) so stored times sort as text."""
    if dt.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    u = dt.astimezone(UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S") + f".{u.microsecond // 1000:03d}Z"


def short_ts(ts: str) -> str:
    """A stored time without its milliseconds when they are zero, for people."""
    return ts[:-5] + "Z" if ts.endswith(".000Z") else ts


def dump_json(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces. What a record's hash covers, and what `audit show` prints."""
    # allow_nan stays on: a NaN reading is data, and Python's json reads its own NaN back.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_bytes(fields: Mapping[str, Any]) -> bytes:
    """The exact bytes a record's hash covers: every field except ``hash``."""
    return dump_json({k: v for k, v in fields.items() if k != "hash"}).encode("utf-8")


def _digest(canonical: bytes, alg: str, key: bytes | None) -> str:
    if alg == ALG_HMAC:
        if key is None:
            raise ValueError("an HMAC record needs the key")
        return hmac.new(key, canonical, hashlib.sha256).hexdigest()
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    ts: str  # UTC ISO, e.g. 2026-07-15T06:00:02.000Z (the exact stored text)
    kind: str  # an AuditKind value
    subject: str
    before: JsonValue
    after: JsonValue
    rule: str
    reason: str
    result: str
    prev_hash: str
    alg: str
    hash: str

    @property
    def time(self) -> datetime:
        return datetime.fromisoformat(self.ts)

    def fields(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "subject": self.subject,
            "before": self.before,
            "after": self.after,
            "rule": self.rule,
            "reason": self.reason,
            "result": self.result,
            "prev_hash": self.prev_hash,
            "alg": self.alg,
            "hash": self.hash,
        }

    def label(self) -> str:
        """``record 17 (write ac-f2-01.setpoint at 2026-07-15T06:00:02Z)``"""
        what = f"{self.kind} {self.subject}" if self.subject else self.kind
        return f"record {self.seq} ({what} at {short_ts(self.ts)})"


def _loads_or_text(text: str) -> JsonValue:
    # A damaged (tampered) column is shown as the text it holds; verify() reports it.
    try:
        value: JsonValue = json.loads(text)
    except (TypeError, ValueError):
        return text
    return value


def _record_from_row(row: tuple[Any, ...]) -> AuditRecord:
    seq, ts, kind, subject, before, after, rule, reason, result, prev_hash, alg, hash_ = row
    return AuditRecord(
        seq=seq,
        ts=ts,
        kind=kind,
        subject=subject,
        before=_loads_or_text(before),
        after=_loads_or_text(after),
        rule=rule,
        reason=reason,
        result=result,
        prev_hash=prev_hash,
        alg=alg,
        hash=hash_,
    )


class AuditLog:
    """Appends records to the chain and reads them back.

    Give it its own connection (``open_state_db``): an append refuses to run inside a transaction
    someone else opened on the same connection, because its commit would then not be its own.
    """

    def __init__(self, *, conn: sqlite3.Connection, clock: Clock, hmac_key: bytes | None = None) -> None:
        if hmac_key is not None and len(hmac_key) < _MIN_KEY_BYTES:
            raise ValueError(f"the audit HMAC key has {len(hmac_key)} bytes; use at least {_MIN_KEY_BYTES}")
        self._conn = conn
        self._clock = clock
        self._key = hmac_key
        self._alg = ALG_HMAC if hmac_key is not None else ALG_SHA256
        self._lock = threading.Lock()  # the connection may be shared with worker threads
        ensure_schema(conn, _DDL)
        # Called after each durable append (the service forwards records upstream as events).
        self.on_append: Callable[[AuditRecord], None] | None = None

    @property
    def keyed(self) -> bool:
        return self._key is not None

    def append(
        self,
        kind: AuditKind | str,
        *,
        subject: str = "",
        before: JsonValue = None,
        after: JsonValue = None,
        rule: str = "",
        reason: str = "",
        result: str = "",
    ) -> AuditRecord:
        """Append one record durably and return it. Raises ValueError for an unknown kind."""
        kind = AuditKind(kind)
        before_json, after_json = dump_json(before), dump_json(after)  # fail before taking the lock
        with self._lock:
            if self._conn.in_transaction:
                raise RuntimeError(
                    "AuditLog.append inside a transaction opened by another user of its connection"
                )
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                prev_seq, prev_hash = (row[0], row[1]) if row else (0, GENESIS_HASH)
                fields: dict[str, Any] = {
                    "seq": prev_seq + 1,
                    "ts": format_ts(self._clock.now()),
                    "kind": kind.value,
                    "subject": subject,
                    "before": json.loads(before_json),
                    "after": json.loads(after_json),
                    "rule": rule,
                    "reason": reason,
                    "result": result,
                    "prev_hash": prev_hash,
                    "alg": self._alg,
                }
                fields["hash"] = _digest(canonical_bytes(fields), self._alg, self._key)
                self._conn.execute(
                    f"INSERT INTO audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        fields["seq"],
                        fields["ts"],
                        fields["kind"],
                        subject,
                        before_json,
                        after_json,
                        rule,
                        reason,
                        result,
                        prev_hash,
                        self._alg,
                        fields["hash"],
                    ),
                )
                self._conn.execute(
                    "INSERT OR REPLACE INTO audit_head (id, seq, hash, ts) VALUES (1, ?, ?, ?)",
                    (fields["seq"], fields["hash"], fields["ts"]),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        record = AuditRecord(**fields)
        if self.on_append is not None:
            self.on_append(record)
        return record

    def append_finding(
        self,
        finding_kind: str,
        *,
        subject: str,
        rule: str,
        reason: str,
        before: JsonValue = None,
        after: JsonValue = None,
    ) -> AuditRecord:
        """A ``finding`` record; the finding's kind (tamper, masked_write, ...) goes in ``result``."""
        return self.append(
            AuditKind.FINDING,
            subject=subject,
            before=before,
            after=after,
            rule=rule,
            reason=reason,
            result=finding_kind,
        )

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last record; (0, 64 zeros) for an empty chain."""
        with self._lock:
            row = self._conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    def records(
        self, since: datetime | None = None, *, kinds: Collection[str] | None = None
    ) -> Iterator[AuditRecord]:
        """Records in seq order, optionally only those stamped at or after ``since`` and of ``kinds``."""
        return _iter_records(self._conn, self._lock, since, kinds)


def _iter_records(
    conn: sqlite3.Connection,
    lock: threading.Lock,
    since: datetime | None,
    kinds: Collection[str] | None,
    batch: int = 500,
) -> Iterator[AuditRecord]:
    # Pages keyed by seq, so no cursor stays open across appends on the same connection.
    where = ["seq > ?"]
    extra: list[Any] = []
    if since is not None:
        where.append("ts >= ?")
        extra.append(format_ts(since))
    if kinds is not None:
        kind_list = [AuditKind(k).value for k in kinds]
        if not kind_list:
            return
        where.append(f"kind IN ({', '.join('?' * len(kind_list))})")
        extra.extend(kind_list)
    sql = f"SELECT {_COLUMNS} FROM audit WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
    last = 0
    while True:
        with lock:
            rows = conn.execute(sql, (last, *extra, batch)).fetchall()
        for row in rows:
            yield _record_from_row(row)
        if len(rows) < batch:
            return
        last = rows[-1][0]


def records_since(conn: sqlite3.Connection, since: datetime | None) -> Iterator[AuditRecord]:
    """Records in seq order from any connection (a read-only one too); none when there is no audit table."""
    if not _table_exists(conn, "audit"):
        return iter(())
    return _iter_records(conn, threading.Lock(), since, None)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    count: int  # records verified intact (all of them when ok)
    first_bad_seq: int | None  # first seq whose record is wrong or missing
    message: str
    needs_key: bool = False  # the chain is HMAC-keyed and no key was given: cannot be checked


def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return row is not None


def _label_row(row: tuple[Any, ...]) -> str:
    seq, ts, kind, subject = row[0], str(row[1]), row[2], row[3]
    what = f"{kind} {subject}" if subject else str(kind)
    return f"record {seq} ({what} at {short_ts(ts)})"


def _seq_with_hash(conn: sqlite3.Connection, hash_: str) -> int | None:
    row = conn.execute("SELECT seq FROM audit WHERE hash = ? ORDER BY seq LIMIT 1", (hash_,)).fetchone()
    return int(row[0]) if row else None


def verify(conn: sqlite3.Connection, hmac_key: bytes | None = None) -> VerifyResult:
    """Walk the chain from seq 1 and report the first record that does not fit.

    An HMAC-keyed chain needs ``hmac_key``. With a key, records before the first keyed one may be
    plain SHA-256 (a key introduced later), but not after it, and a chain with no keyed record at
    all fails: that is what a chain rewritten without the key looks like.
    """
    if not _table_exists(conn, "audit"):
        if _table_exists(conn, "audit_head") and conn.execute("SELECT 1 FROM audit_head").fetchone():
            return VerifyResult(False, 0, 1, "the audit table is gone but its head anchor remains — deleted")
        ran = agent_activity(conn)
        if ran is not None:
            return VerifyResult(
                False,
                0,
                1,
                f"the audit tables are missing but {ran}: the agent ran — the audit trail was erased",
            )
        return VerifyResult(True, 0, None, "no audit records yet")

    count = 0
    prev: tuple[Any, ...] | None = None
    seen_hmac = False
    last_seq = 0
    cur = conn.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq")
    try:
        for row in cur:
            seq, ts, kind, subject, before, after, rule, reason, result, prev_hash, alg, hash_ = row
            label = _label_row(row)
            expected_seq = last_seq + 1
            expected_prev = prev[11] if prev is not None else GENESIS_HASH

            if not isinstance(seq, int) or seq < expected_seq:
                return VerifyResult(
                    False,
                    count,
                    expected_seq,
                    f"{label}: out of sequence (expected seq {expected_seq}) — inserted or renumbered",
                )
            if seq > expected_seq:
                missing = (
                    f"record {expected_seq}"
                    if seq == expected_seq + 1
                    else f"records {expected_seq}..{seq - 1}"
                )
                after_what = f"record {last_seq}" if last_seq else "the start of the chain"
                return VerifyResult(
                    False,
                    count,
                    expected_seq,
                    f"{label}: seq jumps from {after_what} to {seq} — {missing} deleted",
                )

            if alg == ALG_HMAC:
                if hmac_key is None:
                    return VerifyResult(
                        False,
                        count,
                        seq,
                        f"{label}: keyed with HMAC-SHA256 — verify needs the "
                        "audit key file (--key-file) and cannot check the chain without it",
                        needs_key=True,
                    )
                seen_hmac = True
            elif alg == ALG_SHA256:
                if seen_hmac:
                    return VerifyResult(
                        False,
                        count,
                        seq,
                        f"{label}: plain SHA-256 after HMAC-keyed records — "
                        "the chain was rewritten without the key",
                    )
            else:
                return VerifyResult(False, count, seq, f"{label}: unknown hash algorithm {alg!r} — edited")

            try:
                fields = {
                    "seq": seq,
                    "ts": ts,
                    "kind": kind,
                    "subject": subject,
                    "before": json.loads(before),
                    "after": json.loads(after),
                    "rule": rule,
                    "reason": reason,
                    "result": result,
                    "prev_hash": prev_hash,
                    "alg": alg,
                }
                content_ok = hmac.compare_digest(_digest(canonical_bytes(fields), alg, hmac_key), str(hash_))
            except (TypeError, ValueError):  # unparsable JSON, non-text columns
                content_ok = False
            link_ok = prev_hash == expected_prev

            if not content_ok or not link_ok:
                bad_seq, message = _diagnose(
                    conn, row=row, prev=prev, content_ok=content_ok, link_ok=link_ok, keyed=alg == ALG_HMAC
                )
                return VerifyResult(False, count - (seq - bad_seq), bad_seq, message)
            count += 1
            prev = row
            last_seq = seq
    finally:
        cur.close()

    if hmac_key is not None and count and not seen_hmac:
        return VerifyResult(
            False,
            count,
            1,
            "a key was given but no record is HMAC-keyed — the chain was "
            "written, or rewritten, without the key",
        )

    anchor = None
    if _table_exists(conn, "audit_head"):
        anchor = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    if anchor is None:
        if count:
            # Every append writes the anchor in the same transaction: a chain without one lost it.
            return VerifyResult(
                False,
                count,
                None,
                f"the head anchor is missing (the chain has {count} records, up to seq {last_seq}) — "
                "deleted; "
                "records after the last one may have been deleted with it (check against the uplinked heads: "
                "audit verify --heads FILE)",
            )
        ran = agent_activity(conn)
        if ran is not None:
            return VerifyResult(
                False,
                0,
                1,
                f"no audit records and no head anchor, but {ran}: the agent ran — the trail was erased",
            )
        return VerifyResult(True, 0, None, "no audit records yet")
    a_seq, a_hash = int(anchor[0]), str(anchor[1])
    if last_seq < a_seq:
        missing = f"record {a_seq}" if a_seq == last_seq + 1 else f"records {last_seq + 1}..{a_seq}"
        ends = f"record {last_seq}" if last_seq else "no records"
        return VerifyResult(
            False,
            count,
            last_seq + 1,
            f"chain ends at {ends} but the head anchor records seq "
            f"{a_seq} — {missing} deleted (truncated tail)",
        )
    if last_seq > a_seq:
        row = conn.execute(f"SELECT {_COLUMNS} FROM audit WHERE seq = ?", (a_seq + 1,)).fetchone()
        label = _label_row(row) if row else f"record {a_seq + 1}"
        return VerifyResult(
            False,
            a_seq,
            a_seq + 1,
            f"{label}: beyond the head anchor (seq {a_seq}) — appended outside the agent",
        )
    if prev is not None and prev[11] != a_hash:
        return VerifyResult(
            False,
            count - 1,
            last_seq,
            f"{_label_row(prev)}: does not match the head anchor's hash — replaced after it was written",
        )
    head = f", head seq {last_seq} hash {a_hash[:16]}…" if count else ""
    return VerifyResult(True, count, None, f"audit chain intact: {count} records{head}")


# Traces every run of the agent leaves in the other tables of the state database. The agent audits its
# startup before anything else, so any of these without an audit record means the trail was erased.
_ACTIVITY = (
    (
        "SELECT max(seq) FROM sqlite_sequence WHERE name = 'outbox_readings'",
        "the outbox has numbered {} readings",
    ),
    (
        "SELECT max(seq) FROM sqlite_sequence WHERE name = 'outbox_events'",
        "the outbox has numbered {} events",
    ),
    ("SELECT max(acked_seq) FROM outbox_cursor", "the uplink has acknowledged up to seq {}"),
    ("SELECT count(*) FROM ledger_state", "the energy ledger holds {} meter states"),
    ("SELECT count(*) FROM ledger_interval", "the energy ledger holds {} intervals"),
)


def agent_activity(conn: sqlite3.Connection) -> str | None:
    """What in the state database shows the agent ran (outbox sequence numbers, ledger rows), or None."""
    for sql, text in _ACTIVITY:
        try:
            row = conn.execute(sql).fetchone()
        except sqlite3.OperationalError:  # no such table
            continue
        if row is not None and row[0]:
            return text.format(row[0])
    return None


def _next_link(conn: sqlite3.Connection, seq: int) -> tuple[int, str] | None:
    """(seq, prev_hash) of the record after ``seq``."""
    row = conn.execute(
        "SELECT seq, prev_hash FROM audit WHERE seq > ? ORDER BY seq LIMIT 1", (seq,)
    ).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def _diagnose(
    conn: sqlite3.Connection,
    *,
    row: tuple[Any, ...],
    prev: tuple[Any, ...] | None,
    content_ok: bool,
    link_ok: bool,
    keyed: bool,
) -> tuple[int, str]:
    """(first bad seq, message) for a record whose hash or link is wrong. Uses its neighbours to tell
    an edit from an insertion, a replacement or a reordering; the verdict is always "broken" either way."""
    seq, prev_hash, hash_ = int(row[0]), str(row[9]), str(row[11])
    label = _label_row(row)
    mac = "HMAC" if keyed else "hash"
    expected_prev = str(prev[11]) if prev is not None else GENESIS_HASH
    if not link_ok:
        linked = _seq_with_hash(conn, prev_hash)
        if prev is not None and linked == seq - 2:
            # It links straight past its predecessor: the predecessor was slipped in (with a valid hash).
            return (
                seq - 1,
                f"{_label_row(prev)}: inserted — record {seq} was written right after record {seq - 2}",
            )
        if linked is not None and linked != seq - 1:
            what = f"{mac} mismatch and it" if not content_ok else "it"
            return seq, (
                f"{label}: {what} was written right after the record now numbered {linked} — "
                "records reordered or renumbered"
            )
        nxt = _next_link(conn, seq)
        if content_ok and prev is not None and (nxt is None or nxt[1] == hash_):
            # Intact itself and its successor links to it: the record before it was rewritten.
            return seq - 1, (
                f"{_label_row(prev)}: replaced — its hash was recomputed after an edit, and record {seq} "
                "no longer links to it"
            )
        if content_ok:
            return (
                seq,
                f"{label}: does not link to record {seq - 1} — inserted, or the record before it replaced",
            )
        return seq, (
            f"{label}: {mac} mismatch and it does not link to record {seq - 1} — edited, or records "
            "before it removed and the rest renumbered"
        )
    nxt = _next_link(conn, seq)
    if nxt is not None and nxt[1] == expected_prev:
        return seq, f"{label}: inserted — record {nxt[0]} links straight to record {seq - 1}"
    extra = "wrong key, or edited after it was written" if keyed else "edited after it was written"
    return seq, f"{label}: {mac} mismatch — {extra}"


def verify_heads(conn: sqlite3.Connection, heads: Iterable[tuple[int, str]]) -> VerifyResult:
    """Compare the local chain with audit heads recorded upstream (``audit_head`` of uplink batches, or
    audit events): each (seq, hash) seen upstream must still be the local record ``seq``. Names the
    first divergence: a record rewritten after it was sent, or a tail deleted together with its anchor
    (which the local checks cannot see). Run ``verify`` too: this checks only the published points."""
    wanted = sorted(set(heads))
    if not wanted:
        return VerifyResult(False, 0, None, "no audit heads to compare with")
    if not _table_exists(conn, "audit"):
        seq, hash_ = wanted[0]
        return VerifyResult(
            False, 0, seq, f"upstream saw record {seq} ({hash_[:16]}…); the audit table is gone"
        )
    last = conn.execute("SELECT max(seq) FROM audit").fetchone()[0] or 0
    for seq, hash_ in wanted:
        row = conn.execute(f"SELECT {_COLUMNS} FROM audit WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            ends = f"ends at record {last}" if last else "has no records"
            return VerifyResult(
                False,
                0,
                seq,
                f"record {seq}: seen upstream (hash {hash_[:16]}…) but the local chain {ends} — "
                "records deleted (with the head anchor) after they were published",
            )
        if not hmac.compare_digest(str(row[11]), hash_):
            return VerifyResult(
                False,
                0,
                seq,
                f"{_label_row(row)}: hash {str(row[11])[:16]}… differs from the {hash_[:16]}… published "
                "upstream — the chain was rewritten after that point was sent",
            )
    top = wanted[-1][0]
    return VerifyResult(
        True, len(wanted), None, f"matches {len(wanted)} audit heads published upstream (up to seq {top})"
    )


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def parse_heads(text: str) -> list[tuple[int, str]]:
    """(seq, hash) pairs from what an upstream receiver recorded: JSON lines (uplink batches with
    ``audit_head``, audit events with ``seq`` and ``hash``), optionally after a topic as ``mosquitto_sub
    -v`` prints it, or plain ``SEQ HASH`` lines. Anything else on a line is ignored."""
    out: list[tuple[int, str]] = []

    def take(obj: object) -> None:
        if isinstance(obj, dict):
            seq, h = obj.get("seq"), obj.get("hash")
            if type(seq) is int and isinstance(h, str) and _HEX64.match(h):
                out.append((seq, h))
            head = obj.get("audit_head")
            if isinstance(head, dict):
                take(head)
        elif isinstance(obj, list):
            for item in obj:
                take(item)

    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and _HEX64.match(parts[1]):
            out.append((int(parts[0]), parts[1]))
            continue
        start = line.find("{")
        if start < 0:
            continue
        try:
            take(json.loads(line[start:]))
        except ValueError:
            continue
    return out


# --- CLI helpers (the lead wires `edge-agent audit verify|show` to these) -------------------------------


class AuditInputError(ValueError):
    """A key file or state database that cannot be used: the caller's input, not a broken chain."""


def load_key(path: str | Path) -> bytes:
    """The HMAC key: the file's bytes with surrounding whitespace removed (at least 16 bytes)."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as e:
        raise AuditInputError(f"cannot read audit key file {path}: {e.strerror or e}") from e
    if len(key) < _MIN_KEY_BYTES:
        raise AuditInputError(
            f"audit key file {path} holds {len(key)} bytes; at least {_MIN_KEY_BYTES} are needed"
        )
    return key


def open_existing(db_path: str | Path) -> sqlite3.Connection:
    p = Path(db_path)
    if not p.is_file():
        raise AuditInputError(f"no state database at {p}")
    try:
        conn = open_state_db(p, readonly=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as e:
        raise AuditInputError(f"cannot read state database {p}: {e}") from e
    return conn

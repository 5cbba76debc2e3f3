"""The audit hash chain: append, verify, and every kind of tampering on a copy of the database."""

from __future__ import annotations

import hashlib
import hmac
import io
import itertools
import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.cli.audit import parse_since, show_main, verify_main
from edge_agent.core.clock import FakeClock
from edge_agent.store.audit import (
    GENESIS_HASH,
    AuditKind,
    AuditLog,
    verify,
)
from edge_agent.store.db import open_state_db

START = datetime(2026, 7, 15, 6, 0, 0, tzinfo=UTC)
KEY = b"0123456789abcdef-test-key"


def _spec_hash(fields: dict[str, object], key: bytes | None = None) -> str:
    """The documented canonical encoding, written out independently of the module under test."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if key is not None:
        return hmac.new(key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def _fill(log: AuditLog, clock: FakeClock, n: int = 10) -> None:
    """Record i is a write to ac-f2-0i.setpoint stamped START + (i-1) s, except record 1 (startup)."""
    log.append(AuditKind.STARTUP, reason="agent started", result="ok")
    for i in range(2, n + 1):
        clock.advance(1)
        log.append(
            AuditKind.WRITE,
            subject=f"ac-f2-{i:02d}.setpoint",
            before=24.0,
            after=26.0,
            rule="hvac.summer_min_cooling",
            reason="夏季制冷设定温度不低于26°C",
            result="ok",
        )


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Path]:
    """A state DB holding an intact 10-record chain; closed so tests can copy and tamper with it."""
    path = tmp_path / "state.db"
    conn = open_state_db(path)
    clock = FakeClock(START)
    _fill(AuditLog(conn=conn, clock=clock), clock)
    conn.close()
    yield path


def _copy(src: Path, dst: Path) -> sqlite3.Connection:
    """A tamperer's own connection to a copy of the database (backup API: WAL content included)."""
    s = sqlite3.connect(src)
    d = sqlite3.connect(dst, isolation_level=None)
    s.backup(d)
    s.close()
    return d


def _row(conn: sqlite3.Connection, seq: int) -> dict[str, object]:
    cur = conn.execute("SELECT * FROM audit WHERE seq = ?", (seq,))
    names = [c[0] for c in cur.description]
    return dict(zip(names, cur.fetchone(), strict=True))


def _insert(conn: sqlite3.Connection, row: dict[str, object]) -> None:
    cols = ", ".join(row)
    conn.execute(f"INSERT INTO audit ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))


def _shift_up(conn: sqlite3.Connection, from_seq: int) -> None:
    """Renumber seq >= from_seq to seq + 1 (two steps: seq is the primary key)."""
    conn.execute("UPDATE audit SET seq = -(seq + 1) WHERE seq >= ?", (from_seq,))
    conn.execute("UPDATE audit SET seq = -seq WHERE seq < 0")


def _forged(
    conn: sqlite3.Connection, *, seq: int, prev_seq: int, key: bytes | None = None
) -> dict[str, object]:
    """A plausible forged write record linking to prev_seq, with a correct SHA-256 (or HMAC with `key`)."""
    prev = _row(conn, prev_seq)
    rec: dict[str, object] = {
        "seq": seq,
        "ts": "2026-07-15T06:00:04.500Z",
        "kind": "write",
        "subject": "ac-f2-99.setpoint",
        "before": "24.0",
        "after": "18.0",
        "rule": "hvac.summer_min_cooling",
        "reason": "forged",
        "result": "ok",
        "prev_hash": prev["hash"],
        "alg": "sha256" if key is None else "hmac-sha256",
    }
    canonical = {**rec, "before": 24.0, "after": 18.0}
    rec["hash"] = _spec_hash(canonical, key)
    return rec


# --- the intact chain ---------------------------------------------------------------------------


def test_append_builds_a_chain_that_verifies(tmp_path: Path) -> None:
    conn = open_state_db(tmp_path / "s.db")
    clock = FakeClock(START)
    log = AuditLog(conn=conn, clock=clock)
    assert log.head() == (0, GENESIS_HASH)
    _fill(log, clock)
    recs = list(log.records())
    assert [r.seq for r in recs] == list(range(1, 11))
    assert recs[0].prev_hash == GENESIS_HASH
    for a, b in itertools.pairwise(recs):
        assert b.prev_hash == a.hash
    for r in recs:
        assert r.hash == _spec_hash(r.fields())  # SHA-256 over the documented canonical encoding
    assert recs[4].ts == "2026-07-15T06:00:04.000Z"
    assert recs[4].time == START + timedelta(seconds=4)
    assert recs[4].before == 24.0 and recs[4].after == 26.0 and recs[4].reason == "夏季制冷设定温度不低于26°C"
    assert log.head() == (10, recs[-1].hash)
    res = verify(conn)
    assert res.ok and res.count == 10 and res.first_bad_seq is None, res.message
    conn.close()


def test_records_filter_by_time_and_kind(tmp_path: Path) -> None:
    conn = open_state_db(tmp_path / "s.db")
    clock = FakeClock(START)
    log = AuditLog(conn=conn, clock=clock)
    _fill(log, clock)
    assert [r.seq for r in log.records(START + timedelta(seconds=7))] == [8, 9, 10]
    assert [r.seq for r in log.records(kinds=["startup"])] == [1]
    assert [r.seq for r in log.records(START + timedelta(seconds=8), kinds=[AuditKind.WRITE])] == [9, 10]
    conn.close()


def test_append_rejects_unknown_kind_and_non_json_values(tmp_path: Path) -> None:
    conn = open_state_db(tmp_path / "s.db")
    log = AuditLog(conn=conn, clock=FakeClock(START))
    with pytest.raises(ValueError):
        log.append("made_up")
    with pytest.raises(TypeError):
        log.append(AuditKind.WRITE, after={1, 2})  # type: ignore[arg-type]
    assert log.head() == (0, GENESIS_HASH)
    conn.close()


def test_append_refuses_to_join_a_foreign_transaction(tmp_path: Path) -> None:
    conn = open_state_db(tmp_path / "s.db")
    log = AuditLog(conn=conn, clock=FakeClock(START))
    conn.execute("BEGIN")
    with pytest.raises(RuntimeError, match="transaction"):
        log.append(AuditKind.STARTUP)
    conn.execute("ROLLBACK")
    assert log.append(AuditKind.STARTUP).seq == 1
    conn.close()


# --- tampering, each on a copy ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [("after", "18.0"), ("reason", "nothing to see"), ("ts", "2026-07-15T07:00:04.000Z"), ("result", "ok ")],
)
def test_edited_record_is_named(chain: Path, tmp_path: Path, column: str, value: str) -> None:
    t = _copy(chain, tmp_path / "t.db")
    t.execute(f"UPDATE audit SET {column} = ? WHERE seq = 5", (value,))
    res = verify(t)
    assert not res.ok and res.first_bad_seq == 5 and res.count == 4
    assert res.message.startswith("record 5 (write ac-f2-05.setpoint at 2026-07-15T0")
    assert "hash mismatch — edited after it was written" in res.message
    assert verify(sqlite3.connect(chain)).ok  # the original is untouched


def test_edit_with_recomputed_hash_names_the_replaced_record(chain: Path, tmp_path: Path) -> None:
    t = _copy(chain, tmp_path / "t.db")
    r = _row(t, 5)
    canonical = {**r, "after": 18.0, "before": 24.0}
    t.execute("UPDATE audit SET after = '18.0', hash = ? WHERE seq = 5", (_spec_hash(canonical),))
    res = verify(t)
    assert not res.ok and res.first_bad_seq == 5
    assert res.message.startswith("record 5 (write ac-f2-05.setpoint at 2026-07-15T06:00:04Z): replaced")


def test_deleted_record_is_named(chain: Path, tmp_path: Path) -> None:
    t = _copy(chain, tmp_path / "t.db")
    t.execute("DELETE FROM audit WHERE seq = 5")
    res = verify(t)
    assert not res.ok and res.first_bad_seq == 5 and res.count == 4
    assert res.message == (
        "record 6 (write ac-f2-06.setpoint at 2026-07-15T06:00:05Z): "
        "seq jumps from record 4 to 6 — record 5 deleted"
    )


def test_deleted_and_renumbered_is_detected(chain: Path, tmp_path: Path) -> None:
    t = _copy(chain, tmp_path / "t.db")
    t.execute("DELETE FROM audit WHERE seq = 5")
    t.execute("UPDATE audit SET seq = seq - 1 WHERE seq > 5")
    t.execute("UPDATE audit_head SET seq = seq - 1")
    res = verify(t)
    assert not res.ok and res.first_bad_seq == 5
    assert res.message.startswith("record 5 (write ac-f2-06.setpoint")


def test_inserted_record_with_valid_hash_is_named(chain: Path, tmp_path: Path) -> None:
    # A forger without a key can compute SHA-256: the forged record itself is consistent, but the
    # record after it still links to the one before it.
    t = _copy(chain, tmp_path / "t.db")
    _shift_up(t, 6)
    _insert(t, _forged(t, seq=6, prev_seq=5))
    res = verify(t)
    assert not res.ok and res.first_bad_seq == 6 and res.count == 5
    assert res.message.startswith("record 6 (write ac-f2-99.setpoint at 2026-07-15T06:00:04.500Z): inserted")


def test_inserted_record_with_made_up_hash_is_named(chain: Path, tmp_path: Path) -> None:
    t = _copy(chain, tmp_path / "t.db")
    _shift_up(t, 6)
    forged = _forged(t, seq=6, prev_seq=5)
    forged["hash"] = _row(t, 7)["hash"]  # copied from a neighbour
    _insert(t, forged)
    res = verify(t)
    assert not res.ok and res.first_bad_seq == 6
    assert res.message.startswith("record 6 (write ac-f2-99.setpoint")
    assert "inserted — record 7 links straight to record 5" in res.message


def test_record_appended_behind_the_agents_back_is_named(chain: Path, tmp_path: Path) -> None:
    t = _copy(chain, tmp_path / "t.db")
    _insert(t, _forged(t, seq=11, prev_seq=10))  # plausible seq, valid link and hash: only the anchor knows
    res = verify(t)
    assert not res.ok and res.first_bad_seq == 11 and res.count == 10
    assert res.message.startswith("record 11 (write ac-f2-99.setpoint")
    assert "beyond the head anchor (seq 10)" in res.message


@pytest.mark.parametrize(("a", "b"), [(5, 6), (3, 8)])
def test_swapped_records_are_named(chain: Path, tmp_path: Path, a: int, b: int) -> None:
    t = _copy(chain, tmp_path / "t.db")
    t.execute("UPDATE audit SET seq = -1 WHERE seq = ?", (a,))
    t.execute("UPDATE audit SET seq = ? WHERE seq = ?", (a, b))
    t.execute("UPDATE audit SET seq = ? WHERE seq = -1", (b,))
    res = verify(t)
    assert not res.ok and res.first_bad_seq == a and res.count == a - 1
    # Position a now holds what was record b.
    assert res.message.startswith(f"record {a} (write ac-f2-{b:02d}.setpoint")
    assert "reordered" in res.message


def test_truncated_tail_is_detected_by_the_head_anchor(chain: Path, tmp_path: Path) -> None:
    t = _copy(chain, tmp_path / "t.db")
    t.execute("DELETE FROM audit WHERE seq > 8")
    res = verify(t)
    assert not res.ok and res.first_bad_seq == 9 and res.count == 8
    assert "chain ends at record 8 but the head anchor records seq 10 — records 9..10 deleted" in res.message


def test_truncating_chain_and_anchor_together_passes_locally(chain: Path, tmp_path: Path) -> None:
    # The documented limit: only the uplinked head can catch this one.
    t = _copy(chain, tmp_path / "t.db")
    t.execute("DELETE FROM audit WHERE seq > 8")
    h = _row(t, 8)["hash"]
    t.execute("UPDATE audit_head SET seq = 8, hash = ?", (h,))
    res = verify(t)
    assert res.ok and res.count == 8


def test_dropped_audit_table_is_detected(chain: Path, tmp_path: Path) -> None:
    t = _copy(chain, tmp_path / "t.db")
    t.execute("DROP TABLE audit")
    res = verify(t)
    assert not res.ok and res.first_bad_seq == 1


# --- HMAC ---------------------------------------------------------------------------------------


@pytest.fixture
def keyed_chain(tmp_path: Path) -> Path:
    path = tmp_path / "keyed.db"
    conn = open_state_db(path)
    clock = FakeClock(START)
    log = AuditLog(conn=conn, clock=clock, hmac_key=KEY)
    _fill(log, clock, 5)
    for r in log.records():
        assert r.alg == "hmac-sha256" and r.hash == _spec_hash(r.fields(), KEY)
    conn.close()
    return path


def test_hmac_chain_verifies_with_the_key(keyed_chain: Path) -> None:
    res = verify(sqlite3.connect(keyed_chain), KEY)
    assert res.ok and res.count == 5, res.message


def test_hmac_chain_without_the_key_says_so(keyed_chain: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = verify(sqlite3.connect(keyed_chain))
    assert not res.ok and res.needs_key and res.first_bad_seq == 1
    assert "verify needs the audit key file" in res.message
    assert verify_main(keyed_chain) == 1  # refused, not "BROKEN": the chain may be fine
    out = capsys.readouterr().out
    assert "keyed chain: give the key" in out and "BROKEN" not in out


def test_hmac_chain_with_the_wrong_key_names_record_1(keyed_chain: Path) -> None:
    res = verify(sqlite3.connect(keyed_chain), b"another-key-of-enough-length")
    assert not res.ok and res.first_bad_seq == 1 and res.count == 0
    assert (
        res.message
        == "record 1 (startup at 2026-07-15T06:00:00Z): HMAC mismatch — wrong key, or edited after "
        "it was written"
    )


def test_hmac_chain_rejects_unkeyed_forgeries(keyed_chain: Path, tmp_path: Path) -> None:
    t = _copy(keyed_chain, tmp_path / "t.db")
    _insert(t, _forged(t, seq=6, prev_seq=5))
    t.execute("UPDATE audit_head SET seq = 6, hash = (SELECT hash FROM audit WHERE seq = 6)")
    res = verify(t, KEY)
    assert not res.ok and res.first_bad_seq == 6 and "rewritten without the key" in res.message
    # and a whole chain re-hashed without the key does not pass when the key is given
    t2 = _copy(keyed_chain, tmp_path / "t2.db")
    prev = GENESIS_HASH
    for seq in range(1, 6):
        r = _row(t2, seq)
        r.update(alg="sha256", prev_hash=prev)
        canonical = {**r, "before": json.loads(str(r["before"])), "after": json.loads(str(r["after"]))}
        prev = _spec_hash(canonical)
        t2.execute(
            "UPDATE audit SET alg = 'sha256', prev_hash = ?, hash = ? WHERE seq = ?",
            (r["prev_hash"], prev, seq),
        )
    t2.execute("UPDATE audit_head SET hash = ?", (prev,))
    assert verify(t2).ok  # without the key, indistinguishable ...
    res2 = verify(t2, KEY)
    assert not res2.ok and "no record is HMAC-keyed" in res2.message  # ... with it, caught


def test_short_key_is_refused(tmp_path: Path) -> None:
    conn = open_state_db(tmp_path / "s.db")
    with pytest.raises(ValueError, match="at least 16"):
        AuditLog(conn=conn, clock=FakeClock(START), hmac_key=b"short")
    conn.close()


# --- durability and concurrency -----------------------------------------------------------------


def test_records_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    clock = FakeClock(START)
    conn = open_state_db(path)
    log = AuditLog(conn=conn, clock=clock)
    _fill(log, clock, 4)
    head = log.head()
    conn.close()
    conn2 = open_state_db(path)
    log2 = AuditLog(conn=conn2, clock=clock)
    assert log2.head() == head
    rec = log2.append(AuditKind.SHUTDOWN, result="ok")
    assert rec.seq == 5 and rec.prev_hash == head[1]
    conn2.close()
    ro = open_state_db(path, readonly=True)
    res = verify(ro)
    assert res.ok and res.count == 5
    ro.close()


def test_two_logs_on_one_file_append_alternately(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    clock = FakeClock(START)
    c1, c2 = open_state_db(path), open_state_db(path)
    a, b = AuditLog(conn=c1, clock=clock), AuditLog(conn=c2, clock=clock)
    for i in range(10):
        (a if i % 2 == 0 else b).append(AuditKind.FINDING, subject=f"p{i}", result="info")
    assert a.head() == b.head() and a.head()[0] == 10
    assert [r.subject for r in b.records()] == [f"p{i}" for i in range(10)]
    assert verify(c1).ok
    c1.close()
    c2.close()


def test_two_logs_appending_from_threads_never_fork(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    clock = FakeClock(START)
    conns = [open_state_db(path) for _ in range(2)]
    logs = [AuditLog(conn=c, clock=clock) for c in conns]
    errors: list[BaseException] = []

    def work(log: AuditLog, name: str) -> None:
        try:
            for i in range(40):
                log.append(AuditKind.DROP, subject=f"{name}{i}", result="1")
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(lg, n)) for lg, n in zip(logs, "ab", strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    res = verify(conns[0])
    assert res.ok and res.count == 80, res.message
    for c in conns:
        c.close()


# --- CLI helpers --------------------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_verify_main_exit_codes(chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_main(chain) == 0
    assert "audit chain intact: 10 records" in capsys.readouterr().out
    t = _copy(chain, tmp_path / "t.db")
    t.execute("UPDATE audit SET rule = 'x' WHERE seq = 3")
    t.close()
    assert verify_main(tmp_path / "t.db") == 1
    assert "audit chain BROKEN: record 3 (write ac-f2-03.setpoint" in capsys.readouterr().out
    assert verify_main(tmp_path / "missing.db") == 2
    assert "no state database at" in capsys.readouterr().err
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    assert verify_main(junk) == 2
    assert "cannot read state database" in capsys.readouterr().err
    assert verify_main(chain, tmp_path / "no-key") == 2
    assert "cannot read audit key file" in capsys.readouterr().err
    out = io.StringIO()
    assert verify_main(chain, as_json=True, out=out) == 0
    assert json.loads(out.getvalue()) == {
        "ok": True,
        "count": 10,
        "first_bad_seq": None,
        "message": json.loads(out.getvalue())["message"],
        "needs_key": False,
    }


def test_verify_main_with_key_file(keyed_chain: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "audit.key"
    key_file.write_bytes(KEY + b"\n")
    assert verify_main(keyed_chain, key_file, out=io.StringIO()) == 0


def test_show_main_json_and_table(chain: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()  # not a TTY: JSON lines even without --json
    assert show_main(chain, "2026-07-15T06:00:07Z", False, out=out) == 0
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["seq"] for x in lines] == [8, 9, 10]
    assert lines[0]["subject"] == "ac-f2-08.setpoint" and lines[0]["after"] == 26.0
    assert "intact" in capsys.readouterr().err
    tty = _Tty()
    assert show_main(chain, None, False, out=tty) == 0
    text = tty.getvalue().splitlines()
    assert text[0].split()[:3] == ["seq", "time", "(UTC)"]
    assert len(text) == 1 + 10 + 1 and "24.0 → 26.0" in text[5] and text[-1].startswith("audit chain intact")
    tty_json = _Tty()
    assert show_main(chain, None, True, out=tty_json) == 0
    assert len(tty_json.getvalue().splitlines()) == 10
    assert show_main(chain, "yesterday-ish", False, out=io.StringIO()) == 2
    assert "--since" in capsys.readouterr().err


def test_show_main_reports_a_broken_chain(chain: Path, tmp_path: Path) -> None:
    t = _copy(chain, tmp_path / "t.db")
    t.execute("DELETE FROM audit WHERE seq = 2")
    t.close()
    out = _Tty()
    assert show_main(tmp_path / "t.db", None, False, out=out) == 1
    assert "audit chain BROKEN: record 3" in out.getvalue()


def test_key_introduced_later_keeps_the_chain_verifiable(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    clock = FakeClock(START)
    conn = open_state_db(path)
    _fill(AuditLog(conn=conn, clock=clock), clock, 3)  # before the integrator configured a key
    keyed = AuditLog(conn=conn, clock=clock, hmac_key=KEY)
    keyed.append(AuditKind.CONFIG_LOADED, reason="audit key configured")
    assert [r.alg for r in keyed.records()] == ["sha256"] * 3 + ["hmac-sha256"]
    assert verify(conn, KEY).ok
    no_key = verify(conn)
    assert not no_key.ok and no_key.needs_key and no_key.first_bad_seq == 4 and no_key.count == 3
    conn.close()


def test_parse_since_forms() -> None:
    now = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now=now) == datetime(2026, 7, 15, 10, 30, tzinfo=UTC)
    assert parse_since("2d", now=now) == datetime(2026, 7, 13, 12, 0, tzinfo=UTC)
    assert parse_since("2026-07-15T06:00:00Z") == START
    assert parse_since("2026-07-15T14:00:00+08:00") == START
    assert parse_since("2026-07-15") == datetime(2026, 7, 15, tzinfo=UTC)  # naive: taken as UTC


# --- erased and anchorless trails, keyed sites (issue 14 items 3 and 4) --------------------------------


def _ran(path: Path) -> None:
    """Leave what a run of the agent leaves besides the audit trail: numbered outbox events."""
    from edge_agent.config.settings import StorageOptions
    from edge_agent.store.outbox import Outbox

    conn = open_state_db(path)
    Outbox(conn=conn, options=StorageOptions(), clock=FakeClock(START), gateway_id="gw").append_event(
        {"e": 1}
    )
    conn.close()


def _verify_cli(path: Path, capsys: pytest.CaptureFixture[str], key: Path | None = None) -> tuple[int, str]:
    rc = verify_main(path, key)
    return rc, capsys.readouterr().out


@pytest.mark.parametrize(
    ("attack", "words"),
    [
        ("DELETE FROM audit; DELETE FROM audit_head", "no audit records and no head anchor, but the outbox"),
        ("DROP TABLE audit; DROP TABLE audit_head", "the audit tables are missing but the outbox"),
        ("DELETE FROM audit WHERE seq > 7; DELETE FROM audit_head", "the head anchor is missing"),
        ("DELETE FROM audit_head", "the head anchor is missing (the chain has 10 records"),
        ("DELETE FROM audit", "chain ends at no records but the head anchor records seq 10"),
        ("DROP TABLE audit_head", "the head anchor is missing"),
    ],
)
def test_erased_or_anchorless_trails_fail(
    chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], attack: str, words: str
) -> None:
    _ran(chain)
    t = _copy(chain, tmp_path / "t.db")
    t.executescript(attack)
    t.close()
    rc, out = _verify_cli(tmp_path / "t.db", capsys)
    assert rc == 1 and "audit chain BROKEN" in out and words in out, out


def test_an_empty_database_of_an_agent_that_never_ran_is_fine(tmp_path: Path) -> None:
    conn = open_state_db(tmp_path / "new.db")
    AuditLog(conn=conn, clock=FakeClock(START))  # tables, no records, no outbox
    assert verify(conn).ok and verify(conn).message == "no audit records yet"
    conn.close()


def test_keyed_chain_without_the_key_is_refused_not_broken(
    keyed_chain: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = _verify_cli(keyed_chain, capsys)
    assert rc == 1 and out.startswith("audit verify: keyed chain: give the key") and "BROKEN" not in out


def _keyed_site(tmp_path: Path, db: Path) -> Path:
    from tests.sitetext import example_site_without

    (tmp_path / "audit.key").write_bytes(KEY)
    site = tmp_path / "site.yaml"
    policy = Path(__file__).resolve().parents[2] / "config" / "policy.yaml"
    site.write_text(
        example_site_without({"storage", "policy"})
        + f"policy: {policy}\nstorage: {{path: {db.name}, audit_key_file: audit.key}}\n",
        encoding="utf-8",
    )
    return site


def test_verify_with_db_reads_the_key_site_yaml_names(keyed_chain: Path, tmp_path: Path) -> None:
    """`audit verify -c site.yaml --db X` uses storage.audit_key_file; a chain rewritten with plain SHA-256
    (the downgrade) then fails, where without the key it would pass."""
    from edge_agent.cli.app import main

    site = _keyed_site(tmp_path, keyed_chain)
    assert main(["audit", "verify", "-c", str(site), "--db", str(keyed_chain)]) == 0
    t2 = _copy(keyed_chain, tmp_path / "t2.db")
    prev = GENESIS_HASH
    for seq in range(1, 6):  # rewrite every record with plain SHA-256
        r = _row(t2, seq)
        r.update(alg="sha256", prev_hash=prev)
        canonical = {**r, "before": json.loads(str(r["before"])), "after": json.loads(str(r["after"]))}
        prev = _spec_hash(canonical)
        t2.execute(
            "UPDATE audit SET alg = 'sha256', prev_hash = ?, hash = ? WHERE seq = ?",
            (r["prev_hash"], prev, seq),
        )
    t2.execute("UPDATE audit_head SET hash = ?", (prev,))
    t2.close()
    assert main(["audit", "verify", "-c", str(site), "--db", str(tmp_path / "t2.db")]) == 1


def test_state_directory_and_database_files_are_not_world_readable(tmp_path: Path) -> None:
    """Issue 14 item 11: outside systemd (no StateDirectoryMode) the agent's own modes apply."""
    import os
    import stat

    old = os.umask(0o022)  # a usual login umask, which would give 0755 and 0644
    try:
        conn = open_state_db(tmp_path / "state" / "sub" / "edge-agent.db")
        AuditLog(conn=conn, clock=FakeClock(START)).append(AuditKind.STARTUP, reason="x")
        modes = {
            p.name: stat.S_IMODE(p.stat().st_mode)
            for p in (tmp_path / "state" / "sub").iterdir()
            if p.name.startswith("edge-agent.db")
        }
        conn.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state" / "sub").stat().st_mode) == 0o750
    assert modes["edge-agent.db"] == 0o640 and modes.get("edge-agent.db-wal", 0o640) == 0o640, modes


# --- published heads (issue 14 item 5) ------------------------------------------------------------------


def _published(path: Path, seqs: list[int]) -> str:
    """What `mosquitto_sub -v -t 'edge/#'` printed: readings batches carrying audit_head at those seqs."""
    conn = sqlite3.connect(path)
    lines = []
    for seq in seqs:
        h = conn.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()[0]
        body = {
            "v": 1,
            "gateway": "gw",
            "seq_first": seq,
            "audit_head": {"seq": seq, "hash": h},
            "readings": [],
        }
        lines.append("edge/370102A001/gw/readings " + json.dumps(body))
    conn.close()
    return "\n".join(["garbage line", *lines]) + "\n"


def test_heads_catch_a_tail_deleted_with_its_anchor(
    chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    heads = tmp_path / "heads.txt"
    heads.write_text(_published(chain, [3, 7, 10]), encoding="utf-8")
    assert verify_main(chain, heads_file=heads) == 0
    assert "matches 3 audit heads published upstream (up to seq 10)" in capsys.readouterr().out
    t = _copy(chain, tmp_path / "t.db")
    t.execute("DELETE FROM audit WHERE seq > 8")
    t.execute("UPDATE audit_head SET seq = 8, hash = ?", (_row(t, 8)["hash"],))
    t.close()
    assert verify_main(tmp_path / "t.db") == 0  # locally consistent: the documented limit ...
    assert verify_main(tmp_path / "t.db", heads_file=heads) == 1  # ... which the published heads close
    out = capsys.readouterr().out
    assert "record 10: seen upstream" in out and "the local chain ends at record 8" in out


def test_heads_catch_a_rewritten_chain(
    chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    heads = tmp_path / "heads.txt"
    heads.write_text(_published(chain, [2, 6, 10]), encoding="utf-8")
    t = _copy(chain, tmp_path / "t.db")
    prev = _row(t, 4)["hash"]
    for seq in range(5, 11):  # edit record 5 and re-hash the rest: verify alone cannot tell
        r = _row(t, seq)
        r.update(prev_hash=prev, reason="edited" if seq == 5 else r["reason"])
        canonical = {**r, "before": json.loads(str(r["before"])), "after": json.loads(str(r["after"]))}
        prev = _spec_hash(canonical)
        t.execute(
            "UPDATE audit SET reason = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            (r["reason"], r["prev_hash"], prev, seq),
        )
    t.execute("UPDATE audit_head SET hash = ?", (prev,))
    t.close()
    assert verify_main(tmp_path / "t.db") == 0
    assert verify_main(tmp_path / "t.db", heads_file=heads) == 1
    assert "record 6 (write ac-f2-06.setpoint" in capsys.readouterr().out  # the first published point


def test_heads_file_without_heads_is_bad_input(chain: Path, tmp_path: Path) -> None:
    empty = tmp_path / "heads.txt"
    empty.write_text("nothing here\n", encoding="utf-8")
    assert verify_main(chain, heads_file=empty) == 2
    assert verify_main(chain, heads_file=tmp_path / "missing.txt") == 2

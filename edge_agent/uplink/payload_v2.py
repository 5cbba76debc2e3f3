"""Readings payload v2 (docs/uplink-schema.md, "Version 2"): encoder and the reference decoder.

Pure: bytes in, bytes out, no I/O. The point list travels once per schema version, in a retained
``.../schema`` message whose ``schema`` hash each batch names; a batch then carries a device poll's values
as one array under one timestamp and one first seq. What the schema cannot say (a point it does not hold,
a unit that differs from its unit: rows queued before a reload changed the configuration) travels as v1
reading objects in the batch's ``readings``, so any outbox content round-trips exactly.
"""

from __future__ import annotations

import functools
import hashlib
import json
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from drivers.base import Value
from edge_agent.store.outbox import PollRow, Row, poll_point_ids, poll_state_ids

__all__ = [
    "PAYLOAD_VERSION",
    "DecodedBatch",
    "Decoder",
    "PayloadError",
    "PointSchema",
    "PollIndex",
    "UnknownSchemaError",
    "encode_batch_v2",
    "encode_polls_v2",
    "encode_schema",
    "load_payload",
    "make_schema",
]

PAYLOAD_VERSION = 2
_HASH_HEX = 16  # 64 bits of SHA-256: enough to tell one gateway's schema versions apart
_ZLIB_FIRST = 0x78  # every zlib stream starts with it; a JSON object starts with "{"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PayloadError(ValueError):
    """A message that is not a well-formed readings or schema payload."""


class UnknownSchemaError(PayloadError):
    """A v2 batch names a schema hash that no schema message seen so far declared."""

    def __init__(self, schema: str) -> None:
        super().__init__(
            f"batch names schema {schema}, which no .../schema message seen so far declared "
            "(subscribe to the schema topic as well: it is retained, and sent before any batch naming it)"
        )
        self.schema = schema


@dataclass(frozen=True)
class PointSchema:
    """The ordered point list a v2 batch indexes into: (point id, unit, device) per entry."""

    points: tuple[tuple[str, str | None, str | None], ...]
    hash: str
    index: dict[str, int] = field(compare=False, repr=False)


def _canonical(points: Sequence[tuple[str, str | None, str | None]]) -> bytes:
    return json.dumps([list(p) for p in points], ensure_ascii=False, separators=(",", ":")).encode()


def make_schema(points: Iterable[tuple[str, str | None, str | None]]) -> PointSchema:
    """A schema from (id, unit, device) in order; a repeated id keeps its first entry."""
    seen: dict[str, tuple[str, str | None, str | None]] = {}
    for pid, unit, device in points:
        seen.setdefault(pid, (pid, unit, device))
    pts = tuple(seen.values())
    digest = hashlib.sha256(_canonical(pts)).hexdigest()[:_HASH_HEX]
    return PointSchema(points=pts, hash=digest, index={p[0]: i for i, p in enumerate(pts)})


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _packed(raw: bytes, compress: bool) -> bytes:
    """zlib when it makes the message shorter (the first byte tells: 0x78 zlib, "{" JSON)."""
    if compress:
        packed = zlib.compress(raw, 6)
        if len(packed) < len(raw):
            return packed
    return raw


def encode_schema(schema: PointSchema, *, gateway: str, building: str, compress: bool = True) -> bytes:
    """The retained ``.../schema`` message, zlib when shorter (10,000 points: 310 kB JSON, 21 kB zlib)."""
    body = {
        "v": PAYLOAD_VERSION,
        "gateway": gateway,
        "building": building,
        "schema": schema.hash,
        "points": [list(p) for p in schema.points],
    }
    return _packed(_dumps(body), compress)


def _group_out(ts_us: int, seq0: int, idx: list[int], values: list[Value], q: list[Any]) -> dict[str, Any]:
    consecutive = idx == list(range(idx[0], idx[0] + len(idx)))
    g: dict[str, Any] = {"t": ts_us, "s": seq0, "p": idx[0] if consecutive else idx, "v": values}
    if q:
        g["q"] = q
    return g


def encode_batch_v2(
    rows: Sequence[Row],
    *,
    schema: PointSchema,
    gateway: str,
    building: str,
    audit_head: tuple[int, str] | None,
    compress: bool = True,
) -> bytes:
    """One ``.../readings`` message for consecutive outbox rows (docs/uplink-schema.md)."""
    groups: list[dict[str, Any]] = []
    loose: list[dict[str, Any]] = []
    # The open group: ts, first seq, schema indices, values, not-good entries.
    ts_us = seq0 = next_seq = -1
    idx: list[int] = []
    values: list[Value] = []
    q: list[Any] = []
    index, points = schema.index, schema.points
    for r in rows:  # 2,000 rows a second at 10,000 points: unpacked once, no attribute look-ups
        seq, point, t, value, unit, quality, code, flags = r
        i = index.get(point)
        if i is None or points[i][1] != unit:
            loose.append(r.as_payload())
            continue
        if seq != next_seq or t != ts_us:  # next_seq is -1 while no group is open
            if values:
                groups.append(_group_out(ts_us, seq0, idx, values, q))
            ts_us, seq0, idx, values, q = t, seq, [], [], []
        next_seq = seq + 1
        if quality != "good" or code is not None or flags:
            q.append([len(values), quality, code, list(flags)])
        idx.append(i)
        values.append(value)
    if values:
        groups.append(_group_out(ts_us, seq0, idx, values, q))
    body: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "gateway": gateway,
        "building": building,
        "schema": schema.hash,
        "seq_first": rows[0].seq,
        "seq_last": rows[-1].seq,
        "audit_head": None if audit_head is None else {"seq": audit_head[0], "hash": audit_head[1]},
        "groups": groups,
    }
    if loose:
        body["readings"] = loose
    return _packed(_dumps(body), compress)


_dumps_text = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# A stored poll's point ids -> their schema indices (None: a point the schema does not hold as it is).
PollIndex = dict[tuple[int, int, str | None], list[int | None]]


@functools.lru_cache(maxsize=1024)
def _same_q(at: int, n: int, text: str) -> str:
    """The "q" entries of n readings from index ``at`` that share one state (a poll's shape repeats)."""
    return ",".join(f"[{i},{text}]" for i in range(at, at + n))


def encode_polls_v2(
    polls: Sequence[PollRow],
    *,
    after_seq: int,
    limit: int,
    schema: PointSchema,
    point_of: Callable[[int], tuple[str, str | None]],
    state_of: Callable[[int], tuple[str, str | None, tuple[str, ...]]],
    memo: PollIndex,
    gateway: str,
    building: str,
    audit_head: tuple[int, str] | None,
    compress: bool = True,
) -> tuple[bytes, int, int, int] | None:
    """What ``encode_batch_v2`` makes of the readings seq > after_seq (at most ``limit``) in stored polls
    (``Outbox.pending_polls``), byte for byte, without a Row or a parsed value per reading: a poll's
    values are already the JSON array a group carries. (payload, seq_first, seq_last, readings), or
    None when a reading's point is not in the schema as it is (encode the Rows: they travel as v1).
    ``memo``: the schema indices of the polls seen so far: one per outbox and schema (the keys are the
    outbox's point ids)."""
    index, points = schema.index, schema.points
    groups: list[str] = []
    # The open group: time, first seq, next seq, schema indices, value arrays' insides, not-good entries.
    g_ts = g_seq = g_next = -1
    g_idx: list[int] = []
    g_vals: list[str] = []
    g_q: list[str] = []  # [index,quality,code,[flags]] as JSON text
    said: dict[int, str] = {}  # state id -> its "q" entry's tail ("" for good, no code, no flags)
    first = last = count = 0

    def close() -> None:
        consecutive = g_idx == list(range(g_idx[0], g_idx[0] + len(g_idx)))
        p = str(g_idx[0]) if consecutive else _dumps_text(g_idx)
        q = f',"q":[{",".join(g_q)}]' if g_q else ""
        groups.append(f'{{"t":{g_ts},"s":{g_seq},"p":{p},"v":[{",".join(g_vals)}]{q}}}')

    for seq, n, ts_us, pid0, pids, vals, sids in polls:
        lo = max(0, after_seq + 1 - seq)
        hi = min(n, lo + limit - count)
        if lo >= hi:
            if count >= limit:
                break
            continue
        key = (pid0, n, pids)
        idx = memo.get(key)
        if idx is None:  # not seen with this schema
            idx = memo[key] = []
            for pid in poll_point_ids(pid0, n, pids):
                point, unit = point_of(pid)
                i = index.get(point)
                idx.append(None if i is None or points[i][1] != unit else i)
        whole = lo == 0 and hi == n
        part = idx if whole else idx[lo:hi]
        if None in part:
            return None
        inside = vals[1:-1] if whole else _dumps_text(json.loads(vals)[lo:hi])[1:-1]
        if not count:
            first = seq + lo
        if seq + lo != g_next or ts_us != g_ts:
            if g_vals:
                close()
            g_ts, g_seq, g_idx, g_vals, g_q = ts_us, seq + lo, [], [], []
        at = len(g_idx)
        states = poll_state_ids(sids)  # "q" entries, as text: a poll's readings often share one state
        for k in range(lo, hi) if isinstance(states, list) else (lo,):
            sid = states if isinstance(states, int) else states[k]
            text = said.get(sid)
            if text is None:
                quality, code, flags = state_of(sid)
                bad = quality != "good" or code is not None or flags
                text = said[sid] = _dumps_text([quality, code, list(flags)])[1:-1] if bad else ""
            if not text:
                continue
            if isinstance(states, int):  # the same entry for every reading of the poll: one cached text
                g_q.append(_same_q(at, hi - lo, text))
            else:
                g_q.append(f"[{at + k - lo},{text}]")
        g_idx.extend(part)  # type: ignore[arg-type]
        g_vals.append(inside)
        g_next = seq + hi
        last = seq + hi - 1
        count += hi - lo
    if not count:
        return None
    close()
    body: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "gateway": gateway,
        "building": building,
        "schema": schema.hash,
        "seq_first": first,
        "seq_last": last,
        "audit_head": None if audit_head is None else {"seq": audit_head[0], "hash": audit_head[1]},
        "groups": [],
    }
    # A key of the body's own object, never inside a string (its quotes would be escaped there).
    text = _dumps_text(body).replace('"groups":[]', f'"groups":[{",".join(groups)}]', 1)
    return _packed(text.encode(), compress), first, last, count


# -- decoding ---------------------------------------------------------------------------------------


def load_payload(payload: bytes) -> dict[str, Any]:
    """The JSON object of a message, inflated first when it is a zlib stream."""
    if payload[:1] == bytes([_ZLIB_FIRST]):
        try:
            payload = zlib.decompress(payload)
        except zlib.error as exc:
            raise PayloadError(f"not a complete zlib stream: {exc}") from exc
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise PayloadError("not a JSON object")
    return body


def _parse_ts(ts: str) -> int:
    return (datetime.fromisoformat(ts) - _EPOCH) // timedelta(microseconds=1)


def _row_from_v1(e: dict[str, Any]) -> Row:
    return Row(
        seq=e["seq"],
        point=e["point"],
        ts_us=_parse_ts(e["ts"]),
        value=e["value"],
        unit=e["unit"],
        quality=e["quality"],
        code=e["code"],
        flags=tuple(e["flags"]),
    )


@dataclass(frozen=True, kw_only=True)
class DecodedBatch:
    """A readings message as the outbox held it: the rows in seq order and the batch's header."""

    version: int
    gateway: str
    building: str
    schema: str | None
    seq_first: int
    seq_last: int
    audit_head: tuple[int, str] | None
    rows: list[Row]

    def as_v1(self) -> dict[str, Any]:
        """The batch as payload v1 would have carried it (``v`` says which version it came in)."""
        head = self.audit_head
        return {
            "v": self.version,
            "gateway": self.gateway,
            "building": self.building,
            "seq_first": self.seq_first,
            "seq_last": self.seq_last,
            "audit_head": None if head is None else {"seq": head[0], "hash": head[1]},
            "readings": [r.as_payload() for r in self.rows],
        }


class Decoder:
    """Keeps every schema it has seen (by hash: a hash always means the same point list) and decodes
    readings messages of either version against them."""

    def __init__(self) -> None:
        self.schemas: dict[str, PointSchema] = {}

    def add_schema(self, payload: bytes) -> PointSchema:
        body = load_payload(payload)
        try:
            points = [(str(p[0]), p[1], p[2]) for p in body["points"]]
            named = str(body["schema"])
        except (KeyError, TypeError, IndexError) as exc:
            raise PayloadError(f"not a schema message: {type(exc).__name__}: {exc}") from exc
        schema = make_schema(points)
        if schema.hash != named:
            raise PayloadError(f"schema message names {named} but its points hash to {schema.hash}")
        self.schemas[schema.hash] = schema
        return schema

    def decode_batch(self, payload: bytes) -> DecodedBatch:
        body = load_payload(payload)
        try:
            return self._decode(body)
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            if isinstance(exc, PayloadError):
                raise
            raise PayloadError(f"malformed readings message: {type(exc).__name__}: {exc}") from exc

    def _decode(self, body: dict[str, Any]) -> DecodedBatch:
        version = body.get("v")
        head = body["audit_head"]
        audit_head = None if head is None else (int(head["seq"]), str(head["hash"]))
        if version == 1:
            rows = [_row_from_v1(e) for e in body["readings"]]
            return self._batch(body, 1, None, audit_head, rows)
        if version != PAYLOAD_VERSION:
            raise PayloadError(f"unknown payload version {version!r}")
        schema = self.schemas.get(body["schema"])
        if schema is None:
            raise UnknownSchemaError(str(body["schema"]))
        rows = [_row_from_v1(e) for e in body.get("readings", ())]
        for g in body["groups"]:
            values = g["v"]
            p = g["p"]
            idx = list(range(p, p + len(values))) if isinstance(p, int) else p
            if len(idx) != len(values):
                raise PayloadError(f"group at seq {g['s']}: {len(idx)} points for {len(values)} values")
            odd = {k: (quality, code, tuple(flags)) for k, quality, code, flags in g.get("q", ())}
            if any(not 0 <= i < len(schema.points) for i in idx):
                raise PayloadError(f"group at seq {g['s']}: a point index outside schema {schema.hash}")
            for k, (i, value) in enumerate(zip(idx, values, strict=True)):
                pid, unit, _ = schema.points[i]
                quality, code, flags = odd.get(k, ("good", None, ()))
                rows.append(Row(g["s"] + k, pid, g["t"], value, unit, quality, code, flags))
        rows.sort(key=lambda r: r.seq)
        return self._batch(body, PAYLOAD_VERSION, schema.hash, audit_head, rows)

    @staticmethod
    def _batch(
        body: dict[str, Any], version: int, schema: str | None, head: tuple[int, str] | None, rows: list[Row]
    ) -> DecodedBatch:
        return DecodedBatch(
            version=version,
            gateway=body["gateway"],
            building=body["building"],
            schema=schema,
            seq_first=body["seq_first"],
            seq_last=body["seq_last"],
            audit_head=head,
            rows=rows,
        )

    def feed(self, topic: str, payload: bytes) -> DecodedBatch | None:
        """One message from the broker: a schema is kept, a readings batch decoded, the rest ignored."""
        if topic.endswith("/schema"):
            self.add_schema(payload)
            return None
        if topic.endswith("/readings"):
            return self.decode_batch(payload)
        return None

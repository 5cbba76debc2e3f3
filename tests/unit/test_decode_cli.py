"""`edge-agent decode`: mosquitto_sub -v lines with raw (binary, newline-bearing) and hex payloads."""

from __future__ import annotations

import io
import json

from edge_agent.cli.decode import decode_stream
from edge_agent.store.outbox import Row
from edge_agent.uplink.mqtt import encode_batch
from edge_agent.uplink.payload_v2 import encode_batch_v2, encode_schema, make_schema

BASE = "edge/110108B0001/gw-0001"
SCHEMA = make_schema([(f"m{i}.energy", "kWh", f"m{i}") for i in range(40)])


def _rows(first: int, n: int) -> list[Row]:
    ts = 1_700_000_000_000_000
    return [
        Row(first + i, f"m{i % 40}.energy", ts, 1000 + i * 1.37, "kWh", "good", None, ()) for i in range(n)
    ]


def _compressed_with_a_newline() -> tuple[list[Row], bytes]:
    for n in range(40, 400):
        rows = _rows(1, n)
        payload = encode_batch_v2(rows, schema=SCHEMA, gateway="gw-0001", building="b", audit_head=None)
        if payload[:1] == b"\x78" and b"\n" in payload:
            return rows, payload
    raise AssertionError("no compressed payload with a newline byte")


def _run(data: bytes) -> tuple[int, list[dict[str, object]], str]:
    out, err = io.StringIO(), io.StringIO()
    rc = decode_stream(io.BytesIO(data), batches=False, out=out, err=err)
    return rc, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_raw_binary_payloads_with_newlines_and_hex_payloads_decode() -> None:
    rows, batch = _compressed_with_a_newline()
    schema = encode_schema(SCHEMA, gateway="gw-0001", building="b")
    v1 = encode_batch(_rows(1000, 2), gateway="gw-0001", building="b", audit_head=None)
    data = (
        f"{BASE}/status ".encode() + b'{"v":1,"state":"online"}\n'
        + f"{BASE}/schema ".encode() + schema + b"\n"
        + f"{BASE}/readings ".encode() + batch + b"\n"
        + f"{BASE}/readings ".encode() + batch.hex().encode() + b"\n"  # mosquitto_sub -F '%t %x'
        + f"{BASE}/readings ".encode() + v1 + b"\n"
    )  # fmt: skip
    rc, lines, err = _run(data)
    assert rc == 0, err
    expected = [{"gateway": "gw-0001", "building": "b", **r.as_payload()} for r in rows]
    assert lines[: 2 * len(rows)] == expected + expected
    assert [line["seq"] for line in lines[2 * len(rows) :]] == [1000, 1001]


def test_unknown_schema_and_a_cut_payload_are_reported() -> None:
    _, batch = _compressed_with_a_newline()
    rc, lines, err = _run(f"{BASE}/readings ".encode() + batch + b"\n")
    assert rc == 1 and lines == [] and f"names schema {SCHEMA.hash}" in err
    rc, lines, err = _run(f"{BASE}/readings ".encode() + batch[: len(batch) // 2])
    assert rc == 1 and "ends inside a compressed payload" in err


def test_an_empty_message_is_no_data_as_mosquitto_sub_prints_it() -> None:
    """Clearing a retained schema (mosquitto_pub -r -n) reaches subscribers as an empty message, which
    `mosquitto_sub -v` prints as "(null)" and `-F '%t %x'` as nothing: neither is an error."""
    rows, batch = _compressed_with_a_newline()
    schema = encode_schema(SCHEMA, gateway="gw-0001", building="b")
    data = (
        f"{BASE}/schema ".encode() + schema + b"\n"
        + f"{BASE}/readings ".encode() + batch + b"\n"
        + f"{BASE}/schema (null)\n".encode()
        + f"{BASE}/schema \n".encode()
    )  # fmt: skip
    rc, lines, err = _run(data)
    assert (rc, err) == (0, "")
    assert [line["seq"] for line in lines] == [r.seq for r in rows]

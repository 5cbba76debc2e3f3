"""docs/uplink-schema.md's examples are what goes on the wire: each `<!-- example: NAME -->` block is parsed
and compared, field name by field name and JSON type by JSON type, with a payload the agent's own code
builds (the outbox, the audit chain, the uplink's encoders). A field added, renamed or moved (the drop's
`count` once was documented under `event` while it travelled under `event.after`) fails here."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drivers.base import Quality, Reading
from edge_agent.config.settings import StorageOptions
from edge_agent.core.clock import FakeClock
from edge_agent.core.validate import ValidatedReading
from edge_agent.store.audit import AuditKind, AuditLog
from edge_agent.store.db import open_state_db
from edge_agent.store.outbox import Outbox, Row
from edge_agent.uplink.mqtt import audit_event, encode_batch, encode_event
from edge_agent.uplink.payload_v2 import Decoder, PointSchema, encode_batch_v2, encode_schema, make_schema

DOC = Path(__file__).resolve().parents[2] / "docs" / "uplink-schema.md"
T0 = datetime(2025, 7, 1, 8, 0, tzinfo=UTC)


def doc_examples() -> dict[str, Any]:
    text = DOC.read_text(encoding="utf-8")
    found = re.findall(r"<!-- example: ([\w-]+) -->\s*```json\n(.*?)```", text, flags=re.S)
    return {name: json.loads(body) for name, body in found}


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    return type(v).__name__


def assert_same_shape(doc: Any, real: Any, where: str = "$") -> None:
    assert _kind(doc) == _kind(real), f"{where}: documented {_kind(doc)} {doc!r}, on the wire {real!r}"
    if isinstance(doc, dict):
        assert sorted(doc) == sorted(real), f"{where}: documented keys {list(doc)}, on the wire {list(real)}"
        for k in doc:
            assert_same_shape(doc[k], real[k], f"{where}.{k}")
    elif isinstance(doc, list):
        assert bool(doc) == bool(real), f"{where}: documented {doc!r}, on the wire {real!r}"
        for i, (d, r) in enumerate(zip(doc, real, strict=False)):
            assert_same_shape(d, r, f"{where}[{i}]")


@pytest.fixture
def wire(tmp_path: Path) -> dict[str, Any]:
    """Real payloads: readings through the outbox, events through the audit chain into the event table."""
    clock = FakeClock(T0)
    conn = open_state_db(tmp_path / "state.db")
    outbox = Outbox(conn=conn, options=StorageOptions(retain_acked=0), clock=clock, gateway_id="gw-0001")
    audit = AuditLog(conn=open_state_db(tmp_path / "state.db"), clock=clock)
    audit.on_append = lambda rec: outbox.append_event(audit_event(rec))  # as edge_agent/service does

    def reading(
        point: str, value: Any, unit: str, quality: Quality, code: str | None, flags: tuple[str, ...]
    ) -> Any:
        return ValidatedReading(Reading(point, value, T0, quality, code), flags, unit)

    outbox.append(
        [
            reading("mtr-1.energy", 12345.67, "kWh", Quality.GOOD, None, ()),
            reading("ahu-3.sp", 26.0, "degC", Quality.GOOD, None, ("out_of_range",)),
            reading("mtr-2.energy", None, "kWh", Quality.BAD, "timeout", ()),
        ]
    )
    rows = outbox.pending(0, 10)
    readings = json.loads(
        encode_batch(rows, gateway="gw-0001", building="110108B0001", audit_head=audit.head())
    )
    # A drop (a reading too large to send is the simplest real one), audited as the service does.
    drop = outbox.drop_unsendable(1, "too_large")
    assert drop is not None
    ev = drop.as_event()
    audit.append(AuditKind.DROP, subject="outbox", after=ev, reason=str(ev["reason"]))
    # A broker refusal's finding, as the service's on_finding hook writes it.
    detail = {"topic": "edge/110108B0001/gw-0001/readings", "reason": "Not authorized", "reason_code": 135,
              "seq_first": 2, "seq_last": 3}  # fmt: skip
    audit.append_finding(
        "uplink_refused", subject=detail["topic"], rule="uplink", after=detail,  # type: ignore[arg-type]
        reason="broker refused the publish: Not authorized; kept in the outbox, retrying",
    )  # fmt: skip
    events = [
        json.loads(encode_event(e, gateway="gw-0001", building="110108B0001"))
        for e in outbox.pending_events(0, 10)
    ]
    conn.close()
    return {"readings": readings, "event-drop": events[0], "event-uplink-refused": events[1]}


def test_every_documented_example_is_parsed() -> None:
    assert set(doc_examples()) == {
        "readings", "event-drop", "event-uplink-refused", "status", "schema-v2", "readings-v2"
    }  # fmt: skip


def _v2_example() -> tuple[PointSchema, list[Row]]:
    """The doc's v2 example: a poll of mtr-1, a poll of ahu-3, and a point the schema does not hold."""
    a = 1_751_356_800_125_000  # 2025-07-01T08:00:00.125Z
    b = a + 6000
    schema = make_schema(
        [("mtr-1.energy", "kWh", "mtr-1"), ("mtr-1.power", "kW", "mtr-1"), ("ahu-3.temp", "degC", "ahu-3"),
         ("ahu-3.sp", "degC", "ahu-3"), ("ahu-3.fan", None, "ahu-3")]
    )  # fmt: skip
    rows = [
        Row(1201, "mtr-1.energy", a, 12345.67, "kWh", "good", None, ()),
        Row(1202, "mtr-1.power", a, 41.5, "kW", "good", None, ()),
        Row(1203, "ahu-3.temp", b, 27.25, "degC", "good", None, ()),
        Row(1204, "ahu-3.sp", b, 26.0, "degC", "good", None, ("out_of_range",)),
        Row(1205, "ahu-3.fan", b, None, None, "bad", "timeout", ()),
        Row(1206, "ahu-2.temp", b, 22.5, "degC", "uncertain", "fault", ()),
    ]
    return schema, rows


def test_v2_examples_are_exactly_what_the_encoder_sends() -> None:
    schema, rows = _v2_example()
    doc = doc_examples()
    real_schema = encode_schema(schema, gateway="gw-0001", building="110108B0001", compress=False)
    assert json.loads(real_schema) == doc["schema-v2"]
    head = (57, "9f2c" + "0" * 60)
    real = encode_batch_v2(
        rows, schema=schema, gateway="gw-0001", building="110108B0001", audit_head=head, compress=False
    )
    assert real == json.dumps(json.loads(real), ensure_ascii=False, separators=(",", ":")).encode()
    body = json.loads(real)
    assert body["audit_head"]["hash"] == head[1]
    body["audit_head"]["hash"] = doc["readings-v2"]["audit_head"]["hash"]  # the doc abbreviates it
    assert body == doc["readings-v2"]
    decoder = Decoder()
    decoder.add_schema(real_schema)
    assert decoder.decode_batch(real).rows == rows


@pytest.mark.parametrize("name", ["readings", "event-drop", "event-uplink-refused"])
def test_doc_example_matches_the_wire(name: str, wire: dict[str, Any]) -> None:
    assert_same_shape(doc_examples()[name], wire[name])


def test_drop_example_names_every_reason_field() -> None:
    after = doc_examples()["event-drop"]["event"]["after"]
    assert after["count"] == after["seq_last"] - after["seq_first"] + 1


def test_status_example_matches_the_wire(tmp_path: Path) -> None:
    from edge_agent.config.settings import MqttUplink
    from edge_agent.uplink.mqtt import MqttUplinkService

    conn = open_state_db(tmp_path / "state.db")  # a real file: a ":memory:" path would be created in the cwd
    clock = FakeClock(T0)
    svc = MqttUplinkService(
        options=MqttUplink(host="127.0.0.1"),
        outbox=Outbox(conn=conn, options=StorageOptions(), clock=clock, gateway_id="gw-0001"),
        gateway_id="gw-0001",
        building_id="110108B0001",
        audit_head=None,
        clock=clock,
    )
    real = json.loads(svc.status_payload("online"))
    conn.close()
    assert_same_shape(doc_examples()["status"], real)

"""The platform's XML messages (STANDARDS.md): build and parse as pure functions over bytes.

``<root><common><building_id/><gateway_id/><type/></common><TYPE operation="..">...</TYPE></root>``
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "FunctionValue",
    "Message",
    "MeterValues",
    "ProtocolError",
    "build",
    "data_message",
    "format_time",
    "parse",
    "parse_time",
]

TIME_FORMAT = "%Y%m%d%H%M%S"


class ProtocolError(ValueError):
    """A message that is not the platform protocol's XML."""


@dataclass(frozen=True, slots=True)
class FunctionValue:
    function_id: str
    coding: str
    value: float
    error: str = "192"  # the protocol's "no error"; a missing value is reported with its own error text


@dataclass(frozen=True, slots=True)
class MeterValues:
    meter_id: str
    functions: tuple[FunctionValue, ...]


@dataclass(frozen=True, slots=True)
class Message:
    type: str
    operation: str
    building_id: str = ""
    gateway_id: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    meters: tuple[MeterValues, ...] = ()

    def get(self, name: str) -> str | None:
        return self.fields.get(name)


def format_time(t: datetime) -> str:
    return t.strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    try:
        return datetime.strptime(text, TIME_FORMAT)
    except ValueError:
        raise ProtocolError(f"time {text!r} is not yyyyMMddHHmmss") from None


def _fmt(v: float) -> str:
    return f"{v:.6f}".rstrip("0").rstrip(".") or "0"


def build(m: Message) -> bytes:
    root = ET.Element("root")
    common = ET.SubElement(root, "common")
    ET.SubElement(common, "building_id").text = m.building_id
    ET.SubElement(common, "gateway_id").text = m.gateway_id
    ET.SubElement(common, "type").text = m.type
    body = ET.SubElement(root, m.type, {"operation": m.operation})
    for name, text in m.fields.items():
        ET.SubElement(body, name).text = text
    for meter in m.meters:
        me = ET.SubElement(body, "meter", {"id": meter.meter_id})
        for f in meter.functions:
            fe = ET.SubElement(me, "function", {"id": f.function_id, "coding": f.coding, "error": f.error})
            fe.text = _fmt(f.value)
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml


def parse(data: bytes) -> Message:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise ProtocolError(f"not XML: {e}") from None
    if root.tag != "root":
        raise ProtocolError(f"root element is <{root.tag}>, not <root>")
    common = root.find("common")
    bodies = [c for c in root if c.tag != "common"]
    if len(bodies) != 1:
        raise ProtocolError(f"expected one message element beside <common>, found {len(bodies)}")
    body = bodies[0]
    fields: dict[str, str] = {}
    meters: list[MeterValues] = []
    for child in body:
        if child.tag == "meter":
            funcs = []
            for fe in child.findall("function"):
                try:
                    value = float((fe.text or "").strip())
                except ValueError:
                    raise ProtocolError(
                        f"function {fe.get('id')!r} value {fe.text!r} is not a number"
                    ) from None
                funcs.append(
                    FunctionValue(fe.get("id", ""), fe.get("coding", ""), value, fe.get("error", ""))
                )
            meters.append(MeterValues(child.get("id", ""), tuple(funcs)))
        else:
            fields[child.tag] = (child.text or "").strip()

    def common_text(name: str) -> str:
        el = common.find(name) if common is not None else None
        return (el.text or "").strip() if el is not None else ""

    return Message(
        type=body.tag,
        operation=body.get("operation", ""),
        building_id=common_text("building_id"),
        gateway_id=common_text("gateway_id"),
        fields=fields,
        meters=tuple(meters),
    )


def data_message(
    *,
    building_id: str,
    gateway_id: str,
    operation: str,
    sequence: int,
    period_start: datetime,
    meters: tuple[MeterValues, ...],
    total: int | None = None,
    current: int | None = None,
) -> Message:
    """A period's ``report`` (live) or ``continuous`` (resent from the buffer, with total/current)."""
    fields = {"sequence": str(sequence), "parser": "yes", "time": format_time(period_start)}
    if total is not None and current is not None:
        fields["total"] = str(total)
        fields["current"] = str(current)
    return Message("data", operation, building_id, gateway_id, fields, meters)

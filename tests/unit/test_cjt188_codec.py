"""CJ/T 188 codec: frames round-trip with either DI byte order, corrupted checksums are caught, and 901F
replies of water and heat meters decode (values built here from the standard's layout)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.cjt188.codec import (
    METER_TYPES,
    Frame,
    FrameError,
    bcd,
    bcd_bytes,
    decode_901f,
    encode_frame,
    read_request,
    split_frame,
)

addresses = st.text(alphabet="0123456789", min_size=14, max_size=14)
TIME = bytes.fromhex("00 30 12 15 11 26 20".replace(" ", ""))  # 2026-11-15 12:30:00


@given(st.sampled_from(sorted(METER_TYPES.values())), addresses, st.integers(0, 255), st.binary(max_size=80),
       st.integers(0, 4))  # fmt: skip
def test_frames_round_trip(meter_type: int, address: str, control: int, data: bytes, preamble: int) -> None:
    wire = encode_frame(meter_type, address, control, data, preamble=preamble)
    used, frame = split_frame(wire)
    assert used == len(wire)
    assert frame == Frame(meter_type, address, control, data)


@given(addresses, st.binary(min_size=1, max_size=40), st.data())
def test_a_corrupted_data_or_checksum_byte_is_an_error(
    address: str, data: bytes, draw: st.DataObject
) -> None:
    wire = bytearray(encode_frame(0x10, address, 0x81, data, preamble=0))
    i = draw.draw(st.integers(11, len(wire) - 2))
    wire[i] ^= draw.draw(st.integers(1, 255))
    with pytest.raises(FrameError):
        split_frame(bytes(wire))


@given(st.integers(0, 10**8 - 1))
def test_bcd_round_trips(n: int) -> None:
    assert bcd(bcd_bytes(n, 4)) == n


def water_reply(flow_centi: int, *, di: bytes = b"\x90\x1f") -> Frame:
    settled = max(0, flow_centi - 100)
    data = di + b"\x00" + bcd_bytes(flow_centi, 4) + b"\x2c" + bcd_bytes(settled, 4) + b"\x2c"
    data += TIME + b"\x00\x00"
    assert len(data) == 0x16
    _used, frame = split_frame(encode_frame(0x10, "00000000001234", 0x81, data))
    assert frame is not None
    return frame


def test_water_meter_901f_decodes_in_both_di_orders() -> None:
    r = decode_901f(water_reply(1234567))
    assert r.values == {"flow": pytest.approx(12345.67), "settlement_flow": pytest.approx(12344.67)}
    assert r.units == {"flow": "m3", "settlement_flow": "m3"}
    r = decode_901f(water_reply(55, di=b"\x1f\x90"), di_order="low_first")
    assert r.values["flow"] == pytest.approx(0.55)
    with pytest.raises(FrameError, match="expected 901F"):
        decode_901f(water_reply(55, di=b"\x1f\x90"))


def test_heat_meter_901f_decodes_every_quantity() -> None:
    data = b"\x90\x1f\x00"
    data += bcd_bytes(1000, 4) + b"\x05"  # settlement heat 10.00 kWh
    data += bcd_bytes(123456, 4) + b"\x05"  # heat 1234.56 kWh
    data += bcd_bytes(1550, 4) + b"\x17"  # power 15.50 kW
    data += bcd_bytes(12345, 4) + b"\x35"  # flow rate 1.2345 m3/h
    data += bcd_bytes(98765, 4) + b"\x2c"  # flow 987.65 m3
    data += bcd_bytes(5520, 3) + bcd_bytes(4010, 3)  # 55.20 / 40.10 degC
    data += bcd_bytes(8760, 3) + TIME + b"\x04\x00"
    assert len(data) == 0x2E
    _used, frame = split_frame(encode_frame(0x20, "00000000005678", 0x81, data))
    assert frame is not None
    r = decode_901f(frame)
    assert r.values == pytest.approx({
        "settlement_heat": 10.0, "heat": 1234.56, "heat_power": 15.5, "flow_rate": 1.2345, "flow": 987.65,
        "supply_temp": 55.2, "return_temp": 40.1, "hours": 8760.0,
    })  # fmt: skip
    assert r.units["heat"] == "kWh" and r.units["flow_rate"] == "m3/h" and r.status == 4


def test_error_reply_short_reply_and_unknown_unit_are_errors() -> None:
    with pytest.raises(FrameError, match="error reply"):
        decode_901f(Frame(0x10, "00000000001234", 0xC1, b"\x01"))
    with pytest.raises(FrameError, match="expected 22"):
        decode_901f(Frame(0x10, "00000000001234", 0x81, b"\x90\x1f\x00\x00"))
    frame = water_reply(100)
    bad = Frame(frame.meter_type, frame.address, frame.control, frame.data[:7] + b"\x99" + frame.data[8:])
    with pytest.raises(FrameError, match="unit code 99"):
        decode_901f(bad)


def test_read_request_bytes() -> None:
    # cold water meter 00000000001234, DI 901F high byte first, serial 0; CS by hand:
    # 68+10+34+12+01+03+90+1F+00 = 0x171 -> 71
    assert read_request(0x10, "00000000001234").hex(" ").upper() == (
        "FE FE 68 10 34 12 00 00 00 00 00 01 03 90 1F 00 71 16"
    )

"""DL/T 645-2007 codec: frames and BCD values round-trip, every corrupted checksum is caught, noise and the
FE preamble are skipped; values of the standard's examples."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.dlt645.codec import (
    DATA_IDS,
    Frame,
    FrameError,
    bcd_decode,
    bcd_encode,
    decode_address,
    decode_read_reply,
    encode_address,
    encode_frame,
    read_request,
    split_frame,
)

addresses = st.text(alphabet="0123456789", min_size=12, max_size=12)


@given(addresses, st.integers(0, 255), st.binary(max_size=200), st.booleans())
def test_frames_round_trip(address: str, control: int, data: bytes, preamble: bool) -> None:
    wire = encode_frame(address, control, data, preamble=preamble)
    used, frame = split_frame(wire)
    assert used == len(wire)
    assert frame == Frame(address=address, control=control, data=data)


@given(addresses, st.binary(min_size=1, max_size=40), st.data())
def test_any_single_corrupted_byte_in_the_checksummed_part_is_an_error(
    address: str, data: bytes, draw: st.DataObject
) -> None:
    wire = bytearray(encode_frame(address, 0x91, data, preamble=False))
    # the data bytes and the checksum itself (changing the 68s or L changes the framing instead)
    i = draw.draw(st.sampled_from([*range(10, len(wire) - 2), len(wire) - 2]))
    wire[i] ^= draw.draw(st.integers(1, 255))
    with pytest.raises(FrameError):
        split_frame(bytes(wire))


@given(st.binary(max_size=30).filter(lambda b: 0x68 not in b), addresses)
def test_noise_before_a_frame_is_skipped(noise: bytes, address: str) -> None:
    wire = noise + encode_frame(address, 0x91, b"\x00\x00\x01\x00\x12\x34\x56\x00")
    dropped, frame = split_frame(wire)
    assert frame is None or dropped == len(wire)
    rest = wire[dropped:] if frame is None else b""
    if frame is None:
        used, frame = split_frame(rest)
        assert used == len(rest)
    assert frame is not None and frame.address == address


def test_incomplete_frame_waits_for_more_bytes() -> None:
    wire = encode_frame("000000001234", 0x91, b"\x00" * 8)
    for cut in range(5, len(wire)):
        used, frame = split_frame(wire[:cut])
        assert frame is None and used <= 4  # only the preamble is dropped


def test_wrong_end_byte_is_an_error() -> None:
    wire = bytearray(encode_frame("000000001234", 0x91, b"\x00" * 8))
    wire[-1] = 0x17
    with pytest.raises(FrameError, match="ends with 17"):
        split_frame(bytes(wire))


@given(st.integers(1, 6), st.data())
def test_bcd_round_trips(size: int, data: st.DataObject) -> None:
    signed = data.draw(st.booleans())
    top = 8 * 10 ** (size * 2 - 1) - 1 if signed else 10 ** (size * 2) - 1
    value = data.draw(st.integers(-top if signed else 0, top))
    assert bcd_decode(bcd_encode(value, size, signed=signed), signed=signed) == value


@given(addresses)
def test_addresses_round_trip_low_byte_first(address: str) -> None:
    raw = encode_address(address)
    assert raw[0] == int(address[10:12], 16)
    assert decode_address(raw) == address


def test_the_standards_read_request_bytes() -> None:
    # read forward active energy total (DI 00010000) of meter 000000001234: DI bytes 00 00 01 00 sent +33;
    # CS by hand: 68+34+12+68+11+04+33+33+34+33 = 0x1F8 -> F8
    wire = read_request("000000001234", 0x00010000)
    assert wire.hex(" ").upper() == "FE FE FE FE 68 34 12 00 00 00 00 68 11 04 33 33 34 33 F8 16"


def test_values_decode_with_decimals_and_sign() -> None:
    def reply(di: int, value: bytes) -> Frame:
        return Frame("000000001234", 0x91, di.to_bytes(4, "little") + value)

    assert decode_read_reply(reply(0x00010000, bytes.fromhex("78563412")), 0x00010000) == pytest.approx(
        123456.78
    )
    assert decode_read_reply(reply(0x02010100, bytes.fromhex("0123")), 0x02010100) == pytest.approx(230.1)
    # current -1.500 A: sign in the top bit of the top byte
    assert decode_read_reply(reply(0x02020100, bytes.fromhex("001580")), 0x02020100) == pytest.approx(-1.5)
    with pytest.raises(FrameError, match="expected 02010100"):
        decode_read_reply(reply(0x02010200, bytes.fromhex("0123")), 0x02010100)
    with pytest.raises(FrameError, match="error reply 02"):
        decode_read_reply(Frame("000000001234", 0xD1, b"\x02"), 0x02010100)
    with pytest.raises(FrameError, match="not BCD"):
        decode_read_reply(reply(0x02010100, bytes.fromhex("0A23")), 0x02010100)


@given(st.sampled_from(sorted(DATA_IDS)), st.data())
def test_every_data_identifier_round_trips_through_a_reply(di: int, data: st.DataObject) -> None:
    spec = DATA_IDS[di]
    top = 8 * 10 ** (spec.size * 2 - 1) - 1 if spec.signed else 10 ** (spec.size * 2) - 1
    n = data.draw(st.integers(-top if spec.signed else 0, top))
    value = bcd_encode(n, spec.size, signed=spec.signed)
    wire = encode_frame("000000001234", 0x91, di.to_bytes(4, "little") + value)
    _used, frame = split_frame(wire)
    assert frame is not None
    assert decode_read_reply(frame, di) == pytest.approx(n / 10**spec.decimals)


@given(addresses)
def test_read_address_reply_round_trips(address: str) -> None:
    from drivers.dlt645.codec import encode_address, read_address_reply, read_address_request

    assert read_address_request() == bytes.fromhex("fefefefe68aaaaaaaaaaaa681300df16")
    _used, frame = split_frame(encode_frame(address, 0x93, encode_address(address)))
    assert frame is not None and read_address_reply(frame) == address
    with pytest.raises(FrameError, match="not a read-address reply"):
        read_address_reply(frame.__class__(address, 0x91, frame.data))

"""The platform codecs: CRC16 check values, frames and AES round trips for every framing, the MD5 order."""

from __future__ import annotations

import hashlib
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.config.settings import PlatformCipher, PlatformFraming
from edge_agent.uplink.platform.crypto import CipherError, auth_md5, decrypt, encrypt
from edge_agent.uplink.platform.framing import FrameError, FrameReader, crc16, encode_frame
from edge_agent.uplink.platform.protocol import (
    FunctionValue,
    Message,
    MeterValues,
    ProtocolError,
    build,
    data_message,
    parse,
)

KEY = b"0123456789abcdef"


@pytest.mark.parametrize(
    ("variant", "check"),
    [("ccitt_false", 0x29B1), ("xmodem", 0x31C3), ("kermit", 0x2189), ("modbus", 0x4B37)],
)
def test_crc16_check_values(variant: str, check: int) -> None:
    # The catalogue's check value: CRC of ASCII "123456789" (reveng.sourceforge.io CRC catalogue).
    assert crc16(b"123456789", variant) == check


framings = st.builds(
    PlatformFraming,
    kind=st.sampled_from(["binary", "hex"]),
    header_hex=st.sampled_from(["55AA55AA", "68", ""]),
    tail_hex=st.sampled_from(["68681616", "16", ""]),
    length_bytes=st.sampled_from([2, 4]),
    length_endian=st.sampled_from(["little", "big"]),
    sequence_field=st.booleans(),
    crc=st.sampled_from(["none", "ccitt_false", "xmodem", "kermit", "modbus"]),
    crc_endian=st.sampled_from(["little", "big"]),
    crc_covers=st.sampled_from(["body", "length_and_body"]),
)


@given(
    f=framings,
    bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    seq=st.integers(0, 2**32 - 1),
    cut=st.integers(1, 50),
)
def test_frames_round_trip_through_any_split(
    f: PlatformFraming, bodies: list[bytes], seq: int, cut: int
) -> None:
    if f.kind == "binary" and not f.header_hex:
        f = f.model_copy(update={"header_hex": "55AA55AA"})
    stream = b"".join(encode_frame(b, f, sequence=seq) for b in bodies)
    reader = FrameReader(f)
    got = []
    for i in range(0, len(stream), cut):
        got += reader.feed(stream[i : i + cut])
    assert [g.body for g in got] == bodies
    if f.kind == "binary" and f.sequence_field:
        assert {g.sequence for g in got} == {seq}


def test_the_framing_seen_in_the_field() -> None:
    f = PlatformFraming()
    frame = encode_frame(b"\x01\x02", f, sequence=7)
    assert frame[:4] == bytes.fromhex("55AA55AA")
    assert frame[4:8] == (6).to_bytes(4, "little")
    assert frame[8:12] == (7).to_bytes(4, "little")
    assert frame[-4:] == bytes.fromhex("68681616")
    assert int.from_bytes(frame[14:16], "big") == crc16(frame[8:14], "ccitt_false")


def test_a_damaged_frame_is_refused_with_what_was_expected() -> None:
    f = PlatformFraming()
    frame = bytearray(encode_frame(b"hello", f))
    frame[12] ^= 0xFF
    with pytest.raises(FrameError, match="CRC"):
        FrameReader(f).feed(bytes(frame))
    with pytest.raises(FrameError, match="header"):
        FrameReader(f).feed(b"GET / HTTP/1.1\r\n")


ciphers = st.builds(
    PlatformCipher,
    mode=st.sampled_from(["cbc", "ecb", "none"]),
    iv=st.sampled_from(["key", "zero", "000102030405060708090a0b0c0d0e0f"]),
    padding=st.just("pkcs7"),
)


@given(c=ciphers, plain=st.binary(max_size=500), key=st.binary(min_size=16, max_size=16))
def test_aes_round_trips(c: PlatformCipher, plain: bytes, key: bytes) -> None:
    data = encrypt(plain, key, c)
    if c.mode != "none":
        assert len(data) % 16 == 0 and data != plain
    assert decrypt(data, key, c) == plain


@given(plain=st.binary(max_size=200).map(lambda b: b.rstrip(b"\x00")))
def test_zero_padding_round_trips_text(plain: bytes) -> None:
    c = PlatformCipher(padding="zero")
    assert decrypt(encrypt(plain, KEY, c), KEY, c) == plain


def test_aes_cbc_iv_equal_to_key_known_vector() -> None:
    # Computed independently: openssl enc -aes-128-cbc -K <hex key> -iv <hex key> on "<root/>" (PKCS#7).
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enc = Cipher(algorithms.AES(KEY), modes.CBC(KEY)).encryptor()
    want = enc.update(b"<root/>" + bytes([9]) * 9) + enc.finalize()
    assert encrypt(b"<root/>", KEY, PlatformCipher()) == want


def test_a_wrong_key_is_a_clear_error() -> None:
    data = encrypt(b"<root/>" * 3, KEY, PlatformCipher())
    with pytest.raises(CipherError):
        decrypt(data, b"fedcba9876543210", PlatformCipher())
    with pytest.raises(CipherError, match="16 bytes"):
        encrypt(b"x", b"short", PlatformCipher())


def test_md5_in_either_order() -> None:
    assert auth_md5("123456", KEY, "sequence_key") == hashlib.md5(b"123456" + KEY).hexdigest()
    assert auth_md5("123456", KEY, "key_sequence") == hashlib.md5(KEY + b"123456").hexdigest()


names = st.text(alphabet="abcdefghij0123456789_", min_size=1, max_size=12)


@given(
    meters=st.lists(
        st.builds(
            MeterValues,
            meter_id=names,
            functions=st.lists(
                st.builds(
                    FunctionValue,
                    function_id=names,
                    coding=st.sampled_from(["01A00", "01B00", "02000"]),
                    value=st.integers(0, 10**9).map(lambda i: i / 1000),
                ),
                max_size=3,
            ).map(tuple),
        ),
        max_size=4,
    ).map(tuple),
    seq=st.integers(0, 10**6),
)
def test_data_messages_round_trip(meters: tuple[MeterValues, ...], seq: int) -> None:
    m = data_message(
        building_id="370102A001",
        gateway_id="gw-1",
        operation="continuous",
        sequence=seq,
        period_start=datetime(2026, 7, 1, 10, 15),
        meters=meters,
        total=3,
        current=1,
    )
    assert parse(build(m)) == m


def test_not_xml_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        parse(b"\x00\x01garbage")
    with pytest.raises(ProtocolError, match="root"):
        parse(b"<html/>")
    assert parse(build(Message("heart_beat", "notify"))).operation == "notify"

"""The DL/T 645 meter simulator on a real pseudo-terminal, checked against the driver's codec (written
separately): every data identifier of the codec's table reads back the meter's value; a wrong checksum
gets no reply; the wildcard address reaches the single meter."""

from __future__ import annotations

import asyncio
import os
import tty

import pytest

from drivers.dlt645.codec import DATA_IDS, WILDCARD, decode_read_reply, read_request, split_frame
from sim.dlt645_meter import Dlt645Bus, Meter

VALUES = {
    0x00000000: -12.5, 0x00010000: 123456.78, 0x00010100: 1.01, 0x00010200: 2.02, 0x00010300: 3.03,
    0x00010400: 4.04, 0x00020000: 5.5, 0x02010100: 230.1, 0x02010200: 229.9, 0x02010300: 231.0,
    0x02020100: -1.5, 0x02020200: 2.25, 0x02020300: 3.125, 0x02030000: 1.2345, 0x02030100: -0.4321,
    0x02060000: 0.985, 0x02800002: 49.98,
}  # fmt: skip


async def exchange(path: str, request: bytes, timeout: float = 2.0) -> bytes:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        tty.setraw(fd)
        os.write(fd, request)
        buf = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                buf += os.read(fd, 256)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                continue
            _used, frame = split_frame(buf)
            if frame is not None:
                return buf
        return buf
    finally:
        os.close(fd)


async def test_every_data_identifier_reads_back() -> None:
    assert set(VALUES) == set(DATA_IDS)
    async with Dlt645Bus([Meter("000000001234", dict(VALUES))], baudrate=9600, turnaround_s=0) as bus:
        for di, value in VALUES.items():
            _used, frame = split_frame(await exchange(bus.path, read_request("000000001234", di)))
            assert frame is not None and frame.address == "000000001234"
            assert decode_read_reply(frame, di) == pytest.approx(value), hex(di)


async def test_wrong_checksum_gets_no_reply_and_wildcard_reaches_the_one_meter() -> None:
    async with Dlt645Bus([Meter("000000005678", dict(VALUES))], baudrate=9600, turnaround_s=0) as bus:
        bad = bytearray(read_request("000000005678", 0x00010000))
        bad[-2] ^= 0xFF
        assert await exchange(bus.path, bytes(bad), timeout=0.3) == b""
        assert bus.bad_frames == 1
        _used, frame = split_frame(await exchange(bus.path, read_request(WILDCARD, 0x02010100)))
        assert frame is not None and frame.address == "000000005678"


async def test_an_unknown_identifier_is_an_error_reply() -> None:
    async with Dlt645Bus([Meter("000000001234", {})], baudrate=9600, turnaround_s=0) as bus:
        _used, frame = split_frame(await exchange(bus.path, read_request("000000001234", 0x02010100)))
        assert frame is not None and frame.control == 0xD1
        with pytest.raises(ValueError, match="error reply 02"):
            decode_read_reply(frame, 0x02010100)

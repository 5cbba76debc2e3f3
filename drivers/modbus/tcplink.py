"""A lean Modbus TCP client for the poll path: one request in flight, MBAP frames checked strictly.

pymodbus's client costs about as much CPU per request as the rest of a poll (a transaction manager,
a PDU object per request and reply, a register-by-register decode, and a debug log call whose
``str(pdu)`` argument is built for every reply even with debug logging off). This link does only what
the driver needs: it frames a request PDU, awaits the one reply and returns its PDU bytes. Its frame
rules are the ones the driver used to add to pymodbus: a frame with protocol id not 0, a length
outside 2..254, another transaction id (0 is tolerated), another unit id, or more than
:data:`MAX_BUFFER` bytes without a complete frame fail the request with :class:`BadReply` and close the
connection (the stream cannot be resynchronised). A copy of the last reply while no request waits is
ignored, as pymodbus ignores it. A lost connection fails the waiting request at once. Timeouts,
reconnects and backoff stay with the caller (:class:`drivers.modbus.driver.Endpoint`). RTU framing and
serial lines keep pymodbus.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from itertools import chain

from pymodbus.exceptions import ConnectionException

__all__ = [
    "MAX_BUFFER",
    "BadReply",
    "Reply",
    "TcpLink",
    "parse_read",
    "parse_write",
    "read_request",
    "write_request",
]

# pymodbus's limit for a Modbus TCP frame (its FramerSocket.MAX_SIZE): 7 header bytes and a 253-byte PDU fit.
MAX_BUFFER = 264
_MBAP = struct.Struct(">HHHB")
_READ_REQ = struct.Struct(">BHH")
_TID_WRAP = 65000  # pymodbus counts 1..65000: the same ids on the wire
# Coils and discrete inputs come 8 to a byte, least significant bit first.
_BITS: tuple[tuple[bool, ...], ...] = tuple(tuple(bool(b >> i & 1) for i in range(8)) for b in range(256))
_REGS: dict[int, struct.Struct] = {}


class BadReply(Exception):
    """A reply that cannot be parsed or matched (wrong transaction or unit id, garbage, bad byte count)."""


class Reply:
    """A parsed reply: the attributes of pymodbus's PDUs the driver reads, nothing else."""

    __slots__ = ("bits", "exception_code", "function_code", "registers")

    def __init__(
        self,
        function_code: int,
        registers: Sequence[int] = (),
        bits: Sequence[bool] = (),
        exception_code: int = 0,
    ) -> None:
        self.function_code = function_code
        self.registers = registers
        self.bits = bits
        self.exception_code = exception_code

    def isError(self) -> bool:  # pymodbus's name: the driver reads both alike
        return self.function_code > 0x80


def read_request(fc: int, start: int, count: int) -> bytes:
    """The PDU of a read (FC1-4)."""
    return _READ_REQ.pack(fc, start, count)


def write_request(fc: int, address: int, regs: Sequence[int]) -> bytes:
    """The PDU of a write: FC5 (one coil), FC15 (one coil, the multiple form), FC6 (one register), FC16."""
    if fc == 5:
        return _READ_REQ.pack(5, address, 0xFF00 if regs[0] else 0)
    if fc == 15:
        return struct.pack(">BHHBB", 15, address, 1, 1, 1 if regs[0] else 0)
    if fc == 6:
        return _READ_REQ.pack(6, address, regs[0])
    n = len(regs)
    return struct.pack(f">BHHB{n}H", 16, address, n, 2 * n, *regs)


def _exception(pdu: bytes) -> Reply:
    if len(pdu) < 2:
        raise BadReply("reply cannot be parsed: exception reply without its code")
    if pdu[0] == 0x80:  # the exception bit and no function: pymodbus cannot decode it either
        raise BadReply("reply cannot be parsed: function code 0x80")
    return Reply(pdu[0], exception_code=pdu[1])


def parse_read(pdu: bytes) -> Reply:
    """The reply to a read. Raises :class:`BadReply` on a byte count the PDU does not hold.

    Registers are unpacked with one struct call; a reply of another function is returned as it came
    (the driver compares function and length with what it asked)."""
    fc = pdu[0]
    if fc & 0x80:
        return _exception(pdu)
    if len(pdu) < 2:
        raise BadReply("reply cannot be parsed: no byte count")
    n = pdu[1]
    if n > len(pdu) - 2:
        raise BadReply(f"reply cannot be parsed: byte count {n}, {len(pdu) - 2} bytes follow")
    if fc in (3, 4):
        if n & 1:
            raise BadReply(f"reply cannot be parsed: odd byte count {n} for registers")
        unpack = _REGS.get(n)
        if unpack is None:
            unpack = _REGS[n] = struct.Struct(f">{n // 2}H")
        return Reply(fc, registers=unpack.unpack_from(pdu, 2))
    if fc in (1, 2):
        # As pymodbus: every byte after the count is bits; the driver checks the count it expects.
        return Reply(fc, bits=list(chain.from_iterable(map(_BITS.__getitem__, pdu[2:]))))
    return Reply(fc)


def parse_write(fc: int, pdu: bytes) -> Reply:
    """The reply to a write: an exception, or the echo of the function asked."""
    if pdu[0] & 0x80:
        return _exception(pdu)
    if pdu[0] != fc:
        raise BadReply(f"reply of function {pdu[0]} to a write of function {fc}")
    if len(pdu) < 5:  # the echo holds an address and a value or count: pymodbus refused shorter ones
        raise BadReply(f"reply cannot be parsed: write echo of {len(pdu) - 1} bytes, not 4")
    return Reply(fc)


class TcpLink(asyncio.Protocol):
    """One Modbus TCP connection with at most one request in flight (the caller holds a lock)."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._fut: asyncio.Future[bytes] | None = None
        self._tid = 0
        self._unit = 0

    async def open(self, host: str, port: int) -> None:
        """Connect; OSError when it fails (the caller bounds the wait)."""
        await asyncio.get_running_loop().create_connection(lambda: self, host, port)

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()  # connection_lost follows and fails a waiting request

    def request(self, unit: int, pdu: bytes) -> asyncio.Future[bytes]:
        """Send one request; the future gets the reply's PDU (function code first). The caller bounds
        the wait, and closes the link after a timeout (a late reply must not answer the next request)."""
        t = self._transport
        if t is None or t.is_closing():
            raise ConnectionException("not connected")
        self._tid = tid = self._tid % _TID_WRAP + 1
        self._unit = unit
        self._buf = b""
        fut = self._fut = asyncio.get_running_loop().create_future()
        t.write(_MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu)
        return fut

    # ---- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._tid = 0  # as pymodbus: ids restart with each connection
        self._buf = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        fut, self._fut = self._fut, None
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionException("connection lost"))

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        if len(buf) > MAX_BUFFER:
            self._fail(f"more than {MAX_BUFFER} bytes without a complete frame")
            return
        if len(buf) < 7:
            self._buf = buf
            return
        tid, proto, length, unit = _MBAP.unpack_from(buf)
        if proto != 0 or not 2 <= length <= 254:
            self._fail(f"not a Modbus TCP frame (protocol id {proto}, length {length})")
            return
        if tid and tid != self._tid:
            self._fail(f"reply with transaction id {tid}, expected {self._tid}")
            return
        if self._unit and unit != self._unit:
            self._fail(f"reply from unit {unit}, expected {self._unit}")
            return
        end = 6 + length
        if len(buf) < end:
            self._buf = buf
            return
        # Bytes after the frame are dropped, as pymodbus does (the next request starts a clean buffer).
        self._buf = b""
        fut, self._fut = self._fut, None
        if fut is not None and not fut.done():
            fut.set_result(buf[7:end])
        # else a copy of the last reply while no request waits: ignored, as pymodbus ignores it

    def _fail(self, why: str) -> None:
        self._buf = b""
        fut, self._fut = self._fut, None
        if fut is not None and not fut.done():
            fut.set_exception(BadReply(why))
        self.close()

"""A small asyncio Modbus TCP server: MBAP framing, several units behind one port, like a TCP gateway.

Written here instead of using pymodbus's server because that one answers only the first of two requests
that arrive in one TCP segment (STACK.md); this loop reads frame after frame from the stream buffer.

Behaviour (documented for integrators in MANUAL.md, "Protocol"):

- Function codes 1, 2, 3, 4, 5, 6, 15, 16. Anything else: exception 1 (illegal function).
- Checks in the order of the Modbus application protocol spec: quantity first (exception 3: 0 or more than
  125 registers / 2000 bits to read, 123 registers / 1968 bits to write, byte count mismatch, coil value not
  0x0000/0xFF00), then addresses (exception 2: any address of the request not mapped on that unit, or a write
  to an address that is mapped read-only), then the device's own check of written values (the unit's write
  hook; exception 3 for a value out of the device's range, 4 for an internal failure).
- Unknown unit id: exception 0x0B (gateway target device failed to respond), as real Modbus TCP gateways
  answer. A unit marked offline (:meth:`ModbusServer.set_offline`) gets no reply at all, so the client times
  out: that is the "gateway up, slave dead" case without a reply.
- Requests on one connection are answered in order; several connections are served concurrently.
- A frame whose protocol id is not 0 is ignored (no reply); a length field below 2 or above 254 closes the
  connection (the stream cannot be resynchronised).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

__all__ = [
    "DEVICE_FAILURE",
    "GATEWAY_TARGET_FAILED",
    "ILLEGAL_DATA_ADDRESS",
    "ILLEGAL_DATA_VALUE",
    "ILLEGAL_FUNCTION",
    "ModbusException",
    "ModbusServer",
    "Table",
    "UnitBank",
    "WriteHook",
]

log = logging.getLogger(__name__)

ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03
DEVICE_FAILURE = 0x04
GATEWAY_TARGET_FAILED = 0x0B

Table = Literal["holding", "input", "coil", "discrete"]
TABLES: tuple[Table, ...] = ("holding", "input", "coil", "discrete")

MAX_READ_REGS = 125
MAX_READ_BITS = 2000
MAX_WRITE_REGS = 123
MAX_WRITE_BITS = 1968


class ModbusException(Exception):
    """A Modbus exception reply. Raised by a write hook to refuse a value (code 3) or fail (code 4)."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or f"modbus exception {code}")
        self.code = code


# hook(table, address, values): called before a write is stored; raise ModbusException to refuse it.
WriteHook = Callable[[Table, int, list[int] | list[bool]], None]


class UnitBank:
    """Registers and bits of one unit id. Only explicitly mapped addresses exist."""

    def __init__(self, *, unit_id: int, name: str = "", on_write: WriteHook | None = None) -> None:
        if not 0 <= unit_id <= 255:
            raise ValueError(f"unit id {unit_id} outside 0..255")
        self.unit_id = unit_id
        self.name = name
        self.on_write = on_write
        self.holding: dict[int, int] = {}
        self.input: dict[int, int] = {}
        self.coil: dict[int, bool] = {}
        self.discrete: dict[int, bool] = {}
        self.writable_holding: set[int] = set()
        self.writable_coil: set[int] = set()
        # Quirks real devices document (MANUAL.md, "Device rules"); all off by default.
        self.max_read_registers: int | None = None  # a longer FC3/FC4 read: exception 3
        self.fc16_only = False  # FC6 (write single register): exception 1; the manual requires FC16
        # (table, start, end): addresses served only on another function code; a read touching one: exc. 1
        self.other_function: list[tuple[Table, int, int]] = []

    def table(self, table: Table) -> dict[int, int] | dict[int, bool]:
        if table == "holding":
            return self.holding
        if table == "input":
            return self.input
        if table == "coil":
            return self.coil
        if table == "discrete":
            return self.discrete
        raise ValueError(f"unknown table {table!r}")

    def map(
        self, table: Table, address: int, values: Iterable[int] | Iterable[bool], *, writable: bool = False
    ) -> None:
        """Declare addresses ``address..`` with initial values. Registers are 0..65535, bits are bool."""
        vals = list(values)
        if address < 0 or address + len(vals) > 65536:
            raise ValueError(f"{table} {address}+{len(vals)} outside 0..65535")
        if writable and table not in ("holding", "coil"):
            raise ValueError(f"{table} is read-only in Modbus")
        store = self.table(table)
        for i, v in enumerate(vals):
            a = address + i
            if a in store:
                raise ValueError(f"unit {self.unit_id} {table} {a} mapped twice")
            store[a] = _check_value(table, v)  # type: ignore[assignment]
            if writable:
                (self.writable_holding if table == "holding" else self.writable_coil).add(a)

    def set(self, table: Table, address: int, values: Iterable[int] | Iterable[bool]) -> None:
        """Update mapped addresses (the model's side; no hook, no writability check)."""
        store = self.table(table)
        for i, v in enumerate(values):
            a = address + i
            if a not in store:
                raise KeyError(f"unit {self.unit_id} {table} {a} is not mapped")
            store[a] = _check_value(table, v)  # type: ignore[assignment]

    def get(self, table: Table, address: int, count: int = 1) -> list[int] | list[bool]:
        store = self.table(table)
        return [store[address + i] for i in range(count)]


def _check_value(table: Table, v: int | bool) -> int | bool:
    if table in ("coil", "discrete"):
        return bool(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFF:
        raise ValueError(f"register value {v!r} is not a uint16")
    return v


def _pack_bits(bits: list[bool]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def _unpack_bits(data: bytes, count: int) -> list[bool]:
    return [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]


class ModbusServer:
    """Serves a set of :class:`UnitBank` on one host:port."""

    def __init__(self, *, units: Mapping[int, UnitBank] | Iterable[UnitBank] = ()) -> None:
        self.units: dict[int, UnitBank] = {}
        for bank in units.values() if isinstance(units, Mapping) else units:
            self.add_unit(bank)
        self.offline: set[int] = set()
        self.request_count = 0
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.host: str | None = None
        self.port: int | None = None

    def add_unit(self, bank: UnitBank) -> None:
        if bank.unit_id in self.units:
            raise ValueError(f"unit {bank.unit_id} added twice")
        self.units[bank.unit_id] = bank

    def set_offline(self, unit_id: int, offline: bool = True) -> None:
        """An offline unit gets no reply at all (the client times out)."""
        if offline:
            self.offline.add(unit_id)
        else:
            self.offline.discard(unit_id)

    # ---- protocol, no I/O ------------------------------------------------------------------------------

    def handle_pdu(self, unit_id: int, pdu: bytes) -> bytes | None:
        """Response PDU for a request PDU, or None when no reply is to be sent."""
        if unit_id in self.offline:
            return None
        if not pdu:
            return None
        fc = pdu[0]
        bank = self.units.get(unit_id)
        if bank is None:
            return bytes([(fc | 0x80) & 0xFF, GATEWAY_TARGET_FAILED])
        try:
            return self._execute(bank, fc, pdu[1:])
        except ModbusException as exc:
            return bytes([(fc | 0x80) & 0xFF, exc.code])
        except Exception:  # a model bug must not kill the connection: answer "device failure"
            log.exception("unit %s fc %s failed", unit_id, fc)
            return bytes([(fc | 0x80) & 0xFF, DEVICE_FAILURE])

    def _execute(self, bank: UnitBank, fc: int, data: bytes) -> bytes:
        if fc in (1, 2, 3, 4):
            if len(data) != 4:
                raise ModbusException(ILLEGAL_DATA_VALUE, "bad request length")
            start, count = struct.unpack(">HH", data)
            limit = MAX_READ_BITS if fc in (1, 2) else MAX_READ_REGS
            if not 1 <= count <= limit:
                raise ModbusException(ILLEGAL_DATA_VALUE, f"count {count}")
            table: Table = ("coil", "discrete", "holding", "input")[fc - 1]
            if fc in (3, 4) and bank.max_read_registers is not None and count > bank.max_read_registers:
                raise ModbusException(ILLEGAL_DATA_VALUE, f"count {count} above {bank.max_read_registers}")
            for t, lo, hi in bank.other_function:
                if t == table and start < hi and lo < start + count:
                    raise ModbusException(ILLEGAL_FUNCTION, f"{table} {lo}..{hi - 1} not on fc {fc}")
            store = bank.table(table)
            self._check_mapped(store, start, count)
            if fc in (1, 2):
                payload = _pack_bits([bool(store[start + i]) for i in range(count)])
            else:
                payload = struct.pack(f">{count}H", *(int(store[start + i]) for i in range(count)))
            return bytes([fc, len(payload)]) + payload
        if fc == 5:
            if len(data) != 4:
                raise ModbusException(ILLEGAL_DATA_VALUE, "bad request length")
            addr, raw = struct.unpack(">HH", data)
            if raw not in (0x0000, 0xFF00):
                raise ModbusException(ILLEGAL_DATA_VALUE, f"coil value {raw:#06x}")
            self._write(bank, "coil", addr, [raw == 0xFF00])
            return bytes([fc]) + data
        if fc == 6:
            if bank.fc16_only:
                raise ModbusException(ILLEGAL_FUNCTION, "this unit takes register writes by FC16 only")
            if len(data) != 4:
                raise ModbusException(ILLEGAL_DATA_VALUE, "bad request length")
            addr, raw = struct.unpack(">HH", data)
            self._write(bank, "holding", addr, [raw])
            return bytes([fc]) + data
        if fc in (15, 16):
            if len(data) < 5:
                raise ModbusException(ILLEGAL_DATA_VALUE, "bad request length")
            start, count, nbytes = struct.unpack(">HHB", data[:5])
            body = data[5:]
            if fc == 15:
                if not 1 <= count <= MAX_WRITE_BITS or nbytes != (count + 7) // 8 or len(body) != nbytes:
                    raise ModbusException(ILLEGAL_DATA_VALUE, f"count {count} bytes {nbytes}")
                self._write(bank, "coil", start, _unpack_bits(body, count))
            else:
                if not 1 <= count <= MAX_WRITE_REGS or nbytes != 2 * count or len(body) != nbytes:
                    raise ModbusException(ILLEGAL_DATA_VALUE, f"count {count} bytes {nbytes}")
                self._write(bank, "holding", start, list(struct.unpack(f">{count}H", body)))
            return bytes([fc]) + struct.pack(">HH", start, count)
        raise ModbusException(ILLEGAL_FUNCTION, f"function {fc}")

    @staticmethod
    def _check_mapped(store: Mapping[int, object], start: int, count: int) -> None:
        if start + count > 65536 or any((start + i) not in store for i in range(count)):
            raise ModbusException(ILLEGAL_DATA_ADDRESS, f"{start}+{count} not mapped")

    def _write(self, bank: UnitBank, table: Table, start: int, values: list[int] | list[bool]) -> None:
        store = bank.table(table)
        self._check_mapped(store, start, len(values))
        writable = bank.writable_holding if table == "holding" else bank.writable_coil
        if any((start + i) not in writable for i in range(len(values))):
            raise ModbusException(ILLEGAL_DATA_ADDRESS, f"{table} {start}+{len(values)} is read-only")
        if bank.on_write is not None:
            bank.on_write(table, start, values)  # may raise ModbusException(3)
        for i, v in enumerate(values):
            store[start + i] = v  # type: ignore[assignment]

    # ---- transport ---------------------------------------------------------------------------------------

    async def start(self, *, host: str = "127.0.0.1", port: int = 15020) -> None:
        if self._server is not None:
            raise RuntimeError("server already started")
        self._server = await asyncio.start_server(self._serve, host, port)
        sock = self._server.sockets[0].getsockname()
        self.host, self.port = sock[0], sock[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Closing the transports ends each connection's read loop normally (cancelling the handler
        # tasks makes asyncio log a spurious error in 3.11).
        for writer in list(self._conns.values()):
            writer.close()
        tasks = list(self._conns)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=2.0)
            for task in pending:
                task.cancel()
        await server.wait_closed()

    async def __aenter__(self) -> ModbusServer:
        if self._server is None:
            await self.start(port=0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        try:
            while True:
                header = await reader.readexactly(7)
                tid, proto, length, unit_id = struct.unpack(">HHHB", header)
                if not 2 <= length <= 254:
                    log.warning("bad MBAP length %s, closing connection", length)
                    return
                pdu = await reader.readexactly(length - 1)
                if proto != 0:
                    continue
                self.request_count += 1
                resp = self.handle_pdu(unit_id, pdu)
                if resp is None:
                    continue
                writer.write(struct.pack(">HHHB", tid, 0, len(resp) + 1, unit_id) + resp)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._conns.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

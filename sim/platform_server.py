"""A municipal energy-monitoring platform (the server side), written from the protocol description in
STANDARDS.md, not from the agent's code: its own framing, CRC, AES padding and XML handling.

Framings: ``binary`` (the one seen in the field: 55AA55AA, 4-byte little-endian length of sequence +
ciphertext, 4-byte sequence, ciphertext, CRC16-CCITT (FALSE, 0xFFFF start) of sequence + ciphertext
sent high byte first, 68681616) and ``hex`` (8 hex digits giving the ciphertext's byte count, then the
ciphertext as hex text). Ciphers: AES-128 ``cbc`` (IV = the key) or ``ecb``, PKCS#7.

It records what it received (``received``: one dict per data message; ``accepted``: period time ->
meter -> function -> value, first copy wins, ``duplicates`` counts the rest) and can refuse
authentication, drop the connection after some data messages, delay acknowledgements, refuse
connections (an outage), announce a period with a ``config`` message and report a skewed time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["PlatformServer", "PlatformSimOptions", "add_platform_arguments", "options_from_args"]

HEAD = b"\x55\xaa\x55\xaa"
TAIL = b"\x68\x68\x16\x16"


def crc_ccitt_false(data: bytes) -> int:
    # table-driven, from the polynomial 0x1021 with 0xFFFF start, no reflection, no final xor
    table = _TABLE
    crc = 0xFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFF00) ^ table[((crc >> 8) ^ byte) & 0xFF]
    return crc


def _make_table() -> list[int]:
    out = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = (c << 1) ^ 0x1021 if c & 0x8000 else c << 1
        out.append(c & 0xFFFF)
    return out


_TABLE = _make_table()


@dataclass
class PlatformSimOptions:
    key: bytes = b"0123456789abcdef"
    framing: str = "binary"  # binary | hex
    cipher: str = "cbc"  # cbc | ecb
    md5_order: str = "sequence_key"  # sequence_key | key_sequence
    period_min: int | None = None  # send config/period after authentication when set
    refuse_auth: bool = False
    ack_reports: bool = True
    drop_after_data: int | None = None  # close the connection on the Nth data message, unacknowledged
    ack_delay_s: float = 0.0
    time_offset_s: float = 0.0  # the server's clock against the host's (or the injected now)
    timezone: str = "Asia/Shanghai"
    record_file: str | None = None  # JSON lines of every data message received


@dataclass
class PlatformServer:
    options: PlatformSimOptions = field(default_factory=PlatformSimOptions)
    now: Any = None  # callable returning an aware datetime; default the host's clock
    received: list[dict[str, Any]] = field(default_factory=list)
    accepted: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    duplicates: int = 0
    auth_attempts: int = 0
    auth_passed: int = 0
    heartbeats: int = 0
    connections: int = 0
    offline: bool = False  # refuse connections: closed as soon as they open

    def __post_init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.data_seen = 0
        self.changed = asyncio.Event()

    # ------------------------------------------------------------------------------------- life cycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._client, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_all()
        for t in list(self._handlers):
            t.cancel()
        for t in list(self._handlers):
            with contextlib.suppress(BaseException):
                await t
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def drop_all(self) -> None:
        for w in list(self._writers):
            w.close()

    async def __aenter__(self) -> PlatformServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------------------------------ wire

    def _aes(self) -> Cipher[Any]:
        k = self.options.key
        mode: Any = modes.CBC(k) if self.options.cipher == "cbc" else modes.ECB()
        return Cipher(algorithms.AES(k), mode)

    def _seal(self, xml: bytes, seq: int) -> bytes:
        p = padding.PKCS7(128).padder()
        e = self._aes().encryptor()
        ct = e.update(p.update(xml) + p.finalize()) + e.finalize()
        if self.options.framing == "hex":
            return b"%08X" % len(ct) + ct.hex().upper().encode()
        inner = seq.to_bytes(4, "little") + ct
        return (
            HEAD + len(inner).to_bytes(4, "little") + inner + crc_ccitt_false(inner).to_bytes(2, "big") + TAIL
        )

    def _open(self, ct: bytes) -> ET.Element:
        d = self._aes().decryptor()
        u = padding.PKCS7(128).unpadder()
        xml = u.update(d.update(ct) + d.finalize()) + u.finalize()
        return ET.fromstring(xml)

    async def _read(self, r: asyncio.StreamReader) -> ET.Element:
        if self.options.framing == "hex":
            n = int((await r.readexactly(8)).decode(), 16)
            return self._open(bytes.fromhex((await r.readexactly(2 * n)).decode()))
        if await r.readexactly(4) != HEAD:
            raise ValueError("bad header")
        n = int.from_bytes(await r.readexactly(4), "little")
        inner = await r.readexactly(n)
        crc = int.from_bytes(await r.readexactly(2), "big")
        if crc != crc_ccitt_false(inner) or await r.readexactly(4) != TAIL:
            raise ValueError("bad CRC or tail")
        return self._open(inner[4:])

    def _msg(self, kind: str, operation: str, **fields: str) -> bytes:
        root = ET.Element("root")
        common = ET.SubElement(root, "common")
        ET.SubElement(common, "building_id").text = self._building
        ET.SubElement(common, "gateway_id").text = self._gateway
        ET.SubElement(common, "type").text = kind
        body = ET.SubElement(root, kind, operation=operation)
        for k, v in fields.items():
            ET.SubElement(body, k).text = v
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)

    def _local_now(self) -> datetime:
        now = self.now() if self.now is not None else datetime.now(UTC)
        return (now + timedelta(seconds=self.options.time_offset_s)).astimezone(
            ZoneInfo(self.options.timezone)
        )

    # ---------------------------------------------------------------------------------------- session

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self.connections += 1
        self._writers.add(w)
        self._building = self._gateway = ""
        seq = 0
        challenge = ""
        try:
            if self.offline:
                return
            authed = False
            while True:
                root = await self._read(r)
                common = root.find("common")
                if common is not None:
                    self._building = common.findtext("building_id") or ""
                    self._gateway = common.findtext("gateway_id") or ""
                body = next(c for c in root if c.tag != "common")
                op = body.get("operation", "")
                replies: list[bytes] = []
                if body.tag == "id_validate" and op == "request":
                    self.auth_attempts += 1
                    challenge = secrets.token_hex(8)
                    replies.append(self._msg("id_validate", "sequence", sequence=challenge))
                elif body.tag == "id_validate" and op == "md5" and challenge:
                    key = self.options.key
                    c = challenge.encode()
                    want = hashlib.md5(
                        c + key if self.options.md5_order == "sequence_key" else key + c
                    ).hexdigest()
                    ok = (body.findtext("md5") or "").lower() == want and not self.options.refuse_auth
                    replies.append(self._msg("id_validate", "result", result="pass" if ok else "fail"))
                    if ok:
                        authed = True
                        self.auth_passed += 1
                        if self.options.period_min is not None:
                            replies.append(self._msg("config", "period", period=str(self.options.period_min)))
                elif not authed:
                    return  # anything before authentication: hang up
                elif body.tag == "heart_beat":
                    self.heartbeats += 1
                    replies.append(
                        self._msg("heart_beat", "time", time=self._local_now().strftime("%Y%m%d%H%M%S"))
                    )
                elif body.tag == "data":
                    self.data_seen += 1
                    self._record(body, op)
                    if (
                        self.options.drop_after_data is not None
                        and self.data_seen >= self.options.drop_after_data
                    ):
                        self.options.drop_after_data = None
                        return
                    if op == "continuous" or (op == "report" and self.options.ack_reports):
                        if self.options.ack_delay_s:
                            await asyncio.sleep(self.options.ack_delay_s)
                        ack = "continuous_ack" if op == "continuous" else "report_ack"
                        replies.append(
                            self._msg(
                                "data",
                                ack,
                                sequence=body.findtext("sequence") or "",
                                time=body.findtext("time") or "",
                            )
                        )
                for reply in replies:
                    seq += 1
                    w.write(self._seal(reply, seq))
                await w.drain()
                self.changed.set()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, StopIteration, ET.ParseError):
            pass
        finally:
            self._writers.discard(w)
            w.close()
            self.changed.set()
            if task is not None:
                self._handlers.discard(task)

    def _record(self, body: ET.Element, op: str) -> None:
        t = body.findtext("time") or ""
        meters = {
            m.get("id", ""): {f.get("id", ""): float(f.text or "nan") for f in m.findall("function")}
            for m in body.findall("meter")
        }
        codes = {
            f"{m.get('id', '')}/{f.get('id', '')}": f.get("coding", "")
            for m in body.findall("meter")
            for f in m
        }
        rec = {
            "operation": op,
            "sequence": body.findtext("sequence"),
            "time": t,
            "total": body.findtext("total"),
            "current": body.findtext("current"),
            "meters": meters,
            "codes": codes,
        }
        self.received.append(rec)
        if t in self.accepted:
            self.duplicates += 1
        else:
            self.accepted[t] = meters
        if self.options.record_file:
            with Path(self.options.record_file).open("a", encoding="utf-8") as f:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def add_platform_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("municipal platform simulator (with --platform PORT)")
    g.add_argument("--platform", type=int, metavar="PORT", help="run the platform simulator on PORT instead")
    g.add_argument("--platform-key-file", metavar="FILE", help="16-character key (default 0123456789abcdef)")
    g.add_argument(
        "--platform-framing", choices=["binary", "hex"], default="binary",
        help="binary: 55AA55AA, length, sequence, ciphertext, CRC16, 68681616 (the field's, default); "
        "hex: 8 hex digits of length, then the ciphertext as hex text",
    )  # fmt: skip
    g.add_argument(
        "--platform-cipher", choices=["cbc", "ecb"], default="cbc",
        help="AES-128 mode: cbc (IV = the key) or ecb, PKCS#7 padding (default cbc)",
    )  # fmt: skip
    g.add_argument(
        "--platform-md5-order", choices=["sequence_key", "key_sequence"], default="sequence_key",
        help="what id_validate hashes: MD5 of challenge + key (sequence_key, default) or key + challenge",
    )  # fmt: skip
    g.add_argument("--platform-period", type=int, metavar="MIN", help="send config/period MIN after auth")
    g.add_argument("--platform-refuse-auth", action="store_true", help="answer every id_validate with fail")
    g.add_argument("--platform-drop-after", type=int, metavar="N", help="hang up on the Nth data message")
    g.add_argument("--platform-ack-delay", type=float, default=0.0, metavar="S", help="delay each ack")
    g.add_argument("--platform-record", metavar="FILE", help="append every data message as a JSON line")


def options_from_args(args: argparse.Namespace) -> PlatformSimOptions:
    key = b"0123456789abcdef"
    if args.platform_key_file:
        key = Path(args.platform_key_file).read_bytes().strip()
        if len(key) != 16:
            raise ValueError(f"{args.platform_key_file}: the key must be 16 characters, not {len(key)}")
    return PlatformSimOptions(
        key=key,
        framing=args.platform_framing,
        cipher=args.platform_cipher,
        md5_order=args.platform_md5_order,
        period_min=args.platform_period,
        refuse_auth=args.platform_refuse_auth,
        drop_after_data=args.platform_drop_after,
        ack_delay_s=args.platform_ack_delay,
        record_file=args.platform_record,
    )

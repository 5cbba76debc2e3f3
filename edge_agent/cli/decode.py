"""`edge-agent decode [FILE]`: uplink messages as `mosquitto_sub -v` prints them -> v1 readings, JSON lines.

    mosquitto_sub -h BROKER -t 'edge/+/+/#' -v | edge-agent decode

Each input line is ``TOPIC PAYLOAD``. A zlib-compressed payload is binary and may hold newline bytes (the
real mosquitto_sub prints it raw, byte for byte: tests/integration/test_mosquitto_sub.py); it is read on
until its zlib stream ends (a zlib stream says where it ends). ``mosquitto_sub -F '%t %x'`` (payload in
hex) works too. Output is flushed per batch, so the command runs live at the end of a pipe. Schema
messages are kept (the retained one arrives first when subscribing); a batch naming a schema hash not
seen in the stream is reported on stderr and skipped (exit 1).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from edge_agent.uplink.payload_v2 import Decoder, PayloadError

__all__ = ["decode_main", "decode_stream", "read_messages", "register"]

_HEX = re.compile(rb"(?:[0-9a-fA-F]{2})+")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "decode",
        help="decode uplink messages (mosquitto_sub -v output) into v1 readings as JSON lines",
        # Filled here: the raw formatter keeps the examples' lines, and would keep the description's too.
        description=textwrap.fill(
            "Read `mosquitto_sub -v` lines (TOPIC SPACE PAYLOAD) from FILE or stdin and print every reading "
            "of every readings batch (payload v1 or v2) as one JSON line: gateway, building and the v1 "
            "reading fields. v2 batches need their .../schema message earlier in the same stream "
            "(subscribe to the gateway's whole topic tree: the schema is retained). Compressed payloads "
            "may be raw (`mosquitto_sub -v`) or hex (`mosquitto_sub -F '%t %x'`, the form to keep in a "
            "text file). Exit 0 when every message decoded, 1 when one did not (reported on stderr), 2 "
            "when FILE cannot be read. Payload format: docs/uplink-schema.md.",
            width=78,
        ),
        epilog="examples:\n"
        "  mosquitto_sub -h BROKER -t 'edge/370102A001/gw-0001/#' -v | edge-agent decode\n"
        "  mosquitto_sub -h BROKER -t 'edge/#' -F '%t %x' > capture.txt; edge-agent decode capture.txt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", nargs="?", help="a file of captured lines (default: stdin)")
    p.add_argument(
        "--batches", action="store_true", help="one line per batch (the v1 batch object, audit_head included)"
    )
    p.set_defaults(func=lambda args: decode_main(args.file, batches=args.batches))


def read_messages(stream: BinaryIO) -> Iterator[tuple[int, str, bytes]]:
    """(line number, topic, payload) per message; a compressed payload comes out inflated."""
    lineno = 0
    while line := stream.readline():
        lineno += 1
        start = lineno
        topic_b, _, rest = line.partition(b" ")
        topic = topic_b.decode("utf-8", errors="replace").strip()
        if not topic:
            continue
        if rest[:1] == b"\x78":  # zlib: binary, may span "lines"
            d = zlib.decompressobj()
            try:
                out = d.decompress(rest)
                while not d.eof and (more := stream.readline()):
                    lineno += 1
                    out += d.decompress(more)
            except zlib.error as exc:
                raise PayloadError(f"line {start}: {topic}: broken zlib payload: {exc}") from exc
            if not d.eof:
                raise PayloadError(f"line {start}: {topic}: the input ends inside a compressed payload")
            yield start, topic, out
            continue
        payload = rest.rstrip(b"\r\n")
        if payload == b"(null)":  # how mosquitto_sub -v prints an empty payload
            payload = b""
        elif _HEX.fullmatch(payload):  # mosquitto_sub -F '%t %x'
            payload = bytes.fromhex(payload.decode())
        yield start, topic, payload


def decode_main(
    file: str | None, *, batches: bool = False, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if not file:
        return decode_stream(sys.stdin.buffer, batches=batches, out=out, err=err)
    try:
        with Path(file).open("rb") as stream:
            return decode_stream(stream, batches=batches, out=out, err=err)
    except OSError as exc:
        print(f"edge-agent decode: {exc}", file=err)
        return 2


def decode_stream(stream: BinaryIO, *, batches: bool, out: TextIO, err: TextIO) -> int:
    """Decode every message of ``stream``; 1 when any could not be decoded, else 0."""
    decoder = Decoder()
    failed = 0
    messages = read_messages(stream)
    while True:
        try:
            item = next(messages, None)
        except PayloadError as exc:  # the input itself is cut or broken: nothing more to read
            print(f"edge-agent decode: {exc}", file=err)
            return 1
        if item is None:
            break
        lineno, topic, payload = item
        if not payload:  # an empty message clears a retained one (a retired gateway's schema): no data
            continue
        try:
            batch = decoder.feed(topic, payload)
        except PayloadError as exc:
            failed += 1
            print(f"edge-agent decode: line {lineno}: {topic}: {exc}", file=err)
            continue
        if batch is None:
            continue
        if batches:
            out.write(json.dumps(batch.as_v1(), ensure_ascii=False) + "\n")
        else:
            for r in batch.rows:
                line = {"gateway": batch.gateway, "building": batch.building, **r.as_payload()}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
        # Live behind mosquitto_sub, stdout is a pipe (block-buffered): the next stage gets each batch now.
        out.flush()
    return 1 if failed else 0

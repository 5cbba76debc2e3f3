"""Points in, read requests out: the fewest Modbus reads that cover every point exactly once.

:func:`plan` is pure. :class:`ReadPlan` wraps it with the little state a device teaches us at run time:
blocks it refused with exception 2 (illegal data address) are split, and a single point that still fails
is remembered as bad and retried only every ``retry_every`` polls.

Terms: a *cluster* is a run of points whose registers overlap (two bits of one register, one register
read by two points); a cluster is never cut, so no register is read twice. A *block* is one request:
consecutive clusters of one table, bridging gaps of at most ``max_gap`` unused registers (bits).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from drivers.modbus.options import ModbusPoint, Table, register_count

__all__ = [
    "PROTOCOL_MAX_BITS",
    "PROTOCOL_MAX_REGISTERS",
    "TABLES",
    "Block",
    "ReadPlan",
    "per_point_plan",
    "plan",
    "split_block",
    "split_to_limit",
]

PROTOCOL_MAX_REGISTERS = 125  # FC3/FC4 quantity limit
PROTOCOL_MAX_BITS = 2000  # FC1/FC2 quantity limit
TABLES: tuple[Table, ...] = ("coil", "discrete", "holding", "input")
_BIT_TABLES = frozenset({"coil", "discrete"})


@dataclass(frozen=True, slots=True, eq=False)
class Block:
    """One read request: ``count`` registers (bits) of ``table`` from ``start``, and the points it serves.

    Compared and hashed by identity: a block is a plan entry, and two equal-looking entries are still two
    requests.
    """

    table: Table
    start: int
    count: int
    points: tuple[ModbusPoint, ...]

    @property
    def end(self) -> int:
        """First address after the block."""
        return self.start + self.count

    def __repr__(self) -> str:
        ids = ",".join(p.id for p in self.points)
        return f"Block({self.table} {self.start}+{self.count} [{ids}])"


@dataclass(slots=True)
class _Cluster:
    start: int
    end: int  # exclusive
    points: list[ModbusPoint]
    tainted: bool = False  # touches an address known to be unreadable: never merged with neighbours


def _limit(table: Table, max_registers: int, max_bits: int) -> int:
    if table in _BIT_TABLES:
        return max(1, min(max_bits, PROTOCOL_MAX_BITS))
    return max(1, min(max_registers, PROTOCOL_MAX_REGISTERS))


def _any_in(sorted_addresses: Sequence[int], lo: int, hi: int) -> bool:
    """Whether any address lies in [lo, hi)."""
    i = bisect_left(sorted_addresses, lo)
    return i < len(sorted_addresses) and sorted_addresses[i] < hi


def _clusters(points: Iterable[ModbusPoint]) -> list[_Cluster]:
    """Points sorted by address, overlapping ones joined. Touching (adjacent) points stay apart."""
    ordered = sorted(points, key=lambda p: (p.address, -register_count(p)))
    out: list[_Cluster] = []
    for p in ordered:
        end = p.address + register_count(p)
        if out and p.address < out[-1].end:
            cur = out[-1]
            cur.points.append(p)
            if end > cur.end:
                cur.end = end
        else:
            out.append(_Cluster(p.address, end, [p]))
    return out


def _chunk_oversized(c: _Cluster, limit: int) -> list[_Cluster]:
    """A cluster wider than one request (long overlapping strings): cut it by point; chunks may overlap."""
    if c.end - c.start <= limit:
        return [c]
    chunks: list[_Cluster] = []
    for p in c.points:  # already sorted by address
        end = p.address + register_count(p)
        if chunks and max(chunks[-1].end, end) - chunks[-1].start <= limit:
            chunks[-1].points.append(p)
            chunks[-1].end = max(chunks[-1].end, end)
        else:
            chunks.append(_Cluster(p.address, end, [p], tainted=True))
    return chunks


def _plan_table(
    table: Table, points: list[ModbusPoint], limit: int, max_gap: int, unreadable: Sequence[int]
) -> list[Block]:
    for p in points:
        if register_count(p) > limit:
            raise ValueError(
                f"point {p.id}: {register_count(p)} registers do not fit one request of at most {limit}"
            )
    clusters: list[_Cluster] = []
    for c in _clusters(points):
        if unreadable and _any_in(unreadable, c.start, c.end):
            c.tainted = True
        clusters.extend(_chunk_oversized(c, limit))

    blocks: list[Block] = []
    cur: _Cluster | None = None
    for c in clusters:
        if (
            cur is not None
            and not cur.tainted
            and not c.tainted
            and c.start - cur.end <= max_gap
            and c.end - cur.start <= limit
            and not (unreadable and _any_in(unreadable, cur.end, c.start))
        ):
            cur.points.extend(c.points)
            cur.end = c.end
            continue
        if cur is not None:
            blocks.append(Block(table, cur.start, cur.end - cur.start, tuple(cur.points)))
        cur = _Cluster(c.start, c.end, list(c.points), c.tainted)
    if cur is not None:
        blocks.append(Block(table, cur.start, cur.end - cur.start, tuple(cur.points)))
    return blocks


def plan(
    points: Sequence[ModbusPoint],
    *,
    max_registers: int = PROTOCOL_MAX_REGISTERS,
    max_bits: int = PROTOCOL_MAX_BITS,
    max_gap: int = 0,
    unreadable: Collection[tuple[str, int]] = frozenset(),
) -> list[Block]:
    """The fewest read requests covering every point exactly once, per table, in address order.

    ``max_registers``/``max_bits`` are capped at the protocol limits (125/2000). ``max_gap`` unused
    registers (bits) may be read between two clusters to save a request. ``unreadable`` holds
    ``(table, address)`` pairs the device refused: a gap holding one is never bridged, and a point
    covering one is planned on its own. Raises ValueError for a point wider than one request.
    """
    if max_gap < 0:
        raise ValueError(f"max_gap {max_gap} is negative")
    by_table: dict[str, list[ModbusPoint]] = {}
    for p in points:
        by_table.setdefault(p.table, []).append(p)
    bad: dict[str, list[int]] = {}
    for t, a in unreadable:
        bad.setdefault(t, []).append(a)
    blocks: list[Block] = []
    for table in TABLES:
        pts = by_table.get(table)
        if pts:
            limit = _limit(table, max_registers, max_bits)
            blocks.extend(_plan_table(table, pts, limit, max_gap, sorted(bad.get(table, ()))))
    return blocks


def per_point_plan(points: Sequence[ModbusPoint]) -> list[Block]:
    """One request per point: the naive baseline the benchmark compares against."""
    return [Block(p.table, p.address, register_count(p), (p,)) for p in points]


def split_block(block: Block) -> list[Block] | None:
    """Smaller blocks covering the same points, or None when the block is one cluster (cannot split).

    First drop the bridged gaps (contiguous runs), then halve by cluster, so repeated exception 2 replies
    narrow down to single points in O(log n) requests.
    """
    clusters = _clusters(block.points)
    if len(clusters) <= 1:
        return None
    runs: list[_Cluster] = []
    for c in clusters:
        if runs and c.start <= runs[-1].end:
            runs[-1].points.extend(c.points)
            runs[-1].end = max(runs[-1].end, c.end)
        else:
            runs.append(_Cluster(c.start, c.end, list(c.points)))
    if len(runs) > 1:
        return [Block(block.table, r.start, r.end - r.start, tuple(r.points)) for r in runs]
    half = len(clusters) // 2
    out: list[Block] = []
    for part in (clusters[:half], clusters[half:]):
        start = part[0].start
        end = max(c.end for c in part)
        out.append(Block(block.table, start, end - start, tuple(p for c in part for p in c.points)))
    return out


def split_to_limit(block: Block, limit: int) -> list[Block] | None:
    """The block's clusters packed, in order, into blocks of at most ``limit`` registers (bits).

    None when one cluster alone is wider than ``limit`` (the block cannot get narrower).
    """
    clusters = _clusters(block.points)
    if any(c.end - c.start > limit for c in clusters):
        return None
    out: list[Block] = []
    cur: _Cluster | None = None
    for c in clusters:
        if cur is not None and max(cur.end, c.end) - cur.start <= limit:
            cur.points.extend(c.points)
            cur.end = max(cur.end, c.end)
            continue
        if cur is not None:
            out.append(Block(block.table, cur.start, cur.end - cur.start, tuple(cur.points)))
        cur = _Cluster(c.start, c.end, list(c.points))
    if cur is not None:
        out.append(Block(block.table, cur.start, cur.end - cur.start, tuple(cur.points)))
    return out


class ReadPlan:
    """The plan of one point set on one device, and what the device taught us about it.

    ``blocks`` is the current list of requests. :meth:`on_refused` splits a block the device refused with
    exception 1 or 2 (or marks a single-cluster block bad), and narrows every block above the learned
    request size on exception 3; :meth:`due` says whether a block is read this poll (bad blocks only
    every ``retry_every`` polls); :meth:`on_success` clears a bad block that answered again.
    ``unreadable`` accumulates the addresses of bad blocks, ``max_registers``/``max_bits`` the request
    size learned from exception 3; pass both to the next plan of the same device.
    """

    __slots__ = ("_bad", "_cycle", "blocks", "max_bits", "max_registers", "retry_every", "unreadable")

    def __init__(
        self,
        points: Sequence[ModbusPoint],
        *,
        max_registers: int = PROTOCOL_MAX_REGISTERS,
        max_bits: int = PROTOCOL_MAX_BITS,
        max_gap: int = 0,
        unreadable: Collection[tuple[str, int]] = frozenset(),
        retry_every: int = 30,
    ) -> None:
        if retry_every < 1:
            raise ValueError(f"retry_every {retry_every} is below 1")
        self.unreadable: set[tuple[str, int]] = set(unreadable)
        self.retry_every = retry_every
        self.max_registers = _limit("holding", max_registers, max_bits)
        self.max_bits = _limit("coil", max_registers, max_bits)
        self.blocks: list[Block] = plan(
            points,
            max_registers=max_registers,
            max_bits=max_bits,
            max_gap=max_gap,
            unreadable=self.unreadable,
        )
        self._bad: dict[Block, int] = {}  # bad block -> the exception that made it bad
        self._cycle = 0
        if self.unreadable:
            # A block on a known-bad address starts bad: no wasted request every poll.
            for b in self.blocks:
                if any((b.table, a) in self.unreadable for a in range(b.start, b.end)):
                    self._bad[b] = 2

    @classmethod
    def from_blocks(cls, blocks: Sequence[Block], *, retry_every: int = 30) -> ReadPlan:
        """A plan of ready-made blocks (e.g. :func:`per_point_plan`); splitting works the same."""
        self = cls((), retry_every=retry_every)
        self.blocks = list(blocks)
        return self

    def is_bad(self, block: Block) -> bool:
        return block in self._bad

    def bad_exception(self, block: Block) -> int:
        """The exception that made ``block`` bad (2 for one planned bad from ``unreadable``)."""
        return self._bad.get(block, 2)

    @property
    def bad_blocks(self) -> list[Block]:
        return [b for b in self.blocks if b in self._bad]

    def next_cycle(self) -> None:
        """Count one poll; bad blocks are due on every ``retry_every``-th."""
        self._cycle += 1

    def due(self, block: Block) -> bool:
        return block not in self._bad or self._cycle % self.retry_every == 0

    def on_illegal_address(self, block: Block) -> list[Block]:
        """Replace a block the device refused with exception 2 by its parts; returns the parts.

        A block that cannot be split is marked bad and returned alone (its points read ``modbus:2``).
        """
        return self.on_refused(block, 2)

    def on_refused(self, block: Block, exception: int) -> list[Block]:
        """Replace a block the device refused by its parts; returns the parts to read now.

        Exception 1 (illegal function: the block reaches addresses served on another function code) and
        2 (illegal data address) split the block like :func:`split_block`. Exception 3 (illegal data
        value: the request is longer than the device accepts) halves the request size for the block's
        kind (registers or bits), remembers it, and re-cuts every planned block above it. A block that
        cannot get smaller is marked bad, its addresses unreadable, and returned alone.
        """
        try:
            i = self.blocks.index(block)
        except ValueError:
            raise ValueError(f"{block!r} is not in this plan") from None
        if exception == 3:
            bits = block.table in _BIT_TABLES
            limit = max(1, block.count // 2)
            parts = split_to_limit(block, limit) if block.count > 1 else None
            if parts is not None:
                if bits:
                    self.max_bits = min(self.max_bits, limit)
                else:
                    self.max_registers = min(self.max_registers, limit)
                self.blocks[i : i + 1] = parts
                self._bad.pop(block, None)
                self._narrow(bits=bits, limit=limit)
                return parts
        else:
            parts = split_block(block)
            if parts is not None:
                self._bad.pop(block, None)
                self.blocks[i : i + 1] = parts
                return parts
        self._bad[block] = exception
        self.unreadable.update((block.table, a) for a in range(block.start, block.end))
        return [block]

    def _narrow(self, *, bits: bool, limit: int) -> None:
        """Re-cut every block of this kind above ``limit`` (blocks that cannot be cut stay)."""
        out: list[Block] = []
        for b in self.blocks:
            if (b.table in _BIT_TABLES) == bits and b.count > limit:
                parts = split_to_limit(b, limit)
                if parts is not None:
                    out.extend(parts)
                    continue
            out.append(b)
        self.blocks = out

    def on_success(self, block: Block) -> None:
        """A block answered: if it was bad, it is good again."""
        if block in self._bad:
            del self._bad[block]
            self.unreadable.difference_update((block.table, a) for a in range(block.start, block.end))

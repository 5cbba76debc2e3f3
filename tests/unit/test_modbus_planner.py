"""The read planner: every point covered exactly once, within limits, no overlap, fewest requests."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.options import ModbusPoint, register_count
from drivers.modbus.planner import (
    PROTOCOL_MAX_BITS,
    PROTOCOL_MAX_REGISTERS,
    Block,
    ReadPlan,
    per_point_plan,
    plan,
    split_block,
)


def pt(pid: str, address: int, type_: str = "uint16", table: str = "holding", **kw: Any) -> ModbusPoint:
    return ModbusPoint(id=pid, table=table, address=address, type=type_, **kw)  # type: ignore[arg-type]


def span(p: ModbusPoint) -> tuple[int, int]:
    return p.address, p.address + register_count(p)


def limit_of(table: str, max_registers: int, max_bits: int) -> int:
    if table in ("coil", "discrete"):
        return min(max_bits, PROTOCOL_MAX_BITS)
    return min(max_registers, PROTOCOL_MAX_REGISTERS)


def clusters_of(points: list[ModbusPoint]) -> list[tuple[int, int]]:
    """Independent computation of overlapping runs (start, end) of one table's points."""
    out: list[list[int]] = []
    for s, e in sorted(span(p) for p in points):
        if out and s < out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def check_invariants(
    points: list[ModbusPoint], blocks: list[Block], *, max_registers: int, max_bits: int, max_gap: int | None
) -> None:
    # every point in exactly one block, and that block spans all its registers
    for p in points:
        holders = [b for b in blocks if any(q is p for q in b.points)]
        assert len(holders) == 1, f"{p.id} in {len(holders)} blocks"
        b = holders[0]
        s, e = span(p)
        assert b.table == p.table and b.start <= s and e <= b.end, (p, b)
    assert sum(len(b.points) for b in blocks) == len(points), "a block holds a point it was not given"
    for b in blocks:
        assert 1 <= b.count <= limit_of(b.table, max_registers, max_bits), b
        assert b.start == min(q.address for q in b.points), "block starts on an unused register"
        assert b.end == max(span(q)[1] for q in b.points), "block ends on an unused register"
        if max_gap is not None:
            covered = sorted(span(q) for q in b.points)
            reach = covered[0][1]
            for s, e in covered[1:]:
                assert s - reach <= max_gap, f"gap of {s - reach} in {b} above {max_gap}"
                reach = max(reach, e)
    # blocks never overlap (unless the points themselves overlap by more than one request can hold)
    for table in {p.table for p in points}:
        tpoints = [p for p in points if p.table == table]
        if any(e - s > limit_of(table, max_registers, max_bits) for s, e in clusters_of(tpoints)):
            continue
        tblocks = sorted((b for b in blocks if b.table == table), key=lambda b: b.start)
        for a, b in itertools.pairwise(tblocks):
            assert a.end <= b.start, f"{a} overlaps {b}"


REG_TYPES = ["uint16", "int16", "int32", "uint32", "float32", "int64", "float64", "bit", "string"]


@st.composite
def points_st(draw: st.DrawFn, max_address: int = 300) -> list[ModbusPoint]:
    n = draw(st.integers(1, 40))
    out: list[ModbusPoint] = []
    for i in range(n):
        table = draw(st.sampled_from(["holding", "input", "coil", "discrete"]))
        address = draw(st.integers(0, max_address))
        if table in ("coil", "discrete"):
            out.append(pt(f"p{i}", address, "bool", table))
            continue
        t = draw(st.sampled_from(REG_TYPES))
        kw: dict[str, Any] = {}
        if t == "bit":
            kw["bit"] = draw(st.integers(0, 15))
        if t == "string":
            kw["length"] = draw(st.integers(1, 6))
        out.append(pt(f"p{i}", address, t, table, **kw))
    return out


limits_st = st.tuples(st.integers(8, 125), st.integers(1, 2000), st.integers(0, 20))


@settings(max_examples=100, deadline=None)
@given(points_st(), limits_st)
def test_plan_covers_each_point_once_within_limits(
    points: list[ModbusPoint], limits: tuple[int, int, int]
) -> None:
    max_registers, max_bits, max_gap = limits
    blocks = plan(points, max_registers=max_registers, max_bits=max_bits, max_gap=max_gap)
    check_invariants(points, blocks, max_registers=max_registers, max_bits=max_bits, max_gap=max_gap)


@settings(max_examples=100, deadline=None)
@given(points_st(), st.integers(8, 125))
def test_max_gap_zero_reads_no_unused_register(points: list[ModbusPoint], max_registers: int) -> None:
    blocks = plan(points, max_registers=max_registers, max_gap=0)
    for b in blocks:
        used = set()
        for p in b.points:
            used.update(range(*span(p)))
        assert used == set(range(b.start, b.end)), f"{b} reads unused registers"


def fewest_blocks(clusters: list[tuple[int, int]], limit: int, max_gap: int) -> int:
    """Dynamic programme over consecutive clusters: the optimum the greedy planner must reach."""
    n = len(clusters)
    best = [0] + [n + 1] * n
    for j in range(1, n + 1):
        for i in range(j):
            s, e = clusters[i][0], max(c[1] for c in clusters[i:j])
            gaps_ok = all(clusters[k + 1][0] - clusters[k][1] <= max_gap for k in range(i, j - 1))
            if e - s <= limit and gaps_ok:
                best[j] = min(best[j], best[i] + 1)
    return best[n]


@settings(max_examples=100, deadline=None)
@given(points_st(max_address=200), st.integers(8, 60), st.integers(0, 12))
def test_plan_uses_fewest_requests(points: list[ModbusPoint], max_registers: int, max_gap: int) -> None:
    blocks = plan(points, max_registers=max_registers, max_bits=max_registers, max_gap=max_gap)
    expected = 0
    for table in {p.table for p in points}:
        cl = clusters_of([p for p in points if p.table == table])
        if any(e - s > max_registers for s, e in cl):
            return  # oversized overlapping clusters: not a partition problem any more
        expected += fewest_blocks(cl, max_registers, max_gap)
    assert len(blocks) == expected


@settings(max_examples=100, deadline=None)
@given(points_st(), limits_st, st.lists(st.integers(0, 1000), max_size=60))
def test_invariants_hold_after_arbitrary_splits(
    points: list[ModbusPoint], limits: tuple[int, int, int], picks: list[int]
) -> None:
    max_registers, max_bits, max_gap = limits
    rp = ReadPlan(points, max_registers=max_registers, max_bits=max_bits, max_gap=max_gap)
    for k in picks:
        block = rp.blocks[k % len(rp.blocks)]
        parts = rp.on_illegal_address(block)
        if parts == [block]:
            assert rp.is_bad(block)
            assert len(clusters_of(list(block.points))) == 1
        else:
            assert all(p in rp.blocks for p in parts) and block not in rp.blocks
        check_invariants(points, rp.blocks, max_registers=max_registers, max_bits=max_bits, max_gap=max_gap)


def test_two_bits_of_one_register_and_a_repeated_register_read_once() -> None:
    points = [
        pt("alarm", 10, "bit", bit=0),
        pt("run", 10, "bit", bit=3),
        pt("raw", 10),
        pt("temp", 11, "int16"),
        pt("temp_again", 11, "uint16"),
    ]
    [b] = plan(points, max_gap=0)
    assert (b.table, b.start, b.count) == ("holding", 10, 2)
    assert {p.id for p in b.points} == {"alarm", "run", "raw", "temp", "temp_again"}


def test_gap_bridged_up_to_max_gap_only() -> None:
    points = [pt("a", 0), pt("b", 9), pt("c", 30)]
    blocks = plan(points, max_gap=8)
    assert [(b.start, b.count) for b in blocks] == [(0, 10), (30, 1)]
    blocks = plan(points, max_gap=7)
    assert [(b.start, b.count) for b in blocks] == [(0, 1), (9, 1), (30, 1)]


def test_tables_are_planned_apart_and_limits_cut_blocks() -> None:
    regs = [pt(f"h{i}", i) for i in range(300)]
    coils = [pt(f"c{i}", i, "bool", "coil") for i in range(2500)]
    inputs = [pt("i0", 0, table="input")]
    blocks = plan(regs + coils + inputs, max_registers=100, max_gap=0)
    by_table = {t: [(b.start, b.count) for b in blocks if b.table == t] for t in ("holding", "coil", "input")}
    assert by_table["holding"] == [(0, 100), (100, 100), (200, 100)]
    assert by_table["coil"] == [(0, 2000), (2000, 500)]
    assert by_table["input"] == [(0, 1)]
    # device limits above the protocol's are capped
    blocks = plan(regs, max_registers=500, max_gap=0)
    assert [b.count for b in blocks] == [125, 125, 50]


def test_point_wider_than_a_request_is_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        plan([pt("f", 0, "float64")], max_registers=2)


def test_per_point_plan_is_one_request_per_point() -> None:
    points = [pt("a", 0), pt("b", 1, "float32"), pt("c", 5, "bool", "coil")]
    blocks = per_point_plan(points)
    assert [(b.table, b.start, b.count, b.points) for b in blocks] == [
        ("holding", 0, 1, (points[0],)),
        ("holding", 1, 2, (points[1],)),
        ("coil", 5, 1, (points[2],)),
    ]


def test_illegal_address_splits_runs_then_halves_then_marks_bad() -> None:
    points = [pt("a", 0), pt("b", 1), pt("c", 2), pt("d", 3), pt("x", 8), pt("y", 9)]
    rp = ReadPlan(points, max_gap=8)
    [whole] = rp.blocks
    assert (whole.start, whole.count) == (0, 10)
    # first: drop the bridged gap 4..7
    runs = rp.on_illegal_address(whole)
    assert [(b.start, b.count) for b in runs] == [(0, 4), (8, 2)]
    assert rp.blocks == runs
    # then halve a contiguous run
    halves = rp.on_illegal_address(runs[0])
    assert [(b.start, b.count) for b in halves] == [(0, 2), (2, 2)]
    quarter = rp.on_illegal_address(halves[1])
    assert [(b.start, b.count) for b in quarter] == [(2, 1), (3, 1)]
    # a single point that still fails is bad, stays a one-point block
    assert rp.on_illegal_address(quarter[1]) == [quarter[1]]
    assert rp.is_bad(quarter[1]) and rp.bad_blocks == [quarter[1]]
    assert ("holding", 3) in rp.unreadable
    assert [(b.start, b.count) for b in rp.blocks] == [(0, 2), (2, 1), (3, 1), (8, 2)]


def test_bad_block_retried_rarely_and_cleared_on_success() -> None:
    rp = ReadPlan([pt("a", 0), pt("b", 5)], max_gap=0, retry_every=4)
    bad = rp.blocks[1]
    rp.on_illegal_address(bad)
    due = []
    for _ in range(8):
        rp.next_cycle()
        due.append(rp.due(bad))
        assert rp.due(rp.blocks[0])
    assert due == [False, False, False, True, False, False, False, True]
    rp.on_success(bad)
    assert not rp.is_bad(bad) and rp.due(bad) and not rp.unreadable


def test_known_unreadable_addresses_isolate_points_and_are_never_bridged() -> None:
    points = [pt("a", 0), pt("b", 1), pt("c", 2), pt("d", 6)]
    rp = ReadPlan(points, max_gap=8, unreadable={("holding", 1), ("holding", 4)})
    assert [(b.start, b.count) for b in rp.blocks] == [(0, 1), (1, 1), (2, 1), (6, 1)]
    assert [b.start for b in rp.bad_blocks] == [1]
    # the same address in another table changes nothing
    assert len(plan(points, max_gap=8, unreadable={("input", 1)})) == 1


def test_split_block_of_one_cluster_is_impossible() -> None:
    [b] = plan([pt("a", 4, "float32"), pt("b", 5)], max_gap=0)
    assert split_block(b) is None


def test_block_not_in_plan_is_an_error() -> None:
    rp = ReadPlan([pt("a", 0)])
    with pytest.raises(ValueError, match="not in this plan"):
        rp.on_illegal_address(Block("holding", 0, 1, ()))


def test_plan_from_ready_made_blocks_splits_the_same_way() -> None:
    points = [pt("a", 0), pt("b", 1, "float32")]
    rp = ReadPlan.from_blocks(per_point_plan(points), retry_every=5)
    assert [(b.start, b.count) for b in rp.blocks] == [(0, 1), (1, 2)]
    assert rp.on_illegal_address(rp.blocks[1]) == [rp.blocks[1]] and rp.is_bad(rp.blocks[1])
    assert rp.unreadable == {("holding", 1), ("holding", 2)}


@given(
    st.lists(st.integers(0, 400), min_size=1, max_size=60, unique=True),
    st.lists(st.tuples(st.integers(0, 30), st.sampled_from([1, 2, 3])), max_size=12),
)
def test_refusals_keep_every_point_covered_once_and_requests_within_the_learned_size(
    addresses: list[int], refusals: list[tuple[int, int]]
) -> None:
    points = [pt(f"p{a}", a) for a in addresses]
    rp = ReadPlan(points, max_gap=8)
    for index, exception in refusals:
        if rp.blocks:
            rp.on_refused(rp.blocks[index % len(rp.blocks)], exception)
        covered = sorted(p.id for b in rp.blocks for p in b.points)
        assert covered == sorted(p.id for p in points)
        assert all(b.count <= rp.max_registers or rp.is_bad(b) for b in rp.blocks)
        assert all(b.start <= p.address and p.address < b.end for b in rp.blocks for p in b.points)

"""fit_batch: the longest prefix of the pending rows whose encoding fits the byte limit (hypothesis)."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.store.outbox import Row
from edge_agent.uplink.mqtt import encode_batch, fit_batch


def _rows(sizes: Sequence[int]) -> list[Row]:
    return [
        Row(
            seq=i + 1,
            point=f"p{i}",
            ts_us=1_700_000_000_000_000,
            value="x" * n,
            unit=None,
            quality="good",
            code=None,
            flags=(),
        )
        for i, n in enumerate(sizes)
    ]


def _encode(rows: Sequence[Row]) -> bytes:
    return encode_batch(rows, gateway="gw", building="b", audit_head=(1, "0" * 64))


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=60), limit=st.integers(300, 40_000))
def test_fit_batch_is_a_prefix_under_the_limit(sizes: list[int], limit: int) -> None:
    rows = _rows(sizes)
    payload, kept = fit_batch(rows, limit, _encode)
    assert list(kept) == rows[: len(kept)] and kept  # a prefix, never empty: order and contiguity kept
    if payload is None:  # only when the first row alone does not fit
        assert len(kept) == 1 and len(_encode(rows[:1])) > limit
    else:
        assert payload == _encode(kept) and len(payload) <= limit
    if len(_encode(rows)) <= limit:  # everything fits: one message, encoded once
        assert list(kept) == rows

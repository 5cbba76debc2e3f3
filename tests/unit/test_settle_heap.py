"""The service freezes what start-up built (issue 18: full collections walked 10,000 points' objects)
and a reload lets the objects it replaced be collected."""

from __future__ import annotations

import gc
import weakref

from edge_agent.service.service import _settle_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


def test_frozen_objects_are_left_alone_until_the_next_settle() -> None:
    threshold = gc.get_threshold()
    try:
        node = _Node()
        ref = weakref.ref(node)
        _settle_heap()  # start-up done
        assert gc.get_freeze_count() > 0
        del node  # e.g. a configuration a reload replaced
        gc.collect()
        assert ref() is not None  # frozen: no collection walks it
        _settle_heap()  # the reload's settle unfreezes first
        assert ref() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)

"""Once started, the server takes its startup heap out of the cyclic collector's sight."""

from __future__ import annotations

import gc

from server.ops.process import GC_YOUNG_THRESHOLD, settle_heap


def test_settle_heap_freezes_what_is_alive_and_collects_young_objects_less_often() -> None:
    threshold = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, threshold[1], threshold[2])
        # What comes later is collected as usual: a new cycle is not frozen.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)

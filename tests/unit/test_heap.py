"""``freeze_startup_heap``: what is alive at start-up leaves the collected generations."""

from __future__ import annotations

import gc

from actors.heap import THRESHOLDS, freeze_startup_heap


def test_start_up_objects_are_frozen_and_full_collections_made_rarer() -> None:
    before = gc.get_threshold()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 10_000  # the modules and classes imported so far
        assert gc.get_threshold() == THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

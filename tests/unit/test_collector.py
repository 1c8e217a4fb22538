"""node/collector.py: what ``settle`` leaves in force."""

from __future__ import annotations

import gc

from remembrancer.node.collector import THRESHOLDS, settle


def test_settle_freezes_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        assert settle() == THRESHOLDS == gc.get_threshold()
        assert gc.get_freeze_count() > 0
        assert THRESHOLDS[0] > before[0]  # young collections run less often than by default
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

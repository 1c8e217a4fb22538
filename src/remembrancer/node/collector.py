"""The node process's garbage-collector settings.

Most of what a node allocates is short-lived: requests, records in flight,
their receipts.  With CPython's default thresholds (700, 10, 10) a young
collection runs every 700 net allocations and walks everything allocated
since, the records waiting in the sequencer's queue among them.  Measured
with the in-process admission benchmark (20,000 signed records, 4,096 in
flight, verification in worker processes, three alternated pairs on two
cores): 16-18 µs of collection per record with the defaults, 2-3 µs with
:data:`THRESHOLDS`, and 5-21% more records admitted per second.  Objects
that exist once the node has started live as long as the process and are
moved out of the collector's reach (``gc.freeze``).

Reference cycles are still collected, only in larger young batches: a
young generation of 20,000 objects is a few megabytes at most.
"""

from __future__ import annotations

import gc
from typing import Final

THRESHOLDS: Final = (20_000, 50, 50)


def settle() -> tuple[int, int, int]:
    """Once the process has started: freeze what exists and collect young
    objects less often.  Returns the thresholds now in force."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    return gc.get_threshold()

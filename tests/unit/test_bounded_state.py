"""State that grows with traffic has a bound (issue 16, item 6): the latency
histograms that replaced unbounded lists, and the table of ``wait=false``
submissions behind the receipt URL."""

from __future__ import annotations

import asyncio
import random
import statistics
import sys

import pytest

from remembrancer.core.errors import PushbackError
from remembrancer.core.histogram import LatencyHistogram
from remembrancer.federation.witnessing import MAX_SPLIT_VIEWS, CheckpointWitnessing
from remembrancer.node.pending import PendingReceipts


def test_the_histogram_has_constant_size_and_a_close_median() -> None:
    rng = random.Random(7)
    h = LatencyHistogram()
    size = sys.getsizeof(h._counts)
    values = [rng.lognormvariate(-3, 1.2) for _ in range(200_000)]
    for v in values:
        h.observe(v)
    assert sys.getsizeof(h._counts) == size  # no growth with the number of observations
    assert h.count == len(values) and h.min == min(values) and h.max == max(values)
    for q in (0.5, 0.9, 0.99):
        exact = statistics.quantiles(values, n=1000)[round(q * 1000) - 1]
        approx = h.quantile(q)
        assert approx is not None and abs(approx - exact) / exact < 0.05, (q, approx, exact)


def test_the_histogram_edges() -> None:
    h = LatencyHistogram(lo=1e-3, hi=10.0)
    assert h.quantile(0.5) is None
    for v in (1e-6, 5e-4, 20.0, 1e9, float("nan")):
        h.observe(v)
    assert h.count == 4  # NaN is not a latency
    assert h.quantile(0.0) == 1e-6 and h.quantile(1.0) == 1e9
    with pytest.raises(ValueError):
        h.quantile(1.5)
    with pytest.raises(ValueError):
        LatencyHistogram(lo=1.0, hi=1.0)


def test_witnessing_keeps_bounded_latencies_and_split_views() -> None:
    w = CheckpointWitnessing(logs=None, peers=[])  # type: ignore[arg-type]
    for i in range(50_000):
        w.latencies.observe(0.01 + i % 7 / 1000)
    for i in range(MAX_SPLIT_VIEWS * 3):
        w.split_views.append({"i": i})
        w.split_view_count += 1
    stats = w.stats()
    assert stats["rounds"] == 50_000 and 10.0 < stats["median_ms"] < 15.0
    assert len(w.split_views) == MAX_SPLIT_VIEWS and stats["split_views"] == MAX_SPLIT_VIEWS * 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pending_receipts_are_bounded() -> None:
    async def go() -> None:
        clock = Clock()
        table = PendingReceipts(3, keep_s=300, clock=clock)
        gate = asyncio.Event()

        async def work(fail: bool) -> int:
            await gate.wait()
            if fail:
                raise PushbackError("refused", code="overloaded", retry_after=1)
            return 1

        for i in range(3):
            table.admit(f"ns/{i}")
            table.add(f"ns/{i}", asyncio.ensure_future(work(i == 0)))
        # A fourth running task is refused before it is made; a known key is not.
        with pytest.raises(PushbackError) as refused:
            table.admit("ns/3")
        assert refused.value.code == "overloaded"
        table.admit("ns/1")
        gate.set()
        await asyncio.sleep(0)
        await asyncio.gather(*(table.get(f"ns/{i}") for i in (1, 2)))  # type: ignore[misc]
        await asyncio.sleep(0)
        assert table.running == 0 and len(table) == 3
        first = table.get("ns/0")
        assert first is not None and isinstance(first.exception(), PushbackError)
        # More finished tasks than the limit: the oldest go first.
        for i in range(3, 10):
            table.admit(f"ns/{i}")
            table.add(f"ns/{i}", asyncio.ensure_future(work(False)))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        assert len(table) == 3 and table.get("ns/0") is None and table.get("ns/9") is not None
        # Finished tasks expire after keep_s.
        clock.now += 301
        assert len(table) == 3 and table.get("ns/9") is None and len(table) == 0

    asyncio.run(go())

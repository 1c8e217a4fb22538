"""A bounded latency histogram: fixed log-spaced buckets, constant memory.

Replaces lists that grew by one float per measurement.  Buckets are
``[lo * r**k, lo * r**(k+1))`` with ``r = 2**(1/steps)`` (``steps`` per
doubling), plus one for values below ``lo`` and one for values at or above
``hi``; a quantile is the geometric middle of the bucket holding it, so its
relative error is below ``r**0.5 - 1`` (4.4% with the default 8 steps) for
values inside ``[lo, hi)``.  ``count``, ``total``, ``min`` and ``max`` are exact.
"""

from __future__ import annotations

import math


class LatencyHistogram:
    """Seconds, from ``lo`` (1 ms) to ``hi`` (about 1.1 days) by default."""

    __slots__ = ("_counts", "count", "hi", "lo", "max", "min", "steps", "total")

    def __init__(self, lo: float = 1e-3, hi: float = 1e5, steps: int = 8) -> None:
        if not (0 < lo < hi and steps >= 1):
            raise ValueError("need 0 < lo < hi and steps >= 1")
        self.lo, self.hi, self.steps = lo, hi, steps
        inner = math.ceil(math.log2(hi / lo) * steps)
        self._counts = [0] * (inner + 2)  # below lo, the inner buckets, at or above hi
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def __len__(self) -> int:
        return self.count

    def observe(self, value: float) -> None:
        if value != value:  # NaN: not a latency
            return
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        self._counts[self._bucket(value)] += 1

    def _bucket(self, value: float) -> int:
        if value < self.lo:
            return 0
        if value >= self.hi:
            return len(self._counts) - 1
        k = int(math.log2(value / self.lo) * self.steps)
        return 1 + min(k, len(self._counts) - 3)

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (0 to 1), or None when nothing was observed."""
        if self.count == 0:
            return None
        if not 0 <= q <= 1:
            raise ValueError("q must be between 0 and 1")
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for i, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                return self._middle(i)
        return self.max  # pragma: no cover - the counts sum to count

    def _middle(self, i: int) -> float:
        if i == 0:
            return self.min
        if i == len(self._counts) - 1:
            return self.max
        low = self.lo * 2 ** ((i - 1) / self.steps)
        middle = low * 2 ** (0.5 / self.steps)
        return min(max(middle, self.min), self.max)

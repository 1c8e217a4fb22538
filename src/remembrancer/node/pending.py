"""Records admitted with ``wait=false``, until their receipt URL can answer.

A record submitted without waiting is integrated by a task; ``GET
.../receipts/{eventHash}`` asks this table whether that task is still
running (``202``) or was refused (the refusal).  Invariants:

* at most ``limit`` tasks are running; one more is refused with
  ``overloaded`` (503, ``Retry-After``) before a task is made;
* a finished task is kept ``keep_s`` seconds so its refusal can be read, and
  at most ``limit`` finished tasks are kept (the oldest go first);
* nothing here outlives the node's process: a receipt that is not here is
  looked up in the log.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from remembrancer.core.errors import PushbackError

KEEP_S = 300.0


class PendingReceipts:
    """Running and recently finished integration tasks, by ``<namespace>/<eventHash hex>``."""

    def __init__(self, limit: int, *, keep_s: float = KEEP_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        if limit < 1 or keep_s < 0:
            raise ValueError("limit must be at least 1 and keep_s not negative")
        self.limit = limit
        self.keep_s = keep_s
        self._clock = clock
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._finished: OrderedDict[str, tuple[asyncio.Task[Any], float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._running) + len(self._finished)

    @property
    def running(self) -> int:
        return len(self._running)

    def admit(self, key: str) -> None:
        """Refuse (``overloaded``) when ``limit`` tasks are running already."""
        if len(self._running) >= self.limit and key not in self._running:
            raise PushbackError(
                f"{len(self._running)} records are waiting for integration",
                code="overloaded",
                retry_after=1,
            )

    def add(self, key: str, task: asyncio.Task[Any]) -> None:
        """Track ``task`` (call :meth:`admit` first, before making the task)."""
        self._prune()
        self._running[key] = task
        self._finished.pop(key, None)
        task.add_done_callback(lambda t: self._finish(key, t))

    def get(self, key: str) -> asyncio.Task[Any] | None:
        self._prune()
        task = self._running.get(key)
        if task is None and key in self._finished:
            task = self._finished[key][0]
        return task

    def _finish(self, key: str, task: asyncio.Task[Any]) -> None:
        if self._running.get(key) is not task:
            return  # superseded by a later submission of the same record
        del self._running[key]
        self._finished[key] = (task, self._clock())
        while len(self._finished) > self.limit:
            self._finished.popitem(last=False)

    def _prune(self) -> None:
        horizon = self._clock() - self.keep_s
        while self._finished:
            _, finished_at = next(iter(self._finished.values()))
            if finished_at > horizon:
                break
            self._finished.popitem(last=False)

"""Virtual time: an asyncio event loop whose clock advances only when every task waits.

:class:`VirtualClockLoop` jumps to the next scheduled callback instead of
sleeping; ``asyncio.to_thread`` runs inline (:class:`_InlineExecutor`), so
there are no threads and no wall clock in the simulated logic.  A loop in
which every task waits and nothing is scheduled is deadlocked
(``simulation_stuck``).
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from remembrancer.testing.simulation.config import SimulationError

__all__ = ["VirtualClockLoop", "run_virtual"]


P = ParamSpec("P")
T = TypeVar("T")


class _VirtualSelector:
    """Stands in for the loop's selector: waiting ``timeout`` seconds advances
    the virtual clock by exactly that, at once (there is no I/O to wait for)."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise SimulationError(
                "every task waits and no timer is scheduled", code="simulation_stuck"
            )
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        pass


class _InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs each submitted call at once on the calling thread, so that
    ``asyncio.to_thread`` in the real code stays deterministic (no threads are
    ever started)."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # handed to the awaiting task, as a thread would
            future.set_exception(e)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


class VirtualClockLoop(asyncio.base_events.BaseEventLoop):
    """An asyncio event loop on virtual time.

    ``time()`` starts at 0 and moves only when every ready callback has run:
    the loop then jumps to the next timer (``asyncio.sleep``, ``wait_for`` and
    ``asyncio.timeout`` all become instants).  There is no I/O: a loop with
    nothing ready and no timer raises :class:`SimulationError`
    ``simulation_stuck`` instead of blocking.  Calls sent to the default
    executor run inline.
    """

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._selector = _VirtualSelector(self)
        self._clock_resolution = 1e-9
        self.set_default_executor(_InlineExecutor())

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass  # nothing to wake: the loop never blocks


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a fresh :class:`VirtualClockLoop`; cancel what is left after it."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

"""One worker thread that runs short blocking calls for the event loop, in
order, answering a whole batch of them with a single wake-up of the loop.

Proof generation is CPU work in Python under one lock (the sequencer's tile
readers), so several threads cannot run it in parallel; what they add is a
convoy: each request's hand-off through ``asyncio.to_thread`` costs two
wake-ups, a context copy and a fight for the GIL and the lock among the pool's
threads.  Measured on a 2-core machine at 1,000,000 entries and 64 clients
(bench/node.py), serving an inclusion proof took ~700 µs of CPU through the
default pool and ~370 µs through a lane, against ~200 µs to generate it.

The queue is bounded (``max_pending``; beyond it a call is refused with
``503 overloaded`` before any work is done), and a call whose caller has
gone away (its deadline passed, the client disconnected) is skipped rather
than run."""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from remembrancer.core.errors import PushbackError

T = TypeVar("T")

_Job = tuple[
    Callable[[], Any], contextvars.Context, "asyncio.Future[Any]", asyncio.AbstractEventLoop
]
_BATCH = 256  # calls answered per wake-up of the loop, at most


class Lane:
    """A named worker thread for blocking calls, started on first use."""

    def __init__(self, name: str, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError("a lane needs room for at least one call")
        self.name = name
        self.max_pending = max_pending
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._pending = 0  # queued or running; changed on the loop only
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Calls queued or running."""
        return self._pending

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the lane's thread, in the caller's context (as
        ``asyncio.to_thread`` does), and return (or raise) what it did."""
        if self._closed:
            raise PushbackError(f"the {self.name} lane is shut down", code="shutting_down",
                                retry_after=1)  # fmt: skip
        if self._pending >= self.max_pending:
            raise PushbackError(
                f"{self._pending} {self.name} calls are already waiting",
                code="overloaded",
                retry_after=1,
                details={"lane": self.name, "max_pending": self.max_pending},
            )
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name=f"lane-{self.name}", daemon=True
            )
            self._thread.start()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._pending += 1
        self._jobs.put((fn, contextvars.copy_context(), fut, loop))
        try:
            return await fut
        finally:
            self._pending -= 1

    def close(self, timeout: float = 10) -> None:
        """Stop taking calls; the thread finishes what is queued, then exits."""
        self._closed = True
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout)

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            first = jobs.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < _BATCH:
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]]
            answers = {}
            for fn, context, fut, loop in batch:
                result: Any = None
                error: BaseException | None = None
                if not fut.done():  # a cancelled caller's call is not run
                    try:
                        result = context.run(fn)
                    except Exception as e:  # handed to the caller
                        error = e
                answers.setdefault(loop, []).append((fut, result, error))
            for loop, done in answers.items():
                try:
                    loop.call_soon_threadsafe(_answer, done)
                except RuntimeError:  # that loop is closed: nobody is waiting
                    pass
            if stop:
                return


def _answer(done: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, result, error in done:
        if fut.done():
            continue
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)

"""The proof lane (node/lane.py): one thread, in order, batched answers, a
bounded queue, cancelled callers skipped, a clean shutdown."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from remembrancer.core.errors import FormatError, PushbackError
from remembrancer.node import lane as lane_module
from remembrancer.node.lane import Lane


async def _until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


async def _blocked_then(lane: Lane, release: threading.Event, ran: list[str], name: str):  # type: ignore[no-untyped-def]
    """A call that holds the lane until ``release``, and one queued behind it."""
    first = asyncio.ensure_future(lane.run(lambda: release.wait(10) and ran.append("a")))
    second = asyncio.ensure_future(lane.run(lambda: ran.append(name)))
    await _until(lambda: lane.pending == 2)
    return first, second


def _run_on(lane: Lane, main):  # type: ignore[no-untyped-def]
    try:
        return asyncio.run(main())
    finally:
        lane.close()


def test_calls_run_in_order_on_one_thread_and_errors_reach_their_caller() -> None:
    lane = Lane("test", 100)
    ran: list[tuple[int, str]] = []

    def job(i: int):  # type: ignore[no-untyped-def]
        def fn() -> int:
            ran.append((i, threading.current_thread().name))
            if i == 3:
                raise FormatError("three is refused", code="bad_three")
            return i * 10

        return fn

    async def main() -> list[object]:
        return await asyncio.gather(*(lane.run(job(i)) for i in range(8)), return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        lane.close()
    assert [i for i, _ in ran] == list(range(8))
    assert {name for _, name in ran} == {"lane-test"}
    assert results[:3] == [0, 10, 20] and results[4:] == [40, 50, 60, 70]
    assert isinstance(results[3], FormatError) and results[3].code == "bad_three"


def test_a_full_lane_refuses_with_503_overloaded_and_runs_nothing_for_it() -> None:
    lane = Lane("test", 2)
    release = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        first, second = await _blocked_then(lane, release, ran, "b")
        with pytest.raises(PushbackError) as refused:
            await lane.run(lambda: ran.append("c"))
        assert refused.value.code == "overloaded"
        assert refused.value.details == {"lane": "test", "max_pending": 2}
        release.set()
        await asyncio.gather(first, second)
        assert lane.pending == 0
        await lane.run(lambda: ran.append("d"))  # room again

    _run_on(lane, main)
    assert ran == ["a", "b", "d"]


def test_a_caller_that_went_away_has_its_call_skipped() -> None:
    lane = Lane("test", 10)
    release = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        first, gone = await _blocked_then(lane, release, ran, "gone")
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        release.set()
        await first
        await lane.run(lambda: ran.append("c"))

    _run_on(lane, main)
    assert ran == ["a", "c"]


def test_calls_queued_together_are_answered_with_one_wake_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lane = Lane("test", 100)
    release = threading.Event()
    wake_ups: list[int] = []
    answer = lane_module._answer

    def counting(done):  # type: ignore[no-untyped-def]
        wake_ups.append(len(done))
        answer(done)

    monkeypatch.setattr(lane_module, "_answer", counting)

    async def main() -> list[int]:
        first = asyncio.ensure_future(lane.run(lambda: release.wait(10) and 0))
        rest = [asyncio.ensure_future(lane.run(lambda i=i: i)) for i in range(1, 51)]
        await _until(lambda: lane.pending == 51)
        release.set()
        await first
        return list(await asyncio.gather(*rest))

    try:
        assert asyncio.run(main()) == list(range(1, 51))
    finally:
        lane.close()
    # The first call may or may not be taken alone (the thread starts with the
    # first call); the 50 queued behind it share one wake-up of the loop.
    assert sum(wake_ups) == 51 and len(wake_ups) <= 2 and wake_ups[-1] >= 50


def test_close_finishes_what_is_queued_then_refuses() -> None:
    lane = Lane("test", 10)

    async def main() -> None:
        assert await lane.run(lambda: 7) == 7
        await asyncio.to_thread(lane.close)
        with pytest.raises(PushbackError) as refused:
            await lane.run(lambda: 8)
        assert refused.value.code == "shutting_down"

    asyncio.run(main())
    assert lane._thread is not None and not lane._thread.is_alive()


def test_a_call_runs_in_its_callers_context() -> None:
    lane = Lane("test", 10)
    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")

    async def call(name: str) -> str:
        who.set(name)
        return await lane.run(who.get)

    async def main() -> list[str]:
        return list(await asyncio.gather(call("a"), call("b")))

    try:
        assert asyncio.run(main()) == ["a", "b"]
    finally:
        lane.close()

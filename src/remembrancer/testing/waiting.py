"""Waiting on what a node in process observably does, instead of sleeping.

A test that starts a node in its own event loop sometimes needs the node's
background work to reach a point (the first heartbeat round handed to the
transport) before it takes a snapshot.  These helpers poll the node's own
state with a short interval and a deadline; they never sleep a fixed time
and hope.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def coroutine_name(task: asyncio.Task[Any]) -> str:
    """The qualified name of the coroutine a task runs (``Class.method``)."""
    return str(getattr(task.get_coro(), "__qualname__", ""))


async def until(check: Callable[[], object], what: str, timeout: float = 10.0,
                interval: float = 0.01) -> None:  # fmt: skip
    """Poll ``check`` on the running loop until it is true; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


def _sleeping(task: asyncio.Task[Any]) -> bool:
    """Whether the task is suspended in ``asyncio.sleep`` (between rounds of its loop)."""
    return getattr(getattr(task.get_coro(), "cr_await", None), "__qualname__", "") == "sleep"


async def heartbeats_under_way(timeout: float = 10.0) -> None:
    """Return once the federation service's first heartbeat round is under way:
    the heartbeat loop (task ``federation-heartbeats``) has gone round once and
    sleeps, and the round's heartbeat is signed and handed to the transport,
    whose deliveries are then in the loop (in flight, or already finished).  A
    snapshot of the loop's tasks taken after this includes them."""

    def under_way() -> bool:
        tasks = [t for t in asyncio.all_tasks() if not t.done()]
        beat = next((t for t in tasks if t.get_name() == "federation-heartbeats"), None)
        if beat is None or not _sleeping(beat):
            return False
        names = [coroutine_name(t) for t in tasks]
        delivering = any(n.endswith("FederationClient.send") for n in names)
        return delivering or not any(n.endswith(".send_heartbeat") for n in names)

    await until(under_way, "the first heartbeat round", timeout)

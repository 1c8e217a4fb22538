"""A small, fast HTTP/1.1 load generator, so that the client costs far less
CPU than the server it measures (both share this machine's cores).

Each connection is an :class:`asyncio.Protocol` that keeps one request in
flight: it writes a request, reads its answer as it arrives (the status line
and ``Content-Length``; every answer of the node carries one), and writes the
next request from the same callback.  No stream reader, no task per
connection and no awaits per request; the loop is uvloop's when installed
(the node's own loop: uvicorn picks it).

Measured on the 2-core machine of BENCHMARKS.md (2026-12-07), 30,000
inclusion-proof requests to one node over 64 connections, three rounds
alternated with the stream-based client this replaced (asyncio streams, a
task per connection): 22 to 26 µs of client CPU per request against 32 to 40
µs, so the server gets more of the cores the two share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

MAX_HEAD = 64 * 1024  # an answer's status line and headers, at most


@dataclass
class LoadResult:
    requests: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def request_bytes(
    method: str, host: str, path: str, body: bytes = b"", ctype: str = "application/json"
) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n"
    if method == "POST":
        head += f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def answer_length(head: bytes) -> int:
    """The body length an answer's head announces (``Content-Length``; 0 if none)."""
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            return int(line[15:])
    return 0


class _Run:
    """What the connections of one run share: the requests, the next to send,
    the pacing and the result."""

    def __init__(self, requests: Sequence[bytes], rate: float | None) -> None:
        self.requests = requests
        self.next = 0
        self.rate = rate
        self.start = time.perf_counter()
        self.result = LoadResult()


class _Client(asyncio.Protocol):
    """One keep-alive connection with one request in flight at a time."""

    def __init__(self, run: _Run, loop: asyncio.AbstractEventLoop) -> None:
        self.run = run
        self.loop = loop
        self.done: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.expected = -1  # bytes of the answer in flight (head and body), once its head is read
        self.status = 0
        self.scheduled = 0.0
        self.waiting = False  # a request is in flight

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's is no asyncio.Transport subclass)
        self._next()

    def _next(self) -> None:
        run = self.run
        if run.next >= len(run.requests):
            self._finish(None)
            return
        i = run.next
        run.next += 1
        if run.rate:  # open loop: start on schedule, latency from the scheduled start
            scheduled = run.start + i / run.rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                self.loop.call_later(delay, self._send, i, scheduled)
                return
        else:
            scheduled = time.perf_counter()
        self._send(i, scheduled)

    def _send(self, i: int, scheduled: float) -> None:
        if self.transport is None or self.transport.is_closing():
            self._finish(ConnectionError("the server closed the connection"))
            return
        early = scheduled - time.perf_counter()
        if early > 0:  # the loop's timers round to the millisecond: not before its time
            self.loop.call_later(early, self._send, i, scheduled)
            return
        self.scheduled = scheduled
        self.waiting = True
        self.transport.write(self.run.requests[i])

    def data_received(self, data: bytes) -> None:
        if not self.waiting:
            self._finish(ConnectionError("the server sent more than the answer"))
            return
        buffer = self.buffer
        buffer += data
        if self.expected < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self._finish(ConnectionError("an answer's head is over 64 KiB"))
                return
            head = bytes(buffer[:end])
            self.status = int(head[9:12])
            self.expected = end + 4 + answer_length(head)
        if len(buffer) < self.expected:
            return
        if len(buffer) > self.expected:
            self._finish(ConnectionError("the server sent more than the answer"))
            return
        buffer.clear()
        self.expected = -1
        self.waiting = False
        result = self.run.result
        result.latencies.append(time.perf_counter() - self.scheduled)
        result.statuses[self.status] = result.statuses.get(self.status, 0) + 1
        result.requests += 1
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiting or self.run.next < len(self.run.requests):
            self._finish(exc or ConnectionError("the server closed the connection"))
        else:
            self._finish(None)

    def _finish(self, error: BaseException | None) -> None:
        if self.done.done():
            return
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)
        if self.transport is not None:
            self.transport.close()


async def run_load(host: str, port: int, requests: Sequence[bytes], concurrency: int,
                   rate: float | None = None) -> LoadResult:  # fmt: skip
    """Send every request once over ``concurrency`` connections; with ``rate``,
    pace the starts (open loop) and measure latency from the scheduled start."""
    loop = asyncio.get_running_loop()
    run = _Run(requests, rate)
    clients = [_Client(run, loop) for _ in range(min(concurrency, len(requests)))]
    try:
        await asyncio.gather(*(
            loop.create_connection(lambda c=c: c, host, port) for c in clients  # type: ignore[misc]
        ))  # fmt: skip
        await asyncio.gather(*(c.done for c in clients))
    finally:
        for c in clients:
            if c.transport is not None:
                c.transport.close()
    run.result.seconds = time.perf_counter() - run.start
    return run.result


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end on a new event loop: uvloop's when installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(coro)
    return uvloop.run(coro)


def load(
    host: str, port: int, requests: Sequence[bytes], concurrency: int, rate: float | None = None
) -> LoadResult:
    return drive(run_load(host, port, requests, concurrency, rate))

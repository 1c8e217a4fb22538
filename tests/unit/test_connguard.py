"""The HTTP server's connection limits (node/connguard.py), one guard at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from remembrancer.node.connguard import ConnectionGuard, ConnectionLimits, _Conn, header_part
from remembrancer.testing.waiting import until


def in_loop(f: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in a fresh event loop (the guard arms timers on it)."""

    def run() -> None:
        asyncio.run(f())

    run.__name__ = f.__name__
    return run


class Fake:
    """A connection as the guard sees it, recording whether it was closed."""

    def __init__(self, client: str = "10.0.0.1") -> None:
        self.closed_with: list[bytes | None] = []
        self.conn = _Conn(client, self.closed_with.append)

    @property
    def closed(self) -> bool:
        return bool(self.closed_with)


def _guard(**kw: float) -> ConnectionGuard:
    limits = {"header_timeout_s": 60.0, "half_open_grace_s": 0.0, **kw}
    return ConnectionGuard(ConnectionLimits(**limits))  # type: ignore[arg-type]


@in_loop
async def test_a_half_open_connection_is_closed_at_the_header_deadline() -> None:
    guard = _guard(header_timeout_s=0.05)
    slow, quick = Fake(), Fake()
    assert guard.opened(slow.conn) and guard.opened(quick.conn)
    guard.headers_done(quick.conn)
    await until(lambda: slow.closed, "the header deadline", timeout=5)
    assert slow.closed_with == [None] and not quick.closed
    assert guard.counts["header_timeout"] == 1
    assert slow.conn not in guard.connections and quick.conn in guard.connections


@in_loop
async def test_a_keep_alive_connection_waits_for_its_next_headers_under_the_deadline() -> None:
    guard = _guard(header_timeout_s=0.05)
    c = Fake()
    guard.opened(c.conn)
    guard.headers_done(c.conn)
    guard.waiting(c.conn)  # its answer went out: half-open again
    await until(lambda: c.closed, "the header deadline", timeout=5)
    assert guard.counts["header_timeout"] == 1


@in_loop
async def test_a_client_over_its_half_open_cap_loses_its_oldest_connection_only() -> None:
    guard = _guard(max_half_open_per_client=3)
    other = Fake("10.0.0.2")
    guard.opened(other.conn)
    mine = [Fake() for _ in range(5)]
    for c in mine:
        assert guard.opened(c.conn)
    assert [c.closed for c in mine] == [True, True, False, False, False]
    assert not other.closed
    assert guard.counts["half_open_per_client"] == 2
    assert len(guard.half_open) == 4


@in_loop
async def test_the_half_open_cap_in_all_closes_the_oldest() -> None:
    guard = _guard(max_half_open=2)
    conns = [Fake(f"10.0.0.{i}") for i in range(3)]
    for c in conns:
        guard.opened(c.conn)
    assert [c.closed for c in conns] == [True, False, False]
    assert guard.counts["half_open"] == 1


@in_loop
async def test_the_connection_cap_evicts_a_half_open_one_or_refuses() -> None:
    guard = _guard(max_connections=2)
    a, b, c, d = Fake(), Fake("10.0.0.2"), Fake("10.0.0.3"), Fake("10.0.0.4")
    guard.opened(a.conn)
    guard.opened(b.conn)
    guard.headers_done(b.conn)
    assert guard.opened(c.conn)  # a was half-open: it makes room
    assert a.closed and not b.closed
    guard.headers_done(c.conn)
    assert not guard.opened(d.conn)  # nobody half-open: the newcomer is refused
    assert guard.counts["over_connection_cap"] == 2
    assert guard.connections == {b.conn, c.conn}


@in_loop
async def test_headers_over_the_size_cap_are_refused() -> None:
    guard = _guard(max_header_bytes=1024)
    c = Fake()
    guard.opened(c.conn)
    assert guard.received(c.conn, 1000)
    assert not guard.received(c.conn, 100)
    assert guard.counts["headers_too_large"] == 1
    assert c.conn not in guard.half_open
    # Once the headers are in, a body is not counted against the header cap.
    d = Fake()
    guard.opened(d.conn)
    guard.headers_done(d.conn)
    assert guard.received(d.conn, 10_000)


@in_loop
async def test_a_closed_connection_is_forgotten_and_its_timer_cancelled() -> None:
    guard = _guard(header_timeout_s=0.05)
    c = Fake()
    guard.opened(c.conn)
    guard.closed(c.conn)
    assert not guard.connections and not guard.half_open and not guard.by_client
    await asyncio.sleep(0.1)  # the cancelled deadline must not fire
    assert not c.closed and guard.counts["header_timeout"] == 0


@in_loop
async def test_a_burst_of_young_connections_is_spared_by_the_per_client_cap_only() -> None:
    guard = _guard(max_half_open_per_client=2, max_half_open=4, half_open_grace_s=60.0)
    burst = [Fake() for _ in range(4)]
    for c in burst:
        guard.opened(c.conn)
    assert not any(c.closed for c in burst)  # young: their headers may be on their way
    late = Fake("10.0.0.9")
    guard.opened(late.conn)  # the cap in all spares none: the oldest goes
    assert [c.closed for c in burst] == [True, False, False, False] and not late.closed
    assert guard.counts["half_open"] == 1 and guard.counts["half_open_per_client"] == 0


def test_a_body_in_the_same_read_as_the_headers_is_not_counted_as_headers() -> None:
    """A POST of 150 KB often arrives in one read with its headers: only the
    bytes up to the blank line count against the header cap (a guard counting
    the whole read refused every large body with 431)."""
    c = Fake()
    head = b"POST /federation HTTP/1.1\r\nHost: x\r\nContent-Length: 150000\r\n\r\n"
    assert header_part(c.conn, head + b"{" * 150_000) == len(head)
    d = Fake()  # the blank line split across two reads
    assert header_part(d.conn, head[:-3]) == len(head) - 3
    assert header_part(d.conn, head[-3:] + b"x" * 1000) == 3
    e = Fake()  # no blank line yet: everything so far is headers
    partial = b"GET / HTTP/1.1\r\nX: " + b"a" * 5000
    assert header_part(e.conn, partial) == len(partial)


@in_loop
async def test_a_large_body_after_small_headers_passes_the_header_cap() -> None:
    guard = _guard(max_header_bytes=1024)
    c = Fake()
    guard.opened(c.conn)
    data = b"POST / HTTP/1.1\r\nContent-Length: 10000\r\n\r\n" + b"x" * 10_000
    assert guard.received(c.conn, header_part(c.conn, data))
    assert guard.counts.get("headers_too_large", 0) == 0

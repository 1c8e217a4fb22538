"""Connection limits of the node's HTTP server, in the server itself (issue 19).

uvicorn bounds what happens once a request's headers are in (``limit_concurrency``,
``timeout_keep_alive``, the app's own body deadline ``limits.request_timeout_s``)
but waits for the headers of a request forever: a client that opens a
connection and sends half a request line holds a socket and a file
descriptor until it goes away.  :class:`ConnectionGuard` closes that gap.
It is shared by every connection of one server and wraps uvicorn's HTTP
protocol class (:func:`guarded_protocol`); a connection is *half-open*
from the moment it is accepted (or a keep-alive connection finished its
last response) until the headers of its next request are complete.

- **Header deadline** (``server.header_timeout_s``): a half-open connection
  whose request headers are not complete by then is closed.
- **Header size** (``server.max_header_bytes``): a half-open connection that
  sends more than that before its headers are complete is answered
  ``431`` and closed.
- **Half-open per client** (``server.max_half_open_per_client``) and in all
  (``server.max_half_open``): when a new connection is over either, the
  *oldest* half-open connection (of that client, or of anyone) is closed, so
  a client that parks connections only ever displaces its own, and a fresh
  request (a health check) always gets its turn.  The per-client cap spares
  connections half-open for less than ``half_open_grace_s`` (1 s: a burst of
  connections whose headers are on their way); the cap in all spares none.
- **Connections** (``server.max_connections``): a connection beyond the cap
  closes the oldest half-open one, or, if none is half-open, is closed at
  once.  uvicorn's ``limit_concurrency`` is the same number: at the cap a
  request is answered 503.

A client is its IP address.  Counts are in :attr:`ConnectionGuard.counts`
(and the ``remembrancer_http_connections_closed_total`` metric).
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["ConnectionGuard", "ConnectionLimits", "guarded_protocol"]

_HEADERS_TOO_LARGE: Final = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: 95\r\n\r\n"
    b'{"error":{"code":"headers_too_large","message":"the request headers are over the size cap."}}'
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The bounds :class:`ConnectionGuard` enforces (``server`` in node.yaml)."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 512
    max_half_open: int = 256
    max_half_open_per_client: int = 32
    # A client's half-open connection younger than this is not evicted by the
    # per-client cap (a burst of honest connections whose headers are already
    # on their way); the cap in all still holds.
    half_open_grace_s: float = 1.0


class _Conn:
    """What the guard keeps of one connection."""

    __slots__ = ("client", "close", "received", "since", "started", "tail", "timer")

    def __init__(self, client: str, close: Callable[[bytes | None], None],
                 started: Callable[[], bool] = lambda: False) -> None:  # fmt: skip
        self.client = client
        self.close = close
        self.started = started  # whether a request's headers came in unnoticed (h11 pipelining)
        self.timer: asyncio.TimerHandle | None = None
        self.received = 0  # bytes received while half-open
        self.tail = b""  # the last bytes of the headers so far (a blank line may straddle reads)
        self.since = 0.0  # loop time it became half-open


def header_part(conn: _Conn, data: bytes) -> int:
    """How many bytes of ``data`` belong to the request's headers: up to the blank
    line that ends them, or all of it while they go on.  A request's body often
    arrives in the same read as its headers and is not theirs to count."""
    before = len(conn.tail)
    seen = conn.tail + data
    end = seen.find(b"\r\n\r\n")
    conn.tail = seen[-3:]
    if end < 0:
        return len(data)
    return max(0, end + 4 - before)


class ConnectionGuard:
    """The connection limits of one server (see the module docstring)."""

    def __init__(self, limits: ConnectionLimits,
                 on_close: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.limits = limits
        self.on_close = on_close
        self.connections: set[_Conn] = set()
        self.half_open: OrderedDict[_Conn, None] = OrderedDict()
        self.by_client: dict[str, OrderedDict[_Conn, None]] = {}
        self.counts: Counter[str] = Counter()

    # --- events from the protocol ------------------------------------------------------
    def opened(self, conn: _Conn) -> bool:
        """A new connection; False if it must be closed at once (over the cap)."""
        if len(self.connections) >= self.limits.max_connections:
            if not self.half_open:
                self._count("over_connection_cap")
                return False
            self._evict(next(iter(self.half_open)), "over_connection_cap")
        self.connections.add(conn)
        self.waiting(conn)
        return True

    def waiting(self, conn: _Conn) -> None:
        """``conn`` waits for the headers of a request: half-open, deadline armed."""
        if conn not in self.connections or conn in self.half_open:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        mine = self.by_client.setdefault(conn.client, OrderedDict())
        while len(mine) >= self.limits.max_half_open_per_client:
            oldest = next(iter(mine))
            if now - oldest.since < self.limits.half_open_grace_s:
                break  # a burst: its headers may be on their way
            self._evict(oldest, "half_open_per_client")
        while len(self.half_open) >= self.limits.max_half_open:
            self._evict(next(iter(self.half_open)), "half_open")
        mine = self.by_client.setdefault(conn.client, OrderedDict())
        mine[conn] = None
        self.half_open[conn] = None
        conn.received = 0
        conn.tail = b""
        conn.since = now
        conn.timer = loop.call_later(self.limits.header_timeout_s, self._timed_out, conn)

    def received(self, conn: _Conn, n: int) -> bool:
        """``n`` bytes arrived on a half-open connection; False when they are over the
        header size cap (the caller answers 431 and closes)."""
        if conn not in self.half_open:
            return True
        conn.received += n
        if conn.received <= self.limits.max_header_bytes:
            return True
        self._forget(conn)
        self._count("headers_too_large")
        return False

    def headers_done(self, conn: _Conn) -> None:
        """The headers of a request are complete: no longer half-open."""
        self._settle(conn)

    def closed(self, conn: _Conn) -> None:
        self._settle(conn)
        self.connections.discard(conn)

    # --- internals ---------------------------------------------------------------------
    def _settle(self, conn: _Conn) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        self.half_open.pop(conn, None)
        mine = self.by_client.get(conn.client)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self.by_client[conn.client]

    def _forget(self, conn: _Conn) -> None:
        self._settle(conn)
        self.connections.discard(conn)

    def _timed_out(self, conn: _Conn) -> None:
        conn.timer = None
        self._evict(conn, "header_timeout")

    def _evict(self, conn: _Conn, why: str) -> None:
        if conn.started():
            self._settle(conn)
            return
        self._forget(conn)
        self._count(why)
        conn.close(None)

    def _count(self, why: str) -> None:
        self.counts[why] += 1
        if self.on_close is not None:
            self.on_close(why)


def guarded_protocol(base: type[asyncio.Protocol], guard: ConnectionGuard) -> type[Any]:
    """uvicorn's HTTP protocol class ``base`` (h11 or httptools) under ``guard``."""
    proto: Any = base

    class Guarded(proto):  # type: ignore[misc]
        _guard_conn: _Conn | None = None
        _guard_cycle: Any = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
            conn = _Conn(client, self._guard_close, self._guard_started)
            self._guard_conn = conn
            if not guard.opened(conn):
                self._guard_conn = None
                transport.abort()

        def _guard_close(self, answer: bytes | None) -> None:
            transport = self.transport
            if transport is None or transport.is_closing():
                return
            if answer:
                transport.write(answer)
                transport.close()
            else:
                transport.abort()  # a peer that never finished its headers gets no goodbye

        def _guard_started(self) -> bool:
            cycle = getattr(self, "cycle", None)
            if cycle is not None and cycle is not self._guard_cycle:
                self._guard_cycle = cycle
                return True
            return False

        def data_received(self, data: bytes) -> None:
            conn = self._guard_conn
            if conn is not None and not guard.received(conn, header_part(conn, data)):
                self._guard_close(_HEADERS_TOO_LARGE)
                return
            super().data_received(data)
            if conn is not None and self._guard_started():
                guard.headers_done(conn)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            conn = self._guard_conn
            transport = self.transport
            idle = not getattr(self, "pipeline", None)  # (httptools queues pipelined requests)
            if conn is not None and transport is not None and not transport.is_closing() and idle:
                guard.waiting(conn)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._guard_conn is not None:
                guard.closed(self._guard_conn)
            super().connection_lost(exc)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded

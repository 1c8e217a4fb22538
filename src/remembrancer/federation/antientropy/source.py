"""Where a replica's checkpoint, tiles and entry bundles come from.

:class:`Source` is the interface the engine syncs from; :class:`HttpSource`
reads a tlog-tiles prefix over HTTP (a log, or a peer's mirror) with a size
cap on every answer and at most :data:`FETCH_CONCURRENCY` requests in flight.
Everything a source serves is verified by the engine before it is kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final, Protocol

import httpx

from remembrancer.core.errors import PeerError
from remembrancer.core.tiles import MAX_ENTRY_SIZE, TILE_WIDTH, Tile, TileNodeReader

__all__ = ["HttpSource", "Source"]


FETCH_CONCURRENCY: Final = 16  # HTTP requests in flight per source
MAX_CHECKPOINT_BYTES: Final = 64 * 1024
MAX_BUNDLE_BYTES: Final = TILE_WIDTH * (2 + MAX_ENTRY_SIZE)


FETCH_TIMEOUT: Final = 10.0


class Source(Protocol):
    """Where a replica's checkpoint, tiles and entry bundles come from."""

    @property
    def name(self) -> str: ...

    @property
    def peer(self) -> str | None:
        """The DID of the peer that serves it (blamed for bad data)."""
        ...

    async def checkpoint(self) -> bytes: ...

    async def tiles(self, tiles: Sequence[Tile]) -> list[bytes]: ...

    async def bundles(self, tiles: Sequence[Tile]) -> list[bytes]: ...


class HttpSource:
    """A tlog-tiles prefix over HTTP: a log (``<endpoint>/logs/<namespace>/``) or
    a peer's mirror (``<endpoint>/v1/replicas/<origin>/``).

    Every fetch has an overall ``deadline`` (seconds, from the request to the
    last byte of the answer: a peer that drips its answer is cut off, however
    often it sends a byte) and a size cap (an entry bundle: what its width
    can hold).  Errors: PeerError ``replica_fetch_timeout`` (the deadline
    passed) or ``replica_fetch_failed`` (transport, status, or an answer over
    its cap)."""

    def __init__(self, client: httpx.AsyncClient, prefix: str, *, peer: str | None = None,
                 concurrency: int = FETCH_CONCURRENCY, deadline: float = FETCH_TIMEOUT) -> None:  # fmt: skip
        self.client = client
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._peer = peer
        self._slots = asyncio.Semaphore(concurrency)
        self.deadline = deadline

    @property
    def name(self) -> str:
        return self.prefix

    @property
    def peer(self) -> str | None:
        return self._peer

    async def _get(self, path: str, cap: int) -> bytes:
        url = self.prefix + path
        async with self._slots:
            try:
                async with asyncio.timeout(self.deadline):
                    return await self._read(url, cap)
            except TimeoutError as e:
                raise PeerError(f"GET {url}: no complete answer within {self.deadline:g} s",
                                code="replica_fetch_timeout",
                                details={"url": url, "deadline_s": self.deadline}) from e  # fmt: skip
            except httpx.TimeoutException as e:
                raise PeerError(f"GET {url}: {type(e).__name__}: {e}",
                                code="replica_fetch_timeout", details={"url": url}) from e  # fmt: skip
            except httpx.HTTPError as e:
                raise PeerError(f"GET {url}: {type(e).__name__}: {e}",
                                code="replica_fetch_failed", details={"url": url}) from e  # fmt: skip

    async def _read(self, url: str, cap: int) -> bytes:
        async with self.client.stream("GET", url) as r:
            if r.status_code != 200:
                raise PeerError(f"GET {url}: HTTP {r.status_code}", code="replica_fetch_failed",
                                details={"url": url, "status": r.status_code})  # fmt: skip
            declared = r.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > cap:
                raise PeerError(f"GET {url}: {declared} bytes, over {cap}",
                                code="replica_fetch_failed", details={"url": url})  # fmt: skip
            parts: list[bytes] = []  # joined once: no over-allocation, one copy at the end
            got = 0
            async for chunk in r.aiter_bytes():
                got += len(chunk)
                if got > cap:
                    raise PeerError(f"GET {url}: more than {cap} bytes",
                                    code="replica_fetch_failed", details={"url": url})  # fmt: skip
                parts.append(chunk)
            body = b"".join(parts)
            parts.clear()
            return body

    async def checkpoint(self) -> bytes:
        return await self._get("checkpoint", MAX_CHECKPOINT_BYTES)

    async def tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        return list(await asyncio.gather(*(self._get(t.path(), t.byte_size) for t in tiles)))

    async def bundles(self, tiles: Sequence[Tile]) -> list[bytes]:
        return list(await asyncio.gather(
            *(self._get(t.entries_path(), t.width * (2 + MAX_ENTRY_SIZE)) for t in tiles)
        ))  # fmt: skip


def tiles_reader(source: Source, size: int, loop: asyncio.AbstractEventLoop) -> TileNodeReader:
    """A node reader (for a worker thread) over the source's tiles of ``size``;
    each batch of tiles is fetched concurrently on ``loop``."""

    def fetch(tiles: Sequence[Tile]) -> list[bytes]:
        future = asyncio.run_coroutine_threadsafe(source.tiles(tiles), loop)
        wait = getattr(source, "deadline", FETCH_TIMEOUT)
        try:
            return future.result(timeout=wait * max(1, -(-len(tiles) // FETCH_CONCURRENCY)) + 5)
        except TimeoutError as e:
            future.cancel()
            raise PeerError(f"{source.name}: tiles not served in time",
                            code="replica_fetch_timeout", details={"source": source.name}) from e  # fmt: skip

    return TileNodeReader(fetch, size)

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
    a peer's mirror (``<endpoint>/v1/replicas/<origin>/``).  Errors: PeerError
    ``replica_fetch_failed`` (transport, status, or an answer over its size cap)."""

    def __init__(self, client: httpx.AsyncClient, prefix: str, *, peer: str | None = None,
                 concurrency: int = FETCH_CONCURRENCY) -> None:  # fmt: skip
        self.client = client
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._peer = peer
        self._slots = asyncio.Semaphore(concurrency)

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
                async with self.client.stream("GET", url) as r:
                    if r.status_code != 200:
                        raise PeerError(f"GET {url}: HTTP {r.status_code}",
                                        code="replica_fetch_failed",
                                        details={"url": url, "status": r.status_code})  # fmt: skip
                    declared = r.headers.get("content-length")
                    if declared is not None and declared.isdigit() and int(declared) > cap:
                        raise PeerError(f"GET {url}: {declared} bytes, over {cap}",
                                        code="replica_fetch_failed", details={"url": url})  # fmt: skip
                    body = bytearray()
                    async for chunk in r.aiter_bytes():
                        body += chunk
                        if len(body) > cap:
                            raise PeerError(f"GET {url}: more than {cap} bytes",
                                            code="replica_fetch_failed", details={"url": url})  # fmt: skip
                    return bytes(body)
            except httpx.HTTPError as e:
                raise PeerError(f"GET {url}: {type(e).__name__}: {e}",
                                code="replica_fetch_failed", details={"url": url}) from e  # fmt: skip

    async def checkpoint(self) -> bytes:
        return await self._get("checkpoint", MAX_CHECKPOINT_BYTES)

    async def tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        return list(await asyncio.gather(*(self._get(t.path(), t.byte_size) for t in tiles)))

    async def bundles(self, tiles: Sequence[Tile]) -> list[bytes]:
        return list(
            await asyncio.gather(*(self._get(t.entries_path(), MAX_BUNDLE_BYTES) for t in tiles))
        )


def tiles_reader(source: Source, size: int, loop: asyncio.AbstractEventLoop) -> TileNodeReader:
    """A node reader (for a worker thread) over the source's tiles of ``size``;
    each batch of tiles is fetched concurrently on ``loop``."""

    def fetch(tiles: Sequence[Tile]) -> list[bytes]:
        future = asyncio.run_coroutine_threadsafe(source.tiles(tiles), loop)
        return future.result(timeout=FETCH_TIMEOUT * 3)

    return TileNodeReader(fetch, size)

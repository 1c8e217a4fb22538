"""A small, fast HTTP/1.1 load generator (keep-alive connections, asyncio
streams), so that the client costs far less CPU than the server it measures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


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


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


def request_bytes(
    method: str, host: str, path: str, body: bytes = b"", ctype: str = "application/json"
) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n"
    if method == "POST":
        head += f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def run_load(host: str, port: int, requests: Sequence[bytes], concurrency: int,
                   rate: float | None = None) -> LoadResult:  # fmt: skip
    """Send every request once over ``concurrency`` connections; with ``rate``,
    pace the starts (open loop) and measure latency from the scheduled start."""
    result = LoadResult()
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for i, r in enumerate(requests):
        queue.put_nowait((i, r))
    start = time.perf_counter()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                try:
                    i, req = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                scheduled = start + i / rate if rate else time.perf_counter()
                if rate:
                    delay = scheduled - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                status = await _exchange(reader, writer, req)
                result.latencies.append(time.perf_counter() - scheduled)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                result.requests += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


def load(
    host: str, port: int, requests: Sequence[bytes], concurrency: int, rate: float | None = None
) -> LoadResult:
    return asyncio.run(run_load(host, port, requests, concurrency, rate))


Factory = Callable[[int], bytes]

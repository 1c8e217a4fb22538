"""The benchmarks' HTTP load generator (bench/loadgen.py) against real sockets:
it counts each answer once however its bytes arrive, and a server that breaks
the exchange fails the run instead of hanging it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from bench.loadgen import answer_length, drive, request_bytes, run_load

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler, run: Callable[[int], Awaitable[object]]) -> object:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await asyncio.wait_for(run(port), 20)
    finally:
        server.close()


def _answers(split: bool, extra: bytes = b"", close_after: int | None = None) -> Handler:
    """A keep-alive server answering each request with 200 or 404 (by path),
    its head and body in separate small writes when ``split``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if close_after is not None and served >= close_after:
                    return  # gone without an answer
                status = 404 if b"/missing" in head else 200
                body = b'{"ok":%d}' % served
                answer = b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\nContent-Length: %d\r\n\r\n" % (status, len(body))  # fmt: skip
                if split:
                    for i in range(0, len(answer), 7):
                        writer.write(answer[i : i + 7])
                        await writer.drain()
                        await asyncio.sleep(0)
                    writer.write(body[:3])
                    await writer.drain()
                    await asyncio.sleep(0.001)
                    writer.write(body[3:] + extra)
                else:
                    writer.write(answer + body + extra)
                await writer.drain()
                served += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handler


def _requests(port: int, n: int) -> list[bytes]:
    return [request_bytes("GET", f"127.0.0.1:{port}", "/missing" if i % 5 == 0 else f"/p?i={i}")
            for i in range(n)]  # fmt: skip


@pytest.mark.parametrize("split", [False, True])
def test_every_answer_is_counted_once_however_it_arrives(split: bool) -> None:
    result = drive(_serve(_answers(split), lambda port: run_load("127.0.0.1", port, _requests(port, 103), 4)))  # type: ignore[arg-type]  # fmt: skip
    assert result.requests == 103  # type: ignore[attr-defined]
    assert result.statuses == {200: 82, 404: 21}  # type: ignore[attr-defined]
    assert len(result.latencies) == 103  # type: ignore[attr-defined]


def test_more_connections_than_requests() -> None:
    result = drive(_serve(_answers(False), lambda port: run_load("127.0.0.1", port, _requests(port, 3), 16)))  # type: ignore[arg-type]  # fmt: skip
    assert result.statuses == {404: 1, 200: 2}  # type: ignore[attr-defined]


def test_paced_requests_start_on_schedule() -> None:
    result = drive(_serve(_answers(False), lambda port: run_load("127.0.0.1", port, _requests(port, 40), 4, rate=200.0)))  # type: ignore[arg-type]  # fmt: skip
    assert result.requests == 40  # type: ignore[attr-defined]
    assert result.seconds >= 39 / 200  # type: ignore[attr-defined]  # the last starts at 39/200 s
    assert min(result.latencies) >= 0  # type: ignore[attr-defined]  # none starts early


def test_a_server_that_hangs_up_without_answering_fails_the_run() -> None:
    with pytest.raises(ConnectionError):
        drive(_serve(_answers(False, close_after=2), lambda port: run_load("127.0.0.1", port, _requests(port, 10), 1)))  # fmt: skip


def test_bytes_beyond_the_announced_answer_fail_the_run() -> None:
    with pytest.raises(ConnectionError, match="more than the answer"):
        drive(_serve(_answers(False, extra=b"junk"), lambda port: run_load("127.0.0.1", port, _requests(port, 10), 1)))  # fmt: skip


def test_answer_length_reads_content_length_in_any_case() -> None:
    assert answer_length(b"HTTP/1.1 200 OK\r\ncontent-length: 12") == 12
    assert answer_length(b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH:7\r\nx: y") == 7
    assert answer_length(b"HTTP/1.1 204 No Content\r\nx: y") == 0

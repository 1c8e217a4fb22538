"""The federation HTTP transport against real HTTP servers (uvicorn, in threads).

Each peer is a small ASGI app that verifies messages with a real
:class:`MessageVerifier` through :func:`transport.receive`, unless its script
says to answer otherwise first (503, 429 with Retry-After, a slow answer).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn

from remembrancer.core.errors import PeerError, PushbackError
from remembrancer.core.keys import SigningKey
from remembrancer.federation.protocol.contents import HeartbeatContent, LogSummary
from remembrancer.federation.protocol.verify import KnownPeer, MessageVerifier
from remembrancer.federation.protocol.wire import Message, SeqCounter
from remembrancer.federation.transport import (
    PATH,
    Delivery,
    FederationClient,
    RetryPolicy,
    receive,
)
from remembrancer.node.statuses import federation_answer

FED = "vaultmesh-primary"
EAST = SigningKey(hashlib.sha256(b"east1").digest())
ROOT = "sha256:" + hashlib.sha256(b"root").hexdigest()
FAST = RetryPolicy(base=0.05, factor=2.0, cap=1.0, jitter=0.2, max_attempts=5, deadline=10.0)


@dataclass
class Action:
    """What a scripted peer does with one request before (or instead of) verifying it."""

    status: int | None = None  # answer this instead of verifying
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # wait this long first
    late: float = 0.0  # verify, then wait this long before answering


class ScriptedPeer:
    def __init__(self) -> None:
        self.verifier = MessageVerifier(FED, [KnownPeer("did:vm:node:east1", EAST.public)])
        self.script: list[Action] = []
        self.arrivals: list[float] = []
        self.accepted: list[int] = []
        self.paths: list[str] = []

    async def __call__(self, scope: dict[str, Any], recv: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            event = await recv()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        self.arrivals.append(time.monotonic())
        self.paths.append(scope["path"])
        action = self.script.pop(0) if self.script else Action()
        if action.delay:
            await asyncio.sleep(action.delay)
        if action.status is not None:
            headers = [(k.lower().encode(), v.encode()) for k, v in action.headers.items()]
            await send({"type": "http.response.start", "status": action.status, "headers": headers})
            await send(
                {
                    "type": "http.response.body",
                    "body": b'{"error":{"code":"scripted","message":"","details":{}}}',
                }
            )
            return
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode()
        received = receive(self.verifier, body, content_type, time.time())
        if received.message is not None:
            self.accepted.append(received.message.seq)
        if action.late:
            await asyncio.sleep(action.late)
        status, reply_headers, reply = federation_answer(received)
        headers = [(k.lower().encode(), v.encode()) for k, v in reply_headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": reply})


class Server:
    def __init__(self, app: ScriptedPeer) -> None:
        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, lifespan="off", ws="none", http="h11", log_level="critical",
                                access_log=False)  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.server.force_exit = True  # do not wait for clients that gave up
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def peers() -> Iterator[list[Server]]:
    servers = [Server(ScriptedPeer()).start() for _ in range(3)]
    yield servers
    for s in servers:
        s.stop()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


_seq = SeqCounter()


def message(key: SigningKey = EAST) -> Message:
    content = HeartbeatContent((LogSummary("east1.example/dao:vaultmesh", 7, ROOT),))
    return Message.sign(key, content, federation_id=FED, seq=_seq.next(time.time()),
                        timestamp=int(time.time()), sender="did:vm:node:east1")  # fmt: skip


def send(url: str, msg: Message | bytes, **kwargs: Any) -> Delivery:
    async def go() -> Delivery:
        async with FederationClient(**kwargs) as client:
            return await client.send(url, msg)

    return asyncio.run(go())


def gaps(arrivals: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(arrivals)]


# --- tests ----------------------------------------------------------------------------------


def test_a_message_is_delivered_and_verified(peers: list[Server]) -> None:
    msg = message()
    d = send(peers[0].url, msg, retry=FAST)
    assert d.delivered and d.status == 202 and d.attempts == 1 and not d.duplicate
    assert peers[0].app.accepted == [msg.seq]
    assert peers[0].app.paths == [PATH]


def test_retries_with_backoff_on_503_then_succeeds(peers: list[Server]) -> None:
    app = peers[0].app
    app.script = [Action(503), Action(503), Action(503)]
    msg = message()
    d = send(peers[0].url, msg, retry=FAST)
    assert d.delivered and d.attempts == 4
    assert app.accepted == [msg.seq]
    # Geometric: at least base * factor**(k-1) * (1 - jitter) before retry k.
    for k, gap in enumerate(gaps(app.arrivals), start=1):
        assert gap >= 0.05 * 2 ** (k - 1) * 0.8 - 0.005, (k, gap)
    assert gaps(app.arrivals)[2] > gaps(app.arrivals)[0]


def test_500_is_retried_but_4xx_is_final(peers: list[Server]) -> None:
    peers[0].app.script = [Action(500)]
    assert send(peers[0].url, message(), retry=FAST).attempts == 2
    stranger = SigningKey(b"\x09" * 32)
    d = send(peers[1].url, message(stranger), retry=FAST)  # east1's name, another key
    assert not d.delivered and d.status == 401 and d.code == "signature_invalid"
    assert d.attempts == 1 and len(peers[1].app.arrivals) == 1
    with pytest.raises(PeerError) as info:
        d.raise_for_failure()
    assert info.value.code == "signature_invalid"


def test_429_retry_after_is_honoured(peers: list[Server]) -> None:
    app = peers[0].app
    app.script = [Action(429, {"Retry-After": "1"})]
    d = send(peers[0].url, message(), retry=FAST)
    assert d.delivered and d.attempts == 2
    assert gaps(app.arrivals)[0] >= 0.99  # not the 0.05 s backoff


def test_429_beyond_the_deadline_gives_up_at_once(peers: list[Server]) -> None:
    peers[0].app.script = [Action(429, {"Retry-After": "3600"})]
    start = time.monotonic()
    d = send(peers[0].url, message(), retry=FAST)
    assert time.monotonic() - start < 2
    assert not d.delivered and d.status == 429 and d.attempts == 1 and d.retry_after == 3600
    with pytest.raises(PushbackError) as info:
        d.raise_for_failure()
    assert info.value.retry_after == 3600


def test_503_with_an_http_date_retry_after(peers: list[Server]) -> None:
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 2))
    peers[0].app.script = [Action(503, {"Retry-After": when})]
    d = send(peers[0].url, message(), retry=FAST)
    assert d.delivered and d.attempts == 2
    assert gaps(peers[0].app.arrivals)[0] >= 0.5


def test_timeouts_are_retried_and_bounded(peers: list[Server]) -> None:
    peers[0].app.script = [Action(503, delay=2.0)] * 3
    start = time.monotonic()
    policy = RetryPolicy(base=0.05, max_attempts=3, deadline=10.0)
    d = send(peers[0].url, message(), retry=policy, timeout=0.3)
    elapsed = time.monotonic() - start
    assert not d.delivered and d.code == "timeout" and d.attempts == 3
    assert elapsed < 3 * 0.3 + 0.5 + 0.5  # three timeouts and two short backoffs


def test_a_timed_out_attempt_that_was_accepted_counts_as_delivered(peers: list[Server]) -> None:
    # The first attempt is verified and accepted after the client gave up; the
    # retry is then refused as replayed, which proves the first one arrived.
    app = peers[0].app
    app.script = [Action(late=0.6)]
    msg = message()
    d = send(peers[0].url, msg, retry=FAST, timeout=0.3)
    assert d.delivered and d.duplicate and d.status == 409 and d.code == "replayed"
    assert d.details["last_seq"] == msg.seq
    assert app.accepted == [msg.seq]
    # Without an ambiguous attempt, 409 is a plain refusal.
    d = send(peers[0].url, msg, retry=FAST)
    assert not d.delivered and d.code == "replayed" and d.attempts == 1


def test_deadline_stops_retries(peers: list[Server]) -> None:
    peers[0].app.script = [Action(503)] * 10
    policy = RetryPolicy(base=0.2, factor=2.0, max_attempts=10, deadline=0.5)
    d = send(peers[0].url, message(), retry=policy)
    # Retries at 0.2 s and then 0.4 s later would start after 0.5 s: two attempts.
    assert not d.delivered and d.status == 503 and d.attempts == 2


def test_broadcast_with_one_peer_down(peers: list[Server]) -> None:
    down = closed_port_url()
    msg = message()
    peers[1].app.script = [Action(503)]

    async def go() -> list[Delivery]:
        async with FederationClient(retry=FAST) as client:
            return await client.broadcast([peers[0].url, down, peers[1].url, peers[2].url], msg)

    start = time.monotonic()
    results = asyncio.run(go())
    assert time.monotonic() - start < 5
    assert [r.endpoint for r in results] == [peers[0].url, down, peers[1].url, peers[2].url]
    assert [r.delivered for r in results] == [True, False, True, True]
    assert results[1].code == "unreachable" and results[1].attempts == FAST.max_attempts
    assert results[2].attempts == 2
    for p in peers:
        assert p.app.accepted == [msg.seq]


def test_broadcast_accepts_peers_with_endpoints(peers: list[Server]) -> None:
    registry = [KnownPeer(f"did:vm:node:p{i}", EAST.public, endpoint=s.url + "/") for i, s in enumerate(peers)]  # fmt: skip

    async def go() -> list[Delivery]:
        async with FederationClient(retry=FAST) as client:
            return await client.broadcast(registry, message())

    assert all(d.delivered for d in asyncio.run(go()))
    assert all(p.app.paths == [PATH] for p in peers)


def test_messages_to_one_peer_arrive_in_seq_order(peers: list[Server]) -> None:
    app = peers[0].app
    app.script = [Action(delay=0.05), Action(503), Action(delay=0.02)]
    msgs = [message() for _ in range(6)]

    async def go() -> list[Delivery]:
        async with FederationClient(retry=FAST) as client:
            return list(await asyncio.gather(*(client.send(peers[0].url, m) for m in msgs)))

    results = asyncio.run(go())
    assert all(d.delivered and not d.duplicate for d in results)
    assert app.accepted == [m.seq for m in msgs]


def test_redirects_are_not_followed(peers: list[Server]) -> None:
    peers[0].app.script = [Action(307, {"Location": peers[1].url + PATH})]
    d = send(peers[0].url, message(), retry=FAST)
    assert not d.delivered and d.status == 307 and d.attempts == 1
    assert peers[1].app.arrivals == []


def test_bad_endpoint_is_reported_not_raised() -> None:
    d = send("ftp://example.invalid", message(), retry=FAST)
    assert not d.delivered and d.code == "bad_endpoint" and d.attempts == 1


def test_receiver_refuses_other_media_types(peers: list[Server]) -> None:
    msg = message()
    r = httpx.post(
        peers[0].url + PATH, content=msg.to_bytes(), headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = httpx.post(peers[0].url + PATH, content=msg.to_bytes(),
                   headers={"Content-Type": "application/json; charset=utf-8"})  # fmt: skip
    assert r.status_code == 202 and r.json() == {"seq": msg.seq}


def test_receiver_statuses_over_http(peers: list[Server]) -> None:
    url = peers[0].url + PATH
    msg = message()
    post = lambda body: httpx.post(url, content=body, headers={"Content-Type": "application/json"})  # noqa: E731
    assert post(b"{}").status_code == 400
    assert post(msg.to_bytes()).status_code == 202
    r = post(msg.to_bytes())
    assert r.status_code == 409 and r.json()["error"]["details"]["last_seq"] == msg.seq
    assert post(b" " * (256 * 1024 + 1)).status_code == 413
    old = Message.sign(EAST, msg.content, federation_id=FED, seq=msg.seq + 1,
                       timestamp=msg.timestamp - 500, sender="did:vm:node:east1")  # fmt: skip
    assert post(old.to_bytes()).status_code == 422


# --- the retry schedule, exactly (an in-process httpx transport, a fake clock) ----------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def scripted(answers: list[Any]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0) if answers else 202
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, tuple):
            return httpx.Response(answer[0], headers=answer[1])
        return httpx.Response(answer, json={"seq": 1})

    return httpx.MockTransport(handler), seen


def run_schedule(answers: list[Any], policy: RetryPolicy, rand: float = 0.5) -> tuple[Delivery, FakeTime, list[httpx.Request]]:  # fmt: skip
    fake = FakeTime()
    transport, seen = scripted(answers)
    d = send("http://peer.example", message(), retry=policy, transport=transport,
             sleep=fake.sleep, clock=fake.clock, rand=lambda: rand)  # fmt: skip
    return d, fake, seen


def test_backoff_is_geometric_capped_and_jittered() -> None:
    policy = RetryPolicy(base=1.0, factor=3.0, cap=10.0, jitter=0.5, max_attempts=6, deadline=1000)
    conn = httpx.ConnectError("refused")
    d, fake, seen = run_schedule([conn, 503, 502, 500, 504], policy, rand=0.5)
    assert d.delivered and d.attempts == 6
    # min(cap, base * factor**(k-1)) * (1 - jitter * rand)
    assert fake.sleeps == pytest.approx([0.75, 2.25, 6.75, 7.5, 7.5])
    assert all(r.headers["content-type"] == "application/json" for r in seen)
    assert all(r.url.path == PATH for r in seen)
    _, fake, _ = run_schedule([503, 503], policy, rand=0.0)
    assert fake.sleeps == [1.0, 3.0]  # no jitter at rand 0: never above the geometric delay


def test_retry_after_raises_the_delay_but_backoff_still_applies() -> None:
    policy = RetryPolicy(base=4.0, factor=2.0, jitter=0.0, deadline=1000)
    d, fake, _ = run_schedule([(429, {"Retry-After": "1"}), (429, {"Retry-After": "30"})], policy)
    assert d.delivered and fake.sleeps == [4.0, 30.0]


def test_attempts_and_deadline_bound_the_retries() -> None:
    policy = RetryPolicy(base=1.0, factor=2.0, jitter=0.0, max_attempts=4, deadline=1000)
    d, fake, seen = run_schedule([503] * 10, policy)
    assert not d.delivered and d.attempts == 4 and len(seen) == 4 and fake.sleeps == [1, 2, 4]
    policy = RetryPolicy(base=1.0, factor=2.0, jitter=0.0, max_attempts=10, deadline=6.5)
    d, fake, _ = run_schedule([503] * 10, policy)
    assert d.attempts == 3 and fake.sleeps == [1, 2]  # a third wait of 4 s would end at 7 s


@pytest.mark.parametrize(
    ("error", "code", "retried"),
    [
        (httpx.ConnectError("refused"), "unreachable", True),
        (httpx.ConnectTimeout("slow"), "timeout", True),
        (httpx.ReadTimeout("slow"), "timeout", True),
        (httpx.RemoteProtocolError("reset"), "unreachable", True),
        (httpx.UnsupportedProtocol("gopher"), "bad_endpoint", False),
    ],
)
def test_transport_errors(error: Exception, code: str, retried: bool) -> None:
    policy = RetryPolicy(base=0.1, jitter=0.0, max_attempts=3, deadline=1000)
    d, _, seen = run_schedule([error] * 3, policy)
    assert not d.delivered and d.code == code and d.status is None
    assert len(seen) == (3 if retried else 1)


def test_409_after_a_connect_error_is_not_taken_for_a_delivery() -> None:
    # A refused connection never reached the receiver: the later 409 is a real refusal.
    policy = RetryPolicy(base=0.1, jitter=0.0, deadline=1000)
    d, _, _ = run_schedule([httpx.ConnectError("refused"), 409], policy)
    assert not d.delivered and d.status == 409
    d, _, _ = run_schedule([httpx.ReadTimeout("lost"), (409, {})], policy)
    assert not d.delivered  # a 409 without our error code proves nothing


def test_retry_policy_is_checked() -> None:
    for bad in ({"factor": 0.5}, {"jitter": 2}, {"max_attempts": 0}, {"base": -1}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)

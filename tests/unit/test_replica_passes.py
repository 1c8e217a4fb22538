"""How long one anti-entropy sync pass may take, and whom a round asks (issue 16).

A pass fetches its candidates' checkpoints at once, so unreachable sources
cost one fetch deadline, not one each; a heartbeat from the host restarts a
pass that still waits on unreachable sources; a mirror that refused is not
asked again for a while; a round asks a few peers in rotation, not all.
Everything runs in virtual time (:func:`run_virtual`), so the durations
asserted are exact and cost no wall-clock time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx

from remembrancer.anchoring.base import RailRegistry
from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import format_vkey
from remembrancer.federation.antientropy.model import ReplicaSpec
from remembrancer.federation.antientropy.replicator import Replicator
from remembrancer.federation.protocol.contents import HeartbeatContent, LogSummary
from remembrancer.federation.registry.model import Peer
from remembrancer.storage.memory import MemoryStore
from remembrancer.testing.peerview import NoInbox, RecordingPeers, StaticRegistry
from remembrancer.testing.simulation.clock import run_virtual

T = TypeVar("T")

ORIGIN = "host.test/dao:vaultmesh"
NAMES = ("self", "host", "m1", "m2", "m3", "m4", "m5")
KEYS = {name: SigningKey.generate(name.encode().ljust(32, b"\0")) for name in NAMES}
DID = {name: k.did for name, k in KEYS.items()}
DEADLINE = 5.0
ROOT = bytes(range(32))
NOTE = sign_checkpoint(Checkpoint(ORIGIN, 16, ROOT), KEYS["host"])
CLAIM = LogSummary(ORIGIN, 16, "sha256:" + ROOT.hex())


class Net(httpx.AsyncBaseTransport):
    """Hosts in ``down`` never answer (a partition); the host serves its
    checkpoint; the other peers have no mirror of the log (404)."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.asked: list[tuple[float, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host.removesuffix(".test")
        self.asked.append((asyncio.get_running_loop().time(), host))
        if host in self.down:
            await asyncio.sleep(3600)
        await asyncio.sleep(0.05)
        if host == "host" and request.url.path.endswith("/checkpoint"):
            return httpx.Response(200, content=NOTE, request=request)
        return httpx.Response(404, json={"error": {"code": "not_found"}}, request=request)


def _replicator(net: Net, **kwargs: Any) -> tuple[Replicator, RecordingPeers]:
    peers = {DID[n]: Peer(DID[n], f"http://{n}.test:8080", k.public, "active",
                          frozenset({"witness"})) for n, k in KEYS.items()}  # fmt: skip
    view = RecordingPeers(StaticRegistry(peers), DID["self"])
    loop = asyncio.get_running_loop()
    spec = ReplicaSpec(ORIGIN, (format_vkey(ORIGIN, KEYS["host"].public),))
    rep = Replicator(NoInbox(), view, None, None, None, MemoryStore(), [spec],  # type: ignore[arg-type]
                     RailRegistry(), clock=lambda: 1000.0 + loop.time(), interval=5.0,
                     fetch_deadline=DEADLINE, transport=net, **kwargs)  # fmt: skip
    return rep, view


def _run(body: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return run_virtual(body())


def _beat() -> HeartbeatContent:
    return HeartbeatContent(logs=(CLAIM,))


def test_a_pass_costs_one_fetch_deadline_however_many_sources_are_unreachable() -> None:
    async def body() -> tuple[float, int]:
        net = Net()
        net.down = {"host", "m1", "m2", "m3", "m4", "m5"}
        rep, _ = _replicator(net)
        await rep._on_heartbeat(DID["host"], _beat(), b"")
        loop = asyncio.get_running_loop()
        start = loop.time()
        await rep._syncing[ORIGIN]
        took = loop.time() - start
        await rep.stop()
        return took, len(net.asked)

    took, asked = _run(body)
    # The host (one deadline), then the five mirrors at once (one more): asked
    # one after the other, they would take 6 deadlines.
    assert took < 2 * DEADLINE + 1
    assert asked == 6


def test_a_heartbeat_from_the_host_restarts_a_pass_waiting_on_unreachable_sources() -> None:
    async def body() -> tuple[float, int | None]:
        net = Net()
        net.down = {"host"}
        rep, _ = _replicator(net)
        loop = asyncio.get_running_loop()
        await rep._on_heartbeat(DID["host"], _beat(), b"")  # a probe that will hang
        await asyncio.sleep(1.0)
        net.down.clear()  # the partition heals; the host's next heartbeat arrives
        await rep._on_heartbeat(DID["host"], _beat(), b"")
        await rep._syncing[ORIGIN]
        done = loop.time()
        head = rep.engine.head(ORIGIN)
        await rep.stop()
        return done, head.size if head else None

    done, size = _run(body)
    assert size == 16
    assert done < DEADLINE  # not after the hanging probe's deadline


def test_a_mirror_that_refused_is_not_asked_again_at_once() -> None:
    async def body() -> list[str]:
        net = Net()
        net.down = {"host"}
        rep, _ = _replicator(net)
        await rep._on_heartbeat(DID["host"], _beat(), b"")
        await rep._syncing[ORIGIN]
        first = len(net.asked)
        rep._kick(ORIGIN)
        await rep._syncing[ORIGIN]
        await rep.stop()
        return [h for _, h in net.asked[first:]]

    # The second pass asks the host again (hosts are always asked), and the
    # mirrors neither: they answered 404, and the host is faulty (stalled).
    assert _run(body) == ["host"]


def test_a_stall_is_forgiven_when_the_peer_is_heard_again_bad_data_is_not() -> None:
    async def body() -> tuple[bool, bool]:
        rep, _ = _replicator(Net())
        now = rep.clock()
        await rep._fault(DID["m1"], stalled=True)
        await rep._fault(DID["m2"], stalled=False)
        for did in (DID["m1"], DID["m2"]):  # heard before, then away for 10 heartbeats
            rep._last_beat[did] = now - 10 * rep.heartbeat_seconds
            await rep._on_heartbeat(did, HeartbeatContent(), b"")
        await rep.stop()
        return rep._faulty(DID["m1"], rep.clock()), rep._faulty(DID["m2"], rep.clock())

    assert _run(body) == (False, True)


def test_a_round_asks_a_few_peers_in_rotation_and_every_one_back_from_away() -> None:
    async def body() -> tuple[list[list[str]], list[str]]:
        rep, _ = _replicator(Net(), exchange_fanout=2)
        rounds = []
        for r in range(3):
            rep.rounds = r
            rounds.append([p.did for p in rep._exchange_peers()])
        rep._owed.add(DID["m5"])
        rep.rounds = 0
        owed = [p.did for p in rep._exchange_peers()]
        await rep.stop()
        return rounds, owed

    rounds, owed = _run(body)
    others = {DID[n] for n in NAMES if n != "self"}
    assert all(len(r) == 2 for r in rounds)
    assert {d for r in rounds for d in r} == others  # every peer within 6 / 2 rounds
    assert DID["m5"] in owed and len(owed) == (2 if DID["m5"] in rounds[0] else 3)

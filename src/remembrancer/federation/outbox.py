"""Sending federation messages as this node: signing with one persisted counter, and delivery.

Every message this node sends is signed here, under the DID the registry
lists for it, with a ``seq`` from one :class:`~remembrancer.federation.protocol.wire.SeqCounter`
that is written to the store before the message leaves, so a restart
never reuses a seq (peers would refuse it as replayed).  Two clients, each
with its own timeouts and retry budget: ``client`` for what must arrive,
``beats`` for heartbeats (never retried: a late heartbeat is worthless, and
a dead peer must not hold up the loop that notices it is dead).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Final

from remembrancer.core.keys import SigningKey
from remembrancer.federation.peers import SCORES_SCOPE, PeerDirectory
from remembrancer.federation.protocol.wire import Message, SeqCounter
from remembrancer.federation.transport import Delivery, FederationClient, RetryPolicy
from remembrancer.storage.base import Store

__all__ = ["SEQ_KEY", "Outbox"]

SEQ_KEY: Final = "own-seq"
"""The last seq this node signed, in :data:`~remembrancer.federation.peers.SCORES_SCOPE`."""


class Outbox:
    """Signs messages as this node and sends them to peers (objects with ``endpoint``)."""

    def __init__(
        self,
        key: SigningKey,
        peers: PeerDirectory,
        store: Store,
        *,
        clock: Callable[[], float],
        heartbeat_seconds: float,
    ) -> None:
        self.key = key
        self.peers = peers
        self.store = store
        self.clock = clock
        self.seq = SeqCounter(int(store.get_state(SCORES_SCOPE, SEQ_KEY) or 0))
        self.client = FederationClient(
            timeout=5.0, retry=RetryPolicy(max_attempts=4, deadline=15.0)
        )
        beat = max(0.2, heartbeat_seconds)
        self.beats = FederationClient(timeout=beat * 2, connect_timeout=beat,
                                      retry=RetryPolicy(max_attempts=1, deadline=beat * 2))  # fmt: skip

    def sign(self, content: Any) -> Message:
        """A message of ``content`` from this node, with the next seq (persisted first)."""
        now = self.clock()
        msg = Message.sign(self.key, content, federation_id=self.peers.registry.federation_id,
                           seq=self.seq.next(now), timestamp=int(now),
                           sender=self.peers.self_did)  # fmt: skip
        self.store.put_state(SCORES_SCOPE, SEQ_KEY, str(self.seq.last).encode())
        return msg

    async def deliver(
        self,
        peers: Sequence[Any],
        content: Any,
        *,
        attempts: int = 3,
        client: FederationClient | None = None,
    ) -> list[Delivery]:
        """Sign ``content`` and send it to every peer, with ``client`` (default: ``self.client``).

        A message signed earlier than one that reached a peer first (two tasks
        racing, or the heartbeat client) is refused there as ``replayed``: it
        was never accepted, so it is signed again with a new seq and resent to
        that peer, up to ``attempts`` times in all."""
        client = client or self.client
        targets = list(peers)
        out: dict[int, Delivery] = {}
        for _ in range(attempts):
            if not targets:
                break
            msg = await asyncio.to_thread(self.sign, content)
            results = await client.broadcast(targets, msg)
            again = []
            for peer, d in zip(targets, results, strict=True):
                out[id(peer)] = d
                if not d.delivered and d.code == "replayed":
                    again.append(peer)
            targets = again
        return [out[id(p)] for p in peers]

    async def gossip(self, peers: Sequence[Any], content: Any) -> None:
        """Sign ``content`` once and send it to every peer (no resend on ``replayed``)."""
        msg = await asyncio.to_thread(self.sign, content)
        await self.client.broadcast(peers, msg)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.beats.aclose()

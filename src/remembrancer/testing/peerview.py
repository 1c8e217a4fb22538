"""Stand-ins for the federation ports a replicator is built on
(:mod:`remembrancer.federation.ports`), for tests that drive a real
:class:`~remembrancer.federation.antientropy.replicator.Replicator` without a
federation service: a fixed registry, a peer view that records every score,
and an inbox that takes no handlers; and the peer view over a real registry
that collaborative anchoring's tests use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from remembrancer.federation.registry.model import Peer, Registry


@dataclass
class StaticRegistry:
    """A registry of fixed peers, by DID."""

    peers: dict[str, Peer]

    def get(self, did: str) -> Peer | None:
        return self.peers.get(did)


@dataclass
class RecordingPeers:
    """The peer view: every registry peer listed; each score kept in ``scored``
    as ``(peer, event, reason)``."""

    registry: StaticRegistry
    self_did: str
    scored: list[tuple[str, str, str]] = field(default_factory=list)

    def listed(self) -> tuple[Peer, ...]:
        return tuple(self.registry.peers.values())

    async def score(self, peer: str, event: str, reason: str = "") -> None:
        self.scored.append((peer, event, reason))


@dataclass
class RegistryPeers:
    """The peer view collaborative anchoring uses, over a real
    :class:`~remembrancer.federation.registry.model.Registry`: every peer
    effective and listed as registered, every peer in the coordinators'
    rotation from the first epoch (as bootstrap peers are), each score kept
    in ``scored`` as ``(peer, event, reason)``."""

    registry: Registry
    self_did: str
    heads: dict[str, Any] = field(default_factory=dict)
    scored: list[tuple[str, str, str]] = field(default_factory=list)

    def effective(self) -> tuple[Peer, ...]:
        return self.registry.peers

    def listed(self) -> tuple[Peer, ...]:
        return self.registry.peers

    async def score(self, peer: str, event: str, reason: str = "") -> None:
        self.scored.append((peer, event, reason))

    def coordinates(self, did: str, target: str, epoch: int) -> bool:
        return True


class NoInbox:
    """An inbox that ignores handlers and extensions (no messages arrive)."""

    def add_handler(self, *args: Any) -> None:
        return None

    def add_extension(self, *args: Any) -> None:
        return None


__all__ = ["NoInbox", "RecordingPeers", "RegistryPeers", "StaticRegistry"]

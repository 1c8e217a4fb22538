"""Each simulated node's log, the HTTP glue of its witness server, and what the scenarios read of its anti-entropy.

:class:`SimLog` is an in-memory RFC 6962 tree with checkpoints signed by
the node key, offering what the federation service, the witnessing client
and the replicator (hash tiles) read of the real sequencer.
:class:`ReplicaView` reads the real replicator's verified heads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.errors import RemembrancerError
from remembrancer.core.keys import SigningKey
from remembrancer.core.rfc6962 import (
    CompactRange,
    NodeId,
    consistency_proof,
    hash_leaf,
)
from remembrancer.core.tiles import Tile
from remembrancer.core.witness import (
    WitnessRefusal,
)
from remembrancer.federation.antientropy.model import ReplicaHead
from remembrancer.federation.antientropy.replicator import Replicator
from remembrancer.federation.witness_server import WitnessServer
from remembrancer.node.statuses import WITNESS_STATUS
from remembrancer.storage.base import LogState
from remembrancer.testing.simulation.network import Served

if TYPE_CHECKING:
    from remembrancer.testing.simulation.federation import SimNode

__all__ = ["ReplicaView", "SimLog"]


class _Namespaces:
    def __init__(self, names: Mapping[str, Any]) -> None:
        self._names = dict(names)

    def current(self) -> Mapping[str, Any]:
        return self._names


class SimLog:
    """One node's log of one namespace, in memory: an RFC 6962 tree whose
    checkpoints are signed with the node key under the origin.

    It offers what the federation service and the witnessing client read of
    the real sequencer: ``namespaces.current()``, ``head``, ``origin``,
    ``proof_consistency`` and ``attach_cosignatures``.
    """

    def __init__(self, namespace: str, origin: str, key: SigningKey) -> None:
        self.namespace = namespace
        self._origin = origin
        self._key = key
        self.namespaces = _Namespaces({namespace: None})
        self._range = CompactRange()
        self._nodes: dict[NodeId, bytes] = {}
        self._head: LogState | None = None
        self.cosigned: dict[int, bytes] = {}  # size -> checkpoint with the attached cosignatures
        self.first_attached: dict[int, float] = {}  # size -> virtual time of the first attach

    def append(self, count: int) -> LogState:
        """Append ``count`` entries and sign a checkpoint of the new size."""
        for _ in range(count):
            entry = f"{self._origin} entry {self._range.size}".encode()
            for level, index, h in self._range.append(hash_leaf(entry)):
                self._nodes[(level, index)] = h
        cp = Checkpoint(self._origin, self._range.size, self._range.root())
        self._head = LogState(self.namespace, cp.size, cp.root_hash, sign_checkpoint(cp, self._key))
        return self._head

    def read_nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        return [self._nodes[i] for i in ids]

    def tile(self, tile: Tile) -> bytes:
        """A hash tile of the current tree (``tile/<L>/<N>[.p/<W>]``)."""
        level, first = 8 * tile.level, tile.index * 256
        return b"".join(self._nodes[(level, first + i)] for i in range(tile.width))

    def head(self, namespace: str) -> LogState | None:
        return self._head if namespace == self.namespace else None

    def origin(self, namespace: str) -> str:
        return self._origin

    def proof_consistency(self, namespace: str, old: int, new: int) -> list[bytes]:
        return consistency_proof(old, new, self)

    def attach_cosignatures(self, namespace: str, size: int, note: bytes) -> bool:
        if self._head is None or size != self._head.size:
            return False
        self.cosigned[size] = note
        self.first_attached.setdefault(size, asyncio.get_running_loop().time())
        return True


class SimWitness:
    """The HTTP side of ``POST /witness/add-checkpoint`` in the simulation: the
    real :class:`~remembrancer.federation.witness_server.WitnessServer` (state
    in the node's store, compare-and-swap on size) and the node route's
    mapping of its refusals to the spec's status codes (``text/x.tlog.size``
    on 409)."""

    def __init__(self, server: WitnessServer) -> None:
        self.server = server
        self.name = server.name

    def add_checkpoint(self, body: bytes) -> Served:
        try:
            line = self.server.add_checkpoint(body)
        except WitnessRefusal as e:
            if e.code == "witness_old_size_mismatch":
                size = f"{e.details['size']}\n".encode()
                return Served(409, "text/x.tlog.size", size, e.code)
            status = WITNESS_STATUS.get(e.code, 400)
            return Served(status, "application/json", _error(e), e.code)
        return Served(200, "text/plain; charset=utf-8", line)


def _error(e: RemembrancerError) -> bytes:
    return json.dumps({"error": e.to_dict()}, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Held:
    size: int
    root: bytes


class CountingTransport(httpx.AsyncBaseTransport):
    """The simulated network, counting round trips and the ones that failed
    (transport errors, or any answer but 200)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.fetches = 0
        self.failed = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.HTTPError:
            self.failed += 1
            raise
        if response.status_code != 200:
            self.failed += 1
        return response


class ReplicaView:
    """The real anti-entropy of one node (:class:`~remembrancer.federation.antientropy.
    replicator.Replicator`, DESIGN.md 3.10) on the simulated network, and what the
    partition scenario reads of it: which ``(size, root)`` the node holds of each
    log (its own log's from :meth:`hold`, the others' from the replicator's
    verified heads), the tile fetches and how many failed.

    The replicator syncs a log when a heartbeat reports a newer state than the
    head it holds: it fetches the host's checkpoint and the hash tiles of the
    consistency proof, then verifies (fetch first, compute after); its rounds
    retry what failed and ask a few peers in turn for anchors and receipts."""

    def __init__(self, node: SimNode, replicator: Replicator, transport: CountingTransport,
                 on_update: Callable[[SimNode, str], None]) -> None:  # fmt: skip
        self.node = node
        self.replicator = replicator
        self._transport = transport
        self._own: dict[str, Held] = {}
        self._on_update = on_update
        replicator.engine.on_head = self._on_head

    @property
    def held(self) -> dict[str, Held]:
        out = {o: Held(h.size, h.root) for o in self.replicator.engine.specs
               if (h := self.replicator.engine.head(o)) is not None}  # fmt: skip
        out.update(self._own)
        return out

    @property
    def fetches(self) -> int:
        return self._transport.fetches

    @property
    def failed(self) -> int:
        return self._transport.failed

    def hold(self, origin: str, size: int, root: bytes) -> None:
        """The node's own log moved to ``(size, root)``."""
        self._own[origin] = Held(size, root)
        self._on_update(self.node, origin)

    def _on_head(self, origin: str, head: ReplicaHead) -> None:
        self._on_update(self.node, origin)

"""Each simulated node's log, the HTTP glue of its witness server and the model of anti-entropy of log heads.

:class:`SimLog` is an in-memory RFC 6962 tree with checkpoints signed by
the node key, offering what the federation service and the witnessing
client read of the real sequencer.  :class:`AntiEntropy` accepts a newer log
state only when the log's signature and a consistency proof verify.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from remembrancer.core.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from remembrancer.core.errors import RemembrancerError
from remembrancer.core.keys import SigningKey
from remembrancer.core.rfc6962 import (
    CompactRange,
    NodeId,
    consistency_proof,
    hash_leaf,
    verify_consistency,
)
from remembrancer.core.witness import WitnessRefusal
from remembrancer.federation.protocol.contents import HeartbeatContent
from remembrancer.federation.witness_server import WitnessServer
from remembrancer.node.statuses import WITNESS_STATUS
from remembrancer.storage.base import LogState
from remembrancer.testing.simulation.network import Served

if TYPE_CHECKING:
    from remembrancer.testing.simulation.federation import SimNode

__all__ = ["AntiEntropy", "SimLog"]


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


class AntiEntropy:
    """Heartbeat-driven anti-entropy for one node (DESIGN.md 3.10).

    Registered with :meth:`FederationService.add_handler` for heartbeats: for
    each ``{origin, size, root}`` a peer reports that is newer than what this
    node holds, it fetches the log's checkpoint (``GET /logs/<ns>/checkpoint``)
    and, if it held an older state, a consistency proof
    (``GET /v1/namespaces/<ns>/proofs/consistency``) from that peer; it keeps
    the new state only if the log's signature and the proof verify.  One fetch
    per origin at a time; a failed fetch is retried at the next heartbeat.
    """

    def __init__(self, node: SimNode, on_update: Callable[[SimNode, str], None]) -> None:
        self.node = node
        self.held: dict[str, Held] = {}
        self.fetches = 0  # round trips
        self.failed = 0  # fetches that failed (transport) or did not verify
        self._busy: set[str] = set()
        self._on_update = on_update

    def hold(self, origin: str, size: int, root: bytes) -> None:
        self.held[origin] = Held(size, root)
        self._on_update(self.node, origin)

    async def on_heartbeat(self, sender: str, content: Any, raw: bytes) -> None:
        if not isinstance(content, HeartbeatContent):
            return
        peer = self.node.sim.by_did.get(sender)
        if peer is None:
            return
        for summary in content.logs:
            held = self.held.get(summary.origin)
            if summary.origin in self._busy or (held is not None and held.size >= summary.size):
                continue
            if summary.origin != peer.origin or summary.origin not in self.node.log_verifiers:
                continue  # fetched from its host only; a node that follows no log fetches nothing
            self._busy.add(summary.origin)
            self.node.loop.create_task(self._fetch(peer, summary.origin))

    async def _fetch(self, peer: SimNode, origin: str) -> None:
        try:
            self.fetches += 1
            base = f"{peer.endpoint}/logs/{peer.namespace}/checkpoint"
            answer = await self.node.http.get(base)
            if answer.status_code != 200:
                return
            verifier = self.node.log_verifiers[origin][0]
            cp = open_checkpoint(answer.content, verifier).checkpoint
            held = self.held.get(origin)
            if held is not None and cp.size <= held.size:
                return
            if held is not None and held.size > 0:
                self.fetches += 1
                answer = await self.node.http.get(
                    f"{peer.endpoint}/v1/namespaces/{peer.namespace}/proofs/consistency",
                    params={"old": held.size, "new": cp.size},
                )
                if answer.status_code != 200:
                    return
                proof = [base64.b64decode(h) for h in answer.json()["proof"]]
                verify_consistency(held.size, cp.size, held.root, cp.root_hash, proof)
                if self.held.get(origin) != held:  # another fetch got there first
                    return
            self.hold(origin, cp.size, cp.root_hash)
        except (httpx.HTTPError, RemembrancerError, ValueError, KeyError):
            self.failed += 1
        finally:
            self._busy.discard(origin)

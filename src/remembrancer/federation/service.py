"""One node's part in the federation: the message endpoint, heartbeats, and its parts wired together.

- Messages arrive at ``POST /federation/v1/messages`` and are checked by the
  protocol's :class:`~remembrancer.federation.protocol.verify.MessageVerifier`
  (registry keys, replay state kept in the store, skew window, roles, rate),
  then dispatched: heartbeats here, anchor claims and countersignatures to
  :class:`~remembrancer.federation.countersigning.Countersigning`, evidence
  to :class:`~remembrancer.federation.misbehaviour.Misbehaviour`, receipts
  through the relay filter into the store, and every accepted message to
  the handlers extensions registered (:class:`~remembrancer.federation.ports.Inbox`).
- Heartbeats carry each peer's log heads; liveness and message validity move
  the peer scores (``docs/federation-scoring.md``,
  :class:`~remembrancer.federation.peers.PeerDirectory`), and the effective
  statuses feed back into the verifier.
- Registry changes are :class:`~remembrancer.federation.changes.RegistryChanges`.

Extensions get the parts they use (``peers``, ``outbox``,
``misbehaviour``, ``countersigning`` and this service as their inbox),
typed by the narrow interfaces of :mod:`remembrancer.federation.ports`,
never the service as a whole.  The methods here that delegate to a part are
the node's federation API (its HTTP routes and the explorer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from remembrancer.anchoring.base import RailRegistry
from remembrancer.core.aggregation import EpochClock
from remembrancer.core.anchor import Anchor
from remembrancer.core.errors import RemembrancerError
from remembrancer.core.histogram import LatencyHistogram
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import NoteVerifier
from remembrancer.federation.changes import RegistryChanges, load_registry_state
from remembrancer.federation.countersigning import Countersigning
from remembrancer.federation.evidence.equivocation import EquivocationEvidence
from remembrancer.federation.metrics import FederationMetrics
from remembrancer.federation.misbehaviour import DroppedItems, Misbehaviour
from remembrancer.federation.outbox import Outbox
from remembrancer.federation.peers import PeerDirectory
from remembrancer.federation.ports import Extension, Handler
from remembrancer.federation.protocol.contents import (
    AnchorContent,
    CountersignContent,
    EvidenceContent,
    HeartbeatContent,
    LogSummary,
    ReceiptContent,
)
from remembrancer.federation.protocol.verify import MessageVerifier, ReplayWindow
from remembrancer.federation.protocol.wire import Message
from remembrancer.federation.receipts import TYPE as RECEIPT_TYPE
from remembrancer.federation.receipts import FederationReceipt
from remembrancer.federation.registry.model import Peer, Registry
from remembrancer.federation.registry.scoring import PeerScores
from remembrancer.federation.transport import Received, receive
from remembrancer.storage.base import Store

__all__ = ["SEQ_SCOPE", "FederationService", "StoreReplayState"]

log = logging.getLogger("remembrancer.federation")
SEQ_SCOPE: Final = "federation-seq"
"""Store state scope of the replay windows: sender DID -> :class:`ReplayWindow`."""


class StoreReplayState:
    """Per-sender replay windows, durable in the store (compare-and-swap)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _window(self, sender: str) -> ReplayWindow:
        return ReplayWindow.from_bytes(self.store.get_state(SEQ_SCOPE, sender))

    def last_seq(self, sender: str) -> int:
        return self._window(sender).last

    def seen(self, sender: str, seq: int) -> bool:
        return self._window(sender).seen(seq)

    def advance(self, sender: str, seq: int) -> bool:
        for _ in range(8):
            raw = self.store.get_state(SEQ_SCOPE, sender)
            window = ReplayWindow.from_bytes(raw)
            if window.seen(seq):
                return False
            if self.store.put_state(SEQ_SCOPE, sender, window.accepted(seq).to_bytes(), expect=raw):
                return True
        return False


class FederationService:
    """The federation endpoint of one node, and the owner of its federation parts."""

    def __init__(
        self,
        registry: Registry,
        self_did: str,
        node_key: SigningKey,
        store: Store,
        logs: Any,  # the sequencer: head(), origin(), namespaces
        rails: RailRegistry,
        log_verifiers: Mapping[str, Sequence[NoteVerifier]],  # origin -> keys of logs we know
        *,
        clock: Callable[[], float] = time.time,
        heartbeat_seconds: float = 2.0,
        metrics_registry: Any = None,
    ) -> None:
        self.self_did = self_did
        self.key = node_key
        self.store = store
        self.logs = logs
        self.rails = rails
        self.log_verifiers = dict(log_verifiers)
        self.clock = clock
        self.heartbeat_seconds = heartbeat_seconds
        state, records = load_registry_state(store, registry, int(clock()))
        self.peers = PeerDirectory(state.registry, self_did, store, clock=clock,
                                   heartbeat_seconds=heartbeat_seconds)  # fmt: skip
        self.verifier = MessageVerifier(
            state.registry.federation_id, self.peers.effective(), replay=StoreReplayState(store)
        )
        self.peers.on_change = self.verifier.set_peers
        self.outbox = Outbox(node_key, self.peers, store, clock=clock,
                             heartbeat_seconds=heartbeat_seconds)  # fmt: skip
        self.dropped_items = DroppedItems(metrics_registry)
        self.metrics = FederationMetrics(metrics_registry, self)
        self.misbehaviour = Misbehaviour(self.peers, self.outbox, node_key, store, rails,
                                         self.log_verifiers, self.dropped_items, clock=clock)  # fmt: skip
        self.countersigning = Countersigning(
            self.peers, self.outbox, self.misbehaviour, self.dropped_items, node_key, store, logs,
            rails, self.log_verifiers, clock=clock, metrics=self.metrics,
        )  # fmt: skip
        self.changes = RegistryChanges(self.peers, state, records, node_key, store, clock=clock)
        self._task: asyncio.Task[None] | None = None
        # Extensions (collaborative anchoring, anti-entropy, cross-namespace
        # messages) register here: handlers[content class] are awaited with
        # (sender DID, content, raw wire bytes) after acceptance, in
        # registration order; a RemembrancerError they raise counts against
        # the sender like the built-in handlers' errors.
        self.handlers: dict[type, list[Handler]] = {}
        self._extensions: list[Extension] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.verifier.on_suspended = self._suspended_heartbeat

    # --- the inbox (ports.Inbox) ---------------------------------------------------
    def add_handler(self, content_type: type, handler: Handler) -> None:
        """Call ``handler(sender, content, raw)`` for every accepted message of that type."""
        self.handlers.setdefault(content_type, []).append(handler)

    def add_extension(self, extension: Extension) -> None:
        """Start and stop ``extension`` (async ``start()``/``stop()``) with the service."""
        self._extensions.append(extension)

    # --- the parts' state, as the node and its tests read it ---------------------------
    @property
    def registry(self) -> Registry:
        """The registry in force."""
        return self.peers.registry

    @property
    def scores(self) -> PeerScores:
        return self.peers.scores

    @property
    def heads(self) -> dict[str, dict[str, Any]]:
        return self.peers.heads

    @property
    def dropped(self) -> Any:
        """Dropped items of accepted messages: (item, code) -> count."""
        return self.dropped_items.counts

    @property
    def evidence_store(self) -> Any:
        return self.misbehaviour.evidence_store

    @property
    def claim_refusals(self) -> deque[dict[str, Any]]:
        return self.countersigning.claim_refusals

    @property
    def latencies(self) -> LatencyHistogram:
        return self.countersigning.latencies

    def pending_receipts(self) -> int:
        """Federation receipts proposed here and waiting for countersignatures."""
        return self.countersigning.pending()

    # --- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.get_running_loop().create_task(
            self._heartbeats(), name="federation-heartbeats"
        )
        for ext in self._extensions:
            asyncio.get_running_loop().create_task(ext.start())

    async def stop(self) -> None:
        for ext in reversed(self._extensions):
            try:
                await ext.stop()
            except Exception:
                log.exception("stopping %s failed", type(ext).__name__)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.outbox.aclose()

    # --- heartbeats --------------------------------------------------------------
    async def _heartbeats(self) -> None:
        while True:
            try:
                asyncio.get_running_loop().create_task(self.send_heartbeat())
                now = int(self.clock())
                changed = False
                for p in self.peers.effective():
                    if p.did == self.self_did:
                        continue
                    seen = self.peers.heads.get(p.did, {}).get("at_precise", 0.0)
                    if seen and self.clock() - seen > 3 * self.heartbeat_seconds:
                        changed |= self.peers.scores.on_missed(p.did, now) is not None
                if changed:
                    await self.peers.save()
            except Exception:
                log.exception("heartbeat round failed")
            await asyncio.sleep(self.heartbeat_seconds)

    async def send_heartbeat(self) -> None:
        summaries = []
        for ns in sorted(self.logs.namespaces.current()):
            head = self.logs.head(ns)
            if head is not None:
                summaries.append(
                    LogSummary(self.logs.origin(ns), head.size, "sha256:" + head.root_hash.hex())
                )
        epoch = EpochClock(self.registry.anchor_epoch_seconds).epoch(self.clock())
        rails = await asyncio.to_thread(
            self.peers.announce_rails, sorted(self.rails.targets()), epoch
        )
        content = HeartbeatContent(tuple(summaries), self.registry.digest(),
                                   tuple(sorted((rails or {}).items())))  # fmt: skip
        msg = await asyncio.to_thread(self.outbox.sign, content)
        await self.outbox.beats.broadcast(self._heartbeat_targets(), msg)

    def _heartbeat_targets(self) -> list[Peer]:
        """Every peer the registry has not suspended, whatever our scores say:
        two sides of a long partition put each other on probation, and if
        heartbeats went only to active peers they would never hear from each
        other again after it heals."""
        return [p for p in self.registry.peers
                if p.did != self.self_did and p.status != "suspended"]  # fmt: skip

    def _suspended_heartbeat(self, msg: Message) -> None:
        """The verifier refused an authentic message from a peer that is
        suspended (worker thread).  A heartbeat from a peer suspended only by
        its score still counts for liveness (docs/federation-scoring.md), so
        a peer that was merely offline recovers without help."""
        if msg.type != "heartbeat" or self._loop is None:
            return
        listed = self.registry.get(msg.sender)
        if listed is None or listed.status == "suspended":
            return
        self._loop.call_soon_threadsafe(self._count_heartbeat, msg.sender)

    def _count_heartbeat(self, sender: str) -> None:
        now = int(self.clock())
        heads = self.peers.heads
        heads.setdefault(sender, {"logs": {}})
        heads[sender].update({"at": now, "at_precise": self.clock()})
        if self.peers.scores.on_heartbeat(sender, now) is not None and self._loop is not None:
            self._loop.create_task(self.peers.save())

    # --- receiving ---------------------------------------------------------------
    async def handle(self, body: bytes, content_type: str | None) -> Received:
        reply = await asyncio.to_thread(receive, self.verifier, body, content_type, self.clock())
        msg = reply.message
        if msg is None:
            return reply
        now = int(self.clock())
        sender = msg.sender
        try:
            content = msg.content
            if isinstance(content, HeartbeatContent):
                self.peers.heads[sender] = {
                    "at": now,
                    "at_precise": self.clock(),
                    "logs": {s.origin: (s.size, s.root) for s in content.logs},
                }
                if self.peers.scores.on_heartbeat(sender, now) is not None:
                    await self.peers.save()
                if content.rails and self.peers.note_rails(sender, dict(content.rails)):
                    await asyncio.to_thread(self.peers.save_rails)
                if content.registry is not None and content.registry != self.registry.digest():
                    self.changes.catch_up_from(sender)
            elif isinstance(content, AnchorContent):
                asyncio.get_running_loop().create_task(
                    self.countersigning.countersign(sender, content, msg.raw)
                )
            elif isinstance(content, CountersignContent):
                self.countersigning.collect(sender, content)
            elif isinstance(content, EvidenceContent):
                await self.misbehaviour.on_evidence(sender, content)
            elif (
                isinstance(content, ReceiptContent) and content.receipt.get("type") == RECEIPT_TYPE
            ):
                receipt = self.countersigning.checked_receipt(
                    FederationReceipt.from_dict(content.receipt)
                )
                await asyncio.to_thread(self.countersigning.keep_receipt, receipt)
            for handler in self.handlers.get(type(content), ()):
                await handler(sender, content, msg.raw)
        except RemembrancerError as e:
            log.warning(
                "message %s from %s refused after acceptance: %s", msg.type, sender, e.explain()
            )
            await self.peers.count_invalid(sender, e.code, now)
        return reply

    # --- the node's federation API (delegated to the parts) ----------------------------
    async def propagate(
        self, namespace: str, anchor: Anchor, checkpoint: bytes, *, timeout: float = 10.0
    ) -> FederationReceipt:
        return await self.countersigning.propagate(namespace, anchor, checkpoint, timeout=timeout)

    async def on_anchor_verified(self, namespace: str, anchor: Anchor, checkpoint: bytes) -> None:
        await self.countersigning.on_anchor_verified(namespace, anchor, checkpoint)

    def checked_receipt(self, receipt: FederationReceipt) -> FederationReceipt:
        return self.countersigning.checked_receipt(receipt)

    def keep_receipt(self, receipt: FederationReceipt) -> bool:
        return self.countersigning.keep_receipt(receipt)

    def verify_final(self, receipt: FederationReceipt) -> None:
        self.countersigning.verify_final(receipt)

    def registry_keys(self) -> dict[str, Any]:
        return self.countersigning.registry_keys()

    def receipts(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.countersigning.receipts(namespace)

    def receipts_page(
        self, namespace: str | None = None, *, after: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        return self.countersigning.receipts_page(namespace, after=after, limit=limit)

    async def report_equivocation(
        self, evidence: EquivocationEvidence, *, gossip: bool = True
    ) -> dict[str, Any]:
        return await self.misbehaviour.report_equivocation(evidence, gossip=gossip)

    def evidence_page(self, *, after: str | None = None, limit: int = 100) -> dict[str, Any]:
        return self.misbehaviour.evidence_page(after=after, limit=limit)

    def evidence(self) -> list[dict[str, Any]]:
        return self.misbehaviour.evidence()

    async def submit_proposal(self, body: bytes) -> dict[str, Any]:
        """``POST /v1/federation/proposals``: verify, fold, apply at quorum; the proposal's state."""
        return await self.changes.submit(body)

    async def drop_proposal(self, proposal_id: str) -> dict[str, Any]:
        return await self.changes.drop(proposal_id)

    async def approve_proposal(self, proposal_id: str) -> dict[str, Any]:
        return await self.changes.approve(proposal_id)

    def proposals(self) -> dict[str, Any]:
        return self.changes.proposals()

    def registry_document(self) -> dict[str, Any]:
        return self.registry.to_dict()

    # --- status ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = int(self.clock())
        own = {self.logs.origin(ns): self.logs.head(ns) for ns in self.logs.namespaces.current()}
        peers = []
        for p in self.peers.effective():
            heads = self.peers.heads.get(p.did, {})
            peers.append({
                "did": p.did, "endpoint": p.endpoint, "roles": sorted(p.roles),
                "registry_status": getattr(self.registry.get(p.did), "status", None),
                "status": p.status, "score": round(self.scores.score(p.did), 1) if hasattr(self.scores, "score") else None,
                "last_heartbeat": heads.get("at"), "heartbeat_age_s": (now - heads["at"]) if heads.get("at") else None,
                "logs": {o: {"size": s} for o, (s, _) in heads.get("logs", {}).items()},
                "self": p.did == self.self_did,
            })  # fmt: skip
        return {
            "federation_id": self.registry.federation_id,
            "quorum": self.registry.quorum,
            "anchor_strategy": self.registry.anchor_strategy,
            "self": self.self_did,
            "peers": peers,
            "own_logs": {o: (h.size if h else 0) for o, h in own.items()},
            "history": [c.to_dict() for c in self.scores.history()][-100:],
            "registry_history": [c.to_dict() for c in self.changes.state.history][-100:],
            "registry_digest": self.registry.digest(),
            "receipts_final": self.countersigning.final_count(),
            "claim_refusals": list(self.claim_refusals),
        }

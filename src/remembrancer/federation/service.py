"""One node's part in the federation: the message endpoint, heartbeats,
countersigned federation receipts and peer status.

- Messages arrive at ``POST /federation/v1/messages`` and are checked by the
  protocol's :class:`~remembrancer.federation.protocol.verify.MessageVerifier`
  (registry keys, replay state kept in the store, skew window, roles, rate).
- Heartbeats carry each peer's log heads; liveness and message validity move
  the peer scores (``docs/federation-scoring.md``), and the effective statuses
  feed back into the verifier.
- Countersigning: for a verified anchor of one of this node's logs,
  :meth:`FederationService.propagate` signs a federation receipt proposal (role
  ``anchor``) and sends it to the active peers in an ``anchor`` message.  Each
  peer re-verifies the checkpoint with the log's key (from its witness
  configuration) and the rail evidence with its own rails and trust settings,
  then answers with a ``countersign`` message.  At ``quorum`` distinct active
  peers the receipt is final; it is stored and sent to every peer in a
  ``receipt`` message, and it verifies offline with
  ``remembrancer federation verify``.
- An anchor claim whose evidence does not verify is refused, counted against
  the claimant as invalid (proven misbehaviour when the root does not match
  the checkpoint), and never countersigned.
- Registry changes: ``federation.registry.set@1.0.0`` records (namespace
  ``fed:<federation_id>``) arrive at ``POST /v1/federation/proposals``; they
  are folded into a :class:`~remembrancer.federation.registry.proposals.RegistryState`
  kept in the store, witness signatures by active peers count as approvals,
  and at quorum the new registry is installed (and persisted: it takes
  precedence over ``federation.yaml`` at the next start).  An operator
  approves with :meth:`FederationService.approve_proposal`, which signs the
  proposal with the node key and forwards it to every peer.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from prometheus_client import Counter

from remembrancer.anchoring.base import (
    DEPTH_INSUFFICIENT,
    RailRegistry,
    Verdict,
    VerifyContext,
    judged,
)
from remembrancer.core.anchor import Anchor, checkpoint_digest, covers
from remembrancer.core.checkpoint import open_checkpoint
from remembrancer.core.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    PeerError,
    PolicyError,
    RemembrancerError,
    VerificationError,
)
from remembrancer.core.keys import PublicKey, SigningKey
from remembrancer.core.note import NoteVerifier, Verifier
from remembrancer.core.record import Record, RecordSignature
from remembrancer.core.schema import SchemaRegistry
from remembrancer.federation.evidence.claims import ClaimEvidence, Finding, verify_claim_evidence
from remembrancer.federation.evidence.equivocation import EquivocationEvidence, verify_equivocation
from remembrancer.federation.evidence.parse import parse_evidence
from remembrancer.federation.evidence.store import EvidenceStore
from remembrancer.federation.protocol.contents import (
    AnchorContent,
    CountersignContent,
    EvidenceContent,
    HeartbeatContent,
    LogSummary,
    ReceiptContent,
)
from remembrancer.federation.protocol.verify import MessageVerifier, ReplayWindow
from remembrancer.federation.protocol.wire import Message, SeqCounter
from remembrancer.federation.receipts import (
    TYPE as RECEIPT_TYPE,
)
from remembrancer.federation.receipts import (
    Countersignature,
    FederationReceipt,
    Role,
    verified_countersignatures,
    verify_countersignature,
    verify_federation_receipt,
)
from remembrancer.federation.registry.model import Registry, StatusChange
from remembrancer.federation.registry.proposals import REGISTRY_SCHEMA, AppliedChange, RegistryState
from remembrancer.federation.registry.scoring import PeerScores, effective_peers
from remembrancer.federation.transport import (
    Delivery,
    FederationClient,
    Reply,
    RetryPolicy,
    receive,
)
from remembrancer.storage.base import ANY, Store

log = logging.getLogger("remembrancer.federation")
Handler = Callable[[str, Any, bytes], Awaitable[None]]
SEQ_SCOPE = "federation-seq"
RECEIPT_SCOPE = "federation-receipts"
SCORES_SCOPE = "federation"
REGISTRY_SCOPE = "federation-registry"
REGISTRY_KEY = "state"


MAX_CLAIM_REFUSALS = 100  # kept for GET /v1/federation
# Refusals that say nothing against the claimant: this node lacks what it needs,
# or its own policy asks for more depth than the claimant's.
_NO_BLAME = frozenset({"anchor_claim_unchecked", "anchor_claim_depth_insufficient"})


def judge_claim(claim: Anchor, verdict: Verdict) -> tuple[str, str] | None:
    """Why this node does not stand behind ``claim`` given its own rail's
    ``verdict`` on it (None: it does).  The claim's ``status`` and
    ``finality`` play no part: only the verdict, and the facts the claim
    states (txRef, block, anchor time), which must be what the evidence shows.

    Codes: ``anchor_claim_unchecked`` (this node lacks the chain data, trust
    or node it needs), ``anchor_claim_depth_insufficient`` (fewer
    confirmations than this node requires), ``anchor_claim_unverified``
    (the evidence is false, or shows no commitment yet: e.g. an OTS proof
    with only pending attestations), ``anchor_claim_facts_mismatch``
    (verified, but not with the facts the claim states)."""
    if verdict.outcome == "verified":
        why = verdict.disagreement(claim)
        return None if why is None else ("anchor_claim_facts_mismatch", why)
    if verdict.outcome == "unchecked":
        return "anchor_claim_unchecked", f"the anchor cannot be checked here: {verdict.explain()}"
    if verdict.code == DEPTH_INSUFFICIENT:
        return "anchor_claim_depth_insufficient", f"not deep enough here: {verdict.explain()}"
    return "anchor_claim_unverified", f"the anchor does not verify here: {verdict.explain()}"


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


@dataclass
class _Proposal:
    receipt: FederationReceipt
    started: float
    done: asyncio.Event = field(default_factory=asyncio.Event)


class FederationService:
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
        self.registry = registry
        self.self_did = self_did
        self.key = node_key
        self.store = store
        self.logs = logs
        self.rails = rails
        self.log_verifiers = dict(log_verifiers)
        self.clock = clock
        self.heartbeat_seconds = heartbeat_seconds
        self.schemas = SchemaRegistry.bundled()
        self.registry_state, self._records = _load_registry_state(store, registry, int(clock()))
        self.registry = self.registry_state.registry
        self._registry_lock = asyncio.Lock()
        raw = store.get_state(SCORES_SCOPE, "scores")
        self.scores = (
            PeerScores.from_dict(json.loads(raw))
            if raw
            else PeerScores(heartbeat_interval=max(1, int(heartbeat_seconds)))
        )
        self.verifier = MessageVerifier(
            self.registry.federation_id, self._peers(), replay=StoreReplayState(store)
        )
        self.seq = SeqCounter(int(store.get_state(SCORES_SCOPE, "own-seq") or 0))
        self.client = FederationClient(
            timeout=5.0, retry=RetryPolicy(max_attempts=4, deadline=15.0)
        )
        # Heartbeats are never retried: a late heartbeat is worthless, and a dead
        # peer must not hold up the loop that notices it is dead.
        beat = max(0.2, heartbeat_seconds)
        self.beats = FederationClient(timeout=beat * 2, connect_timeout=beat,
                                      retry=RetryPolicy(max_attempts=1, deadline=beat * 2))  # fmt: skip
        self.heads: dict[
            str, dict[str, Any]
        ] = {}  # peer -> {"at": t, "logs": {origin: (size, root)}}
        self._proposals: dict[str, _Proposal] = {}
        self._task: asyncio.Task[None] | None = None
        self.latencies: list[float] = []  # proposal -> final, seconds
        # Anchor claims this node refused to countersign, newest last.
        self.claim_refusals: deque[dict[str, Any]] = deque(maxlen=MAX_CLAIM_REFUSALS)
        # Extensions (collaborative anchoring, anti-entropy, cross-namespace
        # messages) register here: handlers[content class] are awaited with
        # (sender DID, content, raw wire bytes) after acceptance, in
        # registration order; a RemembrancerError they raise counts against
        # the sender like the built-in handlers' errors.
        self.handlers: dict[type, list[Handler]] = {}
        self._extensions: list[Any] = []  # objects with async start()/stop()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.verifier.on_suspended = self._suspended_heartbeat
        self.evidence_store = EvidenceStore(store)
        # What arrived in accepted messages and was dropped instead of kept or
        # relayed (item, code): countersignatures that do not verify, evidence
        # about strangers or beyond the per-subject bound.  Nobody is blamed.
        self.dropped: collections.Counter[tuple[str, str]] = collections.Counter()
        self._dropped_metric = (
            None
            if metrics_registry is None
            else Counter("remembrancer_federation_dropped_total",
                         "Items of accepted federation messages dropped instead of kept or relayed",
                         ["item", "code"], registry=metrics_registry)
        )  # fmt: skip

    def count_dropped(self, item: str, code: str) -> None:
        """Count one dropped ``item`` (``countersignature``, ``evidence``) and why."""
        self.dropped[(item, code)] += 1
        if self._dropped_metric is not None:
            self._dropped_metric.labels(item, code).inc()

    def add_handler(self, content_type: type, handler: Handler) -> None:
        """Call ``handler(sender, content, raw)`` for every accepted message of that type."""
        self.handlers.setdefault(content_type, []).append(handler)

    def add_extension(self, extension: Any) -> None:
        """Start and stop ``extension`` (async ``start()``/``stop()``) with the service."""
        self._extensions.append(extension)

    # --- peers -------------------------------------------------------------------
    def _peers(self) -> tuple[Any, ...]:
        return effective_peers(self.registry, self.scores)

    def _others(self, role: str | None = None) -> list[Any]:
        return [p for p in self._peers() if p.did != self.self_did and p.status == "active"
                and (role is None or role in p.roles)]  # fmt: skip

    def _save_scores_sync(self) -> None:
        self.verifier.set_peers(self._peers())
        self.store.put_state(SCORES_SCOPE, "scores", json.dumps(self.scores.to_dict()).encode())

    async def _save_scores(self) -> None:
        """Persist the scores and refresh the verifier's peer statuses.  The
        snapshot is taken on the event loop (the only thread that changes the
        scores); only the write goes to a worker thread."""
        data = json.dumps(self.scores.to_dict()).encode()
        self.verifier.set_peers(self._peers())
        await asyncio.to_thread(self.store.put_state, SCORES_SCOPE, "scores", data)

    async def deliver(
        self,
        peers: Sequence[Any],
        content: Any,
        *,
        attempts: int = 3,
        client: FederationClient | None = None,
    ) -> list[Delivery]:
        """Sign ``content`` and send it to every peer (objects with ``endpoint``),
        with ``client`` (default: the service's).

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
            msg = await asyncio.to_thread(self._sign, content)
            results = await client.broadcast(targets, msg)
            again = []
            for peer, d in zip(targets, results, strict=True):
                out[id(peer)] = d
                if not d.delivered and d.code == "replayed":
                    again.append(peer)
            targets = again
        return [out[id(p)] for p in peers]

    async def score(self, peer: str, event: str, reason: str = "") -> None:
        """An extension's observation of ``peer`` for peer scoring: ``valid``,
        ``invalid`` (``reason``: the error code) or ``missed`` (it failed to
        answer in time); saved, and statuses fed back to the verifier."""
        known = self.registry.get(peer)
        if known is None or known.did == self.self_did:
            return
        peer, now = known.did, int(self.clock())
        if event == "valid":
            change = self.scores.on_valid(peer, now)
        elif event == "invalid":
            change = self.scores.on_invalid(peer, reason, now)
        elif event == "missed":
            change = self.scores.on_missed(peer, now)
        else:
            raise ValueError(f"unknown scoring event {event!r}")
        if change is not None:
            log.warning("%s: %s -> %s (%s)", peer, change.old, change.new, change.reason)
        await self._save_scores()

    def _sign(self, content: Any) -> Message:
        now = self.clock()
        msg = Message.sign(self.key, content, federation_id=self.registry.federation_id,
                           seq=self.seq.next(now), timestamp=int(now), sender=self.self_did)  # fmt: skip
        self.store.put_state(SCORES_SCOPE, "own-seq", str(self.seq.last).encode())
        return msg

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
        await self.client.aclose()
        await self.beats.aclose()

    async def _heartbeats(self) -> None:
        while True:
            try:
                asyncio.get_running_loop().create_task(self.send_heartbeat())
                now = int(self.clock())
                changed = False
                for p in self._peers():
                    if p.did == self.self_did:
                        continue
                    seen = self.heads.get(p.did, {}).get("at_precise", 0.0)
                    if seen and self.clock() - seen > 3 * self.heartbeat_seconds:
                        changed |= self.scores.on_missed(p.did, now) is not None
                if changed:
                    await self._save_scores()
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
        msg = await asyncio.to_thread(self._sign, HeartbeatContent(tuple(summaries)))
        await self.beats.broadcast(self._heartbeat_targets(), msg)

    def _heartbeat_targets(self) -> list[Any]:
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
        self.heads.setdefault(sender, {"logs": {}})
        self.heads[sender].update({"at": now, "at_precise": self.clock()})
        if self.scores.on_heartbeat(sender, now) is not None:
            self._loop_task(self._save_scores())

    def _loop_task(self, coro: Any) -> None:
        if self._loop is not None:
            self._loop.create_task(coro)

    # --- receiving ---------------------------------------------------------------
    async def handle(self, body: bytes, content_type: str | None) -> Reply:
        reply = await asyncio.to_thread(receive, self.verifier, body, content_type, self.clock())
        msg = reply.message
        if msg is None:
            return reply
        now = int(self.clock())
        sender = msg.sender
        try:
            content = msg.content
            if isinstance(content, HeartbeatContent):
                self.heads[sender] = {
                    "at": now,
                    "at_precise": self.clock(),
                    "logs": {s.origin: (s.size, s.root) for s in content.logs},
                }
                if self.scores.on_heartbeat(sender, now) is not None:
                    await self._save_scores()
            elif isinstance(content, AnchorContent):
                asyncio.get_running_loop().create_task(self._countersign(sender, content, msg.raw))
            elif isinstance(content, CountersignContent):
                self._collect(sender, content)
            elif isinstance(content, EvidenceContent):
                await self._on_evidence(sender, content)
            elif (
                isinstance(content, ReceiptContent) and content.receipt.get("type") == RECEIPT_TYPE
            ):
                receipt = self.checked_receipt(FederationReceipt.from_dict(content.receipt))
                await asyncio.to_thread(self.keep_receipt, receipt)
            for handler in self.handlers.get(type(content), ()):
                await handler(sender, content, msg.raw)
        except RemembrancerError as e:
            log.warning(
                "message %s from %s refused after acceptance: %s", msg.type, sender, e.explain()
            )
            if self.scores.on_invalid(sender, e.code, now) is not None:
                await self._save_scores()
        return reply

    async def _on_evidence(self, sender: str, content: EvidenceContent) -> None:
        """Evidence gossiped by ``sender``: act on it only when it proves, by a
        statement the accused signed, that a peer of ours misbehaved.

        A file that cannot be read, or equivocation evidence that does not
        verify, is the sender's own fault (every node checks before it
        gossips; the check is pure) and raises.  Evidence we cannot judge
        (no such rail here), that proves nothing (a relayed countersignature,
        a claim that holds), about a stranger, or beyond the per-subject bound
        is dropped and counted: nobody is blamed for it, not the accused, and
        not the sender, which may be relaying what an older node believed."""
        ev = parse_evidence(content.file.encode("utf-8"))
        try:
            if isinstance(ev, EquivocationEvidence):
                await self.report_equivocation(ev, gossip=False)
            else:
                await self.report_claim(ev, gossip=False)
        except (ConfigError, PolicyError) as e:
            self.count_dropped("evidence", e.code)
            log.info("evidence from %s not acted on: %s", sender, e.explain())
        except VerificationError as e:
            if isinstance(ev, EquivocationEvidence):
                raise
            self.count_dropped("evidence", e.code)
            log.info("evidence from %s not acted on: %s", sender, e.explain())

    async def _countersign(self, sender: str, content: AnchorContent, raw: bytes = b"") -> None:
        """Re-verify a peer's anchor claim with our own settings; countersign it.

        The claim is judged by :func:`judge_claim`: our rail's verdict on its
        evidence, under our own trust settings and required depth (never the
        claim's ``status`` or ``finality``), must be ``verified`` with the
        facts the claim states.  A claim we cannot judge (a log we do not
        follow, a rail we do not have, chain data we lack) is simply not
        countersigned.  A claim that is false (the root is not the
        checkpoint's digest, or the anchor fails on our rail) is never
        countersigned and is proven misbehaviour: we keep signed
        ``invalid_anchor_claim`` evidence, put the claimant on probation and
        tell the peers.  Every refusal is kept (bounded) in
        :attr:`claim_refusals`, shown by ``GET /v1/federation``."""
        now = int(self.clock())
        finding: Finding | None = None
        receipt_id = "?"
        blame = True
        try:
            receipt = content.federation_receipt()
            receipt_id = receipt.id
            verifiers = self.log_verifiers.get(receipt.origin)
            if not verifiers:
                log.info(
                    "not countersigning %s: we do not follow log %s", receipt.id, receipt.origin
                )
                return
            signed = None
            for v in verifiers:
                try:
                    signed = open_checkpoint(receipt.checkpoint, v)
                    break
                except RemembrancerError:
                    continue
            if signed is None:
                raise RemembrancerError(
                    "the checkpoint is not signed by the log",
                    code="anchor_claim_checkpoint_invalid",
                )
            if not covers(receipt.anchor, checkpoint_digest(signed.body.encode())):
                finding = "root_mismatch"
                raise RemembrancerError(
                    "the anchor does not cover the checkpoint (root or aggregation path)",
                    code="anchor_claim_root_mismatch",
                )
            try:
                rail = self.rails.get(receipt.anchor.target)
            except ConfigError as e:
                blame = False
                raise RemembrancerError(
                    f"no rail for {receipt.anchor.target} here: {e.message}",
                    code="anchor_claim_unchecked",
                    details={"cause": e.code},
                ) from e
            verdict = await asyncio.to_thread(rail.verify, receipt.anchor, VerifyContext(now))
            refusal = judge_claim(receipt.anchor, verdict)
            if refusal is not None:
                code, why = refusal
                blame = code not in _NO_BLAME
                if verdict.outcome == "failed" and not verdict.lost:
                    finding = "rail_failed"
                raise RemembrancerError(why, code=code, details={"cause": verdict.code})
        except RemembrancerError as e:
            log.warning("refusing to countersign %s's anchor claim: %s", sender, e.explain())
            self.claim_refusals.append({
                "at": now, "sender": sender, "receipt": receipt_id, "code": e.code,
                "cause": e.details.get("cause"), "reason": e.message,
            })  # fmt: skip
            if finding and raw:
                try:
                    await self._report_claim(sender, raw, finding, now)
                except RemembrancerError as err:
                    log.warning("our evidence against %s was not kept: %s", sender, err.explain())
            elif blame and self.scores.on_invalid(sender, e.code, now) is not None:
                await self._save_scores()
            return
        cs = self._countersignature(receipt, "witness", now)
        peer = self.registry.get(sender)
        if peer is not None:
            await self.deliver([peer], CountersignContent(content.namespace, receipt.id, cs))

    def _collect(self, sender: str, content: CountersignContent) -> None:
        proposal = self._proposals.get(content.receipt_id)
        if proposal is None or content.signature.node != sender:
            return
        receipt = proposal.receipt.with_signature(content.signature)
        if not self._valid_signature(receipt, content):
            return  # never kept, even once the quorum is met without it
        peers = {p.did: p.pubkey for p in self._peers()}
        try:
            verify_federation_receipt(
                receipt,
                peers,
                self.registry.quorum,
                active=[p.did for p in self._peers() if p.status == "active"],
            )
        except RemembrancerError as e:
            if e.code == "receipt_quorum_not_met":
                proposal.receipt = receipt
            return
        proposal.receipt = replace(receipt, finalized_at=int(self.clock()))
        proposal.done.set()

    def _valid_signature(self, receipt: FederationReceipt, content: CountersignContent) -> bool:
        peer = next((p for p in self._peers() if p.did == content.signature.node), None)
        return peer is not None and verify_countersignature(receipt, content.signature, peer.pubkey)

    def verify_final(self, receipt: FederationReceipt) -> None:
        """Check a finished receipt against the registry.  Registry statuses,
        not our own scores: a countersigner we put on probation during a
        partition still made a valid countersignature while it was active in
        the registry, and every node must judge a receipt the same way."""
        peers = self.registry.peers
        verify_federation_receipt(receipt, {p.did: p.pubkey for p in peers}, self.registry.quorum,
                                  active=[p.did for p in peers if p.status == "active"])  # fmt: skip

    def registry_keys(self) -> dict[str, PublicKey]:
        """Each registry peer's DID -> key (every status), what countersignatures verify against."""
        return {p.did: p.pubkey for p in self.registry.peers}

    def checked_receipt(self, receipt: FederationReceipt) -> FederationReceipt:
        """The relay filter: ``receipt`` with only the countersignatures that verify
        against the registry (the others are dropped and counted, and nobody is
        blamed for them), checked final with :meth:`verify_final`.  Everything a
        node stores, and so everything it relays, has been through here."""
        kept, dropped = verified_countersignatures(receipt, self.registry_keys())
        for cs, code in dropped:
            self.count_dropped("countersignature", code)
            log.info("dropped a countersignature by %s on %s: %s", cs.node[:80], receipt.id, code)
        self.verify_final(kept)
        return kept

    def keep_receipt(self, receipt: FederationReceipt) -> bool:
        """Store a final receipt that went through :meth:`checked_receipt`, or add
        its countersignatures to the stored receipt of the same statement (a
        receipt with the same id and another statement leaves the stored one as
        it is).  Blocking; whether anything changed."""
        key = f"{receipt.namespace}/{receipt.id}"
        for _ in range(8):
            raw = self.store.get_state(RECEIPT_SCOPE, key)
            merged = receipt
            if raw is not None:
                held = FederationReceipt.from_dict(json.loads(raw))
                if held.statement() != receipt.statement():
                    return False
                merged = held
                for cs in receipt.signatures:
                    if all(s.node != cs.node for s in held.signatures):
                        merged = merged.with_signature(cs)
                # Whatever an older version kept goes through the filter too.
                merged, _ = verified_countersignatures(merged, self.registry_keys())
                if merged == held:
                    return False
            value = json.dumps(merged.to_dict(quorum=self.registry.quorum)).encode()
            if self.store.put_state(RECEIPT_SCOPE, key, value, expect=raw):
                return True
        return False

    def _countersignature(
        self, receipt: FederationReceipt, role: Role, now: int
    ) -> Countersignature:
        """Our countersignature under the DID the registry lists for us."""
        sig = self.key.sign(receipt.signing_input(self.self_did, role, now))
        return Countersignature(self.self_did, role, now, sig)

    # --- proposing -----------------------------------------------------------------
    async def propagate(
        self, namespace: str, anchor: Anchor, checkpoint: bytes, *, timeout: float = 10.0
    ) -> FederationReceipt:
        """Ask the peers to countersign ``anchor`` of ``checkpoint``; return the
        final receipt (RemembrancerError ``quorum_not_reached`` on timeout)."""
        now = int(self.clock())
        receipt = FederationReceipt(
            self.registry.federation_id, namespace, self.logs.origin(namespace), checkpoint, anchor
        )
        own = receipt.countersign(self.key, "anchor", now)
        own = replace(
            own,
            node=self.self_did,
            sig=self.key.sign(receipt.signing_input(self.self_did, "anchor", now)),
        )
        receipt = receipt.with_signature(own)
        proposal = _Proposal(receipt, time.perf_counter())
        self._proposals[receipt.id] = proposal
        # Deliver to every peer while waiting for the quorum: a slow or lost
        # delivery to one peer (retried) must not hold back a quorum of others.
        sending = asyncio.ensure_future(
            self.deliver(self._others("countersign"), AnchorContent(namespace, receipt.to_dict()))
        )
        try:
            try:
                await asyncio.wait_for(proposal.done.wait(), timeout)
            except TimeoutError as e:
                raise PeerError(
                    f"{len(proposal.receipt.signatures)} countersignatures, quorum is {self.registry.quorum}",
                    code="quorum_not_reached",
                ) from e
            final = proposal.receipt
            self.latencies.append(time.perf_counter() - proposal.started)
            await asyncio.to_thread(self._store_receipt, final)
            await self.deliver(
                self._others(),
                ReceiptContent(namespace, final.to_dict(quorum=self.registry.quorum)),
            )
            return final
        finally:
            self._proposals.pop(receipt.id, None)
            if not sending.done():
                sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)

    # --- misbehaviour ------------------------------------------------------------------
    async def report_equivocation(
        self, evidence: EquivocationEvidence, *, gossip: bool = True
    ) -> dict[str, Any]:
        """Verify equivocation evidence, keep it, put the log's node on probation
        (the scoring rule), and tell every peer."""
        report = verify_equivocation(evidence)
        peer = self.registry.peer_by_key(report.log_key)
        if peer is None and not self._witnesses(report.origin, report.log_key):
            raise PolicyError(
                f"{report.origin} is signed by {report.log_key.did}, which is no peer of"
                f" {self.registry.federation_id} and no log this node witnesses",
                code="evidence_subject_unknown",
                details={"origin": report.origin, "key": report.log_key.did},
            )
        subject = peer.did if peer is not None else report.origin
        ref = await asyncio.to_thread(
            self.evidence_store.keep, subject, report.incident, report.evidence_ref,
            evidence.to_bytes(),
        )  # fmt: skip
        out: dict[str, Any] = {
            "evidence_ref": ref,
            "report": report.to_dict(),
            "peer": peer.did if peer else None,
        }
        if peer is not None and peer.did != self.self_did:
            change = self.scores.on_misbehaviour(peer.did, report, int(self.clock()))
            out["status_change"] = change.to_dict()
            await self._save_scores()
            log.error(
                "equivocation by %s (%s): %s -> %s", peer.did, report.origin, change.old, change.new
            )
        if gossip and peer is not None:
            # A log that is no peer's concerns only the nodes that witness it: the
            # others would refuse the evidence (evidence_subject_unknown).
            msg = await asyncio.to_thread(
                self._sign, EvidenceContent("equivocation", peer.did,
                                            evidence.to_bytes().decode("utf-8")))  # fmt: skip
            await self.client.broadcast(self._others(), msg)
        return out

    def _witnesses(self, origin: str, key: PublicKey) -> bool:
        """Whether ``origin`` signed by ``key`` is one of the logs this node witnesses."""
        return any(isinstance(v, Verifier) and v.name == origin and v.public_key == key
                   for v in self.log_verifiers.get(origin, ()))  # fmt: skip

    async def _report_claim(self, accused: str, raw: bytes, finding: Finding, now: int) -> None:
        peer = self.registry.get(accused)
        if peer is None:
            return
        evidence = ClaimEvidence.create(
            kind="invalid_anchor_claim", federation_id=self.registry.federation_id,
            accused=peer.key_did, message=raw, receipt_at="/content/receipt",
            countersigner=peer.key_did, finding=finding,
            reporter_key=self.key, reported_at=now,
        )  # fmt: skip
        try:
            await self.report_claim(evidence)
        except RemembrancerError as e:
            # The claim was false, but not by a countersignature of the sender's:
            # an invalid message of the sender's, no evidence.
            log.warning("evidence against %s not kept: %s", accused, e.explain())
            if self.scores.on_invalid(peer.did, e.code, now) is not None:
                await self._save_scores()

    async def report_claim(self, evidence: ClaimEvidence, *, gossip: bool = True) -> dict[str, Any]:
        """Verify claim evidence (re-checking rail failures on our own rails),
        keep it, put the accused on probation, and tell the peers."""
        now = int(self.clock())

        def reverify(anchor: Anchor) -> Anchor:
            # This node's verdict under its own policy; never the claim's depth.
            verdict = self.rails.get(anchor.target).verify(anchor, VerifyContext(now))
            if verdict.outcome == "unchecked":
                raise ConfigError(f"{anchor.key} cannot be checked here: {verdict.explain()}",
                                  code="evidence_rail_unavailable")  # fmt: skip
            return judged(anchor, verdict, now=now, prior=None)

        report = await asyncio.to_thread(
            verify_claim_evidence, evidence, self.registry, reverify=reverify
        )
        data = evidence.to_bytes()
        ref = await asyncio.to_thread(
            self.evidence_store.keep, report.accused, report.incident, report.evidence_ref, data
        )
        out: dict[str, Any] = {"evidence_ref": ref, "accused": report.accused}
        if report.accused != self.self_did:
            change = self.scores.on_misbehaviour(report.accused, report, now)
            out["status_change"] = change.to_dict()
            await self._save_scores()
            log.error(
                "invalid anchor claim by %s: %s -> %s", report.accused, change.old, change.new
            )
        if gossip:
            msg = await asyncio.to_thread(
                self._sign, EvidenceContent(evidence.kind, report.accused, data.decode("utf-8")))  # fmt: skip
            await self.client.broadcast(self._others(), msg)
        return out

    def evidence_page(self, *, after: str | None = None, limit: int = 100) -> dict[str, Any]:
        """``GET /v1/federation/evidence``: kept evidence files in ``evidence_ref``
        order, ``limit`` per page after the cursor ``after``; ``next`` is the
        cursor of the next page (None on the last)."""
        rows, cursor = self.evidence_store.page(after=after, limit=limit)
        out = []
        for ref, data in rows:
            try:
                ev = parse_evidence(data)
            except RemembrancerError:
                continue
            out.append({"evidence_ref": ref, "file": data.decode("utf-8", "replace"),
                        "kind": "equivocation" if isinstance(ev, EquivocationEvidence) else "claim"})  # fmt: skip
        return {"evidence": out, "next": cursor}

    def evidence(self) -> list[dict[str, Any]]:
        """Every kept evidence file (bounded per subject: see EvidenceStore)."""
        out: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = self.evidence_page(after=after, limit=1000)
            out += page["evidence"]
            if page["next"] is None:
                return out
            after = page["next"]

    async def on_anchor_verified(self, namespace: str, anchor: Anchor, checkpoint: bytes) -> None:
        """Scheduler hook: countersign every newly verified anchor of our logs."""
        try:
            await self.propagate(namespace, anchor, checkpoint)
        except RemembrancerError as e:
            log.warning(
                "federation receipt for %s %s not final: %s", namespace, anchor.key, e.explain()
            )

    def _store_receipt(self, receipt: FederationReceipt) -> None:
        key = f"{receipt.namespace}/{receipt.id}"
        self.store.put_state(
            RECEIPT_SCOPE,
            key,
            json.dumps(receipt.to_dict(quorum=self.registry.quorum)).encode(),
            expect=ANY,
        )

    def receipts(self, namespace: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(v) for k, v in sorted(self.store.list_state(RECEIPT_SCOPE).items())
               if namespace is None or k.startswith(namespace + "/")]  # fmt: skip
        return out

    def receipts_page(
        self, namespace: str | None = None, *, after: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        """``GET /v1/federation/receipts``: final receipts (of ``namespace``) in
        ``<namespace>/<receipt id>`` order, ``limit`` per page after the cursor
        ``after``; ``next`` is the cursor of the next page (None on the last)."""
        prefix = "" if namespace is None else namespace + "/"
        rows = self.store.list_state_page(RECEIPT_SCOPE, prefix=prefix, after=after,
                                          limit=limit + 1)  # fmt: skip
        more = len(rows) > limit
        rows = rows[:limit]
        return {"receipts": [json.loads(v) for _, v in rows],
                "next": rows[-1][0] if more and rows else None}  # fmt: skip

    # --- registry changes ------------------------------------------------------------
    @property
    def proposal_namespace(self) -> str:
        return f"fed:{self.registry.federation_id}"

    def _check_record(self, body: bytes) -> Record:
        """Parse a proposal record; check its namespace, payload schema and every signature."""
        record = Record.from_bytes(body)
        if record.schema_name != REGISTRY_SCHEMA:
            raise PolicyError(
                f"{record.schema} is not a {REGISTRY_SCHEMA} record",
                code="proposal_schema_unsupported",
            )
        if record.namespace != self.proposal_namespace:
            raise PolicyError(
                f"a registry proposal of this federation is in {self.proposal_namespace},"
                f" not {record.namespace}",
                code="proposal_namespace_mismatch",
                details={"namespace": record.namespace},
            )
        self.schemas.validate(record.schema, record.payload)
        if not any(s.role == "actor" and s.kid == record.actor for s in record.signatures):
            raise VerificationError(
                "the proposal has no actor signature", code="proposal_signature_invalid"
            )
        for s in record.signatures:
            if not PublicKey.from_did(s.kid).verify(record.signing_input, s.sig):
                raise VerificationError(
                    f"the {s.role} signature by {s.kid} does not verify",
                    code="proposal_signature_invalid",
                    details={"kid": s.kid, "role": s.role},
                )
        return record

    def _fold_proposal(self, record: Record) -> dict[str, Any]:
        """Fold a verified proposal record (or a resubmission with more approvals)."""
        state = self.registry_state.expire(int(self.clock()))
        pid = record.event_id
        done = next((a for a in state.applied if a.proposal_id == pid), None)
        if done is not None:
            if done.event_hash != record.event_hash_hex:
                raise ConflictError(
                    f"another proposal {pid} was already applied",
                    code="proposal_id_conflict",
                    details={"proposal": pid},
                )
            return self._proposal_view(pid)
        existing = state.pending.get(pid)
        if existing is None:
            state = state.propose(record, int(self.clock()))
            merged = record
        else:
            if existing.event_hash != record.event_hash_hex:
                raise ConflictError(
                    f"another proposal already has event:id {pid}",
                    code="proposal_id_conflict",
                    details={"proposal": pid},
                )
            merged = _merge_signatures(self._records[pid], record, state.registry)
            for s in record.signatures:
                peer = state.registry.peer_by_key(s.kid)
                if s.role != "witness" or peer is None or not peer.active:
                    continue
                state = state.approve(pid, peer.did, s.sig)
        records = {k: r for k, r in self._records.items() if k in state.pending}
        records[pid] = merged
        applied = False
        if state.ready(pid):
            state = state.apply(pid, int(self.clock()))
            records = {}
            applied = True
        self.registry_state = state
        self._records = records
        self._save_registry_state()
        if applied:
            self._install(state.applied[-1])
        return self._proposal_view(pid)

    def _install(self, change: AppliedChange) -> None:
        """Make the newly applied registry the one in force."""
        self.registry = self.registry_state.registry
        now = int(self.clock())
        for h in self.registry_state.history:
            if h.evidence_ref != change.event_hash:
                continue
            log.warning("registry change %s: %s %s -> %s", change.proposal_id, h.peer, h.old, h.new)
            if h.new == "active" and h.old != "absent":
                self.scores.reinstate(h.peer, now, reason=h.reason, evidence_ref=h.evidence_ref)
        self._save_scores_sync()  # also hands the new peers to the verifier

    def _save_registry_state(self) -> None:
        state = self.registry_state
        doc = {
            "version": 1,
            "registry": state.registry.to_dict(),
            "applied": [a.to_dict() for a in state.applied],
            "history": [h.to_dict() for h in state.history],
            "records": {pid: r.leaf.decode("utf-8") for pid, r in sorted(self._records.items())},
            # When each pending proposal was received here (expiry counts from it).
            "received": {pid: p.received_at for pid, p in sorted(state.pending.items())},
            "dropped": list(state.dropped),
        }
        self.store.put_state(REGISTRY_SCOPE, REGISTRY_KEY, json.dumps(doc).encode())

    def _proposal_view(self, pid: str) -> dict[str, Any]:
        state = self.registry_state
        quorum = state.registry.quorum
        pending = state.pending.get(pid)
        if pending is not None and pending.expires_at > int(self.clock()):
            counted = state.approvals(pid)
            return {"proposal_id": pid, "event_hash": pending.event_hash, "state": "pending",
                    "applied": False, "approvals": list(counted), "approval_count": len(counted),
                    "quorum": quorum, "proposer": pending.proposer, "memo": pending.memo,
                    "sponsor": pending.sponsor, "received_at": pending.received_at,
                    "expires_at": pending.expires_at,
                    "registry": pending.registry.to_dict()}  # fmt: skip
        for a in state.applied:
            if a.proposal_id == pid:
                return {"proposal_id": pid, "event_hash": a.event_hash, "state": "applied",
                        "applied": True, "approvals": list(a.approved_by),
                        "approval_count": len(a.approved_by), "quorum": quorum,
                        "registry_digest": a.registry_digest, "applied_at": a.at,
                        "memo": a.memo}  # fmt: skip
        if any(pid in a.superseded for a in state.applied):
            return {"proposal_id": pid, "state": "superseded", "applied": False, "quorum": quorum}
        if pid in state.dropped:
            return {"proposal_id": pid, "state": "dropped", "applied": False, "quorum": quorum}
        raise NotFoundError(
            f"no proposal {pid!r}", code="proposal_unknown", details={"proposal": pid[:128]}
        )

    async def submit_proposal(self, body: bytes) -> dict[str, Any]:
        """``POST /v1/federation/proposals``: verify, fold, apply at quorum; the proposal's state."""
        record = await asyncio.to_thread(self._check_record, body)
        async with self._registry_lock:
            return await asyncio.to_thread(self._fold_proposal, record)

    async def drop_proposal(self, proposal_id: str) -> dict[str, Any]:
        """``POST /v1/admin/federation/proposals/{id}/drop``: remove a pending
        proposal here (an operator's decision, local to this node), and refuse
        it if it comes again."""
        async with self._registry_lock:
            state = self.registry_state.expire(int(self.clock())).drop(proposal_id)
            self.registry_state = state
            self._records = {k: r for k, r in self._records.items() if k in state.pending}
            await asyncio.to_thread(self._save_registry_state)
            log.warning("registry proposal %s dropped by the operator", proposal_id)
            return self._proposal_view(proposal_id)

    async def approve_proposal(self, proposal_id: str) -> dict[str, Any]:
        """Sign a pending proposal with the node key (a witness signature), fold it
        here and forward the record with every approval gathered to every peer."""
        async with self._registry_lock:
            record = self._records.get(proposal_id)
            if proposal_id in self.registry_state.pending and (
                self.registry_state.pending[proposal_id].expires_at <= int(self.clock())
            ):
                record = None  # expired: _proposal_view says so
            if record is None:
                return {**self._proposal_view(proposal_id), "forwarded": {}}
            me = self.registry.peer_by_key(self.key.public)
            if me is None:
                raise PolicyError(
                    f"this node's key {self.key.did} is not a peer of federation"
                    f" {self.registry.federation_id}",
                    code="approver_unknown",
                )
            if not me.active:
                raise PolicyError(
                    f"{me.did} is {me.status}; only active peers approve registry changes",
                    code="approver_not_active",
                )
            proposed = self.registry_state.pending[proposal_id].registry
            targets = sorted(
                {p.endpoint for p in (*self.registry.peers, *proposed.peers)
                 if p.pubkey != self.key.public}
            )  # fmt: skip
            if not any(s.kid == self.key.did and s.role == "witness" for s in record.signatures):
                sig = self.key.sign(record.signing_input)
                env = record.envelope()
                env["signatures"].append(RecordSignature(self.key.did, "witness", sig).to_dict())
                record = Record.from_value(env)
            view = await asyncio.to_thread(self._fold_proposal, record)
        results = await asyncio.gather(*(self._forward(t, record.leaf) for t in targets))
        return {**view, "forwarded": dict(zip(targets, results, strict=True))}

    async def _forward(self, endpoint: str, body: bytes) -> str:
        url = f"{endpoint.rstrip('/')}/v1/federation/proposals"
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                r = await client.post(url, content=body,
                                      headers={"Content-Type": "application/json"})  # fmt: skip
        except httpx.HTTPError as e:
            log.warning("could not forward a registry proposal to %s: %s", url, e)
            return f"unreachable: {type(e).__name__}"
        if r.status_code >= 400:
            log.warning("%s refused a registry proposal: %s %s", url, r.status_code, r.text[:300])
        return str(r.status_code)

    def proposals(self) -> dict[str, Any]:
        state = self.registry_state
        now = int(self.clock())
        live = [pid for pid, p in state.pending.items() if p.expires_at > now]
        return {
            "federation_id": state.registry.federation_id,
            "registry_digest": state.registry.digest(),
            "quorum": state.registry.quorum,
            "pending": [self._proposal_view(pid) for pid in live],
            "applied": [a.to_dict() for a in state.applied],
            "history": [h.to_dict() for h in state.history],
        }

    def registry_document(self) -> dict[str, Any]:
        return self.registry.to_dict()

    # --- status ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = int(self.clock())
        own = {self.logs.origin(ns): self.logs.head(ns) for ns in self.logs.namespaces.current()}
        peers = []
        for p in self._peers():
            heads = self.heads.get(p.did, {})
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
            "registry_history": [c.to_dict() for c in self.registry_state.history][-100:],
            "registry_digest": self.registry.digest(),
            "receipts_final": len(self.store.list_state(RECEIPT_SCOPE)),
            "claim_refusals": list(self.claim_refusals),
        }


def _merge_signatures(stored: Record, incoming: Record, registry: Registry) -> Record:
    """``stored`` with the witness signatures of ``incoming`` by registry peers it lacks."""
    have = {(s.kid, s.role) for s in stored.signatures}
    extra = [s for s in incoming.signatures if s.role == "witness" and (s.kid, s.role) not in have
             and registry.peer_by_key(s.kid) is not None]  # fmt: skip
    if not extra:
        return stored
    env = stored.envelope()
    env["signatures"] = [*env["signatures"], *(s.to_dict() for s in extra)]
    return Record.from_value(env)


def _applied_from_dict(d: Any) -> AppliedChange:
    return AppliedChange(
        proposal_id=str(d["proposal_id"]),
        event_hash=str(d["event_hash"]),
        registry_digest=str(d["registry_digest"]),
        approved_by=tuple(str(x) for x in d["approved_by"]),
        at=int(d["at"]),
        superseded=tuple(str(x) for x in d["superseded"]),
        memo=d["memo"] if isinstance(d["memo"], str) else None,
    )


def _load_registry_state(
    store: Store, configured: Registry, now: int
) -> tuple[RegistryState, dict[str, Record]]:
    """The registry state kept in the store (it takes precedence over
    ``federation.yaml``), or a fresh one from the configured registry."""
    raw = store.get_state(REGISTRY_SCOPE, REGISTRY_KEY)
    if raw is None:
        return RegistryState(configured), {}
    try:
        doc = json.loads(raw)
        registry = Registry.from_dict(doc["registry"], source="store:federation-registry")
        if registry.federation_id != configured.federation_id:
            log.warning("the stored registry is for federation %s, the configured one for %s;"
                        " using the configured one", registry.federation_id, configured.federation_id)  # fmt: skip
            return RegistryState(configured), {}
        state = RegistryState(
            registry,
            applied=tuple(_applied_from_dict(a) for a in doc["applied"]),
            history=tuple(StatusChange.from_dict(h) for h in doc["history"]),
            dropped=tuple(str(d) for d in doc.get("dropped", [])),
        )
    except (RemembrancerError, ValueError, KeyError, TypeError) as e:
        log.error("the stored federation registry is unreadable (%s); using federation.yaml", e)
        return RegistryState(configured), {}
    records: dict[str, Record] = {}
    received = doc.get("received", {})
    stored = doc.get("records", {})
    # In the order they were received, each at its time (a state written before
    # expiry existed has no times: they count from now).
    for pid in sorted(stored, key=lambda k: (int(received.get(k, now)), k)):
        try:
            record = Record.from_bytes(stored[pid].encode("utf-8"))
            state = state.propose(record, int(received.get(pid, now)))
        except (RemembrancerError, ValueError, TypeError) as e:
            log.warning("dropping stored proposal %s: %s", pid, e)
            continue
        records[record.event_id] = record
    state = state.expire(now)
    return state, {k: r for k, r in records.items() if k in state.pending}

"""Countersigned federation receipts: proposing, countersigning, collecting, keeping.

For a verified anchor of one of this node's logs, :meth:`Countersigning.propagate`
signs a federation receipt proposal (role ``anchor``) and sends it to the
active peers in an ``anchor`` message.  Each peer re-verifies the checkpoint
with the log's key (from its witness configuration) and the anchor's
evidence with its own rails, trust settings and required depth
(:func:`judge_claim`: never the claim's ``status`` or ``finality``), then
answers with a ``countersign`` message.  At ``quorum`` distinct active peers
that span the registry's ``receipts.min_regions`` regions the receipt is
final; it is stored and sent to every peer in a ``receipt`` message, and it verifies offline with ``remembrancer federation verify``.

A claim this node finds false is never countersigned and is proven
misbehaviour (:class:`~remembrancer.federation.misbehaviour.Misbehaviour`).
Everything a node stores, and so everything it relays, went through
:meth:`Countersigning.checked_receipt`, which drops countersignatures that do
not verify against the registry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from remembrancer.anchoring.base import DEPTH_INSUFFICIENT, RailRegistry, Verdict, VerifyContext
from remembrancer.core.anchor import Anchor, checkpoint_digest, covers
from remembrancer.core.checkpoint import open_checkpoint
from remembrancer.core.errors import ConfigError, PeerError, RemembrancerError
from remembrancer.core.histogram import LatencyHistogram
from remembrancer.core.keys import PublicKey, SigningKey
from remembrancer.core.note import NoteVerifier
from remembrancer.federation.evidence.claims import Finding
from remembrancer.federation.metrics import FederationMetrics
from remembrancer.federation.misbehaviour import DroppedItems, Misbehaviour
from remembrancer.federation.outbox import Outbox
from remembrancer.federation.peers import PeerDirectory
from remembrancer.federation.protocol.contents import (
    AnchorContent,
    CountersignContent,
    ReceiptContent,
)
from remembrancer.federation.receipts import (
    Countersignature,
    FederationReceipt,
    Role,
    signer_regions,
    verified_countersignatures,
    verify_countersignature,
    verify_federation_receipt,
)
from remembrancer.storage.base import ANY, FederationReceiptRow, Store, split_receipt_cursor

__all__ = ["MAX_CLAIM_REFUSALS", "RECEIPT_PAGE", "Countersigning", "judge_claim"]

log = logging.getLogger("remembrancer.federation")
RECEIPT_PAGE: Final = 256  # federation receipts per store read
"""Store state scope of final receipts: ``<namespace>/<receipt id>`` -> JSON."""
MAX_CLAIM_REFUSALS: Final = 100  # kept for GET /v1/federation
# Refusals that say nothing against the claimant: this node lacks what it needs,
# or its own policy asks for more depth than the claimant's.
_NO_BLAME: Final = frozenset({"anchor_claim_unchecked", "anchor_claim_depth_insufficient"})


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


@dataclass
class _Proposal:
    receipt: FederationReceipt
    started: float
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Countersigning:
    """This node's side of federation receipts: as proposer and as countersigner."""

    def __init__(
        self,
        peers: PeerDirectory,
        outbox: Outbox,
        misbehaviour: Misbehaviour,
        dropped: DroppedItems,
        key: SigningKey,
        store: Store,
        logs: Any,  # the sequencer: origin()
        rails: RailRegistry,
        log_verifiers: Mapping[str, Sequence[NoteVerifier]],
        *,
        clock: Callable[[], float],
        metrics: FederationMetrics | None = None,
    ) -> None:
        self.peers = peers
        self.metrics = metrics or FederationMetrics()
        self.outbox = outbox
        self.misbehaviour = misbehaviour
        self.dropped = dropped
        self.key = key
        self.store = store
        self.logs = logs
        self.rails = rails
        self.log_verifiers = log_verifiers
        self.clock = clock
        self._proposals: dict[str, _Proposal] = {}
        self.latencies = LatencyHistogram()  # proposal -> final, seconds (bounded)
        # Anchor claims this node refused to countersign, newest last.
        self.claim_refusals: deque[dict[str, Any]] = deque(maxlen=MAX_CLAIM_REFUSALS)

    # --- as countersigner ----------------------------------------------------------
    async def countersign(self, sender: str, content: AnchorContent, raw: bytes = b"") -> None:
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
                    await self.misbehaviour.report_false_claim(sender, raw, finding, now)
                except RemembrancerError as err:
                    log.warning("our evidence against %s was not kept: %s", sender, err.explain())
            elif blame:
                await self.peers.count_invalid(sender, e.code, now)
            return
        cs = self._countersignature(receipt, "witness", now)
        peer = self.peers.registry.get(sender)
        if peer is not None:
            await self.outbox.deliver([peer], CountersignContent(content.namespace, receipt.id, cs))

    def pending(self) -> int:
        """Proposals waiting for a quorum of countersignatures."""
        return len(self._proposals)

    def collect(self, sender: str, content: CountersignContent) -> None:
        """A countersignature for one of our proposals: kept if it verifies."""
        proposal = self._proposals.get(content.receipt_id)
        if proposal is None or content.signature.node != sender:
            return
        receipt = proposal.receipt.with_signature(content.signature)
        if not self._valid_signature(receipt, content):
            return  # never kept, even once the quorum is met without it
        if all(s.node != sender for s in proposal.receipt.signatures):  # its first one
            self.metrics.countersigned(sender, time.perf_counter() - proposal.started)
        effective = self.peers.effective()
        peers = {p.did: p.pubkey for p in effective}
        registry = self.peers.registry
        try:
            verify_federation_receipt(
                receipt,
                peers,
                registry.quorum,
                active=[p.did for p in effective if p.status == "active"],
                regions=registry.regions(),
                min_regions=registry.receipt_regions,
            )
        except RemembrancerError as e:
            if e.code in ("receipt_quorum_not_met", "receipt_regions_not_met"):
                proposal.receipt = receipt
            return
        proposal.receipt = replace(receipt, finalized_at=int(self.clock()))
        proposal.done.set()

    def _valid_signature(self, receipt: FederationReceipt, content: CountersignContent) -> bool:
        peer = next((p for p in self.peers.effective() if p.did == content.signature.node), None)
        return peer is not None and verify_countersignature(receipt, content.signature, peer.pubkey)

    def _countersignature(
        self, receipt: FederationReceipt, role: Role, now: int
    ) -> Countersignature:
        """Our countersignature under the DID the registry lists for us."""
        sig = self.key.sign(receipt.signing_input(self.peers.self_did, role, now))
        return Countersignature(self.peers.self_did, role, now, sig)

    # --- checking and keeping ----------------------------------------------------------
    def verify_final(self, receipt: FederationReceipt) -> None:
        """Check a finished receipt against the registry.  Registry statuses,
        not our own scores: a countersigner we put on probation during a
        partition still made a valid countersignature while it was active in
        the registry, and every node must judge a receipt the same way."""
        registry = self.peers.registry
        peers = registry.peers
        verify_federation_receipt(receipt, {p.did: p.pubkey for p in peers}, registry.quorum,
                                  active=[p.did for p in peers if p.status == "active"],
                                  regions=registry.regions(),
                                  min_regions=registry.receipt_regions)  # fmt: skip

    def receipt_doc(self, receipt: FederationReceipt) -> dict[str, Any]:
        """A final receipt as stored and served: the wire form plus a ``regions``
        summary (the distinct registry regions of its countersigners and the
        policy's ``min_regions``), which the explorer shows.  The summary is
        this node's reading of its registry, never evidence: a verifier
        recomputes it from its own registry (``federation verify``)."""
        registry = self.peers.registry
        out = receipt.to_dict(quorum=registry.quorum)
        signers = [s.node for s in receipt.signatures]
        out["regions"] = {"signed": list(signer_regions(signers, registry.regions())),
                          "min_regions": registry.receipt_regions}  # fmt: skip
        return out

    def registry_keys(self) -> dict[str, PublicKey]:
        """Each registry peer's DID -> key (every status), what countersignatures verify against."""
        return {p.did: p.pubkey for p in self.peers.registry.peers}

    def checked_receipt(self, receipt: FederationReceipt) -> FederationReceipt:
        """The relay filter: ``receipt`` with only the countersignatures that verify
        against the registry (the others are dropped and counted, and nobody is
        blamed for them), checked final with :meth:`verify_final`.  Everything a
        node stores, and so everything it relays, has been through here."""
        kept, dropped = verified_countersignatures(receipt, self.registry_keys())
        for cs, code in dropped:
            self.dropped.count("countersignature", code)
            log.info("dropped a countersignature by %s on %s: %s", cs.node[:80], receipt.id, code)
        self.verify_final(kept)
        return kept

    def keep_receipt(self, receipt: FederationReceipt) -> bool:
        """Store a final receipt that went through :meth:`checked_receipt`, or add
        its countersignatures to the stored receipt of the same statement (a
        receipt with the same id and another statement leaves the stored one as
        it is).  Blocking; whether anything changed."""
        for _ in range(8):
            row = self.store.federation_receipt(receipt.namespace, receipt.id)
            raw = None if row is None else row.receipt
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
            value = json.dumps(self.receipt_doc(merged)).encode()
            new = FederationReceiptRow(receipt.namespace, receipt.id, value)
            if self.store.put_federation_receipt(new, expect=raw):
                return True
        return False

    # --- as proposer -------------------------------------------------------------------
    async def propagate(
        self, namespace: str, anchor: Anchor, checkpoint: bytes, *, timeout: float = 10.0
    ) -> FederationReceipt:
        """Ask the peers to countersign ``anchor`` of ``checkpoint``; return the
        final receipt (RemembrancerError ``quorum_not_reached`` on timeout)."""
        now = int(self.clock())
        me = self.peers.self_did
        receipt = FederationReceipt(
            self.peers.registry.federation_id, namespace, self.logs.origin(namespace), checkpoint,
            anchor,
        )  # fmt: skip
        own = receipt.countersign(self.key, "anchor", now)
        own = replace(own, node=me, sig=self.key.sign(receipt.signing_input(me, "anchor", now)))
        receipt = receipt.with_signature(own)
        proposal = _Proposal(receipt, time.perf_counter())
        self._proposals[receipt.id] = proposal
        # Deliver to every peer while waiting for the quorum: a slow or lost
        # delivery to one peer (retried) must not hold back a quorum of others.
        sending = asyncio.ensure_future(self.outbox.deliver(
            self.peers.others("countersign"), AnchorContent(namespace, receipt.to_dict())
        ))  # fmt: skip
        try:
            try:
                await asyncio.wait_for(proposal.done.wait(), timeout)
            except TimeoutError as e:
                self.metrics.receipt(namespace, "not_final", time.perf_counter() - proposal.started)
                registry = self.peers.registry
                spanned = signer_regions([c.node for c in proposal.receipt.signatures],
                                         registry.regions())  # fmt: skip
                raise PeerError(
                    f"{len(proposal.receipt.signatures)} countersignatures from"
                    f" {len(spanned)} regions; quorum is {registry.quorum}, regions"
                    f" {registry.receipt_regions}",
                    code="quorum_not_reached",
                ) from e
            final = proposal.receipt
            seconds = time.perf_counter() - proposal.started
            self.latencies.observe(seconds)
            self.metrics.receipt(namespace, "final", seconds)
            await asyncio.to_thread(self._store_receipt, final)
            await self.outbox.deliver(
                self.peers.others(),
                ReceiptContent(namespace, final.to_dict(quorum=self.peers.registry.quorum)),
            )
            return final
        finally:
            self._proposals.pop(receipt.id, None)
            if not sending.done():
                sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)

    async def on_anchor_verified(self, namespace: str, anchor: Anchor, checkpoint: bytes) -> None:
        """Scheduler hook: countersign every newly verified anchor of our logs."""
        try:
            await self.propagate(namespace, anchor, checkpoint)
        except RemembrancerError as e:
            log.warning(
                "federation receipt for %s %s not final: %s", namespace, anchor.key, e.explain()
            )

    def _store_receipt(self, receipt: FederationReceipt) -> None:
        doc = json.dumps(self.receipt_doc(receipt)).encode()
        self.store.put_federation_receipt(
            FederationReceiptRow(receipt.namespace, receipt.id, doc), expect=ANY
        )

    # --- reading -----------------------------------------------------------------------
    def iter_receipts(self, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        """Every final receipt (of ``namespace``), a page at a time, in
        ``(namespace, receipt id)`` order."""
        after: tuple[str, str] | None = None
        while page := self.store.federation_receipts(namespace, after=after, limit=RECEIPT_PAGE):
            for row in page:
                yield json.loads(row.receipt)
            after = (page[-1].namespace, page[-1].receipt_id)

    def receipts(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return list(self.iter_receipts(namespace))

    def receipts_page(
        self, namespace: str | None = None, *, after: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        """``GET /v1/federation/receipts``: final receipts (of ``namespace``) in
        ``(namespace, receipt id)`` order, ``limit`` per page after the cursor
        ``after`` (``<namespace>/<receipt id>``); ``next`` is the cursor of the
        next page (None on the last).  One indexed query per page."""
        rows = self.store.federation_receipts(namespace, after=split_receipt_cursor(after),
                                              limit=limit + 1)  # fmt: skip
        more = len(rows) > limit
        rows = rows[:limit]
        return {"receipts": [json.loads(r.receipt) for r in rows],
                "next": rows[-1].cursor if more and rows else None}  # fmt: skip

    def final_count(self) -> int:
        """How many final receipts this node holds."""
        return self.store.federation_receipt_count()

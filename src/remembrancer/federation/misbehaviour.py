"""Misbehaviour: evidence verified here, kept (bounded per subject), acted on and gossiped.

Evidence proves an offence only through a statement the accused signed that
is false on its face (:mod:`remembrancer.federation.evidence`); this node
re-derives every finding with its own rails and trust settings before it
keeps a file, changes a score or tells its peers.  What arrives in accepted
messages and proves nothing (a countersignature that does not verify,
evidence about a stranger or beyond the per-subject bound) is dropped and
counted in :class:`DroppedItems`: nobody is blamed for it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client import Counter

from remembrancer.anchoring.base import RailRegistry, VerifyContext, judged
from remembrancer.core.anchor import Anchor
from remembrancer.core.errors import ConfigError, PolicyError, RemembrancerError, VerificationError
from remembrancer.core.keys import PublicKey, SigningKey
from remembrancer.core.note import NoteVerifier, Verifier
from remembrancer.federation.evidence.claims import ClaimEvidence, Finding, verify_claim_evidence
from remembrancer.federation.evidence.equivocation import EquivocationEvidence, verify_equivocation
from remembrancer.federation.evidence.parse import parse_evidence
from remembrancer.federation.evidence.store import EvidenceStore
from remembrancer.federation.outbox import Outbox
from remembrancer.federation.peers import PeerDirectory
from remembrancer.federation.protocol.contents import EvidenceContent
from remembrancer.storage.base import Store

__all__ = ["DroppedItems", "Misbehaviour"]

log = logging.getLogger("remembrancer.federation")


class DroppedItems:
    """Items of accepted messages dropped instead of kept or relayed, by (item, code)."""

    def __init__(self, metrics_registry: Any = None) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._metric = (
            None
            if metrics_registry is None
            else Counter("remembrancer_federation_dropped_total",
                         "Items of accepted federation messages dropped instead of kept or relayed",
                         ["item", "code"], registry=metrics_registry)
        )  # fmt: skip

    def count(self, item: str, code: str) -> None:
        """Count one dropped ``item`` (``countersignature``, ``evidence``) and why."""
        self.counts[(item, code)] += 1
        if self._metric is not None:
            self._metric.labels(item, code).inc()


class Misbehaviour:
    """Verifies evidence, keeps it, puts the offender on probation and tells the peers."""

    def __init__(
        self,
        peers: PeerDirectory,
        outbox: Outbox,
        key: SigningKey,
        store: Store,
        rails: RailRegistry,
        log_verifiers: Mapping[str, Sequence[NoteVerifier]],
        dropped: DroppedItems,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.peers = peers
        self.outbox = outbox
        self.key = key
        self.rails = rails
        self.log_verifiers = log_verifiers
        self.dropped = dropped
        self.clock = clock
        self.evidence_store = EvidenceStore(store)

    async def on_evidence(self, sender: str, content: EvidenceContent) -> None:
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
            self.dropped.count("evidence", e.code)
            log.info("evidence from %s not acted on: %s", sender, e.explain())
        except VerificationError as e:
            if isinstance(ev, EquivocationEvidence):
                raise
            self.dropped.count("evidence", e.code)
            log.info("evidence from %s not acted on: %s", sender, e.explain())

    async def report_equivocation(
        self, evidence: EquivocationEvidence, *, gossip: bool = True
    ) -> dict[str, Any]:
        """Verify equivocation evidence, keep it, put the log's node on probation
        (the scoring rule), and tell every peer."""
        registry = self.peers.registry
        report = verify_equivocation(evidence)
        peer = registry.peer_by_key(report.log_key)
        if peer is None and not self._witnesses(report.origin, report.log_key):
            raise PolicyError(
                f"{report.origin} is signed by {report.log_key.did}, which is no peer of"
                f" {registry.federation_id} and no log this node witnesses",
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
        if peer is not None and peer.did != self.peers.self_did:
            change = self.peers.scores.on_misbehaviour(peer.did, report, int(self.clock()))
            out["status_change"] = change.to_dict()
            await self.peers.save()
            log.error(
                "equivocation by %s (%s): %s -> %s", peer.did, report.origin, change.old, change.new
            )
        if gossip and peer is not None:
            # A log that is no peer's concerns only the nodes that witness it: the
            # others would refuse the evidence (evidence_subject_unknown).
            await self.outbox.gossip(self.peers.others(), EvidenceContent(
                "equivocation", peer.did, evidence.to_bytes().decode("utf-8")))  # fmt: skip
        return out

    def _witnesses(self, origin: str, key: PublicKey) -> bool:
        """Whether ``origin`` signed by ``key`` is one of the logs this node witnesses."""
        return any(isinstance(v, Verifier) and v.name == origin and v.public_key == key
                   for v in self.log_verifiers.get(origin, ()))  # fmt: skip

    async def report_false_claim(
        self, accused: str, raw: bytes, finding: Finding, now: int
    ) -> None:
        """Make, sign and report ``invalid_anchor_claim`` evidence against the
        sender of the ``anchor`` message ``raw``, whose claim this node found false."""
        peer = self.peers.registry.get(accused)
        if peer is None:
            return
        evidence = ClaimEvidence.create(
            kind="invalid_anchor_claim", federation_id=self.peers.registry.federation_id,
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
            await self.peers.count_invalid(peer.did, e.code, now)

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
            verify_claim_evidence, evidence, self.peers.registry, reverify=reverify
        )
        data = evidence.to_bytes()
        ref = await asyncio.to_thread(
            self.evidence_store.keep, report.accused, report.incident, report.evidence_ref, data
        )
        out: dict[str, Any] = {"evidence_ref": ref, "accused": report.accused}
        if report.accused != self.peers.self_did:
            change = self.peers.scores.on_misbehaviour(report.accused, report, now)
            out["status_change"] = change.to_dict()
            await self.peers.save()
            log.error(
                "invalid anchor claim by %s: %s -> %s", report.accused, change.old, change.new
            )
        if gossip:
            await self.outbox.gossip(self.peers.others(), EvidenceContent(
                evidence.kind, report.accused, data.decode("utf-8")))  # fmt: skip
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

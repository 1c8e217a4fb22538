"""Prometheus metrics of the federation service (docs/operations.md, "Metrics").

Two kinds:

- events, counted where they happen (:class:`FederationMetrics`, no-ops
  without a registry): each peer's countersignature latency, each federation
  receipt's time to final, and receipts by how they ended;
- state, read from the service when Prometheus scrapes
  (:class:`FederationCollector`): each peer's effective status, score and
  heartbeat age, and the receipts still waiting for countersignatures.  It
  runs on the event loop (the ``/metrics`` handler's), the only thread that
  changes what it reads, and does no I/O.

Labels stay bounded: ``peer`` is a registry DID (the registry bounds the
peers), ``namespace`` a namespace hosted here, ``state`` one of
:data:`RECEIPT_STATES`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from remembrancer.federation.registry.model import STATUSES
from remembrancer.federation.registry.scoring import effective_peers

if TYPE_CHECKING:
    from remembrancer.federation.service import FederationService

__all__ = ["RECEIPT_STATES", "FederationCollector", "FederationMetrics"]

# How a federation receipt this node proposed ended: a quorum countersigned it
# (``final``), or the proposal timed out first (``not_final``).
RECEIPT_STATES: Final = ("final", "not_final")
LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class FederationMetrics:
    """Counters and histograms of the federation service (no-ops without a registry)."""

    def __init__(self, registry: Any = None, service: FederationService | None = None) -> None:
        self.enabled = registry is not None
        if not self.enabled:
            return
        r = registry
        self.countersignature_seconds = Histogram(
            "remembrancer_countersignature_seconds",
            "Time from proposing a federation receipt to a peer's valid countersignature",
            ["peer"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.receipt_final_seconds = Histogram(
            "remembrancer_receipt_final_seconds",
            "Time from proposing a federation receipt (own countersignature) to final (quorum)",
            ["namespace"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.receipts = Counter(
            "remembrancer_federation_receipts_total",
            "Federation receipts this node proposed, by how they ended (final, not_final)",
            ["namespace", "state"], registry=r,
        )  # fmt: skip
        if service is not None:
            r.register(FederationCollector(service))

    def countersigned(self, peer: str, seconds: float) -> None:
        """A valid countersignature from ``peer``, ``seconds`` after the proposal."""
        if self.enabled:
            self.countersignature_seconds.labels(peer).observe(seconds)

    def receipt(self, namespace: str, state: str, seconds: float) -> None:
        """A proposal of ``namespace`` ended in ``state`` after ``seconds``."""
        if not self.enabled:
            return
        for s in RECEIPT_STATES:  # both series exist once one does (for ratios in alerts)
            self.receipts.labels(namespace, s)
        self.receipts.labels(namespace, state).inc()
        if state == "final":
            self.receipt_final_seconds.labels(namespace).observe(seconds)


class FederationCollector(Collector):
    """Peer status, score and heartbeat age, and pending receipts, at scrape time.

    A peer whose heartbeat never arrived has the age since this collector was
    made (about when the node started).  Peers the registry itself suspended
    have no heartbeat age: nobody expects their heartbeats."""

    def __init__(self, service: FederationService) -> None:
        self.service = service
        self.since = service.clock()

    def describe(self) -> Iterator[Any]:
        return iter(())  # collected at scrape time only (nothing to check at registration)

    def collect(self) -> Iterator[Any]:
        service = self.service
        now = service.clock()
        status = GaugeMetricFamily(
            "remembrancer_peer_status",
            "1 for each peer's effective status here (registry and own scoring), 0 for the others",
            labels=["peer", "status"],
        )
        score = GaugeMetricFamily(
            "remembrancer_peer_score", "Each peer's score in [0, 100] here", labels=["peer"]
        )
        age = GaugeMetricFamily(
            "remembrancer_peer_heartbeat_age_seconds",
            "Seconds since each peer's last heartbeat arrived (since start if none did)",
            labels=["peer"],
        )
        listed = {p.did: p.status for p in service.registry.peers}
        for peer in effective_peers(service.registry, service.scores):
            if peer.did == service.self_did:
                continue
            for s in STATUSES:
                status.add_metric([peer.did, s], 1.0 if peer.status == s else 0.0)
            score.add_metric([peer.did], service.scores.score(peer.did))
            if listed.get(peer.did) != "suspended":
                seen = service.heads.get(peer.did, {}).get("at_precise") or self.since
                age.add_metric([peer.did], max(0.0, now - seen))
        yield status
        yield score
        yield age
        yield GaugeMetricFamily(
            "remembrancer_federation_receipts_pending",
            "Federation receipts proposed here and waiting for a quorum of countersignatures",
            value=service.pending_receipts(),
        )

"""Prometheus metrics of one node (its own registry, so tests can run many nodes)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("remembrancer_http_requests_total", "HTTP requests by route and status",
                                ["route", "method", "status"], registry=r)  # fmt: skip
        self.admitted = Counter(
            "remembrancer_records_admitted_total", "Records admitted", ["namespace"], registry=r
        )
        self.rejected = Counter("remembrancer_records_rejected_total", "Records refused, by error code",
                                ["namespace", "code"], registry=r)  # fmt: skip
        self.batch_size = Histogram("remembrancer_batch_size", "Records per integrated batch",
                                    buckets=(1, 4, 16, 64, 256, 1024, 4096), registry=r)  # fmt: skip
        self.integration_seconds = Histogram("remembrancer_integration_seconds",
                                             "Time from receipt to acknowledgement of a record",
                                             buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                                             registry=r)  # fmt: skip
        self.log_size = Gauge(
            "remembrancer_log_size", "Entries in each log", ["namespace"], registry=r
        )
        # via="direct": this node's rail; via="delegated": handed to a collaborative
        # coordinator (succeeded: its aggregate was accepted; failed: none by the deadline).
        self.anchors = {
            outcome: Counter(f"remembrancer_anchors_{outcome}_total", f"Anchors {outcome}",
                             ["namespace", "level", "target", "via"], registry=r)
            for outcome in ("attempted", "succeeded", "failed")
        }  # fmt: skip
        self.cosignature_seconds = Histogram("remembrancer_cosignature_seconds",
                                             "Time from signing a checkpoint to a quorum of witness cosignatures",
                                             buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                             registry=r)  # fmt: skip
        self.witness_requests = Counter("remembrancer_witness_requests_total",
                                        "add-checkpoint requests by outcome", ["outcome"], registry=r)  # fmt: skip
        # Series that alerts watch with increase() exist from the start, at 0.
        self.witness_requests.labels("witness_root_mismatch")
        self.xns_delivered = Counter("remembrancer_xns_delivered_total",
                                     "Cross-namespace messages delivered into a namespace here",
                                     ["source", "target", "action"], registry=r)  # fmt: skip
        self.xns_relayed = Counter("remembrancer_xns_relayed_total",
                                   "Cross-namespace messages relayed to the target's home node",
                                   ["target"], registry=r)  # fmt: skip
        self.xns_rejected = Counter("remembrancer_xns_rejected_total",
                                    "Cross-namespace messages refused, by error code", ["code"],
                                    registry=r)  # fmt: skip
        self.storage_errors = Counter("remembrancer_storage_errors_total",
                                      "Storage failures seen by writes and readiness probes, by error code",
                                      ["code"], registry=r)  # fmt: skip
        self.storage_writable = Gauge("remembrancer_storage_writable",
                                      "1 while storage takes writes, 0 after a failed write until one succeeds",
                                      registry=r)  # fmt: skip
        self.storage_writable.set(1)
        self.aggregates = Counter("remembrancer_aggregates_total",
                                  "Collaborative anchoring: delegated, made, received, refused, missed, fallback",
                                  ["event", "target"], registry=r)  # fmt: skip

    def anchor_event(
        self, outcome: str, namespace: str, level: str, target: str, via: str = "direct"
    ) -> None:
        self.anchors[outcome].labels(namespace, level, target, via).inc()

    def aggregate_event(self, event: str, target: str) -> None:
        self.aggregates.labels(event, target).inc()

    def start_aggregates(self, targets: list[str]) -> None:
        """Make the collaborative-anchoring series of ``targets`` exist, at 0."""
        for target in targets:
            for event in (
                "delegated",
                "made",
                "received",
                "refused",
                "missed",
                "fallback",
                "deferred",
            ):
                self.aggregates.labels(event, target)

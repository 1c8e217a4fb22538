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
        self.anchors = {
            outcome: Counter(f"remembrancer_anchors_{outcome}_total", f"Anchors {outcome}",
                             ["namespace", "level", "target"], registry=r)
            for outcome in ("attempted", "succeeded", "failed")
        }  # fmt: skip
        self.witness_requests = Counter("remembrancer_witness_requests_total",
                                        "add-checkpoint requests by outcome", ["outcome"], registry=r)  # fmt: skip

    def anchor_event(self, outcome: str, namespace: str, level: str, target: str) -> None:
        self.anchors[outcome].labels(namespace, level, target).inc()

"""Prometheus metrics of the replicas (no-ops without a registry)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge


class ReplicaMetrics:
    """Prometheus metrics of the replicas (no-ops without a registry)."""

    def __init__(self, registry: Any = None) -> None:
        self.enabled = registry is not None
        if not self.enabled:
            return
        r = registry
        self.size = Gauge("remembrancer_replica_size", "Verified checkpoint size of each replica",
                          ["origin"], registry=r)  # fmt: skip
        self.lag = Gauge("remembrancer_replica_lag_entries",
                         "Entries the replica is behind the host's last heartbeat", ["origin"],
                         registry=r)  # fmt: skip
        self.mirrored = Counter("remembrancer_replica_entries_mirrored_total",
                                "Entries fetched, verified and stored by mirrors", ["origin"],
                                registry=r)  # fmt: skip
        self.failures = Counter("remembrancer_replica_fetch_failures_total",
                                "Fetches from peers that failed (transport, status)", ["origin"],
                                registry=r)  # fmt: skip
        self.refused = Counter("remembrancer_replica_refused_total",
                               "Items refused because they did not verify, by code", ["code"],
                               registry=r)  # fmt: skip

    def set_size(self, origin: str, size: int) -> None:
        if self.enabled:
            self.size.labels(origin).set(size)

    def set_lag(self, origin: str, lag: int) -> None:
        if self.enabled:
            self.lag.labels(origin).set(lag)

    def add_mirrored(self, origin: str, n: int) -> None:
        if self.enabled:
            self.mirrored.labels(origin).inc(n)

    def add_failure(self, origin: str) -> None:
        if self.enabled:
            self.failures.labels(origin).inc()

    def add_refused(self, code: str) -> None:
        if self.enabled:
            self.refused.labels(code).inc()

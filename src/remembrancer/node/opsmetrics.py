"""Metrics read from the store: misbehaviour evidence kept, anchoring health.

What these gauges show lives in the store (so it survives restarts and is
the same for every process on one store), and reading it is I/O, which never
runs on the event loop.  So :class:`StoreMetrics` is a collector that yields
the families of its last read, and :meth:`StoreMetrics.refresh` (awaited by
the ``/metrics`` handler before it renders) reads again in a worker thread:
at most every ``min_interval`` seconds, one read at a time, waited for at
most ``deadline`` seconds (a slow store makes the scrape show the previous
read, never hang).  ``remembrancer_store_metrics_timestamp_seconds`` says
when the families were read.

- ``remembrancer_evidence_incidents{subject,kind}``: incidents of proven
  misbehaviour kept about each subject (a registry DID, or the origin of a
  witnessed log that is no peer's).  Every registry peer (each kind) and
  every witnessed origin (``equivocation``) has a series from the start, 0
  until evidence arrives, so an alert can compare with the past.
- ``remembrancer_anchoring_status{namespace,status}``: 1 for each hosted
  namespace's anchoring status (``ok``, ``backing_off``, ``stale``,
  ``not_configured``, as in ``/healthz``), 0 for the others.
- ``remembrancer_anchoring_level_failures{namespace,level,target}``: failed
  attempts in a row of each cadence level.
- ``remembrancer_anchoring_last_anchor_timestamp_seconds{namespace,level,target}``:
  when each level last anchored (or handed its checkpoint to a
  collaborative coordinator); no sample before the first time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, get_args

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from remembrancer.core.errors import RemembrancerError
from remembrancer.federation.evidence.claims import ClaimKind
from remembrancer.federation.evidence.equivocation import EquivocationEvidence
from remembrancer.federation.evidence.parse import parse_evidence

if TYPE_CHECKING:
    from remembrancer.node.runtime import Node

__all__ = ["ANCHORING_STATUSES", "EVIDENCE_KINDS", "StoreMetrics"]

log = logging.getLogger("remembrancer.node")
EVIDENCE_KINDS: Final[tuple[str, ...]] = ("equivocation", *get_args(ClaimKind))
ANCHORING_STATUSES: Final = ("ok", "backing_off", "stale", "not_configured")
MAX_KNOWN_FILES: Final = 10_000  # evidence_ref -> kind cache (files never change)


class StoreMetrics(Collector):
    """Gauges of what the node's store holds (see the module docstring)."""

    def __init__(self, node: Node, *, min_interval: float = 5.0, deadline: float = 2.0) -> None:
        self.node = node
        self.min_interval = min_interval
        self.deadline = deadline
        self._families: list[GaugeMetricFamily] = []
        self._kinds: dict[str, str] = {}
        self._task: asyncio.Future[list[GaugeMetricFamily]] | None = None
        self._started = -float("inf")

    def describe(self) -> Iterator[Any]:
        return iter(())  # collected at scrape time only

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return iter(list(self._families))

    async def refresh(self) -> None:
        """Read again if the last read is older than ``min_interval`` (see above)."""
        now = time.monotonic()
        if (self._task is None or self._task.done()) and now - self._started >= self.min_interval:
            self._started = now
            self._task = asyncio.ensure_future(asyncio.to_thread(self.read))
            self._task.add_done_callback(self._done)
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task}, timeout=self.deadline)

    def _done(self, task: asyncio.Future[list[GaugeMetricFamily]]) -> None:
        if task.cancelled():
            return
        e = task.exception()
        if e is None:
            self._families = task.result()
        elif isinstance(e, RemembrancerError):
            log.warning("metrics: could not read the store: %s", e.explain())
        else:
            log.error("metrics: could not read the store", exc_info=e)

    # --- reading (a worker thread) -----------------------------------------------------
    def read(self) -> list[GaugeMetricFamily]:
        """The families, read now (blocking)."""
        families = [*self._evidence(), *self._anchoring()]
        stamp = GaugeMetricFamily("remembrancer_store_metrics_timestamp_seconds",
                                  "When the gauges read from the store were read", value=time.time())  # fmt: skip
        return [*families, stamp]

    def _evidence(self) -> list[GaugeMetricFamily]:
        node, store = self.node, self.node.store
        counts: dict[tuple[str, str], int] = {}
        if node.federation is not None:
            me = node.federation.self_did
            for peer in node.federation.registry.peers:
                if peer.did != me:
                    counts.update({(peer.did, kind): 0 for kind in EVIDENCE_KINDS})
        for w in node.witnessed:
            counts.setdefault((w.origin, "equivocation"), 0)
        if len(self._kinds) > MAX_KNOWN_FILES:
            self._kinds.clear()
        after: str | None = None
        while page := store.evidence_page(after=after, limit=1000):
            after = page[-1].ref
            for row in page:
                kind = self._kinds.get(row.ref) or self._kind(row.ref, row.data)
                if kind is not None:
                    counts[(row.subject, kind)] = counts.get((row.subject, kind), 0) + 1
        family = GaugeMetricFamily(
            "remembrancer_evidence_incidents",
            "Incidents of proven misbehaviour kept here, by subject (peer DID or log origin) and kind",
            labels=["subject", "kind"],
        )
        for (subject, kind), n in sorted(counts.items()):
            family.add_metric([subject, kind], n)
        return [family]

    def _kind(self, ref: str, data: bytes) -> str | None:
        try:
            ev = parse_evidence(data)
        except RemembrancerError:
            return None
        kind = "equivocation" if isinstance(ev, EquivocationEvidence) else ev.kind
        self._kinds[ref] = kind
        return kind

    def _anchoring(self) -> list[GaugeMetricFamily]:
        status = GaugeMetricFamily(
            "remembrancer_anchoring_status",
            "1 for each namespace's anchoring status (as in /healthz), 0 for the others",
            labels=["namespace", "status"],
        )
        failures = GaugeMetricFamily(
            "remembrancer_anchoring_level_failures",
            "Failed anchoring attempts in a row, per cadence level",
            labels=["namespace", "level", "target"],
        )
        last = GaugeMetricFamily(
            "remembrancer_anchoring_last_anchor_timestamp_seconds",
            "When each cadence level last anchored (or handed its checkpoint to a coordinator)",
            labels=["namespace", "level", "target"],
        )
        for namespace, health in self.node.scheduler.health_all().items():
            for s in ANCHORING_STATUSES:
                status.add_metric([namespace, s], 1.0 if health["status"] == s else 0.0)
            for level, lv in sorted(health["levels"].items()):
                failures.add_metric([namespace, level, lv["target"]], lv["failures"])
                if lv["last_anchor_at"]:
                    last.add_metric([namespace, level, lv["target"]], lv["last_anchor_at"])
        return [status, failures, last]

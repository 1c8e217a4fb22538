"""One node's moving parts: store, sequencer, namespaces, witness, metrics.

:class:`Node` is built from a :class:`~remembrancer.node.config.NodeConfig`
(or directly, in tests) and is what the ASGI application serves.  It owns
the only writer of each log (the sequencer) and the witness server
(:class:`~remembrancer.federation.witness_server.WitnessServer`), whose
check-and-update is atomic (compare-and-swap on size in the store).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from remembrancer import __version__
from remembrancer.anchoring.base import RailRegistry
from remembrancer.anchoring.scheduler import Scheduler
from remembrancer.core.cosignature import format_cosigner_vkey
from remembrancer.core.errors import ConfigError, NotFoundError, RemembrancerError, StorageError
from remembrancer.core.jcs import loads_strict
from remembrancer.core.keys import SigningKey
from remembrancer.core.namespace import NamespaceConfig
from remembrancer.core.note import NoteVerifier, format_vkey, parse_vkey
from remembrancer.core.record import Record
from remembrancer.core.schema import SchemaRegistry
from remembrancer.core.witness import (
    AddCheckpointRequest,
    WitnessRefusal,
    checkpoint_origin,
)
from remembrancer.federation.antientropy.claims import ClaimBudget
from remembrancer.federation.antientropy.model import ReplicaSpec
from remembrancer.federation.antientropy.replicator import Replicator, SequencerLogs
from remembrancer.federation.collaborative import CollaborativeAnchoring
from remembrancer.federation.registry.parse import load_federation_file
from remembrancer.federation.service import FederationService
from remembrancer.federation.settings import BudgetSettings
from remembrancer.federation.witness_server import WitnessServer
from remembrancer.federation.witnessing import CheckpointWitnessing, WitnessPeer
from remembrancer.federation.xns import Messaging
from remembrancer.log.namespaces import NamespaceSource
from remembrancer.log.schemas import bundled_schemas
from remembrancer.log.sequencer import NamespaceProvider, Receipt, Sequencer
from remembrancer.node.config import (
    Limits,
    NodeConfig,
    ReplicationSettings,
    WitnessedLog,
    check_data_dir,
)
from remembrancer.node.ha import LEASE_NAME, LeaseKeeper, holder_id
from remembrancer.node.keyfile import read_key_file
from remembrancer.node.lane import Lane
from remembrancer.node.metrics import NodeMetrics
from remembrancer.node.opsmetrics import StoreMetrics
from remembrancer.node.pending import PendingReceipts
from remembrancer.node.ratelimit import TokenBuckets
from remembrancer.storage import open_store
from remembrancer.storage.base import Store

log = logging.getLogger("remembrancer.node")

PROOF_LANE_PENDING = 4096  # proofs waiting for the proof thread, at most (then 503 overloaded)
# storage error code -> the storage status /healthz reports (others: "failing")
_STORAGE_STATUS = {"storage_full": "full", "unavailable": "unavailable",
                   "storage_unavailable": "unavailable", "pool_exhausted": "unavailable"}  # fmt: skip


@dataclass
class Node:
    store: Store
    node_key: SigningKey
    origin_prefix: str
    namespaces: NamespaceProvider
    limits: Limits = field(default_factory=Limits)
    admin_token: str | None = None
    witness_name: str = ""
    witnessed: tuple[WitnessedLog, ...] = ()
    clock: Any = time.time
    schemas: SchemaRegistry = field(default_factory=bundled_schemas)
    rails: RailRegistry = field(default_factory=RailRegistry)
    scheduler_enabled: bool = True
    scheduler_tick_s: float = 1.0
    scheduler_reverify_s: float = 10.0
    witness_peers: tuple[WitnessPeer, ...] = ()
    witness_quorum: int | None = None
    federation_registry: Any = None  # federation.registry.Registry
    federation_did: str | None = None
    heartbeat_seconds: float = 2.0
    antientropy_seconds: float = 5.0
    federation_budget: BudgetSettings = field(default_factory=BudgetSettings)
    replication: ReplicationSettings = field(default_factory=ReplicationSettings)
    ha: LeaseKeeper | None = None  # several processes over one PostgreSQL (node/ha.py)

    def __post_init__(self) -> None:
        self.witness_name = self.witness_name or f"{self.origin_prefix}/witness"
        self.metrics = NodeMetrics()
        self.sequencer = Sequencer(
            self.store, self.node_key, self.origin_prefix, self.namespaces, self.schemas,
            clock=self.clock, max_batch=self.limits.batch_size,
            max_wait=self.limits.batch_wait_ms / 1000, max_pending=self.limits.max_pending,
            verify_processes=self.limits.verify_processes,
        )  # fmt: skip
        self.sequencer.on_batch.append(self._on_batch)
        if self.ha is not None:
            self.sequencer.fence = self.ha.fence
            self.sequencer.authoritative = self.ha.leading
            self.sequencer.on_fenced = self.ha.fenced_append
            self.ha.on_change = self.sequencer.reset
        self.scheduler = Scheduler(
            self.store, self.sequencer, self.rails, clock=self.clock, metrics=self.metrics,
            tick_seconds=self.scheduler_tick_s, reverify_seconds=self.scheduler_reverify_s,
        )  # fmt: skip
        if self.ha is not None:
            self.scheduler.active = self.ha.leading
        self.witnessing = CheckpointWitnessing(
            self.sequencer, self.witness_peers, quorum=self.witness_quorum
        )
        self.sequencer.on_batch.append(self.witnessing.on_batch)
        self.witnessing.on_cosigned = self.metrics.cosignature_seconds.observe
        self.federation: FederationService | None = None
        self.collaborative: CollaborativeAnchoring | None = None
        self.replicator: Replicator | None = None
        if self.federation_registry is not None:
            verifiers = {
                o: [parse_vkey(v) for v in vk] for o, vk in self._witnessed_vkeys().items()
            }
            self.federation = FederationService(
                self.federation_registry, self.federation_did or self.node_key.did, self.node_key, self.store,
                self.sequencer, self.rails, verifiers, clock=self.clock, heartbeat_seconds=self.heartbeat_seconds,
                metrics_registry=self.metrics.registry,
            )  # fmt: skip
            self.scheduler.on_verified.append(self.federation.on_anchor_verified)
            # Collaborative/hybrid anchoring: the scheduler's delegate and the service's
            # checkpoint/receipt handlers; idle while the registry says independent.
            # Each extension gets the federation's parts it uses, never the whole service.
            fed = self.federation
            self.collaborative = CollaborativeAnchoring(
                fed, fed.peers, fed.outbox, fed.misbehaviour, self.node_key, self.store,
                self.rails, fed.log_verifiers, self.scheduler, metrics=self.metrics, clock=self.clock,
                anchors_per_epoch=self.federation_budget.anchors_per_epoch,
            )  # fmt: skip
            self.metrics.start_aggregates(self.rails.targets())
            # Anti-entropy: verified replicas of the witnessed logs (docs/anti-entropy.md).
            self.replicator = Replicator(
                fed, fed.peers, fed.outbox, fed.countersigning, fed.misbehaviour, self.store,
                [ReplicaSpec(w.origin, w.vkeys, w.mirror) for w in self.witnessed], self.rails,
                own=SequencerLogs(self.sequencer, self.node_key.public, self.scheduler.receipts),
                clock=self.clock, heartbeat_seconds=self.heartbeat_seconds,
                interval=self.antientropy_seconds, metrics_registry=self.metrics.registry,
                budget=claim_budget(self.federation_budget),
                memory_budget=self.replication.memory_budget_bytes,
                fetch_deadline=self.replication.fetch_deadline_s,
                sync_deadline=self.replication.sync_deadline_s,
            )  # fmt: skip
        self.client_limits = TokenBuckets(self.limits.client_rate, self.limits.client_burst)
        self.namespace_limits = TokenBuckets(
            self.limits.namespace_rate, self.limits.namespace_burst
        )
        self._witness_logs: dict[str, list[NoteVerifier]] = {}
        for w in self.witnessed:
            self._witness_logs[w.origin] = [parse_vkey(v) for v in w.vkeys]
        self._witness_lock = asyncio.Lock()
        self.witness = WitnessServer(
            self.store, self.witness_name, self.node_key, self._witness_logs, self.clock
        )
        # Cross-namespace messages (docs/messaging.md): delivery into our namespaces,
        # relay through the federation, its xns handler.
        m = self.metrics
        self.messaging = Messaging(
            self.sequencer, submit=self.submit, witnessed=self._witness_logs,
            witnessed_note=self.witnessed_checkpoint, relay_quorum=self.witnessing.quorum,
            relay_witnesses=[p.verifier for p in self.witness_peers], schemas=self.schemas,
            clock=self.clock, on_rejected=lambda code: m.xns_rejected.labels(code).inc(),
            on_delivered=lambda s, t, a: m.xns_delivered.labels(s, t, a).inc(),
            on_relayed=lambda t: m.xns_relayed.labels(t).inc(),
        )  # fmt: skip
        if self.federation is not None:
            fed = self.federation
            self.messaging.attach(fed, fed.peers, fed.outbox)
        # wait=false submissions until their receipt URL can answer (bounded).
        self.pending = PendingReceipts(self.limits.max_pending)
        # Proofs are generated one at a time (the sequencer's tile readers):
        # on one thread of their own, in batches (node/lane.py).
        self.proof_lane = Lane("proof", PROOF_LANE_PENDING)
        self.storage_health: dict[str, Any] = {"status": "ok", "last_error": None, "since": None}
        self.started = time.time()
        self.ready = False
        self.store_metrics = StoreMetrics(self)  # evidence, anchoring health (read at scrape time)
        self.metrics.registry.register(self.store_metrics)

    def _witnessed_vkeys(self) -> dict[str, tuple[str, ...]]:
        return {w.origin: w.vkeys for w in self.witnessed}

    @classmethod
    def from_config(cls, config: NodeConfig) -> Node:
        rails = RailRegistry(config.anchoring)
        try:  # every configured rail, now: a bad one stops the start, not the first anchor
            rails.build_all()
        except ConfigError as e:
            raise ConfigError(
                f"{config.path}: {e.message}", code=e.code, details={**e.details,
                "file": str(config.path)},
            ) from e  # fmt: skip
        check_data_dir(config.data_dir)
        schemas = bundled_schemas()
        store = open_store(config.storage)
        return cls(
            store=store,
            ha=_lease_keeper(config, store),
            node_key=read_key_file(config.node_key),
            origin_prefix=config.origin_prefix,
            namespaces=NamespaceSource(config.namespaces, schemas),
            limits=config.limits,
            admin_token=config.admin_token,
            witness_name=config.witness_name,
            witnessed=config.witnessed,
            schemas=schemas,
            rails=rails,
            scheduler_enabled=config.scheduler_enabled,
            scheduler_tick_s=config.scheduler_tick_s,
            scheduler_reverify_s=config.scheduler_reverify_s,
            witness_peers=tuple(
                WitnessPeer.from_config(e, f"witnessing.peers[{i}]")
                for i, e in enumerate(config.witness_peers)
            ),
            witness_quorum=config.witness_quorum,
            federation_registry=load_federation_file(config.federation_file)
            if config.federation_file
            else None,
            federation_did=config.federation_did,
            heartbeat_seconds=config.heartbeat_seconds,
            antientropy_seconds=config.antientropy_seconds,
            federation_budget=config.federation_budget,
            replication=config.replication,
        )

    async def start(self) -> None:
        if self.ha is not None:
            await asyncio.to_thread(self.ha.start)
        for ns in self.namespaces.current():
            state = self.store.log_state(ns)
            self.metrics.log_size.labels(ns).set(state.size if state else 0)
        if self.scheduler_enabled:
            self.scheduler.start()
        self.witnessing.start()
        if self.federation is not None:
            self.federation.start()
        self.ready = True

    async def stop(self) -> None:
        """Graceful: stop taking records, drain the sequencer, close the store."""
        self.ready = False
        await self.scheduler.stop()
        if self.federation is not None:
            await self.federation.stop()
        await self.witnessing.stop()  # before the sequencer's writer thread goes away
        await asyncio.to_thread(self.proof_lane.close)
        await self.sequencer.close()
        if self.ha is not None:  # after the drain: its appends still carry the epoch
            await asyncio.to_thread(self.ha.stop)
        self.store.close()

    def _on_batch(self, namespace: str, start: int, end: int, note: bytes) -> None:
        self.metrics.admitted.labels(namespace).inc(end - start)
        self.metrics.batch_size.observe(end - start)
        self.metrics.log_size.labels(namespace).set(end)
        self.storage_ok()

    # --- storage health (/healthz, /metrics) ---------------------------------------
    def storage_failed(self, e: StorageError) -> None:
        """A write (or a readiness probe) failed in the store: report it until a write succeeds."""
        if e.code == "store_closed":
            return  # shutting down
        status = _STORAGE_STATUS.get(e.code, "failing")
        self.metrics.storage_errors.labels(e.code).inc()
        self.metrics.storage_writable.set(0)
        if self.storage_health["status"] != status:
            log.error("storage %s: %s", status, e.message)
            self.storage_health = {"status": status, "last_error": e.to_dict(),
                                   "since": int(self.clock())}  # fmt: skip
        else:
            self.storage_health["last_error"] = e.to_dict()

    def storage_ok(self, *, reads_only: bool = False) -> None:
        """A write succeeded (or, ``reads_only``, a read after an unreachable store)."""
        if self.storage_health["status"] == "ok":
            return
        if reads_only and self.storage_health["status"] != "unavailable":
            return  # a full or failing store is back only once a write succeeds
        log.warning("storage is back after being %s", self.storage_health["status"])
        self.storage_health = {"status": "ok", "last_error": None, "since": int(self.clock())}
        if not reads_only:
            self.metrics.storage_writable.set(1)

    # --- identity ------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {
            "did": self.node_key.did,
            "origin_prefix": self.origin_prefix,
            "vkeys": {ns: format_vkey(self.sequencer.origin(ns), self.node_key.public)
                      for ns in self.namespaces.current()},
            "witness": {"name": self.witness_name,
                        "vkey": format_cosigner_vkey(self.witness_name, self.node_key.public),
                        "logs": sorted(self._witness_logs)},
            "version": __version__,
        }  # fmt: skip

    # --- records -------------------------------------------------------------------
    async def submit(self, data: bytes | Record) -> Receipt:
        started = time.perf_counter()
        try:
            receipt = await self.sequencer.submit(data)
        except StorageError as e:
            self.storage_failed(e)
            raise
        self.metrics.integration_seconds.observe(time.perf_counter() - started)
        return receipt

    def submit_later(self, record: Record, ns: NamespaceConfig) -> None:
        """Queue a record that ``sequencer.precheck`` has just passed (``ns`` is
        what it returned); its refusal, if any, is kept for the receipt URL."""
        key = f"{record.namespace}/{record.event_hash_hex}"
        self.pending.admit(key)
        task = asyncio.get_running_loop().create_task(self.sequencer.submit_checked(record, ns))
        self.pending.add(key, task)

        def done(t: asyncio.Task[Receipt]) -> None:
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                if isinstance(exc, StorageError):
                    self.storage_failed(exc)
                code = exc.code if isinstance(exc, RemembrancerError) else "internal"
                self.metrics.rejected.labels(record.namespace, code).inc()

        task.add_done_callback(done)

    def receipt_for(self, namespace: str, event_hash: bytes, *, anchored: bool = False) -> Receipt:
        """A record's receipt at the latest checkpoint, or with ``anchored`` at the
        earliest anchored checkpoint that covers it, with that checkpoint's anchors
        (the chain record -> checkpoint -> anchored checkpoint -> rail)."""
        found = self.store.find_event_hash(namespace, event_hash)
        if found is None:
            raise NotFoundError(
                "no record with that eventHash in this log", code="record_not_found"
            )
        origin = self.sequencer.origin(namespace)
        if anchored:
            covering = self.scheduler.covering(namespace, found.index)
            if covering is None:
                raise NotFoundError(
                    "no anchored checkpoint covers this record yet", code="not_anchored_yet"
                )
            proof, _ = self.sequencer.proof_inclusion(namespace, found.index, covering.size)
            anchors = tuple(a.to_dict() for a in covering.anchors)
            return Receipt("sha256:" + event_hash.hex(), namespace, origin, found.index, covering.size,
                           tuple(proof), covering.checkpoint, anchors)  # fmt: skip
        proof, state = self.sequencer.proof_inclusion(namespace, found.index)
        return Receipt("sha256:" + event_hash.hex(), namespace, origin, found.index, state.size,
                       tuple(proof), state.checkpoint)  # fmt: skip

    def record_at(self, namespace: str, index: int) -> dict[str, Any]:
        self.require_namespace(namespace)
        leaves = self.store.read_entries(namespace, index, index + 1)
        if not leaves:
            raise NotFoundError(f"no entry {index} in {namespace}", code="index_out_of_range")
        return entry_view(namespace, index, leaves[0])

    def require_namespace(self, namespace: str) -> None:
        if namespace not in self.namespaces.current() and self.sequencer.head(namespace) is None:
            raise NotFoundError(
                f"namespace {namespace} is not hosted here", code="namespace_unknown"
            )

    def namespace_view(self, namespace: str) -> dict[str, Any]:
        self.require_namespace(namespace)
        state = self.store.log_state(namespace)
        out: dict[str, Any] = {
            "namespace": namespace,
            "origin": self.sequencer.origin(namespace),
            "size": state.size if state else 0,
            "root": base64.b64encode(state.root_hash).decode() if state else None,
            "checkpoint": state.checkpoint.decode() if state else None,
        }
        if namespace in self.namespaces.current():
            out["policy"] = self.sequencer.effective_config(namespace)
            out["anchoring"] = self.scheduler.health(namespace)
        return out

    # --- witness -------------------------------------------------------------------
    async def add_checkpoint(self, body: bytes) -> bytes:
        """The tlog-witness add-checkpoint call (:class:`WitnessServer`); returns
        the cosignature lines.  A split view refused here is kept as evidence."""
        async with self._witness_lock:  # one writer per node; the CAS guards other processes
            try:
                line = await asyncio.to_thread(self.witness.add_checkpoint, body)
            except WitnessRefusal as e:
                self.metrics.witness_requests.labels(e.code).inc()
                if e.code == "witness_root_mismatch":
                    origin = checkpoint_origin(AddCheckpointRequest.parse(body).note)
                    await self._split_view(origin, str(e.details["cosigned"]).encode(),
                                           str(e.details["offered"]).encode())  # fmt: skip
                raise
        self.metrics.witness_requests.labels("cosigned").inc()
        return line

    async def _split_view(self, origin: str, cosigned: bytes, offered: bytes) -> None:
        """Two validly signed checkpoints of one origin with the same size and
        different roots: keep the offline-verifiable evidence and, in a
        federation, report it (probation for the log's node, gossip)."""
        from remembrancer.core.checkpoint import Checkpoint
        from remembrancer.core.note import Note
        from remembrancer.federation.evidence.equivocation import EquivocationEvidence

        notes = sorted(
            [cosigned, offered], key=lambda n: Checkpoint.parse(Note.from_bytes(n).text).root_hash
        )
        vkeys = next((w.vkeys for w in self.witnessed if w.origin == origin), ())
        for vkey in vkeys:
            try:
                evidence = EquivocationEvidence(origin, vkey, notes[0], notes[1])
                if self.federation is not None:
                    await self.federation.report_equivocation(evidence)
                else:
                    from remembrancer.federation.evidence.equivocation import verify_equivocation
                    from remembrancer.federation.evidence.store import EvidenceStore

                    report = verify_equivocation(evidence)
                    await asyncio.to_thread(EvidenceStore(self.store).keep, origin, report.incident,
                                            report.evidence_ref, evidence.to_bytes())  # fmt: skip
                log.error(
                    "split view: %s signed two checkpoints of the same size with different roots",
                    origin,
                )
                return
            except RemembrancerError as e:
                log.info(
                    "equivocation evidence for %s with %s did not verify: %s",
                    origin,
                    vkey,
                    e.explain(),
                )

    def witnessed_checkpoint(self, origin: str) -> bytes:
        return self.witness.witnessed_checkpoint(origin)


def entry_view(namespace: str, index: int, leaf: bytes) -> dict[str, Any]:
    import hashlib

    from remembrancer.core.rfc6962 import hash_leaf

    out: dict[str, Any] = {"namespace": namespace, "index": index,
                           "leafHash": base64.b64encode(hash_leaf(leaf)).decode()}  # fmt: skip
    try:
        rec = Record.from_bytes(leaf)
        out["eventHash"] = rec.event_hash_hex
        out["record"] = loads_strict(leaf)  # it parsed strictly just above
    except RemembrancerError:
        out["entry"] = base64.b64encode(leaf).decode()
        out["entryHash"] = "sha256:" + hashlib.sha256(leaf).hexdigest()
    return out


def claim_budget(b: BudgetSettings) -> ClaimBudget:
    """The storage budget of anchor claims, from ``federation.budget``."""
    return ClaimBudget(
        evidence_bytes={"rfc3161": b.evidence_bytes.rfc3161, "eip155": b.evidence_bytes.eip155,
                        "btc": b.evidence_bytes.btc},
        unverified_claims=b.unverified_claims_per_peer_log,
        unverified_bytes=b.unverified_bytes_per_peer_log,
    )  # fmt: skip


def _lease_keeper(config: NodeConfig, store: Store) -> LeaseKeeper | None:
    """The sequencer lease keeper of ``ha.enabled`` (the config has checked the store is PostgreSQL)."""
    ha = config.ha
    if not ha.enabled:
        return None
    from remembrancer.storage.lease import PgLease
    from remembrancer.storage.postgres import PostgresStore

    if not isinstance(store, PostgresStore):  # pragma: no cover - refused by the config
        raise ConfigError("ha.enabled needs storage on PostgreSQL", code="ha_needs_postgres")
    assert ha.advertise_url is not None
    store.limit_idle_transactions(ha.lease_seconds / 2)
    lease = PgLease(store, LEASE_NAME, holder_id(), ha.advertise_url, ha.lease_seconds,
                    statement_timeout=ha.lease_seconds / 2)  # fmt: skip
    return LeaseKeeper(lease, lease_seconds=ha.lease_seconds, renew_seconds=ha.renew_every)

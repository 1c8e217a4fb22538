"""The simulated federation: nodes running the real federation code, the scenarios, :func:`simulate`.

Each :class:`SimNode` runs the real
:class:`~remembrancer.federation.service.FederationService` and witnessing
client around a :class:`~.logs.SimLog`; :class:`FederationSimulation` builds
``n`` of them on one virtual clock and runs the witnessing, receipts and
partition scenarios; :class:`Byzantine` nodes attack through their real
clients.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, TypeVar

import httpx

from remembrancer.anchoring.base import RailRegistry
from remembrancer.anchoring.rfc3161.chain import load_trust_bundle
from remembrancer.anchoring.rfc3161.devtsa import DevTsa
from remembrancer.anchoring.rfc3161.rail import Rfc3161Rail
from remembrancer.core.anchor import checkpoint_digest
from remembrancer.core.checkpoint import Checkpoint, open_checkpoint
from remembrancer.core.cosignature import Cosignature, CosignatureVerifier
from remembrancer.core.errors import ConfigError, PeerError
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import NoteVerifier, Verifier, format_vkey
from remembrancer.core.tiles import parse_tile_path
from remembrancer.federation.antientropy.model import ReplicaSpec
from remembrancer.federation.antientropy.replicator import Replicator
from remembrancer.federation.protocol.contents import (
    AnchorContent,
    CountersignContent,
)
from remembrancer.federation.protocol.grammar import MAX_SEQ
from remembrancer.federation.protocol.wire import Message
from remembrancer.federation.receipts import (
    Countersignature,
    FederationReceipt,
    verify_countersignature,
    verify_federation_receipt,
)
from remembrancer.federation.registry.model import ROLES, Peer, Registry
from remembrancer.federation.service import FederationService
from remembrancer.federation.transport import FederationClient
from remembrancer.federation.witness_server import WitnessServer
from remembrancer.federation.witnessing import CheckpointWitnessing, WitnessPeer
from remembrancer.node.statuses import federation_answer
from remembrancer.storage.base import LogState
from remembrancer.storage.memory import MemoryStore
from remembrancer.testing.simulation.clock import run_virtual
from remembrancer.testing.simulation.config import (
    EPOCH,
    PartitionResult,
    ReceiptResult,
    SimulationConfig,
    SimulationError,
    SimulationReport,
    WitnessingResult,
    ms,
)
from remembrancer.testing.simulation.logs import (
    CountingTransport,
    Held,
    ReplicaView,
    SimLog,
    SimWitness,
)
from remembrancer.testing.simulation.network import Served, SimNetwork, SimTransport

__all__ = ["SCENARIOS", "Byzantine", "FederationSimulation", "SimNode", "simulate"]


FEDERATION_ID: Final = "sim-federation"
TSA_TARGET: Final = "rfc3161:sim-tsa"


_WITNESS_TIMEOUT: Final = 5.0  # CheckpointWitnessing's default


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Byzantine:
    """What a byzantine node does with an anchor proposal it receives.

    It follows no log, so its (real) service never countersigns honestly;
    instead it sends, through its real federation client:

    - ``impersonate``: a countersign message in the name of another peer,
      signed with its own key, with the highest ``seq`` (the receiver must
      refuse it ``signature_invalid`` and keep the victim's replay state);
    - ``bad_countersignature``: a countersign message in its own name whose
      countersignature does not verify (accepted as a message; it must not
      count toward the quorum);
    - ``replay``: a second later, the proposal it received, re-sent unchanged
      to every other peer (each must refuse ``replayed``).
    """

    impersonate: bool = True
    bad_countersignature: bool = True
    replay: bool = True


class _ByzantineActor:
    def __init__(self, node: SimNode, behaviour: Byzantine) -> None:
        self.node = node
        self.behaviour = behaviour

    async def on_anchor(self, sender: str, content: Any, raw: bytes) -> None:
        if isinstance(content, AnchorContent):
            self.node.loop.create_task(self._attack(sender, content, raw))

    async def _attack(self, sender: str, content: AnchorContent, raw: bytes) -> None:
        node, sim = self.node, self.node.sim
        proposer = sim.by_did[sender]
        receipt = content.federation_receipt()
        now = int(node.clock())
        client = node.service.outbox.client
        if self.behaviour.impersonate:
            victim = next(p for p in sim.nodes if p is not node and p is not proposer)
            forged = Countersignature(victim.did, "witness", now,
                                      node.key.sign(receipt.signing_input(victim.did, "witness", now)))  # fmt: skip
            # The highest seq: if it were accepted, the victim could never send again.
            await client.send(proposer.endpoint, node.sign(
                CountersignContent(content.namespace, receipt.id, forged), sender=victim.did,
                seq=MAX_SEQ))  # fmt: skip
        if self.behaviour.bad_countersignature:
            bad = Countersignature(node.did, "witness", now, bytes(64))
            await client.send(
                proposer.endpoint, node.sign(CountersignContent(content.namespace, receipt.id, bad))
            )
        if self.behaviour.replay:
            await asyncio.sleep(1.0)
            others = [p for p in sim.nodes if p is not node and p is not proposer]
            await client.broadcast(others, raw)


class SimNode:
    """One simulated node: the real federation service and witnessing client
    around a :class:`SimLog`, reached through the simulated network."""

    def __init__(self, sim: FederationSimulation, index: int, key: SigningKey) -> None:
        self.sim = sim
        self.index = index
        self.loop = sim.loop
        self.name = f"n{index:03d}"
        self.host = f"{self.name}.sim"
        self.endpoint = f"http://{self.host}"
        self.did = f"did:vm:node:{self.name}"
        self.key = key
        self.namespace = f"sim:{self.name}"
        self.origin = f"{self.host}/{self.namespace}"
        self.witness_name = f"{self.host}/witness"
        self.skew = sim.rng.uniform(-sim.config.clock_skew_s, sim.config.clock_skew_s)
        self.log = SimLog(self.namespace, self.origin, key)
        self.log_verifiers: dict[str, list[NoteVerifier]] = {}
        self.follows = True  # a byzantine node follows no log (so never countersigns honestly)
        # Set by FederationSimulation.build():
        self.service: FederationService
        self.witnessing: CheckpointWitnessing
        self.witness: SimWitness
        self.anti_entropy: ReplicaView

    def clock(self) -> float:
        return EPOCH + self.loop.time() + self.skew

    def sign(self, content: Any, *, sender: str | None = None, seq: int | None = None) -> Message:
        """A message signed with this node's key: from this node, or (byzantine)
        claiming another ``sender`` and any ``seq``."""
        now = self.clock()
        seq = self.service.outbox.seq.next(now) if seq is None else seq
        return Message.sign(self.key, content, federation_id=FEDERATION_ID, seq=seq,
                            timestamp=int(now), sender=self.did if sender is None else sender)  # fmt: skip

    def client(
        self, like: FederationClient, transport: httpx.AsyncBaseTransport
    ) -> FederationClient:
        """A FederationClient with ``like``'s timeouts and retry policy, on the
        simulated network, with virtual time and a seeded jitter source."""
        rng = random.Random(
            f"remembrancer-sim/{self.sim.config.seed}/{self.index}/{len(self.sim.clients)}"
        )
        timeout = like._client.timeout
        made = FederationClient(
            timeout=like.timeout,
            connect_timeout=timeout.connect if timeout.connect is not None else like.timeout,
            retry=like.retry,
            transport=transport,
            clock=self.loop.time,
            rand=rng.random,
        )
        self.sim.clients.append(made)
        return made

    async def serve(self, request: httpx.Request, body: bytes) -> Served:
        """The node's HTTP routes that the simulation uses."""
        path = request.url.path
        try:
            if request.method == "POST" and path == "/federation/v1/messages":
                received = await self.service.handle(body, request.headers.get("content-type"))
                status, headers, reply = federation_answer(received)
                code = received.error.code if received.error is not None else None
                return Served(status, headers.get("Content-Type", ""), reply, code)
            if request.method == "POST" and path == "/witness/add-checkpoint":
                return self.witness.add_checkpoint(body)
            if request.method == "GET" and path == f"/logs/{self.namespace}/checkpoint":
                head = self.log.head(self.namespace)
                if head is not None:
                    return Served(200, "text/plain; charset=utf-8", head.checkpoint)
            elif request.method == "GET" and path.startswith(f"/logs/{self.namespace}/tile/"):
                tile = parse_tile_path(path.removeprefix(f"/logs/{self.namespace}/"))
                head = self.log.head(self.namespace)
                count = (head.size if head else 0) >> (8 * tile.level)
                if tile.index * 256 + tile.width <= count:
                    return Served(200, "application/octet-stream", self.log.tile(tile))
            return Served(404, "application/json", b'{"error":{"code":"not_found"}}', "not_found")
        except Exception as e:  # a fault in the simulated node: recorded, answered 500
            self.sim.network.errors.append(f"{self.name} {request.method} {path}: {e!r}")
            return Served(500, "application/json", b'{"error":{"code":"internal"}}', "internal")


class _InProcessTsaRail(Rfc3161Rail):
    """The real RFC 3161 rail whose HTTP POST is a call to a TSA in the process."""

    tsa: DevTsa

    def _post(self, body: bytes) -> bytes:
        return self.tsa.respond(body)


class FederationSimulation:
    """A federation of ``n`` simulated nodes on one :class:`VirtualClockLoop`.

    Make it, :meth:`build` it and run scenarios inside :func:`run_virtual` (as
    :func:`simulate` does).
    ``tsa_dir`` holds the development TSA's CA and keys (made on first use);
    ``byzantine`` maps node indices (not 0, the first proposer) to behaviours.
    """

    def __init__(
        self,
        n: int,
        config: SimulationConfig,
        tsa_dir: Path,
        *,
        byzantine: Mapping[int, Byzantine] | None = None,
    ) -> None:
        if n < 2:
            raise SimulationError("a federation needs at least 2 nodes")
        self.n = n
        self.config = config
        self.quorum = config.quorum_for(n)
        self.tsa_dir = tsa_dir
        self.byzantine = dict(byzantine or {})
        if any(not 0 < i < n for i in self.byzantine):
            raise SimulationError("byzantine nodes are indices 1 .. n-1")
        self.loop = asyncio.get_running_loop()
        self.rng = random.Random(f"remembrancer-sim/{config.seed}/setup")
        self.network = SimNetwork(config, self.loop)
        self.clients: list[FederationClient] = []
        self.nodes: list[SimNode] = []
        self.by_did: dict[str, SimNode] = {}
        self._heads: dict[str, Held] = {}  # origin -> the log's latest state
        self._stale: set[tuple[int, str]] | None = None  # tracked (node, origin) pairs behind
        self._converged: asyncio.Event | None = None
        self._converged_at: float | None = None
        self._phase_mark: tuple[str, int] = ("", 0)

    # -- building ------------------------------------------------------------------

    async def build(self) -> None:
        keys = [SigningKey(hashlib.sha256(f"remembrancer-sim node {i}".encode()).digest())
                for i in range(self.n)]  # fmt: skip
        self.nodes = [SimNode(self, i, keys[i]) for i in range(self.n)]
        self.by_did = {node.did: node for node in self.nodes}
        self.network.nodes = {node.host: node for node in self.nodes}
        peers = tuple(Peer(node.did, node.endpoint, node.key.public, "active", frozenset(ROLES))
                      for node in self.nodes)  # fmt: skip
        registry = Registry(FEDERATION_ID, self.quorum, "independent", peers)
        verifiers: dict[str, list[NoteVerifier]] = {
            node.origin: [Verifier(node.origin, node.key.public)] for node in self.nodes
        }
        tsa_clock = self._tsa_clock
        self.tsa = DevTsa(self.tsa_dir, key_type="rsa", clock=tsa_clock)
        trust = load_trust_bundle(self.tsa.ca_cert_path)
        for node in self.nodes:
            node.follows = node.index not in self.byzantine
            node.log_verifiers = dict(verifiers) if node.follows else {}
            rails = RailRegistry()
            rails.register(Rfc3161Rail(TSA_TARGET, None, trust))
            service = FederationService(
                registry, node.did, node.key, MemoryStore(), node.log, rails,
                node.log_verifiers, clock=node.clock,
                heartbeat_seconds=self.config.heartbeat_seconds,
            )  # fmt: skip
            transport = SimTransport(self.network, node)
            real = (service.outbox.client, service.outbox.beats)
            service.outbox.client = node.client(real[0], transport)
            service.outbox.beats = node.client(real[1], transport)
            for unused in real:
                await unused.aclose()
            node.service = service
            node.witness = SimWitness(WitnessServer(service.store, node.witness_name, node.key,
                                                    node.log_verifiers, node.clock))  # fmt: skip
            witnesses = [
                WitnessPeer(p.witness_name, f"{p.endpoint}/witness",
                            CosignatureVerifier(p.witness_name, p.key.public))
                for p in self.nodes if p is not node
            ]  # fmt: skip
            node.witnessing = CheckpointWitnessing(
                node.log, witnesses, quorum=self.witness_quorum, timeout=_WITNESS_TIMEOUT
            )
            node.witnessing._client = httpx.AsyncClient(
                transport=transport, timeout=_WITNESS_TIMEOUT
            )
            node.witnessing._loop = self.loop
            # The real anti-entropy, on the simulated network (its own store: the service's).
            counting = CountingTransport(transport)
            specs = [ReplicaSpec(p.origin, (format_vkey(p.origin, p.key.public),))
                     for p in self.nodes if p is not node and node.follows]  # fmt: skip
            replicator = Replicator(
                service, service.peers, service.outbox, service.countersigning,
                service.misbehaviour, service.store, specs, rails, clock=node.clock,
                heartbeat_seconds=self.config.heartbeat_seconds,
                interval=self.config.antientropy_seconds,
                fetch_deadline=self.config.fetch_deadline_s,
                transport=counting,
            )  # fmt: skip
            made = replicator.messages
            replicator.messages = node.client(made, transport)
            await made.aclose()
            node.anti_entropy = ReplicaView(node, replicator, counting, self._on_update)
            if node.index in self.byzantine:
                actor = _ByzantineActor(node, self.byzantine[node.index])
                service.add_handler(AnchorContent, actor.on_anchor)
            self.append(node)

    def append(self, node: SimNode) -> LogState:
        """Append a batch to ``node``'s log; it holds the new state at once."""
        head = node.log.append(self.config.batch)
        self._heads[node.origin] = Held(head.size, head.root_hash)
        node.anti_entropy.hold(node.origin, head.size, head.root_hash)
        return head

    def _tsa_clock(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(EPOCH + self.loop.time(), dt.UTC)

    @property
    def witness_quorum(self) -> int:
        return min(self.quorum, self.n - 1)

    async def close(self) -> None:
        for node in self.nodes:
            await node.service.stop()  # closes its two clients
            await node.witnessing.stop()

    # -- phases and measurements -------------------------------------------------------

    def _begin(self, phase: str) -> None:
        self.network.phase = phase
        self.network.arrivals.clear()

    def _ideal(self, proposer: int, rank: int) -> float:
        """The ``rank``-th shortest round trip from ``proposer`` (ms, base latencies)."""
        trips = sorted(2 * self.network.base_latency(proposer, p.index)
                       for p in self.nodes if p.index != proposer)  # fmt: skip
        return ms(trips[rank - 1]) if rank >= 1 else 0.0

    async def _quiet(self, limit: float = 60.0) -> None:
        """Let every other task finish (deliveries, retries), up to ``limit`` seconds."""
        end = self.loop.time() + limit
        me = asyncio.current_task()
        while self.loop.time() < end:
            busy = [t for t in asyncio.all_tasks(self.loop) if t is not me and not t.done()]
            if not busy:
                return
            await asyncio.sleep(0.05)

    # -- scenario 1: witnessing ----------------------------------------------------------

    async def run_witnessing(self) -> WitnessingResult:
        """Checkpoints of node 0's log, each witnessed by every other node."""
        self._begin("witnessing")
        node = self.nodes[0]
        others = [p for p in self.nodes if p is not node]
        cosigners = [CosignatureVerifier(p.witness_name, p.key.public) for p in others]
        names = {p.witness_name: p.index for p in others}
        quorum_ms: list[float | None] = []
        round_ms: list[float] = []
        counted: list[int] = []
        for _ in range(self.config.checkpoints):
            head = self.append(node)
            self.network.arrivals.clear()
            start = self.loop.time()
            await node.witnessing.witness_latest(node.namespace)
            round_ms.append(ms(node.log.first_attached.get(head.size, self.loop.time()) - start))
            note = node.log.cosigned.get(head.size)
            verified: tuple[Cosignature, ...] = ()
            if note is not None:
                opened = open_checkpoint(note, node.log_verifiers[node.origin][0], cosigners)
                verified = opened.cosignatures
            signers = {names[c.name] for c in verified}
            counted.append(len(signers))
            times = sorted(a.at for a in self.network.arrivals
                           if a.kind == "add-checkpoint" and a.status == 200 and a.src in signers)  # fmt: skip
            q = self.witness_quorum
            quorum_ms.append(ms(times[q - 1] - start) if len(times) >= q else None)
            await asyncio.sleep(1.0)
        await self._quiet()
        return WitnessingResult(
            checkpoints=self.config.checkpoints,
            quorum=self.witness_quorum,
            messages=self.network.count("witnessing"),
            bytes=self.network.bytes["witnessing"],
            quorum_ms=tuple(quorum_ms),
            round_ms=tuple(round_ms),
            cosignatures=tuple(counted),
            ideal_ms=self._ideal(0, self.witness_quorum),
        )

    # -- scenario 2: federation receipts ---------------------------------------------------

    async def run_receipts(self) -> ReceiptResult:
        """Anchor proposals by honest nodes in turn, each to a final federation receipt."""
        self._begin("receipts")
        proposers = [p for p in self.nodes if p.index not in self.byzantine]
        keys = {p.did: p.key.public for p in self.nodes}
        quorum_ms: list[float | None] = []
        final_ms: list[float | None] = []
        signers: list[int] = []
        holders: list[int] = []
        invalid: list[int] = []
        ideal: list[float] = []
        nonces = random.Random(f"remembrancer-sim/{self.config.seed}/tsa-nonce")
        rail = _InProcessTsaRail(TSA_TARGET, None, [self.tsa.ca_cert],
                                 nonce_source=lambda: nonces.getrandbits(63) | (1 << 63))  # fmt: skip
        rail.tsa = self.tsa
        for k in range(self.config.receipts):
            node = proposers[k % len(proposers)]
            head = self.append(node)
            body = Checkpoint(node.origin, head.size, head.root_hash).to_body().encode()
            anchor = rail.submit(checkpoint_digest(body), now=int(node.clock()))
            self.network.arrivals.clear()
            start = self.loop.time()
            need = self.quorum - 1
            ideal.append(self._ideal(node.index, need))
            try:
                final = await node.service.propagate(node.namespace, anchor, head.checkpoint)
            except PeerError as e:
                if e.code != "quorum_not_reached":
                    raise
                quorum_ms.append(None)
                final_ms.append(None)
                signers.append(0)
                invalid.append(0)
                holders.append(0)
                await self._quiet()
                continue
            final_ms.append(ms(self.loop.time() - start))
            # The real verifier, with the registry's keys, on the receipt the proposer kept:
            report = verify_federation_receipt(final, keys, self.quorum)
            invalid.append(sum(1 for cs in final.signatures
                               if not verify_countersignature(final, cs, keys[cs.node])))  # fmt: skip
            counted = {self.by_did[d].index for d in report.signers if d != node.did}
            signers.append(len(report.signers))
            times = sorted(a.at for a in self.network.arrivals
                           if a.kind == "countersign" and a.dst == node.index and a.src in counted)  # fmt: skip
            quorum_ms.append(ms(times[need - 1] - start) if need else 0.0)
            await self._quiet()
            holders.append(sum(1 for p in self.nodes if p is not node
                               and _holds(p, node.namespace, final)))  # fmt: skip
        return ReceiptResult(
            receipts=self.config.receipts,
            quorum=self.quorum,
            messages=self.network.count("receipts"),
            bytes=self.network.bytes["receipts"],
            quorum_ms=tuple(quorum_ms),
            final_ms=tuple(final_ms),
            signers=tuple(signers),
            invalid_kept=tuple(invalid),
            holders=tuple(holders),
            ideal_ms=round(sum(ideal) / len(ideal), 3) if ideal else 0.0,
            refused=self.network.refusals("receipts"),
        )

    # -- scenario 3: heartbeats, anti-entropy, partition ------------------------------------

    def _on_update(self, node: SimNode, origin: str) -> None:
        stale = self._stale
        if stale is None or (node.index, origin) not in stale:
            return
        if node.anti_entropy.held.get(origin) == self._heads.get(origin):
            stale.discard((node.index, origin))
            if not stale and self._converged is not None:
                self._converged_at = self.loop.time()
                self._phase_mark = (self.network.phase, self.network.count(self.network.phase))
                self._converged.set()

    def _track(self) -> int:
        """Start tracking which (node, log) pairs are behind; returns how many."""
        self._stale = {(p.index, origin) for p in self.nodes for origin, head in self._heads.items()
                       if p.anti_entropy.held.get(origin) != head}  # fmt: skip
        self._converged = asyncio.Event()
        self._converged_at = None
        if not self._stale:
            self._converged_at = self.loop.time()
            self._phase_mark = (self.network.phase, self.network.count(self.network.phase))
            self._converged.set()
        return len(self._stale)

    async def _wait_converged(self, within: float) -> float | None:
        assert self._converged is not None
        start = self.loop.time()
        try:
            await asyncio.wait_for(self._converged.wait(), within)
        except TimeoutError:
            return None
        assert self._converged_at is not None
        return round(self._converged_at - start, 6)

    async def _appender(self, node: SimNode) -> None:
        """Append a batch every heartbeat interval, from a random phase, until cancelled."""
        hb = self.config.heartbeat_seconds
        await asyncio.sleep(self.rng.uniform(0, hb))
        while True:
            self.append(node)
            await asyncio.sleep(hb)

    async def _start(self, node: SimNode, delay: float) -> None:
        await asyncio.sleep(delay)
        node.service.start()

    async def run_partition(self) -> PartitionResult:
        """Start heartbeats; converge; cut ``partition_fraction`` of the nodes off while
        every log advances; heal; measure the time until every node holds every
        log's latest state."""
        cfg = self.config
        hb = cfg.heartbeat_seconds
        self._begin("partition-start")
        history_before = Counter(_changes(self.nodes))
        self._track()
        for node in self.nodes:  # staggered starts, as real nodes would be
            self.loop.create_task(self._start(node, self.rng.uniform(0, hb)))
        initial = await self._wait_converged(cfg.converge_within_s)
        order = list(range(self.n))
        self.rng.shuffle(order)
        side = tuple(sorted(order[: max(1, round(self.n * cfg.partition_fraction))]))
        self._begin("partition")
        self.network.partition(side, self.n)
        appenders = [self.loop.create_task(self._appender(p)) for p in self.nodes]
        await asyncio.sleep(cfg.partition_seconds)
        for task in appenders:
            task.cancel()
        await asyncio.gather(*appenders, return_exceptions=True)
        during = self.network.count("partition", frozenset({"heartbeat"}))
        self._begin("after")
        if cfg.heal:
            self.network.heal()
        stale = self._track()
        converged = await self._wait_converged(cfg.converge_within_s)
        if converged is not None and self._phase_mark[0] == "after":
            after = self._phase_mark[1]
        else:
            after = self.network.count("after")
        stale = len(self._stale or ())
        history = Counter(_changes(self.nodes)) - history_before
        self._stale = None
        return PartitionResult(
            side=side,
            partition_s=cfg.partition_seconds,
            healed=cfg.heal,
            initial_convergence_s=initial,
            convergence_s=converged,
            stale_pairs=stale,
            messages_after_heal=after,
            heartbeat_messages_per_node_s=round(during / self.n / cfg.partition_seconds, 3)
            if cfg.partition_seconds
            else 0.0,
            fetches=sum(p.anti_entropy.fetches for p in self.nodes),
            failed_fetches=sum(p.anti_entropy.failed for p in self.nodes),
            status_changes=dict(history),
        )


def _holds(node: SimNode, namespace: str, final: FederationReceipt) -> bool:
    return any(r.get("anchor", {}).get("tx_hash") == final.anchor.tx_ref
               for r in node.service.receipts(namespace))  # fmt: skip


def _changes(nodes: Sequence[SimNode]) -> list[str]:
    return [f"{c.old}->{c.new}" for node in nodes for c in node.service.scores.history()]


SCENARIOS: Final = ("witnessing", "receipts", "partition")


def simulate(
    n: int,
    config: SimulationConfig | None = None,
    *,
    scenarios: Sequence[str] = SCENARIOS,
    tsa_dir: Path | None = None,
    byzantine: Mapping[int, Byzantine] | None = None,
) -> SimulationReport:
    """Simulate a federation of ``n`` nodes through ``scenarios`` (in this order:
    witnessing, receipts, partition) and report what was measured.

    ``tsa_dir`` keeps the development TSA between runs (a temporary one is
    made and removed otherwise); ``byzantine`` is for tests.
    """
    config = config or SimulationConfig()
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        raise SimulationError(f"unknown scenario {unknown[0]!r}; known: {', '.join(SCENARIOS)}")
    if tsa_dir is None:
        with tempfile.TemporaryDirectory(prefix="remembrancer-sim-") as d:
            return simulate(n, config, scenarios=scenarios, tsa_dir=Path(d) / "tsa",
                            byzantine=byzantine)  # fmt: skip
    cpu: dict[str, float] = {}
    spent: dict[str, float] = {}

    async def phase(name: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        loop = asyncio.get_running_loop()
        start, virtual = time.process_time(), loop.time()
        try:
            return await work()
        finally:
            cpu[name] = time.process_time() - start
            spent[name] = round(loop.time() - virtual, 6)

    async def main() -> SimulationReport:
        sim = FederationSimulation(n, config, tsa_dir, byzantine=byzantine)
        await phase("setup", sim.build)
        try:
            witnessing = receipts = partition = None
            if "witnessing" in scenarios:
                witnessing = await phase("witnessing", sim.run_witnessing)
            if "receipts" in scenarios:
                receipts = await phase("receipts", sim.run_receipts)
            if "partition" in scenarios:
                partition = await phase("partition", sim.run_partition)
        finally:
            await sim.close()
        net = sim.network
        kinds: Counter[str] = Counter()
        for (_, kind), v in net.messages.items():
            kinds[kind] += v
        return SimulationReport(
            n=n,
            seed=config.seed,
            quorum=sim.quorum,
            witnessing=witnessing,
            receipts=receipts,
            partition=partition,
            virtual_seconds=round(sim.loop.time(), 6),
            phase_seconds=dict(spent),
            messages=dict(kinds),
            lost=net.lost,
            internal_errors=tuple(net.errors),
            trace_sha256=net.trace_sha256,
        )

    try:
        report = run_virtual(main())
    except ConfigError as e:
        raise SimulationError(f"the simulated federation cannot be set up: {e.message}") from e
    return replace(report, cpu_seconds=cpu)
